//! The Debian package. `cargo xtask test` builds it (`cargo xtask deb`) and names it in
//! `NATREC_DEB`; this test installs it with `dpkg -i`, checks what it put where, runs the
//! installed binary in the lab with the installed unit's own ExecStart line as the unit's user
//! with the unit's capabilities (systemd is not PID 1 here: setpriv stands in for it, and the
//! test makes the StateDirectory as systemd would), and purges the package. Set
//! `NATREC_TESTS_NO_PACKAGE=1` to skip it (it changes the machine's installed packages).

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;

use natrec_tests::gateway::{GatewayLab, LabSpec};
use natrec_tests::lab::{self, TempDir};
use natrec_tests::recorder_proc::NatrecRecord;
use natrec_tests::traffic::EchoServer;

const UNIT: &str = "/usr/lib/systemd/system/natrec.service";
const STATE: &str = "/var/lib/natrec";
const FLOWS: usize = 5;

fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn ok(args: &[&str]) -> String {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Purges the package and removes what installing and running it made, even on failure.
struct Installed {
    user_existed: bool,
    state_existed: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = sh(&["dpkg", "--purge", "natrec"]);
        if !self.user_existed {
            let _ = sh(&["userdel", "natrec"]);
            let _ = sh(&["groupdel", "natrec"]);
        }
        if !self.state_existed {
            let _ = std::fs::remove_dir_all(STATE);
        }
    }
}

/// The unit's value of `key`.
fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("{key}= missing from the installed unit"))
}

#[test]
#[cfg_attr(
    any(natrec_no_root, natrec_no_package),
    ignore = "NATREC_TESTS_NO_ROOT=1 or NATREC_TESTS_NO_PACKAGE=1"
)]
fn the_package_installs_runs_as_its_unit_would_and_purges() {
    lab::ensure_root_capabilities().expect("lab capabilities");
    let deb = std::env::var("NATREC_DEB").expect(
        "NATREC_DEB names the .deb to test (`cargo xtask test` builds it with `cargo xtask deb`); \
         NATREC_TESTS_NO_PACKAGE=1 skips this test",
    );
    assert!(
        !Path::new("/usr/bin/natrec").exists() && !sh(&["dpkg", "-s", "natrec"]).status.success(),
        "natrec is installed on this machine already: this test installs and purges it"
    );
    let guard = Installed {
        user_existed: sh(&["getent", "passwd", "natrec"]).status.success(),
        state_existed: Path::new(STATE).exists(),
    };
    ok(&["dpkg", "-i", &deb]);

    // What it installed.
    let passwd = ok(&["getent", "passwd", "natrec"]);
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    let (uid, gid): (u32, u32) = (fields[2].parse().expect("uid"), fields[3].parse().expect("gid"));
    assert_ne!(uid, 0, "natrec is a system user, not root");
    let conffiles = ok(&["dpkg-query", "-W", "-f=${Conffiles}", "natrec"]);
    assert!(conffiles.contains("/etc/natrec/natrec.toml"), "{conffiles}");
    for f in [
        "/usr/share/man/man1/natrec.1.gz",
        "/usr/share/man/man1/natrec-record.1.gz",
        "/usr/share/man/man5/natrec.toml.5.gz",
        "/usr/share/bash-completion/completions/natrec",
        "/usr/share/zsh/vendor-completions/_natrec",
        "/usr/share/fish/vendor_completions.d/natrec.fish",
        "/usr/lib/sysusers.d/natrec.conf",
    ] {
        assert!(Path::new(f).is_file(), "{f} not installed");
    }
    let verify = sh(&["systemd-analyze", "verify", UNIT]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(verify.status.success() && said.trim().is_empty(), "verify {UNIT}: {said}");

    // The unit's command line, user and capabilities.
    let unit = std::fs::read_to_string(UNIT).expect("read the unit");
    assert_eq!(unit_value(&unit, "User"), "natrec");
    let caps: Vec<String> = unit_value(&unit, "AmbientCapabilities")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let caps = caps.join(",");
    // systemd makes the StateDirectory, owned by the unit's user, with its mode.
    std::fs::create_dir_all(STATE).expect("state directory");
    std::os::unix::fs::chown(STATE, Some(uid), Some(gid)).expect("chown");
    let mode = u32::from_str_radix(unit_value(&unit, "StateDirectoryMode"), 8).expect("mode");
    std::fs::set_permissions(STATE, std::fs::Permissions::from_mode(mode)).expect("chmod");

    let lab =
        GatewayLab::build(LabSpec { prefix: "deb".into(), ..LabSpec::default() }).expect("lab");
    let out = TempDir::new("deb").expect("temp dir");
    std::os::unix::fs::chown(out.path(), Some(uid), Some(gid)).expect("chown");
    let jsonl = out.path().join("events.jsonl");
    let lans = lab.lan_ifs().join(",");
    let env = [
        format!("STATE_DIRECTORY={STATE}"),
        format!("NATREC_WAN={}", lab.wan_if()),
        format!("NATREC_LAN={lans}"),
        format!("NATREC_JSONL={}", jsonl.display()),
        "NATREC_REAP_INTERVAL=1s".to_owned(),
    ];
    let mut line: Vec<String> = vec![
        "setpriv".into(),
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        "--clear-groups".into(),
        format!("--inh-caps=-all,{caps}"),
        format!("--ambient-caps=-all,{caps}"),
        format!("--bounding-set=-all,{caps}"),
        "--".into(),
        "env".into(),
    ];
    line.extend(env);
    line.extend(unit_value(&unit, "ExecStart").split_whitespace().map(str::to_owned));
    let line: Vec<&str> = line.iter().map(String::as_str).collect();
    let natrec =
        NatrecRecord::start_command(lab.gateway(), &line, &jsonl).expect("the unit's line");

    let server = lab.servers()[0];
    let _echo =
        EchoServer::udp(lab.outside(), SocketAddr::new(IpAddr::V4(server), 7)).expect("udp echo");
    natrec.record_udp_flows(&lab, server, FLOWS).expect("flows recorded by the installed natrec");
    natrec.stop().expect("natrec stops on SIGTERM");

    // The store is the unit's: the user's files, 0640, and whole.
    let mut segments = 0;
    for ent in std::fs::read_dir(STATE).expect("list the store").flatten() {
        let m = ent.metadata().expect("metadata");
        assert_eq!((m.uid(), m.mode() & 0o777), (uid, 0o640), "{}", ent.path().display());
        segments += 1;
    }
    assert!(segments > 0, "nothing in {STATE}");
    ok(&["/usr/bin/natrec", "verify", STATE]);

    ok(&["dpkg", "--purge", "natrec"]);
    assert!(!Path::new("/usr/bin/natrec").exists(), "purged");
    assert!(!Path::new("/etc/natrec/natrec.toml").exists(), "the conffile goes with a purge");
    assert!(Path::new(STATE).exists(), "the store outlives the package");
    drop(guard);
}
