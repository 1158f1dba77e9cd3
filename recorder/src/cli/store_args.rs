//! Command-line options of the attribution store, shared by `record` and `import`
//! (being written this session).
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {}
