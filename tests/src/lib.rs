//! Lab of network namespaces for natrec tests and the demo (being written this session).
