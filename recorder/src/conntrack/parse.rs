//! Parsing of ctnetlink messages (`IPCTNL_MSG_CT_NEW` / `IPCTNL_MSG_CT_DELETE`) into [`CtEntry`].
//!
//! Netlink headers and attribute headers are in host byte order; ctnetlink attribute payloads
//! are big-endian (the kernel does not always set `NLA_F_NET_BYTEORDER`, so it is ignored).

use jiff::Timestamp;
use recorder_common::{AF_INET, AF_INET6, Endpoints, NatKind, Tuple};

use super::ConntrackError;
use crate::model::{Flags, Translation};

/// `sizeof(struct nlmsghdr)`.
pub const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct nfgenmsg)`.
pub const NFGENMSG_LEN: usize = 4;
/// `sizeof(struct nlattr)`.
pub const NLA_HDRLEN: usize = 4;

pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;

pub const NLM_F_REQUEST: u16 = 0x01;
#[cfg(any(test, feature = "fuzzing"))]
pub const NLM_F_MULTI: u16 = 0x02;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub const NLM_F_DUMP: u16 = 0x100 | 0x200;

pub const NFNL_SUBSYS_CTNETLINK: u16 = 1;
pub const IPCTNL_MSG_CT_NEW: u16 = 0;
pub const IPCTNL_MSG_CT_GET: u16 = 1;
pub const IPCTNL_MSG_CT_DELETE: u16 = 2;
/// `NFNETLINK_V0`.
pub const NFNETLINK_V0: u8 = 0;

pub const NLA_F_NESTED: u16 = 1 << 15;
pub const NLA_F_NET_BYTEORDER: u16 = 1 << 14;
pub const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

pub const CTA_TUPLE_ORIG: u16 = 1;
pub const CTA_TUPLE_REPLY: u16 = 2;
pub const CTA_STATUS: u16 = 3;
pub const CTA_TIMEOUT: u16 = 7;
pub const CTA_MARK: u16 = 8;
pub const CTA_ID: u16 = 12;
pub const CTA_ZONE: u16 = 18;
pub const CTA_TIMESTAMP: u16 = 20;

pub const CTA_TUPLE_IP: u16 = 1;
pub const CTA_TUPLE_PROTO: u16 = 2;
pub const CTA_TUPLE_ZONE: u16 = 3;

pub const CTA_IP_V4_SRC: u16 = 1;
pub const CTA_IP_V4_DST: u16 = 2;
pub const CTA_IP_V6_SRC: u16 = 3;
pub const CTA_IP_V6_DST: u16 = 4;

pub const CTA_PROTO_NUM: u16 = 1;
pub const CTA_PROTO_SRC_PORT: u16 = 2;
pub const CTA_PROTO_DST_PORT: u16 = 3;
pub const CTA_PROTO_ICMP_ID: u16 = 4;
pub const CTA_PROTO_ICMP_TYPE: u16 = 5;
pub const CTA_PROTO_ICMP_CODE: u16 = 6;
pub const CTA_PROTO_ICMPV6_ID: u16 = 7;
pub const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
pub const CTA_PROTO_ICMPV6_CODE: u16 = 9;

pub const CTA_TIMESTAMP_START: u16 = 1;
pub const CTA_TIMESTAMP_STOP: u16 = 2;

/// Rounds `len` up to netlink's 4-byte alignment.
pub(crate) const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// One conntrack entry as ctnetlink describes it (an event or a dump reply).
///
/// The tuples are filled exactly like the kernel's `struct nf_conntrack_tuple` as the eBPF side
/// reads it (see [`Tuple`]): 16-byte addresses (IPv4 in the first 4 bytes, the rest zero),
/// ports as raw network-order `u16` memory; for ICMP and ICMPv6 the source "port" is the echo
/// identifier and the destination "port" holds the bytes `type, code`. So
/// [`recorder_common::classify`] names the same endpoints for both paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CtEntry {
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    /// IP protocol number (`CTA_PROTO_NUM` of the original tuple).
    pub proto: u8,
    /// The original-direction tuple.
    pub orig: Tuple,
    /// The reply-direction tuple.
    pub reply: Tuple,
    /// `ct->status` (`IPS_*` bits); 0 if the message did not carry `CTA_STATUS`.
    pub status: u32,
    /// Conntrack zone id (`CTA_ZONE`, else a directional `CTA_TUPLE_ZONE`); 0 when absent.
    pub zone: u16,
    /// `CTA_TIMESTAMP_START`: CLOCK_REALTIME ns, present when the entry has the timestamp
    /// extension (`net.netfilter.nf_conntrack_timestamp` was 1 when it was created).
    pub start_ns: Option<u64>,
    /// `CTA_TIMESTAMP_STOP`: CLOCK_REALTIME ns when the entry died (DESTROY events only).
    pub stop_ns: Option<u64>,
    /// `CTA_ID`: the kernel's id for the entry (unique among live entries only).
    pub id: Option<u32>,
    /// `CTA_MARK`.
    pub mark: Option<u32>,
    /// `CTA_TIMEOUT`: seconds left before the entry expires (dumps and NEW/UPDATE events).
    pub timeout_s: Option<u32>,
}

impl CtEntry {
    /// The entry's NAT kind and its inside, outside and remote endpoints, or `None` if its
    /// status carries no NAT.
    pub fn nat(&self) -> Option<(NatKind, Endpoints)> {
        let kind = NatKind::from_status(self.status)?;
        Some((kind, recorder_common::classify(kind, self.proto, &self.orig, &self.reply)))
    }

    /// Builds a translation from a conntrack entry (dump or DESTROY); `None` when it is not NATed.
    /// Times the entry lacks are taken from `now` and flagged approximate.
    pub fn translation(&self, now: Timestamp, ended: bool) -> Option<Translation> {
        let (kind, ep) = self.nat()?;
        let ts = |ns: Option<u64>| ns.and_then(|n| Timestamp::from_nanosecond(n as i128).ok());
        let mut flags = Flags::empty();
        let start = ts(self.start_ns).unwrap_or_else(|| {
            flags.insert(Flags::START_APPROX);
            now
        });
        let mut t =
            Translation::from_endpoints(self.family, self.proto, kind, &ep, self.zone, start)?;
        if ended {
            t.end = Some(ts(self.stop_ns).unwrap_or_else(|| {
                flags.insert(Flags::END_APPROX);
                now
            }));
        }
        t.flags = flags;
        Some(t)
    }
}

/// What a ctnetlink conntrack message announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CtMsgKind {
    /// `IPCTNL_MSG_CT_NEW`: a NEW or UPDATE event, or a dump reply.
    New,
    /// `IPCTNL_MSG_CT_DELETE`: a DESTROY event.
    Delete,
}

/// One netlink message of a datagram.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NlMsg<'a> {
    pub(crate) ty: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
    /// The payload after the `nlmsghdr`.
    pub(crate) payload: &'a [u8],
}

/// Iterates over the netlink messages of one datagram.
pub(crate) struct NlMsgs<'a> {
    buf: &'a [u8],
}

impl<'a> NlMsgs<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
}

impl<'a> Iterator for NlMsgs<'a> {
    type Item = Result<NlMsg<'a>, ConntrackError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let buf = std::mem::take(&mut self.buf);
        if buf.len() < NLMSG_HDRLEN {
            return Some(Err(malformed("netlink message shorter than its header")));
        }
        let len = ne_u32(&buf[0..4]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Some(Err(malformed("netlink message length outside the datagram")));
        }
        let msg = NlMsg {
            ty: ne_u16(&buf[4..6]),
            flags: ne_u16(&buf[6..8]),
            seq: ne_u32(&buf[8..12]),
            payload: &buf[NLMSG_HDRLEN..len],
        };
        self.buf = buf.get(align4(len)..).unwrap_or_default();
        Some(Ok(msg))
    }
}

/// Iterates over the attributes of one attribute block: `(type without flags, payload)`.
struct Attrs<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8]), ConntrackError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let buf = std::mem::take(&mut self.buf);
        if buf.len() < NLA_HDRLEN {
            return Some(Err(malformed("attribute shorter than its header")));
        }
        let len = usize::from(ne_u16(&buf[0..2]));
        if len < NLA_HDRLEN || len > buf.len() {
            return Some(Err(malformed("attribute length outside its message")));
        }
        let ty = ne_u16(&buf[2..4]) & NLA_TYPE_MASK;
        self.buf = buf.get(align4(len)..).unwrap_or_default();
        Some(Ok((ty, &buf[NLA_HDRLEN..len])))
    }
}

fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs { buf }
}

fn malformed(reason: &'static str) -> ConntrackError {
    ConntrackError::Malformed { reason }
}

fn ne_u16(b: &[u8]) -> u16 {
    let mut a = [0; 2];
    a.copy_from_slice(&b[..2]);
    u16::from_ne_bytes(a)
}

fn ne_u32(b: &[u8]) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_ne_bytes(a)
}

fn fixed<const N: usize>(p: &[u8], what: &'static str) -> Result<[u8; N], ConntrackError> {
    p.try_into().map_err(|_| malformed(what))
}

fn be_u16(p: &[u8], what: &'static str) -> Result<u16, ConntrackError> {
    fixed::<2>(p, what).map(u16::from_be_bytes)
}

fn be_u32(p: &[u8], what: &'static str) -> Result<u32, ConntrackError> {
    fixed::<4>(p, what).map(u32::from_be_bytes)
}

fn be_u64(p: &[u8], what: &'static str) -> Result<u64, ConntrackError> {
    fixed::<8>(p, what).map(u64::from_be_bytes)
}

/// Splits an nfnetlink message type into its subsystem and message id.
pub(crate) fn nfnl_split(ty: u16) -> (u16, u16) {
    (ty >> 8, ty & 0xff)
}

/// Parses the payload of a ctnetlink conntrack message (after the `nlmsghdr`).
///
/// Returns `Ok(None)` for a message that is not a conntrack NEW/DELETE of ctnetlink (e.g. an
/// expectation message).
pub(crate) fn parse_ct_msg(
    ty: u16,
    payload: &[u8],
) -> Result<Option<(CtMsgKind, CtEntry)>, ConntrackError> {
    let kind = match nfnl_split(ty) {
        (NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_NEW) => CtMsgKind::New,
        (NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE) => CtMsgKind::Delete,
        _ => return Ok(None),
    };
    parse_ct_payload(payload).map(|e| Some((kind, e)))
}

/// Parses `nfgenmsg` and the conntrack attributes after it.
fn parse_ct_payload(payload: &[u8]) -> Result<CtEntry, ConntrackError> {
    if payload.len() < NFGENMSG_LEN {
        return Err(malformed("conntrack message shorter than nfgenmsg"));
    }
    let family = payload[0];
    if family != AF_INET && family != AF_INET6 {
        return Err(malformed("conntrack message of a family other than IPv4/IPv6"));
    }
    let mut e = CtEntry { family, ..CtEntry::default() };
    let (mut orig, mut reply) = (None, None);
    let (mut zone, mut tuple_zone) = (None, None);
    for a in attrs(&payload[NFGENMSG_LEN..]) {
        let (ty, p) = a?;
        match ty {
            CTA_TUPLE_ORIG => orig = Some(parse_tuple(family, p, &mut tuple_zone)?),
            CTA_TUPLE_REPLY => reply = Some(parse_tuple(family, p, &mut tuple_zone)?),
            CTA_STATUS => e.status = be_u32(p, "CTA_STATUS is not 4 bytes")?,
            CTA_ZONE => zone = Some(be_u16(p, "CTA_ZONE is not 2 bytes")?),
            CTA_ID => e.id = Some(be_u32(p, "CTA_ID is not 4 bytes")?),
            CTA_MARK => e.mark = Some(be_u32(p, "CTA_MARK is not 4 bytes")?),
            CTA_TIMEOUT => e.timeout_s = Some(be_u32(p, "CTA_TIMEOUT is not 4 bytes")?),
            CTA_TIMESTAMP => {
                for a in attrs(p) {
                    let (ty, p) = a?;
                    match ty {
                        CTA_TIMESTAMP_START => {
                            e.start_ns = Some(be_u64(p, "CTA_TIMESTAMP_START is not 8 bytes")?)
                        }
                        CTA_TIMESTAMP_STOP => {
                            e.stop_ns = Some(be_u64(p, "CTA_TIMESTAMP_STOP is not 8 bytes")?)
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let (orig, orig_proto) =
        orig.ok_or_else(|| malformed("conntrack message without CTA_TUPLE_ORIG"))?;
    let (reply, _) = reply.ok_or_else(|| malformed("conntrack message without CTA_TUPLE_REPLY"))?;
    e.proto = orig_proto;
    e.orig = orig;
    e.reply = reply;
    e.zone = zone.or(tuple_zone).unwrap_or(0);
    Ok(e)
}

/// Parses a `CTA_TUPLE_*` nest into a kernel-layout [`Tuple`] and its protocol number.
fn parse_tuple(
    family: u8,
    p: &[u8],
    tuple_zone: &mut Option<u16>,
) -> Result<(Tuple, u8), ConntrackError> {
    let mut t = Tuple::default();
    let (mut src, mut dst, mut proto) = (false, false, None);
    for a in attrs(p) {
        let (ty, p) = a?;
        match ty {
            CTA_TUPLE_IP => {
                for a in attrs(p) {
                    let (ty, p) = a?;
                    match (family, ty) {
                        (AF_INET, CTA_IP_V4_SRC) => {
                            t.src[..4]
                                .copy_from_slice(&fixed::<4>(p, "CTA_IP_V4_SRC is not 4 bytes")?);
                            src = true;
                        }
                        (AF_INET, CTA_IP_V4_DST) => {
                            t.dst[..4]
                                .copy_from_slice(&fixed::<4>(p, "CTA_IP_V4_DST is not 4 bytes")?);
                            dst = true;
                        }
                        (AF_INET6, CTA_IP_V6_SRC) => {
                            t.src = fixed(p, "CTA_IP_V6_SRC is not 16 bytes")?;
                            src = true;
                        }
                        (AF_INET6, CTA_IP_V6_DST) => {
                            t.dst = fixed(p, "CTA_IP_V6_DST is not 16 bytes")?;
                            dst = true;
                        }
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => proto = Some(parse_proto(p, &mut t)?),
            CTA_TUPLE_ZONE => *tuple_zone = Some(be_u16(p, "CTA_TUPLE_ZONE is not 2 bytes")?),
            _ => {}
        }
    }
    if !(src && dst) {
        return Err(malformed("tuple without both addresses of the message's family"));
    }
    let proto = proto.ok_or_else(|| malformed("tuple without CTA_TUPLE_PROTO"))?;
    Ok((t, proto))
}

/// Parses a `CTA_TUPLE_PROTO` nest into the ports of `t`; returns the protocol number.
///
/// Ports absent from the message (protocols without ports) stay 0.
fn parse_proto(p: &[u8], t: &mut Tuple) -> Result<u8, ConntrackError> {
    let (mut num, mut icmp_type, mut icmp_code) = (None, 0u8, 0u8);
    let mut icmp = false;
    for a in attrs(p) {
        let (ty, p) = a?;
        match ty {
            CTA_PROTO_NUM => num = Some(fixed::<1>(p, "CTA_PROTO_NUM is not 1 byte")?[0]),
            // Raw network-order memory, as the kernel keeps it.
            CTA_PROTO_SRC_PORT => {
                t.src_port = u16::from_ne_bytes(fixed(p, "CTA_PROTO_SRC_PORT is not 2 bytes")?)
            }
            CTA_PROTO_DST_PORT => {
                t.dst_port = u16::from_ne_bytes(fixed(p, "CTA_PROTO_DST_PORT is not 2 bytes")?)
            }
            CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => {
                t.src_port = u16::from_ne_bytes(fixed(p, "ICMP id is not 2 bytes")?);
                icmp = true;
            }
            CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMPV6_TYPE => {
                icmp_type = fixed::<1>(p, "ICMP type is not 1 byte")?[0];
                icmp = true;
            }
            CTA_PROTO_ICMP_CODE | CTA_PROTO_ICMPV6_CODE => {
                icmp_code = fixed::<1>(p, "ICMP code is not 1 byte")?[0];
                icmp = true;
            }
            _ => {}
        }
    }
    if icmp {
        // `union { __be16 all; struct { u8 type, code; } icmp; }` of `dst.u`.
        t.dst_port = u16::from_ne_bytes([icmp_type, icmp_code]);
    }
    num.ok_or_else(|| malformed("tuple without CTA_PROTO_NUM"))
}

/// Builds one netlink request: `nlmsghdr` + `nfgenmsg` (no attributes).
pub(crate) fn build_request(ty: u16, flags: u16, seq: u32, family: u8) -> Vec<u8> {
    let len = NLMSG_HDRLEN + NFGENMSG_LEN;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.push(family);
    m.push(NFNETLINK_V0);
    m.extend_from_slice(&0u16.to_be_bytes());
    m
}

/// The errno of an `NLMSG_ERROR` or `NLMSG_DONE` payload (a negative `int`, 0 for an ack).
pub(crate) fn payload_errno(payload: &[u8]) -> Result<i32, ConntrackError> {
    let b: [u8; 4] = payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| malformed("NLMSG_ERROR/NLMSG_DONE without an error code"))?;
    i32::from_ne_bytes(b)
        .checked_neg()
        .ok_or_else(|| malformed("NLMSG_ERROR/NLMSG_DONE error code out of range"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::conntrack::craft::Builder;

    pub(crate) fn v4_tcp_snat() -> Vec<u8> {
        let mut b = Builder::default();
        b.tuple_v4(CTA_TUPLE_ORIG, [10, 1, 0, 2], [198, 51, 100, 7], 6, 40000, 443)
            .tuple_v4(CTA_TUPLE_REPLY, [198, 51, 100, 7], [100, 64, 0, 1], 6, 443, 40001)
            .attr(CTA_ZONE, &7u16.to_be_bytes())
            .attr(
                CTA_STATUS,
                &(recorder_common::IPS_SRC_NAT | recorder_common::IPS_CONFIRMED).to_be_bytes(),
            )
            .attr(CTA_ID, &0xdead_beefu32.to_be_bytes())
            .attr(CTA_MARK, &5u32.to_be_bytes())
            .nest(CTA_TIMESTAMP)
            .attr(CTA_TIMESTAMP_START, &1_700_000_000_123_456_789u64.to_be_bytes())
            .attr(CTA_TIMESTAMP_STOP, &1_700_000_060_000_000_001u64.to_be_bytes())
            .end();
        b.message(IPCTNL_MSG_CT_DELETE, AF_INET, 0, 0)
    }

    /// A DESTROY event of a UDP SNAT entry from 10.1.0.2:`port` (outside 100.64.0.1:`port`).
    pub(crate) fn v4_udp_snat_destroy(port: u16) -> Vec<u8> {
        let mut b = Builder::default();
        b.tuple_v4(CTA_TUPLE_ORIG, [10, 1, 0, 2], [198, 51, 100, 7], 17, port, 53)
            .tuple_v4(CTA_TUPLE_REPLY, [198, 51, 100, 7], [100, 64, 0, 1], 17, 53, port)
            .attr(
                CTA_STATUS,
                &(recorder_common::IPS_SRC_NAT | recorder_common::IPS_CONFIRMED).to_be_bytes(),
            );
        b.message(IPCTNL_MSG_CT_DELETE, AF_INET, 0, 0)
    }

    fn parse_one(m: &[u8]) -> Result<Option<(CtMsgKind, CtEntry)>, ConntrackError> {
        let msg = NlMsgs::new(m).next().expect("one message")?;
        parse_ct_msg(msg.ty, msg.payload)
    }

    #[test]
    fn v4_tcp_destroy_with_timestamps_and_zone() {
        let (kind, e) = parse_one(&v4_tcp_snat()).expect("parse").expect("ct message");
        assert_eq!(kind, CtMsgKind::Delete);
        assert_eq!((e.family, e.proto, e.zone), (AF_INET, 6, 7));
        assert_eq!(&e.orig.src[..4], &[10, 1, 0, 2]);
        assert!(e.orig.src[4..].iter().all(|&b| b == 0));
        assert_eq!(&e.orig.dst[..4], &[198, 51, 100, 7]);
        // Raw network-order memory: from_be gives the port back.
        assert_eq!(u16::from_be(e.orig.src_port), 40000);
        assert_eq!(e.orig.src_port.to_ne_bytes(), 40000u16.to_be_bytes());
        assert_eq!(u16::from_be(e.orig.dst_port), 443);
        assert_eq!(&e.reply.dst[..4], &[100, 64, 0, 1]);
        assert_eq!(u16::from_be(e.reply.dst_port), 40001);
        assert_eq!(e.status, recorder_common::IPS_SRC_NAT | recorder_common::IPS_CONFIRMED);
        assert_eq!(e.id, Some(0xdead_beef));
        assert_eq!(e.mark, Some(5));
        assert_eq!(e.timeout_s, None);
        assert_eq!(e.start_ns, Some(1_700_000_000_123_456_789));
        assert_eq!(e.stop_ns, Some(1_700_000_060_000_000_001));

        let (kind, ep) = e.nat().expect("snat");
        assert_eq!(kind, NatKind::Snat);
        assert_eq!((&ep.inside[..4], u16::from_be(ep.inside_port)), (&[10, 1, 0, 2][..], 40000));
        assert_eq!(
            (&ep.outside[..4], u16::from_be(ep.outside_port)),
            (&[100, 64, 0, 1][..], 40001)
        );
        assert_eq!((&ep.remote[..4], u16::from_be(ep.remote_port)), (&[198, 51, 100, 7][..], 443));
    }

    #[test]
    fn v6_udp_dump_reply_with_directional_zone_and_timeout() {
        let a: [u8; 16] = "2001:db8::2".parse::<std::net::Ipv6Addr>().expect("v6").octets();
        let r: [u8; 16] = "2001:db8:ffff::9".parse::<std::net::Ipv6Addr>().expect("v6").octets();
        let o: [u8; 16] = "2001:db8:1::1".parse::<std::net::Ipv6Addr>().expect("v6").octets();
        let mut b = Builder::default();
        for (ty, s, d, sp, dp) in
            [(CTA_TUPLE_ORIG, a, r, 5353u16, 53u16), (CTA_TUPLE_REPLY, r, o, 53, 6000)]
        {
            b.nest(ty)
                .nest(CTA_TUPLE_IP)
                .attr(CTA_IP_V6_SRC, &s)
                .attr(CTA_IP_V6_DST, &d)
                .end()
                .nest(CTA_TUPLE_PROTO)
                .attr(CTA_PROTO_NUM, &[17])
                .attr(CTA_PROTO_SRC_PORT, &sp.to_be_bytes())
                .attr(CTA_PROTO_DST_PORT, &dp.to_be_bytes())
                .end()
                .attr(CTA_TUPLE_ZONE, &9u16.to_be_bytes())
                .end();
        }
        b.attr(CTA_STATUS, &recorder_common::IPS_SRC_NAT.to_be_bytes())
            .attr(CTA_TIMEOUT, &30u32.to_be_bytes())
            // An attribute natrec does not know is skipped.
            .attr(CTA_TIMESTAMP + 40, &[1, 2, 3]);
        let m = b.message(IPCTNL_MSG_CT_NEW, AF_INET6, NLM_F_MULTI, 4);
        let (kind, e) = parse_one(&m).expect("parse").expect("ct message");
        assert_eq!(kind, CtMsgKind::New);
        assert_eq!((e.family, e.proto, e.zone), (AF_INET6, 17, 9));
        assert_eq!((e.orig.src, e.orig.dst, e.reply.src, e.reply.dst), (a, r, r, o));
        assert_eq!(u16::from_be(e.orig.src_port), 5353);
        assert_eq!(u16::from_be(e.reply.dst_port), 6000);
        assert_eq!((e.start_ns, e.stop_ns, e.id, e.mark), (None, None, None, None));
        assert_eq!(e.timeout_s, Some(30));
        let (_, ep) = e.nat().expect("snat");
        assert_eq!((ep.outside, u16::from_be(ep.outside_port)), (o, 6000));
    }

    #[test]
    fn icmp_echo_lays_out_id_type_and_code_like_the_kernel() {
        let mut b = Builder::default();
        for (ty, s, d, id, itype) in [
            (CTA_TUPLE_ORIG, [10, 1, 0, 2], [198, 51, 100, 7], 77u16, 8u8),
            (CTA_TUPLE_REPLY, [198, 51, 100, 7], [100, 64, 0, 1], 1024, 0),
        ] {
            b.nest(ty)
                .nest(CTA_TUPLE_IP)
                .attr(CTA_IP_V4_SRC, &s)
                .attr(CTA_IP_V4_DST, &d)
                .end()
                .nest(CTA_TUPLE_PROTO)
                .attr(CTA_PROTO_NUM, &[1])
                .attr(CTA_PROTO_ICMP_ID, &id.to_be_bytes())
                .attr(CTA_PROTO_ICMP_TYPE, &[itype])
                .attr(CTA_PROTO_ICMP_CODE, &[0])
                .end()
                .end();
        }
        b.attr(CTA_STATUS, &recorder_common::IPS_SRC_NAT.to_be_bytes());
        let m = b.message(IPCTNL_MSG_CT_DELETE, AF_INET, 0, 0);
        let (_, e) = parse_one(&m).expect("parse").expect("ct message");
        assert_eq!(e.proto, 1);
        assert_eq!(u16::from_be(e.orig.src_port), 77);
        // The same value recorder-common's tests use for an echo request (type 8, code 0).
        assert_eq!(e.orig.dst_port, 0x0800u16.to_be());
        assert_eq!(e.orig.dst_port.to_ne_bytes(), [8, 0]);
        assert_eq!(e.reply.dst_port.to_ne_bytes(), [0, 0]);
        let (_, ep) = e.nat().expect("snat");
        assert_eq!(u16::from_be(ep.inside_port), 77);
        assert_eq!(u16::from_be(ep.outside_port), 1024);
        assert_eq!(ep.remote_port, 0);
    }

    #[test]
    fn several_messages_in_one_datagram_are_all_read() {
        let mut dgram = v4_tcp_snat();
        dgram.extend_from_slice(&v4_tcp_snat());
        let n = NlMsgs::new(&dgram)
            .map(|m| {
                let m = m.expect("msg");
                parse_ct_msg(m.ty, m.payload).expect("parse")
            })
            .filter(|p| p.is_some())
            .count();
        assert_eq!(n, 2);
    }

    #[test]
    fn non_conntrack_messages_are_not_entries() {
        let m = Builder::default().message(IPCTNL_MSG_CT_GET, AF_INET, 0, 0);
        assert!(parse_one(&m).expect("parse").is_none());
    }

    #[test]
    fn truncated_and_garbage_input_gives_errors_not_panics() {
        let good = v4_tcp_snat();
        // Every truncation either fails to frame or fails to parse; none panics.
        for cut in 0..good.len() {
            let part = &good[..cut];
            let r: Result<Vec<_>, _> =
                NlMsgs::new(part).map(|m| m.and_then(|m| parse_ct_msg(m.ty, m.payload))).collect();
            assert!(r.is_err() || cut == 0, "truncation at {cut} parsed");
        }
        // Truncating inside the attributes while keeping the header length honest: any cut
        // before the end of the reply tuple loses a required attribute; later cuts must not
        // panic (they may drop optional attributes whole).
        let mut tuples = Builder::default();
        tuples.tuple_v4(CTA_TUPLE_ORIG, [10, 1, 0, 2], [198, 51, 100, 7], 6, 40000, 443).tuple_v4(
            CTA_TUPLE_REPLY,
            [198, 51, 100, 7],
            [100, 64, 0, 1],
            6,
            443,
            40001,
        );
        let required = tuples.message(IPCTNL_MSG_CT_DELETE, AF_INET, 0, 0).len();
        for cut in NLMSG_HDRLEN..good.len() {
            let mut m = good[..cut].to_vec();
            m[0..4].copy_from_slice(&(cut as u32).to_ne_bytes());
            let msg = NlMsgs::new(&m).next().expect("message").expect("framed");
            let r = parse_ct_msg(msg.ty, msg.payload);
            if cut < required {
                assert!(r.is_err(), "cut at {cut} parsed");
            }
        }
        // Pseudo-random garbage (a fixed LCG, so failures reproduce).
        let mut x: u32 = 12345;
        for len in 0..400usize {
            let mut g: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            if len >= 8 {
                // Make it look like a ctnetlink message so the attribute parser runs.
                g[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
                g[4..6].copy_from_slice(
                    &((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW).to_ne_bytes(),
                );
            }
            for m in NlMsgs::new(&g).flatten() {
                let _ = parse_ct_msg(m.ty, m.payload);
            }
        }
        // Wrong attribute sizes are named.
        let mut b = Builder::default();
        b.tuple_v4(CTA_TUPLE_ORIG, [1, 2, 3, 4], [5, 6, 7, 8], 6, 1, 2)
            .tuple_v4(CTA_TUPLE_REPLY, [5, 6, 7, 8], [1, 2, 3, 4], 6, 2, 1)
            .attr(CTA_STATUS, &[0, 1]);
        let err = parse_one(&b.message(IPCTNL_MSG_CT_NEW, AF_INET, 0, 0)).expect_err("bad status");
        assert!(err.to_string().contains("CTA_STATUS"), "{err}");
        // A v6 message with v4 addresses has no addresses of its family.
        let err = parse_one(&b.message(IPCTNL_MSG_CT_NEW, AF_INET6, 0, 0)).expect_err("family");
        assert!(err.to_string().contains("addresses"), "{err}");
    }

    #[test]
    fn error_payloads_give_errno() {
        assert_eq!(payload_errno(&(-1i32).to_ne_bytes()).expect("errno"), 1);
        assert_eq!(payload_errno(&0i32.to_ne_bytes()).expect("ack"), 0);
        assert!(payload_errno(&[1, 2]).is_err());
        // Found by the ctnetlink fuzz target: the code cannot be negated.
        assert!(payload_errno(&i32::MIN.to_ne_bytes()).is_err());
    }
}
