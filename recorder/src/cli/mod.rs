//! Argument parsing and dispatch: one file per subcommand, each with an `Args` struct and a
//! `run(args) -> anyhow::Result<ExitCode>`. Exit codes follow grep: 0 found/ok, 1 not found,
//! 2 error.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod import;
mod query;
mod record;
mod segments;
mod store_args;
mod verify;

#[derive(Debug, Parser)]
#[command(
    name = "natrec",
    version,
    about = "Records every NAT translation of a Linux gateway and answers who held an outside address and port at a given time."
)]
struct Cli {
    /// Log filter (tracing's EnvFilter syntax), e.g. `info`, `natrec=debug`.
    #[arg(long, global = true, env = "NATREC_LOG", default_value = "info")]
    log: String,
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
}

pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    init_logging(&cli.log)?;
    match cli.command {
        Command::Record(a) => record::run(a),
        Command::Query(a) => query::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Segments(a) => segments::run(a),
        Command::Import(a) => import::run(a),
    }
}

/// Logs go to stderr through `tracing`; the `log` crate (aya, aya-log) is bridged into it.
fn init_logging(filter: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("invalid --log filter {filter:?}"))?;
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .finish();
    tracing::subscriber::set_global_default(subscriber).context("installing the logger")?;
    tracing_log::LogTracer::init().context("bridging the log crate (aya, aya-log) into tracing")?;
    Ok(())
}

/// Whether an error chain ends in a broken pipe (stdout closed by `head`): not an error.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
