//! The directory catalog: a cache of every sealed segment's header and seal, so that a query
//! opens only the segments its time range needs.
//!
//! A reader needs, per sealed segment, its sequence number, creation time and the time range of
//! its records (the seal's `min_time` and `max_time`). Reading them from the files costs two
//! small reads per segment: over months of hourly segments, thousands of random reads on a cold
//! page cache. `Reader::open` reads them instead from `DIR/segments.catalog`, one file, and
//! reads the header and seal of the segments the catalog does not know (or knows with another
//! file length). The writer rewrites the catalog (a temporary file renamed over it) when it
//! opens, seals or deletes; readers write nothing into the store.
//!
//! The catalog is a cache: it is never needed, a reader that cannot read it (a damaged file)
//! reads the segments' own headers and seals, and `natrec verify` ignores it. Sealed segments are never modified, so an entry whose file name and length match
//! describes the file; anything else in it is ignored.
//!
//! Layout (little-endian): magic `NATRCAT1`; u32 entry count; per entry: u16 name length, the
//! file name (UTF-8), u64 file length, i64 created (ns), u64 seq, u8 resolution, u32 blocks,
//! u64 records, u64 new records, i64 min_time, i64 max_time; then the CRC-32 (IEEE) of every
//! byte before it. The fields are the segment header's and seal's (see `docs/FORMAT.md`).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use super::segment::{HEADER_LEN, Header, SEAL_FRAME, Seal, T_SEAL, frame_at};
use super::{Resolution, StoreError};

/// The catalog's file name in a segment directory.
pub(crate) const CATALOG: &str = "segments.catalog";
const MAGIC: &[u8; 8] = b"NATRCAT1";

/// What the catalog keeps of a sealed segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Summary {
    /// File length when the summary was taken.
    pub bytes: u64,
    /// Header: creation time (ns since the epoch).
    pub created_ns: i64,
    pub seq: u64,
    pub resolution: Resolution,
    /// Seal fields.
    pub blocks: u32,
    pub records: u64,
    pub new_records: u64,
    /// Earliest start of a record new in the segment (resolution units).
    pub min_time: i64,
    /// Latest start or end of any record (resolution units).
    pub max_time: i64,
}

impl Summary {
    /// Reads the header and the seal of a sealed segment file of `bytes` bytes; `None` when
    /// either fails its checks (the reader then reads the whole segment when it needs it).
    pub fn read(path: &Path, bytes: u64) -> Option<Summary> {
        if bytes < (HEADER_LEN + SEAL_FRAME) as u64 {
            return None;
        }
        let file = File::open(path).ok()?;
        let mut head = [0u8; HEADER_LEN];
        file.read_exact_at(&mut head, 0).ok()?;
        let header = Header::decode(&head).ok()?;
        let mut tail = [0u8; SEAL_FRAME];
        file.read_exact_at(&mut tail, bytes - SEAL_FRAME as u64).ok()?;
        let f = frame_at(&tail, 0).ok()?;
        if f.ty != T_SEAL || f.end() != SEAL_FRAME {
            return None;
        }
        let seal = Seal::decode(f.payload(&tail)).ok()?;
        if seal.seq != header.seq || seal.resolution != header.resolution {
            return None;
        }
        Some(Summary {
            bytes,
            created_ns: header.created_ns,
            seq: header.seq,
            resolution: header.resolution,
            blocks: seal.blocks,
            records: seal.records,
            new_records: seal.new_records,
            min_time: seal.min_time,
            max_time: seal.max_time,
        })
    }
}

/// The catalog's entries by file name.
pub(crate) type Entries = HashMap<String, Summary>;

/// Reads `DIR/segments.catalog`; empty when it is absent or fails its checks.
pub(crate) fn load(dir: &Path) -> Entries {
    fs::read(dir.join(CATALOG)).ok().and_then(|b| decode(&b)).unwrap_or_default()
}

/// The summary of each of `files` (a directory's segments): from the catalog `known` where it
/// knows the file at its length, read from the file otherwise; `None` for an open segment or
/// one whose header or seal cannot be read. Also returns the catalog they make.
pub(crate) fn summaries(
    known: &Entries,
    files: &[PathBuf],
) -> Result<(Vec<Option<Summary>>, Entries), StoreError> {
    let mut fresh = Entries::with_capacity(files.len());
    let mut out = Vec::with_capacity(files.len());
    for path in files {
        if path.extension().is_none_or(|e| e != "seg") {
            out.push(None);
            continue;
        }
        let bytes =
            fs::metadata(path).map_err(|e| StoreError::io("reading metadata of", path, e))?.len();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let summary = match known.get(&name) {
            Some(s) if s.bytes == bytes => Some(*s),
            _ => Summary::read(path, bytes),
        };
        if let Some(s) = summary {
            fresh.insert(name, s);
        }
        out.push(summary);
    }
    Ok((out, fresh))
}

/// Brings `DIR/segments.catalog` up to date with the directory's sealed segments. The writer's
/// job, after it seals or deletes: readers write nothing into a store. Failing changes nothing
/// but the next open's speed.
pub(crate) fn refresh(dir: &Path) {
    let known = load(dir);
    match super::dir::segment_files(dir).and_then(|files| summaries(&known, &files)) {
        Ok((_, fresh)) if fresh != known => store(dir, &fresh),
        Ok(_) => {}
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "segment catalog not refreshed")
        }
    }
}

/// Replaces `DIR/segments.catalog` with `entries` (a temporary file renamed over it). A cache:
/// failing to write it changes nothing but the next open's speed.
pub(crate) fn store(dir: &Path, entries: &Entries) {
    let tmp = dir.join(format!("{CATALOG}.{}.tmp", std::process::id()));
    let res = super::create_options()
        .write(true)
        .truncate(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&encode(entries)))
        .and_then(|()| fs::rename(&tmp, dir.join(CATALOG)));
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        tracing::debug!(dir = %dir.display(), error = %e, "segment catalog not written");
    }
}

fn encode(entries: &Entries) -> Vec<u8> {
    let mut names: Vec<&String> = entries.keys().collect();
    names.sort();
    let mut b = Vec::with_capacity(12 + names.len() * 100);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&(names.len() as u32).to_le_bytes());
    for name in names {
        let s = &entries[name];
        b.extend_from_slice(&(name.len() as u16).to_le_bytes());
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&s.bytes.to_le_bytes());
        b.extend_from_slice(&s.created_ns.to_le_bytes());
        b.extend_from_slice(&s.seq.to_le_bytes());
        b.push(s.resolution.code());
        b.extend_from_slice(&s.blocks.to_le_bytes());
        b.extend_from_slice(&s.records.to_le_bytes());
        b.extend_from_slice(&s.new_records.to_le_bytes());
        b.extend_from_slice(&s.min_time.to_le_bytes());
        b.extend_from_slice(&s.max_time.to_le_bytes());
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Option<Entries> {
    let (body, crc) = b.split_at_checked(b.len().checked_sub(4)?)?;
    if crc32fast::hash(body).to_le_bytes() != crc || !body.starts_with(MAGIC) {
        return None;
    }
    let mut c = &body[MAGIC.len()..];
    let mut take = |n: usize| -> Option<&[u8]> {
        let (a, rest) = c.split_at_checked(n)?;
        c = rest;
        Some(a)
    };
    let u64_of = |s: &[u8]| s.try_into().ok().map(u64::from_le_bytes);
    let count = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let mut out = Entries::with_capacity(count as usize);
    for _ in 0..count {
        let n = u16::from_le_bytes(take(2)?.try_into().ok()?);
        let name = std::str::from_utf8(take(usize::from(n))?).ok()?.to_owned();
        let bytes = u64_of(take(8)?)?;
        let created_ns = u64_of(take(8)?)? as i64;
        let seq = u64_of(take(8)?)?;
        let resolution = Resolution::from_code(take(1)?[0])?;
        let blocks = u32::from_le_bytes(take(4)?.try_into().ok()?);
        let records = u64_of(take(8)?)?;
        let new_records = u64_of(take(8)?)?;
        let min_time = u64_of(take(8)?)? as i64;
        let max_time = u64_of(take(8)?)? as i64;
        out.insert(
            name,
            Summary {
                bytes,
                created_ns,
                seq,
                resolution,
                blocks,
                records,
                new_records,
                min_time,
                max_time,
            },
        );
    }
    c.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(i: u64) -> Summary {
        Summary {
            bytes: 1000 + i,
            created_ns: 1_700_000_000_000_000_000 + i as i64,
            seq: i,
            resolution: Resolution::Millis,
            blocks: 3,
            records: 10 * i,
            new_records: 9 * i,
            min_time: -5,
            max_time: 1 << 40,
        }
    }

    #[test]
    fn entries_round_trip_and_any_flipped_byte_is_refused() {
        let entries: Entries = (0..5).map(|i| (format!("seg-{i}.seg"), sample(i))).collect();
        let b = encode(&entries);
        assert_eq!(decode(&b), Some(entries));
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x10;
            assert_eq!(decode(&c), None, "flipped byte {i} accepted");
        }
        assert_eq!(decode(&b[..b.len() - 1]), None);
    }

    #[test]
    fn a_store_and_load_round_trip_through_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(load(dir.path()).is_empty());
        let entries: Entries = [("a.seg".to_owned(), sample(7))].into_iter().collect();
        store(dir.path(), &entries);
        assert_eq!(load(dir.path()), entries);
        let left: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from(CATALOG)],
            "a temporary file was left behind"
        );
    }
}
