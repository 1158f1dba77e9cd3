//! Part 3: bytes per translation on disk, natrec's segments against the text and JSON logs of
//! the other tools, raw and after `zstd -19` and `xz -9`, on the same translations.
//!
//! The translations come from the synthetic ISP workload (`natrec-gen`, seeded): it renders the
//! same stream as natrec JSON Lines, as `conntrack -E -o timestamp,extended` text and as ulogd2
//! JSON; `natrec import` writes the JSON Lines into a segment store with natrec's writer (the one
//! `natrec record` uses online). The capture runs of part 1 also report each recorder's bytes per
//! translation, but their load is far more regular than real traffic (consecutive ports, a few
//! addresses), so its compression says little.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{Value, json};

use super::recorders::disk_bytes;
use super::sys::Machine;
use super::{BenchError, Result, io_err, path_str, run_quiet};
use crate::lab::TempDir;

/// What to run.
#[derive(Clone, Debug)]
pub struct StorageOptions {
    /// The `natrec` binary (for `natrec import`).
    pub natrec: PathBuf,
    /// The `natrec-gen` binary.
    pub natrec_gen: PathBuf,
    /// Translations to generate.
    pub flows: u64,
    /// Workload seed.
    pub seed: u64,
}

/// Compresses `file` with `tool args…` (single-threaded) into `file.ext`; returns the
/// compressed bytes and the seconds it took.
pub(crate) fn compress(file: &Path, tool: &str, args: &[&str], ext: &str) -> Result<(u64, f64)> {
    let out = PathBuf::from(format!("{}.{ext}", file.display()));
    let target =
        std::fs::File::create(&out).map_err(io_err(format!("creating {}", out.display())))?;
    let t = Instant::now();
    let status = Command::new(tool)
        .args(args)
        .arg("-c")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(target)
        .status()
        .map_err(io_err(format!("starting {tool} (is it installed?)")))?;
    let secs = t.elapsed().as_secs_f64();
    if !status.success() {
        return Err(BenchError::Invalid(format!("{tool} {} failed ({status})", file.display())));
    }
    let bytes = disk_bytes(&out);
    std::fs::remove_file(&out).map_err(io_err(format!("removing {}", out.display())))?;
    Ok((bytes, secs))
}

/// Runs part 3 and returns the results document (`bench-results/storage.json`).
pub fn run_storage(opts: &StorageOptions, log: &mut dyn FnMut(&str)) -> Result<Value> {
    let started = jiff::Timestamp::now();
    let work = TempDir::new("bench-storage")?;
    let flows = opts.flows.to_string();
    let seed = opts.seed.to_string();
    let mut rows = Vec::new();
    let jsonl = work.path().join("workload.jsonl");
    for (format, name) in
        [("jsonl", "workload.jsonl"), ("conntrack", "conntrack.txt"), ("ulogd-json", "ulogd.json")]
    {
        let out = work.path().join(name);
        run_quiet(Command::new(&opts.natrec_gen).args([
            "--format",
            format,
            "--flows",
            &flows,
            "--seed",
            &seed,
            "--out",
            path_str(&out)?,
        ]))?;
    }
    let segments = work.path().join("segments");
    let t = Instant::now();
    run_quiet(Command::new(&opts.natrec).args([
        "import",
        "--format",
        "jsonl",
        "--dir",
        path_str(&segments)?,
        path_str(&jsonl)?,
    ]))?;
    let import_s = t.elapsed().as_secs_f64();
    let natrec_bytes = disk_bytes(&segments);
    log(&format!("natrec segments: {natrec_bytes} bytes ({import_s:.1} s to import)"));
    let per = |b: u64| b as f64 / opts.flows as f64;
    rows.push(json!({
        "what": "natrec segments",
        "raw_bytes": natrec_bytes,
        "raw_per_translation": per(natrec_bytes),
        "write_s": import_s,
    }));
    for (what, name) in [
        ("conntrack -E text", "conntrack.txt"),
        ("ulogd2 JSON", "ulogd.json"),
        ("natrec JSON Lines", "workload.jsonl"),
    ] {
        let file = work.path().join(name);
        let raw = disk_bytes(&file);
        let (zstd, zstd_s) = compress(&file, "zstd", &["-19", "-T1", "-q"], "zst")?;
        let (xz, xz_s) = compress(&file, "xz", &["-9", "-T1"], "xz")?;
        log(&format!(
            "{what}: {raw} raw, {zstd} zstd -19 ({zstd_s:.1} s), {xz} xz -9 ({xz_s:.1} s)"
        ));
        rows.push(json!({
            "what": what,
            "raw_bytes": raw,
            "raw_per_translation": per(raw),
            "zstd19_bytes": zstd,
            "zstd19_per_translation": per(zstd),
            "zstd19_s": zstd_s,
            "zstd19_translations_per_s": opts.flows as f64 / zstd_s.max(1e-9),
            "xz9_bytes": xz,
            "xz9_per_translation": per(xz),
            "xz9_s": xz_s,
        }));
    }
    Ok(json!({
        "part": "storage",
        "started": started.to_string(),
        "finished": jiff::Timestamp::now().to_string(),
        "machine": Machine::describe().to_json(),
        "workload": {
            "generator": "natrec-gen (recorder::synth: ISP-like, Zipf remotes, Poisson starts, masquerade port reuse)",
            "flows": opts.flows,
            "seed": opts.seed,
        },
        "rows": rows,
    }))
}
