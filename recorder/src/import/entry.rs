//! What the text formats share: one direction of a conntrack entry as a log shows it, the
//! classification of an entry's two tuples into a translation, and the way back for rendering.

use std::net::{IpAddr, SocketAddr};

use jiff::Timestamp;
use recorder_common::{AF_INET, AF_INET6, NatKind, Tuple, classify};

use crate::model::{Kind, Proto, Translation};

/// One direction of a conntrack entry as a log shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct LogTuple {
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    sport: Option<u16>,
    dport: Option<u16>,
    /// ICMP echo identifier.
    id: Option<u16>,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
}

impl LogTuple {
    pub(super) fn complete(&self, icmp: bool) -> Result<(IpAddr, IpAddr, u16, u16), String> {
        let (src, dst) = match (self.src, self.dst) {
            (Some(s), Some(d)) => (s, d),
            _ => return Err("a tuple lacks src= or dst=".to_owned()),
        };
        if icmp {
            // The identifier is the "source port"; type and code the "destination port".
            let tc = u16::from(self.icmp_type.unwrap_or(0)) << 8
                | u16::from(self.icmp_code.unwrap_or(0));
            Ok((src, dst, self.id.unwrap_or(0), tc))
        } else {
            Ok((src, dst, self.sport.unwrap_or(0), self.dport.unwrap_or(0)))
        }
    }

    /// Sets a field of this tuple; `false` when the key is not one of its (still unset) fields.
    pub(super) fn set(&mut self, icmp: bool, key: &str, value: &str) -> Result<bool, String> {
        fn put<T: std::str::FromStr>(
            slot: &mut Option<T>,
            key: &str,
            value: &str,
        ) -> Result<bool, String> {
            if slot.is_some() {
                return Ok(false);
            }
            *slot = Some(value.parse().map_err(|_| format!("bad {key}={value}"))?);
            Ok(true)
        }
        match (key, icmp) {
            ("src", _) => put(&mut self.src, key, value),
            ("dst", _) => put(&mut self.dst, key, value),
            ("sport", false) => put(&mut self.sport, key, value),
            ("dport", false) => put(&mut self.dport, key, value),
            ("id", true) => put(&mut self.id, key, value),
            ("type", true) => put(&mut self.icmp_type, key, value),
            ("code", true) => put(&mut self.icmp_code, key, value),
            _ => Ok(false),
        }
    }
}

fn family_bytes(ip: IpAddr) -> (u8, [u8; 16]) {
    match ip {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (AF_INET, b)
        }
        IpAddr::V6(a) => (AF_INET6, a.octets()),
    }
}

/// Classifies an entry from its two tuples: `None` when it carries no NAT.
pub(super) fn classify_entry(
    proto: Proto,
    orig: (IpAddr, IpAddr, u16, u16),
    reply: (IpAddr, IpAddr, u16, u16),
    zone: u16,
    at: Timestamp,
) -> Result<Option<Translation>, String> {
    let icmp = proto.is_icmp();
    let snat = reply.1 != orig.0 || (if icmp { reply.2 != orig.2 } else { reply.3 != orig.2 });
    let dnat = reply.0 != orig.1 || (!icmp && reply.2 != orig.3);
    let kind = match (snat, dnat) {
        (true, false) => NatKind::Snat,
        (false, true) => NatKind::Dnat,
        (true, true) => NatKind::Both,
        (false, false) => return Ok(None),
    };
    let tuple = |(s, d, sp, dp): (IpAddr, IpAddr, u16, u16)| -> Result<(u8, Tuple), String> {
        let (fs, src) = family_bytes(s);
        let (fd, dst) = family_bytes(d);
        if fs != fd {
            return Err("a tuple mixes IPv4 and IPv6 addresses".to_owned());
        }
        Ok((fs, Tuple { src, dst, src_port: sp.to_be(), dst_port: dp.to_be(), _pad: [0; 4] }))
    };
    let (fo, o) = tuple(orig)?;
    let (fr, r) = tuple(reply)?;
    if fo != fr {
        return Err("the original and reply tuples are of different address families".to_owned());
    }
    let ep = classify(kind, proto.0, &o, &r);
    Translation::from_endpoints(fo, proto.0, kind, &ep, zone, at)
        .map(Some)
        .ok_or_else(|| "unknown address family".to_owned())
}

/// The two conntrack tuples that give `t` (the inverse of `classify`). For a hairpin (`Both`)
/// entry the address the inside host dialled is not recorded; the outside endpoint stands in.
pub(super) fn tuples_of(t: &Translation) -> [(SocketAddr, SocketAddr); 2] {
    match t.kind {
        Kind::Snat => [(t.inside, t.remote), (t.remote, t.outside)],
        Kind::Dnat => [(t.remote, t.outside), (t.inside, t.remote)],
        Kind::Both => [(t.inside, t.outside), (t.remote, t.outside)],
    }
}

pub(super) fn split_time(t: Timestamp) -> (i64, u32) {
    let ns = t.as_nanosecond();
    (ns.div_euclid(1_000_000_000) as i64, (ns.rem_euclid(1_000_000_000) / 1000) as u32)
}

pub(super) fn l3_name(ip: IpAddr) -> (&'static str, u8) {
    match ip {
        IpAddr::V4(_) => ("ipv4", AF_INET),
        IpAddr::V6(_) => ("ipv6", AF_INET6),
    }
}
