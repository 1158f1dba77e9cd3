//! The segment writer: buffering, flushing, rotation, recovery, retention.

use crate::log_limit::Repeats;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use super::catalog;
use super::chain::{last_chain, record_deletion};
use super::codec::{self, BlockKind, EndRef, Interner, Rec};
use super::dir::{segment_files, segment_stem, seq_of_name, sync_dir};
use super::seal::{RETRY_SECS, Sealer, seal_recovered};
use super::segment::{self, Header, T_BLOCK};
use super::{Resolution, StoreError, WriterOptions};
use crate::model::{Flags, FlowEvent, Proto, Translation};
use crate::open_table::OpenTable;

/// zstd level of live blocks (rewritten at seal).
const LIVE_LEVEL: i32 = 1;
/// How often retention runs between rotations.
const RETENTION_EVERY_SECS: i64 = 60;

/// Counters of a [`Writer`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriterStats {
    /// Events given to [`Writer::append`].
    pub appended: u64,
    /// Block frames written (live blocks; sealing rewrites them).
    pub blocks_written: u64,
    /// Bytes written to `.open` files.
    pub bytes_written: u64,
    /// Successful flush-and-fsync rounds.
    pub flushes: u64,
    /// Events that could not be written (disk full or other write errors) and were dropped.
    pub lost_events: u64,
    /// Write, fsync, seal or delete operations that failed (each was retried or counted).
    pub write_errors: u64,
    /// Segments sealed.
    pub segments_sealed: u64,
    /// When the last of them was sealed.
    pub last_seal: Option<Timestamp>,
    /// Segments deleted by retention.
    pub segments_deleted: u64,
    /// Translations open right now.
    pub open_translations: u64,
    /// The last error, for the operator.
    pub last_error: Option<String>,
}

impl WriterStats {
    fn sealed_one(&mut self) {
        self.segments_sealed += 1;
        self.last_seal = Some(Timestamp::now());
    }
}

/// A compact key of a live translation (addresses interned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    inside: u32,
    outside: u32,
    remote: u32,
    ports: [u16; 3],
    zone: u16,
    proto: u8,
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        // Three words instead of a write per field.
        h.write_u64(u64::from(self.inside) | (u64::from(self.outside) << 32));
        h.write_u64(
            u64::from(self.remote)
                | (u64::from(self.ports[0]) << 32)
                | (u64::from(self.ports[1]) << 48),
        );
        h.write_u64(
            u64::from(self.ports[2]) | (u64::from(self.zone) << 16) | (u64::from(self.proto) << 32),
        );
    }
}

/// What the writer keeps of an open translation besides its key and start.
#[derive(Clone, Copy, Debug)]
struct OpenRec {
    /// Ordinal of its full record in the active segment.
    ordinal: u64,
    kind: u8,
    flags: u8,
}

impl Key {
    /// The record of an open translation (no end) from its key, start and the rest.
    fn rec(&self, start: i64, o: OpenRec) -> Rec {
        Rec {
            start,
            end: None,
            inside: self.inside,
            outside: self.outside,
            remote: self.remote,
            in_port: self.ports[0],
            out_port: self.ports[1],
            rem_port: self.ports[2],
            zone: self.zone,
            kind: o.kind,
            proto: self.proto,
            flags: o.flags,
            carried: false,
        }
    }
    fn of(r: &Rec) -> Key {
        Key {
            inside: r.inside,
            outside: r.outside,
            remote: r.remote,
            ports: [r.in_port, r.out_port, r.rem_port],
            zone: r.zone,
            proto: r.proto,
        }
    }
}

struct Active {
    file: File,
    path: PathBuf,
    /// End of the last complete frame: everything before it is good.
    len: u64,
    created: Timestamp,
}

/// Writes translations into segments of a directory (see the module docs for the format).
pub struct Writer {
    opts: WriterOptions,
    res: Resolution,
    active: Option<Active>,
    prev_chain: [u8; 32],
    next_seq: u64,
    /// Seals of rotated segments, on their own thread.
    sealer: Option<Sealer>,
    addrs: Interner,
    /// Full records not yet written; their ordinals are `written_ordinal..`.
    pending: Vec<Rec>,
    pending_refs: Vec<EndRef>,
    /// Ordinals of full records on disk in the active segment.
    written_ordinal: u64,
    /// Live translations: start and ordinal in the active segment.
    /// Open translations: (tuple key, start in units) → ordinal of the full record. Keyed by the
    /// start too: a tuple's next entry can start before the previous one's end event arrives.
    open: OpenTable<(Key, i64), OpenRec>,
    recovered_open: Vec<Translation>,
    last_flush: Option<Timestamp>,
    retry_after: Option<Timestamp>,
    last_retention: Option<Timestamp>,
    /// The last write failed (disk full): appends only buffer until a tick's flush succeeds.
    stalled: bool,
    stats: WriterStats,
    /// Failures repeat at every flush while they last: logged once a minute.
    disk_full_log: Repeats,
    error_log: Repeats,
    lost_log: Repeats,
}

fn now_ns(t: Timestamp) -> i64 {
    i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX)
}

impl Writer {
    /// Opens DIR (creating it), recovers a torn `.open` tail, seals it, starts a new segment.
    pub fn open(opts: WriterOptions) -> Result<Writer, StoreError> {
        if opts.block_records == 0 {
            return Err(StoreError::Options("block_records must be at least 1".into()));
        }
        let dir = opts.dir.clone();
        create_private_dir(&dir)?;
        let mut stats = WriterStats::default();
        // Leftovers of an interrupted seal.
        for ent in fs::read_dir(&dir).map_err(|e| StoreError::io("listing", &dir, e))? {
            let p = ent.map_err(|e| StoreError::io("listing", &dir, e))?.path();
            if p.to_string_lossy().ends_with(".seg.tmp") {
                fs::remove_file(&p).map_err(|e| StoreError::io("removing", &p, e))?;
            }
        }
        let mut carried: Vec<Rec> = Vec::new();
        let mut addrs = Interner::default();
        let mut recovered_open = Vec::new();
        // Each recovered segment chains to the one sealed before it (an `.open` header's
        // predecessor hash may predate a seal that was still running).
        let (mut chain, _) = last_chain(&dir)?;
        for p in segment_files(&dir)? {
            if p.extension().is_none_or(|e| e != "open") {
                continue;
            }
            let sealed = p.with_extension("seg");
            if sealed.exists() {
                // Crash after the rename of a seal: the sealed file is complete.
                fs::remove_file(&p).map_err(|e| StoreError::io("removing", &p, e))?;
                continue;
            }
            let rec = match segment::recover_open(&p) {
                Ok(r) => r,
                Err(StoreError::Corrupt { reason, .. }) => {
                    // No readable header: nothing can be recovered; keep the bytes aside.
                    let aside = p.with_extension("open.damaged");
                    tracing::warn!(path = %p.display(), %reason, "unrecoverable open segment moved aside");
                    fs::rename(&p, &aside).map_err(|e| StoreError::io("renaming", &p, e))?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if rec.dropped_bytes > 0 {
                tracing::warn!(path = %p.display(), bytes = rec.dropped_bytes, "cut the torn tail of an open segment");
                let f = OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .map_err(|e| StoreError::io("opening", &p, e))?;
                f.set_len(rec.clean_end as u64).map_err(|e| StoreError::io("truncating", &p, e))?;
                f.sync_all().map_err(|e| StoreError::io("syncing", &p, e))?;
            }
            for b in &rec.bad_blocks {
                tracing::warn!(path = %p.display(), block = %b, "skipped an undecodable block");
            }
            let res = rec.header.resolution;
            chain = seal_recovered(&p, &rec, chain, opts.block_records, opts.seal_level)?;
            stats.sealed_one();
            tracing::info!(path = %sealed.display(), "recovered and sealed");
            // Still open at the end of the recovered segment: the new segment's checkpoint
            // carries them (marked, so a reader resolves them with the recovered records).
            carried = rec
                .recs
                .iter()
                .filter(|r| r.end.is_none())
                .map(|r| Rec { carried: true, ..*r })
                .collect();
            recovered_open = carried
                .iter()
                .map(|r| to_translation(r, &rec.addrs.addrs, res))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|reason| StoreError::corrupt(&p, reason))?;
            if res != opts.resolution {
                // The new segment has another resolution: re-express the carried times.
                for r in &mut carried {
                    r.start = rescale(r.start, res, opts.resolution)?;
                }
            }
            addrs = rec.addrs;
        }
        catalog::refresh(&dir);
        let (prev_chain, next_seq) = last_chain(&dir)?;
        let mut w = Writer {
            res: opts.resolution,
            opts,
            active: None,
            prev_chain,
            next_seq,
            sealer: None,
            addrs,
            pending: Vec::new(),
            pending_refs: Vec::new(),
            written_ordinal: 0,
            open: OpenTable::default(),
            recovered_open,
            last_flush: None,
            retry_after: None,
            last_retention: None,
            stalled: false,
            stats,
            disk_full_log: Repeats::default(),
            error_log: Repeats::default(),
            lost_log: Repeats::default(),
        };
        w.start_segment(carried, Timestamp::now())?;
        w.retention(Timestamp::now());
        Ok(w)
    }

    /// Translations that were open (started, not ended) at the end of the recovered data: the
    /// recorder reconciles them with the kernel's live entries at start-up.
    pub fn recovered_open(&self) -> &[Translation] {
        &self.recovered_open
    }

    /// The time resolution of the segments this writer writes.
    pub fn resolution(&self) -> Resolution {
        self.res
    }

    /// Appends one event (buffers it; encodes a block when full or at flush time).
    ///
    /// Times are rounded down to the resolution. A start for a translation already open with the
    /// same start is ignored (idempotent re-seeding after a restart); an end whose start is in
    /// the active segment is stored as a reference to it.
    pub fn append(&mut self, ev: &FlowEvent) -> Result<(), StoreError> {
        let r = self.prepare(ev)?;
        self.apply(ev, r)
    }

    /// Appends events in order, as [`Writer::append`] each; what fails goes to `fail` and the
    /// rest is still appended. Each event's slot in the map of open translations is asked for
    /// a few events before it is used (`OpenTable::prefetch`), so that the lookups of a batch
    /// overlap their waits for memory.
    pub fn append_all(&mut self, evs: &[FlowEvent], mut fail: impl FnMut(StoreError)) {
        const LOOKAHEAD: usize = 16;
        let mut ready: Vec<(&FlowEvent, Rec)> = Vec::with_capacity(LOOKAHEAD);
        for chunk in evs.chunks(LOOKAHEAD) {
            for ev in chunk {
                match self.prepare(ev) {
                    Ok(r) => {
                        self.open.prefetch(&(Key::of(&r), r.start));
                        ready.push((ev, r));
                    }
                    Err(e) => fail(e),
                }
            }
            for (ev, r) in ready.drain(..) {
                if let Err(e) = self.apply(ev, r) {
                    fail(e);
                }
            }
        }
    }

    /// An event's record, its addresses interned.
    fn prepare(&mut self, ev: &FlowEvent) -> Result<Rec, StoreError> {
        self.stats.appended += 1;
        self.rec_of(ev.translation())
    }

    /// Appends an event whose record `prepare` made.
    fn apply(&mut self, ev: &FlowEvent, mut r: Rec) -> Result<(), StoreError> {
        let key = Key::of(&r);
        match ev {
            FlowEvent::Start(_) => {
                r.end = None;
                let ord = self.written_ordinal + self.pending.len() as u64;
                if self.open.get(&(key, r.start)).is_some() {
                    return Ok(());
                }
                self.open
                    .insert((key, r.start), OpenRec { ordinal: ord, kind: r.kind, flags: r.flags });
                self.pending.push(r);
            }
            FlowEvent::End(_) => {
                let end = r.end.unwrap_or(r.start);
                match self.open.remove(&(key, r.start)) {
                    Some(o) => {
                        self.pending_refs.push(EndRef { ordinal: o.ordinal, end, flags: r.flags });
                    }
                    _ => {
                        r.end = Some(end);
                        self.pending.push(r);
                    }
                }
            }
        }
        if self.stalled {
            // Writes failed: retried at the next tick; meanwhile keep memory bounded.
            self.drop_if_too_much();
        } else if self.pending.len() + self.pending_refs.len() >= self.opts.block_records
            && self.active.is_some()
            && let Err(e) = self.write_pending()
        {
            self.note_error(&e);
            self.stalled = true;
            self.drop_if_too_much();
        }
        Ok(())
    }

    /// Periodic work, called at least every 100 ms by the owner: flush+fsync when
    /// flush_interval elapsed, rotate by age/size, apply retention.
    ///
    /// A full disk is not an error here: what could not be written is counted in
    /// [`WriterStats::lost_events`] and writing resumes when space returns.
    pub fn tick(&mut self, now: Timestamp) -> Result<(), StoreError> {
        self.seal_reports();
        let retry_ok = self.retry_after.is_none_or(|t| now >= t);
        if self.active.is_none() {
            if !retry_ok {
                return Ok(());
            }
            let carried = std::mem::take(&mut self.pending);
            let refs = std::mem::take(&mut self.pending_refs);
            // start_segment renumbers: keep the buffered events in order.
            if let Err(e) = self.start_segment_with(carried, refs, now) {
                self.note_error(&e);
                self.retry_after = Some(now + jiff::SignedDuration::from_secs(RETRY_SECS));
                self.drop_if_too_much();
                return Ok(());
            }
        }
        let due = self.last_flush.is_none_or(|t| {
            now.duration_since(t).unsigned_abs() >= self.opts.flush_interval || now < t
        });
        if due {
            self.flush_now(now);
        }
        let rotate = self.active.as_ref().is_some_and(|a| {
            a.len >= self.opts.rotate_size
                || now.duration_since(a.created).unsigned_abs() >= self.opts.rotate_age
                    && now > a.created
        });
        if rotate
            && retry_ok
            && let Err(e) = self.rotate(now)
        {
            self.note_error(&e);
            self.retry_after = Some(now + jiff::SignedDuration::from_secs(RETRY_SECS));
        }
        if self
            .last_retention
            .is_none_or(|t| now.duration_since(t).as_secs() >= RETENTION_EVERY_SECS)
        {
            self.retention(now);
        }
        Ok(())
    }

    /// Takes the rotation, flush and retention settings of `opts` (a reload); the others stay.
    /// Retention runs at the next tick.
    pub fn set_limits(&mut self, opts: &WriterOptions) {
        self.opts.rotate_age = opts.rotate_age;
        self.opts.rotate_size = opts.rotate_size;
        self.opts.flush_interval = opts.flush_interval;
        self.opts.retain_days = opts.retain_days;
        self.opts.retain_size = opts.retain_size;
        self.last_retention = None;
    }

    /// Counters so far.
    pub fn stats(&self) -> WriterStats {
        let mut s = self.stats.clone();
        s.open_translations = self.open.len() as u64;
        s
    }

    /// Flushes, fsyncs and seals the active segment. Translations still open are carried into
    /// a new `.open` segment that holds only their checkpoint: the next [`Writer::open`] recovers
    /// them from it ([`Writer::recovered_open`]), so their ends pair with their starts.
    pub fn close(mut self) -> Result<WriterStats, StoreError> {
        if self.active.is_none() {
            let carried = std::mem::take(&mut self.pending);
            let refs = std::mem::take(&mut self.pending_refs);
            self.start_segment_with(carried, refs, Timestamp::now())?;
        }
        self.write_pending()?;
        self.sync()?;
        // The rotated segments are sealed first: the active one chains to the last of them.
        if let Some(sealer) = self.sealer.take() {
            let (chain, complete, reports) = sealer.finish();
            for r in reports {
                self.count_seal(r);
            }
            self.prev_chain = chain;
            if !complete {
                // A seal failed for good: the next start seals them all in order.
                return Err(StoreError::Options(
                    "a rotated segment could not be sealed; the next start recovers and seals it"
                        .into(),
                ));
            }
        }
        let carried = self.seal_active()?;
        if !carried.is_empty() {
            self.start_segment(carried, Timestamp::now())?;
        }
        Ok(self.stats())
    }

    /// Counts what the sealer thread reported.
    fn seal_reports(&mut self) {
        let Some(sealer) = &self.sealer else { return };
        let reports: Vec<Result<(), StoreError>> = sealer.reports.try_iter().collect();
        for r in reports {
            self.count_seal(r);
        }
    }

    /// Counts one report of the seal thread.
    fn count_seal(&mut self, r: Result<(), StoreError>) {
        match r {
            Ok(()) => self.stats.sealed_one(),
            Err(e) => self.note_error(&e),
        }
    }

    /// The translations open now, as the next segment's checkpoint, with addresses interned
    /// anew (the writer's interner then holds only what the next segment uses).
    fn carried_now(&mut self) -> Vec<Rec> {
        let mut fresh = Interner::default();
        let old = &self.addrs.addrs;
        let mut ids = |id: u32| old.get(id as usize).map_or(id, |a| fresh.id(*a));
        let mut carried: Vec<Rec> = self
            .open
            .iter()
            .map(|(&(k, start), &o)| {
                let r = k.rec(start, o);
                Rec {
                    inside: ids(r.inside),
                    outside: ids(r.outside),
                    remote: ids(r.remote),
                    carried: true,
                    ..r
                }
            })
            .collect();
        carried.sort_unstable_by_key(|r| r.start);
        self.addrs = fresh;
        carried
    }

    fn note_error(&mut self, e: &StoreError) {
        self.stats.write_errors += 1;
        self.stats.last_error = Some(e.to_string());
        if e.is_disk_full() {
            if let Some(held_back) = self.disk_full_log.admit() {
                tracing::warn!(error = %e, held_back, "disk full: buffering, retrying every flush (logged once a minute while it lasts)");
            }
        } else if let Some(held_back) = self.error_log.admit() {
            tracing::error!(error = %e, held_back, "store write failed (logged once a minute while it lasts)");
        }
    }

    fn flush_now(&mut self, now: Timestamp) {
        if self.active.is_none() {
            return;
        }
        match self.write_pending().and_then(|()| self.sync()) {
            Ok(()) => {
                if std::mem::take(&mut self.stalled) {
                    let held_back = self.disk_full_log.reset() + self.error_log.reset();
                    tracing::info!(
                        held_back,
                        lost_events = self.stats.lost_events,
                        "the store writes again"
                    );
                }
                self.stats.flushes += 1;
                self.last_flush = Some(now);
            }
            Err(e) => {
                self.note_error(&e);
                self.stalled = true;
                self.drop_if_too_much();
                self.last_flush = Some(now);
            }
        }
    }

    /// After a failed write: drop buffered events beyond a bound (keeping memory bounded),
    /// counting them as lost. The checkpoint prefix is kept.
    fn drop_if_too_much(&mut self) {
        let limit = self.opts.block_records.saturating_mul(4).max(1 << 16);
        if self.pending.len() + self.pending_refs.len() <= limit {
            return;
        }
        let keep = self.pending.iter().take_while(|r| r.carried).count();
        let lost = (self.pending.len() - keep + self.pending_refs.len()) as u64;
        self.pending.truncate(keep);
        self.pending_refs.clear();
        let bound = self.written_ordinal + keep as u64;
        self.open.retain(|_, o| o.ordinal < bound);
        self.stats.lost_events += lost;
        if let Some(held_back) = self.lost_log.admit() {
            tracing::warn!(
                lost,
                total = self.stats.lost_events,
                held_back,
                "dropped buffered events that could not be written"
            );
        }
    }

    /// Writes buffered events as block frames (no fsync).
    fn write_pending(&mut self) -> Result<(), StoreError> {
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        if self.pending.is_empty() && self.pending_refs.is_empty() {
            return Ok(());
        }
        let ncarried = self.pending.iter().take_while(|r| r.carried).count();
        let mut frames = Vec::new();
        let mut payload = Vec::new();
        let io = |e| StoreError::io("encoding a block for", &a.path, e);
        if ncarried > 0 {
            codec::encode_block(
                BlockKind::Checkpoint,
                codec::CLASS_LIVE,
                self.written_ordinal,
                &self.pending[..ncarried],
                &[],
                &self.addrs.addrs,
                LIVE_LEVEL,
                &mut payload,
            )
            .map_err(io)?;
            segment::frame_bytes(&mut frames, T_BLOCK, &payload);
            payload.clear();
        }
        let rest = &self.pending[ncarried..];
        if !rest.is_empty() || !self.pending_refs.is_empty() {
            codec::encode_block(
                BlockKind::Live,
                codec::CLASS_LIVE,
                self.written_ordinal + ncarried as u64,
                rest,
                &self.pending_refs,
                &self.addrs.addrs,
                LIVE_LEVEL,
                &mut payload,
            )
            .map_err(io)?;
            segment::frame_bytes(&mut frames, T_BLOCK, &payload);
        }
        if let Err(e) = a.file.write_all_at(&frames, a.len) {
            // Never leave a partial frame behind.
            let _ = a.file.set_len(a.len);
            return Err(StoreError::io("writing", &a.path, e));
        }
        a.len += frames.len() as u64;
        self.stats.blocks_written += 1 + u64::from(ncarried > 0);
        self.stats.bytes_written += frames.len() as u64;
        self.written_ordinal += self.pending.len() as u64;
        self.pending.clear();
        self.pending_refs.clear();
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        if let Some(a) = &self.active {
            a.file.sync_data().map_err(|e| StoreError::io("syncing", &a.path, e))?;
        }
        Ok(())
    }

    /// Creates a new active segment whose checkpoint is `carried`.
    fn start_segment(&mut self, carried: Vec<Rec>, now: Timestamp) -> Result<(), StoreError> {
        self.start_segment_with(carried, Vec::new(), now)
    }

    /// Creates a new active segment; `recs` (carried prefix, then new records) and `refs` are
    /// buffered events (ordinals from 0) to write first.
    fn start_segment_with(
        &mut self,
        mut recs: Vec<Rec>,
        refs: Vec<EndRef>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        for r in recs.iter_mut().filter(|r| r.carried) {
            r.end = None;
        }
        self.open.clear();
        for (i, r) in recs.iter().enumerate() {
            if r.end.is_none() {
                self.open.insert(
                    (Key::of(r), r.start),
                    OpenRec { ordinal: i as u64, kind: r.kind, flags: r.flags },
                );
            }
        }
        let ended: std::collections::HashSet<u64> = refs.iter().map(|r| r.ordinal).collect();
        self.open.retain(|_, o| !ended.contains(&o.ordinal));
        self.pending = recs;
        self.pending_refs = refs;
        self.written_ordinal = 0;
        let header = Header {
            resolution: self.res,
            seq: self.next_seq,
            created_ns: now_ns(now),
            prev_chain: self.prev_chain,
        };
        let path =
            self.opts.dir.join(format!("{}.open", segment_stem(header.created_ns, header.seq)));
        let mut file = super::create_options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StoreError::io("creating", &path, e))?;
        let res = file.write_all(&header.encode()).and_then(|()| file.sync_all());
        if let Err(e) = res {
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(StoreError::io("writing", &path, e));
        }
        sync_dir(&self.opts.dir)?;
        self.active = Some(Active { file, path, len: segment::HEADER_LEN as u64, created: now });
        self.next_seq += 1;
        // The checkpoint (and whatever was buffered) is made durable at once.
        if let Err(e) = self.write_pending().and_then(|()| self.sync()) {
            self.note_error(&e);
        }
        self.last_flush = Some(now);
        Ok(())
    }

    /// Seals the active segment on this thread; returns the records still open in it (for the
    /// checkpoint).
    fn seal_active(&mut self) -> Result<Vec<Rec>, StoreError> {
        let Some(a) = self.active.as_ref() else {
            return Ok(Vec::new());
        };
        let path = a.path.clone();
        let rec = segment::recover_open(&path)?;
        self.prev_chain = seal_recovered(
            &path,
            &rec,
            self.prev_chain,
            self.opts.block_records,
            self.opts.seal_level,
        )?;
        self.active = None;
        self.stats.sealed_one();
        Ok(self.carried_now())
    }

    /// Rotation: the active segment, flushed and complete, goes to the sealer thread and the
    /// next segment starts at once with the checkpoint of what is open, so flushing never waits
    /// for a seal.
    fn rotate(&mut self, now: Timestamp) -> Result<(), StoreError> {
        self.write_pending()?;
        self.sync()?;
        let carried = self.carried_now();
        if let Some(a) = self.active.take() {
            let opts = &self.opts;
            self.sealer
                .get_or_insert_with(|| {
                    Sealer::start(
                        self.prev_chain,
                        opts.dir.clone(),
                        opts.block_records,
                        opts.seal_level,
                    )
                })
                .queue(a.path);
        }
        // A failure leaves the checkpoint buffered: `tick` retries the new segment.
        self.start_segment(carried, now)?;
        self.retention(now);
        Ok(())
    }

    /// Deletes the oldest sealed segments beyond the retention limits, recording each deletion
    /// in `retention.log` first.
    fn retention(&mut self, now: Timestamp) {
        self.last_retention = Some(now);
        if self.opts.retain_days.is_none() && self.opts.retain_size.is_none() {
            return;
        }
        if let Err(e) = self.retention_inner(now) {
            self.note_error(&e);
        }
    }

    fn retention_inner(&mut self, now: Timestamp) -> Result<(), StoreError> {
        let dir = self.opts.dir.clone();
        let mut sealed = Vec::new();
        for p in segment_files(&dir)? {
            if p.extension().is_some_and(|e| e == "seg") {
                sealed.push(segment::load_meta(&p)?);
            }
        }
        let mut total: u64 = sealed.iter().map(|m| m.bytes).sum();
        let deleted_before = self.stats.segments_deleted;
        let cutoff =
            self.opts.retain_days.map(|d| now_ns(now) - i64::from(d) * 86_400 * 1_000_000_000);
        for m in sealed {
            let last_ns = m.seal.map(|s| i128::from(s.max_time) * m.resolution.nanos_per_unit());
            let too_old = cutoff.zip(last_ns).is_some_and(|(c, l)| l < i128::from(c));
            let too_big = self.opts.retain_size.is_some_and(|s| total > s);
            if !too_old && !too_big {
                break;
            }
            let seq = m
                .header
                .map(|h| h.seq)
                .or(m.seal.map(|s| s.seq))
                .or(seq_of_name(&m.path))
                .unwrap_or(0);
            let name =
                m.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            record_deletion(&dir, seq, m.seal.as_ref().map(|s| &s.chain), &name, now)?;
            fs::remove_file(&m.path).map_err(|e| StoreError::io("removing", &m.path, e))?;
            sync_dir(&dir)?;
            total -= m.bytes;
            self.stats.segments_deleted += 1;
            tracing::info!(segment = %name, "deleted by retention");
        }
        if self.stats.segments_deleted > deleted_before {
            catalog::refresh(&dir);
        }
        Ok(())
    }

    fn rec_of(&mut self, t: &Translation) -> Result<Rec, StoreError> {
        Ok(Rec {
            start: self.res.to_units(t.start)?,
            end: t.end.map(|e| self.res.to_units(e)).transpose()?,
            inside: self.addrs.id(t.inside.ip()),
            outside: self.addrs.id(t.outside.ip()),
            remote: self.addrs.id(t.remote.ip()),
            in_port: t.inside.port(),
            out_port: t.outside.port(),
            rem_port: t.remote.port(),
            zone: t.zone,
            kind: codec::kind_to_code(t.kind),
            proto: t.proto.0,
            flags: t.flags.0,
            carried: false,
        })
    }
}

fn rescale(u: i64, from: Resolution, to: Resolution) -> Result<i64, StoreError> {
    Ok(to.to_units(from.from_units(u)?)?)
}

/// A record read back as a translation; the error says what in the record is damaged.
pub(crate) fn to_translation(
    r: &Rec,
    addrs: &[IpAddr],
    res: Resolution,
) -> Result<Translation, String> {
    let ip = |id: u32| {
        addrs.get(id as usize).copied().ok_or_else(|| {
            format!("a record names address {id} of a dictionary of {}", addrs.len())
        })
    };
    let time = |u: i64| {
        res.from_units(u).map_err(|e| format!("a record's time {u} ({}): {e}", res.name()))
    };
    Ok(Translation {
        kind: codec::kind_from_code(r.kind)
            .ok_or_else(|| format!("a record has the unknown kind {}", r.kind))?,
        proto: Proto(r.proto),
        inside: SocketAddr::new(ip(r.inside)?, r.in_port),
        outside: SocketAddr::new(ip(r.outside)?, r.out_port),
        remote: SocketAddr::new(ip(r.remote)?, r.rem_port),
        zone: r.zone,
        start: time(r.start)?,
        end: r.end.map(time).transpose()?,
        flags: Flags(r.flags),
    })
}

/// Creates the store directory with [`super::DIR_MODE`]; an existing one that every user may
/// read or enter loses those rights (attribution logs are for the owner and the group).
fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(super::DIR_MODE)
        .create(dir)
        .map_err(|e| StoreError::io("creating", dir, e))?;
    let mode = fs::metadata(dir).map_err(|e| StoreError::io("reading metadata of", dir, e))?;
    let mode = mode.permissions().mode() & 0o7777;
    if mode & 0o007 != 0 {
        let private = mode & !0o007;
        match fs::set_permissions(dir, fs::Permissions::from_mode(private)) {
            Ok(()) => tracing::info!(
                dir = %dir.display(),
                "the store directory was open to every user (mode {mode:04o}): now {private:04o}"
            ),
            Err(e) => tracing::warn!(
                dir = %dir.display(),
                "the store directory is open to every user (mode {mode:04o}) and could not be \
                 changed: {e}"
            ),
        }
    }
    Ok(())
}
