//! natrec's lab of network namespaces (gateway, inside hosts, outside servers) and the helpers
//! its integration tests, the demo and the packet-capture harness share.
//!
//! Everything here needs root (namespaces, nftables, conntrack); see
//! [`lab::ensure_root_capabilities`].

pub mod capture;
pub mod conntrack;
pub mod gateway;
pub mod harness;
pub mod lab;
pub mod recorder_proc;
pub mod traffic;
pub mod bench;
