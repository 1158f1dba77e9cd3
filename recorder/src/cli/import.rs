//! `natrec import`: turns logs other tools keep into segments (see `recorder::import`).
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use jiff::Timestamp;
use recorder::import::{Format, ImportReport, Importer};
use recorder::model::FlowEvent;
use recorder::store::{Writer, WriterStats};
use serde::Serialize;

use recorder::config::StoreSettings;

/// Read logs and write their NAT translations into segments.
///
/// Formats: `jsonl` (natrec record --jsonl), `conntrack` (the text of `conntrack -E -o
/// timestamp,extended`; `-o timestamp` is required), `ulogd-json` (ulogd2's JSON output with the
/// NFCT input through IP2STR). NEW and DESTROY entries are paired into one translation; entries
/// without NAT and UPDATE events are skipped and counted. Several files are read in the order
/// given, as one log (pairs across rotated files are found); a FILE ending in `.zst` is
/// decompressed. Times are stored at --time-resolution (ms by default; conntrack and ulogd log
/// microseconds). Entries are written in input order; lines whose time goes backwards are
/// still stored, and counted as out of time order.
///
/// Malformed lines are counted and reported with their line numbers (the first 10) and never
/// stop the import; they alone do not make the exit status an error. Exit status: 0 imported,
/// 1 nothing to import, 2 error.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Formats: jsonl (natrec record --jsonl), conntrack (conntrack -E -o timestamp[,extended] text), \
ulogd-json (ulogd2 JSON output, NFCT through IP2STR). NEW and DESTROY entries are paired into \
one translation, also across the files given (rotated logs, in order); FILE.zst is decompressed.

Malformed lines are counted and reported with their line numbers; they never stop the import \
and alone do not make it fail. Exit status: 0 imported, 1 nothing to import, 2 error.")]
pub struct Args {
    /// Log format: jsonl, conntrack or ulogd-json.
    #[arg(long, value_name = "FORMAT")]
    format: Format,
    /// Log files to read, in order (`-` for standard input, the default).
    #[arg(value_name = "FILE", default_value = "-")]
    files: Vec<PathBuf>,
    #[command(flatten)]
    store: StoreSettings,
    /// Read and check the logs, report, write nothing (--dir is not needed).
    #[arg(long)]
    dry_run: bool,
    /// Also print the summary as one JSON object on standard output.
    #[arg(long)]
    json: bool,
}

/// The summary printed with `--json`.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    format: Format,
    files: Vec<String>,
    dry_run: bool,
    #[serde(flatten)]
    report: &'a ImportReport,
    /// What the segment writer did (absent with --dry-run).
    writer: Option<&'a WriterStats>,
    seconds: f64,
}

/// How often a long import reports progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Lines between writer ticks and progress checks.
const TICK_LINES: u64 = 16_384;

fn open_input(path: &PathBuf) -> anyhow::Result<Box<dyn BufRead>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(BufReader::with_capacity(1 << 20, std::io::stdin())));
    }
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "zst") {
        Box::new(
            zstd::Decoder::new(file)
                .with_context(|| format!("reading {} as zstd", path.display()))?,
        )
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 20, reader)))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let began = Instant::now();
    let mut writer = if args.dry_run {
        None
    } else {
        let Some(opts) = args.store.to_options()? else {
            bail!("expected --dir DIR (where to write the segments), or --dry-run");
        };
        let dir = opts.dir.clone();
        Some(
            Writer::open(opts)
                .with_context(|| format!("opening the store in {}", dir.display()))?,
        )
    };
    let mut importer = Importer::new(args.format);
    let mut events: Vec<FlowEvent> = Vec::new();
    let mut line = Vec::with_capacity(4096);
    let mut last_progress = Instant::now();
    for path in &args.files {
        let name = path.display().to_string();
        importer.set_source(&name);
        let mut input = open_input(path)?;
        let mut line_no = 0u64;
        loop {
            line.clear();
            let n = input
                .read_until(b'\n', &mut line)
                .with_context(|| format!("reading {name} after line {line_no}"))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            match std::str::from_utf8(&line) {
                Ok(text) => importer.line(line_no, text, &mut events),
                Err(_) => importer.invalid_utf8(line_no),
            }
            if let Some(w) = writer.as_mut() {
                for ev in events.drain(..) {
                    w.append(&ev).context("writing to the store")?;
                }
            } else {
                events.clear();
            }
            if line_no.is_multiple_of(TICK_LINES) {
                if let Some(w) = writer.as_mut() {
                    w.tick(Timestamp::now()).context("writing to the store")?;
                }
                if last_progress.elapsed() >= PROGRESS_EVERY {
                    last_progress = Instant::now();
                    let r = importer.report();
                    let rate = r.lines as f64 / began.elapsed().as_secs_f64().max(1e-9);
                    eprintln!(
                        "natrec import: {name}: line {line_no}; {} lines, {} translations, {} malformed ({rate:.0} lines/s)",
                        r.lines, r.translations, r.malformed
                    );
                }
            }
        }
    }
    let report = importer.finish();
    let stats = match writer {
        Some(w) => Some(w.close().context("closing the store")?),
        None => None,
    };
    let seconds = began.elapsed().as_secs_f64();
    print_report(&report, stats.as_ref(), args.dry_run, seconds);
    if args.json {
        let summary = Summary {
            format: args.format,
            files: args.files.iter().map(|p| p.display().to_string()).collect(),
            dry_run: args.dry_run,
            report: &report,
            writer: stats.as_ref(),
            seconds,
        };
        println!("{}", serde_json::to_string(&summary).context("serializing the summary")?);
    }
    if let Some(s) = &stats
        && s.lost_events > 0
    {
        bail!(
            "{} events could not be written to the store (last error: {})",
            s.lost_events,
            s.last_error.as_deref().unwrap_or("unknown")
        );
    }
    Ok(if report.translations == 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn print_report(r: &ImportReport, stats: Option<&WriterStats>, dry_run: bool, seconds: f64) {
    let verb = if dry_run { "would write" } else { "wrote" };
    eprintln!(
        "natrec import: read {} lines in {seconds:.1}s; {verb} {} translations ({} starts, {} ends)",
        r.lines, r.translations, r.starts, r.ends
    );
    eprintln!(
        "  {} end-only (DESTROY without NEW), {} still open at the end (NEW without DESTROY), {} with a lost DESTROY",
        r.end_only, r.open_at_end, r.lost_ends
    );
    eprintln!(
        "  {} without NAT skipped, {} other lines ignored, {} out of time order",
        r.non_nat, r.ignored, r.out_of_order
    );
    eprintln!("  {} malformed lines", r.malformed);
    for m in &r.malformed_samples {
        eprintln!("    {}:{}: {}", m.source, m.line, m.reason);
    }
    if r.malformed as usize > r.malformed_samples.len() {
        eprintln!("    … and {} more", r.malformed as usize - r.malformed_samples.len());
    }
    if let Some(s) = stats {
        eprintln!(
            "  store: {} segments sealed, {} bytes written",
            s.segments_sealed, s.bytes_written
        );
    }
    if r.translations == 0 {
        eprintln!("natrec import: nothing to import");
    }
}
