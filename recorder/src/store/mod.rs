//! The attribution log store: compact, compressed, rotating, tamper-evident segment files.
//!
//! A directory holds numbered **segments**. The one being written is `NAME.open`; at rotation it
//! is rewritten into compact sorted blocks and sealed as `NAME.seg`. `NAME` is
//! `YYYYMMDDTHHMMSS.mmmZ-SSSSSSSSSS` (creation time UTC, then the 10-digit segment sequence
//! number), so names sort by time. `retention.log` records the segments retention deleted.
//!
//! # Format (version 2, all integers little-endian)
//!
//! The full specification, with every field, is `docs/FORMAT.md`; in short:
//!
//! ```text
//! segment  := header frame*            (an .open file; its tail may be torn)
//!           | header block+ index seal (a sealed file)
//! header   := "NATRSEG1" u16 version=2 u8 resolution u8 0 u32 0 u64 seq i64 created_ns
//!             [32] prev_chain u32 crc32(bytes 0..64) u32 0                         (72 bytes)
//! frame    := u8 type u8[3]=0 u32 len u32 crc32(type, len, payload) payload[len]
//!             type 1 = block, 2 = seal, 3 = index
//! seal     := frame of type 2 whose payload is 120 bytes, the last 132 bytes of a sealed file:
//!             u64 seq u32 blocks u64 records u64 new_records i64 min_time i64 max_time
//!             u64 index_offset [32] content_sha256 [32] chain u8 resolution u8[3]=0
//!             content_sha256 = SHA-256(file bytes before the seal frame)
//!             chain          = SHA-256(prev_chain ‖ content_sha256 ‖ seq as u64 LE)
//! ```
//!
//! A **block** holds records column by column (see [`codec`]): per-block dictionaries of inside,
//! outside and remote addresses, a per-block table of (protocol, remote port) *services* that
//! records refer to by a one-byte code, ports as byte planes, start times delta-coded in the
//! segment's [`Resolution`], durations in streams by service, each column zstd-compressed.
//! A reader refuses a segment of another version with an error naming both versions (version 1
//! segments, written before the service table, are not read by this version). A record is one translation: start,
//! optional end, endpoints, kind, protocol, zone, flags, and a `carried` bit.
//!
//! **Invariants.** Every frame's CRC holds. In a sealed segment, blocks come as *groups*:
//! checkpoint records first (translations started in an earlier segment and still open when this
//! one began, `carried` set), then new translations by duration class (under 45 s, under 150 s,
//! under 10 min, longer or still open), each group sorted by start; every translation of the segment appears
//! once, merged with its end when that end happened before the seal. A translation open at seal
//! is carried into the next segment's checkpoint, so a query at any instant of a long flow finds
//! it in the segment covering that instant, also across a restart (recovery seals the torn
//! segment and the new one starts with the recovered open translations). `prev_chain` of segment
//! `n` is the `chain` of segment `n - 1` (zeros for segment 0, or the chain recorded in
//! `retention.log` for a deleted predecessor).
//!
//! The index frame is a cache: it can always be rebuilt by walking the block frames. Besides
//! each block's offset, counts and time range it carries (since the endpoint filters were
//! introduced; older indexes end before them) a per-block filter of the outside
//! (address, port) pairs (see `bloom.rs`): an exact, zstd-compressed port bitmap per busy
//! outside address, a Bloom filter (~1 % false positives, 10 bits per distinct pair) for the
//! others; a point query reads only the blocks that may hold its outside endpoint. An index without
//! filters, or one rebuilt by walking the frames, reads every block whose time range matches.
//!
//! In an `.open` segment, blocks hold events as they came: full records (starts, and ends whose
//! start is not in the segment) and *end references* (segment ordinal of the full record, end
//! time, flags). The first block is the checkpoint (block kind 1). Recovery keeps every frame
//! whose CRC holds and cuts the file after the last one.

//!
//! # Limits
//!
//! Sealing runs on the writer's own seal thread (zstd level 1 by default, about 0.3 µs a
//! translation on the synthetic workload; about 0.5 µs at level 9, 3.3 µs at 19): at rotation
//! the next segment starts at once and keeps flushing, so a `kill -9` during a seal loses no more
//! than one flush interval. Seals run one at a time in sequence order (each chains to the one
//! before); while one fails (disk full) the later ones wait. Sealing needs the records of the
//! segment in memory (about 40 bytes a translation) and free disk space for the sealed copy.

mod bloom;
mod catalog;
pub(crate) mod codec;
mod reader;
mod segment;
mod verify;
mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use reader::Reader;
pub use segment::{SegmentInfo, SegmentState, list_segments};
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
