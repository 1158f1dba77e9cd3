//! `natrec query` as an operator runs it: output forms, exit codes like grep, one-line errors,
//! accounts from a subscriber map, warnings for damaged blocks.
mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use recorder::model::{Flags, FlowEvent, Translation};
use recorder::store::{Writer, WriterOptions};
use recorder::testing;

use common::{natrec, output};

fn at(secs: i64) -> Timestamp {
    let t0: Timestamp = "2030-01-01T10:00:00Z".parse().expect("t0");
    t0.checked_add(SignedDuration::from_secs(secs)).expect("time")
}

fn tr(inside: &str, outside: &str, remote: &str, start: i64, end: i64) -> Translation {
    testing::tr(inside, outside, remote).start(at(start)).end(Some(at(end))).build()
}

/// Two hosts share 100.64.0.1:40000 towards different remotes; 10.0.1.4 has it alone later.
fn write_store(dir: &Path) {
    let ts = [
        tr("10.0.1.2:51000", "100.64.0.1:40000", "198.51.100.7:443", 10, 70),
        tr("10.0.1.3:52000", "100.64.0.1:40000", "203.0.113.9:80", 20, 40),
        Translation {
            flags: Flags::END_APPROX,
            ..tr("10.0.1.4:53000", "100.64.0.1:40000", "198.51.100.7:443", 100, 130)
        },
    ];
    let mut w = Writer::open(WriterOptions {
        dir: dir.to_owned(),
        rotate_age: Duration::from_secs(3600),
        block_records: 1,
        ..WriterOptions::default()
    })
    .expect("writer");
    let mut events: Vec<(Timestamp, FlowEvent)> = Vec::new();
    for t in &ts {
        events.push((t.start, FlowEvent::Start(Translation { end: None, ..t.clone() })));
        events.push((t.end.expect("end"), FlowEvent::End(t.clone())));
    }
    events.sort_by_key(|(t, _)| *t);
    for (_, e) in events {
        w.append(&e).expect("append");
    }
    w.close().expect("close");
}

/// `natrec query` on the store in `dir` (see `common::natrec`).
fn query(dir: &Path, args: &[&str]) -> Output {
    output(natrec(&[&["query"], args].concat()).env("NATREC_DIR", dir), None)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_unique_answer_exits_0_and_names_the_account() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_store(dir.path());
    let subs = dir.path().join("subscribers.csv");
    std::fs::write(&subs, "# prefix,account\n10.0.1.0/24,acct-1001\n10.0.1.4/32,acct-1004\n")
        .expect("write");
    let out = query(
        dir.path(),
        &[
            "--outside",
            "100.64.0.1:40000",
            "--at",
            "2030-01-01 11:01:50",
            "--tz",
            "+01:00",
            "--subscribers",
        ],
    );
    // --subscribers needs its value: a usage error, exit 2.
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    let out = query(
        dir.path(),
        &[
            "--outside",
            "100.64.0.1:40000",
            "--at",
            "2030-01-01 11:01:50",
            "--tz",
            "+01:00",
            "--subscribers",
            subs.to_str().expect("path"),
        ],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("1. 10.0.1.4:53000  account acct-1004  tcp snat"), "{stdout}");
    assert!(stdout.contains("outside 100.64.0.1:40000  remote 198.51.100.7:443"), "{stdout}");
    assert!(
        stdout.contains("2030-01-01T10:01:40.000Z .. 2030-01-01T10:02:10.000Z  [end_approx]"),
        "{stdout}"
    );
    assert!(stdout.contains("1 translation of 1 inside endpoint"), "{stdout}");
    assert!(
        stdout.contains("note: the end of 10.0.1.4:53000 -> 100.64.0.1:40000 is approximate"),
        "{stdout}"
    );
    assert!(!stdout.contains("AMBIGUOUS"), "{stdout}");
}

#[test]
fn an_ambiguous_answer_lists_all_and_says_how_to_narrow_in_every_form() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_store(dir.path());
    let base = ["--outside", "100.64.0.1:40000", "--at", &at(30).to_string()];

    let out = query(dir.path(), &base);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout.contains("1. 10.0.1.2:51000") && stdout.contains("2. 10.0.1.3:52000"),
        "{stdout}"
    );
    assert!(stdout.contains("AMBIGUOUS: 2 inside endpoints held 100.64.0.1:40000"), "{stdout}");
    assert!(stdout.contains("add --remote"), "{stdout}");

    let out = query(dir.path(), &[&base[..], &["--json"]].concat());
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["type"], "translation");
    assert_eq!(lines[1]["inside"], "10.0.1.3:52000");
    assert_eq!(lines[1]["remote"], "203.0.113.9:80");
    assert_eq!(lines[2]["type"], "summary");
    assert_eq!(lines[2]["matches"], 2);
    assert_eq!(lines[2]["distinct_inside"], 2);
    assert_eq!(lines[2]["ambiguous"], true);

    let out = query(dir.path(), &[&base[..], &["--csv"]].concat());
    assert_eq!(out.status.code(), Some(0));
    let csv = text(&out.stdout);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 3, "{csv}");
    assert!(rows[0].starts_with("kind,proto,inside,account,outside,remote"), "{csv}");
    assert!(
        rows[2].starts_with("snat,tcp,10.0.1.3:52000,,100.64.0.1:40000,203.0.113.9:80,0,"),
        "{csv}"
    );
    assert!(
        text(&out.stderr).contains("natrec: ambiguous: 2 inside endpoints"),
        "{}",
        text(&out.stderr)
    );

    let out = query(dir.path(), &[&base[..], &["--remote", "203.0.113.9", "--json"]].concat());
    let lines: Vec<serde_json::Value> =
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["inside"], "10.0.1.3:52000");
    assert_eq!(lines[1]["ambiguous"], false);
}

#[test]
fn nothing_found_exits_1_and_range_queries_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_store(dir.path());
    let out = query(dir.path(), &["--outside", "100.64.0.1:40000", "--at", &at(85).to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("0 translations of 0 inside endpoints"),
        "{}",
        text(&out.stdout)
    );

    let from = (at(0).as_millisecond() as f64 / 1e3).to_string();
    let out = query(
        dir.path(),
        &["--inside", "10.0.1.2", "--from", &from, "--to", &at(200).to_string(), "--json"],
    );
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<serde_json::Value> =
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["inside"], "10.0.1.2:51000");
    assert_eq!(lines[0]["end"], "2030-01-01T10:01:10.000Z");

    let out = query(
        dir.path(),
        &[
            "--remote",
            "198.51.100.7:443",
            "--from",
            &at(0).to_string(),
            "--to",
            &at(200).to_string(),
            "--csv",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout).lines().count(), 3, "{}", text(&out.stdout));
}

#[test]
fn bad_input_is_one_clear_line_and_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_store(dir.path());
    let cases: [(&[&str], &str); 7] = [
        (&["--outside", "100.64.0.1:40000", "--at", "yesterday"], "--at: expected a time"),
        (
            &["--outside", "100.64.0.1:99999", "--at", "1893492000"],
            "--outside: expected an IP address or IP:PORT",
        ),
        (
            &[
                "--inside",
                "10.0.1.2",
                "--from",
                "2030-01-02T00:00:00Z",
                "--to",
                "2030-01-01T00:00:00Z",
            ],
            "the range is reversed",
        ),
        (
            &["--outside", "100.64.0.1", "--at", "1893492000", "--window", "soon"],
            "--window: expected a non-negative duration",
        ),
        (
            &["--outside", "100.64.0.1", "--at", "1893492000", "--proto", "tpc"],
            "--proto: unknown protocol",
        ),
        (
            &["--outside", "100.64.0.1", "--at", "2030-01-01 10:00:00", "--tz", "Mars/Olympus"],
            "--tz: expected a time zone",
        ),
        (
            &["--outside", "100.64.0.1", "--at", "1893492000", "--dir", "/nonexistent/natrec"],
            "expected a segment directory",
        ),
    ];
    for (args, want) in cases {
        let out = query(dir.path(), args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let errors: Vec<&str> =
            stderr.lines().filter(|l| l.starts_with("natrec: error:")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
        assert!(errors[0].contains(want), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
    let subs = dir.path().join("bad.csv");
    std::fs::write(&subs, "10.0.1.0/24,acct\n10.0.1.0/40,acct2\n").expect("write");
    let out = output(
        natrec(&["query", "--outside", "100.64.0.1", "--at", "1893492000"])
            .env("NATREC_DIR", dir.path())
            .env("NATREC_SUBSCRIBERS", &subs),
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("bad.csv:2: expected a prefix length 0-32"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_damaged_block_warns_on_stderr_and_the_rest_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_store(dir.path());
    // Flip a byte in the first block of the sealed segment (block_records 1: one translation).
    let seg = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .expect("a sealed segment");
    let mut bytes = std::fs::read(&seg).expect("read");
    let len = u32::from_le_bytes(bytes[76..80].try_into().expect("len")) as usize;
    assert_eq!(bytes[72], 1, "the first frame is a block");
    bytes[72 + 12 + len / 2] ^= 0x5a;
    std::fs::write(&seg, &bytes).expect("write");

    let out = query(
        dir.path(),
        &[
            "--outside",
            "100.64.0.1:40000",
            "--from",
            &at(0).to_string(),
            "--to",
            &at(200).to_string(),
        ],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stderr.contains("natrec: warning: skipped damaged"), "{stderr}");
    assert!(stdout.contains("may miss translations"), "{stdout}");
    assert!(stdout.contains("2 translations of 2 inside endpoints"), "{stdout}");
}
