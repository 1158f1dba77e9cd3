//! `cargo xtask fuzz`: builds the fuzz targets of `fuzz/` with cargo-fuzz on the nightly and runs
//! each for a while; fails naming every target that crashed and the input that did it.
//!
//! A target starts from its checked-in seeds (`fuzz/corpus/TARGET/`, written by
//! `cargo run -p recorder --features fuzzing --example fuzz_seeds -- fuzz/corpus`) and from what
//! earlier runs found (`fuzz/target/corpus/TARGET/`, outside git), where the inputs that reach
//! new code go. A crashing input is kept in `fuzz/artifacts/TARGET/`; `cargo +nightly fuzz run
//! --sanitizer none TARGET FILE` replays it. libFuzzer's output goes to
//! `fuzz/target/logs/TARGET.log`.
//!
//! The targets are built without a sanitizer: the decoders are safe Rust, so AddressSanitizer
//! would find nothing that the bounds checks do not, and halves the inputs run per second. Debug
//! assertions and overflow checks are on.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::setup::{output, run};

/// Seconds one input may take before libFuzzer calls it a hang (the decoders take microseconds).
const HANG_SECS: u64 = 10;

/// Build flags, the same for `cargo fuzz build` and `cargo fuzz run` (else the run rebuilds).
const BUILD_FLAGS: &[&str] = &["--sanitizer", "none", "--debug-assertions"];

/// `cargo fuzz …` on the nightly, in the workspace root (cargo-fuzz finds `fuzz/` from there).
fn cargo_fuzz(root: &Path) -> Command {
    let mut c = Command::new("rustup");
    c.current_dir(root).args(["run", "nightly", "cargo", "fuzz"]);
    c
}

/// Runs `targets` (default: every target of `fuzz/`) for `secs` seconds each.
pub fn fuzz(root: &Path, secs: u64, targets: &[String]) -> Result<()> {
    let t0 = Instant::now();
    let fuzz_dir = root.join("fuzz");
    let all: Vec<String> = output(cargo_fuzz(root).arg("list"))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(t) = targets.iter().find(|t| !all.contains(t)) {
        bail!("no fuzz target {t:?}: the targets are {}", all.join(", "));
    }
    let targets = if targets.is_empty() { all } else { targets.to_vec() };
    run(cargo_fuzz(root).arg("build").args(BUILD_FLAGS))?;
    eprintln!("xtask: fuzz targets built in {:.0} s", t0.elapsed().as_secs_f64());

    let mut crashed = Vec::new();
    for target in &targets {
        match run_target(&fuzz_dir, root, target, secs)? {
            Outcome::Ok(summary) => {
                eprintln!("xtask: fuzz {target}: no crash in {secs} s ({summary})")
            }
            Outcome::Crashed(what) => {
                eprintln!("xtask: fuzz {target}: CRASHED: {what}");
                crashed.push(format!("{target}: {what}"));
            }
        }
    }
    eprintln!(
        "xtask: fuzzed {} targets for {secs} s each; {:.0} s in all",
        targets.len(),
        t0.elapsed().as_secs_f64()
    );
    if !crashed.is_empty() {
        bail!("fuzzing found crashes:\n  {}", crashed.join("\n  "));
    }
    Ok(())
}

enum Outcome {
    /// libFuzzer's closing statistics.
    Ok(String),
    /// What failed: the crash input and the log.
    Crashed(String),
}

fn run_target(fuzz_dir: &Path, root: &Path, target: &str, secs: u64) -> Result<Outcome> {
    let work = fuzz_dir.join("target").join("corpus").join(target);
    let seeds = fuzz_dir.join("corpus").join(target);
    let artifacts = fuzz_dir.join("artifacts").join(target);
    let logs = fuzz_dir.join("target").join("logs");
    for d in [&work, &artifacts, &logs] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let log_path = logs.join(format!("{target}.log"));
    let log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let before = listing(&artifacts)?;
    let mut cmd = cargo_fuzz(root);
    cmd.arg("run").args(BUILD_FLAGS).arg(target).arg(&work);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    // The prefix ends with a slash: libFuzzer names its files by appending to it.
    cmd.arg("--")
        .arg(format!("-max_total_time={secs}"))
        .arg(format!("-timeout={HANG_SECS}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    eprintln!("+ {cmd:?} > {}", log_path.display());
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    let text =
        fs::read_to_string(&log_path).with_context(|| format!("reading {}", log_path.display()))?;
    if status.success() {
        return Ok(Outcome::Ok(closing_stats(&text)));
    }
    let new: Vec<PathBuf> =
        listing(&artifacts)?.difference(&before).map(|n| artifacts.join(n)).collect();
    // The end of the log holds the panic message and its backtrace.
    let lines: Vec<&str> = text.lines().collect();
    eprintln!("--- the last lines of {}:", log_path.display());
    for l in &lines[lines.len().saturating_sub(40)..] {
        eprintln!("{l}");
    }
    eprintln!("---");
    Ok(Outcome::Crashed(match new.as_slice() {
        [] => format!("{status}, no crash input written (log: {})", log_path.display()),
        inputs => format!(
            "{status}; crash input {} (log: {})",
            inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
            log_path.display()
        ),
    }))
}

/// The file names in `dir`.
fn listing(dir: &Path) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for e in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        names.insert(e?.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// libFuzzer's last status line (`#RUNS DONE cov: … corp: … exec/s: …`), shortened to its
/// counts, or a note that there is none.
fn closing_stats(log: &str) -> String {
    log.lines()
        .rev()
        .find(|l| l.starts_with('#') && l.contains("cov:"))
        .map(|l| {
            let mut words = l.split_whitespace();
            let runs = words.next().unwrap_or_default().trim_start_matches('#');
            let rest: Vec<&str> = words.skip(1).collect();
            format!("{runs} runs, {}", rest.join(" "))
        })
        .unwrap_or_else(|| "no statistics in the log".to_owned())
}
