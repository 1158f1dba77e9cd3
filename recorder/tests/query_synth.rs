//! `natrec query`'s answers over the synthetic ISP workload, checked against brute force over
//! the same translations (the in-memory reference source).

use std::collections::HashSet;

use jiff::{SignedDuration, Timestamp};
use recorder::lookup::{EndpointMatch, Filter};
use recorder::model::{Kind, Translation};
use recorder::query::{Answer, OutsideQuery, Query, Separator, When, ask, who_held};
use recorder::synth::{self, Limit, WorkloadParams};

fn workload() -> Vec<Translation> {
    let params = WorkloadParams {
        seed: 7,
        subscribers: 3_000,
        outside_pool: 1,
        flows_per_second: 1_000.0,
        limit: Limit::Flows(20_000),
        dnat_share: 0.01,
        ..WorkloadParams::default()
    };
    synth::translations(&params).expect("workload").collect()
}

fn exact(ep: std::net::SocketAddr) -> EndpointMatch {
    EndpointMatch { ip: ep.ip(), port: Some(ep.port()) }
}

fn midpoint(t: &Translation) -> Timestamp {
    let end = t.end.expect("a drained workload ends every translation");
    let half = end.duration_since(t.start) / 2;
    t.start.checked_add(half).expect("time")
}

fn brute(data: &[Translation], f: &Filter) -> Vec<Translation> {
    let mut v: Vec<Translation> = data.iter().filter(|t| f.matches(t)).cloned().collect();
    v.sort_by_key(|t| (t.start, t.inside, t.outside, t.remote, t.proto, t.zone));
    v
}

fn found(a: &Answer) -> Vec<Translation> {
    a.candidates.iter().map(|c| c.translation.clone()).collect()
}

/// With the full reply tuple (outside, remote, protocol) and the exact time, conntrack makes the
/// answer unique: the packet-capture harness relies on this.
#[test]
fn full_tuple_at_an_instant_names_exactly_one_translation() {
    let data = workload();
    assert!(data.len() > 15_000, "workload too small: {}", data.len());
    for t in data.iter().step_by(97) {
        let q = OutsideQuery {
            outside: exact(t.outside),
            remote: Some(exact(t.remote)),
            proto: Some(t.proto),
            at: midpoint(t),
            window: SignedDuration::ZERO,
        };
        let a = who_held(data.as_slice(), &q).expect("answer");
        assert_eq!(found(&a), std::slice::from_ref(t), "query {q:?}");
        assert_eq!(a.ambiguity, None);
    }
}

/// Without the remote, the answer is exactly the brute-force set, and every separating fact it
/// claims really separates the candidates.
#[test]
fn ambiguity_claims_hold_against_brute_force() {
    let data = workload();
    let (mut ambiguous, mut by_remote, mut by_time) = (0, 0, 0);
    for t in data.iter().step_by(61) {
        let q = OutsideQuery {
            outside: exact(t.outside),
            remote: None,
            proto: Some(t.proto),
            at: midpoint(t),
            window: SignedDuration::from_secs(2),
        };
        let a = who_held(data.as_slice(), &q).expect("answer");
        let want = brute(&data, &Query::from(q).filter().expect("filter"));
        assert_eq!(found(&a), want);
        assert!(want.contains(t));
        let insides: HashSet<_> = want.iter().map(|t| (t.zone, t.inside)).collect();
        assert_eq!(a.distinct_inside, insides.len());
        let Some(amb) = &a.ambiguity else {
            assert_eq!(insides.len(), 1);
            continue;
        };
        ambiguous += 1;
        assert!(insides.len() > 1);
        if amb.separated_by.contains(&Separator::Remote) {
            by_remote += 1;
            for c in &want {
                let narrowed = OutsideQuery {
                    remote: Some(EndpointMatch { ip: c.remote.ip(), port: None }),
                    ..q
                };
                let n = who_held(data.as_slice(), &narrowed).expect("answer");
                assert_eq!(
                    n.distinct_inside, 1,
                    "--remote {} should separate: {}",
                    c.remote, amb.hint
                );
            }
        }
        if amb.separated_by.contains(&Separator::Time) {
            by_time += 1;
            for x in &want {
                for y in want.iter().filter(|y| (y.zone, y.inside) != (x.zone, x.inside)) {
                    assert!(!x.overlaps(y.start, y.end.unwrap_or(y.start)), "{x:?} overlaps {y:?}");
                }
            }
        }
    }
    // The workload must exercise both kinds of sharing (one outside address for 3 000 hosts).
    assert!(
        ambiguous > 0 && by_remote > 0,
        "ambiguous {ambiguous}, by remote {by_remote}, by time {by_time}"
    );
}

#[test]
fn port_forwards_name_the_forwarded_host() {
    let data = workload();
    let forwards: Vec<&Translation> = data.iter().filter(|t| t.kind == Kind::Dnat).collect();
    assert!(forwards.len() > 50, "too few port forwards: {}", forwards.len());
    for t in forwards.iter().step_by(7) {
        let q = OutsideQuery {
            outside: exact(t.outside),
            remote: None,
            proto: Some(t.proto),
            at: midpoint(t),
            window: SignedDuration::ZERO,
        };
        let a = who_held(data.as_slice(), &q).expect("answer");
        let dnat_insides: HashSet<_> = a
            .candidates
            .iter()
            .filter(|c| c.translation.kind == Kind::Dnat)
            .map(|c| c.translation.inside)
            .collect();
        assert_eq!(dnat_insides, HashSet::from([t.inside]));
    }
}

#[test]
fn inside_and_remote_range_queries_match_brute_force() {
    let data = workload();
    let from = data.iter().map(|t| t.start).min().expect("data");
    let to = from.checked_add(SignedDuration::from_secs(10)).expect("time");
    for t in data.iter().step_by(2_999) {
        for q in [
            Query {
                outside: None,
                inside: Some(EndpointMatch { ip: t.inside.ip(), port: None }),
                remote: None,
                proto: None,
                when: When::Range { from, to },
            },
            Query {
                outside: None,
                inside: None,
                remote: Some(exact(t.remote)),
                proto: None,
                when: When::Range { from, to },
            },
        ] {
            let a = ask(data.as_slice(), &q).expect("answer");
            assert_eq!(found(&a), brute(&data, &q.filter().expect("filter")));
            assert_eq!(a.ambiguity, None);
        }
    }
}
