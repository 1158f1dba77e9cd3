//! `natrec-harness`: the packet-capture ground-truth harness (see `natrec_tests::harness`).
//! `cargo xtask harness [--stress]` runs it.
//!
//! ```text
//! natrec-harness [--natrec PATH] [--seed N] [--flows N] [--phase SECS] [--report FILE] [--keep] [--per-flow]
//! natrec-harness --stress [--natrec PATH] [--seed N] [--duration SECS] [--report FILE] [--keep]
//! ```
//!
//! The report is printed and written to FILE (default `<target>/harness-report.txt`, or
//! `<target>/harness-stress-report.txt` in stress mode). Exit status: 0 every outside packet was
//! attributed correctly (stress mode: the run completed), 1 some were wrong, missing or
//! unpaired, 2 the harness could not run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use natrec_tests::harness::run::{HarnessOptions, run, target_dir};
use natrec_tests::harness::stress::{StressOptions, run_stress};
use natrec_tests::harness::verify::QueryMode;
use natrec_tests::lab::ensure_root_capabilities;

const USAGE: &str = "usage: natrec-harness [--natrec PATH] [--seed N] [--flows N] [--phase SECS] [--report FILE] [--keep] [--per-flow]\n       \
natrec-harness --stress [--natrec PATH] [--seed N] [--duration SECS] [--report FILE] [--keep]";

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("natrec-harness: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

struct Args {
    stress: bool,
    natrec: Option<PathBuf>,
    seed: Option<u64>,
    flows: Option<usize>,
    phase: Option<u64>,
    duration: Option<u64>,
    report: Option<PathBuf>,
    keep: bool,
    per_flow: bool,
}

fn parse_args(argv: &[String]) -> Result<Args> {
    let mut a = Args {
        stress: false,
        natrec: None,
        seed: None,
        flows: None,
        phase: None,
        duration: None,
        report: None,
        keep: false,
        per_flow: false,
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow!("{flag} expects a value\n{USAGE}"));
        let number = |v: &String| -> Result<u64> {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.map_err(|_| anyhow!("{flag} expects a number, got {v:?}"))
        };
        match flag.as_str() {
            "--stress" => a.stress = true,
            "--keep" => a.keep = true,
            "--per-flow" => a.per_flow = true,
            "--natrec" => a.natrec = Some(PathBuf::from(value()?)),
            "--seed" => a.seed = Some(number(value()?)?),
            "--flows" => a.flows = Some(usize::try_from(number(value()?)?)?),
            "--phase" => a.phase = Some(number(value()?)?),
            "--duration" => a.duration = Some(number(value()?)?),
            "--report" => a.report = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if a.stress && (a.flows.is_some() || a.phase.is_some() || a.per_flow) {
        bail!(
            "--flows, --phase and --per-flow are for the verification run, not --stress (use --duration)\n{USAGE}"
        );
    }
    if !a.stress && a.duration.is_some() {
        bail!(
            "--duration is for --stress (the verification run takes --flows and --phase)\n{USAGE}"
        );
    }
    Ok(a)
}

fn real_main() -> Result<bool> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = parse_args(&argv)?;
    if let Some(natrec) = &args.natrec {
        natrec_tests::recorder_proc::use_natrec_bin(natrec);
    }
    ensure_root_capabilities().context("the harness cannot run here")?;
    natrec_tests::recorder_proc::natrec_bin().context("the natrec binary to check")?;
    let mut log = |m: &str| eprintln!("natrec-harness: {m}");
    let (text, ok, default_report) = if args.stress {
        let mut opts = StressOptions { keep: args.keep, ..StressOptions::default() };
        if let Some(s) = args.seed {
            opts.seed = s;
        }
        if let Some(d) = args.duration {
            opts.duration = Duration::from_secs(d);
        }
        let report = run_stress(&opts, &mut log)?;
        (report.to_string(), true, "harness-stress-report.txt")
    } else {
        let mut opts = HarnessOptions { keep: args.keep, ..HarnessOptions::default() };
        if args.per_flow {
            opts.query_mode = QueryMode::PerFlow;
        }
        if let Some(s) = args.seed {
            opts.workload.seed = s;
        }
        if let Some(n) = args.flows {
            opts.workload.flows_per_phase = n;
        }
        if let Some(p) = args.phase {
            opts.workload.phase = Duration::from_secs(p);
        }
        let report = run(&opts, &mut log)?;
        if !report.passed() {
            log(&format!("the run's files are kept in {}", opts.work_dir.display()));
        }
        (report.to_string(), report.passed(), "harness-report.txt")
    };
    print!("{text}");
    let path = args.report.unwrap_or_else(|| target_dir().join(default_report));
    std::fs::write(&path, &text)
        .with_context(|| format!("writing the report to {}", path.display()))?;
    log(&format!("report written to {}", path.display()));
    Ok(ok)
}
