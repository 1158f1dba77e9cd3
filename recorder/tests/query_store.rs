//! `natrec query`'s answers from real segment directories written by `store::Writer`: flows
//! across rotations and restarts, shared and reused outside ports, port forwards, windows at
//! segment edges, approximate ends, retained range, damaged blocks.

use std::path::Path;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use recorder::model::{Flags, FlowEvent, Kind, Proto, Translation};
use recorder::query::{
    Answer, Note, OutsideQuery, Query, Separator, When, ask, parse_endpoint, who_held,
};
use recorder::store::{Reader, Writer, WriterOptions};
use recorder::testing;

/// Times are seconds after this (in the future of the test machine's clock, so that the writer's
/// age-based rotation, measured from its own clock at open, follows the test's ticks).
fn at(secs: i64) -> Timestamp {
    let t0: Timestamp = "2030-01-01T10:00:00Z".parse().expect("t0");
    t0.checked_add(SignedDuration::from_secs(secs)).expect("time")
}

fn tr(inside: &str, outside: &str, remote: &str, start: i64, end: Option<i64>) -> Translation {
    testing::tr(inside, outside, remote).start(at(start)).end(end.map(at)).build()
}

fn open(dir: &Path) -> Writer {
    Writer::open(WriterOptions {
        dir: dir.to_owned(),
        rotate_age: Duration::from_secs(60),
        block_records: 2,
        ..WriterOptions::default()
    })
    .expect("writer")
}

fn start(w: &mut Writer, t: &Translation) {
    w.append(&FlowEvent::Start(Translation { end: None, ..t.clone() })).expect("append start");
}

fn end(w: &mut Writer, t: &Translation) {
    w.append(&FlowEvent::End(t.clone())).expect("append end");
}

/// Writes whole translations (start and end) in start order, ticking at every start.
fn write_all(dir: &Path, ts: &[Translation]) {
    let mut w = open(dir);
    let mut events: Vec<(Timestamp, FlowEvent)> = Vec::new();
    for t in ts {
        events.push((t.start, FlowEvent::Start(Translation { end: None, ..t.clone() })));
        if let Some(e) = t.end {
            events.push((e, FlowEvent::End(t.clone())));
        }
    }
    events.sort_by_key(|(t, e)| (*t, matches!(e, FlowEvent::Start(_))));
    for (i, (t, e)) in events.into_iter().enumerate() {
        // No tick before the first event (an empty first segment is covered by
        // `an_empty_segment_does_not_hide_the_ones_after_it`).
        if i > 0 {
            w.tick(t).expect("tick");
        }
        w.append(&e).expect("append");
    }
    w.close().expect("close");
}

fn ep(s: &str) -> recorder::lookup::EndpointMatch {
    parse_endpoint(s).expect("endpoint")
}

fn point(outside: &str, secs: i64) -> OutsideQuery {
    OutsideQuery {
        outside: ep(outside),
        remote: None,
        proto: None,
        at: at(secs),
        window: recorder::query::DEFAULT_WINDOW,
    }
}

fn held(dir: &Path, q: &OutsideQuery) -> Answer {
    let r = Reader::open(dir).expect("reader");
    who_held(&r, q).expect("answer")
}

fn found(a: &Answer) -> Vec<Translation> {
    a.candidates.iter().map(|c| c.translation.clone()).collect()
}

#[test]
fn flows_across_rotations_are_found_once_with_their_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = tr("10.0.1.2:40000", "100.64.0.1:40000", "198.51.100.7:443", 1, Some(130));
    let b = tr("10.0.1.3:40000", "100.64.0.1:40000", "198.51.100.9:443", 2, Some(3));
    let c = tr("10.0.1.4:41000", "100.64.0.1:40001", "198.51.100.8:443", 150, Some(190));

    // The writer rotates at the first tick (+3 s), then every 60 s: at +63, +123 and +183.
    let mut w = open(dir.path());
    start(&mut w, &a);
    start(&mut w, &b);
    w.tick(at(3)).expect("tick");
    end(&mut w, &b);
    for s in [10, 63, 123, 130, 150, 183, 190] {
        w.tick(at(s)).expect("tick");
        // Something new in every segment, as a busy gateway has.
        let filler = tr("10.0.9.9:1000", &format!("100.64.0.9:{s}"), "192.0.2.1:53", s, Some(s));
        start(&mut w, &filler);
        end(&mut w, &filler);
        match s {
            130 => end(&mut w, &a),
            150 => start(&mut w, &c),
            190 => end(&mut w, &c),
            _ => {}
        }
    }
    w.close().expect("close");

    let reader = Reader::open(dir.path()).expect("reader");
    assert!(
        reader.segments().len() >= 4,
        "expected several segments, got {}",
        reader.segments().len()
    );
    // In a later segment, a flow that started two rotations earlier, with its end.
    for s in [1, 60, 90, 125, 130] {
        let ans = who_held(&reader, &point("100.64.0.1:40000", s)).expect("answer");
        let want: Vec<Translation> =
            [&a, &b].into_iter().filter(|t| t.overlaps(at(s - 2), at(s + 2))).cloned().collect();
        assert_eq!(found(&ans), want, "at +{s}s");
    }
    // Across the rotation at +183 s (c starts in one segment and ends in the next).
    for s in [160, 183, 186] {
        assert_eq!(
            found(&held(dir.path(), &point("100.64.0.1:40001", s))),
            std::slice::from_ref(&c),
            "at +{s}s"
        );
    }
    // Everything 10.0.1.2 did: a, once.
    let q = Query {
        outside: None,
        inside: Some(ep("10.0.1.2")),
        remote: None,
        proto: None,
        when: When::Range { from: at(0), to: at(300) },
    };
    assert_eq!(found(&ask(&reader, &q).expect("answer")), [a]);
}

#[test]
fn a_flow_across_a_restart_is_found_once_with_its_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let filler = tr("10.0.9.9:1000", "100.64.0.9:1000", "192.0.2.1:53", 100, Some(101));
    let d = tr("10.0.1.4:41000", "100.64.0.1:40001", "198.51.100.8:443", 150, Some(170));
    let mut w = open(dir.path());
    start(&mut w, &filler);
    end(&mut w, &filler);
    w.tick(at(150)).expect("tick");
    start(&mut w, &d);
    w.tick(at(152)).expect("tick");
    drop(w); // the recorder dies with d open

    let mut w = open(dir.path());
    assert!(w.recovered_open().iter().any(|t| t.key() == d.key()));
    w.tick(at(160)).expect("tick");
    // After the restart the recorder seeds d again from the conntrack table, then sees its end.
    start(&mut w, &Translation { flags: Flags::SEEDED, ..d.clone() });
    w.tick(at(170)).expect("tick");
    end(&mut w, &d);
    w.close().expect("close");

    let reader = Reader::open(dir.path()).expect("reader");
    for s in [151, 160, 169] {
        let ans = who_held(&reader, &point("100.64.0.1:40001", s)).expect("answer");
        assert_eq!(ans.candidates.len(), 1, "at +{s}s: {:?}", found(&ans));
        assert_eq!(ans.candidates[0].translation.end, d.end, "at +{s}s");
    }
}

#[test]
fn a_port_shared_across_remotes_needs_the_remote_and_reuse_over_time_a_narrower_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let x = tr("10.0.1.2:51000", "100.64.0.1:40000", "198.51.100.7:443", 10, Some(70));
    let y = tr("10.0.1.3:52000", "100.64.0.1:40000", "203.0.113.9:80", 20, Some(40));
    let z = tr("10.0.1.4:53000", "100.64.0.1:40000", "198.51.100.7:443", 100, Some(130));
    write_all(dir.path(), &[x.clone(), y.clone(), z.clone()]);

    let ans = held(dir.path(), &point("100.64.0.1:40000", 30));
    assert_eq!(found(&ans), [x.clone(), y.clone()]);
    let amb = ans.ambiguity.as_ref().expect("ambiguous");
    assert_eq!(amb.separated_by, [Separator::Remote]);
    let with_remote =
        OutsideQuery { remote: Some(ep("203.0.113.9:80")), ..point("100.64.0.1:40000", 30) };
    assert_eq!(found(&held(dir.path(), &with_remote)), [y]);

    let q = Query {
        outside: Some(ep("100.64.0.1:40000")),
        inside: None,
        remote: Some(ep("198.51.100.7:443")),
        proto: Some(Proto::TCP),
        when: When::Range { from: at(0), to: at(200) },
    };
    let ans = ask(&Reader::open(dir.path()).expect("reader"), &q).expect("answer");
    assert_eq!(found(&ans), [x, z.clone()]);
    assert_eq!(ans.ambiguity.as_ref().expect("ambiguous").separated_by, [Separator::Time]);
    assert_eq!(found(&held(dir.path(), &point("100.64.0.1:40000", 110))), [z]);
}

#[test]
fn a_port_forward_names_the_forwarded_host_for_every_remote() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ts: Vec<Translation> = (0..6)
        .map(|i| Translation {
            kind: Kind::Dnat,
            ..tr(
                "10.0.2.5:80",
                "100.64.0.1:8080",
                &format!("198.51.100.{}:{}", 20 + i, 50_000 + i),
                10 + i,
                Some(100),
            )
        })
        .collect();
    ts.push(tr("10.0.1.2:8080", "100.64.0.1:8081", "198.51.100.7:443", 10, Some(100)));
    write_all(dir.path(), &ts);
    let ans = held(dir.path(), &point("100.64.0.1:8080", 50));
    assert_eq!(ans.candidates.len(), 6);
    assert_eq!(ans.distinct_inside, 1);
    assert_eq!(ans.ambiguity, None);
    assert!(
        ans.candidates
            .iter()
            .all(|c| c.translation.kind == Kind::Dnat && c.translation.inside == ts[0].inside)
    );
}

#[test]
fn windows_at_segment_edges_see_both_sides() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The writer rotates at the first tick (+59 s) and every 60 s after: e, f and g each cross
    // or touch a segment edge.
    let e = tr("10.0.1.2:51000", "100.64.0.1:40000", "198.51.100.7:443", 50, Some(59));
    let f = tr("10.0.1.3:52000", "100.64.0.1:40000", "198.51.100.7:443", 61, Some(119));
    let g = tr("10.0.1.4:53000", "100.64.0.1:40000", "198.51.100.7:443", 121, Some(122));
    let mut w = open(dir.path());
    for (i, s, ev) in [
        (50, Some(FlowEvent::Start(Translation { end: None, ..e.clone() }))),
        (59, Some(FlowEvent::End(e.clone()))),
        (60, None),
        (61, Some(FlowEvent::Start(Translation { end: None, ..f.clone() }))),
        (119, Some(FlowEvent::End(f.clone()))),
        (120, None),
        (121, Some(FlowEvent::Start(Translation { end: None, ..g.clone() }))),
        (122, Some(FlowEvent::End(g.clone()))),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (s, ev))| (i, s, ev))
    {
        if i > 0 {
            w.tick(at(s)).expect("tick");
        }
        if let Some(ev) = ev {
            w.append(&ev).expect("append");
        }
    }
    w.close().expect("close");
    assert!(Reader::open(dir.path()).expect("reader").segments().len() >= 3);

    let ans = held(dir.path(), &point("100.64.0.1:40000", 60));
    assert_eq!(found(&ans), [e.clone(), f.clone()]);
    let amb = ans.ambiguity.as_ref().expect("ambiguous");
    assert_eq!(amb.separated_by, [Separator::Time]);
    let exact = OutsideQuery { window: SignedDuration::ZERO, ..point("100.64.0.1:40000", 60) };
    assert!(!held(dir.path(), &exact).found());
    let edge = OutsideQuery { window: SignedDuration::ZERO, ..point("100.64.0.1:40000", 119) };
    assert_eq!(found(&held(dir.path(), &edge)), std::slice::from_ref(&f));
    let ans = held(dir.path(), &point("100.64.0.1:40000", 120));
    assert_eq!(found(&ans), [f, g]);
}

#[test]
fn approximate_ends_and_times_outside_the_retained_data_are_said() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lost = Translation {
        flags: Flags::END_APPROX,
        ..tr("10.0.1.2:51000", "100.64.0.1:40000", "198.51.100.7:443", 10, Some(90))
    };
    write_all(
        dir.path(),
        &[lost.clone(), tr("10.0.1.3:1", "100.64.0.1:2", "198.51.100.7:443", 100, Some(120))],
    );
    let ans = held(dir.path(), &point("100.64.0.1:40000", 50));
    assert_eq!(ans.candidates.len(), 1);
    assert!(ans.candidates[0].translation.flags.contains(Flags::END_APPROX));
    assert!(
        ans.notes.iter().any(|n| matches!(n, Note::EndApprox { end, .. } if *end == at(90))),
        "{:?}",
        ans.notes
    );
    let before = held(dir.path(), &point("100.64.0.1:40000", -86_400));
    assert!(!before.found());
    assert!(
        before.notes.iter().any(|n| matches!(n, Note::BeforeRetained { .. })),
        "{:?}",
        before.notes
    );
    let after = held(dir.path(), &point("100.64.0.1:40000", 86_400));
    assert!(
        after.notes.iter().any(|n| matches!(n, Note::AfterRetained { .. })),
        "{:?}",
        after.notes
    );
}

/// Flips one byte inside the payload of the `nth` block frame of a sealed segment.
pub fn damage_block(seg: &Path, nth: usize) {
    let mut bytes = std::fs::read(seg).expect("read segment");
    let mut off = 72; // header
    let mut seen = 0;
    while off + 12 <= bytes.len() {
        let kind = bytes[off];
        let len = u32::from_le_bytes(bytes[off + 4..off + 8].try_into().expect("len")) as usize;
        if kind == 1 {
            if seen == nth {
                let at = off + 12 + len / 2;
                bytes[at] ^= 0x5a;
                std::fs::write(seg, &bytes).expect("write segment");
                return;
            }
            seen += 1;
        }
        off += 12 + len;
    }
    panic!("{} has no block {nth}", seg.display());
}

#[test]
fn a_damaged_block_is_skipped_and_said_while_the_rest_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ts: Vec<Translation> = (0..40)
        .map(|i| {
            tr(
                &format!("10.0.1.{}:40000", i + 1),
                &format!("100.64.0.1:{}", 40_000 + i),
                "198.51.100.7:443",
                i,
                Some(i + 30),
            )
        })
        .collect();
    write_all(dir.path(), &ts);
    let reader = Reader::open(dir.path()).expect("reader");
    let seg = reader
        .segments()
        .into_iter()
        .filter(|s| s.records >= 10 && s.blocks >= 5)
        .map(|s| s.path)
        .next()
        .expect("a sealed segment with several blocks");
    damage_block(&seg, 3);

    let reader = Reader::open(dir.path()).expect("reader after damage");
    let all = Query {
        outside: Some(ep("100.64.0.1")),
        inside: None,
        remote: None,
        proto: None,
        when: When::Range { from: at(0), to: at(100) },
    };
    let ans = ask(&reader, &all).expect("a damaged block is not an error");
    assert!(!ans.report.damage.is_empty(), "the damage must be reported");
    assert!(ans.notes.iter().any(|n| matches!(n, Note::Damaged(_))), "{:?}", ans.notes);
    assert!(ans.notes.iter().any(|n| n.to_string().contains("may miss translations")));
    let got = found(&ans);
    assert!(got.len() < ts.len(), "the damaged block's translations cannot be there");
    assert!(
        got.len() >= ts.len() - 4,
        "only the damaged block may be missing: {} of {}",
        got.len(),
        ts.len()
    );
    assert!(got.iter().all(|t| ts.contains(t)), "nothing invented");
}

#[test]
fn an_empty_segment_does_not_hide_the_ones_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let x = tr("10.0.1.2:51000", "100.64.0.1:40000", "198.51.100.7:443", 10, Some(20));
    let mut w = open(dir.path());
    w.tick(at(0)).expect("tick"); // seals the writer's first segment empty (a quiet start)
    w.tick(at(5)).expect("tick");
    start(&mut w, &x);
    w.tick(at(20)).expect("tick");
    end(&mut w, &x);
    w.close().expect("close");
    assert_eq!(found(&held(dir.path(), &point("100.64.0.1:40000", 15))), [x]);
}

/// The synthetic ISP workload written through the store (several segments, rotated by size)
/// gives the same answers as the in-memory reference over the same translations.
#[test]
fn synthetic_workload_answers_match_the_reference() {
    use recorder::synth::{self, Limit, WorkloadParams};
    let params = WorkloadParams {
        seed: 11,
        subscribers: 2_000,
        outside_pool: 1,
        flows_per_second: 1_000.0,
        limit: Limit::Flows(5_000),
        dnat_share: 0.01,
        resolution_ns: 1_000_000,
        ..WorkloadParams::default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = Writer::open(WriterOptions {
        dir: dir.path().to_owned(),
        rotate_size: 24 << 10,
        block_records: 256,
        ..WriterOptions::default()
    })
    .expect("writer");
    let mut reference = Vec::new();
    for (i, ev) in synth::events(&params).expect("workload").enumerate() {
        if i > 0 && i % 500 == 0 {
            w.tick(ev.translation().end.unwrap_or(ev.translation().start)).expect("tick");
        }
        w.append(&ev).expect("append");
        if let FlowEvent::End(t) = ev {
            reference.push(t);
        }
    }
    w.close().expect("close");
    let reader = Reader::open(dir.path()).expect("reader");
    assert!(
        reader.segments().len() >= 3,
        "expected rotations, got {} segments",
        reader.segments().len()
    );

    let (mut checked, mut ambiguous) = (0, 0);
    for t in reference.iter().step_by(97) {
        let end = t.end.expect("ended");
        let at = t.start.checked_add(end.duration_since(t.start) / 2).expect("time");
        for remote in [
            None,
            Some(recorder::lookup::EndpointMatch {
                ip: t.remote.ip(),
                port: Some(t.remote.port()),
            }),
        ] {
            let q = OutsideQuery {
                outside: ep(&t.outside.to_string()),
                remote,
                proto: Some(t.proto),
                at,
                window: recorder::query::DEFAULT_WINDOW,
            };
            let want = who_held(reference.as_slice(), &q).expect("reference");
            let got = who_held(&reader, &q).expect("store");
            assert_eq!(found(&got), found(&want), "{q:?}");
            assert_eq!(got.ambiguity, want.ambiguity, "{q:?}");
            assert!(got.report.damage.is_empty());
            ambiguous += usize::from(got.ambiguity.is_some());
            checked += 1;
        }
    }
    assert!(checked > 90 && ambiguous > 0, "checked {checked}, ambiguous {ambiguous}");
    let host = reference[reference.len() / 2].inside.ip();
    let q = Query {
        outside: None,
        inside: Some(recorder::lookup::EndpointMatch { ip: host, port: None }),
        remote: None,
        proto: None,
        when: When::Range { from: Timestamp::MIN, to: Timestamp::MAX },
    };
    let got = ask(&reader, &q).expect("store");
    assert!(got.found());
    assert_eq!(found(&got), found(&ask(reference.as_slice(), &q).expect("reference")));
}
