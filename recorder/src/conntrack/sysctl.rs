//! The conntrack sysctls natrec needs, read and written through `/proc/sys` (per network
//! namespace: the calling thread's).

use std::io;
use std::path::{Path, PathBuf};

use super::ConntrackError;

const TIMESTAMP: &str = "/proc/sys/net/netfilter/nf_conntrack_timestamp";
const EVENTS: &str = "/proc/sys/net/netfilter/nf_conntrack_events";

/// Turns on `net.netfilter.nf_conntrack_timestamp` (entries created from now on carry their
/// start and stop times) and returns its previous value, for the caller to log.
///
/// Entries that already exist keep having no timestamp.
pub fn enable_timestamps() -> Result<u32, ConntrackError> {
    enable_at(Path::new(TIMESTAMP))
}

/// Sets `net.netfilter.nf_conntrack_events` to 1 and returns its previous value, for the caller
/// to log.
///
/// With the default 2 ("auto") the kernel attaches the event extension only to entries created
/// while some process listens for conntrack events: an entry created while natrec was not
/// running (before it started, during a restart) never sends its DESTROY event, even after
/// natrec subscribes. With 1 every new entry gets it. Entries that already exist without it
/// stay silent either way; only a dump notices that they are gone.
pub fn enable_events() -> Result<u32, ConntrackError> {
    enable_at(Path::new(EVENTS))
}

/// Reads `net.netfilter.nf_conntrack_events`: 0 means the kernel sends no conntrack events at
/// all (natrec then sees no ends; a warning is logged), 1 means on for every entry, 2 (the
/// default of recent kernels) means on for entries created while a listener is subscribed
/// (see [`enable_events`]).
pub fn events_setting() -> Result<u32, ConntrackError> {
    let v = read_at(Path::new(EVENTS))?;
    if v == 0 {
        tracing::warn!(
            "net.netfilter.nf_conntrack_events is 0: the kernel sends no conntrack events, so no \
             translation ends will be seen (set it to 1)"
        );
    }
    Ok(v)
}

fn sysctl_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ConntrackError {
    let path = path.to_owned();
    move |source| match source.kind() {
        io::ErrorKind::NotFound => {
            ConntrackError::NotLoaded { what: "finding a conntrack sysctl", source }
        }
        io::ErrorKind::PermissionDenied => {
            ConntrackError::NeedsCapNetAdmin { what: "changing a conntrack sysctl" }
        }
        _ => ConntrackError::Sysctl { what, path, source },
    }
}

fn read_at(path: &Path) -> Result<u32, ConntrackError> {
    let text = std::fs::read_to_string(path).map_err(sysctl_err("reading", path))?;
    text.trim().parse().map_err(|_| ConntrackError::SysctlValue {
        path: PathBuf::from(path),
        value: text.trim().to_owned(),
    })
}

fn enable_at(path: &Path) -> Result<u32, ConntrackError> {
    let previous = read_at(path)?;
    if previous != 1 {
        std::fs::write(path, b"1\n").map_err(sysctl_err("writing", path))?;
    }
    Ok(previous)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enabling_returns_the_previous_value_and_writes_one() {
        let dir = std::env::temp_dir().join(format!("natrec-sysctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let f = dir.join("nf_conntrack_timestamp");
        std::fs::write(&f, "0\n").expect("write");
        assert_eq!(enable_at(&f).expect("enable"), 0);
        assert_eq!(std::fs::read_to_string(&f).expect("read").trim(), "1");
        assert_eq!(enable_at(&f).expect("enable again"), 1);
        std::fs::write(&f, "yes\n").expect("write");
        assert!(matches!(enable_at(&f), Err(ConntrackError::SysctlValue { .. })));
        let missing = dir.join("absent");
        let err = read_at(&missing).expect_err("missing");
        assert!(err.to_string().contains("nf_conntrack is not loaded"), "{err}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
