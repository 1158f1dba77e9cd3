//! Sealing: an `.open` segment's records rewritten as a sealed segment (blocks grouped by
//! duration class, the index, the seal with its content hash and chain), and the thread that
//! seals rotated segments in order.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::bloom::BlockFilter;
use super::catalog;
use super::codec::{self, BlockKind, CLASS_CARRIED, Rec};
use super::dir::sync_dir;
use super::segment::{
    self, BlockEntry, CLASS_LIMITS_S, Header, N_CLASSES, Seal, T_BLOCK, T_INDEX, T_SEAL,
    chain_hash, encode_index, frame_bytes,
};
use super::{Resolution, StoreError};

/// How long to wait before retrying a seal that failed (a full disk may clear).
pub(crate) const RETRY_SECS: i64 = 10;

/// The duration class of a new record: the first class whose limit its duration is under, the
/// last for longer or open records.
fn class_of(r: &Rec, res: Resolution) -> u8 {
    let Some(e) = r.end else { return N_CLASSES as u8 - 1 };
    let d = e.saturating_sub(r.start);
    CLASS_LIMITS_S
        .iter()
        .position(|lim| d < res.duration_units(std::time::Duration::from_secs(*lim as u64)))
        .unwrap_or(N_CLASSES - 1) as u8
}

/// The records ordered by group (carried first, then duration classes 0, 1, …), each group by
/// start: a stable counting sort by group, then a stable sort of each group by start (records
/// arrive nearly in start order, which the adaptive sort handles in about linear time).
fn sort_groups(recs: &[Rec], res: Resolution) -> Vec<Rec> {
    const GROUPS: usize = N_CLASSES + 1;
    let limits =
        CLASS_LIMITS_S.map(|s| res.duration_units(std::time::Duration::from_secs(s as u64)));
    let group = |r: &Rec| -> usize {
        if r.carried {
            return 0;
        }
        match r.end {
            Some(e) => {
                1 + limits
                    .iter()
                    .position(|&l| e.saturating_sub(r.start) < l)
                    .unwrap_or(N_CLASSES - 1)
            }
            None => N_CLASSES,
        }
    };
    let mut counts = [0usize; GROUPS];
    for r in recs.iter() {
        counts[group(r)] += 1;
    }
    let mut at = [0usize; GROUPS];
    for g in 1..GROUPS {
        at[g] = at[g - 1] + counts[g - 1];
    }
    let starts = at;
    let mut out = recs.to_vec();
    for r in recs.iter() {
        let g = group(r);
        out[at[g]] = *r;
        at[g] += 1;
    }
    for g in 0..GROUPS {
        let part = &mut out[starts[g]..starts[g] + counts[g]];
        if !part.is_sorted_by_key(|r| r.start) {
            part.sort_by_key(|r| r.start);
        }
    }
    out
}

/// A writer that hashes what it writes.
struct HashingWriter<W: Write> {
    inner: W,
    sha: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub(crate) fn write_sealed(
    final_path: &Path,
    header: &Header,
    recs: &[Rec],
    addrs: &[std::net::IpAddr],
    block_records: usize,
    level: i32,
) -> Result<[u8; 32], StoreError> {
    let tmp = final_path.with_extension("seg.tmp");
    let res = write_sealed_tmp(&tmp, header, recs, addrs, block_records, level);
    let chain = match res {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    fs::rename(&tmp, final_path).map_err(|e| StoreError::io("renaming", &tmp, e))?;
    if let Some(dir) = final_path.parent() {
        sync_dir(dir)?;
    }
    Ok(chain)
}

fn write_sealed_tmp(
    tmp: &Path,
    header: &Header,
    recs: &[Rec],
    addrs: &[std::net::IpAddr],
    block_records: usize,
    level: i32,
) -> Result<[u8; 32], StoreError> {
    let res = header.resolution;
    let io = |op| move |e| StoreError::io(op, tmp, e);
    let file =
        super::create_options().write(true).truncate(true).open(tmp).map_err(io("creating"))?;
    let mut w = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        sha: Sha256::new(),
        written: 0,
    };
    w.write_all(&header.encode()).map_err(io("writing"))?;
    let recs = sort_groups(recs, res);
    let mut index = Vec::new();
    let mut payload = Vec::new();
    let mut frame = Vec::new();
    let mut i = 0;
    let block_records = block_records.max(1);
    while i < recs.len() {
        let group = |r: &Rec| if r.carried { CLASS_CARRIED } else { class_of(r, res) };
        let g = group(&recs[i]);
        let mut j = i;
        while j < recs.len() && j - i < block_records && group(&recs[j]) == g {
            j += 1;
        }
        payload.clear();
        let kind = if g == CLASS_CARRIED { BlockKind::Checkpoint } else { BlockKind::Sealed };
        let meta = codec::encode_block(kind, g, 0, &recs[i..j], &[], addrs, level, &mut payload)
            .map_err(io("compressing"))?;
        frame.clear();
        frame_bytes(&mut frame, T_BLOCK, &payload);
        let filter = BlockFilter::of(&recs[i..j], addrs);
        index.push(BlockEntry { offset: w.written, len: frame.len() as u64, meta, filter });
        w.write_all(&frame).map_err(io("writing"))?;
        i = j;
    }
    let index_offset = w.written;
    frame.clear();
    frame_bytes(&mut frame, T_INDEX, &encode_index(&index));
    w.write_all(&frame).map_err(io("writing"))?;
    let content_sha: [u8; 32] = w.sha.clone().finalize().into();
    let chain = chain_hash(&header.prev_chain, &content_sha, header.seq);
    let new: Vec<&Rec> = recs.iter().filter(|r| !r.carried).collect();
    let seal = Seal {
        seq: header.seq,
        blocks: index.len() as u32,
        records: recs.len() as u64,
        new_records: new.len() as u64,
        min_time: new.iter().map(|r| r.start).min().unwrap_or(0),
        max_time: recs.iter().map(|r| r.end.unwrap_or(r.start)).max().unwrap_or(0),
        index_offset,
        content_sha,
        chain,
        resolution: res,
    };
    frame.clear();
    frame_bytes(&mut frame, T_SEAL, &seal.encode());
    w.write_all(&frame).map_err(io("writing"))?;
    let file = w.inner.into_inner().map_err(|e| StoreError::io("writing", tmp, e.into_error()))?;
    file.sync_all().map_err(io("syncing"))?;
    Ok(chain)
}

/// Seals an `.open` segment from its recovered records, chained to `prev_chain`; removes the
/// `.open`. Returns the sealed segment's chain.
pub(crate) fn seal_recovered(
    path: &Path,
    rec: &segment::Recovered,
    prev_chain: [u8; 32],
    block_records: usize,
    level: i32,
) -> Result<[u8; 32], StoreError> {
    let header = Header { prev_chain, ..rec.header };
    let chain = write_sealed(
        &path.with_extension("seg"),
        &header,
        &rec.recs,
        &rec.addrs.addrs,
        block_records,
        level,
    )?;
    fs::remove_file(path).map_err(|e| StoreError::io("removing", path, e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
        catalog::refresh(dir);
    }
    Ok(chain)
}

/// The thread that seals rotated segments, in order, each chained to the one before.
pub(crate) struct Sealer {
    jobs: Option<std::sync::mpsc::Sender<PathBuf>>,
    /// One report per seal attempt.
    pub(crate) reports: std::sync::mpsc::Receiver<Result<(), StoreError>>,
    /// Returns the chain of the last segment sealed and whether every queued one was.
    thread: Option<std::thread::JoinHandle<([u8; 32], bool)>>,
    /// Set when the writer closes: a failing seal is tried once more, then left for the next
    /// start.
    closing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Sealer {
    pub(crate) fn start(chain: [u8; 32], dir: PathBuf, block_records: usize, level: i32) -> Sealer {
        let (jobs, queue) = std::sync::mpsc::channel::<PathBuf>();
        let (report, reports) = std::sync::mpsc::channel();
        let (failed, where_) = (report.clone(), dir.clone());
        let closing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = closing.clone();
        let thread = std::thread::Builder::new().name("natrec-seal".into()).spawn(move || {
            let closed = || stop.load(std::sync::atomic::Ordering::Relaxed);
            let mut chain = chain;
            while let Ok(path) = queue.recv() {
                loop {
                    let res = segment::recover_open(&path)
                        .and_then(|rec| seal_recovered(&path, &rec, chain, block_records, level));
                    match res {
                        Ok(c) => {
                            chain = c;
                            let _ = report.send(Ok(()));
                            break;
                        }
                        Err(e) => {
                            let _ = report.send(Err(e));
                            if closed() {
                                tracing::warn!(dir = %dir.display(), "rotated segments left unsealed: the next start seals them");
                                return (chain, false);
                            }
                            // Retried (a full disk may clear) every RETRY_SECS, and once more
                            // when the writer closes; later segments wait: each must chain to
                            // this one.
                            for _ in 0..RETRY_SECS * 10 {
                                if closed() {
                                    break;
                                }
                                std::thread::sleep(std::time::Duration::from_millis(100));
                            }
                        }
                    }
                }
            }
            (chain, true)
        });
        match thread {
            Ok(t) => Sealer { jobs: Some(jobs), reports, thread: Some(t), closing },
            Err(e) => {
                // No thread: the jobs stay queued and `finish` reports them unsealed.
                let _ =
                    failed.send(Err(StoreError::io("starting the seal thread for", &where_, e)));
                Sealer { jobs: Some(jobs), reports, thread: None, closing }
            }
        }
    }

    pub(crate) fn queue(&mut self, open: PathBuf) {
        if let Some(j) = &self.jobs {
            let _ = j.send(open);
        }
    }

    /// Waits for every queued seal; returns the last chain, whether every queued segment was
    /// sealed, and the reports not yet taken.
    ///
    /// (Dropping a `Sealer` also waits: no thread may touch the directory after its writer.)
    pub(crate) fn finish(mut self) -> ([u8; 32], bool, Vec<Result<(), StoreError>>) {
        let (chain, complete) = self.stop().unwrap_or(([0; 32], false));
        (chain, complete, self.reports.try_iter().collect())
    }

    /// Closes the queue, has a failing seal tried once more, and joins the thread: its result,
    /// or `None` when there was no thread or it panicked.
    fn stop(&mut self) -> Option<([u8; 32], bool)> {
        self.jobs = None;
        self.closing.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for Sealer {
    fn drop(&mut self) {
        self.stop();
    }
}
