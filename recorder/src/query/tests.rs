//! Unit tests of the query logic against the in-memory source (the reference semantics).

use std::path::Path;

use super::*;
use crate::model::Kind;
use crate::testing;

fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn ep(s: &str) -> EndpointMatch {
    parse_endpoint(s).expect("endpoint")
}

fn tr(inside: &str, outside: &str, remote: &str, start: &str, end: Option<&str>) -> Translation {
    testing::tr(inside, outside, remote).start(ts(start)).end(end.map(ts)).build()
}

fn at(outside: &str, when: &str) -> OutsideQuery {
    OutsideQuery {
        outside: ep(outside),
        remote: None,
        proto: None,
        at: ts(when),
        window: DEFAULT_WINDOW,
    }
}

fn insides(a: &Answer) -> Vec<String> {
    a.candidates.iter().map(|c| c.translation.inside.to_string()).collect()
}

/// A small gateway day: one outside address shared by several hosts.
fn store() -> Vec<Translation> {
    vec![
        // Two hosts share 100.64.0.1:40000 at the same time towards different remotes.
        tr(
            "10.0.1.2:51000",
            "100.64.0.1:40000",
            "198.51.100.7:443",
            "2026-11-24T10:00:00Z",
            Some("2026-11-24T10:05:00Z"),
        ),
        tr(
            "10.0.1.3:52000",
            "100.64.0.1:40000",
            "203.0.113.9:80",
            "2026-11-24T10:01:00Z",
            Some("2026-11-24T10:03:00Z"),
        ),
        // The port is reused later by a third host.
        tr(
            "10.0.1.4:53000",
            "100.64.0.1:40000",
            "198.51.100.7:443",
            "2026-11-24T11:00:00Z",
            Some("2026-11-24T11:00:30Z"),
        ),
        // Unrelated traffic.
        tr(
            "10.0.1.5:54000",
            "100.64.0.1:40001",
            "198.51.100.7:443",
            "2026-11-24T10:00:00Z",
            Some("2026-11-24T12:00:00Z"),
        ),
        tr(
            "10.0.1.2:51001",
            "100.64.0.2:40000",
            "192.0.2.1:53",
            "2026-11-24T10:02:00Z",
            Some("2026-11-24T10:02:01Z"),
        ),
    ]
}

#[test]
fn a_point_query_names_the_one_inside_endpoint() {
    let a = who_held(store().as_slice(), &at("100.64.0.1:40000", "2026-11-24T11:00:10Z"))
        .expect("answer");
    assert_eq!(insides(&a), ["10.0.1.4:53000"]);
    assert_eq!(a.distinct_inside, 1);
    assert_eq!(a.ambiguity, None);
    assert_eq!(a.candidates[0].at_instant, Some(true));
    assert_eq!((a.from, a.to), (ts("2026-11-24T11:00:08Z"), ts("2026-11-24T11:00:12Z")));
    assert!(a.notes.is_empty(), "{:?}", a.notes);
    assert!(a.found());
}

#[test]
fn shared_outside_port_is_ambiguous_without_remote_and_unique_with_it() {
    let q = at("100.64.0.1:40000", "2026-11-24T10:02:00Z");
    let a = who_held(store().as_slice(), &q).expect("answer");
    assert_eq!(insides(&a), ["10.0.1.2:51000", "10.0.1.3:52000"]);
    let amb = a.ambiguity.as_ref().expect("ambiguous");
    assert_eq!(amb.distinct_inside, 2);
    assert_eq!(amb.separated_by, [Separator::Remote]);
    assert_eq!(amb.one_host, None);
    assert!(amb.hint.contains("2 inside endpoints held 100.64.0.1:40000"), "{}", amb.hint);
    assert!(amb.hint.contains("--remote"), "{}", amb.hint);
    assert!(amb.hint.contains("at the same time"), "{}", amb.hint);

    for (remote, want) in
        [("203.0.113.9", "10.0.1.3:52000"), ("198.51.100.7:443", "10.0.1.2:51000")]
    {
        let a = who_held(store().as_slice(), &OutsideQuery { remote: Some(ep(remote)), ..q })
            .expect("answer");
        assert_eq!(insides(&a), [want]);
        assert_eq!(a.ambiguity, None);
    }
    // A remote nobody talked to: nothing matched.
    let a = who_held(store().as_slice(), &OutsideQuery { remote: Some(ep("192.0.2.99")), ..q })
        .expect("answer");
    assert!(!a.found());
}

#[test]
fn reuse_over_time_is_told_apart_by_a_narrower_time() {
    let q = Query {
        outside: Some(ep("100.64.0.1:40000")),
        inside: None,
        remote: Some(ep("198.51.100.7:443")),
        proto: Some(Proto::TCP),
        when: When::Range { from: ts("2026-11-24T09:00:00Z"), to: ts("2026-11-24T12:00:00Z") },
    };
    let a = ask(store().as_slice(), &q).expect("answer");
    assert_eq!(insides(&a), ["10.0.1.2:51000", "10.0.1.4:53000"]);
    let amb = a.ambiguity.as_ref().expect("ambiguous");
    assert_eq!(amb.separated_by, [Separator::Time]);
    assert!(amb.hint.contains("one after another"), "{}", amb.hint);
}

#[test]
fn a_candidate_only_within_the_window_is_marked_and_separable() {
    let data = vec![
        tr(
            "10.0.1.2:51000",
            "100.64.0.1:40000",
            "198.51.100.7:443",
            "2026-11-24T10:00:00Z",
            Some("2026-11-24T10:00:09Z"),
        ),
        tr(
            "10.0.1.3:52000",
            "100.64.0.1:40000",
            "198.51.100.7:443",
            "2026-11-24T10:00:10.5Z",
            Some("2026-11-24T10:01:00Z"),
        ),
    ];
    let q = at("100.64.0.1:40000", "2026-11-24T10:00:10Z");
    let a = who_held(data.as_slice(), &q).expect("answer");
    assert_eq!(insides(&a), ["10.0.1.2:51000", "10.0.1.3:52000"]);
    assert_eq!(
        a.candidates.iter().map(|c| c.at_instant).collect::<Vec<_>>(),
        [Some(false), Some(false)]
    );
    // Neither covers 10:00:10 itself: reuse over time, no single "at the instant" holder.
    assert_eq!(a.ambiguity.as_ref().expect("ambiguous").separated_by, [Separator::Time]);

    let q = at("100.64.0.1:40000", "2026-11-24T10:00:11Z");
    let a = who_held(data.as_slice(), &q).expect("answer");
    assert_eq!(
        a.candidates.iter().map(|c| c.at_instant).collect::<Vec<_>>(),
        [Some(false), Some(true)]
    );
    let amb = a.ambiguity.as_ref().expect("ambiguous");
    assert_eq!(amb.separated_by, [Separator::Time, Separator::Window]);
    assert!(
        amb.hint.contains("only 10.0.1.3:52000 held it at 2026-11-24T10:00:11Z itself"),
        "{}",
        amb.hint
    );
    // With --window 0 only that one is left.
    let a = who_held(data.as_slice(), &OutsideQuery { window: SignedDuration::ZERO, ..q })
        .expect("answer");
    assert_eq!(insides(&a), ["10.0.1.3:52000"]);
}

#[test]
fn window_edges_are_inclusive() {
    let data = vec![tr(
        "10.0.1.2:51000",
        "100.64.0.1:40000",
        "198.51.100.7:443",
        "2026-11-24T10:00:00Z",
        Some("2026-11-24T10:00:01Z"),
    )];
    let hit = |when: &str| {
        who_held(data.as_slice(), &at("100.64.0.1:40000", when)).expect("answer").found()
    };
    assert!(hit("2026-11-24T10:00:03Z"));
    assert!(!hit("2026-11-24T10:00:03.000000001Z"));
    assert!(hit("2026-11-24T09:59:58Z"));
    assert!(!hit("2026-11-24T09:59:57.999999999Z"));
}

#[test]
fn a_dnat_port_forward_is_one_inside_endpoint_for_many_remotes() {
    let mut data: Vec<Translation> = (0..5)
        .map(|i| {
            let mut t = tr(
                "10.0.2.5:80",
                "100.64.0.1:8080",
                &format!("198.51.100.{}:{}", 10 + i, 50000 + i),
                "2026-11-24T10:00:00Z",
                Some("2026-11-24T10:10:00Z"),
            );
            t.kind = Kind::Dnat;
            t
        })
        .collect();
    data.extend(store());
    let a =
        who_held(data.as_slice(), &at("100.64.0.1:8080", "2026-11-24T10:05:00Z")).expect("answer");
    assert_eq!(a.candidates.len(), 5);
    assert_eq!(a.distinct_inside, 1);
    assert_eq!(a.ambiguity, None);
    assert!(a.candidates.iter().all(|c| c.translation.kind == Kind::Dnat));
}

#[test]
fn one_host_with_several_ports_is_said_so() {
    let data = vec![
        tr(
            "10.0.1.2:51000",
            "100.64.0.1:40000",
            "198.51.100.7:443",
            "2026-11-24T10:00:00Z",
            Some("2026-11-24T10:05:00Z"),
        ),
        tr(
            "10.0.1.2:51001",
            "100.64.0.1:40000",
            "198.51.100.8:443",
            "2026-11-24T10:00:00Z",
            Some("2026-11-24T10:05:00Z"),
        ),
    ];
    let a = who_held(data.as_slice(), &at("100.64.0.1", "2026-11-24T10:01:00Z")).expect("answer");
    let amb = a.ambiguity.as_ref().expect("ambiguous");
    assert_eq!(amb.one_host, Some("10.0.1.2".parse().expect("ip")));
    assert!(amb.hint.contains("all on one inside host 10.0.1.2"), "{}", amb.hint);
}

#[test]
fn an_address_without_a_port_is_narrowed_by_the_port() {
    // Two inside hosts behind one outside address, on different outside ports, same remote.
    let data = vec![
        tr(
            "10.0.1.2:51000",
            "100.64.0.1:40000",
            "198.51.100.7:443",
            "2026-11-24T10:00:00Z",
            Some("2026-11-24T10:05:00Z"),
        ),
        tr(
            "10.0.1.3:51000",
            "100.64.0.1:40001",
            "198.51.100.7:443",
            "2026-11-24T10:00:00Z",
            Some("2026-11-24T10:05:00Z"),
        ),
    ];
    let a = who_held(data.as_slice(), &at("100.64.0.1", "2026-11-24T10:01:00Z")).expect("answer");
    let amb = a.ambiguity.as_ref().expect("ambiguous");
    assert_eq!(amb.separated_by, [Separator::OutsidePort]);
    assert!(amb.hint.contains("2 different ports of 100.64.0.1"), "{}", amb.hint);
    assert!(amb.hint.contains("--outside 100.64.0.1:PORT"), "{}", amb.hint);
    // With the port, one answer.
    let a =
        who_held(data.as_slice(), &at("100.64.0.1:40001", "2026-11-24T10:01:00Z")).expect("answer");
    assert!(a.ambiguity.is_none(), "{a:?}");
    assert_eq!(a.candidates.len(), 1);
}

#[test]
fn inseparable_candidates_are_admitted() {
    let mut b = tr(
        "10.0.1.3:51000",
        "100.64.0.1:40000",
        "198.51.100.7:443",
        "2026-11-24T10:00:00Z",
        Some("2026-11-24T10:05:00Z"),
    );
    b.zone = 7;
    let data = vec![
        tr(
            "10.0.1.2:51000",
            "100.64.0.1:40000",
            "198.51.100.7:443",
            "2026-11-24T10:00:00Z",
            Some("2026-11-24T10:05:00Z"),
        ),
        b,
    ];
    let a =
        who_held(data.as_slice(), &at("100.64.0.1:40000", "2026-11-24T10:01:00Z")).expect("answer");
    let amb = a.ambiguity.as_ref().expect("ambiguous");
    assert!(amb.separated_by.is_empty());
    assert!(amb.hint.contains("neither --remote, --proto nor a narrower time"), "{}", amb.hint);
}

#[test]
fn approximate_times_and_open_translations_are_noted() {
    let mut lost_end = tr(
        "10.0.1.2:51000",
        "100.64.0.1:40000",
        "198.51.100.7:443",
        "2026-11-24T10:00:00Z",
        Some("2026-11-24T10:30:00Z"),
    );
    lost_end.flags = Flags::END_APPROX;
    let mut seeded =
        tr("10.0.1.3:51000", "100.64.0.1:40001", "198.51.100.7:443", "2026-11-24T09:00:00Z", None);
    seeded.flags = Flags::SEEDED.union(Flags::START_APPROX);
    let data = vec![
        lost_end,
        seeded,
        tr("10.0.9.9:1", "100.64.0.9:1", "192.0.2.1:1", "2026-11-24T12:00:00Z", None),
    ];

    let a =
        who_held(data.as_slice(), &at("100.64.0.1:40000", "2026-11-24T10:20:00Z")).expect("answer");
    assert_eq!(
        a.notes,
        [Note::EndApprox {
            inside: "10.0.1.2:51000".parse().expect("addr"),
            outside: "100.64.0.1:40000".parse().expect("addr"),
            end: ts("2026-11-24T10:30:00Z"),
        }]
    );
    assert!(a.notes[0].to_string().contains("ended at or before 2026-11-24T10:30:00Z"));

    // An open translation is found at any later time, with its approximate start said.
    let a =
        who_held(data.as_slice(), &at("100.64.0.1:40001", "2026-11-24T11:59:00Z")).expect("answer");
    assert_eq!(insides(&a), ["10.0.1.3:51000"]);
    assert!(matches!(a.notes.as_slice(), [Note::StartApprox { .. }]), "{:?}", a.notes);
}

#[test]
fn times_outside_the_retained_data_are_noted() {
    let data = store();
    let before =
        who_held(data.as_slice(), &at("100.64.0.1:40000", "2026-11-23T10:00:00Z")).expect("answer");
    assert!(!before.found());
    assert_eq!(before.notes, [Note::BeforeRetained { earliest: ts("2026-11-24T10:00:00Z") }]);
    let after =
        who_held(data.as_slice(), &at("100.64.0.1:40000", "2026-11-25T10:00:00Z")).expect("answer");
    assert_eq!(after.notes, [Note::AfterRetained { latest: ts("2026-11-24T12:00:00Z") }]);
    let empty: Vec<Translation> = Vec::new();
    let none = who_held(empty.as_slice(), &at("100.64.0.1:40000", "2026-11-25T10:00:00Z"))
        .expect("answer");
    assert_eq!(none.notes, [Note::NoData]);
}

#[test]
fn range_queries_by_inside_and_by_remote() {
    let range = When::Range { from: ts("2026-11-24T10:00:00Z"), to: ts("2026-11-24T10:30:00Z") };
    let q = Query {
        outside: None,
        inside: Some(ep("10.0.1.2")),
        remote: None,
        proto: None,
        when: range,
    };
    let a = ask(store().as_slice(), &q).expect("answer");
    assert_eq!(insides(&a), ["10.0.1.2:51000", "10.0.1.2:51001"]);
    assert_eq!(a.distinct_inside, 2);
    assert_eq!(a.ambiguity, None, "an inside query names its endpoints; no ambiguity");
    assert!(a.candidates.iter().all(|c| c.at_instant.is_none()));

    let q = Query { inside: None, remote: Some(ep("198.51.100.7:443")), ..q };
    let a = ask(store().as_slice(), &q).expect("answer");
    assert_eq!(insides(&a), ["10.0.1.2:51000", "10.0.1.5:54000"]);

    let reversed = Query {
        when: When::Range { from: ts("2026-11-24T11:00:00Z"), to: ts("2026-11-24T10:00:00Z") },
        ..q.clone()
    };
    let err = ask(store().as_slice(), &reversed).expect_err("reversed");
    assert!(err.to_string().contains("reversed"), "{err}");
    let nothing = Query { remote: None, ..q };
    assert!(matches!(ask(store().as_slice(), &nothing), Err(QueryError::NoEndpoint)));
}

#[test]
fn endpoints_parse_with_or_without_port() {
    assert_eq!(
        ep("100.64.0.1"),
        EndpointMatch { ip: "100.64.0.1".parse().expect("ip"), port: None }
    );
    assert_eq!(ep("100.64.0.1:0").port, Some(0));
    assert_eq!(ep("[2001:db8::1]:443").port, Some(443));
    assert_eq!(ep("2001:db8::1").port, None);
    assert_eq!(ep("[2001:db8::1]").port, None);
    for bad in ["100.64.0.1:70000", "100.64.0", "host:80", "", "100.64.0.1:"] {
        let err = parse_endpoint(bad).expect_err(bad).to_string();
        assert!(err.starts_with("expected an IP address or IP:PORT"), "{err}");
    }
}

fn ambiguous_answer() -> Answer {
    let map = SubscriberMap::parse(
        "10.0.1.0/24,acct-1001\n10.0.1.3,\"acct, quoted\"x\n",
        Path::new("s.csv"),
    );
    assert!(map.is_err(), "an account with a comma is refused");
    let map =
        SubscriberMap::parse("10.0.1.0/24,acct-1001\n10.0.1.3,acct \"q\"\n", Path::new("s.csv"))
            .expect("map");
    let mut a = who_held(store().as_slice(), &at("100.64.0.1:40000", "2026-11-24T10:02:00Z"))
        .expect("answer");
    a.label_accounts(&map);
    a
}

#[test]
fn accounts_label_candidates() {
    let a = ambiguous_answer();
    let accounts: Vec<_> = a.candidates.iter().map(|c| c.account.as_deref()).collect();
    assert_eq!(accounts, [Some("acct-1001"), Some("acct \"q\"")]);
    assert!(!a.ambiguity.as_ref().expect("ambiguous").hint.contains("belong to account"));

    // Both candidates in one account: the account is certain, and the hint says so.
    let one = SubscriberMap::parse("10.0.1.0/24,acct-1001\n", Path::new("s.csv")).expect("map");
    let mut a = who_held(store().as_slice(), &at("100.64.0.1:40000", "2026-11-24T10:02:00Z"))
        .expect("answer");
    a.label_accounts(&one);
    let hint = &a.ambiguity.as_ref().expect("ambiguous").hint;
    assert!(hint.ends_with("; all of them belong to account acct-1001"), "{hint}");
}

#[test]
fn jsonl_has_one_object_per_translation_and_a_summary() {
    let a = ambiguous_answer();
    let mut out = Vec::new();
    write_jsonl(&mut out, &a).expect("write");
    let text = String::from_utf8(out).expect("utf8");
    let lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["type"], "translation");
    assert_eq!(lines[0]["inside"], "10.0.1.2:51000");
    assert_eq!(lines[0]["account"], "acct-1001");
    assert_eq!(lines[0]["start"], "2026-11-24T10:00:00Z");
    assert_eq!(lines[0]["at_instant"], true);
    assert_eq!(lines[0]["flags"], serde_json::json!([]));
    let s = &lines[2];
    assert_eq!(s["type"], "summary");
    assert_eq!(s["matches"], 2);
    assert_eq!(s["distinct_inside"], 2);
    assert_eq!(s["ambiguous"], true);
    assert_eq!(s["separated_by"], serde_json::json!(["remote"]));
    assert!(s["hint"].as_str().expect("hint").contains("--remote"));
    assert_eq!(s["at"], "2026-11-24T10:02:00Z");
    assert_eq!(s["from"], "2026-11-24T10:01:58Z");

    // Times to the store's resolution (milliseconds here).
    let mut a = a;
    a.precision = Some(3);
    let mut out = Vec::new();
    write_jsonl(&mut out, &a).expect("write");
    let first: serde_json::Value =
        serde_json::from_str(String::from_utf8(out).expect("utf8").lines().next().expect("line"))
            .expect("json");
    assert_eq!(first["start"], "2026-11-24T10:00:00.000Z");
    assert_eq!(first["end"], "2026-11-24T10:05:00.000Z");
}

#[test]
fn csv_has_a_header_and_quotes_when_needed() {
    let a = ambiguous_answer();
    let mut out = Vec::new();
    write_csv(&mut out, &a).expect("write");
    let text = String::from_utf8(out).expect("utf8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], output::CSV_HEADER);
    assert_eq!(
        lines[1],
        "snat,tcp,10.0.1.2:51000,acct-1001,100.64.0.1:40000,198.51.100.7:443,0,2026-11-24T10:00:00Z,2026-11-24T10:05:00Z,,true"
    );
    assert!(lines[2].contains(",\"acct \"\"q\"\"\","), "{}", lines[2]);
    assert_eq!(lines.len(), 3);
}

#[test]
fn the_table_says_who_how_many_and_how_to_narrow() {
    let a = ambiguous_answer();
    let mut out = Vec::new();
    write_table(&mut out, &a).expect("write");
    let text = String::from_utf8(out).expect("utf8");
    assert!(text.contains("1. 10.0.1.2:51000  account acct-1001  tcp snat"), "{text}");
    assert!(
        text.contains("2 translations of 2 inside endpoints for outside 100.64.0.1:40000"),
        "{text}"
    );
    assert!(text.contains("AMBIGUOUS: 2 inside endpoints held"), "{text}");
    for line in
        text.lines().filter(|l| !l.starts_with("AMBIGUOUS") && !l.starts_with("2 translations"))
    {
        assert!(line.len() <= 80, "too wide for 80 columns: {line:?}");
    }
}
