//! What the kernel and `/proc` say: the gateway's conntrack statistics, a process's CPU time,
//! the machine, and the one global sysctl the benchmark changes.

use std::path::PathBuf;

use super::{BenchError, Result, io_err};
use crate::lab::{Netns, NftTable};

/// The conntrack statistics of one network namespace, summed over CPUs
/// (`/proc/net/stat/nf_conntrack` read from a thread inside the namespace; the kernel keeps them
/// per namespace). Recent kernels no longer count insertions there (the `insert` column stays
/// 0), so the translations created are counted by [`NatCounter`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtStats {
    /// Entries that lost an insertion race and were dropped with their packet.
    pub insert_failed: u64,
    /// Packets dropped because the table was full (no entry could be evicted).
    pub drop: u64,
    /// Entries evicted early to make room in a full table.
    pub early_drop: u64,
}

impl CtStats {
    /// The counters of `ns` now.
    pub fn read(ns: &Netns) -> Result<CtStats> {
        let text = ns
            .run_in(|| std::fs::read_to_string("/proc/thread-self/net/stat/nf_conntrack"))?
            .map_err(io_err(format!("reading /proc/net/stat/nf_conntrack in {}", ns.name())))?;
        CtStats::parse(&text)
    }

    /// Parses the file: a header of column names, then one row of hexadecimal counters per CPU.
    pub fn parse(text: &str) -> Result<CtStats> {
        let mut lines = text.lines();
        let header: Vec<&str> = lines
            .next()
            .ok_or_else(|| BenchError::Invalid("/proc/net/stat/nf_conntrack is empty".into()))?
            .split_whitespace()
            .collect();
        let col = |name: &str| {
            header.iter().position(|h| *h == name).ok_or_else(|| {
                BenchError::Invalid(format!("/proc/net/stat/nf_conntrack has no column {name:?}"))
            })
        };
        let (fail, drop, early) = (col("insert_failed")?, col("drop")?, col("early_drop")?);
        let mut s = CtStats::default();
        for line in lines.filter(|l| !l.trim().is_empty()) {
            let cells: Vec<&str> = line.split_whitespace().collect();
            let get = |i: usize| -> Result<u64> {
                let cell = cells.get(i).ok_or_else(|| {
                    BenchError::Invalid(format!("/proc/net/stat/nf_conntrack: short row {line:?}"))
                })?;
                u64::from_str_radix(cell, 16).map_err(|_| {
                    BenchError::Invalid(format!(
                        "/proc/net/stat/nf_conntrack: {cell:?} is not hexadecimal"
                    ))
                })
            };
            s.insert_failed += get(fail)?;
            s.drop += get(drop)?;
            s.early_drop += get(early)?;
        }
        Ok(s)
    }

    /// `self - earlier`, counter by counter.
    pub fn since(self, earlier: CtStats) -> CtStats {
        CtStats {
            insert_failed: self.insert_failed.saturating_sub(earlier.insert_failed),
            drop: self.drop.saturating_sub(earlier.drop),
            early_drop: self.early_drop.saturating_sub(earlier.early_drop),
        }
    }
}

/// Counts the translations a gateway creates: an nftables table of its own in the gateway whose
/// NAT chain (`postrouting`, just before the lab's masquerade) counts the packets leaving the WAN
/// interface. NAT chains see only the first packet of a new conntrack entry, so the counter is
/// the number of new outgoing translations (minus those whose insertion then failed: see
/// [`CtStats::insert_failed`]). The table is removed on drop.
#[derive(Debug)]
pub struct NatCounter {
    table: NftTable,
    ns: String,
}

/// The counter's table name.
const COUNTER_TABLE: &str = "natrec_bench_count";

impl NatCounter {
    /// Installs the counter in `ns`, counting new translations leaving `wan_if`.
    pub fn install(ns: &Netns, wan_if: &str) -> Result<NatCounter> {
        let ruleset = format!(
            "table ip {COUNTER_TABLE} {{\n counter created {{ }}\n chain post {{\n  type nat hook postrouting priority srcnat - 10; policy accept;\n  oifname \"{wan_if}\" counter name \"created\"\n }}\n}}\n"
        );
        let table = NftTable::create(Some(ns), "ip", COUNTER_TABLE, &ruleset)?;
        Ok(NatCounter { table, ns: ns.name().to_owned() })
    }

    /// The packets counted so far (new translations leaving the WAN interface).
    pub fn read(&self, ns: &Netns) -> Result<u64> {
        if ns.name() != self.ns {
            return Err(BenchError::Invalid(format!(
                "the counter is in {}, not {}",
                self.ns,
                ns.name()
            )));
        }
        nft_counter(ns, "ip", self.table.name(), "created")
    }
}

/// The packets of the named nftables counter `name` of table `family table` in `ns`.
pub(crate) fn nft_counter(ns: &Netns, family: &str, table: &str, name: &str) -> Result<u64> {
    let out = ns.exec(&["nft", "list", "counter", family, table, name])?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_counter_packets(&text)
        .ok_or_else(|| BenchError::Invalid(format!("unexpected `nft list counter` output: {text}")))
}

/// The `packets N` of `nft list counter` output.
fn parse_counter_packets(text: &str) -> Option<u64> {
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "packets" {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// The number of entries in the conntrack table of `ns` now.
pub fn ct_count(ns: &Netns) -> Result<u64> {
    let text = ns
        .run_in(|| std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count"))?
        .map_err(io_err(format!("reading nf_conntrack_count in {}", ns.name())))?;
    text.trim()
        .parse()
        .map_err(|_| BenchError::Invalid(format!("nf_conntrack_count is not a number: {text:?}")))
}

/// CPU time of a process, all its threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcCpu {
    /// Time on CPU in nanoseconds, summed over the threads alive now
    /// (`/proc/PID/task/*/schedstat`, first field).
    pub sched_ns: u64,
    /// utime + stime of the whole process in clock ticks (`/proc/PID/stat`, fields 14 and 15).
    pub ticks: u64,
}

impl ProcCpu {
    /// The CPU time `pid` has used so far.
    pub fn read(pid: u32) -> Result<ProcCpu> {
        let stat_path = format!("/proc/{pid}/stat");
        let stat =
            std::fs::read_to_string(&stat_path).map_err(io_err(format!("reading {stat_path}")))?;
        // The command name (field 2) is in parentheses and may hold spaces: count after it.
        let after = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .ok_or_else(|| BenchError::Invalid(format!("{stat_path}: no command name")))?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        // `after` starts at field 3 (state), so field n is at index n - 3.
        let field = |n: usize| -> Result<u64> {
            fields
                .get(n - 3)
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| BenchError::Invalid(format!("{stat_path}: field {n} missing")))
        };
        let ticks = field(14)? + field(15)?;
        let task_dir = format!("/proc/{pid}/task");
        let mut sched_ns = 0;
        for entry in std::fs::read_dir(&task_dir).map_err(io_err(format!("listing {task_dir}")))? {
            let entry = entry.map_err(io_err(format!("listing {task_dir}")))?;
            let path = entry.path().join("schedstat");
            // A thread may exit between the listing and the read.
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            sched_ns +=
                text.split_whitespace().next().and_then(|f| f.parse::<u64>().ok()).ok_or_else(
                    || BenchError::Invalid(format!("{}: unexpected {text:?}", path.display())),
                )?;
        }
        Ok(ProcCpu { sched_ns, ticks })
    }

    /// CPU seconds used between `earlier` and `self`, from the scheduler's nanoseconds.
    pub fn seconds_since(self, earlier: ProcCpu) -> f64 {
        self.sched_ns.saturating_sub(earlier.sched_ns) as f64 / 1e9
    }

    /// CPU seconds used between `earlier` and `self`, from utime + stime (tick resolution).
    pub fn tick_seconds_since(self, earlier: ProcCpu) -> f64 {
        // SAFETY: sysconf(3) has no memory-safety preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let hz = if hz > 0 { hz as f64 } else { 100.0 };
        self.ticks.saturating_sub(earlier.ticks) as f64 / hz
    }
}

/// A sysctl of the initial namespace (global to the machine) set for the benchmark and put back
/// to its old value on drop.
#[derive(Debug)]
pub struct GlobalSysctl {
    path: PathBuf,
    old: String,
}

impl GlobalSysctl {
    /// Sets `key` (dotted, e.g. `net.netfilter.nf_conntrack_max`) to `value` unless it is
    /// already at least `value` (numeric); returns the guard that restores it.
    pub fn raise_to(key: &str, value: u64) -> Result<Option<GlobalSysctl>> {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        let old = std::fs::read_to_string(&path)
            .map_err(io_err(format!("reading {}", path.display())))?;
        let old = old.trim().to_owned();
        if old.parse::<u64>().is_ok_and(|v| v >= value) {
            return Ok(None);
        }
        std::fs::write(&path, value.to_string())
            .map_err(io_err(format!("writing {}", path.display())))?;
        Ok(Some(GlobalSysctl { path, old }))
    }

    /// Sets `key` to `value` whatever it was; returns the guard that restores it.
    pub fn set_to(key: &str, value: u64) -> Result<GlobalSysctl> {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        let old = std::fs::read_to_string(&path)
            .map_err(io_err(format!("reading {}", path.display())))?;
        std::fs::write(&path, value.to_string())
            .map_err(io_err(format!("writing {}", path.display())))?;
        Ok(GlobalSysctl { path, old: old.trim().to_owned() })
    }

    /// The value it had before.
    pub fn old(&self) -> &str {
        &self.old
    }
}

impl Drop for GlobalSysctl {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, &self.old) {
            eprintln!(
                "natrec-bench: could not restore {} to {}: {e}",
                self.path.display(),
                self.old
            );
        }
    }
}

/// The machine a run was made on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    pub memory_mib: u64,
}

impl Machine {
    /// Reads `/proc/cpuinfo`, `/proc/sys/kernel/osrelease` and `/proc/meminfo`.
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, m)| m.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned());
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
            })
            .map_or(0, |kib| kib / 1024);
        Machine { cpu_model, cores, kernel, memory_mib }
    }

    /// As JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "cpu_model": self.cpu_model,
            "cores": self.cores,
            "kernel": self.kernel,
            "memory_mib": self.memory_mib,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_stat_file_is_summed_over_cpus() {
        let text = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
                    0000000a  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000010 00000001 00000002 00000003 00000000  00000000 00000000 00000000 00000000\n\
                    0000000a  00000000 00000000 00000000 00000000 00000000 00000000 00000000 000000f0 00000000 00000000 00000001 00000000  00000000 00000000 00000000 00000000\n";
        let s = CtStats::parse(text).expect("parses");
        assert_eq!(s, CtStats { insert_failed: 1, drop: 2, early_drop: 4 });
        let later = CtStats { drop: 7, ..s };
        assert_eq!(later.since(s), CtStats { insert_failed: 0, drop: 5, early_drop: 0 });
        assert!(CtStats::parse("entries found\n1 2\n").is_err());
    }

    #[test]
    fn nft_counter_output_is_read() {
        let text = "table ip natrec_bench_count {\n\tcounter created {\n\t\tpackets 12345 bytes 678900\n\t}\n}\n";
        assert_eq!(parse_counter_packets(text), Some(12345));
        assert_eq!(parse_counter_packets("table ip x {\n}\n"), None);
    }

    #[test]
    fn a_busy_process_cpu_time_grows() {
        // A child of its own: the test harness's threads come and go, which would move a sum
        // over this process's threads either way.
        struct Kill(std::process::Child);
        impl Drop for Kill {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let child = Kill(
            std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .expect("spawn a busy shell"),
        );
        let pid = child.0.id();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let a = ProcCpu::read(pid).expect("child stat");
        std::thread::sleep(std::time::Duration::from_millis(300));
        let b = ProcCpu::read(pid).expect("child stat");
        assert!(b.seconds_since(a) >= 0.02, "{a:?} -> {b:?}");
    }
}
