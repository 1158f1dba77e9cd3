//! A fast, paced UDP load: every packet a new 5-tuple, so every packet that reaches the gateway
//! makes it create one translation.
//!
//! One thread per inside host, inside that host's namespace. Each thread has one UDP socket per
//! address of its host, bound to a source port unique to that address (so the masquerade never
//! has to pick another port: the NAT itself stays cheap and the same for every recorder), and
//! sends `sendmmsg(2)` batches whose destinations walk the outside servers and a seeded
//! permutation of the ports 1024–65023. The `k`-th packet of a socket goes to server `k mod S`,
//! port `perm(k div S)`: no 5-tuple repeats within a run while `k < S × 64 000`, and a run with
//! the same seed sends the same packets in the same order.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{BenchError, Result, io_err};
use crate::gateway::GatewayLab;

/// Destination ports per server (1024 … 65023).
const PORTS: u64 = 64_000;
/// The largest batch handed to one `sendmmsg`.
const MAX_BATCH: usize = 64;
/// Payload of every packet.
const PAYLOAD: &[u8] = b"natrec-bench load";

/// What load to offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSpec {
    /// New translations per second offered in total, `None` for as fast as the threads can send.
    pub rate: Option<u64>,
    /// How long to send.
    pub duration: Duration,
    /// Seeds the source ports and the destination port permutation.
    pub seed: u64,
}

/// What the generator did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoadDone {
    /// Packets the kernel accepted from the generator (each one a new 5-tuple).
    pub sent: u64,
    /// `sendmmsg` calls that failed (the packets of a failed call are not counted in `sent`).
    pub send_errors: u64,
    /// How long the threads were sending (the longest thread).
    pub seconds: f64,
}

/// A bijection of 0…PORTS-1 chosen by the seed (multiplier coprime to 64 000 = 2⁹·5³).
pub(super) fn port_of(seed: u64, k: u64) -> u16 {
    const MUL: u64 = 7919;
    let off = seed % PORTS;
    // 1024 + (k·MUL + off) mod PORTS ≤ 65 023.
    u16::try_from(1024 + (k % PORTS * MUL + off) % PORTS).unwrap_or(u16::MAX)
}

/// The source port of address `a` of host `h` (0-based) for `seed`: distinct for every address
/// of the lab, in 20 000–59 999.
fn source_port(seed: u64, h: usize, a: usize) -> u16 {
    let slot = (h * 256 + a) as u64;
    u16::try_from(20_000 + (seed.wrapping_mul(131) + slot) % 40_000).unwrap_or(u16::MAX)
}

/// Checks that `spec` cannot repeat a 5-tuple on `lab` (assuming a sender reaches at most
/// `max_rate` per second when the rate is unbounded).
pub fn check_capacity(lab: &GatewayLab, spec: &LoadSpec, max_rate: u64) -> Result<()> {
    let sockets = lab.hosts().iter().map(|h| h.addrs().len()).sum::<usize>() as u64;
    let per_socket = lab.servers().len() as u64 * PORTS;
    let rate = spec.rate.unwrap_or(max_rate);
    let packets = rate.saturating_mul(spec.duration.as_secs().max(1) + 1);
    if packets / sockets.max(1) >= per_socket {
        return Err(BenchError::Invalid(format!(
            "{packets} packets over {sockets} sockets would repeat 5-tuples (at most {per_socket} per socket): \
             shorten the run or give the lab more servers or inside addresses"
        )));
    }
    Ok(())
}

/// Sends one packet from every inside address to every server (resolving the neighbours on the
/// way) and waits a little: the run proper then does not lose its first packets to ARP.
pub fn warm_up(lab: &GatewayLab) -> Result<()> {
    for h in lab.hosts() {
        let addrs = h.addrs().to_vec();
        let servers = lab.servers();
        h.ns()
            .run_in(move || -> std::io::Result<()> {
                for a in addrs {
                    let s = UdpSocket::bind(SocketAddrV4::new(a, 0))?;
                    for srv in &servers {
                        s.send_to(PAYLOAD, SocketAddrV4::new(*srv, 9))?;
                    }
                }
                Ok(())
            })?
            .map_err(io_err(format!("warm-up packets from {}", h.ns().name())))?;
    }
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

/// Offers `spec` through the lab's gateway and returns what was sent.
pub fn run(lab: &GatewayLab, spec: &LoadSpec) -> Result<LoadDone> {
    let hosts = lab.hosts();
    let threads = hosts.len() as u64;
    let servers = lab.servers();
    let start_flag = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for (hi, h) in hosts.iter().enumerate() {
        let rate = spec.rate.map(|r| (r / threads + u64::from((hi as u64) < r % threads)).max(1));
        let sources: Vec<SocketAddrV4> = h
            .addrs()
            .iter()
            .enumerate()
            .map(|(ai, a)| SocketAddrV4::new(*a, source_port(spec.seed, hi, ai)))
            .collect();
        let servers = servers.clone();
        let go = start_flag.clone();
        let (duration, seed) = (spec.duration, spec.seed);
        handles.push(
            h.ns().spawn_thread(move || sender(&sources, &servers, rate, duration, seed, &go))?,
        );
    }
    start_flag.store(true, Ordering::Release);
    let mut done = LoadDone::default();
    for h in handles {
        let one = h
            .join()
            .map_err(|_| BenchError::Invalid("a load generator thread panicked".into()))??;
        done.sent += one.sent;
        done.send_errors += one.send_errors;
        done.seconds = done.seconds.max(one.seconds);
    }
    Ok(done)
}

/// One sender thread (already inside its host's namespace).
fn sender(
    sources: &[SocketAddrV4],
    servers: &[Ipv4Addr],
    rate: Option<u64>,
    duration: Duration,
    seed: u64,
    go: &AtomicBool,
) -> Result<LoadDone> {
    let sockets: Vec<UdpSocket> = sources
        .iter()
        .map(|s| UdpSocket::bind(s).map_err(io_err(format!("binding the load socket {s}"))))
        .collect::<Result<_>>()?;
    let batch = match rate {
        None => MAX_BATCH,
        // About 2 000 batches a second per thread, at least one packet each.
        Some(r) => usize::try_from(r / 2000).unwrap_or(MAX_BATCH).clamp(1, MAX_BATCH),
    };
    // SAFETY (for the zeroed values): sockaddr_in, iovec and mmsghdr are plain C structs for
    // which all-zero bytes are valid.
    let mut names: Vec<libc::sockaddr_in> = vec![unsafe { std::mem::zeroed() }; batch];
    let mut iovs: Vec<libc::iovec> = (0..batch)
        .map(|_| libc::iovec {
            iov_base: PAYLOAD.as_ptr().cast_mut().cast(),
            iov_len: PAYLOAD.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; batch];
    for i in 0..batch {
        msgs[i].msg_hdr.msg_name = (&raw mut names[i]).cast();
        msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msgs[i].msg_hdr.msg_iov = &raw mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    let mut next_k = vec![0u64; sockets.len()];
    let n_servers = servers.len() as u64;
    let mut done = LoadDone::default();
    while !go.load(Ordering::Acquire) {
        std::hint::spin_loop();
    }
    let start = Instant::now();
    let end = start + duration;
    let mut turn = 0usize;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if let Some(r) = rate {
            let due = start + Duration::from_secs_f64(done.sent as f64 / r as f64);
            if due > now {
                std::thread::sleep((due - now).min(end - now));
                continue;
            }
        }
        let s = turn % sockets.len();
        turn = turn.wrapping_add(1);
        let k0 = next_k[s];
        for (i, name) in names.iter_mut().enumerate() {
            let k = k0 + i as u64;
            let server = servers[usize::try_from(k % n_servers).unwrap_or(0)];
            name.sin_family = libc::AF_INET as libc::sa_family_t;
            name.sin_port = port_of(seed, k / n_servers).to_be();
            name.sin_addr = libc::in_addr { s_addr: u32::from(server).to_be() };
        }
        // SAFETY: `msgs` holds `batch` headers whose name and iovec pointers point into
        // `names` and `iovs`, which live (unmoved) for the whole loop; the payload is static.
        let n = unsafe {
            libc::sendmmsg(sockets[s].as_raw_fd(), msgs.as_mut_ptr(), batch as libc::c_uint, 0)
        };
        if n < 0 {
            done.send_errors += 1;
            // Skip the batch's tuples anyway: a partially sent batch must not repeat any.
            next_k[s] += batch as u64;
            continue;
        }
        let n = n as u64;
        next_k[s] += n;
        done.sent += n;
    }
    done.seconds = start.elapsed().as_secs_f64();
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_ports_are_a_permutation() {
        for seed in [0, 1, 12345] {
            let mut seen = vec![false; PORTS as usize];
            for k in 0..PORTS {
                let p = port_of(seed, k);
                assert!((1024..=65_023).contains(&p), "{p}");
                let i = usize::from(p - 1024);
                assert!(!seen[i], "port {p} twice for seed {seed}");
                seen[i] = true;
            }
        }
    }

    #[test]
    fn source_ports_differ_per_address() {
        let mut ports: Vec<u16> =
            (0..4).flat_map(|h| (0..8).map(move |a| source_port(7, h, a))).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 32);
    }
}
