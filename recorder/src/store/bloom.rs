//! Per-block endpoint filters of a sealed segment's index: which outside (address, port) pairs a
//! block holds, so that a point query skips the blocks that cannot hold its outside endpoint
//! without reading or decompressing them.
//!
//! Per outside address of a block, the writer keeps the cheaper of two sets:
//! - an exact **port bitmap** (65 536 bits, no false positives, zstd-compressed when that is
//!   smaller) for an address with many distinct ports in the block — the common case of a
//!   carrier-grade NAT, where a few outside addresses serve thousands of subscribers and ports
//!   are the scarce resource;
//! - a **Bloom filter** shared by the block's other (address, port) pairs (10 bits and 7 probes
//!   a distinct pair: about 1% false positives).
//!
//! An address gets a bitmap when the bitmap as stored is smaller than the address's share of
//! the Bloom filter (its distinct ports × 10 bits); addresses with fewer than about 200 ports
//! always go to the Bloom filter. A filter never says "absent" for a pair that was added.
//!
//! There is no filter of inside addresses: a block of 262 144 records holds most subscribers of
//! a busy gateway (on the synthetic workload about 70% of 200 000), so it would skip little for
//! its cost (about as many bytes as the outside filter).

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use super::codec::{Cur, Rec, put_uvarint};

/// A range of a segment index's bytes, shared by the filters read from it: reading an index
/// checks its checksum and walks its structure, but copies and decompresses nothing; a filter's
/// parts are read when a scan first asks them.
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    buf: Arc<Vec<u8>>,
    start: usize,
    end: usize,
}

impl Shared {
    /// All of `buf`.
    pub fn new(buf: Arc<Vec<u8>>) -> Shared {
        let end = buf.len();
        Shared { buf, start: 0, end }
    }
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
    /// The sub-range `from..to` of these bytes.
    pub fn slice(&self, from: usize, to: usize) -> Shared {
        Shared { buf: Arc::clone(&self.buf), start: self.start + from, end: self.start + to }
    }
    /// The next `n` bytes at `c`, a cursor over these bytes, without copying them.
    fn take(&self, c: &mut Cur<'_>, n: usize) -> Result<Shared, String> {
        let at = c.pos();
        c.bytes(n)?;
        Ok(self.slice(at, c.pos()))
    }
}

/// Bits per distinct key.
const BITS_PER_KEY: usize = 10;
/// Probes per key (the optimum for 10 bits a key is about 6.9).
const PROBES: u8 = 7;
/// Largest filter accepted when reading, in 64-bit words (128 MiB).
const MAX_WORDS: u64 = 1 << 24;
/// Bytes of a port bitmap (one bit per port).
const BITMAP_BYTES: usize = 8192;
/// zstd level of port bitmaps.
const BITMAP_LEVEL: i32 = 3;
/// Bloom filter bytes an address's ports must cost before a (compressed) bitmap is tried.
const MIN_BITMAP_TRY: usize = 256;
/// Port bitmaps accepted per block filter when reading.
const MAX_BITMAPS: u64 = 1 << 16;

/// The 64-bit key of an endpoint: FNV-1a 64 over `family (4 or 6) ‖ address bytes ‖ port as
/// u16 LE`, then the MurmurHash3 `fmix64` finalizer.
pub(crate) fn endpoint_hash(ip: IpAddr, port: u16) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    match ip {
        IpAddr::V4(a) => {
            eat(4);
            a.octets().into_iter().for_each(&mut eat);
        }
        IpAddr::V6(a) => {
            eat(6);
            a.octets().into_iter().for_each(&mut eat);
        }
    }
    port.to_le_bytes().into_iter().for_each(&mut eat);
    fmix64(h)
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// A Bloom filter over 64-bit key hashes: bit `(h1 + i·h2) mod m` for `i` in `0..probes`, where
/// `h1` is the low 32 bits of the hash, `h2` the high 32 bits with the lowest bit set, `m` the
/// number of bits (bit `p` is bit `p mod 64` of word `p / 64`).
#[derive(Clone, Debug)]
pub(crate) struct Bloom {
    words: Words,
    probes: u8,
}

/// A Bloom filter's words: built in memory, or read in place as u64 LE from an index.
#[derive(Clone, Debug)]
enum Words {
    Built(Vec<u64>),
    Stored(Shared),
}

impl Words {
    fn len(&self) -> usize {
        match self {
            Words::Built(w) => w.len(),
            Words::Stored(s) => s.bytes().len() / 8,
        }
    }
    fn get(&self, i: usize) -> u64 {
        match self {
            Words::Built(w) => w[i],
            Words::Stored(s) => {
                let b = &s.bytes()[8 * i..8 * i + 8];
                u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            }
        }
    }
}

impl PartialEq for Bloom {
    fn eq(&self, o: &Bloom) -> bool {
        self.probes == o.probes
            && self.words.len() == o.words.len()
            && (0..self.words.len()).all(|i| self.words.get(i) == o.words.get(i))
    }
}

impl Eq for Bloom {}

impl Bloom {
    /// A filter holding `hashes` (sorted and deduplicated in place to size it).
    pub fn build(hashes: &mut Vec<u64>) -> Bloom {
        hashes.sort_unstable();
        hashes.dedup();
        let n_words = (hashes.len() * BITS_PER_KEY).div_ceil(64).max(1);
        let mut words = vec![0u64; n_words];
        let m = n_words as u64 * 64;
        for &h in hashes.iter() {
            for pos in positions(h, PROBES, m) {
                words[(pos / 64) as usize] |= 1 << (pos % 64);
            }
        }
        Bloom { words: Words::Built(words), probes: PROBES }
    }

    fn bits(&self) -> u64 {
        self.words.len() as u64 * 64
    }

    /// Whether a key with hash `h` may have been added (`false`: it certainly was not).
    pub fn may_contain(&self, h: u64) -> bool {
        positions(h, self.probes, self.bits())
            .all(|pos| self.words.get((pos / 64) as usize) & (1 << (pos % 64)) != 0)
    }

    /// `uvarint words ‖ u8 probes ‖ words × u64 LE`.
    fn encode(&self, out: &mut Vec<u8>) {
        put_uvarint(out, self.words.len() as u64);
        out.push(self.probes);
        match &self.words {
            Words::Built(w) => w.iter().for_each(|w| out.extend_from_slice(&w.to_le_bytes())),
            Words::Stored(s) => out.extend_from_slice(s.bytes()),
        }
    }

    /// Reads what [`Bloom::encode`] wrote, at `c` over `src`'s bytes, in place.
    fn decode(c: &mut Cur<'_>, src: &Shared) -> Result<Bloom, String> {
        let n = c.uvarint()?;
        if n == 0 || n > MAX_WORDS {
            return Err(format!("endpoint filter of {n} words"));
        }
        let probes = c.u8()?;
        if !(1..=32).contains(&probes) {
            return Err(format!("endpoint filter with {probes} probes"));
        }
        Ok(Bloom { words: Words::Stored(src.take(c, n as usize * 8)?), probes })
    }
}

fn positions(h: u64, probes: u8, m: u64) -> impl Iterator<Item = u64> {
    let (h1, h2) = (h & 0xffff_ffff, (h >> 32) | 1);
    (0..u64::from(probes)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % m)
}

/// The endpoint filter of one block.
#[derive(Clone, Debug)]
pub(crate) struct BlockFilter {
    /// Outside addresses whose ports are kept exactly: one bit per port (bit `p % 8` of byte
    /// `p / 8`), sorted by address.
    dense: Vec<(IpAddr, PortBitmap)>,
    /// The outside (address, port) pairs of the other addresses.
    outside: Bloom,
}

/// A port bitmap: built in memory, or read from an index (plain, or a zstd frame decompressed
/// the first time a port is asked of it).
#[derive(Clone, Debug)]
enum PortBitmap {
    Built(Box<[u8; BITMAP_BYTES]>),
    Plain(Shared),
    Zstd(Shared, OnceLock<Option<Box<[u8; BITMAP_BYTES]>>>),
}

impl PortBitmap {
    /// The bitmap's bytes; `None` when a stored frame does not decompress to a bitmap (the
    /// index's checksum matched, so only a writer fault could cause it).
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            PortBitmap::Built(m) => Some(&m[..]),
            PortBitmap::Plain(s) => Some(s.bytes()),
            PortBitmap::Zstd(s, cell) => cell
                .get_or_init(|| {
                    let raw = zstd::bulk::decompress(s.bytes(), BITMAP_BYTES).ok()?;
                    let m: [u8; BITMAP_BYTES] = raw.try_into().ok()?;
                    Some(Box::new(m))
                })
                .as_deref()
                .map(|m| &m[..]),
        }
    }

    /// Whether `port` may be in the set: a bitmap that cannot be read holds every port.
    fn may_hold(&self, port: u16) -> bool {
        self.bytes().is_none_or(|m| m[usize::from(port / 8)] & (1 << (port % 8)) != 0)
    }
}

impl PartialEq for BlockFilter {
    fn eq(&self, o: &BlockFilter) -> bool {
        self.outside == o.outside
            && self.dense.len() == o.dense.len()
            && self
                .dense
                .iter()
                .zip(&o.dense)
                .all(|((a, m), (b, n))| a == b && m.bytes().is_some() && m.bytes() == n.bytes())
    }
}

impl Eq for BlockFilter {}

/// The outside endpoint a query asks for, prepared once per scan.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Probe {
    /// Outside address, port and [`endpoint_hash`], when both address and port are asked for.
    pub outside: Option<(IpAddr, u16, u64)>,
}

impl Probe {
    /// The endpoints of `filter` that block filters can test.
    pub fn of(filter: &crate::lookup::Filter) -> Probe {
        Probe {
            outside: filter.outside.and_then(|m| m.port.map(|p| (m.ip, p, endpoint_hash(m.ip, p)))),
        }
    }
}

impl BlockFilter {
    /// The filter of `recs`, whose address ids index `addrs`; `None` when an id is out of range
    /// (the block then gets no filter: it is always read).
    pub fn of(recs: &[Rec], addrs: &[IpAddr]) -> Option<BlockFilter> {
        // Distinct ports per outside address, as bitmaps.
        let mut maps: super::codec::FastMap<u32, Box<[u8; BITMAP_BYTES]>> = Default::default();
        for r in recs {
            addrs.get(r.outside as usize)?;
            let m = maps.entry(r.outside).or_insert_with(|| Box::new([0; BITMAP_BYTES]));
            m[usize::from(r.out_port / 8)] |= 1 << (r.out_port % 8);
        }
        let mut dense = Vec::new();
        let mut sparse = Vec::new();
        for (id, m) in maps {
            let ports: usize = m.iter().map(|b| b.count_ones() as usize).sum();
            let ip = addrs[id as usize];
            // The cheaper of the two: the address's share of the Bloom filter, or its bitmap as
            // stored (compressed when that is smaller). Few ports always go to the Bloom filter
            // (not worth a compression attempt).
            let bloom_bytes = ports * BITS_PER_KEY / 8;
            if bloom_bytes < MIN_BITMAP_TRY {
                sparse.push((ip, m));
                continue;
            }
            let z = zstd::bulk::compress(&m[..], BITMAP_LEVEL).unwrap_or_default();
            if !z.is_empty() && z.len() < BITMAP_BYTES && z.len() < bloom_bytes {
                dense.push((
                    ip,
                    PortBitmap::Zstd(Shared::new(Arc::new(z)), OnceLock::from(Some(m))),
                ));
            } else if BITMAP_BYTES < bloom_bytes {
                dense.push((ip, PortBitmap::Built(m)));
            } else {
                sparse.push((ip, m));
            }
        }
        dense.sort_unstable_by_key(|(ip, _)| *ip);
        let mut hashes = Vec::new();
        for (ip, m) in &sparse {
            for (i, b) in m.iter().enumerate() {
                for bit in 0..8 {
                    if b & (1 << bit) != 0 {
                        hashes.push(endpoint_hash(*ip, (i * 8 + bit) as u16));
                    }
                }
            }
        }
        Some(BlockFilter { dense, outside: Bloom::build(&mut hashes) })
    }

    fn may_hold(&self, ip: IpAddr, port: u16, h: u64) -> bool {
        match self.dense.binary_search_by_key(&ip, |(a, _)| *a) {
            Ok(i) => self.dense[i].1.may_hold(port),
            Err(_) => self.outside.may_contain(h),
        }
    }

    /// Whether the block may hold a record whose outside endpoint is `ep`.
    pub fn may_hold_outside(&self, ep: std::net::SocketAddr) -> bool {
        self.may_hold(ep.ip(), ep.port(), endpoint_hash(ep.ip(), ep.port()))
    }

    /// Whether the block may hold a record matching the probe.
    pub fn may_match(&self, p: &Probe) -> bool {
        p.outside.is_none_or(|(ip, port, h)| self.may_hold(ip, port, h))
    }

    /// `u8 0` (no filter); or `u8 1` and the Bloom filter (no port bitmaps); or `u8 2`,
    /// `uvarint` count of port bitmaps, per bitmap `u8 family (4 or 6)`, the address (4 or 16
    /// bytes) and the 8192-byte bitmap as `u8 0` and the bytes, or `u8 1`, `uvarint len` and a
    /// zstd frame of `len` bytes that decompresses to them; then the Bloom filter of the other
    /// pairs.
    pub fn encode(f: Option<&BlockFilter>, out: &mut Vec<u8>) {
        match f {
            None => out.push(0),
            Some(f) if f.dense.is_empty() => {
                out.push(1);
                f.outside.encode(out);
            }
            Some(f) => {
                out.push(2);
                put_uvarint(out, f.dense.len() as u64);
                for (ip, m) in &f.dense {
                    match ip {
                        IpAddr::V4(a) => {
                            out.push(4);
                            out.extend_from_slice(&a.octets());
                        }
                        IpAddr::V6(a) => {
                            out.push(6);
                            out.extend_from_slice(&a.octets());
                        }
                    }
                    // Written as read, or as `of` chose: it keeps a bitmap uncompressed
                    // (`Built`) only when compressing it did not make it smaller.
                    let plain = match m {
                        PortBitmap::Zstd(s, _) => {
                            out.push(1);
                            put_uvarint(out, s.bytes().len() as u64);
                            out.extend_from_slice(s.bytes());
                            continue;
                        }
                        PortBitmap::Plain(s) => s.bytes(),
                        PortBitmap::Built(m) => &m[..],
                    };
                    out.push(0);
                    out.extend_from_slice(plain);
                }
                f.outside.encode(out);
            }
        }
    }

    /// Reads what [`BlockFilter::encode`] wrote, at `c` over `src`'s bytes. Nothing is copied
    /// or decompressed: the Bloom filter is read in place and each port bitmap when first asked.
    pub fn decode(c: &mut Cur<'_>, src: &Shared) -> Result<Option<BlockFilter>, String> {
        match c.u8()? {
            0 => Ok(None),
            1 => Ok(Some(BlockFilter { dense: Vec::new(), outside: Bloom::decode(c, src)? })),
            2 => {
                let n = c.uvarint()?;
                if n > MAX_BITMAPS {
                    return Err(format!("endpoint filter with {n} port bitmaps"));
                }
                let mut dense: Vec<(IpAddr, PortBitmap)> = Vec::new();
                for _ in 0..n {
                    let ip = match c.u8()? {
                        4 => {
                            let b = c.bytes(4)?;
                            IpAddr::from([b[0], b[1], b[2], b[3]])
                        }
                        6 => {
                            let mut o = [0u8; 16];
                            o.copy_from_slice(c.bytes(16)?);
                            IpAddr::from(o)
                        }
                        f => return Err(format!("endpoint filter: unknown address family {f}")),
                    };
                    if dense.last().is_some_and(|(last, _)| *last >= ip) {
                        return Err("endpoint filter: port bitmaps out of order".into());
                    }
                    let m = match c.u8()? {
                        0 => PortBitmap::Plain(src.take(c, BITMAP_BYTES)?),
                        1 => {
                            let len = usize::try_from(c.uvarint()?)
                                .map_err(|_| "port bitmap too large")?;
                            if len == 0 || len >= BITMAP_BYTES {
                                return Err(format!(
                                    "endpoint filter: compressed port bitmap of {len} bytes"
                                ));
                            }
                            PortBitmap::Zstd(src.take(c, len)?, OnceLock::new())
                        }
                        t => return Err(format!("endpoint filter: unknown port bitmap codec {t}")),
                    };
                    dense.push((ip, m));
                }
                Ok(Some(BlockFilter { dense, outside: Bloom::decode(c, src)? }))
            }
            t => Err(format!("unknown block filter tag {t}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_keys_are_always_found_and_others_rarely() {
        let mut keys: Vec<u64> = (0..20_000u16)
            .map(|p| endpoint_hash(IpAddr::from([100, 64, 0, (p % 7) as u8]), p))
            .collect();
        let all = keys.clone();
        let b = Bloom::build(&mut keys);
        assert!(all.iter().all(|&h| b.may_contain(h)));
        let others = 20_000u16..60_000;
        let fp = others
            .clone()
            .filter(|&p| b.may_contain(endpoint_hash(IpAddr::from([100, 64, 1, 0]), p)))
            .count();
        let rate = fp as f64 / others.len() as f64;
        assert!(rate < 0.02, "false positive rate {rate}");
    }

    fn shared(b: &[u8]) -> Shared {
        Shared::new(Arc::new(b.to_vec()))
    }

    fn decode(b: &[u8]) -> Result<Option<BlockFilter>, String> {
        let src = shared(b);
        BlockFilter::decode(&mut Cur::new(src.bytes()), &src)
    }

    #[test]
    fn filters_round_trip_and_reject_garbage() {
        let mut k = vec![endpoint_hash("2001:db8::1".parse().expect("ip"), 80), 7, 7, 9];
        let f = BlockFilter { dense: Vec::new(), outside: Bloom::build(&mut k) };
        let mut buf = Vec::new();
        BlockFilter::encode(Some(&f), &mut buf);
        BlockFilter::encode(None, &mut buf);
        let src = shared(&buf);
        let mut c = Cur::new(src.bytes());
        assert_eq!(BlockFilter::decode(&mut c, &src).expect("first"), Some(f));
        assert_eq!(BlockFilter::decode(&mut c, &src).expect("second"), None);
        assert!(c.rest().is_empty());
        for bad in [&[3][..], &[2, 1, 4, 1, 2, 3, 4], &[1, 0], &[1, 1, 7, 0]] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn busy_addresses_get_exact_port_bitmaps_and_the_others_a_bloom_filter() {
        let addrs: Vec<IpAddr> = vec![
            "100.64.0.1".parse().expect("ip"),
            "100.64.0.2".parse().expect("ip"),
            "2001:db8::9".parse().expect("ip"),
        ];
        let rec = |outside: u32, out_port: u16| Rec {
            start: 0,
            end: None,
            inside: 0,
            outside,
            remote: 0,
            in_port: 1,
            out_port,
            rem_port: 443,
            zone: 0,
            kind: 0,
            proto: 6,
            flags: 0,
            carried: false,
        };
        // Address 0: 20 000 even ports (a bitmap); 1 and 2: a few ports (the Bloom filter).
        let mut recs: Vec<Rec> = (0..20_000u16).map(|i| rec(0, 20_000 + 2 * i)).collect();
        recs.extend((0..50u16).map(|i| rec(1, 1000 + i)));
        recs.push(rec(2, 7));
        let f = BlockFilter::of(&recs, &addrs).expect("filter");
        assert_eq!(f.dense.len(), 1);
        let ep = |a: usize, p: u16| std::net::SocketAddr::new(addrs[a], p);
        assert!(recs.iter().all(|r| f.may_hold_outside(ep(r.outside as usize, r.out_port))));
        // The bitmap is exact: no odd port of address 0 is "maybe".
        assert!((0..20_000u16).all(|i| !f.may_hold_outside(ep(0, 20_001 + 2 * i))));
        let mut buf = Vec::new();
        BlockFilter::encode(Some(&f), &mut buf);
        assert!(buf.len() < 8192, "the bitmap is compressed: {} bytes", buf.len());
        let back = decode(&buf).expect("decode").expect("some");
        assert!(
            matches!(back.dense[0].1, PortBitmap::Zstd(_, ref cell) if cell.get().is_none()),
            "not decompressed until asked"
        );
        assert_eq!(back, f);
        assert!(recs.iter().all(|r| back.may_hold_outside(ep(r.outside as usize, r.out_port))));
        assert!((0..20_000u16).all(|i| !back.may_hold_outside(ep(0, 20_001 + 2 * i))));
        let probe = Probe { outside: Some((addrs[1], 1003, endpoint_hash(addrs[1], 1003))) };
        assert!(back.may_match(&probe) && back.may_match(&Probe::default()));
        // Re-encoding a read filter gives the same bytes.
        let mut again = Vec::new();
        BlockFilter::encode(Some(&back), &mut again);
        assert_eq!(again, buf);
        // A truncated filter is refused.
        assert!(decode(&buf[..buf.len() / 2]).is_err());
        // A bitmap frame that does not decompress (only a writer fault could make one: the index
        // is checksummed) holds every port: a block is never skipped on its account.
        let zstd_at = 1 + 1 + 1 + 4 + 1 + 1; // tag, count, family, address, codec, one-byte length
        let mut bad = buf.clone();
        bad[zstd_at..zstd_at + 4].copy_from_slice(&[0; 4]);
        let garbled = decode(&bad).expect("the structure is intact").expect("some");
        assert!(garbled.may_hold_outside(ep(0, 20_001)) && garbled.may_hold_outside(ep(0, 7)));
    }

    #[test]
    fn hashes_distinguish_family_and_port() {
        let v4: IpAddr = "10.0.0.1".parse().expect("ip");
        let v6: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_ne!(endpoint_hash(v4, 80), endpoint_hash(v6, 80));
        assert_ne!(endpoint_hash(v4, 1), endpoint_hash(v4, 256));
    }
}
