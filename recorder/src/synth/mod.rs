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
//!   scattered over 198.18.0.0/15; over IPv6, in 24 provider `/48`s of 2001:db8::/32, 16 servers
//!   to a `/64` (see [`remote_v6`]), as IPv6 traffic goes mostly to a few content networks.
//!   Only documentation and benchmarking ranges are used, never routable ones.
//! - **IPv6** (`ipv6_share` of the flows, NAT66 to `2001:db8:ffff::<pool>`): each subscriber has
//!   a delegated `/56` and numbers its LAN from its first `/64`; it has 1–4 devices, and each
//!   makes its outgoing connections from a temporary (RFC 8981) address, a random interface
//!   identifier renewed every day ([`inside_v6_temporary`]); port forwards reach a stable
//!   address. Real dual-stack ISPs carry 40–50% of their traffic over IPv6.
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
//!
//! The code: [`random`] samples the laws above, [`addresses`] places subscribers and remotes,
//! `flows` keeps the live flows by end time, and `events` runs the clock.

mod addresses;
mod events;
mod flows;
mod random;
#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;
use std::time::Duration;

use jiff::Timestamp;

pub use addresses::{devices_v6, inside_v4, inside_v6, inside_v6_temporary, remote_v4, remote_v6};
pub use events::{Events, events, translations};

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
