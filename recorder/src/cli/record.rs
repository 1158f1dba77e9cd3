//! `natrec record`: capture NAT translations and write them out.
use std::process::ExitCode;

use anyhow::Context as _;
use std::path::PathBuf;

use recorder::config::{self, ConfigFile, LogSettings, RecordSettings, StoreSettings};
use recorder::daemon::{self, Reload, SetLogFilter};

#[derive(Clone, Debug, clap::Args)]
#[command(after_help = "Run it in the gateway's network namespace, as root or with CAP_BPF, \
CAP_NET_ADMIN and CAP_PERFMON. It attaches a tc egress \
classifier to every --wan (and --lan) interface, takes ends from its end probe (a kprobe \
on nf_conntrack_free where the kernel has kprobes, else a raw tracepoint on kmem_cache_free, Linux 6.1+) or else from conntrack DESTROY events in reliable mode, seeds the \
translations that already exist, and writes one start and one end event per translation. It logs `ready: recording` once everything is attached and seeded. SIGINT or SIGTERM \
stops it cleanly (everything attached is detached).")]
pub struct Args {
    #[command(flatten)]
    record: RecordSettings,
    #[command(flatten)]
    store: StoreSettings,
}

/// The settings in effect: the config file's, with what the flags and environment gave on top.
pub fn settings(
    args: &Args,
    file: &ConfigFile,
    matches: &clap::ArgMatches,
) -> anyhow::Result<(RecordSettings, StoreSettings)> {
    let record = config::overlay(&file.record, &args.record, matches)?;
    let store = config::overlay(&file.store, &args.store, matches)?.or_state_directory();
    Ok((record, store))
}

/// What a reload needs beyond `record`'s own arguments.
pub struct Reloadable {
    /// The config file as given (`--config`, `NATREC_CONFIG`), if one was.
    pub config: Option<PathBuf>,
    /// The `[log]` flags, and the matches they came from.
    pub log_flags: LogSettings,
    pub root: clap::ArgMatches,
    /// The `[log]` settings in effect.
    pub log: LogSettings,
    pub set_log_filter: SetLogFilter,
}

pub fn run(
    args: Args,
    file: &ConfigFile,
    matches: &clap::ArgMatches,
    reloadable: Reloadable,
) -> anyhow::Result<ExitCode> {
    let (record, store) = settings(&args, file, matches)?;
    let cfg = record.to_record_config(&store)?;
    let Reloadable { config, log_flags, root, log, set_log_filter } = reloadable;
    let current = ConfigFile { log, record: record.clone(), store };
    let matches = matches.clone();
    let load = move || -> anyhow::Result<ConfigFile> {
        let (file, _) = ConfigFile::load(config.as_deref())?;
        let log = config::overlay(&file.log, &log_flags, &root)?;
        let (record, store) = settings(&args, &file, &matches)?;
        Ok(ConfigFile { log, record, store })
    };
    let reload = Reload { current, load: Box::new(load), set_log_filter };
    let summary = daemon::run(cfg, Some(reload))?;
    let k = &summary.kernel;
    let t = &summary.tracker;
    tracing::info!(
        ends_from = summary.ends_from,
        starts = t.starts,
        ends = t.ends,
        seeded = t.seeded,
        end_only = t.end_only,
        approx_ends = t.approx_ends,
        open = summary.open,
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
    if record.stats_json {
        eprintln!("{}", serde_json::to_string(&summary).context("serializing the summary")?);
    }
    Ok(ExitCode::SUCCESS)
}
