//! Part 4: "who held outside X:Y at T", answered by `natrec query` over natrec's segments,
//! by `grep` over the `conntrack -E` text log and by `zstdgrep` over the same log
//! zstd-compressed, for the same translations.
//!
//! The translations come from the synthetic workload (`natrec-gen`, seeded): natrec JSON Lines
//! imported into segments with `natrec import`, and the same stream as `conntrack -E -o
//! timestamp,extended` text. The questions name real translations (spread evenly over the
//! stream): outside address and port at their start time. Every answer is timed as an operator
//! would see it: from starting the command to its exit, output to a pipe. `grep` only finds the
//! candidate lines (an operator still pairs NEW and DESTROY lines and checks the times);
//! `natrec query` gives the answer. The log is compressed with `zstd -3` (decompression speed
//! hardly depends on the level, and `-19` takes minutes per million translations).

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{Value, json};

use super::recorders::disk_bytes;
use super::stats::Spread;
use super::sys::Machine;
use super::{BenchError, Result, io_err, path_str, run_quiet};
use crate::lab::TempDir;

/// What to run.
#[derive(Clone, Debug)]
pub struct QueryOptions {
    /// The `natrec` binary.
    pub natrec: PathBuf,
    /// The `natrec-gen` binary.
    pub natrec_gen: PathBuf,
    /// Sizes of the logs, in translations.
    pub sizes: Vec<u64>,
    /// Questions per size.
    pub questions: usize,
    /// Times each question is asked of each tool.
    pub reps: usize,
    /// Workload seed.
    pub seed: u64,
}


/// Runs `cmd` to its exit and returns the seconds it took and what it printed. Exit status 1
/// (nothing found, for grep and natrec query alike) is not an error.
fn timed(cmd: &mut Command) -> Result<(f64, String)> {
    let shown = format!("{cmd:?}");
    let t = Instant::now();
    let out = cmd.stdin(Stdio::null()).stderr(Stdio::null()).output().map_err(io_err(format!("starting {shown}")))?;
    let secs = t.elapsed().as_secs_f64();
    if !(out.status.success() || out.status.code() == Some(1)) {
        return Err(BenchError::Invalid(format!("{shown} failed ({})", out.status)));
    }
    Ok((secs, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// One question: an outside endpoint and a time at which it was held.
#[derive(Clone, Debug)]
struct Question {
    outside: String,
    at: String,
    /// The inside endpoint that held it (what a correct answer names).
    inside: String,
}

/// Picks `k` translations evenly spread over the end events of the JSON Lines file.
fn pick_questions(jsonl: &Path, flows: u64, k: usize) -> Result<Vec<Question>> {
    let file = std::fs::File::open(jsonl).map_err(io_err(format!("opening {}", jsonl.display())))?;
    let step = (flows / k.max(1) as u64).max(1);
    let mut out = Vec::new();
    let mut ends = 0u64;
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(io_err(format!("reading {}", jsonl.display())))?;
        if !line.contains("\"event\":\"end\"") {
            continue;
        }
        ends += 1;
        if ends % step != step / 2 {
            continue;
        }
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| BenchError::Invalid(format!("{}: not JSON ({e}): {line}", jsonl.display())))?;
        let field = |k: &str| v[k].as_str().map(str::to_owned);
        if v["kind"] != "snat" {
            continue;
        }
        if let (Some(outside), Some(at), Some(inside)) = (field("outside"), field("start"), field("inside")) {
            out.push(Question { outside, at, inside });
        }
        if out.len() == k {
            break;
        }
    }
    if out.is_empty() {
        return Err(BenchError::Invalid(format!("no SNAT translation to ask about in {}", jsonl.display())));
    }
    Ok(out)
}

/// The extended regular expression matching `conntrack -E` lines whose reply tuple goes to
/// `outside` (`… src=REMOTE dst=OUTSIDE sport=RPORT dport=OUTPORT`).
fn grep_pattern(outside: &str) -> Result<String> {
    let (ip, port) = outside
        .rsplit_once(':')
        .ok_or_else(|| BenchError::Invalid(format!("outside endpoint {outside:?} has no port")))?;
    Ok(format!("dst={} sport=[0-9]+ dport={port}( |$)", ip.replace('.', "\\.")))
}

/// Runs part 4 and returns the results document (`bench-results/query.json`).
pub fn run_query(opts: &QueryOptions, log: &mut dyn FnMut(&str)) -> Result<Value> {
    let started = jiff::Timestamp::now();
    let mut sizes = Vec::new();
    for &flows in &opts.sizes {
        let work = TempDir::new("bench-query")?;
        let jsonl = work.path().join("w.jsonl");
        let text = work.path().join("conntrack.txt");
        let segments = work.path().join("segments");
        let n = flows.to_string();
        let seed = opts.seed.to_string();
        for (format, out) in [("jsonl", &jsonl), ("conntrack", &text)] {
            run_quiet(Command::new(&opts.natrec_gen).args([
                "--format", format, "--flows", &n, "--seed", &seed, "--out", path_str(out)?,
            ]))?;
        }
        run_quiet(Command::new(&opts.natrec).args([
            "import", "--format", "jsonl", "--dir", path_str(&segments)?, path_str(&jsonl)?,
        ]))?;
        run_quiet(Command::new("zstd").args(["-3", "-T1", "-q", "-k", path_str(&text)?]))?;
        let zst = PathBuf::from(format!("{}.zst", text.display()));
        let questions = pick_questions(&jsonl, flows, opts.questions)?;
        std::fs::remove_file(&jsonl).map_err(io_err(format!("removing {}", jsonl.display())))?;
        log(&format!(
            "{flows} translations: segments {} bytes, text {} bytes, zstd {} bytes; {} questions",
            disk_bytes(&segments),
            disk_bytes(&text),
            disk_bytes(&zst),
            questions.len()
        ));
        let (mut t_natrec, mut t_grep, mut t_zgrep, mut ratio_z, mut ratio_g) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut answers = Vec::new();
        let mut wrong = 0u64;
        for q in &questions {
            let pattern = grep_pattern(&q.outside)?;
            for _ in 0..opts.reps {
                let (tn, answer) = timed(Command::new(&opts.natrec).args([
                    "query", "--dir", path_str(&segments)?, "--outside", &q.outside, "--at", &q.at, "--csv",
                ]))?;
                let (tg, out_g) = timed(Command::new("grep").args(["-E", &pattern, path_str(&text)?]))?;
                let (tz, out_z) = timed(Command::new("zstdgrep").args(["-E", &pattern, path_str(&zst)?]))?;
                let (lines_g, lines_z) = (out_g.lines().count(), out_z.lines().count());
                // natrec's answer must name the inside endpoint that held it; grep's lines must
                // hold it too.
                let natrec_right = answer.contains(&q.inside);
                if !natrec_right || !out_g.contains(&format!("src={} ", q.inside.rsplit_once(':').map_or("", |(ip, _)| ip))) {
                    wrong += 1;
                }
                if lines_g != lines_z {
                    return Err(BenchError::Invalid(format!(
                        "grep found {lines_g} lines and zstdgrep {lines_z} for {pattern:?}"
                    )));
                }
                t_natrec.push(tn);
                t_grep.push(tg);
                t_zgrep.push(tz);
                ratio_z.push(tz / tn.max(1e-9));
                ratio_g.push(tg / tn.max(1e-9));
                answers.push(json!({
                    "outside": q.outside, "at": q.at, "inside": q.inside,
                    "natrec_s": tn, "natrec_names_inside": natrec_right,
                    "grep_s": tg, "zstdgrep_s": tz, "grep_lines": lines_g,
                }));
            }
        }
        let sp = |v: &[f64]| Spread::of(v).map_or(Value::Null, Spread::to_json);
        log(&format!(
            "{flows}: natrec query {:.4} s, grep {:.3} s, zstdgrep {:.3} s (medians)",
            Spread::of(&t_natrec).map_or(f64::NAN, |s| s.median),
            Spread::of(&t_grep).map_or(f64::NAN, |s| s.median),
            Spread::of(&t_zgrep).map_or(f64::NAN, |s| s.median),
        ));
        sizes.push(json!({
            "translations": flows,
            "segments_bytes": disk_bytes(&segments),
            "text_bytes": disk_bytes(&text),
            "zstd_bytes": disk_bytes(&zst),
            "natrec_s": sp(&t_natrec),
            "grep_s": sp(&t_grep),
            "zstdgrep_s": sp(&t_zgrep),
            "zstdgrep_over_natrec": sp(&ratio_z),
            "grep_over_natrec": sp(&ratio_g),
            "answers_missing_the_holder": wrong,
            "answers": answers,
        }));
    }
    Ok(json!({
        "part": "query",
        "started": started.to_string(),
        "finished": jiff::Timestamp::now().to_string(),
        "machine": Machine::describe().to_json(),
        "workload": { "generator": "natrec-gen", "seed": opts.seed, "questions": opts.questions, "reps": opts.reps },
        "sizes": sizes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grep_pattern_escapes_the_address_and_needs_a_port() {
        let p = grep_pattern("100.64.0.8:46388").expect("pattern");
        assert_eq!(p, "dst=100\\.64\\.0\\.8 sport=[0-9]+ dport=46388( |$)");
        assert!(grep_pattern("100.64.0.8").is_err());
    }
}
