//! ctnetlink: conntrack DESTROY events, table dumps and the conntrack sysctls natrec relies on.
//!
//! - [`EventSocket`] receives DESTROY events in reliable mode (`NETLINK_BROADCAST_ERROR`): the
//!   kernel keeps a dying entry until its event is delivered, so a burst does not lose ends;
//!   every ENOBUFS is still reported ([`RecvStatus::enobufs`]) so the caller can resync.
//! - [`DumpSocket`] / [`dump`] list the table (start-up seeding, resync, and reaping: a dump makes
//!   the kernel's lazy GC emit the DESTROY events of expired entries at once).
//! - [`enable_timestamps`], [`enable_events`] and [`events_setting`] handle
//!   `net.netfilter.nf_conntrack_timestamp` and `nf_conntrack_events` (set it to 1: with the
//!   default 2, entries created while nobody listened never send a DESTROY event).
//!
//! Everything works in the network namespace of the calling thread (a socket belongs to the
//! netns of the thread that creates it; `/proc/sys/net` shows the reader's netns).
//!
//! Messages become [`CtEntry`] values whose tuples have the kernel's `nf_conntrack_tuple` layout,
//! so [`recorder_common::classify`] names the same endpoints as the eBPF path ([`CtEntry::nat`]).

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod craft;
pub(crate) mod parse;
mod socket;
mod sysctl;

use std::io;
use std::path::PathBuf;

pub use parse::CtEntry;
pub use socket::{
    DumpPass, DumpSocket, EventOptions, EventSocket, EventStats, RecvStatus, Wait, dump,
};
pub use sysctl::{enable_events, enable_timestamps, events_setting};

/// What went wrong talking to conntrack.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// The kernel refused for lack of privilege.
    #[error("{what} needs CAP_NET_ADMIN: run natrec as root or with that capability")]
    NeedsCapNetAdmin { what: &'static str },
    /// The kernel has no conntrack netlink support loaded.
    #[error(
        "{what}: nf_conntrack is not loaded (modprobe nf_conntrack nf_conntrack_netlink): {source}"
    )]
    NotLoaded { what: &'static str, source: io::Error },
    /// Another system call failed.
    #[error("{what}: {source}")]
    Io { what: &'static str, source: io::Error },
    /// A message did not have the ctnetlink layout.
    #[error("malformed ctnetlink message: {reason}")]
    Malformed { reason: &'static str },
    /// A dump reply did not fit the receive buffer.
    #[error("a {len} byte ctnetlink datagram did not fit the {buf} byte receive buffer")]
    Truncated { len: usize, buf: usize },
    /// The table kept changing under the dump.
    #[error("the conntrack dump was interrupted by table changes {attempts} times in a row")]
    DumpInterrupted { attempts: u32 },
    /// A conntrack sysctl could not be read or written.
    #[error("{what} {path}: {source}", path = path.display())]
    Sysctl { what: &'static str, path: PathBuf, source: io::Error },
    /// A conntrack sysctl held something other than a number.
    #[error("{path} holds {value:?}, expected a number", path = path.display())]
    SysctlValue { path: PathBuf, value: String },
}
