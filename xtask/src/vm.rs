//! `cargo xtask vm`: natrec's kernel-dependent tests in qemu guests, one per kernel of a matrix
//! of the kernels gateways run. This machine's own kernel is covered by the normal test run.
//!
//! For each kernel of [`MATRIX`]:
//! 1. The kernel comes from Debian's package (`apt-get download`, cached in
//!    `target/vm/cache/`; nothing else is kept), extracted with `dpkg-deb -x`, with its module
//!    dependencies computed by `depmod -b`.
//! 2. An initramfs is written (see [`crate::cpio`]): busybox, the host's own `ip`, `nft`,
//!    `conntrack`, `tcpdump`, `sysctl`, `setpriv` and `ping` with the libraries `ldd` names, natrec and
//!    the test binaries (debug info stripped), the closure of the modules the lab needs, and an
//!    `/init` that mounts what the tests use, loads the modules and runs each [`Step`] between
//!    two sentinel lines on the serial console.
//! 3. qemu boots it under TCG (this machine has no working KVM); the console is read line by line
//!    and kept in the run's directory. A guest that does not power off before `--timeout` is
//!    killed (by its PID) and fails the run, as does any step that does not end with status 0.
//!
//! The guests get `NATREC_TESTS_SLOWDOWN` (the tests stretch their waits by it under TCG) and
//! `NATREC_TESTS_EXPECT_ENDS` (the end source natrec must choose on that kernel, with no warning
//! about a refused program).

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::cpio;
use crate::setup::{output, run};
use crate::{cargo, target_dir};

/// A kernel of the matrix.
pub struct Kernel {
    /// Whether conntrack frees an expired entry at once there, so that the end probe's lateness
    /// correction cannot be exercised (`NATREC_TESTS_REAPED_AT_EXPIRY`).
    pub reaped_at_expiry: bool,
    /// Its name in reports and for `--kernel`.
    pub name: &'static str,
    /// The Debian package that names the newest image of its line (a meta-package).
    pub package: &'static str,
    /// Where natrec must take translations' ends from there (`NATREC_TESTS_EXPECT_ENDS`: `kprobe`,
    /// `tracepoint`, `ebpf` for either probe, or `ctnetlink`).
    pub ends: &'static str,
}

/// The kernels gateways run that Debian's archive serves here. Debian 12 has no kernel before
/// 6.1, so the ctnetlink-only path of older kernels is tested on this machine only (with
/// `--ends ctnetlink`).
pub const MATRIX: &[Kernel] = &[
    Kernel {
        name: "debian12-6.1",
        package: "linux-image-cloud-amd64",
        ends: "kprobe",
        reaped_at_expiry: true,
    },
    Kernel {
        name: "debian12-6.12",
        package: "linux-image-6.12-cloud-amd64",
        ends: "kprobe",
        reaped_at_expiry: true,
    },
];

/// How long one guest may run by default: about twice what a guest takes here.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// How much longer than natively the tests may wait for an event under TCG.
const SLOWDOWN: u32 = 10;

/// Modules the lab needs where the kernel builds them as modules (their closure is loaded).
const MODULES: &[&str] = &[
    "nf_conntrack",
    "nf_conntrack_netlink",
    "nf_nat",
    "nf_tables",
    "nft_chain_nat",
    "nft_nat",
    "nft_masq",
    "nft_ct",
    "nft_limit",
    "veth",
    "sch_ingress",
    "cls_bpf",
];

/// The host's tools the tests run, put at the same path in the guest.
const TOOLS: &[&str] = &["ip", "nft", "conntrack", "tcpdump", "sysctl", "setpriv", "ping"];

/// What the guest runs, in order.
struct Step {
    name: &'static str,
    what: What,
}

enum What {
    /// A test binary of `natrec-tests` (its target name) with `cargo test`'s harness arguments.
    Test(&'static str, &'static [&'static str]),
    /// `natrec-harness` with these arguments: a short packet-capture run, 0 wrong, 0 missing.
    Harness(&'static [&'static str]),
}

/// The end-source check, by name (it prints natrec's start-up time).
const END_SOURCE_TEST: &str = "natrec_takes_ends_from_the_source_this_kernel_has";

const STEPS: &[Step] = &[
    Step {
        name: "end-source",
        what: What::Test("capture", &["--exact", END_SOURCE_TEST, "--nocapture"]),
    },
    Step { name: "capture", what: What::Test("capture", &["--skip", END_SOURCE_TEST]) },
    Step { name: "capture_v6", what: What::Test("capture_v6", &[]) },
    Step { name: "drops", what: What::Test("drops", &[]) },
    Step { name: "conntrack_netlink", what: What::Test("conntrack_netlink", &[]) },
    Step { name: "harness", what: What::Harness(&["--flows", "200", "--phase", "6"]) },
];

/// Where the guest finds natrec and the test binaries.
const GUEST_NATREC: &str = "usr/local/bin/natrec";
const GUEST_HARNESS: &str = "usr/local/bin/natrec-harness";
const GUEST_TESTS: &str = "opt/natrec/tests";

/// What `cargo xtask vm` was asked.
#[derive(Default)]
pub struct Options {
    /// Only these kernels of the matrix (all when empty).
    pub kernels: Vec<String>,
    /// How long one guest may run, boot to power-off ([`DEFAULT_TIMEOUT`] when zero).
    pub timeout: Duration,
    /// Only these steps (all when empty).
    pub steps: Vec<String>,
    /// Keep the run's directory (initramfs, extracted kernels, consoles).
    pub keep: bool,
}

/// What one guest did.
struct GuestReport {
    kernel: String,
    release: String,
    /// Host wall time from qemu's start to `/init`, and to the modules loaded.
    to_init: Option<Duration>,
    to_ready: Option<Duration>,
    /// Each step: name, exit status, wall time.
    steps: Vec<(String, Option<i32>, Duration)>,
    /// natrec's own start-up to `ready: recording`, as the end-source check measured it.
    natrec_ready: Option<String>,
    total: Duration,
    problems: Vec<String>,
}

pub fn run_matrix(opts: &Options) -> Result<()> {
    let kernels = pick(MATRIX, &opts.kernels, |k| k.name, "kernel")?;
    let steps = pick(STEPS, &opts.steps, |s| s.name, "step")?;
    let binaries = build(&steps)?;
    let vm_dir = target_dir().join("vm");
    let cache = vm_dir.join("cache");
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    remove_stale_runs(&vm_dir)?;
    let work = vm_dir.join(format!("run-{}", std::process::id()));
    let _work = WorkDir::new(work.clone(), opts.keep)?;

    let (mut reports, mut debs) = (Vec::new(), Vec::new());
    for kernel in &kernels {
        let deb = fetch_kernel(kernel, &cache)?;
        debs.push(deb.clone());
        let dir = work.join(kernel.name);
        let (vmlinuz, initrd) = prepare(kernel, &steps, &deb, &dir, &binaries)?;
        let console = dir.join("console.log");
        let timeout = if opts.timeout.is_zero() { DEFAULT_TIMEOUT } else { opts.timeout };
        reports.push(boot(kernel, &steps, &vmlinuz, &initrd, &console, timeout)?);
    }
    if kernels.len() == MATRIX.len() {
        prune_cache(&cache, &debs)?;
    }
    let table = summary(&reports);
    eprintln!("{table}");
    let failed: Vec<&str> =
        reports.iter().filter(|r| !r.problems.is_empty()).map(|r| r.kernel.as_str()).collect();
    if !failed.is_empty() {
        bail!("the kernel matrix failed on {}", failed.join(", "));
    }
    Ok(())
}

/// The items of `all` named in `wanted` (all of them when it is empty); an unknown name is an
/// error that lists the known ones.
fn pick<'a, T>(
    all: &'a [T],
    wanted: &[String],
    name: impl Fn(&T) -> &'static str,
    what: &str,
) -> Result<Vec<&'a T>> {
    if wanted.is_empty() {
        return Ok(all.iter().collect());
    }
    wanted
        .iter()
        .map(|want| {
            all.iter().find(|t| name(t) == want).with_context(|| {
                let names: Vec<&str> = all.iter().map(&name).collect();
                format!("no {what} {want:?} (there are {})", names.join(", "))
            })
        })
        .collect()
}

/// Removes the directories of earlier runs whose xtask no longer lives (killed before it could
/// clean up).
fn remove_stale_runs(vm_dir: &Path) -> Result<()> {
    for entry in
        std::fs::read_dir(vm_dir).with_context(|| format!("listing {}", vm_dir.display()))?
    {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let Some(pid) = name.strip_prefix("run-").and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing the stale {}", path.display()))?;
            eprintln!("vm: removed {} (its run was killed)", path.display());
        }
    }
    Ok(())
}

/// The run's directory, removed at the end (also on failure) unless `--keep`.
struct WorkDir(PathBuf, bool);

impl WorkDir {
    fn new(path: PathBuf, keep: bool) -> Result<Self> {
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path, keep))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.1 {
            eprintln!("vm: kept {}", self.0.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("vm: could not remove {}: {e}", self.0.display());
        }
    }
}

/// The binaries the guest runs: natrec, natrec-harness, and each test target's executable.
struct Binaries {
    natrec: PathBuf,
    harness: PathBuf,
    tests: Vec<(String, PathBuf)>,
}

fn build(steps: &[&Step]) -> Result<Binaries> {
    run(cargo().args(["build", "--bins"]))?;
    let targets: BTreeSet<&str> = steps
        .iter()
        .filter_map(|s| match s.what {
            What::Test(t, _) => Some(t),
            What::Harness(_) => None,
        })
        .collect();
    let mut cmd = cargo();
    cmd.args(["test", "-p", "natrec-tests", "--no-run", "--message-format=json"]);
    for t in &targets {
        cmd.args(["--test", t]);
    }
    let said = output(cmd.stderr(Stdio::inherit()))?;
    let mut tests = Vec::new();
    for line in said.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let (Some(name), Some(exe)) = (msg["target"]["name"].as_str(), msg["executable"].as_str())
        else {
            continue;
        };
        if targets.contains(name) && msg["target"]["kind"][0] == "test" {
            tests.push((name.to_owned(), PathBuf::from(exe)));
        }
    }
    for t in &targets {
        if !tests.iter().any(|(n, _)| n == t) {
            bail!("cargo test --no-run named no executable for the test target {t}");
        }
    }
    let debug = target_dir().join("debug");
    Ok(Binaries { natrec: debug.join("natrec"), harness: debug.join("natrec-harness"), tests })
}

/// The concrete package `kernel.package` stands for now, from apt's lists (updated once if
/// they do not know it).
fn resolve(kernel: &Kernel) -> Result<String> {
    let depends = || -> Result<Option<String>> {
        let out = Command::new("apt-cache")
            .args(["depends", "--no-recommends", "--no-suggests", kernel.package])
            .output()
            .context("running apt-cache (is this a Debian machine?)")?;
        let said = String::from_utf8_lossy(&out.stdout);
        Ok(said
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with("linux-image-"))
            .map(str::to_owned))
    };
    if let Some(p) = depends()? {
        return Ok(p);
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    depends()?.with_context(|| {
        format!("apt knows no kernel image for {} ({})", kernel.package, kernel.name)
    })
}

/// The kernel's .deb in the cache, downloaded if it is not there.
fn fetch_kernel(kernel: &Kernel, cache: &Path) -> Result<PathBuf> {
    let package = resolve(kernel)?;
    if let Some(deb) = cached(cache, &package)? {
        eprintln!("vm: {}: {} (cached)", kernel.name, deb.display());
        return Ok(deb);
    }
    // apt's sandbox user cannot write into target/: download unsandboxed, quietly.
    run(Command::new("apt-get")
        .args(["download", "-qq", "-o", "APT::Sandbox::User=root", &package])
        .current_dir(cache))?;
    let deb = cached(cache, &package)?
        .with_context(|| format!("apt-get download {package} left no .deb in the cache"))?;
    eprintln!("vm: {}: downloaded {}", kernel.name, deb.display());
    Ok(deb)
}

fn cached(cache: &Path, package: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    for entry in std::fs::read_dir(cache).with_context(|| format!("listing {}", cache.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Removes the cached kernels other than `used`, the whole matrix's (superseded versions).
fn prune_cache(cache: &Path, used: &[PathBuf]) -> Result<()> {
    for entry in std::fs::read_dir(cache)? {
        let path = entry?.path();
        if !used.contains(&path) {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            eprintln!("vm: removed the superseded {}", path.display());
        }
    }
    Ok(())
}

/// Extracts the kernel into `dir` and writes the initramfs; returns (vmlinuz, initrd).
fn prepare(
    kernel: &Kernel,
    steps: &[&Step],
    deb: &Path,
    dir: &Path,
    bins: &Binaries,
) -> Result<(PathBuf, PathBuf)> {
    let root = dir.join("kernel");
    std::fs::create_dir_all(&root)?;
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
    let modules = root.join("lib/modules");
    let release = std::fs::read_dir(&modules)
        .with_context(|| format!("{} has no lib/modules", deb.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .next()
        .with_context(|| format!("{} has no lib/modules/RELEASE", deb.display()))?;
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!("{} has no {}", deb.display(), vmlinuz.display());
    }
    run(Command::new("depmod").arg("-b").arg(&root).arg(&release))?;
    let initrd = dir.join("initrd.cpio");
    let t = Instant::now();
    let size = initramfs(kernel, steps, &root, &release, bins, dir, &initrd)?;
    eprintln!(
        "vm: {}: kernel {release}, initramfs {:.1} MB in {:.1}s",
        kernel.name,
        size as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    Ok((vmlinuz, initrd))
}

/// An initramfs being assembled: each guest path once.
struct Image {
    cpio: cpio::Writer<std::io::BufWriter<std::fs::File>>,
    paths: BTreeSet<String>,
}

impl Image {
    fn file(&mut self, guest: &str, mode: u32, data: &[u8]) -> Result<()> {
        if self.paths.insert(guest.to_owned()) {
            self.cpio.file(guest, mode, data).with_context(|| format!("writing {guest}"))?;
        }
        Ok(())
    }

    /// A host file at `guest` (its content: symbolic links are followed).
    fn host_file(&mut self, host: &Path, guest: &str) -> Result<()> {
        if self.paths.contains(guest) {
            return Ok(());
        }
        use std::os::unix::fs::PermissionsExt as _;
        let data = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        let mode = std::fs::metadata(host)?.permissions().mode();
        self.file(guest, mode, &data)
    }

    /// An ELF binary of the host at `guest`, with the shared libraries `ldd` names.
    fn elf(&mut self, host: &Path, guest: &str) -> Result<()> {
        self.host_file(host, guest)?;
        for lib in shared_libraries(host)? {
            let guest_lib = lib.to_string_lossy().trim_start_matches('/').to_owned();
            self.host_file(&lib, &guest_lib)?;
        }
        Ok(())
    }

    /// One of natrec's own binaries, without its debug information (a tenth of the size).
    fn stripped(&mut self, host: &Path, guest: &str, scratch: &Path) -> Result<()> {
        let out = scratch.join(guest.replace('/', "_"));
        run(Command::new("strip").arg("--strip-debug").arg("-o").arg(&out).arg(host))?;
        self.elf(&out, guest)?;
        std::fs::remove_file(&out)?;
        Ok(())
    }
}

/// The shared libraries (and the dynamic loader) `ldd` names for `bin`; none for a static one.
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(bin).output().context("running ldd")?;
    let said = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if said.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        bail!("ldd {}: {}", bin.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let mut libs = Vec::new();
    for line in said.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        } else if line.contains("not found") {
            bail!("ldd {}: {}", bin.display(), line.trim());
        }
    }
    Ok(libs)
}

fn host_tool(name: &str) -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("the host has no `{name}` (cargo xtask setup installs it)"))
}

/// The modules of [`MODULES`] and their dependencies, in load order (built-in ones left out).
fn module_closure(root: &Path, release: &str) -> Result<Vec<PathBuf>> {
    let mut order: Vec<PathBuf> = Vec::new();
    for m in MODULES {
        let said = output(
            Command::new(host_tool("modprobe")?)
                .arg("--show-depends")
                .arg("-d")
                .arg(root)
                .args(["-S", release, m]),
        )
        .with_context(|| format!("the module {m} of kernel {release}"))?;
        for line in said.lines() {
            if let Some(rest) = line.strip_prefix("insmod ") {
                let path = PathBuf::from(rest.split_whitespace().next().unwrap_or_default());
                if !order.contains(&path) {
                    order.push(path);
                }
            }
        }
    }
    Ok(order)
}

/// Writes the initramfs for `kernel` (extracted at `root`) to `dest`; returns its size.
fn initramfs(
    kernel: &Kernel,
    steps: &[&Step],
    root: &Path,
    release: &str,
    bins: &Binaries,
    scratch: &Path,
    dest: &Path,
) -> Result<u64> {
    let file =
        std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut img =
        Image { cpio: cpio::Writer::new(std::io::BufWriter::new(file)), paths: BTreeSet::new() };
    for dir in ["dev", "proc", "sys", "tmp", "run", "var", "root", "etc"] {
        img.cpio.dir(dir)?;
    }
    img.cpio.symlink("var/run", "../run")?;
    img.host_file(&host_tool("busybox")?, "bin/busybox")?;
    img.cpio.symlink("bin/sh", "busybox")?;
    for tool in TOOLS {
        let host = host_tool(tool)?;
        let guest = host.to_string_lossy().trim_start_matches('/').to_owned();
        img.elf(&host, &guest)?;
    }
    for etc in ["etc/protocols", "etc/services"] {
        let host = Path::new("/").join(etc);
        if host.is_file() {
            img.host_file(&host, etc)?;
        }
    }
    img.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
    img.file("etc/group", 0o644, b"root:x:0:\n")?;
    img.stripped(&bins.natrec, GUEST_NATREC, scratch)?;
    img.stripped(&bins.harness, GUEST_HARNESS, scratch)?;
    for (name, exe) in &bins.tests {
        img.stripped(exe, &format!("{GUEST_TESTS}/{name}"), scratch)?;
    }

    let mut order = String::new();
    for (i, module) in module_closure(root, release)?.iter().enumerate() {
        let name = module.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let data = if let Some(stem) = name.strip_suffix(".xz") {
            let out = Command::new("xz").arg("-dc").arg(module).output().context("running xz")?;
            if !out.status.success() {
                bail!("xz -dc {}: {}", module.display(), String::from_utf8_lossy(&out.stderr));
            }
            (stem.to_owned(), out.stdout)
        } else {
            (name.to_owned(), std::fs::read(module)?)
        };
        let guest = format!("lib/modules/{i:02}-{}", data.0);
        img.file(&guest, 0o644, &data.1)?;
        order.push_str(&format!("/{guest}\n"));
    }
    img.file("etc/natrec-vm/modules", 0o644, order.as_bytes())?;
    img.file("init", 0o755, init_script(kernel, steps).as_bytes())?;
    let out = img.cpio.finish()?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    Ok(file.metadata()?.len())
}

/// The guest's `/init`: mounts, modules, each step between sentinels, power-off.
fn init_script(kernel: &Kernel, steps: &[&Step]) -> String {
    let mut s = String::from(
        r#"#!/bin/busybox sh
# natrec's kernel-matrix guest (written by cargo xtask vm).
bb=/bin/busybox
up() { $bb cut -d' ' -f1 /proc/uptime; }
$bb mount -t proc proc /proc
$bb mount -t sysfs sys /sys
$bb mount -t devtmpfs dev /dev
$bb ln -s /proc/self/fd /dev/fd
$bb ln -s /proc/self/fd/0 /dev/stdin
$bb ln -s /proc/self/fd/1 /dev/stdout
$bb ln -s /proc/self/fd/2 /dev/stderr
$bb mkdir -p /dev/pts /dev/shm
$bb mount -t devpts devpts /dev/pts
$bb mount -t tmpfs tmpfs /dev/shm
$bb mount -t tmpfs tmpfs /tmp
$bb mount -t tmpfs tmpfs /run
$bb mount -t bpf bpf /sys/fs/bpf
$bb mount -t debugfs debugfs /sys/kernel/debug
$bb mount -t tracefs tracefs /sys/kernel/tracing
$bb mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo 1 > /proc/sys/kernel/sysrq
echo "natrec-vm: init $(up) $($bb uname -r)"
for m in $($bb cat /etc/natrec-vm/modules); do
    $bb insmod "$m" || echo "natrec-vm: error: insmod $m failed"
done
/usr/bin/ip link set lo up 2>/dev/null || /usr/sbin/ip link set lo up
echo "natrec-vm: ready $(up)"
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp
export NATREC_BIN=/usr/local/bin/natrec RUST_BACKTRACE=1
"#,
    );
    s.push_str(&format!(
        "export NATREC_TESTS_SLOWDOWN={SLOWDOWN} NATREC_TESTS_EXPECT_ENDS={}\n",
        kernel.ends
    ));
    if kernel.reaped_at_expiry {
        s.push_str("export NATREC_TESTS_REAPED_AT_EXPIRY=1\n");
    }
    s.push_str("cd /tmp\n");
    for step in steps {
        let line = match &step.what {
            What::Test(target, args) => {
                let mut l = format!("/{GUEST_TESTS}/{target}");
                for a in *args {
                    l.push(' ');
                    l.push_str(a);
                }
                l
            }
            What::Harness(args) => format!("/{GUEST_HARNESS} {}", args.join(" ")),
        };
        s.push_str(&format!(
            "echo \"natrec-vm: begin {n} $(up)\"\n{line}\necho \"natrec-vm: end {n} $? $(up)\"\n",
            n = step.name
        ));
    }
    s.push_str("echo \"natrec-vm: done $(up)\"\necho o > /proc/sysrq-trigger\n$bb sleep 30\n");
    s
}

/// Boots the guest, follows its console, and reports what ran.
fn boot(
    kernel: &Kernel,
    steps: &[&Step],
    vmlinuz: &Path,
    initrd: &Path,
    console: &Path,
    timeout: Duration,
) -> Result<GuestReport> {
    let mut cmd = Command::new(host_tool("qemu-system-x86_64")?);
    cmd.args(["-accel", "tcg,thread=multi", "-cpu", "max", "-m", "2G", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("vm: {}: booting", kernel.name);
    let start = Instant::now();
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().context("qemu's stdout")?;
    let stderr = child.stderr.take().context("qemu's stderr")?;
    let tx2 = tx.clone();
    let readers = [
        std::thread::spawn(move || forward(stdout, &tx, "")),
        std::thread::spawn(move || forward(stderr, &tx2, "qemu: ")),
    ];
    let mut log = std::fs::File::create(console)?;
    let mut report = GuestReport {
        kernel: kernel.name.to_owned(),
        release: String::new(),
        to_init: None,
        to_ready: None,
        steps: Vec::new(),
        natrec_ready: None,
        total: Duration::ZERO,
        problems: Vec::new(),
    };
    let mut step_start: Option<(String, Instant, usize)> = None;
    let mut lines: Vec<String> = Vec::new();
    let mut done = false;
    let deadline = start + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                writeln!(log, "{line}")?;
                lines.push(line.clone());
                match sentinel(&line).as_slice() {
                    ["natrec-vm:", "init", _, release, ..] => {
                        report.release = (*release).to_owned();
                        report.to_init = Some(start.elapsed());
                        eprintln!("vm: {}: /init after {:.1}s", kernel.name, secs(start.elapsed()));
                    }
                    ["natrec-vm:", "ready", ..] => report.to_ready = Some(start.elapsed()),
                    ["natrec-vm:", "error:", ..] => report.problems.push(line.clone()),
                    ["natrec-vm:", "begin", name, ..] => {
                        step_start = Some(((*name).to_owned(), Instant::now(), lines.len()));
                    }
                    ["natrec-vm:", "end", name, rc, ..] => {
                        let (began, from) = match step_start.take() {
                            Some((n, t, from)) if n == *name => (t, from),
                            _ => (Instant::now(), lines.len()),
                        };
                        let rc = rc.parse::<i32>().ok();
                        let took = began.elapsed();
                        eprintln!(
                            "vm: {}: {name}: {} in {:.1}s",
                            kernel.name,
                            if rc == Some(0) { "ok" } else { "FAILED" },
                            secs(took)
                        );
                        for l in lines[from..].iter().filter(|l| is_outcome(l)) {
                            eprintln!("vm: {}: {name}: {}", kernel.name, l.trim());
                        }
                        if rc != Some(0) {
                            eprintln!("---- {} {name}: console ----", kernel.name);
                            for l in &lines[from..] {
                                eprintln!("{l}");
                            }
                            eprintln!("---- end of {} {name} ----", kernel.name);
                            report.problems.push(format!("{name} exited with {rc:?}"));
                        }
                        report.steps.push(((*name).to_owned(), rc, took));
                    }
                    ["natrec-vm:", "done", ..] => done = true,
                    _ => {
                        if line.contains("natrec_ready_ms=") {
                            report.natrec_ready = line
                                .split("natrec_ready_ms=")
                                .nth(1)
                                .and_then(|r| r.split_whitespace().next())
                                .map(str::to_owned);
                        }
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                report.problems.push(format!(
                    "the guest did not finish within {}s; killed",
                    timeout.as_secs()
                ));
                // Our own child, by its PID.
                let _ = child.kill();
                break;
            }
        }
    }
    let status = child.wait().context("waiting for qemu")?;
    for r in readers {
        let _ = r.join();
    }
    report.total = start.elapsed();
    if let Some((name, _, from)) = step_start {
        eprintln!("---- {} {name} (unfinished): console ----", kernel.name);
        for l in &lines[from..] {
            eprintln!("{l}");
        }
        report.problems.push(format!("{name} never ended"));
    }
    if !done && report.problems.is_empty() {
        eprintln!("---- {}: console ----", kernel.name);
        for l in &lines {
            eprintln!("{l}");
        }
        report.problems.push(format!("the guest stopped before its last step ({status})"));
    }
    let missing: Vec<&str> = steps
        .iter()
        .map(|s| s.name)
        .filter(|n| !report.steps.iter().any(|(s, ..)| s == n))
        .collect();
    if !missing.is_empty() {
        report.problems.push(format!("steps that did not run: {}", missing.join(", ")));
    }
    Ok(report)
}

/// The words of the guest's sentinel on `line` (`natrec-vm: begin capture 3.26`), or none. The
/// firmware's escape sequences may precede the first one on its line.
fn sentinel(line: &str) -> Vec<&str> {
    line.find("natrec-vm: ").map_or("", |i| &line[i..]).split_whitespace().collect()
}

/// The lines of a step's output worth a line of `cargo xtask vm`'s own: test results and the
/// harness's verdict.
fn is_outcome(line: &str) -> bool {
    let l = line.trim_start();
    ["test result:", "packets checked:", "wrong:", "missing:"].iter().any(|p| l.starts_with(p))
}

fn forward(from: impl std::io::Read, to: &mpsc::Sender<String>, prefix: &str) {
    for line in BufReader::new(from).lines() {
        let Ok(line) = line else { break };
        let line = line.trim_end_matches('\r');
        if to.send(format!("{prefix}{line}")).is_err() {
            break;
        }
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The table `cargo xtask vm` ends with: per kernel, boot and test times and the verdict.
fn summary(reports: &[GuestReport]) -> String {
    let opt = |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.1}", secs(d)));
    let mut s = String::from(
        "\nkernel matrix (qemu, TCG, 2 vCPUs)\n\
         | kernel | release | to /init s | to ready s | natrec ready ms | tests s | total s | result |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        let tests: Duration = r.steps.iter().map(|(_, _, d)| *d).sum();
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.1} | {:.1} | {} |\n",
            r.kernel,
            r.release,
            opt(r.to_init),
            opt(r.to_ready),
            r.natrec_ready.as_deref().unwrap_or("-"),
            secs(tests),
            secs(r.total),
            if r.problems.is_empty() { "ok".to_owned() } else { r.problems.join("; ") }
        ));
    }
    s.push_str("\nsteps (s):\n");
    for r in reports {
        let steps: Vec<String> = r
            .steps
            .iter()
            .map(|(n, rc, d)| {
                format!("{n} {:.1}{}", secs(*d), if *rc == Some(0) { "" } else { " FAILED" })
            })
            .collect();
        s.push_str(&format!("  {}: {}\n", r.kernel, steps.join(", ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinels_are_found_behind_the_firmwares_escapes() {
        assert_eq!(
            sentinel("\x1bc\x1b[?7l\x1b[2Jnatrec-vm: init 2.49 6.12.118+deb12-cloud-amd64"),
            ["natrec-vm:", "init", "2.49", "6.12.118+deb12-cloud-amd64"]
        );
        assert_eq!(sentinel("natrec-vm: end capture 101 65.79")[3], "101");
        assert!(sentinel("test result: ok. 7 passed").is_empty());
    }

    #[test]
    fn the_init_script_brackets_each_step_and_says_what_the_kernel_should_do() {
        let steps: Vec<&Step> = STEPS.iter().collect();
        let script = init_script(&MATRIX[0], &steps);
        for step in STEPS {
            let begin = script.find(&format!("natrec-vm: begin {} ", step.name)).expect("begin");
            let end = script.find(&format!("natrec-vm: end {} $?", step.name)).expect("end");
            assert!(begin < end, "{}: begin before end", step.name);
        }
        assert!(script.contains(&format!("NATREC_TESTS_EXPECT_ENDS={}", MATRIX[0].ends)));
        assert!(script.contains(&format!("NATREC_TESTS_SLOWDOWN={SLOWDOWN}")));
        assert!(script.trim_end().ends_with("sleep 30"), "powers off, then waits for it");
        let only: Vec<&Step> = STEPS.iter().filter(|s| s.name == "drops").collect();
        let script = init_script(&MATRIX[1], &only);
        assert_eq!(script.matches("natrec-vm: begin").count(), 1);
    }
}
