//! The hash chain across segments and the retention log: each sealed segment's chain hashes
//! its predecessor's, and `retention.log` records every segment retention deleted (its
//! sequence number and chain), so that a reader can tell a deleted segment from a missing one.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use jiff::Timestamp;

use super::StoreError;
use super::dir::{segment_files, seq_of_name, sync_dir};
use super::segment;

/// The name of the retention log in a store directory.
pub(crate) const RETENTION_LOG: &str = "retention.log";

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One line of `retention.log`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RetentionEntry {
    pub seq: u64,
    pub chain: Option<[u8; 32]>,
    pub file: String,
}

pub(crate) fn read_retention(dir: &Path) -> Result<Vec<RetentionEntry>, StoreError> {
    let p = dir.join(RETENTION_LOG);
    let text = match fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("reading", &p, e)),
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let field = |k: &str| line.split(' ').find_map(|w| w.strip_prefix(k).map(str::to_owned));
        let seq = field("seq=").and_then(|s| s.parse().ok());
        let Some(seq) = seq else {
            return Err(StoreError::corrupt(
                &p,
                format!("line {}: expected `deleted seq=N chain=HEX file=NAME at=TIME`", n + 1),
            ));
        };
        let chain = field("chain=").and_then(|h| unhex(&h));
        out.push(RetentionEntry { seq, chain, file: field("file=").unwrap_or_default() });
    }
    Ok(out)
}

fn unhex(h: &str) -> Option<[u8; 32]> {
    if h.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The chain of the newest sealed (or retention-deleted) segment and the sequence number after
/// it (`.open` segments are not looked at: they are sealed first).
pub(crate) fn last_chain(dir: &Path) -> Result<([u8; 32], u64), StoreError> {
    let mut best: Option<(u64, [u8; 32])> = None;
    for e in read_retention(dir)? {
        if best.is_none_or(|(s, _)| e.seq >= s) {
            best = Some((e.seq, e.chain.unwrap_or([0; 32])));
        }
    }
    for p in segment_files(dir)? {
        let Some(seq) = seq_of_name(&p) else { continue };
        if p.extension().is_none_or(|e| e != "seg") || best.is_some_and(|(s, _)| seq < s) {
            continue;
        }
        let m = segment::load_meta(&p)?;
        let chain = match m.seal {
            Some(s) => s.chain,
            None => {
                tracing::warn!(path = %p.display(), "the newest segment has no readable seal: the chain restarts from zeros");
                [0; 32]
            }
        };
        best = Some((seq, chain));
    }
    Ok(best.map_or(([0; 32], 0), |(s, c)| (c, s + 1)))
}

/// Appends the deletion of segment `seq` (chain `chain`, file `name`) to the retention log and
/// makes it durable, before the file is removed.
pub(crate) fn record_deletion(
    dir: &Path,
    seq: u64,
    chain: Option<&[u8; 32]>,
    name: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    let chain = chain.map_or_else(|| "unknown".to_owned(), |c| hex(c));
    let line = format!("deleted seq={seq} chain={chain} file={name} at={now}\n");
    let log = dir.join(RETENTION_LOG);
    let mut f = super::create_options()
        .append(true)
        .open(&log)
        .map_err(|e| StoreError::io("opening", &log, e))?;
    f.write_all(line.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| StoreError::io("writing", &log, e))?;
    sync_dir(dir)
}
