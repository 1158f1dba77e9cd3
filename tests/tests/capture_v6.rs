//! NAT66: in a dual-stack lab gateway (an `ip6` nftables table beside the `ip` one), `natrec
//! record`, given no option for it, records every IPv6 translation exactly as the gateway's
//! conntrack table has it: `snat` to a pool, masquerade with a port rewrite, a prefix
//! translation (`snat ip6 prefix to`, NPTv6 done by conntrack), ICMPv6 echo, and port forwards
//! with and without `--lan`; with ends from the end probe and from ctnetlink, and for a flow
//! older than natrec (seeded from the conntrack dump).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use natrec_tests::conntrack::{CtTranslation, conntrack_list};
use natrec_tests::gateway::{GatewayLab, LabSpec, NPT_PREFIX, OUTSIDE_ROUTER, OUTSIDE_ROUTER6};
use natrec_tests::lab::{self, TempDir};
use natrec_tests::recorded::{
    Key, assert_covers, ct_key, ct_translation_of, finish, finish_with_log, key_of, start_and_end,
};
use natrec_tests::recorder_proc::NatrecRecord;
use natrec_tests::traffic::{self, EchoServer, FlowDone, TcpFlow, sa};
use recorder::model::{FlowEvent, Kind, Proto};

/// A dual-stack lab: three inside hosts, an outside pool of two (`snat to` a range, for IPv4
/// and IPv6), the last host behind the prefix translation, the port forwards.
fn pool_lab(prefix: &str) -> GatewayLab {
    GatewayLab::build(LabSpec {
        prefix: prefix.into(),
        pool_size: 2,
        ipv6: true,
        prefix_translation: true,
        ..LabSpec::default()
    })
    .expect("dual-stack lab")
}

/// TCP and UDP echo servers on port 7 of each of `servers` in the outside namespace.
fn echo_servers(lab: &GatewayLab, servers: &[IpAddr]) -> Vec<EchoServer> {
    servers
        .iter()
        .flat_map(|s| {
            [
                EchoServer::tcp(lab.outside(), sa(*s, 7)).expect("tcp echo"),
                EchoServer::udp(lab.outside(), sa(*s, 7)).expect("udp echo"),
            ]
        })
        .collect()
}

#[test]
#[cfg_attr(
    any(natrec_no_root, natrec_no_end_probe),
    ignore = "NATREC_TESTS_NO_ROOT=1 or NATREC_TESTS_NO_END_PROBE=1"
)]
fn nat66_flows_are_recorded_like_conntrack_with_the_end_probe() {
    records_every_ipv6_flow("c6eb", "ebpf");
}

#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn nat66_flows_are_recorded_like_conntrack_with_ctnetlink_ends() {
    records_every_ipv6_flow("c6nl", "ctnetlink");
}

/// SNAT to the IPv6 pool (TCP, UDP, ICMPv6 echo), the prefix translation (TCP, UDP), both port
/// forwards, an IPv4 flow beside them, and IPv6 traffic to the gateway itself (no record).
fn records_every_ipv6_flow(prefix: &str, ends: &str) {
    lab::ensure_root_capabilities().expect("lab capabilities");
    let lab = pool_lab(prefix);
    let dir = TempDir::new(prefix).expect("temp dir");
    let [s1, s2] = [lab.servers6()[0], lab.servers6()[1]];
    let v4 = lab.servers()[0];
    let _servers = echo_servers(&lab, &[s1.into(), s2.into(), v4.into()]);
    let (out_tcp, in_tcp) = lab.dnat_tcp6().expect("tcp forward");
    let (out_udp, in_udp) = lab.dnat_udp6().expect("udp forward");
    let h = lab.hosts();
    let _inside_tcp = EchoServer::tcp(h[0].ns(), in_tcp).expect("inside tcp server");
    let _inside_udp = EchoServer::udp(h[0].ns(), in_udp).expect("inside udp server");
    let _gw_tcp = EchoServer::tcp(lab.gateway(), sa(Ipv6Addr::UNSPECIFIED, 7)).expect("gw tcp");
    let _gw_udp = EchoServer::udp(lab.gateway(), sa(Ipv6Addr::UNSPECIFIED, 7)).expect("gw udp");
    let npt = lab.npt_host().expect("the host behind the prefix translation");
    let npt_addr = npt.addr6().expect("an IPv6 address");

    let jsonl = dir.path().join("flows.jsonl");
    let natrec = NatrecRecord::start(&lab, &jsonl, &["--ends", ends]).expect("natrec record");
    let mut expected: Vec<(CtTranslation, FlowDone, &str)> = Vec::new();
    let mut record = |done: FlowDone, kind: Kind, what: &'static str| {
        expected.push((ct_translation_of(&lab, &done, kind), done, what));
    };
    let a0 = h[0].addr6().expect("v6");
    let a1 = h[1].addr6().expect("v6");
    let tcp = traffic::tcp_exchange(h[0].ns(), sa(a0, 0), sa(s1, 7), 3).expect("tcp");
    record(tcp, Kind::Snat, "tcp out, pool");
    let udp = traffic::udp_exchange(h[1].ns(), sa(a1, 0), sa(s2, 7), 2).expect("udp");
    record(udp, Kind::Snat, "udp out, pool");
    let icmp = traffic::ping(h[0].ns(), a0, 777, s1, 2).expect("ping6");
    record(icmp, Kind::Snat, "icmpv6 echo out");
    let npt_tcp =
        traffic::tcp_exchange(npt.ns(), sa(npt_addr, 43210), sa(s1, 7), 2).expect("npt tcp");
    record(npt_tcp, Kind::Snat, "tcp out, prefix translation");
    let npt_udp =
        traffic::udp_exchange(npt.ns(), sa(npt_addr, 43211), sa(s2, 7), 2).expect("npt udp");
    record(npt_udp, Kind::Snat, "udp out, prefix translation");
    let fwd_tcp =
        traffic::tcp_exchange(lab.outside(), sa(OUTSIDE_ROUTER6, 0), out_tcp, 2).expect("dnat tcp");
    record(fwd_tcp, Kind::Dnat, "tcp forward");
    let fwd_udp =
        traffic::udp_exchange(lab.outside(), sa(OUTSIDE_ROUTER6, 0), out_udp, 2).expect("dnat udp");
    record(fwd_udp, Kind::Dnat, "udp forward");
    let udp4 = traffic::udp_exchange(h[1].ns(), sa(h[1].addr(), 0), sa(v4, 7), 1).expect("udp4");
    record(udp4, Kind::Snat, "udp out, IPv4 beside");
    // IPv6 traffic to the gateway itself: no translation. (UDP goes to its LAN address: its
    // echo server's unconnected socket answers from the source address routing picks, which
    // on the WAN, with a pool of two, need not be the one asked.)
    let wan6 = lab.wan_addr6().expect("v6 wan");
    traffic::tcp_exchange(lab.outside(), sa(OUTSIDE_ROUTER6, 0), sa(wan6, 7), 1)
        .expect("tcp to gw");
    traffic::udp_exchange(h[1].ns(), sa(a1, 0), sa(h[1].gateway_addr6(), 7), 1).expect("udp to gw");
    traffic::ping(h[0].ns(), a0, 778, h[0].gateway_addr6(), 1).expect("ping gw");

    // What the gateway did, as conntrack has it: the pool, the prefix with the port kept.
    let pool6: Vec<IpAddr> = lab.pool6().into_iter().map(IpAddr::V6).collect();
    for (ct, done, what) in &expected {
        match *what {
            "tcp out, prefix translation" | "udp out, prefix translation" => {
                let IpAddr::V6(inside) = done.local.ip() else { panic!("{what}: {done:?}") };
                let mapped = sa(GatewayLab::npt_outside(inside), done.local.port());
                assert_eq!(ct.outside, mapped, "{what}: {NPT_PREFIX}/64, the same port: {ct:?}");
            }
            "tcp forward" => assert_eq!(ct.outside, out_tcp, "{what}: {ct:?}"),
            "udp forward" => assert_eq!(ct.outside, out_udp, "{what}: {ct:?}"),
            "udp out, IPv4 beside" => assert!(ct.outside.is_ipv4(), "{what}: {ct:?}"),
            _ => assert!(pool6.contains(&ct.outside.ip()), "{what}: outside in the pool: {ct:?}"),
        }
    }
    let keys: Vec<Key> = expected.iter().map(|(ct, ..)| ct_key(ct)).collect();
    let (events, stderr) = finish_with_log(&lab, natrec, &keys);
    assert!(
        stderr.contains(&format!("ends_from=\"{ends}\"")),
        "natrec took its ends from {ends}: {stderr}"
    );
    for ((ct, done, what), key) in expected.iter().zip(&keys) {
        eprintln!("checking {what}: {key:?}");
        let (start, end) = start_and_end(&events, key);
        assert_covers(start, end, done, false);
        if done.proto == Proto::ICMPV6 {
            assert_eq!(start.proto, Proto::ICMPV6, "{what}: {start:?}");
        }
        assert_eq!(start.outside, ct.outside, "{what}");
    }
    let unexpected: Vec<&FlowEvent> =
        events.iter().filter(|e| !keys.contains(&key_of(e.translation()))).collect();
    assert!(
        unexpected.is_empty(),
        "records of no flow of ours (traffic to the gateway?): {unexpected:#?}"
    );
}

/// Masquerade (pool of one): two hosts use the same source port at once, over TCP, UDP and
/// ICMPv6 echo; the gateway rewrites the second, and natrec records each as conntrack has it,
/// the outside endpoints being what the servers saw.
#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn nat66_masquerade_rewrites_a_clashing_port_and_natrec_records_both() {
    lab::ensure_root_capabilities().expect("lab capabilities");
    let lab = GatewayLab::build(LabSpec {
        prefix: "c6clash".into(),
        port_forward: false,
        ipv6: true,
        ..LabSpec::default()
    })
    .expect("lab");
    let dir = TempDir::new("c6clash").expect("temp dir");
    let server = lab.servers6()[0];
    let tcp_server = EchoServer::tcp(lab.outside(), sa(server, 7)).expect("tcp echo");
    let udp_server = EchoServer::udp(lab.outside(), sa(server, 7)).expect("udp echo");
    let natrec =
        NatrecRecord::start(&lab, &dir.path().join("flows.jsonl"), &[]).expect("natrec record");
    let (a, b) = (&lab.hosts()[0], &lab.hosts()[1]);
    let (aa, ba) = (a.addr6().expect("v6"), b.addr6().expect("v6"));
    let mut ta = TcpFlow::open(a.ns(), sa(aa, 45000), sa(server, 7)).expect("tcp a");
    let mut tb = TcpFlow::open(b.ns(), sa(ba, 45000), sa(server, 7)).expect("tcp b");
    ta.exchange(1).expect("tcp a");
    tb.exchange(1).expect("tcp b");
    let ua = traffic::udp_exchange(a.ns(), sa(aa, 45001), sa(server, 7), 1).expect("udp a");
    let ub = traffic::udp_exchange(b.ns(), sa(ba, 45001), sa(server, 7), 1).expect("udp b");
    let pa = traffic::ping(a.ns(), aa, 4600, server, 1).expect("ping a");
    let pb = traffic::ping(b.ns(), ba, 4600, server, 1).expect("ping b");
    let flows = [ta.done(), tb.done(), ua, ub, pa, pb];
    let ct: Vec<CtTranslation> =
        flows.iter().map(|f| ct_translation_of(&lab, f, Kind::Snat)).collect();
    ta.close();
    tb.close();

    let mut seen: HashMap<Proto, Vec<SocketAddr>> = HashMap::new();
    seen.insert(Proto::TCP, tcp_server.peers());
    seen.insert(Proto::UDP, udp_server.peers());
    let wan = IpAddr::V6(lab.wan_addr6().expect("v6 wan"));
    for proto in [Proto::TCP, Proto::UDP, Proto::ICMPV6] {
        let outside: Vec<SocketAddr> =
            ct.iter().filter(|t| t.proto == proto).map(|t| t.outside).collect();
        assert_eq!(outside.len(), 2, "{proto}: {ct:?}");
        assert!(outside.iter().all(|o| o.ip() == wan), "{proto}: masqueraded to {wan}: {ct:?}");
        assert_ne!(outside[0], outside[1], "{proto}: the gateway rewrote one of the two");
        let Some(from_server) = seen.get(&proto) else {
            continue; // the kernel answers echo requests: no server saw them
        };
        let mut from_server = from_server.clone();
        from_server.sort();
        from_server.dedup();
        let mut from_ct = outside.clone();
        from_ct.sort();
        assert_eq!(from_ct, from_server, "{proto}: conntrack's outside endpoints, as seen");
    }
    let keys: Vec<Key> = ct.iter().map(ct_key).collect();
    let events = finish(&lab, natrec, &keys);
    for (t, done) in ct.iter().zip(&flows) {
        let (start, end) = start_and_end(&events, &ct_key(t));
        assert_eq!(start.inside, done.local);
        assert_eq!(start.outside, t.outside);
        assert_covers(start, end, done, false);
    }
    assert_eq!(events.len(), 12, "a start and an end for each of the 6 flows: {events:#?}");
}

/// Port forwards recorded with the WAN classifier alone (no `--lan`): at the first reply
/// through the WAN, IPv6 and IPv4 alike, each with its exact start and end.
#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn port_forwards_are_recorded_without_lan_classifiers_for_ipv6_and_ipv4() {
    lab::ensure_root_capabilities().expect("lab capabilities");
    let lab = GatewayLab::build(LabSpec {
        prefix: "c6nolan".into(),
        inside_hosts: 1,
        ipv6: true,
        ..LabSpec::default()
    })
    .expect("lab");
    let dir = TempDir::new("c6nolan").expect("temp dir");
    let forwards = [
        (lab.dnat_tcp6().expect("tcp6"), Proto::TCP, sa(OUTSIDE_ROUTER6, 0)),
        (lab.dnat_udp6().expect("udp6"), Proto::UDP, sa(OUTSIDE_ROUTER6, 0)),
        (lab.dnat_tcp().expect("tcp4"), Proto::TCP, sa(OUTSIDE_ROUTER, 0)),
        (lab.dnat_udp().expect("udp4"), Proto::UDP, sa(OUTSIDE_ROUTER, 0)),
    ];
    let h = &lab.hosts()[0];
    let _inside: Vec<EchoServer> = forwards
        .iter()
        .map(|((_, inside), proto, _)| match *proto {
            Proto::TCP => EchoServer::tcp(h.ns(), *inside).expect("inside tcp"),
            _ => EchoServer::udp(h.ns(), *inside).expect("inside udp"),
        })
        .collect();
    let jsonl = dir.path().join("flows.jsonl");
    let jsonl_arg = jsonl.to_str().expect("a UTF-8 temp path");
    let args = ["record", "--wan", lab.wan_if(), "--jsonl", jsonl_arg, "--reap-interval", "1s"];
    let natrec = NatrecRecord::start_with(lab.gateway(), &args, &jsonl).expect("natrec record");
    let mut expected = Vec::new();
    for ((outside, _), proto, client) in forwards {
        let done = match proto {
            Proto::TCP => traffic::tcp_exchange(lab.outside(), client, outside, 2),
            _ => traffic::udp_exchange(lab.outside(), client, outside, 2),
        }
        .expect("through the port forward");
        let ct = ct_translation_of(&lab, &done, Kind::Dnat);
        expected.push((ct_key(&ct), done));
    }
    let keys: Vec<Key> = expected.iter().map(|(k, _)| *k).collect();
    let events = finish(&lab, natrec, &keys);
    for (key, done) in &expected {
        let (start, end) = start_and_end(&events, key);
        assert_covers(start, end, done, false);
    }
    assert_eq!(events.len(), 8, "a start and an end for each forward: {events:#?}");
}

/// An IPv6 connection opened before `natrec record` started is recorded from the conntrack
/// dump it seeds from, flagged seeded, and its end is written when it ends.
#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn an_ipv6_flow_older_than_natrec_is_recorded_as_seeded() {
    lab::ensure_root_capabilities().expect("lab capabilities");
    let lab = GatewayLab::build(LabSpec {
        prefix: "c6seed".into(),
        inside_hosts: 1,
        port_forward: false,
        ipv6: true,
        ..LabSpec::default()
    })
    .expect("lab");
    let dir = TempDir::new("c6seed").expect("temp dir");
    let server = lab.servers6()[1];
    let _tcp_server = EchoServer::tcp(lab.outside(), sa(server, 7)).expect("tcp echo");
    let h = &lab.hosts()[0];
    let local = sa(h.addr6().expect("v6"), 42000);
    let mut old = TcpFlow::open(h.ns(), local, sa(server, 7)).expect("old flow");
    old.exchange(1).expect("old flow exchange");
    let before = conntrack_list(lab.gateway()).expect("conntrack -L");
    assert!(
        before.iter().filter_map(|l| l.translation()).any(|t| t.inside == local),
        "the old flow is in the gateway's table before natrec starts: {before:#?}"
    );

    let natrec =
        NatrecRecord::start(&lab, &dir.path().join("flows.jsonl"), &[]).expect("natrec record");
    old.exchange(1).expect("old flow exchange");
    let done = old.done();
    let key = ct_key(&ct_translation_of(&lab, &done, Kind::Snat));
    old.close();
    let events = finish(&lab, natrec, &[key]);
    let (start, end) = start_and_end(&events, &key);
    assert_covers(start, end, &done, true);
    assert_eq!(events.len(), 2, "only the old flow's start and end: {events:#?}");
}
