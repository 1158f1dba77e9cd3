//! `natrec import` end to end: synthetic logs in every format go in, the store gives back the same
//! translations; malformed lines are reported with their line numbers; exit codes.
mod common;

use std::path::Path;
use std::process::Output;

use jiff::{SignedDuration, Timestamp};
use recorder::import::{Format, render};
use recorder::lookup::{Filter, TranslationSource as _};
use recorder::model::{FlowEvent, Translation};
use recorder::store::Reader;
use recorder::synth::{self, Limit, ProtoMix, WorkloadParams};

use common::{natrec, output};

fn params(icmp: f64) -> WorkloadParams {
    WorkloadParams {
        subscribers: 400,
        outside_pool: 2,
        remotes: 2_000,
        flows_per_second: 800.0,
        limit: Limit::Flows(6_000),
        // Milliseconds: what the store keeps by default, so times compare exactly.
        resolution_ns: 1_000_000,
        dnat_share: 0.02,
        ipv6_share: 0.05,
        mix: ProtoMix { tcp: 0.55, udp: 0.4, icmp },
        seed: 42,
        ..WorkloadParams::default()
    }
}

fn text(format: Format, events: &[FlowEvent]) -> String {
    let mut s = String::new();
    for ev in events {
        render(format, ev, &mut s).expect("render");
    }
    s
}

fn natrec_in(args: &[&str], stdin: Option<&str>) -> Output {
    output(&mut natrec(args), stdin)
}

fn stored(dir: &Path) -> Vec<Translation> {
    let reader = Reader::open(dir).expect("open store");
    let mut got = Vec::new();
    reader.scan(&Filter::all(), &mut |t| got.push(t.clone())).expect("scan");
    got
}

fn sorted(mut v: Vec<Translation>) -> Vec<Translation> {
    v.sort_by_key(|t| (t.start, t.key()));
    v
}

fn summary(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("summary {stdout:?}: {e}"))
}

#[test]
fn conntrack_log_with_garbage_is_imported_and_the_garbage_reported() {
    let p = params(0.03);
    let events: Vec<FlowEvent> = synth::events(&p).expect("params").collect();
    let want = sorted(synth::translations(&p).expect("params").collect());
    let mut log = text(Format::Conntrack, &events);
    // Line 3 and the last line are broken.
    let second_nl = log.match_indices('\n').nth(1).map(|(i, _)| i).expect("lines");
    log.insert_str(second_nl + 1, "this is not conntrack output\n");
    log.push_str(
        "[1767571200.000000]\t    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=10.0.0.1\n",
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("conntrack.log");
    std::fs::write(&file, &log).expect("write log");
    let dir = tmp.path().join("store");
    let out = natrec_in(
        &[
            "import",
            "--format",
            "conntrack",
            file.to_str().expect("path"),
            "--dir",
            dir.to_str().expect("path"),
            "--json",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let s = summary(&out);
    assert_eq!(s["translations"], 6_000);
    assert_eq!(s["malformed"], 2);
    let lines: Vec<u64> = s["malformed_samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|m| m["line"].as_u64().expect("line"))
        .collect();
    let total = log.lines().count() as u64;
    assert_eq!(lines, vec![3, total]);
    assert!(stderr.contains("conntrack.log:3:"), "{stderr}");
    assert_eq!(sorted(stored(&dir)), want);
}

#[test]
fn ulogd_json_from_stdin_and_a_zstd_jsonl_file_are_imported() {
    // ulogd logs no ICMP echo id: compare without ICMP.
    let p = params(0.0);
    let events: Vec<FlowEvent> = synth::events(&p).expect("params").collect();
    let want = sorted(synth::translations(&p).expect("params").collect());
    let tmp = tempfile::tempdir().expect("tempdir");

    let dir = tmp.path().join("ulogd");
    let out = natrec_in(
        &["import", "--format", "ulogd-json", "-", "--dir", dir.to_str().expect("path")],
        Some(&text(Format::UlogdJson, &events)),
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sorted(stored(&dir)), want);

    // A natrec JSONL file split in two, the second half zstd-compressed: pairs span the files.
    let jsonl = text(Format::Jsonl, &events);
    let cut = jsonl.match_indices('\n').nth(events.len() / 2).map(|(i, _)| i + 1).expect("cut");
    let first = tmp.path().join("natrec.jsonl.1");
    let second = tmp.path().join("natrec.jsonl.zst");
    std::fs::write(&first, &jsonl[..cut]).expect("write");
    std::fs::write(&second, zstd::encode_all(&jsonl.as_bytes()[cut..], 3).expect("zstd"))
        .expect("write");
    let dir = tmp.path().join("jsonl");
    let out = natrec_in(
        &[
            "import",
            "--format",
            "jsonl",
            first.to_str().expect("path"),
            second.to_str().expect("path"),
            "--dir",
            dir.to_str().expect("path"),
            "--json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let s = summary(&out);
    assert_eq!((s["translations"].as_u64(), s["end_only"].as_u64()), (Some(6_000), Some(0)));
    assert_eq!(sorted(stored(&dir)), want);
}

#[test]
fn unpaired_entries_are_open_or_end_only_in_the_store() {
    let new = "[1767571200.250000]\t    [NEW] ipv4     2 udp      17 30 src=10.0.0.2 dst=203.0.113.1 sport=5353 dport=53 [UNREPLIED] src=203.0.113.1 dst=100.64.0.1 sport=53 dport=5353\n";
    let destroy = "[1767571260.500000]\t[DESTROY] ipv4     2 tcp      6 src=10.0.0.3 dst=198.18.0.9 sport=40000 dport=443 src=198.18.0.9 dst=100.64.0.1 sport=443 dport=40000 [ASSURED] delta-time=60\n";
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let out = natrec_in(
        &["import", "--format", "conntrack", "--dir", dir.to_str().expect("path"), "--json"],
        Some(&format!("{new}{destroy}")),
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let s = summary(&out);
    assert_eq!((s["open_at_end"].as_u64(), s["end_only"].as_u64()), (Some(1), Some(1)));
    let got = sorted(stored(&dir));
    assert_eq!(got.len(), 2);
    let at = |s: &str| s.parse::<Timestamp>().expect("time");
    assert_eq!((got[0].start, got[0].end), (at("2026-01-05T00:00:00.25Z"), None));
    assert_eq!(got[1].start, at("2026-01-05T00:01:00.5Z") - SignedDuration::from_secs(60));
    assert_eq!(got[1].end, Some(at("2026-01-05T00:01:00.5Z")));
    assert!(got[1].flags.contains(recorder::model::Flags::END_ONLY));
}

#[test]
fn exit_codes_follow_grep() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let dir = dir.to_str().expect("path");
    // Nothing to import (only a non-NAT entry): 1.
    let plain = "[1767571200.000000]\t    [NEW] ipv4     2 udp      17 30 src=10.0.0.2 dst=10.0.0.3 sport=5000 dport=53 [UNREPLIED] src=10.0.0.3 dst=10.0.0.2 sport=53 dport=5000\n";
    let out = natrec_in(&["import", "--format", "conntrack", "--dir", dir], Some(plain));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 without NAT skipped"));
    // No --dir: 2, one line saying what was expected.
    let out = natrec_in(&["import", "--format", "conntrack"], Some(plain));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("expected --dir DIR"), "{err}");
    // A missing file: 2.
    let out = natrec_in(
        &["import", "--format", "jsonl", "/nonexistent/natrec.jsonl", "--dir", dir],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    // --dry-run writes nothing, even with --dir.
    let dry = tmp.path().join("dry");
    let out = natrec_in(
        &["import", "--format", "conntrack", "--dry-run", "--dir", dry.to_str().expect("path")],
        Some(&text(
            Format::Conntrack,
            &synth::events(&params(0.0)).expect("params").take(10).collect::<Vec<_>>(),
        )),
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!dry.exists());
}
