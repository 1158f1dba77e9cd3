//! `natrec generate DIR` (hidden; `cargo xtask dist` runs it): the man pages of natrec and each
//! subcommand, natrec.toml(5), and the bash, zsh and fish completions, all from the command line
//! and config definitions themselves, so they cannot drift from the code.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::CommandFactory as _;
use recorder::config::{self, LogSettings, RecordSettings, StoreSettings};
use roff::{Roff, bold, italic, roman};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write man/ and completions/.
    dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let man = args.dir.join("man");
    let completions = args.dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let cmd = super::Cli::command();
    clap_mangen::generate_to(cmd.clone(), &man).context("writing the man pages")?;
    let page = config_page();
    let path = man.join("natrec.toml.5");
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish]
    {
        let mut cmd = cmd.clone();
        clap_complete::generate_to(shell, &mut cmd, "natrec", &completions)
            .with_context(|| format!("writing the {shell} completions"))?;
    }
    eprintln!("wrote {} and {}", man.display(), completions.display());
    Ok(ExitCode::SUCCESS)
}

/// natrec.toml(5): every key of every section, with its help, default, variable and flag.
fn config_page() -> String {
    let mut r = Roff::new();
    r.control("TH", ["NATREC.TOML", "5", "", &format!("natrec {}", env!("CARGO_PKG_VERSION"))]);
    r.control("SH", ["NAME"]).text([roman("natrec.toml - configuration of natrec record")]);
    r.control("SH", ["SYNOPSIS"]).text([bold(config::DEFAULT_PATH)]);
    r.control("SH", ["DESCRIPTION"]).text([roman(
        "natrec record and natrec check-config read this TOML file, or the file --config or \
         NATREC_CONFIG names. Every key has a command-line flag of the same name (underscores \
         become dashes) and an environment variable NATREC_KEY. Precedence: built-in defaults \
         < this file < NATREC_* < flags. Unknown keys are refused with their line and column. \
         Durations are written 500ms, 30s, 1m30s, 1h, 2d (an integer is seconds); sizes 64KiB, \
         256MiB, 1G (an integer is bytes). natrec check-config --dump prints the settings in \
         effect.",
    )]);
    let sections = [
        ("log", <LogSettings as clap::Args>::augment_args(clap::Command::new("log"))),
        ("record", <RecordSettings as clap::Args>::augment_args(clap::Command::new("record"))),
        ("store", <StoreSettings as clap::Args>::augment_args(clap::Command::new("store"))),
    ];
    for (section, cmd) in sections {
        r.control("SH", [format!("[{section}]").as_str()]);
        for arg in cmd.get_arguments() {
            let key = arg.get_id().as_str();
            r.control("TP", []);
            let defaults: Vec<String> =
                arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
            let mut head = vec![bold(key)];
            if !defaults.is_empty() {
                head.push(roman(format!(" = {}", defaults.join(","))));
            }
            r.text(head);
            let help = arg.get_long_help().or(arg.get_help()).map(ToString::to_string);
            r.text([roman(help.unwrap_or_default())]);
            let mut also = Vec::new();
            if let Some(flag) = arg.get_long() {
                also.push(format!("--{flag}"));
            }
            if let Some(env) = arg.get_env() {
                also.push(env.to_string_lossy().into_owned());
            }
            if config::LIVE_KEYS.contains(&format!("{section}.{key}").as_str()) {
                also.push("changed by a reload".to_owned());
            }
            r.control("br", []).text([italic(also.join(", "))]);
        }
    }
    r.control("SH", ["RELOAD"]).text([roman(format!(
        "SIGHUP (systemctl reload natrec) reads the file again and takes {} at once. A change to \
         any other key, a file that does not parse or an invalid value is refused by name, and \
         natrec goes on with the settings it had.",
        config::LIVE_KEYS.join(", ")
    ))]);
    r.control("SH", ["FILES"]).text([roman(format!(
        "{}: this file. /var/lib/natrec: the attribution store of the unit (its StateDirectory).",
        config::DEFAULT_PATH
    ))]);
    r.control("SH", ["SEE ALSO"])
        .text([roman("natrec(1), natrec-record(1), natrec-check-config(1)")]);
    r.render()
}

/// The written files, for tests: every page and completion `run` makes under `dir`.
#[cfg(test)]
fn written(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = ["man", "completions"]
        .iter()
        .flat_map(|d| std::fs::read_dir(dir.join(d)).into_iter().flatten().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_has_a_page_and_every_shell_its_completions() {
        let dir = tempfile::tempdir().expect("tempdir");
        run(Args { dir: dir.path().to_owned() }).expect("generate");
        let names = written(dir.path());
        for page in [
            "natrec.1",
            "natrec-record.1",
            "natrec-query.1",
            "natrec-verify.1",
            "natrec-segments.1",
            "natrec-import.1",
            "natrec-check-config.1",
            "natrec.toml.5",
            "natrec.bash",
            "_natrec",
            "natrec.fish",
        ] {
            assert!(names.iter().any(|n| n == page), "{page} missing from {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("generate")), "the hidden command has no page");
        let page = std::fs::read_to_string(dir.path().join("man/natrec.toml.5")).expect("page");
        for key in ["reap_interval", "retain_days", "metrics", "filter"] {
            assert!(page.contains(&format!("\\fB{key}\\fR")), "{key} missing from natrec.toml.5");
        }
    }
}
