//! `natrec-bench`: natrec side by side with `conntrack -E` and ulogd2 on one lab, one load, one
//! run (see `natrec_tests::bench`). `cargo xtask bench capture` runs it.
//!
//! ```text
//! natrec-bench capture [--natrec PATH] [--duration SECS] [--reps N] [--rates 1000,10000,50000,max]
//!                      [--recorders natrec,conntrack-E,ulogd2-text,ulogd2-json] [--seed N]
//!                      [--results DIR] [--markdown FILE] [--keep DIR]
//!                      [--compress-rate RATE|none]
//! natrec-bench storage [--natrec PATH] [--natrec-gen PATH] [--flows N] [--seed N]
//!                      [--results DIR] [--markdown FILE]
//! natrec-bench query   [--natrec PATH] [--natrec-gen PATH] [--sizes 1000000,10000000]
//!                      [--raw-text-budget BYTES] [--seed N] [--results DIR] [--markdown FILE]
//! natrec-bench forward [--natrec PATH] [--flows N] [--mix-slots N] [--mix-rates N,N…] [--duration SECS] [--reps N]
//!                      [--recorders natrec,natrec-ctnetlink,conntrack-E] [--results DIR] [--markdown FILE]
//! natrec-bench report  [--results DIR] [--markdown FILE]
//! ```
//!
//! `capture` writes `DIR/capture.json` (default `bench-results/`), `storage` `DIR/storage.json`, `query` `DIR/query.json`, `forward` `DIR/forward.json` (1 000 long-lived flows by default), and regenerates the Markdown
//! report (default `BENCHMARKS.md`, both relative to the workspace root); `report` only
//! regenerates the report. `query` asks 5 questions 3 times each below 50 M translations and 5
//! questions once from 50 M on (one `zstdgrep` over 100 M takes about a minute); it streams the
//! workload and keeps the raw text (for `grep`) only up to `--raw-text-budget` (default 5 GB). Exit status: 0 done, 2 error.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use natrec_tests::bench::capture::{self, CaptureOptions};
use natrec_tests::bench::forward::{self, ForwardOptions};
use natrec_tests::bench::mix::MixOptions;
use natrec_tests::bench::query::{self, QueryOptions};
use natrec_tests::bench::recorders::Recorder;
use natrec_tests::bench::report;
use natrec_tests::bench::storage::{self, StorageOptions};
use natrec_tests::lab::ensure_root_capabilities;

const USAGE: &str = "usage: natrec-bench capture [--natrec PATH] [--duration SECS] [--reps N] \
[--rates 1000,10000,50000,max] [--recorders natrec,conntrack-E,ulogd2-text,ulogd2-json] [--seed N] \
[--results DIR] [--markdown FILE] [--keep DIR] [--compress-rate RATE|none]\n       natrec-bench storage [--natrec PATH] [--natrec-gen PATH] [--flows N] [--seed N] [--results DIR] [--markdown FILE]\n       natrec-bench query [--natrec PATH] [--natrec-gen PATH] [--sizes N,N…] [--raw-text-budget BYTES] [--seed N] [--results DIR] [--markdown FILE]\n       natrec-bench forward [--natrec PATH] [--flows N] [--mix-slots N] [--mix-rates 50000,150000] [--duration SECS] [--reps N] [--recorders natrec,natrec-ctnetlink,conntrack-E] [--results DIR] [--markdown FILE]\n       natrec-bench report [--results DIR] [--markdown FILE]";

/// `query` keeps the raw `conntrack -E` text (and runs `grep` on it) only up to this size: 10 M
/// translations take about 3.6 GB, 100 M about 36 GB.
const RAW_TEXT_BUDGET: u64 = 5_000_000_000;

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("natrec-bench: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

struct Args {
    part: String,
    natrec: Option<PathBuf>,
    natrec_gen: Option<PathBuf>,
    /// Translations of `storage` (100 000 by default), long-lived flows of `forward`.
    flows: Option<u64>,
    sizes: Vec<u64>,
    raw_text_budget: u64,
    results: PathBuf,
    markdown: PathBuf,
    capture: CaptureOptions,
    mix: MixOptions,
}

fn parse_args(argv: &[String]) -> Result<Args> {
    let root = workspace_root();
    let mut it = argv.iter();
    let part = it
        .next()
        .ok_or_else(|| {
            anyhow!("expected a part (capture, storage, query, forward or report)\n{USAGE}")
        })?
        .clone();
    if !["capture", "storage", "query", "forward", "report"].contains(&part.as_str()) {
        bail!(
            "unknown part {part:?}: expected capture, storage, query, forward or report\n{USAGE}"
        );
    }
    let mut args = Args {
        part,
        natrec: None,
        natrec_gen: None,
        flows: None,
        sizes: vec![1_000_000],
        raw_text_budget: RAW_TEXT_BUDGET,
        results: root.join("bench-results"),
        markdown: root.join("BENCHMARKS.md"),
        capture: CaptureOptions::default(),
        mix: MixOptions::default(),
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow!("{flag} expects a value\n{USAGE}"));
        match flag.as_str() {
            "--natrec" => args.natrec = Some(PathBuf::from(value()?)),
            "--natrec-gen" => args.natrec_gen = Some(PathBuf::from(value()?)),
            "--sizes" => {
                let v = value()?;
                args.sizes = v
                    .split(',')
                    .map(|n| {
                        n.trim().parse::<u64>().ok().filter(|n| *n >= 1000).ok_or_else(|| {
                            anyhow!("--sizes expects numbers of translations ≥ 1000, got {n:?}")
                        })
                    })
                    .collect::<Result<_>>()?;
            }
            "--flows" => {
                let v = value()?;
                args.flows = Some(
                    v.parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| anyhow!("--flows expects a positive number, got {v:?}"))?,
                );
            }
            "--raw-text-budget" => {
                let v = value()?;
                args.raw_text_budget = v.parse().map_err(|_| {
                    anyhow!("--raw-text-budget expects a number of bytes, got {v:?}")
                })?;
            }
            "--results" => args.results = PathBuf::from(value()?),
            "--markdown" => args.markdown = PathBuf::from(value()?),
            "--keep" => args.capture.keep = Some(PathBuf::from(value()?)),
            "--compress-rate" => {
                let v = value()?;
                args.capture.compress_rate = match v.as_str() {
                    "none" => None,
                    n => Some(n.parse().map_err(|_| {
                        anyhow!("--compress-rate expects a rate or none, got {v:?}")
                    })?),
                };
            }
            "--duration" => {
                let v = value()?;
                let secs: f64 =
                    v.parse().ok().filter(|s: &f64| *s > 0.0 && *s <= 3600.0).ok_or_else(|| {
                        anyhow!("--duration expects seconds between 0 and 3600, got {v:?}")
                    })?;
                args.capture.duration = Duration::from_secs_f64(secs);
            }
            "--reps" => {
                let v = value()?;
                args.capture.reps =
                    v.parse().ok().filter(|n| (1..=100).contains(n)).ok_or_else(|| {
                        anyhow!("--reps expects a number from 1 to 100, got {v:?}")
                    })?;
            }
            "--seed" => {
                let v = value()?;
                args.capture.seed =
                    v.parse().map_err(|_| anyhow!("--seed expects a number, got {v:?}"))?;
            }
            "--rates" => {
                let v = value()?;
                args.capture.rates = v
                    .split(',')
                    .map(|r| match r.trim() {
                        "max" => Ok(None),
                        n => n.parse::<u64>().ok().filter(|n| *n > 0).map(Some).ok_or_else(|| {
                            anyhow!("--rates expects positive numbers or max, got {r:?}")
                        }),
                    })
                    .collect::<Result<_>>()?;
            }
            "--mix-rates" => {
                let v = value()?;
                args.mix.rates = v
                    .split(',')
                    .filter(|r| !r.trim().is_empty())
                    .map(|r| {
                        r.trim().parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                            anyhow!(
                                "--mix-rates expects packet rates (positive numbers), got {r:?}"
                            )
                        })
                    })
                    .collect::<Result<_>>()?;
            }
            "--mix-slots" => {
                let v = value()?;
                args.mix.slots =
                    v.parse().ok().filter(|n| (64..=100_000).contains(n)).ok_or_else(|| {
                        anyhow!("--mix-slots expects 64 to 100000 flows, got {v:?}")
                    })?;
            }
            "--recorders" => {
                let v = value()?;
                args.capture.recorders = v
                    .split(',')
                    .map(|r| {
                        Recorder::from_name(r.trim()).filter(|r| *r != Recorder::None).ok_or_else(|| {
                            anyhow!("--recorders expects natrec, conntrack-E, ulogd2-text or ulogd2-json, got {r:?}")
                        })
                    })
                    .collect::<Result<_>>()?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown option {other:?}\n{USAGE}"),
        }
    }
    Ok(args)
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(workspace_root()).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn commit_description() -> String {
    let Some(head) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown (not a git checkout)".to_owned();
    };
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty { format!("{head} (with uncommitted changes)") } else { head }
}

/// What a part run in the lab needs first: `--natrec` as the binary the lab runs, and root with
/// the lab's tools.
fn lab_part_start(args: &Args, what: &str) -> Result<()> {
    if let Some(natrec) = &args.natrec {
        natrec_tests::recorder_proc::use_natrec_bin(natrec);
    }
    ensure_root_capabilities().with_context(|| format!("{what} cannot run here"))?;
    Ok(())
}

fn real_main() -> Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = parse_args(&argv)?;
    if args.part == "capture" {
        lab_part_start(&args, "the capture benchmark")?;
        if args
            .capture
            .recorders
            .iter()
            .any(|r| matches!(r, Recorder::Natrec | Recorder::NatrecCtnetlink))
        {
            natrec_tests::recorder_proc::natrec_bin().context("the natrec binary to benchmark")?;
        }
        capture::stop_on_signals();
        let total_runs = args.capture.reps
            * args
                .capture
                .rates
                .iter()
                .map(|r| args.capture.recorders.len() + usize::from(r.is_none()))
                .sum::<usize>();
        eprintln!(
            "natrec-bench: capture, {total_runs} runs of {:?} each (plus start, drain and stop)",
            args.capture.duration
        );
        let mut doc = capture::run(&args.capture, &mut |line| eprintln!("natrec-bench: {line}"))?;
        doc["commit"] = commit_description().into();
        doc["command"] = format!("natrec-bench {}", argv.join(" ")).into();
        doc["natrec_binary"] = natrec_tests::recorder_proc::natrec_bin()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
            .into();
        report::write_results(&args.results, "capture", &doc)?;
        eprintln!("natrec-bench: wrote {}", args.results.join("capture.json").display());
    }
    if args.part == "forward" {
        lab_part_start(&args, "the forwarding benchmark")?;
        natrec_tests::recorder_proc::natrec_bin().context("the natrec binary to benchmark")?;
        let defaults = ForwardOptions::default();
        let flows = match args.flows {
            None => defaults.flows,
            Some(n) => u16::try_from(n).ok().filter(|n| *n <= 45_000).ok_or_else(|| {
                anyhow!("forward: --flows expects 1 to 45000 long-lived flows, got {n}")
            })?,
        };
        let recorders = if argv.iter().any(|a| a == "--recorders") {
            args.capture.recorders.clone()
        } else {
            defaults.recorders
        };
        let opts = ForwardOptions {
            flows,
            duration: args.capture.duration,
            reps: args.capture.reps,
            recorders,
            mix: args.mix.clone(),
        };
        capture::stop_on_signals();
        let mut doc = forward::run(&opts, &mut |line| eprintln!("natrec-bench: {line}"))?;
        doc["commit"] = commit_description().into();
        doc["command"] = format!("natrec-bench {}", argv.join(" ")).into();
        report::write_results(&args.results, "forward", &doc)?;
        eprintln!("natrec-bench: wrote {}", args.results.join("forward.json").display());
    }
    if args.part == "storage" || args.part == "query" {
        let natrec = match &args.natrec {
            Some(p) => p.clone(),
            None => natrec_tests::recorder_proc::natrec_bin()
                .context("the natrec binary (give --natrec)")?,
        };
        let natrec_gen =
            args.natrec_gen.clone().unwrap_or_else(|| natrec.with_file_name("natrec-gen"));
        if !natrec_gen.is_file() {
            bail!(
                "{} does not exist: build it (`cargo build --release -p recorder --features synth --bin natrec-gen`) or give --natrec-gen",
                natrec_gen.display()
            );
        }
        let mut log = |line: &str| eprintln!("natrec-bench: {line}");
        let (name, mut doc) = if args.part == "storage" {
            let opts = StorageOptions {
                natrec,
                natrec_gen,
                flows: args.flows.unwrap_or(100_000),
                seed: args.capture.seed,
            };
            ("storage", storage::run_storage(&opts, &mut log)?)
        } else {
            let opts = QueryOptions {
                natrec,
                natrec_gen,
                sizes: args.sizes.clone(),
                questions: 5,
                reps: 3,
                big_from: 50_000_000,
                big_questions: 5,
                big_reps: 1,
                raw_text_budget: args.raw_text_budget,
                seed: args.capture.seed,
            };
            ("query", query::run_query(&opts, &mut log)?)
        };
        doc["commit"] = commit_description().into();
        doc["command"] = format!("natrec-bench {}", argv.join(" ")).into();
        report::write_results(&args.results, name, &doc)?;
        eprintln!("natrec-bench: wrote {}", args.results.join(format!("{name}.json")).display());
    }
    let md = report::render(&args.results)?;
    std::fs::write(&args.markdown, md)
        .with_context(|| format!("writing {}", args.markdown.display()))?;
    eprintln!("natrec-bench: wrote {}", args.markdown.display());
    Ok(())
}
