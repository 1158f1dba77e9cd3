//! A NAT gateway lab: inside hosts, a gateway with nftables NAT, an outside network of servers.
//!
//! Addressing (only 10.x, 100.64.x, fd00::/8 and 2001:db8::/32, never routed outside the lab):
//!
//! | what | where | IPv4 | IPv6 (with [`LabSpec::ipv6`]; `i` in hex) |
//! |------|-------|------|------|
//! | inside host `i` (1-based) | its own namespace, `eth0` | `10.0.i.2`, `10.0.i.3`, … (one per [`LabSpec::addrs_per_host`]), default route via `10.0.i.1` | `fd00:0:0:i::2`, `::3`, … (`/64`), default route via `fd00:0:0:i::1` |
//! | gateway LAN side | gateway namespace, `lan<i>` (veth to host `i`) | `10.0.i.1/24` | `fd00:0:0:i::1/64` |
//! | gateway WAN side | gateway namespace, `wan0` (veth to the outside) | `100.64.0.1/24` and the rest of the outside pool, `100.64.0.2` … `100.64.0.<pool>`; default route via `100.64.0.254` | `2001:db8::1/64` … `2001:db8::<pool>`; default route via `2001:db8::fe` |
//! | outside router | outside namespace, `eth0` | `100.64.0.254/24` | `2001:db8::fe/64`, and a route to the prefix translation's `2001:db8:100::/64` via `2001:db8::1` |
//! | outside servers | outside namespace, `eth0` | `100.64.1.1` … `100.64.1.<servers>` (`/24`) | `2001:db8:1::1` … `2001:db8:1::<servers>` (`/64`) |
//!
//! The outside namespace has no route to `10.0.0.0/8` or `fd00::/8`: inside hosts reach it only
//! through the gateway's source NAT. The gateway's nftables table `ip natrec_lab` masquerades
//! (pool of 1) or `snat`s to the pool range (pool ≥ 2) everything leaving `wan0`, and when
//! [`LabSpec::port_forward`] is set forwards `100.64.0.1:8080/tcp` to `10.0.1.2:80` and
//! `100.64.0.1:5353/udp` to `10.0.1.2:53` (inside host 1). With [`LabSpec::ipv6`] the table
//! `ip6 natrec_lab6` does the same for IPv6 (NAT66): masquerade or `snat` to the IPv6 pool, the
//! port forwards from `[2001:db8::1]` to `[fd00:0:0:1::2]`, and with
//! [`LabSpec::prefix_translation`] the last inside host's `/64` is mapped to `2001:db8:100::/64`
//! by `snat ip6 prefix to` (NPTv6 done by conntrack: the address changes, the port stays).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::lab::{LabError, Netns, NftTable, Result, veth_pair};

/// The gateway's WAN interface.
pub const WAN_IF: &str = "wan0";
/// The outside router's address on the WAN link.
pub const OUTSIDE_ROUTER: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 254);
/// The outside router's IPv6 address on the WAN link.
pub const OUTSIDE_ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe);
/// The outside prefix the last inside host's `/64` is mapped to with
/// [`LabSpec::prefix_translation`].
pub const NPT_PREFIX: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0);
/// The port-forward's outside TCP port (to inside host 1, port [`DNAT_TCP_INSIDE_PORT`]).
pub const DNAT_TCP_PORT: u16 = 8080;
/// The inside port the TCP port forward reaches.
pub const DNAT_TCP_INSIDE_PORT: u16 = 80;
/// The port-forward's outside UDP port (to inside host 1, port [`DNAT_UDP_INSIDE_PORT`]).
pub const DNAT_UDP_PORT: u16 = 5353;
/// The inside port the UDP port forward reaches.
pub const DNAT_UDP_INSIDE_PORT: u16 = 53;
/// The name of the gateway's nftables table (family `ip`).
pub const NFT_TABLE: &str = "natrec_lab";
/// The name of the gateway's IPv6 nftables table (family `ip6`).
pub const NFT_TABLE6: &str = "natrec_lab6";

/// Conntrack timeouts (seconds) set in the gateway namespace: `(sysctl name under
/// net.netfilter, seconds)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts(pub Vec<(String, u32)>);

impl Timeouts {
    /// Short timeouts so that finished flows end within seconds: UDP and ICMP 3 s, TCP closing
    /// states 2 s (established TCP keeps the kernel default).
    pub fn short() -> Timeouts {
        Timeouts(
            [
                ("nf_conntrack_udp_timeout", 3),
                ("nf_conntrack_udp_timeout_stream", 3),
                ("nf_conntrack_icmp_timeout", 3),
                ("nf_conntrack_tcp_timeout_time_wait", 2),
                ("nf_conntrack_tcp_timeout_close", 2),
                ("nf_conntrack_tcp_timeout_close_wait", 2),
                ("nf_conntrack_tcp_timeout_fin_wait", 2),
                ("nf_conntrack_tcp_timeout_last_ack", 2),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        )
    }

    /// The kernel defaults (nothing set).
    pub fn kernel_defaults() -> Timeouts {
        Timeouts(Vec::new())
    }
}

/// An address family of a dual-stack lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4 (NAT44).
    V4,
    /// IPv6 (NAT66; the lab must be built with [`LabSpec::ipv6`]).
    V6,
}

/// What lab to build.
#[derive(Clone, Debug)]
pub struct LabSpec {
    /// Namespace name prefix (short: it is part of every namespace name).
    pub prefix: String,
    /// Inside host namespaces (1–250).
    pub inside_hosts: u8,
    /// Addresses per inside host (1–200).
    pub addrs_per_host: u8,
    /// Outside pool size: 1 = `masquerade` on `wan0`, ≥ 2 = `snat to 100.64.0.1-100.64.0.<n>`
    /// (at most 250).
    pub pool_size: u8,
    /// Options appended to the masquerade/snat statement, e.g. `"random"`, `"persistent"`
    /// (empty for none).
    pub nat_options: String,
    /// Outside server addresses (1–250).
    pub servers: u8,
    /// Conntrack timeouts in the gateway.
    pub timeouts: Timeouts,
    /// Whether to install the TCP and UDP port forwards to inside host 1.
    pub port_forward: bool,
    /// Dual stack: IPv6 addresses everywhere and NAT66 beside the IPv4 NAT.
    pub ipv6: bool,
    /// With [`LabSpec::ipv6`] and at least two inside hosts: the last host's `/64` leaves
    /// through a prefix translation to [`NPT_PREFIX`] instead of the pool.
    pub prefix_translation: bool,
}

impl Default for LabSpec {
    /// Three inside hosts with one address each, masquerade, two servers, short timeouts, the
    /// port forwards, IPv4 only.
    fn default() -> Self {
        LabSpec {
            prefix: "lab".into(),
            inside_hosts: 3,
            addrs_per_host: 1,
            pool_size: 1,
            nat_options: String::new(),
            servers: 2,
            timeouts: Timeouts::short(),
            port_forward: true,
            ipv6: false,
            prefix_translation: false,
        }
    }
}

impl LabSpec {
    /// The IPv6 address `n` of the pool (1-based): `2001:db8::<n>`.
    fn pool6_addr(n: u8) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(n))
    }
    /// Whether the last inside host is behind the prefix translation.
    fn npt_host(&self) -> Option<u8> {
        (self.ipv6 && self.prefix_translation).then_some(self.inside_hosts)
    }
}

/// An inside host: its namespace and addresses.
#[derive(Debug)]
pub struct InsideHost {
    ns: Netns,
    index: u8,
    addrs: Vec<Ipv4Addr>,
    addrs6: Vec<Ipv6Addr>,
}

impl InsideHost {
    /// The host's namespace.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }
    /// Its index (1-based; the `i` of `10.0.i.0/24`).
    pub fn index(&self) -> u8 {
        self.index
    }
    /// Its first address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addrs[0]
    }
    /// All its addresses.
    pub fn addrs(&self) -> &[Ipv4Addr] {
        &self.addrs
    }
    /// The gateway's address on this host's LAN (`10.0.i.1`).
    pub fn gateway_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, self.index, 1)
    }
    /// Its first IPv6 address (`fd00:0:0:i::2`), if the lab is dual-stack.
    pub fn addr6(&self) -> Option<Ipv6Addr> {
        self.addrs6.first().copied()
    }
    /// All its IPv6 addresses (none in an IPv4-only lab).
    pub fn addrs6(&self) -> &[Ipv6Addr] {
        &self.addrs6
    }
    /// The gateway's IPv6 address on this host's LAN (`fd00:0:0:i::1`).
    pub fn gateway_addr6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0, 0, u16::from(self.index), 0, 0, 0, 1)
    }
    /// Its first address of `family` (panics for IPv6 in an IPv4-only lab).
    pub fn addr_of(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => IpAddr::V4(self.addr()),
            Family::V6 => IpAddr::V6(self.addr6().expect("an IPv6 address: build with ipv6")),
        }
    }
    /// The gateway's interface towards this host (`lan<i>`).
    pub fn lan_if(&self) -> String {
        format!("lan{}", self.index)
    }
}

/// A built lab; dropping it removes every namespace (and so every veth and nftables table).
#[derive(Debug)]
pub struct GatewayLab {
    spec: LabSpec,
    hosts: Vec<InsideHost>,
    outside: Netns,
    nft: NftTable,
    nft6: Option<NftTable>,
    gateway: Netns,
}

fn check(what: &str, v: u8, min: u8, max: u8) -> Result<()> {
    if v < min || v > max {
        return Err(LabError::Invalid(format!("lab spec: {what} must be {min}-{max}, got {v}")));
    }
    Ok(())
}

impl GatewayLab {
    /// Builds the lab described by `spec` (see the module documentation for the addressing).
    pub fn build(spec: LabSpec) -> Result<GatewayLab> {
        check("inside_hosts", spec.inside_hosts, 1, 250)?;
        check("addrs_per_host", spec.addrs_per_host, 1, 200)?;
        check("pool_size", spec.pool_size, 1, 250)?;
        check("servers", spec.servers, 1, 250)?;
        if spec.prefix_translation && (!spec.ipv6 || spec.inside_hosts < 2) {
            return Err(LabError::Invalid(
                "lab spec: prefix_translation needs ipv6 and at least two inside hosts".into(),
            ));
        }

        let gateway = Netns::new(&format!("{}-gw", spec.prefix))?;
        let outside = Netns::new(&format!("{}-out", spec.prefix))?;
        if spec.ipv6 {
            no_dad(&gateway)?;
            no_dad(&outside)?;
        }

        // WAN link and the outside network.
        veth_pair(&gateway, WAN_IF, &outside, "eth0")?;
        for i in 1..=spec.pool_size {
            gateway.exec(&["ip", "addr", "add", &format!("100.64.0.{i}/24"), "dev", WAN_IF])?;
        }
        gateway.exec(&["ip", "route", "add", "default", "via", &OUTSIDE_ROUTER.to_string()])?;
        outside.exec(&["ip", "addr", "add", &format!("{OUTSIDE_ROUTER}/24"), "dev", "eth0"])?;
        for s in 1..=spec.servers {
            outside.exec(&["ip", "addr", "add", &format!("100.64.1.{s}/24"), "dev", "eth0"])?;
        }
        if spec.ipv6 {
            for i in 1..=spec.pool_size {
                add6(&gateway, LabSpec::pool6_addr(i), 64, WAN_IF)?;
            }
            gateway.exec(&[
                "ip",
                "-6",
                "route",
                "add",
                "default",
                "via",
                &OUTSIDE_ROUTER6.to_string(),
            ])?;
            add6(&outside, OUTSIDE_ROUTER6, 64, "eth0")?;
            for s in 1..=spec.servers {
                let server = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, u16::from(s));
                add6(&outside, server, 64, "eth0")?;
            }
            if spec.prefix_translation {
                let via = LabSpec::pool6_addr(1).to_string();
                outside.exec(&[
                    "ip",
                    "-6",
                    "route",
                    "add",
                    &format!("{NPT_PREFIX}/64"),
                    "via",
                    &via,
                ])?;
            }
        }
        allow_ping_sockets(&outside)?;
        allow_ping_sockets(&gateway)?;

        // One LAN link per inside host.
        let mut hosts = Vec::with_capacity(usize::from(spec.inside_hosts));
        for i in 1..=spec.inside_hosts {
            let ns = Netns::new(&format!("{}-h{i}", spec.prefix))?;
            if spec.ipv6 {
                no_dad(&ns)?;
            }
            let lan = format!("lan{i}");
            veth_pair(&gateway, &lan, &ns, "eth0")?;
            gateway.exec(&["ip", "addr", "add", &format!("10.0.{i}.1/24"), "dev", &lan])?;
            let addrs: Vec<Ipv4Addr> =
                (0..spec.addrs_per_host).map(|a| Ipv4Addr::new(10, 0, i, 2 + a)).collect();
            for a in &addrs {
                ns.exec(&["ip", "addr", "add", &format!("{a}/24"), "dev", "eth0"])?;
            }
            ns.exec(&["ip", "route", "add", "default", "via", &format!("10.0.{i}.1")])?;
            let mut addrs6 = Vec::new();
            if spec.ipv6 {
                let gw6 = Ipv6Addr::new(0xfd00, 0, 0, u16::from(i), 0, 0, 0, 1);
                add6(&gateway, gw6, 64, &lan)?;
                addrs6 = (0..spec.addrs_per_host).map(|a| inside6(i, a)).collect();
                for a in &addrs6 {
                    add6(&ns, *a, 64, "eth0")?;
                }
                ns.exec(&["ip", "-6", "route", "add", "default", "via", &gw6.to_string()])?;
            }
            allow_ping_sockets(&ns)?;
            hosts.push(InsideHost { ns, index: i, addrs, addrs6 });
        }

        // NAT, then forwarding and conntrack settings (the conntrack sysctls of a namespace
        // are there once the nat hooks are).
        let nft = NftTable::create(Some(&gateway), "ip", NFT_TABLE, &ruleset(&spec))?;
        gateway.sysctl("net.ipv4.ip_forward", "1")?;
        let nft6 = if spec.ipv6 {
            gateway.sysctl("net.ipv6.conf.all.forwarding", "1")?;
            Some(NftTable::create(Some(&gateway), "ip6", NFT_TABLE6, &ruleset6(&spec))?)
        } else {
            None
        };
        for (key, secs) in &spec.timeouts.0 {
            gateway.sysctl(&format!("net.netfilter.{key}"), &secs.to_string())?;
        }
        Ok(GatewayLab { spec, hosts, outside, nft, nft6, gateway })
    }

    /// The spec the lab was built from.
    pub fn spec(&self) -> &LabSpec {
        &self.spec
    }
    /// The gateway namespace.
    pub fn gateway(&self) -> &Netns {
        &self.gateway
    }
    /// The outside namespace (servers and the WAN router).
    pub fn outside(&self) -> &Netns {
        &self.outside
    }
    /// The inside hosts, host `i` at index `i - 1`.
    pub fn hosts(&self) -> &[InsideHost] {
        &self.hosts
    }
    /// The gateway's WAN interface name.
    pub fn wan_if(&self) -> &'static str {
        WAN_IF
    }
    /// The gateway's LAN interface names, one per inside host.
    pub fn lan_ifs(&self) -> Vec<String> {
        self.hosts.iter().map(InsideHost::lan_if).collect()
    }
    /// The gateway's main WAN address (the masquerade address, the port forwards' address).
    pub fn wan_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(100, 64, 0, 1)
    }
    /// The outside pool: the addresses inside hosts may appear as.
    pub fn pool(&self) -> Vec<Ipv4Addr> {
        (1..=self.spec.pool_size).map(|i| Ipv4Addr::new(100, 64, 0, i)).collect()
    }
    /// The outside server addresses.
    pub fn servers(&self) -> Vec<Ipv4Addr> {
        (1..=self.spec.servers).map(|s| Ipv4Addr::new(100, 64, 1, s)).collect()
    }
    /// The nftables table doing the NAT.
    pub fn nft_table(&self) -> &NftTable {
        &self.nft
    }
    /// The nftables table doing NAT66, if the lab is dual-stack.
    pub fn nft_table6(&self) -> Option<&NftTable> {
        self.nft6.as_ref()
    }
    /// The gateway's main IPv6 WAN address (`2001:db8::1`), if the lab is dual-stack.
    pub fn wan_addr6(&self) -> Option<Ipv6Addr> {
        self.spec.ipv6.then(|| LabSpec::pool6_addr(1))
    }
    /// The IPv6 outside pool (empty in an IPv4-only lab).
    pub fn pool6(&self) -> Vec<Ipv6Addr> {
        if !self.spec.ipv6 {
            return Vec::new();
        }
        (1..=self.spec.pool_size).map(LabSpec::pool6_addr).collect()
    }
    /// The outside server IPv6 addresses (empty in an IPv4-only lab).
    pub fn servers6(&self) -> Vec<Ipv6Addr> {
        if !self.spec.ipv6 {
            return Vec::new();
        }
        (1..=self.spec.servers)
            .map(|s| Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, u16::from(s)))
            .collect()
    }
    /// The gateway's main WAN address of `family` (panics for IPv6 in an IPv4-only lab).
    pub fn wan_addr_of(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => IpAddr::V4(self.wan_addr()),
            Family::V6 => IpAddr::V6(self.wan_addr6().expect("a dual-stack lab")),
        }
    }
    /// The outside server addresses of `family` (empty for IPv6 in an IPv4-only lab).
    pub fn servers_of(&self, family: Family) -> Vec<IpAddr> {
        match family {
            Family::V4 => self.servers().into_iter().map(IpAddr::V4).collect(),
            Family::V6 => self.servers6().into_iter().map(IpAddr::V6).collect(),
        }
    }
    /// The inside host behind the prefix translation (see [`LabSpec::prefix_translation`]).
    pub fn npt_host(&self) -> Option<&InsideHost> {
        self.spec.npt_host().map(|i| &self.hosts[usize::from(i) - 1])
    }
    /// The outside address the prefix translation maps the inside address `inside` to: the
    /// same interface identifier under [`NPT_PREFIX`].
    pub fn npt_outside(inside: Ipv6Addr) -> Ipv6Addr {
        let mut seg = inside.segments();
        seg[..4].copy_from_slice(&NPT_PREFIX.segments()[..4]);
        Ipv6Addr::from(seg)
    }
    /// The TCP port forward: (outside address the world connects to, inside server address), if
    /// the lab has port forwards.
    pub fn dnat_tcp(&self) -> Option<(SocketAddr, SocketAddr)> {
        self.forward(IpAddr::V4(self.wan_addr()), DNAT_TCP_PORT, DNAT_TCP_INSIDE_PORT)
    }
    /// The UDP port forward, as [`GatewayLab::dnat_tcp`].
    pub fn dnat_udp(&self) -> Option<(SocketAddr, SocketAddr)> {
        self.forward(IpAddr::V4(self.wan_addr()), DNAT_UDP_PORT, DNAT_UDP_INSIDE_PORT)
    }
    /// The IPv6 TCP port forward (`[2001:db8::1]:8080` to `[fd00:0:0:1::2]:80`), if the lab is
    /// dual-stack and has port forwards.
    pub fn dnat_tcp6(&self) -> Option<(SocketAddr, SocketAddr)> {
        let wan = self.wan_addr6()?;
        self.forward(IpAddr::V6(wan), DNAT_TCP_PORT, DNAT_TCP_INSIDE_PORT)
    }
    /// The IPv6 UDP port forward, as [`GatewayLab::dnat_tcp6`].
    pub fn dnat_udp6(&self) -> Option<(SocketAddr, SocketAddr)> {
        let wan = self.wan_addr6()?;
        self.forward(IpAddr::V6(wan), DNAT_UDP_PORT, DNAT_UDP_INSIDE_PORT)
    }
    /// A port forward from `outside:port` to inside host 1's first address (of the same family)
    /// at `inside_port`.
    fn forward(
        &self,
        outside: IpAddr,
        port: u16,
        inside_port: u16,
    ) -> Option<(SocketAddr, SocketAddr)> {
        if !self.spec.port_forward {
            return None;
        }
        let inside = match outside {
            IpAddr::V4(_) => SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 2), inside_port).into(),
            IpAddr::V6(_) => SocketAddrV6::new(inside6(1, 0), inside_port, 0, 0).into(),
        };
        Some((SocketAddr::new(outside, port), inside))
    }
    /// The gateway's conntrack entries (`conntrack -L -o extended` in its namespace).
    pub fn conntrack_list(&self) -> Result<Vec<crate::conntrack::ConntrackLine>> {
        crate::conntrack::conntrack_list(&self.gateway)
    }

    /// Deletes every conntrack entry of the gateway (`conntrack -F`; each is a DESTROY event).
    pub fn conntrack_flush(&self) -> Result<()> {
        crate::conntrack::conntrack_flush(&self.gateway)
    }

    /// The names of every namespace of the lab.
    pub fn namespace_names(&self) -> Vec<String> {
        let mut names = vec![self.gateway.name().to_owned(), self.outside.name().to_owned()];
        names.extend(self.hosts.iter().map(|h| h.ns.name().to_owned()));
        names
    }
}

/// Inside host `host`'s IPv6 address number `n` (0-based): `fd00:0:0:<host>::<n + 2>`.
fn inside6(host: u8, n: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0, 0, u16::from(host), 0, 0, 0, 2 + u16::from(n))
}

/// Turns duplicate address detection off for the interfaces `ns` will have: their link-local
/// addresses would otherwise stay tentative for a second, and a gateway whose WAN link-local is
/// tentative holds forwarded packets about as long before it asks for its router's address.
fn no_dad(ns: &Netns) -> Result<()> {
    ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
    ns.sysctl("net.ipv6.conf.default.accept_dad", "0")
}

/// Adds `addr/len` to `dev` in `ns` without duplicate address detection (which would keep the
/// address tentative, and unusable, for a second or more).
fn add6(ns: &Netns, addr: Ipv6Addr, len: u8, dev: &str) -> Result<()> {
    ns.exec(&["ip", "-6", "addr", "add", &format!("{addr}/{len}"), "dev", dev, "nodad"])?;
    Ok(())
}

/// Lets root open ICMP datagram ("ping") sockets in `ns` (the lab's ICMP echo helper uses them;
/// the setting is for ICMPv6 ping sockets too).
fn allow_ping_sockets(ns: &Netns) -> Result<()> {
    ns.sysctl("net.ipv4.ping_group_range", "0 2147483647")
}

/// The gateway's nftables ruleset for `spec`.
fn ruleset(spec: &LabSpec) -> String {
    let opts =
        if spec.nat_options.is_empty() { String::new() } else { format!(" {}", spec.nat_options) };
    let snat = if spec.pool_size == 1 {
        format!("masquerade{opts}")
    } else {
        format!("snat to 100.64.0.1-100.64.0.{}{opts}", spec.pool_size)
    };
    let forwards = if spec.port_forward {
        format!(
            "iifname \"{WAN_IF}\" ip daddr 100.64.0.1 tcp dport {DNAT_TCP_PORT} dnat to 10.0.1.2:{DNAT_TCP_INSIDE_PORT}\n\
             iifname \"{WAN_IF}\" ip daddr 100.64.0.1 udp dport {DNAT_UDP_PORT} dnat to 10.0.1.2:{DNAT_UDP_INSIDE_PORT}\n"
        )
    } else {
        String::new()
    };
    format!(
        "table ip {NFT_TABLE} {{\n\
         chain prerouting {{\n\
         type nat hook prerouting priority dstnat; policy accept;\n\
         {forwards}}}\n\
         chain postrouting {{\n\
         type nat hook postrouting priority srcnat; policy accept;\n\
         oifname \"{WAN_IF}\" {snat}\n\
         }}\n\
         }}\n"
    )
}

/// The gateway's IPv6 nftables ruleset for `spec` (NAT66; see the module documentation).
fn ruleset6(spec: &LabSpec) -> String {
    let opts =
        if spec.nat_options.is_empty() { String::new() } else { format!(" {}", spec.nat_options) };
    let snat = if spec.pool_size == 1 {
        format!("masquerade{opts}")
    } else {
        format!("snat to 2001:db8::1-2001:db8::{:x}{opts}", spec.pool_size)
    };
    let npt = match spec.npt_host() {
        Some(i) => format!(
            "oifname \"{WAN_IF}\" ip6 saddr fd00:0:0:{i:x}::/64 snat ip6 prefix to {NPT_PREFIX}/64\n"
        ),
        None => String::new(),
    };
    let inside = inside6(1, 0);
    let forwards = if spec.port_forward {
        format!(
            "iifname \"{WAN_IF}\" ip6 daddr 2001:db8::1 tcp dport {DNAT_TCP_PORT} dnat to [{inside}]:{DNAT_TCP_INSIDE_PORT}\n\
             iifname \"{WAN_IF}\" ip6 daddr 2001:db8::1 udp dport {DNAT_UDP_PORT} dnat to [{inside}]:{DNAT_UDP_INSIDE_PORT}\n"
        )
    } else {
        String::new()
    };
    format!(
        "table ip6 {NFT_TABLE6} {{\n\
         chain prerouting {{\n\
         type nat hook prerouting priority dstnat; policy accept;\n\
         {forwards}}}\n\
         chain postrouting {{\n\
         type nat hook postrouting priority srcnat; policy accept;\n\
         {npt}oifname \"{WAN_IF}\" {snat}\n\
         }}\n\
         }}\n"
    )
}
