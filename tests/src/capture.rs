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
        // -Z root: write the file as root (tcpdump would otherwise drop to its own user).
        let mut child =
            ns.spawn(&["tcpdump", "-i", iface, "-w", file, "-U", "-n", "-Z", "root"])?;
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
            let said = stderr
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            return Err(LabError::Invalid(format!(
                "tcpdump on {iface} in {} did not start listening within {START_TIMEOUT:?}: {said}",
                ns.name()
            )));
        }
        Ok(Capture {
            child: Some(child),
            path: path.to_owned(),
            stderr,
        })
    }

    /// The capture file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops tcpdump (SIGTERM, wait) and returns the capture file's path and tcpdump's stderr
    /// (its packet counts).
    pub fn stop(mut self) -> Result<(PathBuf, String)> {
        if let Some(child) = self.child.take() {
            child.stop(libc::SIGTERM, Duration::from_secs(10))?;
        }
        // Give the drain thread a moment to read tcpdump's last words.
        std::thread::sleep(Duration::from_millis(50));
        let said = self
            .stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Ok((self.path.clone(), said))
    }
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
