//! The block codec: records column by column, each column zstd-compressed when that is smaller.
//!
//! `docs/FORMAT.md` ("Block payload") specifies the layout of every column; [`Column`] names
//! them in their order. In outline: a block header (kind, class, counts, first ordinal, time
//! range), then the columns' codecs and lengths, then their bytes. Full records come as parallel
//! columns (kind, flags, zone, start deltas, durations in streams by service, addresses as
//! indices into the block's three dictionaries, ports as byte planes, a one-byte code into a
//! per-block table of (protocol, remote port) services); a live block's end references (ends
//! whose start is a record of the same segment) come as three columns of their own.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a block holds (its header's first byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlockKind {
    /// Events as they came, in an `.open` segment: full records and end references.
    Live = 0,
    /// Translations still open when the segment began, carried from the one before.
    Checkpoint = 1,
    /// New translations of a sealed segment, of one duration class.
    Sealed = 2,
}

impl BlockKind {
    pub(crate) fn from_code(k: u8) -> Result<BlockKind, String> {
        match k {
            0 => Ok(BlockKind::Live),
            1 => Ok(BlockKind::Checkpoint),
            2 => Ok(BlockKind::Sealed),
            other => Err(format!("unknown block kind {other}")),
        }
    }

    pub(crate) fn code(self) -> u8 {
        self as u8
    }
}
/// The duration class of checkpoint (carried) groups and of live blocks.
pub(crate) const CLASS_CARRIED: u8 = 4;
pub(crate) const CLASS_LIVE: u8 = 255;

/// The columns of a block, in their order in the block (docs/FORMAT.md has each one's layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Column {
    /// Kind (u8 per record).
    Kind = 0,
    /// The service table: (protocol, remote port) pairs.
    Services = 1,
    /// Flags (u8 per record).
    Flags = 2,
    /// Bits: 1 has an end, 2 carried.
    Bits = 3,
    /// Zone (uvarint per record).
    Zone = 4,
    /// Start, delta-coded.
    Start = 5,
    /// Durations, in streams by service.
    Duration = 6,
    /// Inside address: dictionary index, four byte planes.
    InsideIndex = 7,
    /// Inside port, two byte planes.
    InsidePort = 8,
    /// Outside address: index relative to the previous of the same inside.
    OutsideIndex = 9,
    /// Outside port minus inside port, two byte planes.
    PortDelta = 10,
    /// Remote address: index byte, escapes in three planes.
    RemoteIndex = 11,
    /// Service code (u8 per record).
    ServiceCode = 12,
    /// Inside dictionary.
    InsideDict = 13,
    /// Outside dictionary.
    OutsideDict = 14,
    /// Remote dictionary.
    RemoteDict = 15,
    /// End reference: ordinal distance.
    RefDistance = 16,
    /// End reference: end, delta-coded.
    RefEnd = 17,
    /// End reference: flags.
    RefFlags = 18,
    /// Escaped services: protocols, then remote ports.
    EscapedServices = 19,
}

const N_COLS: usize = 20;

impl std::ops::Index<Column> for Vec<Vec<u8>> {
    type Output = Vec<u8>;
    fn index(&self, c: Column) -> &Vec<u8> {
        &self[c as usize]
    }
}

impl std::ops::IndexMut<Column> for Vec<Vec<u8>> {
    fn index_mut(&mut self, c: Column) -> &mut Vec<u8> {
        &mut self[c as usize]
    }
}

/// A block's address dictionaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dict {
    Inside,
    Outside,
    Remote,
}

impl Dict {
    pub(crate) const ALL: [Dict; 3] = [Dict::Inside, Dict::Outside, Dict::Remote];

    fn column(self) -> Column {
        match self {
            Dict::Inside => Column::InsideDict,
            Dict::Outside => Column::OutsideDict,
            Dict::Remote => Column::RemoteDict,
        }
    }
}

/// One translation with times in units and addresses as ids (into an interner or a block's
/// dictionaries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rec {
    pub start: i64,
    pub end: Option<i64>,
    pub inside: u32,
    pub outside: u32,
    pub remote: u32,
    pub in_port: u16,
    pub out_port: u16,
    pub rem_port: u16,
    pub zone: u16,
    pub kind: u8,
    pub proto: u8,
    pub flags: u8,
    pub carried: bool,
}

/// The end of a translation whose full record is earlier in the same segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EndRef {
    pub ordinal: u64,
    pub end: i64,
    pub flags: u8,
}

/// A `HashMap` for the store's in-memory maps, hashed with foldhash (`fast`). Some keys hold
/// remote addresses that outside hosts choose (the address interner), so the hash must not be
/// predictable: foldhash's secrets are random per
/// process and per map, which defeats precomputed collision sets.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Addresses to dense ids.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    pub addrs: Vec<IpAddr>,
    /// IPv4 addresses as u32 and IPv6 addresses as u128: one multiply to hash.
    v4: FastMap<u32, u32>,
    v6: FastMap<u128, u32>,
}

impl Interner {
    pub fn id(&mut self, a: IpAddr) -> u32 {
        let found = match a {
            IpAddr::V4(v) => self.v4.get(&v.to_bits()),
            IpAddr::V6(v) => self.v6.get(&v.to_bits()),
        };
        if let Some(&id) = found {
            return id;
        }
        let next = u32::try_from(self.addrs.len()).unwrap_or(u32::MAX);
        let id = match a {
            IpAddr::V4(v) => *self.v4.entry(v.to_bits()).or_insert(next),
            IpAddr::V6(v) => *self.v6.entry(v.to_bits()).or_insert(next),
        };
        if id == next {
            self.addrs.push(a);
        }
        id
    }
}

/// What a block header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockMeta {
    pub kind: BlockKind,
    pub class: u8,
    pub n_full: u64,
    pub n_ref: u64,
    pub first_ordinal: u64,
    pub min_start: i64,
    pub max_start: i64,
    /// The latest end (or start), `i64::MAX` when a record is open.
    pub max_end: i64,
}

pub(crate) fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// The high bit of each byte of a word: set in every byte of a varint but its last.
const HIGH: u64 = 0x8080_8080_8080_8080;

/// A cursor over a byte slice.
pub(crate) struct Cur<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cur { buf, pos: 0 }
    }
    pub fn u8(&mut self) -> Result<u8, String> {
        let b = *self.buf.get(self.pos).ok_or("truncated")?;
        self.pos += 1;
        Ok(b)
    }
    /// One LEB128 value; one-byte values (the common case in every column) take the inlined
    /// path.
    #[inline]
    pub fn uvarint(&mut self) -> Result<u64, String> {
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        self.uvarint_long()
    }
    #[inline(never)]
    fn uvarint_long(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            if shift >= 64 {
                return Err("varint too long".into());
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
            shift += 7;
        }
    }
    #[inline]
    pub fn ivarint(&mut self) -> Result<i64, String> {
        self.uvarint().map(unzigzag)
    }
    /// Skips `count` LEB128 values: a value ends at a byte with the high bit clear, so whole
    /// 8-byte words are stepped over while they cannot hold more ends than are left to skip.
    pub fn skip(&mut self, mut count: usize) -> Result<(), String> {
        while count >= 8
            && let Some(w) = self.buf.get(self.pos..self.pos + 8)
        {
            let w = u64::from_le_bytes(w.try_into().map_err(|_| "truncated")?);
            count -= (!w & HIGH).count_ones() as usize;
            self.pos += 8;
        }
        while count > 0 {
            if self.u8()? < 0x80 {
                count -= 1;
            }
        }
        Ok(())
    }
    /// The wrapping sum of the next `count` zigzag LEB128 values; runs of one-byte values are
    /// summed eight at a time.
    pub fn sum(&mut self, mut count: usize) -> Result<i64, String> {
        let mut acc = 0i64;
        while count > 0 {
            if count >= 8
                && let Some(w) = self.buf.get(self.pos..self.pos + 8)
            {
                let w = u64::from_le_bytes(w.try_into().map_err(|_| "truncated")?);
                if w & HIGH == 0 {
                    for k in 0..8 {
                        acc = acc.wrapping_add(unzigzag((w >> (8 * k)) & 0x7f));
                    }
                    self.pos += 8;
                    count -= 8;
                    continue;
                }
            }
            acc = acc.wrapping_add(self.ivarint()?);
            count -= 1;
        }
        Ok(acc)
    }
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or("truncated")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    /// Bytes read so far.
    pub fn pos(&self) -> usize {
        self.pos
    }
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
}

pub(crate) fn kind_to_code(k: crate::model::Kind) -> u8 {
    match k {
        crate::model::Kind::Snat => 0,
        crate::model::Kind::Dnat => 1,
        crate::model::Kind::Both => 2,
    }
}

pub(crate) fn kind_from_code(c: u8) -> Option<crate::model::Kind> {
    match c {
        0 => Some(crate::model::Kind::Snat),
        1 => Some(crate::model::Kind::Dnat),
        2 => Some(crate::model::Kind::Both),
        _ => None,
    }
}

/// A per-block dictionary: global id to local index (indexed by id; `u32::MAX` for ids the
/// block does not use), and the column; most frequent first.
fn dictionary(ids: impl Iterator<Item = u32> + Clone, addrs: &[IpAddr]) -> (Vec<u32>, Vec<u8>) {
    // Ids are dense (interned): count in a vector, not a hash map.
    let size = ids.clone().max().map_or(0, |m| m as usize + 1);
    let mut counts = vec![0u32; size];
    for id in ids {
        counts[id as usize] += 1;
    }
    let mut order: Vec<(u32, u32)> =
        counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(id, c)| (id as u32, *c)).collect();
    order.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut map = vec![u32::MAX; size];
    let mut col = Vec::with_capacity(order.len() * 5 + 4);
    put_uvarint(&mut col, order.len() as u64);
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (local, (id, _)) in order.iter().enumerate() {
        map[*id as usize] = local as u32;
        match addrs.get(*id as usize) {
            Some(IpAddr::V6(a)) => {
                col.push(6);
                v6.push(a.octets());
            }
            Some(IpAddr::V4(a)) => {
                col.push(4);
                v4.push(a.octets());
            }
            None => {
                col.push(4);
                v4.push([0; 4]);
            }
        }
    }
    // Byte planes: addresses share their leading bytes far more than their trailing ones.
    for k in 0..4 {
        col.extend(v4.iter().map(|a| a[k]));
    }
    for k in 0..16 {
        col.extend(v6.iter().map(|a| a[k]));
    }
    (map, col)
}

/// Service code of a record whose (protocol, remote port) is not in the block's table.
const SVC_ESCAPE: u8 = 255;
/// Remote dictionary indices from this one on are escaped.
const REM_ESCAPE: u32 = 255;
/// Duration streams split off when splitting pays (see [`dur_split`]).
const DUR_SPLIT: u8 = 8;

/// Each record's service code and the table: the block's (protocol, remote port) pairs by
/// decreasing count (ties by value), at most 255 of them; code 255 for the others.
fn services(recs: &[Rec]) -> (Vec<u8>, Vec<(u8, u16)>) {
    let mut counts: FastMap<(u8, u16), u32> = FastMap::default();
    for r in recs {
        *counts.entry((r.proto, r.rem_port)).or_default() += 1;
    }
    let mut order: Vec<((u8, u16), u32)> = counts.into_iter().collect();
    order.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    order.truncate(usize::from(SVC_ESCAPE));
    let table: Vec<(u8, u16)> = order.iter().map(|(k, _)| *k).collect();
    let code: FastMap<(u8, u16), u8> =
        table.iter().enumerate().map(|(i, k)| (*k, i as u8)).collect();
    let codes = recs
        .iter()
        .map(|r| code.get(&(r.proto, r.rem_port)).copied().unwrap_or(SVC_ESCAPE))
        .collect();
    (codes, table)
}

/// The duration column: `u8 k`, then stream 0, …, stream k, each its durations (records with
/// an end, in record order) as u64 in 8 byte planes; a record is in stream `min(code, k)`.
fn dur_column(k: u8, streams: &[Vec<u64>]) -> Vec<u8> {
    let total: usize = streams.iter().map(Vec::len).sum();
    let mut col = Vec::with_capacity(1 + 8 * total);
    col.push(k);
    for s in streams {
        for b in 0..8 {
            col.extend(s.iter().map(|d| (d >> (8 * b)) as u8));
        }
    }
    col
}

/// How many service codes get their own duration stream: [`DUR_SPLIT`] when that makes the
/// column smaller (checked with fast zstd), else 0. Durations of one service (DNS: a short
/// exchange, then conntrack's fixed timeout) cluster; a block that mixes services blurs them.
fn dur_split(recs: &[Rec], codes: &[u8]) -> u8 {
    let mut split: Vec<Vec<u64>> = vec![Vec::new(); usize::from(DUR_SPLIT) + 1];
    let mut one = Vec::new();
    for (r, &c) in recs.iter().zip(codes) {
        if let Some(e) = r.end {
            let d = e.wrapping_sub(r.start) as u64;
            split[usize::from(c.min(DUR_SPLIT))].push(d);
            one.push(d);
        }
    }
    if one.len() < 4096 {
        return 0;
    }
    let size = |col: Vec<u8>| zstd::bulk::compress(&col, 1).map_or(usize::MAX, |z| z.len());
    if size(dur_column(DUR_SPLIT, &split)) < size(dur_column(0, &[one])) { DUR_SPLIT } else { 0 }
}

fn put_planes(col: &mut Vec<u8>, vals: impl Iterator<Item = u16> + Clone) {
    col.extend(vals.clone().map(|v| v as u8));
    col.extend(vals.map(|v| (v >> 8) as u8));
}

/// Encodes a block. `recs` use ids of `addrs`. Appends the payload to `out`.
#[expect(
    clippy::too_many_arguments,
    reason = "one call per block kind; a struct would only rename them"
)]
pub(crate) fn encode_block(
    kind: BlockKind,
    class: u8,
    first_ordinal: u64,
    recs: &[Rec],
    refs: &[EndRef],
    addrs: &[IpAddr],
    level: i32,
    out: &mut Vec<u8>,
) -> std::io::Result<BlockMeta> {
    let min_start = recs.iter().map(|r| r.start).min().unwrap_or(0);
    let max_start = recs.iter().map(|r| r.start).max().unwrap_or(min_start);
    let any_open = recs.iter().any(|r| r.end.is_none());
    let max_end = if any_open {
        i64::MAX
    } else {
        recs.iter()
            .map(|r| r.end.unwrap_or(r.start))
            .chain(refs.iter().map(|r| r.end))
            .max()
            .unwrap_or(min_start)
    };
    let meta = BlockMeta {
        kind,
        class,
        n_full: recs.len() as u64,
        n_ref: refs.len() as u64,
        first_ordinal,
        min_start,
        max_start,
        max_end,
    };
    let n = recs.len();
    let mut cols: Vec<Vec<u8>> = vec![Vec::new(); N_COLS];
    cols[Column::Kind].extend(recs.iter().map(|r| r.kind));
    cols[Column::Flags].extend(recs.iter().map(|r| r.flags));
    cols[Column::Bits]
        .extend(recs.iter().map(|r| u8::from(r.end.is_some()) | (u8::from(r.carried) << 1)));
    // Services: the block's most frequent (protocol, remote port) pairs.
    let (svc_codes, table) = services(recs);
    put_uvarint(&mut cols[Column::Services], table.len() as u64);
    for &(proto, port) in &table {
        cols[Column::Services].push(proto);
        cols[Column::Services].extend_from_slice(&port.to_le_bytes());
    }
    let escaped: Vec<&Rec> =
        recs.iter().zip(&svc_codes).filter(|(_, c)| **c == SVC_ESCAPE).map(|(r, _)| r).collect();
    cols[Column::EscapedServices].extend(escaped.iter().map(|r| r.proto));
    put_planes(&mut cols[Column::EscapedServices], escaped.iter().map(|r| r.rem_port));
    let mut prev = min_start;
    cols[Column::Start].reserve(n * 2);
    // Durations in streams by service code (see `dur_column` and `dur_split`).
    // Live blocks are rewritten at the seal: no time spent choosing.
    let k_split = if kind == BlockKind::Live { 0 } else { dur_split(recs, &svc_codes) };
    let mut streams: Vec<Vec<u64>> = vec![Vec::new(); usize::from(k_split) + 1];
    for (r, &code) in recs.iter().zip(&svc_codes) {
        put_uvarint(&mut cols[Column::Zone], u64::from(r.zone));
        put_uvarint(&mut cols[Column::Start], zigzag(r.start.wrapping_sub(prev)));
        prev = r.start;
        if let Some(e) = r.end {
            streams[usize::from(code.min(k_split))].push(e.wrapping_sub(r.start) as u64);
        }
    }
    cols[Column::Duration] = dur_column(k_split, &streams);
    cols[Column::ServiceCode] = svc_codes;
    let (din, c13) = dictionary(recs.iter().map(|r| r.inside), addrs);
    let (dout, c14) = dictionary(recs.iter().map(|r| r.outside), addrs);
    let (drem, c15) = dictionary(recs.iter().map(|r| r.remote), addrs);
    // Prediction: the outside address last used by the same inside address.
    let mut out_pred = vec![0u32; din.iter().filter(|&&l| l != u32::MAX).count()];
    let (mut idx_in, mut idx_rem) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for r in recs {
        let (i, o, m) = (din[r.inside as usize], dout[r.outside as usize], drem[r.remote as usize]);
        idx_in.push(i);
        let pred = &mut out_pred[i as usize];
        put_uvarint(&mut cols[Column::OutsideIndex], zigzag(i64::from(o) - i64::from(*pred)));
        *pred = o;
        idx_rem.push(m);
    }
    for k in 0..4 {
        cols[Column::InsideIndex].extend(idx_in.iter().map(|v| (v >> (8 * k)) as u8));
    }
    // Remote index: one byte, 255 escaping to (index − 255) in three byte planes after them.
    cols[Column::RemoteIndex].extend(idx_rem.iter().map(|&m| m.min(REM_ESCAPE) as u8));
    let big: Vec<u32> =
        idx_rem.iter().filter(|&&m| m >= REM_ESCAPE).map(|m| m - REM_ESCAPE).collect();
    for k in 0..3 {
        cols[Column::RemoteIndex].extend(big.iter().map(|v| (v >> (8 * k)) as u8));
    }
    put_planes(&mut cols[Column::InsidePort], recs.iter().map(|r| r.in_port));
    put_planes(
        &mut cols[Column::PortDelta],
        recs.iter().map(|r| r.out_port.wrapping_sub(r.in_port)),
    );
    cols[Column::InsideDict] = c13;
    cols[Column::OutsideDict] = c14;
    cols[Column::RemoteDict] = c15;
    let boundary = first_ordinal + n as u64;
    let mut prev_end = min_start;
    for r in refs {
        put_uvarint(&mut cols[Column::RefDistance], boundary.wrapping_sub(r.ordinal));
        put_uvarint(&mut cols[Column::RefEnd], zigzag(r.end.wrapping_sub(prev_end)));
        prev_end = r.end;
        cols[Column::RefFlags].push(r.flags);
    }

    out.push(kind.code());
    out.push(class);
    put_uvarint(out, meta.n_full);
    put_uvarint(out, meta.n_ref);
    put_uvarint(out, first_ordinal);
    put_uvarint(out, zigzag(min_start));
    put_uvarint(out, zigzag(max_start));
    put_uvarint(out, zigzag(if any_open { 0 } else { max_end }));
    out.push(u8::from(any_open));
    out.push(N_COLS as u8);
    let mut stored: Vec<(u8, usize, Vec<u8>)> = Vec::with_capacity(N_COLS);
    // One compression context for every column.
    let mut zc = zstd::bulk::Compressor::new(level)?;
    for c in cols {
        if c.len() >= 32 {
            let z = zc.compress(&c)?;
            if z.len() < c.len() {
                stored.push((1, c.len(), z));
                continue;
            }
        }
        stored.push((0, c.len(), c));
    }
    for (codec, raw, c) in &stored {
        out.push(*codec);
        put_uvarint(out, *raw as u64);
        put_uvarint(out, c.len() as u64);
    }
    for (_, _, c) in &stored {
        out.extend_from_slice(c);
    }
    Ok(meta)
}

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

/// The `j`-th escaped remote index of a remote column of `n` one-byte codes followed by
/// `n_big` escaped values in three byte planes.
/// How many inside indices [`rows_in_planes`] compares at once.
const PLANE_SCAN_MAX: usize = 16;

/// The rows whose bytes in `planes` (one plane per byte of a value, equal lengths, least
/// significant first) spell one of `want` (1 to [`PLANE_SCAN_MAX`] values), ascending. Works 64
/// rows at a time into a bit mask, which the compiler turns into vector compares: a per-row
/// filter with a closure does not vectorise, and this scan runs over up to a whole block per
/// candidate block of a query.
fn rows_in_planes<const P: usize>(planes: [&[u8]; P], want: &[[u8; P]]) -> Vec<u32> {
    fn scan<const P: usize, const K: usize>(
        planes: [&[u8]; P],
        want: [[u8; P]; K],
        out: &mut Vec<u32>,
    ) {
        let len = planes[0].len();
        let full = len / 64 * 64;
        let mut base = 0;
        while base < full {
            // Fixed-size chunks: no bounds checks in the loops below, which vectorise.
            let chunk: [&[u8; 64]; P] =
                std::array::from_fn(|p| planes[p][base..base + 64].try_into().expect("64 bytes"));
            let mut hits = [0u8; 64];
            for w in &want {
                let mut eq = [1u8; 64];
                for p in 0..P {
                    for j in 0..64 {
                        eq[j] &= u8::from(chunk[p][j] == w[p]);
                    }
                }
                for j in 0..64 {
                    hits[j] |= eq[j];
                }
            }
            let mut mask = 0u64;
            for (j, &h) in hits.iter().enumerate() {
                mask |= u64::from(h) << j;
            }
            while mask != 0 {
                out.push((base as u32) + mask.trailing_zeros());
                mask &= mask - 1;
            }
            base += 64;
        }
        plain(planes, &want, full, out);
    }
    /// The rows from `from` on, one at a time.
    fn plain<const P: usize>(
        planes: [&[u8]; P],
        want: &[[u8; P]],
        from: usize,
        out: &mut Vec<u32>,
    ) {
        #[expect(clippy::needless_range_loop, reason = "the row index addresses every plane")]
        for i in from..planes[0].len() {
            if want.iter().any(|w| (0..P).all(|p| planes[p][i] == w[p])) {
                out.push(i as u32);
            }
        }
    }
    debug_assert!(planes.iter().all(|p| p.len() == planes[0].len()));
    let mut out = Vec::new();
    // One monomorphic scan per count of values, so that each unrolls.
    macro_rules! by_count {
        ($($k:literal)*) => {
            match want.len() {
                $($k => scan::<P, $k>(planes, want.try_into().expect("length checked"), &mut out),)*
                _ => plain(planes, want, 0, &mut out),
            }
        };
    }
    by_count!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
    out
}

fn escaped_remote(ri: &[u8], n: usize, n_big: usize, j: usize) -> u32 {
    (0..3).fold(REM_ESCAPE, |a, k| a + (u32::from(ri[n + k * n_big + j]) << (8 * k)))
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
    cols: Vec<(u8, usize, &'a [u8])>,
    /// Columns already decompressed by [`BlockView::col_ref`] (candidates and records share them).
    decoded: Vec<std::cell::OnceCell<Col<'a>>>,
}

/// What a scan looks for in one block: addresses as indices into the block's dictionaries,
/// each with an optional port.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Select {
    pub inside: Option<(u32, Option<u16>)>,
    pub outside: Option<(u32, Option<u16>)>,
    pub remote: Option<(u32, Option<u16>)>,
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

    fn col(&self, c: Column) -> Result<Col<'a>, String> {
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
    fn col_ref(&self, c: Column) -> Result<&[u8], String> {
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

    /// The rows that may match `sel`, judged from the port, inside-address and remote-address
    /// columns alone (the sequential columns are not read): every row whose record matches `sel`
    /// is among them. `None` when `sel` names nothing these columns can test.
    pub fn candidates(&self, sel: &Select) -> Result<Option<Vec<u32>>, String> {
        let n = usize::try_from(self.meta.n_full).map_err(|_| "too many records")?;
        if n > 1 << 24 {
            return Err("too many records".into());
        }
        let mut rows: Option<Vec<u32>> = None;
        // Keeps the rows (all, or those still candidates) that pass `test`.
        fn narrow(n: usize, rows: &mut Option<Vec<u32>>, test: impl Fn(usize) -> bool) {
            *rows = Some(match rows.take() {
                None => {
                    let mut v = Vec::new();
                    for i in 0..n {
                        if test(i) {
                            v.push(i as u32);
                        }
                    }
                    v
                }
                Some(mut v) => {
                    v.retain(|&i| test(i as usize));
                    v
                }
            });
        }
        let port = |col: &[u8], i: usize| u16::from(col[i]) | (u16::from(col[n + i]) << 8);
        let out_port = sel.outside.and_then(|(_, p)| p);
        let in_port = sel.inside.and_then(|(_, p)| p);
        if out_port.is_some() || in_port.is_some() {
            let ip = self.col_ref(Column::InsidePort)?;
            if ip.len() != 2 * n {
                return Err("port columns disagree with the record count".into());
            }
            if let Some(want) = in_port {
                narrow(n, &mut rows, |i| port(ip, i) == want);
            }
            if let Some(want) = out_port {
                let op = self.col_ref(Column::PortDelta)?;
                if op.len() != 2 * n {
                    return Err("port columns disagree with the record count".into());
                }
                match rows.as_mut() {
                    Some(v) => v.retain(|&i| {
                        port(op, i as usize).wrapping_add(port(ip, i as usize)) == want
                    }),
                    None => {
                        // The first test, over every row: byte planes zipped (no index checks).
                        let (il, ih) = ip.split_at(n);
                        let (ol, oh) = op.split_at(n);
                        let mut v = Vec::new();
                        for (i, (((&a, &b), &c), &d)) in
                            il.iter().zip(ih).zip(ol).zip(oh).enumerate()
                        {
                            let p = (u16::from(a) | (u16::from(b) << 8))
                                .wrapping_add(u16::from(c) | (u16::from(d) << 8));
                            if p == want {
                                v.push(i as u32);
                            }
                        }
                        rows = Some(v);
                    }
                }
            }
        }
        if let Some((want, _)) = sel.inside {
            let ii = self.col_ref(Column::InsideIndex)?;
            if ii.len() != 4 * n {
                return Err("address columns disagree with the record count".into());
            }
            let b = want.to_le_bytes();
            match rows.as_mut() {
                Some(v) => v.retain(|&i| (0..4).all(|k| ii[k * n + i as usize] == b[k])),
                None => {
                    // The first test, over every row: byte planes zipped (no index checks).
                    let (p0, rest) = ii.split_at(n);
                    let (p1, rest) = rest.split_at(n);
                    let (p2, p3) = rest.split_at(n);
                    let mut v = Vec::new();
                    for (i, (((&x0, &x1), &x2), &x3)) in
                        p0.iter().zip(p1).zip(p2).zip(p3).enumerate()
                    {
                        if x0 == b[0] && x1 == b[1] && x2 == b[2] && x3 == b[3] {
                            v.push(i as u32);
                        }
                    }
                    rows = Some(v);
                }
            }
        }
        if let Some((want, _)) = sel.remote {
            let ri = self.col_ref(Column::RemoteIndex)?;
            if ri.len() < n {
                return Err("address columns disagree with the record count".into());
            }
            if want < REM_ESCAPE {
                narrow(n, &mut rows, |i| u32::from(ri[i]) == want);
            } else {
                // Escaped indices: the j-th escape's value is in the planes after the codes.
                let n_big = ri[..n].iter().filter(|&&c| u32::from(c) == REM_ESCAPE).count();
                if ri.len() != n + 3 * n_big {
                    return Err("address columns disagree with the record count".into());
                }
                let mut hit = vec![false; n];
                let mut j = 0;
                for (i, &c) in ri[..n].iter().enumerate() {
                    if u32::from(c) == REM_ESCAPE {
                        let v = escaped_remote(ri, n, n_big, j);
                        hit[i] = v == want;
                        j += 1;
                    }
                }
                narrow(n, &mut rows, |i| hit[i]);
            }
        }
        Ok(rows)
    }

    /// Decodes the end references and the records at `rows` (ascending, distinct positions in the
    /// block), or every record when `rows` is `None`. The sequential columns are read only up to
    /// the last row asked for; the other columns only at the rows asked for.
    pub fn records_at(
        &self,
        dicts: DictLens,
        rows: Option<&[u32]>,
    ) -> Result<(Vec<Rec>, Vec<EndRef>), String> {
        let n = usize::try_from(self.meta.n_full).map_err(|_| "too many records")?;
        if n > 1 << 24 {
            return Err("too many records".into());
        }
        let k = self.col_ref(Column::Kind)?;
        let f = self.col_ref(Column::Flags)?;
        let b = self.col_ref(Column::Bits)?;
        let svc = self.col_ref(Column::ServiceCode)?;
        if k.len() != n || f.len() != n || b.len() != n || svc.len() != n {
            return Err("column lengths disagree with the record count".into());
        }
        let table = {
            let t = self.col_ref(Column::Services)?;
            let mut c = Cur::new(t);
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
            table
        };
        let esc = self.col_ref(Column::EscapedServices)?;
        let n_esc = svc.iter().filter(|&&c| c == SVC_ESCAPE).count();
        // The largest code plus one, escapes (255) counted as 0. (Whole-column counts and folds
        // like these vectorise; a per-record histogram does not.)
        let code_end = svc.iter().fold(0u8, |m, &c| m.max(c.wrapping_add(1)));
        if esc.len() != 3 * n_esc || usize::from(code_end) > table.len() {
            return Err("service columns disagree with the record count".into());
        }
        let zone = self.col_ref(Column::Zone)?;
        let start = self.col_ref(Column::Start)?;
        let dur = self.col_ref(Column::Duration)?;
        let ii = self.col_ref(Column::InsideIndex)?;
        let ip = self.col_ref(Column::InsidePort)?;
        let oi = self.col_ref(Column::OutsideIndex)?;
        let op = self.col_ref(Column::PortDelta)?;
        let ri = self.col_ref(Column::RemoteIndex)?;
        if ip.len() != 2 * n || op.len() != 2 * n {
            return Err("port columns disagree with the record count".into());
        }
        // Duration streams: sizes, then where each begins.
        let k_split = *dur.first().ok_or("empty duration column")?;
        let stream_of = |i: usize| usize::from(svc[i].min(k_split));
        // Records with an end, per duration stream, among rows `from..to`.
        let stream_counts = |from: usize, to: usize, counts: &mut [usize]| {
            let (svc, b) = (&svc[from..to], &b[from..to]);
            let mut rest = b.iter().filter(|&&x| x & 1 != 0).count();
            for (code, c) in (0..k_split).zip(counts.iter_mut()) {
                let k = svc.iter().zip(b).filter(|&(&s, &x)| s == code && x & 1 != 0).count();
                *c += k;
                rest -= k;
            }
            if let Some(last) = counts.last_mut() {
                *last += rest;
            }
        };
        let mut stream_len = vec![0usize; usize::from(k_split) + 1];
        stream_counts(0, n, &mut stream_len);
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
        let u32_at = |col: &[u8], i: usize| {
            (0..4).fold(0u32, |a, k| a | (u32::from(col[k * n + i]) << (8 * k)))
        };
        let port = |col: &[u8], i: usize| u16::from(col[i]) | (u16::from(col[n + i]) << 8);
        let idx = |v: u32, len: usize| -> Result<u32, String> {
            if v as usize >= len {
                return Err("dictionary index out of range".into());
            }
            Ok(v)
        };
        if rows.and_then(<[u32]>::last).is_some_and(|&r| r as usize >= n) {
            return Err("row past the end of the block".into());
        }
        if rows.is_some_and(|r| r.windows(2).any(|w| w[0] >= w[1])) {
            return Err("rows asked for out of order".into());
        }
        // Common cases read without the general decoders: every zone 0 (one zero byte each),
        // inside indices below 65 536 (the upper two planes zero).
        // (Folds, not `any`: they vectorise.)
        let zones_zero = zone.len() == n && zone.iter().fold(0, |a, &z| a | z) == 0;
        let inside_narrow = ii[2 * n..].iter().fold(0, |a, &x| a | x) == 0;
        let n_inside = dicts.inside;
        let inside_at = |i: usize| {
            if inside_narrow {
                u32::from(ii[i]) | (u32::from(ii[n + i]) << 8)
            } else {
                u32_at(ii, i)
            }
        };
        // One record, given what the sequential columns and counters say about it.
        let record = |i: usize,
                      start: i64,
                      outside: u32,
                      dur_at: Option<(usize, usize, usize)>,
                      svc_esc: Option<usize>,
                      rem_big: Option<usize>,
                      zone: u64|
         -> Result<Rec, String> {
            let inside = inside_at(i);
            if inside as usize >= n_inside {
                return Err("dictionary index out of range".into());
            }
            let in_port = port(ip, i);
            let out_port = port(op, i).wrapping_add(in_port);
            let end = dur_at.map(|(base, len, at)| {
                let d = (0..8)
                    .fold(0u64, |acc, k| acc | (u64::from(dur[base + k * len + at]) << (8 * k)));
                start.wrapping_add(d as i64)
            });
            let remote = match rem_big {
                None => u32::from(ri[i]),
                Some(j) => escaped_remote(ri, n, n_big, j),
            };
            let (proto, rem_port) = match svc_esc {
                None => table[usize::from(svc[i])],
                Some(j) => {
                    (esc[j], u16::from(esc[n_esc + j]) | (u16::from(esc[2 * n_esc + j]) << 8))
                }
            };
            Ok(Rec {
                start,
                end,
                inside,
                outside,
                remote: idx(remote, dicts.remote)?,
                in_port,
                out_port,
                rem_port,
                zone: u16::try_from(zone).map_err(|_| "zone out of range")?,
                kind: k[i],
                proto,
                flags: f[i],
                carried: b[i] & 2 != 0,
            })
        };
        // Where row `i` is in the duration streams and among the escaped services and remotes,
        // given `at`, the counts over the rows before it (advanced past row `i`).
        struct At {
            stream: Vec<usize>,
            esc: usize,
            big: usize,
        }
        let row_at = |i: usize, at: &mut At| {
            let dur_at = (b[i] & 1 != 0).then(|| {
                let st = stream_of(i);
                at.stream[st] += 1;
                (stream_base[st], stream_len[st], at.stream[st] - 1)
            });
            let svc_esc = (svc[i] == SVC_ESCAPE).then(|| {
                at.esc += 1;
                at.esc - 1
            });
            let rem_big = (u32::from(ri[i]) == REM_ESCAPE).then(|| {
                at.big += 1;
                at.big - 1
            });
            (dur_at, svc_esc, rem_big)
        };
        let outside_of = |pred: &mut u32, delta: i64| -> Result<u32, String> {
            let outside = i64::from(*pred).wrapping_add(delta);
            if outside < 0 || outside as usize >= dicts.outside {
                return Err("dictionary index out of range".into());
            }
            *pred = outside as u32;
            Ok(*pred)
        };
        let recs = match rows {
            None => {
                let mut out_pred = vec![0u32; n_inside];
                // Every record, in one pass.
                let (mut zc, mut sc, mut oc) = (Cur::new(zone), Cur::new(start), Cur::new(oi));
                let mut at = At { stream: vec![0; stream_len.len()], esc: 0, big: 0 };
                let mut prev = self.meta.min_start;
                let mut recs = Vec::with_capacity(n);
                for i in 0..n {
                    prev = prev.wrapping_add(sc.ivarint()?);
                    let (dur_at, svc_esc, rem_big) = row_at(i, &mut at);
                    let zone = if zones_zero { 0 } else { zc.uvarint()? };
                    let inside = inside_at(i) as usize;
                    let pred = out_pred.get_mut(inside).ok_or("dictionary index out of range")?;
                    let outside = outside_of(pred, oc.ivarint()?)?;
                    recs.push(record(i, prev, outside, dur_at, svc_esc, rem_big, zone)?);
                }
                recs
            }
            Some(rows) => {
                // Only the rows asked for. The sequential columns are skipped over in bulk between
                // them (see `Cur::skip` and `Cur::sum`), the counters advanced by counting bytes,
                // and the outside prediction followed only along the rows of the inside indices
                // asked for (a row's prediction depends only on earlier rows of its inside index).
                if rows.iter().any(|&r| inside_at(r as usize) as usize >= n_inside) {
                    return Err("dictionary index out of range".into());
                }
                let limit = rows.last().map_or(0, |&x| x as usize + 1);
                let mut wanted: Vec<u32> = rows.iter().map(|&r| inside_at(r as usize)).collect();
                wanted.sort_unstable();
                wanted.dedup();
                let chain: Vec<u32> = match wanted.len() {
                    // A few inside indices (an inside-host query has one, a point query a
                    // handful): compare the planes 64 rows at a time.
                    1..=PLANE_SCAN_MAX if inside_narrow => {
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
                        let mut tracked = vec![0u64; n_inside.div_ceil(64)];
                        for &r in rows {
                            let v = inside_at(r as usize) as usize;
                            tracked[v / 64] |= 1 << (v % 64);
                        }
                        (0..limit)
                            .filter(|&i| {
                                let v = inside_at(i) as usize;
                                v < n_inside && tracked[v / 64] & (1 << (v % 64)) != 0
                            })
                            .map(|i| i as u32)
                            .collect()
                    }
                };
                let mut outs = Vec::with_capacity(rows.len());
                let mut oc = Cur::new(oi);
                let mut at = 0;
                let mut want = rows.iter().copied().peekable();
                // The last outside index of each tracked inside index.
                let mut out_pred: FastMap<u32, u32> = FastMap::default();
                for &i in &chain {
                    oc.skip(i as usize - at)?;
                    at = i as usize + 1;
                    let pred = out_pred.entry(inside_at(i as usize)).or_insert(0);
                    let outside = outside_of(pred, oc.ivarint()?)?;
                    if want.next_if_eq(&i).is_some() {
                        outs.push(outside);
                    }
                }
                if outs.len() != rows.len() {
                    return Err("outside prediction lost a row".into());
                }
                let (mut zc, mut sc) = (Cur::new(zone), Cur::new(start));
                let mut at = At { stream: vec![0; stream_len.len()], esc: 0, big: 0 };
                let mut prev = self.meta.min_start;
                let mut next = 0;
                let mut recs = Vec::with_capacity(rows.len());
                for (&r, outside) in rows.iter().zip(outs) {
                    let i = r as usize;
                    // The rows skipped since the last one asked for.
                    prev = prev.wrapping_add(sc.sum(i + 1 - next)?);
                    stream_counts(next, i, &mut at.stream);
                    at.esc += svc[next..i].iter().filter(|&&c| c == SVC_ESCAPE).count();
                    at.big += ri[next..i].iter().filter(|&&c| u32::from(c) == REM_ESCAPE).count();
                    let zone = if zones_zero {
                        0
                    } else {
                        zc.skip(i - next)?;
                        zc.uvarint()?
                    };
                    next = i + 1;
                    // The row itself.
                    let (dur_at, svc_esc, rem_big) = row_at(i, &mut at);
                    recs.push(record(i, prev, outside, dur_at, svc_esc, rem_big, zone)?);
                }
                recs
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plane_scans_find_exactly_the_rows_of_the_wanted_pairs() {
        // 1 000 rows (not a multiple of 64) of pseudo-random pairs from a small alphabet, so
        // that every wanted pair occurs, also at chunk edges.
        let mut x = 0x2545_f491u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let (lo, hi): (Vec<u8>, Vec<u8>) =
            (0..1000).map(|_| ((next() % 5) as u8, (next() % 3) as u8)).unzip();
        let third: Vec<u8> = (0..1000).map(|_| (next() % 2) as u8).collect();
        let zero = vec![0u8; 1000];
        let mut pairs = vec![[0, 0], [4, 2], [1, 1], [3, 0], [2, 2], [9, 9]];
        // Up to the most values compared at once, and one more (the plain loop).
        pairs.extend((10u8..).take(PLANE_SCAN_MAX - 6).map(|v| [v, v]));
        pairs.push([2, 0]);
        assert_eq!(pairs.len(), PLANE_SCAN_MAX + 1);
        for k in 1..=pairs.len() {
            let want = &pairs[..k];
            let expect: Vec<u32> = (0..lo.len())
                .filter(|&i| want.contains(&[lo[i], hi[i]]))
                .map(|i| i as u32)
                .collect();
            assert!(!expect.is_empty());
            assert_eq!(rows_in_planes([&lo, &hi], want), expect, "{k} pairs");
            // Prefixes end anywhere in a chunk.
            for cut in [0, 1, 63, 64, 65, 999] {
                let e: Vec<u32> = expect.iter().copied().filter(|&i| (i as usize) < cut).collect();
                assert_eq!(
                    rows_in_planes([&lo[..cut], &hi[..cut]], want),
                    e,
                    "{k} pairs, {cut} rows"
                );
            }
            // Four planes: the third byte must match too.
            let want4: Vec<[u8; 4]> = want.iter().map(|&[a, b]| [a, b, 1, 0]).collect();
            let expect4: Vec<u32> =
                expect.iter().copied().filter(|&i| third[i as usize] == 1).collect();
            assert_eq!(rows_in_planes([&lo, &hi, &third, &zero], &want4), expect4, "{k} values");
        }
    }

    /// A small deterministic generator for the tests below.
    struct Xs(u64);
    impl Xs {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn skip_and_sum_agree_with_decoding_one_value_at_a_time() {
        let mut g = Xs(0x9e37_79b9_7f4a_7c15);
        // Runs of one-byte values (the fast path) mixed with longer and negative ones.
        let vals: Vec<i64> = (0..5_000)
            .map(|_| match g.below(10) {
                0 => -(g.below(1 << 40) as i64),
                1 => g.below(1 << 20) as i64,
                _ => g.below(64) as i64 - 32,
            })
            .collect();
        let mut buf = Vec::new();
        for &v in &vals {
            put_uvarint(&mut buf, zigzag(v));
        }
        for _ in 0..300 {
            let a = g.below(vals.len() as u64) as usize;
            let b = a + g.below((vals.len() - a) as u64 + 1) as usize;
            let mut c = Cur::new(&buf);
            c.skip(a).expect("skip");
            let mut one = Cur::new(&buf);
            for _ in 0..a {
                one.ivarint().expect("one");
            }
            assert_eq!(c.pos, one.pos, "skip({a})");
            let sum = c.sum(b - a).expect("sum");
            assert_eq!(
                sum,
                vals[a..b].iter().fold(0i64, |x, &v| x.wrapping_add(v)),
                "sum of {a}..{b}"
            );
            if b < vals.len() {
                assert_eq!(c.ivarint().expect("next"), vals[b]);
            }
        }
        assert!(Cur::new(&buf).skip(vals.len() + 1).is_err());
        assert!(Cur::new(&buf).sum(vals.len() + 1).is_err());
    }

    #[test]
    fn records_at_equals_the_full_decode_for_any_rows() {
        // Over 65 536 inside addresses (indices need the upper byte planes), zones, escaped
        // services and remotes, durations split by service, starts out of order.
        let n_in = 100_000u32;
        let addrs: Vec<IpAddr> =
            (0..n_in + 400).map(|i| IpAddr::from((0x0a00_0000 + i).to_be_bytes())).collect();
        let mut g = Xs(42);
        let recs: Vec<Rec> = (0..90_000u32)
            .map(|i| {
                let svc = g.below(300) as u16;
                Rec {
                    start: i64::from(i) * 3 + g.below(2_000) as i64,
                    end: (g.below(5) != 0)
                        .then(|| i64::from(i) * 3 + 30_000 + i64::from(svc % 7) * 1_000),
                    inside: if i % 4 == 0 { (i / 4) % 50 } else { 50 + i },
                    outside: n_in + g.below(40) as u32,
                    remote: n_in + 40 + g.below(360) as u32,
                    in_port: g.below(65_536) as u16,
                    out_port: g.below(65_536) as u16,
                    rem_port: if svc < 250 { 443 + svc % 9 } else { svc },
                    zone: if g.below(50) == 0 { g.below(300) as u16 } else { 0 },
                    kind: (i % 3) as u8,
                    proto: if svc.is_multiple_of(2) { 6 } else { 17 },
                    flags: (i % 5) as u8,
                    carried: i % 97 == 0,
                }
            })
            .collect();
        let mut payload = Vec::new();
        encode_block(BlockKind::Sealed, 0, 0, &recs, &[], &addrs, 1, &mut payload).expect("encode");
        let v = BlockView::parse(&payload).expect("parse");
        let d = v.dicts().expect("dicts");
        let (all, _) = v.records(&d).expect("all");
        assert_eq!(all.len(), recs.len());
        for (a, r) in all.iter().zip(&recs) {
            assert_eq!(
                (a.start, a.end, a.zone, a.rem_port, a.proto),
                (r.start, r.end, r.zone, r.rem_port, r.proto)
            );
            assert_eq!(
                (d.inside[a.inside as usize], d.outside[a.outside as usize]),
                (addrs[r.inside as usize], addrs[r.outside as usize])
            );
        }
        assert!(d.inside.len() > 65_536, "the test needs wide inside indices");
        assert_eq!(
            v.col_ref(Column::Duration).expect("durations").first(),
            Some(&8),
            "the test needs split duration streams"
        );
        assert!(v.col_ref(Column::Zone).expect("zones").iter().any(|&z| z != 0));
        for trial in 0..40 {
            // One inside index (all of its rows, as an inside-host query asks), or a random set.
            let rows: Vec<u32> = if trial % 2 == 0 {
                let who = all[g.below(all.len() as u64) as usize].inside;
                (0..all.len() as u32).filter(|&i| all[i as usize].inside == who).collect()
            } else {
                let p = 1 + g.below(200);
                (0..all.len() as u32).filter(|_| g.below(1_000) < p).collect()
            };
            let (some, _) = v.records_at(d.lens(), Some(&rows)).expect("some");
            let want: Vec<Rec> = rows.iter().map(|&i| all[i as usize]).collect();
            assert_eq!(some, want, "trial {trial}");
        }
        let (none, _) = v.records_at(d.lens(), Some(&[])).expect("none");
        assert!(none.is_empty());
        assert!(v.records_at(d.lens(), Some(&[5, 3])).is_err(), "rows out of order");
    }

    #[test]
    fn candidates_are_exactly_the_rows_whose_ports_and_addresses_match() {
        // 700 addresses: remote indices above 255 are escaped.
        let addrs: Vec<IpAddr> =
            (0..700u32).map(|i| IpAddr::from([10, 1, (i >> 8) as u8, i as u8])).collect();
        let recs: Vec<Rec> = (0..3000u32)
            .map(|i| Rec {
                start: i64::from(i) * 3,
                end: Some(i64::from(i) * 3 + 100),
                inside: i % 11,
                outside: 11 + i % 3,
                remote: 20 + (i * 7) % 600,
                in_port: 40_000 + (i % 29) as u16,
                out_port: if i % 5 == 0 {
                    1024 + (i % 31) as u16
                } else {
                    40_000 + (i % 29) as u16
                },
                rem_port: 443,
                zone: 0,
                kind: 0,
                proto: 6,
                flags: 0,
                carried: false,
            })
            .collect();
        let mut payload = Vec::new();
        encode_block(BlockKind::Sealed, 0, 0, &recs, &[], &addrs, 1, &mut payload).expect("encode");
        let v = BlockView::parse(&payload).expect("parse");
        let d = v.dicts().expect("dicts");
        let (all, _) = v.records(&d).expect("all");
        assert_eq!(v.candidates(&Select::default()).expect("candidates"), None);
        let pos = |dict: &[IpAddr], id: u32| {
            dict.iter().position(|a| *a == addrs[id as usize]).expect("in dictionary") as u32
        };
        let mut remote_escaped = 0;
        for probe in (0..3000).step_by(97) {
            let r = &recs[probe];
            let (ri, ii, oi) =
                (pos(&d.remote, r.remote), pos(&d.inside, r.inside), pos(&d.outside, r.outside));
            remote_escaped += usize::from(ri >= REM_ESCAPE);
            for sel in [
                Select { outside: Some((oi, Some(r.out_port))), ..Select::default() },
                Select { inside: Some((ii, None)), ..Select::default() },
                Select {
                    inside: Some((ii, Some(r.in_port))),
                    remote: Some((ri, None)),
                    ..Select::default()
                },
                Select {
                    outside: Some((oi, Some(r.out_port))),
                    remote: Some((ri, Some(443))),
                    ..Select::default()
                },
            ] {
                let got = v.candidates(&sel).expect("candidates").expect("testable");
                let want: Vec<u32> = (0..all.len() as u32)
                    .filter(|&i| {
                        let a = &all[i as usize];
                        sel.inside
                            .is_none_or(|(x, p)| a.inside == x && p.is_none_or(|p| p == a.in_port))
                            && sel.outside.is_none_or(|(_, p)| p.is_none_or(|p| p == a.out_port))
                            && sel.remote.is_none_or(|(x, _)| a.remote == x)
                    })
                    .collect();
                assert!(want.contains(&(probe as u32)));
                assert_eq!(got, want, "{sel:?}");
            }
        }
        assert!(remote_escaped > 3, "escaped remote indices were probed {remote_escaped} times");
    }

    #[test]
    fn escaped_services_remotes_and_duration_streams_round_trip() {
        // 600 remotes (indices past the one-byte escape), 400 (protocol, port) pairs (past the
        // 255-entry service table), DNS-like durations that make the writer split streams.
        // Every seventh address IPv6: dictionaries mix both families.
        let addrs: Vec<IpAddr> = (0..1000u32)
            .map(|i| match i % 7 {
                0 => IpAddr::from(
                    (0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + u128::from(i)).to_be_bytes(),
                ),
                _ => IpAddr::from((0x0a00_0000 + i).to_be_bytes()),
            })
            .collect();
        let mut x = 12345u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let recs: Vec<Rec> = (0..20_000i64)
            .map(|i| {
                let r = rnd();
                let dns = r % 3 == 0;
                let start = i * 3;
                Rec {
                    start,
                    end: (r % 7 != 0).then(|| {
                        start
                            + if dns {
                                30_000 + (r >> 8) as i64 % 40
                            } else {
                                (r >> 8) as i64 % 500_000
                            }
                    }),
                    inside: (r >> 20) as u32 % 300,
                    outside: 300 + (r >> 30) as u32 % 4,
                    remote: 400 + (r >> 34) as u32 % 600,
                    in_port: (r >> 40) as u16,
                    out_port: (r >> 44) as u16,
                    rem_port: if dns { 53 } else { (r >> 50) as u16 % 400 },
                    zone: 0,
                    kind: 0,
                    proto: if dns { 17 } else { 6 + (r >> 60) as u8 % 2 },
                    flags: 0,
                    carried: false,
                }
            })
            .collect();
        let mut payload = Vec::new();
        encode_block(BlockKind::Sealed, 0, 0, &recs, &[], &addrs, 3, &mut payload).expect("encode");
        let v = BlockView::parse(&payload).expect("parse");
        assert_eq!(
            v.col(Column::Duration).expect("durations")[0],
            DUR_SPLIT,
            "DNS-like durations are split"
        );
        let d = v.dicts().expect("dicts");
        let (got, _) = v.records(&d).expect("records");
        let back: Vec<Rec> = got
            .iter()
            .map(|r| Rec {
                inside: addrs
                    .iter()
                    .position(|a| *a == d.inside[r.inside as usize])
                    .expect("inside") as u32,
                outside: addrs
                    .iter()
                    .position(|a| *a == d.outside[r.outside as usize])
                    .expect("outside") as u32,
                remote: addrs
                    .iter()
                    .position(|a| *a == d.remote[r.remote as usize])
                    .expect("remote") as u32,
                ..*r
            })
            .collect();
        assert_eq!(back, recs);
        let few: Vec<Rec> = recs.iter().filter(|r| r.in_port % 5 == 0).copied().collect();
        let rows: Vec<u32> = (0..recs.len() as u32)
            .filter(|&i| recs[i as usize].in_port.is_multiple_of(5))
            .collect();
        let (some, _) = v.records_at(d.lens(), Some(&rows)).expect("some");
        assert_eq!(some.len(), few.len());
        assert!(
            some.iter()
                .zip(&few)
                .all(|(a, b)| a.end == b.end && a.rem_port == b.rem_port && a.proto == b.proto)
        );
        // A service code past the table is refused.
        let mut bad = payload.clone();
        let v = BlockView::parse(&payload).expect("parse");
        let (_, _, col12) = v.cols[Column::ServiceCode as usize];
        assert_eq!(v.cols[Column::ServiceCode as usize].0, 1, "service codes are compressed");
        let at = col12.as_ptr() as usize - payload.as_ptr() as usize;
        bad[at..at + col12.len()].fill(0);
        assert!(BlockView::parse(&bad).and_then(|v| v.records(&d)).is_err());
    }

    #[test]
    fn varints_round_trip() {
        let mut b = Vec::new();
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            put_uvarint(&mut b, v);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            put_uvarint(&mut b, zigzag(v));
        }
        let mut c = Cur::new(&b);
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            assert_eq!(c.uvarint().expect("varint"), v);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(c.ivarint().expect("varint"), v);
        }
        assert!(c.u8().is_err());
    }
}
