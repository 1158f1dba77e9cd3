//! The capture daemon's pairing of starts and ends ([`recorder::tracker::Tracker`]).
//!
//! `cargo bench -p recorder --bench tracker`. The capture bench's steady state: every
//! translation starts, stays open while `OPEN` others start after it, then ends; so the open map
//! holds `OPEN` translations and nearly every lookup misses the CPU caches. Target: well under
//! the 0.5 µs of CPU per translation that the whole recorder is aiming at.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use jiff::Timestamp;
use recorder::model::{Flags, FlowEvent, Kind, Proto, Translation};
use recorder::tracker::Tracker;

/// Translations open at once.
const OPEN: u32 = 100_000;
/// Translations started and ended per measured iteration.
const PAIRS: u32 = 20_000;
/// Translations are numbered modulo this (a multiple of `PAIRS`); their keys are all distinct.
const CYCLE: u32 = 400_000;

/// Translation `i`: an inside host of 10.1/16, a shared outside address, 16 servers.
fn translation(i: u32) -> Translation {
    let v4 = |ip: u32, port: u32| {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from_bits(ip), port as u16))
    };
    let start =
        Timestamp::from_nanosecond(1_800_000_000_000_000_000 + i64::from(i) as i128 * 20_000)
            .expect("time");
    Translation {
        kind: Kind::Snat,
        proto: Proto::UDP,
        inside: v4(0x0a01_0000 | (i % 8), 1024 + i / 8 % 60_000),
        outside: v4(0x6440_0001, 1024 + i % 64_000),
        remote: v4(0x0a63_0000 | (i % 16), 53),
        zone: 0,
        start,
        end: None,
        flags: Flags::empty(),
    }
}

fn ended(mut t: Translation) -> Translation {
    t.end = Some(t.start + jiff::SignedDuration::from_secs(1));
    t
}

fn pairs(c: &mut Criterion) {
    let mut g = c.benchmark_group("tracker");
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(u64::from(PAIRS)));
    // The keys of a cycle are distinct (8 inside addresses × 50 000 ports), so every start is
    // new and every end finds its start.
    let mut tracker = Tracker::new();
    let mut out: Vec<FlowEvent> = Vec::new();
    for i in 0..OPEN {
        tracker.start(translation(i), &mut out);
    }
    out.clear();
    let mut next = OPEN;
    g.bench_function("start_and_end", |b| {
        b.iter_batched(
            || {
                let first = next;
                next = (next + PAIRS) % CYCLE;
                let starts: Vec<Translation> = (first..first + PAIRS).map(translation).collect();
                let ends: Vec<Translation> = (first..first + PAIRS)
                    .map(|i| ended(translation((i + CYCLE - OPEN) % CYCLE)))
                    .collect();
                (starts, ends)
            },
            |(starts, ends)| {
                for (s, e) in starts.into_iter().zip(ends) {
                    tracker.start(s, &mut out);
                    tracker.end(e, &mut out);
                }
                out.clear();
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
    let s = tracker.stats();
    assert_eq!(
        (s.end_only, s.duplicate_starts),
        (0, 0),
        "the workload pairs every start with its end"
    );
}

criterion_group!(benches, pairs);
criterion_main!(benches);
