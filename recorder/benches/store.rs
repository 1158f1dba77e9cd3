//! Store benchmark on the synthetic workload: prints bytes per translation on disk (ms and µs
//! resolution, and `zstd -19` of the same translations as `conntrack -E -o timestamp,extended`
//! text; then the same workload dual-stack and IPv6 only), then measures write throughput and
//! full-scan throughput with criterion.
//!
//! `cargo bench -p recorder --bench store` (NATREC_BENCH_SECS sets the simulated minutes of
//! traffic used for the size figures; default 10 minutes at 2000 flows/s).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use recorder::lookup::{Filter, TranslationSource};
use recorder::model::{FlowEvent, Translation};
use recorder::store::{Reader, Resolution, Writer, WriterOptions};
use recorder::synth::{Limit, WorkloadParams, events};

fn workload(secs: u64) -> Vec<FlowEvent> {
    workload_v6(secs, 0.0)
}

/// The workload with `ipv6_share` of its flows over IPv6.
fn workload_v6(secs: u64, ipv6_share: f64) -> Vec<FlowEvent> {
    let p = WorkloadParams {
        limit: Limit::Span(Duration::from_secs(secs)),
        ipv6_share,
        ..WorkloadParams::default()
    };
    events(&p).expect("valid workload").collect()
}

/// Bytes per translation at ms resolution for IPv4 only, dual stack (40% of the flows over
/// IPv6, as on dual-stack ISPs) and IPv6 only, each the same workload otherwise.
fn family_sizes(secs: u64) {
    println!("store bench: by address family ({secs} s of the workload each, ms resolution)");
    for (what, share) in [("IPv4 only", 0.0), ("dual stack, 40% IPv6", 0.4), ("IPv6 only", 1.0)] {
        let evs = workload_v6(secs, share);
        let n = evs.iter().filter(|e| matches!(e, FlowEvent::End(_))).count() as f64;
        let dir = tempfile::tempdir().expect("tempdir");
        write_all(dir.path(), &evs, Resolution::Millis);
        let bytes = dir_bytes(dir.path());
        println!("  {what}: {:.2} bytes/translation ({n} translations)", bytes as f64 / n);
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .sum()
}

/// CPU time of this process (user and system, every thread: the writer's and its seal thread's):
/// what "one core" spends, whatever else runs on the machine.
fn process_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Times of one write: wall and process CPU, for the appends (with flushes) and in all (with
/// the seal).
struct Took {
    append: Duration,
    total: Duration,
    append_cpu: Duration,
    total_cpu: Duration,
}

/// Writes everything at the default seal level.
fn write_all(dir: &Path, evs: &[FlowEvent], resolution: Resolution) -> Took {
    write_level(dir, evs, resolution, WriterOptions::default().seal_level)
}

/// Writes everything at `seal_level`.
fn write_level(dir: &Path, evs: &[FlowEvent], resolution: Resolution, seal_level: i32) -> Took {
    let c0 = process_cpu();
    let t0 = Instant::now();
    let mut w = Writer::open(WriterOptions {
        dir: dir.to_owned(),
        resolution,
        seal_level,
        ..WriterOptions::default()
    })
    .expect("open writer");
    for (i, ev) in evs.iter().enumerate() {
        w.append(ev).expect("append");
        if i % 10_000 == 0 {
            // The recorder ticks on the wall clock: a flush and fsync every second.
            w.tick(jiff::Timestamp::now()).expect("tick");
        }
    }
    let (append, append_cpu) = (t0.elapsed(), process_cpu() - c0);
    w.close().expect("close");
    Took { append, total: t0.elapsed(), append_cpu, total_cpu: process_cpu() - c0 }
}

/// `append+flush A M/s, with the seal S M/s` in wall-clock and CPU terms.
fn rates(n: f64, t: &Took) -> String {
    let m = |d: Duration| n / d.as_secs_f64() / 1e6;
    format!(
        "append+flush {:.2} M translations/s, with the seal {:.2} M/s (wall clock); per CPU second (all threads) {:.2} and {:.2} M/s",
        m(t.append),
        m(t.total),
        m(t.append_cpu),
        m(t.total_cpu)
    )
}

/// `conntrack -E -o timestamp,extended` text: a NEW and a DESTROY line per translation.
fn conntrack_text(ts: &[Translation]) -> String {
    let mut s = String::with_capacity(ts.len() * 320);
    let stamp = |t: jiff::Timestamp| {
        let ns = t.as_nanosecond();
        format!("[{}.{:06}]", ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000) / 1000)
    };
    for t in ts {
        let fam = if t.inside.is_ipv4() { "ipv4     2" } else { "ipv6     10" };
        let proto = format!("{:<8} {}", t.proto.to_string(), t.proto.0);
        let (orig, reply) = if t.proto.is_icmp() {
            (
                format!(
                    "src={} dst={} type=8 code=0 id={}",
                    t.inside.ip(),
                    t.remote.ip(),
                    t.inside.port()
                ),
                format!(
                    "src={} dst={} type=0 code=0 id={}",
                    t.remote.ip(),
                    t.outside.ip(),
                    t.outside.port()
                ),
            )
        } else {
            (
                format!(
                    "src={} dst={} sport={} dport={}",
                    t.inside.ip(),
                    t.remote.ip(),
                    t.inside.port(),
                    t.remote.port()
                ),
                format!(
                    "src={} dst={} sport={} dport={}",
                    t.remote.ip(),
                    t.outside.ip(),
                    t.remote.port(),
                    t.outside.port()
                ),
            )
        };
        let state = if t.proto.0 == 6 { " SYN_SENT" } else { "" };
        let _ = writeln!(
            s,
            "{}\t    [NEW] {fam} {proto} 120{state} {orig} [UNREPLIED] {reply}",
            stamp(t.start)
        );
        if let Some(e) = t.end {
            let _ = writeln!(s, "{}\t[DESTROY] {fam} {proto} {orig} {reply} [ASSURED]", stamp(e));
        }
    }
    s
}

fn sizes(evs: &[FlowEvent]) {
    let translations: Vec<Translation> = evs
        .iter()
        .filter_map(|e| match e {
            FlowEvent::End(t) => Some(t.clone()),
            FlowEvent::Start(_) => None,
        })
        .collect();
    let n = translations.len() as f64;
    println!(
        "store bench: {} translations ({} events) of the synthetic workload",
        translations.len(),
        evs.len()
    );
    let default_level = WriterOptions::default().seal_level;
    // A first write warms the allocator and the page cache: the figures are of the steady state.
    write_all(
        tempfile::tempdir().expect("tempdir").path(),
        &evs[..evs.len().min(400_000)],
        Resolution::Millis,
    );
    for res in [Resolution::Millis, Resolution::Micros] {
        let dir = tempfile::tempdir().expect("tempdir");
        let took = write_all(dir.path(), evs, res);
        let bytes = dir_bytes(dir.path());
        println!(
            "  natrec {res:>2}, seal at zstd {default_level} (default): {bytes} bytes, {:.2} bytes/translation; {}",
            bytes as f64 / n,
            rates(n, &took)
        );
    }
    for level in [3, 9, 19] {
        let dir = tempfile::tempdir().expect("tempdir");
        let took = write_level(dir.path(), evs, Resolution::Millis, level);
        let bytes = dir_bytes(dir.path());
        println!(
            "  natrec ms, seal at zstd {level}: {:.2} bytes/translation; {}",
            bytes as f64 / n,
            rates(n, &took)
        );
    }
    let text = conntrack_text(&translations);
    println!(
        "  conntrack -E text: {} bytes, {:.1} bytes/translation",
        text.len(),
        text.len() as f64 / n
    );
    // zstd -19 is slow: compress a prefix and scale (the ratio is stable beyond a few MB).
    let cut = text.len().min(64 << 20);
    let cut = text[..cut].rfind('\n').map_or(cut, |i| i + 1);
    let z = zstd::bulk::compress(&text.as_bytes()[..cut], 19).expect("zstd");
    let per = z.len() as f64 / cut as f64 * text.len() as f64 / n;
    println!(
        "  zstd -19 of that text: {per:.2} bytes/translation (measured on the first {} MB)",
        cut >> 20
    );
}

fn bench(c: &mut Criterion) {
    let secs = std::env::var("NATREC_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(600);
    let evs = workload(secs);
    sizes(&evs);
    family_sizes(secs);
    let small: Vec<FlowEvent> = evs.iter().take(400_000).cloned().collect();
    let ntrans = small.iter().filter(|e| matches!(e, FlowEvent::End(_))).count() as u64;
    let mut g = c.benchmark_group("store");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(ntrans));
    g.bench_function("write_ms", |b| {
        b.iter(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            write_all(dir.path(), &small, Resolution::Millis)
        })
    });
    let dir = tempfile::tempdir().expect("tempdir");
    write_all(dir.path(), &evs, Resolution::Millis);
    let reader = Reader::open(dir.path()).expect("reader");
    let all = Filter {
        from: jiff::Timestamp::MIN,
        to: jiff::Timestamp::MAX,
        proto: None,
        outside: None,
        inside: None,
        remote: None,
    };
    let total = evs.iter().filter(|e| matches!(e, FlowEvent::End(_))).count() as u64;
    g.throughput(Throughput::Elements(total));
    g.bench_function("scan_all", |b| {
        b.iter(|| {
            let mut n = 0u64;
            reader.scan(&all, &mut |_| n += 1).expect("scan");
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
