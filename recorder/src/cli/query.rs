//! `natrec query`: who held an outside address and port at a time, or what an inside host or a
//! remote did in a time range.
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use recorder::model::Proto;
use recorder::query::{
    self, Answer, DEFAULT_WINDOW, Query, SubscriberMap, When, parse_duration, parse_endpoint,
    parse_time, parse_tz,
};
use recorder::store::{Reader, Resolution};

#[derive(Debug, clap::Args)]
#[command(
    group(clap::ArgGroup::new("subject").required(true).multiple(true).args(["outside", "inside", "remote"])),
    group(clap::ArgGroup::new("time").required(true).args(["at", "from"])),
    after_help = "Times: RFC 3339 with any offset (2026-11-24T22:18:00+01:00), 'YYYY-MM-DD HH:MM:SS' read in \
                  --tz (default UTC), or Unix seconds (1795990680.25). Output times are UTC.\n\
                  Exit status: 0 something matched, 1 nothing matched, 2 error."
)]
pub struct Args {
    /// The outside (public) address, optionally with port, e.g. 100.64.0.1:40000.
    #[arg(long, value_name = "IP[:PORT]")]
    outside: Option<String>,
    /// The inside endpoint (host behind the gateway).
    #[arg(long, value_name = "IP[:PORT]")]
    inside: Option<String>,
    /// The remote peer (what the abuse report calls the victim or destination).
    #[arg(long, value_name = "IP[:PORT]")]
    remote: Option<String>,
    /// Protocol: tcp, udp, icmp, icmpv6, ... or a number.
    #[arg(long)]
    proto: Option<String>,
    /// The reported time; translations alive within --window of it match.
    #[arg(long, value_name = "TIME", allow_hyphen_values = true, conflicts_with_all = ["from", "to"])]
    at: Option<String>,
    /// Half-width of the window around --at, for clock skew (default 2s; 500ms, 1m, 0, ...).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true, requires = "at")]
    window: Option<String>,
    /// Start of a time range (with --to).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true, requires = "to")]
    from: Option<String>,
    /// End of a time range (with --from).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true, requires = "from")]
    to: Option<String>,
    /// Time zone for times without an offset: an IANA name, UTC or ±HH:MM.
    #[arg(long, env = "NATREC_TZ", value_name = "ZONE", allow_hyphen_values = true)]
    tz: Option<String>,
    /// The segment directory.
    #[arg(long, env = "NATREC_DIR", default_value = "/var/lib/natrec")]
    dir: PathBuf,
    /// CSV of `inside prefix,account id` lines: names the account of each inside endpoint.
    #[arg(long, env = "NATREC_SUBSCRIBERS", value_name = "FILE")]
    subscribers: Option<PathBuf>,
    /// JSON Lines: one object per translation, then a summary object.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// CSV with a header row (notes go to stderr).
    #[arg(long)]
    csv: bool,
}

fn endpoint(
    opt: &str,
    s: Option<&String>,
) -> anyhow::Result<Option<recorder::lookup::EndpointMatch>> {
    s.map(|s| parse_endpoint(s).map_err(|e| anyhow!("--{opt}: {e}"))).transpose()
}

/// Turns the command line into a query (every problem is one line naming the option).
fn build_query(args: &Args) -> anyhow::Result<Query> {
    let tz =
        args.tz.as_deref().map(|s| parse_tz(s).map_err(|e| anyhow!("--tz: {e}"))).transpose()?;
    let time = |opt: &str, s: &str| parse_time(s, tz.as_ref()).map_err(|e| anyhow!("--{opt}: {e}"));
    let when = match (&args.at, &args.from, &args.to) {
        (Some(at), None, None) => When::At {
            at: time("at", at)?,
            window: match &args.window {
                Some(w) => parse_duration(w).map_err(|e| anyhow!("--window: {e}"))?,
                None => DEFAULT_WINDOW,
            },
        },
        (None, Some(from), Some(to)) => {
            When::Range { from: time("from", from)?, to: time("to", to)? }
        }
        _ => return Err(anyhow!("expected either --at TIME or both --from TIME and --to TIME")),
    };
    let proto = args
        .proto
        .as_deref()
        .map(|p| p.parse::<Proto>().map_err(|e| anyhow!("--proto: {e}")))
        .transpose()?;
    let query = Query {
        outside: endpoint("outside", args.outside.as_ref())?,
        inside: endpoint("inside", args.inside.as_ref())?,
        remote: endpoint("remote", args.remote.as_ref())?,
        proto,
        when,
    };
    // Check the time range now, so a reversed one is reported before the store is opened.
    query.filter()?;
    Ok(query)
}

/// Opens the segment directory (a missing one is an error, not an empty answer).
fn open_store(dir: &Path) -> anyhow::Result<Reader> {
    if !dir.is_dir() {
        anyhow::bail!("expected a segment directory at {} (--dir or NATREC_DIR)", dir.display());
    }
    Reader::open(dir).with_context(|| format!("opening the segment directory {}", dir.display()))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let query = build_query(&args)?;
    let subscribers = args.subscribers.as_deref().map(SubscriberMap::load).transpose()?;
    let store = open_store(&args.dir)?;
    let mut answer =
        query::ask(&store, &query).with_context(|| format!("querying {}", args.dir.display()))?;
    if let Some(map) = &subscribers {
        answer.label_accounts(map);
    }
    answer.precision = Some(match store.resolution() {
        Resolution::Millis => 3,
        Resolution::Micros => 6,
        Resolution::Nanos => 9,
    });
    report(&args, &answer)?;
    Ok(if answer.found() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Writes the answer to stdout in the chosen form; damage (and, for CSV, notes) to stderr.
fn report(args: &Args, answer: &Answer) -> anyhow::Result<()> {
    for d in &answer.report.damage {
        let block = d.block.map(|b| format!(" block {b}")).unwrap_or_default();
        eprintln!("natrec: warning: skipped damaged {}{block}: {}", d.segment.display(), d.reason);
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if args.json {
        query::write_jsonl(&mut out, answer)?;
    } else if args.csv {
        query::write_csv(&mut out, answer)?;
        if let Some(amb) = &answer.ambiguity {
            eprintln!("natrec: ambiguous: {}", amb.hint);
        }
        for n in &answer.notes {
            eprintln!("natrec: note: {n}");
        }
    } else {
        query::write_table(&mut out, answer)?;
    }
    out.flush()?;
    Ok(())
}
