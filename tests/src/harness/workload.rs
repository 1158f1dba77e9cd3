//! The harness's seeded workload: thousands of short TCP, UDP and ICMP echo flows from the lab's
//! inside hosts, port-forward flows from the outside, and long TCP flows held open across the
//! whole run. In a dual-stack lab a share of the short flows ([`WorkloadSpec::ipv6_percent`])
//! are IPv6, through NAT66, the prefix translation and the IPv6 port forwards.
//!
//! It is built to make NAT work hard: a few fixed source ports (and echo identifiers) are used
//! by every inside address, so hosts collide on the same remote (the gateway rewrites ports),
//! the same outside ip:port serves different remotes at once, and ports come back after their
//! entries expired. Every UDP datagram carries a token unique to its flow and round, so the
//! verifier pairs the two captures without guessing.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use recorder::model::Proto;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::gateway::{Family, GatewayLab};
use crate::lab::{LabError, Netns};
use crate::traffic::{self, EchoServer, TcpFlow};

/// The ports the outside servers echo on (TCP and UDP).
pub const SERVER_PORTS: [u16; 2] = [7, 9];
/// The first of the fixed source ports every inside address uses.
pub const FIXED_PORT_BASE: u16 = 40_000;
/// The first of the fixed ICMP echo identifiers.
pub const FIXED_IDENT_BASE: u16 = 700;
/// The source port of the long flows (one per inside host, to different servers at once).
pub const LONG_FLOW_PORT: u16 = 41_000;
/// How long a client waits for an echo.
const REPLY_TIMEOUT: Duration = Duration::from_secs(3);

/// The workload's generator: the same seed makes the same workload.
pub use recorder::rng::Rng;

/// One short flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Job {
    /// UDP from an inside address (port 0: ephemeral) to an outside server.
    Udp { host: usize, local: SocketAddr, remote: SocketAddr, rounds: u8 },
    /// TCP from an inside address (port 0: ephemeral) to an outside server.
    Tcp { host: usize, local: SocketAddr, remote: SocketAddr, rounds: u8 },
    /// ICMP (ICMPv6) echo from an inside address with an echo identifier.
    Ping { host: usize, local: IpAddr, ident: u16, remote: IpAddr, count: u8 },
    /// TCP from the outside to the port forward of the client's family.
    DnatTcp { client: IpAddr, rounds: u8 },
    /// UDP from the outside to the port forward of the client's family.
    DnatUdp { client: IpAddr, rounds: u8 },
}

impl Job {
    /// The resource two concurrent jobs must not share (a fixed local address and port).
    fn resource(&self) -> Option<(IpAddr, Proto, u16)> {
        match *self {
            Job::Udp { local, .. } if local.port() != 0 => {
                Some((local.ip(), Proto::UDP, local.port()))
            }
            Job::Tcp { local, .. } if local.port() != 0 => {
                Some((local.ip(), Proto::TCP, local.port()))
            }
            Job::Ping { local, ident, .. } => Some((local, Proto::ICMP, ident)),
            _ => None,
        }
    }
}

/// A job and when (after its phase began) it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub at: Duration,
    pub job: Job,
}

/// What workload to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadSpec {
    pub seed: u64,
    /// Short flows in each of the two phases (before and after the recorder restart).
    pub flows_per_phase: usize,
    /// How long each phase lasts.
    pub phase: Duration,
    /// Threads running flows at once.
    pub workers: usize,
    /// How many fixed source ports (and echo identifiers) the inside addresses share.
    pub fixed_ports: u16,
    /// Percent of short flows that use a fixed port or identifier.
    pub fixed_percent: u64,
    /// Percent of short flows that are IPv6, in a dual-stack lab (none otherwise).
    pub ipv6_percent: u64,
}

impl Default for WorkloadSpec {
    /// The CI workload: 2 × 1500 short flows over 2 × 20 s, 40% of them IPv6 in a dual-stack
    /// lab.
    fn default() -> Self {
        WorkloadSpec {
            seed: 0x6e61_7472_6563,
            flows_per_phase: 1500,
            phase: Duration::from_secs(20),
            workers: 12,
            fixed_ports: 6,
            fixed_percent: 60,
            ipv6_percent: 40,
        }
    }
}

/// Plans one phase's jobs for `lab`. TCP flows never reuse a fixed (address, port, remote) of
/// an earlier TCP flow in the run (`tcp_used`): the client's TIME_WAIT would refuse it.
pub fn plan_phase(
    spec: &WorkloadSpec,
    lab: &GatewayLab,
    rng: &mut Rng,
    tcp_used: &mut HashSet<(SocketAddr, SocketAddr)>,
) -> Vec<Planned> {
    let servers4 = lab.servers_of(Family::V4);
    let servers6 = lab.servers_of(Family::V6);
    let v6_share = if lab.spec().ipv6 { spec.ipv6_percent as f64 / 100.0 } else { 0.0 };
    let n = spec.flows_per_phase.max(1);
    let step = spec.phase / u32::try_from(n).unwrap_or(u32::MAX);
    (0..n)
        .map(|i| {
            let h = rng.index(lab.hosts().len());
            let host = &lab.hosts()[h];
            let v6 = rng.chance(v6_share);
            let (addr, servers) = if v6 {
                (IpAddr::V6(host.addrs6()[rng.index(host.addrs6().len())]), &servers6)
            } else {
                (IpAddr::V4(host.addrs()[rng.index(host.addrs().len())]), &servers4)
            };
            let server = servers[rng.index(servers.len())];
            let sport = SERVER_PORTS[rng.index(SERVER_PORTS.len())];
            let remote = SocketAddr::new(server, sport);
            let fixed = rng.chance(spec.fixed_percent as f64 / 100.0);
            let port = if fixed {
                FIXED_PORT_BASE
                    + u16::try_from(rng.index(usize::from(spec.fixed_ports))).unwrap_or(0)
            } else {
                0
            };
            let rounds = 1 + u8::try_from(rng.index(3)).unwrap_or(0);
            let kind = rng.index(100);
            let job = if kind < 40 {
                Job::Udp { host: h, local: SocketAddr::new(addr, port), remote, rounds }
            } else if kind < 70 {
                let mut local = SocketAddr::new(addr, port);
                if port != 0 && !tcp_used.insert((local, remote)) {
                    local.set_port(0);
                }
                Job::Tcp { host: h, local, remote, rounds }
            } else if kind < 90 {
                let ident = if fixed {
                    FIXED_IDENT_BASE
                        + u16::try_from(rng.index(usize::from(spec.fixed_ports))).unwrap_or(0)
                } else {
                    1000 + u16::try_from(rng.index(50_000)).unwrap_or(0)
                };
                Job::Ping { host: h, local: addr, ident, remote: server, count: rounds }
            } else {
                // The outside servers are the port forwards' clients.
                let client = servers[rng.index(servers.len())];
                if kind < 95 {
                    Job::DnatTcp { client, rounds }
                } else {
                    Job::DnatUdp { client, rounds }
                }
            };
            let jitter = Duration::from_micros(
                rng.index(usize::try_from(step.as_micros()).unwrap_or(0).max(1)) as u64,
            );
            Planned { at: step * u32::try_from(i).unwrap_or(u32::MAX) + jitter, job }
        })
        .collect()
}

/// What a phase did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PhaseDone {
    pub ok: u64,
    pub failed: u64,
    /// The first few failures.
    pub errors: Vec<String>,
    /// How late the last job started against its plan.
    pub max_lag: Duration,
}

/// Sends one tagged UDP exchange: `rounds` datagrams `natrec-harness <tag> <round>`, each
/// echoed back, from a socket bound to `local` (port 0: any) in `ns`.
pub fn udp_tagged(
    ns: &Netns,
    local: SocketAddr,
    remote: SocketAddr,
    rounds: u8,
    tag: u64,
) -> Result<(), LabError> {
    let name = ns.name().to_owned();
    ns.run_in(move || -> Result<(), LabError> {
        let what = format!("UDP {local} -> {remote} in {name}");
        let io = |e: std::io::Error| LabError::Io { what: what.clone(), source: e };
        let sock = Socket::new(Domain::for_address(remote), Type::DGRAM, Some(Protocol::UDP))
            .map_err(io)?;
        sock.set_reuse_address(true).map_err(io)?;
        sock.bind(&SockAddr::from(local)).map_err(io)?;
        let sock: UdpSocket = sock.into();
        sock.connect(remote).map_err(io)?;
        sock.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(io)?;
        let mut buf = [0u8; 256];
        for r in 0..rounds {
            let msg = format!("natrec-harness {tag} {r}");
            sock.send(msg.as_bytes()).map_err(io)?;
            let n = sock.recv(&mut buf).map_err(io)?;
            if &buf[..n] != msg.as_bytes() {
                return Err(LabError::Invalid(format!(
                    "{what}: the echo differs from what was sent"
                )));
            }
        }
        Ok(())
    })?
}

fn run_job(lab: &GatewayLab, job: &Job, tag: u64) -> Result<(), LabError> {
    match *job {
        Job::Udp { host, local, remote, rounds } => {
            udp_tagged(lab.hosts()[host].ns(), local, remote, rounds, tag)
        }
        Job::Tcp { host, local, remote, rounds } => {
            traffic::tcp_exchange(lab.hosts()[host].ns(), local, remote, usize::from(rounds))
                .map(drop)
        }
        Job::Ping { host, local, ident, remote, count } => {
            traffic::ping(lab.hosts()[host].ns(), local, ident, remote, u16::from(count)).map(drop)
        }
        Job::DnatTcp { client, rounds } => {
            let forward = if client.is_ipv4() { lab.dnat_tcp() } else { lab.dnat_tcp6() };
            let (outside, _) = forward.ok_or_else(|| no_forward(client))?;
            traffic::tcp_exchange(
                lab.outside(),
                SocketAddr::new(client, 0),
                outside,
                usize::from(rounds),
            )
            .map(drop)
        }
        Job::DnatUdp { client, rounds } => {
            let forward = if client.is_ipv4() { lab.dnat_udp() } else { lab.dnat_udp6() };
            let (outside, _) = forward.ok_or_else(|| no_forward(client))?;
            udp_tagged(lab.outside(), SocketAddr::new(client, 0), outside, rounds, tag)
        }
    }
}

fn no_forward(client: IpAddr) -> LabError {
    LabError::Invalid(format!("the lab has no port forward for {client}'s family"))
}

/// Runs `jobs` on `workers` threads, each job at its planned time (or as soon as a worker and
/// its fixed port are free). `tag_base` makes the UDP tokens unique across phases.
pub fn run_phase(lab: &GatewayLab, jobs: &[Planned], workers: usize, tag_base: u64) -> PhaseDone {
    let next = AtomicUsize::new(0);
    let busy: Mutex<HashSet<(IpAddr, Proto, u16)>> = Mutex::new(HashSet::new());
    let freed = Condvar::new();
    let done = Mutex::new(PhaseDone::default());
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(p) = jobs.get(i) else { break };
                    if let Some(wait) = p.at.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    let lag = start.elapsed().saturating_sub(p.at);
                    let res = p.job.resource();
                    if let Some(r) = res {
                        let mut b = busy.lock().unwrap_or_else(PoisonError::into_inner);
                        while b.contains(&r) {
                            b = freed.wait(b).unwrap_or_else(PoisonError::into_inner);
                        }
                        b.insert(r);
                    }
                    let out = run_job(lab, &p.job, tag_base + i as u64);
                    if let Some(r) = res {
                        busy.lock().unwrap_or_else(PoisonError::into_inner).remove(&r);
                        freed.notify_all();
                    }
                    let mut d = done.lock().unwrap_or_else(PoisonError::into_inner);
                    d.max_lag = d.max_lag.max(lag);
                    match out {
                        Ok(()) => d.ok += 1,
                        Err(e) => {
                            d.failed += 1;
                            if d.errors.len() < 10 {
                                d.errors.push(format!("{:?}: {e}", p.job));
                            }
                        }
                    }
                }
            });
        }
    });
    done.into_inner().unwrap_or_else(PoisonError::into_inner)
}

/// The outside servers (TCP and UDP echo on [`SERVER_PORTS`] of every server address of both
/// families) and the port forwards' inside servers; all stop on drop.
pub fn start_servers(lab: &GatewayLab) -> Result<Vec<EchoServer>, LabError> {
    let mut servers = Vec::new();
    for s in lab.servers_of(Family::V4).into_iter().chain(lab.servers_of(Family::V6)) {
        for port in SERVER_PORTS {
            let addr = SocketAddr::new(s, port);
            servers.push(EchoServer::tcp(lab.outside(), addr)?);
            servers.push(EchoServer::udp(lab.outside(), addr)?);
        }
    }
    let h1 = lab
        .hosts()
        .first()
        .ok_or_else(|| LabError::Invalid("the lab has no inside host".into()))?;
    for (_, inside) in lab.dnat_tcp().into_iter().chain(lab.dnat_tcp6()) {
        servers.push(EchoServer::tcp(h1.ns(), inside)?);
    }
    for (_, inside) in lab.dnat_udp().into_iter().chain(lab.dnat_udp6()) {
        servers.push(EchoServer::udp(h1.ns(), inside)?);
    }
    Ok(servers)
}

/// Long TCP flows, one per inside host (up to `n`), all from source port [`LONG_FLOW_PORT`] to
/// servers in turn, that exchange a message every `every` until stopped.
pub struct LongFlows {
    stop: AtomicBool,
    flows: Mutex<Vec<TcpFlow>>,
    errors: Mutex<Vec<String>>,
}

impl LongFlows {
    /// Opens the flows.
    pub fn open(lab: &GatewayLab, n: usize) -> Result<LongFlows, LabError> {
        let servers = lab.servers();
        let mut flows = Vec::new();
        for (i, h) in lab.hosts().iter().take(n).enumerate() {
            let remote = SocketAddr::new(servers[i % servers.len()].into(), SERVER_PORTS[0]);
            let local = SocketAddr::new(h.addr().into(), LONG_FLOW_PORT);
            let mut f = TcpFlow::open(h.ns(), local, remote)?;
            f.exchange(1)?;
            flows.push(f);
        }
        Ok(LongFlows {
            stop: AtomicBool::new(false),
            flows: Mutex::new(flows),
            errors: Mutex::new(Vec::new()),
        })
    }

    /// How many flows are open.
    pub fn len(&self) -> usize {
        self.flows.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Exchanges one message on every flow every `every` until [`LongFlows::stop`].
    pub fn keep_alive(&self, every: Duration) {
        while !self.stop.load(Ordering::Relaxed) {
            for f in self.flows.lock().unwrap_or_else(PoisonError::into_inner).iter_mut() {
                if let Err(e) = f.exchange(1) {
                    self.errors.lock().unwrap_or_else(PoisonError::into_inner).push(e.to_string());
                }
            }
            std::thread::sleep(every);
        }
    }

    /// Makes [`LongFlows::keep_alive`] return.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Closes every flow and returns the errors the keep-alives met.
    pub fn close(self) -> Vec<String> {
        for f in self.flows.into_inner().unwrap_or_else(PoisonError::into_inner) {
            f.close();
        }
        self.errors.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}
