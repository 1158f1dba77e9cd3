//! `natrec check-config`: reads the config file as `record` would, checks every setting, and
//! prints the settings in effect.
use std::path::PathBuf;
use std::process::ExitCode;

use recorder::config::ConfigFile;

use super::record;

/// Check the config file (and any flags or NATREC_* variables given with it) the way `natrec
/// record` reads it. Exit status: 0 valid, 2 invalid.
#[derive(Debug, clap::Args)]
#[group(skip)]
pub struct Args {
    /// Print the settings in effect, as a config file.
    #[arg(long)]
    dump: bool,
    #[command(flatten)]
    record: record::Args,
}

pub fn run(
    args: Args,
    file: ConfigFile,
    path: Option<PathBuf>,
    matches: &clap::ArgMatches,
) -> anyhow::Result<ExitCode> {
    let (record, store) = record::settings(&args.record, &file, matches)?;
    record.to_record_config(&store)?;
    match &path {
        Some(p) => eprintln!("{}: valid", p.display()),
        None => eprintln!(
            "no config file (none given, and {} does not exist): built-in defaults",
            recorder::config::DEFAULT_PATH
        ),
    }
    if args.dump {
        print!("{}", ConfigFile { log: file.log, record, store }.to_toml());
    }
    Ok(ExitCode::SUCCESS)
}
