//! Stress mode: new translations at the highest rate the lab sustains for a while, then the
//! kernel's count of translations it created (conntrack statistics) against what natrec
//! recorded, natrec's own loss counters and its CPU time. Reported, never pass/fail.
//!
//! The load, the recorder handling and the kernel/`/proc` readings are the benchmark's
//! ([`crate::bench`]); this is the harness's quick view of them on one lab.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::HarnessError;
use crate::bench::load::{self, LoadDone, LoadSpec};
use crate::bench::recorders::{self, Recorded, Recorder};
use crate::bench::sys::{CtStats, NatCounter, ProcCpu, ct_count};
use crate::gateway::{GatewayLab, LabSpec};

/// A rate no lab here reaches: bounds the 5-tuple capacity check of an unpaced load.
const MAX_RATE: u64 = 500_000;

/// How a stress run is set up.
#[derive(Clone, Debug)]
pub struct StressOptions {
    pub lab: LabSpec,
    /// How long new flows are offered.
    pub duration: Duration,
    pub seed: u64,
    /// How long to wait after the load for the last entries to end.
    pub drain_timeout: Duration,
    /// Where natrec's store goes (created; removed afterwards unless `keep`).
    pub work_dir: PathBuf,
    pub keep: bool,
}

impl Default for StressOptions {
    /// 20 inside hosts × 4 addresses, 8 servers, short timeouts; 20 s of load.
    fn default() -> Self {
        StressOptions {
            lab: LabSpec {
                prefix: "hs".into(),
                inside_hosts: 20,
                addrs_per_host: 4,
                pool_size: 2,
                servers: 8,
                port_forward: false,
                ..LabSpec::default()
            },
            duration: Duration::from_secs(20),
            seed: 0x0571_7e55,
            drain_timeout: Duration::from_secs(30),
            work_dir: super::run::target_dir()
                .join("harness")
                .join(format!("stress-{}", std::process::id())),
            keep: false,
        }
    }
}

/// What a stress run measured.
#[derive(Clone, Debug)]
pub struct StressReport {
    pub options: StressOptions,
    pub offered: LoadDone,
    /// Translations the gateway created during the run (new entries leaving the WAN interface,
    /// counted by an nftables NAT-chain counter, less conntrack's failed insertions).
    pub kernel_created: u64,
    /// Kernel-side losses: insertion races, table-full drops, early drops.
    pub kernel_lost: CtStats,
    pub recorded: Recorded,
    /// natrec's CPU seconds over the load and the drain.
    pub natrec_cpu_secs: f64,
    /// Wall-clock seconds of the load and the drain.
    pub wall_secs: f64,
}

impl fmt::Display for StressReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.offered;
        let pct = |a: u64, b: u64| {
            if b == 0 { 0.0 } else { 100.0 * a as f64 / b as f64 }
        };
        writeln!(f, "natrec harness stress mode (not pass/fail)")?;
        writeln!(
            f,
            "lab: {} inside hosts x {} addresses, {} servers; load: as fast as the lab goes for {:?} (seed {:#x})",
            self.options.lab.inside_hosts,
            self.options.lab.addrs_per_host,
            self.options.lab.servers,
            self.options.duration,
            self.options.seed
        )?;
        writeln!(
            f,
            "offered: {} new flows in {:.1} s ({:.0}/s), {} send errors",
            o.sent,
            o.seconds,
            if o.seconds > 0.0 { o.sent as f64 / o.seconds } else { 0.0 },
            o.send_errors
        )?;
        writeln!(
            f,
            "kernel: {} translations created (NAT counter less conntrack insert_failed); insert_failed {}, drop {}, early_drop {}",
            self.kernel_created,
            self.kernel_lost.insert_failed,
            self.kernel_lost.drop,
            self.kernel_lost.early_drop
        )?;
        writeln!(
            f,
            "natrec: {} translations recorded ({:.2}% of the kernel's), {} with their exact end; ends {}",
            self.recorded.starts,
            pct(self.recorded.starts, self.kernel_created),
            self.recorded.complete,
            self.recorded.ends
        )?;
        writeln!(
            f,
            "natrec losses: {} ({})",
            self.recorded.drops_reported, self.recorded.drop_detail
        )?;
        writeln!(
            f,
            "natrec CPU: {:.2} s over {:.1} s ({:.1}% of one core), store {} bytes",
            self.natrec_cpu_secs,
            self.wall_secs,
            if self.wall_secs > 0.0 { 100.0 * self.natrec_cpu_secs / self.wall_secs } else { 0.0 },
            self.recorded.bytes
        )
    }
}

/// Runs stress mode; `log` hears about progress.
pub fn run_stress(
    opts: &StressOptions,
    log: &mut dyn FnMut(&str),
) -> Result<StressReport, HarnessError> {
    let dir = &opts.work_dir;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|source| HarnessError::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    log(&format!("building the lab ({} inside hosts)", opts.lab.inside_hosts));
    let lab = GatewayLab::build(opts.lab.clone())?;
    let spec = LoadSpec { rate: None, duration: opts.duration, seed: opts.seed };
    load::check_capacity(&lab, &spec, MAX_RATE)?;
    load::warm_up(&lab)?;
    // The warm-up's entries end before natrec starts, so it does not seed them.
    drain(&lab, opts.drain_timeout)?;
    let gw = lab.gateway();
    log("starting natrec record");
    let running = recorders::start(Recorder::Natrec, &lab, dir)?;
    let pid =
        running.pid().ok_or_else(|| HarnessError::Invalid("natrec record has no pid".into()))?;
    let counter = NatCounter::install(gw, lab.wan_if())?;
    let ct0 = CtStats::read(gw)?;
    let cpu0 = ProcCpu::read(pid)?;
    let t0 = Instant::now();
    log(&format!("offering new flows as fast as possible for {:?}", opts.duration));
    let offered = load::run(&lab, &spec)?;
    log("waiting for the last entries to end");
    drain(&lab, opts.drain_timeout)?;
    // natrec reaps and writes the last ends within a second or two of the entries' end.
    std::thread::sleep(Duration::from_secs(3));
    let cpu1 = ProcCpu::read(pid)?;
    let wall_secs = t0.elapsed().as_secs_f64();
    let ct = CtStats::read(gw)?.since(ct0);
    let created = counter.read(gw)?.saturating_sub(ct.insert_failed);
    drop(counter);
    let recorded = running.stop()?;
    drop(lab);
    if !opts.keep {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(StressReport {
        options: opts.clone(),
        offered,
        kernel_created: created,
        kernel_lost: ct,
        recorded,
        natrec_cpu_secs: cpu1.seconds_since(cpu0),
        wall_secs,
    })
}

/// Waits until the gateway's conntrack table is empty (or `timeout`).
fn drain(lab: &GatewayLab, timeout: Duration) -> Result<(), HarnessError> {
    let deadline = Instant::now() + timeout;
    while ct_count(lab.gateway())? > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}
