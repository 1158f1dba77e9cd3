//! The gateway's own view of its translations: `conntrack -L -o extended`, parsed.
//!
//! The integration tests compare natrec's records with these lines, so the mapping from a
//! conntrack entry to (inside, outside, remote) is written here again, independently of natrec's
//! own, from the two tuples `conntrack` prints.

use std::net::{IpAddr, SocketAddr};

use recorder::model::{Kind, Proto};

use crate::lab::{LabError, Netns, Result};

/// One direction of a conntrack entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Source port, or the ICMP echo identifier.
    pub sport: u16,
    /// Destination port (0 for ICMP).
    pub dport: u16,
}

/// One line of `conntrack -L -o extended`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConntrackLine {
    pub proto: Proto,
    /// The original direction (as the first packet went).
    pub orig: CtTuple,
    /// The reply direction (as answers come back, after NAT).
    pub reply: CtTuple,
    /// The TCP state, if any (`ESTABLISHED`, `TIME_WAIT`, …).
    pub state: Option<String>,
    /// The conntrack zone (0 when not printed).
    pub zone: u16,
    /// The whole line, for messages.
    pub line: String,
}

/// A translation as conntrack shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtTranslation {
    pub kind: Kind,
    pub proto: Proto,
    pub inside: SocketAddr,
    pub outside: SocketAddr,
    pub remote: SocketAddr,
}

/// A tuple being parsed: source, destination, source port (or ICMP id), destination port.
type PartialTuple = (Option<IpAddr>, Option<IpAddr>, Option<u16>, Option<u16>);

impl ConntrackLine {
    /// Parses one line; `None` for lines that are not entries (e.g. the summary).
    pub fn parse(line: &str) -> Option<ConntrackLine> {
        let mut words = line.split_whitespace();
        let family = words.next()?;
        if family != "ipv4" && family != "ipv6" {
            return None;
        }
        let _family_num = words.next()?;
        let _proto_name = words.next()?;
        let proto = Proto(words.next()?.parse().ok()?);
        let _timeout = words.next()?;
        let mut state = None;
        let mut tuples: Vec<PartialTuple> = Vec::new();
        let mut zone = 0;
        for w in words {
            let Some((k, v)) = w.split_once('=') else {
                if tuples.is_empty() && !w.starts_with('[') {
                    state = Some(w.to_owned());
                }
                continue;
            };
            match k {
                "src" => tuples.push((v.parse().ok(), None, None, None)),
                "dst" => tuples.last_mut()?.1 = v.parse().ok(),
                "sport" | "id" => tuples.last_mut()?.2 = v.parse().ok(),
                "dport" => tuples.last_mut()?.3 = v.parse().ok(),
                "zone" => zone = v.parse().ok()?,
                _ => {}
            }
        }
        let tuple = |t: &PartialTuple| {
            Some(CtTuple { src: t.0?, dst: t.1?, sport: t.2.unwrap_or(0), dport: t.3.unwrap_or(0) })
        };
        Some(ConntrackLine {
            proto,
            orig: tuple(tuples.first()?)?,
            reply: tuple(tuples.get(1)?)?,
            state,
            zone,
            line: line.to_owned(),
        })
    }

    /// The translation this entry carries, `None` when it is not translated (e.g. traffic to
    /// the gateway itself).
    ///
    /// SNAT: the reply goes to another endpoint than the original came from; DNAT: the reply
    /// comes from another endpoint than the original went to. ICMP echo: the "port" is the echo
    /// identifier for inside and outside, 0 for the remote.
    pub fn translation(&self) -> Option<CtTranslation> {
        let (o, r) = (&self.orig, &self.reply);
        let icmp = self.proto.is_icmp();
        let snat = o.src != r.dst || o.sport != if icmp { r.sport } else { r.dport };
        let dnat = o.dst != r.src || (!icmp && o.dport != r.sport);
        let ep = |ip, port| SocketAddr::new(ip, port);
        let (kind, inside, outside, remote) = match (snat, dnat) {
            (false, false) => return None,
            (true, false) => {
                (Kind::Snat, ep(o.src, o.sport), ep(r.dst, r.dport), ep(o.dst, o.dport))
            }
            (false, true) => {
                (Kind::Dnat, ep(r.src, r.sport), ep(o.dst, o.dport), ep(o.src, o.sport))
            }
            (true, true) => {
                (Kind::Both, ep(o.src, o.sport), ep(r.dst, r.dport), ep(r.src, r.sport))
            }
        };
        let (outside, remote) = if icmp {
            // The echo identifier: original id for the inside (set above), reply id outside.
            let outside_id = if kind == Kind::Dnat { o.sport } else { r.sport };
            (SocketAddr::new(outside.ip(), outside_id), SocketAddr::new(remote.ip(), 0))
        } else {
            (outside, remote)
        };
        let inside =
            if icmp && kind == Kind::Dnat { SocketAddr::new(inside.ip(), r.sport) } else { inside };
        Some(CtTranslation { kind, proto: self.proto, inside, outside, remote })
    }
}

/// Lists the conntrack entries of `ns` (IPv4 and IPv6).
pub fn conntrack_list(ns: &Netns) -> Result<Vec<ConntrackLine>> {
    let mut lines = Vec::new();
    for family in ["ipv4", "ipv6"] {
        let out = ns.exec(&["conntrack", "-L", "-o", "extended", "-f", family])?;
        let text = String::from_utf8(out.stdout).map_err(|_| {
            LabError::Invalid("conntrack printed something that is not UTF-8".into())
        })?;
        lines.extend(text.lines().filter_map(ConntrackLine::parse));
    }
    Ok(lines)
}

/// Deletes every conntrack entry of `ns`, IPv4 and IPv6 (`conntrack -F -f FAMILY`): each
/// deletion is a destroy event.
pub fn conntrack_flush(ns: &Netns) -> Result<()> {
    for family in ["ipv4", "ipv6"] {
        ns.exec(&["conntrack", "-F", "-f", family])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masqueraded_tcp_entry_maps_like_natrec() {
        let l = ConntrackLine::parse(
            "ipv4     2 tcp      6 117 TIME_WAIT src=10.0.1.2 dst=100.64.1.1 sport=40000 dport=7 \
             src=100.64.1.1 dst=100.64.0.1 sport=7 dport=40001 [ASSURED] mark=0 use=1",
        )
        .expect("parses");
        assert_eq!(l.state.as_deref(), Some("TIME_WAIT"));
        let t = l.translation().expect("translated");
        assert_eq!(t.kind, Kind::Snat);
        assert_eq!(t.inside, "10.0.1.2:40000".parse().expect("addr"));
        assert_eq!(t.outside, "100.64.0.1:40001".parse().expect("addr"));
        assert_eq!(t.remote, "100.64.1.1:7".parse().expect("addr"));
    }

    #[test]
    fn dnat_icmp_and_untranslated_entries() {
        let d = ConntrackLine::parse(
            "ipv4     2 udp      17 28 src=100.64.0.254 dst=100.64.0.1 sport=5000 dport=5353 \
             src=10.0.1.2 dst=100.64.0.254 sport=53 dport=5000 mark=0 zone=3 use=1",
        )
        .expect("parses");
        assert_eq!(d.zone, 3);
        let t = d.translation().expect("translated");
        assert_eq!(t.kind, Kind::Dnat);
        assert_eq!(t.inside, "10.0.1.2:53".parse().expect("addr"));
        assert_eq!(t.outside, "100.64.0.1:5353".parse().expect("addr"));
        assert_eq!(t.remote, "100.64.0.254:5000".parse().expect("addr"));

        let i = ConntrackLine::parse(
            "ipv4     2 icmp     1 29 src=10.0.2.2 dst=100.64.1.1 type=8 code=0 id=77 \
             src=100.64.1.1 dst=100.64.0.1 type=0 code=0 id=78 mark=0 use=1",
        )
        .expect("parses");
        let t = i.translation().expect("translated");
        assert_eq!((t.kind, t.proto), (Kind::Snat, Proto::ICMP));
        assert_eq!(t.inside, "10.0.2.2:77".parse().expect("addr"));
        assert_eq!(t.outside, "100.64.0.1:78".parse().expect("addr"));
        assert_eq!(t.remote, "100.64.1.1:0".parse().expect("addr"));

        let local = ConntrackLine::parse(
            "ipv4     2 tcp      6 431999 ESTABLISHED src=10.0.1.2 dst=10.0.1.1 sport=5 dport=22 \
             src=10.0.1.1 dst=10.0.1.2 sport=22 dport=5 [ASSURED] mark=0 use=1",
        )
        .expect("parses");
        assert_eq!(local.translation(), None);
        assert!(
            ConntrackLine::parse(
                "conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown."
            )
            .is_none()
        );
    }
}
