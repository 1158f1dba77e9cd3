//! Part 4: "who held outside X:Y at T", answered by `natrec query` over natrec's segments,
//! by `grep` over the `conntrack -E` text log and by `zstdgrep` over the same log
//! zstd-compressed, for the same translations.
//!
//! The translations come from the synthetic workload (`natrec-gen`, seeded), generated twice
//! and streamed, never stored whole: natrec JSON Lines flow through this process (which picks the
//! questions on the way) into `natrec import`, which writes the segments; the same stream as
//! `conntrack -E -o timestamp,extended` text flows through this process (which counts its bytes)
//! into `zstd -3 -T1`, and into a raw text file only while that stays within a disk budget (at
//! 100 M translations the raw text would take about 36 GB). Where the raw text is not kept, `grep`
//! is not run and the results say why.
//!
//! The questions name real translations (spread evenly over the stream's end events): outside
//! address and port at their start time. Every answer is timed as an operator would see it: from
//! starting the command to its exit, output to a pipe. `grep` only finds the candidate lines (an
//! operator still pairs NEW and DESTROY lines and checks the times); `natrec query` gives the
//! answer. The log is compressed with `zstd -3` (decompression speed hardly depends on the level,
//! and `-19` takes minutes per million translations).

use std::fs::File;
use std::io::{BufRead as _, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Instant;

use serde_json::{Value, json};

use super::recorders::disk_bytes;
use super::stats::Spread;
use super::sys::Machine;
use super::{BenchError, Result, io_err, path_str};
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
    /// Questions per size below `big_from`.
    pub questions: usize,
    /// Times each question is asked of each tool, below `big_from`.
    pub reps: usize,
    /// From this many translations on, `big_questions` questions asked `big_reps` times each
    /// (one `zstdgrep` over 100 M translations takes about a minute).
    pub big_from: u64,
    /// Questions per size from `big_from` on.
    pub big_questions: usize,
    /// Times each question is asked of each tool, from `big_from` on.
    pub big_reps: usize,
    /// The raw text log is kept (and `grep` run on it) only while it takes at most this many
    /// bytes; the compressed log and the segments are always kept.
    pub raw_text_budget: u64,
    /// Workload seed.
    pub seed: u64,
}

impl QueryOptions {
    /// Questions and repetitions at a size.
    fn plan(&self, flows: u64) -> (usize, usize) {
        if flows >= self.big_from {
            (self.big_questions, self.big_reps)
        } else {
            (self.questions, self.reps)
        }
    }
}

/// Runs `cmd` to its exit and returns the seconds it took and what it printed. Exit status 1
/// (nothing found, for grep and natrec query alike) is not an error.
fn timed(cmd: &mut Command) -> Result<(f64, String)> {
    let shown = format!("{cmd:?}");
    let t = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(io_err(format!("starting {shown}")))?;
    let secs = t.elapsed().as_secs_f64();
    if !(out.status.success() || out.status.code() == Some(1)) {
        return Err(BenchError::Invalid(format!("{shown} failed ({})", out.status)));
    }
    Ok((secs, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// One question: an outside endpoint and a time at which it was held.
#[derive(Clone, Debug, PartialEq)]
struct Question {
    outside: String,
    at: String,
    /// The inside endpoint that held it (what a correct answer names).
    inside: String,
}

/// The start of a natrec JSON Lines end event (`natrec-gen` writes `event` first).
const END_EVENT: &[u8] = b"{\"event\":\"end\"";

/// Picks `k` SNAT translations evenly spread over the end events of a natrec JSON Lines stream,
/// offered one line at a time: the first SNAT end event at or after each of `k` evenly spaced
/// positions.
struct Picker {
    k: usize,
    step: u64,
    /// Number of end events seen.
    ends: u64,
    /// The next pick is the first SNAT end event after this many end events.
    next: u64,
    picked: Vec<Question>,
}

impl Picker {
    fn new(flows: u64, k: usize) -> Picker {
        let step = (flows / k.max(1) as u64).max(1);
        Picker { k, step, ends: 0, next: step / 2, picked: Vec::new() }
    }

    fn offer(&mut self, line: &[u8]) -> Result<()> {
        if !line.starts_with(END_EVENT) {
            return Ok(());
        }
        self.ends += 1;
        if self.picked.len() >= self.k || self.ends <= self.next {
            return Ok(());
        }
        let v: Value = serde_json::from_slice(line).map_err(|e| {
            BenchError::Invalid(format!(
                "natrec-gen printed a line that is not JSON ({e}): {}",
                String::from_utf8_lossy(line)
            ))
        })?;
        if v["kind"] != "snat" {
            return Ok(());
        }
        let field = |k: &str| v[k].as_str().map(str::to_owned);
        if let (Some(outside), Some(at), Some(inside)) =
            (field("outside"), field("start"), field("inside"))
        {
            self.picked.push(Question { outside, at, inside });
            self.next += self.step;
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<Question>> {
        if self.picked.is_empty() {
            return Err(BenchError::Invalid(
                "no SNAT translation to ask about in the workload".to_owned(),
            ));
        }
        Ok(self.picked)
    }
}

/// What [`copy_text`] did.
#[derive(Debug, PartialEq)]
struct TextCopy {
    /// Bytes of text copied.
    bytes: u64,
    /// Whether the raw text file holds all of it (else it was removed).
    kept: bool,
}

/// Copies the text log from `from` into `compressor`, and into a new file at `raw` while the text
/// stays within `budget` bytes; once it would exceed it, the file is removed and the copy to the
/// compressor goes on.
fn copy_text(
    mut from: impl Read,
    mut compressor: impl Write,
    raw: &Path,
    budget: u64,
) -> Result<TextCopy> {
    let mut file = Some(BufWriter::with_capacity(
        1 << 20,
        File::create(raw).map_err(io_err(format!("creating {}", raw.display())))?,
    ));
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("reading natrec-gen's conntrack text")(e)),
        };
        let chunk = &buf[..n];
        compressor.write_all(chunk).map_err(io_err("writing the conntrack text to zstd"))?;
        bytes += n as u64;
        if bytes > budget && file.take().is_some() {
            std::fs::remove_file(raw).map_err(io_err(format!("removing {}", raw.display())))?;
        }
        if let Some(f) = file.as_mut() {
            f.write_all(chunk).map_err(io_err(format!("writing {}", raw.display())))?;
        }
    }
    compressor.flush().map_err(io_err("writing the conntrack text to zstd"))?;
    let kept = match file {
        Some(mut f) => {
            f.flush().map_err(io_err(format!("writing {}", raw.display())))?;
            true
        }
        None => false,
    };
    Ok(TextCopy { bytes, kept })
}

/// A child process whose standard error goes to a file (read back if it fails).
struct Proc {
    child: Child,
    shown: String,
    stderr: PathBuf,
}

impl Proc {
    fn spawn(cmd: &mut Command, stdin: Stdio, stdout: Stdio, stderr: &Path) -> Result<Proc> {
        let shown = format!("{cmd:?}");
        let err = File::create(stderr).map_err(io_err(format!("creating {}", stderr.display())))?;
        let child = cmd
            .stdin(stdin)
            .stdout(stdout)
            .stderr(err)
            .spawn()
            .map_err(io_err(format!("starting {shown}")))?;
        Ok(Proc { child, shown, stderr: stderr.to_owned() })
    }

    fn stdout(&mut self) -> Result<ChildStdout> {
        self.child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Invalid(format!("{}: no standard output pipe", self.shown)))
    }

    /// Waits for the exit; anything but success is an error carrying the end of its stderr.
    fn wait(mut self) -> Result<()> {
        let status = self.child.wait().map_err(io_err(format!("waiting for {}", self.shown)))?;
        if status.success() {
            return Ok(());
        }
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let tail: String =
            text.trim().chars().rev().take(600).collect::<Vec<_>>().into_iter().rev().collect();
        Err(BenchError::Invalid(format!("{} failed ({status}): {tail}", self.shown)))
    }

    /// Stops it after a failure elsewhere (it may have exited already).
    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for every process; the first failure is the error.
fn wait_all<const N: usize>(procs: [Proc; N]) -> Result<()> {
    let mut first = Ok(());
    for p in procs {
        let r = p.wait();
        if first.is_ok() {
            first = r;
        }
    }
    first
}

/// The logs of one size, ready to be asked.
struct Logs {
    segments: PathBuf,
    zst: PathBuf,
    /// The raw text, if it fit the budget.
    text: Option<PathBuf>,
    text_bytes: u64,
    jsonl_bytes: u64,
    questions: Vec<Question>,
    seconds: f64,
}

/// Streams the workload of `flows` translations into segments (through `natrec import`) and
/// into the compressed text log (and the raw one, within the budget), picking `k` questions.
fn prepare(
    opts: &QueryOptions,
    flows: u64,
    k: usize,
    dir: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<Logs> {
    let t = Instant::now();
    let segments = dir.join("segments");
    let raw = dir.join("conntrack.txt");
    let zst = dir.join("conntrack.txt.zst");
    let (n, seed) = (flows.to_string(), opts.seed.to_string());
    let gen_args = |format: &'static str| {
        ["--format", format, "--flows", &n, "--seed", &seed].map(str::to_owned)
    };

    // The text: natrec-gen → this process (counting, raw copy within budget) → zstd.
    let mut gen_text = Proc::spawn(
        Command::new(&opts.natrec_gen).args(gen_args("conntrack")),
        Stdio::null(),
        Stdio::piped(),
        &dir.join("gen-text.err"),
    )?;
    let text_out = gen_text.stdout()?;
    let mut zstd = Proc::spawn(
        Command::new("zstd").args(["-3", "-T1", "-q", "-o", path_str(&zst)?]),
        Stdio::piped(),
        Stdio::null(),
        &dir.join("zstd.err"),
    )?;
    let zstd_in = zstd
        .child
        .stdin
        .take()
        .ok_or_else(|| BenchError::Invalid("zstd: no standard input pipe".to_owned()))?;

    // The JSON Lines: natrec-gen → this process (questions) → natrec import.
    let mut gen_jsonl = Proc::spawn(
        Command::new(&opts.natrec_gen).args(gen_args("jsonl")),
        Stdio::null(),
        Stdio::piped(),
        &dir.join("gen-jsonl.err"),
    )?;
    let jsonl_out = gen_jsonl.stdout()?;
    let import = Proc::spawn(
        Command::new(&opts.natrec).args([
            "import",
            "--format",
            "jsonl",
            "--dir",
            path_str(&segments)?,
            "-",
        ]),
        Stdio::piped(),
        Stdio::null(),
        &dir.join("import.err"),
    );
    let mut import = match import {
        Ok(p) => p,
        Err(e) => {
            for p in [gen_text, zstd, gen_jsonl] {
                p.stop();
            }
            return Err(e);
        }
    };
    let budget = opts.raw_text_budget;
    let (text, streamed) = std::thread::scope(|s| {
        let text = s.spawn(|| copy_text(text_out, zstd_in, &raw, budget));
        let streamed = stream_jsonl(jsonl_out, import.child.stdin.take(), flows, k, log);
        (text.join(), streamed)
    });
    let text = text.map_err(|_| BenchError::Invalid("the conntrack text copy panicked".to_owned()));
    let (text, (picker, jsonl_bytes)) = match (text.and_then(|r| r), streamed) {
        (Ok(text), Ok(streamed)) => (text, streamed),
        (Err(e), _) | (_, Err(e)) => {
            // The real cause may be a child's failure: report that first.
            wait_all([gen_text, zstd, gen_jsonl, import])?;
            return Err(e);
        }
    };
    wait_all([gen_text, zstd, gen_jsonl, import])?;
    let questions = picker.finish()?;
    Ok(Logs {
        segments,
        zst,
        text: text.kept.then_some(raw),
        text_bytes: text.bytes,
        jsonl_bytes,
        questions,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// Copies natrec-gen's JSON Lines to `natrec import`, line by line, offering each to a
/// [`Picker`]; returns it and the bytes copied.
fn stream_jsonl(
    from: ChildStdout,
    to: Option<std::process::ChildStdin>,
    flows: u64,
    k: usize,
    log: &mut dyn FnMut(&str),
) -> Result<(Picker, u64)> {
    let to =
        to.ok_or_else(|| BenchError::Invalid("natrec import: no standard input pipe".to_owned()))?;
    let mut to = BufWriter::with_capacity(1 << 20, to);
    let mut from = BufReader::with_capacity(1 << 20, from);
    let mut picker = Picker::new(flows, k);
    let mut line = Vec::with_capacity(512);
    let mut bytes = 0u64;
    let tenth = (flows / 10).max(1);
    let t = Instant::now();
    loop {
        line.clear();
        let n =
            from.read_until(b'\n', &mut line).map_err(io_err("reading natrec-gen's JSON Lines"))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        let ends = picker.ends;
        picker.offer(&line)?;
        if picker.ends != ends && picker.ends.is_multiple_of(tenth) {
            log(&format!(
                "  {} of {flows} translations streamed ({:.0} s)",
                picker.ends,
                t.elapsed().as_secs_f64()
            ));
        }
        to.write_all(&line).map_err(io_err("writing JSON Lines to natrec import"))?;
    }
    to.flush().map_err(io_err("writing JSON Lines to natrec import"))?;
    Ok((picker, bytes))
}

/// The extended regular expression matching `conntrack -E` lines whose reply tuple goes to
/// `outside` (`… src=REMOTE dst=OUTSIDE sport=RPORT dport=OUTPORT`).
fn grep_pattern(outside: &str) -> Result<String> {
    let (ip, port) = outside
        .rsplit_once(':')
        .ok_or_else(|| BenchError::Invalid(format!("outside endpoint {outside:?} has no port")))?;
    Ok(format!("dst={} sport=[0-9]+ dport={port}( |$)", ip.replace('.', "\\.")))
}

/// `src=ADDRESS ` of an inside endpoint, as its `conntrack -E` lines carry it.
fn src_of(inside: &str) -> String {
    format!("src={} ", inside.rsplit_once(':').map_or(inside, |(ip, _)| ip))
}

/// Bytes as GB (MB below 1 GB), for people.
fn gb(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 { format!("{:.1} GB", b / 1e9) } else { format!("{:.1} MB", b / 1e6) }
}

/// Runs part 4 and returns the results document (`bench-results/query.json`).
pub fn run_query(opts: &QueryOptions, log: &mut dyn FnMut(&str)) -> Result<Value> {
    let started = jiff::Timestamp::now();
    let mut sizes = Vec::new();
    for &flows in &opts.sizes {
        let (k, reps) = opts.plan(flows);
        let work = TempDir::new("bench-query")?;
        log(&format!("{flows} translations: generating, importing and compressing (streamed)"));
        let logs = prepare(opts, flows, k, work.path(), log)?;
        let (segments_bytes, zstd_bytes) = (disk_bytes(&logs.segments), disk_bytes(&logs.zst));
        let grep_skipped = logs.text.is_none().then(|| {
            format!(
                "raw text would be {} (over the {} disk budget of this bench); not kept, grep not run",
                gb(logs.text_bytes),
                gb(opts.raw_text_budget)
            )
        });
        log(&format!(
            "{flows} translations in {:.0} s: segments {segments_bytes} bytes, text {} bytes ({}), zstd {zstd_bytes} bytes; {} questions × {reps}",
            logs.seconds,
            logs.text_bytes,
            if logs.text.is_some() { "kept" } else { "not kept" },
            logs.questions.len()
        ));
        let (mut t_natrec, mut t_grep, mut t_zgrep, mut ratio_z, mut ratio_g) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut answers = Vec::new();
        let mut wrong = 0u64;
        for q in &logs.questions {
            let pattern = grep_pattern(&q.outside)?;
            let src = src_of(&q.inside);
            for _ in 0..reps {
                let (tn, answer) = timed(Command::new(&opts.natrec).args([
                    "query",
                    "--dir",
                    path_str(&logs.segments)?,
                    "--outside",
                    &q.outside,
                    "--at",
                    &q.at,
                    "--csv",
                ]))?;
                let grep = match &logs.text {
                    Some(text) => {
                        Some(timed(Command::new("grep").args(["-E", &pattern, path_str(text)?]))?)
                    }
                    None => None,
                };
                let (tz, out_z) =
                    timed(Command::new("zstdgrep").args(["-E", &pattern, path_str(&logs.zst)?]))?;
                let lines_z = out_z.lines().count();
                // natrec's answer must name the inside endpoint that held it; zstdgrep's (and
                // grep's) lines must hold its address too.
                let natrec_right = answer.contains(&q.inside);
                let zstdgrep_right = out_z.contains(&src);
                if !natrec_right || !zstdgrep_right {
                    wrong += 1;
                }
                if let Some((_, out_g)) = &grep {
                    let lines_g = out_g.lines().count();
                    if lines_g != lines_z {
                        return Err(BenchError::Invalid(format!(
                            "grep found {lines_g} lines and zstdgrep {lines_z} for {pattern:?}"
                        )));
                    }
                }
                let tg = grep.as_ref().map(|(t, _)| *t);
                t_natrec.push(tn);
                t_zgrep.push(tz);
                ratio_z.push(tz / tn.max(1e-9));
                if let Some(tg) = tg {
                    t_grep.push(tg);
                    ratio_g.push(tg / tn.max(1e-9));
                }
                log(&format!(
                    "  {}: natrec {tn:.4} s, grep {}, zstdgrep {tz:.2} s",
                    q.outside,
                    tg.map_or("–".to_owned(), |t| format!("{t:.2} s"))
                ));
                answers.push(json!({
                    "outside": q.outside, "at": q.at, "inside": q.inside,
                    "natrec_s": tn, "natrec_names_inside": natrec_right,
                    "grep_s": tg, "zstdgrep_s": tz, "zstdgrep_lines": lines_z,
                    "zstdgrep_lines_hold_inside": zstdgrep_right,
                }));
            }
        }
        let sp = |v: &[f64]| Spread::of(v).map_or(Value::Null, Spread::to_json);
        let median = |v: &[f64]| Spread::of(v).map_or(f64::NAN, |s| s.median);
        log(&format!(
            "{flows}: natrec query {:.4} s, grep {:.3} s, zstdgrep {:.3} s (medians)",
            median(&t_natrec),
            median(&t_grep),
            median(&t_zgrep),
        ));
        sizes.push(json!({
            "translations": flows,
            "questions": logs.questions.len(),
            "reps": reps,
            "prepare_s": logs.seconds,
            "segments_bytes": segments_bytes,
            "jsonl_bytes": logs.jsonl_bytes,
            "text_bytes": logs.text_bytes,
            "text_kept": logs.text.is_some(),
            "grep_skipped": grep_skipped,
            "zstd_bytes": zstd_bytes,
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
        "workload": {
            "generator": "natrec-gen", "seed": opts.seed,
            "questions": opts.questions, "reps": opts.reps,
            "big_from": opts.big_from, "big_questions": opts.big_questions, "big_reps": opts.big_reps,
            "raw_text_budget_bytes": opts.raw_text_budget,
        },
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
        assert_eq!(src_of("10.0.1.43:45658"), "src=10.0.1.43 ");
    }

    fn end_line(i: u64, kind: &str) -> String {
        format!(
            "{{\"event\":\"end\",\"kind\":\"{kind}\",\"proto\":\"tcp\",\"inside\":\"10.0.0.{}:{i}\",\"outside\":\"100.64.0.1:{i}\",\"remote\":\"198.18.0.1:443\",\"zone\":0,\"start\":\"2026-01-05T00:00:{:02}Z\",\"end\":null,\"flags\":[]}}\n",
            i % 250,
            i % 60
        )
    }

    #[test]
    fn picker_spreads_questions_over_end_events_and_skips_dnat() {
        let mut p = Picker::new(100, 4);
        for i in 1..=100u64 {
            let start =
                format!("{{\"event\":\"start\",\"kind\":\"snat\",\"inside\":\"x\",\"n\":{i}}}\n");
            p.offer(start.as_bytes()).expect("start line");
            // End event 38 is a port forward: the second pick moves to 39.
            p.offer(end_line(i, if i == 38 { "dnat" } else { "snat" }).as_bytes())
                .expect("end line");
        }
        let ports: Vec<String> = p
            .finish()
            .expect("picks")
            .iter()
            .map(|q| q.outside.rsplit_once(':').map(|(_, p)| p.to_owned()).unwrap_or_default())
            .collect();
        assert_eq!(ports, ["13", "39", "63", "88"], "the schedule does not shift after a skip");
        let q = Picker::new(10, 3);
        assert!(q.finish().is_err(), "nothing offered, nothing to ask");
    }

    #[test]
    fn text_copy_keeps_the_raw_file_only_within_the_budget() {
        let dir = TempDir::new("bench-query-test").expect("temp dir");
        let text: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let raw = dir.path().join("kept.txt");
        let mut compressed = Vec::new();
        let c = copy_text(&text[..], &mut compressed, &raw, 3_000_000).expect("copy");
        assert_eq!(c, TextCopy { bytes: 3_000_000, kept: true });
        assert_eq!(compressed, text);
        assert_eq!(std::fs::read(&raw).expect("raw file"), text);
        let raw = dir.path().join("dropped.txt");
        let mut compressed = Vec::new();
        let c = copy_text(&text[..], &mut compressed, &raw, 1_500_000).expect("copy");
        assert_eq!(c, TextCopy { bytes: 3_000_000, kept: false });
        assert_eq!(compressed, text);
        assert!(!raw.exists(), "the raw file over budget is removed");
    }
}
