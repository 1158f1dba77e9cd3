//! The packet-capture ground-truth harness as CI runs it (`cargo xtask test`): every packet that
//! crossed the lab gateway's outside interface must be attributed by natrec's query API to
//! exactly the inside endpoint the inside capture shows. The report is printed and kept as
//! `<target>/harness-report.txt`.
//!
//! One lab run is shared by the tests of this file (the first test to need it runs it).
//!
//! Needs root, network namespaces, nftables, tcpdump and the natrec binary (`$NATREC_BIN` or
//! `target/debug/natrec`); fails loudly without them unless `NATREC_TESTS_NO_ROOT=1`.

use std::collections::HashSet;
use std::sync::OnceLock;

use jiff::Timestamp;
use natrec_tests::harness::run::{
    Evidence, HarnessOptions, HarnessReport, STORE_DIR, run, target_dir,
};
use natrec_tests::harness::verify::{Outcome, QueryMode, Verdict, verify};
use natrec_tests::lab::ensure_root_capabilities;
use recorder::lookup::{Filter, TranslationSource as _};
use recorder::model::{Kind, Translation};
use recorder::store::Reader;

/// Everything natrec stored, merged, as a plain list.
fn all_translations(reader: &Reader) -> Result<Vec<Translation>, String> {
    let filter = Filter {
        from: Timestamp::MIN,
        to: Timestamp::MAX,
        proto: None,
        outside: None,
        inside: None,
        remote: None,
    };
    let mut all = Vec::new();
    let report = reader
        .scan(&filter, &mut |t| all.push(t.clone()))
        .map_err(|e| format!("scanning the store: {e}"))?;
    if !report.damage.is_empty() {
        return Err(format!("the store is damaged: {:?}", report.damage));
    }
    Ok(all)
}

/// What the shared run found.
struct Shared {
    report: HarnessReport,
    text: String,
    /// The same captures checked against every stored translation as a plain list (a full scan
    /// of the store), instead of the store's filtered queries.
    plain: Verdict,
    /// The same captures checked against a deliberately wrong record set.
    tampered: Verdict,
    /// Records of the wrong set whose inside endpoint was swapped.
    swapped: usize,
}

/// The shared run. It runs once; an error is kept and reported by every test.
fn shared() -> &'static Shared {
    static RUN: OnceLock<Result<Shared, String>> = OnceLock::new();
    match RUN.get_or_init(|| {
        ensure_root_capabilities().map_err(|e| e.to_string())?;
        let opts = HarnessOptions {
            // The captures and the store are needed to prove the verifier can fail.
            keep: true,
            // One query per flow: the same verdicts as one per packet, in a debug build's time.
            query_mode: QueryMode::PerFlow,
            ..HarnessOptions::default()
        };
        let report = run(&opts, &mut |m| eprintln!("harness: {m}")).map_err(|e| e.to_string())?;
        let text = report.to_string();
        println!("{text}");
        let path = target_dir().join("harness-report.txt");
        std::fs::write(&path, &text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        eprintln!("harness: report written to {}", path.display());
        let (plain, tampered, swapped) = recheck(&report)?;
        std::fs::remove_dir_all(&opts.work_dir)
            .map_err(|e| format!("removing {}: {e}", opts.work_dir.display()))?;
        Ok(Shared { report, text, plain, tampered, swapped })
    }) {
        Ok(s) => s,
        Err(e) => panic!("the harness could not run: {e}"),
    }
}

/// Checks the run's captures again, against the store's translations as a plain list and
/// against a deliberately wrong copy of them (every tenth removed, every tenth SNAT record given
/// another host's inside endpoint).
fn recheck(report: &HarnessReport) -> Result<(Verdict, Verdict, usize), String> {
    let dir = &report.options.work_dir;
    let mode = report.options.query_mode;
    let evidence = Evidence::load(dir, report.pool.clone()).map_err(|e| e.to_string())?;
    let reader = Reader::open(&dir.join(STORE_DIR)).map_err(|e| e.to_string())?;
    let honest = all_translations(&reader)?;
    let plain = verify(honest.as_slice(), &evidence.pairing, mode).map_err(|e| e.to_string())?;
    let mut tampered = Vec::new();
    let mut swapped = 0;
    for (i, t) in honest.iter().enumerate() {
        match i % 10 {
            // Removed: its packets must come out missing.
            3 => {}
            // Another host's inside endpoint: its packets must come out wrong.
            7 if t.kind == Kind::Snat => {
                if let Some(other) =
                    honest.iter().map(|o| o.inside).find(|ins| ins.ip() != t.inside.ip())
                {
                    let mut bad = t.clone();
                    bad.inside = other;
                    tampered.push(bad);
                    swapped += 1;
                }
            }
            _ => tampered.push(t.clone()),
        }
    }
    let tampered =
        verify(tampered.as_slice(), &evidence.pairing, mode).map_err(|e| e.to_string())?;
    Ok((plain, tampered, swapped))
}

fn counts(v: &Verdict) -> (u64, u64, u64, u64, u64) {
    (v.checked, v.correct, v.wrong, v.missing, v.ambiguous)
}

#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn the_harness_runs_the_promised_workload_and_its_verifier_can_fail() {
    let Shared { report, text, tampered, swapped, .. } = shared();
    let v = &report.verdict;
    let c = &v.coverage;

    // The verifier can fail: the tampered record set gives wrong and missing answers.
    println!(
        "tampered record set ({swapped} inside endpoints swapped, every tenth record removed): \
         {} checked, {} correct, {} wrong, {} missing",
        tampered.checked, tampered.correct, tampered.wrong, tampered.missing
    );
    assert!(*swapped > 0);
    assert!(!tampered.passed(), "the verifier passed a tampered record set");
    assert!(tampered.wrong > 0 && tampered.missing > 0, "tampering went unnoticed: {tampered:?}");
    let shown: HashSet<Outcome> = tampered.failures.iter().map(|c| c.outcome).collect();
    assert!(shown.contains(&Outcome::Wrong) || shown.contains(&Outcome::Missing));
    assert!(tampered.failures.len() <= 10);

    // Every outside packet was checked.
    assert!(v.checked > 10_000, "only {} packets checked", v.checked);
    assert_eq!(
        v.unpaired, 0,
        "outside packets without an inside twin: the captures are incomplete"
    );
    // Wrong answers here; missing ones and single records in the verdict tests below.
    assert_eq!(v.wrong, 0, "natrec named the wrong inside endpoint:\n{text}");
    assert!(v.damage.is_empty(), "natrec's store is damaged:\n{text}");

    // The workload did what the harness promises.
    assert!(c.flows >= 2000, "only {} flows on the wire", c.flows);
    for proto in ["tcp", "udp", "icmp", "icmpv6"] {
        assert!(
            c.by_proto.get(proto).is_some_and(|n| *n > 100),
            "too few {proto} flows: {:?}",
            c.by_proto
        );
    }
    assert!(c.port_forward_flows > 0, "no port-forward flow was checked");
    // Dual stack: IPv6 packets through NAT66, the prefix translation included, all checked.
    let v6 = &v.ipv6;
    assert!(v6.checked > 3_000, "only {} IPv6 packets checked:\n{text}", v6.checked);
    assert_eq!((v6.wrong, v6.missing), (0, 0), "IPv6 packets misattributed:\n{text}");
    assert!(
        report.prefix_translated_flows > 20,
        "only {} flows through the prefix translation:\n{text}",
        report.prefix_translated_flows
    );
    assert!(c.port_rewrites > 0, "no flow made the gateway rewrite a port");
    assert!(c.shared_outside > 0, "no outside endpoint served several remotes at once");
    assert!(c.reused_outside > 0, "no outside endpoint was reused over time");
    assert!(report.segments > 2, "the store rotated too little: {} segments", report.segments);
    assert_eq!(report.recorder_runs.len(), 2, "natrec was not restarted mid-run");
    let attempted: u64 = report.phases.iter().map(|p| p.ok + p.failed).sum();
    let failed: u64 = report.phases.iter().map(|p| p.failed).sum();
    assert!(
        failed * 100 <= attempted,
        "too many lab flows failed ({failed} of {attempted}): see the report"
    );
    assert!(report.long_flow_errors.is_empty(), "long flows broke: {:?}", report.long_flow_errors);
}

#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn no_outside_packet_is_misattributed_or_missing() {
    let Shared { report, text, plain, .. } = shared();
    assert_eq!(
        counts(plain),
        counts(&report.verdict),
        "the store's filtered queries and a full scan of it answer differently:\n{text}"
    );
    assert!(report.passed(), "natrec misattributed outside packets:\n{text}");
}

#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn every_answer_is_a_single_record() {
    let Shared { report, text, .. } = shared();
    assert!(report.verdict.exact(), "natrec answered with several records:\n{text}");
}
