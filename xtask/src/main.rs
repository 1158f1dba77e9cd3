//! `cargo xtask`: natrec's developer commands.
//!
//! xtask depends on nothing of natrec's own (building `recorder` needs the very toolchain pieces
//! `setup` installs); every other command runs `setup` first, then cargo.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench;
mod cpio;
mod fuzz;
mod package;
mod setup;
mod vm;

use setup::run;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "natrec developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what a fresh machine lacks (Debian packages, nightly rust-src, bpf-linker,
    /// cargo-fuzz).
    Setup,
    /// `cargo fmt --check`, and clippy with warnings denied for the host crates and for the eBPF
    /// crate on its bpf target (what CI runs before the tests).
    Lint,
    /// Set up, build natrec and its .deb, run every test, then the kernel matrix (`vm`; what CI
    /// runs). NATREC_TESTS_NO_VM=1 leaves the matrix out, as does a test filter.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, and run the demo lab: a NAT gateway in network namespaces, natrec
    /// recording on its WAN, traffic, the captured translations, a query; then tear down.
    Demo,
    /// Run the benchmarks: `capture` (natrec against conntrack -E and ulogd2 in the lab),
    /// `store` (criterion, then natrec's segments against the others' logs), `query` (criterion
    /// point queries, then natrec query against grep/zstdgrep), `forward` (what each recorder
    /// costs the packet path: established traffic, machine-wide tax, per-program cost),
    /// `report`, or all; results go to BENCHMARKS.md and bench-results/.
    Bench {
        /// Which part: capture, store, query or report (default: all but report).
        part: Option<String>,
        /// Extra arguments for natrec-bench (see `natrec-bench --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The packet-capture ground-truth harness: every packet that left the lab's gateway is
    /// attributed by natrec and checked against the inside capture.
    Harness {
        /// Stress mode: new flows at the highest rate the lab sustains (not pass/fail).
        #[arg(long)]
        stress: bool,
        /// Extra arguments (see `natrec-harness --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build natrec and write its man pages and shell completions into target/dist/.
    Dist,
    /// Build the Debian package (target/debian/natrec_*.deb) and check it with lintian.
    Deb,
    /// Build natrec and install it without a package: /usr/local/bin, the unit in
    /// /etc/systemd/system, the sysusers file, man pages, completions, and the config if absent.
    Install {
        /// Install under this directory instead of / (for staging; no user is created).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Run the kernel-dependent tests in qemu guests, one per kernel of the matrix (Debian 12's
    /// 6.1 and 6.12): capture (IPv4 and IPv6), drops, ctnetlink, the end source chosen, a short harness run.
    Vm {
        /// Only this kernel of the matrix (repeatable; default: all).
        #[arg(long = "kernel")]
        kernels: Vec<String>,
        /// Seconds one guest may run, boot to power-off, before it is killed and fails.
        #[arg(long, default_value_t = vm::DEFAULT_TIMEOUT.as_secs())]
        timeout: u64,
        /// Only this step (repeatable; default: all): end-source, capture, capture_v6, drops,
        /// conntrack_netlink, harness.
        #[arg(long = "step")]
        steps: Vec<String>,
        /// Keep the run's directory under target/vm/ (initramfs, kernels, consoles).
        #[arg(long)]
        keep: bool,
    },
    /// Build the fuzz targets of fuzz/ (cargo-fuzz, nightly) and run each for a while: the
    /// decoders of segment files, ctnetlink messages and imported log lines. Fails naming the
    /// target and the crash input (kept in fuzz/artifacts/TARGET/) when one crashes.
    Fuzz {
        /// Seconds each target runs.
        #[arg(long, default_value_t = 20)]
        time: u64,
        /// Only this target (repeatable; default: all, as `cargo fuzz list` names them).
        #[arg(long = "target")]
        targets: Vec<String>,
    },
    /// Generate the synthetic ISP workload (arguments go to natrec-gen; see --help).
    Gen {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

/// Cargo in the workspace root. Commands there build the default members: everything but the
/// eBPF crate, which only `recorder/build.rs` builds (for the bpf target).
fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Setup => setup::setup(),
        Cmd::Lint => {
            setup::setup()?;
            setup::lint_components()?;
            run(cargo().args(["fmt", "--all", "--check"]))?;
            run(cargo().args([
                "clippy",
                "--workspace",
                "--exclude",
                "recorder-ebpf",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ]))?;
            // The eBPF crate builds only for the bpf target, as recorder/build.rs builds it.
            run(Command::new("rustup").current_dir(workspace_root()).args([
                "run",
                "nightly",
                "cargo",
                "clippy",
                "-p",
                "recorder-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--bins",
                "--",
                "-D",
                "warnings",
            ]))
        }
        Cmd::Test { args } => {
            setup::setup()?;
            // tests/tests/import_v6.rs imports what conntrack -E and ulogd2 (JSON) log.
            setup::bench_packages()?;
            run(cargo().args(["build", "--bins"]))?;
            let natrec = target_dir().join("debug").join("natrec");
            // tests/tests/package.rs installs the package (unless NATREC_TESTS_NO_PACKAGE=1).
            let deb = if std::env::var_os("NATREC_TESTS_NO_PACKAGE").is_some() {
                None
            } else {
                setup::deb_tools()?;
                Some(package::deb()?)
            };
            let mut test = cargo();
            test.args(["test", "--no-fail-fast"]).args(&args).env("NATREC_BIN", &natrec);
            if let Some(deb) = deb {
                test.env("NATREC_DEB", deb);
            }
            let tests = run(&mut test);
            // The kernel matrix: the same capture tests on the kernels gateways run, in qemu.
            let matrix = if std::env::var_os("NATREC_TESTS_NO_VM").is_some() {
                eprintln!("xtask: the kernel matrix is skipped: NATREC_TESTS_NO_VM is set");
                Ok(())
            } else if !args.is_empty() {
                eprintln!(
                    "xtask: the kernel matrix is skipped with a test filter (cargo xtask vm runs it)"
                );
                Ok(())
            } else {
                vm::run_matrix(&vm::Options::default())
            };
            match (tests, matrix) {
                (Ok(()), Ok(())) => Ok(()),
                (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
                (Err(t), Err(m)) => Err(t.context(format!("and {m:#}"))),
            }
        }
        Cmd::Demo => {
            setup::setup()?;
            run(cargo().args(["build", "--bins"]))?;
            let natrec = target_dir().join("debug").join("natrec");
            run(cargo()
                .args(["run", "--quiet", "-p", "natrec-tests", "--bin", "natrec-demo", "--"])
                .arg(&natrec))
        }
        Cmd::Bench { part, args } => {
            setup::setup()?;
            let parts: Vec<&str> = match part.as_deref() {
                None | Some("all") => vec!["capture", "store", "query", "forward"],
                Some(p @ ("capture" | "store" | "query" | "forward" | "report")) => vec![p],
                Some(other) => {
                    anyhow::bail!(
                        "unknown benchmark {other:?}: expected capture, store, query, forward or report"
                    )
                }
            };
            let (root, target) = (workspace_root(), target_dir());
            for p in parts {
                match p {
                    "capture" | "forward" => {
                        setup::bench_packages()?;
                        bench::lab_part(p, &root, &target, &args)?;
                    }
                    // natrec's own criterion bench, then its segments against the other tools' logs.
                    "store" => {
                        setup::bench_packages()?;
                        run(cargo().args(["bench", "-p", "recorder", "--bench", "store"]))?;
                        bench::storage(&root, &target, &args)?;
                    }
                    // Point queries over the synthetic store, then natrec query against grep/zstdgrep.
                    "query" => {
                        setup::bench_packages()?;
                        run(cargo().args(["bench", "-p", "recorder", "--bench", "query"]))?;
                        bench::query(&root, &target, &args)?;
                    }
                    _ => bench::report(&root)?,
                }
            }
            Ok(())
        }
        Cmd::Harness { stress, args } => {
            setup::setup()?;
            run(cargo().args(["build", "--release", "-p", "recorder", "--bins"]))?;
            let natrec = target_dir().join("release").join("natrec");
            run(cargo()
                .args([
                    "run",
                    "--quiet",
                    "--release",
                    "-p",
                    "natrec-tests",
                    "--bin",
                    "natrec-harness",
                    "--",
                ])
                .args(stress.then_some("--stress"))
                .args(&args)
                .env("NATREC_BIN", &natrec))
        }
        Cmd::Dist => {
            setup::setup()?;
            package::dist().map(drop)
        }
        Cmd::Deb => {
            setup::setup()?;
            setup::deb_tools()?;
            package::deb().map(drop)
        }
        Cmd::Install { root } => {
            setup::setup()?;
            package::install(&root)
        }
        Cmd::Vm { kernels, timeout, steps, keep } => {
            setup::setup()?;
            vm::run_matrix(&vm::Options {
                kernels,
                timeout: std::time::Duration::from_secs(timeout),
                steps,
                keep,
            })
        }
        Cmd::Fuzz { time, targets } => {
            setup::setup()?;
            fuzz::fuzz(&workspace_root(), time, &targets)
        }
        Cmd::Gen { args } => {
            setup::setup()?;
            run(cargo()
                .args([
                    "run",
                    "--quiet",
                    "--release",
                    "-p",
                    "recorder",
                    "--bin",
                    "natrec-gen",
                    "--features",
                    "synth",
                    "--",
                ])
                .args(&args))
        }
    }
}
