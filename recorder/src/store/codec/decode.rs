//! Decoding a block: [`BlockView`] parses the header and decompresses columns on demand (into
//! pooled buffers), reads dictionaries in place or in full, and decodes records, all of them or
//! those of given rows, and end references.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::format::{BlockKind, BlockMeta, Column, Cur, Dict, N_COLS, REM_ESCAPE, SVC_ESCAPE};
use super::records::{EndRef, FastMap, Rec};
use super::scan::{PLANE_SCAN_MAX, escaped_remote, rows_in_planes};

/// The addresses of a dictionary column (uvarint count, family bytes, IPv4 and IPv6 byte
/// planes), in index order.
fn decode_dict(col: &[u8]) -> Result<Vec<IpAddr>, String> {
    let mut c = Cur::new(col);
    let n = usize::try_from(c.uvarint()?).map_err(|_| "dictionary too large")?;
    let fam = c.bytes(n)?;
    let n4 = fam.iter().filter(|&&f| f == 4).count();
    let n6 = fam.iter().filter(|&&f| f == 6).count();
    if n4 + n6 != n {
        return Err("unknown address family".into());
    }
    let p4 = c.bytes(4 * n4)?;
    let p6 = c.bytes(16 * n6)?;
    if !c.rest().is_empty() {
        return Err("trailing bytes in a dictionary".into());
    }
    let (mut i4, mut i6) = (0, 0);
    let mut out = Vec::with_capacity(n);
    for &f in fam {
        if f == 4 {
            out.push(IpAddr::V4(Ipv4Addr::new(
                p4[i4],
                p4[n4 + i4],
                p4[2 * n4 + i4],
                p4[3 * n4 + i4],
            )));
            i4 += 1;
        } else {
            let o: [u8; 16] = std::array::from_fn(|k| p6[k * n6 + i6]);
            out.push(IpAddr::V6(Ipv6Addr::from(o)));
            i6 += 1;
        }
    }
    Ok(out)
}

thread_local! {
    /// Buffers of decompressed columns, reused: a scan decompresses megabytes per block, and fresh
    /// allocations of that size cost page faults and zeroed pages every time.
    static COL_POOL: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The most buffers [`COL_POOL`] keeps (a block has 20 columns).
const COL_POOL_MAX: usize = 24;

/// A column's bytes: borrowed from the block when stored raw, else decompressed into a pooled
/// buffer that goes back to the pool when dropped.
pub(crate) enum Col<'a> {
    Raw(&'a [u8]),
    Pooled(Vec<u8>),
}

impl std::ops::Deref for Col<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Col::Raw(s) => s,
            Col::Pooled(v) => v,
        }
    }
}

impl Drop for Col<'_> {
    fn drop(&mut self) {
        if let Col::Pooled(v) = self {
            let v = std::mem::take(v);
            // During thread teardown the pool may be gone: the buffer is then simply freed.
            let _ = COL_POOL.try_with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < COL_POOL_MAX {
                    p.push(v);
                }
            });
        }
    }
}

/// A parsed block whose columns are decompressed on demand.
pub(crate) struct BlockView<'a> {
    pub meta: BlockMeta,
    pub(super) cols: Vec<(u8, usize, &'a [u8])>,
    /// Columns already decompressed by [`BlockView::col_ref`] (candidates and records share them).
    decoded: Vec<std::cell::OnceCell<Col<'a>>>,
}

/// How many addresses each of a block's dictionaries holds (what decoding records checks
/// indices against).
#[derive(Clone, Copy, Debug)]
pub(crate) struct DictLens {
    pub inside: usize,
    pub outside: usize,
    pub remote: usize,
}

/// One dictionary of a block, read in place: IPv4-only dictionaries (the common case) are not
/// turned into a vector of addresses; a lookup reads the byte planes.
pub(crate) enum DictView<'a> {
    /// `n` IPv4 addresses: octet `k` of entry `i` at `planes[off + k·n + i]`.
    V4 { planes: Col<'a>, off: usize, n: usize },
    /// Any other dictionary, decoded.
    Decoded(Vec<IpAddr>),
}

impl DictView<'_> {
    pub fn len(&self) -> usize {
        match self {
            DictView::V4 { n, .. } => *n,
            DictView::Decoded(v) => v.len(),
        }
    }
    pub fn get(&self, i: u32) -> Option<IpAddr> {
        match self {
            DictView::V4 { planes, off, n } => {
                let i = i as usize;
                (i < *n).then(|| {
                    IpAddr::from(std::array::from_fn::<u8, 4, _>(|k| planes[off + k * n + i]))
                })
            }
            DictView::Decoded(v) => v.get(i as usize).copied(),
        }
    }
    /// The index of `ip`, if the dictionary holds it.
    pub fn position(&self, ip: IpAddr) -> Option<u32> {
        match (self, ip) {
            (DictView::V4 { planes, off, n }, IpAddr::V4(a)) => {
                let o = a.octets();
                let p = &planes[*off..off + 4 * n];
                let (p0, rest) = p.split_at(*n);
                let (p1, rest) = rest.split_at(*n);
                let (p2, p3) = rest.split_at(*n);
                // 64 entries at a time without branching (vectorised); the hit found inside them.
                const W: usize = 64;
                let chunks = p0.chunks(W).zip(p1.chunks(W)).zip(p2.chunks(W)).zip(p3.chunks(W));
                for (c, (((a0, a1), a2), a3)) in chunks.enumerate() {
                    let hit = |(((x0, x1), x2), x3): (((&u8, &u8), &u8), &u8)| {
                        (*x0 == o[0]) & (*x1 == o[1]) & (*x2 == o[2]) & (*x3 == o[3])
                    };
                    let rows = || a0.iter().zip(a1).zip(a2).zip(a3);
                    if rows().fold(false, |any, r| any | hit(r)) {
                        return rows().position(hit).map(|i| (c * W + i) as u32);
                    }
                }
                None
            }
            (DictView::V4 { .. }, IpAddr::V6(_)) => None,
            (DictView::Decoded(v), ip) => v.iter().position(|a| *a == ip).map(|i| i as u32),
        }
    }
}

/// A block's address dictionaries.
pub(crate) struct Dicts {
    pub inside: Vec<IpAddr>,
    pub outside: Vec<IpAddr>,
    pub remote: Vec<IpAddr>,
}

impl Dicts {
    pub fn lens(&self) -> DictLens {
        DictLens {
            inside: self.inside.len(),
            outside: self.outside.len(),
            remote: self.remote.len(),
        }
    }
}

impl<'a> BlockView<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<Self, String> {
        let mut c = Cur::new(payload);
        let kind = BlockKind::from_code(c.u8()?)?;
        let class = c.u8()?;
        let n_full = c.uvarint()?;
        let n_ref = c.uvarint()?;
        let first_ordinal = c.uvarint()?;
        let min_start = c.ivarint()?;
        let max_start = c.ivarint()?;
        let max_end = c.ivarint()?;
        let any_open = c.u8()? != 0;
        let n_cols = usize::from(c.u8()?);
        if n_cols < N_COLS {
            return Err(format!("{n_cols} columns, expected {N_COLS}"));
        }
        let mut dir = Vec::with_capacity(n_cols);
        for _ in 0..n_cols {
            let codec = c.u8()?;
            let raw = usize::try_from(c.uvarint()?).map_err(|_| "column too large")?;
            let stored = usize::try_from(c.uvarint()?).map_err(|_| "column too large")?;
            dir.push((codec, raw, stored));
        }
        let mut cols = Vec::with_capacity(n_cols);
        for (codec, raw, stored) in dir {
            if raw > 1 << 30 {
                return Err("column too large".into());
            }
            cols.push((codec, raw, c.bytes(stored)?));
        }
        let meta = BlockMeta {
            kind,
            class,
            n_full,
            n_ref,
            first_ordinal,
            min_start,
            max_start,
            max_end: if any_open { i64::MAX } else { max_end },
        };
        let decoded = cols.iter().map(|_| std::cell::OnceCell::new()).collect();
        Ok(BlockView { meta, cols, decoded })
    }

    pub(super) fn col(&self, c: Column) -> Result<Col<'a>, String> {
        let i = c as usize;
        let (codec, raw, data) = self.cols.get(i).copied().ok_or("missing column")?;
        match codec {
            0 => Ok(Col::Raw(data)),
            1 => {
                thread_local! {
                    // One decompression context per thread, reused for every column.
                    static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
                }
                let mut buf = COL_POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default();
                buf.clear();
                buf.reserve(raw);
                DCTX.with(|c| {
                    let mut c = c.borrow_mut();
                    let d = match c.as_mut() {
                        Some(d) => d,
                        None => c.insert(zstd::bulk::Decompressor::new()?),
                    };
                    d.decompress_to_buffer(data, &mut buf)
                })
                .map_err(|e| format!("column {c:?}: {e}"))?;
                if buf.len() != raw {
                    return Err(format!("column {c:?}: {} bytes, expected {raw}", buf.len()));
                }
                Ok(Col::Pooled(buf))
            }
            other => Err(format!("column {c:?}: unknown codec {other}")),
        }
    }

    /// Column `c`, decompressed once per view.
    pub(super) fn col_ref(&self, c: Column) -> Result<&[u8], String> {
        let cell = self.decoded.get(c as usize).ok_or("missing column")?;
        if let Some(col) = cell.get() {
            return Ok(col);
        }
        let col = self.col(c)?;
        Ok(cell.get_or_init(|| col))
    }

    fn dict(&self, d: Dict) -> Result<Vec<IpAddr>, String> {
        decode_dict(&self.col(d.column())?)
    }

    /// Dictionary `d`, read in place when it holds only IPv4 addresses.
    pub fn dict_view(&self, d: Dict) -> Result<DictView<'a>, String> {
        let col = self.col(d.column())?;
        let mut c = Cur::new(&col);
        let n = usize::try_from(c.uvarint()?).map_err(|_| "dictionary too large")?;
        let fam = c.bytes(n)?;
        if fam.iter().all(|&f| f == 4) {
            let off = c.pos;
            c.bytes(4 * n)?;
            if !c.rest().is_empty() {
                return Err("trailing bytes in a dictionary".into());
            }
            return Ok(DictView::V4 { planes: col, off, n });
        }
        decode_dict(&col).map(DictView::Decoded)
    }

    /// The three address dictionaries.
    pub fn dicts(&self) -> Result<Dicts, String> {
        Ok(Dicts {
            inside: self.dict(Dict::Inside)?,
            outside: self.dict(Dict::Outside)?,
            remote: self.dict(Dict::Remote)?,
        })
    }

    /// Decodes every record (address ids index the dictionaries) and end reference.
    pub fn records(&self, dicts: &Dicts) -> Result<(Vec<Rec>, Vec<EndRef>), String> {
        self.records_at(dicts.lens(), None)
    }

    /// Decodes the end references and the records at `rows` (ascending, distinct positions in the
    /// block), or every record when `rows` is `None`. The sequential columns are read only up to
    /// the last row asked for; the other columns only at the rows asked for.
    pub fn records_at(
        &self,
        dicts: DictLens,
        rows: Option<&[u32]>,
    ) -> Result<(Vec<Rec>, Vec<EndRef>), String> {
        let decoder = RowDecoder::new(self, dicts)?;
        let recs = match rows {
            None => decoder.all()?,
            Some(rows) => decoder.rows(rows)?,
        };
        Ok((recs, self.end_refs()?))
    }

    /// The block's end references alone (three small columns; the records are not decoded).
    pub fn end_refs(&self) -> Result<Vec<EndRef>, String> {
        let n = usize::try_from(self.meta.n_full).map_err(|_| "too many records")?;
        let nr = usize::try_from(self.meta.n_ref).map_err(|_| "too many references")?;
        if nr > 1 << 24 {
            return Err("too many references".into());
        }
        let (o, e, fl) = (
            self.col_ref(Column::RefDistance)?,
            self.col_ref(Column::RefEnd)?,
            self.col_ref(Column::RefFlags)?,
        );
        if fl.len() != nr {
            return Err("reference columns disagree with the count".into());
        }
        let (mut ocur, mut ecur) = (Cur::new(o), Cur::new(e));
        let boundary = self
            .meta
            .first_ordinal
            .checked_add(n as u64)
            .ok_or("the block's first ordinal is out of range")?;
        let mut refs = Vec::with_capacity(nr);
        let mut prev_end = self.meta.min_start;
        for flags in fl.iter().copied() {
            let ordinal = boundary.wrapping_sub(ocur.uvarint()?);
            let end = prev_end.wrapping_add(ecur.ivarint()?);
            prev_end = end;
            refs.push(EndRef { ordinal, end, flags });
        }
        Ok(refs)
    }
}

/// The service table of a block: (protocol, remote port) by service code.
fn service_table(col: &[u8]) -> Result<Vec<(u8, u16)>, String> {
    let mut c = Cur::new(col);
    let len = c.uvarint()?;
    if len > u64::from(SVC_ESCAPE) {
        return Err(format!("service table of {len} entries"));
    }
    let mut table = Vec::with_capacity(len as usize);
    for _ in 0..len {
        let proto = c.u8()?;
        let pb = c.bytes(2)?;
        table.push((proto, u16::from_le_bytes([pb[0], pb[1]])));
    }
    if !c.rest().is_empty() {
        return Err("trailing bytes in the service table".into());
    }
    Ok(table)
}

/// Adds to `counts` (one per duration stream, the last for every code from `k_split` on) the
/// records with an end among the rows of service codes `svc` and bits `bits`.
fn stream_counts(svc: &[u8], bits: &[u8], k_split: u8, counts: &mut [usize]) {
    let mut rest = bits.iter().filter(|&&x| x & 1 != 0).count();
    for (code, c) in (0..k_split).zip(counts.iter_mut()) {
        let k = svc.iter().zip(bits).filter(|&(&s, &x)| s == code && x & 1 != 0).count();
        *c += k;
        rest -= k;
    }
    if let Some(last) = counts.last_mut() {
        *last += rest;
    }
}

/// The record columns of a block, checked once against the record count and each other, and
/// what they say about the whole block. Decodes the record of a row from what the sequential
/// columns (start, zone, outside index) say about it and from [`Counts`], the counts over the
/// rows before it.
struct RowDecoder<'v> {
    /// Records in the block.
    n: usize,
    /// The block's earliest start: what the first start delta is from.
    min_start: i64,
    /// What the address indices are checked against.
    dicts: DictLens,
    kind: &'v [u8],
    flags: &'v [u8],
    bits: &'v [u8],
    /// Service codes, into `table` or [`SVC_ESCAPE`].
    svc: &'v [u8],
    table: Vec<(u8, u16)>,
    /// Escaped services: `n_esc` protocols, then their remote ports in two planes.
    esc: &'v [u8],
    n_esc: usize,
    zone: &'v [u8],
    start: &'v [u8],
    /// Durations: `k_split`, then the streams; stream `s` holds `stream_len[s]` durations in 8
    /// byte planes from `stream_base[s]`.
    dur: &'v [u8],
    k_split: u8,
    stream_len: Vec<usize>,
    stream_base: Vec<usize>,
    /// Inside index (four planes), inside port (two), outside index deltas, port delta (two).
    ii: &'v [u8],
    ip: &'v [u8],
    oi: &'v [u8],
    op: &'v [u8],
    /// Remote index bytes, then `n_big` escaped values in three planes.
    ri: &'v [u8],
    n_big: usize,
    /// Every zone is 0 (one zero byte each): the zone column is not read.
    zones_zero: bool,
    /// Every inside index is below 65 536 (the upper two planes zero).
    inside_narrow: bool,
}

/// Where the next row's values are among the duration streams and the escaped services and
/// remotes: how many of each the rows before it hold.
struct Counts {
    stream: Vec<usize>,
    esc: usize,
    big: usize,
}

/// Where the values of a row that are not stored at the row's own position are: its duration
/// (its stream's base and length, its position in the stream), its escaped service and its
/// escaped remote index (positions among the escapes).
#[derive(Clone, Copy)]
struct Slots {
    dur: Option<(usize, usize, usize)>,
    svc_esc: Option<usize>,
    rem_big: Option<usize>,
}

impl<'v> RowDecoder<'v> {
    /// The record columns of `v`, whose dictionaries hold `dicts` addresses.
    fn new(v: &'v BlockView<'_>, dicts: DictLens) -> Result<Self, String> {
        let n = usize::try_from(v.meta.n_full).map_err(|_| "too many records")?;
        if n > 1 << 24 {
            return Err("too many records".into());
        }
        let kind = v.col_ref(Column::Kind)?;
        let flags = v.col_ref(Column::Flags)?;
        let bits = v.col_ref(Column::Bits)?;
        let svc = v.col_ref(Column::ServiceCode)?;
        if kind.len() != n || flags.len() != n || bits.len() != n || svc.len() != n {
            return Err("column lengths disagree with the record count".into());
        }
        let table = service_table(v.col_ref(Column::Services)?)?;
        let esc = v.col_ref(Column::EscapedServices)?;
        let n_esc = svc.iter().filter(|&&c| c == SVC_ESCAPE).count();
        // The largest code plus one, escapes (255) counted as 0. (Whole-column counts and folds
        // like these vectorise; a per-record histogram does not.)
        let code_end = svc.iter().fold(0u8, |m, &c| m.max(c.wrapping_add(1)));
        if esc.len() != 3 * n_esc || usize::from(code_end) > table.len() {
            return Err("service columns disagree with the record count".into());
        }
        let zone = v.col_ref(Column::Zone)?;
        let start = v.col_ref(Column::Start)?;
        let dur = v.col_ref(Column::Duration)?;
        let ii = v.col_ref(Column::InsideIndex)?;
        let ip = v.col_ref(Column::InsidePort)?;
        let oi = v.col_ref(Column::OutsideIndex)?;
        let op = v.col_ref(Column::PortDelta)?;
        let ri = v.col_ref(Column::RemoteIndex)?;
        if ip.len() != 2 * n || op.len() != 2 * n {
            return Err("port columns disagree with the record count".into());
        }
        // Duration streams: sizes, then where each begins.
        let k_split = *dur.first().ok_or("empty duration column")?;
        let mut stream_len = vec![0usize; usize::from(k_split) + 1];
        stream_counts(svc, bits, k_split, &mut stream_len);
        let mut stream_base = Vec::with_capacity(stream_len.len());
        let mut at = 1;
        for l in &stream_len {
            stream_base.push(at);
            at += 8 * l;
        }
        if dur.len() != at {
            return Err("duration column disagrees with the record count".into());
        }
        let n_big = ri
            .get(..n)
            .ok_or("remote column shorter than the record count")?
            .iter()
            .filter(|&&c| u32::from(c) == REM_ESCAPE)
            .count();
        if ii.len() != 4 * n || ri.len() != n + 3 * n_big {
            return Err("address columns disagree with the record count".into());
        }
        // Common cases read without the general decoders. (Folds, not `any`: they vectorise.)
        let zones_zero = zone.len() == n && zone.iter().fold(0, |a, &z| a | z) == 0;
        let inside_narrow = ii[2 * n..].iter().fold(0, |a, &x| a | x) == 0;
        Ok(RowDecoder {
            n,
            min_start: v.meta.min_start,
            dicts,
            kind,
            flags,
            bits,
            svc,
            table,
            esc,
            n_esc,
            zone,
            start,
            dur,
            k_split,
            stream_len,
            stream_base,
            ii,
            ip,
            oi,
            op,
            ri,
            n_big,
            zones_zero,
            inside_narrow,
        })
    }

    /// Every record, in one pass.
    fn all(&self) -> Result<Vec<Rec>, String> {
        let mut out_pred = vec![0u32; self.dicts.inside];
        let (mut zc, mut sc, mut oc) =
            (Cur::new(self.zone), Cur::new(self.start), Cur::new(self.oi));
        let mut at = self.counts();
        let mut prev = self.min_start;
        let mut recs = Vec::with_capacity(self.n);
        for i in 0..self.n {
            prev = prev.wrapping_add(sc.ivarint()?);
            let slots = self.slots(i, &mut at);
            let zone = if self.zones_zero { 0 } else { zc.uvarint()? };
            let inside = self.inside_at(i) as usize;
            let pred = out_pred.get_mut(inside).ok_or("dictionary index out of range")?;
            let outside = self.outside(pred, oc.ivarint()?)?;
            recs.push(self.record(i, prev, outside, zone, slots)?);
        }
        Ok(recs)
    }

    /// The records at `rows` (ascending, distinct). The sequential columns are skipped over in
    /// bulk between them (see `Cur::skip` and `Cur::sum`) and the counts advanced by counting
    /// bytes; the outside indices come from [`RowDecoder::outsides`].
    fn rows(&self, rows: &[u32]) -> Result<Vec<Rec>, String> {
        if rows.last().is_some_and(|&r| r as usize >= self.n) {
            return Err("row past the end of the block".into());
        }
        if rows.windows(2).any(|w| w[0] >= w[1]) {
            return Err("rows asked for out of order".into());
        }
        let outs = self.outsides(rows)?;
        let (mut zc, mut sc) = (Cur::new(self.zone), Cur::new(self.start));
        let mut at = self.counts();
        let mut prev = self.min_start;
        let mut next = 0;
        let mut recs = Vec::with_capacity(rows.len());
        for (&r, outside) in rows.iter().zip(outs) {
            let i = r as usize;
            // The rows skipped since the last one asked for.
            prev = prev.wrapping_add(sc.sum(i + 1 - next)?);
            self.skip(next, i, &mut at);
            let zone = if self.zones_zero {
                0
            } else {
                zc.skip(i - next)?;
                zc.uvarint()?
            };
            next = i + 1;
            // The row itself.
            let slots = self.slots(i, &mut at);
            recs.push(self.record(i, prev, outside, zone, slots)?);
        }
        Ok(recs)
    }

    /// The outside indices of `rows` (ascending, in the block). A row's outside index is
    /// predicted from the previous row of the same inside index, so the prediction is followed
    /// only along the rows of the inside indices asked for.
    fn outsides(&self, rows: &[u32]) -> Result<Vec<u32>, String> {
        if rows.iter().any(|&r| self.inside_at(r as usize) as usize >= self.dicts.inside) {
            return Err("dictionary index out of range".into());
        }
        let chain = self.same_inside(rows);
        let mut outs = Vec::with_capacity(rows.len());
        let mut oc = Cur::new(self.oi);
        let mut at = 0;
        let mut want = rows.iter().copied().peekable();
        // The last outside index of each tracked inside index.
        let mut out_pred: FastMap<u32, u32> = FastMap::default();
        for &i in &chain {
            oc.skip(i as usize - at)?;
            at = i as usize + 1;
            let pred = out_pred.entry(self.inside_at(i as usize)).or_insert(0);
            let outside = self.outside(pred, oc.ivarint()?)?;
            if want.next_if_eq(&i).is_some() {
                outs.push(outside);
            }
        }
        if outs.len() != rows.len() {
            return Err("outside prediction lost a row".into());
        }
        Ok(outs)
    }

    /// The rows up to the last of `rows` (ascending, in the block, their inside indices in the
    /// dictionary) whose inside index is one of theirs, ascending.
    fn same_inside(&self, rows: &[u32]) -> Vec<u32> {
        let (n, ii) = (self.n, self.ii);
        let limit = rows.last().map_or(0, |&x| x as usize + 1);
        let mut wanted: Vec<u32> = rows.iter().map(|&r| self.inside_at(r as usize)).collect();
        wanted.sort_unstable();
        wanted.dedup();
        match wanted.len() {
            // A few inside indices (an inside-host query has one, a point query a handful):
            // compare the planes 64 rows at a time.
            1..=PLANE_SCAN_MAX if self.inside_narrow => {
                let want: Vec<[u8; 2]> =
                    wanted.iter().map(|&v| [v as u8, (v >> 8) as u8]).collect();
                rows_in_planes([&ii[..limit], &ii[n..n + limit]], &want)
            }
            1..=PLANE_SCAN_MAX => {
                let want: Vec<[u8; 4]> = wanted.iter().map(|&v| v.to_le_bytes()).collect();
                let plane = |p: usize| &ii[p * n..p * n + limit];
                rows_in_planes([plane(0), plane(1), plane(2), plane(3)], &want)
            }
            _ => {
                let n_inside = self.dicts.inside;
                let mut tracked = vec![0u64; n_inside.div_ceil(64)];
                for &r in rows {
                    let v = self.inside_at(r as usize) as usize;
                    tracked[v / 64] |= 1 << (v % 64);
                }
                (0..limit)
                    .filter(|&i| {
                        let v = self.inside_at(i) as usize;
                        v < n_inside && tracked[v / 64] & (1 << (v % 64)) != 0
                    })
                    .map(|i| i as u32)
                    .collect()
            }
        }
    }

    /// The counts before the first row.
    fn counts(&self) -> Counts {
        Counts { stream: vec![0; self.stream_len.len()], esc: 0, big: 0 }
    }

    /// Advances `at` over rows `from..to`, which are not decoded.
    fn skip(&self, from: usize, to: usize, at: &mut Counts) {
        let (svc, ri) = (&self.svc[from..to], &self.ri[from..to]);
        stream_counts(svc, &self.bits[from..to], self.k_split, &mut at.stream);
        at.esc += svc.iter().filter(|&&c| c == SVC_ESCAPE).count();
        at.big += ri.iter().filter(|&&c| u32::from(c) == REM_ESCAPE).count();
    }

    /// Where row `i`'s values not stored at the row are, given `at`, the counts over the rows before it
    /// (advanced past row `i`).
    #[inline]
    fn slots(&self, i: usize, at: &mut Counts) -> Slots {
        let dur = (self.bits[i] & 1 != 0).then(|| {
            let st = usize::from(self.svc[i].min(self.k_split));
            at.stream[st] += 1;
            (self.stream_base[st], self.stream_len[st], at.stream[st] - 1)
        });
        let svc_esc = (self.svc[i] == SVC_ESCAPE).then(|| {
            at.esc += 1;
            at.esc - 1
        });
        let rem_big = (u32::from(self.ri[i]) == REM_ESCAPE).then(|| {
            at.big += 1;
            at.big - 1
        });
        Slots { dur, svc_esc, rem_big }
    }

    /// The inside index of row `i`.
    #[inline]
    fn inside_at(&self, i: usize) -> u32 {
        let (ii, n) = (self.ii, self.n);
        if self.inside_narrow {
            u32::from(ii[i]) | (u32::from(ii[n + i]) << 8)
        } else {
            (0..4).fold(0u32, |a, k| a | (u32::from(ii[k * n + i]) << (8 * k)))
        }
    }

    /// The outside index `delta` from `pred` (the previous of the same inside index), which
    /// becomes the next prediction.
    #[inline]
    fn outside(&self, pred: &mut u32, delta: i64) -> Result<u32, String> {
        let outside = i64::from(*pred).wrapping_add(delta);
        if outside < 0 || outside as usize >= self.dicts.outside {
            return Err("dictionary index out of range".into());
        }
        *pred = outside as u32;
        Ok(*pred)
    }

    /// Row `i` of a two-plane column.
    #[inline]
    fn port(&self, col: &[u8], i: usize) -> u16 {
        u16::from(col[i]) | (u16::from(col[self.n + i]) << 8)
    }

    /// Row `i`'s record, given what the sequential columns say about it (its start, outside
    /// index and zone) and where its other values are.
    #[inline]
    fn record(
        &self,
        i: usize,
        start: i64,
        outside: u32,
        zone: u64,
        slots: Slots,
    ) -> Result<Rec, String> {
        let inside = self.inside_at(i);
        if inside as usize >= self.dicts.inside {
            return Err("dictionary index out of range".into());
        }
        let in_port = self.port(self.ip, i);
        let out_port = self.port(self.op, i).wrapping_add(in_port);
        let end = slots.dur.map(|(base, len, at)| {
            let d = (0..8)
                .fold(0u64, |acc, k| acc | (u64::from(self.dur[base + k * len + at]) << (8 * k)));
            start.wrapping_add(d as i64)
        });
        let remote = match slots.rem_big {
            None => u32::from(self.ri[i]),
            Some(j) => escaped_remote(self.ri, self.n, self.n_big, j),
        };
        if remote as usize >= self.dicts.remote {
            return Err("dictionary index out of range".into());
        }
        let (proto, rem_port) = match slots.svc_esc {
            None => self.table[usize::from(self.svc[i])],
            Some(j) => {
                let esc = self.esc;
                (esc[j], u16::from(esc[self.n_esc + j]) | (u16::from(esc[2 * self.n_esc + j]) << 8))
            }
        };
        Ok(Rec {
            start,
            end,
            inside,
            outside,
            remote,
            in_port,
            out_port,
            rem_port,
            zone: u16::try_from(zone).map_err(|_| "zone out of range")?,
            kind: self.kind[i],
            proto,
            flags: self.flags[i],
            carried: self.bits[i] & 2 != 0,
        })
    }
}
