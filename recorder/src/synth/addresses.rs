//! Where subscribers and remotes live: fixed, documented address plans.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::MAX_REMOTES;
use crate::rng::mix64;

/// The address of subscriber `i` (0-based): `10.(n>>8).(n&255).(i%254+1)` with `n = i/254`.
pub fn inside_v4(i: u32) -> Ipv4Addr {
    let n = i / 254;
    Ipv4Addr::new(10, (n >> 8) as u8, n as u8, (i % 254 + 1) as u8)
}

/// The IPv6 address of subscriber `i`: `fd00:0:HI:LO::2`.
pub fn inside_v6(i: u32) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0, (i >> 16) as u16, i as u16, 0, 0, 0, 2)
}

/// Remote ids at or above this are infrastructure (resolvers, NTP) in 203.0.113.0/24.
pub(super) const INFRA: u32 = 1 << 30;
pub(super) const DNS_SERVERS: u32 = 4;
pub(super) const NTP_SERVERS: u32 = 2;

/// The IPv4 address of remote rank `r` (0 = most popular): a fixed scatter over 198.18.0.0/15.
pub fn remote_v4(r: u32) -> Ipv4Addr {
    if r >= INFRA {
        return Ipv4Addr::new(203, 0, 113, (r - INFRA + 1) as u8);
    }
    // An odd multiplier permutes 0..2^17.
    let x = (r.wrapping_mul(0x9E37_79B1).wrapping_add(0x5bd1)) & (MAX_REMOTES - 1);
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + x)
}

/// The IPv6 address of remote rank `r`, in 2001:db8::/32 (below 2001:db8:8000::).
pub fn remote_v6(r: u32) -> Ipv6Addr {
    if r >= INFRA {
        return Ipv6Addr::new(0x2001, 0xdb8, 0, 0x53, 0, 0, 0, (r - INFRA + 1) as u16);
    }
    let x = mix64(u64::from(r) ^ 0x6a09_e667);
    Ipv6Addr::new(
        0x2001,
        0xdb8,
        (x >> 48) as u16 & 0x7fff,
        (x >> 32) as u16,
        0,
        0,
        (r >> 16) as u16,
        r as u16 | 1,
    )
}
