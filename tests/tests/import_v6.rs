//! `natrec import` reads the IPv6 lines that real `conntrack -E -o timestamp,extended` and
//! ulogd2 (NFCT → IP2STR → JSON) write on a NAT66 gateway: every translation the gateway's
//! conntrack table had — `snat` to the pool, a prefix translation, ICMPv6 echo, a port forward —
//! is in the store, with its endpoints exactly, and a start and end around the flow.

use std::path::Path;
use std::process::Command;

use natrec_tests::bench::recorders::{self, Recorder};
use natrec_tests::conntrack::conntrack_flush;
use natrec_tests::gateway::{GatewayLab, LabSpec, OUTSIDE_ROUTER6};
use natrec_tests::lab::{self, TempDir};
use natrec_tests::recorded::{Key, ct_key, ct_translation_of, key_of};
use natrec_tests::recorder_proc::natrec_bin;
use natrec_tests::traffic::{self, EchoServer, FlowDone, sa};
use recorder::lookup::{Filter, TranslationSource as _};
use recorder::model::{Flags, Kind, Translation};

#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn conntrack_e_and_ulogd2_ipv6_logs_import_to_what_the_gateway_translated() {
    lab::ensure_root_capabilities().expect("lab capabilities");
    for r in [Recorder::ConntrackE, Recorder::UlogdJson] {
        r.check_installed().expect("the peer the test imports from");
    }
    let lab = GatewayLab::build(LabSpec {
        prefix: "imp6".into(),
        pool_size: 2,
        ipv6: true,
        prefix_translation: true,
        ..LabSpec::default()
    })
    .expect("dual-stack lab");
    let dir = TempDir::new("imp6").expect("temp dir");
    let servers = lab.servers6();
    let _echo: Vec<EchoServer> = servers
        .iter()
        .flat_map(|s| {
            [
                EchoServer::tcp(lab.outside(), sa(*s, 7)).expect("tcp echo"),
                EchoServer::udp(lab.outside(), sa(*s, 7)).expect("udp echo"),
            ]
        })
        .collect();
    let (out_tcp, in_tcp) = lab.dnat_tcp6().expect("tcp forward");
    let h = lab.hosts();
    let _inside = EchoServer::tcp(h[0].ns(), in_tcp).expect("inside tcp server");

    let mut running = Vec::new();
    for r in [Recorder::ConntrackE, Recorder::UlogdJson] {
        let rdir = dir.path().join(r.name());
        std::fs::create_dir_all(&rdir).expect("recorder dir");
        running.push(recorders::start(r, &lab, &rdir).expect("start the peer"));
    }

    let a0 = h[0].addr6().expect("v6");
    let a1 = h[1].addr6().expect("v6");
    let npt = lab.npt_host().expect("the prefix-translated host");
    let npt_addr = npt.addr6().expect("v6");
    let mut flows: Vec<(FlowDone, Kind)> = vec![
        (
            traffic::tcp_exchange(h[0].ns(), sa(a0, 0), sa(servers[0], 7), 2).expect("tcp"),
            Kind::Snat,
        ),
        (
            traffic::udp_exchange(h[1].ns(), sa(a1, 0), sa(servers[1], 7), 2).expect("udp"),
            Kind::Snat,
        ),
        (traffic::ping(h[1].ns(), a1, 4242, servers[0], 2).expect("ping6"), Kind::Snat),
        (
            traffic::udp_exchange(npt.ns(), sa(npt_addr, 45678), sa(servers[0], 7), 1)
                .expect("npt udp"),
            Kind::Snat,
        ),
    ];
    flows.push((
        traffic::tcp_exchange(lab.outside(), sa(OUTSIDE_ROUTER6, 0), out_tcp, 2).expect("dnat"),
        Kind::Dnat,
    ));
    let keys: Vec<Key> =
        flows.iter().map(|(done, kind)| ct_key(&ct_translation_of(&lab, done, *kind))).collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    conntrack_flush(lab.gateway()).expect("conntrack -F: every entry ends");
    std::thread::sleep(std::time::Duration::from_millis(500));

    for (running, format) in running.into_iter().zip(["conntrack", "ulogd-json"]) {
        let log = running.output_path();
        let name = running.recorder().name();
        running.stop().expect("stop the peer");
        let text = std::fs::read_to_string(&log).expect("the peer's log");
        assert!(text.contains("2001:db8:100::"), "{name} logged the prefix translation:\n{text}");
        let store = dir.path().join(format!("store-{name}"));
        let stored = import(&log, format, &store);
        for (key, (done, _)) in keys.iter().zip(&flows) {
            // ulogd2's NFCT exports no ICMP echo identifier (IPv4 or IPv6): there the ports
            // are 0.
            let mut key = *key;
            if format == "ulogd-json" && key.1.is_icmp() {
                key.2.set_port(0);
                key.3.set_port(0);
            }
            let found: Vec<&Translation> = stored.iter().filter(|t| key_of(t) == key).collect();
            assert_eq!(found.len(), 1, "{name}: one translation for {key:?} in {stored:#?}");
            let t = found[0];
            assert_eq!(t.flags, Flags::empty(), "{name}: a NEW and a DESTROY line, paired: {t:?}");
            let end = t.end.expect("an end");
            // The peers print microseconds; the flow's own times are nanoseconds.
            let us = jiff::SignedDuration::from_micros(1);
            assert!(t.start <= done.first_reply + us, "{name}: start after the reply: {t:?}");
            assert!(end + us >= done.last_packet, "{name}: end before the last packet: {t:?}");
        }
        assert_eq!(stored.len(), keys.len(), "{name}: nothing else was translated: {stored:#?}");
    }
}

/// `natrec import --format FORMAT LOG --dir STORE`, then every translation of the store.
fn import(log: &Path, format: &str, store: &Path) -> Vec<Translation> {
    let out = Command::new(natrec_bin().expect("natrec"))
        .args(["import", "--json", "--format", format])
        .arg(log)
        .arg("--dir")
        .arg(store)
        .output()
        .expect("natrec import");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "natrec import --format {format}: {stderr}");
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("natrec import --json's summary");
    assert_eq!(summary["malformed"], 0, "every line of the {format} log read: {summary} {stderr}");
    let reader = recorder::store::Reader::open(store).expect("the imported store");
    let mut all = Vec::new();
    reader.scan(&Filter::all(), &mut |t| all.push(t.clone())).expect("scan");
    all
}
