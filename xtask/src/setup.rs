//! `cargo xtask setup`: everything a fresh machine needs, idempotent.
//!
//! 1. Debian packages the lab and the tests use (iproute2, nftables, conntrack, tcpdump, ping,
//!    zstd, xz, setpriv, systemd-analyze, prometheus; qemu, busybox and kmod for the kernel
//!    matrix of `cargo xtask vm`).
//! 2. The nightly toolchain's `rust-src` (the eBPF crate is built with `-Z build-std=core`).
//! 3. `bpf-linker`, built against the nightly's own LLVM (its major version and library name are
//!    read from `rustc +nightly -vV` and the sysroot, never hard-coded).
//! 4. `cargo-fuzz`, which `cargo xtask fuzz` runs.
//!
//! `cargo xtask deb` adds lintian and `cargo-deb` ([`deb_tools`]).
//!
//! Each step checks first and does nothing when its result is already there.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

/// (binary that proves the package is there, Debian package).
const PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("conntrack", "conntrack"),
    ("tcpdump", "tcpdump"),
    ("ping", "iputils-ping"),
    ("zstd", "zstd"),
    ("xz", "xz-utils"),
    ("setpriv", "util-linux"),
    ("systemd-analyze", "systemd"),
    ("prometheus", "prometheus"),
    // The kernel matrix (cargo xtask vm): qemu boots Debian's kernels with a busybox initramfs.
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("busybox", "busybox-static"),
    ("dpkg-deb", "dpkg"),
    ("depmod", "kmod"),
];

/// bpf-linker release line known to work with the nightly's LLVM here.
const BPF_LINKER_VERSION: &str = "~0.13";

fn have_binary(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
        || ["/usr/sbin", "/sbin"].iter().any(|d| Path::new(d).join(name).is_file())
}

/// Runs a command, echoing it; fails with its status.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs a command and returns its standard output.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn step(name: &str, f: impl FnOnce() -> Result<bool>) -> Result<()> {
    let t = Instant::now();
    let did = f().with_context(|| format!("setup step: {name}"))?;
    if did {
        eprintln!("setup: {name}: done in {:.1}s", t.elapsed().as_secs_f64());
    } else {
        eprintln!("setup: {name}: already in place");
    }
    Ok(())
}

pub fn setup() -> Result<()> {
    let t = Instant::now();
    step("Debian packages", packages)?;
    step("nightly toolchain with rust-src", nightly_rust_src)?;
    step("bpf-linker", bpf_linker)?;
    step("cargo-fuzz", cargo_fuzz)?;
    eprintln!("setup: finished in {:.1}s", t.elapsed().as_secs_f64());
    Ok(())
}

/// Installs what the benchmarks compare natrec with (ulogd2 and its JSON plugin, zstd, xz); the
/// IPv6 import test reads ulogd2's JSON too.
pub fn bench_packages() -> Result<()> {
    step("benchmark packages", || {
        let json_plugin =
            Path::new("/usr/lib/x86_64-linux-gnu/ulogd/ulogd_output_JSON.so").exists();
        if have_binary("ulogd") && json_plugin && have_binary("zstd") && have_binary("xz") {
            return Ok(false);
        }
        install(crate::bench::PACKAGES)?;
        Ok(true)
    })
}

fn packages() -> Result<bool> {
    let missing: Vec<&str> =
        PACKAGES.iter().filter(|(bin, _)| !have_binary(bin)).map(|(_, pkg)| *pkg).collect();
    if missing.is_empty() {
        return Ok(false);
    }
    install(&missing)?;
    Ok(true)
}

fn install(missing: &[&str]) -> Result<()> {
    eprintln!("setup: installing {}", missing.join(" "));
    if !have_binary("apt-get") {
        bail!(
            "packages {} are missing and there is no apt-get: install them by hand",
            missing.join(", ")
        );
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    // Packages with a daemon (prometheus) must not start it: the tests start their own.
    let _no_daemons = NoDaemons::new()?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(())
}

/// Debian's policy-rc.d (invoke-rc.d(8)) forbidding every service start while it lives; left
/// alone where the machine has one already.
struct NoDaemons(Option<PathBuf>);

impl NoDaemons {
    fn new() -> Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = PathBuf::from("/usr/sbin/policy-rc.d");
        if path.exists() {
            return Ok(Self(None));
        }
        std::fs::write(
            &path,
            "#!/bin/sh\n# cargo xtask setup: no daemon starts while installing\nexit 101\n",
        )
        .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)))
        .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self(Some(path)))
    }
}

impl Drop for NoDaemons {
    fn drop(&mut self) {
        if let Some(p) = &self.0
            && let Err(e) = std::fs::remove_file(p)
        {
            eprintln!("setup: could not remove {}: {e}", p.display());
        }
    }
}

fn nightly_rust_src() -> Result<bool> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    let mut did = false;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
        did = true;
    }
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
        did = true;
    }
    Ok(did)
}

/// What `cargo xtask lint` needs: rustfmt and clippy for the stable toolchain (the host crates)
/// and clippy for the nightly (the eBPF crate, on its bpf target).
pub fn lint_components() -> Result<()> {
    step("rustfmt and clippy", || {
        let mut did = false;
        for (toolchain, components) in
            [("stable", &["rustfmt", "clippy"][..]), ("nightly", &["clippy"][..])]
        {
            let installed = output(Command::new("rustup").args([
                "component",
                "list",
                "--toolchain",
                toolchain,
                "--installed",
            ]))?;
            for c in components {
                if !installed.lines().any(|l| l.starts_with(c)) {
                    run(Command::new("rustup").args([
                        "component",
                        "add",
                        c,
                        "--toolchain",
                        toolchain,
                    ]))?;
                    did = true;
                }
            }
        }
        Ok(did)
    })
}

/// The nightly's LLVM: (major version, directory of its shared library, library name for `-l`).
fn nightly_llvm() -> Result<(u32, PathBuf, String)> {
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let version = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("`rustc +nightly -vV` names no LLVM version")?;
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("unexpected LLVM version {version:?}"))?;
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let lib = PathBuf::from(sysroot.trim()).join("lib");
    let prefix = format!("libLLVM-{major}");
    let name = std::fs::read_dir(&lib)
        .with_context(|| format!("listing {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with(&prefix) && n.ends_with(".so"))
        .with_context(|| {
            format!("no {prefix}*.so in {}: the nightly ships no LLVM library", lib.display())
        })?;
    let link_name = name.trim_start_matches("lib").trim_end_matches(".so").to_owned();
    Ok((major, lib, link_name))
}

/// What `cargo xtask deb` needs beyond [`setup`]: lintian and cargo-deb.
pub fn deb_tools() -> Result<()> {
    step("lintian", || {
        if have_binary("lintian") {
            return Ok(false);
        }
        install(&["lintian"])?;
        Ok(true)
    })?;
    step("cargo-deb", cargo_deb)
}

/// cargo-deb release line `cargo xtask deb` is written for.
const CARGO_DEB_VERSION: &str = "~3.8";

fn cargo_deb() -> Result<bool> {
    if Command::new("cargo-deb").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Ok(false);
    }
    eprintln!("setup: building cargo-deb; about two minutes");
    run(Command::new("cargo").args([
        "install",
        "cargo-deb",
        "--locked",
        "--version",
        CARGO_DEB_VERSION,
    ]))?;
    Ok(true)
}

/// cargo-fuzz release line `cargo xtask fuzz` is written for.
const CARGO_FUZZ_VERSION: &str = "~0.13";

fn cargo_fuzz() -> Result<bool> {
    if Command::new("cargo").args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success())
    {
        return Ok(false);
    }
    eprintln!("setup: building cargo-fuzz; about a minute");
    run(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))?;
    Ok(true)
}

fn bpf_linker() -> Result<bool> {
    if Command::new("bpf-linker").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Ok(false);
    }
    let (major, lib, link_name) = nightly_llvm()?;
    eprintln!(
        "setup: building bpf-linker against the nightly's LLVM {major} ({link_name}); about a minute"
    );
    let rustflags = format!(
        "-L {} -l dylib={link_name} -C link-arg=-Wl,-rpath,{}",
        lib.display(),
        lib.display()
    );
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{major},no-llvm-linking"))
        .env("RUSTFLAGS", rustflags))?;
    Ok(true)
}
