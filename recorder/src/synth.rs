//! A seeded, synthetic ISP workload: the stream of translations a carrier-grade NAT gateway would
//! record, for tests and benchmarks.
//!
//! [`events`] yields [`FlowEvent`]s in time order exactly as the capture path delivers them: a
//! [`FlowEvent::Start`] (end `None`) when a translation begins and a [`FlowEvent::End`] (the whole
//! translation with its start and end) when conntrack destroys it; flags are empty. The same
//! parameters and seed always give the same stream.
//!
//! # What is modelled
//!
//! - **Subscribers**: `subscribers` inside hosts, subscriber `i` at `10.a.b.c` (`c` in 1–254,
//!   see [`inside_v4`]). Their activity is skewed (a Zipf law of exponent `subscriber_skew` over a
//!   fixed permutation of the subscribers): a few heavy users, many light ones.
//! - **Outside pool**: `outside_pool` consecutive addresses from `outside_base`. With
//!   `paired` (the default, RFC 6888 "paired pooling", Linux's `--persistent`), a subscriber
//!   always leaves through the same address; otherwise the address is picked per (inside,
//!   remote) pair by a hash, as Linux's `nf_nat` does without `persistent`.
//! - **Flow starts**: a Poisson process of rate `flows_per_second` (exponential gaps), flat
//!   over the day (no diurnal curve).
//! - **Services**: each flow is TCP, UDP or ICMP echo by `mix`; then a service with a realistic
//!   port: TCP 443 (80 %), 80 (12 %), and 22, 25, 587, 993, 5222, 8080 and random high ports;
//!   UDP 53 (55 %) and 123 towards a few resolver/NTP addresses in 203.0.113.0/24, QUIC 443, and
//!   other ports (3478, 19302, 500/4500, random high ports).
//! - **Remotes**: ranks of a Zipf law (exponent `zipf_exponent`) over `remotes` addresses,
//!   scattered over 198.18.0.0/15 (IPv6: 2001:db8::/32). Only documentation and benchmarking
//!   ranges are used, never routable ones.
//! - **Inside ports** as Linux hosts choose them from 32768–60999: TCP `connect()` walks a
//!   per-host counter by 2 from an offset hashed from (host, remote, port) (Linux ≥ 5.17's
//!   `__inet_hash_connect`, even ports first), skipping ports whose 4-tuple is busy (or, rarely,
//!   busy towards a remote of the same 20-bit hash); UDP sockets take a uniformly random port;
//!   ICMP echo identifiers are random 16-bit numbers.
//! - **Masquerade**: the outside port keeps the inside port when the reply tuple (outside
//!   ip:port, remote ip:port, protocol) is free, otherwise Linux's `nf_nat_l4proto_unique_tuple`
//!   is modelled: a random start in 1024–65535 (0–65535 for ICMP ids) probed upwards. So one
//!   outside ip:port serves several remotes at once, and is reused over time after expiry.
//! - **Port forwards** (`dnat_share` of the flows): a few fixed forwards (outside
//!   `100.64.0.x:8080 → inside :80`, `:2222 → :22`, `:25565`, `:3389`, `:8443 → :443`, UDP
//!   `:51820`, `:1194`, `:27015`) towards fixed subscribers, from random remote clients.
//! - **Durations** are conntrack entry lifetimes, in nanoseconds: lognormal activity per service
//!   (DNS tens of ms, web seconds, other TCP/UDP tens of seconds, scaled by `duration_scale`)
//!   plus the conntrack timeout that follows the last packet (UDP 30 s, or 120 s for streams
//!   older than 2 s; TCP 120 s TIME_WAIT after FIN, 10 s after RST; ICMP 30 s); and a
//!   heavy tail: `long_share` of TCP and UDP-stream flows last a Pareto(`pareto_alpha`) time from
//!   `long_min` (hours-long ones exist), everything capped at `max_duration`.
//!
//! Not modelled: SYN timeouts and other unanswered flows, conntrack table pressure, port blocks
//! (deterministic NAT), hairpin (`Kind::Both`) entries, time-of-day variation.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use jiff::Timestamp;

use crate::model::{Flags, FlowEvent, Kind, Proto, Translation};
use crate::open_table::OpenTable;

/// Errors in [`WorkloadParams`].
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// A parameter is out of its range.
    #[error("invalid workload parameter {name}: {reason}")]
    Invalid {
        /// The parameter's name (as a field of [`WorkloadParams`]).
        name: &'static str,
        /// What was expected.
        reason: String,
    },
}

/// When the workload stops starting new flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// After this many translations have started.
    Flows(u64),
    /// After this much simulated time since the start.
    Span(Duration),
}

/// Relative weights of the IP protocols of new flows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProtoMix {
    pub tcp: f64,
    pub udp: f64,
    pub icmp: f64,
}

/// Parameters of the synthetic workload. [`Default`] gives a mid-sized ISP-like gateway.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadParams {
    /// Seed of the random stream: equal parameters and seed give an identical stream.
    pub seed: u64,
    /// Number of inside hosts (at most 16 646 144, the size of 10.0.0.0/8 without .0 and .255).
    pub subscribers: u32,
    /// Zipf exponent of subscriber activity (0 = all equally active).
    pub subscriber_skew: f64,
    /// First address of the outside pool.
    pub outside_base: Ipv4Addr,
    /// Number of outside addresses (1–256).
    pub outside_pool: u16,
    /// Whether a subscriber always uses the same outside address (paired pooling).
    pub paired: bool,
    /// Number of distinct remote addresses (1–131 072).
    pub remotes: u32,
    /// Zipf exponent of remote popularity.
    pub zipf_exponent: f64,
    /// Mean rate of new flows (Poisson).
    pub flows_per_second: f64,
    /// When to stop starting flows.
    pub limit: Limit,
    /// Time of the stream's origin (the first flow starts a little after it).
    pub start: Timestamp,
    /// Whether to emit the end of every flow (`true`), or to stop at the last start and leave
    /// the flows still running open (`false`), as a recording cut short would.
    pub drain: bool,
    /// Protocol weights of outbound flows.
    pub mix: ProtoMix,
    /// Share of flows that are inbound port forwards (DNAT), 0–1.
    pub dnat_share: f64,
    /// Share of flows over IPv6 (NAT66 from fd00::/8 to 2001:db8:ffff::/48), 0–1.
    pub ipv6_share: f64,
    /// Factor applied to every flow's activity time (not to conntrack timeouts).
    pub duration_scale: f64,
    /// Share of TCP and UDP-stream flows that are long-lived (Pareto tail), 0–1.
    pub long_share: f64,
    /// Shape of the long-lived tail (smaller = heavier; > 0).
    pub pareto_alpha: f64,
    /// Shortest long-lived activity.
    pub long_min: Duration,
    /// Longest lifetime of any translation.
    pub max_duration: Duration,
    /// Times are multiples of this many nanoseconds (1 = nanoseconds as the capture path
    /// records them; 1000 = microseconds, as conntrack -E and ulogd print them).
    pub resolution_ns: u32,
}

impl Default for WorkloadParams {
    fn default() -> Self {
        WorkloadParams {
            seed: 1,
            subscribers: 10_000,
            subscriber_skew: 0.7,
            outside_base: Ipv4Addr::new(100, 64, 0, 1),
            outside_pool: 8,
            paired: true,
            remotes: 50_000,
            zipf_exponent: 1.0,
            flows_per_second: 2_000.0,
            limit: Limit::Span(Duration::from_secs(60)),
            // 2026-01-05T00:00:00Z
            start: Timestamp::from_second(1_767_571_200).unwrap_or(Timestamp::UNIX_EPOCH),
            drain: true,
            mix: ProtoMix { tcp: 0.58, udp: 0.40, icmp: 0.02 },
            dnat_share: 0.002,
            ipv6_share: 0.0,
            duration_scale: 1.0,
            long_share: 0.01,
            pareto_alpha: 1.2,
            long_min: Duration::from_secs(600),
            max_duration: Duration::from_secs(24 * 3600),
            resolution_ns: 1,
        }
    }
}

/// Subscribers that fit in 10.0.0.0/8 with host bytes 1–254.
pub const MAX_SUBSCRIBERS: u32 = 254 * 65_536;
/// Remote addresses that fit in 198.18.0.0/15.
pub const MAX_REMOTES: u32 = 1 << 17;

impl WorkloadParams {
    /// Checks every parameter's range.
    pub fn validate(&self) -> Result<(), SynthError> {
        let bad = |name, reason: &str| Err(SynthError::Invalid { name, reason: reason.to_owned() });
        let share = |x: f64| (0.0..=1.0).contains(&x);
        if self.subscribers == 0 || self.subscribers > MAX_SUBSCRIBERS {
            return bad("subscribers", "expected 1 to 16646144");
        }
        if !(self.subscriber_skew.is_finite() && self.subscriber_skew >= 0.0) {
            return bad("subscriber_skew", "expected a number >= 0");
        }
        if self.outside_pool == 0 || self.outside_pool > 256 {
            return bad("outside_pool", "expected 1 to 256 addresses");
        }
        if u32::from(self.outside_base).checked_add(u32::from(self.outside_pool) - 1).is_none() {
            return bad("outside_pool", "the pool runs past 255.255.255.255");
        }
        if self.remotes == 0 || self.remotes > MAX_REMOTES {
            return bad("remotes", "expected 1 to 131072");
        }
        if !(self.zipf_exponent.is_finite() && self.zipf_exponent >= 0.0) {
            return bad("zipf_exponent", "expected a number >= 0");
        }
        if !(self.flows_per_second.is_finite() && self.flows_per_second > 0.0) {
            return bad("flows_per_second", "expected a number > 0");
        }
        let m = self.mix;
        if ![m.tcp, m.udp, m.icmp].iter().all(|w| w.is_finite() && *w >= 0.0)
            || m.tcp + m.udp + m.icmp <= 0.0
        {
            return bad("mix", "expected weights >= 0, not all 0");
        }
        if !share(self.dnat_share) {
            return bad("dnat_share", "expected a share from 0 to 1");
        }
        if !share(self.ipv6_share) {
            return bad("ipv6_share", "expected a share from 0 to 1");
        }
        if !share(self.long_share) {
            return bad("long_share", "expected a share from 0 to 1");
        }
        if !(self.duration_scale.is_finite() && self.duration_scale >= 0.0) {
            return bad("duration_scale", "expected a number >= 0");
        }
        if !(self.pareto_alpha.is_finite() && self.pareto_alpha > 0.0) {
            return bad("pareto_alpha", "expected a number > 0");
        }
        if self.max_duration.is_zero() || self.max_duration.as_nanos() > i64::MAX as u128 / 4 {
            return bad("max_duration", "expected more than 0 and less than 60 years");
        }
        if self.resolution_ns == 0 || self.resolution_ns > 1_000_000_000 {
            return bad("resolution_ns", "expected 1 to 1000000000 nanoseconds");
        }
        Ok(())
    }
}

/// The address of subscriber `i` (0-based): `10.(n>>8).(n&255).(i%254+1)` with `n = i/254`.
pub fn inside_v4(i: u32) -> Ipv4Addr {
    let n = i / 254;
    Ipv4Addr::new(10, (n >> 8) as u8, n as u8, (i % 254 + 1) as u8)
}

/// The IPv6 address of subscriber `i`: `fd00:0:HI:LO::2`.
pub fn inside_v6(i: u32) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0, (i >> 16) as u16, i as u16, 0, 0, 0, 2)
}

/// Remote ids at or above this are infrastructure (resolvers, NTP) in 203.0.113.0/24.
const INFRA: u32 = 1 << 30;
const DNS_SERVERS: u32 = 4;
const NTP_SERVERS: u32 = 2;

/// The IPv4 address of remote rank `r` (0 = most popular): a fixed scatter over 198.18.0.0/15.
pub fn remote_v4(r: u32) -> Ipv4Addr {
    if r >= INFRA {
        return Ipv4Addr::new(203, 0, 113, (r - INFRA + 1) as u8);
    }
    // An odd multiplier permutes 0..2^17.
    let x = (r.wrapping_mul(0x9E37_79B1).wrapping_add(0x5bd1)) & (MAX_REMOTES - 1);
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + x)
}

/// The IPv6 address of remote rank `r`, in 2001:db8::/32 (below 2001:db8:8000::).
pub fn remote_v6(r: u32) -> Ipv6Addr {
    if r >= INFRA {
        return Ipv6Addr::new(0x2001, 0xdb8, 0, 0x53, 0, 0, 0, (r - INFRA + 1) as u16);
    }
    let x = mix64(u64::from(r) ^ 0x6a09_e667);
    Ipv6Addr::new(
        0x2001,
        0xdb8,
        (x >> 48) as u16 & 0x7fff,
        (x >> 32) as u16,
        0,
        0,
        (r >> 16) as u16,
        r as u16 | 1,
    )
}

/// SplitMix64's finaliser: a good 64-bit mix.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64: tiny, fast, and good enough for a workload.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }
    /// Uniform in [0, 1).
    fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Uniform in (0, 1].
    fn f64_open0(&mut self) -> f64 {
        ((self.next() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Uniform in [0, n).
    fn below(&mut self, n: u32) -> u32 {
        (((self.next() >> 32) * u64::from(n)) >> 32) as u32
    }
    fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u = self.f64_open0();
        let v = self.f64();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * self.f64_open0().ln()
    }
}

/// Walker/Vose alias table: O(1) sampling from a discrete distribution.
#[derive(Clone, Debug)]
struct Alias {
    prob: Vec<u32>,
    alias: Vec<u32>,
}

impl Alias {
    /// A Zipf law of exponent `s` over ranks `0..n`.
    fn zipf(n: u32, s: f64) -> Alias {
        let weights: Vec<f64> = (1..=n).map(|k| f64::from(k).powf(-s)).collect();
        Alias::new(&weights)
    }

    fn new(weights: &[f64]) -> Alias {
        let n = weights.len();
        let total: f64 = weights.iter().sum();
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut prob = vec![u32::MAX; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            prob[s] = (scaled[s] * f64::from(u32::MAX)) as u32;
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        Alias { prob, alias }
    }

    fn sample(&self, rng: &mut Rng) -> u32 {
        let r = rng.next();
        let i = (((r >> 32) * self.prob.len() as u64) >> 32) as usize;
        if (r as u32) < self.prob[i] { i as u32 } else { self.alias[i] }
    }
}

/// An exact set of packed tuple keys (hundreds of thousands of live flows: the table's slots can
/// be prefetched a batch ahead).
type KeySet = OpenTable<u64, ()>;

/// A service a flow talks to.
#[derive(Clone, Copy, Debug)]
enum Service {
    Web,
    OtherTcp,
    Dns,
    Ntp,
    Quic,
    OtherUdp,
    Echo,
    Forward(u8),
}

/// Port forwards: (protocol, outside port, inside port).
const FORWARDS: [(Proto, u16, u16); 8] = [
    (Proto::TCP, 8080, 80),
    (Proto::TCP, 2222, 22),
    (Proto::TCP, 25565, 25565),
    (Proto::TCP, 3389, 3389),
    (Proto::TCP, 8443, 443),
    (Proto::UDP, 51820, 51820),
    (Proto::UDP, 1194, 1194),
    (Proto::UDP, 27015, 27015),
];

/// A live flow, compact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Flow {
    end: i64,
    seq: u64,
    start: i64,
    sub: u32,
    remote: u32,
    inside_port: u16,
    outside_port: u16,
    remote_port: u16,
    pool: u16,
    proto: Proto,
    kind: Kind,
    v6: bool,
}

impl Flow {
    fn order(&self) -> (i64, u64) {
        (self.end, self.seq)
    }
}

/// The live flows by end time: a bucket queue (one-second buckets in a `BTreeMap`), the earliest
/// bucket sorted in `current`. Much faster than a binary heap of hundreds of thousands of flows.
#[derive(Debug, Default)]
struct EndQueue {
    /// The flows of bucket `current_id`, the earliest one, sorted by descending (end, seq).
    current: Vec<Flow>,
    current_id: i64,
    later: BTreeMap<i64, Vec<Flow>>,
}

impl EndQueue {
    const BUCKET_NS: i64 = 1_000_000_000;

    fn push(&mut self, f: Flow) {
        let id = f.end.div_euclid(Self::BUCKET_NS);
        if !self.current.is_empty() && id == self.current_id {
            let key = f.order();
            let at = self.current.partition_point(|g| g.order() > key);
            self.current.insert(at, f);
            return;
        }
        if !self.current.is_empty() && id < self.current_id {
            // An earlier bucket than the loaded one: put that back (`peek` loads the earliest),
            // so that `current` only ever holds one bucket.
            let back = std::mem::take(&mut self.current);
            self.later.insert(self.current_id, back);
        }
        self.later.entry(id).or_default().push(f);
    }

    fn peek(&mut self) -> Option<&Flow> {
        if self.current.is_empty() {
            let (id, mut flows) = self.later.pop_first()?;
            flows.sort_unstable_by_key(|f| std::cmp::Reverse(f.order()));
            self.current = flows;
            self.current_id = id;
        }
        self.current.last()
    }

    fn pop(&mut self) -> Option<Flow> {
        self.peek()?;
        self.current.pop()
    }

    fn clear(&mut self) {
        self.current.clear();
        self.later.clear();
    }
}

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
    let mut rng = Rng(mix64(params.seed ^ 0x6e61_7472_6563));
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

const EPHEMERAL_LOW: u16 = 32768;
const EPHEMERAL_HIGH: u16 = 60999;
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
        let x = r.f64() * (m.tcp + m.udp + m.icmp);
        if x < m.tcp {
            let s = if r.chance(0.92) { Service::Web } else { Service::OtherTcp };
            (Proto::TCP, s)
        } else if x < m.tcp + m.udp {
            let y = r.f64();
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
            self.p.long_min.as_secs_f64() / r.f64_open0().powf(1.0 / self.p.pareto_alpha)
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
            let mut id = self.rng.next() as u16;
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
            (inside_v6(f.sub).into(), o.into(), remote_v6(f.remote).into())
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

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::model::FlowKey;

    fn small() -> WorkloadParams {
        WorkloadParams {
            subscribers: 500,
            outside_pool: 2,
            remotes: 2_000,
            flows_per_second: 2_000.0,
            limit: Limit::Flows(40_000),
            ipv6_share: 0.05,
            dnat_share: 0.01,
            ..WorkloadParams::default()
        }
    }

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let a: Vec<_> = events(&small()).expect("params").take(5_000).collect();
        let b: Vec<_> = events(&small()).expect("params").take(5_000).collect();
        assert_eq!(a, b);
        let c: Vec<_> =
            events(&WorkloadParams { seed: 2, ..small() }).expect("params").take(5_000).collect();
        assert_ne!(a, c);
    }

    #[test]
    fn stream_is_time_ordered_and_every_start_ends_once_with_the_same_translation() {
        let mut open: HashMap<FlowKey, Translation> = HashMap::new();
        let mut last = Timestamp::MIN;
        let (mut starts, mut ends) = (0u64, 0u64);
        for ev in events(&small()).expect("params") {
            let t = ev.translation();
            assert_eq!(t.flags, Flags::empty());
            match &ev {
                FlowEvent::Start(t) => {
                    assert!(t.start >= last, "start {} before {}", t.start, last);
                    assert_eq!(t.end, None);
                    last = t.start;
                    // No two live translations share a key.
                    assert!(open.insert(t.key(), t.clone()).is_none(), "duplicate live key {t:?}");
                    starts += 1;
                }
                FlowEvent::End(t) => {
                    let end = t.end.expect("end set");
                    assert!(end >= last && end >= t.start);
                    last = end;
                    let s = open.remove(&t.key()).expect("end of a started translation");
                    assert_eq!(Translation { end: None, ..t.clone() }, s);
                    ends += 1;
                }
            }
        }
        assert_eq!(starts, 40_000);
        assert_eq!(ends, 40_000);
        assert!(open.is_empty());
    }

    #[test]
    fn reply_tuples_are_unique_while_live_and_outside_ports_are_shared_across_remotes() {
        // (proto, outside) -> live remotes
        let mut live: HashMap<(Proto, SocketAddr), Vec<SocketAddr>> = HashMap::new();
        let mut shared = 0u64;
        let mut kept = 0u64;
        let mut snat = 0u64;
        for ev in events(&small()).expect("params") {
            match ev {
                FlowEvent::Start(t) => {
                    let rs = live.entry((t.proto, t.outside)).or_default();
                    assert!(!rs.contains(&t.remote), "reply tuple reused while live: {t:?}");
                    if !rs.is_empty() {
                        shared += 1;
                    }
                    rs.push(t.remote);
                    if t.kind == Kind::Snat {
                        snat += 1;
                        if t.inside.port() == t.outside.port() {
                            kept += 1;
                        }
                        if !t.proto.is_icmp() {
                            assert!((EPHEMERAL_LOW..=EPHEMERAL_HIGH).contains(&t.inside.port()));
                        }
                        let ip = match t.inside.ip() {
                            IpAddr::V4(a) => a.octets()[0] == 10,
                            IpAddr::V6(a) => a.segments()[0] == 0xfd00,
                        };
                        assert!(ip, "inside {t:?}");
                    }
                }
                FlowEvent::End(t) => {
                    let rs = live.get_mut(&(t.proto, t.outside)).expect("live");
                    rs.retain(|r| *r != t.remote);
                }
            }
        }
        assert!(shared > 1_000, "outside ports shared across remotes only {shared} times");
        // Masquerade keeps most source ports.
        assert!(kept * 10 > snat * 8, "kept {kept} of {snat}");
    }

    #[test]
    fn remotes_are_zipf_distributed_over_test_ranges_with_realistic_ports() {
        let mut per_remote: HashMap<IpAddr, u64> = HashMap::new();
        let mut ports: HashMap<u16, u64> = HashMap::new();
        let p = WorkloadParams { ipv6_share: 0.0, ..small() };
        let ends: Vec<Translation> = translations(&p).expect("params").collect();
        for t in &ends {
            let IpAddr::V4(a) = t.remote.ip() else { panic!("v6 remote with ipv6_share 0") };
            let o = a.octets();
            assert!((o[0], o[1] & 0xfe) == (198, 18) || (o[0], o[1], o[2]) == (203, 0, 113), "{a}");
            *per_remote.entry(t.remote.ip()).or_default() += 1;
            *ports.entry(t.remote.port()).or_default() += 1;
        }
        let top = ports.iter().max_by_key(|(_, n)| **n).map(|(p, _)| *p);
        assert_eq!(top, Some(443));
        assert!(ports[&53] > ports[&80] && ports[&80] > ports.get(&22).copied().unwrap_or(0));
        // The most popular web remote gets far more flows than the median one.
        let mut counts: Vec<u64> = per_remote
            .iter()
            .filter(|(ip, _)| !matches!(ip, IpAddr::V4(a) if a.octets()[0] == 203))
            .map(|(_, n)| *n)
            .collect();
        counts.sort_unstable();
        let (max, median) = (counts[counts.len() - 1], counts[counts.len() / 2]);
        assert!(max > 50 * median, "max {max} median {median}");
    }

    #[test]
    fn durations_are_heavy_tailed_and_capped() {
        let p = WorkloadParams {
            long_share: 0.05,
            max_duration: Duration::from_secs(6 * 3600),
            ..small()
        };
        let mut secs: Vec<f64> = translations(&p)
            .expect("params")
            .map(|t| {
                let end = t.end.expect("end");
                (end.as_nanosecond() - t.start.as_nanosecond()) as f64 / 1e9
            })
            .collect();
        secs.sort_by(f64::total_cmp);
        let q = |x: f64| secs[((secs.len() - 1) as f64 * x) as usize];
        assert!(q(0.0) >= 10.0, "shortest {}", q(0.0));
        assert!(q(0.5) < 200.0, "median {}", q(0.5));
        assert!(q(0.999) > 3600.0, "99.9th {}", q(0.999));
        assert!(q(1.0) <= 6.0 * 3600.0);
    }

    #[test]
    fn poisson_rate_matches_and_span_limit_stops_starts() {
        let p = WorkloadParams {
            flows_per_second: 1_000.0,
            limit: Limit::Span(Duration::from_secs(20)),
            resolution_ns: 1_000,
            ..small()
        };
        let mut n = 0u64;
        for ev in events(&p).expect("params") {
            let t = ev.translation();
            assert_eq!(t.start.subsec_nanosecond() % 1_000, 0);
            if let FlowEvent::Start(t) = ev {
                n += 1;
                assert!(t.start.as_nanosecond() - p.start.as_nanosecond() < 20_000_000_000);
            }
        }
        // 20 000 expected, standard deviation ~141.
        assert!((19_400..=20_600).contains(&n), "{n} starts");
    }

    #[test]
    fn undrained_stream_leaves_flows_open() {
        let p = WorkloadParams { drain: false, limit: Limit::Flows(100_000), ..small() };
        let (mut s, mut e) = (0, 0);
        for ev in events(&p).expect("params") {
            match ev {
                FlowEvent::Start(_) => s += 1,
                FlowEvent::End(_) => e += 1,
            }
        }
        assert_eq!(s, 100_000);
        assert!(e < s && e > 0, "{e} ends of {s}");
    }

    #[test]
    fn dnat_flows_use_the_forwards() {
        let p = WorkloadParams { dnat_share: 0.2, ipv6_share: 0.0, ..small() };
        let mut n = 0;
        for t in translations(&p).expect("params").filter(|t| t.kind == Kind::Dnat) {
            n += 1;
            assert!(FORWARDS.iter().any(|(pr, o, i)| *pr == t.proto
                && *o == t.outside.port()
                && *i == t.inside.port()));
            assert!(t.remote.port() >= 49152);
        }
        assert!(n > 5_000, "{n} dnat");
    }

    #[test]
    fn bad_parameters_are_refused() {
        for p in [
            WorkloadParams { subscribers: 0, ..small() },
            WorkloadParams { outside_pool: 300, ..small() },
            WorkloadParams { remotes: MAX_REMOTES + 1, ..small() },
            WorkloadParams { flows_per_second: 0.0, ..small() },
            WorkloadParams { dnat_share: 1.5, ..small() },
            WorkloadParams { mix: ProtoMix { tcp: 0.0, udp: 0.0, icmp: 0.0 }, ..small() },
        ] {
            assert!(events(&p).is_err(), "{p:?}");
        }
    }

    #[test]
    fn end_queue_pops_in_end_order_whatever_the_push_order() {
        let mut rng = Rng(3);
        let mut q = EndQueue::default();
        let mut reference = std::collections::BTreeSet::new();
        let flow = |end: i64, seq: u64| Flow {
            end,
            seq,
            start: 0,
            sub: 0,
            remote: 0,
            inside_port: 0,
            outside_port: 0,
            remote_port: 0,
            pool: 0,
            proto: Proto::TCP,
            kind: Kind::Snat,
            v6: false,
        };
        let mut now = 0i64;
        for seq in 0..50_000u64 {
            // Ends from now to 5 s ahead (sometimes in the loaded bucket, sometimes before it).
            let end = now + i64::from(rng.below(5_000_000)) * 1_000;
            q.push(flow(end, seq));
            reference.insert((end, seq));
            if rng.chance(0.5) {
                let want = reference.pop_first();
                let got = q.pop().map(|f| (f.end, f.seq));
                assert_eq!(got, want);
                now = got.map_or(now, |g| g.0);
            }
        }
        while let Some(want) = reference.pop_first() {
            assert_eq!(q.pop().map(|f| (f.end, f.seq)), Some(want));
        }
        assert!(q.pop().is_none());
    }

    #[test]
    fn address_maps_are_injective_over_their_ranges() {
        let v4: HashSet<Ipv4Addr> = (0..MAX_REMOTES).map(remote_v4).collect();
        assert_eq!(v4.len(), MAX_REMOTES as usize);
        let inside: HashSet<Ipv4Addr> = (0..100_000).map(inside_v4).collect();
        assert_eq!(inside.len(), 100_000);
        assert!(inside.iter().all(|a| a.octets()[3] != 0 && a.octets()[3] != 255));
        let v6: HashSet<Ipv6Addr> = (0..100_000).map(remote_v6).collect();
        assert_eq!(v6.len(), 100_000);
    }
}
