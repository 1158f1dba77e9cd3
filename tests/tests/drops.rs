//! Nothing is lost silently: with a ring buffer far too small for a burst, the kernel side counts
//! every event it could not write, natrec reports the count, and every translation is still
//! recorded (from its end event), whether ends come from ctnetlink or from the end probe (whose
//! ends spill to a ring of their own when the ring buffer is full). Each drop path is shown for
//! IPv4 and for IPv6 (NAT66) entries.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use natrec_tests::conntrack::conntrack_flush;
use natrec_tests::gateway::{Family, GatewayLab, LabSpec};
use natrec_tests::lab::{TempDir, ensure_root_capabilities};
use natrec_tests::recorder_proc::{NatrecRecord, stats_json};
use natrec_tests::traffic::{EchoServer, TcpFlow};
use recorder::model::{Flags, FlowEvent, Proto};

const FLOWS: u16 = 2000;

const FIRST_PORT: u16 = 20000;

/// A dual-stack gateway with one inside host and no port forward.
fn one_host_lab(prefix: &str) -> GatewayLab {
    GatewayLab::build(LabSpec {
        prefix: prefix.into(),
        inside_hosts: 1,
        port_forward: false,
        ipv6: true,
        ..LabSpec::default()
    })
    .expect("lab")
}

/// Resolves the inside host's and the gateway's neighbours with one datagram to the first
/// server of `family` (packets waiting for ARP or neighbour discovery never reach the hook),
/// then empties the conntrack table.
fn resolve_neighbours(lab: &GatewayLab, family: Family) {
    let local = SocketAddr::new(lab.hosts()[0].addr_of(family), 0);
    let server = lab.servers_of(family)[0];
    lab.hosts()[0]
        .ns()
        .run_in(move || UdpSocket::bind(local)?.send_to(b"warm", SocketAddr::new(server, 9)))
        .expect("run_in")
        .expect("warm-up datagram");
    std::thread::sleep(Duration::from_millis(300));
    conntrack_flush(lab.gateway()).expect("flush");
}

#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn a_full_ring_buffer_is_counted_and_every_translation_still_recorded_with_ctnetlink_ends() {
    full_ring_buffer("dropnl", "ctnetlink", Family::V4);
}

#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn a_full_ring_buffer_loses_no_ipv6_translation_with_ctnetlink_ends() {
    full_ring_buffer("dropnl6", "ctnetlink", Family::V6);
}

#[test]
#[cfg_attr(
    any(natrec_no_root, natrec_no_end_probe),
    ignore = "NATREC_TESTS_NO_ROOT=1 or NATREC_TESTS_NO_END_PROBE=1"
)]
fn a_full_ring_buffer_is_counted_and_every_translation_still_recorded_with_the_end_probe() {
    full_ring_buffer("dropeb", "ebpf", Family::V4);
}

#[test]
#[cfg_attr(
    any(natrec_no_root, natrec_no_end_probe),
    ignore = "NATREC_TESTS_NO_ROOT=1 or NATREC_TESTS_NO_END_PROBE=1"
)]
fn a_full_ring_buffer_loses_no_ipv6_translation_with_the_end_probe() {
    full_ring_buffer("dropeb6", "ebpf", Family::V6);
}

fn full_ring_buffer(prefix: &str, ends_from: &str, family: Family) {
    ensure_root_capabilities().expect("lab capabilities");
    let lab = one_host_lab(prefix);
    let host = &lab.hosts()[0];
    let local = SocketAddr::new(host.addr_of(family), 0);
    let server = lab.servers_of(family)[0];
    resolve_neighbours(&lab, family);

    let work = TempDir::new("natrec-drops").expect("tmp");
    let jsonl = work.path().join("events.jsonl");
    // One page: room for a few dozen events, against a burst of thousands.
    let rec = NatrecRecord::start(
        &lab,
        &jsonl,
        &["--ringbuf-size", "4096", "--stats-json", "--ends", ends_from],
    )
    .expect("natrec record");

    // A burst of new UDP entries: one datagram each, to FLOWS different remote ports, in
    // batches the veth backlog (1000 packets) takes whole. natrec is paused meanwhile: a fast
    // reader could otherwise drain even this ring as the burst fills it, and the drop path would
    // go untested.
    let paused = rec.pause().expect("pause natrec");
    let src_port = host
        .ns()
        .run_in(move || -> std::io::Result<u16> {
            let sock = UdpSocket::bind(local)?;
            for port in FIRST_PORT..FIRST_PORT + FLOWS {
                sock.send_to(b"burst", SocketAddr::new(server, port))?;
                if port % 500 == 499 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            Ok(sock.local_addr()?.port())
        })
        .expect("run_in")
        .expect("burst");

    std::thread::sleep(Duration::from_millis(200));
    drop(paused);
    std::thread::sleep(Duration::from_millis(300));
    {
        // Paused again for the flush: the end probe's 2000 ends meet a full ring and spill.
        let _paused = rec.pause().expect("pause natrec");
        conntrack_flush(lab.gateway()).expect("flush");
        std::thread::sleep(Duration::from_millis(200));
    }
    let ends = |evs: &[FlowEvent]| {
        evs.iter().filter(|e| matches!(e, FlowEvent::End(t) if t.proto == Proto::UDP && t.remote.ip() == server)).count()
    };
    let (_, complete) = rec
        .wait_for(Duration::from_secs(30), |evs| ends(evs) >= usize::from(FLOWS))
        .expect("events");
    let (events, log) = rec.stop().expect("stop");
    assert!(complete, "only {} of {FLOWS} end events arrived; natrec's log:\n{log}", ends(&events));

    // Every flow is recorded exactly once, with the right endpoints.
    let mut seen = HashSet::new();
    let mut end_only = 0u64;
    for ev in &events {
        let FlowEvent::End(t) = ev else { continue };
        if t.remote.ip() != server {
            continue;
        }
        assert_eq!(t.inside, SocketAddr::new(host.addr_of(family), src_port), "{t:?}");
        assert_eq!(t.outside.ip(), lab.wan_addr_of(family), "{t:?}");
        assert!(seen.insert(t.remote.port()), "recorded twice: {t:?}");
        if t.flags.contains(Flags::END_ONLY) {
            end_only += 1;
        }
    }
    let expected: HashSet<u16> = (FIRST_PORT..FIRST_PORT + FLOWS).collect();
    assert_eq!(seen, expected, "every remote port of the burst, once");

    // The drops were counted in the kernel and reported, and account for the end-only records.
    let stats = stats_json(&log).expect("natrec's counters");
    let full = stats["kernel"]["ringbuf_full"].as_u64().expect("kernel.ringbuf_full");
    assert!(full > 0, "a 4 KiB ring cannot take {FLOWS} events at once; stats: {stats}");
    assert_eq!(
        end_only, full,
        "each entry whose start event was dropped is known from its end only; stats: {stats}"
    );
    assert!(log.contains("ring buffer full"), "the drop is logged:\n{log}");
    assert_eq!(stats["ends_from"], ends_from, "stats: {stats}");
    let spilled = stats["kernel"]["ends_spilled"].as_u64().expect("kernel.ends_spilled");
    if ends_from == "ebpf" {
        assert!(spilled > 0, "the ends met a full ring: {stats}");
        assert_eq!(
            stats["kernel"]["end_events"].as_u64(),
            Some(u64::from(FLOWS)),
            "an end event for every flow, none lost: {stats}"
        );
    } else {
        assert_eq!(spilled, 0, "no end probe, no spill: {stats}");
    }
}

/// With the end probe, established packets skip the kernel's map of reported entries (the bulk
/// of the traffic), except for a while after a start was lost to a full ring: then an entry's
/// next packet reports it, so a connection whose start was lost is still recorded with its own
/// start, not from its end only.
#[test]
#[cfg_attr(
    any(natrec_no_root, natrec_no_end_probe),
    ignore = "NATREC_TESTS_NO_ROOT=1 or NATREC_TESTS_NO_END_PROBE=1"
)]
fn a_lost_start_is_reported_again_at_the_entrys_next_established_packet() {
    lost_start_reported_again("recheck", Family::V4);
}

#[test]
#[cfg_attr(
    any(natrec_no_root, natrec_no_end_probe),
    ignore = "NATREC_TESTS_NO_ROOT=1 or NATREC_TESTS_NO_END_PROBE=1"
)]
fn a_lost_ipv6_start_is_reported_again_at_the_entrys_next_established_packet() {
    lost_start_reported_again("recheck6", Family::V6);
}

fn lost_start_reported_again(prefix: &str, family: Family) {
    ensure_root_capabilities().expect("lab capabilities");
    const CONNECTIONS: usize = 120;
    let lab = one_host_lab(prefix);
    let host = &lab.hosts()[0];
    let server = SocketAddr::new(lab.servers_of(family)[0], 7);
    let _echo = EchoServer::tcp(lab.outside(), server).expect("tcp echo");
    let work = TempDir::new("natrec-recheck").expect("tmp");
    let jsonl = work.path().join("events.jsonl");
    let rec = NatrecRecord::start(
        &lab,
        &jsonl,
        &["--ringbuf-size", "4096", "--stats-json", "--ends", "ebpf"],
    )
    .expect("natrec record");

    // Connections opened while natrec is paused: the one-page ring takes a few dozen starts,
    // the others are lost.
    let mut flows = Vec::new();
    {
        let _paused = rec.pause().expect("pause natrec");
        for _ in 0..CONNECTIONS {
            let local = SocketAddr::new(host.addr_of(family), 0);
            flows.push(TcpFlow::open(host.ns(), local, server).expect("tcp connection"));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    // Every connection talks again: established packets, within the recheck window.
    for f in &mut flows {
        f.exchange(1).expect("exchange");
    }
    let locals: HashSet<SocketAddr> = flows.iter().map(TcpFlow::local).collect();
    assert_eq!(locals.len(), CONNECTIONS);
    for f in flows {
        f.close();
    }
    std::thread::sleep(Duration::from_millis(300));
    conntrack_flush(lab.gateway()).expect("flush");
    let ends = |evs: &[FlowEvent]| {
        evs.iter().filter(|e| matches!(e, FlowEvent::End(t) if locals.contains(&t.inside))).count()
    };
    let (_, complete) =
        rec.wait_for(Duration::from_secs(30), |evs| ends(evs) >= CONNECTIONS).expect("events");
    let (events, log) = rec.stop().expect("stop");
    assert!(
        complete,
        "only {} of {CONNECTIONS} end events arrived; natrec's log:\n{log}",
        ends(&events)
    );

    let stats = stats_json(&log).expect("natrec's counters");
    let full = stats["kernel"]["ringbuf_full"].as_u64().expect("kernel.ringbuf_full");
    assert!(full > 0, "a 4 KiB ring cannot take {CONNECTIONS} starts at once; stats: {stats}");
    for local in &locals {
        let mine: Vec<&FlowEvent> =
            events.iter().filter(|e| e.translation().inside == *local).collect();
        assert_eq!(mine.len(), 2, "a start and an end for {local}: {mine:#?}");
        for e in &mine {
            let t = e.translation();
            assert!(
                !t.flags.contains(Flags::END_ONLY) && !t.flags.contains(Flags::START_APPROX),
                "{local} recorded with its own start: {t:?}; stats: {stats}"
            );
        }
    }
    assert_eq!(stats["tracker"]["end_only"].as_u64(), Some(0), "stats: {stats}");
}

/// With the end probe, the kernel's map of reported entries forgets nothing (the probe removes
/// each entry as it is freed), so it can fill up: entries it cannot take are counted and
/// reported, and still recorded with their own start and end, the end paired with its start by
/// the tuple (the end event then carries no start).
#[test]
#[cfg_attr(
    any(natrec_no_root, natrec_no_end_probe),
    ignore = "NATREC_TESTS_NO_ROOT=1 or NATREC_TESTS_NO_END_PROBE=1"
)]
fn a_full_map_of_reported_entries_is_counted_and_every_translation_recorded_whole() {
    full_map_of_reported_entries("seenfull", Family::V4);
}

#[test]
#[cfg_attr(
    any(natrec_no_root, natrec_no_end_probe),
    ignore = "NATREC_TESTS_NO_ROOT=1 or NATREC_TESTS_NO_END_PROBE=1"
)]
fn a_full_map_of_reported_entries_loses_no_ipv6_translation() {
    full_map_of_reported_entries("seenfull6", Family::V6);
}

fn full_map_of_reported_entries(prefix: &str, family: Family) {
    ensure_root_capabilities().expect("lab capabilities");
    const SEEN: u64 = 64;
    const BURST: u16 = 500;
    let lab = one_host_lab(prefix);
    let host = &lab.hosts()[0];
    let local = SocketAddr::new(host.addr_of(family), 0);
    let server = lab.servers_of(family)[0];
    resolve_neighbours(&lab, family);

    let work = TempDir::new("natrec-seenfull").expect("tmp");
    let jsonl = work.path().join("events.jsonl");
    let seen = SEEN.to_string();
    let rec = NatrecRecord::start(
        &lab,
        &jsonl,
        &["--seen-entries", &seen, "--stats-json", "--ends", "ebpf"],
    )
    .expect("natrec record");
    // BURST entries alive at once, against a map of SEEN.
    let src_port = host
        .ns()
        .run_in(move || -> std::io::Result<u16> {
            let sock = UdpSocket::bind(local)?;
            for port in FIRST_PORT..FIRST_PORT + BURST {
                sock.send_to(b"burst", SocketAddr::new(server, port))?;
            }
            Ok(sock.local_addr()?.port())
        })
        .expect("run_in")
        .expect("burst");
    // Counters are checked once a second: let the full map be logged before the ends come.
    std::thread::sleep(Duration::from_millis(1500));
    conntrack_flush(lab.gateway()).expect("flush");
    let mine = |t: &recorder::model::Translation| t.proto == Proto::UDP && t.remote.ip() == server;
    let ends = |evs: &[FlowEvent]| {
        evs.iter().filter(|e| matches!(e, FlowEvent::End(t) if mine(t))).count()
    };
    let (_, complete) = rec
        .wait_for(Duration::from_secs(30), |evs| ends(evs) >= usize::from(BURST))
        .expect("events");
    let (events, log) = rec.stop().expect("stop");
    assert!(complete, "only {} of {BURST} end events arrived; natrec's log:\n{log}", ends(&events));

    let stats = stats_json(&log).expect("natrec's counters");
    let full = stats["kernel"]["seen_full"].as_u64().expect("kernel.seen_full");
    assert!(
        full >= u64::from(BURST) - SEEN,
        "{BURST} entries alive at once in a map of {SEEN}: at least {} not taken; stats: {stats}",
        u64::from(BURST) - SEEN
    );
    assert!(log.contains("map of reported entries is full"), "the full map is logged:\n{log}");
    let mut remotes = HashSet::new();
    for ev in &events {
        let FlowEvent::End(t) = ev else { continue };
        if !mine(t) {
            continue;
        }
        assert_eq!(t.inside, SocketAddr::new(host.addr_of(family), src_port), "{t:?}");
        assert!(
            !t.flags.contains(Flags::END_ONLY) && !t.flags.contains(Flags::START_APPROX),
            "recorded with its own start: {t:?}; stats: {stats}"
        );
        assert!(remotes.insert(t.remote.port()), "recorded twice: {t:?}");
    }
    assert_eq!(
        remotes,
        (FIRST_PORT..FIRST_PORT + BURST).collect::<HashSet<u16>>(),
        "every flow of the burst, once"
    );
    assert_eq!(stats["kernel"]["ringbuf_full"].as_u64(), Some(0), "stats: {stats}");
    assert_eq!(stats["tracker"]["end_only"].as_u64(), Some(0), "stats: {stats}");
}
