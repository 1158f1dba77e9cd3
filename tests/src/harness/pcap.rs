//! Reading the gateway's packet captures: every IPv4 and IPv6 TCP, UDP and ICMP (ICMPv6) echo
//! packet of a pcap file, reduced to what the verifier needs (time, endpoints, and a signature of the bytes NAT
//! leaves alone, to find the same packet in the other capture).

use std::fs::File;
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::io::BufReader;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use etherparse::{Icmpv4Type, Icmpv6Type, NetSlice, SlicedPacket, TransportSlice};
use jiff::Timestamp;
use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use recorder::model::Proto;

use super::HarnessError;

/// One captured IPv4 or IPv6 packet of a kind NAT translates (TCP, UDP, ICMP or ICMPv6 echo
/// request or reply).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// The capture's timestamp (CLOCK_REALTIME, as conntrack's timestamps).
    pub ts: Timestamp,
    /// TCP, UDP, ICMP or ICMPv6.
    pub proto: Proto,
    /// Source address and port. For an ICMP echo request the port is the echo identifier, for
    /// an echo reply it is 0 (the remote side, as natrec records ICMP remotes).
    pub src: SocketAddr,
    /// Destination address and port (for an echo reply the identifier, for a request 0).
    pub dst: SocketAddr,
    /// A hash of what NAT does not change: the IPv4 identification or the IPv6 flow label, and
    /// the transport header fields and payload that are not ports (TCP sequence,
    /// acknowledgement, flags; ICMP type and sequence), so the same packet has the same
    /// signature on both sides of the gateway.
    pub signature: u64,
}

/// What reading a capture found besides the packets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames in the file.
    pub frames: u64,
    /// Frames that are not TCP/UDP/ICMP echo over IP (ARP, neighbour discovery, ICMP errors, …).
    pub skipped: u64,
}

/// Reads every TCP, UDP and ICMP echo packet of an Ethernet, Linux cooked (SLL/SLL2) or raw IP
/// pcap file, in file order.
pub fn read_pcap(path: &Path) -> Result<(Vec<Packet>, CaptureStats), HarnessError> {
    let bad = |reason: String| HarnessError::Pcap { path: path.to_owned(), reason };
    let file = File::open(path).map_err(|source| HarnessError::Io {
        what: format!("opening {}", path.display()),
        source,
    })?;
    let mut reader = PcapReader::new(BufReader::new(file)).map_err(|e| bad(e.to_string()))?;
    let datalink = reader.header().datalink;
    let mut packets = Vec::new();
    let mut stats = CaptureStats::default();
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.map_err(|e| bad(format!("frame {}: {e}", stats.frames + 1)))?;
        stats.frames += 1;
        let ts = Timestamp::from_nanosecond(
            i128::try_from(pkt.timestamp.as_nanos()).map_err(|e| bad(e.to_string()))?,
        )
        .map_err(|e| bad(format!("frame {}: timestamp: {e}", stats.frames)))?;
        match parse_frame(datalink, &pkt.data, ts) {
            Some(p) => packets.push(p),
            None => stats.skipped += 1,
        }
    }
    Ok((packets, stats))
}

/// The IP bytes of a frame, if its link layer carries IPv4 or IPv6.
fn ip_bytes(datalink: DataLink, data: &[u8]) -> Option<&[u8]> {
    let is_ip = |ethertype: &[u8]| ethertype == [0x08, 0x00] || ethertype == [0x86, 0xdd];
    match datalink {
        DataLink::ETHERNET => is_ip(data.get(12..14)?).then(|| data.get(14..))?,
        // Linux cooked v1: 16-byte header, protocol in bytes 14–15.
        DataLink::LINUX_SLL => is_ip(data.get(14..16)?).then(|| data.get(16..))?,
        // Linux cooked v2: 20-byte header, protocol in bytes 0–1.
        DataLink::LINUX_SLL2 => is_ip(data.get(0..2)?).then(|| data.get(20..))?,
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => Some(data),
        _ => None,
    }
}

/// Parses one frame; `None` for anything but a TCP, UDP or ICMP (ICMPv6) echo packet.
pub fn parse_frame(datalink: DataLink, data: &[u8], ts: Timestamp) -> Option<Packet> {
    let sliced = SlicedPacket::from_ip(ip_bytes(datalink, data)?).ok()?;
    let mut sig = DefaultHasher::new();
    let (src_ip, dst_ip) = match sliced.net.as_ref()? {
        NetSlice::Ipv4(ip) => {
            let h = ip.header();
            h.identification().hash(&mut sig);
            (IpAddr::V4(h.source_addr()), IpAddr::V4(h.destination_addr()))
        }
        NetSlice::Ipv6(ip) => {
            let h = ip.header();
            h.flow_label().value().hash(&mut sig);
            (IpAddr::V6(h.source_addr()), IpAddr::V6(h.destination_addr()))
        }
        _ => return None,
    };
    let (proto, sport, dport) = match sliced.transport.as_ref()? {
        TransportSlice::Tcp(t) => {
            (
                t.sequence_number(),
                t.acknowledgment_number(),
                [t.syn(), t.ack(), t.fin(), t.rst(), t.psh()],
                t.payload(),
            )
                .hash(&mut sig);
            (Proto::TCP, t.source_port(), t.destination_port())
        }
        TransportSlice::Udp(u) => {
            u.payload().hash(&mut sig);
            (Proto::UDP, u.source_port(), u.destination_port())
        }
        TransportSlice::Icmpv4(i) => {
            let (request, id, seq) = match i.icmp_type() {
                Icmpv4Type::EchoRequest(e) => (true, e.id, e.seq),
                Icmpv4Type::EchoReply(e) => (false, e.id, e.seq),
                _ => return None,
            };
            (request, seq, i.payload()).hash(&mut sig);
            echo(Proto::ICMP, request, id)
        }
        TransportSlice::Icmpv6(i) => {
            let (request, id, seq) = match i.icmp_type() {
                Icmpv6Type::EchoRequest(e) => (true, e.id, e.seq),
                Icmpv6Type::EchoReply(e) => (false, e.id, e.seq),
                _ => return None,
            };
            (request, seq, i.payload()).hash(&mut sig);
            echo(Proto::ICMPV6, request, id)
        }
    };
    Some(Packet {
        ts,
        proto,
        src: SocketAddr::new(src_ip, sport),
        dst: SocketAddr::new(dst_ip, dport),
        signature: sig.finish(),
    })
}

/// An echo's (proto, source port, destination port) by natrec's convention: the identifier is
/// the port of the side that chose it (the requester), the other side's port is 0.
fn echo(proto: Proto, request: bool, id: u16) -> (Proto, u16, u16) {
    if request { (proto, id, 0) } else { (proto, 0, id) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    use std::time::Duration;

    fn udp_frame(src: [u8; 4], sport: u16, payload: &[u8]) -> Vec<u8> {
        let b =
            PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4(src, [100, 64, 1, 1], 64).udp(sport, 7);
        let mut out = Vec::new();
        b.write(&mut out, payload).expect("build");
        out
    }

    #[test]
    fn reads_an_ethernet_pcap_and_signatures_ignore_ports_and_addresses() {
        let dir = std::env::temp_dir().join(format!("natrec-pcap-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("t.pcap");
        {
            let file = File::create(&path).expect("create");
            let header = PcapHeader { datalink: DataLink::ETHERNET, ..PcapHeader::default() };
            let mut w = PcapWriter::with_header(file, header).expect("writer");
            let ts = Duration::new(1_800_000_000, 123_456_000);
            for frame in [
                udp_frame([10, 0, 1, 2], 40000, b"token-1"),
                udp_frame([100, 64, 0, 1], 1024, b"token-1"),
                udp_frame([100, 64, 0, 1], 1024, b"token-2"),
                vec![0u8; 20],
            ] {
                let len = u32::try_from(frame.len()).expect("len");
                w.write_packet(&PcapPacket::new(ts, len, &frame)).expect("write");
            }
        }
        let (pkts, stats) = read_pcap(&path).expect("read");
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert_eq!(stats.frames, 4);
        assert_eq!(stats.skipped, 1);
        assert_eq!(pkts.len(), 3);
        assert_eq!(pkts[0].proto, Proto::UDP);
        assert_eq!(pkts[0].src, "10.0.1.2:40000".parse().expect("addr"));
        assert_eq!(pkts[1].src, "100.64.0.1:1024".parse().expect("addr"));
        assert_eq!(pkts[1].dst, "100.64.1.1:7".parse().expect("addr"));
        assert_eq!(pkts[0].ts, "2027-01-15T08:00:00.123456Z".parse().expect("time"));
        // The same datagram before and after NAT has the same signature; another payload not.
        assert_eq!(pkts[0].signature, pkts[1].signature);
        assert_ne!(pkts[1].signature, pkts[2].signature);
    }

    #[test]
    fn icmp_echo_identifier_is_the_requesters_port() {
        let b = PacketBuilder::ipv4([10, 0, 2, 3], [100, 64, 1, 2], 64).icmpv4_echo_request(77, 5);
        let mut req = Vec::new();
        b.write(&mut req, b"x").expect("build");
        let p = parse_frame(DataLink::RAW, &req, Timestamp::UNIX_EPOCH).expect("echo request");
        assert_eq!(p.proto, Proto::ICMP);
        assert_eq!(p.src, "10.0.2.3:77".parse().expect("addr"));
        assert_eq!(p.dst, "100.64.1.2:0".parse().expect("addr"));
        let b = PacketBuilder::ipv4([100, 64, 1, 2], [100, 64, 0, 1], 64).icmpv4_echo_reply(78, 5);
        let mut rep = Vec::new();
        b.write(&mut rep, b"x").expect("build");
        let p = parse_frame(DataLink::RAW, &rep, Timestamp::UNIX_EPOCH).expect("echo reply");
        assert_eq!(p.src, "100.64.1.2:0".parse().expect("addr"));
        assert_eq!(p.dst, "100.64.0.1:78".parse().expect("addr"));
    }

    #[test]
    fn ipv6_udp_and_icmpv6_echo_are_read_like_ipv4() {
        let inside: [u8; 16] = "fd00:0:0:1::2".parse::<std::net::Ipv6Addr>().expect("a").octets();
        let outside: [u8; 16] = "2001:db8::1".parse::<std::net::Ipv6Addr>().expect("a").octets();
        let server: [u8; 16] = "2001:db8:1::1".parse::<std::net::Ipv6Addr>().expect("a").octets();
        let udp = |src: [u8; 16], sport: u16| {
            let b = PacketBuilder::ethernet2([2; 6], [4; 6]).ipv6(src, server, 64).udp(sport, 7);
            let mut out = Vec::new();
            b.write(&mut out, b"token-6").expect("build");
            out
        };
        let before = parse_frame(DataLink::ETHERNET, &udp(inside, 40000), Timestamp::UNIX_EPOCH)
            .expect("an IPv6 datagram");
        let after = parse_frame(DataLink::ETHERNET, &udp(outside, 1024), Timestamp::UNIX_EPOCH)
            .expect("an IPv6 datagram");
        assert_eq!(before.proto, Proto::UDP);
        assert_eq!(before.src, "[fd00:0:0:1::2]:40000".parse().expect("addr"));
        assert_eq!(after.dst, "[2001:db8:1::1]:7".parse().expect("addr"));
        assert_eq!(before.signature, after.signature, "NAT66 leaves the signature alone");

        let b = PacketBuilder::ipv6(inside, server, 64).icmpv6_echo_request(77, 5);
        let mut req = Vec::new();
        b.write(&mut req, b"x").expect("build");
        let p = parse_frame(DataLink::RAW, &req, Timestamp::UNIX_EPOCH).expect("echo request");
        assert_eq!(p.proto, Proto::ICMPV6);
        assert_eq!(p.src, "[fd00:0:0:1::2]:77".parse().expect("addr"));
        assert_eq!(p.dst, "[2001:db8:1::1]:0".parse().expect("addr"));
        let b = PacketBuilder::ipv6(server, outside, 64).icmpv6_echo_reply(78, 5);
        let mut rep = Vec::new();
        b.write(&mut rep, b"x").expect("build");
        let p = parse_frame(DataLink::RAW, &rep, Timestamp::UNIX_EPOCH).expect("echo reply");
        assert_eq!(p.proto, Proto::ICMPV6);
        assert_eq!(p.dst, "[2001:db8::1]:78".parse().expect("addr"));
        // Neighbour discovery is not NAT traffic.
        let b = PacketBuilder::ipv6(inside, server, 64).icmpv6(Icmpv6Type::Unknown {
            type_u8: 135,
            code_u8: 0,
            bytes5to8: [0; 4],
        });
        let mut ns = Vec::new();
        b.write(&mut ns, &[0; 16]).expect("build");
        assert_eq!(parse_frame(DataLink::RAW, &ns, Timestamp::UNIX_EPOCH), None);
    }
}
