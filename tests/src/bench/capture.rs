//! Parts 1 and 2: capture completeness and cost per offered rate and recorder, and the lab's
//! maximum new-translation rate with and without natrec.
//!
//! One lab for the whole run: two inside hosts with four addresses each, one masquerading
//! gateway, sixteen outside server addresses whose namespace drops every UDP packet at ingress
//! (nothing answers, so each translation is one packet, and the outside costs nothing). The
//! gateway's UDP timeouts are 1 s, `nf_conntrack_events=1` and `nf_conntrack_timestamp=1` (the
//! same for every recorder), and the machine-wide `nf_conntrack_max` is raised for the run and
//! restored after it.
//!
//! One measurement (rate, recorder, repetition):
//! 1. the gateway's table is emptied (`conntrack -F`, then until `nf_conntrack_count` is 0);
//! 2. the recorder starts and is ready; its CPU time and the gateway's conntrack statistics are
//!    read;
//! 3. the load runs for the run's duration;
//! 4. the table drains: the entries expire (1 s); from the start of the load the bench lists
//!    the table every second (a kernel-filtered `conntrack -L -p icmp` that returns nothing) so
//!    that the kernel evicts expired entries and sends their DESTROY events, for every recorder
//!    and the baseline alike — this kernel's own garbage collection leaves them for many seconds;
//!    then until the recorder's output stops growing;
//! 5. CPU time and statistics are read again, the recorder is stopped (SIGTERM) and its output
//!    counted.
//!
//! Translations created = delta of an nftables counter in a NAT chain of the gateway (NAT
//! chains see only the first packet of each new conntrack entry: one count per translation),
//! minus the entries that then failed to be inserted (`insert_failed` of the gateway namespace's
//! `/proc/net/stat/nf_conntrack`; this kernel no longer counts insertions there). Recorded = translations with both start and end in the output. Recorder CPU = time on
//! CPU of all the recorder's threads (`/proc/PID/task/*/schedstat`) between 2 and 5, so it
//! includes the drain, when DESTROY events are processed; utime+stime is reported as well. Work
//! the kernel does for a recorder in the packet path (netlink event building, natrec's eBPF
//! classifier) is charged to the sending CPUs, not to the recorder: it shows in part 2.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::load::{self, LoadSpec};
use super::recorders::{self, Recorder};
use super::stats::Spread;
use super::sys::{CtStats, GlobalSysctl, Machine, NatCounter, ProcCpu, ct_count};
use super::{BenchError, Result, io_err};
use crate::gateway::{GatewayLab, LabSpec, Timeouts};
use crate::lab::{NftTable, TempDir};

/// Set by SIGINT or SIGTERM once [`stop_on_signals`] is installed: the run stops at the next
/// check and unwinds, so the lab is removed and `nf_conntrack_max` restored.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM stop the run cleanly (between steps, within a run's drain at most)
/// instead of killing the process with the lab still built.
pub fn stop_on_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    }
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(BenchError::Invalid(
            "interrupted: the lab was removed and nf_conntrack_max restored".into(),
        ));
    }
    Ok(())
}

/// The machine-wide conntrack table size during the run.
const CONNTRACK_MAX: u64 = 4_000_000;
/// A sender thread's rate assumed when checking that an unbounded run cannot repeat 5-tuples.
const ASSUMED_MAX_RATE: u64 = 1_000_000;

/// What to run.
#[derive(Clone, Debug)]
pub struct CaptureOptions {
    /// Offered rates (translations per second); `None` is the maximum (senders unpaced).
    pub rates: Vec<Option<u64>>,
    /// The recorders to compare (the baseline without recorder is added at the maximum rate).
    pub recorders: Vec<Recorder>,
    /// How long each load runs.
    pub duration: Duration,
    /// Repetitions of every (rate, recorder).
    pub reps: usize,
    /// Seeds the load (the same for every recorder).
    pub seed: u64,
    /// How long the table may take to drain after a load.
    pub drain_timeout: Duration,
    /// Compress the outputs of the first repetition at this offered rate with `zstd -19` and
    /// `xz -9` (part 3 on the capture run's own translations); `None` for none.
    pub compress_rate: Option<u64>,
    /// Keep every run's output under this directory (default: a temporary directory, each run's
    /// output removed once counted).
    pub keep: Option<PathBuf>,
}

impl Default for CaptureOptions {
    /// 1 000, 10 000, 50 000 per second and the maximum; every recorder; 5 s; 3 repetitions.
    fn default() -> Self {
        CaptureOptions {
            rates: vec![Some(1_000), Some(10_000), Some(50_000), None],
            recorders: Recorder::RECORDING.to_vec(),
            duration: Duration::from_secs(5),
            reps: 3,
            seed: 1,
            drain_timeout: Duration::from_secs(60),
            keep: None,
            compress_rate: Some(10_000),
        }
    }
}

/// The name of a rate in the results: its number, or `max`.
pub fn rate_label(rate: Option<u64>) -> String {
    rate.map_or_else(|| "max".to_owned(), |r| r.to_string())
}

/// One measurement.
#[derive(Clone, Debug)]
struct RunResult {
    rate: Option<u64>,
    recorder: Recorder,
    rep: usize,
    json: Value,
    created_per_s: f64,
}

/// Runs parts 1 and 2 and returns the results document (`bench-results/capture.json`).
pub fn run(opts: &CaptureOptions, log: &mut dyn FnMut(&str)) -> Result<Value> {
    for r in &opts.recorders {
        r.check_installed()?;
    }
    let started = jiff::Timestamp::now();
    let max_guard = GlobalSysctl::raise_to("net.netfilter.nf_conntrack_max", CONNTRACK_MAX)?;
    let lab = GatewayLab::build(LabSpec {
        prefix: "bench".into(),
        inside_hosts: 2,
        addrs_per_host: 4,
        pool_size: 1,
        nat_options: String::new(),
        servers: 16,
        timeouts: Timeouts(vec![
            ("nf_conntrack_udp_timeout".into(), 1),
            ("nf_conntrack_udp_timeout_stream".into(), 1),
        ]),
        port_forward: false,
        ipv6: false,
        prefix_translation: false,
    })?;
    let _drop_udp = NftTable::create(
        Some(lab.outside()),
        "netdev",
        "natrec_bench",
        "table netdev natrec_bench {\n chain ingress {\n  type filter hook ingress device \"eth0\" priority 0; policy accept;\n  ip protocol udp drop\n }\n}\n",
    )?;
    let counter = NatCounter::install(lab.gateway(), lab.wan_if())?;
    let temp = TempDir::new("bench")?;
    let work = opts.keep.as_deref().unwrap_or(temp.path());
    for r in
        opts.rates.iter().map(|r| LoadSpec { rate: *r, duration: opts.duration, seed: opts.seed })
    {
        load::check_capacity(&lab, &r, ASSUMED_MAX_RATE)?;
    }
    load::warm_up(&lab)?;

    let mut runs = Vec::new();
    let mut n = 0usize;
    for rep in 0..opts.reps {
        for &rate in &opts.rates {
            let mut order: Vec<Recorder> = Vec::new();
            if rate.is_none() {
                order.push(Recorder::None);
            }
            order.extend(opts.recorders.iter().copied());
            // Rotate the order per repetition: no recorder always runs first or last.
            let len = order.len();
            order.rotate_left(rep % len.max(1));
            for recorder in order {
                check_interrupted()?;
                n += 1;
                let dir = work.join(format!("run-{n}-{}-{}", rate_label(rate), recorder.name()));
                std::fs::create_dir_all(&dir)
                    .map_err(io_err(format!("creating {}", dir.display())))?;
                let r = one_run(&lab, &counter, opts, rate, recorder, rep, &dir)?;
                log(&format!(
                    "rep {} rate {:>6} {:<12} created {:>8} ({:>9.0}/s) recorded {:>8} share {:>7.3}% cpu {:>7.3} µs/translation drops {}",
                    rep + 1,
                    rate_label(rate),
                    recorder.name(),
                    r.json["created"],
                    r.created_per_s,
                    r.json["recorded"]["complete"],
                    r.json["share"].as_f64().unwrap_or(f64::NAN) * 100.0,
                    r.json["cpu_us_per_translation"].as_f64().unwrap_or(f64::NAN),
                    r.json["recorded"]["drops_reported"],
                ));
                runs.push(r);
                if opts.keep.is_none() {
                    // Each run's output is counted; keep the disk free for the next.
                    std::fs::remove_dir_all(&dir)
                        .map_err(io_err(format!("removing {}", dir.display())))?;
                }
            }
        }
    }

    let summary = summarize(opts, &runs);
    let overhead = overhead(&runs);
    Ok(json!({
        "part": "capture",
        "started": started.to_string(),
        "finished": jiff::Timestamp::now().to_string(),
        "machine": Machine::describe().to_json(),
        "options": {
            "rates": opts.rates.iter().map(|r| rate_label(*r)).collect::<Vec<_>>(),
            "recorders": opts.recorders.iter().map(|r| r.name()).collect::<Vec<_>>(),
            "recorder_commands": opts.recorders.iter().map(|r| json!({"name": r.name(), "command": r.describe()})).collect::<Vec<_>>(),
            "duration_s": opts.duration.as_secs_f64(),
            "compress_rate": opts.compress_rate,
            "reps": opts.reps,
            "seed": opts.seed,
        },
        "lab": {
            "inside_hosts": 2,
            "addresses_per_host": 4,
            "servers": 16,
            "udp_timeout_s": 1,
            "nf_conntrack_max": CONNTRACK_MAX,
            "nf_conntrack_buckets": read_global("net.netfilter.nf_conntrack_buckets"),
            "netlink_rcvbuf": recorders::NETLINK_RCVBUF,
            "load": "UDP sendmmsg, one thread per inside host, every packet a new 5-tuple; the outside drops UDP at ingress",
        },
        "changed_sysctls": [{
            "key": "net.netfilter.nf_conntrack_max (global)",
            "old": max_guard.as_ref().map(|g| g.old().to_owned()),
            "value": CONNTRACK_MAX,
            "changed": max_guard.is_some(),
            "restored_after_run": true,
        }],
        "runs": runs.iter().map(|r| r.json.clone()).collect::<Vec<_>>(),
        "summary": summary,
        "overhead": overhead,
    }))
}

fn read_global(key: &str) -> Value {
    let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(Value::Null, Value::from)
}

/// Empties the gateway's conntrack table and waits until it is empty.
fn empty_table(lab: &GatewayLab, timeout: Duration) -> Result<()> {
    let gw = lab.gateway();
    let deadline = Instant::now() + timeout;
    loop {
        gw.exec(&["conntrack", "-F"])?;
        if ct_count(gw)? == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Invalid(format!(
                "the gateway's conntrack table did not empty within {timeout:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Stands in for the kernel's conntrack garbage collection, which on this kernel leaves expired
/// entries in the table for many seconds: lists the gateway's table every second, asking only for
/// ICMP entries (there are none), so the kernel walks the whole table, evicts the expired entries
/// (sending their DESTROY events) and returns nothing. Runs from just before the load to the end
/// of the drain, for every recorder and for the baseline alike.
struct Reaper {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<u64>>>,
}

impl Reaper {
    fn start(lab: &GatewayLab) -> Reaper {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let ns = lab.gateway().name().to_owned();
        let thread = std::thread::spawn(move || -> Result<u64> {
            let mut dumps = 0;
            while !flag.load(Ordering::Relaxed) {
                crate::lab::run_cmd(&[
                    "ip",
                    "netns",
                    "exec",
                    &ns,
                    "conntrack",
                    "-L",
                    "-p",
                    "icmp",
                ])?;
                dumps += 1;
                for _ in 0..20 {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Ok(dumps)
        });
        Reaper { stop, thread: Some(thread) }
    }

    /// Stops the reaper; returns how many dumps it made.
    fn stop(mut self) -> Result<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(BenchError::Invalid("the reaper thread panicked".into())),
            None => Ok(0),
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // A failed reaper has nothing left to clean up.
            let _ = t.join();
        }
    }
}

fn one_run(
    lab: &GatewayLab,
    counter: &NatCounter,
    opts: &CaptureOptions,
    rate: Option<u64>,
    recorder: Recorder,
    rep: usize,
    dir: &Path,
) -> Result<RunResult> {
    let gw = lab.gateway();
    gw.sysctl("net.netfilter.nf_conntrack_events", "1")?;
    gw.sysctl("net.netfilter.nf_conntrack_timestamp", "1")?;
    empty_table(lab, opts.drain_timeout)?;
    let running = recorders::start(recorder, lab, dir)?;
    let pid = running.pid();
    let cpu0 = pid.map(ProcCpu::read).transpose()?;
    let ct0 = CtStats::read(gw)?;
    let n0 = counter.read(gw)?;
    let spec = LoadSpec { rate, duration: opts.duration, seed: opts.seed };
    let reaper = Reaper::start(lab);
    let done = load::run(lab, &spec)?;
    let n_load = counter.read(gw)?;
    let load_end = Instant::now();

    // Drain: every entry gone, then the recorder's output quiet.
    let mut drained = false;
    while load_end.elapsed() < opts.drain_timeout {
        check_interrupted()?;
        if ct_count(gw)? == 0 {
            drained = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let dumps = reaper.stop()?;
    let drain_s = load_end.elapsed().as_secs_f64();
    let mut last = running.output_bytes();
    let mut quiet_since = Instant::now();
    let settle = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(1500)
        && settle.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(250));
        let now = running.output_bytes();
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
    let cpu1 = pid.map(ProcCpu::read).transpose()?;
    let ct1 = CtStats::read(gw)?;
    let n1 = counter.read(gw)?;
    let output = running.output_path();
    let recorded = running.stop()?;
    let compressed = if rep == 0 && rate.is_some() && rate == opts.compress_rate && output.is_file()
    {
        let (zstd, zstd_s) =
            super::storage::compress(&output, "zstd", &["-19", "-T1", "-q"], "zst")?;
        let (xz, xz_s) = super::storage::compress(&output, "xz", &["-9", "-T1"], "xz")?;
        json!({"zstd19_bytes": zstd, "zstd19_s": zstd_s, "xz9_bytes": xz, "xz9_s": xz_s})
    } else {
        Value::Null
    };

    let total = ct1.since(ct0);
    // New translations that left the WAN, minus those whose conntrack entry lost its insertion.
    let created = n1.saturating_sub(n0).saturating_sub(total.insert_failed);
    let created_during_load = n_load.saturating_sub(n0);
    let created_per_s = created_during_load as f64 / done.seconds.max(1e-9);
    let (cpu_s, cpu_tick_s) = match (cpu0, cpu1) {
        (Some(a), Some(b)) => (b.seconds_since(a), b.tick_seconds_since(a)),
        _ => (f64::NAN, f64::NAN),
    };
    let per = |x: f64| if created > 0 { x / created as f64 } else { f64::NAN };
    let share = if recorder == Recorder::None { f64::NAN } else { per(recorded.complete as f64) };
    let json = json!({
        "rate": rate_label(rate),
        "recorder": recorder.name(),
        "rep": rep + 1,
        "load": {
            "sent": done.sent,
            "send_errors": done.send_errors,
            "seconds": done.seconds,
            "sent_per_s": done.sent as f64 / done.seconds.max(1e-9),
        },
        "created": created,
        "created_during_load": created_during_load,
        "created_per_s": created_per_s,
        "kernel": {
            "insert_failed": total.insert_failed,
            "drop": total.drop,
            "early_drop": total.early_drop,
        },
        "drained": drained,
        "drain_s": drain_s,
        "reaper_dumps": dumps,
        "recorded": {
            "complete": recorded.complete,
            "starts": recorded.starts,
            "ends": recorded.ends,
            "drops_reported": recorded.drops_reported,
            "drop_detail": recorded.drop_detail,
            "bytes": recorded.bytes,
        },
        "missing": created.saturating_sub(recorded.complete),
        "share": nan_null(share),
        "cpu_s": nan_null(cpu_s),
        "cpu_tick_s": nan_null(cpu_tick_s),
        "cpu_us_per_translation": nan_null(per(cpu_s * 1e6)),
        "bytes_per_translation": nan_null(per(recorded.bytes as f64)),
        "own_summary": recorded.own_summary,
        "compressed": compressed,
    });
    Ok(RunResult { rate, recorder, rep, json, created_per_s })
}

/// NaN is not JSON: null instead.
fn nan_null(x: f64) -> Value {
    if x.is_finite() { Value::from(x) } else { Value::Null }
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn spread_json(values: &[f64]) -> Value {
    Spread::of(values).map_or(Value::Null, Spread::to_json)
}

/// Median, min and max over repetitions for every (rate, recorder).
fn summarize(opts: &CaptureOptions, runs: &[RunResult]) -> Value {
    let mut out = Vec::new();
    for &rate in &opts.rates {
        let mut recs = Vec::new();
        if rate.is_none() {
            recs.push(Recorder::None);
        }
        recs.extend(opts.recorders.iter().copied());
        for recorder in recs {
            let sel: Vec<&RunResult> =
                runs.iter().filter(|r| r.rate == rate && r.recorder == recorder).collect();
            if sel.is_empty() {
                continue;
            }
            let col = |get: &dyn Fn(&Value) -> f64| -> Value {
                spread_json(&sel.iter().map(|r| get(&r.json)).collect::<Vec<_>>())
            };
            out.push(json!({
                "rate": rate_label(rate),
                "recorder": recorder.name(),
                "created": col(&|j| f(&j["created"])),
                "created_per_s": col(&|j| f(&j["created_per_s"])),
                "sent_per_s": col(&|j| f(&j["load"]["sent_per_s"])),
                "recorded": col(&|j| f(&j["recorded"]["complete"])),
                "starts": col(&|j| f(&j["recorded"]["starts"])),
                "ends": col(&|j| f(&j["recorded"]["ends"])),
                "share": col(&|j| f(&j["share"])),
                "missing": col(&|j| f(&j["missing"])),
                "drops_reported": col(&|j| f(&j["recorded"]["drops_reported"])),
                "cpu_s": col(&|j| f(&j["cpu_s"])),
                "cpu_us_per_translation": col(&|j| f(&j["cpu_us_per_translation"])),
                "bytes_per_translation": col(&|j| f(&j["bytes_per_translation"])),
                "kernel_drops": col(&|j| f(&j["kernel"]["drop"]) + f(&j["kernel"]["early_drop"]) + f(&j["kernel"]["insert_failed"])),
                "all_drained": sel.iter().all(|r| r.json["drained"].as_bool() == Some(true)),
            }));
        }
    }
    Value::Array(out)
}

/// Part 2: the maximum rate with natrec over the maximum rate without recorder, per repetition.
fn overhead(runs: &[RunResult]) -> Value {
    let reps: std::collections::BTreeSet<usize> = runs.iter().map(|r| r.rep).collect();
    let mut per_rep = Vec::new();
    for rep in reps {
        let rate_of = |rec: Recorder| {
            runs.iter()
                .find(|r| r.rep == rep && r.rate.is_none() && r.recorder == rec)
                .map(|r| r.created_per_s)
        };
        let Some(base) = rate_of(Recorder::None) else { continue };
        let others: Vec<Value> = Recorder::RECORDING
            .iter()
            .filter_map(|&rec| {
                rate_of(rec).map(|x| json!({"recorder": rec.name(), "per_s": x, "ratio": x / base}))
            })
            .collect();
        per_rep.push(json!({"rep": rep + 1, "none_per_s": base, "recorders": others}));
    }
    let mut ratios = serde_json::Map::new();
    for rec in Recorder::RECORDING {
        let vals: Vec<f64> = per_rep
            .iter()
            .filter_map(|p| {
                p["recorders"]
                    .as_array()?
                    .iter()
                    .find(|o| o["recorder"] == rec.name())
                    .map(|o| f(&o["ratio"]))
            })
            .collect();
        if !vals.is_empty() {
            ratios.insert(rec.name().to_owned(), spread_json(&vals));
        }
    }
    let base: Vec<f64> = per_rep.iter().map(|p| f(&p["none_per_s"])).collect();
    json!({
        "per_rep": per_rep,
        "none_per_s": spread_json(&base),
        "ratio_to_none": Value::Object(ratios),
    })
}
