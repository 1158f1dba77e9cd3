//! The attribution log store: compact, compressed, rotating, tamper-evident segment files.
//!
//! A directory holds numbered **segments**. The one being written is `NAME.open`; at rotation it
//! is rewritten into compact sorted blocks and sealed as `NAME.seg`. `NAME` is
//! `YYYYMMDDTHHMMSS.mmmZ-SSSSSSSSSS` (creation time UTC, then the 10-digit segment sequence
//! number), so names sort by time. `retention.log` records the segments retention deleted.
//!
//! # Format
//!
//! `docs/FORMAT.md` is the specification (version 2), with every field; in outline:
//!
//! - A segment is a 72-byte header (magic, version, resolution, sequence number, creation
//!   time, the predecessor's chain), then frames (type, length, CRC-32, payload): blocks, and in
//!   a sealed file an index and, last, the seal. The seal holds the SHA-256 of every byte before
//!   it and the chain, SHA-256(predecessor's chain ‖ that hash ‖ sequence number), so that
//!   changing, removing or reordering a sealed segment breaks the chain.
//! - A block holds records (one translation each) column by column (`codec/`). In an `.open`
//!   segment blocks hold events as they came: full records, and ends as references to their
//!   start's record. Sealing rewrites them as groups (the checkpoint, then duration classes),
//!   each sorted by start, every translation once with its end.
//! - A translation still open at a seal is carried into the next segment's checkpoint, so that
//!   a query at any instant of a long flow finds it in the segment that covers that instant,
//!   also across a restart.
//! - The index is a cache that a walk of the frames rebuilds; it holds each block's offset,
//!   counts, time range and a filter of its outside endpoints (`bloom.rs`).
//!
//! # Files
//!
//! - `segment.rs`: the file format (header, frames, seal, index), reading a segment's
//!   metadata and blocks, recovering an `.open` file.
//! - `codec/`: records, address interning, the block encoding and its decoding.
//! - `seal.rs`: sealing an `.open` segment, and the thread that seals rotated ones in order.
//! - `dir.rs`: segment file names, listing, `natrec segments`.
//! - `chain.rs`: the hash chain across segments and `retention.log`.
//! - `writer.rs`: buffering, flushing, rotation, recovery, retention.
//! - `reader.rs`: queries; `catalog.rs`: the cache of sealed segments' time ranges;
//!   `bloom.rs`: the endpoint filters; `verify.rs`: `natrec verify`.
//!
//! # Limits
//!
//! Sealing runs on a thread of its own: at rotation the next segment starts at once and keeps
//! flushing, so a `kill -9` during a seal loses no more than one flush interval. Seals run one
//! at a time in sequence order (each chains to the one before); while one fails (disk full) the
//! later ones wait. Sealing needs the segment's records in memory and free disk space for the
//! sealed copy.

pub(crate) mod bloom;
mod catalog;
mod chain;
pub(crate) mod codec;
mod dir;
mod reader;
mod seal;
pub(crate) mod segment;
mod verify;
mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use dir::{SegmentInfo, SegmentState, list_segments};
pub use reader::Reader;
pub use verify::{Problem, ProblemKind, VerifyReport, verify};
pub use writer::{Writer, WriterStats};

pub use crate::units::Resolution;

/// Errors of the attribution store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O operation on a store file failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is not a natrec segment or is damaged where it cannot be skipped.
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// A time cannot be stored (outside the range of the resolution's 64-bit counter).
    #[error("time {0} cannot be represented")]
    Time(String),
    /// The options are inconsistent.
    #[error("invalid store options: {0}")]
    Options(String),
}

impl From<crate::units::UnitError> for StoreError {
    fn from(e: crate::units::UnitError) -> Self {
        match e {
            crate::units::UnitError::OutOfRange(t) => StoreError::Time(t),
            other => StoreError::Options(other.to_string()),
        }
    }
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        StoreError::Io { op, path: path.to_owned(), source }
    }
    pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> Self {
        StoreError::Corrupt { path: path.to_owned(), reason: reason.into() }
    }
    /// Whether the error is a full file system (ENOSPC or EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => is_disk_full(source),
            _ => false,
        }
    }
}

pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// How a [`Writer`] writes, rotates and retains segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterOptions {
    /// The segment directory (created if missing).
    pub dir: PathBuf,
    /// Seal the active segment when it is this old (default 1 h).
    pub rotate_age: Duration,
    /// Seal the active segment when it has this many bytes (default 256 MiB).
    pub rotate_size: u64,
    /// Write, flush and fsync buffered events at least this often (default 1 s).
    pub flush_interval: Duration,
    /// Delete sealed segments whose last record is older than this many days.
    pub retain_days: Option<u32>,
    /// Delete the oldest sealed segments while the sealed segments exceed this many bytes.
    pub retain_size: Option<u64>,
    /// The unit of stored times (default milliseconds).
    pub resolution: Resolution,
    /// Records per block of a sealed segment (default 262144: larger blocks compress better,
    /// smaller ones are faster to read for a point query).
    pub block_records: usize,
    /// zstd level of sealed blocks (default 1: the columns are transformed so that zstd's
    /// entropy coding does most of the work, and higher levels save little for several times
    /// the CPU; `cargo bench -p recorder --bench store` measures both).
    pub seal_level: i32,
}

/// Mode of every file natrec writes into a store: its owner writes, its group (`natrec`: the
/// staff who answer requests) reads, nobody else.
pub const FILE_MODE: u32 = 0o640;
/// Mode of a store directory (the same rule).
pub const DIR_MODE: u32 = 0o750;

/// Options that create a store file with [`FILE_MODE`] (before the umask).
pub(crate) fn create_options() -> std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut o = std::fs::OpenOptions::new();
    o.create(true).mode(FILE_MODE);
    o
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            dir: PathBuf::from("."),
            rotate_age: Duration::from_secs(3600),
            rotate_size: 256 << 20,
            flush_interval: Duration::from_secs(1),
            retain_days: None,
            retain_size: None,
            resolution: Resolution::Millis,
            block_records: 262_144,
            seal_level: 1,
        }
    }
}
