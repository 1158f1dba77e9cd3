//! Reads the NAT logs operators already keep and turns them into [`FlowEvent`]s for the store,
//! and renders translations in those formats (for `natrec-gen`, tests and benchmarks).
//!
//! Three formats ([`Format`]):
//!
//! - **jsonl**: natrec's own JSON Lines (`natrec record --jsonl`, `natrec-gen`), one
//!   [`FlowEvent`] a line, passed through as is.
//! - **conntrack**: the text of `conntrack -E -o timestamp[,extended]`, e.g.
//!   `[1767571200.000123]\t    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=10.0.0.2 dst=198.18.0.7
//!   sport=40000 dport=443 [UNREPLIED] src=198.18.0.7 dst=100.64.0.1 sport=443 dport=40000`.
//!   The bracketed time (when `conntrack` received the event) is the start of a `[NEW]` line and
//!   the end of a `[DESTROY]` line. `[UPDATE]` lines are ignored (counted). A `[DESTROY]` may carry
//!   `delta-time=SECONDS` (with `nf_conntrack_timestamp=1`) or `[start=…] [stop=…]`
//!   (`-o ktimestamp`, read as UTC): they give the start of a DESTROY whose NEW was not logged
//!   (without them, the end stands in for the start, flagged [`Flags::START_APPROX`]).
//! - **ulogd-json**: ulogd2's JSON output plugin fed by the NFCT input plugin through IP2STR
//!   (`stack=ct1:NFCT,ip2str1:IP2STR,json1:JSON`): objects with `ct.event` (1 NEW, 4 DESTROY),
//!   `orig.ip.protocol`, `orig.l4.sport`/`dport`, `reply.l4.sport`/`dport`, addresses as
//!   `src_ip`/`dest_ip` (or `orig.ip.saddr.str`/`orig.ip.daddr.str`) and `reply.ip.saddr.str`/
//!   `reply.ip.daddr.str`, times as `flow.start.sec`/`usec` and `flow.end.sec`/`usec` (falling
//!   back to `timestamp`). ulogd does not log ICMP echo identifiers: ICMP translations are
//!   imported with port 0. With NFCT's default `hash_enable=1`, ulogd logs only DESTROY events
//!   (carrying `flow.start`): every translation is then end-only ([`Flags::END_ONLY`]) with its
//!   true start.
//!
//! A log entry is classified like the kernel path does ([`recorder_common::classify`]): NAT is
//! visible when the reply tuple is not the inverse of the original one — the reply's destination
//! differs from the original source (SNAT), the reply's source differs from the original
//! destination (DNAT), or both. Entries without NAT are counted and skipped.
//!
//! [`Importer`] pairs NEW and DESTROY entries into one start and one end per translation, by the
//! translation's key (no two live conntrack entries share it). A NEW without DESTROY at the end
//! of the input stays open; a DESTROY without NEW becomes an end-only translation
//! ([`Flags::END_ONLY`]); a second NEW for a key already open means its DESTROY was lost: the
//! earlier translation is ended there with [`Flags::END_APPROX`]. Malformed lines are counted with
//! their line numbers and reasons, never silently dropped, and never stop the import.
//!
//! Events come out in input order. Lines whose time goes backwards are still imported and
//! counted in [`ImportReport::out_of_order`].
//!
//! The pairing is here; each format has its file (`jsonl.rs`, `conntrack.rs`, `ulogd.rs`), and
//! `entry.rs` what the text formats share: a log entry's two tuples, classified into a
//! translation, and back.

mod conntrack;
mod entry;
mod jsonl;
#[cfg(test)]
mod tests;
mod ulogd;

use std::collections::HashMap;

use jiff::Timestamp;
use serde::Serialize;

use crate::model::{Flags, FlowEvent, FlowKey, Translation};

pub use conntrack::{parse_conntrack_line, render_conntrack};
pub use jsonl::{parse_jsonl_line, render_jsonl};
pub use ulogd::{parse_ulogd_line, render_ulogd_json};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// An unknown format name.
    #[error("unknown import format {0:?}: expected jsonl, conntrack or ulogd-json")]
    UnknownFormat(String),
}

/// A log format [`Importer`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// natrec's JSON Lines of [`FlowEvent`].
    Jsonl,
    /// `conntrack -E -o timestamp,extended` text.
    Conntrack,
    /// ulogd2's JSON output (NFCT input through IP2STR).
    UlogdJson,
}

impl Format {
    /// The format's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Conntrack => "conntrack",
            Format::UlogdJson => "ulogd-json",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = ImportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "jsonl" => Ok(Format::Jsonl),
            "conntrack" => Ok(Format::Conntrack),
            "ulogd-json" | "ulogd" => Ok(Format::UlogdJson),
            _ => Err(ImportError::UnknownFormat(s.to_owned())),
        }
    }
}

/// A conntrack event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtEvent {
    /// The entry was created (`[NEW]`, `ct.event` 1).
    New,
    /// The entry was destroyed (`[DESTROY]`, `ct.event` 4).
    Destroy,
}

/// One NAT entry read from a log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub event: CtEvent,
    /// The line's time: the start of a NEW, the end of a DESTROY.
    pub at: Timestamp,
    /// The entry's start when the line says it (a DESTROY's `delta-time`, `start=` or
    /// `flow.start`).
    pub start: Option<Timestamp>,
    /// The translation, with `start` = `at`, no end and no flags.
    pub translation: Translation,
}

/// What a line is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// A NAT entry.
    Record(LogRecord),
    /// A conntrack entry without NAT.
    NotNat,
    /// Not an entry to import (an UPDATE event, a blank line, another kind of record).
    Ignored(&'static str),
}

/// A line that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Malformed {
    /// The input's name (`-` for standard input).
    pub source: String,
    /// 1-based line number in that input.
    pub line: u64,
    pub reason: String,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Lines read.
    pub lines: u64,
    /// Translations written (each once, whether known from its start, its end, or both).
    pub translations: u64,
    /// Start events written.
    pub starts: u64,
    /// End events written.
    pub ends: u64,
    /// Translations known only from their end (DESTROY without NEW).
    pub end_only: u64,
    /// Translations still open at the end of the input (NEW without DESTROY).
    pub open_at_end: u64,
    /// Translations whose DESTROY was missing (a second NEW for the same key): ended with
    /// `end_approx` at that second NEW.
    pub lost_ends: u64,
    /// Conntrack entries without NAT, skipped.
    pub non_nat: u64,
    /// Lines that are not entries to import (UPDATE events, blank lines, other records).
    pub ignored: u64,
    /// Lines that could not be read.
    pub malformed: u64,
    /// The first [`ImportReport::SAMPLES`] malformed lines.
    pub malformed_samples: Vec<Malformed>,
    /// Lines whose time is earlier than an earlier line's.
    pub out_of_order: u64,
}

impl ImportReport {
    /// How many malformed lines are kept with their reasons.
    pub const SAMPLES: usize = 10;
}

/// Reads lines of one format, pairs them, and yields [`FlowEvent`]s (see the module docs).
///
/// One importer can read several inputs in a row (rotated logs): pairs spanning two files are
/// found.
#[derive(Debug)]
pub struct Importer {
    format: Format,
    source: String,
    open: HashMap<FlowKey, Translation>,
    report: ImportReport,
    latest: Option<Timestamp>,
}

impl Importer {
    pub fn new(format: Format) -> Self {
        Importer {
            format,
            source: "-".to_owned(),
            open: HashMap::new(),
            report: ImportReport::default(),
            latest: None,
        }
    }

    /// Names the input the following lines come from (for malformed-line reports).
    pub fn set_source(&mut self, name: &str) {
        name.clone_into(&mut self.source);
    }

    /// The report so far.
    pub fn report(&self) -> &ImportReport {
        &self.report
    }

    /// Reads one line (`line_no` 1-based), pushing the events it makes to `out`.
    pub fn line(&mut self, line_no: u64, text: &str, out: &mut Vec<FlowEvent>) {
        self.report.lines += 1;
        let text = text.trim_end_matches(['\n', '\r']);
        let parsed = match self.format {
            Format::Jsonl => parse_jsonl_line(text).map(|ev| {
                if let Some(ev) = ev {
                    self.pass_through(ev, out);
                }
                None
            }),
            Format::Conntrack => parse_conntrack_line(text).map(Some),
            Format::UlogdJson => parse_ulogd_line(text).map(Some),
        };
        match parsed {
            Ok(None) => {}
            Ok(Some(Line::Record(r))) => self.pair(r, out),
            Ok(Some(Line::NotNat)) => self.report.non_nat += 1,
            Ok(Some(Line::Ignored(_))) => self.report.ignored += 1,
            Err(reason) => {
                self.report.malformed += 1;
                if self.report.malformed_samples.len() < ImportReport::SAMPLES {
                    self.report.malformed_samples.push(Malformed {
                        source: self.source.clone(),
                        line: line_no,
                        reason,
                    });
                }
            }
        }
    }

    /// A line that is not valid UTF-8.
    pub fn invalid_utf8(&mut self, line_no: u64) {
        self.report.lines += 1;
        self.report.malformed += 1;
        if self.report.malformed_samples.len() < ImportReport::SAMPLES {
            self.report.malformed_samples.push(Malformed {
                source: self.source.clone(),
                line: line_no,
                reason: "not valid UTF-8".to_owned(),
            });
        }
    }

    /// Ends the import: what is still open stays open.
    pub fn finish(mut self) -> ImportReport {
        self.report.open_at_end = self.open.len() as u64;
        self.report
    }

    fn saw_time(&mut self, t: Timestamp) {
        match self.latest {
            Some(l) if t < l => self.report.out_of_order += 1,
            _ => self.latest = Some(t),
        }
    }

    fn pass_through(&mut self, ev: FlowEvent, out: &mut Vec<FlowEvent>) {
        match &ev {
            FlowEvent::Start(t) => {
                self.saw_time(t.start);
                self.report.starts += 1;
                self.report.translations += 1;
                self.open.insert(t.key(), t.clone());
            }
            FlowEvent::End(t) => {
                self.saw_time(t.end.unwrap_or(t.start));
                self.report.ends += 1;
                let paired = self.open.get(&t.key()).is_some_and(|s| s.start == t.start);
                if paired {
                    self.open.remove(&t.key());
                } else {
                    self.report.translations += 1;
                    if t.flags.contains(Flags::END_ONLY) {
                        self.report.end_only += 1;
                    }
                }
            }
        }
        out.push(ev);
    }

    fn pair(&mut self, r: LogRecord, out: &mut Vec<FlowEvent>) {
        self.saw_time(r.at);
        let key = r.translation.key();
        match r.event {
            CtEvent::New => {
                if let Some(mut lost) = self.open.remove(&key) {
                    lost.end = Some(r.at.max(lost.start));
                    lost.flags.insert(Flags::END_APPROX);
                    self.report.lost_ends += 1;
                    self.report.ends += 1;
                    out.push(FlowEvent::End(lost));
                }
                let t = Translation { start: r.at, end: None, ..r.translation };
                self.open.insert(key, t.clone());
                self.report.starts += 1;
                self.report.translations += 1;
                out.push(FlowEvent::Start(t));
            }
            CtEvent::Destroy => {
                let t = match self.open.remove(&key) {
                    Some(s) => Translation { end: Some(r.at.max(s.start)), ..s },
                    None => {
                        self.report.end_only += 1;
                        self.report.translations += 1;
                        // Without a start in the line, the end stands in for it: the true start is
                        // at or before it.
                        let (start, flags) = match r.start {
                            Some(s) => (s.min(r.at), Flags::END_ONLY),
                            None => (r.at, Flags::END_ONLY.union(Flags::START_APPROX)),
                        };
                        Translation { start, end: Some(r.at), flags, ..r.translation }
                    }
                };
                self.report.ends += 1;
                out.push(FlowEvent::End(t));
            }
        }
    }
}

/// Appends `ev` in `format`.
pub fn render(format: Format, ev: &FlowEvent, out: &mut String) -> Result<(), serde_json::Error> {
    match format {
        Format::Jsonl => render_jsonl(ev, out),
        Format::Conntrack => {
            render_conntrack(ev, out);
            Ok(())
        }
        Format::UlogdJson => {
            render_ulogd_json(ev, out);
            Ok(())
        }
    }
}
