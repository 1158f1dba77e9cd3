//! Fault tests: `kill -9` of a writing recorder at random moments, and a full file system.
//!
//! The crash test re-runs this test binary as the writer (the ignored `crash_child` test). The
//! disk-full test mounts a small tmpfs (root only; built with NATREC_TESTS_NO_ROOT=1 it is marked ignored).
mod common;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use jiff::Timestamp;
use recorder::model::{FlowEvent, FlowKey, Translation};
use recorder::rng::Rng;
use recorder::store::{Resolution, Writer, WriterOptions, verify};
use recorder::synth::{Limit, WorkloadParams, events};

const BASE: i64 = 1_767_571_200; // 2026-01-05T00:00:00Z

fn run_events(run: u64) -> Vec<FlowEvent> {
    let p = WorkloadParams {
        seed: 100 + run,
        subscribers: 300,
        remotes: 1_000,
        flows_per_second: 500.0,
        limit: Limit::Span(Duration::from_secs(120)),
        long_share: 0.05,
        start: Timestamp::from_second(BASE + run as i64 * 3600).expect("time"),
        ..WorkloadParams::default()
    };
    events(&p).expect("params").collect()
}

fn crash_opts(dir: &Path) -> WriterOptions {
    WriterOptions {
        dir: dir.to_owned(),
        flush_interval: Duration::from_millis(50),
        rotate_size: 150_000,
        block_records: 2_000,
        seal_level: 3,
        ..WriterOptions::default()
    }
}

/// The writer process of `recorder_survives_kill_9_at_random_moments`.
#[test]
#[ignore = "run by the crash test as a child process"]
fn crash_child() {
    let dir = PathBuf::from(std::env::var("NATREC_CRASH_DIR").expect("NATREC_CRASH_DIR"));
    let run: u64 = std::env::var("NATREC_CRASH_RUN").expect("run").parse().expect("run");
    let evs = run_events(run);
    let mut w = Writer::open(crash_opts(&dir)).expect("open");
    let progress = dir.join(format!("progress-{run}"));
    let mut flushes = w.stats().flushes;
    for (i, ev) in evs.iter().enumerate() {
        w.append(ev).expect("append");
        if i % 50 == 0 {
            w.tick(Timestamp::now()).expect("tick");
            let s = w.stats();
            if s.flushes != flushes {
                flushes = s.flushes;
                // Everything appended before this tick is durable now.
                let tmp = dir.join("progress.tmp");
                fs::write(&tmp, (i + 1).to_string()).expect("progress");
                fs::rename(&tmp, &progress).expect("progress");
            }
            std::thread::sleep(Duration::from_micros(300));
        }
    }
    w.close().expect("close");
}

fn by_key(ts: &[Translation]) -> HashMap<(FlowKey, Timestamp), Translation> {
    ts.iter().map(|t| ((t.key(), t.start), t.clone())).collect()
}

#[test]
fn recorder_survives_kill_9_at_random_moments() {
    let dir = tempdir();
    let exe = std::env::current_exe().expect("exe");
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let runs = 6u64;
    for run in 0..runs {
        let mut child = Command::new(&exe)
            .args(["--ignored", "--exact", "crash_child", "--nocapture"])
            .env("NATREC_CRASH_DIR", dir.path())
            .env("NATREC_CRASH_RUN", run.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        // Wait for the child's first flush, then kill it at a random moment.
        let progress = dir.path().join(format!("progress-{run}"));
        for _ in 0..600 {
            if progress.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(u64::from(rng.below(1500))));
        child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL
        child.wait().expect("reap");

        // The next start recovers, seals and goes on; verify passes after it.
        let w = Writer::open(crash_opts(dir.path())).expect("recovering open");
        w.close().expect("close after recovery");
        let rep = verify(dir.path()).expect("verify");
        assert!(rep.ok(), "run {run}: {:?}", rep.problems);

        let durable: usize = fs::read_to_string(dir.path().join(format!("progress-{run}")))
            .map(|s| s.parse().expect("progress"))
            .unwrap_or(0);
        let evs = run_events(run);
        let from = Timestamp::from_second(BASE + run as i64 * 3600).expect("time");
        let to = Timestamp::from_second(BASE + (run as i64 + 1) * 3600).expect("time");
        let got: Vec<Translation> =
            read_all(dir.path()).into_iter().filter(|t| t.start >= from && t.start < to).collect();
        let got = by_key(&got);
        let all = by_key(&expected(&evs, Resolution::Millis));
        for (k, t) in by_key(&expected(&evs[..durable], Resolution::Millis)) {
            let g = got.get(&k).unwrap_or_else(|| {
                panic!("run {run}: lost durable translation {t:?} (durable {durable} events)")
            });
            if t.end.is_some() {
                assert_eq!(g, &t, "run {run}");
            } else {
                assert!(g.end.is_none() || g == &all[&k], "run {run}: {g:?}");
            }
        }
        for (k, g) in &got {
            let a = all.get(k).unwrap_or_else(|| panic!("run {run}: invented {g:?}"));
            assert!(g == a || (g.end.is_none() && a.start == g.start), "run {run}: {g:?} vs {a:?}");
        }
        assert!(durable > 0, "run {run}: the child made no flush before the kill");
    }
}

/// Log lines, captured.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().expect("log").clone();
        String::from_utf8_lossy(&bytes).lines().map(str::to_owned).collect()
    }
}

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Log {
    type Writer = Log;
    fn make_writer(&'a self) -> Log {
        self.clone()
    }
}

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs {
    mount: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let t = tempdir();
        let dir = t.path().join("fs");
        fs::create_dir(&dir).expect("mkdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "mounting a tmpfs failed: this test needs root (NATREC_TESTS_NO_ROOT=1 marks it ignored)"
        );
        Tmpfs { mount: dir, _parent: t }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}

#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn full_file_system_keeps_running_and_keeps_earlier_data_intact() {
    let fsys = Tmpfs::mount("4m");
    let log = Log::default();
    let subscriber = tracing_subscriber::fmt().with_writer(log.clone()).with_ansi(false).finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let dir = fsys.mount.join("store");
    let opts = WriterOptions {
        dir: dir.clone(),
        block_records: 5_000,
        rotate_size: 400_000,
        seal_level: 3,
        ..WriterOptions::default()
    };
    // Ballast that is freed later to give the space back.
    let ballast = fsys.mount.join("ballast");
    fs::write(&ballast, vec![7u8; 5 << 19]).expect("ballast");
    let mut evs = Vec::new();
    for run in 0..4 {
        evs.extend(run_events(run));
    }
    let mut w = Writer::open(opts).expect("open");
    let mut now = Timestamp::now();
    let mut full_at = None;
    for (i, ev) in evs.iter().enumerate() {
        w.append(ev).expect("append never fails on a full disk");
        if i % 500 == 0 {
            now += Duration::from_secs(1);
            w.tick(now).expect("tick never fails on a full disk");
            if full_at.is_none() && w.stats().write_errors > 0 {
                full_at = Some(i);
            }
        }
    }
    let stats = w.stats();
    assert!(full_at.is_some(), "the disk never filled: {stats:?}");
    assert!(stats.lost_events > 0, "{stats:?}");
    assert!(stats.last_error.as_deref().is_some_and(|e| e.contains("No space")), "{stats:?}");
    // Every failed flush is counted, the warning logged once per episode of a full disk (the
    // test takes well under the minute that repeats are held back for): a seal that frees
    // space may let a flush through ("writes again") before the disk fills once more.
    let lines = log.lines();
    let episodes: Vec<bool> = lines
        .iter()
        .filter_map(|l| {
            if l.contains("disk full") {
                Some(true)
            } else if l.contains("the store writes again") {
                Some(false)
            } else {
                None
            }
        })
        .collect();
    assert!(stats.write_errors >= 5, "{stats:?}");
    assert_eq!(episodes.first(), Some(&true), "{lines:#?}");
    assert!(
        episodes.windows(2).all(|w| w[0] != w[1]),
        "one warning per episode, each ended by a resume: {lines:#?}"
    );
    // What is on disk is intact and readable.
    let rep = verify(&dir).expect("verify");
    assert!(rep.ok(), "{:?}", rep.problems);
    let all = by_key(&expected(&evs, Resolution::Millis));
    let got = read_all(&dir);
    assert!(got.len() > 1_000, "{} translations kept", got.len());
    for g in &got {
        let a = &all[&(g.key(), g.start)];
        assert!(g == a || g.end.is_none(), "{g:?} vs {a:?}");
    }
    // Space comes back: the writer resumes and seals.
    fs::remove_file(&ballast).expect("free space");
    let flushes = w.stats().flushes;
    now += Duration::from_secs(20);
    w.tick(now).expect("tick");
    let after = w.stats();
    assert!(after.flushes > flushes, "{after:?}");
    // Every failed write after the one warned about is held back, up to the moment space came
    // back: the seal thread may have failed once more after `stats` was read.
    let back = log.lines().into_iter().find(|l| l.contains("the store writes again"));
    assert!(after.write_errors >= stats.write_errors, "{after:?} after {stats:?}");
    let held = format!("held_back={}", after.write_errors - 1);
    assert!(back.as_ref().is_some_and(|l| l.contains(&held)), "{back:?}, {held}");
    let end = w.close().expect("close once space is back");
    assert_eq!(end.lost_events, stats.lost_events);
    let rep = verify(&dir).expect("verify");
    assert!(rep.ok(), "{:?}", rep.problems);
}

/// A seal that keeps failing holds back the later ones (each chains to its predecessor) but not
/// the writing: the next segments keep receiving events. When the writer goes away with seals
/// undone, the next start seals every `.open` in order and the chain holds.
#[test]
fn a_failing_background_seal_holds_back_later_seals_and_the_next_start_seals_them_in_order() {
    let dir = tempdir();
    let evs = run_events(7);
    let third = evs.len() / 3;
    let opts = WriterOptions {
        dir: dir.path().to_owned(),
        rotate_age: Duration::from_secs(60),
        seal_level: 1,
        ..WriterOptions::default()
    };
    let mut w = Writer::open(opts.clone()).expect("open");
    let mut now = Timestamp::now();
    let open_files = |d: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(d)
            .expect("list")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "open"))
            .collect();
        v.sort();
        v
    };
    let mut blocked = None;
    for (i, ev) in evs.iter().enumerate() {
        w.append(ev).expect("append");
        if i == third || i == 2 * third {
            // Rotation: segment 0 is sealed in the background, then segment 1's seal is made to
            // fail (a directory stands where its temporary file would go).
            now += Duration::from_secs(61);
            w.tick(now).expect("tick");
            if blocked.is_none() {
                let active = open_files(dir.path()).pop().expect("an active segment");
                let tmp = active.with_extension("seg.tmp");
                fs::create_dir(&tmp).expect("block the seal");
                blocked = Some(tmp);
            }
        }
    }
    // A third rotation: segment 2's seal waits behind segment 1's.
    now += Duration::from_secs(61);
    w.tick(now).expect("tick");
    assert!(w.stats().write_errors > 0, "the blocked seal failed: {:?}", w.stats());
    drop(w);
    // Segment 1 (seal failed), 2 (waiting for it) and 3 (active) are left open, their events
    // on disk.
    let left = open_files(dir.path());
    assert_eq!(left.len(), 3, "{left:?}");
    let rep = verify(dir.path()).expect("verify");
    assert!(rep.ok(), "open segments at the end are not a problem: {:?}", rep.problems);
    fs::remove_dir(blocked.expect("blocked")).expect("unblock");
    let w = Writer::open(opts).expect("reopen");
    assert_eq!(w.stats().segments_sealed, 3, "every open segment recovered and sealed");
    w.close().expect("close");
    let rep = verify(dir.path()).expect("verify");
    assert!(rep.ok(), "{:?}", rep.problems);
    let mut want = expected(&evs, Resolution::Millis);
    sort(&mut want);
    let got = read_all(dir.path());
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!(
            g == w || (g.key() == w.key() && g.start == w.start && w.end.is_none()),
            "{g:?} vs {w:?}"
        );
    }
}
