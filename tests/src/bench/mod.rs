//! `natrec-bench`: natrec side by side with what gateway operators use today (`conntrack -E`
//! into a file, ulogd2's NFCT plugin into text or JSON), on the same lab, the same load, in one
//! run.
//!
//! - [`load`]: a paced UDP load generator (sendmmsg from the lab's inside hosts, every packet a
//!   new 5-tuple), so every packet makes the gateway create one translation.
//! - [`sys`]: what the kernel and `/proc` say: conntrack statistics of the gateway namespace,
//!   recorder CPU time, machine description, the global sysctl the bench changes (restored on
//!   drop).
//! - [`recorders`]: starting and stopping each recorder and counting what it wrote.
//! - [`capture`]: part 1 and 2 of the benchmark (completeness and CPU per rate and recorder; the
//!   lab's maximum rate with and without natrec).
//! - [`storage`]: part 3, bytes per translation of natrec's segments against the other tools'
//!   logs, raw and compressed, on the synthetic workload.
//! - [`query`]: part 4, `natrec query` against `grep` and `zstdgrep` on the same translations.
//! - [`forward`]: part 5, what a recorder costs a forwarding gateway: established traffic
//!   forwarded per second, slab-heavy work with no NAT, and each eBPF program's runs and ns per
//!   run.
//! - [`report`]: `BENCHMARKS.md` from the JSON results.
//!
//! Nothing here is a pass/fail test: the figures are reported, with medians over repetitions
//! and every ratio computed within one repetition.

pub mod capture;
pub mod forward;
pub mod load;
pub mod mix;
pub mod query;
pub mod recorders;
pub mod report;
pub mod stats;
pub mod storage;
pub mod sys;

use crate::lab::LabError;

/// What went wrong while benchmarking.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The lab (namespaces, processes, nftables) failed.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// A file or system call failed.
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    /// A recorder, the kernel or a results file did not behave as expected.
    #[error("{0}")]
    Invalid(String),
}

/// Results of benchmark operations.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;

/// Maps an I/O error to [`BenchError::Io`] with a description of what was attempted.
pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

/// A path as `&str`, for command lines (the bench's paths are UTF-8).
pub(crate) fn path_str(p: &std::path::Path) -> Result<&str> {
    p.to_str().ok_or_else(|| BenchError::Invalid(format!("path {} is not UTF-8", p.display())))
}

/// Runs a command with no input, its output captured; a failure carries its stderr.
pub(crate) fn run_quiet(cmd: &mut std::process::Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(io_err(format!("starting {shown}")))?;
    if !out.status.success() {
        return Err(BenchError::Invalid(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
