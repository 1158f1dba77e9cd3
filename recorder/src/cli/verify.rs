//! `natrec verify DIR`: checks every checksum, block, seal and the hash chain.
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0 everything verifies, 1 damage or tampering found, 2 error.")]
pub struct Args {
    /// The segment directory.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// JSON Lines: one object per problem, then a summary object.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Summary<'a> {
    summary: bool,
    ok: bool,
    segments: u64,
    blocks: u64,
    deleted_by_retention: u64,
    problems: usize,
    head_chain: &'a Option<String>,
    notes: &'a [String],
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.dir.is_dir() {
        anyhow::bail!("{}: expected a segment directory", args.dir.display());
    }
    let rep = recorder::store::verify(&args.dir)
        .with_context(|| format!("verifying {}", args.dir.display()))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        for p in &rep.problems {
            serde_json::to_writer(&mut out, p)?;
            writeln!(out)?;
        }
        let s = Summary {
            summary: true,
            ok: rep.ok(),
            segments: rep.segments,
            blocks: rep.blocks,
            deleted_by_retention: rep.deleted_by_retention,
            problems: rep.problems.len(),
            head_chain: &rep.head_chain,
            notes: &rep.notes,
        };
        serde_json::to_writer(&mut out, &s)?;
        writeln!(out)?;
    } else {
        for p in &rep.problems {
            let block = p.block.map(|b| format!(" block {b}")).unwrap_or_default();
            let kind = serde_json::to_value(p.kind)?;
            writeln!(
                out,
                "{}: {}{block}: {}",
                kind.as_str().unwrap_or("problem"),
                p.segment.display(),
                p.detail
            )?;
        }
        for n in &rep.notes {
            writeln!(out, "note: {n}")?;
        }
        writeln!(
            out,
            "{}: {} segments, {} blocks checked, {} deleted by retention{}",
            if rep.ok() { "OK" } else { "FAILED" },
            rep.segments,
            rep.blocks,
            rep.deleted_by_retention,
            if rep.ok() { String::new() } else { format!(", {} problems", rep.problems.len()) },
        )?;
        if let Some(h) = &rep.head_chain {
            writeln!(out, "head chain: {h} (keep it elsewhere to detect a cut history)")?;
        }
    }
    Ok(if rep.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
