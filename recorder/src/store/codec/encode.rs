//! Encoding a block: the columns of its records and end references, each compressed when that
//! is smaller, behind the header and the columns' codecs and lengths.

use std::net::IpAddr;

use super::format::{
    BlockKind, BlockMeta, Column, N_COLS, REM_ESCAPE, SVC_ESCAPE, put_uvarint, zigzag,
};
use super::records::{EndRef, FastMap, Rec};

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

/// Duration streams split off when splitting pays (see [`dur_split`]).
pub(super) const DUR_SPLIT: u8 = 8;

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

/// Appends `vals` as two byte planes, low bytes first.
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
