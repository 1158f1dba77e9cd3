//! `natrec query` latency and scan speed over a large synthetic store.
//!
//! Run: `cargo bench -p recorder --bench query` (what `cargo xtask bench query` runs).
//! Size: `NATREC_BENCH_TRANSLATIONS` (default 100 000 000). The store is built once into
//! `target/natrec-bench/query-<params>/` and reused by later runs with the same parameters.
//!
//! Figures printed:
//! - point query (outside ip:port, remote, protocol, instant ±2 s) on an open reader, warm page
//!   cache: criterion's estimate, and the median over the sample set;
//! - the same with a cold page cache (`sync; echo 3 > /proc/sys/vm/drop_caches` before each,
//!   opening the directory included, as a `natrec query` process would);
//! - an inside-host range query over the whole store: the store's translations per second, and the
//!   records examined per second (checkpoint copies included).

use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::Criterion;
use jiff::{SignedDuration, Timestamp};
use recorder::lookup::EndpointMatch;
use recorder::model::{FlowEvent, Translation};
use recorder::query::{OutsideQuery, Query, When, ask, who_held};
use recorder::store::{Reader, Writer, WriterOptions};
use recorder::synth::{self, Limit, WorkloadParams};

/// Translations sampled while the store is built (the questions asked).
const SAMPLES: u64 = 2_000;
/// How many of them the warm median is taken over.
const WARM_RUNS: usize = 300;
const COLD_RUNS: usize = 15;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn params(n: u64) -> WorkloadParams {
    WorkloadParams {
        seed: 42,
        subscribers: 200_000,
        outside_pool: 64,
        flows_per_second: 20_000.0,
        limit: Limit::Flows(n),
        resolution_ns: 1_000_000,
        // Ahead of the machine's clock: the writer measures a segment's age from its own clock
        // at open, so only synthetic times after it rotate segments by age as a recorder would.
        start: Timestamp::from_second(1_893_456_000).unwrap_or(Timestamp::UNIX_EPOCH),
        ..WorkloadParams::default()
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Builds the store (once) and returns its directory and the sampled translations.
/// The directory name carries a format generation (v5: segment format 2), so a store written in
/// an older format is rebuilt.
fn dataset(n: u64) -> Res<(PathBuf, Vec<Translation>)> {
    let p = params(n);
    let root = target_dir().join("natrec-bench").join(format!(
        "query-v6-n{n}-seed{}-subs{}-pool{}-fps{}",
        p.seed, p.subscribers, p.outside_pool, p.flows_per_second
    ));
    let store = root.join("store");
    let samples_path = root.join("samples.jsonl");
    let done = root.join("complete");
    if !done.exists() {
        if root.exists() {
            fs::remove_dir_all(&root)?;
        }
        fs::create_dir_all(&root)?;
        eprintln!("building the benchmark store of {n} translations in {} (once)", root.display());
        let began = Instant::now();
        let mut w = Writer::open(WriterOptions {
            dir: store.clone(),
            rotate_age: Duration::from_secs(15 * 60),
            rotate_size: 64 << 20,
            flush_interval: Duration::from_secs(3600),
            ..WriterOptions::default()
        })?;
        let mut samples = BufWriter::new(fs::File::create(&samples_path)?);
        let every = (n / SAMPLES).max(1);
        let (mut ends, mut last_tick) = (0u64, None::<Timestamp>);
        for ev in synth::events(&p)? {
            let t = match &ev {
                FlowEvent::Start(t) => t.start,
                FlowEvent::End(t) => t.end.unwrap_or(t.start),
            };
            // No tick before the first event, so the writer's first segment is not sealed empty.
            match last_tick {
                None => last_tick = Some(t),
                Some(l) if t.duration_since(l) >= SignedDuration::from_secs(1) => {
                    w.tick(t)?;
                    last_tick = Some(t);
                }
                Some(_) => {}
            }
            w.append(&ev)?;
            if let FlowEvent::End(tr) = &ev {
                ends += 1;
                if ends % every == 0 {
                    serde_json::to_writer(&mut samples, tr)?;
                    samples.write_all(b"\n")?;
                }
                if ends % 10_000_000 == 0 {
                    eprintln!(
                        "  {ends} translations written ({:.0} s)",
                        began.elapsed().as_secs_f64()
                    );
                }
            }
        }
        w.close()?;
        samples.flush()?;
        fs::write(
            &done,
            format!("{ends} translations in {:.1} s\n", began.elapsed().as_secs_f64()),
        )?;
    }
    let samples = BufReader::new(fs::File::open(&samples_path)?)
        .lines()
        .map(|l| Ok(serde_json::from_str::<Translation>(&l?)?))
        .collect::<Res<Vec<_>>>()?;
    if samples.is_empty() {
        return Err("no sampled translations".into());
    }
    Ok((store, samples))
}

fn exact(ep: std::net::SocketAddr) -> EndpointMatch {
    EndpointMatch { ip: ep.ip(), port: Some(ep.port()) }
}

/// The abuse-report question for a sampled translation: its full reply tuple at its midpoint.
fn point_query(t: &Translation) -> OutsideQuery {
    let end = t.end.unwrap_or(t.start);
    let at = t.start.checked_add(end.duration_since(t.start) / 2).unwrap_or(t.start);
    OutsideQuery {
        outside: exact(t.outside),
        remote: Some(exact(t.remote)),
        proto: Some(t.proto),
        at,
        window: recorder::query::DEFAULT_WINDOW,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn drop_caches() -> Result<(), String> {
    let synced = std::process::Command::new("sync").status().map_err(|e| format!("sync: {e}"))?;
    if !synced.success() {
        return Err("sync failed".into());
    }
    fs::write("/proc/sys/vm/drop_caches", "3")
        .map_err(|e| format!("writing /proc/sys/vm/drop_caches: {e}"))
}

fn main() -> Res<()> {
    let n: u64 = match std::env::var("NATREC_BENCH_TRANSLATIONS") {
        Ok(s) => s
            .replace('_', "")
            .parse()
            .map_err(|_| format!("NATREC_BENCH_TRANSLATIONS: expected a count, got {s:?}"))?,
        Err(_) => 100_000_000,
    };
    let (dir, samples) = dataset(n)?;
    let reader = Reader::open(&dir)?;
    let mut figures = Vec::new();

    // Every sampled translation must be found, and found alone (its full tuple is unique).
    let mut warm = Vec::with_capacity(WARM_RUNS);
    let mut blocks = Vec::with_capacity(WARM_RUNS);
    let mut unique = 0;
    let warm_set: Vec<&Translation> =
        samples.iter().step_by((samples.len() / WARM_RUNS).max(1)).take(WARM_RUNS).collect();
    for t in warm_set.iter().copied() {
        let q = point_query(t);
        let began = Instant::now();
        let a = who_held(&reader, &q)?;
        warm.push(began.elapsed());
        blocks.push(a.report.blocks_read);
        if !a.candidates.iter().any(|c| c.translation.key() == t.key()) {
            return Err(format!("sampled translation not found: {t:?}").into());
        }
        unique += usize::from(a.distinct_inside == 1);
    }
    blocks.sort_unstable();
    figures.push(format!(
        "point query, warm cache, open reader: median {} over {} sampled translations ({} answered uniquely; blocks read: median {}, max {})",
        ms(median(warm)),
        warm_set.len(),
        unique,
        blocks[blocks.len() / 2],
        blocks[blocks.len() - 1]
    ));

    let mut c = Criterion::default().configure_from_args();
    let mut i = 0usize;
    c.bench_function("query/point_warm", |b| {
        b.iter(|| {
            i = (i + 1) % samples.len();
            who_held(&reader, &point_query(&samples[i])).map(|a| a.candidates.len())
        })
    });
    c.bench_function("query/point_warm_with_open", |b| {
        b.iter(|| {
            i = (i + 1) % samples.len();
            Reader::open(&dir)
                .map_err(|e| e.to_string())
                .and_then(|r| who_held(&r, &point_query(&samples[i])).map_err(|e| e.to_string()))
                .map(|a| a.candidates.len())
        })
    });

    let mut cold = Vec::new();
    let mut cold_err = None;
    for t in samples.iter().step_by((samples.len() / COLD_RUNS).max(1)).take(COLD_RUNS) {
        if let Err(e) = drop_caches() {
            cold_err = Some(e);
            break;
        }
        let began = Instant::now();
        let r = Reader::open(&dir)?;
        let a = who_held(&r, &point_query(t))?;
        cold.push(began.elapsed());
        if a.candidates.is_empty() {
            return Err("cold query found nothing".into());
        }
    }
    match cold_err {
        None => figures.push(format!(
            "point query, cold cache (drop_caches before each, open included): median {} over {} queries",
            ms(median(cold)),
            COLD_RUNS
        )),
        Some(e) => figures.push(format!("point query, cold cache: NOT MEASURED ({e})")),
    }

    // The inside host of the first sample, over everything the store holds.
    let host = samples[0].inside.ip();
    let first = samples.iter().map(|t| t.start).min().unwrap_or(samples[0].start);
    let last = samples.iter().filter_map(|t| t.end).max().unwrap_or(samples[0].start);
    let q = Query {
        outside: None,
        inside: Some(EndpointMatch { ip: host, port: None }),
        remote: None,
        proto: None,
        when: When::Range {
            from: first.checked_sub(SignedDuration::from_hours(1))?,
            to: last.checked_add(SignedDuration::from_hours(1))?,
        },
    };
    let mut rates = Vec::new();
    let mut found = 0;
    for _ in 0..3 {
        let began = Instant::now();
        let a = ask(&reader, &q)?;
        let secs = began.elapsed().as_secs_f64();
        found = a.candidates.len();
        rates.push((
            a.report.translations_scanned as f64 / secs,
            a.report.translations_scanned,
            secs,
        ));
    }
    rates.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (rate, scanned, secs) = rates[1];
    // The store's translations per second (what an operator searches), and the records examined
    // per second (the checkpoint copies of translations open across rotations included).
    figures.push(format!(
        "inside-host range query ({host}, whole store of {n} translations): {:.1} M translations/s ({secs:.3} s, {found} matched; median of 3); {:.1} M records/s examined ({scanned} records, checkpoint copies included)",
        n as f64 / secs / 1e6,
        rate / 1e6
    ));

    c.final_summary();
    println!("\nnatrec query benchmark over {n} synthetic translations ({}):", dir.display());
    for f in &figures {
        println!("  {f}");
    }
    Ok(())
}
