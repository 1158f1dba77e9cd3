//! Entry points of the fuzz targets in `fuzz/` (the `fuzzing` feature): one function per
//! decoder of bytes that natrec reads from outside — segment files, ctnetlink messages, the
//! lines of imported logs. Each runs its decoder on arbitrary input and discards the result: an
//! error is an answer, a panic (an index out of bounds, an arithmetic overflow, a failed check
//! below) is a bug. Where two decoders must agree on the same bytes, they are checked against
//! each other.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;

use crate::conntrack::parse::{
    CtMsgKind, NLMSG_DONE, NLMSG_ERROR, NlMsgs, parse_ct_msg, payload_errno,
};
use crate::import::{Format, Importer};
use crate::store::bloom::Shared;
use crate::store::codec::{BlockView, Dict, Dicts, EndRef, Rec, Select};
use crate::store::segment::{self, FRAME_HEADER, HEADER_LEN, Header, Seal, T_BLOCK, T_INDEX};

/// ctnetlink messages built as the kernel lays them out, and the constants to build them, for
/// seed corpora.
pub mod ctnetlink {
    pub use crate::conntrack::craft::{Builder, netlink, ports};
    pub use crate::conntrack::parse::{
        CTA_ID, CTA_MARK, CTA_PROTO_ICMP_CODE, CTA_PROTO_ICMP_ID, CTA_PROTO_ICMP_TYPE, CTA_STATUS,
        CTA_TIMEOUT, CTA_TIMESTAMP, CTA_TIMESTAMP_START, CTA_TIMESTAMP_STOP, CTA_TUPLE_ORIG,
        CTA_TUPLE_REPLY, CTA_ZONE, IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_NEW,
        NFNL_SUBSYS_CTNETLINK, NLM_F_MULTI, NLMSG_DONE, NLMSG_ERROR,
    };
}

/// The length of a segment's header.
pub const SEGMENT_HEADER_LEN: usize = HEADER_LEN;

/// The frames of a segment's bytes, as the reader walks them: each frame's kind (`"block"`,
/// `"index"` or `"seal"`) and payload. For building seed corpora from real segments.
pub fn frames(data: &[u8]) -> Vec<(&'static str, &[u8])> {
    segment::walk(data)
        .frames
        .iter()
        .map(|f| {
            let kind = match f.ty {
                T_BLOCK => "block",
                T_INDEX => "index",
                // A walk finds frames of these three kinds only.
                _ => "seal",
            };
            (kind, f.payload(data))
        })
        .collect()
}

/// The input as a segment header and as a seal payload; whatever decodes encodes to bytes that
/// decode to the same value.
pub fn segment_header(data: &[u8]) {
    if let Ok(h) = Header::decode(data) {
        assert_eq!(Header::decode(&h.encode()), Ok(h));
    }
    if let Ok(s) = Seal::decode(data) {
        assert_eq!(Seal::decode(&s.encode()), Ok(s));
    }
}

/// The input as a segment's bytes in memory: the frame walk with its resynchronisation after
/// damage, the metadata a reader takes from it (sealed and open), and every block and index
/// frame decoded. Then the same with the checksums recomputed ([`with_checksums`]), so that
/// changed payloads reach the decoders behind the checksums.
pub fn segment_frames(data: &[u8]) {
    walk_and_decode(data);
    let fixed = with_checksums(data);
    if fixed != data {
        walk_and_decode(&fixed);
    }
}

fn walk_and_decode(data: &[u8]) {
    let w = segment::walk(data);
    let mut end = HEADER_LEN;
    for f in &w.frames {
        assert!(f.offset >= end && f.end() <= data.len(), "frames overlap or run past the end");
        end = f.end();
        match f.ty {
            T_BLOCK => block(f.payload(data)),
            T_INDEX => segment_index(f.payload(data)),
            _ => {}
        }
    }
    assert!(w.clean_end <= data.len());
    for sealed in [false, true] {
        segment::meta_from_bytes(Path::new("fuzz.seg"), data, sealed);
    }
}

/// `data` with the header's checksum and those of the frames from the header on recomputed,
/// up to the first bytes that are not a frame header of a known type with a length that fits.
fn with_checksums(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    if out.len() < HEADER_LEN {
        return out;
    }
    let crc = crc32fast::hash(&out[0..64]);
    out[64..68].copy_from_slice(&crc.to_le_bytes());
    let mut off = HEADER_LEN;
    while let Some(h) = out.get(off..off + FRAME_HEADER) {
        let ty = h[0];
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
        let Some(payload) = out.get(off + FRAME_HEADER..off + FRAME_HEADER + len) else { break };
        if !(T_BLOCK..=T_INDEX).contains(&ty) || h[1..4] != [0, 0, 0] {
            break;
        }
        let mut hs = crc32fast::Hasher::new();
        hs.update(&[ty]);
        hs.update(&h[4..8]);
        hs.update(payload);
        let crc = hs.finalize();
        out[off + 8..off + 12].copy_from_slice(&crc.to_le_bytes());
        off += FRAME_HEADER + len;
    }
    out
}

/// The input, its checksums recomputed ([`with_checksums`]), as a segment file: the metadata of
/// a sealed `.seg` (from its seal and index when they hold, else by walking its frames), and
/// the writer's recovery of an `.open` file (every block of the good prefix decoded and
/// merged). The file is written under the temporary directory and removed after.
pub fn segment_file(data: &[u8]) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let data = with_checksums(data);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let base = std::env::temp_dir().join(format!("natrec-fuzz-{}-{n}", std::process::id()));
    for ext in ["seg", "open"] {
        let path = base.with_extension(ext);
        fs::write(&path, &data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        if ext == "seg" {
            let _ = segment::load_meta(&path);
        } else {
            let _ = segment::recover_open(&path);
        }
        fs::remove_file(&path).unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
    }
}

/// The input as a segment index payload, and every endpoint filter it holds asked for an
/// endpoint (the port bitmaps read, stored ones decompressed).
pub fn segment_index(data: &[u8]) {
    let Ok(blocks) = segment::decode_index(&Shared::new(Arc::new(data.to_vec()))) else {
        return;
    };
    let probes = [
        SocketAddr::from(([100, 64, 0, 1], 40000)),
        SocketAddr::from(([0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1], 443)),
    ];
    for f in blocks.iter().filter_map(|b| b.filter.as_ref()) {
        for ep in probes {
            f.may_hold_outside(ep);
        }
        // Comparing reads every port bitmap of both sides; a clone has its own decompressed
        // copies.
        let _ = *f == f.clone();
    }
}

/// The input as a block payload: its header, the dictionaries (read in place and decoded, which
/// must agree), the end references, every record, and the rows a query selects. When every
/// record decodes, decoding only some rows must give the same records, and the candidates of a
/// selection must include every record that matches it.
pub fn block(data: &[u8]) {
    let Ok(v) = BlockView::parse(data) else { return };
    let _ = v.end_refs();
    let views = Dict::ALL.map(|d| v.dict_view(d));
    let Ok(dicts) = v.dicts() else {
        for d in views.iter().flatten() {
            d.get(0);
            d.position(IpAddr::from([100, 64, 0, 1]));
        }
        return;
    };
    for (view, dict) in views.iter().zip([&dicts.inside, &dicts.outside, &dicts.remote]) {
        let view = view.as_ref().expect("a dictionary that decodes reads in place");
        assert_eq!(view.len(), dict.len());
        for (i, ip) in dict.iter().enumerate() {
            assert_eq!(view.get(i as u32), Some(*ip));
        }
        assert_eq!(view.get(dict.len() as u32), None);
        if let Some(ip) = dict.first() {
            assert_eq!(view.position(*ip), Some(0));
        }
    }
    let Ok((recs, refs)) = v.records(&dicts) else {
        // A selection over whatever the columns hold.
        if let Ok(Some(rows)) = v.candidates(&select(None)) {
            let _ = v.records_at(dicts.lens(), Some(&rows));
        }
        return;
    };
    let sel = select(recs.first());
    let rows = v
        .candidates(&sel)
        .expect("the columns of a block whose records decode answer a selection")
        .expect("a selection that names ports and addresses narrows the rows");
    assert!(rows.windows(2).all(|w| w[0] < w[1]), "candidates out of order");
    for (i, r) in recs.iter().enumerate() {
        if matches(&sel, r) {
            assert!(
                rows.binary_search(&(i as u32)).is_ok(),
                "record {i} matches but is no candidate"
            );
        }
    }
    let every_other: Vec<u32> = (0..recs.len() as u32).step_by(2).collect();
    for rows in [rows, every_other] {
        same_rows(&v, &dicts, &rows, &recs, &refs);
    }
}

/// A selection of the endpoints of `r` (or of index 0 and port 0 without one).
fn select(r: Option<&Rec>) -> Select {
    let (inside, outside, remote, in_port, out_port) =
        r.map_or((0, 0, 0, 0, 0), |r| (r.inside, r.outside, r.remote, r.in_port, r.out_port));
    Select {
        inside: Some((inside, Some(in_port))),
        outside: Some((outside, Some(out_port))),
        remote: Some((remote, None)),
    }
}

fn matches(sel: &Select, r: &Rec) -> bool {
    let ok = |s: Option<(u32, Option<u16>)>, ip: u32, port: u16| {
        s.is_none_or(|(i, p)| i == ip && p.is_none_or(|p| p == port))
    };
    ok(sel.inside, r.inside, r.in_port)
        && ok(sel.outside, r.outside, r.out_port)
        && ok(sel.remote, r.remote, r.rem_port)
}

/// Decoding `rows` alone gives the records at those rows of a full decode, and the same end
/// references.
fn same_rows(v: &BlockView<'_>, dicts: &Dicts, rows: &[u32], recs: &[Rec], refs: &[EndRef]) {
    let (some, some_refs) = v
        .records_at(dicts.lens(), Some(rows))
        .expect("rows of a block whose records decode decode alone");
    let want: Vec<Rec> = rows.iter().map(|&i| recs[i as usize]).collect();
    assert_eq!(some, want, "rows {rows:?} decoded alone differ");
    assert_eq!(some_refs, refs);
}

/// The input as one ctnetlink datagram, read as the event and dump sockets read theirs (each
/// conntrack message parsed and made a translation), then its first two bytes as a message type
/// and the rest as that message's payload.
pub fn ctnetlink(data: &[u8]) {
    for msg in NlMsgs::new(data) {
        let Ok(msg) = msg else { break };
        match msg.ty {
            NLMSG_ERROR | NLMSG_DONE => {
                let _ = payload_errno(msg.payload);
            }
            ty => ct_msg(ty, msg.payload),
        }
    }
    if let [a, b, payload @ ..] = data {
        ct_msg(u16::from_ne_bytes([*a, *b]), payload);
    }
}

fn ct_msg(ty: u16, payload: &[u8]) {
    if let Ok(Some((kind, e))) = parse_ct_msg(ty, payload) {
        e.translation(Timestamp::UNIX_EPOCH, kind == CtMsgKind::Delete);
    }
}

/// The input as lines of a log to import, given to an importer of each format (which parses
/// each line with its format's parser, `parse_jsonl_line`, `parse_conntrack_line` or
/// `parse_ulogd_line`, and pairs starts with ends). Lines that are not UTF-8 are reported as
/// such, as `natrec import` does.
pub fn import_lines(data: &[u8]) {
    let mut importers = [Format::Jsonl, Format::Conntrack, Format::UlogdJson].map(Importer::new);
    let mut out = Vec::new();
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        let line_no = i as u64 + 1;
        for imp in &mut importers {
            match std::str::from_utf8(line) {
                Ok(text) => imp.line(line_no, text, &mut out),
                Err(_) => imp.invalid_utf8(line_no),
            }
        }
        out.clear();
    }
    for imp in importers {
        imp.finish();
    }
}
