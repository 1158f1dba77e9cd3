//! `verify`: every checksum, every block, the hash chain, the sequence, retention.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::StoreError;
use super::chain::{hex, read_retention};
use super::codec::BlockView;
use super::dir::{segment_files, seq_of_name};
use super::segment::{self, Header, SEAL_FRAME};

/// What is wrong with a part of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// Bytes fail their checksum or cannot be decoded (media damage, truncation, edits).
    Damaged,
    /// The content does not match its seal, or the segment does not chain to its predecessor.
    Altered,
    /// Segments are absent and not recorded as deleted by retention.
    Missing,
    /// Sequence numbers or names are out of order (renamed or reordered files).
    OutOfOrder,
}

/// One finding of [`verify`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub segment: PathBuf,
    /// The block number inside the segment, when the problem is one block.
    pub block: Option<u64>,
    pub detail: String,
}

/// What [`verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments: u64,
    /// Blocks checked (checksum and decoding).
    pub blocks: u64,
    /// Segments recorded as deleted by retention.
    pub deleted_by_retention: u64,
    /// Problems: empty when everything verifies.
    pub problems: Vec<Problem>,
    /// Remarks that are not failures (an active or torn `.open` segment).
    pub notes: Vec<String>,
    /// The chain hash of the newest sealed segment (hex): keep it elsewhere to detect a
    /// truncated history.
    pub head_chain: Option<String>,
}

impl VerifyReport {
    /// Whether no problem was found.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every checksum, block, seal and the hash chain of `dir`.
pub fn verify(dir: &Path) -> Result<VerifyReport, StoreError> {
    let mut rep = VerifyReport::default();
    let retention = read_retention(dir)?;
    rep.deleted_by_retention = retention.len() as u64;
    let files = segment_files(dir)?;
    let mut prev: Option<(u64, [u8; 32], PathBuf)> = None;
    for (fi, p) in files.iter().cloned().enumerate() {
        rep.segments += 1;
        let sealed = p.extension().is_some_and(|e| e == "seg");
        let data = fs::read(&p).map_err(|e| StoreError::io("reading", &p, e))?;
        let mut problem = |kind, block, detail: String| {
            rep.problems.push(Problem { kind, segment: p.clone(), block, detail });
        };
        let meta = segment::meta_from_bytes(&p, &data, sealed);
        for (block, reason) in &meta.damage {
            if reason.starts_with("torn tail") {
                rep.notes.push(format!(
                    "{}: {reason} (recovered by the next start of the recorder)",
                    p.display()
                ));
            } else {
                problem(ProblemKind::Damaged, *block, reason.clone());
            }
        }
        // Every block must decode, not only pass its checksum.
        let mut blocks = 0u64;
        for f in segment::walk(&data).frames.iter().filter(|f| f.ty == segment::T_BLOCK) {
            let r = BlockView::parse(f.payload(&data))
                .and_then(|v| v.dicts().and_then(|d| v.records(&d)).map(|_| ()));
            if let Err(e) = r {
                problem(ProblemKind::Damaged, Some(blocks), format!("block does not decode: {e}"));
            }
            blocks += 1;
        }
        rep.blocks += blocks;
        let Some(header) = meta.header else {
            // Already reported as damaged; the chain cannot be followed through it.
            prev = None;
            continue;
        };
        let name_seq = seq_of_name(&p);
        if name_seq != Some(header.seq) {
            problem(
                ProblemKind::OutOfOrder,
                None,
                format!(
                    "the file name says segment {}, its header says {} (renamed?)",
                    name_seq.map_or("?".into(), |s| s.to_string()),
                    header.seq
                ),
            );
        }
        // An `.open` header's predecessor hash is provisional (the predecessor's seal may still
        // have been running when it was created): its order is checked, not its hash.
        check_link(&header, prev.as_ref(), sealed, &retention, &mut problem);
        if sealed {
            match check_seal(&data, &header) {
                Ok(chain) => {
                    prev = Some((header.seq, chain, p.clone()));
                    rep.head_chain = Some(hex(&chain));
                }
                Err(detail) => {
                    problem(ProblemKind::Altered, None, detail);
                    prev = Some((header.seq, [0xff; 32], p.clone()));
                }
            }
        } else {
            // Open segments come last: the active one, and those a seal still works on.
            if files[fi + 1..].iter().any(|q| q.extension().is_some_and(|e| e == "seg")) {
                problem(
                    ProblemKind::OutOfOrder,
                    None,
                    "an unsealed segment is followed by sealed ones".into(),
                );
            }
            rep.notes.push(format!(
                "{}: open (being written or sealed, or recovered at the next start)",
                p.display()
            ));
            // A later open segment follows this one; its hash is not checked.
            prev = Some((header.seq, [0xff; 32], p.clone()));
        }
    }
    if prev.is_none() && rep.segments == 0 {
        rep.notes.push("no segments".into());
    }
    Ok(rep)
}

/// Checks that `header` follows `prev` (or the retention log when it is the first segment).
fn check_link(
    header: &Header,
    prev: Option<&(u64, [u8; 32], PathBuf)>,
    check_hash: bool,
    retention: &[super::chain::RetentionEntry],
    problem: &mut impl FnMut(ProblemKind, Option<u64>, String),
) {
    match prev {
        Some((pseq, pchain, ppath)) => {
            if header.seq <= *pseq {
                problem(
                    ProblemKind::OutOfOrder,
                    None,
                    format!(
                        "segment {} comes after segment {pseq} ({})",
                        header.seq,
                        ppath.display()
                    ),
                );
            } else if header.seq > pseq + 1 {
                let deleted = retention.iter().any(|e| e.seq > *pseq && e.seq < header.seq);
                problem(
                    ProblemKind::Missing,
                    None,
                    format!(
                        "segments {}..={} are missing{}",
                        pseq + 1,
                        header.seq - 1,
                        if deleted {
                            " (retention.log lists some, but retention only deletes the oldest)"
                        } else {
                            " and not recorded as deleted by retention"
                        }
                    ),
                );
            } else if check_hash && header.prev_chain != *pchain && *pchain != [0xff; 32] {
                problem(
                    ProblemKind::Altered,
                    None,
                    format!(
                        "does not chain to segment {pseq}: one of them was replaced or altered"
                    ),
                );
            }
        }
        None if header.seq == 0 => {
            if check_hash && header.prev_chain != [0; 32] {
                problem(
                    ProblemKind::Altered,
                    None,
                    "the first segment has a predecessor hash".into(),
                );
            }
        }
        None => {
            let missing: Vec<u64> =
                (0..header.seq).filter(|s| !retention.iter().any(|e| e.seq == *s)).collect();
            if let (Some(a), Some(b)) = (missing.first(), missing.last()) {
                problem(
                    ProblemKind::Missing,
                    None,
                    format!(
                        "{} earlier segment(s) between {a} and {b} are missing and not recorded as deleted by retention",
                        missing.len()
                    ),
                );
            } else if check_hash
                && let Some(e) = retention.iter().find(|e| e.seq + 1 == header.seq)
                && e.chain.is_some_and(|c| c != header.prev_chain)
            {
                problem(
                    ProblemKind::Altered,
                    None,
                    format!("does not chain to segment {} recorded in retention.log", e.seq),
                );
            }
        }
    }
}

/// Recomputes the content hash and chain of a sealed segment; returns the chain.
fn check_seal(data: &[u8], header: &Header) -> Result<[u8; 32], String> {
    if data.len() < segment::HEADER_LEN + SEAL_FRAME {
        return Err("too short to be sealed".into());
    }
    let at = data.len() - SEAL_FRAME;
    let f = segment::frame_at(data, at).map_err(|e| format!("seal: {e}"))?;
    if f.ty != segment::T_SEAL {
        return Err("the last frame is not a seal".into());
    }
    let seal = segment::Seal::decode(f.payload(data))?;
    let sha: [u8; 32] = Sha256::digest(&data[..at]).into();
    if sha != seal.content_sha {
        return Err("the content does not match the hash in its seal (altered)".into());
    }
    if seal.seq != header.seq {
        return Err(format!("the seal says segment {}, the header {}", seal.seq, header.seq));
    }
    let chain = segment::chain_hash(&header.prev_chain, &sha, header.seq);
    if chain != seal.chain {
        return Err("the chain hash in the seal is wrong (altered)".into());
    }
    Ok(chain)
}
