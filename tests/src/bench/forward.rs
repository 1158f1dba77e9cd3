//! Part 5: what a recorder costs a forwarding gateway, per packet and machine-wide (the issue
//! "The packet path"). Every ratio is computed within one repetition.
//!
//! - **Established traffic** (a): one inside host holds `flows` long-lived UDP flows to one
//!   outside server. Each flow is answered once first, so conntrack has seen its reply and every
//!   later packet is `IP_CT_ESTABLISHED`; then one generator thread sends to them round-robin
//!   (sendmmsg, 64 per call) as fast as it can for `duration`, and the outside counts what the
//!   gateway forwarded (a netdev ingress counter that drops the packets). No translation starts
//!   or ends while it runs: the recorders' user side idles, only their kernel side works.
//! - **Machine-wide tax** (c): no NAT at all. In a namespace of its own, a loop creates, writes
//!   and unlinks small files and opens and closes loopback TCP connections (each allocates and
//!   frees slab objects: dentries, inodes, sockets, skbs) for `duration`; operations per second.
//! - **Per program**: natrec again with `--program-stats` (the kernel's BPF run statistics, which
//!   add their own cost, so the rates above are measured without them): runs per second and ns
//!   per run of each program during each workload.
//!
//! The cases: no recorder, then each recorder of `recorders`, one at a time, their order turned
//! by one at each repetition.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::mix::{self, MixOptions};
use super::recorders::{self, Recorder};
use super::stats::Spread;
use super::sys::Machine;
use super::{BenchError, Result, io_err, path_str};
use crate::gateway::{GatewayLab, LabSpec, Timeouts};
use crate::lab::{Netns, NftTable, TempDir};
use crate::recorder_proc::{NatrecRecord, stats_json};

/// What to run.
#[derive(Clone, Debug)]
pub struct ForwardOptions {
    /// Long-lived flows of the established-traffic workload.
    pub flows: u16,
    /// How long each measurement lasts.
    pub duration: Duration,
    pub reps: usize,
    /// Recorders compared with none.
    pub recorders: Vec<Recorder>,
    /// The realistic mix (b).
    pub mix: MixOptions,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        Self {
            flows: 1000,
            duration: Duration::from_secs(5),
            reps: 3,
            recorders: vec![Recorder::Natrec, Recorder::NatrecCtnetlink, Recorder::ConntrackE],
            mix: MixOptions::default(),
        }
    }
}

/// The first destination port of the flows; flow `i` goes to `FIRST_PORT + i`.
const FIRST_PORT: u16 = 20_000;
/// The inside host's source port for every flow.
const SOURCE_PORT: u16 = 40_000;
const PAYLOAD: &[u8] = &[0x6e; 64];
const BATCH: usize = 64;

/// Runs part 5 and returns its results document (`bench-results/forward.json`).
pub fn run(opts: &ForwardOptions, log: &mut dyn FnMut(&str)) -> Result<Value> {
    for r in &opts.recorders {
        r.check_installed()?;
    }
    if opts.flows == 0 || u32::from(FIRST_PORT) + u32::from(opts.flows) > 65_000 {
        return Err(BenchError::Invalid(format!("--flows {}: 1 to 45000", opts.flows)));
    }
    let started = jiff::Timestamp::now();
    let lab = GatewayLab::build(LabSpec {
        prefix: "fwd".into(),
        inside_hosts: 1,
        addrs_per_host: 1,
        pool_size: 1,
        nat_options: String::new(),
        servers: 1,
        // The flows must outlive every case of every repetition.
        timeouts: Timeouts(vec![
            ("nf_conntrack_udp_timeout".into(), 3600),
            ("nf_conntrack_udp_timeout_stream".into(), 3600),
        ]),
        port_forward: false,
        ipv6: false,
        prefix_translation: false,
    })?;
    let host = &lab.hosts()[0];
    let server = lab.servers()[0];
    let dests: Vec<SocketAddrV4> =
        (0..opts.flows).map(|i| SocketAddrV4::new(server, FIRST_PORT + i)).collect();
    let source = SocketAddrV4::new(host.addr(), SOURCE_PORT);
    answer_once(&lab, source, &dests)?;
    log(&format!("{} flows established (each answered once)", dests.len()));
    // From now on the outside counts and drops what arrives.
    let sink = NftTable::create(
        Some(lab.outside()),
        "netdev",
        "natrec_bench_fwd",
        "table netdev natrec_bench_fwd {\n counter forwarded { }\n chain ingress {\n  type filter hook ingress device \"eth0\" priority 0; policy accept;\n  ip protocol udp counter name \"forwarded\" drop\n }\n}\n",
    )?;
    let tax_ns = Netns::new("tax")?;
    let temp = TempDir::new("fwd")?;

    let mut cases = vec![Recorder::None];
    cases.extend(&opts.recorders);
    let mut pps: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut ops: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut pps_ratio: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut ops_ratio: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for rep in 0..opts.reps {
        let mut rep_pps = vec![0.0; cases.len()];
        let mut rep_ops = vec![0.0; cases.len()];
        for k in 0..cases.len() {
            let i = (k + rep) % cases.len();
            let dir = temp.path().join(format!("rep{rep}-{}", cases[i].name()));
            std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
            let running = recorders::start(cases[i], &lab, &dir)?;
            let before = read_counter(lab.outside())?;
            let sent = blast(host.ns(), source, &dests, opts.duration)?;
            let forwarded = read_counter(lab.outside())? - before;
            rep_pps[i] = forwarded as f64 / sent.seconds;
            rep_ops[i] = tax(&tax_ns, &dir, opts.duration)?;
            running.stop()?;
            log(&format!(
                "rep {}: {}: {:.0} packets/s forwarded ({:.0}/s sent), {:.0} slab-heavy ops/s",
                rep + 1,
                cases[i].name(),
                rep_pps[i],
                sent.packets as f64 / sent.seconds,
                rep_ops[i]
            ));
        }
        for i in 0..cases.len() {
            pps[i].push(rep_pps[i]);
            ops[i].push(rep_ops[i]);
            pps_ratio[i].push(rep_pps[i] / rep_pps[0]);
            ops_ratio[i].push(rep_ops[i] / rep_ops[0]);
        }
    }
    let programs = program_costs(&lab, &tax_ns, host.ns(), source, &dests, opts, temp.path())?;
    log(&format!("program costs: {programs}"));
    let memory = memory(&lab, source, server, temp.path(), log)?;
    drop(sink);
    drop(lab);
    let mix = mix::run(&opts.mix, opts.duration, opts.reps, &opts.recorders, temp.path(), log)?;

    let spread = |v: &[f64]| Spread::of(v).map_or(Value::Null, Spread::to_json);
    let by_case = |values: &[Vec<f64>]| -> Value {
        cases.iter().zip(values).map(|(c, v)| (c.name().to_owned(), spread(v))).collect()
    };
    Ok(json!({
        "started": started.to_string(),
        "machine": Machine::describe().to_json(),
        "flows": opts.flows,
        "duration_s": opts.duration.as_secs_f64(),
        "reps": opts.reps,
        "established_pps": by_case(&pps),
        "established_ratio": by_case(&pps_ratio),
        "tax_ops": by_case(&ops),
        "tax_ratio": by_case(&ops_ratio),
        "programs": programs,
        "mix": mix,
        "memory": memory,
    }))
}

/// Sends one packet of each flow and has the outside answer each once, so that conntrack has
/// seen every flow's reply.
fn answer_once(lab: &GatewayLab, source: SocketAddrV4, dests: &[SocketAddrV4]) -> Result<()> {
    let listen: Vec<SocketAddrV4> = dests.to_vec();
    let ready = std::sync::Arc::new(std::sync::Barrier::new(2));
    let ready_out = ready.clone();
    let answers = lab.outside().spawn_thread(move || -> Result<usize> {
        let socks: Vec<UdpSocket> = listen
            .iter()
            .map(|a| UdpSocket::bind(a).map_err(io_err(format!("binding {a}"))))
            .collect::<Result<_>>()?;
        for s in &socks {
            s.set_nonblocking(true).map_err(io_err("a nonblocking socket"))?;
        }
        ready_out.wait();
        let mut answered = vec![false; socks.len()];
        let mut left = socks.len();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 256];
        while left > 0 && Instant::now() < deadline {
            for (i, s) in socks.iter().enumerate() {
                if answered[i] {
                    continue;
                }
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    s.send_to(&buf[..n], from).map_err(io_err("answering a flow"))?;
                    answered[i] = true;
                    left -= 1;
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(socks.len() - left)
    })?;
    let sends = dests.to_vec();
    lab.hosts()[0].ns().run_in(move || -> Result<()> {
        let sock = UdpSocket::bind(source).map_err(io_err(format!("binding {source}")))?;
        ready.wait();
        for d in &sends {
            sock.send_to(PAYLOAD, d).map_err(io_err(format!("sending to {d}")))?;
        }
        // Keep the socket (and its port) until the answers are in.
        std::thread::sleep(Duration::from_millis(500));
        Ok(())
    })??;
    let answered = answers
        .join()
        .map_err(|_| BenchError::Invalid("the answering thread panicked".into()))??;
    if answered != dests.len() {
        return Err(BenchError::Invalid(format!(
            "only {answered} of {} flows were answered",
            dests.len()
        )));
    }
    Ok(())
}

/// What a generator sent.
struct Sent {
    packets: u64,
    seconds: f64,
}

/// Sends to `dests` round-robin from `source`, as fast as one thread can, for `duration`.
fn blast(
    ns: &Netns,
    source: SocketAddrV4,
    dests: &[SocketAddrV4],
    duration: Duration,
) -> Result<Sent> {
    let dests = dests.to_vec();
    ns.run_in(move || -> Result<Sent> {
        let sock = UdpSocket::bind(source).map_err(io_err(format!("binding {source}")))?;
        let names: Vec<libc::sockaddr_in> = dests
            .iter()
            .map(|d| libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: d.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*d.ip()).to_be() },
                sin_zero: [0; 8],
            })
            .collect();
        let mut iov =
            libc::iovec { iov_base: PAYLOAD.as_ptr().cast_mut().cast(), iov_len: PAYLOAD.len() };
        // SAFETY: mmsghdr is a plain C struct for which all-zero bytes are valid.
        let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let (start, mut packets, mut next) = (Instant::now(), 0u64, 0usize);
        while start.elapsed() < duration {
            for m in msgs.iter_mut() {
                m.msg_hdr.msg_name = (&raw const names[next]).cast_mut().cast();
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                m.msg_hdr.msg_iov = &raw mut iov;
                m.msg_hdr.msg_iovlen = 1;
                next = (next + 1) % names.len();
            }
            // SAFETY: every header points at a live sockaddr_in of `names` and at `iov`, whose
            // payload is static.
            let n = unsafe {
                libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), BATCH as libc::c_uint, 0)
            };
            if n > 0 {
                packets += n as u64;
            }
        }
        Ok(Sent { packets, seconds: start.elapsed().as_secs_f64() })
    })?
}

/// The outside's count of forwarded packets.
fn read_counter(outside: &Netns) -> Result<u64> {
    super::sys::nft_counter(outside, "netdev", "natrec_bench_fwd", "forwarded")
}

/// Slab-heavy work with no NAT for `duration` in `ns`: create, write, unlink a file and open and
/// close a loopback TCP connection, in turn. Returns operations per second.
fn tax(ns: &Netns, dir: &Path, duration: Duration) -> Result<f64> {
    let files = dir.join("tax");
    std::fs::create_dir_all(&files).map_err(io_err(format!("creating {}", files.display())))?;
    ns.run_in(move || -> Result<f64> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(io_err("binding the loopback listener"))?;
        let addr = listener.local_addr().map_err(io_err("the listener's address"))?;
        let (start, mut ops, mut n) = (Instant::now(), 0u64, 0u64);
        let mut byte = [0u8; 1];
        while start.elapsed() < duration {
            let path = files.join(format!("f{}", n % 64));
            n += 1;
            std::fs::write(&path, b"x").map_err(io_err(format!("writing {}", path.display())))?;
            std::fs::remove_file(&path).map_err(io_err(format!("removing {}", path.display())))?;
            // Connect, accept, one byte, reset at close: all in this thread, so the backlog
            // never fills and no TIME_WAIT exhausts the ports.
            let mut c = TcpStream::connect(addr).map_err(io_err("a loopback connection"))?;
            let (mut a, _) = listener.accept().map_err(io_err("accepting on loopback"))?;
            socket2::SockRef::from(&c)
                .set_linger(Some(Duration::ZERO))
                .map_err(io_err("SO_LINGER"))?;
            c.write_all(b"x").map_err(io_err("writing to the loopback connection"))?;
            a.read_exact(&mut byte).map_err(io_err("reading on loopback"))?;
            drop(c);
            drop(a);
            ops += 2;
        }
        Ok(ops as f64 / start.elapsed().as_secs_f64())
    })?
}

/// What a process holds: resident memory and the kernel memory of its BPF maps.
#[derive(Clone, Copy, Debug, Default)]
struct Held {
    /// Resident memory less the pages of BPF maps mapped into the process (the ring buffer's),
    /// which `maps` counts.
    rss: u64,
    maps: u64,
}

impl Held {
    /// VmRSS of `/proc/PID/status` less the resident pages of its `anon_inode:bpf-map` mappings
    /// (`/proc/PID/smaps`), and the `memlock` of each BPF map it has open (once per map id),
    /// from `/proc/PID/fdinfo`.
    fn of(pid: u32) -> Result<Held> {
        let status_path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&status_path)
            .map_err(io_err(format!("reading {status_path}")))?;
        let vm_rss = kib_field(&status, "VmRSS:")
            .ok_or_else(|| BenchError::Invalid(format!("{status_path}: no VmRSS")))?;
        let smaps_path = format!("/proc/{pid}/smaps");
        let smaps = std::fs::read_to_string(&smaps_path)
            .map_err(io_err(format!("reading {smaps_path}")))?;
        let (mut in_map, mut mapped) = (false, 0);
        for line in smaps.lines() {
            // A mapping's header: "start-end perms offset dev inode [path]".
            if line.split_whitespace().next().is_some_and(|f| f.contains('-') && !f.ends_with(':'))
            {
                in_map = line.ends_with("bpf-map");
            } else if in_map && let Some(k) = kib_field(line, "Rss:") {
                mapped += k;
            }
        }
        let dir = format!("/proc/{pid}/fdinfo");
        let mut seen = std::collections::HashSet::new();
        let mut maps = 0;
        for entry in std::fs::read_dir(&dir).map_err(io_err(format!("listing {dir}")))? {
            let entry = entry.map_err(io_err(format!("listing {dir}")))?;
            let Ok(info) = std::fs::read_to_string(entry.path()) else { continue };
            let field = |key: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            if let (Some(id), Some(memlock)) = (field("map_id:"), field("memlock:"))
                && seen.insert(id)
            {
                maps += memlock;
            }
        }
        Ok(Held { rss: vm_rss.saturating_sub(mapped) * 1024, maps })
    }

    fn total(self) -> u64 {
        self.rss + self.maps
    }

    fn to_json(self) -> Value {
        json!({ "rss_bytes": self.rss, "bpf_map_bytes": self.maps, "total_bytes": self.total() })
    }
}

/// Open translations of the memory measurement.
const MEMORY_OPEN: u16 = 50_000;

/// natrec's memory: idle at the defaults, on a small gateway (`nf_conntrack_max` 16 384, as a
/// router with 256 MB has) and on this machine's; then per open translation, with
/// [`MEMORY_OPEN`] more translations open (one packet each, to distinct ports, kept by the
/// lab's long UDP timeouts).
fn memory(
    lab: &GatewayLab,
    source: SocketAddrV4,
    server: Ipv4Addr,
    work: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<Value> {
    let settle = Duration::from_secs(3);
    let machine_max = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
        .map_err(io_err("reading nf_conntrack_max"))?
        .trim()
        .to_owned();
    let small = {
        // natrec sizes its maps from nf_conntrack_max when it starts (a machine-wide value,
        // read-only in namespaces): lowered for its start only.
        let _max = super::sys::GlobalSysctl::set_to("net.netfilter.nf_conntrack_max", 16_384)?;
        let dir = work.join("memory-small");
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let running = recorders::start(Recorder::Natrec, lab, &dir)?;
        std::thread::sleep(settle);
        let held = Held::of(pid_of(&running)?)?;
        running.stop()?;
        held
    };
    log(&format!("memory idle, nf_conntrack_max 16384: {small:?}"));
    let dir = work.join("memory");
    std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let running = recorders::start(Recorder::Natrec, lab, &dir)?;
    std::thread::sleep(settle);
    let idle = Held::of(pid_of(&running)?)?;
    // Distinct tuples: another source port, destination ports 1024….
    let from = SocketAddrV4::new(*source.ip(), source.port() + 1);
    let dests: Vec<SocketAddrV4> =
        (0..MEMORY_OPEN).map(|i| SocketAddrV4::new(server, 1024 + i)).collect();
    lab.hosts()[0].ns().run_in(move || -> Result<()> {
        let sock = UdpSocket::bind(from).map_err(io_err(format!("binding {from}")))?;
        for d in &dests {
            sock.send_to(PAYLOAD, d).map_err(io_err(format!("sending to {d}")))?;
        }
        Ok(())
    })??;
    std::thread::sleep(settle);
    let open = Held::of(pid_of(&running)?)?;
    let recorded = running.stop()?;
    log(&format!("memory idle: {idle:?}; with {MEMORY_OPEN} more open: {open:?}"));
    let per_open = |a: u64, b: u64| (b as f64 - a as f64) / f64::from(MEMORY_OPEN);
    Ok(json!({
        "small_gateway": { "nf_conntrack_max": 16_384, "idle": small.to_json() },
        "this_machine": {
            "nf_conntrack_max": machine_max,
            "idle": idle.to_json(),
            "more_open": MEMORY_OPEN,
            "with_more_open": open.to_json(),
            "recorded_starts": recorded.starts,
            "bytes_per_open": {
                "rss": per_open(idle.rss, open.rss),
                "bpf_maps": per_open(idle.maps, open.maps),
                "total": per_open(idle.total(), open.total()),
            },
        },
    }))
}

/// The kB value of the first line of `text` that starts with `key`.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn pid_of(r: &recorders::Running) -> Result<u32> {
    r.pid().ok_or_else(|| BenchError::Invalid("natrec has no pid".into()))
}

/// natrec with `--program-stats` during each workload: each program's runs per second and ns per
/// run.
fn program_costs(
    lab: &GatewayLab,
    tax_ns: &Netns,
    host: &Netns,
    source: SocketAddrV4,
    dests: &[SocketAddrV4],
    opts: &ForwardOptions,
    work: &Path,
) -> Result<Value> {
    let mut out = serde_json::Map::new();
    for (workload, ends) in
        [("established", "ebpf"), ("tax", "ebpf"), ("established-ctnetlink", "ctnetlink")]
    {
        let dir = work.join(format!("stats-{workload}"));
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let store = dir.join("store");
        let jsonl = dir.join("none.jsonl");
        std::fs::write(&jsonl, "").map_err(io_err(format!("creating {}", jsonl.display())))?;
        let lans = lab.lan_ifs();
        let mut args = vec!["record", "--wan", lab.wan_if()];
        for lan in &lans {
            args.extend(["--lan", lan.as_str()]);
        }
        args.extend(["--dir", path_str(&store)?, "--stats-json", "--program-stats"]);
        args.extend(["--ends", ends]);
        let natrec = NatrecRecord::start_with(lab.gateway(), &args, &jsonl)?;
        let t = Instant::now();
        if workload == "tax" {
            tax(tax_ns, &dir, opts.duration)?;
        } else {
            blast(host, source, dests, opts.duration)?;
        }
        let seconds = t.elapsed().as_secs_f64();
        let (_, stderr) = natrec.stop()?;
        let stats = stats_json(&stderr)?;
        let programs: Vec<Value> = stats["programs"]
            .as_array()
            .ok_or_else(|| BenchError::Invalid(format!("no program costs in {stats}")))?
            .iter()
            .map(|p| {
                let runs = p["runs"].as_u64().unwrap_or(0);
                json!({
                    "program": p["program"],
                    "runs_per_s": runs as f64 / seconds,
                    "ns_per_run": p["ns_per_run"],
                    "cpu_share": p["run_time_ns"].as_u64().unwrap_or(0) as f64 / 1e9 / seconds,
                })
            })
            .collect();
        out.insert(workload.to_owned(), Value::Array(programs));
    }
    Ok(Value::Object(out))
}
