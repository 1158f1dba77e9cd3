//! The workload's laws, checked on its output.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::events::{EPHEMERAL_HIGH, EPHEMERAL_LOW};
use super::flows::{EndQueue, FORWARDS, Flow};
use super::*;
use crate::model::{Flags, FlowEvent, FlowKey, Kind, Proto, Translation};
use crate::rng::Rng;

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
    let p =
        WorkloadParams { long_share: 0.05, max_duration: Duration::from_secs(6 * 3600), ..small() };
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
        assert!(
            FORWARDS.iter().any(|(pr, o, i)| *pr == t.proto
                && *o == t.outside.port()
                && *i == t.inside.port())
        );
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
    let mut rng = Rng::new(3);
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

#[test]
fn ipv6_subscribers_use_daily_temporary_addresses_in_their_own_64_and_remotes_few_48s() {
    let p = WorkloadParams { ipv6_share: 1.0, dnat_share: 0.0, ..small() };
    let mut per_sub: HashMap<u64, HashSet<Ipv6Addr>> = HashMap::new();
    let mut remote_48s = HashSet::new();
    for ev in events(&p).expect("params").take(20_000) {
        let t = ev.translation();
        let (IpAddr::V6(inside), IpAddr::V6(remote)) = (t.inside.ip(), t.remote.ip()) else {
            panic!("an IPv4 flow with ipv6_share 1: {t:?}")
        };
        // The /64 is the subscriber's (fd00:HI:LO:0::/64), the identifier a temporary one.
        let prefix = u128::from(inside) >> 64;
        assert_eq!(prefix & 0xffff, 0, "the LAN is the /56's first /64: {inside}");
        assert_eq!(u128::from(inside) >> 57 & 1, 0, "a temporary identifier is local: {inside}");
        per_sub.entry(prefix as u64).or_default().insert(inside);
        remote_48s.insert(u128::from(remote) >> 80);
    }
    // A few devices per subscriber within a day: 1 to 4 addresses each, more than one somewhere.
    assert!(per_sub.values().all(|a| (1..=4).contains(&a.len())), "{per_sub:?}");
    assert!(per_sub.values().any(|a| a.len() > 1));
    // Remotes sit in the providers' /48s (and the resolvers' /64).
    assert!(remote_48s.len() <= addresses::PROVIDERS_V6 as usize + 1, "{}", remote_48s.len());
    // The next day, the same device has another address in the same /64.
    let (a, b) = (inside_v6_temporary(7, 1, 20_000, 1), inside_v6_temporary(7, 1, 20_001, 1));
    assert_ne!(a, b);
    assert_eq!(u128::from(a) >> 64, u128::from(b) >> 64);
    assert_ne!(inside_v6_temporary(7, 0, 20_000, 1), a, "devices differ");
}
