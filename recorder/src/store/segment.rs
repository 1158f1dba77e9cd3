//! The segment file format: header, frames, seal, index; reading a segment's metadata and
//! blocks; recovering an `.open` file. Sealing is in `seal.rs`, the directory in `dir.rs`.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::bloom::{BlockFilter, Shared};
use super::codec::{self, BlockView, CLASS_CARRIED, Cur, EndRef, Interner, Rec, put_uvarint};
use super::{Resolution, StoreError};

pub(crate) const MAGIC: &[u8; 8] = b"NATRSEG1";
/// Version 2: service table and duration streams in blocks, port bitmaps in endpoint filters.
pub(crate) const VERSION: u16 = 2;
pub(crate) const HEADER_LEN: usize = 72;
pub(crate) const FRAME_HEADER: usize = 12;
pub(crate) const SEAL_PAYLOAD: usize = 120;
pub(crate) const SEAL_FRAME: usize = FRAME_HEADER + SEAL_PAYLOAD;
pub(crate) const T_BLOCK: u8 = 1;
pub(crate) const T_SEAL: u8 = 2;
pub(crate) const T_INDEX: u8 = 3;
/// Largest frame payload accepted when reading.
const MAX_FRAME: usize = 1 << 30;
/// Upper duration limits (seconds) of the duration classes of sealed blocks; the last class
/// holds longer and open records. A point query reads, per class, the blocks whose starts lie
/// within one class limit before its instant: limits close above the durations conntrack's
/// timeouts make common (about 30 s for unreplied UDP and DNS, 120 s plus activity for closed
/// TCP and UDP streams) keep that span short for most records.
pub(crate) const CLASS_LIMITS_S: [i64; 3] = [45, 150, 600];
/// Number of duration classes.
pub(crate) const N_CLASSES: usize = CLASS_LIMITS_S.len() + 1;
const _: () =
    assert!(CLASS_CARRIED as usize == N_CLASSES, "carried groups follow the duration classes");

/// The fixed header of a segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub resolution: Resolution,
    pub seq: u64,
    pub created_ns: i64,
    pub prev_chain: [u8; 32],
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..10].copy_from_slice(&VERSION.to_le_bytes());
        b[10] = self.resolution.code();
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.created_ns.to_le_bytes());
        b[32..64].copy_from_slice(&self.prev_chain);
        let crc = crc32fast::hash(&b[0..64]);
        b[64..68].copy_from_slice(&crc.to_le_bytes());
        b
    }
    pub fn decode(b: &[u8]) -> Result<Header, String> {
        if b.len() < HEADER_LEN {
            return Err("shorter than a segment header".into());
        }
        if &b[0..8] != MAGIC {
            return Err("not a natrec segment (bad magic)".into());
        }
        if crc32fast::hash(&b[0..64]).to_le_bytes() != b[64..68] {
            return Err("header checksum mismatch".into());
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != VERSION {
            return Err(format!(
                "segment format version {version}, this natrec reads version {VERSION} only"
            ));
        }
        let resolution = Resolution::from_code(b[10]).ok_or("unknown time resolution")?;
        let mut prev_chain = [0u8; 32];
        prev_chain.copy_from_slice(&b[32..64]);
        Ok(Header {
            resolution,
            seq: u64::from_le_bytes(b[16..24].try_into().map_err(|_| "header")?),
            created_ns: i64::from_le_bytes(b[24..32].try_into().map_err(|_| "header")?),
            prev_chain,
        })
    }
}

/// The seal: the last frame of a sealed segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seal {
    pub seq: u64,
    pub blocks: u32,
    pub records: u64,
    pub new_records: u64,
    pub min_time: i64,
    pub max_time: i64,
    pub index_offset: u64,
    pub content_sha: [u8; 32],
    pub chain: [u8; 32],
    pub resolution: Resolution,
}

impl Seal {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(SEAL_PAYLOAD);
        b.extend_from_slice(&self.seq.to_le_bytes());
        b.extend_from_slice(&self.blocks.to_le_bytes());
        b.extend_from_slice(&self.records.to_le_bytes());
        b.extend_from_slice(&self.new_records.to_le_bytes());
        b.extend_from_slice(&self.min_time.to_le_bytes());
        b.extend_from_slice(&self.max_time.to_le_bytes());
        b.extend_from_slice(&self.index_offset.to_le_bytes());
        b.extend_from_slice(&self.content_sha);
        b.extend_from_slice(&self.chain);
        b.extend_from_slice(&[self.resolution.code(), 0, 0, 0]);
        b
    }
    pub fn decode(p: &[u8]) -> Result<Seal, String> {
        if p.len() != SEAL_PAYLOAD {
            return Err("seal has the wrong length".into());
        }
        let u64_at = |o: usize| u64::from_le_bytes(p[o..o + 8].try_into().unwrap_or([0; 8]));
        let mut content_sha = [0u8; 32];
        content_sha.copy_from_slice(&p[52..84]);
        let mut chain = [0u8; 32];
        chain.copy_from_slice(&p[84..116]);
        Ok(Seal {
            seq: u64_at(0),
            blocks: u32::from_le_bytes(p[8..12].try_into().unwrap_or([0; 4])),
            records: u64_at(12),
            new_records: u64_at(20),
            min_time: u64_at(28) as i64,
            max_time: u64_at(36) as i64,
            index_offset: u64_at(44),
            content_sha,
            chain,
            resolution: Resolution::from_code(p[116]).ok_or("unknown time resolution")?,
        })
    }
}

/// `chain = SHA-256(prev_chain ‖ content_sha ‖ seq)`.
pub(crate) fn chain_hash(prev: &[u8; 32], content_sha: &[u8; 32], seq: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(content_sha);
    h.update(seq.to_le_bytes());
    h.finalize().into()
}

pub(crate) fn frame_bytes(out: &mut Vec<u8>, ty: u8, payload: &[u8]) {
    let len = payload.len() as u32;
    let mut h = crc32fast::Hasher::new();
    h.update(&[ty]);
    h.update(&len.to_le_bytes());
    h.update(payload);
    out.extend_from_slice(&[ty, 0, 0, 0]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

/// A frame found in a file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameRef {
    pub ty: u8,
    pub offset: usize,
    pub len: usize,
}

impl FrameRef {
    /// Where the payload is in the file's bytes.
    pub fn payload_range(&self) -> std::ops::Range<usize> {
        self.offset + FRAME_HEADER..self.end()
    }
    pub fn payload<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        &data[self.payload_range()]
    }
    pub fn end(&self) -> usize {
        self.offset + FRAME_HEADER + self.len
    }
}

/// Checks the frame at `off`: `Ok(frame)`, or why not.
pub(crate) fn frame_at(data: &[u8], off: usize) -> Result<FrameRef, String> {
    let h = data.get(off..off + FRAME_HEADER).ok_or("truncated frame header")?;
    let ty = h[0];
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    let crc = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if !(T_BLOCK..=T_INDEX).contains(&ty) || h[1..4] != [0, 0, 0] {
        return Err(format!("bad frame header at byte {off}"));
    }
    if len > MAX_FRAME {
        return Err(format!("frame at byte {off} claims {len} bytes"));
    }
    let payload = data
        .get(off + FRAME_HEADER..off + FRAME_HEADER + len)
        .ok_or_else(|| format!("frame at byte {off} truncated"))?;
    let mut hs = crc32fast::Hasher::new();
    hs.update(&[ty]);
    hs.update(&(len as u32).to_le_bytes());
    hs.update(payload);
    if hs.finalize() != crc {
        return Err(format!("frame at byte {off}: checksum mismatch"));
    }
    Ok(FrameRef { ty, offset: off, len })
}

/// The result of walking a file's frames.
pub(crate) struct Walk {
    pub frames: Vec<FrameRef>,
    /// Damaged regions: byte offset and reason.
    pub damage: Vec<(usize, String)>,
    /// End of the last good frame before the first damage (the recovery cut point).
    pub clean_end: usize,
}

/// Walks frames from the header on; after damage, resynchronizes on the next frame whose
/// checksum holds.
pub(crate) fn walk(data: &[u8]) -> Walk {
    let mut w =
        Walk { frames: Vec::new(), damage: Vec::new(), clean_end: HEADER_LEN.min(data.len()) };
    let mut off = HEADER_LEN;
    while off < data.len() {
        match frame_at(data, off) {
            Ok(f) => {
                if w.damage.is_empty() {
                    w.clean_end = f.end();
                }
                off = f.end();
                w.frames.push(f);
            }
            Err(reason) => {
                w.damage.push((off, reason));
                // Try the declared length first, then every later byte.
                let mut next = None;
                if let Some(h) = data.get(off + 4..off + 8) {
                    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
                    let cand = off + FRAME_HEADER + len;
                    if len <= MAX_FRAME && frame_at(data, cand).is_ok() {
                        next = Some(cand);
                    }
                }
                if next.is_none() {
                    next = (off + 1..data.len().saturating_sub(FRAME_HEADER - 1)).find(|&p| {
                        data[p] <= T_INDEX && data[p] >= T_BLOCK && frame_at(data, p).is_ok()
                    });
                }
                match next {
                    Some(n) => off = n,
                    None => break,
                }
            }
        }
    }
    w
}

/// One block of a segment, as the index lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BlockEntry {
    pub offset: u64,
    /// Frame length including its header.
    pub len: u64,
    pub meta: codec::BlockMeta,
    /// The block's endpoint filter, when the index carries one (`None`: the block may hold
    /// any endpoint).
    pub filter: Option<BlockFilter>,
}

/// The tag of the index extension that carries per-block endpoint filters: an outside-pair
/// filter per block. (Tag 1, a layout that also had inside-address filters, was written only
/// during development; such an index is invalid here and is rebuilt by walking the frames.)
const INDEX_EXT_FILTERS: u8 = 2;

/// The index payload: the block entries, then (when any block has a filter) the filter
/// extension: `u8 2`, then one [`BlockFilter::encode`] per block. An index without the
/// extension (written before it existed) still decodes, with no filters.
pub(crate) fn encode_index(blocks: &[BlockEntry]) -> Vec<u8> {
    let mut b = Vec::with_capacity(blocks.len() * 32 + 4);
    put_uvarint(&mut b, blocks.len() as u64);
    let zz = |v: i64| ((v << 1) ^ (v >> 63)) as u64;
    for e in blocks {
        put_uvarint(&mut b, e.offset);
        put_uvarint(&mut b, e.len);
        b.push(e.meta.kind.code());
        b.push(e.meta.class);
        put_uvarint(&mut b, e.meta.n_full);
        put_uvarint(&mut b, e.meta.n_ref);
        put_uvarint(&mut b, e.meta.first_ordinal);
        put_uvarint(&mut b, zz(e.meta.min_start));
        put_uvarint(&mut b, zz(e.meta.max_start));
        put_uvarint(&mut b, zz(e.meta.max_end));
    }
    if blocks.iter().any(|e| e.filter.is_some()) {
        b.push(INDEX_EXT_FILTERS);
        for e in blocks {
            BlockFilter::encode(e.filter.as_ref(), &mut b);
        }
    }
    b
}

/// Reads an index payload (all of `src`); the block filters refer to `src`'s bytes.
pub(crate) fn decode_index(src: &Shared) -> Result<Vec<BlockEntry>, String> {
    let mut c = Cur::new(src.bytes());
    let n = c.uvarint()?;
    let mut out = Vec::new();
    for _ in 0..n {
        let offset = c.uvarint()?;
        let len = c.uvarint()?;
        let kind = codec::BlockKind::from_code(c.u8()?)?;
        let class = c.u8()?;
        let n_full = c.uvarint()?;
        let n_ref = c.uvarint()?;
        let first_ordinal = c.uvarint()?;
        let min_start = c.ivarint()?;
        let max_start = c.ivarint()?;
        let max_end = c.ivarint()?;
        out.push(BlockEntry {
            offset,
            len,
            meta: codec::BlockMeta {
                kind,
                class,
                n_full,
                n_ref,
                first_ordinal,
                min_start,
                max_start,
                max_end,
            },
            filter: None,
        });
    }
    if !c.rest().is_empty() {
        match c.u8()? {
            INDEX_EXT_FILTERS => {
                for e in &mut out {
                    e.filter = BlockFilter::decode(&mut c, src)?;
                }
            }
            t => return Err(format!("unknown index extension {t}")),
        }
    }
    if !c.rest().is_empty() {
        return Err("trailing bytes in index".into());
    }
    Ok(out)
}

/// What is known about one segment file without reading its blocks.
#[derive(Clone, Debug)]
pub(crate) struct SegMeta {
    pub path: PathBuf,
    pub sealed: bool,
    pub header: Option<Header>,
    pub seal: Option<Seal>,
    pub resolution: Resolution,
    pub blocks: Vec<BlockEntry>,
    /// Damage found while loading: block number (if known) and reason.
    pub damage: Vec<(Option<u64>, String)>,
    pub bytes: u64,
}

/// Loads a segment's metadata: from the seal and index of a sealed file when they hold,
/// otherwise by walking every frame (the index is a cache).
pub(crate) fn load_meta(path: &Path) -> Result<SegMeta, StoreError> {
    let sealed = path.extension().is_some_and(|e| e == "seg");
    let file = File::open(path).map_err(|e| StoreError::io("opening", path, e))?;
    let bytes = file.metadata().map_err(|e| StoreError::io("reading metadata of", path, e))?.len();
    if sealed
        && bytes as usize >= HEADER_LEN + SEAL_FRAME
        && let Ok(m) = load_fast(&file, path, bytes)
    {
        return Ok(m);
    }
    let data = fs::read(path).map_err(|e| StoreError::io("reading", path, e))?;
    Ok(meta_from_bytes(path, &data, sealed))
}

fn load_fast(file: &File, path: &Path, bytes: u64) -> Result<SegMeta, String> {
    let mut head = [0u8; HEADER_LEN];
    file.read_exact_at(&mut head, 0).map_err(|e| e.to_string())?;
    let header = Header::decode(&head)?;
    let mut tail = vec![0u8; SEAL_FRAME];
    let seal_off = bytes - SEAL_FRAME as u64;
    file.read_exact_at(&mut tail, seal_off).map_err(|e| e.to_string())?;
    let f = frame_at(&tail, 0)?;
    if f.ty != T_SEAL {
        return Err("no seal".into());
    }
    let seal = Seal::decode(f.payload(&tail))?;
    if seal.index_offset >= seal_off || seal.index_offset < HEADER_LEN as u64 {
        return Err("index offset out of range".into());
    }
    let mut idx = vec![0u8; (seal_off - seal.index_offset) as usize];
    file.read_exact_at(&mut idx, seal.index_offset).map_err(|e| e.to_string())?;
    let f = frame_at(&idx, 0)?;
    if f.ty != T_INDEX || f.end() != idx.len() {
        return Err("no index".into());
    }
    let payload = f.payload_range();
    let blocks = decode_index(&Shared::new(Arc::new(idx)).slice(payload.start, payload.end))?;
    if blocks.len() != seal.blocks as usize
        || blocks
            .iter()
            .any(|b| b.offset.checked_add(b.len).is_none_or(|end| end > seal.index_offset))
    {
        return Err("index disagrees with the seal".into());
    }
    Ok(SegMeta {
        path: path.to_owned(),
        sealed: true,
        header: Some(header),
        resolution: header.resolution,
        seal: Some(seal),
        blocks,
        damage: Vec::new(),
        bytes,
    })
}

/// Metadata by walking every frame of `data`.
pub(crate) fn meta_from_bytes(path: &Path, data: &[u8], sealed: bool) -> SegMeta {
    let mut damage = Vec::new();
    let header = match Header::decode(data) {
        Ok(h) => Some(h),
        Err(e) => {
            damage.push((None, e));
            None
        }
    };
    let w = walk(data);
    let mut seal = None;
    let mut blocks = Vec::new();
    // Block numbers of damaged regions: the number the next good block would have.
    let mut dmg = w.damage.iter().peekable();
    for f in &w.frames {
        while let Some((off, reason)) = dmg.next_if(|(o, _)| *o < f.offset) {
            damage.push((Some(blocks.len() as u64), format!("{reason} (byte {off})")));
        }
        match f.ty {
            T_BLOCK => match BlockView::parse(f.payload(data)) {
                Ok(v) => blocks.push(BlockEntry {
                    offset: f.offset as u64,
                    len: (f.len + FRAME_HEADER) as u64,
                    meta: v.meta,
                    filter: None,
                }),
                Err(e) => damage.push((Some(blocks.len() as u64), e)),
            },
            T_SEAL => match Seal::decode(f.payload(data)) {
                Ok(s) => seal = Some(s),
                Err(e) => damage.push((None, format!("seal: {e}"))),
            },
            _ => {}
        }
    }
    for (off, reason) in dmg {
        if sealed || off < &w.clean_end {
            damage.push((Some(blocks.len() as u64), format!("{reason} (byte {off})")));
        } else if !sealed {
            damage.push((None, format!("torn tail at byte {off}: {reason}")));
        }
    }
    if sealed && seal.is_none() {
        damage.push((None, "no valid seal".into()));
    }
    let resolution =
        header.map(|h| h.resolution).or(seal.map(|s| s.resolution)).unwrap_or_default();
    SegMeta {
        path: path.to_owned(),
        sealed,
        header,
        seal,
        resolution,
        blocks,
        damage,
        bytes: data.len() as u64,
    }
}

/// Reads one block frame of a segment into `buf` (reused from call to call) and returns its
/// payload, once the frame's type, length and checksum are checked.
pub(crate) fn read_block<'b>(
    file: &File,
    path: &Path,
    e: &BlockEntry,
    buf: &'b mut Vec<u8>,
) -> Result<&'b [u8], String> {
    let len = usize::try_from(e.len).map_err(|_| "block too large")?;
    if len > MAX_FRAME + FRAME_HEADER {
        return Err("block too large".into());
    }
    // The buffer is reused from block to block: it only grows.
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let buf = &mut buf[..len];
    file.read_exact_at(buf, e.offset)
        .map_err(|err| format!("reading {}: {err}", path.display()))?;
    let f = frame_at(buf, 0)?;
    if f.ty != T_BLOCK || f.end() != len {
        return Err("not a block frame".into());
    }
    Ok(&buf[FRAME_HEADER..])
}

/// The records of an `.open` file's good prefix, merged (end references applied).
pub(crate) struct Recovered {
    pub header: Header,
    pub recs: Vec<Rec>,
    pub addrs: Interner,
    /// End of the good prefix.
    pub clean_end: usize,
    /// Frames beyond the good prefix (torn or damaged) were dropped.
    pub dropped_bytes: usize,
    /// Blocks that could not be decoded (skipped).
    pub bad_blocks: Vec<String>,
}

/// Reads an `.open` segment: every block up to the first damage, merged.
pub(crate) fn recover_open(path: &Path) -> Result<Recovered, StoreError> {
    let data = fs::read(path).map_err(|e| StoreError::io("reading", path, e))?;
    let header = Header::decode(&data).map_err(|e| StoreError::corrupt(path, e))?;
    let w = walk(&data);
    let mut addrs = Interner::default();
    let mut recs: Vec<Rec> = Vec::new();
    let mut bad_blocks = Vec::new();
    for f in w.frames.iter().filter(|f| f.end() <= w.clean_end && f.ty == T_BLOCK) {
        let res = (|| {
            let v = BlockView::parse(f.payload(&data))?;
            let d = v.dicts()?;
            let (rs, refs) = v.records(&d)?;
            if v.meta.first_ordinal != recs.len() as u64 {
                return Err(format!(
                    "block starts at ordinal {}, expected {}",
                    v.meta.first_ordinal,
                    recs.len()
                ));
            }
            Ok::<_, String>((d, rs, refs))
        })();
        match res {
            Ok((d, rs, refs)) => {
                // Dictionary entries to interner ids once per block, not once per record.
                let mut ids = |dict: &[std::net::IpAddr]| {
                    dict.iter().map(|a| addrs.id(*a)).collect::<Vec<u32>>()
                };
                let (ins, outs, rems) = (ids(&d.inside), ids(&d.outside), ids(&d.remote));
                recs.reserve(rs.len());
                for mut r in rs {
                    r.inside = ins[r.inside as usize];
                    r.outside = outs[r.outside as usize];
                    r.remote = rems[r.remote as usize];
                    recs.push(r);
                }
                apply_refs(&mut recs, &refs);
            }
            Err(e) => {
                // An undecodable block with a valid checksum: the prefix ends here.
                bad_blocks.push(format!("block at byte {}: {e}", f.offset));
                break;
            }
        }
    }
    Ok(Recovered {
        header,
        recs,
        addrs,
        clean_end: w.clean_end,
        dropped_bytes: data.len() - w.clean_end,
        bad_blocks,
    })
}

pub(crate) fn apply_refs(recs: &mut [Rec], refs: &[EndRef]) {
    for r in refs {
        if let Some(rec) = recs.get_mut(r.ordinal as usize) {
            rec.end = Some(r.end);
            rec.flags |= r.flags;
        }
    }
}

/// Rewrites the sealed segment at `path` as a writer without endpoint filters made it: the
/// same blocks, an index without the filter extension, a seal with the content hash and chain
/// of those bytes.
#[cfg(test)]
pub(crate) fn strip_filters(path: &Path) -> Result<(), String> {
    let data = fs::read(path).map_err(|e| e.to_string())?;
    let header = Header::decode(&data)?;
    let seal_off = data.len() - SEAL_FRAME;
    let seal = Seal::decode(frame_at(&data, seal_off)?.payload(&data))?;
    let index_off = usize::try_from(seal.index_offset).map_err(|e| e.to_string())?;
    let f = frame_at(&data, index_off)?;
    let mut blocks = decode_index(&Shared::new(Arc::new(f.payload(&data).to_vec())))?;
    blocks.iter_mut().for_each(|b| b.filter = None);
    let mut out = data[..index_off].to_vec();
    frame_bytes(&mut out, T_INDEX, &encode_index(&blocks));
    let content_sha: [u8; 32] = Sha256::digest(&out).into();
    let chain = chain_hash(&header.prev_chain, &content_sha, header.seq);
    let seal = Seal { content_sha, chain, ..seal };
    frame_bytes(&mut out, T_SEAL, &seal.encode());
    fs::write(path, out).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_of_another_version_is_refused_naming_both_versions() {
        let h =
            Header { resolution: Resolution::Millis, seq: 3, created_ns: 5, prev_chain: [7; 32] };
        let good = h.encode();
        assert_eq!(Header::decode(&good), Ok(h));
        let mut old = good;
        old[8..10].copy_from_slice(&1u16.to_le_bytes());
        let crc = crc32fast::hash(&old[0..64]);
        old[64..68].copy_from_slice(&crc.to_le_bytes());
        let err = Header::decode(&old).expect_err("version 1 refused");
        assert!(err.contains("version 1") && err.contains("version 2"), "{err}");
    }
}
