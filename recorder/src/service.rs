//! What `natrec record` tells its service manager, in systemd's notify protocol
//! (`sd_notify(3)`): `READY=1` once every program is attached and the open translations are
//! seeded, `WATCHDOG=1` at half of `WatchdogSec=` from the capture loop's tick (a loop that
//! stalls is restarted), `RELOADING=1` around a SIGHUP, `STOPPING=1` when it stops, and a
//! `STATUS=` line that `systemctl status` shows.
//!
//! Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// The service manager's end of the protocol.
pub struct Notifier {
    /// `WatchdogSec=`, when set for this process.
    watchdog: Option<Duration>,
    last_pet: Instant,
    /// A failed notification is logged once, not at every tick.
    failed: bool,
    /// The last status sent.
    status: String,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment.
    pub fn from_env() -> Self {
        let watchdog = sd_notify::watchdog_enabled();
        if let Some(w) = watchdog {
            tracing::debug!(?w, "systemd watchdog enabled");
        }
        Self { watchdog, last_pet: Instant::now(), failed: false, status: String::new() }
    }

    fn send(&mut self, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            if !self.failed {
                tracing::warn!("notifying the service manager (NOTIFY_SOCKET): {e}");
            }
            self.failed = true;
        }
    }

    /// Recording: attached and seeded.
    pub fn ready(&mut self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
        self.status = status.to_owned();
        self.last_pet = Instant::now();
    }

    /// A reload is over: ready again, with the last status.
    pub fn reloaded(&mut self) {
        let status = std::mem::take(&mut self.status);
        self.ready(&status);
    }

    pub fn status(&mut self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
        self.status = status.to_owned();
    }

    /// A SIGHUP's reload starts; [`Notifier::ready`] ends it.
    pub fn reloading(&mut self) {
        let now = NotifyState::monotonic_usec_now();
        match now {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// Called from every tick of the capture loop: pets the watchdog at half its interval.
    pub fn tick(&mut self) {
        if let Some(w) = self.watchdog
            && self.last_pet.elapsed() >= w / 2
        {
            self.send(&[NotifyState::Watchdog]);
            self.last_pet = Instant::now();
        }
    }

    pub fn stopping(&mut self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping: sealing and detaching")]);
    }
}
