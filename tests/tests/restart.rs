//! A recorder restart loses nothing and invents nothing: translations open across the restart
//! keep their one record, those that ended while natrec was down are closed (flagged
//! `end_approx`), those that began while it was down are seeded, one that came and went while it
//! was down is known at most from its end event, and the store answers for all of them — each
//! once.

use std::net::SocketAddr;
use std::time::Duration;

use natrec_tests::gateway::{GatewayLab, LabSpec};
use natrec_tests::lab::{TempDir, ensure_root_capabilities};
use natrec_tests::recorder_proc::NatrecRecord;
use natrec_tests::traffic::{EchoServer, TcpFlow, sa, udp_exchange};
use recorder::lookup::{Filter, TranslationSource as _};
use recorder::model::{Flags, FlowEvent, Proto, Translation};
use recorder::store::Reader;

fn find(ts: &[Translation], proto: Proto, inside: SocketAddr) -> Vec<&Translation> {
    ts.iter().filter(|t| t.proto == proto && t.inside == inside).collect()
}

#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn translations_survive_a_recorder_restart_once_each() {
    ensure_root_capabilities().expect("lab capabilities");
    let lab = GatewayLab::build(LabSpec {
        prefix: "rst".into(),
        port_forward: false,
        ..LabSpec::default()
    })
    .expect("lab");
    let work = TempDir::new("natrec-restart").expect("tmp");
    let store = work.path().join("segments");
    let store_arg = store.to_str().expect("utf-8 path").to_owned();
    let server = lab.servers()[0];
    let _tcp = EchoServer::tcp(lab.outside(), sa(server, 7)).expect("tcp echo");
    let _udp = EchoServer::udp(lab.outside(), sa(server, 7)).expect("udp echo");
    let (h1, h2) = (&lab.hosts()[0], &lab.hosts()[1]);
    let (a_in, b_in, c_in, d_in) =
        (sa(h1.addr(), 41001), sa(h1.addr(), 41002), sa(h2.addr(), 41003), sa(h2.addr(), 41004));

    // First run: A (TCP, long) and B (UDP, about to expire) start.
    let first = NatrecRecord::start(&lab, &work.path().join("run1.jsonl"), &["--dir", &store_arg])
        .expect("natrec record, first run");
    let mut a = TcpFlow::open(h1.ns(), a_in, sa(server, 7)).expect("flow A");
    a.exchange(1).expect("flow A");
    udp_exchange(h1.ns(), b_in, sa(server, 7), 1).expect("flow B");
    let (_, started) = first
        .wait_for(Duration::from_secs(10), |evs| {
            evs.iter().filter(|e| matches!(e, FlowEvent::Start(_))).count() >= 2
        })
        .expect("events");
    assert!(started, "natrec saw A and B start");
    first.stop().expect("stopping the first run");

    // While natrec is down: B expires (UDP timeout 3 s), C comes and goes, D starts.
    udp_exchange(h2.ns(), c_in, sa(server, 7), 1).expect("flow C");
    let mut d = TcpFlow::open(h2.ns(), d_in, sa(server, 7)).expect("flow D");
    d.exchange(1).expect("flow D");
    std::thread::sleep(Duration::from_secs(5));

    // Second run, same store.
    let second_started = jiff::Timestamp::now();
    let second = NatrecRecord::start(&lab, &work.path().join("run2.jsonl"), &["--dir", &store_arg])
        .expect("natrec record, second run");
    a.exchange(1).expect("flow A after the restart");
    d.exchange(1).expect("flow D after the restart");
    let a_done = a.close();
    d.close();
    // Both TCP entries end (short closing timeouts; a periodic dump reaps them).
    let ended = |evs: &[FlowEvent]| {
        [a_in, d_in]
            .iter()
            .all(|i| evs.iter().any(|e| matches!(e, FlowEvent::End(t) if t.inside == *i)))
    };
    let (_, done) = second.wait_for(Duration::from_secs(20), ended).expect("events");
    let (events2, log2) = second.stop().expect("stopping the second run");
    assert!(done, "A and D ended in the second run: {events2:#?}\n{log2}");

    // The store answers for all of them, each once.
    let reader = Reader::open(&store).expect("open store");
    let mut ts = Vec::new();
    reader.scan(&Filter::all(), &mut |t| ts.push(t.clone())).expect("scan");
    let one = |proto, inside| {
        let found = find(&ts, proto, inside);
        assert_eq!(found.len(), 1, "one record for {inside} ({proto}): {found:#?}\nall: {ts:#?}");
        found[0].clone()
    };
    let a_rec = one(Proto::TCP, a_in);
    assert!(!a_rec.flags.contains(Flags::END_APPROX), "A ended while natrec ran: {a_rec:?}");
    assert!(
        a_rec.end.is_some_and(|e| e >= a_done.last_packet),
        "A's end covers its last packet: {a_rec:?}"
    );
    // B expired while natrec was down: closed either by its DESTROY event (when the kernel had
    // not yet reaped it, the second run's seeding dump does, and the event carries the exact
    // stop time, before the second run began) or, when that event was sent to nobody, by the
    // resync (flagged approximate).
    let b_rec = one(Proto::UDP, b_in);
    let b_end = b_rec.end.unwrap_or_else(|| panic!("B is closed: {b_rec:?}"));
    assert!(
        b_rec.flags.contains(Flags::END_APPROX) || b_end < second_started,
        "B's end is the kernel's (before the second run) or flagged approximate: {b_rec:?}"
    );
    let d_rec = one(Proto::TCP, d_in);
    assert!(d_rec.flags.contains(Flags::SEEDED), "D began while natrec was down: {d_rec:?}");
    // C began and ended while natrec was down. Its expired entry may still await the kernel's
    // garbage collection when natrec comes back (the seeding dump reaps it and its DESTROY event
    // comes): then it is known from its end only, with the kernel's times; otherwise not at all.
    // Either way nothing is invented.
    match find(&ts, Proto::UDP, c_in).as_slice() {
        [] => {}
        [c] => assert!(
            c.flags.contains(Flags::END_ONLY) && c.end.is_some_and(|e| e >= c.start),
            "C can only be known from its end event: {c:?}"
        ),
        more => panic!("C recorded {} times: {more:#?}", more.len()),
    }
    // The second run did not start A again.
    assert!(
        !events2.iter().any(|e| matches!(e, FlowEvent::Start(t) if t.inside == a_in)),
        "A continued from the store, it did not start again: {events2:#?}"
    );
}
