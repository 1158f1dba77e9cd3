//! `natrec segments DIR`: lists segments with time range, records, bytes and state.
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0 segments listed, 1 no segment, 2 error.")]
pub struct Args {
    /// The segment directory.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// JSON Lines: one object per segment.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    info: &'a recorder::store::SegmentInfo,
    bytes_per_record: Option<f64>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.dir.is_dir() {
        anyhow::bail!("{}: expected a segment directory", args.dir.display());
    }
    let segs = recorder::store::list_segments(&args.dir)
        .with_context(|| format!("listing {}", args.dir.display()))?;
    let mut out = std::io::stdout().lock();
    let ts = |t: Option<jiff::Timestamp>| {
        t.map_or_else(|| "-".to_owned(), |t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
    };
    if !args.json {
        writeln!(
            out,
            "{:>6}  {:<8} {:<24} {:<24} {:>10} {:>8} {:>12} {:>7}  FILE",
            "SEQ", "STATE", "FIRST", "LAST", "RECORDS", "CARRIED", "BYTES", "B/REC"
        )?;
    }
    for s in &segs {
        if args.json {
            serde_json::to_writer(
                &mut out,
                &Line { info: s, bytes_per_record: s.bytes_per_record() },
            )?;
            writeln!(out)?;
        } else {
            let state = serde_json::to_value(&s.state)?;
            writeln!(
                out,
                "{:>6}  {:<8} {:<24} {:<24} {:>10} {:>8} {:>12} {:>7}  {}",
                s.seq,
                state.as_str().unwrap_or("?"),
                ts(s.first),
                ts(s.last),
                s.records,
                s.carried,
                s.bytes,
                s.bytes_per_record().map_or_else(|| "-".to_owned(), |b| format!("{b:.2}")),
                s.path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
            )?;
        }
    }
    Ok(if segs.is_empty() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
