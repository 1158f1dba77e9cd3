//! One harness run: lab, captures, `natrec record` (restarted half-way), the workload, then the
//! verification and its report.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use recorder::store::Reader;

use super::HarnessError;
use super::pair::{Net, Pairing, Sides, lab_inside_net, pair};
use super::pcap::{CaptureStats, read_pcap};
use super::verify::{QueryMode, SHOWN_CASES, Verdict, verify};
use super::workload::{
    LongFlows, PhaseDone, Rng, WorkloadSpec, plan_phase, run_phase, start_servers,
};
use crate::capture::Capture;
use crate::gateway::{GatewayLab, LabSpec};
use crate::recorder_proc::NatrecRecord;

/// How a harness run is set up.
#[derive(Clone, Debug)]
pub struct HarnessOptions {
    pub lab: LabSpec,
    pub workload: WorkloadSpec,
    /// Long TCP flows held open across the whole run (one per inside host, at most).
    pub long_flows: usize,
    /// natrec's `--rotate-age` (short, so that long flows cross rotations).
    pub rotate_age: String,
    /// Where captures, the store and the events go (created; removed after a passing run
    /// unless `keep`).
    pub work_dir: PathBuf,
    /// Keep `work_dir` after a passing run too.
    pub keep: bool,
    /// How natrec's query API is asked (per packet by default).
    pub query_mode: QueryMode,
}

impl Default for HarnessOptions {
    /// The CI run: 20 dual-stack inside hosts × 3 addresses of each family, a pool of 3 (IPv4
    /// and IPv6), the last host's /64 behind a prefix translation, 4 servers, port forwards
    /// (IPv4 and IPv6), short conntrack timeouts; 2 × 1500 short flows, 20 long flows, 5 s
    /// segment rotation.
    fn default() -> Self {
        HarnessOptions {
            lab: LabSpec {
                prefix: "hn".into(),
                inside_hosts: 20,
                addrs_per_host: 3,
                pool_size: 3,
                servers: 4,
                ipv6: true,
                prefix_translation: true,
                ..LabSpec::default()
            },
            workload: WorkloadSpec::default(),
            long_flows: 20,
            rotate_age: "5s".into(),
            work_dir: default_work_dir(),
            keep: false,
            query_mode: QueryMode::PerPacket,
        }
    }
}

/// `<target dir>/harness/run-<pid>`.
pub fn default_work_dir() -> PathBuf {
    target_dir().join("harness").join(format!("run-{}", std::process::id()))
}

/// The workspace's target directory (`$CARGO_TARGET_DIR` or `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"),
        PathBuf::from,
    )
}

/// What one `natrec record` run said at exit (`--stats-json`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecorderRun {
    pub starts: u64,
    pub ends: u64,
    pub seeded: u64,
    pub approx_ends: u64,
    pub ringbuf_full: u64,
    pub enobufs: u64,
}

impl RecorderRun {
    /// Reads the last JSON object natrec printed on stderr.
    pub fn from_stderr(stderr: &str) -> Result<RecorderRun, HarnessError> {
        let v = crate::recorder_proc::stats_json(stderr)?;
        let get = |path: &[&str]| {
            path.iter()
                .try_fold(&v, |v, k| v.get(k))
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        Ok(RecorderRun {
            starts: get(&["tracker", "starts"]),
            ends: get(&["tracker", "ends"]),
            seeded: get(&["tracker", "seeded"]),
            approx_ends: get(&["tracker", "approx_ends"]),
            ringbuf_full: get(&["kernel", "ringbuf_full"]),
            enobufs: get(&["netlink_enobufs"]),
        })
    }
}

/// Everything a run found.
#[derive(Clone, Debug)]
pub struct HarnessReport {
    pub options: HarnessOptions,
    pub phases: Vec<PhaseDone>,
    pub long_flows: usize,
    pub long_flow_errors: Vec<String>,
    pub recorder_runs: Vec<RecorderRun>,
    pub segments: usize,
    /// The gateway's outside addresses and prefixes.
    pub pool: Vec<Net>,
    /// Flows on the wire whose outside address is in a prefix translation's prefix.
    pub prefix_translated_flows: usize,
    pub outside_capture: CaptureStats,
    pub inside_capture: CaptureStats,
    pub not_translated: u64,
    pub verdict: Verdict,
    pub traffic_secs: f64,
    pub verify_secs: f64,
}

impl HarnessReport {
    /// Whether natrec named the right inside endpoint for every checked packet (and some were).
    pub fn passed(&self) -> bool {
        self.verdict.passed()
    }
}

impl fmt::Display for HarnessReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        let v = &self.verdict;
        let c = &v.coverage;
        writeln!(f, "natrec packet-capture harness")?;
        writeln!(
            f,
            "lab: {} inside hosts x {} addresses{}, SNAT pool of {}{}, {} servers, port forwards {}; seed {:#x}",
            o.lab.inside_hosts,
            o.lab.addrs_per_host,
            if o.lab.ipv6 { " of each family (dual stack, NAT66 beside NAT44)" } else { "" },
            o.lab.pool_size,
            if o.lab.ipv6 && o.lab.prefix_translation {
                ", the last host's /64 behind a prefix translation"
            } else {
                ""
            },
            o.lab.servers,
            if o.lab.port_forward { "on" } else { "off" },
            o.workload.seed
        )?;
        let pool: Vec<String> = self.pool.iter().map(Net::to_string).collect();
        writeln!(
            f,
            "outside addresses: {}; flows through the prefix translation: {}",
            pool.join(", "),
            self.prefix_translated_flows
        )?;
        for (i, p) in self.phases.iter().enumerate() {
            writeln!(
                f,
                "phase {}: {} short flows ok, {} failed, worst start lag {:?}",
                i + 1,
                p.ok,
                p.failed,
                p.max_lag
            )?;
            for e in &p.errors {
                writeln!(f, "  flow error: {e}")?;
            }
        }
        writeln!(
            f,
            "long flows: {} TCP flows open across the whole run ({} keep-alive errors), {} segments written (rotate-age {}), {} recorder runs (restarted in between)",
            self.long_flows,
            self.long_flow_errors.len(),
            self.segments,
            o.rotate_age,
            self.recorder_runs.len()
        )?;
        for e in self.long_flow_errors.iter().take(5) {
            writeln!(f, "  long flow error: {e}")?;
        }
        for (i, r) in self.recorder_runs.iter().enumerate() {
            writeln!(
                f,
                "natrec run {}: starts {}, ends {}, seeded {}, approximate ends {}, ring-buffer full {}, netlink ENOBUFS {}",
                i + 1,
                r.starts,
                r.ends,
                r.seeded,
                r.approx_ends,
                r.ringbuf_full,
                r.enobufs
            )?;
        }
        writeln!(
            f,
            "captures: outside {} frames ({} not TCP/UDP/echo, {} not NAT traffic), inside {} frames",
            self.outside_capture.frames,
            self.outside_capture.skipped,
            self.not_translated,
            self.inside_capture.frames
        )?;
        let protos: Vec<String> = c.by_proto.iter().map(|(p, n)| format!("{p} {n}")).collect();
        writeln!(
            f,
            "flows on the wire: {} ({}); port forwards {}; port rewrites {}; outside endpoints shared by several remotes at once {}; outside endpoints passed between inside endpoints {}",
            c.flows,
            protos.join(", "),
            c.port_forward_flows,
            c.port_rewrites,
            c.shared_outside,
            c.reused_outside
        )?;
        writeln!(
            f,
            "time: traffic {:.1} s, verification {:.1} s",
            self.traffic_secs, self.verify_secs
        )?;
        writeln!(
            f,
            "queries: {}",
            match o.query_mode {
                QueryMode::PerPacket =>
                    "one point query (window 0, remote and protocol given) per packet",
                QueryMode::PerFlow => "one query per flow, judged at each packet's instant",
            }
        )?;
        writeln!(f, "packets checked: {}", v.checked)?;
        let v6 = &v.ipv6;
        writeln!(
            f,
            "  of them IPv6: {} checked, {} correct, {} wrong, {} missing, {} ambiguous-with-remote",
            v6.checked, v6.correct, v6.wrong, v6.missing, v6.ambiguous
        )?;
        writeln!(f, "correct: {}", v.correct)?;
        writeln!(f, "wrong: {}", v.wrong)?;
        writeln!(f, "missing: {}", v.missing)?;
        writeln!(f, "ambiguous-with-remote: {}", v.ambiguous)?;
        writeln!(f, "correct but held in several records: {}", v.duplicated)?;
        writeln!(f, "unpaired (no inside twin captured): {}", v.unpaired)?;
        for u in &v.unpaired_cases {
            let dir = if u.outbound { "to" } else { "from" };
            writeln!(f, "  unpaired: {} {} {dir} {} at {}", u.proto, u.outside, u.remote, u.ts)?;
        }
        writeln!(f, "damaged store parts skipped by answers: {}", v.damage.len())?;
        for d in v.damage.iter().take(SHOWN_CASES) {
            writeln!(f, "  damaged: {d}")?;
        }
        if !v.failures.is_empty() {
            writeln!(f, "first wrong or missing cases:")?;
            for case in &v.failures {
                writeln!(f, "  {case}")?;
            }
        }
        if !v.ambiguities.is_empty() {
            writeln!(f, "first ambiguous cases:")?;
            for case in &v.ambiguities {
                writeln!(f, "  {case}")?;
            }
        }
        writeln!(
            f,
            "RESULT: {}",
            match (self.passed(), v.exact()) {
                (true, true) => "PASS (every answer a single record)",
                (true, false) =>
                    "PASS (0 wrong, 0 missing; some answers held several records: see above)",
                (false, _) => "FAIL",
            }
        )
    }
}

/// The gateway's outside addresses (both pools) and its prefix translation's outside prefix.
fn outside_nets(lab: &GatewayLab) -> Vec<Net> {
    let mut nets: Vec<Net> = lab.pool().into_iter().map(|a| Net::host(a.into())).collect();
    nets.extend(lab.pool6().into_iter().map(|a| Net::host(a.into())));
    if lab.npt_host().is_some() {
        nets.push(Net { addr: crate::gateway::NPT_PREFIX.into(), len: 64 });
    }
    nets
}

/// The distinct flows of `pairing` whose outside address is in one of `pool`'s prefixes (not a
/// single address).
fn prefix_translated_flows(pairing: &Pairing, pool: &[Net]) -> usize {
    let prefixes: Vec<&Net> = pool.iter().filter(|n| n.len < 128 && n.addr.is_ipv6()).collect();
    let flows: std::collections::HashSet<_> = pairing
        .observations
        .iter()
        .filter(|o| prefixes.iter().any(|n| n.contains(o.outside.ip())))
        .map(|o| (o.proto, o.inside, o.outside, o.remote))
        .collect();
    flows.len()
}

/// A run's captures, paired (from its work directory).
#[derive(Clone, Debug)]
pub struct Evidence {
    pub pairing: Pairing,
    pub outside: CaptureStats,
    pub inside: CaptureStats,
}

impl Evidence {
    /// Reads `dir/outside.pcap` and `dir/inside.pcap` and pairs them; `pool` is the gateway's
    /// outside addresses.
    pub fn load(dir: &Path, pool: Vec<Net>) -> Result<Evidence, HarnessError> {
        let (outside_pkts, outside) = read_pcap(&dir.join(OUTSIDE_PCAP))?;
        let (inside_pkts, inside) = read_pcap(&dir.join(INSIDE_PCAP))?;
        let pairing =
            pair(&outside_pkts, &inside_pkts, &Sides { pool, inside_net: lab_inside_net });
        Ok(Evidence { pairing, outside, inside })
    }
}

/// The outside capture's file name in a run's work directory.
pub const OUTSIDE_PCAP: &str = "outside.pcap";
/// The inside capture's file name.
pub const INSIDE_PCAP: &str = "inside.pcap";
/// natrec's segment directory in a run's work directory.
pub const STORE_DIR: &str = "store";

fn path_str(p: &Path) -> Result<&str, HarnessError> {
    p.to_str().ok_or_else(|| HarnessError::Invalid(format!("path {} is not UTF-8", p.display())))
}

/// Runs the harness; `log` hears about progress.
pub fn run(
    opts: &HarnessOptions,
    log: &mut dyn FnMut(&str),
) -> Result<HarnessReport, HarnessError> {
    let dir = &opts.work_dir;
    std::fs::create_dir_all(dir).map_err(|source| HarnessError::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    let store = dir.join(STORE_DIR);
    let jsonl = dir.join("events.jsonl");
    let outside_pcap = dir.join(OUTSIDE_PCAP);
    let inside_pcap = dir.join(INSIDE_PCAP);
    for stale in [&jsonl, &outside_pcap, &inside_pcap] {
        // A previous run in the same directory must not add to this one's files.
        let _ = std::fs::remove_file(stale);
    }
    let _ = std::fs::remove_dir_all(&store);

    log(&format!("building the lab ({} inside hosts)", opts.lab.inside_hosts));
    let lab = GatewayLab::build(opts.lab.clone())?;
    let _servers = start_servers(&lab)?;
    let gw = lab.gateway();
    let outside_cap = Capture::start(gw, lab.wan_if(), &outside_pcap)?;
    // Every interface of the gateway: the inside packets are those with an inside address.
    let inside_cap = Capture::start(gw, "any", &inside_pcap)?;
    let store_arg = path_str(&store)?.to_owned();
    let extra =
        ["--dir", store_arg.as_str(), "--rotate-age", opts.rotate_age.as_str(), "--stats-json"];
    log("starting natrec record");
    let mut recorder = Some(NatrecRecord::start(&lab, &jsonl, &extra)?);
    let stop = |r: &mut Option<NatrecRecord>| -> Result<RecorderRun, HarnessError> {
        let rec =
            r.take().ok_or_else(|| HarnessError::Invalid("natrec record is not running".into()))?;
        let (_, stderr) = rec.stop()?;
        RecorderRun::from_stderr(&stderr)
    };

    let traffic_start = Instant::now();
    let long = LongFlows::open(&lab, opts.long_flows)?;
    let n_long = long.len();
    let mut rng = Rng::new(opts.workload.seed);
    let mut tcp_used = HashSet::new();
    let mut phases = Vec::new();
    let mut recorder_runs = Vec::new();
    let flows = opts.workload.flows_per_phase as u64;
    std::thread::scope(|s| -> Result<(), HarnessError> {
        let keeper = s.spawn(|| long.keep_alive(Duration::from_millis(700)));
        let result = (|| -> Result<(), HarnessError> {
            for phase in 0..2u64 {
                if phase == 1 {
                    log("restarting natrec record while the long flows go on");
                    recorder_runs.push(stop(&mut recorder)?);
                    std::thread::sleep(Duration::from_secs(1));
                    recorder = Some(NatrecRecord::start(&lab, &jsonl, &extra)?);
                }
                let jobs = plan_phase(&opts.workload, &lab, &mut rng, &mut tcp_used);
                log(&format!(
                    "phase {}: {} short flows over {:?}",
                    phase + 1,
                    jobs.len(),
                    opts.workload.phase
                ));
                phases.push(run_phase(&lab, &jobs, opts.workload.workers, phase * flows));
            }
            Ok(())
        })();
        long.stop();
        // The keep-alive thread only loops and sleeps; its end is certain once stopped.
        let _ = keeper.join();
        result
    })?;
    let long_flow_errors = long.close();
    log("letting the last entries expire");
    std::thread::sleep(Duration::from_secs(6));
    let traffic_secs = traffic_start.elapsed().as_secs_f64();
    outside_cap.stop()?;
    inside_cap.stop()?;
    recorder_runs.push(stop(&mut recorder)?);
    let pool = outside_nets(&lab);
    drop(lab);

    log("reading the captures and asking natrec about every outside packet");
    let verify_start = Instant::now();
    let pool_copy = pool.clone();
    let evidence = Evidence::load(dir, pool)?;
    let (pairing, outside_stats, inside_stats) =
        (evidence.pairing, evidence.outside, evidence.inside);
    let reader = Reader::open(&store)?;
    let verdict = verify(&reader, &pairing, opts.query_mode)?;
    let report = HarnessReport {
        options: opts.clone(),
        phases,
        long_flows: n_long,
        long_flow_errors,
        recorder_runs,
        segments: reader.segments().len(),
        prefix_translated_flows: prefix_translated_flows(&pairing, &pool_copy),
        pool: pool_copy,
        outside_capture: outside_stats,
        inside_capture: inside_stats,
        not_translated: pairing.not_translated,
        verdict,
        traffic_secs,
        verify_secs: verify_start.elapsed().as_secs_f64(),
    };
    if report.passed() && !opts.keep {
        // The evidence of a passing run is its report; a failing run keeps everything.
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(report)
}
