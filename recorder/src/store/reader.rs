//! Reading a segment directory: the [`TranslationSource`] of the query layer.
//!
//! Opening a directory lists its segments and takes each sealed one's time range from the
//! catalog (`catalog`, a cache of headers and seals). A scan of `[from, to]` skips the
//! segments that ended before `from` while the next one had already begun (their translations
//! still alive at `from` are carried in that next segment's checkpoint), then walks segments in
//! order, loading a segment's index only when it reaches it. In each it reads only the blocks
//! whose time range (from the index) touches the filter's, whose endpoint filter may hold the
//! filter's outside address and port, and whose address dictionaries contain the filter's
//! addresses, then compares dictionary indices and ports before building a [`Translation`]. A
//! match still open at the end of its segment waits for the next segment's checkpoint, which
//! carries it with its end if it ended there (or again open). The walk stops at the first
//! segment whose new translations all start after the filter's end once nothing waits.

use std::collections::HashMap;
use std::fs::{self, File};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use jiff::Timestamp;

use super::bloom::Probe;
use super::catalog::{self, Summary};
use super::codec::{BlockKind, BlockView, Dict, DictLens, DictView, EndRef, Rec, Select};
use super::dir::{SegmentInfo, segment_files};
use super::segment::{self, SegMeta};
use super::writer::to_translation;
use super::{Resolution, StoreError};
use crate::lookup::{Damage, EndpointMatch, Filter, ScanReport, TranslationSource};
use crate::model::{FlowKey, Translation};

/// A segment directory opened for queries.
pub struct Reader {
    dir: PathBuf,
    segs: Vec<Seg>,
}

/// One segment file: its summary (header and seal, from the catalog) at once, the rest of its
/// metadata (index, block filters) when a scan first needs it.
struct Seg {
    path: PathBuf,
    summary: Option<Summary>,
    meta: OnceLock<SegMeta>,
}

impl Seg {
    fn meta(&self) -> Result<&SegMeta, StoreError> {
        if let Some(m) = self.meta.get() {
            return Ok(m);
        }
        let m = segment::load_meta(&self.path)?;
        Ok(self.meta.get_or_init(|| m))
    }
}

impl Reader {
    /// Opens `dir`: lists the segments and takes each sealed one's header and seal from the
    /// directory's catalog (a cache, see `catalog`), reading them from the files it lacks.
    /// Writes nothing: a reader needs only read access to the directory. The
    /// index of a segment is read (or rebuilt, when its seal or index is damaged) when a scan
    /// first needs it.
    pub fn open(dir: &Path) -> Result<Reader, StoreError> {
        let files = segment_files(dir)?;
        let (summaries, _) = catalog::summaries(&catalog::load(dir), &files)?;
        let segs = files
            .into_iter()
            .zip(summaries)
            .map(|(path, summary)| Seg { path, summary, meta: OnceLock::new() })
            .collect();
        Ok(Reader { dir: dir.to_owned(), segs })
    }

    /// The directory read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segments, as `natrec segments` lists them (reads every segment's index; a segment
    /// that cannot be read at all is listed as damaged).
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.segs
            .iter()
            .map(|g| match g.meta() {
                Ok(m) => SegmentInfo::from_meta(m),
                Err(_) => SegmentInfo::unreadable(&g.path),
            })
            .collect()
    }

    /// How many segment files the directory holds.
    pub fn segment_count(&self) -> usize {
        self.segs.len()
    }

    /// The resolution of the newest segment (what a point query can distinguish).
    pub fn resolution(&self) -> Resolution {
        self.segs
            .last()
            .and_then(|g| {
                g.summary.map(|s| s.resolution).or_else(|| g.meta().ok().map(|m| m.resolution))
            })
            .unwrap_or_default()
    }

    /// Earliest start to latest time written, without reading more indexes than a scan did: a
    /// sealed segment's summary gives its range (the creation of a first segment with a
    /// checkpoint also bounds it: the checkpoint carries translations begun earlier, but those
    /// that ended before it are not retained); an `.open` segment counts from its blocks when a scan read it, else only
    /// its creation (a scan that did not reach it stopped at a sealed segment beginning after
    /// the filter's end, which already bounds the latest time above that end); a sealed segment
    /// without a readable seal, from its blocks.
    fn coverage(&self) -> Option<(Timestamp, Timestamp)> {
        let mut out: Option<(Timestamp, Timestamp)> = None;
        let mut add = |lo: Option<Timestamp>, hi: Option<Timestamp>| {
            if let (Some(lo), Some(hi)) = (lo, hi) {
                out = Some(out.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
            }
        };
        let ns = |n: i64| Timestamp::from_nanosecond(i128::from(n)).ok();
        for (i, g) in self.segs.iter().enumerate() {
            let loaded = g.meta.get();
            match (g.summary, loaded) {
                (Some(s), _) => {
                    let created =
                        if i == 0 && s.records > s.new_records { ns(s.created_ns) } else { None };
                    let lo = (s.new_records > 0)
                        .then(|| s.resolution.from_units(s.min_time).ok())
                        .flatten();
                    let lo = match (lo, created) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    if s.records > 0 || created.is_some() {
                        add(lo, s.resolution.from_units(s.max_time).ok().max(created));
                    }
                }
                (None, None) if g.path.extension().is_some_and(|e| e == "open") => {
                    let created = created_ns(g).and_then(ns);
                    add(created, created);
                }
                _ => {
                    let Ok(m) = g.meta() else { continue };
                    for b in m.blocks.iter().filter(|b| b.meta.n_full > 0 || b.meta.n_ref > 0) {
                        let hi = if b.meta.max_end == i64::MAX {
                            b.meta.max_start
                        } else {
                            b.meta.max_end
                        };
                        add(
                            m.resolution.from_units(b.meta.min_start).ok(),
                            m.resolution.from_units(hi).ok(),
                        );
                    }
                }
            }
        }
        out
    }

    /// The first segment a scan of `[from, ..]` must read: every segment before it ended
    /// (its latest start or end) before `from`, and the segment after it began at or before
    /// `from`. A translation alive at `from` that began earlier was then still open when that
    /// next segment began (an end would be a time after `from` in the segment that recorded it),
    /// so it is carried in that segment's checkpoint.
    fn first_needed(&self, from: Timestamp) -> usize {
        let from_ns = from.as_nanosecond();
        let mut first = 0;
        for (i, pair) in self.segs.windows(2).enumerate() {
            let (Some(s), Some(next)) = (
                pair[0].summary,
                pair[1].summary.map(|n| n.created_ns).or_else(|| created_ns(&pair[1])),
            ) else {
                break;
            };
            let ended = s.resolution.from_units(s.max_time).is_ok_and(|t| t < from);
            if !ended || i128::from(next) > from_ns {
                break;
            }
            first = i + 1;
        }
        first
    }
}

/// The creation time in a segment's header (read from the file for one the catalog lacks).
fn created_ns(g: &Seg) -> Option<i64> {
    if let Some(m) = g.meta.get() {
        return m.header.map(|h| h.created_ns);
    }
    let mut head = [0u8; segment::HEADER_LEN];
    let f = File::open(&g.path).ok()?;
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut head, 0).ok()?;
    segment::Header::decode(&head).ok().map(|h| h.created_ns)
}

/// The filter's addresses as indices into one block's dictionaries; `None` when the block
/// cannot hold a match (an address is not in its dictionary). A dictionary the filter does not
/// name is not read.
fn select<'a>(
    f: &Filter,
    v: &BlockView<'a>,
    views: &mut Views<'a>,
) -> Result<Option<Select>, String> {
    // Outer `None`: the address is not in the block; inner `None`: the filter names none.
    type Local = Option<Option<(u32, Option<u16>)>>;
    let mut local = |m: Option<EndpointMatch>, d: Dict| -> Result<Local, String> {
        let Some(m) = m else { return Ok(Some(None)) };
        Ok(views.get(v, d)?.position(m.ip).map(|p| Some((p, m.port))))
    };
    let (Some(inside), Some(outside), Some(remote)) = (
        local(f.inside, Dict::Inside)?,
        local(f.outside, Dict::Outside)?,
        local(f.remote, Dict::Remote)?,
    ) else {
        return Ok(None);
    };
    Ok(Some(Select { inside, outside, remote }))
}

/// A block's dictionaries (in the order of [`Dict::ALL`]), each read when first needed.
struct Views<'a>([Option<DictView<'a>>; Dict::ALL.len()]);

impl<'a> Views<'a> {
    fn get(&mut self, v: &BlockView<'a>, d: Dict) -> Result<&DictView<'a>, String> {
        let slot = &mut self.0[d as usize];
        if slot.is_none() {
            *slot = Some(v.dict_view(d)?);
        }
        slot.as_ref().ok_or_else(|| "dictionary".to_owned())
    }
    /// Dictionary `d`, if read.
    fn read(&self, d: Dict) -> Option<&DictView<'a>> {
        self.0[d as usize].as_ref()
    }
    fn lens(&mut self, v: &BlockView<'a>) -> Result<DictLens, String> {
        Ok(DictLens {
            inside: self.get(v, Dict::Inside)?.len(),
            outside: self.get(v, Dict::Outside)?.len(),
            remote: self.get(v, Dict::Remote)?.len(),
        })
    }
}

fn quick(q: &Select, r: &Rec) -> bool {
    endpoint_ok(q.inside, r.inside, r.in_port)
        && endpoint_ok(q.outside, r.outside, r.out_port)
        && endpoint_ok(q.remote, r.remote, r.rem_port)
}

fn endpoint_ok(q: Option<(u32, Option<u16>)>, id: u32, port: u16) -> bool {
    q.is_none_or(|(i, p)| i == id && p.is_none_or(|p| p == port))
}

type PKey = (FlowKey, Timestamp);

struct Scan<'a> {
    filter: &'a Filter,
    f: &'a mut dyn FnMut(&Translation),
    report: ScanReport,
    pending: HashMap<PKey, Translation>,
    /// The filter's endpoints as the index's block filters test them.
    probe: Probe,
}

impl Scan<'_> {
    /// One record: `carried` records resolve waiting ones; `fresh` says whether a record not
    /// waiting may be considered (its block was read for the filter, not only to resolve).
    fn record(
        &mut self,
        t: Translation,
        carried: bool,
        fresh: bool,
        prev: &mut HashMap<PKey, Translation>,
    ) {
        let pk = (t.key(), t.start);
        let resolves = carried && prev.remove(&pk).is_some();
        if !resolves && !fresh {
            return;
        }
        if t.end.is_some() {
            if self.filter.matches(&t) {
                (self.f)(&t);
            }
        } else if self.filter.matches(&t) {
            self.pending.insert(pk, t);
        }
    }
    fn damage(&mut self, path: &Path, block: Option<u64>, reason: String) {
        self.report.damage.push(Damage { segment: path.to_owned(), block, reason });
    }
}

impl TranslationSource for Reader {
    type Error = StoreError;

    fn scan(
        &self,
        filter: &Filter,
        f: &mut dyn FnMut(&Translation),
    ) -> Result<ScanReport, StoreError> {
        let mut s = Scan {
            filter,
            f,
            report: ScanReport { segments_total: self.segs.len(), ..ScanReport::default() },
            pending: HashMap::new(),
            probe: Probe::of(filter),
        };
        let first = self.first_needed(filter.from);
        for (i, g) in self.segs.iter().enumerate().skip(first) {
            // The first segment read is read whole: its checkpoint carries the translations
            // begun in the segments skipped, which no waiting entry announces.
            let head = i == first;
            // A sealed segment whose new translations all start after the filter's end says
            // (with nothing waiting) that every later one does too: no need to read its index.
            if let Some(sum) = g.summary
                && !head
                && s.pending.is_empty()
                && sum.new_records > 0
                && sum.resolution.to_units(filter.to).is_ok_and(|to| sum.min_time > to)
            {
                break;
            }
            let m = g.meta()?;
            for (block, reason) in &m.damage {
                if !reason.starts_with("torn tail") {
                    s.damage(&m.path, *block, reason.clone());
                }
            }
            let res = m.resolution;
            let from_u = res.to_units(filter.from).unwrap_or(i64::MIN);
            let to_u = res.to_units(filter.to).unwrap_or(i64::MAX);
            let new_min = m
                .blocks
                .iter()
                .filter(|b| b.meta.kind != BlockKind::Checkpoint && b.meta.n_full > 0)
                .map(|b| b.meta.min_start)
                .min()
                .unwrap_or(i64::MAX);
            // A segment without new translations (only a checkpoint) says nothing of later ones.
            let past = !head && new_min != i64::MAX && new_min > to_u;
            if past && s.pending.is_empty() {
                // Everything later starts after the filter's end and nothing waits.
                break;
            }
            let mut prev = std::mem::take(&mut s.pending);
            let damage_before = s.report.damage.len();
            if m.sealed {
                scan_sealed(m, &mut s, &mut prev, from_u, to_u, past)?;
            } else {
                scan_open(m, &mut s, &mut prev, from_u, to_u)?;
            }
            if s.report.damage.len() > damage_before {
                // A damaged checkpoint may have held them: let the next segment resolve them.
                for (k, t) in prev.drain() {
                    s.pending.entry(k).or_insert(t);
                }
            }
            // Waiting translations absent from this segment's checkpoint ended before it
            // began, at a time that was not recorded.
            for (_, t) in prev.drain() {
                (s.f)(&t);
            }
        }
        for (_, t) in s.pending.drain() {
            (s.f)(&t);
        }
        s.report.coverage = self.coverage();
        Ok(s.report)
    }
}

fn scan_sealed(
    m: &SegMeta,
    s: &mut Scan<'_>,
    prev: &mut HashMap<PKey, Translation>,
    from_u: i64,
    to_u: i64,
    past: bool,
) -> Result<(), StoreError> {
    let mut file: Option<File> = None;
    let mut opened = false;
    let mut block_buf = Vec::new();
    for (i, b) in m.blocks.iter().enumerate() {
        // A block whose endpoint filter rules the filter's endpoints out holds no match; it is
        // still read when it is a checkpoint that may resolve a waiting translation.
        let overlaps = !past
            && b.meta.min_start <= to_u
            && b.meta.max_end >= from_u
            && b.filter.as_ref().is_none_or(|bf| bf.may_match(&s.probe));
        // A checkpoint resolves a waiting translation only if it carries its outside endpoint.
        let resolve = b.meta.kind == BlockKind::Checkpoint
            && !prev.is_empty()
            && b.filter
                .as_ref()
                .is_none_or(|bf| prev.values().any(|t| bf.may_hold_outside(t.outside)));
        if !overlaps && !resolve {
            s.report.blocks_skipped += 1;
            continue;
        }
        let file = match &file {
            Some(f) => f,
            None => {
                let f = File::open(&m.path).map_err(|e| StoreError::io("opening", &m.path, e))?;
                file.insert(f)
            }
        };
        if !opened {
            s.report.segments_opened += 1;
            opened = true;
        }
        let payload = match segment::read_block(file, &m.path, b, &mut block_buf) {
            Ok(p) => p,
            Err(e) => {
                s.damage(&m.path, Some(i as u64), e);
                continue;
            }
        };
        let decoded = BlockView::parse(payload)
            .and_then(|v| Ok(decode_candidates(s.filter, &v)?.map(|c| (c, v.meta.n_full))));
        let (c, n_full) = match decoded {
            Ok(Some(x)) => x,
            Ok(None) => {
                // Read, and ruled out by its dictionaries: none of its records names the
                // address asked for.
                s.report.blocks_read += 1;
                s.report.translations_scanned += b.meta.n_full;
                continue;
            }
            Err(e) => {
                s.damage(&m.path, Some(i as u64), e);
                continue;
            }
        };
        s.report.blocks_read += 1;
        s.report.translations_scanned += n_full;
        for r in c.recs.iter().filter(|r| c.may_match(r, s.filter, from_u, to_u)) {
            let t = block_translation(r, &c.views, m.resolution)
                .map_err(|reason| StoreError::corrupt(&m.path, reason))?;
            s.record(t, r.carried, overlaps, prev);
        }
    }
    Ok(())
}

/// A decoded record as a translation, its addresses from the block's dictionaries; the error
/// says what is damaged.
fn block_translation(r: &Rec, d: &Views<'_>, res: Resolution) -> Result<Translation, String> {
    let mut t = to_translation(
        &Rec { inside: 0, outside: 0, remote: 0, ..*r },
        &[IpAddr::from([0u8; 4])],
        res,
    )?;
    let get = |k: Dict, i: u32| {
        d.read(k)
            .and_then(|v| v.get(i))
            .ok_or_else(|| format!("a record names address {i}, beyond its block's dictionary"))
    };
    t.inside.set_ip(get(Dict::Inside, r.inside)?);
    t.outside.set_ip(get(Dict::Outside, r.outside)?);
    t.remote.set_ip(get(Dict::Remote, r.remote)?);
    Ok(t)
}

/// The rows of a block that the filter's endpoints allow, decoded in full.
struct Candidates<'a> {
    views: Views<'a>,
    q: Select,
    /// The rows decoded, ascending (`None`: every row), and their records.
    rows: Option<Vec<u32>>,
    recs: Vec<Rec>,
    /// The block's end references, when a row was decoded (the decode reads them then).
    refs: Option<Vec<EndRef>>,
}

/// The rows the port and address columns allow are decoded in full, and the sequential columns
/// only up to the last of them ([`Candidates::may_match`] checks the rest). `None` when the
/// block's dictionaries rule out an address the filter names.
fn decode_candidates<'a>(
    filter: &Filter,
    v: &BlockView<'a>,
) -> Result<Option<Candidates<'a>>, String> {
    let mut views = Views([None, None, None]);
    let Some(q) = select(filter, v, &mut views)? else {
        return Ok(None);
    };
    let rows = v.candidates(&q)?;
    let (recs, refs) = match &rows {
        Some(r) if r.is_empty() => (Vec::new(), None),
        r => {
            let lens = views.lens(v)?;
            let (recs, refs) = v.records_at(lens, r.as_deref())?;
            (recs, Some(refs))
        }
    };
    Ok(Some(Candidates { views, q, rows, recs, refs }))
}

impl Candidates<'_> {
    /// Whether decoded record `r` can match the filter (its endpoints and protocol, and its
    /// times in units `from_u..=to_u`); a carried record is kept whatever its times, as it may
    /// still end a waiting translation.
    fn may_match(&self, r: &Rec, f: &Filter, from_u: i64, to_u: i64) -> bool {
        quick(&self.q, r)
            && f.proto.is_none_or(|p| p.0 == r.proto)
            && (r.carried || (r.start <= to_u && r.end.is_none_or(|e| e >= from_u)))
    }
}

/// An `.open` segment, read as it is now (the writer may have appended since its meta was read).
///
/// Its blocks have no index, and a record's end may come later, as an end reference in a later
/// block: only the writer's seal folds the ends into the records. So every block of the good
/// prefix is read, and its end references decoded (three small columns); but only the blocks
/// whose records can begin by the filter's end are decoded, and of them only the rows the
/// filter's endpoints allow, as for a sealed segment. The references then give those rows
/// their ends. Like the writer's recovery, reading stops at the torn tail or the first block
/// that does not decode.
fn scan_open(
    m: &SegMeta,
    s: &mut Scan<'_>,
    prev: &mut HashMap<PKey, Translation>,
    from_u: i64,
    to_u: i64,
) -> Result<(), StoreError> {
    let data = match fs::read(&m.path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Sealed since the reader opened: read the sealed file.
            let sealed = segment::load_meta(&m.path.with_extension("seg"))?;
            return scan_sealed(&sealed, s, prev, from_u, to_u, false);
        }
        Err(e) => return Err(StoreError::io("reading", &m.path, e)),
    };
    let header = match segment::Header::decode(&data) {
        Ok(h) => h,
        Err(e) => {
            s.damage(&m.path, None, e);
            return Ok(());
        }
    };
    s.report.segments_opened += 1;
    let w = segment::walk(&data);
    // The candidates of the blocks decoded, and where each decoded record is among them, by
    // ordinal. A reference points back, to a record of its own block or an earlier one, so each
    // block's references are applied as it is read.
    let mut decoded: Vec<Candidates<'_>> = Vec::new();
    let mut at_ordinal: HashMap<u64, (usize, usize)> = HashMap::new();
    let mut ordinal = 0u64;
    let blocks = w.frames.iter().filter(|f| f.end() <= w.clean_end && f.ty == segment::T_BLOCK);
    for (i, f) in blocks.enumerate() {
        // (records, whether they were read, the candidates decoded, the end references)
        let res = (|| {
            let v = BlockView::parse(f.payload(&data))?;
            if v.meta.first_ordinal != ordinal {
                return Err(format!(
                    "block starts at ordinal {}, expected {ordinal}",
                    v.meta.first_ordinal
                ));
            }
            // A block whose records all begin after the filter's end is not decoded.
            let read = v.meta.min_start <= to_u;
            let mut c = if read { decode_candidates(s.filter, &v)? } else { None };
            let refs = match c.as_mut().and_then(|c| c.refs.take()) {
                Some(r) => r,
                None => v.end_refs()?,
            };
            Ok::<_, String>((v.meta.n_full, read, c, refs))
        })();
        let (n_full, read, c, refs) = match res {
            Ok(x) => x,
            Err(e) => {
                // An undecodable block with a valid checksum: the good prefix ends here.
                s.damage(&m.path, Some(i as u64), format!("block at byte {}: {e}", f.offset));
                break;
            }
        };
        if read {
            s.report.blocks_read += 1;
            s.report.translations_scanned += n_full;
        } else {
            s.report.blocks_skipped += 1;
        }
        if let Some(c) = c {
            let b = decoded.len();
            for k in 0..c.recs.len() {
                let row = c.rows.as_ref().map_or(k as u64, |rows| u64::from(rows[k]));
                at_ordinal.insert(ordinal + row, (b, k));
            }
            decoded.push(c);
        }
        ordinal += n_full;
        // The ends recorded here for records decoded (in order: a later one wins).
        for r in &refs {
            if let Some(&(b, k)) = at_ordinal.get(&r.ordinal) {
                let rec = &mut decoded[b].recs[k];
                rec.end = Some(r.end);
                rec.flags |= r.flags;
            }
        }
    }
    for c in &decoded {
        for r in c.recs.iter().filter(|r| c.may_match(r, s.filter, from_u, to_u)) {
            let t = block_translation(r, &c.views, header.resolution)
                .map_err(|reason| StoreError::corrupt(&m.path, reason))?;
            s.record(t, r.carried, true, prev);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jiff::{SignedDuration, Timestamp};

    use super::*;
    use crate::model::{Flags, FlowEvent, Kind, Proto};
    use crate::store::{Writer, WriterOptions};

    fn at(ms: i64) -> Timestamp {
        let t0: Timestamp = "2031-01-01T00:00:00Z".parse().expect("t0");
        t0.checked_add(SignedDuration::from_millis(ms)).expect("time")
    }

    /// 3000 short translations over 5 minutes, outside ports spread over four addresses, several
    /// sharing an outside ip:port at different times.
    fn short_translations() -> Vec<Translation> {
        (0..3000u32)
            .map(|i| Translation {
                kind: Kind::Snat,
                proto: if i % 5 == 0 { Proto::UDP } else { Proto::TCP },
                inside: format!("10.0.{}.{}:{}", i % 7, i % 200, 40_000 + i % 1000)
                    .parse()
                    .expect("inside"),
                outside: format!("100.64.0.{}:{}", i % 4, 20_000 + (i * 7) % 1500)
                    .parse()
                    .expect("outside"),
                remote: format!("198.51.100.{}:443", i % 50).parse().expect("remote"),
                zone: 0,
                start: at(i64::from(i) * 100),
                end: Some(at(i64::from(i) * 100 + 500 + i64::from(i % 13) * 1000)),
                flags: Flags::empty(),
            })
            .collect()
    }

    /// The start and end events of `ts`, in time order (an end before a start at the same time).
    fn events_of(ts: &[Translation]) -> Vec<(Timestamp, FlowEvent)> {
        let mut events: Vec<(Timestamp, FlowEvent)> = Vec::new();
        for t in ts {
            events.push((t.start, FlowEvent::Start(Translation { end: None, ..t.clone() })));
            if let Some(e) = t.end {
                events.push((e, FlowEvent::End(t.clone())));
            }
        }
        events.sort_by_key(|(t, e)| (*t, matches!(e, FlowEvent::Start(_))));
        events
    }

    /// [`short_translations`] written into one segment of blocks of 100 records, not sealed yet.
    fn written(dir: &Path) -> (Writer, Vec<Translation>) {
        let ts = short_translations();
        let mut w = Writer::open(WriterOptions {
            dir: dir.to_owned(),
            rotate_age: Duration::from_secs(24 * 3600),
            block_records: 100,
            seal_level: 1,
            ..WriterOptions::default()
        })
        .expect("writer");
        for (_, e) in &events_of(&ts) {
            w.append(e).expect("append");
        }
        (w, ts)
    }

    /// [`short_translations`] written into one sealed segment of blocks of 100 records.
    fn store(dir: &Path) -> Vec<Translation> {
        let (w, ts) = written(dir);
        w.close().expect("close");
        ts
    }

    fn answer(
        src: &(impl TranslationSource + ?Sized),
        f: &Filter,
    ) -> (Vec<Translation>, ScanReport) {
        let mut got = Vec::new();
        let rep = src.scan(f, &mut |t| got.push(t.clone())).expect("scan");
        got.sort_by_key(|t| (t.start, t.inside));
        (got, rep)
    }

    /// Point queries (outside ip:port over the whole time range, and at an instant) and an
    /// inside-host query, each with its reference answer.
    fn queries(ts: &[Translation]) -> Vec<Filter> {
        let mut out = Vec::new();
        for t in ts.iter().step_by(97) {
            let whole = Filter {
                from: at(-1000),
                to: at(1_000_000),
                proto: None,
                outside: Some(EndpointMatch { ip: t.outside.ip(), port: Some(t.outside.port()) }),
                inside: None,
                remote: None,
            };
            out.push(Filter { from: t.start, to: t.start, ..whole.clone() });
            out.push(Filter {
                inside: Some(EndpointMatch { ip: t.inside.ip(), port: None }),
                outside: None,
                ..whole.clone()
            });
            out.push(whole);
        }
        // An outside ip:port nobody held.
        out.push(Filter {
            from: at(-1000),
            to: at(1_000_000),
            proto: None,
            outside: Some(EndpointMatch { ip: "100.64.0.1".parse().expect("ip"), port: Some(9) }),
            inside: None,
            remote: None,
        });
        out
    }

    fn sealed_segments(dir: &Path) -> Vec<PathBuf> {
        let segs: Vec<PathBuf> = segment_files(dir)
            .expect("list")
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        assert_eq!(segs.len(), 1, "one sealed segment expected: {segs:?}");
        segs
    }

    /// [`short_translations`] and a few long ones (one open at the close), with a rotation every
    /// 10 s: about 30 segments.
    fn rotated_store(dir: &Path) -> Vec<Translation> {
        let mut ts = short_translations();
        for (k, (s, e)) in
            [(1_000, Some(250_000)), (5_000, Some(35_000)), (20_000, None)].into_iter().enumerate()
        {
            ts.push(Translation {
                inside: format!("10.1.0.{k}:1000").parse().expect("inside"),
                outside: format!("100.64.1.{k}:1000").parse().expect("outside"),
                start: at(s),
                end: e.map(at),
                ..ts[0].clone()
            });
        }
        let mut w = Writer::open(WriterOptions {
            dir: dir.to_owned(),
            rotate_age: Duration::from_secs(10),
            seal_level: 1,
            ..WriterOptions::default()
        })
        .expect("writer");
        let mut next_tick = at(0);
        for (t, e) in &events_of(&ts) {
            while *t >= next_tick {
                w.tick(next_tick).expect("tick");
                next_tick = next_tick.checked_add(SignedDuration::from_secs(1)).expect("time");
            }
            w.append(e).expect("append");
        }
        w.close().expect("close");
        ts
    }

    #[test]
    fn a_point_query_reads_only_the_segments_of_its_time_and_the_catalog_is_only_a_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ts = rotated_store(dir.path());
        let r = Reader::open(dir.path()).expect("reader");
        assert!(r.segment_count() >= 25, "{} segments", r.segment_count());
        let catalog = dir.path().join(catalog::CATALOG);
        assert!(catalog.exists(), "the writer keeps the catalog");
        let mut asked = 0;
        for t in ts.iter().step_by(37).chain(ts.iter().rev().take(3)) {
            let mid = t.start.checked_add(SignedDuration::from_millis(300)).expect("time");
            let f = Filter {
                from: mid,
                to: mid,
                proto: None,
                outside: Some(EndpointMatch { ip: t.outside.ip(), port: Some(t.outside.port()) }),
                inside: None,
                remote: None,
            };
            let (want, _) = answer(ts.as_slice(), &f);
            assert!(want.contains(t));
            let (got, _) = answer(&r, &f);
            assert_eq!(got, want, "{f:?}");
            // A fresh reader loads the index of the segment of that instant, of its neighbours
            // at an edge, and of those a long match waits through; never the whole directory.
            let fresh = Reader::open(dir.path()).expect("reader");
            assert_eq!(answer(&fresh, &f).0, want);
            // Segments are 10 s long: a match lives through at most duration / 10 s + 2 (the
            // last ones, which only close translations, are not counted).
            let loaded = fresh
                .segs
                .iter()
                .filter(|g| g.meta.get().is_some() && g.summary.is_some_and(|s| s.new_records > 0))
                .count();
            let bound = want
                .iter()
                .map(|w| w.end.map(|e| e.duration_since(w.start).as_secs() / 10 + 2))
                .max()
                .flatten();
            if let Some(bound) = bound {
                assert!(
                    loaded as i64 <= bound.max(2),
                    "{loaded} segment indexes loaded for {f:?} (bound {bound})"
                );
            }
            asked += 1;
        }
        assert!(asked > 80);
        // A damaged catalog is ignored by readers (which write nothing), and rewritten by the
        // writer.
        let sealed = r.segs.iter().filter(|g| g.summary.is_some()).count();
        let mut bytes = fs::read(&catalog).expect("catalog");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        fs::write(&catalog, &bytes).expect("damage catalog");
        assert!(catalog::load(dir.path()).is_empty());
        let r2 = Reader::open(dir.path()).expect("reader");
        assert!(catalog::load(dir.path()).is_empty(), "a reader writes nothing");
        catalog::refresh(dir.path());
        assert_eq!(catalog::load(dir.path()).len(), sealed, "rewritten");
        for f in queries(&ts) {
            assert_eq!(answer(&r2, &f).0, answer(ts.as_slice(), &f).0, "{f:?}");
        }
    }

    #[test]
    fn endpoint_filters_skip_blocks_and_keep_the_answer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ts = store(dir.path());
        let seg = &sealed_segments(dir.path())[0];
        let meta = segment::load_meta(seg).expect("meta");
        let n_blocks = meta.blocks.len() as u64;
        assert!(n_blocks >= 30, "{n_blocks} blocks");
        assert!(meta.blocks.iter().all(|b| b.filter.is_some()), "every block has a filter");
        let r = Reader::open(dir.path()).expect("reader");
        for f in queries(&ts) {
            let (want, _) = answer(ts.as_slice(), &f);
            let (got, rep) = answer(&r, &f);
            assert_eq!(got, want, "{f:?}");
            if f.outside.is_some() && f.from == at(-1000) {
                // The whole time range: only the endpoint filters can skip blocks.
                assert!(
                    rep.blocks_read * 3 < n_blocks,
                    "read {} of {n_blocks} blocks for {f:?}",
                    rep.blocks_read
                );
                assert!(rep.blocks_read >= want.len().min(1) as u64);
                assert_eq!(rep.blocks_read + rep.blocks_skipped, n_blocks);
            }
        }
    }

    #[test]
    fn a_long_translation_is_resolved_through_filtered_checkpoints() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Ten long translations over 10 minutes and short ones every second; segments rotate
        // every minute, so each checkpoint (blocks of 2) carries the long ones.
        let mk = |i: u32, start_s: i64, end_s: i64| Translation {
            kind: Kind::Snat,
            proto: Proto::TCP,
            inside: format!("10.0.0.{}:{}", i % 250, 30_000 + i).parse().expect("inside"),
            outside: format!("100.64.0.1:{}", 30_000 + i).parse().expect("outside"),
            remote: "198.51.100.1:443".parse().expect("remote"),
            zone: 0,
            start: at(start_s * 1000),
            end: Some(at(end_s * 1000)),
            flags: Flags::empty(),
        };
        let mut ts: Vec<Translation> =
            (0..10).map(|i| mk(i, i64::from(i), 600 + i64::from(i))).collect();
        ts.extend((10..610).map(|i| mk(i, i64::from(i), i64::from(i) + 2)));
        let mut w = Writer::open(WriterOptions {
            dir: dir.path().to_owned(),
            rotate_age: Duration::from_secs(60),
            block_records: 2,
            seal_level: 1,
            ..WriterOptions::default()
        })
        .expect("writer");
        for (i, (t, e)) in events_of(&ts).iter().enumerate() {
            if i > 0 {
                w.tick(*t).expect("tick");
            }
            w.append(e).expect("append");
        }
        w.close().expect("close");
        let r = Reader::open(dir.path()).expect("reader");
        assert!(r.segs.len() >= 5, "{} segments", r.segs.len());
        for long in &ts[..10] {
            let f = Filter {
                from: at(20_000),
                to: at(20_000),
                proto: None,
                outside: Some(EndpointMatch {
                    ip: long.outside.ip(),
                    port: Some(long.outside.port()),
                }),
                inside: None,
                remote: None,
            };
            let (want, _) = answer(ts.as_slice(), &f);
            assert_eq!(want, vec![long.clone()]);
            let (got, rep) = answer(&r, &f);
            assert_eq!(got, want, "{f:?}");
            // Without the checkpoint filter every checkpoint block of every later segment would
            // be read (5 blocks of 2 long translations each).
            let checkpoint_blocks: usize = r
                .segs
                .iter()
                .map(|g| {
                    g.meta()
                        .expect("meta")
                        .blocks
                        .iter()
                        .filter(|b| b.meta.kind == BlockKind::Checkpoint)
                        .count()
                })
                .sum();
            assert!(checkpoint_blocks >= 40, "{checkpoint_blocks} checkpoint blocks");
            assert!((rep.blocks_read as usize) * 3 < checkpoint_blocks, "{rep:?}");
        }
    }

    #[test]
    fn a_live_segment_answers_like_a_sealed_one_reading_only_the_blocks_it_needs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut w, ts) = written(dir.path());
        // Flushed, never sealed: the directory holds one `.open` segment, as while recording.
        w.tick(Timestamp::now()).expect("flush");
        drop(w);
        let files = segment_files(dir.path()).expect("list");
        assert!(files.len() == 1 && files[0].extension().is_some_and(|e| e == "open"), "{files:?}");
        let meta = segment::load_meta(&files[0]).expect("meta");
        let n_blocks = meta.blocks.len() as u64;
        assert!(n_blocks >= 30, "{n_blocks} blocks");
        let r = Reader::open(dir.path()).expect("reader");
        let mut partial = 0;
        for f in queries(&ts) {
            let (want, _) = answer(ts.as_slice(), &f);
            let (got, rep) = answer(&r, &f);
            assert_eq!(got, want, "{f:?}");
            // Blocks that begin after the asked time are not decoded.
            if f.to < at(150_000) {
                assert!(
                    rep.blocks_read < n_blocks,
                    "read {} of {n_blocks} blocks for {f:?}",
                    rep.blocks_read
                );
                partial += 1;
            }
        }
        assert!(partial > 10);
    }

    #[test]
    fn a_segment_without_filters_answers_the_same_reading_every_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ts = store(dir.path());
        let seg = &sealed_segments(dir.path())[0];
        segment::strip_filters(seg).expect("strip");
        let meta = segment::load_meta(seg).expect("meta");
        assert!(meta.damage.is_empty(), "{:?}", meta.damage);
        assert!(meta.blocks.iter().all(|b| b.filter.is_none()));
        let n_blocks = meta.blocks.len() as u64;
        let v = crate::store::verify(dir.path()).expect("verify");
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        let r = Reader::open(dir.path()).expect("reader");
        for f in queries(&ts) {
            let (want, _) = answer(ts.as_slice(), &f);
            let (got, rep) = answer(&r, &f);
            assert_eq!(got, want, "{f:?}");
            if f.outside.is_some() && f.from == at(-1000) {
                assert_eq!(rep.blocks_read, n_blocks, "{f:?}");
            }
        }
    }
}
