//! Throughput of the synthetic workload generator and of the import parsers.
//!
//! `cargo bench -p recorder --bench synth`. Targets: generation at several million events per
//! second (benchmarks write 100 million translations); parsing faster than the store writes.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use recorder::import::{Format, Importer, render};
use recorder::model::FlowEvent;
use recorder::synth::{Limit, WorkloadParams, events};

const FLOWS: u64 = 200_000;

fn params() -> WorkloadParams {
    WorkloadParams { limit: Limit::Flows(FLOWS), resolution_ns: 1_000, ..WorkloadParams::default() }
}

fn generate(c: &mut Criterion) {
    let mut g = c.benchmark_group("synth");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(2 * FLOWS));
    g.bench_function("events", |b| b.iter(|| events(&params()).expect("valid workload").count()));
    g.finish();
}

fn import(c: &mut Criterion) {
    let evs: Vec<FlowEvent> = events(&params()).expect("valid workload").collect();
    let mut g = c.benchmark_group("import");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(evs.len() as u64));
    for format in [Format::Conntrack, Format::UlogdJson, Format::Jsonl] {
        let mut text = String::new();
        for ev in &evs {
            render(format, ev, &mut text).expect("render");
        }
        g.bench_function(format.name(), |b| {
            b.iter(|| {
                let mut imp = Importer::new(format);
                let mut out = Vec::new();
                for (i, line) in text.lines().enumerate() {
                    imp.line(i as u64 + 1, line, &mut out);
                    out.clear();
                }
                imp.finish().translations
            })
        });
    }
    g.finish();
}

criterion_group!(benches, generate, import);
criterion_main!(benches);
