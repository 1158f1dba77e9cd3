//! The translation records natrec captures, stores and answers with.
//!
//! A [`Translation`] names the three endpoints of one conntrack NAT entry — the **inside**
//! endpoint (the host behind the gateway), the **outside** endpoint (the shared address and port
//! the world saw) and the **remote** endpoint (the peer) — with its lifetime.
//!
//! The capture path emits a [`FlowEvent::Start`] when a translation is first seen and a
//! [`FlowEvent::End`] when it ends. The end event repeats the whole translation (with its start),
//! so a consumer can pair it with the start, or use it alone when the start was never seen. Its
//! JSON Lines form (`natrec record --jsonl`) is the interface the attribution store consumes:
//!
//! ```json
//! {"event":"start","kind":"snat","proto":"tcp","inside":"10.0.1.2:40000","outside":"100.64.0.1:40000","remote":"198.51.100.7:443","zone":0,"start":"2026-11-24T22:18:00.123456789Z","end":null,"flags":[]}
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use jiff::Timestamp;
use recorder_common::{AF_INET, AF_INET6, Endpoints, NatKind};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IP protocol number, shown by name for the ones NAT gives ports to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Proto(pub u8);

impl Proto {
    pub const ICMP: Proto = Proto(1);
    pub const TCP: Proto = Proto(6);
    pub const UDP: Proto = Proto(17);
    pub const ICMPV6: Proto = Proto(58);

    /// The protocol's usual name, if it has one here.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Self::ICMP => Some("icmp"),
            Self::TCP => Some("tcp"),
            Self::UDP => Some("udp"),
            Self::ICMPV6 => Some("icmpv6"),
            Proto(33) => Some("dccp"),
            Proto(47) => Some("gre"),
            Proto(132) => Some("sctp"),
            Proto(136) => Some("udplite"),
            _ => None,
        }
    }

    /// Whether the "port" of this protocol is an ICMP echo identifier.
    pub fn is_icmp(self) -> bool {
        self == Self::ICMP || self == Self::ICMPV6
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Error for a protocol that is neither a known name nor a number 0–255.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown protocol {0:?}: expected tcp, udp, icmp, icmpv6, sctp, dccp, gre, udplite or a number 0-255"
)]
pub struct ProtoParseError(String);

impl FromStr for Proto {
    type Err = ProtoParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        for p in [1u8, 6, 17, 58, 33, 47, 132, 136] {
            if Proto(p).name() == Some(lower.as_str()) {
                return Ok(Proto(p));
            }
        }
        lower.parse::<u8>().map(Proto).map_err(|_| ProtoParseError(s.to_owned()))
    }
}

impl Serialize for Proto {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Proto {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What kind of translation a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Source NAT (masquerade): an inside host talked out.
    Snat,
    /// Destination NAT (port forward): a remote talked to an inside server.
    Dnat,
    /// Both on one entry (hairpin NAT).
    Both,
}

impl From<NatKind> for Kind {
    fn from(k: NatKind) -> Self {
        match k {
            NatKind::Snat => Kind::Snat,
            NatKind::Dnat => Kind::Dnat,
            NatKind::Both => Kind::Both,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Snat => "snat",
            Kind::Dnat => "dnat",
            Kind::Both => "both",
        })
    }
}

/// Facts about how a record's times were learned. Serialized as a list of names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u8);

impl Flags {
    /// The translation already existed when the recorder started; it came from a conntrack dump.
    pub const SEEDED: Flags = Flags(1);
    /// The start is the time natrec first saw the entry, not conntrack's own start timestamp
    /// (the entry had no timestamp extension), or, in an end-only record whose end event carried
    /// no start (the end probe's, for an entry whose start it never reported), the end. The true
    /// start is at or before it.
    pub const START_APPROX: Flags = Flags(2);
    /// The end event was lost (ENOBUFS, a recorder restart): the end is the time a resync found
    /// the entry gone, so the true end is at or before it.
    pub const END_APPROX: Flags = Flags(4);
    /// The translation was never seen starting; it is known from its end event only.
    pub const END_ONLY: Flags = Flags(8);

    const NAMES: [(Flags, &'static str); 4] = [
        (Self::SEEDED, "seeded"),
        (Self::START_APPROX, "start_approx"),
        (Self::END_APPROX, "end_approx"),
        (Self::END_ONLY, "end_only"),
    ];

    pub const fn empty() -> Self {
        Flags(0)
    }
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn insert(&mut self, other: Flags) {
        self.0 |= other.0;
    }
    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
    /// The names of the flags that are set.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES.into_iter().filter(move |(f, _)| self.contains(*f)).map(|(_, n)| n)
    }
}

impl Serialize for Flags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.names())
    }
}

impl<'de> Deserialize<'de> for Flags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        let mut flags = Flags::empty();
        for n in names {
            let (f, _) = Self::NAMES
                .into_iter()
                .find(|(_, name)| *name == n)
                .ok_or_else(|| serde::de::Error::custom(format!("unknown flag {n:?}")))?;
            flags.insert(f);
        }
        Ok(flags)
    }
}

/// One NAT translation: who held which outside endpoint, towards whom, when.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Translation {
    pub kind: Kind,
    pub proto: Proto,
    /// The endpoint behind the gateway (for ICMP echo, the port is the echo identifier).
    pub inside: SocketAddr,
    /// The shared address and port the world saw.
    pub outside: SocketAddr,
    /// The peer (port 0 for ICMP).
    pub remote: SocketAddr,
    /// Conntrack zone.
    pub zone: u16,
    /// When the translation began (UTC).
    pub start: Timestamp,
    /// When it ended; `None` while it is still open.
    pub end: Option<Timestamp>,
    pub flags: Flags,
}

/// What identifies a live translation: no two live conntrack entries share it.
///
/// It contains a complete conntrack tuple (the original one for SNAT and DNAT, the reply one for
/// both), which conntrack keeps unique per zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub zone: u16,
    pub proto: Proto,
    pub inside: SocketAddr,
    pub outside: SocketAddr,
    pub remote: SocketAddr,
}

impl Translation {
    /// Builds a translation from classified kernel endpoints (ports in network byte order).
    pub fn from_endpoints(
        family: u8,
        proto: u8,
        kind: NatKind,
        ep: &Endpoints,
        zone: u16,
        start: Timestamp,
    ) -> Option<Self> {
        let addr = |a: &[u8; 16]| -> Option<IpAddr> {
            match family {
                AF_INET => Some(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
                AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(*a))),
                _ => None,
            }
        };
        Some(Translation {
            kind: kind.into(),
            proto: Proto(proto),
            inside: SocketAddr::new(addr(&ep.inside)?, u16::from_be(ep.inside_port)),
            outside: SocketAddr::new(addr(&ep.outside)?, u16::from_be(ep.outside_port)),
            remote: SocketAddr::new(addr(&ep.remote)?, u16::from_be(ep.remote_port)),
            zone,
            start,
            end: None,
            flags: Flags::empty(),
        })
    }

    /// The key that pairs this translation's start and end.
    pub fn key(&self) -> FlowKey {
        FlowKey {
            zone: self.zone,
            proto: self.proto,
            inside: self.inside,
            outside: self.outside,
            remote: self.remote,
        }
    }

    /// Whether the translation's lifetime touches `[from, to]` (an open one lasts until now).
    pub fn overlaps(&self, from: Timestamp, to: Timestamp) -> bool {
        self.start <= to && self.end.is_none_or(|e| e >= from)
    }
}

/// One event of the capture stream (`natrec record --jsonl`, one JSON object a line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum FlowEvent {
    /// A translation was first seen (`end` is null).
    Start(Translation),
    /// A translation ended (`end` is set; the record repeats the start).
    End(Translation),
}

impl FlowEvent {
    pub fn translation(&self) -> &Translation {
        match self {
            FlowEvent::Start(t) | FlowEvent::End(t) => t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Translation {
        Translation {
            kind: Kind::Snat,
            proto: Proto::TCP,
            inside: "10.0.1.2:40000".parse().expect("addr"),
            outside: "100.64.0.1:40001".parse().expect("addr"),
            remote: "[2001:db8::7]:443".parse().expect("addr"),
            zone: 3,
            start: "2026-11-24T22:18:00.123456789Z".parse().expect("time"),
            end: None,
            flags: Flags::SEEDED.union(Flags::END_APPROX),
        }
    }

    #[test]
    fn jsonl_form_is_stable_and_round_trips() {
        let ev = FlowEvent::Start(sample());
        let line = serde_json::to_string(&ev).expect("serialize");
        assert_eq!(
            line,
            r#"{"event":"start","kind":"snat","proto":"tcp","inside":"10.0.1.2:40000","outside":"100.64.0.1:40001","remote":"[2001:db8::7]:443","zone":3,"start":"2026-11-24T22:18:00.123456789Z","end":null,"flags":["seeded","end_approx"]}"#
        );
        let back: FlowEvent = serde_json::from_str(&line).expect("deserialize");
        assert_eq!(back, ev);
    }

    #[test]
    fn protocols_parse_by_name_or_number() {
        assert_eq!("TCP".parse::<Proto>().expect("tcp"), Proto::TCP);
        assert_eq!("47".parse::<Proto>().expect("47"), Proto(47));
        assert_eq!(Proto(47).to_string(), "gre");
        assert_eq!(Proto(250).to_string(), "250");
        assert!("tpc".parse::<Proto>().is_err());
        assert!(serde_json::from_str::<Flags>(r#"["bogus"]"#).is_err());
    }

    #[test]
    fn overlap_includes_open_translations_and_edges() {
        let mut t = sample();
        let at = |s: &str| s.parse::<Timestamp>().expect("time");
        assert!(t.overlaps(at("2026-11-25T00:00:00Z"), at("2026-11-25T01:00:00Z")));
        t.end = Some(at("2026-11-24T22:19:00Z"));
        assert!(t.overlaps(at("2026-11-24T22:19:00Z"), at("2026-11-24T23:00:00Z")));
        assert!(!t.overlaps(at("2026-11-24T22:19:00.000000001Z"), at("2026-11-24T23:00:00Z")));
        assert!(!t.overlaps(at("2026-11-24T22:00:00Z"), at("2026-11-24T22:17:59Z")));
    }
}
