//! Packet captures in a lab namespace (`tcpdump -w`), stopped on drop.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::lab::{ChildGuard, LabError, Netns, Result};

/// How long tcpdump may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `tcpdump -i IFACE -w FILE -U` in a namespace; drop (or [`Capture::stop`]) sends
/// SIGTERM and waits, so the file is complete afterwards.
#[derive(Debug)]
pub struct Capture {
    child: Option<ChildGuard>,
    path: PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl Capture {
    /// Starts capturing on `iface` of `ns` into `path` and returns once tcpdump is listening.
    pub fn start(ns: &Netns, iface: &str, path: &Path) -> Result<Capture> {
        let file = path.to_str().ok_or_else(|| {
            LabError::Invalid(format!("capture path {} is not UTF-8", path.display()))
        })?;
        // --immediate-mode: hand every packet over at once; otherwise packets wait in the
        // kernel's ring block (up to its timeout) and those still there at SIGTERM are lost.
        // -B: a 32 MiB kernel buffer for bursts. -Z root: write the file as root (tcpdump would
        // otherwise drop to its own user).
        let mut child = ns.spawn(&[
            "tcpdump",
            "-i",
            iface,
            "-w",
            file,
            "-U",
            "--immediate-mode",
            "-B",
            "32768",
            "-n",
            "-Z",
            "root",
        ])?;
        let stderr_pipe = child
            .child_mut()
            .and_then(|c| c.stderr.take())
            .ok_or_else(|| LabError::Invalid("tcpdump has no stderr pipe".into()))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let log = stderr.clone();
        // Drains stderr for the capture's whole life (a closed pipe could kill tcpdump).
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                if line.contains("listening on") {
                    // The receiver may have given up already.
                    let _ = tx.send(());
                }
                let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                log.push_str(&line);
                log.push('\n');
            }
        });
        if rx.recv_timeout(START_TIMEOUT).is_err() {
            let said = stderr.lock().unwrap_or_else(PoisonError::into_inner).clone();
            return Err(LabError::Invalid(format!(
                "tcpdump on {iface} in {} did not start listening within {START_TIMEOUT:?}: {said}",
                ns.name()
            )));
        }
        Ok(Capture { child: Some(child), path: path.to_owned(), stderr })
    }

    /// The capture file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits until tcpdump has written everything it was handed (the file stops growing for
    /// 300 ms, at most 5 s), stops it (SIGTERM, wait) and returns what it reported.
    ///
    /// Compare [`CaptureDone::captured`] with [`CaptureDone::received_by_filter`]: packets the
    /// kernel handed over but tcpdump had not written when it stopped are lost from the file.
    pub fn stop(mut self) -> Result<CaptureDone> {
        self.settle();
        if let Some(child) = self.child.take() {
            child.stop(libc::SIGTERM, Duration::from_secs(10))?;
        }
        // Give the drain thread a moment to read tcpdump's last words.
        std::thread::sleep(Duration::from_millis(50));
        let stderr = self.stderr.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let count = |suffix: &str| {
            stderr.lines().find_map(|l| {
                let (n, rest) = l.trim().split_once(' ')?;
                // "1 packet captured" / "8 packets captured"
                let rest =
                    rest.strip_prefix("packets ").or_else(|| rest.strip_prefix("packet "))?;
                (rest == suffix).then(|| n.parse().ok()).flatten()
            })
        };
        Ok(CaptureDone {
            path: self.path.clone(),
            captured: count("captured"),
            received_by_filter: count("received by filter"),
            dropped_by_kernel: count("dropped by kernel"),
            stderr,
        })
    }

    /// Waits until the capture file has not grown for 300 ms (at most 5 s).
    fn settle(&self) {
        let size = || std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut last = size();
        let mut quiet = 0;
        while quiet < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let now = size();
            quiet = if now == last { quiet + 1 } else { 0 };
            last = now;
        }
    }
}

/// What a stopped capture left: its file and tcpdump's own counts.
#[derive(Clone, Debug)]
pub struct CaptureDone {
    /// The pcap file.
    pub path: PathBuf,
    /// Packets written to the file ("N packets captured").
    pub captured: Option<u64>,
    /// Packets the kernel handed to tcpdump ("N packets received by filter").
    pub received_by_filter: Option<u64>,
    /// Packets the kernel dropped for lack of buffer space.
    pub dropped_by_kernel: Option<u64>,
    /// Everything tcpdump said on stderr.
    pub stderr: String,
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(child) = self.child.take()
            && let Err(e) = child.stop(libc::SIGTERM, Duration::from_secs(10))
        {
            eprintln!("lab: stopping tcpdump: {e}");
        }
    }
}
