//! Loading natrec's eBPF programs, attaching them, and reading what they report.
//!
//! [`Capture::start`] checks the host (capabilities, kernel version, BTF), computes the kernel offsets
//! from BTF (`btf.rs`), loads the embedded object with them as the `OFFSETS` global, and
//! attaches the tc egress classifier to every WAN interface (and the LAN one to every inside
//! interface given). On kernels with tcx (6.6+) the attachment is a bpf link; otherwise a
//! `clsact` qdisc is added and a direct-action filter installed.
//!
//! Ends come from the end probe where it runs (`--ends auto`, the default, or `ebpf`): a BTF
//! tracepoint on `kmem_cache_free` that reports each NATed entry of this network namespace as it
//! is freed, into the same ring buffer, so no ctnetlink event has to be built, copied and parsed
//! per translation. Where it cannot run (kernels before 6.1, no BTF for it, or a refused attach)
//! the daemon takes ends from ctnetlink DESTROY events, as it does with `--ends ctnetlink`.
//!
//! Dropping the [`Capture`] detaches everything it attached.

mod btf;
mod event;
pub mod privilege;

use std::ffi::CString;
use std::time::Duration;

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::{KProbe, RawTracePoint, SchedClassifier, TcAttachType, tc};
use aya::{Ebpf, EbpfLoader};
use recorder_common::{DEFAULT_SEEN_ENTRIES, KernelOffsets, NatEvent, counter};

pub use btf::{BtfError, KernelBtf};
pub use event::{end_translation, start_translation};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{0}")]
    MissingCapabilities(String),
    #[error("reading this process's capabilities: {0}")]
    Capabilities(std::io::Error),
    #[error(
        "kernel {0} is too old: natrec needs Linux 5.8 or later (BPF ring buffer, bpf_probe_read_kernel)"
    )]
    KernelTooOld(String),
    #[error("interface {0:?} does not exist in this network namespace (see `ip link`)")]
    NoSuchInterface(String),
    #[error("no WAN interface given: name at least one with --wan")]
    NoWan,
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program or map {0} missing from the object (natrec was built wrongly)")]
    MissingItem(&'static str),
    #[error("{what}: {source}")]
    Program { what: String, source: aya::programs::ProgramError },
    #[error("{what}: {source}")]
    Map { what: String, source: aya::maps::MapError },
    #[error("setting up the eBPF log reader: {0}")]
    Log(String),
    #[error("ring buffer size {0} must be a power of two and a multiple of the page size")]
    BadRingSize(u32),
    #[error(
        "--ends ebpf: the end probe cannot run on this kernel: {0} (use --ends auto or ctnetlink)"
    )]
    NoEndProbe(String),
    #[error("reading this process's network namespace (/proc/self/ns/net): {0}")]
    Netns(std::io::Error),
    #[error(
        "--program-stats: turning on the kernel's BPF run statistics: {0} (it needs \
         CAP_SYS_ADMIN; without it, set kernel.bpf_stats_enabled=1 and natrec reports them)"
    )]
    ProgramStats(aya::sys::SyscallError),
}

/// Where translations' ends come from.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum EndsFrom {
    /// The end probe where this kernel runs it, ctnetlink DESTROY events otherwise.
    #[default]
    Auto,
    /// An end probe (a kprobe on `nf_conntrack_free`, else the raw tracepoint on
    /// `kmem_cache_free`); fail if none can run.
    Ebpf,
    /// ctnetlink DESTROY events in reliable mode.
    Ctnetlink,
}

/// What to attach to and how big the kernel-side maps are.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// WAN interfaces: the egress classifier sees SNAT and the replies of port forwards.
    pub wan: Vec<String>,
    /// Inside interfaces: the egress classifier sees port forwards' first packets.
    pub lan: Vec<String>,
    /// The ring buffer's size; `None`: sized from `nf_conntrack_max` ([`sizing`]).
    pub ringbuf_bytes: Option<u32>,
    /// The map of reported entries' capacity; `None`: sized from `nf_conntrack_max`.
    pub seen_entries: Option<u32>,
    pub ends: EndsFrom,
    /// Turn the kernel's BPF run statistics on for the run (`--program-stats`).
    pub program_stats: bool,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            wan: Vec::new(),
            lan: Vec::new(),
            ringbuf_bytes: None,
            seen_entries: None,
            ends: EndsFrom::Auto,
            program_stats: false,
        }
    }
}

/// The kernel-side counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelCounters {
    pub events: u64,
    pub ringbuf_full: u64,
    pub read_errors: u64,
    /// Conntrack entries the end probe saw freed (NATed or not, any namespace).
    pub ct_frees: u64,
    /// End events the end probe wrote (also counted in `events`).
    pub end_events: u64,
    /// End events written to the spill ring because the ring buffer was full (also counted in
    /// `end_events`; none of them is lost).
    pub ends_spilled: u64,
    /// Reported entries the full map of reported entries could not take (`--seen-entries`; with
    /// the end probe). None is lost: their next packets may report them again (duplicates,
    /// dropped), and their ends are paired with their starts by the tuple.
    pub seen_full: u64,
}

/// How a program was attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub interface: String,
    pub program: &'static str,
    /// "tcx" or "clsact".
    pub mode: &'static str,
}

/// Loaded and attached programs. Dropping it detaches them.
pub struct Capture {
    // Field order matters: the maps are dropped before the object that owns the programs.
    ring: RingBuf<MapData>,
    /// Where the end probe writes when `ring` is full.
    spill: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    logger: aya_log::EbpfLogger<&'static dyn log::Log>,
    attachments: Vec<Attachment>,
    offsets: KernelOffsets,
    /// Which end probe runs ([`Capture::end_probe`]); with one, ends arrive in the ring buffer.
    end_probe: Option<&'static str>,
    /// The ring buffer's size in bytes.
    ringbuf_bytes: u32,
    /// Holds the kernel's BPF run statistics on while natrec runs (`--program-stats`).
    _run_stats: Option<std::os::fd::OwnedFd>,
    ebpf: Ebpf,
}

/// What one of natrec's programs cost the kernel so far (BPF run statistics).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ProgramCost {
    pub program: &'static str,
    /// Runs (one per packet for a classifier, one per slab free for the end probe).
    pub runs: u64,
    pub run_time_ns: u64,
    /// `run_time_ns / runs`, 0 without runs.
    pub ns_per_run: u64,
}

/// aya-log's `Level::Warn` and `Level::Debug`, as the kernel-side filter compares them.
const LOG_LEVEL_WARN: u8 = 2;
const LOG_LEVEL_DEBUG: u8 = 4;

const WAN_PROGRAM: &str = "natrec_wan_egress";
const LAN_PROGRAM: &str = "natrec_lan_egress";
const END_PROGRAM: &str = "natrec_ct_free";
/// The preferred end probe: a kprobe on the function that frees a conntrack entry.
const END_KPROBE_PROGRAM: &str = "natrec_ct_free_kprobe";
const END_KPROBE_FUNCTION: &str = "nf_conntrack_free";
/// The tracepoint the end probe attaches to.
const END_TRACEPOINT: &str = "kmem_cache_free";

/// The release string of the running kernel (`uname -r`).
pub fn kernel_release() -> String {
    // SAFETY: uname fills a zeroed struct; the release is NUL-terminated.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return "unknown".into();
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr()).to_string_lossy().into_owned()
    }
}

/// Parses "6.18.44-foo" into (6, 18).
pub(crate) fn kernel_major_minor(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn ifindex(name: &str) -> Result<u32, CaptureError> {
    let c = CString::new(name).map_err(|_| CaptureError::NoSuchInterface(name.to_owned()))?;
    // SAFETY: a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(CaptureError::NoSuchInterface(name.to_owned())),
        i => Ok(i),
    }
}

/// The ring buffer's size and the map of reported entries' capacity for a gateway whose
/// conntrack table holds at most `conntrack_max` entries: the map holds every entry the table can
/// (from 4096 to 4 194 304), the ring one event per entry (a power of two from 1 MiB to 16 MiB).
/// A home router's 16 384 entries give 2 MiB and 16 384; 262 144 (a server's) give 16 MiB and
/// 262 144.
pub fn sizing(conntrack_max: u64) -> (u32, u32) {
    let seen = conntrack_max.clamp(4096, 1 << 22) as u32;
    let record = (size_of::<NatEvent>() as u64 + 8).next_multiple_of(8);
    // The bounds are powers of two: so is the result, within them.
    let ring = conntrack_max.saturating_mul(record).clamp(1 << 20, 16 << 20).next_power_of_two();
    (ring as u32, seen)
}

/// `net.netfilter.nf_conntrack_max` as this network namespace reads it.
fn conntrack_max() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max").ok()?.trim().parse().ok()
}

/// A BPF ring buffer's size must be a power of two and a multiple of the page size.
pub fn check_ring_size(bytes: u32) -> Result<(), CaptureError> {
    let page = 4096;
    if !bytes.is_power_of_two() || !bytes.is_multiple_of(page) {
        return Err(CaptureError::BadRingSize(bytes));
    }
    Ok(())
}

impl Capture {
    /// Checks what can be checked before touching anything: capabilities, the kernel version, the
    /// interfaces, the ring size.
    pub fn preflight(cfg: &CaptureConfig) -> Result<(), CaptureError> {
        if cfg.wan.is_empty() {
            return Err(CaptureError::NoWan);
        }
        let missing =
            privilege::missing(privilege::effective().map_err(CaptureError::Capabilities)?);
        if !missing.is_empty() {
            return Err(CaptureError::MissingCapabilities(privilege::explain(&missing)));
        }
        let release = kernel_release();
        if kernel_major_minor(&release).is_some_and(|v| v < (5, 8)) {
            return Err(CaptureError::KernelTooOld(release));
        }
        for name in cfg.wan.iter().chain(&cfg.lan) {
            ifindex(name)?;
        }
        cfg.ringbuf_bytes.map_or(Ok(()), check_ring_size)
    }

    /// Checks the host, loads the programs with this kernel's offsets and attaches them.
    pub fn start(cfg: &CaptureConfig) -> Result<Self, CaptureError> {
        Self::preflight(cfg)?;
        let release = kernel_release();
        raise_memlock_limit();

        // On before anything is loaded: every run of natrec's programs is timed.
        let run_stats = if cfg.program_stats {
            let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
                .map_err(CaptureError::ProgramStats)?;
            tracing::info!("BPF run statistics on (--program-stats): each program run is timed");
            Some(fd)
        } else {
            None
        };
        let (ringbuf_bytes, seen_entries) = match (cfg.ringbuf_bytes, cfg.seen_entries) {
            (Some(r), Some(n)) => (r, n),
            (r, n) => {
                let max = conntrack_max();
                let (auto_r, auto_n) = sizing(max.unwrap_or(u64::from(DEFAULT_SEEN_ENTRIES)));
                let (r, n) = (r.unwrap_or(auto_r), n.unwrap_or(auto_n));
                match max {
                    Some(m) => tracing::info!(
                        nf_conntrack_max = m,
                        ringbuf_bytes = r,
                        seen_entries = n,
                        "kernel maps sized from the gateway"
                    ),
                    None => tracing::warn!(
                        ringbuf_bytes = r,
                        seen_entries = n,
                        "net.netfilter.nf_conntrack_max unreadable: kernel maps at the defaults"
                    ),
                }
                (r, n)
            }
        };
        let kernel_btf = KernelBtf::load()?;
        let mut offsets = kernel_btf.offsets()?;
        offsets.netns_inum = own_netns_inum()?;
        tracing::debug!(?offsets, "kernel offsets from BTF");
        let end_probe_unusable = match cfg.ends {
            EndsFrom::Ctnetlink => None,
            EndsFrom::Auto | EndsFrom::Ebpf => kernel_btf.end_probe_unusable(&offsets)?,
        };
        drop(kernel_btf);
        // aya-log's level filter runs in the kernel: debug records cost nothing unless asked for.
        let log_level: u8 = if tracing::enabled!(target: "recorder::ebpf", tracing::Level::DEBUG) {
            LOG_LEVEL_DEBUG
        } else {
            LOG_LEVEL_WARN
        };
        // The map of reported entries depends on whether the end probe runs (see
        // `SEEN_BY_PROBE`), which is known only once it is attached: should the attach fail
        // (with `--ends auto`), the object is loaded again for ends from ctnetlink.
        let load = |by_probe: bool| {
            let (seen, seen_freed) = if by_probe { (1, seen_entries) } else { (seen_entries, 1) };
            EbpfLoader::new()
                .override_global("OFFSETS", &offsets, true)
                .override_global("SEEN_BY_PROBE", &u8::from(by_probe), true)
                .override_global("LAN_HOOKED", &u8::from(!cfg.lan.is_empty()), true)
                .override_global(aya_log::LEVEL, &log_level, false)
                .map_max_entries("EVENTS", ringbuf_bytes)
                .map_max_entries("SEEN", seen)
                .map_max_entries("SEEN_FREED", seen_freed)
                .load(aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/recorder")))
        };

        // The end probe goes first: an entry whose start is reported then has its end reported.
        let (mut ebpf, end_probe) = if cfg.ends == EndsFrom::Ctnetlink {
            (load(false)?, None)
        } else {
            let mut ebpf = load(true)?;
            match attach_end_probe(&mut ebpf, end_probe_unusable.as_deref()) {
                Ok(probe) => (ebpf, Some(probe)),
                Err(e) if cfg.ends == EndsFrom::Auto => {
                    // Where the kernel's BTF says no probe can run, the fallback is the
                    // documented behaviour (kernels before 6.1 without kprobes); a program
                    // refused by a kernel that should run it is worth a warning.
                    if let CaptureError::NoEndProbe(why) = &e {
                        tracing::info!("ends from ctnetlink DESTROY events: {why}");
                    } else {
                        tracing::warn!(
                            "ends from ctnetlink DESTROY events: the end probe did not start: {e}"
                        );
                    }
                    drop(ebpf);
                    (load(false)?, None)
                }
                Err(e) => return Err(e),
            }
        };
        if let Some(probe) = end_probe {
            tracing::info!(probe, "ends from the end probe");
        }

        let mut attachments = Vec::new();
        for (ifaces, program) in [(&cfg.wan, WAN_PROGRAM), (&cfg.lan, LAN_PROGRAM)] {
            if ifaces.is_empty() {
                continue;
            }
            let prog: &mut SchedClassifier = program_of(&mut ebpf, program)?;
            prog.load().map_err(|source| CaptureError::Program {
                what: format!("loading {program} (the kernel's verifier log follows)"),
                source,
            })?;
            for iface in ifaces {
                let tcx = kernel_major_minor(&release).is_some_and(|v| v >= (6, 6));
                if !tcx {
                    // EEXIST: a clsact qdisc is already there, which is what we need.
                    if let Err(e) = tc::qdisc_add_clsact(iface) {
                        tracing::debug!(%iface, "adding clsact: {e} (already present?)");
                    }
                }
                prog.attach(iface, TcAttachType::Egress).map_err(|source| {
                    CaptureError::Program {
                        what: format!("attaching {program} to {iface} egress"),
                        source,
                    }
                })?;
                let mode = if tcx { "tcx" } else { "clsact" };
                tracing::info!(%iface, program, mode, "attached");
                attachments.push(Attachment { interface: iface.clone(), program, mode });
            }
        }

        let logger =
            aya_log::EbpfLogger::init(&mut ebpf).map_err(|e| CaptureError::Log(e.to_string()))?;
        let ring = map_of(&mut ebpf, "EVENTS")?;
        let spill = map_of(&mut ebpf, "END_SPILL")?;
        let counters = map_of(&mut ebpf, "COUNTERS")?;
        Ok(Self {
            ring,
            spill,
            counters,
            logger,
            attachments,
            offsets,
            end_probe,
            ringbuf_bytes,
            _run_stats: run_stats,
            ebpf,
        })
    }

    /// Whether ends come through the ring buffer (the end probe runs); otherwise the daemon
    /// must read them from ctnetlink.
    pub fn ends_in_ring(&self) -> bool {
        self.end_probe.is_some()
    }

    /// The ring buffer's size in bytes (given, or [`sizing`]'s).
    pub fn ringbuf_bytes(&self) -> u32 {
        self.ringbuf_bytes
    }

    /// The end probe that runs: `kprobe:nf_conntrack_free` (once per conntrack entry) or
    /// `tracepoint:kmem_cache_free` (once per slab free of the machine); `None` with ends from
    /// ctnetlink.
    pub fn end_probe(&self) -> Option<&'static str> {
        self.end_probe
    }

    /// The ring buffer the programs write [`NatEvent`]s into.
    pub fn ring(&mut self) -> &mut RingBuf<MapData> {
        &mut self.ring
    }

    /// Pops the next event from the ring buffer, or else from the spill ring, if any.
    ///
    /// A spilled end comes after events the ring took later; the tracker's rules for a tuple
    /// taken by a newer entry before the old one's end arrived cover that.
    pub fn next_event(&mut self) -> Option<NatEvent> {
        let item = match self.ring.next() {
            Some(item) => item,
            None => self.spill.next()?,
        };
        if item.len() < size_of::<NatEvent>() {
            return None;
        }
        // SAFETY: the programs write whole NatEvents; read_unaligned copes with any alignment.
        Some(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<NatEvent>()) })
    }

    /// The kernel-side counters, summed over CPUs.
    pub fn counters(&self) -> Result<KernelCounters, CaptureError> {
        let get = |i: u32| -> Result<u64, CaptureError> {
            let v = self
                .counters
                .get(&i, 0)
                .map_err(|source| CaptureError::Map { what: "reading COUNTERS".into(), source })?;
            Ok(v.iter().sum())
        };
        Ok(KernelCounters {
            events: get(counter::EVENTS)?,
            ringbuf_full: get(counter::RINGBUF_FULL)?,
            read_errors: get(counter::READ_ERRORS)?,
            ct_frees: get(counter::CT_FREES)?,
            end_events: get(counter::END_EVENTS)?,
            ends_spilled: get(counter::ENDS_SPILLED)?,
            seen_full: get(counter::SEEN_FULL)?,
        })
    }

    /// Forwards the programs' log records (aya-log) to the `log` crate, bridged into tracing.
    pub fn flush_logs(&mut self) {
        self.logger.flush();
    }

    /// Whether the kernel times BPF program runs now: natrec turned it on (`--program-stats`),
    /// or someone did with `kernel.bpf_stats_enabled=1`.
    pub fn program_stats_on(&self) -> bool {
        self._run_stats.is_some()
            || std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
                .is_ok_and(|v| v.trim() == "1")
    }

    /// Runs and run time of each of natrec's loaded programs, when the kernel keeps them
    /// ([`Capture::program_stats_on`]); `None` otherwise.
    pub fn program_costs(&self) -> Option<Vec<ProgramCost>> {
        if !self.program_stats_on() {
            return None;
        }
        let end = match self.end_probe {
            Some(p) if p.starts_with("kprobe:") => Some(END_KPROBE_PROGRAM),
            Some(_) => Some(END_PROGRAM),
            None => None,
        };
        let costs = [Some(WAN_PROGRAM), Some(LAN_PROGRAM), end]
            .into_iter()
            .flatten()
            .filter_map(|name| {
                let info = self.ebpf.program(name)?.info().ok()?;
                let (runs, ns) = (info.run_count(), info.run_time().as_nanos() as u64);
                let ns_per_run = ns.checked_div(runs).unwrap_or(0);
                Some(ProgramCost { program: name, runs, run_time_ns: ns, ns_per_run })
            })
            .collect();
        Some(costs)
    }

    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Whether the kernel's conntrack entries carry start timestamps the programs can read.
    pub fn has_timestamps(&self) -> bool {
        self.offsets.tstamp_start != KernelOffsets::ABSENT
    }
}

/// The program `name` of the object, as its type.
fn program_of<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, CaptureError>
where
    &'a mut aya::programs::Program: TryInto<&'a mut P, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(CaptureError::MissingItem(name))?
        .try_into()
        .map_err(|source| CaptureError::Program { what: format!("program {name}"), source })
}

/// Takes the map `name` out of the object, as its type.
fn map_of<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, CaptureError>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(CaptureError::MissingItem(name))?;
    M::try_from(map).map_err(|source| CaptureError::Map { what: format!("map {name}"), source })
}

/// Loads and attaches the end probe, the cheapest that runs: a kprobe on `nf_conntrack_free`,
/// else the `kmem_cache_free` tracepoint, unless `tracepoint_unusable` says why this kernel
/// cannot run it. Returns which, as [`Capture::end_probe`] names it.
fn attach_end_probe(
    ebpf: &mut Ebpf,
    tracepoint_unusable: Option<&str>,
) -> Result<&'static str, CaptureError> {
    let kprobe = (|| {
        let prog: &mut KProbe = program_of(ebpf, END_KPROBE_PROGRAM).map_err(|e| e.to_string())?;
        prog.load().map_err(|e| format!("loading: {e}"))?;
        if let Err(e) = prog.attach(END_KPROBE_FUNCTION, 0) {
            // Loaded, not attached: nothing of it stays in the kernel.
            let _ = prog.unload();
            return Err(format!("attaching: {e}"));
        }
        Ok::<(), String>(())
    })();
    let kprobe_refused = match kprobe {
        Ok(()) => return Ok("kprobe:nf_conntrack_free"),
        Err(e) => e,
    };
    tracing::debug!(
        "end probe: the kprobe on {END_KPROBE_FUNCTION} did not start: {kprobe_refused}"
    );
    if let Some(why) = tracepoint_unusable {
        return Err(CaptureError::NoEndProbe(format!(
            "the kprobe on {END_KPROBE_FUNCTION} did not start ({kprobe_refused}), and {why}"
        )));
    }
    let prog: &mut RawTracePoint = program_of(ebpf, END_PROGRAM)?;
    prog.load().map_err(|source| CaptureError::Program {
        what: format!("loading {END_PROGRAM} (the kernel's verifier log follows)"),
        source,
    })?;
    prog.attach(END_TRACEPOINT).map_err(|source| CaptureError::Program {
        what: format!("attaching {END_PROGRAM} to the {END_TRACEPOINT} tracepoint"),
        source,
    })?;
    Ok("tracepoint:kmem_cache_free")
}

/// The inode number of this process's network namespace: the end probe reports only entries
/// of that namespace.
fn own_netns_inum() -> Result<u32, CaptureError> {
    use std::os::unix::fs::MetadataExt as _;
    let ino = std::fs::metadata("/proc/self/ns/net").map_err(CaptureError::Netns)?.ino();
    // Namespace inode numbers are 32-bit (`ns_common.inum` is an unsigned int).
    u32::try_from(ino).map_err(|_| {
        CaptureError::Netns(std::io::Error::other(format!("inode {ino} beyond 32 bits")))
    })
}

/// The length of a jiffy (the kernel's tick) in nanoseconds: the resolution of the coarse
/// clocks, which advance once per tick. The end probe reports how late an expired entry was
/// freed in jiffies.
pub fn jiffy_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec; CLOCK_MONOTONIC_COARSE exists since Linux 2.6.32.
    let ok = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } == 0;
    let ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    // HZ is 100 to 1000 on every architecture Linux runs natrec on; 4 ms (HZ=250) otherwise.
    if ok && (1_000_000..=10_000_000).contains(&ns) { ns } else { 4_000_000 }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: a valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        tracing::debug!("raising RLIMIT_MEMLOCK failed: {}", std::io::Error::last_os_error());
    }
}

/// Converts `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) to wall-clock nanoseconds since the epoch.
///
/// CLOCK_MONOTONIC and CLOCK_REALTIME run at the same (NTP-disciplined) rate, so their
/// difference changes only when the wall clock is stepped; [`ClockMap::refresh`] re-measures it
/// (call it once per batch of events).
#[derive(Clone, Copy, Debug)]
pub struct ClockMap {
    offset_ns: i128,
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec; the clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl ClockMap {
    pub fn new() -> Self {
        let mut c = Self { offset_ns: 0 };
        c.refresh();
        c
    }

    /// Re-measures realtime − monotonic, bracketing the realtime read between two monotonic ones.
    pub fn refresh(&mut self) {
        let m1 = clock_ns(libc::CLOCK_MONOTONIC);
        let r = clock_ns(libc::CLOCK_REALTIME);
        let m2 = clock_ns(libc::CLOCK_MONOTONIC);
        self.offset_ns = r - (m1 + m2) / 2;
    }

    /// Wall-clock time of a monotonic kernel timestamp.
    pub fn wall(&self, ktime_ns: u64) -> jiff::Timestamp {
        let ns = ktime_ns as i128 + self.offset_ns;
        jiff::Timestamp::from_nanosecond(ns).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }
}

impl Default for ClockMap {
    fn default() -> Self {
        Self::new()
    }
}

/// How long the daemon waits between reading the kernel counters for the log.
pub const COUNTER_LOG_INTERVAL: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_maps_are_sized_from_the_conntrack_table() {
        assert_eq!(sizing(16_384), (2 << 20, 16_384), "a home router");
        assert_eq!(sizing(262_144), (16 << 20, 262_144), "a server's default");
        assert_eq!(sizing(1000), (1 << 20, 4096), "the floors");
        assert_eq!(sizing(10_000_000), (16 << 20, 1 << 22), "the ceilings");
        for max in [1, 5000, 65_536, 100_000, 1 << 30] {
            let (ring, _) = sizing(max);
            assert!(check_ring_size(ring).is_ok(), "{ring} for {max}");
        }
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(kernel_major_minor("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(kernel_major_minor("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(kernel_major_minor("garbage"), None);
    }

    #[test]
    fn clock_map_tracks_the_wall_clock() {
        let c = ClockMap::new();
        let mono = clock_ns(libc::CLOCK_MONOTONIC) as u64;
        let wall = c.wall(mono);
        let now = jiff::Timestamp::now();
        let diff = (now.as_nanosecond() - wall.as_nanosecond()).abs();
        assert!(diff < 50_000_000, "monotonic→wall conversion off by {diff} ns");
    }

    #[test]
    fn a_jiffy_is_the_coarse_clocks_step() {
        let j = jiffy_ns();
        // HZ is one of 100, 250, 300, 1000 on the kernels natrec runs on.
        let hz = (1_000_000_000 + j / 2) / j;
        assert!([100, 250, 300, 1000].contains(&hz), "jiffy {j} ns: HZ {hz}");
        // The coarse clock advances by about that step.
        let coarse = || clock_ns(libc::CLOCK_MONOTONIC_COARSE);
        let a = coarse();
        let mut b = coarse();
        while b == a {
            b = coarse();
        }
        let step = (b - a) as u64;
        assert!(step >= j / 2 && step <= 3 * j, "coarse step {step} ns, jiffy {j} ns");
    }

    #[test]
    fn the_netns_inode_is_this_process_namespace() {
        use std::os::unix::fs::MetadataExt as _;
        let ino = own_netns_inum().expect("netns");
        let again = std::fs::metadata("/proc/thread-self/ns/net").expect("thread netns").ino();
        assert_eq!(u64::from(ino), again);
        assert_ne!(ino, 0);
    }

    #[test]
    fn missing_interfaces_are_named() {
        let err = ifindex("nr-nonexistent0").expect_err("no such interface");
        assert!(err.to_string().contains("nr-nonexistent0"), "{err}");
    }
}
