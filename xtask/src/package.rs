//! `cargo xtask dist` and `cargo xtask deb`: what a gateway installs.
//!
//! `dist` builds natrec (release) and has it write its man pages (natrec(1), one per
//! subcommand, natrec.toml(5)) and its bash, zsh and fish completions into `target/dist/`
//! (`natrec generate`: they come from the command line's own definitions). `deb` then packs the
//! binary, `dist/natrec.service`, `dist/natrec.sysusers`, `dist/natrec.toml` (a conffile) and
//! those files with cargo-deb (`[package.metadata.deb]` in recorder/Cargo.toml), and checks the
//! package with lintian: any error fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::setup::{output, run};
use crate::{cargo, target_dir, workspace_root};

/// Where `dist` writes (a fixed place: recorder/Cargo.toml's assets name it).
pub fn dist_dir() -> PathBuf {
    workspace_root().join("target").join("dist")
}

pub fn dist() -> Result<PathBuf> {
    run(cargo().args(["build", "--release", "-p", "recorder", "--bin", "natrec"]))?;
    let natrec = target_dir().join("release").join("natrec");
    let dir = dist_dir();
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    run(Command::new(&natrec).arg("generate").arg(&dir))?;
    Ok(dir)
}

/// Builds the .deb and returns its path.
pub fn deb() -> Result<PathBuf> {
    dist()?;
    let out = target_dir().join("debian");
    let said = output(cargo().args(["deb", "-p", "recorder", "--no-build", "--output"]).arg(&out))?;
    let deb = said
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .with_context(|| format!("cargo deb named no .deb: {said}"))?;
    lintian(&deb)?;
    eprintln!("deb: {}", deb.display());
    Ok(deb)
}

/// lintian on `deb`: its findings are printed, an error fails.
fn lintian(deb: &Path) -> Result<()> {
    let out = Command::new("lintian")
        .args(["--fail-on", "error", "--tag-display-limit", "0"])
        .arg(deb)
        .output()
        .context("running lintian (Debian package lintian; `cargo xtask setup` installs it)")?;
    let said = String::from_utf8_lossy(&out.stdout);
    eprint!("{said}{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("lintian found errors in {}", deb.display());
    }
    Ok(())
}
