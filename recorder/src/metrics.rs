//! `--metrics ADDR`: the recorder's counters for Prometheus, at `http://ADDR/metrics`.
//!
//! The capture loop publishes its [`RecordSummary`] (the same counters `--stats-json` prints at
//! exit) once a second; a scrape encodes the last one with `prometheus-client`, as OpenMetrics
//! when the scraper asks for it (Prometheus does) and in Prometheus's text format 0.0.4
//! otherwise (`curl`, `promtool check metrics`). The server is a task of the capture loop's
//! runtime: a scrape only reads the published summary, and a slow client only holds its own
//! connection (each has a deadline, and at most [`MAX_CONNECTIONS`] are served at once).
//!
//! No port is registered for natrec; the examples use 9847. The endpoint is off by default, and
//! the unit lets it answer loopback only.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeMetric as _,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::daemon::RecordSummary;

/// Connections served at once; more wait in the listen queue.
pub const MAX_CONNECTIONS: usize = 16;
/// How long a client has to send its request and take the answer.
const DEADLINE: Duration = Duration::from_secs(10);
/// The longest request head read.
const MAX_REQUEST: usize = 8 << 10;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a scrape shows: the last summary the loop published, and what does not change.
#[derive(Debug, Default)]
struct State {
    summary: RecordSummary,
    started: Option<Timestamp>,
}

/// The loop's side: publishes summaries.
#[derive(Clone, Debug)]
pub struct Publisher(Arc<Mutex<State>>);

impl Publisher {
    pub fn publish(&self, summary: RecordSummary) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).summary = summary;
    }
}

/// The bound endpoint; [`Endpoint::serve`] answers scrapes until the runtime stops.
pub struct Endpoint {
    listener: TcpListener,
    registry: Arc<Registry>,
}

/// Binds `addr` (before anything is attached, so that a port in use fails the start).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(Endpoint, Publisher)> {
    let listener = TcpListener::bind(addr).await?;
    let state = Arc::new(Mutex::new(State { started: Some(Timestamp::now()), ..State::default() }));
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(state.clone())));
    Ok((Endpoint { listener, registry: Arc::new(registry) }, Publisher(state)))
}

impl Endpoint {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn serve(self) {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else { return };
            let (conn, peer) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and the like: wait rather than spin.
                    tracing::warn!("metrics endpoint: accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let registry = self.registry.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(DEADLINE, answer(conn, &registry)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(%peer, "metrics endpoint: {e}"),
                    Err(_) => tracing::debug!(%peer, "metrics endpoint: client too slow"),
                }
                drop(permit);
            });
        }
    }
}

/// Reads one request and answers it; the connection closes after it.
async fn answer(mut conn: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_REQUEST {
            return respond(&mut conn, "431 Request Header Fields Too Large", "text/plain", "")
                .await;
        }
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let (method, path, accept) = parse_request(&head);
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let (content_type, body) = encode(registry, accept);
            ("200 OK", content_type, body)
        }
        ("GET" | "HEAD", "/") => {
            ("200 OK", "text/plain; charset=utf-8", "natrec: metrics at /metrics\n".to_owned())
        }
        ("GET" | "HEAD", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => ("405 Method Not Allowed", "text/plain", "GET /metrics\n".to_owned()),
    };
    let body = if method == "HEAD" { String::new() } else { body };
    respond(&mut conn, status, content_type, &body).await
}

/// The method, the path (without a query) and the Accept header of a request head.
fn parse_request(head: &str) -> (&str, &str, &str) {
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("");
    let target = first.next().unwrap_or("");
    let path = target.split('?').next().unwrap_or("");
    let accept = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("accept"))
        .map_or("", |(_, v)| v.trim());
    (method, path, accept)
}

/// The registry as OpenMetrics if `accept` asks for it, else as Prometheus text 0.0.4.
fn encode(registry: &Registry, accept: &str) -> (&'static str, String) {
    let mut body = String::new();
    // Encoding into a String cannot fail; the collector's own writes are all infallible too.
    if accept.contains("application/openmetrics-text") {
        let _ = prometheus_client::encoding::text::encode(&mut body, registry);
        (OPENMETRICS, body)
    } else {
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut body, registry);
        (prometheus_client::encoding::prometheus_text::CONTENT_TYPE, body)
    }
}

async fn respond(
    conn: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body.as_bytes()).await?;
    conn.shutdown().await
}

/// Encodes the published state at each scrape.
#[derive(Debug)]
struct Scrape(Arc<Mutex<State>>);

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let s = &state.summary;
        let (k, t) = (&s.kernel, &s.tracker);
        let mut w = Writer(&mut enc);

        w.gauge_with(
            "natrec_build_info",
            "natrec's version, and where its ends come from (ebpf: the end probe; ctnetlink)",
            None,
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("ends_from", s.ends_from),
                ("end_probe", s.end_probe.unwrap_or("none")),
            ],
            1,
        )?;
        if let Some(started) = state.started {
            w.gauge(
                "natrec_start_time",
                "When natrec record started",
                Some(Unit::Seconds),
                seconds(started),
            )?;
        }

        w.counter(
            "natrec_translations_started",
            "Translations recorded (their start)",
            None,
            t.starts,
        )?;
        w.counter(
            "natrec_translations_ended",
            "Translations whose end was recorded",
            None,
            t.ends,
        )?;
        w.counter(
            "natrec_translations_seeded",
            "Translations found open in conntrack at start (their start time is the kernel's, flagged seeded)",
            None,
            t.seeded,
        )?;
        w.counter(
            "natrec_translations_end_only",
            "Translations recorded at their end only (their start was never seen)",
            None,
            t.end_only,
        )?;
        w.counter(
            "natrec_translations_approx_ends",
            "Translations closed with an approximate end (lost end event, slot reuse, restart)",
            None,
            t.approx_ends,
        )?;
        w.gauge("natrec_open_translations", "Translations open now", None, count(s.open as u64))?;

        w.counters(
            "natrec_events",
            "Events taken in, by source: the eBPF ring buffer, ctnetlink DESTROY events",
            "source",
            &[("ebpf", k.events), ("ctnetlink", s.netlink_destroys)],
        )?;
        if let Some(programs) = &s.programs {
            let runs: Vec<(&str, u64)> = programs.iter().map(|p| (p.program, p.runs)).collect();
            w.counters(
                "natrec_bpf_program_runs",
                "Runs of each of natrec's eBPF programs (BPF run statistics: --program-stats or \
                 kernel.bpf_stats_enabled=1; absent when they are off)",
                "program",
                &runs,
            )?;
            let secs: Vec<(&str, f64)> =
                programs.iter().map(|p| (p.program, p.run_time_ns as f64 / 1e9)).collect();
            w.counters(
                "natrec_bpf_program_run_seconds",
                "Time the kernel spent running each of natrec's eBPF programs",
                "program",
                &secs,
            )?;
        }
        w.counter("natrec_conntrack_dumps", "Conntrack dumps (seed, reap, resync)", None, s.dumps)?;
        w.counter(
            "natrec_resyncs",
            "Resyncs with a dump after a possible loss or a reap",
            None,
            s.resyncs,
        )?;
        w.counters(
            "natrec_drops",
            "Events lost or set aside, by reason. ringbuf_full: lost in the kernel (recovered from a \
             later packet, the end, or a resync); seen_map_full: reported again later (nothing lost); \
             netlink_enobufs: in reliable mode a resync, not a loss; store_lost: not written to the store",
            "reason",
            &[
                ("ringbuf_full", k.ringbuf_full),
                ("kernel_read_error", k.read_errors),
                ("seen_map_full", k.seen_full),
                ("netlink_enobufs", s.netlink_enobufs),
                ("netlink_unreadable", s.netlink_unreadable),
                ("malformed_event", s.malformed_events),
                ("duplicate_start", t.duplicate_starts),
                ("late_end", t.late_ends),
                ("store_lost", s.store.as_ref().map_or(0, |st| st.lost_events)),
            ],
        )?;

        w.counter(
            "natrec_kernel_conntrack_frees",
            "Conntrack entries the end probe saw freed",
            None,
            k.ct_frees,
        )?;
        w.counter(
            "natrec_kernel_end_events",
            "End events the end probe wrote",
            None,
            k.end_events,
        )?;
        w.counter(
            "natrec_kernel_ends_spilled",
            "End events written to the spill ring because the ring buffer was full (none lost)",
            None,
            k.ends_spilled,
        )?;
        w.gauge(
            "natrec_ringbuf_size",
            "Size of the BPF ring buffer",
            Some(Unit::Bytes),
            i64::from(s.ringbuf_bytes),
        )?;
        w.gauge(
            "natrec_ringbuf_read_max",
            "The most the ring buffer held at one read since start",
            Some(Unit::Bytes),
            count(s.ringbuf_read_max_bytes),
        )?;

        if let Some(st) = &s.store {
            w.counter(
                "natrec_store_events_appended",
                "Events given to the store",
                None,
                st.appended,
            )?;
            w.counter(
                "natrec_store_written",
                "Bytes written to open segments",
                Some(Unit::Bytes),
                st.bytes_written,
            )?;
            w.counter("natrec_store_flushes", "Flush-and-fsync rounds", None, st.flushes)?;
            w.counter(
                "natrec_store_write_errors",
                "Failed writes, fsyncs, seals or deletions",
                None,
                st.write_errors,
            )?;
            w.counter("natrec_store_segments_sealed", "Segments sealed", None, st.segments_sealed)?;
            w.counter(
                "natrec_store_segments_deleted",
                "Segments deleted by retention",
                None,
                st.segments_deleted,
            )?;
            if let Some(at) = st.last_seal {
                w.gauge(
                    "natrec_store_last_seal_timestamp",
                    "When the last segment was sealed",
                    Some(Unit::Seconds),
                    seconds(at),
                )?;
            }
        }
        Ok(())
    }
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn seconds(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

/// One metric at a time into a descriptor encoder.
struct Writer<'a, 'b>(&'a mut DescriptorEncoder<'b>);

impl Writer<'_, '_> {
    fn counter(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        v: u64,
    ) -> Result<(), std::fmt::Error> {
        let c = ConstCounter::new(v);
        c.encode(self.0.encode_descriptor(name, help, unit.as_ref(), c.metric_type())?)
    }

    fn counters<N: EncodeCounterValue + Copy + Default>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: &[(&str, N)],
    ) -> Result<(), std::fmt::Error> {
        let kind = ConstCounter::new(N::default()).metric_type();
        let mut family = self.0.encode_descriptor(name, help, None, kind)?;
        for &(value, v) in values {
            ConstCounter::new(v).encode(family.encode_family(&[(label, value)])?)?;
        }
        Ok(())
    }

    /// A gauge of `f64` (times) or `i64` (counts and sizes, printed as integers).
    fn gauge<N: EncodeGaugeValue>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        v: N,
    ) -> Result<(), std::fmt::Error> {
        let g = ConstGauge::new(v);
        g.encode(self.0.encode_descriptor(name, help, unit.as_ref(), g.metric_type())?)
    }

    fn gauge_with(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        labels: &[(&str, &str)],
        v: i64,
    ) -> Result<(), std::fmt::Error> {
        let g = ConstGauge::new(v);
        let mut family = self.0.encode_descriptor(name, help, unit.as_ref(), g.metric_type())?;
        g.encode(family.encode_family(&labels)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_by_method_path_and_accept() {
        let head = "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\naccept: application/openmetrics-text;version=1.0.0\r\n\r\n";
        assert_eq!(
            parse_request(head),
            ("GET", "/metrics", "application/openmetrics-text;version=1.0.0")
        );
        assert_eq!(parse_request("POST / HTTP/1.0\r\n\r\n"), ("POST", "/", ""));
        assert_eq!(parse_request("garbage"), ("garbage", "", ""));
    }

    #[test]
    fn both_formats_carry_every_counter_with_prometheus_names() {
        let state = Arc::new(Mutex::new(State::default()));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape(state.clone())));
        Publisher(state).publish(RecordSummary {
            ends_from: "ebpf",
            ringbuf_bytes: 1 << 24,
            store: Some(Default::default()),
            ..RecordSummary::default()
        });
        let (ct, om) = encode(&registry, "application/openmetrics-text; version=1.0.0");
        assert_eq!(ct, OPENMETRICS);
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(om.contains("# TYPE natrec_translations_started counter\n"), "{om}");
        assert!(om.contains("\nnatrec_translations_started_total 0\n"), "{om}");
        assert!(om.contains("\nnatrec_ringbuf_size_bytes 16777216\n"), "{om}");
        let (ct, text) = encode(&registry, "*/*");
        assert!(ct.starts_with("text/plain; version=0.0.4"));
        assert!(text.contains("# TYPE natrec_translations_started_total counter\n"), "{text}");
        assert!(text.contains("natrec_drops_total{reason=\"ringbuf_full\"} 0\n"), "{text}");
        assert!(text.contains("natrec_store_written_bytes_total 0\n"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }
}
