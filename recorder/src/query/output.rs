//! How an [`Answer`] is shown: a readable listing, JSON Lines, CSV.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::SocketAddr;

use jiff::Timestamp;
use serde::Serialize;

use super::{Answer, Candidate, Separator, When, endpoint_text};
use crate::model::{Flags, Kind, Proto};

/// One matching translation as a JSON Lines object (`"type":"translation"`).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename = "translation")]
pub struct TranslationRow<'a> {
    pub kind: Kind,
    pub proto: Proto,
    pub inside: SocketAddr,
    pub account: Option<&'a str>,
    pub outside: SocketAddr,
    pub remote: SocketAddr,
    pub zone: u16,
    /// RFC 3339 in UTC, to the store's resolution.
    pub start: String,
    pub end: Option<String>,
    pub flags: Flags,
    /// For a query at an instant: whether the lifetime covers the instant itself.
    pub at_instant: Option<bool>,
}

impl<'a> TranslationRow<'a> {
    /// The row of one candidate, times written with `precision` fractional digits.
    pub fn new(c: &'a Candidate, precision: Option<usize>) -> Self {
        let t = &c.translation;
        TranslationRow {
            kind: t.kind,
            proto: t.proto,
            inside: t.inside,
            account: c.account.as_deref(),
            outside: t.outside,
            remote: t.remote,
            zone: t.zone,
            start: time(t.start, precision),
            end: t.end.map(|e| time(e, precision)),
            flags: t.flags,
            at_instant: c.at_instant,
        }
    }
}

/// The closing JSON Lines object of an answer (`"type":"summary"`).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename = "summary")]
pub struct SummaryRow<'a> {
    pub matches: usize,
    pub distinct_inside: usize,
    pub ambiguous: bool,
    /// How to narrow an ambiguous answer.
    pub hint: Option<&'a str>,
    pub separated_by: &'a [Separator],
    pub notes: Vec<String>,
    /// The instant asked about, for a query at an instant.
    pub at: Option<String>,
    /// The interval the store was asked about.
    pub from: String,
    pub to: String,
    pub segments_total: usize,
    pub segments_opened: usize,
    pub blocks_read: u64,
    pub blocks_skipped: u64,
    pub translations_scanned: u64,
    pub damaged: usize,
}

impl<'a> From<&'a Answer> for SummaryRow<'a> {
    fn from(a: &'a Answer) -> Self {
        let p = a.precision;
        SummaryRow {
            matches: a.candidates.len(),
            distinct_inside: a.distinct_inside,
            ambiguous: a.ambiguity.is_some(),
            hint: a.ambiguity.as_ref().map(|x| x.hint.as_str()),
            separated_by: a.ambiguity.as_ref().map_or(&[], |x| x.separated_by.as_slice()),
            notes: a.notes.iter().map(ToString::to_string).collect(),
            at: match a.query.when {
                When::At { at, .. } => Some(time(at, p)),
                When::Range { .. } => None,
            },
            from: time(a.from, p),
            to: time(a.to, p),
            segments_total: a.report.segments_total,
            segments_opened: a.report.segments_opened,
            blocks_read: a.report.blocks_read,
            blocks_skipped: a.report.blocks_skipped,
            translations_scanned: a.report.translations_scanned,
            damaged: a.report.damage.len(),
        }
    }
}

/// A time in RFC 3339 UTC with `precision` fractional digits (as many as needed if `None`).
pub fn time(t: Timestamp, precision: Option<usize>) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = match precision {
        Some(p) => write!(s, "{t:.p$}", p = p.min(9)),
        None => write!(s, "{t}"),
    };
    s
}

/// Writes one JSON object per translation, then the summary object.
pub fn write_jsonl(w: &mut dyn Write, answer: &Answer) -> io::Result<()> {
    for c in &answer.candidates {
        serde_json::to_writer(&mut *w, &TranslationRow::new(c, answer.precision))?;
        w.write_all(b"\n")?;
    }
    serde_json::to_writer(&mut *w, &SummaryRow::from(answer))?;
    w.write_all(b"\n")
}

/// The CSV header row.
pub const CSV_HEADER: &str =
    "kind,proto,inside,account,outside,remote,zone,start,end,flags,at_instant";

fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

/// Writes a header row and one row per translation (no summary: notes go to stderr).
pub fn write_csv(w: &mut dyn Write, answer: &Answer) -> io::Result<()> {
    let p = answer.precision;
    writeln!(w, "{CSV_HEADER}")?;
    for c in &answer.candidates {
        let t = &c.translation;
        writeln!(
            w,
            "{},{},{},{},{},{},{},{},{},{},{}",
            t.kind,
            t.proto,
            t.inside,
            csv_field(c.account.as_deref().unwrap_or("")),
            t.outside,
            t.remote,
            t.zone,
            time(t.start, p),
            t.end.map(|e| time(e, p)).unwrap_or_default(),
            t.flags.names().collect::<Vec<_>>().join("|"),
            c.at_instant.map(|b| b.to_string()).unwrap_or_default(),
        )?;
    }
    Ok(())
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Writes the readable listing: one block of three short lines per translation, then what the
/// answer means (who, how many, how to narrow, what is approximate or missing).
pub fn write_table(w: &mut dyn Write, answer: &Answer) -> io::Result<()> {
    let p = answer.precision;
    let width = answer.candidates.len().to_string().len();
    for (i, c) in answer.candidates.iter().enumerate() {
        let t = &c.translation;
        let pad = " ".repeat(width + 2);
        write!(w, "{:>width$}. {}", i + 1, t.inside)?;
        if let Some(acct) = &c.account {
            write!(w, "  account {acct}")?;
        }
        write!(w, "  {} {}", t.proto, t.kind)?;
        if t.zone != 0 {
            write!(w, " zone {}", t.zone)?;
        }
        writeln!(w)?;
        writeln!(w, "{pad}outside {}  remote {}", t.outside, t.remote)?;
        write!(w, "{pad}{} .. ", time(t.start, p))?;
        match t.end {
            Some(e) => write!(w, "{}", time(e, p))?,
            None => write!(w, "(still open)")?,
        }
        let flags: Vec<&str> = t.flags.names().collect();
        if !flags.is_empty() {
            write!(w, "  [{}]", flags.join(", "))?;
        }
        if c.at_instant == Some(false) {
            write!(w, "  (within the window only)")?;
        }
        writeln!(w)?;
    }
    if !answer.candidates.is_empty() {
        writeln!(w)?;
    }
    let subject = [
        answer.query.outside.as_ref().map(|m| format!("outside {}", endpoint_text(m))),
        answer.query.inside.as_ref().map(|m| format!("inside {}", endpoint_text(m))),
        answer.query.remote.as_ref().map(|m| format!("remote {}", endpoint_text(m))),
        answer.query.proto.map(|p| format!("proto {p}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ");
    let time = match answer.query.when {
        When::At { at, window } if window.is_zero() => format!("at {}", time(at, p)),
        When::At { at, window } => {
            format!(
                "at {} ±{window:#} ({} .. {})",
                time(at, p),
                time(answer.from, p),
                time(answer.to, p)
            )
        }
        When::Range { from, to } => format!("from {} to {}", time(from, p), time(to, p)),
    };
    writeln!(
        w,
        "{} of {} for {subject} {time}.",
        plural(answer.candidates.len(), "translation", "translations"),
        plural(answer.distinct_inside, "inside endpoint", "inside endpoints"),
    )?;
    if let Some(amb) = &answer.ambiguity {
        writeln!(w, "AMBIGUOUS: {}.", amb.hint)?;
    }
    for n in &answer.notes {
        writeln!(w, "note: {n}")?;
    }
    Ok(())
}
