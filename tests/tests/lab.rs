//! Tests of the lab itself: namespaces are created, usable and removed; the gateway lab NATs.

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt as _;

use natrec_tests::conntrack::conntrack_list;
use natrec_tests::gateway::{GatewayLab, LabSpec};
use natrec_tests::lab::{self, Netns};
use natrec_tests::traffic::{self, EchoServer, sa};
use recorder::model::{Kind, Proto};

fn ns_listed(name: &str) -> bool {
    let out = lab::run_cmd(&["ip", "netns", "list"]).expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).lines().any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn netns_is_created_entered_and_removed() {
    lab::ensure_root_capabilities().expect("lab capabilities");
    let ns = Netns::new("t").expect("netns");
    let name = ns.name().to_owned();
    assert!(ns_listed(&name), "{name} not in `ip netns list`");
    let links = ns.exec(&["ip", "-o", "link"]).expect("ip link");
    let links = String::from_utf8_lossy(&links.stdout);
    assert_eq!(links.lines().count(), 1, "a fresh namespace has only lo: {links}");
    // run_in's thread is in the namespace, the caller is not.
    let inode_inside = ns
        .run_in(|| std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino()))
        .expect("run_in")
        .expect("stat ns");
    let inode_here = std::fs::metadata("/proc/thread-self/ns/net").expect("stat own ns").ino();
    let inode_file = std::fs::metadata(format!("/run/netns/{name}")).expect("stat").ino();
    assert_eq!(inode_inside, inode_file);
    assert_ne!(inode_inside, inode_here);
    // Processes left running inside do not keep the namespace alive.
    let sleeper = ns.spawn(&["sleep", "60"]).expect("spawn");
    let leaked = ns.spawn(&["sleep", "60"]).expect("spawn");
    std::mem::forget(leaked); // only the namespace's drop can end this one
    // `ip netns exec` enters the namespace just after it starts: wait for both (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while ns.pids().expect("pids").len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(ns.pids().expect("pids").len(), 2);
    drop(sleeper);
    drop(ns);
    assert!(!ns_listed(&name), "{name} still listed after drop");
}

#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn gateway_lab_masquerades_forwards_and_cleans_up() {
    lab::ensure_root_capabilities().expect("lab capabilities");
    let lab =
        GatewayLab::build(LabSpec { prefix: "lt".into(), ..LabSpec::default() }).expect("lab");
    let names = lab.namespace_names();
    assert_eq!(names.len(), 5, "gateway, outside and 3 hosts: {names:?}");
    let server = lab.servers()[0];
    let tcp = EchoServer::tcp(lab.outside(), sa(server, 7)).expect("tcp echo");
    let udp = EchoServer::udp(lab.outside(), sa(server, 7)).expect("udp echo");

    // TCP out of host 2: the server sees the WAN address; conntrack shows the masquerade.
    let h2 = &lab.hosts()[1];
    let flow = traffic::tcp_exchange(h2.ns(), sa(h2.addr(), 41000), sa(server, 7), 3).expect("tcp");
    assert_eq!(flow.local, sa(h2.addr(), 41000));
    assert!(flow.first_packet <= flow.last_packet);
    let seen = tcp.peers();
    assert_eq!(seen.len(), 1, "one connection: {seen:?}");
    assert_eq!(
        seen[0].ip(),
        IpAddr::from(lab.wan_addr()),
        "the server saw the masqueraded address"
    );
    let ct = conntrack_list(lab.gateway()).expect("conntrack");
    let entry = ct
        .iter()
        .filter_map(|l| l.translation())
        .find(|t| t.proto == Proto::TCP && t.inside == flow.local)
        .unwrap_or_else(|| panic!("no conntrack entry for {}: {ct:#?}", flow.local));
    assert_eq!(entry.kind, Kind::Snat);
    assert_eq!(entry.remote, flow.remote);
    assert_eq!(entry.outside, seen[0], "conntrack's outside endpoint is what the server saw");

    // UDP and ICMP out of host 3.
    let h3 = &lab.hosts()[2];
    let u = traffic::udp_exchange(h3.ns(), sa(h3.addr(), 0), sa(server, 7), 2).expect("udp");
    assert_eq!(udp.peers().len(), 2);
    assert!(udp.peers().iter().all(|p| p.ip() == IpAddr::from(lab.wan_addr())));
    let p = traffic::ping(h3.ns(), h3.addr(), 4242, server, 2).expect("ping");
    let ct = conntrack_list(lab.gateway()).expect("conntrack");
    let translations: Vec<_> = ct.iter().filter_map(|l| l.translation()).collect();
    for done in [&u, &p] {
        assert!(
            translations.iter().any(|t| t.kind == Kind::Snat
                && t.proto == done.proto
                && t.inside == done.local
                && t.remote == done.remote
                && t.outside.ip() == IpAddr::from(lab.wan_addr())),
            "no masqueraded entry for {done:?} in {ct:#?}"
        );
    }

    // The port forwards reach inside host 1, which sees the real remote.
    let (out_tcp, in_tcp) = lab.dnat_tcp().expect("tcp forward");
    let (out_udp, in_udp) = lab.dnat_udp().expect("udp forward");
    let h1 = &lab.hosts()[0];
    let inside_tcp = EchoServer::tcp(h1.ns(), in_tcp).expect("inside tcp server");
    let inside_udp = EchoServer::udp(h1.ns(), in_udp).expect("inside udp server");
    let router = natrec_tests::gateway::OUTSIDE_ROUTER;
    let d = traffic::tcp_exchange(lab.outside(), sa(router, 0), out_tcp, 1).expect("dnat tcp");
    traffic::udp_exchange(lab.outside(), sa(router, 0), out_udp, 1).expect("dnat udp");
    assert_eq!(inside_tcp.peers(), vec![d.local]);
    assert_eq!(inside_udp.peers().len(), 1);
    let ct = conntrack_list(lab.gateway()).expect("conntrack");
    let fwd = ct
        .iter()
        .filter_map(|l| l.translation())
        .find(|t| t.kind == Kind::Dnat && t.proto == Proto::TCP)
        .unwrap_or_else(|| panic!("no DNAT entry: {ct:#?}"));
    assert_eq!((fwd.inside, fwd.outside, fwd.remote), (in_tcp, out_tcp, d.local));

    // A fixed source port serves again at once, after a reset or a close.
    let again = sa(h2.addr(), 41001);
    let first = traffic::TcpFlow::open(h2.ns(), again, sa(server, 7)).expect("open");
    first.reset().expect("reset");
    traffic::tcp_exchange(h2.ns(), again, sa(server, 7), 1).expect("same port after a reset");
    let third =
        traffic::tcp_exchange(h2.ns(), again, sa(server, 7), 1).expect("same port after a close");
    assert_eq!(third.local, again);

    // Without NAT there is no way in: the outside has no route to the inside hosts.
    let direct = traffic::tcp_exchange(lab.outside(), sa(router, 0), in_tcp, 1);
    assert!(direct.is_err(), "the outside reached {in_tcp} directly");

    drop((tcp, udp, inside_tcp, inside_udp));
    drop(lab);
    for n in &names {
        assert!(!ns_listed(n), "{n} still listed after the lab was dropped");
    }
}

#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn snat_pool_spreads_over_the_range() {
    lab::ensure_root_capabilities().expect("lab capabilities");
    let spec = LabSpec {
        prefix: "lp".into(),
        inside_hosts: 4,
        addrs_per_host: 3,
        pool_size: 4,
        port_forward: false,
        ..LabSpec::default()
    };
    let lab = GatewayLab::build(spec).expect("lab");
    assert_eq!(lab.hosts()[3].addrs().len(), 3);
    let server = lab.servers()[1];
    let udp = EchoServer::udp(lab.outside(), sa(server, 9)).expect("udp echo");
    for h in lab.hosts() {
        for a in h.addrs() {
            traffic::udp_exchange(h.ns(), sa(*a, 0), sa(server, 9), 1).expect("udp");
        }
    }
    let pool: Vec<IpAddr> = lab.pool().into_iter().map(IpAddr::from).collect();
    let peers = udp.peers();
    assert_eq!(peers.len(), 12);
    assert!(peers.iter().all(|p| pool.contains(&p.ip())), "{peers:?} outside {pool:?}");
    let distinct: std::collections::HashSet<_> = peers.iter().map(|p| p.ip()).collect();
    assert!(distinct.len() > 1, "12 sources all mapped to one pool address: {peers:?}");
}

#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn capture_writes_the_packets_and_guards_clean_up() {
    lab::ensure_root_capabilities().expect("lab capabilities");
    let lab = GatewayLab::build(LabSpec {
        prefix: "lc".into(),
        inside_hosts: 1,
        port_forward: false,
        ..LabSpec::default()
    })
    .expect("lab");
    let dir = lab::TempDir::new("lc").expect("temp dir");
    let dir_path = dir.path().to_owned();
    let pcap = dir.path().join("wan.pcap");
    let cap =
        natrec_tests::capture::Capture::start(lab.gateway(), lab.wan_if(), &pcap).expect("tcpdump");
    let h = &lab.hosts()[0];
    traffic::ping(h.ns(), h.addr(), 9, lab.servers()[0], 3).expect("ping");
    let done = cap.stop().expect("stopping tcpdump");
    // Three requests and three replies went through wan0 (plus, maybe, ARP), all in the file.
    let captured = done.captured.unwrap_or_else(|| panic!("no count in {}", done.stderr));
    assert!(captured >= 6, "{captured} packets captured: {}", done.stderr);
    assert_eq!(done.received_by_filter, Some(captured), "packets lost: {}", done.stderr);
    assert_eq!(done.dropped_by_kernel, Some(0), "{}", done.stderr);
    let path = done.path;
    let bytes = std::fs::read(&path).expect("reading the capture");
    // A pcap file header (24 bytes), then a 16-byte record header per packet; an echo frame
    // here is 52 bytes (Ethernet 14, IPv4 20, ICMP 8, "natrec lab").
    assert!(bytes.len() >= 24 + 6 * (16 + 52), "capture of {} bytes", bytes.len());
    assert_eq!(&bytes[..4], &0xa1b2c3d4u32.to_le_bytes(), "pcap magic");

    // An nft table in a namespace that outlives it is deleted by its guard.
    let table = lab::NftTable::create(
        Some(lab.outside()),
        "inet",
        "natrec_lab_probe",
        "table inet natrec_lab_probe {\n chain c {\n  type filter hook input priority 0; policy accept;\n }\n}\n",
    )
    .expect("nft table");
    let listed = |ns: &Netns| {
        let out = ns.exec(&["nft", "list", "tables"]).expect("nft list tables");
        String::from_utf8_lossy(&out.stdout).contains("natrec_lab_probe")
    };
    assert!(listed(lab.outside()));
    drop(table);
    assert!(!listed(lab.outside()), "the table outlived its guard");
    drop(dir);
    assert!(!dir_path.exists(), "{} outlived its guard", dir_path.display());
}

#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn namespaces_of_dead_processes_are_removed() {
    lab::ensure_root_capabilities().expect("lab capabilities");
    // A pid that no longer runs: a child that exited and was reaped.
    let mut child = std::process::Command::new("true").spawn().expect("spawn true");
    let dead = child.id();
    child.wait().expect("wait");
    let stale = format!("nr-stale-{dead}-0");
    lab::run_cmd(&["ip", "netns", "add", &stale]).expect("ip netns add");
    let alive = Netns::new("alive").expect("netns");
    let removed = lab::remove_stale_namespaces().expect("sweep");
    assert!(removed.contains(&stale), "{stale} not removed: {removed:?}");
    assert!(!ns_listed(&stale));
    assert!(ns_listed(alive.name()), "the sweep removed a live process's namespace");
}
