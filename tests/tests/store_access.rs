//! Attribution logs are for natrec and its group only. The store's files are 0640 and
//! its directory 0750; a member of the store's group who is not root runs `natrec query`,
//! `verify` and `segments`, which open everything read-only and change nothing in the store; a
//! user outside the group is refused.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use natrec_tests::lab::{self, TempDir};
use natrec_tests::recorder_proc::{self, NOBODY};

/// A group no file of this machine has: the store's group in this test.
const STAFF_GID: u32 = 64_242;

fn run(line: &[String], stdin: &str) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(&line[0])
        .args(&line[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {line:?}: {e}"));
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// Name, length, mtime and mode of every file of `dir`, and the directory's own mode.
fn snapshot(dir: &Path) -> BTreeMap<String, (u64, i64, i64, u32)> {
    let mut out = BTreeMap::new();
    let meta = std::fs::metadata(dir).expect("store metadata");
    out.insert(".".into(), (0, meta.mtime(), meta.mtime_nsec(), meta.mode()));
    for ent in std::fs::read_dir(dir).expect("list the store").flatten() {
        let m = ent.metadata().expect("metadata");
        let name = ent.file_name().to_string_lossy().into_owned();
        out.insert(name, (m.len(), m.mtime(), m.mtime_nsec(), m.mode()));
    }
    out
}

/// 200 translations of ten inside hosts, an hour ago, as `natrec record --jsonl` writes them.
fn events() -> String {
    let base = jiff::Timestamp::now().as_second() - 3600;
    let mut s = String::new();
    for i in 0..200u32 {
        let (host, port, t) = (i % 10 + 2, 40_000 + i, base + i64::from(i));
        let start = jiff::Timestamp::from_second(t).expect("time");
        let end = jiff::Timestamp::from_second(t + 30).expect("time");
        let common = format!(
            r#""kind":"snat","proto":"udp","inside":"10.0.1.{host}:5000","outside":"100.64.0.1:{port}","remote":"100.64.1.10:53","zone":0,"start":"{start}""#
        );
        s.push_str(&format!("{{\"event\":\"start\",{common},\"end\":null,\"flags\":[]}}\n"));
        s.push_str(&format!("{{\"event\":\"end\",{common},\"end\":\"{end}\",\"flags\":[]}}\n"));
    }
    s
}

#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn group_members_read_the_store_and_change_nothing_others_are_refused() {
    lab::ensure_root_capabilities().expect("root");
    // SAFETY: umask(2) has no preconditions. 022 is the usual one: the modes below are natrec's.
    unsafe { libc::umask(0o022) };
    let bin_dir = TempDir::new("access-bin").expect("temp dir");
    let bin = recorder_proc::natrec_bin_in(bin_dir.path()).expect("natrec binary");
    let bin_s = bin.display().to_string();
    let tmp = TempDir::new("access").expect("temp dir");
    let store = tmp.path().join("store");
    let store_s = store.display().to_string();

    // Written as root would write it: a sealed segment and the catalog.
    let import = [&bin_s, "import", "--format", "jsonl", "--dir", &store_s];
    let out = run(&import.map(String::from), &events());
    assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
    let files = snapshot(&store);
    assert!(files.keys().any(|n| n.ends_with(".seg")), "a sealed segment: {files:?}");
    assert!(files.contains_key("segments.catalog"), "the writer keeps the catalog: {files:?}");
    for (name, (.., mode)) in &files {
        let want = if name == "." { 0o40750 } else { 0o100640 };
        assert_eq!(*mode, want, "{name}: mode {mode:o}");
    }

    // The store belongs to the staff group, as `natrec.service`'s Group= makes it.
    for path in std::iter::once(store.clone())
        .chain(std::fs::read_dir(&store).expect("list").flatten().map(|e| e.path()))
    {
        std::os::unix::fs::chown(&path, None, Some(STAFF_GID)).expect("chgrp");
    }
    let before = snapshot(&store);
    let staff = |args: &[&str]| {
        let mut line = recorder_proc::unit_privileges(NOBODY, &[STAFF_GID], "", &bin);
        line.extend(args.iter().map(|a| a.to_string()));
        run(&line, "")
    };
    let out = staff(&["segments", &store_s]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "segments: {}", String::from_utf8_lossy(&out.stderr));
    assert!(listing.contains(".seg"), "{listing}");
    let out = staff(&["verify", &store_s]);
    assert!(out.status.success(), "verify: {}", String::from_utf8_lossy(&out.stderr));
    let at = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() - 3600 + 77 + 10)
        .expect("time")
        .to_string();
    let out = staff(&["query", "--dir", &store_s, "--outside", "100.64.0.1:40077", "--at", &at]);
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "query: {answer}{}", String::from_utf8_lossy(&out.stderr));
    assert!(answer.contains("10.0.1.9:5000"), "77 % 10 + 2 = 9: {answer}");
    assert_eq!(snapshot(&store), before, "reading commands changed nothing in the store");

    // Not in the group: refused, and told why.
    let mut line = recorder_proc::unit_privileges(NOBODY, &[], "", &bin);
    line.extend(["segments".to_string(), store_s.clone()]);
    let out = run(&line, "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "an outsider is refused: {err}");
    assert!(err.contains("Permission denied"), "{err}");
    let mode = std::fs::metadata(&store).expect("meta").permissions().mode();
    assert_eq!(mode & 0o007, 0, "nothing for others");
}
