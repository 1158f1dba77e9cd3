//! `natrec record --metrics ADDR` in the lab, scraped by a real Prometheus server
//! (Debian's `prometheus`, started by this test on the gateway namespace's loopback with a
//! scrape config of its own). The scrape succeeds, `promtool check metrics` passes on what
//! natrec serves, and every value Prometheus stored agrees with what `--stats-json` printed at
//! exit.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use natrec_tests::gateway::{GatewayLab, LabSpec};
use natrec_tests::http;
use natrec_tests::lab::{self, Netns, TempDir};
use natrec_tests::recorder_proc::{self, NatrecRecord};
use natrec_tests::traffic::{EchoServer, sa};

/// Loopback of the lab's gateway namespace: nothing else listens there.
const NATREC_METRICS: &str = "127.0.0.1:9847";
const PROMETHEUS: &str = "127.0.0.1:9090";
const FLOWS: usize = 12;

fn require(bin: &str, version_flag: &str) {
    let ok = Command::new(bin)
        .arg(version_flag)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "this test needs `{bin}` (Debian package prometheus; `cargo xtask setup` installs it)"
    );
}

/// `GET` in the namespace `ns` (both servers listen on its loopback).
fn try_get(
    ns: &Netns,
    addr: &str,
    path: &str,
    accept: Option<&str>,
) -> natrec_tests::lab::Result<http::Response> {
    let (addr, path, accept) =
        (addr.parse().expect("addr"), path.to_owned(), accept.map(str::to_owned));
    ns.run_in(move || http::get(addr, &path, accept.as_deref()))?
}

fn get(ns: &Netns, addr: &str, path: &str, accept: Option<&str>) -> http::Response {
    try_get(ns, addr, path, accept).unwrap_or_else(|e| panic!("{e}"))
}

/// The value of an instant PromQL query of one series, if Prometheus has it (and is up).
fn prom_value(ns: &Netns, promql: &str) -> Option<f64> {
    let r = try_get(
        ns,
        PROMETHEUS,
        &format!("/api/v1/query?query={}", http::query_escape(promql)),
        None,
    )
    .ok()?;
    let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
    let result = v["data"]["result"].as_array()?;
    assert!(result.len() <= 1, "{promql} is one series: {result:?}");
    result.first()?["value"][1].as_str()?.parse().ok()
}

#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn prometheus_scrapes_natrec_and_its_values_agree_with_stats_json() {
    lab::ensure_root_capabilities().expect("lab capabilities");
    require("prometheus", "--version");
    require("promtool", "--version");
    let lab =
        GatewayLab::build(LabSpec { prefix: "prom".into(), ..LabSpec::default() }).expect("lab");
    let dir = TempDir::new("prom").expect("temp dir");
    let server = lab.servers()[0];
    let _echo = EchoServer::udp(lab.outside(), sa(server, 7)).expect("udp echo");
    let jsonl = dir.path().join("events.jsonl");
    let store = dir.path().join("store");
    let store_arg = store.display().to_string();
    let natrec = NatrecRecord::start(
        &lab,
        &jsonl,
        &["--metrics", NATREC_METRICS, "--stats-json", "--dir", &store_arg, "--program-stats"],
    )
    .expect("natrec record");

    // Flows, then their ends (flushed from conntrack): afterwards nothing changes.
    natrec.record_udp_flows(&lab, server, FLOWS).expect("starts and ends recorded");

    // What natrec serves: Prometheus's text format by default, and it passes promtool.
    let plain = get(lab.gateway(), NATREC_METRICS, "/metrics", None);
    assert_eq!(plain.status, 200, "{plain:?}");
    assert!(plain.content_type.starts_with("text/plain; version=0.0.4"), "{plain:?}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    std::io::Write::write_all(&mut promtool.stdin.take().expect("stdin"), plain.body.as_bytes())
        .expect("feed promtool");
    let checked = promtool.wait_with_output().expect("promtool");
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\non:\n{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr),
        plain.body
    );
    let om = get(
        lab.gateway(),
        NATREC_METRICS,
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    );
    assert!(om.content_type.starts_with("application/openmetrics-text"), "{om:?}");
    assert!(om.body.ends_with("# EOF\n"), "{}", om.body);
    assert_eq!(get(lab.gateway(), NATREC_METRICS, "/nothing", None).status, 404);

    // A real Prometheus scrapes it every second.
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: natrec\n    static_configs:\n      - targets: ['{NATREC_METRICS}']\n"
        ),
    )
    .expect("scrape config");
    let data = dir.path().join("tsdb");
    let prometheus = lab
        .gateway()
        .spawn(&[
            "prometheus",
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", data.display()),
            &format!("--web.listen-address={PROMETHEUS}"),
            "--log.level=warn",
        ])
        .expect("start prometheus");
    // Scraped and settled: the loop publishes every second, Prometheus scrapes every second.
    let deadline = Instant::now() + Duration::from_secs(60);
    let settled = loop {
        let up = prom_value(lab.gateway(), "up{job=\"natrec\"}");
        let ended = prom_value(lab.gateway(), "natrec_translations_ended_total");
        if up == Some(1.0) && ended.is_some_and(|e| e >= FLOWS as f64) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(settled, "Prometheus never scraped natrec's {FLOWS} ends");
    std::thread::sleep(Duration::from_secs(3));
    let scrape_ok = prom_value(lab.gateway(), "up{job=\"natrec\"}");
    assert_eq!(scrape_ok, Some(1.0), "the last scrape succeeded");

    // (PromQL, the same counter in --stats-json.) Counters that change while natrec idles
    // (dumps every second, the end probe's frees of any conntrack entry of the machine) and
    // those the store's close changes (its last seal) are left out.
    let pairs: &[(&str, &str)] = &[
        ("natrec_translations_started_total", "/tracker/starts"),
        ("natrec_translations_ended_total", "/tracker/ends"),
        ("natrec_translations_seeded_total", "/tracker/seeded"),
        ("natrec_translations_end_only_total", "/tracker/end_only"),
        ("natrec_translations_approx_ends_total", "/tracker/approx_ends"),
        ("natrec_open_translations", "/open"),
        ("natrec_events_total{source=\"ebpf\"}", "/kernel/events"),
        ("natrec_events_total{source=\"ctnetlink\"}", "/netlink_destroys"),
        ("natrec_drops_total{reason=\"ringbuf_full\"}", "/kernel/ringbuf_full"),
        ("natrec_drops_total{reason=\"seen_map_full\"}", "/kernel/seen_full"),
        ("natrec_drops_total{reason=\"kernel_read_error\"}", "/kernel/read_errors"),
        ("natrec_drops_total{reason=\"netlink_enobufs\"}", "/netlink_enobufs"),
        ("natrec_drops_total{reason=\"malformed_event\"}", "/malformed_events"),
        ("natrec_drops_total{reason=\"duplicate_start\"}", "/tracker/duplicate_starts"),
        ("natrec_drops_total{reason=\"store_lost\"}", "/store/lost_events"),
        ("natrec_kernel_end_events_total", "/kernel/end_events"),
        ("natrec_ringbuf_size_bytes", "/ringbuf_bytes"),
        ("natrec_ringbuf_read_max_bytes", "/ringbuf_read_max_bytes"),
        ("natrec_store_events_appended_total", "/store/appended"),
    ];
    let scraped: Vec<Option<f64>> =
        pairs.iter().map(|(q, _)| prom_value(lab.gateway(), q)).collect();
    let runs_scraped: Vec<(&str, Option<f64>)> =
        ["natrec_wan_egress", "natrec_lan_egress", "natrec_ct_free"]
            .into_iter()
            .map(|p| {
                let q = format!("natrec_bpf_program_runs_total{{program=\"{p}\"}}");
                (p, prom_value(lab.gateway(), &q))
            })
            .collect();
    let (_, stderr) = natrec.stop().expect("natrec stops");
    drop(prometheus);
    let stats = recorder_proc::stats_json(&stderr).expect("--stats-json");
    let mut wrong = Vec::new();
    for ((promql, pointer), got) in pairs.iter().zip(&scraped) {
        let want = stats.pointer(pointer).and_then(serde_json::Value::as_f64);
        if want.is_none() || *got != want {
            wrong
                .push(format!("{promql}: Prometheus has {got:?}, --stats-json {pointer} {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "disagreements:\n{}\nstats: {stats}", wrong.join("\n"));
    assert_eq!(stats["tracker"]["starts"].as_u64(), Some(FLOWS as u64), "{stats}");
    assert!(stats["ringbuf_read_max_bytes"].as_u64().is_some_and(|b| b > 0), "{stats}");

    // --program-stats: each program's runs and their cost, in both. Every flow's packets passed
    // the WAN classifier, its replies the LAN one; the end probe ran at least once per flow.
    let programs = stats["programs"].as_array().expect("--program-stats: programs");
    for (program, at_least) in
        [("natrec_wan_egress", FLOWS), ("natrec_lan_egress", FLOWS), ("natrec_ct_free", FLOWS)]
    {
        let p = programs
            .iter()
            .find(|p| p["program"] == program)
            .unwrap_or_else(|| panic!("no {program} in {programs:?}"));
        let runs = p["runs"].as_u64().expect("runs");
        assert!(runs >= at_least as u64, "{program}: {runs} runs, at least {at_least}: {p}");
        assert!(p["ns_per_run"].as_u64().is_some_and(|ns| ns > 0), "{program} timed: {p}");
        let scraped = runs_scraped.iter().find(|(n, _)| *n == program).and_then(|(_, v)| *v);
        assert!(
            scraped.is_some_and(|v| v >= at_least as f64 && v <= runs as f64),
            "{program}: Prometheus has {scraped:?} runs, --stats-json {runs} at exit"
        );
    }
}
