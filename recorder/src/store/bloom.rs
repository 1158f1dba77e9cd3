//! Per-block endpoint filters of a sealed segment's index: a Bloom filter of the outside
//! (address, port) pairs a block holds, so that a point query skips the blocks that cannot hold
//! its outside endpoint without reading or decompressing them.
//!
//! A filter never says "absent" for a key that was added (no false negatives); it says "maybe"
//! for about 1% of the keys that were not (10 bits and 7 probes a distinct key).
//!
//! There is no filter of inside addresses: a block of 262 144 records holds most subscribers of
//! a busy gateway (on the synthetic workload about 70% of 200 000), so it would skip little for
//! its cost (about as many bytes as the outside filter).

use std::net::IpAddr;

use super::codec::{Cur, Rec, put_uvarint};

/// Bits per distinct key.
const BITS_PER_KEY: usize = 10;
/// Probes per key (the optimum for 10 bits a key is about 6.9).
const PROBES: u8 = 7;
/// Largest filter accepted when reading, in 64-bit words (128 MiB).
const MAX_WORDS: u64 = 1 << 24;

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bloom {
    words: Vec<u64>,
    probes: u8,
}

impl Bloom {
    /// A filter holding `hashes` (sorted and deduplicated in place to size it).
    pub fn build(hashes: &mut Vec<u64>) -> Bloom {
        hashes.sort_unstable();
        hashes.dedup();
        let n_words = (hashes.len() * BITS_PER_KEY).div_ceil(64).max(1);
        let mut b = Bloom {
            words: vec![0; n_words],
            probes: PROBES,
        };
        let m = b.bits();
        for &h in hashes.iter() {
            for pos in positions(h, b.probes, m) {
                b.words[(pos / 64) as usize] |= 1 << (pos % 64);
            }
        }
        b
    }

    fn bits(&self) -> u64 {
        self.words.len() as u64 * 64
    }

    /// Whether a key with hash `h` may have been added (`false`: it certainly was not).
    pub fn may_contain(&self, h: u64) -> bool {
        positions(h, self.probes, self.bits())
            .all(|pos| self.words[(pos / 64) as usize] & (1 << (pos % 64)) != 0)
    }

    /// `uvarint words ‖ u8 probes ‖ words × u64 LE`.
    fn encode(&self, out: &mut Vec<u8>) {
        put_uvarint(out, self.words.len() as u64);
        out.push(self.probes);
        for w in &self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }

    fn decode(c: &mut Cur<'_>) -> Result<Bloom, String> {
        let n = c.uvarint()?;
        if n == 0 || n > MAX_WORDS {
            return Err(format!("endpoint filter of {n} words"));
        }
        let probes = c.u8()?;
        if !(1..=32).contains(&probes) {
            return Err(format!("endpoint filter with {probes} probes"));
        }
        let raw = c.bytes(n as usize * 8)?;
        let words = raw
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]))
            .collect();
        Ok(Bloom { words, probes })
    }
}

fn positions(h: u64, probes: u8, m: u64) -> impl Iterator<Item = u64> {
    let (h1, h2) = (h & 0xffff_ffff, (h >> 32) | 1);
    (0..u64::from(probes)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % m)
}

/// The endpoint filter of one block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BlockFilter {
    /// Outside (address, port) pairs.
    pub outside: Bloom,
}

/// The hashes of a query's endpoints, computed once per scan.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Probe {
    /// Outside address and port, when both are asked for.
    pub outside: Option<u64>,
}

impl Probe {
    /// The hashes of `filter`'s endpoints that block filters can test.
    pub fn of(filter: &crate::scan::Filter) -> Probe {
        Probe {
            outside: filter
                .outside
                .and_then(|m| m.port.map(|p| endpoint_hash(m.ip, p))),
        }
    }
}

impl BlockFilter {
    /// The filter of `recs`, whose address ids index `addrs`; `None` when an id is out of range
    /// (the block then gets no filter: it is always read).
    pub fn of(recs: &[Rec], addrs: &[IpAddr]) -> Option<BlockFilter> {
        let mut out = Vec::with_capacity(recs.len());
        for r in recs {
            out.push(endpoint_hash(*addrs.get(r.outside as usize)?, r.out_port));
        }
        Some(BlockFilter {
            outside: Bloom::build(&mut out),
        })
    }

    /// Whether the block may hold a record whose outside endpoint is `ep`.
    pub fn may_hold_outside(&self, ep: std::net::SocketAddr) -> bool {
        self.outside.may_contain(endpoint_hash(ep.ip(), ep.port()))
    }

    /// Whether the block may hold a record matching the probe.
    pub fn may_match(&self, p: &Probe) -> bool {
        p.outside.is_none_or(|h| self.outside.may_contain(h))
    }

    /// `u8 present (0 or 1)`, then, when present, the outside filter.
    pub fn encode(f: Option<&BlockFilter>, out: &mut Vec<u8>) {
        match f {
            None => out.push(0),
            Some(f) => {
                out.push(1);
                f.outside.encode(out);
            }
        }
    }

    /// Reads what [`BlockFilter::encode`] wrote.
    pub fn decode(c: &mut Cur<'_>) -> Result<Option<BlockFilter>, String> {
        match c.u8()? {
            0 => Ok(None),
            1 => Ok(Some(BlockFilter {
                outside: Bloom::decode(c)?,
            })),
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

    #[test]
    fn filters_round_trip_and_reject_garbage() {
        let mut k = vec![
            endpoint_hash("2001:db8::1".parse().expect("ip"), 80),
            7,
            7,
            9,
        ];
        let f = BlockFilter {
            outside: Bloom::build(&mut k),
        };
        let mut buf = Vec::new();
        BlockFilter::encode(Some(&f), &mut buf);
        BlockFilter::encode(None, &mut buf);
        let mut c = Cur::new(&buf);
        assert_eq!(BlockFilter::decode(&mut c).expect("first"), Some(f));
        assert_eq!(BlockFilter::decode(&mut c).expect("second"), None);
        assert!(c.rest().is_empty());
        assert!(BlockFilter::decode(&mut Cur::new(&[2])).is_err());
        assert!(BlockFilter::decode(&mut Cur::new(&[1, 0])).is_err());
        assert!(BlockFilter::decode(&mut Cur::new(&[1, 1, 7, 0])).is_err());
    }

    #[test]
    fn hashes_distinguish_family_and_port() {
        let v4: IpAddr = "10.0.0.1".parse().expect("ip");
        let v6: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_ne!(endpoint_hash(v4, 80), endpoint_hash(v6, 80));
        assert_ne!(endpoint_hash(v4, 1), endpoint_hash(v4, 256));
    }
}
