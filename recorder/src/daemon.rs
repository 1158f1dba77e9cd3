//! `natrec record`: the capture daemon.
//!
//! ```text
//!  eBPF ring buffer: starts, and ends from the end probe
//!                        ──(timer; AsyncFd for a small ring)──┐
//!  ctnetlink DESTROY (own thread, never blocks) ──(unbounded channel)──┼─► Tracker ─► JSON Lines
//!  conntrack dumps (blocking pool: seed, resync, reap) ──(channel)─────┘            └► store
//! ```
//!
//! Ends come from the end probe (in the ring, after their start) where the kernel runs it, and
//! from ctnetlink DESTROY events otherwise (`crate::capture::EndsFrom`); with the end probe no
//! ctnetlink socket is subscribed, and a ring-buffer overflow (which may have lost ends) triggers
//! the resync a lost DESTROY event does.
//!
//! One tokio task owns a `Recorder` (the tracker and the sinks) and gives it each source's
//! input in turn, one method per source: the ring buffer, ctnetlink, dumps and the tick; the ctnetlink reader runs on its own OS thread
//! and only forwards, because a stalled reliable reader keeps dying entries counted against
//! `nf_conntrack_max`; the store's writer runs on its own thread too, because sealing a segment
//! takes seconds to minutes of compression and must not stall the ring buffer's reader. Before
//! every batch of DESTROY events the ring buffer is drained, so the start of an entry (submitted
//! at its first packet) is always handled before its end.
//!
//! Both readers take events in batches rather than at every kernel wake-up (a wake-up per event
//! cost more CPU than everything else together): the ring is read on a timer sized so that half
//! of it cannot fill in between (`ring_rest`), the ctnetlink reader rests likewise after each
//! batch (`netlink_rest`) and reads up to 64 datagrams per system call.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use recorder_common::{Hook, NatEvent};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use crate::capture::{
    Capture, CaptureConfig, CaptureError, ClockMap, KernelCounters, ProgramCost, jiffy_ns,
};
use crate::config::{self, ConfigFile};
use crate::conntrack::{
    self, ConntrackError, CtEntry, EventOptions, EventSocket, EventStats, Wait,
};
use crate::log_limit::Repeats;
use crate::metrics::{self, Publisher};
use crate::model::{Flags, FlowEvent, FlowKey, Translation};
use crate::service::Notifier;
use crate::sink::store::LiveStats;
use crate::sink::{Closed, Fanout, JsonlSink, SinkError, StoreSink};
use crate::store::{StoreError, Writer, WriterOptions, WriterStats};
use crate::tracker::{Tracker, TrackerStats};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("ctnetlink: {0}")]
    Conntrack(#[from] ConntrackError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("attribution store: {0}")]
    Store(#[from] StoreError),
    #[error("nothing to write to: give --dir DIR (the attribution store) and/or --jsonl FILE")]
    NoOutput,
    #[error("{0}: {1}")]
    Io(&'static str, std::io::Error),
    #[error("metrics endpoint: binding {0}: {1}")]
    Metrics(SocketAddr, std::io::Error),
}

/// Everything `natrec record` needs, validated.
#[derive(Clone, Debug)]
pub struct RecordConfig {
    pub capture: CaptureConfig,
    pub jsonl: Option<PathBuf>,
    pub store: Option<WriterOptions>,
    /// How often to dump conntrack: expired entries are reaped (their DESTROY events come at
    /// once instead of up to a minute late), and open translations the kernel no longer has
    /// (their end event never came: entries without the event extension) are closed with an
    /// approximate end. `None`: only after a possible event loss.
    pub reap_interval: Option<Duration>,
    pub netlink_rcvbuf: usize,
    /// How often counters go to the log.
    pub stats_interval: Duration,
    /// Set `net.netfilter.nf_conntrack_timestamp=1` (exact start and stop times) and
    /// `net.netfilter.nf_conntrack_events=1` (a DESTROY event for every entry, also those created
    /// while natrec was not running).
    pub set_sysctls: bool,
    /// Serve Prometheus metrics here (`crate::metrics`).
    pub metrics: Option<SocketAddr>,
}

/// What a run did, reported at shutdown (and as JSON by `--stats-json`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RecordSummary {
    /// Where ends came from: "ebpf" (the end probe) or "ctnetlink".
    pub ends_from: &'static str,
    /// The end probe that ran (`kprobe:nf_conntrack_free` or `tracepoint:kmem_cache_free`),
    /// with ends from it.
    pub end_probe: Option<&'static str>,
    pub kernel: KernelCounters,
    pub tracker: TrackerStats,
    pub netlink_destroys: u64,
    pub netlink_enobufs: u64,
    pub netlink_unreadable: u64,
    pub resyncs: u64,
    pub dumps: u64,
    /// Events whose kernel data could not be made into a translation (unknown family/kind).
    pub malformed_events: u64,
    pub store: Option<WriterStats>,
    /// Translations open (at exit, in `--stats-json`).
    pub open: usize,
    pub ringbuf_bytes: u32,
    /// The most the ring buffer held at one read.
    pub ringbuf_read_max_bytes: u64,
    /// What each of natrec's programs cost, when the kernel's BPF run statistics are on.
    pub programs: Option<Vec<ProgramCost>>,
}

/// What a SIGHUP needs: the settings natrec runs with, a way to read them anew, and the log
/// filter's handle.
pub struct Reload {
    /// The settings in effect.
    pub current: ConfigFile,
    /// The settings `natrec record` would start with now: the config file read again, with the
    /// same flags and environment on top.
    pub load: Box<dyn FnMut() -> anyhow::Result<ConfigFile>>,
    /// Replaces the log filter (an error for a filter that does not parse).
    pub set_log_filter: SetLogFilter,
}

/// Replaces the log filter of a running natrec.
pub type SetLogFilter = Box<dyn Fn(&str) -> anyhow::Result<()>>;

/// Messages from the ctnetlink reader thread.
enum NlMsg {
    Destroys(Vec<CtEntry>, Timestamp),
    /// An event may have been lost (ENOBUFS, unreadable message): resync.
    MayHaveLost {
        enobufs: u32,
        unreadable: u32,
    },
    Stats(EventStats),
    Failed(ConntrackError),
}

/// A conntrack dump made while recording (periodic, or after a possible loss). It reaps
/// expired entries (their DESTROY events follow at once) and shows which entries are live.
struct DumpResult {
    started: Timestamp,
    done: Timestamp,
    entries: Result<Vec<CtEntry>, ConntrackError>,
}

/// A resync waiting for in-flight DESTROY events to arrive before it closes anything.
struct PendingResync {
    live: HashSet<FlowKey>,
    started: Timestamp,
    done: Timestamp,
    at: Instant,
}

/// How long a resync waits for DESTROY events already on their way. No new dump starts while
/// one waits (a newer dump would otherwise replace it before it is applied).
const RESYNC_GRACE: Duration = Duration::from_secs(2);
const TICK: Duration = Duration::from_millis(100);

/// The most new translations a second that the rests below are sized for: several times what
/// one gateway creates (BENCHMARKS.md has the lab gateway's maximum).
const SIZING_RATE: u64 = 1_000_000;

/// Rests shorter than this are not taken: the reader waits for the kernel's wake-up instead.
const MIN_REST: Duration = Duration::from_millis(1);

/// How long the ring buffer may go unread: the time half of it takes to fill at
/// [`SIZING_RATE`], at most a tick; zero (no rest) when that is under [`MIN_REST`].
///
/// The kernel wakes a ring reader that has caught up at every event, so a watched ring costs a
/// wake-up of the loop per event or two at a steady load; a rested ring is read on a timer (and
/// before every batch of DESTROY events, and at every tick) and not watched at all. Nothing is
/// written sooner than the next tick anyway.
/// `per_translation` is how many records a translation puts in the ring: 1 (its start), or 2
/// when the end probe reports ends there too.
fn ring_rest(ring_bytes: u32, per_translation: u64) -> Duration {
    rest_for(u64::from(ring_bytes) / 2 / RING_RECORD / per_translation, TICK)
}

/// A ring record: the event behind an 8-byte header, 8-byte aligned.
const RING_RECORD: u64 = (size_of::<NatEvent>() as u64 + 8).next_multiple_of(8);

/// How long the ctnetlink reader waits after a batch that emptied the socket, for the same
/// reason as [`ring_rest`]: the time half the socket's buffer takes to fill at [`SIZING_RATE`]
/// (a DESTROY datagram takes about 1.3 KiB of it, its skb's truesize: 2 KiB counted), at most
/// half a tick. The kernel queues the events meanwhile; they are not held back (and in
/// reliable mode even a full queue loses nothing: ENOBUFS is reported and the entries wait).
fn netlink_rest(rcvbuf_bytes: usize) -> Duration {
    rest_for(rcvbuf_bytes as u64 / 2 / 2048, TICK / 2)
}

/// The time `events` take at [`SIZING_RATE`], at most `max`; zero when under [`MIN_REST`].
fn rest_for(events: u64, max: Duration) -> Duration {
    let d = Duration::from_micros(events.saturating_mul(1_000_000) / SIZING_RATE).min(max);
    if d < MIN_REST { Duration::ZERO } else { d }
}

/// Runs the daemon until SIGINT or SIGTERM; SIGHUP reloads what `reload` allows.
pub fn run(cfg: RecordConfig, reload: Option<Reload>) -> Result<RecordSummary, DaemonError> {
    if cfg.jsonl.is_none() && cfg.store.is_none() {
        // Before the runtime and the capture: nothing to clean up.
        return Err(DaemonError::NoOutput);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DaemonError::Io("starting the runtime", e))?;
    rt.block_on(run_async(cfg, reload))
}

async fn run_async(
    cfg: RecordConfig,
    mut reload: Option<Reload>,
) -> Result<RecordSummary, DaemonError> {
    // Nothing is changed on the host before the configuration is known to be usable.
    Capture::preflight(&cfg.capture)?;
    // The handlers are in place before anything is attached: a SIGTERM while natrec starts, or
    // at once after READY=1 (systemd's stop, a test's), stops it cleanly once it is recording,
    // instead of killing it with programs attached and translations in hand.
    use tokio::signal::unix::{SignalKind, signal};
    let handler = |kind, what| signal(kind).map_err(|e| DaemonError::Io(what, e));
    let mut sigterm = handler(SignalKind::terminate(), "installing the SIGTERM handler")?;
    let mut sigint = handler(SignalKind::interrupt(), "installing the SIGINT handler")?;
    let mut sighup = handler(SignalKind::hangup(), "installing the SIGHUP handler")?;
    let metrics = match cfg.metrics {
        Some(addr) => {
            let (endpoint, publisher) =
                metrics::bind(addr).await.map_err(|e| DaemonError::Metrics(addr, e))?;
            let at = endpoint.local_addr().map_err(|e| DaemonError::Metrics(addr, e))?;
            tracing::info!("metrics at http://{at}/metrics");
            tokio::spawn(endpoint.serve());
            Some(publisher)
        }
        None => None,
    };
    let (sinks, recovered, store_stats) = open_sinks(&cfg)?;
    if cfg.set_sysctls {
        match conntrack::enable_timestamps() {
            Ok(0) => tracing::info!(
                "set net.netfilter.nf_conntrack_timestamp=1 (exact start and stop times)"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                "could not enable conntrack timestamps ({e}): times will be natrec's observations, flagged approximate"
            ),
        }
    }

    let mut capture = Capture::start(&cfg.capture)?;
    if !capture.has_timestamps() {
        tracing::warn!(
            "this kernel's BTF has no conntrack timestamp extension: starts are natrec's observations"
        );
    }
    let ends_in_ring = capture.ends_in_ring();
    if ends_in_ring {
        if cfg.capture.lan.is_empty() {
            tracing::info!(
                "no --lan: a port forward that no inside host answers is recorded at its end only (end_only, start_approx)"
            );
        }
    } else {
        check_destroy_events(cfg.set_sysctls);
    }
    let ring_rest = ring_rest(capture.ringbuf_bytes(), if ends_in_ring { 2 } else { 1 });
    let ring_watch = if ring_rest.is_zero() { Some(watch_ring(&mut capture)?) } else { None };
    let mut ring_timer = tokio::time::interval(if ring_rest.is_zero() { TICK } else { ring_rest });
    ring_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::debug!(?ring_rest, "ring buffer read on a timer (zero: at every wake-up)");

    // The event socket opens before the seeding dump, so no end is missed in between.
    let stop = Arc::new(AtomicBool::new(false));
    let (nl_tx, mut nl_rx) = mpsc::unbounded_channel();
    let reader = if ends_in_ring {
        None
    } else {
        let events = EventSocket::open(&EventOptions {
            rcvbuf_bytes: cfg.netlink_rcvbuf,
            wait: Wait::Timeout(Duration::from_millis(200)),
            max_batch: 4096,
        })?;
        tracing::info!(rcvbuf = events.rcvbuf_bytes(), "ctnetlink DESTROY events in reliable mode");
        Some(spawn_reader(events, nl_tx, stop.clone())?)
    };

    let (dump_tx, mut dump_rx) = mpsc::unbounded_channel::<DumpResult>();
    let mut rec = Recorder::new(&cfg, capture, sinks, dump_tx);
    rec.metrics = metrics;
    rec.store_stats = store_stats;
    rec.seed(recovered).await?;

    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            guard = readable(ring_watch.as_ref()), if ring_watch.is_some() => {
                let mut guard = guard.map_err(|e| DaemonError::Io("polling the ring buffer", e))?;
                rec.drain_ring();
                guard.clear_ready();
                rec.write()?;
            }
            _ = ring_timer.tick(), if ring_watch.is_none() => rec.on_ring()?,
            msg = nl_rx.recv(), if reader.is_some() => {
                let Some(msg) = msg else { break };
                rec.on_netlink(msg)?;
            }
            Some(res) = dump_rx.recv() => rec.on_dump(res),
            _ = tick.tick() => rec.on_tick()?,
            _ = sigint.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = sighup.recv() => rec.on_hangup(reload.as_mut()),
        }
    }

    // Shutdown: stop the reader, take what is queued, close the outputs.
    rec.notifier.stopping();
    stop.store(true, Ordering::Relaxed);
    rec.drain_ring();
    if reader.is_some_and(|r| r.join().is_err()) {
        tracing::error!("the ctnetlink reader thread panicked");
    }
    while let Ok(msg) = nl_rx.try_recv() {
        match msg {
            NlMsg::Destroys(list, received) => rec.end_all(&list, received),
            NlMsg::Stats(s) => rec.nl_stats = s,
            NlMsg::MayHaveLost { .. } | NlMsg::Failed(_) => {}
        }
    }
    rec.finish()
}

/// The sinks `cfg` asks for, the translations the store had open at its last stop, and the
/// store's live counters.
fn open_sinks(
    cfg: &RecordConfig,
) -> Result<(Fanout, Vec<Translation>, Option<LiveStats>), DaemonError> {
    let mut sinks = Fanout::default();
    let mut recovered = Vec::new();
    let mut live = None;
    if let Some(path) = &cfg.jsonl {
        sinks.push(Box::new(JsonlSink::open(path)?));
    }
    if let Some(opts) = &cfg.store {
        let writer = Writer::open(opts.clone())?;
        recovered = writer.recovered_open().to_vec();
        let sink = StoreSink::spawn(writer)?;
        live = Some(sink.live_stats());
        sinks.push(Box::new(sink));
    }
    if sinks.is_empty() {
        return Err(DaemonError::NoOutput);
    }
    Ok((sinks, recovered, live))
}

/// With ends from ctnetlink: makes sure (or warns that) the kernel sends DESTROY events.
fn check_destroy_events(set_sysctls: bool) {
    if set_sysctls {
        match conntrack::enable_events() {
            Ok(1) => {}
            Ok(prev) => tracing::info!(
                previous = prev,
                "set net.netfilter.nf_conntrack_events=1 (DESTROY events for every entry)"
            ),
            Err(e) => tracing::warn!(
                "could not set nf_conntrack_events=1 ({e}): entries created while natrec is not running end only at a dump"
            ),
        }
    }
    match conntrack::events_setting() {
        Ok(0) => tracing::warn!(
            "net.netfilter.nf_conntrack_events is 0: the kernel sends no DESTROY events; ends will come only from resync dumps"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("reading nf_conntrack_events: {e}"),
    }
}

/// The ring buffer's fd, watched for readiness (a ring too small to rest on a timer).
fn watch_ring(capture: &mut Capture) -> Result<AsyncFd<OwnedFd>, DaemonError> {
    let dup = capture
        .ring()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| DaemonError::Io("duplicating the ring buffer fd", e))?;
    // SAFETY: an OwnedFd stays open and names the same file until the AsyncFd drops it.
    unsafe { AsyncFd::register_with_interest(dup, tokio::io::Interest::READABLE) }
        .map_err(|e| DaemonError::Io("polling the ring buffer", e.into()))
}

/// The recording's state: the capture, the tracker, the sinks and the bookkeeping of dumps
/// and counters. Each source of input has one method; all of them leave the tracker's output
/// written to the sinks.
struct Recorder {
    capture: Capture,
    clock: ClockMap,
    jiffy_ns: u64,
    tracker: Tracker,
    /// The tracker's output, until it is written.
    out: Vec<FlowEvent>,
    sinks: Fanout,
    summary: RecordSummary,
    ends_in_ring: bool,
    reap_interval: Option<Duration>,
    stats_interval: Duration,
    /// Where dumps made on the blocking pool send their result.
    dump_tx: mpsc::UnboundedSender<DumpResult>,
    dump_in_flight: bool,
    pending_resync: Option<PendingResync>,
    resync_wanted: bool,
    last_reap: Instant,
    last_stats: Instant,
    last_check: Instant,
    /// Kernel counters at the last line logged about them, to log what grew since.
    last_full: u64,
    last_seen_full: u64,
    /// `ringbuf_full` at the last check (a growth asks for a resync).
    checked_full: u64,
    full_log: Repeats,
    seen_full_log: Repeats,
    dump_log: Repeats,
    nl_stats: EventStats,
    notifier: Notifier,
    metrics: Option<Publisher>,
    store_stats: Option<LiveStats>,
}

impl Recorder {
    fn new(
        cfg: &RecordConfig,
        capture: Capture,
        sinks: Fanout,
        dump_tx: mpsc::UnboundedSender<DumpResult>,
    ) -> Self {
        let (ends_in_ring, end_probe) = (capture.ends_in_ring(), capture.end_probe());
        let ringbuf_bytes = capture.ringbuf_bytes();
        let tracker = match &cfg.store {
            Some(o) => Tracker::with_resolution(o.resolution),
            None => Tracker::new(),
        };
        Self {
            capture,
            clock: ClockMap::new(),
            jiffy_ns: jiffy_ns(),
            tracker,
            out: Vec::new(),
            sinks,
            summary: RecordSummary {
                ends_from: if ends_in_ring { "ebpf" } else { "ctnetlink" },
                end_probe,
                ringbuf_bytes,
                ..RecordSummary::default()
            },
            ends_in_ring,
            reap_interval: cfg.reap_interval,
            stats_interval: cfg.stats_interval,
            dump_tx,
            dump_in_flight: false,
            pending_resync: None,
            resync_wanted: false,
            last_reap: Instant::now(),
            last_stats: Instant::now(),
            last_check: Instant::now(),
            last_full: 0,
            last_seen_full: 0,
            checked_full: 0,
            full_log: Repeats::default(),
            seen_full_log: Repeats::default(),
            dump_log: Repeats::default(),
            nl_stats: EventStats::default(),
            notifier: Notifier::from_env(),
            metrics: None,
            store_stats: None,
        }
    }

    /// Adopts the translations the store had open and starts those the kernel has now.
    async fn seed(&mut self, recovered: Vec<Translation>) -> Result<(), DaemonError> {
        if !recovered.is_empty() {
            tracing::info!(
                count = recovered.len(),
                "translations open in the store at the last stop"
            );
        }
        for t in recovered {
            self.tracker.adopt(t);
        }
        let started = Timestamp::now();
        let entries = tokio::task::spawn_blocking(conntrack::dump)
            .await
            .map_err(|e| DaemonError::Io("seeding dump", std::io::Error::other(e)))??;
        let done = Timestamp::now();
        self.summary.dumps += 1;
        let mut live = HashSet::new();
        for e in &entries {
            if let Some(mut t) = e.translation(started, false) {
                t.flags.insert(Flags::SEEDED);
                live.insert(t.key());
                self.tracker.start(t, &mut self.out);
            }
        }
        // Translations recovered from the store that the kernel no longer has are closed after
        // the grace: entries that expired while natrec was down and that this dump reaped send
        // their DESTROY events (with the kernel's exact stop time) right now.
        self.pending_resync =
            Some(PendingResync { live, started, done, at: Instant::now() + RESYNC_GRACE });
        self.write()?;
        let interfaces: Vec<&str> =
            self.capture.attachments().iter().map(|a| a.interface.as_str()).collect();
        tracing::info!(
            seeded = self.tracker.stats().seeded,
            entries = entries.len(),
            ?interfaces,
            "ready: recording"
        );
        let status = format!("recording on {}", interfaces.join(", "));
        self.notifier.ready(&status);
        Ok(())
    }

    /// Writes the tracker's output to the sinks.
    fn write(&mut self) -> Result<(), DaemonError> {
        Ok(self.sinks.write(&mut self.out)?)
    }

    /// The ring buffer: reads everything in it.
    fn on_ring(&mut self) -> Result<(), DaemonError> {
        self.drain_ring();
        self.write()
    }

    /// A message of the ctnetlink reader.
    fn on_netlink(&mut self, msg: NlMsg) -> Result<(), DaemonError> {
        // Starts before ends: everything in the ring was submitted before these died.
        self.drain_ring();
        match msg {
            NlMsg::Destroys(list, received) => self.end_all(&list, received),
            NlMsg::MayHaveLost { enobufs, unreadable } => {
                tracing::warn!(
                    enobufs,
                    unreadable,
                    "ctnetlink reported a possible event loss: resyncing with a dump"
                );
                self.resync_wanted = true;
            }
            NlMsg::Stats(s) => self.nl_stats = s,
            NlMsg::Failed(e) => return Err(e.into()),
        }
        self.write()
    }

    fn end_all(&mut self, destroyed: &[CtEntry], received: Timestamp) {
        for e in destroyed {
            if let Some(t) = e.translation(received, true) {
                self.tracker.end(t, &mut self.out);
            }
        }
    }

    /// SIGHUP: takes the settings that can change live, or none of them.
    fn on_hangup(&mut self, reload: Option<&mut Reload>) {
        let Some(r) = reload else {
            tracing::warn!("SIGHUP: nothing to reload");
            return;
        };
        self.notifier.reloading();
        match self.reload(r) {
            Ok(changed) if changed.is_empty() => {
                tracing::info!("SIGHUP: the settings are unchanged")
            }
            Ok(changed) => tracing::info!(changed = %changed.join(", "), "SIGHUP: reloaded"),
            Err(e) => tracing::error!("SIGHUP: {e:#}; natrec goes on with the settings it had"),
        }
        self.notifier.reloaded();
    }

    /// Reads the settings anew and applies them if only live keys change; returns those keys.
    fn reload(&mut self, r: &mut Reload) -> anyhow::Result<Vec<String>> {
        let new = (r.load)()?;
        let changed = config::check_reload(&r.current, &new)?;
        // First what can still fail: then nothing is applied.
        if changed.iter().any(|k| k == "log.filter") {
            (r.set_log_filter)(&new.log.filter)?;
        }
        let cfg = new.record.to_record_config(&new.store)?;
        self.stats_interval = cfg.stats_interval;
        self.sinks.reload(cfg.store.as_ref());
        r.current = new;
        Ok(changed)
    }

    /// A dump made while recording: the resync it carries is applied after the grace.
    fn on_dump(&mut self, res: DumpResult) {
        self.dump_in_flight = false;
        self.summary.dumps += 1;
        match res.entries {
            Ok(entries) => {
                self.summary.resyncs += 1;
                let live = entries
                    .iter()
                    .filter_map(|e| e.translation(res.started, false))
                    .map(|t| t.key())
                    .collect();
                self.pending_resync = Some(PendingResync {
                    live,
                    started: res.started,
                    done: res.done,
                    at: Instant::now() + RESYNC_GRACE,
                });
            }
            Err(e) => {
                if let Some(held_back) = self.dump_log.admit() {
                    tracing::warn!(held_back, "conntrack dump failed: {e}");
                }
            }
        }
    }

    /// The tick: expiry, a due resync, the sinks' flush, the next dump, the counters.
    fn on_tick(&mut self) -> Result<(), DaemonError> {
        self.notifier.tick();
        self.clock.refresh();
        self.capture.flush_logs();
        // An event submitted between the last read and clearing readiness raises no new edge:
        // the tick bounds how long it can wait.
        self.drain_ring();
        let now = Timestamp::now();
        self.tracker.expire(Some(now), &mut self.out);
        if self.pending_resync.as_ref().is_some_and(|p| Instant::now() >= p.at)
            && let Some(p) = self.pending_resync.take()
        {
            self.drain_ring();
            let before = self.tracker.stats().approx_ends;
            self.tracker.resync(&p.live, p.started, p.done, &mut self.out);
            tracing::debug!(closed = self.tracker.stats().approx_ends - before, "resync done");
        }
        self.write()?;
        self.sinks.tick(now)?;
        self.maybe_dump();
        if self.last_check.elapsed() >= Duration::from_secs(1) {
            self.last_check = Instant::now();
            let kernel = self.check_counters()?;
            if let Some(m) = &self.metrics {
                m.publish(self.summary(kernel));
            }
        }
        Ok(())
    }

    /// Starts a dump on the blocking pool when one is due (a reap, or a wanted resync) and none
    /// is in flight or waiting to be applied.
    fn maybe_dump(&mut self) {
        let reap_due = self.reap_interval.is_some_and(|i| self.last_reap.elapsed() >= i);
        if self.dump_in_flight || self.pending_resync.is_some() || !(self.resync_wanted || reap_due)
        {
            return;
        }
        self.resync_wanted = false;
        self.last_reap = Instant::now();
        self.dump_in_flight = true;
        let tx = self.dump_tx.clone();
        tokio::task::spawn_blocking(move || {
            let started = Timestamp::now();
            let entries = conntrack::dump();
            let _ = tx.send(DumpResult { started, done: Timestamp::now(), entries });
        });
    }

    /// Warns about kernel-side losses as they grow, and logs the counters every
    /// `stats_interval`; returns the kernel's counters it read.
    fn check_counters(&mut self) -> Result<KernelCounters, DaemonError> {
        let k = self.capture.counters()?;
        if k.ringbuf_full > self.checked_full && self.ends_in_ring {
            self.resync_wanted = true;
        }
        self.checked_full = k.ringbuf_full;
        // While the overload lasts, a line a minute with what was lost since the last one.
        if k.ringbuf_full > self.last_full && self.full_log.admit().is_some() {
            let lost = k.ringbuf_full - self.last_full;
            if self.ends_in_ring {
                tracing::warn!(
                    lost,
                    total = k.ringbuf_full,
                    "ring buffer full: events lost in the kernel (raise --ringbuf-size); a lost start is reported again at the entry's next packet, lost ends are found by the resync dump that follows"
                );
            } else {
                tracing::warn!(
                    lost,
                    total = k.ringbuf_full,
                    "ring buffer full: events lost in the kernel (raise --ringbuf-size); those entries are reported again at their next packet or their end"
                );
            }
            self.last_full = k.ringbuf_full;
        }
        if k.seen_full > self.last_seen_full && self.seen_full_log.admit().is_some() {
            tracing::warn!(
                entries = k.seen_full - self.last_seen_full,
                total = k.seen_full,
                "the kernel's map of reported entries is full (raise --seen-entries to the gateway's live NATed entries): nothing is lost, but those entries may be reported again by their next packets and their ends are paired by tuple"
            );
            self.last_seen_full = k.seen_full;
        }
        if self.last_stats.elapsed() >= self.stats_interval {
            let t = self.tracker.stats();
            tracing::info!(
                events = k.events,
                ringbuf_full = k.ringbuf_full,
                starts = t.starts,
                ends = t.ends,
                open = self.tracker.open_count(),
                destroys = self.nl_stats.destroys,
                enobufs = self.nl_stats.enobufs,
                "counters"
            );
            for p in self.capture.program_costs().unwrap_or_default() {
                tracing::info!(
                    program = p.program,
                    runs = p.runs,
                    run_time_ns = p.run_time_ns,
                    ns_per_run = p.ns_per_run,
                    "program cost"
                );
            }
            let status = format!(
                "recording: {} translations started, {} open, {} ring buffer overflows",
                t.starts,
                self.tracker.open_count(),
                k.ringbuf_full
            );
            self.notifier.status(&status);
            self.last_stats = Instant::now();
        }
        Ok(k)
    }

    /// Takes every event in the ring buffer to the tracker (not yet to the sinks).
    fn drain_ring(&mut self) {
        // Reports go to the tracker LOOKAHEAD at a time, each announced as it is read
        // (`Tracker::prefetch`): the tracker's lookups then find their memory in cache.
        let mut batch: Vec<(bool, Translation)> = Vec::with_capacity(LOOKAHEAD);
        let mut read = 0u64;
        loop {
            let ev = self.capture.next_event();
            read += u64::from(ev.is_some());
            let report = ev.as_ref().and_then(|ev| match Hook::from_u8(ev.hook) {
                Some(Hook::CtFree) => {
                    crate::capture::end_translation(ev, &self.clock, self.jiffy_ns)
                        .map(|t| (true, t))
                }
                Some(Hook::WanEgress | Hook::LanEgress) => {
                    crate::capture::start_translation(ev, &self.clock).map(|t| (false, t))
                }
                None => None,
            });
            match report {
                Some(r) => {
                    self.tracker.prefetch(&r.1);
                    batch.push(r);
                }
                None if ev.is_some() => self.summary.malformed_events += 1,
                None => {}
            }
            if batch.len() == LOOKAHEAD || ev.is_none() {
                for (end, t) in batch.drain(..) {
                    if end {
                        self.tracker.end(t, &mut self.out);
                    } else {
                        self.tracker.start(t, &mut self.out);
                    }
                }
            }
            if ev.is_none() {
                let held = read * RING_RECORD;
                let max = &mut self.summary.ringbuf_read_max_bytes;
                *max = (*max).max(held);
                return;
            }
        }
    }

    /// The counters now, with the kernel's just read: what `--stats-json` prints at exit, and
    /// the metrics endpoint shows.
    fn summary(&self, kernel: KernelCounters) -> RecordSummary {
        RecordSummary {
            kernel,
            tracker: self.tracker.stats(),
            netlink_destroys: self.nl_stats.destroys,
            netlink_enobufs: self.nl_stats.enobufs,
            netlink_unreadable: self.nl_stats.unreadable,
            open: self.tracker.open_count(),
            store: self.store_stats.as_ref().map(LiveStats::get),
            programs: self.capture.program_costs(),
            ..self.summary.clone()
        }
    }

    /// Closes superseded translations, writes what is left, closes the sinks.
    fn finish(mut self) -> Result<RecordSummary, DaemonError> {
        // Superseded entries whose end event never came are closed approximately; translations
        // still open stay open in the store (the next start reconciles them with the kernel).
        self.tracker.expire(None, &mut self.out);
        self.write()?;
        self.sinks.tick(Timestamp::now())?;
        let mut summary = self.summary(self.capture.counters()?);
        drop(self.capture);
        for closed in self.sinks.close()? {
            if let Closed::Store(stats) = closed {
                summary.store = Some(stats);
            }
        }
        Ok(summary)
    }
}

/// Readiness of the watched ring buffer; never, when it is not watched.
async fn readable(
    fd: Option<&AsyncFd<OwnedFd>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, OwnedFd>> {
    match fd {
        Some(fd) => fd.readable().await,
        None => std::future::pending().await,
    }
}

/// How many ring reports are read ahead of the tracker: enough to overlap the waits for the
/// memory of their lookups, few enough for the CPU to have that many loads in flight.
const LOOKAHEAD: usize = 16;

/// The ctnetlink reader: reads and forwards, nothing else, until `stop`.
fn spawn_reader(
    mut sock: EventSocket,
    tx: mpsc::UnboundedSender<NlMsg>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, DaemonError> {
    std::thread::Builder::new()
        .name("natrec-ctnetlink".into())
        .spawn(move || {
            let mut last_stats = Instant::now();
            let rest = netlink_rest(sock.rcvbuf_bytes());
            while !stop.load(Ordering::Relaxed) {
                let mut list = Vec::new();
                match sock.recv_batch(&mut list) {
                    Ok(st) => {
                        let got = !list.is_empty();
                        if got && tx.send(NlMsg::Destroys(list, Timestamp::now())).is_err() {
                            return;
                        }
                        if st.needs_resync() {
                            let _ = tx.send(NlMsg::MayHaveLost {
                                enobufs: st.enobufs,
                                unreadable: st.unreadable,
                            });
                        }
                        // A batch that stopped at its limit leaves more queued: no rest then.
                        if !rest.is_zero() && got && st.drained {
                            std::thread::sleep(rest);
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(NlMsg::Failed(e));
                        return;
                    }
                }
                if last_stats.elapsed() >= Duration::from_millis(500) {
                    let _ = tx.send(NlMsg::Stats(sock.stats()));
                    last_stats = Instant::now();
                }
            }
            let _ = tx.send(NlMsg::Stats(sock.stats()));
        })
        .map_err(|e| DaemonError::Io("starting the ctnetlink reader thread", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default ring (16 MiB) and netlink buffer (64 MiB asked, 128 MiB granted).
    const RING: u32 = recorder_common::DEFAULT_RINGBUF_BYTES;
    const RCVBUF: usize = 128 << 20;

    #[test]
    fn rests_fill_at_most_half_a_buffer_at_the_sizing_rate_and_small_buffers_get_none() {
        let record = (size_of::<NatEvent>() as u128 + 8).next_multiple_of(8);
        let during = |rest: Duration| u128::from(SIZING_RATE) * rest.as_micros() / 1_000_000;
        for shift in 12..32 {
            let bytes = 1u32 << shift;
            for per in [1, 2] {
                let rest = ring_rest(bytes, per);
                assert!(
                    during(rest) * u128::from(per) * record * 2 <= u128::from(bytes),
                    "{bytes} byte ring, {per} records per translation, {rest:?}"
                );
                assert!(rest <= TICK);
            }
            let rest = netlink_rest(bytes as usize);
            assert!(during(rest) * 2048 * 2 <= u128::from(bytes), "{bytes} byte buffer, {rest:?}");
            assert!(rest <= TICK / 2);
        }
        assert_eq!(ring_rest(64 << 10, 1), Duration::ZERO, "a 64 KiB ring is watched");
        assert_eq!(netlink_rest(1 << 20), Duration::ZERO, "a 1 MiB socket buffer is read at once");
        // The defaults rest long enough to matter: tens of milliseconds.
        assert!(ring_rest(RING, 2) >= Duration::from_millis(30), "{:?}", ring_rest(RING, 2));
        assert!(netlink_rest(RCVBUF) >= Duration::from_millis(20), "{:?}", netlink_rest(RCVBUF));
    }
}
