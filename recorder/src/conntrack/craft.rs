//! ctnetlink messages built by hand, laid out as the kernel sends them (host-order headers,
//! 4-byte alignment, nested attributes): for the parser's tests and the fuzz targets' seeds.

use super::parse::{
    CTA_IP_V4_DST, CTA_IP_V4_SRC, CTA_IP_V6_DST, CTA_IP_V6_SRC, CTA_PROTO_DST_PORT, CTA_PROTO_NUM,
    CTA_PROTO_SRC_PORT, CTA_TUPLE_IP, CTA_TUPLE_PROTO, NFNL_SUBSYS_CTNETLINK, NLA_F_NESTED,
    NLMSG_HDRLEN,
};

/// Netlink attributes with nests, then wrapped into one ctnetlink message by [`Builder::message`].
#[derive(Debug, Default)]
pub struct Builder {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Builder {
    /// One attribute of type `ty`.
    pub fn attr(&mut self, ty: u16, payload: &[u8]) -> &mut Self {
        let len = u16::try_from(4 + payload.len()).expect("a small attribute");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(self.buf.len().next_multiple_of(4), 0);
        self
    }

    /// Opens a nest of type `ty`; [`Builder::end`] closes it.
    pub fn nest(&mut self, ty: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }

    /// Closes the innermost open nest.
    pub fn end(&mut self) -> &mut Self {
        let start = self.nests.pop().expect("an open nest");
        let len = u16::try_from(self.buf.len() - start).expect("a small nest");
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// A tuple nest of type `ty` (original or reply): addresses of 4 or 16 bytes, the protocol,
    /// then `l4`, the protocol's attributes (see [`ports`]).
    pub fn tuple(
        &mut self,
        ty: u16,
        src: &[u8],
        dst: &[u8],
        proto: u8,
        l4: &[(u16, Vec<u8>)],
    ) -> &mut Self {
        let (s, d) = if src.len() == 4 {
            (CTA_IP_V4_SRC, CTA_IP_V4_DST)
        } else {
            (CTA_IP_V6_SRC, CTA_IP_V6_DST)
        };
        self.nest(ty).nest(CTA_TUPLE_IP).attr(s, src).attr(d, dst).end();
        self.nest(CTA_TUPLE_PROTO).attr(CTA_PROTO_NUM, &[proto]);
        for (t, p) in l4 {
            self.attr(*t, p);
        }
        self.end().end()
    }

    /// An IPv4 tuple with ports.
    pub fn tuple_v4(
        &mut self,
        ty: u16,
        src: [u8; 4],
        dst: [u8; 4],
        proto: u8,
        sport: u16,
        dport: u16,
    ) -> &mut Self {
        self.tuple(ty, &src, &dst, proto, &ports(sport, dport))
    }

    /// The attributes as one ctnetlink message (`nlmsghdr`, `nfgenmsg`) of type `msg`.
    pub fn message(&self, msg: u16, family: u8, flags: u16, seq: u32) -> Vec<u8> {
        let mut payload = vec![family, 0, 0, 0];
        payload.extend_from_slice(&self.buf);
        netlink((NFNL_SUBSYS_CTNETLINK << 8) | msg, flags, seq, &payload)
    }
}

/// The source and destination port attributes of a tuple.
pub fn ports(sport: u16, dport: u16) -> [(u16, Vec<u8>); 2] {
    [
        (CTA_PROTO_SRC_PORT, sport.to_be_bytes().to_vec()),
        (CTA_PROTO_DST_PORT, dport.to_be_bytes().to_vec()),
    ]
}

/// One netlink message of type `ty` around `payload`, padded to 4 bytes.
pub fn netlink(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(NLMSG_HDRLEN + payload.len()).expect("a small message");
    let mut m = Vec::with_capacity(len as usize + 3);
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(payload);
    m.resize(m.len().next_multiple_of(4), 0);
    m
}
