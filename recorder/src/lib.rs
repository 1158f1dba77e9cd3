//! natrec: records every NAT translation of a Linux gateway and answers who held an outside
//! address and port at a given time.
//!
//! - [`capture`] loads the eBPF programs (offsets from the kernel's BTF, `capture/btf.rs`) and
//!   reads their ring buffer; [`conntrack`] speaks ctnetlink (DESTROY events, dumps); [`tracker`] pairs
//!   starts and ends into [`model::FlowEvent`]s (both it and the store's writer keep their open
//!   translations in an `open_table`, whose slots can be prefetched); [`daemon`] runs it all for `natrec record`.
//! - [`store`] keeps the attribution log segments; [`query`] answers from them.
//! - [`synth`] makes the synthetic ISP workload; [`import`] reads logs other tools keep.

pub mod capture;
pub mod config;
pub mod conntrack;
pub mod daemon;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod import;
pub mod log_limit;
pub mod lookup;
pub mod metrics;
pub mod model;
mod open_table;
pub mod query;
pub mod rng;
pub mod service;
pub mod sink;
pub mod store;
#[cfg(feature = "synth")]
pub mod synth;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod tracker;
pub mod units;
