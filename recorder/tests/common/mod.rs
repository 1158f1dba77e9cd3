//! Helpers shared by the integration tests: the one way they run the `natrec` binary, and the
//! store tests' workloads, writers and readers. (Translations are built with
//! `recorder::testing::tr`, seeded numbers come from `recorder::rng`.)
#![allow(dead_code, reason = "each test file uses a different subset")]

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use jiff::Timestamp;
use recorder::lookup::{Filter, TranslationSource};
use recorder::model::{FlowEvent, FlowKey, Translation};
use recorder::store::{Reader, Resolution, Writer, WriterOptions};
use recorder::synth::{Limit, WorkloadParams, events};

/// The `natrec` binary with `args`, in an environment without the caller's `NATREC_*` settings
/// and `STATE_DIRECTORY`, so that nothing of the shell running the tests leaks into them.
pub fn natrec(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_natrec"));
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("NATREC_") || k == "STATE_DIRECTORY") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args);
    cmd
}

/// Runs `cmd` to its end with `stdin` as its input (none: an empty input), and returns its
/// output. natrec may exit before reading (a usage error): a broken pipe is not a failure.
pub fn output(cmd: &mut Command, stdin: Option<&str>) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run natrec");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(s) = stdin
        && let Err(e) = input.write_all(s.as_bytes())
    {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "writing stdin: {e}");
    }
    drop(input);
    child.wait_with_output().expect("wait for natrec")
}

/// A small synthetic workload: `secs` seconds at `rate` flows per second.
pub fn workload(seed: u64, rate: f64, secs: u64, drain: bool) -> Vec<FlowEvent> {
    let p = WorkloadParams {
        seed,
        subscribers: 500,
        remotes: 2_000,
        flows_per_second: rate,
        limit: Limit::Span(Duration::from_secs(secs)),
        drain,
        ipv6_share: 0.05,
        long_share: 0.05,
        ..WorkloadParams::default()
    };
    events(&p).expect("valid params").collect()
}

/// The translations a correct store gives back for `evs`: starts merged with their ends, times
/// rounded down to `res`.
pub fn expected(evs: &[FlowEvent], res: Resolution) -> Vec<Translation> {
    let mut order: Vec<(FlowKey, Timestamp)> = Vec::new();
    let mut map: HashMap<(FlowKey, Timestamp), Translation> = HashMap::new();
    for ev in evs {
        let mut t = ev.translation().clone();
        t.start = res.truncate(t.start).expect("time");
        t.end = t.end.map(|e| res.truncate(e).expect("time"));
        let k = (t.key(), t.start);
        match ev {
            FlowEvent::Start(_) => {
                t.end = None;
                if let std::collections::hash_map::Entry::Vacant(e) = map.entry(k) {
                    order.push(k);
                    e.insert(t);
                }
            }
            FlowEvent::End(_) => {
                if let Some(s) = map.get_mut(&k) {
                    s.end = t.end;
                    s.flags = s.flags.union(t.flags);
                } else {
                    order.push(k);
                    map.insert(k, t);
                }
            }
        }
    }
    order.into_iter().map(|k| map[&k].clone()).collect()
}

/// Everything a filter over all time returns, sorted.
pub fn read_all(dir: &Path) -> Vec<Translation> {
    let r = Reader::open(dir).expect("open reader");
    let mut out = Vec::new();
    let rep = r.scan(&everything(), &mut |t| out.push(t.clone())).expect("scan");
    assert!(rep.damage.is_empty(), "damage: {:?}", rep.damage);
    sort(&mut out);
    out
}

pub fn everything() -> Filter {
    Filter {
        from: Timestamp::MIN,
        to: Timestamp::MAX,
        proto: None,
        outside: None,
        inside: None,
        remote: None,
    }
}

pub fn sort(v: &mut [Translation]) {
    v.sort_by_key(|t| (t.start, t.key(), t.end));
}

/// Writes `evs` with rotations every `rotate_every` events; closes unless `close` is false.
pub fn write(dir: &Path, evs: &[FlowEvent], opts: WriterOptions, rotate_every: usize, close: bool) {
    let age = opts.rotate_age;
    let mut w = Writer::open(WriterOptions { dir: dir.to_owned(), ..opts }).expect("open writer");
    let mut now = Timestamp::now();
    for (i, ev) in evs.iter().enumerate() {
        w.append(ev).expect("append");
        if rotate_every > 0 && (i + 1) % rotate_every == 0 {
            now += age + Duration::from_millis(1);
            w.tick(now).expect("tick");
        }
    }
    if close {
        w.close().expect("close");
    } else {
        now += Duration::from_secs(2);
        w.tick(now).expect("tick");
    }
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("natrec-store-").tempdir().expect("tempdir")
}
