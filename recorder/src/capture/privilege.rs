//! The capabilities `natrec record` needs, checked before anything is touched, so that a missing
//! one is named with what needs it instead of surfacing as an EPERM from deep in a load.
//!
//! natrec runs as root or as an unprivileged user holding exactly CAP_BPF, CAP_NET_ADMIN and
//! CAP_PERFMON (the unit's `AmbientCapabilities=`). CAP_SYS_ADMIN, which held the powers of the
//! first and the third before Linux 5.8, stands in for them.
use std::io;

/// A capability natrec needs, with its number (`linux/capability.h`) and what needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    pub name: &'static str,
    pub bit: u32,
    pub needed_for: &'static str,
    /// Whether CAP_SYS_ADMIN grants it too (kernels before 5.8 had no CAP_BPF nor CAP_PERFMON).
    pub in_sys_admin: bool,
}

const CAP_SYS_ADMIN: u32 = 21;

/// Every capability `natrec record` needs.
pub const NEEDED: [Capability; 3] = [
    Capability {
        name: "CAP_BPF",
        bit: 39,
        needed_for: "loading the eBPF programs and creating their maps and ring buffers",
        in_sys_admin: true,
    },
    Capability {
        name: "CAP_NET_ADMIN",
        bit: 12,
        needed_for: "attaching the tc classifiers, dumping conntrack and reading its events over \
                     netlink, and setting the net.netfilter sysctls",
        in_sys_admin: false,
    },
    Capability {
        name: "CAP_PERFMON",
        bit: 38,
        needed_for: "the classifier's and the end probe's reads of kernel memory (conntrack \
                     entries) and attaching the end probe's tracepoint",
        in_sys_admin: true,
    },
];

/// The effective capability set of this process (`CapEff` of `/proc/self/status`).
pub fn effective() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    parse_cap_eff(&status)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no CapEff in /proc/self/status"))
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The capabilities of [`NEEDED`] missing from the set `eff`.
pub fn missing(eff: u64) -> Vec<Capability> {
    let has = |bit: u32| eff & (1u64 << bit) != 0;
    let granted = |c: &Capability| has(c.bit) || (c.in_sys_admin && has(CAP_SYS_ADMIN));
    NEEDED.into_iter().filter(|c| !granted(c)).collect()
}

/// The message for a process that lacks `missing` (not empty).
pub fn explain(missing: &[Capability]) -> String {
    let names: Vec<&str> = missing.iter().map(|c| c.name).collect();
    let why: Vec<String> =
        missing.iter().map(|c| format!("{} is for {}", c.name, c.needed_for)).collect();
    format!(
        "natrec record lacks {}: {}. It needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON: run it as \
         root, or as the natrec.service unit (AmbientCapabilities=), or under `setpriv \
         --ambient-caps=+bpf,+net_admin,+perfmon`",
        names.join(" and "),
        why.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_exactly_what_is_missing() {
        let all = (1u64 << 39) | (1 << 38) | (1 << 12);
        assert!(missing(all).is_empty());
        assert!(missing(u64::MAX).is_empty(), "root");
        let names = |eff| missing(eff).iter().map(|c| c.name).collect::<Vec<_>>();
        assert_eq!(names(all & !(1 << 38)), ["CAP_PERFMON"]);
        assert_eq!(names(0), ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"]);
        assert_eq!(names(1 << 21), ["CAP_NET_ADMIN"], "CAP_SYS_ADMIN covers BPF and PERFMON");
        let msg = explain(&missing(all & !(1 << 12)));
        assert!(msg.contains("lacks CAP_NET_ADMIN: CAP_NET_ADMIN is for attaching"), "{msg}");
    }

    #[test]
    fn reads_the_effective_set() {
        let status = "Name:\tnatrec\nCapInh:\t0000000000000000\nCapEff:\t000000c000001000\n";
        assert_eq!(parse_cap_eff(status), Some((1 << 39) | (1 << 38) | (1 << 12)));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
        assert!(effective().is_ok(), "this process has a status file");
    }
}
