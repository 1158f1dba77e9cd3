//! Pairing the two captures: every packet seen on the gateway's outside interface is found again
//! on the inside, which tells the inside endpoint that truly sent (or received) it.
//!
//! A packet keeps, across the gateway, its protocol, its remote endpoint (nothing here rewrites
//! remotes), its direction and every byte that is not an inside/outside address or port (see
//! [`Packet::signature`]). Those form the pairing key; among inside packets with the key, the
//! one nearest in time (within [`PAIR_WINDOW`]) is the twin.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use jiff::{SignedDuration, Timestamp};
use recorder::model::Proto;

use super::pcap::Packet;

/// How far apart in time the two sightings of one packet may be.
pub const PAIR_WINDOW: SignedDuration = SignedDuration::from_secs(1);

/// One outside-side packet with the truth learnt from the inside capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub proto: Proto,
    /// The shared address and port the world saw (ICMP: the echo identifier on the outside).
    pub outside: SocketAddr,
    /// The peer (port 0 for ICMP).
    pub remote: SocketAddr,
    /// The inside endpoint the inside capture shows for the same packet.
    pub inside: SocketAddr,
    /// Whether the packet went towards the remote (left through the outside interface).
    pub outbound: bool,
    /// The time to ask natrec about: when the packet left the gateway — the outside capture's
    /// time for an outbound packet, the inside capture's for an inbound one (an inbound packet
    /// is captured on the outside before conntrack has seen it; a port forward's first packet
    /// would otherwise predate its own translation).
    pub at: Timestamp,
    /// Its time on the outside capture.
    pub outside_ts: Timestamp,
}

/// An outside-side packet whose twin is not in the inside capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unpaired {
    pub proto: Proto,
    pub outside: SocketAddr,
    pub remote: SocketAddr,
    pub outbound: bool,
    pub ts: Timestamp,
}

/// The pairing's result.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pairing {
    pub observations: Vec<Observation>,
    pub unpaired: Vec<Unpaired>,
    /// Outside-capture packets that do not involve an outside pool address (not NAT traffic).
    pub not_translated: u64,
}

/// An address prefix: `addr/len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    pub addr: IpAddr,
    pub len: u8,
}

impl Net {
    /// One address (`/32` or `/128`).
    pub fn host(addr: IpAddr) -> Net {
        Net { addr, len: if addr.is_ipv4() { 32 } else { 128 } }
    }

    /// Whether `ip` is in the prefix (never across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |a: IpAddr| match a {
            IpAddr::V4(v4) => (u128::from(v4.to_bits()) << 96, 32),
            IpAddr::V6(v6) => (v6.to_bits(), 128),
        };
        let ((net, width), (other, other_width)) = (bits(self.addr), bits(ip));
        if width != other_width {
            return false;
        }
        let len = u32::from(self.len.min(width));
        let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
        net & mask == other & mask
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Which side of the gateway a capture is from, and how to tell its endpoints apart.
#[derive(Clone, Debug)]
pub struct Sides {
    /// The gateway's outside addresses: the SNAT pools and the port forwards' addresses (one
    /// address each), and prefix translations' outside prefixes.
    pub pool: Vec<Net>,
    /// Whether an address is inside (behind the gateway).
    pub inside_net: fn(IpAddr) -> bool,
}

/// The lab's inside networks: 10.0.0.0/8 and fd00::/8.
pub fn lab_inside_net(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 10,
        IpAddr::V6(v6) => v6.octets()[0] == 0xfd,
    }
}

type Key = (Proto, SocketAddr, bool, u64);

impl Sides {
    fn in_pool(&self, ip: IpAddr) -> bool {
        self.pool.iter().any(|n| n.contains(ip))
    }

    /// (key, outside endpoint) of an outside-capture packet, if it is NAT traffic.
    fn outside_key(&self, p: &Packet) -> Option<(Key, SocketAddr)> {
        match (self.in_pool(p.src.ip()), self.in_pool(p.dst.ip())) {
            (true, false) => Some(((p.proto, p.dst, true, p.signature), p.src)),
            (false, true) => Some(((p.proto, p.src, false, p.signature), p.dst)),
            _ => None,
        }
    }

    /// (key, inside endpoint) of an inside-capture packet, if it crosses to the outside.
    fn inside_key(&self, p: &Packet) -> Option<(Key, SocketAddr)> {
        let inside = self.inside_net;
        match (inside(p.src.ip()), inside(p.dst.ip())) {
            (true, false) if !self.in_pool(p.dst.ip()) => {
                Some(((p.proto, p.dst, true, p.signature), p.src))
            }
            (false, true) if !self.in_pool(p.src.ip()) => {
                Some(((p.proto, p.src, false, p.signature), p.dst))
            }
            _ => None,
        }
    }
}

/// Pairs every NAT packet of the outside capture with its twin of the inside capture.
pub fn pair(outside: &[Packet], inside: &[Packet], sides: &Sides) -> Pairing {
    let mut index: HashMap<Key, Vec<(Timestamp, SocketAddr)>> = HashMap::new();
    for p in inside {
        if let Some((key, ep)) = sides.inside_key(p) {
            index.entry(key).or_default().push((p.ts, ep));
        }
    }
    let mut out = Pairing::default();
    for p in outside {
        let Some((key, outside_ep)) = sides.outside_key(p) else {
            out.not_translated += 1;
            continue;
        };
        let (_, remote, outbound, _) = key;
        let twin = index.get(&key).and_then(|c| {
            c.iter()
                .map(|(ts, ep)| (p.ts.duration_since(*ts).abs(), *ts, *ep))
                .filter(|(d, _, _)| *d <= PAIR_WINDOW)
                .min_by_key(|(d, _, _)| *d)
        });
        match twin {
            Some((_, inside_ts, inside_ep)) => out.observations.push(Observation {
                proto: p.proto,
                outside: outside_ep,
                remote,
                inside: inside_ep,
                outbound,
                at: if outbound { p.ts } else { inside_ts },
                outside_ts: p.ts,
            }),
            None => out.unpaired.push(Unpaired {
                proto: p.proto,
                outside: outside_ep,
                remote,
                outbound,
                ts: p.ts,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(ms: i64, proto: Proto, src: &str, dst: &str, sig: u64) -> Packet {
        Packet {
            ts: Timestamp::from_millisecond(1_800_000_000_000 + ms).expect("time"),
            proto,
            src: src.parse().expect("src"),
            dst: dst.parse().expect("dst"),
            signature: sig,
        }
    }

    fn sides() -> Sides {
        let host = |a: &str| Net::host(a.parse().expect("an address"));
        Sides {
            pool: vec![
                host("100.64.0.1"),
                host("100.64.0.2"),
                host("2001:db8::1"),
                Net { addr: "2001:db8:100::".parse().expect("a prefix"), len: 64 },
            ],
            inside_net: lab_inside_net,
        }
    }

    #[test]
    fn pairs_by_remote_direction_and_signature_nearest_in_time() {
        let inside = vec![
            pkt(0, Proto::UDP, "10.0.1.2:40000", "100.64.1.1:7", 1),
            pkt(1, Proto::UDP, "10.0.2.2:40000", "100.64.1.1:7", 2),
            // The reply of the first, going in.
            pkt(3, Proto::UDP, "100.64.1.1:7", "10.0.1.2:40000", 3),
            // A retransmission with the same bytes, much later, from another host.
            pkt(900, Proto::UDP, "10.0.3.2:5000", "100.64.1.1:7", 1),
            // A port forward's inbound packet after DNAT.
            pkt(11, Proto::TCP, "100.64.1.3:6000", "10.0.1.2:80", 9),
        ];
        let outside = vec![
            pkt(0, Proto::UDP, "100.64.0.1:40000", "100.64.1.1:7", 1),
            pkt(1, Proto::UDP, "100.64.0.1:1024", "100.64.1.1:7", 2),
            pkt(2, Proto::UDP, "100.64.1.1:7", "100.64.0.1:40000", 3),
            pkt(10, Proto::TCP, "100.64.1.3:6000", "100.64.0.1:8080", 9),
            // Never seen inside.
            pkt(20, Proto::UDP, "100.64.0.2:999", "100.64.1.1:7", 4),
            // The outside router talking to itself: not NAT traffic.
            pkt(30, Proto::UDP, "100.64.0.254:1", "100.64.1.1:7", 5),
        ];
        let p = pair(&outside, &inside, &sides());
        assert_eq!(p.not_translated, 1);
        assert_eq!(p.unpaired.len(), 1);
        assert_eq!(p.unpaired[0].outside, "100.64.0.2:999".parse().expect("a"));
        let got: Vec<(String, String, bool)> = p
            .observations
            .iter()
            .map(|o| (o.outside.to_string(), o.inside.to_string(), o.outbound))
            .collect();
        assert_eq!(
            got,
            vec![
                ("100.64.0.1:40000".into(), "10.0.1.2:40000".into(), true),
                ("100.64.0.1:1024".into(), "10.0.2.2:40000".into(), true),
                ("100.64.0.1:40000".into(), "10.0.1.2:40000".into(), false),
                ("100.64.0.1:8080".into(), "10.0.1.2:80".into(), false),
            ]
        );
        // Inbound packets are asked about when they left the gateway inwards.
        assert_eq!(p.observations[3].at, inside[4].ts);
        assert_eq!(p.observations[0].at, outside[0].ts);
    }

    #[test]
    fn ipv6_packets_pair_through_the_pool_and_the_prefix_translation() {
        let inside = vec![
            pkt(0, Proto::UDP, "[fd00:0:0:1::2]:40000", "[2001:db8:1::1]:7", 1),
            pkt(1, Proto::TCP, "[fd00:0:0:3::5]:43000", "[2001:db8:1::2]:9", 2),
            pkt(2, Proto::ICMPV6, "[2001:db8:1::1]:0", "[fd00:0:0:3::5]:700", 3),
        ];
        let outside = vec![
            pkt(0, Proto::UDP, "[2001:db8::1]:1024", "[2001:db8:1::1]:7", 1),
            pkt(1, Proto::TCP, "[2001:db8:100::5]:43000", "[2001:db8:1::2]:9", 2),
            pkt(2, Proto::ICMPV6, "[2001:db8:1::1]:0", "[2001:db8:100::5]:700", 3),
            // Another /64 of the outside network: not the gateway's.
            pkt(3, Proto::UDP, "[2001:db8:101::5]:1", "[2001:db8:1::1]:7", 4),
        ];
        let p = pair(&outside, &inside, &sides());
        assert_eq!(p.not_translated, 1);
        assert!(p.unpaired.is_empty(), "{:?}", p.unpaired);
        let got: Vec<(String, String, bool)> = p
            .observations
            .iter()
            .map(|o| (o.outside.to_string(), o.inside.to_string(), o.outbound))
            .collect();
        assert_eq!(
            got,
            vec![
                ("[2001:db8::1]:1024".into(), "[fd00:0:0:1::2]:40000".into(), true),
                ("[2001:db8:100::5]:43000".into(), "[fd00:0:0:3::5]:43000".into(), true),
                ("[2001:db8:100::5]:700".into(), "[fd00:0:0:3::5]:700".into(), false),
            ]
        );
    }

    #[test]
    fn prefixes_contain_their_addresses_and_no_other_family() {
        let net = Net { addr: "2001:db8:100::".parse().expect("a"), len: 64 };
        assert!(net.contains("2001:db8:100::ffff:1".parse().expect("a")));
        assert!(!net.contains("2001:db8:101::1".parse().expect("a")));
        assert!(!net.contains("100.64.0.1".parse().expect("a")));
        let v4 = Net::host("100.64.0.1".parse().expect("a"));
        assert!(v4.contains("100.64.0.1".parse().expect("a")));
        assert!(!v4.contains("100.64.0.2".parse().expect("a")));
        let all = Net { addr: "0.0.0.0".parse().expect("a"), len: 0 };
        assert!(all.contains("1.2.3.4".parse().expect("a")));
        assert!(!all.contains("::1".parse().expect("a")));
    }
}
