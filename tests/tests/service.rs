//! natrec as a systemd service. The unit in `dist/` passes `systemd-analyze verify`,
//! its exposure (`systemd-analyze security --offline=yes`) is at most 2.5, it grants exactly the
//! capabilities natrec checks for; and `natrec record` speaks the notify protocol the unit's
//! `Type=notify` and `WatchdogSec=` rely on (systemd is not PID 1 here, so the test stands in
//! for it with a socket of its own).

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use natrec_tests::gateway::{GatewayLab, LabSpec};
use natrec_tests::lab::{self, TempDir};
use natrec_tests::recorder_proc::{self, NatrecRecord};
use recorder::capture::privilege;

const UNIT: &str = include_str!("../../dist/natrec.service");

/// The unit's values of `key`, every line of it, in order.
fn values<'a>(key: &str) -> Vec<&'a str> {
    UNIT.lines().filter_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('='))).collect()
}

/// `systemd-analyze ARGS… UNIT` on a copy of the unit whose ExecStart runs the natrec under
/// test (verify checks that the binary exists), in a temporary directory.
fn analyze(args: &[&str]) -> std::process::Output {
    let found = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "these tests need systemd-analyze (Debian package systemd; `cargo xtask setup` installs it)"
    );
    assert_eq!(
        values("ExecStart"),
        ["/usr/bin/natrec record"],
        "the unit runs the packaged binary"
    );
    let bin = recorder_proc::natrec_bin().expect("natrec binary");
    let dir = TempDir::new("unit").expect("temp dir");
    let unit = dir.path().join("natrec.service");
    std::fs::write(&unit, UNIT.replace("/usr/bin/natrec", &bin.display().to_string()))
        .expect("write the unit");
    Command::new("systemd-analyze").args(args).arg(&unit).output().expect("run systemd-analyze")
}

#[test]
fn the_unit_verifies_clean() {
    // The man pages it names are installed by the package (`cargo xtask deb`), not here.
    let out = analyze(&["verify", "--man=no"]);
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}

#[test]
fn the_units_exposure_is_at_most_2_5() {
    let out = analyze(&["security", "--offline=yes"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let level = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for natrec.service: "))
        .and_then(|(_, v)| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| {
            panic!("no exposure level in: {text}{}", String::from_utf8_lossy(&out.stderr))
        });
    assert!(level <= 2.5, "exposure {level}:\n{text}");
}

#[test]
fn the_unit_grants_exactly_the_capabilities_natrec_checks_for_and_no_more() {
    let needed: Vec<&str> = privilege::NEEDED.iter().map(|c| c.name).collect();
    for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        let granted: Vec<&str> = values(key).iter().flat_map(|v| v.split_whitespace()).collect();
        assert_eq!(granted, needed, "{key}");
    }
    assert_eq!(values("User"), ["natrec"]);
    assert_eq!(values("Group"), ["natrec"]);
    assert_eq!(values("Type"), ["notify"]);
    assert_eq!(values("ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    let filter = values("SystemCallFilter").join(" ");
    for call in ["@system-service", "bpf", "perf_event_open"] {
        assert!(filter.split_whitespace().any(|c| c == call), "SystemCallFilter lacks {call}");
    }
    let families = values("RestrictAddressFamilies").join(" ");
    assert!(families.split_whitespace().any(|f| f == "AF_NETLINK"), "{families}");
    for breaks_bpf in ["PrivateNetwork", "PrivateUsers"] {
        assert!(values(breaks_bpf).is_empty(), "{breaks_bpf}= breaks BPF and tc");
    }
}

/// The notify socket's messages, each with when it came.
fn receive_until(sock: &UnixDatagram, until: Instant, got: &mut Vec<(Instant, String)>) {
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        match sock.recv(&mut buf) {
            Ok(n) => got.push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("reading the notify socket: {e}"),
        }
    }
}

/// A notify socket in `dir`, as systemd gives a `Type=notify` service, and the wrapper that runs
/// the natrec under test with it (`env NOTIFY_SOCKET=… VARS… natrec`).
fn notify_socket(dir: &TempDir, vars: &[String]) -> (UnixDatagram, Vec<String>) {
    let path: PathBuf = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
    let bin = recorder_proc::natrec_bin().expect("natrec binary");
    let mut wrapper = vec!["env".to_owned(), format!("NOTIFY_SOCKET={}", path.display())];
    wrapper.extend_from_slice(vars);
    wrapper.push(bin.display().to_string());
    (sock, wrapper)
}

#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn natrec_record_notifies_ready_pets_the_watchdog_and_says_stopping() {
    lab::ensure_root_capabilities().expect("lab capabilities");
    let lab =
        GatewayLab::build(LabSpec { prefix: "sdn".into(), ..LabSpec::default() }).expect("lab");
    let dir = TempDir::new("notify").expect("temp dir");
    let watchdog = Duration::from_millis(600);
    let (sock, wrapper) = notify_socket(&dir, &[format!("WATCHDOG_USEC={}", watchdog.as_micros())]);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let jsonl = dir.path().join("events.jsonl");
    let mut got = Vec::new();
    let natrec = NatrecRecord::start_wrapped(&lab, &wrapper, &jsonl, &[]).expect("natrec record");
    let ready_at = Instant::now();
    receive_until(&sock, ready_at + Duration::from_secs(3), &mut got);
    natrec.stop().expect("natrec stops on SIGTERM");
    receive_until(&sock, Instant::now() + Duration::from_millis(300), &mut got);

    let lines = |m: &str| m.lines().map(str::to_owned).collect::<Vec<_>>();
    let first = lines(&got.first().expect("a notification").1);
    assert!(first.contains(&"READY=1".to_owned()), "the first notification is READY: {got:?}");
    let status = format!("STATUS=recording on {}", lab.wan_if());
    assert!(first.iter().any(|l| l.starts_with(&status)), "{first:?}");
    let pets: Vec<Instant> = got
        .iter()
        .filter(|(_, m)| lines(m).contains(&"WATCHDOG=1".to_owned()))
        .map(|g| g.0)
        .collect();
    // Three seconds at half of 600 ms: about ten; the loop's 100 ms tick may add a little.
    assert!(pets.len() >= 6, "{} watchdog pets in 3 s: {got:?}", pets.len());
    for w in pets.windows(2) {
        assert!(
            w[1] - w[0] < watchdog,
            "a gap of {:?} between pets would trip the watchdog",
            w[1] - w[0]
        );
    }
    let last = lines(&got.last().expect("notifications").1);
    assert!(last.contains(&"STOPPING=1".to_owned()), "the last notification is STOPPING: {got:?}");
    assert!(got.iter().filter(|(_, m)| m.contains("READY=1")).count() == 1, "READY once: {got:?}");
}

/// How many sealed segments `dir` has.
fn sealed(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "seg")).count())
        .unwrap_or(0)
}

#[test]
#[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
fn sighup_reloads_the_live_settings_and_refuses_the_others_by_name() {
    lab::ensure_root_capabilities().expect("lab capabilities");
    let lab =
        GatewayLab::build(LabSpec { prefix: "hup".into(), ..LabSpec::default() }).expect("lab");
    let dir = TempDir::new("hup").expect("temp dir");
    let (sock, wrapper) = notify_socket(&dir, &[]);
    let config = dir.path().join("natrec.toml");
    let store = dir.path().join("store");
    let write = |text: &str| std::fs::write(&config, text).expect("write the config");
    let settings = |filter: &str, stats: &str, rotate: &str, extra: &str| {
        format!(
            "[log]\nfilter = \"{filter}\"\n[record]\nstats_interval = \"{stats}\"\n{extra}\n\
             [store]\ndir = \"{}\"\nrotate_age = \"{rotate}\"\n",
            store.display()
        )
    };
    write(&settings("info", "60s", "1h", ""));
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let config_arg = config.display().to_string();
    let jsonl = dir.path().join("events.jsonl");
    let natrec = NatrecRecord::start_wrapped(&lab, &wrapper, &jsonl, &["--config", &config_arg])
        .expect("natrec record");
    let mut got = Vec::new();
    receive_until(&sock, Instant::now() + Duration::from_millis(300), &mut got);
    assert!(got.iter().any(|(_, m)| m.contains("READY=1")), "{got:?}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sealed(&store), 0, "nothing sealed within the first hour's age");

    // The live keys: taken at once.
    write(&settings("debug", "1s", "2s", ""));
    let from = natrec.stderr().len();
    got.clear();
    natrec.signal(libc::SIGHUP).expect("SIGHUP");
    let line = natrec.wait_for_log(from, "SIGHUP:", Duration::from_secs(5)).expect("reloaded");
    assert!(
        line.contains("SIGHUP: reloaded")
            && line.contains("changed=log.filter, record.stats_interval, store.rotate_age"),
        "{line}"
    );
    receive_until(&sock, Instant::now() + Duration::from_millis(300), &mut got);
    let reloading = got.iter().position(|(_, m)| m.contains("RELOADING=1"));
    let ready = got.iter().position(|(_, m)| m.contains("READY=1"));
    assert!(reloading.is_some() && ready > reloading, "RELOADING=1 then READY=1: {got:?}");
    let sealed_in = Instant::now();
    while sealed(&store) == 0 && sealed_in.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(sealed(&store) > 0, "the 2 s rotate_age seals a segment");
    natrec.wait_for_log(from, "counters", Duration::from_secs(3)).expect("stats every second");
    natrec.wait_for_log(from, " DEBUG ", Duration::from_secs(3)).expect("the debug filter");

    // Keys that need a restart: refused by name, nothing taken, natrec goes on.
    write(&settings("info", "1s", "1h", "ringbuf_size = \"32MiB\"\nends = \"ctnetlink\""));
    let from = natrec.stderr().len();
    natrec.signal(libc::SIGHUP).expect("SIGHUP");
    let line = natrec.wait_for_log(from, "SIGHUP:", Duration::from_secs(5)).expect("refused");
    assert!(
        line.contains("SIGHUP: record.ends, record.ringbuf_size cannot change while natrec runs")
            && line.contains("natrec goes on with the settings it had"),
        "{line}"
    );
    // A broken file: the same, with where it is broken.
    write("[store]\nrotate_age = \n");
    let from = natrec.stderr().len();
    natrec.signal(libc::SIGHUP).expect("SIGHUP");
    let line = natrec.wait_for_log(from, "SIGHUP:", Duration::from_secs(5)).expect("refused");
    assert!(line.contains("line 2") && line.contains("goes on with the settings it had"), "{line}");
    // Still the reloaded settings: debug lines go on, and so does recording.
    let from = natrec.stderr().len();
    natrec.wait_for_log(from, " DEBUG ", Duration::from_secs(3)).expect("still debug");
    let (_, stderr) = natrec.stop().expect("natrec stops on SIGTERM");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
