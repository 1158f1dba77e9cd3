//! ctnetlink against the real kernel, inside a namespace of the test's own: entries inserted
//! with the `conntrack` tool come back field by field from a dump and from DESTROY events, and a
//! burst of DESTROY events larger than the socket buffer arrives whole in reliable mode.

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use natrec_tests::lab::{self, Netns, NftTable};
use recorder::conntrack::{self, CtEntry, DumpSocket, EventOptions, EventSocket, Wait};

const IPS_SRC_NAT: u32 = 1 << 4;
const IPS_DST_NAT: u32 = 1 << 5;
const IPS_CONFIRMED: u32 = 1 << 3;
/// `NatKind` discriminants (recorder-common).
const SNAT: u8 = 1;
const DNAT: u8 = 2;

/// A namespace for the test (root and the lab's tools, or a loud failure).
fn lab_ns(prefix: &str) -> Netns {
    lab::ensure_root_capabilities().expect("the lab needs root and its tools");
    Netns::new(prefix).expect("creating a namespace")
}

/// Opens the event and dump sockets inside `ns` (after turning timestamps on there).
fn sockets_in(ns: &Netns, opts: EventOptions) -> (EventSocket, DumpSocket) {
    ns.run_in(move || {
        // A fresh namespace starts with timestamps off; the second call sees them on.
        assert_eq!(conntrack::enable_timestamps().expect("enable timestamps"), 0);
        assert_eq!(conntrack::enable_timestamps().expect("enable timestamps again"), 1);
        let events = conntrack::events_setting().expect("read nf_conntrack_events");
        assert_ne!(events, 0, "nf_conntrack_events is 0 in a fresh namespace");
        let ev = EventSocket::open(&opts).expect("event socket");
        let dump = DumpSocket::open().expect("dump socket");
        (ev, dump)
    })
    .expect("running inside the namespace")
}

fn v4(t: &[u8; 16]) -> Ipv4Addr {
    assert!(t[4..].iter().all(|&b| b == 0), "IPv4 address with non-zero tail: {t:?}");
    Ipv4Addr::new(t[0], t[1], t[2], t[3])
}

fn port(p: u16) -> u16 {
    u16::from_be(p)
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos() as u64
}

/// Reads DESTROY events until `want` arrived or `limit` passed.
fn read_events(ev: &mut EventSocket, want: usize, limit: Duration) -> (Vec<CtEntry>, u64) {
    let mut out = Vec::new();
    let mut enobufs = 0u64;
    let t = Instant::now();
    while out.len() < want && t.elapsed() < limit {
        let st = ev.recv_batch(&mut out).expect("reading events");
        enobufs += u64::from(st.enobufs);
        assert_eq!(st.unreadable, 0, "unreadable event messages");
    }
    (out, enobufs)
}

#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn dump_and_destroy_events_carry_the_kernel_tuples() {
    let ns = lab_ns("ct");
    let opts =
        EventOptions { wait: Wait::Timeout(Duration::from_millis(100)), ..EventOptions::default() };
    let (mut ev, mut dump) = sockets_in(&ns, opts);
    assert!(ev.rcvbuf_bytes() >= 64 << 20, "SO_RCVBUFFORCE as root: {}", ev.rcvbuf_bytes());
    let before = now_ns();

    // SNAT of UDP in zone 5: the reply given is the plain inverse, --src-nat rewrites it.
    let snat = "-p udp -s 10.1.0.2 -d 10.2.0.9 --sport 4000 --dport 53 --timeout 30 \
                --reply-src 10.2.0.9 --reply-dst 10.1.0.2 --reply-port-src 53 --reply-port-dst 4000 \
                --src-nat 100.64.0.1:4001 -w 5 -m 7";
    // DNAT (port forward) of TCP.
    let dnat = "-p tcp -s 198.51.100.7 -d 100.64.0.1 --sport 7000 --dport 8080 --timeout 30 \
                --state ESTABLISHED --reply-src 100.64.0.1 --reply-dst 198.51.100.7 \
                --reply-port-src 8080 --reply-port-dst 7000 --dst-nat 10.1.0.9:80";
    // SNAT of TCP over IPv6.
    let snat6 = "-p tcp -s 2001:db8::2 -d 2001:db8:ff::9 --sport 4000 --dport 443 --timeout 30 \
                 --state ESTABLISHED --reply-src 2001:db8:ff::9 --reply-dst 2001:db8::2 \
                 --reply-port-src 443 --reply-port-dst 4000 --src-nat 2001:db8:1::1";
    for spec in [snat, dnat, snat6] {
        let mut args = vec!["conntrack", "-I"];
        args.extend(spec.split_whitespace());
        ns.exec(&args).expect("conntrack -I");
    }

    let entries = dump.dump().expect("dump");
    assert_eq!(entries.len(), 3, "{entries:#?}");
    let after = now_ns();
    let find = |proto: u8, family: u8| -> CtEntry {
        *entries
            .iter()
            .find(|e| e.proto == proto && e.family == family)
            .unwrap_or_else(|| panic!("no proto {proto} family {family} entry in {entries:#?}"))
    };
    for e in &entries {
        let start = e.start_ns.expect("timestamps were on when the entry was made");
        assert!((before..=after).contains(&start), "start {start} outside [{before}, {after}]");
        assert_eq!(e.stop_ns, None, "live entries have no stop");
        assert!(e.id.is_some(), "CTA_ID");
        let t = e.timeout_s.expect("dumps carry the timeout");
        assert!((1..=30).contains(&t), "timeout {t}");
        assert_ne!(e.status & IPS_CONFIRMED, 0, "status {:#x}", e.status);
    }

    let u = find(17, libc::AF_INET as u8);
    assert_eq!((v4(&u.orig.src), port(u.orig.src_port)), (Ipv4Addr::new(10, 1, 0, 2), 4000));
    assert_eq!((v4(&u.orig.dst), port(u.orig.dst_port)), (Ipv4Addr::new(10, 2, 0, 9), 53));
    assert_eq!((v4(&u.reply.src), port(u.reply.src_port)), (Ipv4Addr::new(10, 2, 0, 9), 53));
    assert_eq!((v4(&u.reply.dst), port(u.reply.dst_port)), (Ipv4Addr::new(100, 64, 0, 1), 4001));
    // Raw network-order memory, as the kernel's tuple holds it.
    assert_eq!(u.reply.dst_port.to_ne_bytes(), 4001u16.to_be_bytes());
    assert_eq!((u.zone, u.mark), (5, Some(7)));
    assert_eq!(u.status & (IPS_SRC_NAT | IPS_DST_NAT), IPS_SRC_NAT);
    let (kind, ep) = u.nat().expect("SNAT entry");
    assert_eq!(kind as u8, SNAT);
    assert_eq!((v4(&ep.inside), port(ep.inside_port)), (Ipv4Addr::new(10, 1, 0, 2), 4000));
    assert_eq!((v4(&ep.outside), port(ep.outside_port)), (Ipv4Addr::new(100, 64, 0, 1), 4001));
    assert_eq!((v4(&ep.remote), port(ep.remote_port)), (Ipv4Addr::new(10, 2, 0, 9), 53));

    let d = find(6, libc::AF_INET as u8);
    assert_eq!(d.status & (IPS_SRC_NAT | IPS_DST_NAT), IPS_DST_NAT);
    assert_eq!((d.zone, d.mark), (0, Some(0)));
    let (kind, ep) = d.nat().expect("DNAT entry");
    assert_eq!(kind as u8, DNAT);
    assert_eq!((v4(&ep.inside), port(ep.inside_port)), (Ipv4Addr::new(10, 1, 0, 9), 80));
    assert_eq!((v4(&ep.outside), port(ep.outside_port)), (Ipv4Addr::new(100, 64, 0, 1), 8080));
    assert_eq!((v4(&ep.remote), port(ep.remote_port)), (Ipv4Addr::new(198, 51, 100, 7), 7000));

    let s6 = find(6, libc::AF_INET6 as u8);
    let a6 = |s: &str| s.parse::<Ipv6Addr>().expect("v6").octets();
    assert_eq!((s6.orig.src, port(s6.orig.src_port)), (a6("2001:db8::2"), 4000));
    assert_eq!((s6.orig.dst, port(s6.orig.dst_port)), (a6("2001:db8:ff::9"), 443));
    assert_eq!((s6.reply.dst, port(s6.reply.dst_port)), (a6("2001:db8:1::1"), 4000));
    let (kind, ep) = s6.nat().expect("SNAT6 entry");
    assert_eq!(kind as u8, SNAT);
    assert_eq!(ep.outside, a6("2001:db8:1::1"));

    // Nothing died yet.
    let (early, _) = read_events(&mut ev, 1, Duration::from_millis(300));
    assert!(early.is_empty(), "DESTROY before any delete: {early:#?}");

    ns.exec(&["conntrack", "-D", "-p", "udp", "-s", "10.1.0.2", "-w", "5"])
        .expect("conntrack -D udp");
    ns.exec(&["conntrack", "-D", "-p", "tcp", "-s", "198.51.100.7"]).expect("conntrack -D tcp");
    ns.exec(&["conntrack", "-D", "-f", "ipv6", "-p", "tcp"]).expect("conntrack -D tcp6");
    let (gone, enobufs) = read_events(&mut ev, 3, Duration::from_secs(20));
    assert_eq!(enobufs, 0, "a 64 MiB buffer overflowed with 3 events");
    assert_eq!(gone.len(), 3, "DESTROY events: {gone:#?}");
    let end = now_ns();
    for g in &gone {
        let live = entries
            .iter()
            .find(|e| e.id == g.id)
            .unwrap_or_else(|| panic!("DESTROY of an entry the dump did not have: {g:#?}"));
        assert_eq!((g.family, g.proto, g.zone), (live.family, live.proto, live.zone));
        assert_eq!((g.orig, g.reply), (live.orig, live.reply), "tuples changed");
        assert_eq!(g.nat(), live.nat(), "DESTROY and dump name different endpoints");
        assert_eq!(g.start_ns, live.start_ns);
        let stop = g.stop_ns.expect("DESTROY carries the stop time");
        assert!(live.start_ns.is_some_and(|s| s <= stop) && stop <= end, "stop {stop}");
    }
    assert_eq!(ev.stats().destroys, 3);
    assert!(dump.dump().expect("dump after deletes").is_empty());
}

#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn icmp_echo_tuples_have_the_kernel_layout() {
    let ns = lab_ns("cti");
    let (_ev, mut dump) = sockets_in(&ns, EventOptions::default());
    // Any conntrack rule makes the namespace track its traffic.
    let _t = NftTable::create(
        Some(&ns),
        "inet",
        "natrec_ct",
        "table inet natrec_ct {\n chain out {\n  type filter hook output priority 0;\n  ct state new accept\n }\n}\n",
    )
    .expect("nft table");
    ns.exec(&["ping", "-c", "1", "-W", "2", "127.0.0.1"]).expect("ping");
    let entries = dump.dump().expect("dump");
    let e = entries
        .iter()
        .find(|e| e.proto == 1)
        .unwrap_or_else(|| panic!("no ICMP entry: {entries:#?}"));
    // Echo request type 8 code 0 in the original, echo reply type 0 in the reply; the same echo
    // identifier in both source "ports".
    assert_eq!(e.orig.dst_port.to_ne_bytes(), [8, 0]);
    assert_eq!(e.reply.dst_port.to_ne_bytes(), [0, 0]);
    assert_eq!(e.orig.src_port, e.reply.src_port);
    assert_eq!(v4(&e.orig.src), Ipv4Addr::LOCALHOST);
    assert_eq!(e.nat(), None, "no NAT on loopback");
}

#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn a_destroy_burst_larger_than_the_buffer_arrives_whole() {
    const N: usize = 5000;
    let ns = lab_ns("ctb");
    // A tiny buffer, and nobody reading during the flush: the kernel must hold the events back.
    let opts = EventOptions {
        rcvbuf_bytes: 16 << 10,
        wait: Wait::Timeout(Duration::from_millis(100)),
        ..EventOptions::default()
    };
    let (mut ev, mut dump) = sockets_in(&ns, opts);
    let lines: String = (0..N)
        .map(|i| {
            let (a, b) = (i / 250, i % 250 + 1);
            format!(
                "-I -p udp -s 10.1.{a}.{b} -d 10.2.0.9 --sport 4000 --dport 53 --timeout 60 \
                 --reply-src 10.2.0.9 --reply-dst 10.1.{a}.{b} --reply-port-src 53 --reply-port-dst 4000 \
                 --src-nat 100.64.0.1:{}\n",
                10000 + i
            )
        })
        .collect();
    ns.exec_input(&["conntrack", "-R", "-"], &lines).expect("conntrack -R");

    // A dump of thousands of entries spans many datagrams.
    let mut live = HashMap::new();
    let pass = dump
        .dump_each(&mut |e| {
            live.insert(e.id.expect("CTA_ID"), e);
        })
        .expect("dump");
    assert_eq!((pass.entries as usize, pass.unreadable, live.len()), (N, 0, N));

    ns.exec(&["conntrack", "-F"]).expect("conntrack -F");
    let t = Instant::now();
    let (gone, enobufs) = read_events(&mut ev, N, Duration::from_secs(60));
    let took = t.elapsed();
    let ids: BTreeSet<u32> = gone.iter().map(|g| g.id.expect("CTA_ID")).collect();
    println!(
        "{} of {N} DESTROY events in {took:?} through a {} byte buffer, {enobufs} ENOBUFS",
        gone.len(),
        ev.rcvbuf_bytes()
    );
    assert_eq!(gone.len(), N, "reliable mode lost events ({enobufs} ENOBUFS)");
    assert_eq!(ids.len(), N, "duplicate DESTROY events");
    for g in &gone {
        let l = live.get(&g.id.expect("id")).expect("DESTROY of a dumped entry");
        assert_eq!((g.orig, g.reply), (l.orig, l.reply));
        assert!(g.stop_ns.is_some());
    }
    assert!(
        enobufs > 0,
        "{N} events fit a {} byte buffer: the overrun path was not exercised",
        ev.rcvbuf_bytes()
    );
    assert_eq!(ev.stats().enobufs, enobufs);
}

#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn entries_made_before_the_listener_end_with_events_enabled() {
    let ns = lab_ns("cte");
    ns.run_in(|| {
        let previous = conntrack::enable_events().expect("enable events");
        assert_ne!(previous, 1, "a fresh namespace has nf_conntrack_events 1 already");
        assert_eq!(conntrack::enable_events().expect("enable events again"), 1);
        assert_eq!(conntrack::events_setting().expect("read events"), 1);
    })
    .expect("running inside the namespace");
    // Made while nobody listens: with nf_conntrack_events=2 its DESTROY would never be sent.
    ns.exec(&[
        "conntrack",
        "-I",
        "-p",
        "udp",
        "-s",
        "10.1.0.2",
        "-d",
        "10.2.0.9",
        "--sport",
        "4000",
        "--dport",
        "53",
        "--timeout",
        "30",
        "--reply-src",
        "10.2.0.9",
        "--reply-dst",
        "10.1.0.2",
        "--reply-port-src",
        "53",
        "--reply-port-dst",
        "4000",
        "--src-nat",
        "100.64.0.1:4001",
    ])
    .expect("conntrack -I");
    let opts = EventOptions { wait: Wait::NonBlocking, ..EventOptions::default() };
    let mut ev =
        ns.run_in(move || EventSocket::open(&opts).expect("event socket")).expect("run_in");
    // Non-blocking: nothing queued yet, the call returns at once.
    let mut out = Vec::new();
    let st = ev.recv_batch(&mut out).expect("recv");
    assert!(st.drained && st.entries == 0 && out.is_empty(), "{st:?}");
    ns.exec(&["conntrack", "-F"]).expect("conntrack -F");
    let (gone, _) = read_events(&mut ev, 1, Duration::from_secs(20));
    assert_eq!(gone.len(), 1, "no DESTROY for an entry made before the listener");
    assert_eq!(v4(&gone[0].orig.src), Ipv4Addr::new(10, 1, 0, 2));
    assert_eq!(port(gone[0].reply.dst_port), 4001);
}

/// Drops every capability of the calling thread (only this thread: capabilities are per thread).
fn drop_capabilities() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    // _LINUX_CAPABILITY_VERSION_3: two data words.
    let header = Header { version: 0x2008_0522, pid: 0 };
    let data = [Data { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: capset(2) reads a valid header and two data structs; it changes only this thread.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
}

#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn without_cap_net_admin_the_errors_say_so() {
    let ns = lab_ns("ctp");
    let (event_err, dump_err) = ns
        .run_in(|| {
            drop_capabilities();
            let ev = EventSocket::open(&EventOptions::default())
                .map(|_| ())
                .expect_err("event socket without caps");
            let dump = DumpSocket::open()
                .expect("a dump socket needs no capability")
                .dump()
                .expect_err("dump without caps");
            (ev.to_string(), dump.to_string())
        })
        .expect("running inside the namespace");
    assert!(event_err.contains("needs CAP_NET_ADMIN: run natrec as root"), "{event_err}");
    assert!(dump_err.contains("needs CAP_NET_ADMIN: run natrec as root"), "{dump_err}");
}
