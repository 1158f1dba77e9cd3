//! Argument parsing and dispatch: one file per subcommand, each with an `Args` struct and a
//! `run(args) -> anyhow::Result<ExitCode>`. Exit codes follow grep: 0 found/ok, 1 not found,
//! 2 error.
use std::process::ExitCode;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use recorder::config::{self, ConfigFile, LogSettings};
use recorder::daemon::SetLogFilter;

mod check_config;
mod generate;
mod import;
mod query;
mod record;
mod segments;
mod verify;

#[derive(Debug, Parser)]
#[command(
    name = "natrec",
    version,
    about = "Records every NAT translation of a Linux gateway and answers who held an outside address and port at a given time."
)]
struct Cli {
    /// Config file of `record` and `check-config` (default: /etc/natrec/natrec.toml, if it
    /// exists). Flags and NATREC_* variables override its keys.
    #[arg(long, global = true, env = "NATREC_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    log: LogSettings,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Capture NAT translations on the gateway's WAN interfaces and record them.
    Record(record::Args),
    /// Answer who held an outside address (or what an inside host did) at a time.
    Query(query::Args),
    /// Check every checksum and the hash chain of a segment directory.
    Verify(verify::Args),
    /// List the segments of a directory.
    Segments(segments::Args),
    /// Turn logs kept by other tools (conntrack -E, ulogd2 JSON, natrec JSONL) into segments.
    Import(import::Args),
    /// Check a config file and print the settings `record` would run with.
    CheckConfig(check_config::Args),
    /// Write the man pages and shell completions into DIR (`cargo xtask dist`).
    #[command(hide = true)]
    Generate(generate::Args),
}

pub fn run() -> anyhow::Result<ExitCode> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Only the commands that run natrec read the config file: a broken file must not keep staff
    // from querying.
    let reads_config = matches!(cli.command, Command::Record(_) | Command::CheckConfig(_));
    let (file, path) = if reads_config {
        ConfigFile::load(cli.config.as_deref())?
    } else {
        (ConfigFile::default(), None)
    };
    let log = config::overlay(&file.log, &cli.log, &matches)?;
    let set_log_filter = init_logging(&log.filter)?;
    if let Some(path) = &path {
        tracing::debug!(config = %path.display(), "read the config file");
    }
    let sub = |name| matches.subcommand_matches(name).context("subcommand matches");
    match cli.command {
        Command::Record(a) => {
            let reload = record::Reloadable {
                config: cli.config.clone(),
                log_flags: cli.log.clone(),
                root: matches.clone(),
                log,
                set_log_filter,
            };
            record::run(a, &file, sub("record")?, reload)
        }
        Command::CheckConfig(a) => {
            check_config::run(a, ConfigFile { log, ..file }, path, sub("check-config")?)
        }
        Command::Query(a) => query::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Segments(a) => segments::run(a),
        Command::Import(a) => import::run(a),
        Command::Generate(a) => generate::run(a),
    }
}

/// Logs go to stderr through `tracing`; the `log` crate (aya, aya-log) is bridged into it. When
/// stderr is the journal (systemd's `JOURNAL_STREAM`), lines carry no time of their own: the
/// journal stamps them. Returns what changes the filter later.
fn init_logging(filter: &str) -> anyhow::Result<SetLogFilter> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    let parse = |filter: &str| {
        tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| {
            // Its message already ends with its source's.
            anyhow::anyhow!("invalid log filter {filter:?} (--log, or [log] filter): {e}")
        })
    };
    let (filter, handle) = tracing_subscriber::reload::Layer::new(parse(filter)?);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let fmt = if stderr_is_journal() { fmt.without_time().boxed() } else { fmt.boxed() };
    let subscriber = tracing_subscriber::registry().with(filter).with(fmt);
    tracing::subscriber::set_global_default(subscriber).context("installing the logger")?;
    tracing_log::LogTracer::init().context("bridging the log crate (aya, aya-log) into tracing")?;
    Ok(Box::new(move |filter| handle.reload(parse(filter)?).context("replacing the log filter")))
}

/// Whether stderr is the stream systemd names in `JOURNAL_STREAM` (`DEVICE:INODE`), as
/// `systemd.exec(5)` says to check.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else { return false };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else { return false };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// Whether an error chain ends in a broken pipe (stdout closed by `head`): not an error.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
