//! Part 5 (b): a mix like a real gateway's, new translations among established packets.
//!
//! **The model.** One inside host keeps [`MixOptions::slots`] UDP flows going at once and sends
//! to them round-robin. Each flow is a fresh 5-tuple (a new conntrack entry, one translation)
//! that sends a number of packets drawn from a bounded Pareto distribution and then stops; its
//! slot at once starts the next flow. Flow sizes on the Internet are heavy-tailed: most flows
//! are a few packets, most packets belong to a few long flows. Crovella and Bestavros
//! ("Self-similarity in World Wide Web traffic: evidence and possible causes", IEEE/ACM
//! Transactions on Networking 5(6), 1997) measured transfer sizes with a Pareto tail of shape
//! α ≈ 1.0–1.3; we take α = 1.1 from 2 to 1 000 000 packets (whole packets: the integer part), whose mean is 15.6 packets per
//! flow (the issue: "tens to thousands of packets per translation on real traffic"). The
//! packets per new translation each run actually had are measured and reported.
//!
//! **Replies.** A flow is established, as on a real gateway, once its first packet has been
//! answered: the first packet of each flow is one byte longer than the others, the outside
//! lets only those up its stack, and a raw socket there answers each one (source and
//! destination swapped) while the others are counted and dropped at ingress. The answers go
//! back through the gateway (the reply direction of the entry) and the inside host drops them.
//! A slot's next packet comes a round later (the slots times the time per packet, 2 ms and
//! more), mostly after the answer, as a real flow's second packet comes after a round trip.
//!
//! **Ends.** The gateway's UDP timeouts are 2 s, so flows that stop end within the run: the
//! recorders see starts and ends at the rate the mix makes them.
//!
//! **Measured.** At the generator's maximum: packets per second forwarded (the outside's
//! ingress counter). At fixed packet rates, where every recorder keeps up: the machine's CPU
//! time per forwarded packet (all CPUs, `/proc/stat`, everything but idle and iowait), which
//! includes the recorder's own threads. Before each measurement the gateway's conntrack table
//! is emptied, so every case sends the same packets (same seed) to an empty table.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use recorder::rng::Rng;
use serde_json::{Value, json};

use super::recorders::{self, Recorder};
use super::stats::Spread;
use super::{BenchError, Result, io_err};
use crate::gateway::{GatewayLab, LabSpec, Timeouts};
use crate::lab::NftTable;

/// What to run.
#[derive(Clone, Debug)]
pub struct MixOptions {
    /// Flows sending at once.
    pub slots: usize,
    /// Fixed packet rates (packets/s offered) measured besides the maximum.
    pub rates: Vec<u64>,
}

impl Default for MixOptions {
    fn default() -> Self {
        Self { slots: 1000, rates: vec![50_000, 150_000] }
    }
}

/// Flow sizes in packets: bounded Pareto.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlowSizes {
    pub alpha: f64,
    pub min: f64,
    pub max: f64,
}

/// The model's flow sizes (see the module docs).
pub const FLOW_SIZES: FlowSizes = FlowSizes { alpha: 1.1, min: 2.0, max: 1e6 };

impl FlowSizes {
    /// The size whose CDF is `u` (0 ≤ u < 1), by inversion.
    pub fn at(self, u: f64) -> u64 {
        let ratio = (self.min / self.max).powf(self.alpha);
        let x = self.min / (1.0 - u * (1.0 - ratio)).powf(1.0 / self.alpha);
        x.clamp(self.min, self.max) as u64
    }

    /// The mean flow size in whole packets (the sizes [`FlowSizes::at`] gives are the integer
    /// parts): the sum over k ≥ 1 of P(size ≥ k).
    pub fn mean(self) -> f64 {
        let (a, l, h) = (self.alpha, self.min, self.max);
        let tail = (l / h).powf(a);
        let at_least = |k: f64| ((l / k).powf(a) - tail) / (1.0 - tail);
        l.floor() + (l.floor() as u64 + 1..=h as u64).map(|k| at_least(k as f64)).sum::<f64>()
    }
}

const SOURCE_PORT: u16 = 41_000;
/// Payload of a flow's later packets; its first packet carries one byte more.
const PAYLOAD: &[u8] = &[0x6d; 65];
/// UDP length of a first packet (8 + 66), which the outside lets up to its answerer.
const FIRST_UDP_LEN: usize = 8 + PAYLOAD.len() + 1;
const BATCH: usize = 64;
const SEED: u64 = 5;
/// Servers of the mix lab: destination tuples are servers × 64 000 ports.
const SERVERS: u8 = 16;
const TABLE: &str = "natrec_bench_mix";

/// One measurement's figures.
struct Measured {
    forwarded: u64,
    sent: u64,
    flows: u64,
    seconds: f64,
    /// Machine CPU seconds (all CPUs) spent while it ran.
    cpu_seconds: f64,
}

/// Runs the mix for every case (no recorder first) and returns its results (the `mix` part of
/// `forward.json`).
pub fn run(
    opts: &MixOptions,
    duration: Duration,
    reps: usize,
    recorders_: &[Recorder],
    work: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<Value> {
    // A batch must not hold two packets of one slot (a slot's destination may change between
    // them).
    if opts.slots < BATCH || opts.slots > 100_000 {
        return Err(BenchError::Invalid(format!(
            "mix: {} flows at once: {BATCH} to 100000",
            opts.slots
        )));
    }
    let lab = GatewayLab::build(LabSpec {
        prefix: "mix".into(),
        inside_hosts: 1,
        addrs_per_host: 1,
        pool_size: 1,
        nat_options: String::new(),
        servers: SERVERS,
        timeouts: Timeouts(vec![
            ("nf_conntrack_udp_timeout".into(), 2),
            ("nf_conntrack_udp_timeout_stream".into(), 2),
        ]),
        port_forward: false,
        ipv6: false,
        prefix_translation: false,
    })?;
    let host = lab.hosts()[0].addr();
    let servers = lab.servers();
    let _outside = NftTable::create(
        Some(lab.outside()),
        "netdev",
        TABLE,
        &format!(
            "table netdev {TABLE} {{\n counter forwarded {{ }}\n chain ingress {{\n  type filter hook ingress device \"eth0\" priority 0; policy accept;\n  ip protocol udp counter name \"forwarded\"\n  udp length != {FIRST_UDP_LEN} drop\n }}\n}}\n"
        ),
    )?;
    // The outside's UDP stack has no socket for the first packets: no port-unreachable back.
    let _no_icmp = NftTable::create(
        Some(lab.outside()),
        "inet",
        TABLE,
        &format!(
            "table inet {TABLE} {{\n chain output {{\n  type filter hook output priority 0; policy accept;\n  icmp type destination-unreachable drop\n }}\n}}\n"
        ),
    )?;
    // The inside host needs none of the answers.
    let _inside = NftTable::create(
        Some(lab.hosts()[0].ns()),
        "netdev",
        TABLE,
        &format!(
            "table netdev {TABLE} {{\n chain ingress {{\n  type filter hook ingress device \"eth0\" priority 0; policy accept;\n  ip protocol udp drop\n }}\n}}\n"
        ),
    )?;
    let answerer = Answerer::start(&lab)?;

    let mut cases = vec![Recorder::None];
    cases.extend(recorders_);
    // Per measurement (the maximum, then each rate), per case, one value per repetition.
    let points: Vec<Option<u64>> =
        std::iter::once(None).chain(opts.rates.iter().copied().map(Some)).collect();
    let mut pps = vec![vec![Vec::new(); cases.len()]; points.len()];
    let mut cpu_ns = vec![vec![Vec::new(); cases.len()]; points.len()];
    let mut per_flow = vec![vec![Vec::new(); cases.len()]; points.len()];
    let mut ratio = vec![vec![Vec::new(); cases.len()]; points.len()];
    for rep in 0..reps {
        let mut rep_fig = vec![vec![(0.0, 0.0); cases.len()]; points.len()];
        for k in 0..cases.len() {
            let i = (k + rep) % cases.len();
            lab.conntrack_flush()?;
            let dir = work.join(format!("mix-rep{rep}-{}", cases[i].name()));
            std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
            let running = recorders::start(cases[i], &lab, &dir)?;
            for (p, rate) in points.iter().enumerate() {
                lab.conntrack_flush()?;
                let m = measure(&lab, host, &servers, opts.slots, duration, *rate)?;
                let fwd_pps = m.forwarded as f64 / m.seconds;
                let ns_per_packet = m.cpu_seconds * 1e9 / m.forwarded.max(1) as f64;
                rep_fig[p][i] = (fwd_pps, ns_per_packet);
                pps[p][i].push(fwd_pps);
                cpu_ns[p][i].push(ns_per_packet);
                per_flow[p][i].push(m.sent as f64 / m.flows.max(1) as f64);
                log(&format!(
                    "mix rep {}: {}: {}: {:.0} packets/s forwarded of {:.0}/s sent, {} new flows ({:.1} packets each), {:.0} ns of machine CPU per packet",
                    rep + 1,
                    cases[i].name(),
                    rate.map_or_else(|| "maximum".to_owned(), |r| format!("{r}/s")),
                    fwd_pps,
                    m.sent as f64 / m.seconds,
                    m.flows,
                    m.sent as f64 / m.flows.max(1) as f64,
                    ns_per_packet,
                ));
            }
            running.stop()?;
        }
        for (p, rate) in points.iter().enumerate() {
            for i in 0..cases.len() {
                let (fwd, ns) = rep_fig[p][i];
                let (base_fwd, base_ns) = rep_fig[p][0];
                // At the maximum the rate counts; at a fixed rate, what each packet cost.
                ratio[p][i].push(if rate.is_none() { fwd / base_fwd } else { base_ns / ns });
            }
        }
    }
    let answered = answerer.stop()?;
    log(&format!("mix: the outside answered {answered} first packets"));

    let spread = |v: &[f64]| Spread::of(v).map_or(Value::Null, Spread::to_json);
    let by_case = |values: &[Vec<f64>]| -> Value {
        cases.iter().zip(values).map(|(c, v)| (c.name().to_owned(), spread(v))).collect()
    };
    let runs: Vec<Value> = points
        .iter()
        .enumerate()
        .map(|(p, rate)| {
            json!({
                "rate": rate,
                "forwarded_pps": by_case(&pps[p]),
                "machine_cpu_ns_per_packet": by_case(&cpu_ns[p]),
                "packets_per_translation": by_case(&per_flow[p]),
                "ratio": by_case(&ratio[p]),
            })
        })
        .collect();
    Ok(json!({
        "model": {
            "flow_sizes": "bounded Pareto",
            "alpha": FLOW_SIZES.alpha,
            "min_packets": FLOW_SIZES.min,
            "max_packets": FLOW_SIZES.max,
            "mean_packets": FLOW_SIZES.mean(),
            "source": "Crovella and Bestavros, Self-similarity in World Wide Web traffic, IEEE/ACM ToN 5(6), 1997",
            "slots": opts.slots,
            "udp_timeout_s": 2,
        },
        "answered_first_packets": answered,
        "runs": runs,
    }))
}

/// The machine's busy CPU time so far (all CPUs, seconds): `/proc/stat`'s first line without
/// idle and iowait.
fn machine_busy_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(io_err("reading /proc/stat"))?;
    let line = stat.lines().next().unwrap_or_default();
    let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    if !line.starts_with("cpu ") || ticks.len() < 8 {
        return Err(BenchError::Invalid(format!("/proc/stat: unexpected first line {line:?}")));
    }
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy = ticks[..8].iter().sum::<u64>() - ticks[3] - ticks[4];
    // SAFETY: sysconf(3) has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok(busy as f64 / if hz > 0 { hz as f64 } else { 100.0 })
}

/// The outside's count of forwarded packets.
fn read_counter(lab: &GatewayLab) -> Result<u64> {
    super::sys::nft_counter(lab.outside(), "netdev", TABLE, "forwarded")
}

/// One run of the mix, at `rate` packets/s or the maximum.
fn measure(
    lab: &GatewayLab,
    host: Ipv4Addr,
    servers: &[Ipv4Addr],
    slots: usize,
    duration: Duration,
    rate: Option<u64>,
) -> Result<Measured> {
    let before = read_counter(lab)?;
    let cpu_before = machine_busy_seconds()?;
    let servers = servers.to_vec();
    let (sent, flows, seconds) =
        lab.hosts()[0].ns().run_in(move || generate(host, &servers, slots, rate, duration))??;
    let cpu_seconds = machine_busy_seconds()? - cpu_before;
    // Packets in flight reach the counter a moment later.
    std::thread::sleep(Duration::from_millis(50));
    let forwarded = read_counter(lab)? - before;
    Ok(Measured { forwarded, sent, flows, seconds, cpu_seconds })
}

/// A flow slot: its destination and the packets it has left.
#[derive(Clone, Copy)]
struct Slot {
    dest: usize,
    left: u64,
}

/// Sends the mix from `host` for `duration`: returns (packets sent, flows started, seconds).
fn generate(
    host: Ipv4Addr,
    servers: &[Ipv4Addr],
    slots: usize,
    rate: Option<u64>,
    duration: Duration,
) -> Result<(u64, u64, f64)> {
    let source = SocketAddrV4::new(host, SOURCE_PORT);
    let sock = UdpSocket::bind(source).map_err(io_err(format!("binding {source}")))?;
    let mut rng = Rng::new(SEED);
    let tuples = servers.len() as u64 * 64_000;
    let name_of = |k: u64| -> libc::sockaddr_in {
        let server = servers[(k % servers.len() as u64) as usize];
        let port = super::load::port_of(SEED, k / servers.len() as u64);
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(server).to_be() },
            sin_zero: [0; 8],
        }
    };
    let mut names: Vec<libc::sockaddr_in> = Vec::with_capacity(slots);
    let mut table: Vec<Slot> = Vec::with_capacity(slots);
    let mut flows = 0u64;
    // Each slot starts as it would be at a random moment of a long run (so that the run sees
    // the mix's steady proportion of new translations from its start, not the burst of a
    // thousand flows starting together): a flow found in progress is size-biased (its size
    // drawn with α - 1) and is at a uniform point of it. Its entry is new all the same.
    let in_progress = FlowSizes { alpha: FLOW_SIZES.alpha - 1.0, ..FLOW_SIZES };
    for _ in 0..slots {
        names.push(name_of(flows));
        let size = in_progress.at(rng.unit());
        let left = ((size as f64 * rng.unit()).ceil() as u64).max(1);
        table.push(Slot { dest: names.len() - 1, left });
        flows += 1;
    }
    // Which slots' next packet is their first.
    let mut first = vec![true; slots];
    let mut later =
        libc::iovec { iov_base: PAYLOAD.as_ptr().cast_mut().cast(), iov_len: PAYLOAD.len() };
    let first_payload = [0x6d; PAYLOAD.len() + 1];
    let mut opening = libc::iovec {
        iov_base: first_payload.as_ptr().cast_mut().cast(),
        iov_len: PAYLOAD.len() + 1,
    };
    // SAFETY: mmsghdr is a plain C struct for which all-zero bytes are valid.
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let (start, mut packets, mut next) = (Instant::now(), 0u64, 0usize);
    while start.elapsed() < duration {
        if let Some(r) = rate {
            let due = Duration::from_secs_f64(packets as f64 / r as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        for m in msgs.iter_mut() {
            let s = &mut table[next];
            if s.left == 0 {
                if flows >= tuples {
                    return Err(BenchError::Invalid(format!(
                        "the mix used all {tuples} destination tuples: shorten the run"
                    )));
                }
                names[s.dest] = name_of(flows);
                s.left = FLOW_SIZES.at(rng.unit());
                first[next] = true;
                flows += 1;
            }
            s.left -= 1;
            m.msg_hdr.msg_name = (&raw const names[s.dest]).cast_mut().cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            m.msg_hdr.msg_iov =
                if std::mem::take(&mut first[next]) { &raw mut opening } else { &raw mut later };
            m.msg_hdr.msg_iovlen = 1;
            next = (next + 1) % slots;
        }
        // SAFETY: every header points at a live sockaddr_in of `names` and at one of the two
        // iovecs, whose payloads outlive the call.
        let n = unsafe {
            libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), BATCH as libc::c_uint, 0)
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            // A full queue under load: the batch is sent again (its flows' counts are already
            // taken, so a flow may send a few packets less; the tuples stay fresh).
            if e.raw_os_error() != Some(libc::ENOBUFS) && e.raw_os_error() != Some(libc::EAGAIN) {
                return Err(io_err("sendmmsg")(e));
            }
        } else {
            packets += n as u64;
        }
    }
    Ok((packets, flows, start.elapsed().as_secs_f64()))
}

/// A raw socket in the outside namespace answering every first packet that reaches it.
struct Answerer {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Answerer {
    fn start(lab: &GatewayLab) -> Result<Answerer> {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let (stop_in, answered_in) = (stop.clone(), answered.clone());
        let thread = lab.outside().spawn_thread(move || -> Result<()> {
            let sock = match raw_udp_socket() {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let msg = e.to_string();
                    let _ = ready_tx.send(Err(e));
                    return Err(BenchError::Invalid(msg));
                }
            };
            answer(&sock, &stop_in, &answered_in)
        })?;
        ready_rx
            .recv()
            .map_err(|_| BenchError::Invalid("the answering thread did not start".into()))??;
        Ok(Answerer { stop, answered, thread: Some(thread) })
    }

    /// Stops it; returns how many packets it answered.
    fn stop(mut self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| BenchError::Invalid("the answering thread panicked".into()))??;
        }
        Ok(self.answered.load(Ordering::Relaxed))
    }
}

impl Drop for Answerer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A raw IPv4 socket receiving UDP, sending with its own IP headers, with a 100 ms receive
/// timeout.
fn raw_udp_socket() -> Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_UDP) };
    if fd < 0 {
        return Err(io_err("a raw UDP socket")(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh socket nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let s = socket2::SockRef::from(&sock);
    s.set_header_included_v4(true).map_err(io_err("IP_HDRINCL"))?;
    s.set_read_timeout(Some(Duration::from_millis(100))).map_err(io_err("SO_RCVTIMEO"))?;
    s.set_recv_buffer_size(8 << 20).map_err(io_err("SO_RCVBUF"))?;
    Ok(sock)
}

/// Answers each UDP packet `sock` receives with one to its source, from its destination.
fn answer(sock: &OwnedFd, stop: &AtomicBool, answered: &AtomicU64) -> Result<()> {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => continue,
                _ => return Err(io_err("receiving on the raw socket")(e)),
            }
        }
        let Some(reply) = reply_to(&buf[..n as usize]) else { continue };
        let dst = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_be_bytes([reply[16], reply[17], reply[18], reply[19]]).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: `reply` and `dst` are live for the call.
        let sent = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                reply.as_ptr().cast(),
                reply.len(),
                0,
                (&raw const dst).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if sent >= 0 {
            answered.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// The answer to one received IPv4 UDP packet (header included): addresses and ports swapped,
/// 8 bytes of payload, no UDP checksum (allowed over IPv4). The kernel fills in the IP
/// checksum, total length and id.
fn reply_to(pkt: &[u8]) -> Option<[u8; 36]> {
    let ihl = usize::from(*pkt.first()? & 0x0f) * 4;
    if pkt[0] >> 4 != 4 || pkt.get(9) != Some(&17) || pkt.len() < ihl + 8 {
        return None;
    }
    let mut r = [0u8; 36];
    r[0] = 0x45;
    r[8] = 64;
    r[9] = 17;
    r[12..16].copy_from_slice(&pkt[16..20]);
    r[16..20].copy_from_slice(&pkt[12..16]);
    r[2..4].copy_from_slice(&36u16.to_be_bytes());
    let udp = &pkt[ihl..];
    r[20..22].copy_from_slice(&udp[2..4]);
    r[22..24].copy_from_slice(&udp[0..2]);
    r[24..26].copy_from_slice(&16u16.to_be_bytes());
    r[28..36].copy_from_slice(b"natrec-a");
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_sizes_are_bounded_and_heavy_tailed_with_the_stated_mean() {
        let d = FLOW_SIZES;
        assert_eq!(d.at(0.0), 2);
        assert!(d.at(0.999_999_999) <= 1_000_000);
        // About 16 packets a flow (the continuous distribution's 16.1 less the parts cut off).
        assert!((d.mean() - 15.6).abs() < 0.5, "mean {}", d.mean());
        let mut rng = Rng::new(1);
        let n = 2_000_000;
        let sizes: Vec<u64> = (0..n).map(|_| d.at(rng.unit())).collect();
        let small = sizes.iter().filter(|&&s| s <= 4).count() as f64 / n as f64;
        // P(size ≤ 4) = P(X < 5) = 1 - (2/5)^1.1 ≈ 0.635: most flows are tiny …
        assert!((small - 0.635).abs() < 0.01, "share of flows of at most 4 packets: {small}");
        // … and the largest tenth of flows carry most of the packets.
        let mut sorted = sizes.clone();
        sorted.sort_unstable();
        let total: u64 = sorted.iter().sum();
        let top: u64 = sorted[n * 9 / 10..].iter().sum();
        assert!(top as f64 > 0.6 * total as f64, "top tenth carries {top} of {total}");
    }

    #[test]
    fn the_reply_swaps_addresses_and_ports() {
        let mut pkt = [0u8; 28 + 66];
        pkt[0] = 0x45;
        pkt[9] = 17;
        pkt[12..16].copy_from_slice(&[100, 64, 0, 1]);
        pkt[16..20].copy_from_slice(&[100, 64, 1, 3]);
        pkt[20..22].copy_from_slice(&41_000u16.to_be_bytes());
        pkt[22..24].copy_from_slice(&2048u16.to_be_bytes());
        let r = reply_to(&pkt).expect("a UDP packet");
        assert_eq!(&r[12..16], &[100, 64, 1, 3]);
        assert_eq!(&r[16..20], &[100, 64, 0, 1]);
        assert_eq!(u16::from_be_bytes([r[20], r[21]]), 2048);
        assert_eq!(u16::from_be_bytes([r[22], r[23]]), 41_000);
        pkt[9] = 6;
        assert!(reply_to(&pkt).is_none(), "TCP is not answered");
    }
}
