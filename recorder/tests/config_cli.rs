//! The config file as `natrec` reads it: `--config`, `NATREC_CONFIG`, `NATREC_*` and flags in
//! their order of precedence, `check-config --dump`, and errors that say where a file is wrong.
mod common;

use std::path::Path;
use std::process::Output;

use common::{natrec, output};

/// Runs natrec (see `common::natrec`) with `env` added.
fn natrec_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    output(natrec(args).envs(env.iter().copied()), None)
}

fn dump(args: &[&str], env: &[(&str, &str)]) -> toml::Table {
    let out = natrec_with(&[&["check-config", "--dump"], args].concat(), env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check-config failed: {stderr}");
    toml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("--dump prints TOML")
}

fn write(dir: &Path, text: &str) -> String {
    let path = dir.join("natrec.toml");
    std::fs::write(&path, text).expect("write config");
    path.to_str().expect("utf-8 path").to_owned()
}

#[test]
fn flags_beat_the_environment_which_beats_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "[log]\nfilter = \"warn\"\n[record]\nwan = [\"eth0\"]\nreap_interval = \"10s\"\n\
         stats_interval = \"5s\"\nends = \"ctnetlink\"\n[store]\ndir = \"/srv/natrec\"\n\
         retain_days = 30\n",
    );
    let env = [("NATREC_CONFIG", file.as_str()), ("NATREC_REAP_INTERVAL", "20s")];
    let t = dump(&["--stats-interval", "2m"], &env);
    let (rec, store) = (&t["record"], &t["store"]);
    assert_eq!(t["log"]["filter"].as_str(), Some("warn"), "the file's");
    assert_eq!(rec["wan"].as_array().map(Vec::len), Some(1));
    assert_eq!(rec["reap_interval"].as_str(), Some("20s"), "the environment beats the file");
    assert_eq!(rec["stats_interval"].as_str(), Some("2m"), "the flag beats the file");
    assert_eq!(rec["ends"].as_str(), Some("ctnetlink"));
    assert_eq!(store["flush_interval"].as_str(), Some("1s"), "a built-in default");
    assert!(rec.get("ringbuf_size").is_none(), "unset: sized from the gateway at start-up");
    assert_eq!(store["dir"].as_str(), Some("/srv/natrec"));
    assert_eq!(store["retain_days"].as_integer(), Some(30));

    let t = dump(&["--config", &file, "--reap-interval", "1m"], &[("NATREC_REAP_INTERVAL", "20s")]);
    assert_eq!(t["record"]["reap_interval"].as_str(), Some("1m"), "the flag beats the environment");
    let t = dump(&["--config", &file], &[("NATREC_WAN", "ppp0,ppp1"), ("NATREC_LOG", "debug")]);
    assert_eq!(t["record"]["wan"].as_array().map(Vec::len), Some(2), "a list from the environment");
    assert_eq!(t["log"]["filter"].as_str(), Some("debug"));
}

#[test]
fn the_example_file_is_valid_once_it_names_a_wan() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/natrec.toml");
    let out = natrec_with(&["check-config", "--config", example], &[]);
    assert_eq!(out.status.code(), Some(2), "no WAN: record could not run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no WAN interface"));
    let t = dump(&["--config", example, "--wan", "eth0"], &[]);
    assert_eq!(t["store"]["rotate_age"].as_str(), Some("1h"));
}

#[test]
fn errors_name_the_file_the_line_and_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "[record]\nwan = [\"eth0\"]\n\n[store]\nretain_dayz = 3\n");
    for cmd in ["check-config", "record"] {
        let out = natrec_with(&[cmd, "--config", &file], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(err.contains(&file) && err.contains("line 5, column 1"), "{cmd}: {err}");
        assert!(err.contains("unknown field `retain_dayz`"), "{cmd}: {err}");
    }
    let missing = dir.path().join("absent.toml");
    let out = natrec_with(&["check-config", "--config", missing.to_str().expect("utf-8")], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("absent.toml") && err.contains("No such file"), "{err}");
    let out =
        natrec_with(&["record", "--config", &file, "--wan", "x", "--ringbuf-size", "1000"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(2) && err.contains("unknown field"), "the file first: {err}");
    // Commands that only read the store do not read the config file.
    let out =
        natrec_with(&["segments", "--config", &file, dir.path().to_str().expect("utf-8")], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() != Some(2) && !err.contains("retain_dayz"), "{err}");
}

#[test]
fn without_a_dir_the_store_goes_to_the_units_state_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "[record]\nwan = [\"eth0\"]\n");
    let env = [("NATREC_CONFIG", file.as_str()), ("STATE_DIRECTORY", "/var/lib/natrec:/x")];
    let t = dump(&[], &env);
    assert_eq!(t["store"]["dir"].as_str(), Some("/var/lib/natrec"), "the first state directory");
    let t = dump(&["--dir", "/srv/natrec"], &env);
    assert_eq!(t["store"]["dir"].as_str(), Some("/srv/natrec"), "a dir given wins");
    let t = dump(&[], &[("NATREC_CONFIG", file.as_str())]);
    assert!(t["store"].get("dir").is_none(), "neither: no store");
}
