//! Where subscribers and remotes live: fixed, documented address plans.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::MAX_REMOTES;
use crate::rng::mix64;

/// The address of subscriber `i` (0-based): `10.(n>>8).(n&255).(i%254+1)` with `n = i/254`.
pub fn inside_v4(i: u32) -> Ipv4Addr {
    let n = i / 254;
    Ipv4Addr::new(10, (n >> 8) as u8, n as u8, (i % 254 + 1) as u8)
}

/// Subscriber `i`'s delegated `/56` is `fd00:HI:LO::/56` (`HI:LO` = `i`), and its LAN the first
/// `/64` of it, as most home routers number it. This is the LAN's stable address `::2` (a server
/// behind a port forward: a static or stable address).
pub fn inside_v6(i: u32) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, (i >> 16) as u16, i as u16, 0, 0, 0, 0, 2)
}

/// How many devices subscriber `i` has on its LAN (1–4), as far as IPv6 addresses go.
pub fn devices_v6(i: u32, seed: u64) -> u32 {
    1 + (mix64(u64::from(i) ^ seed ^ 0x0de7_1ce5) % 4) as u32
}

/// The temporary address (RFC 8981) device `device` of subscriber `i` uses for outgoing
/// connections on day `day` (since the epoch): a random interface identifier in the LAN's `/64`,
/// a new one each day (Linux's default `temp_prefered_lft` is a day; Windows, macOS, iOS and
/// Android make outgoing connections from temporary addresses).
pub fn inside_v6_temporary(i: u32, device: u32, day: u64, seed: u64) -> Ipv6Addr {
    let iid = mix64(seed ^ (u64::from(i) << 8) ^ u64::from(device) ^ (day << 40) ^ 0x8981);
    let prefix = u128::from(inside_v6(i)) & !u128::from(u64::MAX);
    // The universal/local bit of a temporary identifier is 0 (RFC 8981 section 3.3.1).
    Ipv6Addr::from(prefix | u128::from(iid & !(1 << 57)))
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

/// Providers (content networks, clouds) that serve the IPv6 remotes.
pub(super) const PROVIDERS_V6: u32 = 24;

/// The IPv6 address of remote rank `r`: like real IPv6 traffic, which goes mostly to a few big
/// content and cloud networks, every remote belongs to one of [`PROVIDERS_V6`] providers, each a
/// `/48` (`2001:db8:1PP::/48`), holding its servers 16 to a `/64` with small interface
/// identifiers (`::1` … `::10`), as servers are numbered. The ranks are scattered over providers
/// and subnets by a fixed permutation.
pub fn remote_v6(r: u32) -> Ipv6Addr {
    if r >= INFRA {
        return Ipv6Addr::new(0x2001, 0xdb8, 0, 0x53, 0, 0, 0, (r - INFRA + 1) as u16);
    }
    let x = (r.wrapping_mul(0x9E37_79B1).wrapping_add(0x5bd1)) & (MAX_REMOTES - 1);
    let (provider, q) = (x % PROVIDERS_V6, x / PROVIDERS_V6);
    Ipv6Addr::new(
        0x2001,
        0xdb8,
        0x100 + provider as u16,
        (q >> 4) as u16,
        0,
        0,
        0,
        (q & 15) as u16 + 1,
    )
}
