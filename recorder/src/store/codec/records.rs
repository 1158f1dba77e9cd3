//! Records as the store keeps them in memory and in blocks, end references, the address
//! interner that gives addresses their dense ids, and the one-byte codes of translation kinds.

use std::collections::HashMap;
use std::net::IpAddr;

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
