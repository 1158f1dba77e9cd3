//! `natrec record`: capture NAT translations and write them out.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use recorder::capture::{CaptureConfig, EndsFrom};
use recorder::daemon::{self, RecordConfig};

use recorder::units::{parse_duration, parse_size};

use super::store_args::StoreArgs;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Run it in the gateway's network namespace, as root. It attaches a tc egress \
classifier to every --wan (and --lan) interface, takes ends from its end probe (a BTF tracepoint \
on kmem_cache_free, Linux 6.1+) or else from conntrack DESTROY events in reliable mode, seeds the \
translations that already exist, and writes one start and one end event per translation. It logs `ready: recording` once everything is attached and seeded. SIGINT or SIGTERM \
stops it cleanly (everything attached is detached)."
)]
pub struct Args {
    /// A WAN (outside) interface: SNAT is captured as packets leave it. Repeat for several.
    #[arg(long = "wan", value_name = "IFACE", required = true)]
    wan: Vec<String>,
    /// An inside interface: port forwards (DNAT) are captured at their first packet as they leave
    /// it (without it, at the first reply through the WAN, or at their end). Repeatable.
    #[arg(long = "lan", value_name = "IFACE")]
    lan: Vec<String>,
    /// Also write every event as JSON Lines to FILE (`-` for standard output).
    #[arg(long, value_name = "FILE|-")]
    jsonl: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
    /// Dump conntrack this often: expired entries are reaped at once (their ends otherwise come
    /// up to a minute late, though timed at their expiry) and translations whose end event never
    /// came are closed (flagged end_approx); `0s`: only after a possible event loss.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    reap_interval: Duration,
    /// Size of the BPF ring buffer (a power of two, at least one page): e.g. 16MiB.
    #[arg(long, default_value = "16MiB", value_name = "BYTES", value_parser = parse_size)]
    ringbuf_size: u64,
    /// Capacity of the kernel's map of entries already reported. With the end probe it holds
    /// every reported entry until the kernel frees it: give at least the gateway's live NATed
    /// entries, or some are reported again by later packets and their ends paired by tuple
    /// (counted as seen_full; nothing is lost). Without the end probe it is an LRU that forgets
    /// the least recently used.
    #[arg(long, default_value_t = recorder_common::DEFAULT_SEEN_ENTRIES, value_name = "N")]
    seen_entries: u32,
    /// Where ends come from: `auto` takes the end probe where the kernel runs it and ctnetlink
    /// DESTROY events otherwise; `ebpf` fails if the end probe cannot run.
    #[arg(long, value_enum, default_value_t = EndsFrom::Auto, value_name = "SOURCE")]
    ends: EndsFrom,
    /// Receive buffer for conntrack events (with ends from ctnetlink).
    #[arg(long, default_value = "64MiB", value_name = "BYTES", value_parser = parse_size)]
    netlink_rcvbuf: u64,
    /// How often counters are logged.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse_duration)]
    stats_interval: Duration,
    /// Leave net.netfilter.nf_conntrack_timestamp and nf_conntrack_events as they are (natrec
    /// sets the first to 1 by default, for exact start and stop times, and with ends from
    /// ctnetlink the second too, for an end event for every entry).
    #[arg(long)]
    keep_sysctls: bool,
    /// At exit, print the run's counters as one JSON object on standard error.
    #[arg(long)]
    stats_json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let ringbuf_bytes = u32::try_from(args.ringbuf_size)
        .map_err(|_| anyhow::anyhow!("--ringbuf-size must be below 4GiB"))?;
    let cfg = RecordConfig {
        capture: CaptureConfig {
            wan: args.wan,
            lan: args.lan,
            ringbuf_bytes,
            seen_entries: args.seen_entries,
            ends: args.ends,
        },
        jsonl: args.jsonl,
        store: args.store.to_options().context("store options")?,
        reap_interval: (!args.reap_interval.is_zero()).then_some(args.reap_interval),
        netlink_rcvbuf: usize::try_from(args.netlink_rcvbuf).unwrap_or(usize::MAX),
        stats_interval: args.stats_interval,
        set_sysctls: !args.keep_sysctls,
    };
    let summary = daemon::run(cfg)?;
    let k = &summary.kernel;
    let t = &summary.tracker;
    tracing::info!(
        ends_from = summary.ends_from,
        starts = t.starts,
        ends = t.ends,
        seeded = t.seeded,
        end_only = t.end_only,
        approx_ends = t.approx_ends,
        open = summary.open_at_exit,
        kernel_events = k.events,
        ringbuf_full = k.ringbuf_full,
        read_errors = k.read_errors,
        end_events = k.end_events,
        seen_full = k.seen_full,
        destroys = summary.netlink_destroys,
        enobufs = summary.netlink_enobufs,
        "stopped"
    );
    if k.ringbuf_full > 0 || k.read_errors > 0 {
        tracing::warn!(
            ringbuf_full = k.ringbuf_full,
            read_errors = k.read_errors,
            "ring buffer full or kernel reads failed: the kernel side could not report some entries at their first packet (raise --ringbuf-size); they were recorded from a later packet or from their end event (flag end_only)"
        );
    }
    if args.stats_json {
        eprintln!("{}", serde_json::to_string(&summary).context("serializing the summary")?);
    }
    Ok(ExitCode::SUCCESS)
}
