//! Settings of `natrec record`, from built-in defaults, the config file
//! (`/etc/natrec/natrec.toml`), `NATREC_*` environment variables and command-line flags, in that
//! order of precedence.
//!
//! Each section of the file is one struct that is also the command line's flags: its fields are
//! both clap arguments and serde keys, with the same names (the clap id of a field is its name),
//! so a key in the file and its flag cannot drift apart. The built-in defaults are clap's
//! defaults; [`overlay`] puts on top of the file's values exactly those that came from a flag or
//! from the environment.
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::capture::{CaptureConfig, EndsFrom};
use crate::daemon::RecordConfig;
use crate::store::{Resolution, WriterOptions};
use crate::units::{ByteSize, HumanDuration};

/// Where the config file is read from when neither `--config` nor `NATREC_CONFIG` names one
/// (and only if it exists).
pub const DEFAULT_PATH: &str = "/etc/natrec/natrec.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}")]
    Read { path: PathBuf, source: std::io::Error },
    /// On one line (a log line, under systemd one journal entry), unlike toml's own message.
    #[error("{path}: line {line}, column {column}: {message}")]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// The whole file: a section per part of natrec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    pub log: LogSettings,
    pub record: RecordSettings,
    pub store: StoreSettings,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// Log filter (tracing's EnvFilter syntax), e.g. `info`, `natrec=debug`.
    #[arg(long = "log", global = true, env = "NATREC_LOG", default_value = "info")]
    pub filter: String,
}

/// `[record]`: what natrec record captures and how.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordSettings {
    /// A WAN (outside) interface: SNAT is captured as packets leave it. Repeat for several.
    #[arg(long, value_name = "IFACE", env = "NATREC_WAN", value_delimiter = ',')]
    pub wan: Vec<String>,
    /// An inside interface: port forwards (DNAT) are captured at their first packet as they leave
    /// it (without it, at the first reply through the WAN, or at their end). With --lan the WAN
    /// classifier leaves every reply alone (no lookup per port-forward reply), so name every
    /// interface forwarded ports lead to. Repeatable.
    #[arg(long, value_name = "IFACE", env = "NATREC_LAN", value_delimiter = ',')]
    pub lan: Vec<String>,
    /// Also write every event as JSON Lines to FILE (`-` for standard output).
    #[arg(long, value_name = "FILE|-", env = "NATREC_JSONL")]
    pub jsonl: Option<PathBuf>,
    /// Dump conntrack this often: expired entries are reaped at once (their ends otherwise come
    /// up to a minute late, though timed at their expiry) and translations whose end event never
    /// came are closed (flagged end_approx); `0s`: only after a possible event loss.
    #[arg(long, value_name = "DURATION", env = "NATREC_REAP_INTERVAL", default_value = "30s")]
    pub reap_interval: HumanDuration,
    /// Size of the BPF ring buffer (a power of two, at least one page, below 4GiB): e.g. 16MiB.
    /// Unset, it is sized from the gateway's net.netfilter.nf_conntrack_max: room for one event
    /// per entry the table can hold, from 1MiB to 16MiB (16MiB at 262144 entries).
    #[arg(long, value_name = "BYTES", env = "NATREC_RINGBUF_SIZE")]
    pub ringbuf_size: Option<ByteSize>,
    /// Capacity of the kernel's map of entries already reported. With the end probe it holds
    /// every reported entry until the kernel frees it: give at least the gateway's live NATed
    /// entries, or some are reported again by later packets and their ends paired by tuple
    /// (counted as seen_full; nothing is lost). Without the end probe it is an LRU that forgets
    /// the least recently used. Unset, it is the gateway's nf_conntrack_max (from 4096 to
    /// 4194304).
    #[arg(long, value_name = "N", env = "NATREC_SEEN_ENTRIES")]
    pub seen_entries: Option<u32>,
    /// Where ends come from: `auto` takes the end probe where the kernel runs it (a kprobe on
    /// nf_conntrack_free, once per entry; else the kmem_cache_free tracepoint, once per slab free
    /// of the machine, about 75 ns each, one per forwarded packet among them) and ctnetlink
    /// DESTROY events otherwise; `ebpf` fails if no end probe can run. Without kprobes, a gateway
    /// of mostly established traffic forwards about 3% more with `ctnetlink`, which costs more
    /// per new translation (BENCHMARKS.md, part 5).
    #[arg(long, value_enum, value_name = "SOURCE", env = "NATREC_ENDS", default_value_t = EndsFrom::Auto)]
    pub ends: EndsFrom,
    /// Receive buffer for conntrack events (with ends from ctnetlink).
    #[arg(long, value_name = "BYTES", env = "NATREC_NETLINK_RCVBUF", default_value = "64MiB")]
    pub netlink_rcvbuf: ByteSize,
    /// How often counters are logged.
    #[arg(long, value_name = "DURATION", env = "NATREC_STATS_INTERVAL", default_value = "60s")]
    pub stats_interval: HumanDuration,
    /// Leave net.netfilter.nf_conntrack_timestamp and nf_conntrack_events as they are (natrec
    /// sets the first to 1 by default, for exact start and stop times, and with ends from
    /// ctnetlink the second too, for an end event for every entry).
    #[arg(long, env = "NATREC_KEEP_SYSCTLS")]
    pub keep_sysctls: bool,
    /// Turn the kernel's BPF run statistics on while natrec runs, and report each of its
    /// programs' runs, run time and ns per run (in the counters logged, --stats-json and the
    /// metrics). Timing adds its own cost to every run (two clock reads), so it is off by
    /// default; it needs CAP_SYS_ADMIN, which natrec.service does not grant: there, set
    /// kernel.bpf_stats_enabled=1 for as long as you measure, and natrec reports them unasked.
    #[arg(long, env = "NATREC_PROGRAM_STATS")]
    pub program_stats: bool,
    /// At exit, print the run's counters as one JSON object on standard error.
    #[arg(long, env = "NATREC_STATS_JSON")]
    pub stats_json: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9847 (off by default;
    /// no port is registered for natrec).
    #[arg(long, value_name = "ADDR", env = "NATREC_METRICS")]
    pub metrics: Option<std::net::SocketAddr>,
}

/// `[store]`: where and how segments are written.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// Write segments into this directory (created if missing). Unset, natrec takes the first
    /// directory of `$STATE_DIRECTORY`: the unit's `StateDirectory=` (/var/lib/natrec).
    #[arg(long, value_name = "DIR", env = "NATREC_DIR")]
    pub dir: Option<PathBuf>,
    /// Seal the active segment when it is this old (e.g. 1h, 30m).
    #[arg(long, value_name = "AGE", env = "NATREC_ROTATE_AGE", default_value = "1h")]
    pub rotate_age: HumanDuration,
    /// Seal the active segment when it reaches this size (e.g. 256MiB, 1G).
    #[arg(long, value_name = "SIZE", env = "NATREC_ROTATE_SIZE", default_value = "256MiB")]
    pub rotate_size: ByteSize,
    /// Flush and fsync buffered translations at least this often (e.g. 1s, 500ms).
    #[arg(long, value_name = "INTERVAL", env = "NATREC_FLUSH_INTERVAL", default_value = "1s")]
    pub flush_interval: HumanDuration,
    /// Delete sealed segments whose newest record is older than this many days.
    #[arg(long, value_name = "DAYS", env = "NATREC_RETAIN_DAYS")]
    pub retain_days: Option<u32>,
    /// Delete the oldest sealed segments while they take more than this (e.g. 500G).
    #[arg(long, value_name = "SIZE", env = "NATREC_RETAIN_SIZE")]
    pub retain_size: Option<ByteSize>,
    /// Unit of stored times: ms (default, smallest), us or ns.
    #[arg(long, value_name = "UNIT", env = "NATREC_TIME_RESOLUTION", default_value = "ms", value_parser = clap::value_parser!(Resolution))]
    pub time_resolution: Resolution,
    /// zstd level of sealed blocks (1-22): higher levels give slightly smaller segments for
    /// several times the CPU at seal time (on the writer's seal thread); `cargo bench -p recorder
    /// --bench store` measures both.
    #[arg(long, value_name = "LEVEL", env = "NATREC_SEAL_LEVEL", default_value_t = WriterOptions::default().seal_level, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub seal_level: i32,
}

/// clap's defaults of a section's flags, environment ignored: the built-in defaults.
fn clap_defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let cmd = T::augment_args(clap::Command::new("defaults"))
        .no_binary_name(true)
        .mut_args(|a| a.env(None::<&str>));
    let matches = cmd.try_get_matches_from(std::iter::empty::<&str>());
    // Every default is a literal of this file that the tests parse; no input reaches here.
    T::from_arg_matches(&matches.expect("built-in defaults parse")).expect("defaults convert")
}

impl Default for LogSettings {
    fn default() -> Self {
        clap_defaults()
    }
}
impl Default for RecordSettings {
    fn default() -> Self {
        clap_defaults()
    }
}
impl Default for StoreSettings {
    fn default() -> Self {
        clap_defaults()
    }
}

impl ConfigFile {
    /// Parses a config file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start).min(text.len());
            let before = &text.as_bytes()[..at];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let column = text[line_start..at].chars().count() + 1;
            let message = e.message().trim_end().replace('\n', "; ");
            ConfigError::Parse { path: path.to_owned(), line, column, message }
        })
    }

    /// Reads `path`, or else [`DEFAULT_PATH`] if it exists, or else the built-in defaults.
    /// Returns the file that was read, if any.
    pub fn load(path: Option<&Path>) -> Result<(Self, Option<PathBuf>), ConfigError> {
        let path = match path {
            Some(p) => p.to_owned(),
            None if Path::new(DEFAULT_PATH).exists() => PathBuf::from(DEFAULT_PATH),
            None => return Ok((Self::default(), None)),
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        Ok((Self::parse(&text, &path)?, Some(path)))
    }

    /// The effective settings as a config file (Option keys that are unset are left out).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("every setting serializes")
    }
}

/// `file` with every value that `matches` took from a flag or the environment put on top.
/// `from_flags` is `matches` converted (its other values are clap's defaults, not used).
pub fn overlay<T: Serialize + DeserializeOwned>(
    file: &T,
    from_flags: &T,
    matches: &clap::ArgMatches,
) -> Result<T, ConfigError> {
    let table = |v: &T| toml::Table::try_from(v).expect("settings serialize to a table");
    let (mut merged, flags) = (table(file), table(from_flags));
    for id in matches.ids() {
        let key = id.as_str();
        let given = matches!(
            matches.value_source(key),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if let (true, Some(value)) = (given, flags.get(key)) {
            merged.insert(key.to_owned(), value.clone());
        }
    }
    merged.try_into().map_err(|e: toml::de::Error| invalid(e.message().to_owned()))
}

impl StoreSettings {
    /// The writer options, or `None` when no directory is set.
    pub fn to_options(&self) -> Result<Option<WriterOptions>, ConfigError> {
        let Some(dir) = self.dir.clone() else {
            return Ok(None);
        };
        if self.rotate_age.0.is_zero() {
            return Err(invalid("rotate_age (--rotate-age) must be longer than zero"));
        }
        if self.flush_interval.0.is_zero() {
            return Err(invalid("flush_interval (--flush-interval) must be longer than zero"));
        }
        if self.rotate_size.0 < 1 << 16 {
            return Err(invalid("rotate_size (--rotate-size) must be at least 64KiB"));
        }
        if self.retain_days == Some(0) {
            return Err(invalid("retain_days (--retain-days) must be at least 1"));
        }
        if !(1..=22).contains(&self.seal_level) {
            return Err(invalid("seal_level (--seal-level) must be from 1 to 22"));
        }
        Ok(Some(WriterOptions {
            dir,
            rotate_age: self.rotate_age.0,
            rotate_size: self.rotate_size.0,
            flush_interval: self.flush_interval.0,
            retain_days: self.retain_days,
            retain_size: self.retain_size.map(|s| s.0),
            resolution: self.time_resolution,
            seal_level: self.seal_level,
            ..WriterOptions::default()
        }))
    }
}

/// The keys a reload (SIGHUP) changes while natrec runs, as `section.key`; a change to any other
/// needs a restart.
pub const LIVE_KEYS: [&str; 7] = [
    "log.filter",
    "record.stats_interval",
    "store.rotate_age",
    "store.rotate_size",
    "store.flush_interval",
    "store.retain_days",
    "store.retain_size",
];

/// The keys (`section.key`) whose values differ between `old` and `new`, in file order.
pub fn changed_keys(old: &ConfigFile, new: &ConfigFile) -> Vec<String> {
    let table = |c: &ConfigFile| toml::Table::try_from(c).expect("settings serialize to a table");
    let (old, new) = (table(old), table(new));
    let mut changed = Vec::new();
    for (section, new_keys) in &new {
        let empty = toml::Table::new();
        let new_keys = new_keys.as_table().unwrap_or(&empty);
        let old_keys = old.get(section).and_then(toml::Value::as_table).unwrap_or(&empty);
        // Unset Option keys are absent from the table: compare over both sides' keys.
        let mut keys: Vec<&String> = new_keys.keys().chain(old_keys.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            if new_keys.get(key) != old_keys.get(key) {
                changed.push(format!("{section}.{key}"));
            }
        }
    }
    changed
}

/// Checks that going from `old` to `new` changes only [`LIVE_KEYS`] and that `new` is valid;
/// returns the keys that change.
pub fn check_reload(old: &ConfigFile, new: &ConfigFile) -> Result<Vec<String>, ConfigError> {
    let changed = changed_keys(old, new);
    let fixed: Vec<&str> =
        changed.iter().map(String::as_str).filter(|k| !LIVE_KEYS.contains(k)).collect();
    if !fixed.is_empty() {
        return Err(invalid(format!(
            "{} cannot change while natrec runs (restart it to change them; what can change: {})",
            fixed.join(", "),
            LIVE_KEYS.join(", ")
        )));
    }
    new.record.to_record_config(&new.store)?;
    Ok(changed)
}

impl StoreSettings {
    /// Without a `dir`, the first directory of `$STATE_DIRECTORY`, which systemd sets for a
    /// unit with `StateDirectory=` (a colon-separated list).
    pub fn or_state_directory(mut self) -> Self {
        if self.dir.is_none()
            && let Some(dirs) = std::env::var_os("STATE_DIRECTORY")
        {
            self.dir = std::env::split_paths(&dirs).next().filter(|d| !d.as_os_str().is_empty());
        }
        self
    }
}

impl RecordSettings {
    /// What the daemon runs with, checked.
    pub fn to_record_config(&self, store: &StoreSettings) -> Result<RecordConfig, ConfigError> {
        if self.wan.is_empty() {
            return Err(invalid(
                "no WAN interface: give --wan IFACE, or set `wan = [\"IFACE\"]` under [record] \
                 in the config file",
            ));
        }
        let ring = self
            .ringbuf_size
            .map(|size| {
                u32::try_from(size.0)
                    .ok()
                    .filter(|&r| crate::capture::check_ring_size(r).is_ok())
                    .ok_or_else(|| {
                        invalid(format!(
                            "ringbuf_size (--ringbuf-size) must be a power of two from 4KiB to \
                             2GiB, not {size}"
                        ))
                    })
            })
            .transpose()?;
        if self.stats_interval.0.is_zero() {
            return Err(invalid("stats_interval (--stats-interval) must be longer than zero"));
        }
        if self.seen_entries == Some(0) {
            return Err(invalid("seen_entries (--seen-entries) must be at least 1"));
        }
        Ok(RecordConfig {
            capture: CaptureConfig {
                wan: self.wan.clone(),
                lan: self.lan.clone(),
                ringbuf_bytes: ring,
                seen_entries: self.seen_entries,
                ends: self.ends,
                program_stats: self.program_stats,
            },
            jsonl: self.jsonl.clone(),
            store: store.to_options()?,
            reap_interval: (!self.reap_interval.0.is_zero()).then_some(self.reap_interval.0),
            netlink_rcvbuf: usize::try_from(self.netlink_rcvbuf.0).unwrap_or(usize::MAX),
            stats_interval: self.stats_interval.0,
            set_sysctls: !self.keep_sysctls,
            metrics: self.metrics,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::{Args as _, CommandFactory as _, FromArgMatches as _, Parser};

    use super::*;

    const EXAMPLE: &str = include_str!("../../dist/natrec.toml");

    #[derive(Parser, Debug)]
    struct Flags {
        #[command(flatten)]
        record: RecordSettings,
        #[command(flatten)]
        store: StoreSettings,
    }

    /// The error with its sources, as natrec prints it.
    fn chain(e: &ConfigError) -> String {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        msg
    }

    fn merged(file: &str, args: &[&str]) -> Result<(RecordSettings, StoreSettings), ConfigError> {
        let file = ConfigFile::parse(file, Path::new("test.toml"))?;
        let m = Flags::command().no_binary_name(true).try_get_matches_from(args).expect("flags");
        let flags = Flags::from_arg_matches(&m).expect("convert");
        Ok((overlay(&file.record, &flags.record, &m)?, overlay(&file.store, &flags.store, &m)?))
    }

    #[test]
    fn the_example_file_states_the_built_in_defaults_and_names_every_key() {
        let example = ConfigFile::parse(EXAMPLE, Path::new("dist/natrec.toml")).expect("parses");
        assert_eq!(example, ConfigFile::default());
        let ids = |cmd: clap::Command| -> Vec<String> {
            cmd.get_arguments().map(|a| a.get_id().to_string()).collect()
        };
        let sections = [
            ("log", ids(LogSettings::augment_args(clap::Command::new("x")))),
            ("record", ids(RecordSettings::augment_args(clap::Command::new("x")))),
            ("store", ids(StoreSettings::augment_args(clap::Command::new("x")))),
        ];
        for (section, keys) in sections {
            let start = EXAMPLE.find(&format!("[{section}]")).expect(section);
            let body = &EXAMPLE[start..];
            let body = &body[..body[1..].find("\n[").map_or(body.len(), |i| i + 1)];
            for key in keys {
                let stated = body.lines().any(|l| {
                    let l = l.trim_start_matches(['#', ' ']);
                    l.starts_with(&format!("{key} = "))
                });
                assert!(stated, "dist/natrec.toml does not state [{section}] {key}");
            }
        }
    }

    #[test]
    fn defaults_are_claps_and_convert() {
        let d = ConfigFile::default();
        assert_eq!(d.log.filter, "info");
        assert_eq!(d.record.reap_interval, HumanDuration(Duration::from_secs(30)));
        assert_eq!(d.record.ringbuf_size, None, "sized from nf_conntrack_max unless set");
        assert_eq!(d.store.seal_level, WriterOptions::default().seal_level);
        let cfg = RecordSettings { wan: vec!["wan0".into()], ..d.record }
            .to_record_config(&d.store)
            .expect("valid");
        assert!(cfg.store.is_none(), "no dir, no store");
        assert_eq!(cfg.capture.ringbuf_bytes, None, "sized at start-up");
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let file = "[record]\nwan = [\"eth0\"]\nreap_interval = \"10s\"\nstats_interval = 5\n\
                    [store]\ndir = \"/srv/natrec\"\nretain_days = 30\n";
        let (r, s) = merged(file, &["--reap-interval", "1m", "--retain-size", "2G"]).expect("ok");
        assert_eq!(r.wan, ["eth0"], "from the file");
        assert_eq!(r.reap_interval, HumanDuration(Duration::from_secs(60)), "the flag wins");
        assert_eq!(r.stats_interval, HumanDuration(Duration::from_secs(5)), "an integer: seconds");
        assert_eq!(r.netlink_rcvbuf, ByteSize(64 << 20), "a default");
        assert_eq!(s.dir.as_deref(), Some(Path::new("/srv/natrec")));
        assert_eq!((s.retain_days, s.retain_size), (Some(30), Some(ByteSize(2 << 30))));
        let (r, _) = merged(file, &["--wan", "ppp0", "--wan", "ppp1"]).expect("ok");
        assert_eq!(r.wan, ["ppp0", "ppp1"], "a list given by flags replaces the file's");
    }

    #[test]
    fn bad_files_name_the_key_and_where_it_is() {
        let err = merged("[record]\nwan = [\"eth0\"]\nreap_intervall = \"1s\"\n", &[])
            .expect_err("refused");
        let msg = chain(&err);
        assert!(msg.contains("test.toml") && msg.contains("line 3, column 1"), "{msg}");
        assert!(msg.contains("unknown field `reap_intervall`"), "{msg}");
        let err = merged("[recrod]\n", &[]).expect_err("refused");
        let err = chain(&err);
        assert!(err.contains("unknown field `recrod`") && err.contains("line 1"), "{err}");
        let err = merged("[store]\nrotate_size = \"big\"\n", &[]).expect_err("refused");
        let err = chain(&err);
        assert!(err.contains("line 2") && err.contains("invalid size"), "{err}");
        let err = merged("[record]\nends = \"kprobe\"\n", &[]).expect_err("refused");
        let err = chain(&err);
        assert!(err.contains("kprobe") && err.contains("ctnetlink"), "{err}");
    }

    #[test]
    fn a_reload_takes_live_keys_and_refuses_the_others_by_name() {
        let parse = |t: &str| ConfigFile::parse(t, Path::new("t.toml")).expect("parses");
        let old = parse("[record]\nwan = [\"eth0\"]\n[store]\ndir = \"/srv\"\n");
        assert_eq!(check_reload(&old, &old).expect("same"), Vec::<String>::new());
        let live = parse(
            "[log]\nfilter = \"debug\"\n[record]\nwan = [\"eth0\"]\nstats_interval = \"5s\"\n\
             [store]\ndir = \"/srv\"\nrotate_age = \"10m\"\nretain_days = 7\n",
        );
        assert_eq!(
            check_reload(&old, &live).expect("live keys"),
            ["log.filter", "record.stats_interval", "store.retain_days", "store.rotate_age"]
        );
        let fixed = parse(
            "[record]\nwan = [\"eth1\"]\nringbuf_size = \"32MiB\"\n[store]\nrotate_age = \"10m\"\n",
        );
        let err = check_reload(&old, &fixed).expect_err("refused").to_string();
        assert!(
            err.starts_with(
                "record.ringbuf_size, record.wan, store.dir cannot change while natrec runs"
            ),
            "{err}"
        );
        let bad = parse("[record]\nwan = [\"eth0\"]\n[store]\ndir = \"/srv\"\nrotate_size = 10\n");
        let err = check_reload(&old, &bad).expect_err("invalid").to_string();
        assert!(err.contains("rotate_size"), "{err}");
    }

    #[test]
    fn invalid_values_are_refused_by_name() {
        let d = ConfigFile::default();
        let err = d.record.to_record_config(&d.store).expect_err("refused").to_string();
        assert!(err.contains("--wan"), "{err}");
        let rec = RecordSettings {
            wan: vec!["w".into()],
            ringbuf_size: Some(ByteSize(5000)),
            ..d.record
        };
        let err = rec.to_record_config(&d.store).expect_err("refused").to_string();
        assert!(err.contains("ringbuf_size") && err.contains("5000"), "{err}");
        let store = StoreSettings { dir: Some("/x".into()), rotate_size: ByteSize(10), ..d.store };
        assert!(store.to_options().expect_err("refused").to_string().contains("rotate_size"));
    }
}
