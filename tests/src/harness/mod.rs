//! The packet-capture ground-truth harness: a lab gateway records with `natrec record` while a
//! seeded workload runs through it and tcpdump captures both sides; then every packet that
//! crossed the outside interface is checked against natrec's query API (see [`verify`]).
//!
//! - [`pcap`] reads the captures, [`pair`] finds each outside packet's inside twin (the truth),
//!   [`verify`] asks natrec and counts correct, wrong, missing and ambiguous answers.
//! - [`workload`] is the seeded traffic; [`run`] puts it all together and writes the report.
//! - [`stress`] is the stress mode: the highest new-flow rate, kernel against natrec counts.

pub mod pair;
pub mod pcap;
pub mod run;
pub mod stress;
pub mod verify;
pub mod workload;

use std::path::PathBuf;

use crate::lab::LabError;

/// What can stop the harness from reaching a verdict.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// Building or driving the lab failed.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// The benchmark's load or recorder handling (stress mode) failed.
    #[error(transparent)]
    Bench(#[from] crate::bench::BenchError),
    /// A capture file could not be read.
    #[error("capture {path}: {reason}")]
    Pcap { path: PathBuf, reason: String },
    /// An I/O operation of the harness failed.
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    /// natrec's store could not be opened.
    #[error("opening natrec's store: {0}")]
    Store(#[from] recorder::store::StoreError),
    /// natrec's query API failed.
    #[error("asking natrec: {0}")]
    Query(#[from] recorder::query::QueryError),
    /// The run could not go as planned.
    #[error("{0}")]
    Invalid(String),
}
