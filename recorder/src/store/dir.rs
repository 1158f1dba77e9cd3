//! The store directory: segment file names, listing, `natrec segments`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use super::codec::BlockKind;
use super::segment::{SegMeta, load_meta};
use super::{Resolution, StoreError};

/// fsyncs a directory so renames and creations in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("syncing directory", dir, e))
}

/// A segment's file name (without extension): creation time, then sequence number.
pub(crate) fn segment_stem(created_ns: i64, seq: u64) -> String {
    let t = Timestamp::from_nanosecond(i128::from(created_ns)).unwrap_or(Timestamp::UNIX_EPOCH);
    let ms = created_ns.rem_euclid(1_000_000_000) / 1_000_000;
    format!("{}.{ms:03}Z-{seq:010}", t.strftime("%Y%m%dT%H%M%S"))
}

/// The sequence number in a segment file name.
pub(crate) fn seq_of_name(path: &Path) -> Option<u64> {
    let stem = path.file_name()?.to_str()?.split('.').take(2).collect::<Vec<_>>().join(".");
    stem.rsplit('-').next()?.parse().ok()
}

/// The segment files of `dir` (sealed and open), in sequence order.
pub(crate) fn segment_files(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let rd = fs::read_dir(dir).map_err(|e| StoreError::io("listing", dir, e))?;
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| StoreError::io("listing", dir, e))?;
        let p = ent.path();
        let ext = p.extension().and_then(|e| e.to_str());
        if matches!(ext, Some("seg") | Some("open")) && seq_of_name(&p).is_some() {
            out.push(p);
        }
    }
    out.sort_by_key(|p| (seq_of_name(p), p.extension().is_some_and(|e| e == "open")));
    Ok(out)
}

/// The state of a segment file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SegmentState {
    /// Sealed, seal and index readable.
    Sealed,
    /// Being written (or left by a crash: the next `natrec record` recovers it).
    Open,
    /// Some part cannot be read; `natrec verify` says which.
    Damaged,
}

/// One line of `natrec segments`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SegmentInfo {
    pub path: PathBuf,
    pub seq: u64,
    pub state: SegmentState,
    /// Earliest start of a translation that began in this segment.
    pub first: Option<Timestamp>,
    /// Latest start or end written.
    pub last: Option<Timestamp>,
    /// Translations that began in this segment (for an open segment: full records so far).
    pub records: u64,
    /// Translations carried over from the previous segment (checkpoint).
    pub carried: u64,
    pub blocks: u64,
    pub bytes: u64,
    pub resolution: Resolution,
}

impl serde::Serialize for Resolution {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl SegmentInfo {
    /// File bytes per translation that began in the segment.
    pub fn bytes_per_record(&self) -> Option<f64> {
        (self.records > 0).then(|| self.bytes as f64 / self.records as f64)
    }
}

impl SegmentInfo {
    /// A segment file that could not be read at all.
    pub(crate) fn unreadable(path: &Path) -> SegmentInfo {
        SegmentInfo {
            path: path.to_owned(),
            seq: seq_of_name(path).unwrap_or(0),
            state: SegmentState::Damaged,
            first: None,
            last: None,
            records: 0,
            carried: 0,
            blocks: 0,
            bytes: fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            resolution: Resolution::default(),
        }
    }

    pub(crate) fn from_meta(m: &SegMeta) -> SegmentInfo {
        let res = m.resolution;
        let ts = |u: i64| res.from_units(u).ok();
        let carried: u64 = m
            .blocks
            .iter()
            .filter(|b| b.meta.kind == BlockKind::Checkpoint)
            .map(|b| b.meta.n_full)
            .sum();
        let total: u64 = m.blocks.iter().map(|b| b.meta.n_full).sum();
        let new = m.blocks.iter().filter(|b| b.meta.kind != BlockKind::Checkpoint);
        let (first, last) =
            match m.seal {
                Some(s) if m.damage.is_empty() => (
                    (s.new_records > 0).then(|| ts(s.min_time)).flatten(),
                    (s.records > 0).then(|| ts(s.max_time)).flatten(),
                ),
                _ => (
                    new.clone()
                        .filter(|b| b.meta.n_full > 0)
                        .map(|b| b.meta.min_start)
                        .min()
                        .and_then(ts),
                    m.blocks
                        .iter()
                        .map(|b| {
                            if b.meta.max_end == i64::MAX {
                                b.meta.max_start
                            } else {
                                b.meta.max_end
                            }
                        })
                        .max()
                        .and_then(ts),
                ),
            };
        SegmentInfo {
            path: m.path.clone(),
            seq: m
                .header
                .map(|h| h.seq)
                .or(m.seal.map(|s| s.seq))
                .or(seq_of_name(&m.path))
                .unwrap_or(0),
            state: if !m.damage.iter().all(|(_, r)| r.starts_with("torn tail")) {
                SegmentState::Damaged
            } else if m.sealed {
                SegmentState::Sealed
            } else {
                SegmentState::Open
            },
            first,
            last,
            records: total - carried,
            carried,
            blocks: m.blocks.len() as u64,
            bytes: m.bytes,
            resolution: res,
        }
    }
}

/// Lists the segments of `dir` in order.
pub fn list_segments(dir: &Path) -> Result<Vec<SegmentInfo>, StoreError> {
    let mut out = Vec::new();
    for p in segment_files(dir)? {
        let m = load_meta(&p)?;
        out.push(SegmentInfo::from_meta(&m));
    }
    Ok(out)
}
