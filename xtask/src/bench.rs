//! `cargo xtask bench capture|store|query|forward`: natrec side by side with `conntrack -E` and
//! ulogd2 on the lab, its segments against their logs on disk, `natrec query` against `grep` and
//! `zstdgrep`, and what each recorder costs the forwarding path (the `natrec-bench` binary of the
//! `natrec-tests` package).
//!
//! xtask does not depend on natrec's crates: it builds the release `natrec` binary, then runs
//! `cargo run --release -p natrec-tests --bin natrec-bench -- capture --natrec PATH ARGS…`, which
//! writes `bench-results/capture.json` and regenerates `BENCHMARKS.md`. It needs root and the
//! Debian packages `conntrack`, `ulogd2` and `ulogd2-json`.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// Debian packages the benchmarks need besides the lab's (`ulogd2` for the text output,
/// `ulogd2-json` for the JSON one, `zstd` and `xz-utils` for the storage comparison).
pub const PACKAGES: &[&str] = &["conntrack", "ulogd2", "ulogd2-json", "zstd", "xz-utils"];

fn cargo(workspace: &Path) -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")));
    c.current_dir(workspace);
    c
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// Builds the release `natrec` and runs a benchmark of the lab, `part` (`capture` or
/// `forward`); `args` go to `natrec-bench PART` (e.g. `--duration 10 --reps 5`, `--rates
/// 1000,max`, `--recorders natrec,conntrack-E`; `--help` lists them).
///
/// `workspace` is the workspace root, `target` the cargo target directory.
pub fn lab_part(part: &str, workspace: &Path, target: &Path, args: &[String]) -> Result<()> {
    run(cargo(workspace).args(["build", "--release", "-p", "recorder", "--bin", "natrec"]))?;
    let natrec = target.join("release").join("natrec");
    run(cargo(workspace)
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "natrec-tests",
            "--bin",
            "natrec-bench",
            "--",
            part,
            "--natrec",
        ])
        .arg(&natrec)
        .args(args))
}

/// Builds the release `natrec` and `natrec-gen` and runs the storage comparison; `args` go to
/// `natrec-bench storage` (e.g. `--flows 1000000`). It takes minutes: `zstd -19` and `xz -9` of
/// the other tools' logs are slow (that is one of the findings).
pub fn storage(workspace: &Path, target: &Path, args: &[String]) -> Result<()> {
    run(cargo(workspace).args([
        "build",
        "--release",
        "-p",
        "recorder",
        "--bin",
        "natrec",
        "--bin",
        "natrec-gen",
        "--features",
        "synth",
    ]))?;
    let natrec = target.join("release").join("natrec");
    run(cargo(workspace)
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "natrec-tests",
            "--bin",
            "natrec-bench",
            "--",
            "storage",
            "--natrec",
        ])
        .arg(&natrec)
        .args(args))
}

/// Builds the release `natrec` and `natrec-gen` and compares `natrec query` with `grep` and
/// `zstdgrep` on the same translations; `args` go to `natrec-bench query` (e.g. `--sizes
/// 1000000,10000000`; each size needs about 0.4 KB of disk per translation for the text log).
pub fn query(workspace: &Path, target: &Path, args: &[String]) -> Result<()> {
    run(cargo(workspace).args([
        "build",
        "--release",
        "-p",
        "recorder",
        "--bin",
        "natrec",
        "--bin",
        "natrec-gen",
        "--features",
        "synth",
    ]))?;
    let natrec = target.join("release").join("natrec");
    run(cargo(workspace)
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "natrec-tests",
            "--bin",
            "natrec-bench",
            "--",
            "query",
            "--natrec",
        ])
        .arg(&natrec)
        .args(args))
}

/// Regenerates `BENCHMARKS.md` from the files in `bench-results/` without measuring anything.
pub fn report(workspace: &Path) -> Result<()> {
    run(cargo(workspace).args([
        "run",
        "--quiet",
        "--release",
        "-p",
        "natrec-tests",
        "--bin",
        "natrec-bench",
        "--",
        "report",
    ]))
}
