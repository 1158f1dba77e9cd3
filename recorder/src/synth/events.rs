//! The clock of the workload: starts from a Poisson process, ends from the live flows' queue.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::addresses::{DNS_SERVERS, INFRA, NTP_SERVERS};
use super::flows::{EndQueue, FORWARDS, Flow, KeySet, Service};
use super::random::Alias;
use super::{
    Limit, MAX_REMOTES, SynthError, WorkloadParams, devices_v6, inside_v4, inside_v6,
    inside_v6_temporary, remote_v4, remote_v6,
};
use jiff::Timestamp;

use crate::model::{Flags, FlowEvent, Kind, Proto, Translation};
use crate::rng::{Rng, mix64};

/// The time-ordered event stream of a workload; see [`events`].
#[derive(Debug)]
pub struct Events {
    p: WorkloadParams,
    rng: Rng,
    subs: Alias,
    remotes: Alias,
    /// Per-subscriber TCP connect counter (Linux's per-bucket perturbation).
    counters: Vec<u16>,
    /// Live (proto, inside, remote) tuples: a host never reuses a busy 4-tuple.
    inside_busy: KeySet,
    /// Live (proto, outside, remote) tuples: the reply tuples conntrack keeps unique.
    outside_busy: KeySet,
    live: EndQueue,
    next_start: i64,
    stop_ns: i64,
    started: u64,
    max_flows: u64,
    mean_gap_ns: f64,
    subscriber_perm: u32,
    forward_hosts: [u32; FORWARDS.len()],
    /// Time of the last start: with `drain == false`, nothing after it is emitted.
    last_start: i64,
}

/// The workload's events, in time order (ends before starts at the same instant).
pub fn events(params: &WorkloadParams) -> Result<Events, SynthError> {
    params.validate()?;
    let mut rng = Rng::new(mix64(params.seed ^ 0x6e61_7472_6563));
    let start_ns =
        i64::try_from(params.start.as_nanosecond()).map_err(|_| SynthError::Invalid {
            name: "start",
            reason: "expected a time between 1678 and 2262".to_owned(),
        })?;
    let (stop_ns, max_flows) = match params.limit {
        Limit::Flows(n) => (i64::MAX, n),
        Limit::Span(d) => {
            (start_ns.saturating_add(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)), u64::MAX)
        }
    };
    // A multiplier coprime with the subscriber count permutes the activity ranks.
    let n = params.subscribers;
    let mut perm = 2_654_435_761u32 % n.max(2);
    while gcd(perm, n) != 1 {
        perm += 1;
    }
    let forward_hosts = std::array::from_fn(|_| rng.below(n));
    let mut ev = Events {
        subs: Alias::zipf(n, params.subscriber_skew),
        remotes: Alias::zipf(params.remotes, params.zipf_exponent),
        counters: (0..n).map(|i| mix64(params.seed ^ u64::from(i)) as u16).collect(),
        inside_busy: KeySet::default(),
        outside_busy: KeySet::default(),
        live: EndQueue::default(),
        next_start: start_ns,
        stop_ns,
        started: 0,
        max_flows,
        mean_gap_ns: 1e9 / params.flows_per_second,
        subscriber_perm: perm,
        forward_hosts,
        last_start: start_ns,
        p: params.clone(),
        rng,
    };
    ev.advance_start();
    Ok(ev)
}

/// The completed translations of a workload (those [`events`] ends), in end order.
pub fn translations(
    params: &WorkloadParams,
) -> Result<impl Iterator<Item = Translation>, SynthError> {
    Ok(events(params)?.filter_map(|e| match e {
        FlowEvent::End(t) => Some(t),
        FlowEvent::Start(_) => None,
    }))
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

pub(super) const EPHEMERAL_LOW: u16 = 32768;
pub(super) const EPHEMERAL_HIGH: u16 = 60999;
const SEC: f64 = 1e9;

impl Events {
    fn round(&self, t: i64) -> i64 {
        let r = i64::from(self.p.resolution_ns);
        t - t.rem_euclid(r)
    }

    fn advance_start(&mut self) {
        let gap = self.rng.exp(self.mean_gap_ns).max(1.0) as i64;
        self.next_start = self.next_start.saturating_add(gap);
    }

    fn more_starts(&self) -> bool {
        self.started < self.max_flows && self.next_start < self.stop_ns
    }

    /// 2 bits for the protocols the workload uses, 1 for the family.
    fn proto_code(proto: Proto, v6: bool) -> u64 {
        let p = match proto {
            Proto::TCP => 0,
            Proto::UDP => 1,
            Proto::ICMP => 2,
            _ => 3,
        };
        p | u64::from(v6) << 2
    }

    /// Remote ids in 18 bits: ranks below 2^17, infrastructure above.
    fn remote_code(remote: u32) -> u64 {
        if remote >= INFRA { u64::from(MAX_REMOTES + (remote - INFRA)) } else { u64::from(remote) }
    }

    /// The reply tuple (outside ip:port, remote ip:port, protocol), exactly, in 62 bits.
    fn outside_key(proto: Proto, v6: bool, pool: u32, port: u16, remote: u32, rport: u16) -> u64 {
        Self::proto_code(proto, v6)
            | u64::from(pool & 0xff) << 3
            | u64::from(port) << 11
            | u64::from(rport) << 27
            | Self::remote_code(remote) << 43
            | 1 << 63
    }

    /// The original tuple (inside ip:port, remote ip:port, protocol) with the remote endpoint
    /// hashed to 20 bits. Two live flows of one host on one port towards remotes of equal hash
    /// count as a clash (the host then picks another port: harmless and rare); so every live
    /// flow's key is unique, and full tuples are unique all the more.
    fn inside_key(proto: Proto, v6: bool, sub: u32, port: u16, remote: u32, rport: u16) -> u64 {
        let h = mix64(Self::remote_code(remote) << 16 | u64::from(rport)) & 0xf_ffff;
        Self::proto_code(proto, v6)
            | u64::from(sub & 0xff_ffff) << 3
            | u64::from(port) << 27
            | h << 43
            | 1 << 63
    }

    fn pick_service(&mut self) -> (Proto, Service) {
        let r = &mut self.rng;
        if r.chance(self.p.dnat_share) {
            let i = r.below(FORWARDS.len() as u32) as u8;
            return (FORWARDS[usize::from(i)].0, Service::Forward(i));
        }
        let m = self.p.mix;
        let x = r.unit() * (m.tcp + m.udp + m.icmp);
        if x < m.tcp {
            let s = if r.chance(0.92) { Service::Web } else { Service::OtherTcp };
            (Proto::TCP, s)
        } else if x < m.tcp + m.udp {
            let y = r.unit();
            let s = if y < 0.55 {
                Service::Dns
            } else if y < 0.58 {
                Service::Ntp
            } else if y < 0.88 {
                Service::Quic
            } else {
                Service::OtherUdp
            };
            (Proto::UDP, s)
        } else {
            (Proto::ICMP, Service::Echo)
        }
    }

    /// Remote id and port for an outbound service.
    fn pick_remote(&mut self, svc: Service) -> (u32, u16) {
        let rank = self.remotes.sample(&mut self.rng);
        let r = &mut self.rng;
        match svc {
            Service::Web => (rank, if r.chance(0.87) { 443 } else { 80 }),
            Service::OtherTcp => {
                const PORTS: [u16; 8] = [22, 25, 587, 993, 5222, 8080, 443, 80];
                let port = if r.chance(0.6) {
                    PORTS[r.below(PORTS.len() as u32) as usize]
                } else {
                    1024 + r.below(64_000) as u16
                };
                (rank, port)
            }
            Service::Dns => (INFRA + r.below(DNS_SERVERS), 53),
            Service::Ntp => (INFRA + DNS_SERVERS + r.below(NTP_SERVERS), 123),
            Service::Quic => (rank, 443),
            Service::OtherUdp => {
                const PORTS: [u16; 5] = [3478, 19302, 500, 4500, 5060];
                let port = if r.chance(0.5) {
                    PORTS[r.below(PORTS.len() as u32) as usize]
                } else {
                    1024 + r.below(64_000) as u16
                };
                (rank, port)
            }
            Service::Echo => (rank, 0),
            Service::Forward(_) => (r.below(self.p.remotes), 0),
        }
    }

    /// Lifetime in ns: activity (lognormal, maybe a Pareto tail) plus conntrack's timeout.
    fn lifetime(&mut self, svc: Service) -> i64 {
        let r = &mut self.rng;
        // (median activity in seconds, sigma, may be long-lived)
        let (median, sigma, long) = match svc {
            Service::Web => (8.0, 1.5, true),
            Service::OtherTcp => (30.0, 2.0, true),
            Service::Dns => (0.02, 1.0, false),
            Service::Ntp => (0.05, 0.8, false),
            Service::Quic => (10.0, 1.5, true),
            Service::OtherUdp => (30.0, 2.0, true),
            Service::Echo => (3.0, 1.0, false),
            Service::Forward(_) => (20.0, 2.0, true),
        };
        let mut active = if long && r.chance(self.p.long_share) {
            self.p.long_min.as_secs_f64() / r.unit_open0().powf(1.0 / self.p.pareto_alpha)
        } else {
            median * (sigma * r.normal()).exp()
        };
        active *= self.p.duration_scale;
        let tcp = match svc {
            Service::Web | Service::OtherTcp => true,
            Service::Forward(i) => FORWARDS[usize::from(i)].0 == Proto::TCP,
            _ => false,
        };
        let timeout = if tcp {
            if r.chance(0.85) { 120.0 } else { 10.0 }
        } else if matches!(svc, Service::Echo) || active < 2.0 {
            30.0
        } else {
            120.0
        };
        let max = self.p.max_duration.as_nanos() as f64;
        ((active + timeout) * SEC).min(max) as i64
    }

    /// A Linux host's ephemeral port towards (remote, rport), free in `inside_busy`.
    fn inside_port(&mut self, proto: Proto, v6: bool, sub: u32, remote: u32, rport: u16) -> u16 {
        let range = u32::from(EPHEMERAL_HIGH - EPHEMERAL_LOW) + 1;
        let mut off = if proto == Proto::TCP {
            let h = mix64(
                self.p.seed ^ (u64::from(sub) << 32) ^ (u64::from(remote) << 16) ^ u64::from(rport),
            );
            let c = &mut self.counters[sub as usize];
            *c = c.wrapping_add(2);
            ((h as u32).wrapping_add(u32::from(*c)) % range) & !1
        } else if proto.is_icmp() {
            // Echo identifiers: any 16-bit value.
            let mut id = self.rng.next_u64() as u16;
            for _ in 0..=u16::MAX {
                if self
                    .inside_busy
                    .insert(Self::inside_key(proto, v6, sub, id, remote, 0), ())
                    .is_none()
                {
                    break;
                }
                id = id.wrapping_add(1);
            }
            return id;
        } else {
            self.rng.below(range)
        };
        for _ in 0..range {
            let port = EPHEMERAL_LOW + (off % range) as u16;
            if self
                .inside_busy
                .insert(Self::inside_key(proto, v6, sub, port, remote, rport), ())
                .is_none()
            {
                return port;
            }
            off += if proto == Proto::TCP { 2 } else { 1 };
        }
        // Every port towards this remote is busy: share one (not a real host's behaviour,
        // and unreachable with realistic parameters).
        EPHEMERAL_LOW
    }

    /// The masquerade's outside port: the inside port if free, else a random probe.
    fn outside_port(
        &mut self,
        proto: Proto,
        v6: bool,
        pool: u16,
        want: u16,
        remote: u32,
        rport: u16,
    ) -> u16 {
        let host = u32::from(pool);
        if self
            .outside_busy
            .insert(Self::outside_key(proto, v6, host, want, remote, rport), ())
            .is_none()
        {
            return want;
        }
        let (low, size) = if proto.is_icmp() { (0u32, 65_536u32) } else { (1024, 64_512) };
        let first = self.rng.below(size);
        for off in first..first + size {
            let port = (low + off % size) as u16;
            if self
                .outside_busy
                .insert(Self::outside_key(proto, v6, host, port, remote, rport), ())
                .is_none()
            {
                return port;
            }
        }
        want
    }

    fn new_flow(&mut self) -> Flow {
        let start = self.round(self.next_start);
        let (proto, svc) = self.pick_service();
        let v6 = self.rng.chance(self.p.ipv6_share);
        let (remote, rport) = self.pick_remote(svc);
        let n = self.p.subscribers;
        let pool_of = |sub: u32, remote: u32, p: &WorkloadParams| -> u16 {
            let h = if p.paired {
                mix64(u64::from(sub) ^ p.seed)
            } else {
                mix64(u64::from(sub) ^ (u64::from(remote) << 32) ^ p.seed)
            };
            (h % u64::from(p.outside_pool)) as u16
        };
        let flow = match svc {
            Service::Forward(i) => {
                let (_, outside_port, inside_port) = FORWARDS[usize::from(i)];
                let sub = self.forward_hosts[usize::from(i)];
                let pool =
                    (mix64(u64::from(i) ^ self.p.seed) % u64::from(self.p.outside_pool)) as u16;
                // The client's ephemeral port, free on both sides of the gateway (a clash is
                // rare: retry; 64 clashes in a row do not happen with realistic parameters).
                let mut rport = 0;
                for _ in 0..64 {
                    rport = 49152 + self.rng.below(16_384) as u16;
                    let okey =
                        Self::outside_key(proto, v6, u32::from(pool), outside_port, remote, rport);
                    if self.outside_busy.insert(okey, ()).is_none() {
                        let ikey = Self::inside_key(proto, v6, sub, inside_port, remote, rport);
                        if self.inside_busy.insert(ikey, ()).is_none() {
                            break;
                        }
                        self.outside_busy.remove(&okey);
                    }
                }
                Flow {
                    end: 0,
                    seq: self.started,
                    start,
                    sub,
                    remote,
                    inside_port,
                    outside_port,
                    remote_port: rport,
                    pool,
                    proto,
                    kind: Kind::Dnat,
                    v6,
                }
            }
            _ => {
                let rank = self.subs.sample(&mut self.rng);
                let sub = (u64::from(rank) * u64::from(self.subscriber_perm) % u64::from(n)) as u32;
                let proto = if v6 && proto == Proto::ICMP { Proto::ICMPV6 } else { proto };
                let inside_port = self.inside_port(proto, v6, sub, remote, rport);
                let pool = pool_of(sub, remote, &self.p);
                let outside_port = self.outside_port(proto, v6, pool, inside_port, remote, rport);
                Flow {
                    end: 0,
                    seq: self.started,
                    start,
                    sub,
                    remote,
                    inside_port,
                    outside_port,
                    remote_port: rport,
                    pool,
                    proto,
                    kind: Kind::Snat,
                    v6,
                }
            }
        };
        let life = self.lifetime(svc).max(1);
        Flow { end: self.round(start.saturating_add(life)).max(start), ..flow }
    }

    fn release(&mut self, f: &Flow) {
        let (ihost, ohost) = (f.sub, u32::from(f.pool));
        self.inside_busy.remove(&Self::inside_key(
            f.proto,
            f.v6,
            ihost,
            f.inside_port,
            f.remote,
            f.remote_port,
        ));
        self.outside_busy.remove(&Self::outside_key(
            f.proto,
            f.v6,
            ohost,
            f.outside_port,
            f.remote,
            f.remote_port,
        ));
    }

    fn translation(&self, f: &Flow, end: bool) -> Translation {
        let (inside, outside, remote): (IpAddr, IpAddr, IpAddr) = if f.v6 {
            let o = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, f.pool + 1);
            let inside = match f.kind {
                // A port forward reaches a server at its stable address.
                Kind::Dnat => inside_v6(f.sub),
                // Outgoing flows leave from one of the subscriber's devices' temporary
                // addresses of the flow's day.
                _ => {
                    let (seed, sub) = (self.p.seed, f.sub);
                    let device = (mix64(f.seq ^ seed) % u64::from(devices_v6(sub, seed))) as u32;
                    let day = (f.start / 86_400_000_000_000).max(0) as u64;
                    inside_v6_temporary(sub, device, day, seed)
                }
            };
            (inside.into(), o.into(), remote_v6(f.remote).into())
        } else {
            let o = Ipv4Addr::from(u32::from(self.p.outside_base) + u32::from(f.pool));
            (inside_v4(f.sub).into(), o.into(), remote_v4(f.remote).into())
        };
        let ts = |ns: i64| Timestamp::from_nanosecond(i128::from(ns)).unwrap_or(Timestamp::MAX);
        Translation {
            kind: f.kind,
            proto: f.proto,
            inside: SocketAddr::new(inside, f.inside_port),
            outside: SocketAddr::new(outside, f.outside_port),
            remote: SocketAddr::new(remote, f.remote_port),
            zone: 0,
            start: ts(f.start),
            end: end.then(|| ts(f.end)),
            flags: Flags::empty(),
        }
    }
}

impl Iterator for Events {
    type Item = FlowEvent;

    fn next(&mut self) -> Option<FlowEvent> {
        let starting = self.more_starts();
        let next_start = self.round(self.next_start);
        let end_first = match self.live.peek() {
            Some(f) => !starting || f.end <= next_start,
            None => false,
        };
        if end_first {
            let f = self.live.pop()?;
            if !starting && !self.p.drain && f.end > self.last_start {
                self.live.clear();
                return None;
            }
            self.release(&f);
            // The tuples of a flow a few ends ahead are far apart in memory: fetch them now.
            if let Some(g) = self.live.current.len().checked_sub(16).map(|i| self.live.current[i]) {
                self.inside_busy.prefetch(&Self::inside_key(
                    g.proto,
                    g.v6,
                    g.sub,
                    g.inside_port,
                    g.remote,
                    g.remote_port,
                ));
                self.outside_busy.prefetch(&Self::outside_key(
                    g.proto,
                    g.v6,
                    u32::from(g.pool),
                    g.outside_port,
                    g.remote,
                    g.remote_port,
                ));
            }
            return Some(FlowEvent::End(self.translation(&f, true)));
        }
        if !starting {
            return None;
        }
        let f = self.new_flow();
        self.started += 1;
        self.last_start = f.start;
        self.advance_start();
        self.live.push(f);
        Some(FlowEvent::Start(self.translation(&f, false)))
    }
}
