//! The layout shared by natrec's eBPF programs and its userspace daemon.
//!
//! Everything here is `#[repr(C)]`, `Copy`, and padded explicitly, so that the kernel side
//! (`recorder-ebpf`, built for `bpfel-unknown-none`) and the userspace side (`recorder`) agree
//! byte for byte. With the `user` feature the types implement [`aya::Pod`].
//!
//! Nothing here knows a kernel struct offset: [`KernelOffsets`] is filled at load time from the
//! running kernel's BTF and handed to the programs as a read-only global.
#![no_std]

/// Linux `AF_INET`.
pub const AF_INET: u8 = 2;
/// Linux `AF_INET6`.
pub const AF_INET6: u8 = 10;

/// `IPPROTO_ICMP`.
pub const PROTO_ICMP: u8 = 1;
/// `IPPROTO_TCP`.
pub const PROTO_TCP: u8 = 6;
/// `IPPROTO_UDP`.
pub const PROTO_UDP: u8 = 17;
/// `IPPROTO_ICMPV6`.
pub const PROTO_ICMPV6: u8 = 58;

/// `IPS_SRC_NAT` from `enum ip_conntrack_status` (uapi, stable).
pub const IPS_SRC_NAT: u32 = 1 << 4;
/// `IPS_DST_NAT` from `enum ip_conntrack_status` (uapi, stable).
pub const IPS_DST_NAT: u32 = 1 << 5;
/// `IPS_CONFIRMED` from `enum ip_conntrack_status` (uapi, stable).
pub const IPS_CONFIRMED: u32 = 1 << 3;

/// `IP_CT_ESTABLISHED`: a packet of an entry that has seen traffic both ways, original direction.
pub const IP_CT_ESTABLISHED: u8 = 0;
/// `IP_CT_NEW`: a packet that starts (or restarts) an entry, original direction.
pub const IP_CT_NEW: u8 = 2;
/// `IP_CT_IS_REPLY`: offset added to ctinfo for reply-direction packets (this `ctinfo` and above
/// are replies).
pub const IP_CT_IS_REPLY: u8 = 3;

/// What kind of translation an entry carries.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatKind {
    /// Source NAT (masquerade, `snat to`): an inside host talks out.
    Snat = 1,
    /// Destination NAT (port forward): a remote host talks to an inside server.
    Dnat = 2,
    /// Both at once (hairpin NAT, or SNAT plus DNAT on one entry).
    Both = 3,
}

impl NatKind {
    /// The kind of NAT a conntrack status word says an entry carries, if any.
    #[inline(always)]
    pub fn from_status(status: u32) -> Option<Self> {
        match (status & IPS_SRC_NAT != 0, status & IPS_DST_NAT != 0) {
            (true, false) => Some(Self::Snat),
            (false, true) => Some(Self::Dnat),
            (true, true) => Some(Self::Both),
            (false, false) => None,
        }
    }

    /// The kind from its wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Snat),
            2 => Some(Self::Dnat),
            3 => Some(Self::Both),
            _ => None,
        }
    }
}

/// One direction of a conntrack entry, as the kernel keeps it.
///
/// Addresses are 16 bytes for both families: an IPv4 address fills the first 4 bytes and the
/// rest is zero (as `union nf_inet_addr`). Ports are in network byte order, as in the kernel;
/// for ICMP echo the source "port" is the echo identifier and the destination "port" holds the
/// type and code bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Tuple {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub _pad: [u8; 4],
}

/// The three endpoints of a translation.
///
/// Ports in network byte order, as in [`Tuple`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Endpoints {
    pub inside: [u8; 16],
    pub outside: [u8; 16],
    pub remote: [u8; 16],
    pub inside_port: u16,
    pub outside_port: u16,
    pub remote_port: u16,
    pub _pad: [u8; 2],
}

/// Maps a conntrack entry's two tuples to its inside, outside and remote endpoints.
///
/// With original `s1:p1 → d1:q1` and reply `s2:p2 → d2:q2`:
///
/// | kind | inside | outside | remote |
/// |------|--------|---------|--------|
/// | SNAT | `s1:p1` | `d2:q2` | `d1:q1` |
/// | DNAT | `s2:p2` | `d1:q1` | `s1:p1` |
/// | both | `s1:p1` | `d2:q2` | `s2:p2` |
///
/// ICMP and ICMPv6 carry the echo identifier in the source "port" of both tuples and type/code in
/// the destination: for them the identifier is the port of the inside and outside endpoints
/// (original and reply identifier), and the remote's port is 0.
///
/// The same function runs in the kernel (for ring-buffer events) and in userspace (for ctnetlink
/// messages), so that both sides name a translation's endpoints the same way and pair.
#[inline(always)]
pub fn classify(kind: NatKind, proto: u8, orig: &Tuple, reply: &Tuple) -> Endpoints {
    let mut e = Endpoints::default();
    classify_into(kind, proto, orig, reply, &mut e);
    e
}

/// [`classify`] writing into `e` in place (the eBPF side fills its ring-buffer record directly:
/// the BPF stack has no room for copies).
#[inline(always)]
pub fn classify_into(kind: NatKind, proto: u8, orig: &Tuple, reply: &Tuple, e: &mut Endpoints) {
    let icmp = proto == PROTO_ICMP || proto == PROTO_ICMPV6;
    // (inside, outside, remote) as (tuple, use source?) picks, then the port rules.
    let (inside, outside, remote) = match kind {
        NatKind::Snat => ((orig, true), (reply, false), (orig, false)),
        NatKind::Dnat => ((reply, true), (orig, false), (orig, true)),
        NatKind::Both => ((orig, true), (reply, false), (reply, true)),
    };
    let addr = |(t, src): (&Tuple, bool)| if src { t.src } else { t.dst };
    let port = |(t, src): (&Tuple, bool)| if src { t.src_port } else { t.dst_port };
    e.inside = addr(inside);
    e.outside = addr(outside);
    e.remote = addr(remote);
    e.inside_port = port(inside);
    if icmp {
        // The echo identifier sits in the source "port" of both tuples.
        e.outside_port = outside.0.src_port;
        e.remote_port = 0;
    } else {
        e.outside_port = port(outside);
        e.remote_port = port(remote);
    }
    e._pad = [0; 2];
}

/// Where an event was observed.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// tc egress of a WAN interface (after SNAT).
    WanEgress = 1,
    /// tc egress of an inside (LAN) interface (after DNAT of an inbound port forward).
    LanEgress = 2,
    /// The entry's end: its `nf_conn` went back to the slab (`kmem_cache_free` tracepoint).
    CtFree = 3,
}

impl Hook {
    /// The hook from its wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::WanEgress),
            2 => Some(Self::LanEgress),
            3 => Some(Self::CtFree),
            _ => None,
        }
    }
}

/// One translation seen by the kernel: written to the ring buffer once per conntrack entry at its
/// start (hooks [`Hook::WanEgress`], [`Hook::LanEgress`]) and, where the end probe runs, once
/// more at its end ([`Hook::CtFree`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the packet was seen, or the entry freed.
    pub ktime_ns: u64,
    /// The entry's start (`nf_conn_tstamp.start`, CLOCK_REALTIME ns) or 0 when the entry has no
    /// timestamp extension (`net.netfilter.nf_conntrack_timestamp` was 0 when it was created).
    /// At an end, the start reported at the entry's start (0 if none was, see `start_known`).
    pub ct_start_ns: u64,
    /// Address of the `nf_conn`: identity while the entry lives (slots are reused; pair it with
    /// `ct_start_ns`). Never shown to users.
    pub ct_id: u64,
    pub ep: Endpoints,
    /// Conntrack zone id (0 when the kernel has no zones).
    pub zone: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    /// IP protocol number.
    pub proto: u8,
    /// `ct->status`.
    pub ct_status: u32,
    /// Interface the packet left through (0 at an end).
    pub ifindex: u32,
    /// [`NatKind`] as u8.
    pub kind: u8,
    /// `enum ip_conntrack_info` of the packet (0 at an end).
    pub ctinfo: u8,
    /// [`Hook`] as u8.
    pub hook: u8,
    /// At an end: 1 when the programs reported this entry's start (then `ct_start_ns` is the
    /// start they reported), 0 when they never did or have forgotten it.
    pub start_known: u8,
    /// At an end: how many jiffies the entry had been expired when it was freed (conntrack's
    /// garbage collection reaps expired entries lazily); its true end is `ktime_ns` minus that.
    /// 0 when it was deleted before its timeout (a TCP reset, a flush), and at a start.
    pub late_jiffies: u32,
    pub _pad: [u8; 4],
}

/// Kernel struct offsets, in bytes, read from the running kernel's BTF at load time.
///
/// Handed to the eBPF programs as the read-only global `OFFSETS`. A field set to
/// [`KernelOffsets::ABSENT`] names a member this kernel does not have.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `struct sk_buff._nfct`.
    pub skb_nfct: u32,
    /// `struct nf_conn.status`.
    pub ct_status: u32,
    /// `struct nf_conn.tuplehash[IP_CT_DIR_ORIGINAL].tuple`.
    pub ct_tuple_orig: u32,
    /// `struct nf_conn.tuplehash[IP_CT_DIR_REPLY].tuple`.
    pub ct_tuple_reply: u32,
    /// `struct nf_conn.zone.id`, or ABSENT without `CONFIG_NF_CONNTRACK_ZONES`.
    pub ct_zone_id: u32,
    /// `struct nf_conn.ext`, or ABSENT.
    pub ct_ext: u32,
    /// `struct nf_conntrack_tuple.src.u3`.
    pub tuple_src_u3: u32,
    /// `struct nf_conntrack_tuple.src.u`.
    pub tuple_src_u: u32,
    /// `struct nf_conntrack_tuple.src.l3num`.
    pub tuple_src_l3num: u32,
    /// `struct nf_conntrack_tuple.dst.u3`.
    pub tuple_dst_u3: u32,
    /// `struct nf_conntrack_tuple.dst.u`.
    pub tuple_dst_u: u32,
    /// `struct nf_conntrack_tuple.dst.protonum`.
    pub tuple_dst_protonum: u32,
    /// `struct nf_ct_ext.offset` (the per-extension offset array), or ABSENT.
    pub ext_offset: u32,
    /// `NF_CT_EXT_TSTAMP` (an index into `nf_ct_ext.offset`), or ABSENT.
    pub ext_tstamp_id: u32,
    /// `struct nf_conn_tstamp.start`, or ABSENT.
    pub tstamp_start: u32,
    /// `struct nf_conn.timeout` (expiry in jiffies, 32 bits), or ABSENT.
    pub ct_timeout: u32,
    /// `struct nf_conn.ct_net` (a `struct net *`), or ABSENT without network namespaces.
    pub ct_net: u32,
    /// `struct net.ns.inum` (the namespace's inode number), or ABSENT.
    pub net_inum: u32,
    /// `struct kmem_cache.name`, or ABSENT.
    pub cache_name: u32,
    /// The inode number of the network namespace whose entries the end probe reports (that of
    /// `/proc/self/ns/net` in the daemon); 0 for all. Not an offset: set by the daemon, handed
    /// over with them.
    pub netns_inum: u32,
}

impl KernelOffsets {
    /// Marks a member the running kernel does not have.
    pub const ABSENT: u32 = u32::MAX;

    /// All members absent: what the programs see if userspace forgot to set the global.
    pub const fn absent() -> Self {
        Self {
            skb_nfct: Self::ABSENT,
            ct_status: Self::ABSENT,
            ct_tuple_orig: Self::ABSENT,
            ct_tuple_reply: Self::ABSENT,
            ct_zone_id: Self::ABSENT,
            ct_ext: Self::ABSENT,
            tuple_src_u3: Self::ABSENT,
            tuple_src_u: Self::ABSENT,
            tuple_src_l3num: Self::ABSENT,
            tuple_dst_u3: Self::ABSENT,
            tuple_dst_u: Self::ABSENT,
            tuple_dst_protonum: Self::ABSENT,
            ext_offset: Self::ABSENT,
            ext_tstamp_id: Self::ABSENT,
            tstamp_start: Self::ABSENT,
            ct_timeout: Self::ABSENT,
            ct_net: Self::ABSENT,
            net_inum: Self::ABSENT,
            cache_name: Self::ABSENT,
            netns_inum: 0,
        }
    }
}

/// Indices of the per-CPU `COUNTERS` array. Nothing here is counted per packet: the
/// classifiers' fast path touches no map. Per program runs and run time come from the kernel's
/// BPF run statistics instead.
pub mod counter {
    /// Events written to the ring buffer.
    pub const EVENTS: u32 = 0;
    /// Events lost because the ring buffer was full (`bpf_ringbuf_reserve` failed).
    pub const RINGBUF_FULL: u32 = 1;
    /// Reads of kernel memory that failed (an event for that packet was not made).
    pub const READ_ERRORS: u32 = 2;
    /// Conntrack entries freed (any, NATed or not, in any namespace) the end probe looked at.
    pub const CT_FREES: u32 = 3;
    /// End events written (also counted in `EVENTS`), to the ring buffer or its spill ring.
    pub const END_EVENTS: u32 = 4;
    /// End events written to the spill ring because the ring buffer was full (also counted in
    /// `END_EVENTS`). An end lost from both counts in `RINGBUF_FULL`.
    pub const ENDS_SPILLED: u32 = 5;
    /// Reported entries that could not be marked as reported because the map of reported
    /// entries was full (with the end probe, whose map forgets nothing: more live NATed entries
    /// than `--seen-entries`). Nothing is lost: such an entry may be reported again by its next
    /// packets (userspace drops the duplicates), and its end, which then carries no start, is
    /// paired with its start by the tuple.
    pub const SEEN_FULL: u32 = 6;
    /// Number of counters.
    pub const COUNT: u32 = 7;
}

/// Default capacity of the map of conntrack entries already reported.
pub const DEFAULT_SEEN_ENTRIES: u32 = 1 << 18;
/// Default ring buffer size in bytes (a power of two, a multiple of the page size).
pub const DEFAULT_RINGBUF_BYTES: u32 = 1 << 24;
/// Size of the spill ring, where the end probe writes when the ring buffer is full: a lost start
/// is made good by the entry's next packet or its end, but an entry whose start and end were
/// both lost would not be recorded at all. About 18 000 ends.
pub const END_SPILL_BYTES: u32 = 1 << 21;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, no implicit padding (all padding is explicit fields), every bit
    // pattern is valid.
    unsafe impl aya::Pod for super::NatEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KernelOffsets {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<Tuple>(), 40);
        assert_eq!(core::mem::size_of::<Endpoints>(), 56);
        assert_eq!(core::mem::size_of::<NatEvent>(), 24 + 56 + 4 + 4 + 4 + 4 + 8);
        assert_eq!(core::mem::size_of::<KernelOffsets>(), 20 * 4);
    }

    fn tuple(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16) -> Tuple {
        let mut t = Tuple::default();
        t.src[..4].copy_from_slice(&src);
        t.dst[..4].copy_from_slice(&dst);
        t.src_port = sp.to_be();
        t.dst_port = dp.to_be();
        t
    }

    #[test]
    fn snat_dnat_and_both_name_the_right_endpoints() {
        // SNAT: 10.0.0.2:5000 -> 198.51.100.7:443, masqueraded to 100.64.0.1:6000.
        let o = tuple([10, 0, 0, 2], 5000, [198, 51, 100, 7], 443);
        let r = tuple([198, 51, 100, 7], 443, [100, 64, 0, 1], 6000);
        let e = classify(NatKind::Snat, PROTO_TCP, &o, &r);
        assert_eq!(&e.inside[..4], &[10, 0, 0, 2]);
        assert_eq!(u16::from_be(e.inside_port), 5000);
        assert_eq!(&e.outside[..4], &[100, 64, 0, 1]);
        assert_eq!(u16::from_be(e.outside_port), 6000);
        assert_eq!(&e.remote[..4], &[198, 51, 100, 7]);
        assert_eq!(u16::from_be(e.remote_port), 443);

        // DNAT: 198.51.100.7:7000 -> 100.64.0.1:8080 forwarded to 10.0.0.9:80.
        let o = tuple([198, 51, 100, 7], 7000, [100, 64, 0, 1], 8080);
        let r = tuple([10, 0, 0, 9], 80, [198, 51, 100, 7], 7000);
        let e = classify(NatKind::Dnat, PROTO_TCP, &o, &r);
        assert_eq!((&e.inside[..4], u16::from_be(e.inside_port)), (&[10, 0, 0, 9][..], 80));
        assert_eq!((&e.outside[..4], u16::from_be(e.outside_port)), (&[100, 64, 0, 1][..], 8080));
        assert_eq!((&e.remote[..4], u16::from_be(e.remote_port)), (&[198, 51, 100, 7][..], 7000));

        // Both (hairpin): 10.0.0.2:5000 -> 100.64.0.1:8080 => 10.0.0.9:80, source 10.0.0.1:6000.
        let o = tuple([10, 0, 0, 2], 5000, [100, 64, 0, 1], 8080);
        let r = tuple([10, 0, 0, 9], 80, [10, 0, 0, 1], 6000);
        let e = classify(NatKind::Both, PROTO_TCP, &o, &r);
        assert_eq!((&e.inside[..4], u16::from_be(e.inside_port)), (&[10, 0, 0, 2][..], 5000));
        assert_eq!((&e.outside[..4], u16::from_be(e.outside_port)), (&[10, 0, 0, 1][..], 6000));
        assert_eq!((&e.remote[..4], u16::from_be(e.remote_port)), (&[10, 0, 0, 9][..], 80));
    }

    #[test]
    fn icmp_uses_the_echo_id_on_both_sides_of_the_gateway() {
        // Echo id 77 rewritten to 1024; dst "port" holds type/code.
        let o = tuple([10, 0, 0, 2], 77, [198, 51, 100, 7], 0x0800);
        let r = tuple([198, 51, 100, 7], 1024, [100, 64, 0, 1], 0);
        let e = classify(NatKind::Snat, PROTO_ICMP, &o, &r);
        assert_eq!(u16::from_be(e.inside_port), 77);
        assert_eq!(u16::from_be(e.outside_port), 1024);
        assert_eq!(e.remote_port, 0);
    }

    #[test]
    fn status_bits_give_the_kind() {
        assert_eq!(NatKind::from_status(IPS_CONFIRMED), None);
        assert_eq!(NatKind::from_status(IPS_SRC_NAT), Some(NatKind::Snat));
        assert_eq!(NatKind::from_status(IPS_DST_NAT), Some(NatKind::Dnat));
        assert_eq!(NatKind::from_status(IPS_SRC_NAT | IPS_DST_NAT), Some(NatKind::Both));
        for k in [NatKind::Snat, NatKind::Dnat, NatKind::Both] {
            assert_eq!(NatKind::from_u8(k as u8), Some(k));
        }
    }
}
