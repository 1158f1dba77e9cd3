//! Network namespaces, veth pairs, nftables tables and traffic helpers for natrec's integration
//! tests, the demo and the packet-capture harness.
//!
//! Everything the lab creates is owned by a guard whose `Drop` removes it, so a failing test
//! leaves nothing behind: [`Netns`] deletes its namespace (after killing what still runs in it),
//! [`ChildGuard`] kills its process. Names are unique per process and per call
//! (`nr-<prefix>-<pid>-<n>`), so parallel tests and parallel runs do not collide.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What went wrong while building or using the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A command could not be started at all (binary missing, fork failed).
    #[error("could not run `{cmd}`: {source}")]
    Spawn { cmd: String, source: io::Error },
    /// A command ran and failed.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command { cmd: String, status: String, stderr: String },
    /// An I/O operation of the lab itself failed.
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    /// The lab is not usable as asked (bad spec, unexpected command output, timeout).
    #[error("{0}")]
    Invalid(String),
}

/// Results of lab operations.
pub type Result<T, E = LabError> = std::result::Result<T, E>;

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

/// Runs a command to completion; an error carries its stderr when it exits non-zero.
pub fn run_cmd(args: &[&str]) -> Result<Output> {
    let (prog, rest) =
        args.split_first().ok_or_else(|| LabError::Invalid("empty command line".into()))?;
    let out = Command::new(prog)
        .args(rest)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn { cmd: args.join(" "), source })?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: args.join(" "),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out)
}

/// Runs a command to completion with `input` on its stdin; an error carries its stderr when it
/// exits non-zero.
pub fn run_cmd_input(args: &[&str], input: &str) -> Result<Output> {
    use std::io::Write as _;
    let (prog, rest) =
        args.split_first().ok_or_else(|| LabError::Invalid("empty command line".into()))?;
    let cmd = args.join(" ");
    let mut child = Command::new(prog)
        .args(rest)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn { cmd: cmd.clone(), source })?;
    // A command that exits early breaks the pipe: its status and stderr say why.
    let written = child.stdin.take().map_or(Ok(()), |mut stdin| stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().map_err(io_err(format!("waiting for `{cmd}`")))?;
    if out.status.success()
        && let Err(e) = written
    {
        return Err(io_err(format!("writing to `{cmd}`"))(e));
    }
    if !out.status.success() {
        return Err(LabError::Command {
            cmd,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out)
}

/// `wait` stretched by `NATREC_TESTS_SLOWDOWN` (a whole factor, 1 when unset): the deadlines of
/// the lab's waits grow by it where everything runs slower, as in the kernel matrix's emulated
/// guests (`cargo xtask vm`). Only deadlines grow; nothing a test asserts about times does.
///
/// # Panics
/// When the variable is set to anything but a whole number from 1 to 100.
pub fn patience(wait: Duration) -> Duration {
    static FACTOR: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let factor = *FACTOR.get_or_init(|| match std::env::var("NATREC_TESTS_SLOWDOWN") {
        Err(_) => 1,
        Ok(v) => v
            .parse()
            .ok()
            .filter(|f| (1..=100).contains(f))
            .unwrap_or_else(|| panic!("NATREC_TESTS_SLOWDOWN={v:?}: expected 1 to 100")),
    });
    wait * factor
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique short name: `nr-<prefix>-<pid>-<n>`.
fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("nr-{prefix}-{}-{n}", std::process::id())
}

/// A named network namespace (`ip netns add`), deleted on drop together with every process
/// still running inside it.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `nr-<prefix>-<pid>-<n>` with its loopback up.
    ///
    /// The first call of a process also removes the namespaces that earlier lab processes left
    /// when they were killed before their guards ran (see [`remove_stale_namespaces`]).
    pub fn new(prefix: &str) -> Result<Netns> {
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(|| {
            if let Err(e) = remove_stale_namespaces() {
                eprintln!("lab: could not remove stale namespaces: {e}");
            }
        });
        let name = unique_name(prefix);
        run_cmd(&["ip", "netns", "add", &name])?;
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip netns exec NAME args…` to completion; an error carries its stderr.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        run_cmd(&self.exec_line(args))
    }

    /// Starts `ip netns exec NAME args…` (stdout and stderr piped, stdin closed); the guard
    /// kills it on drop. `ip netns exec` execs the program, so the child's pid is the program's.
    pub fn spawn(&self, args: &[&str]) -> Result<ChildGuard> {
        let line = self.exec_line(args);
        let child = Command::new(line[0])
            .args(&line[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| LabError::Spawn { cmd: line.join(" "), source })?;
        Ok(ChildGuard { child: Some(child), cmd: line.join(" ") })
    }

    fn exec_line<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut line = vec!["ip", "netns", "exec", self.name.as_str()];
        line.extend_from_slice(args);
        line
    }

    /// Runs `ip netns exec NAME args…` with `input` on its stdin (e.g. `nft -f -`).
    pub fn exec_input(&self, args: &[&str], input: &str) -> Result<Output> {
        run_cmd_input(&self.exec_line(args), input)
    }

    /// Sets a sysctl inside the namespace (`key` in dotted form, e.g. `net.ipv4.ip_forward`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")])?;
        Ok(())
    }

    /// Runs `f` on a thread that has entered this namespace (sockets it creates belong to it)
    /// and returns its result. A panic in `f` is propagated.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let handle = self.spawn_thread(f)?;
        match handle.join() {
            Ok(v) => Ok(v),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Starts a thread that enters this namespace, then runs `f`; returns once the thread is
    /// inside (an error when it could not enter).
    pub fn spawn_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<JoinHandle<T>> {
        let path = format!("/run/netns/{}", self.name);
        let (tx, rx) = std::sync::mpsc::channel::<Result<()>>();
        let handle = std::thread::Builder::new()
            .name(format!("in-{}", self.name))
            .spawn(move || {
                let entered = enter_netns(&path);
                let ok = entered.is_ok();
                // The receiver waits for this message; if it is gone, nobody needs `f`.
                let _ = tx.send(entered);
                if !ok {
                    // Never run `f` in the wrong namespace; the caller already has the error.
                    std::panic::resume_unwind(Box::new("could not enter the namespace"));
                }
                f()
            })
            .map_err(io_err("spawning a namespace thread"))?;
        match rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(LabError::Invalid(format!(
                "the thread entering {} died before reporting",
                self.name
            ))),
        }
    }

    /// The pids of processes running inside the namespace.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let out = run_cmd(&["ip", "netns", "pids", &self.name])?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = delete_namespace(&self.name) {
            eprintln!("lab: could not delete namespace {}: {e}", self.name);
        }
    }
}

/// Kills every process in namespace `name`, then deletes it.
fn delete_namespace(name: &str) -> Result<()> {
    let out = run_cmd(&["ip", "netns", "pids", name])?;
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    run_cmd(&["ip", "netns", "del", name])?;
    Ok(())
}

/// The pid a lab namespace name (`nr-<prefix>-<pid>-<n>`) was made by.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("nr-")?;
    let mut parts = rest.rsplitn(3, '-');
    let _n: u32 = parts.next()?.parse().ok()?;
    let pid = parts.next()?.parse().ok()?;
    parts.next()?;
    Some(pid)
}

/// Removes the lab namespaces (`nr-<prefix>-<pid>-<n>`) whose process no longer runs: a test
/// killed by a timeout or SIGKILL cannot run its guards. Returns the names removed.
pub fn remove_stale_namespaces() -> Result<Vec<String>> {
    let out = run_cmd(&["ip", "netns", "list"])?;
    let mut removed = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = owner_pid(name) else { continue };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        // Another process may be sweeping the same namespace.
        match delete_namespace(name) {
            Ok(()) => removed.push(name.to_owned()),
            Err(e) => eprintln!("lab: could not remove stale namespace {name}: {e}"),
        }
    }
    Ok(removed)
}

/// Moves the calling thread into the network namespace bound at `path`.
fn enter_netns(path: &str) -> Result<()> {
    let file = File::open(path).map_err(io_err(format!("opening {path}")))?;
    // SAFETY: setns(2) on a valid, open namespace file descriptor; it affects only this thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(LabError::Io {
            what: format!("setns({path}, CLONE_NEWNET)"),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// A child process that is killed (SIGKILL) and reaped on drop unless it was stopped first.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    cmd: String,
}

impl ChildGuard {
    /// The command line, for messages.
    pub fn cmd(&self) -> &str {
        &self.cmd
    }

    /// The process id.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) -> Result<()> {
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| LabError::Invalid(format!("`{}` was already stopped", self.cmd)))?;
        let pid = i32::try_from(child.id())
            .map_err(|_| LabError::Invalid(format!("pid of `{}` out of range", self.cmd)))?;
        // SAFETY: kill(2) has no memory-safety preconditions; the child is not reaped yet, so
        // the pid is still ours.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(io_err(format!("signalling `{}`", self.cmd))(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// The child itself (to take its stdout/stderr pipes).
    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// Sends `signal`, then waits up to `timeout` for the process to exit; kills it (SIGKILL)
    /// and returns an error if it did not.
    pub fn stop(mut self, signal: i32, timeout: Duration) -> Result<std::process::ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| LabError::Invalid(format!("`{}` was already stopped", self.cmd)))?;
        let pid = i32::try_from(child.id())
            .map_err(|_| LabError::Invalid(format!("pid of `{}` out of range", self.cmd)))?;
        // SAFETY: kill(2) has no memory-safety preconditions; the child is not reaped yet, so
        // the pid is still ours.
        unsafe { libc::kill(pid, signal) };
        let deadline = Instant::now() + patience(timeout);
        loop {
            if let Some(status) =
                child.try_wait().map_err(io_err(format!("waiting for `{}`", self.cmd)))?
            {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LabError::Invalid(format!(
                    "`{}` did not exit within {timeout:?} of signal {signal}",
                    self.cmd
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Checks that the lab can run here: root, and the `ip`, `nft`, `conntrack`, `tcpdump` and
/// `sysctl` binaries; an error names everything that is missing. Tests fail loudly rather than
/// skip: `NATREC_TESTS_NO_ROOT=1` at build time marks the tests that need the lab as ignored
/// instead (`tests/build.rs`), so that a skip shows in the test summary.
pub fn ensure_root_capabilities() -> Result<()> {
    let mut missing = Vec::new();
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (effective uid 0)".to_owned());
    }
    for bin in ["ip", "nft", "conntrack", "tcpdump", "sysctl"] {
        let found = Command::new(bin)
            .arg(if bin == "tcpdump" || bin == "sysctl" || bin == "nft" {
                "--version"
            } else {
                "-V"
            })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            missing.push(format!("the `{bin}` binary"));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(LabError::Invalid(format!(
            "the lab needs {} (NATREC_TESTS_NO_ROOT=1 marks these tests ignored)",
            missing.join(", ")
        )))
    }
}

/// Creates a veth pair with one end (`a_if`) in `a` and the other (`b_if`) in `b`, both up.
/// Deleting either namespace deletes the pair.
pub fn veth_pair(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<()> {
    for name in [a_if, b_if] {
        if name.len() > 15 {
            return Err(LabError::Invalid(format!(
                "interface name {name:?} is longer than 15 bytes"
            )));
        }
    }
    run_cmd(&[
        "ip",
        "-n",
        a.name(),
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    a.exec(&["ip", "link", "set", a_if, "up"])?;
    b.exec(&["ip", "link", "set", b_if, "up"])?;
    Ok(())
}

/// An nftables table created from a ruleset text, deleted on drop.
///
/// Tables in a lab namespace vanish with it anyway; the guard matters for tables created in a
/// namespace that outlives the test (`ns = None` is the caller's own namespace).
#[derive(Debug)]
pub struct NftTable {
    ns: Option<String>,
    family: String,
    name: String,
}

impl NftTable {
    /// Loads `ruleset` (which must define table `family name`) with `nft -f -`, in `ns` or in
    /// the caller's namespace.
    pub fn create(ns: Option<&Netns>, family: &str, name: &str, ruleset: &str) -> Result<NftTable> {
        let table = NftTable {
            ns: ns.map(|n| n.name().to_owned()),
            family: family.to_owned(),
            name: name.to_owned(),
        };
        run_cmd_input(&table.line(&["nft", "-f", "-"]), ruleset)?;
        Ok(table)
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn line<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut line = Vec::new();
        if let Some(ns) = &self.ns {
            line.extend(["ip", "netns", "exec", ns.as_str()]);
        }
        line.extend_from_slice(args);
        line
    }
}

impl Drop for NftTable {
    fn drop(&mut self) {
        let family = self.family.clone();
        let name = self.name.clone();
        // A table in a namespace that is already gone needs no deleting.
        if let Some(ns) = &self.ns
            && !std::path::Path::new(&format!("/run/netns/{ns}")).exists()
        {
            return;
        }
        if let Err(e) = run_cmd(&self.line(&["nft", "delete", "table", &family, &name])) {
            eprintln!("lab: could not delete nft table {family} {name}: {e}");
        }
    }
}

/// A directory under the system temporary directory, removed with its contents on drop.
#[derive(Debug)]
pub struct TempDir {
    path: std::path::PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/natrec-<prefix>-<pid>-<n>`.
    pub fn new(prefix: &str) -> Result<TempDir> {
        let path = std::env::temp_dir().join(unique_name(prefix).replacen("nr-", "natrec-", 1));
        std::fs::create_dir_all(&path).map_err(io_err(format!("creating {}", path.display())))?;
        Ok(TempDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("lab: could not remove {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_lab_names_only() {
        assert_eq!(owner_pid("nr-cap-gw-1234-7"), Some(1234));
        assert_eq!(owner_pid("nr-t-99-0"), Some(99));
        assert_eq!(owner_pid("nr-1234-7"), None, "no prefix");
        assert_eq!(owner_pid("other-gw-1234-7"), None);
        assert_eq!(owner_pid("nr-gw-x-7"), None);
        assert_eq!(owner_pid(&unique_name("p")), Some(std::process::id()));
    }
}
