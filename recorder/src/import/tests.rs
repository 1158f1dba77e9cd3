use super::ulogd::parse_ulogd_timestamp;
use super::*;
use crate::model::{Kind, Proto};

#[test]
fn ulogd_timestamps_with_and_without_an_offset_parse() {
    let utc: Timestamp = "2026-11-24T22:56:40Z".parse().expect("time");
    assert_eq!(parse_ulogd_timestamp("2026-11-24T23:56:40+0100"), Some(utc));
    assert_eq!(
        parse_ulogd_timestamp("2026-11-24T22:56:40.250000+0000"),
        Some(utc + jiff::SignedDuration::from_millis(250))
    );
    // ulogd2 2.0.8: local time without an offset.
    let local = jiff::civil::date(2026, 11, 24)
        .at(22, 56, 40, 0)
        .to_zoned(jiff::tz::TimeZone::system())
        .expect("local")
        .timestamp();
    assert_eq!(parse_ulogd_timestamp("2026-11-24T22:56:40"), Some(local));
    assert_eq!(parse_ulogd_timestamp("yesterday"), None);
}
use crate::synth::{self, Limit, ProtoMix, WorkloadParams};

fn ts(s: &str) -> Timestamp {
    s.parse().expect("time")
}

fn import(format: Format, text: &str) -> (Vec<FlowEvent>, ImportReport) {
    let mut imp = Importer::new(format);
    imp.set_source("test.log");
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        imp.line(i as u64 + 1, l, &mut out);
    }
    (out, imp.finish())
}

const NEW_TCP: &str = "[1767571200.123456]\t    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=10.0.0.2 dst=198.51.100.7 sport=40000 dport=443 [UNREPLIED] src=198.51.100.7 dst=100.64.0.1 sport=443 dport=40001";
const DESTROY_TCP: &str = "[1767571230.000001]\t[DESTROY] ipv4     2 tcp      6 src=10.0.0.2 dst=198.51.100.7 sport=40000 dport=443 src=198.51.100.7 dst=100.64.0.1 sport=443 dport=40001 [ASSURED] mark=0 delta-time=30 use=1 id=3735928559";

#[test]
fn conntrack_new_and_destroy_pair_into_one_translation() {
    let (out, rep) = import(Format::Conntrack, &format!("{NEW_TCP}\n{DESTROY_TCP}\n"));
    let start = Translation {
        kind: Kind::Snat,
        proto: Proto::TCP,
        inside: "10.0.0.2:40000".parse().expect("addr"),
        outside: "100.64.0.1:40001".parse().expect("addr"),
        remote: "198.51.100.7:443".parse().expect("addr"),
        zone: 0,
        start: ts("2026-01-05T00:00:00.123456Z"),
        end: None,
        flags: Flags::empty(),
    };
    let end = Translation { end: Some(ts("2026-01-05T00:00:30.000001Z")), ..start.clone() };
    assert_eq!(out, vec![FlowEvent::Start(start), FlowEvent::End(end)]);
    assert_eq!((rep.lines, rep.translations, rep.starts, rep.ends), (2, 1, 1, 1));
    assert_eq!((rep.end_only, rep.open_at_end, rep.malformed), (0, 0, 0));
}

#[test]
fn destroy_without_new_is_end_only_with_start_from_delta_time_or_start_field() {
    let (out, rep) = import(Format::Conntrack, DESTROY_TCP);
    let [FlowEvent::End(t)] = out.as_slice() else { panic!("expected one end, got {out:?}") };
    assert_eq!(t.flags, Flags::END_ONLY);
    assert_eq!(t.start, ts("2026-01-05T00:00:00.000001Z"));
    assert_eq!(t.end, Some(ts("2026-01-05T00:00:30.000001Z")));
    assert_eq!((rep.end_only, rep.translations), (1, 1));

    let line = "[1767571230.000001]\t[DESTROY] ipv4     2 udp      17 src=10.0.0.2 dst=203.0.113.1 sport=5353 dport=53 src=203.0.113.1 dst=100.64.0.1 sport=53 dport=5353 [start=Sun Jan  4 23:59:59 2026] [stop=Mon Jan  5 00:00:30 2026]";
    let (out, _) = import(Format::Conntrack, line);
    assert_eq!(out[0].translation().start, ts("2026-01-04T23:59:59Z"));
    assert_eq!(out[0].translation().proto, Proto::UDP);

    // Without either, the start is the end, flagged approximate.
    let line = "[1767571230.5]\t[DESTROY] udp      17 src=10.0.0.2 dst=203.0.113.1 sport=5353 dport=53 src=203.0.113.1 dst=100.64.0.1 sport=53 dport=5353";
    let (out, rep) = import(Format::Conntrack, line);
    assert_eq!(rep.malformed_samples, vec![]);
    assert_eq!(out[0].translation().start, ts("2026-01-05T00:00:30.5Z"));
    assert_eq!(out[0].translation().flags, Flags::END_ONLY.union(Flags::START_APPROX));
}

#[test]
fn conntrack_icmp_dnat_and_zone_are_classified() {
    let icmp = "[1767571200.000000]\t    [NEW] ipv4     2 icmp     1 30 src=10.0.0.2 dst=198.51.100.7 type=8 code=0 id=77 [UNREPLIED] src=198.51.100.7 dst=100.64.0.1 type=0 code=0 id=1024 zone=7 id=12345";
    let Line::Record(r) = parse_conntrack_line(icmp).expect("parse") else {
        panic!("not a record")
    };
    let t = r.translation;
    assert_eq!((t.kind, t.proto, t.zone), (Kind::Snat, Proto::ICMP, 7));
    assert_eq!(t.inside, "10.0.0.2:77".parse().expect("addr"));
    assert_eq!(t.outside, "100.64.0.1:1024".parse().expect("addr"));
    assert_eq!(t.remote, "198.51.100.7:0".parse().expect("addr"));

    let dnat = "[1767571200.000000]\t    [NEW] ipv6     10 tcp      6 120 SYN_SENT src=2001:db8::7 dst=2001:db8:ffff::1 sport=50000 dport=8080 [UNREPLIED] src=fd00::2 dst=2001:db8::7 sport=80 dport=50000";
    let Line::Record(r) = parse_conntrack_line(dnat).expect("parse") else {
        panic!("not a record")
    };
    let t = r.translation;
    assert_eq!(t.kind, Kind::Dnat);
    assert_eq!(t.inside, "[fd00::2]:80".parse().expect("addr"));
    assert_eq!(t.outside, "[2001:db8:ffff::1]:8080".parse().expect("addr"));
    assert_eq!(t.remote, "[2001:db8::7]:50000".parse().expect("addr"));
}

#[test]
fn non_nat_update_and_malformed_lines_are_counted_never_fatal() {
    let text = [
        "[1767571200.000000]\t    [NEW] ipv4     2 udp      17 30 src=10.0.0.2 dst=10.0.0.3 sport=5000 dport=53 [UNREPLIED] src=10.0.0.3 dst=10.0.0.2 sport=53 dport=5000",
        "[1767571200.100000]\t [UPDATE] ipv4     2 tcp      6 60 SYN_RECV src=10.0.0.2 dst=198.51.100.7 sport=40000 dport=443 src=198.51.100.7 dst=100.64.0.1 sport=443 dport=40001",
        "    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=10.0.0.2 dst=198.51.100.7 sport=1 dport=2 src=198.51.100.7 dst=100.64.0.1 sport=2 dport=1",
        "[1767571200.200000]\t    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=10.0.0.2 dst=198.51.100.7 sport=70000 dport=443 src=198.51.100.7 dst=100.64.0.1 sport=443 dport=1",
        "",
        NEW_TCP,
        "[1767571200.300000]\t    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=10.0.0.2 dst=198.51.100.7",
        "conntrack v1.4.8 (conntrack-tools): 5 flow events have been shown.",
    ]
    .join("\n");
    let (out, rep) = import(Format::Conntrack, &text);
    assert_eq!(out.len(), 1);
    assert_eq!((rep.lines, rep.non_nat, rep.ignored, rep.malformed), (8, 1, 3, 3));
    let lines: Vec<u64> = rep.malformed_samples.iter().map(|m| m.line).collect();
    assert_eq!(lines, vec![3, 4, 7]);
    assert!(rep.malformed_samples[0].reason.contains("conntrack -E -o timestamp"));
    assert!(rep.malformed_samples[1].reason.contains("sport=70000"));
    assert_eq!(rep.malformed_samples[2].source, "test.log");
    assert_eq!(rep.open_at_end, 1);
}

#[test]
fn only_the_first_ten_malformed_lines_are_kept_but_all_are_counted() {
    let text = "garbage\n".repeat(25);
    let (_, rep) = import(Format::UlogdJson, &text);
    assert_eq!(rep.malformed, 25);
    assert_eq!(rep.malformed_samples.len(), ImportReport::SAMPLES);
    assert_eq!(rep.malformed_samples[9].line, 10);
}

#[test]
fn a_second_new_for_an_open_key_ends_the_first_approximately() {
    let again = NEW_TCP.replace("1767571200.123456", "1767571300.000000");
    let (out, rep) = import(Format::Conntrack, &format!("{NEW_TCP}\n{again}\n"));
    assert_eq!(out.len(), 3);
    let FlowEvent::End(lost) = &out[1] else { panic!("expected an end, got {:?}", out[1]) };
    assert_eq!(lost.flags, Flags::END_APPROX);
    assert_eq!(lost.end, Some(ts("2026-01-05T00:01:40Z")));
    assert_eq!((rep.lost_ends, rep.translations, rep.open_at_end), (1, 2, 1));
}

fn workload(mix: ProtoMix, ipv6_share: f64) -> Vec<FlowEvent> {
    let p = WorkloadParams {
        subscribers: 300,
        outside_pool: 2,
        remotes: 1_000,
        flows_per_second: 500.0,
        limit: Limit::Flows(5_000),
        resolution_ns: 1_000,
        dnat_share: 0.05,
        ipv6_share,
        mix,
        seed: 9,
        ..WorkloadParams::default()
    };
    synth::events(&p).expect("params").collect()
}

fn assert_same(got: &[FlowEvent], want: &[FlowEvent], what: &str) {
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
        panic!("{what}: event {i} differs:\n got {:?}\nwant {:?}", got[i], want[i]);
    }
    assert_eq!(got.len(), want.len(), "{what}: event count");
}

fn round_trip(format: Format, events: &[FlowEvent]) -> (Vec<FlowEvent>, ImportReport) {
    let mut text = String::new();
    for ev in events {
        render(format, ev, &mut text).expect("render");
    }
    import(format, &text)
}

#[test]
fn synthetic_workload_round_trips_through_every_format() {
    let mix = ProtoMix { tcp: 0.5, udp: 0.45, icmp: 0.05 };
    let events = workload(mix, 0.1);
    assert!(events.iter().any(|e| e.translation().kind == Kind::Dnat));
    for format in [Format::Jsonl, Format::Conntrack] {
        let (out, rep) = round_trip(format, &events);
        assert_eq!(rep.malformed_samples, vec![], "{format}");
        assert_same(&out, &events, format.name());
        assert_eq!(rep.translations, 5_000);
        assert_eq!((rep.end_only, rep.open_at_end, rep.lost_ends, rep.out_of_order), (0, 0, 0, 0));
    }
    // ulogd does not log ICMP echo ids: compare without ICMP.
    let events = workload(ProtoMix { icmp: 0.0, ..mix }, 0.1);
    let (out, rep) = round_trip(Format::UlogdJson, &events);
    assert_eq!(rep.malformed_samples, vec![]);
    assert_same(&out, &events, "ulogd-json");
}

#[test]
fn ulogd_icmp_has_no_echo_id_and_timestamp_is_a_fallback() {
    let line = r#"{"timestamp": "2026-01-05T01:00:00+0100", "dvc": "Netfilter", "orig.ip.protocol": 1, "icmp.code": 0, "icmp.type": 8, "ct.event": 1, "oob.family": 2, "src_ip": "10.0.0.2", "dest_ip": "198.51.100.7", "reply.ip.saddr.str": "198.51.100.7", "reply.ip.daddr.str": "100.64.0.1"}"#;
    let Line::Record(r) = parse_ulogd_line(line).expect("parse") else { panic!("not a record") };
    assert_eq!(r.at, ts("2026-01-05T00:00:00Z"));
    assert_eq!(r.translation.proto, Proto::ICMP);
    assert_eq!(r.translation.outside, "100.64.0.1:0".parse().expect("addr"));
    // Addresses as raw keys (no IP2STR) are not in ulogd's JSON at all.
    // Escaped strings are read too; a port of the wrong type is malformed.
    let escaped = line.replace(r#""src_ip": "10.0.0.2""#, r#""src_ip": "10.0.0.\u0032""#);
    assert_ne!(escaped, line);
    assert_eq!(parse_ulogd_line(&escaped), parse_ulogd_line(line));
    let bad_port = r#"{"ct.event": 1, "orig.ip.protocol": 6, "orig.l4.sport": "80", "flow.start.sec": 1, "src_ip": "10.0.0.2", "dest_ip": "198.51.100.7", "reply.ip.saddr.str": "198.51.100.7", "reply.ip.daddr.str": "100.64.0.1"}"#;
    assert!(parse_ulogd_line(bad_port).is_err());
    let bare = r#"{"ct.event": 1, "orig.ip.protocol": 6, "flow.start.sec": 1}"#;
    let err = parse_ulogd_line(bare).expect_err("no addresses");
    assert!(err.contains("IP2STR"), "{err}");
    assert_eq!(
        parse_ulogd_line(r#"{"oob.prefix": "x"}"#),
        Ok(Line::Ignored("not a conntrack event (no ct.event)"))
    );
}

#[test]
fn jsonl_passes_events_through_and_counts_them() {
    let events = workload(ProtoMix { tcp: 1.0, udp: 0.0, icmp: 0.0 }, 0.0);
    let mut text = String::new();
    // Drop the first 100 starts: their ends become end-only in the count (not flagged).
    let mut dropped = 0;
    for ev in &events {
        if matches!(ev, FlowEvent::Start(_)) && dropped < 100 {
            dropped += 1;
            continue;
        }
        render_jsonl(ev, &mut text).expect("render");
    }
    text.push_str("{\"event\":\"bogus\"}\n");
    let (out, rep) = import(Format::Jsonl, &text);
    assert_eq!(out.len(), events.len() - 100);
    assert_eq!((rep.starts, rep.ends, rep.translations, rep.malformed), (4_900, 5_000, 5_000, 1));
}

#[test]
fn out_of_order_lines_are_imported_and_counted() {
    let earlier =
        NEW_TCP.replace("1767571200.123456", "1767571100.000000").replace("40000", "40002");
    let (out, rep) = import(Format::Conntrack, &format!("{NEW_TCP}\n{earlier}\n"));
    assert_eq!(out.len(), 2);
    assert_eq!(rep.out_of_order, 1);
}

#[test]
fn rendered_conntrack_lines_have_conntracks_layout() {
    let mut s = String::new();
    let Ok(Line::Record(r)) = parse_conntrack_line(NEW_TCP) else { panic!("parse") };
    render_conntrack(&FlowEvent::Start(r.translation.clone()), &mut s);
    assert_eq!(s, format!("{NEW_TCP}\n"));
    let end = Translation { end: Some(ts("2026-01-05T00:00:30.000001Z")), ..r.translation };
    s.clear();
    render_conntrack(&FlowEvent::End(end), &mut s);
    assert_eq!(
        s,
        "[1767571230.000001]\t[DESTROY] ipv4     2 tcp      6 src=10.0.0.2 dst=198.51.100.7 sport=40000 dport=443 src=198.51.100.7 dst=100.64.0.1 sport=443 dport=40001 [ASSURED] delta-time=30\n"
    );
}
