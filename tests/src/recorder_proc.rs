//! `natrec record` run inside a lab's gateway namespace: start it, wait until it is ready, read
//! the flow events it writes (`--jsonl`), stop it with SIGTERM.

use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use recorder::model::FlowEvent;

use crate::gateway::GatewayLab;
use crate::lab::{ChildGuard, LabError, Netns, Result};

/// How long `natrec record` may take to attach its programs and seed.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The binary a lab program was given ([`use_natrec_bin`]).
static GIVEN_BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes `path` the `natrec` binary [`natrec_bin`] returns in this process: the lab programs
/// (`natrec-bench --natrec`, `natrec-demo PATH`, `natrec-harness --natrec`) pass theirs here.
/// The first call wins.
pub fn use_natrec_bin(path: &Path) {
    let _ = GIVEN_BIN.set(path.to_owned());
}

/// The `natrec` binary to test: the one given to [`use_natrec_bin`], else `$NATREC_BIN` (set by
/// `cargo xtask test`), else `<target dir>/debug/natrec` of this workspace (`$CARGO_TARGET_DIR`
/// or `<workspace>/target`). An error says how to build it when it is missing.
pub fn natrec_bin() -> Result<PathBuf> {
    let path = match GIVEN_BIN
        .get()
        .cloned()
        .or_else(|| std::env::var_os("NATREC_BIN").map(PathBuf::from))
    {
        Some(p) => p,
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
                || Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"),
                PathBuf::from,
            );
            target.join("debug").join("natrec")
        }
    };
    if !path.is_file() {
        return Err(LabError::Invalid(format!(
            "the natrec binary {} does not exist: build it (`cargo build -p recorder`) or set NATREC_BIN",
            path.display()
        )));
    }
    Ok(path)
}

/// The user and group nobody (65534): an account that owns nothing.
pub const NOBODY: u32 = 65534;

/// The privileges of `natrec.service`, reproduced without systemd: `setpriv` runs `bin` as user
/// and group `id`, with no supplementary groups but `groups`, and with exactly the capabilities
/// `caps` (e.g. `+bpf,+net_admin,+perfmon`) inherited, ambient and in the bounding set.
pub fn unit_privileges(id: u32, groups: &[u32], caps: &str, bin: &Path) -> Vec<String> {
    let groups = match groups {
        [] => "--clear-groups".to_owned(),
        g => format!("--groups={}", g.iter().map(u32::to_string).collect::<Vec<_>>().join(",")),
    };
    let caps = if caps.is_empty() { "-all".to_owned() } else { format!("-all,{caps}") };
    vec![
        "setpriv".into(),
        format!("--reuid={id}"),
        format!("--regid={id}"),
        groups,
        format!("--inh-caps={caps}"),
        format!("--ambient-caps={caps}"),
        format!("--bounding-set={caps}"),
        "--".into(),
        bin.display().to_string(),
    ]
}

/// A copy of the natrec binary in `dir`, where a user other than root can run it (the build's
/// own may be under a directory only root can enter).
pub fn natrec_bin_in(dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let to = dir.join("natrec");
    std::fs::copy(natrec_bin()?, &to)
        .and_then(|_| std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)))
        .map_err(|source| LabError::Io {
            what: format!("copying natrec to {}", to.display()),
            source,
        })?;
    Ok(to)
}

/// A `natrec record` stopped by [`NatrecRecord::pause`]; continued on drop.
#[derive(Debug)]
pub struct Paused<'a> {
    child: &'a ChildGuard,
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        // If it fails the process is gone, and stopping the recorder reports that.
        let _ = self.child.signal(libc::SIGCONT);
    }
}

/// A running `natrec record`; killed on drop if not stopped.
#[derive(Debug)]
pub struct NatrecRecord {
    child: Option<ChildGuard>,
    jsonl: PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl NatrecRecord {
    /// Stops the process (SIGSTOP) until the returned guard is dropped (SIGCONT): a reader that
    /// cannot keep up, on demand, whatever the machine's speed.
    pub fn pause(&self) -> Result<Paused<'_>> {
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| LabError::Invalid("natrec record was already stopped".into()))?;
        child.signal(libc::SIGSTOP)?;
        Ok(Paused { child })
    }

    /// Starts `natrec record --wan wan0 --lan lan1 … --jsonl JSONL --reap-interval 1s EXTRA…` in
    /// the lab's gateway and waits until it logs `ready`.
    pub fn start(lab: &GatewayLab, jsonl: &Path, extra: &[&str]) -> Result<NatrecRecord> {
        Self::start_wrapped(lab, &[], jsonl, extra)
    }

    /// [`NatrecRecord::start`] with the binary run by `wrapper` (e.g. [`unit_privileges`]).
    pub fn start_wrapped(
        lab: &GatewayLab,
        wrapper: &[&str],
        jsonl: &Path,
        extra: &[&str],
    ) -> Result<NatrecRecord> {
        let jsonl_arg = jsonl
            .to_str()
            .ok_or_else(|| LabError::Invalid(format!("path {} is not UTF-8", jsonl.display())))?;
        let lans = lab.lan_ifs();
        let mut args = vec!["record", "--wan", lab.wan_if()];
        for lan in &lans {
            args.extend(["--lan", lan.as_str()]);
        }
        args.extend(["--jsonl", jsonl_arg, "--reap-interval", "1s"]);
        args.extend_from_slice(extra);
        Self::start_line(lab.gateway(), wrapper, &args, jsonl)
    }

    /// Starts `natrec ARGS…` in `ns` (the arguments must make it write `jsonl`) and waits until
    /// it logs a line containing `ready` on stderr.
    pub fn start_with(ns: &Netns, args: &[&str], jsonl: &Path) -> Result<NatrecRecord> {
        Self::start_line(ns, &[], args, jsonl)
    }

    fn start_line(
        ns: &Netns,
        wrapper: &[&str],
        args: &[&str],
        jsonl: &Path,
    ) -> Result<NatrecRecord> {
        let bin = natrec_bin()?;
        let bin = bin
            .to_str()
            .ok_or_else(|| LabError::Invalid(format!("path {} is not UTF-8", bin.display())))?;
        // A wrapper (setpriv) ends with the binary it runs.
        let mut line: Vec<&str> = if wrapper.is_empty() { vec![bin] } else { wrapper.to_vec() };
        line.extend_from_slice(args);
        Self::start_command(ns, &line, jsonl)
    }

    /// Starts the command `line` in `ns` (a natrec record that writes `jsonl`, however it is
    /// run: e.g. an installed package's binary) and waits until it logs `ready`.
    pub fn start_command(ns: &Netns, line: &[&str], jsonl: &Path) -> Result<NatrecRecord> {
        let mut child = ns.spawn(line)?;
        let pipe = child
            .child_mut()
            .and_then(|c| c.stderr.take())
            .ok_or_else(|| LabError::Invalid("natrec has no stderr pipe".into()))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let log = stderr.clone();
        // Drains stderr for the process's whole life.
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if says_ready(&line) {
                    // The receiver may have given up already.
                    let _ = tx.send(());
                }
                let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                log.push_str(&line);
                log.push('\n');
            }
        });
        let ready_within = crate::lab::patience(READY_TIMEOUT);
        let deadline = Instant::now() + ready_within;
        loop {
            if rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                break;
            }
            let exited = child
                .child_mut()
                .map(|c| c.try_wait())
                .transpose()
                .map_err(|source| LabError::Io { what: "waiting for natrec".into(), source })?
                .flatten();
            if exited.is_some() || Instant::now() >= deadline {
                // Let the drain thread catch the last lines.
                std::thread::sleep(Duration::from_millis(100));
                let said = stderr.lock().unwrap_or_else(PoisonError::into_inner).clone();
                let why = match exited {
                    Some(status) => format!("exited ({status}) before it was ready"),
                    None => format!("was not ready within {ready_within:?}"),
                };
                return Err(LabError::Invalid(format!(
                    "`{}` {why}; its stderr:\n{said}",
                    line.join(" ")
                )));
            }
        }
        Ok(NatrecRecord { child: Some(child), jsonl: jsonl.to_owned(), stderr })
    }

    /// Sends `signal` to natrec.
    pub fn signal(&self, signal: i32) -> Result<()> {
        self.child
            .as_ref()
            .ok_or_else(|| LabError::Invalid("natrec record was already stopped".into()))?
            .signal(signal)
    }

    /// Waits until natrec's log, from byte `from` on, has a line containing `needle`; returns
    /// that line, or an error with the log after `timeout`.
    pub fn wait_for_log(&self, from: usize, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + crate::lab::patience(timeout);
        loop {
            let log = self.stderr();
            if let Some(line) = log.get(from..).and_then(|l| l.lines().find(|l| l.contains(needle)))
            {
                return Ok(line.to_owned());
            }
            if Instant::now() >= deadline {
                return Err(LabError::Invalid(format!(
                    "natrec logged no {needle:?} within {timeout:?}; its stderr:\n{log}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What natrec logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The events written so far (a last line still being written is left out).
    pub fn events(&self) -> Result<Vec<FlowEvent>> {
        read_events(&self.jsonl, false)
    }

    /// Polls the events every 100 ms until `done` holds for them or `timeout` passes; returns
    /// the last events read either way, with whether `done` held.
    pub fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[FlowEvent]) -> bool,
    ) -> Result<(Vec<FlowEvent>, bool)> {
        let deadline = Instant::now() + crate::lab::patience(timeout);
        loop {
            let events = self.events()?;
            if done(&events) {
                return Ok((events, true));
            }
            if Instant::now() >= deadline {
                return Ok((events, false));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Makes `flows` UDP flows from the lab's first inside host to the UDP echo server on port 7
    /// of `server`, flushes the gateway's conntrack so that they end, and waits up to 20 s for a
    /// start and an end of each; returns the events, or an error with them.
    pub fn record_udp_flows(
        &self,
        lab: &GatewayLab,
        server: Ipv4Addr,
        flows: usize,
    ) -> Result<Vec<FlowEvent>> {
        let host = &lab.hosts()[0];
        let (local, remote) =
            (SocketAddr::new(host.addr().into(), 0), SocketAddr::new(server.into(), 7));
        for _ in 0..flows {
            crate::traffic::udp_exchange(host.ns(), local, remote, 2)?;
        }
        lab.conntrack_flush()?;
        let count = |evs: &[FlowEvent], end: bool| {
            evs.iter().filter(|e| matches!(e, FlowEvent::End(_)) == end).count()
        };
        let (events, done) = self.wait_for(Duration::from_secs(20), |e| {
            count(e, false) >= flows && count(e, true) >= flows
        })?;
        if !done {
            return Err(LabError::Invalid(format!(
                "natrec did not record {flows} starts and ends within 20 s: {events:?}"
            )));
        }
        Ok(events)
    }

    /// Stops natrec with SIGTERM (an error if it does not exit within 10 s or exits with a
    /// failure) and returns every event it wrote and its stderr.
    pub fn stop(mut self) -> Result<(Vec<FlowEvent>, String)> {
        if let Some(child) = self.child.take() {
            let status = child.stop(libc::SIGTERM, Duration::from_secs(10)).map_err(|e| {
                LabError::Invalid(format!("{e}; natrec's stderr:\n{}", self.stderr()))
            })?;
            std::thread::sleep(Duration::from_millis(100));
            if !status.success() {
                return Err(LabError::Invalid(format!(
                    "natrec record exited with {status} after SIGTERM; its stderr:\n{}",
                    self.stderr()
                )));
            }
        }
        Ok((read_events(&self.jsonl, true)?, self.stderr()))
    }
}

/// Whether a log line announces readiness: the word `ready` ("already" does not count).
fn says_ready(line: &str) -> bool {
    line.split(|c: char| !c.is_ascii_alphanumeric() && c != '_').any(|w| w == "ready")
}

/// The counters `natrec record --stats-json` printed at exit: the last JSON object on its
/// stderr, `stderr`.
pub fn stats_json(stderr: &str) -> Result<serde_json::Value> {
    stderr
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l.trim())
                .ok()
                .filter(serde_json::Value::is_object)
        })
        .ok_or_else(|| {
            LabError::Invalid(format!(
                "natrec printed no --stats-json summary; its stderr:\n{stderr}"
            ))
        })
}

/// Reads a JSON Lines file of flow events. With `complete`, every line must parse; otherwise a
/// last line without its newline is taken to be still in writing and skipped.
pub fn read_events(path: &Path, complete: bool) -> Result<Vec<FlowEvent>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !complete => return Ok(Vec::new()),
        Err(source) => {
            return Err(LabError::Io { what: format!("reading {}", path.display()), source });
        }
    };
    let body = if complete || text.ends_with('\n') {
        text.as_str()
    } else {
        text.rsplit_once('\n').map_or("", |(done, _)| done)
    };
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                LabError::Invalid(format!(
                    "{} line {}: not a flow event ({e}): {l}",
                    path.display(),
                    i + 1
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"event":"start","kind":"snat","proto":"udp","inside":"10.0.1.2:5000","outside":"100.64.0.1:5000","remote":"100.64.1.1:7","zone":0,"start":"2026-11-24T22:18:00Z","end":null,"flags":[]}"#;

    #[test]
    fn readiness_is_the_word_ready() {
        assert!(says_ready(
            "2026-11-24T22:50:49Z  INFO recorder::daemon: ready: recording seeded=1"
        ));
        assert!(!says_ready("ERROR bind: address already in use"));
        assert!(!says_ready("INFO not_ready_yet"));
    }

    #[test]
    fn a_line_still_being_written_is_skipped_until_the_end() {
        let dir = crate::lab::TempDir::new("rp").expect("temp dir");
        let path = dir.path().join("f.jsonl");
        assert!(read_events(&path, false).expect("missing file is empty").is_empty());
        assert!(read_events(&path, true).is_err(), "a finished run must have written its file");
        std::fs::write(&path, format!("{LINE}\n{}", &LINE[..40])).expect("write");
        assert_eq!(read_events(&path, false).expect("partial").len(), 1);
        assert!(read_events(&path, true).is_err(), "a cut line in a finished file is an error");
        std::fs::write(&path, format!("{LINE}\n{LINE}\n")).expect("write");
        let events = read_events(&path, true).expect("complete");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].translation().inside, "10.0.1.2:5000".parse().expect("addr"));
    }
}
