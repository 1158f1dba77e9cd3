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

/// `cargo xtask install`: natrec without a package manager. Builds it (release) and its dist
/// files, then installs under `root` (normally `/`) what the .deb holds, in the places a local
/// install takes: the binary in /usr/local/bin, the unit in /etc/systemd/system (its ExecStart
/// pointing there), the sysusers file in /etc/sysusers.d, man pages and completions under
/// /usr/local/share, and /etc/natrec/natrec.toml unless one exists (an operator's config is
/// never overwritten). With `root` = `/` it then creates the user (systemd-sysusers).
pub fn install(root: &Path) -> Result<()> {
    let dist = dist()?;
    let natrec = target_dir().join("release").join("natrec");
    let placed = install_into(root, &natrec, &workspace_root().join("dist"), &dist)?;
    for p in &placed {
        eprintln!("install: {}", p.display());
    }
    if root == Path::new("/") {
        run(Command::new("systemd-sysusers").arg("/etc/sysusers.d/natrec.conf"))?;
        eprintln!(
            "install: set wan in /etc/natrec/natrec.toml, then: systemctl daemon-reload && systemctl enable --now natrec"
        );
    }
    Ok(())
}

/// The files of [`install`], placed under `root`; returns them.
fn install_into(root: &Path, natrec: &Path, src: &Path, generated: &Path) -> Result<Vec<PathBuf>> {
    use std::os::unix::fs::PermissionsExt as _;

    let mut placed = Vec::new();
    let mut put = |bytes: Vec<u8>, dest: &str, mode: u32| -> Result<()> {
        let to = root.join(dest.trim_start_matches('/'));
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&to, bytes).with_context(|| format!("writing {}", to.display()))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", to.display()))?;
        placed.push(to);
        Ok(())
    };
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    put(read(natrec)?, "/usr/local/bin/natrec", 0o755)?;
    let unit = String::from_utf8(read(&src.join("natrec.service"))?).context("unit is UTF-8")?;
    let unit = unit.replace("ExecStart=/usr/bin/natrec", "ExecStart=/usr/local/bin/natrec");
    put(unit.into_bytes(), "/etc/systemd/system/natrec.service", 0o644)?;
    put(read(&src.join("natrec.sysusers"))?, "/etc/sysusers.d/natrec.conf", 0o644)?;
    if !root.join("etc/natrec/natrec.toml").exists() {
        put(read(&src.join("natrec.toml"))?, "/etc/natrec/natrec.toml", 0o644)?;
    }
    let man = generated.join("man");
    for ent in std::fs::read_dir(&man).with_context(|| format!("listing {}", man.display()))? {
        let path = ent?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let section = name.rsplit('.').next().unwrap_or("1").to_owned();
        put(read(&path)?, &format!("/usr/local/share/man/man{section}/{name}"), 0o644)?;
    }
    let comp = generated.join("completions");
    for (file, dest) in [
        ("natrec.bash", "/usr/local/share/bash-completion/completions/natrec"),
        ("_natrec", "/usr/local/share/zsh/site-functions/_natrec"),
        ("natrec.fish", "/usr/local/share/fish/vendor_completions.d/natrec.fish"),
    ] {
        put(read(&comp.join(file))?, dest, 0o644)?;
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_places_every_file_points_the_unit_at_it_and_keeps_an_existing_config() {
        let tmp = std::env::temp_dir().join(format!("natrec-xtask-install-{}", std::process::id()));
        let (root, generated) = (tmp.join("root"), tmp.join("dist"));
        for d in ["man", "completions"] {
            std::fs::create_dir_all(generated.join(d)).expect("mkdir");
        }
        for f in ["man/natrec.1", "man/natrec-record.1", "man/natrec.toml.5"] {
            std::fs::write(generated.join(f), f).expect("write");
        }
        for f in ["natrec.bash", "_natrec", "natrec.fish"] {
            std::fs::write(generated.join("completions").join(f), f).expect("write");
        }
        let bin = tmp.join("natrec");
        std::fs::write(&bin, "binary").expect("write");
        let src = workspace_root().join("dist");
        std::fs::create_dir_all(root.join("etc/natrec")).expect("mkdir");
        std::fs::write(root.join("etc/natrec/natrec.toml"), "# the operator's").expect("write");

        let placed = install_into(&root, &bin, &src, &generated).expect("install");
        let at = |p: &str| root.join(p);
        let unit = std::fs::read_to_string(at("etc/systemd/system/natrec.service")).expect("unit");
        assert!(unit.contains("\nExecStart=/usr/local/bin/natrec record\n"), "{unit}");
        assert_eq!(std::fs::read_to_string(at("usr/local/bin/natrec")).expect("bin"), "binary");
        for f in [
            "etc/sysusers.d/natrec.conf",
            "usr/local/share/man/man1/natrec-record.1",
            "usr/local/share/man/man5/natrec.toml.5",
            "usr/local/share/zsh/site-functions/_natrec",
        ] {
            assert!(at(f).is_file(), "{f} missing: {placed:?}");
        }
        let config = std::fs::read_to_string(at("etc/natrec/natrec.toml")).expect("config");
        assert_eq!(config, "# the operator's", "an existing config is kept");
        std::fs::remove_dir_all(&tmp).expect("clean up");
    }
}
