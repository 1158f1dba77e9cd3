//! `natrec-gen`: prints the seeded synthetic ISP workload (see `recorder::synth`) as natrec JSON
//! Lines, `conntrack -E -o timestamp,extended` text or ulogd2 JSON.
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use jiff::Timestamp;
use recorder::import::{Format, render};
use recorder::synth::{self, Limit, ProtoMix, WorkloadParams};

/// Prints a seeded, ISP-like stream of NAT translations (start and end events in time order).
///
/// The same flags and seed always print the same stream. See the `recorder::synth` docs for what
/// is modelled.
#[derive(Debug, Parser)]
#[command(name = "natrec-gen", version)]
struct Args {
    /// Output format: jsonl (natrec record --jsonl), conntrack (conntrack -E -o
    /// timestamp,extended), ulogd-json (ulogd2 JSON output, NFCT through IP2STR).
    #[arg(long, default_value = "jsonl")]
    format: Format,
    /// Write to FILE instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Seed of the random stream.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of translations to start (default: those of --duration).
    #[arg(long, conflicts_with = "duration")]
    flows: Option<u64>,
    /// Simulated time during which flows start, e.g. 60s, 10m, 2h (default 60s).
    #[arg(long, value_parser = recorder::units::parse_duration)]
    duration: Option<Duration>,
    /// Time of the stream's origin (RFC 3339, UTC).
    #[arg(long, default_value = "2026-01-05T00:00:00Z")]
    start: Timestamp,
    /// Mean rate of new flows per second (Poisson).
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Number of inside hosts (10.0.0.0/8).
    #[arg(long, default_value_t = 10_000)]
    subscribers: u32,
    /// Zipf exponent of subscriber activity.
    #[arg(long, default_value_t = 0.7)]
    subscriber_skew: f64,
    /// First outside address.
    #[arg(long, default_value = "100.64.0.1")]
    outside_base: Ipv4Addr,
    /// Number of outside addresses.
    #[arg(long, default_value_t = 8)]
    outside_pool: u16,
    /// Pick the outside address per (inside, remote) instead of per subscriber.
    #[arg(long)]
    unpaired: bool,
    /// Number of remote addresses (198.18.0.0/15).
    #[arg(long, default_value_t = 50_000)]
    remotes: u32,
    /// Zipf exponent of remote popularity.
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Weight of TCP among new outbound flows.
    #[arg(long, default_value_t = 0.58)]
    tcp: f64,
    /// Weight of UDP among new outbound flows.
    #[arg(long, default_value_t = 0.40)]
    udp: f64,
    /// Weight of ICMP echo among new outbound flows.
    #[arg(long, default_value_t = 0.02)]
    icmp: f64,
    /// Share of flows that are inbound port forwards (DNAT).
    #[arg(long, default_value_t = 0.002)]
    dnat_share: f64,
    /// Share of flows over IPv6 (NAT66).
    #[arg(long, default_value_t = 0.0)]
    ipv6_share: f64,
    /// Factor applied to every flow's activity time.
    #[arg(long, default_value_t = 1.0)]
    duration_scale: f64,
    /// Share of TCP and UDP-stream flows that are long-lived (Pareto tail).
    #[arg(long, default_value_t = 0.01)]
    long_share: f64,
    /// Pareto shape of the long-lived tail.
    #[arg(long, default_value_t = 1.2)]
    pareto_alpha: f64,
    /// Shortest long-lived activity, e.g. 10m.
    #[arg(long, default_value = "10m", value_parser = recorder::units::parse_duration)]
    long_min: Duration,
    /// Longest lifetime of any translation, e.g. 24h.
    #[arg(long, default_value = "24h", value_parser = recorder::units::parse_duration)]
    max_duration: Duration,
    /// Time resolution of the stream: ns (the capture path's), us (conntrack's and ulogd's), ms.
    #[arg(long, default_value = "ns", value_parser = parse_resolution)]
    resolution: u32,
    /// Stop at the last start and leave the flows still running open (no end events for them).
    #[arg(long)]
    no_drain: bool,
}

fn parse_resolution(s: &str) -> Result<u32, String> {
    match s {
        "ns" => Ok(1),
        "us" => Ok(1_000),
        "ms" => Ok(1_000_000),
        _ => Err(format!("expected ns, us or ms, found {s:?}")),
    }
}

impl Args {
    fn params(&self) -> WorkloadParams {
        WorkloadParams {
            seed: self.seed,
            subscribers: self.subscribers,
            subscriber_skew: self.subscriber_skew,
            outside_base: self.outside_base,
            outside_pool: self.outside_pool,
            paired: !self.unpaired,
            remotes: self.remotes,
            zipf_exponent: self.zipf,
            flows_per_second: self.rate,
            limit: match (self.flows, self.duration) {
                (Some(n), _) => Limit::Flows(n),
                (None, Some(d)) => Limit::Span(d),
                (None, None) => Limit::Span(Duration::from_secs(60)),
            },
            start: self.start,
            drain: !self.no_drain,
            mix: ProtoMix { tcp: self.tcp, udp: self.udp, icmp: self.icmp },
            dnat_share: self.dnat_share,
            ipv6_share: self.ipv6_share,
            duration_scale: self.duration_scale,
            long_share: self.long_share,
            pareto_alpha: self.pareto_alpha,
            long_min: self.long_min,
            max_duration: self.max_duration,
            resolution_ns: self.resolution,
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let events = synth::events(&args.params())?;
    let out: Box<dyn Write> = match &args.out {
        Some(path) => {
            Box::new(File::create(path).with_context(|| format!("creating {}", path.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let mut buf = String::with_capacity(1 << 16);
    for ev in events {
        render(args.format, &ev, &mut buf).context("rendering an event")?;
        if buf.len() >= 60_000 {
            out.write_all(buf.as_bytes()).context("writing the output")?;
            buf.clear();
        }
    }
    out.write_all(buf.as_bytes()).context("writing the output")?;
    out.flush().context("writing the output")?;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let broken_pipe = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("natrec-gen: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
