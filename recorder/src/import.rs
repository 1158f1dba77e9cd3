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

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use jiff::Timestamp;
use recorder_common::{AF_INET, AF_INET6, NatKind, Tuple, classify};
use serde::{Deserialize, Serialize};

use crate::model::{Flags, FlowEvent, FlowKey, Kind, Proto, Translation};

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

/// Reads a natrec JSON Lines line (`None` for a blank line).
pub fn parse_jsonl_line(line: &str) -> Result<Option<FlowEvent>, String> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(line).map(Some).map_err(|e| format!("not a natrec event: {e}"))
}

/// One direction of a conntrack entry as a log shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct LogTuple {
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    sport: Option<u16>,
    dport: Option<u16>,
    /// ICMP echo identifier.
    id: Option<u16>,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
}

impl LogTuple {
    fn complete(&self, icmp: bool) -> Result<(IpAddr, IpAddr, u16, u16), String> {
        let (src, dst) = match (self.src, self.dst) {
            (Some(s), Some(d)) => (s, d),
            _ => return Err("a tuple lacks src= or dst=".to_owned()),
        };
        if icmp {
            // The identifier is the "source port"; type and code the "destination port".
            let tc = u16::from(self.icmp_type.unwrap_or(0)) << 8
                | u16::from(self.icmp_code.unwrap_or(0));
            Ok((src, dst, self.id.unwrap_or(0), tc))
        } else {
            Ok((src, dst, self.sport.unwrap_or(0), self.dport.unwrap_or(0)))
        }
    }

    /// Sets a field of this tuple; `false` when the key is not one of its (still unset) fields.
    fn set(&mut self, icmp: bool, key: &str, value: &str) -> Result<bool, String> {
        fn put<T: std::str::FromStr>(
            slot: &mut Option<T>,
            key: &str,
            value: &str,
        ) -> Result<bool, String> {
            if slot.is_some() {
                return Ok(false);
            }
            *slot = Some(value.parse().map_err(|_| format!("bad {key}={value}"))?);
            Ok(true)
        }
        match (key, icmp) {
            ("src", _) => put(&mut self.src, key, value),
            ("dst", _) => put(&mut self.dst, key, value),
            ("sport", false) => put(&mut self.sport, key, value),
            ("dport", false) => put(&mut self.dport, key, value),
            ("id", true) => put(&mut self.id, key, value),
            ("type", true) => put(&mut self.icmp_type, key, value),
            ("code", true) => put(&mut self.icmp_code, key, value),
            _ => Ok(false),
        }
    }
}

fn family_bytes(ip: IpAddr) -> (u8, [u8; 16]) {
    match ip {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (AF_INET, b)
        }
        IpAddr::V6(a) => (AF_INET6, a.octets()),
    }
}

/// Classifies an entry from its two tuples: `None` when it carries no NAT.
fn classify_entry(
    proto: Proto,
    orig: (IpAddr, IpAddr, u16, u16),
    reply: (IpAddr, IpAddr, u16, u16),
    zone: u16,
    at: Timestamp,
) -> Result<Option<Translation>, String> {
    let icmp = proto.is_icmp();
    let snat = reply.1 != orig.0 || (if icmp { reply.2 != orig.2 } else { reply.3 != orig.2 });
    let dnat = reply.0 != orig.1 || (!icmp && reply.2 != orig.3);
    let kind = match (snat, dnat) {
        (true, false) => NatKind::Snat,
        (false, true) => NatKind::Dnat,
        (true, true) => NatKind::Both,
        (false, false) => return Ok(None),
    };
    let tuple = |(s, d, sp, dp): (IpAddr, IpAddr, u16, u16)| -> Result<(u8, Tuple), String> {
        let (fs, src) = family_bytes(s);
        let (fd, dst) = family_bytes(d);
        if fs != fd {
            return Err("a tuple mixes IPv4 and IPv6 addresses".to_owned());
        }
        Ok((fs, Tuple { src, dst, src_port: sp.to_be(), dst_port: dp.to_be(), _pad: [0; 4] }))
    };
    let (fo, o) = tuple(orig)?;
    let (fr, r) = tuple(reply)?;
    if fo != fr {
        return Err("the original and reply tuples are of different address families".to_owned());
    }
    let ep = classify(kind, proto.0, &o, &r);
    Translation::from_endpoints(fo, proto.0, kind, &ep, zone, at)
        .map(Some)
        .ok_or_else(|| "unknown address family".to_owned())
}

/// Parses `[SECONDS.MICROSECONDS]`.
fn parse_bracket_time(tok: &str) -> Option<Timestamp> {
    let inner = tok.strip_prefix('[')?.strip_suffix(']')?;
    let (s, us) = inner.split_once('.').unwrap_or((inner, "0"));
    let s: i64 = s.parse().ok()?;
    if us.is_empty() || us.len() > 9 || !us.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Fraction digits, scaled to nanoseconds.
    let frac: i64 = us.parse().ok()?;
    let ns = frac * 10i64.pow(9 - us.len() as u32);
    Timestamp::new(s, ns as i32).ok()
}

/// Parses ctime(3)'s `Mon Jan  5 00:00:00 2026` as UTC.
fn parse_ctime(s: &str) -> Option<Timestamp> {
    let norm = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let dt = jiff::civil::DateTime::strptime("%a %b %d %H:%M:%S %Y", &norm).ok()?;
    dt.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// Reads a `conntrack -E -o timestamp[,extended]` line.
pub fn parse_conntrack_line(line: &str) -> Result<Line, String> {
    let mut toks = line.split_whitespace().peekable();
    let Some(first) = toks.next() else {
        return Ok(Line::Ignored("blank line"));
    };
    if first == "conntrack" && line.contains("flow events have been shown") {
        return Ok(Line::Ignored("conntrack's closing summary"));
    }
    let at = parse_bracket_time(first).ok_or_else(|| {
        format!("expected a [SECONDS.MICROSECONDS] time first (conntrack -E -o timestamp), found {first:?}")
    })?;
    let event = match toks.next() {
        Some("[NEW]") => CtEvent::New,
        Some("[DESTROY]") => CtEvent::Destroy,
        Some("[UPDATE]") => return Ok(Line::Ignored("UPDATE event")),
        other => {
            return Err(format!("expected [NEW], [UPDATE] or [DESTROY], found {other:?}"));
        }
    };
    // Extended output names the layer 3 protocol first.
    if toks.peek().is_some_and(|l3| *l3 == "ipv4" || *l3 == "ipv6") {
        toks.next();
        toks.next();
    }
    let _l4_name = toks.next().ok_or("missing protocol")?;
    let l4: u8 = toks
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or("expected the protocol number after its name")?;
    let proto = Proto(l4);
    let mut tuples = [LogTuple::default(); 2];
    let mut current: Option<usize> = None;
    let (mut zone, mut delta, mut start_str) = (0u16, None::<u64>, None::<String>);
    while let Some(tok) = toks.next() {
        if let Some(rest) = tok.strip_prefix("[start=") {
            // `[start=Mon Jan  5 00:00:00 2026]` spans several tokens.
            let mut s = rest.to_owned();
            let mut t = tok;
            while !t.ends_with(']') {
                match toks.next() {
                    Some(n) => {
                        s.push(' ');
                        s.push_str(n);
                        t = n;
                    }
                    None => return Err("unterminated [start=".to_owned()),
                }
            }
            start_str = Some(s.trim_end_matches(']').to_owned());
            continue;
        }
        if tok.starts_with("[stop=") {
            if !tok.ends_with(']') {
                for n in toks.by_ref() {
                    if n.ends_with(']') {
                        break;
                    }
                }
            }
            continue;
        }
        let Some((key, value)) = tok.split_once('=') else {
            // Timeout, TCP state, [UNREPLIED], [ASSURED] …
            continue;
        };
        if key == "src" {
            current = match current {
                None => Some(0),
                Some(0) => Some(1),
                Some(_) => return Err("more than two tuples".to_owned()),
            };
        }
        if let Some(i) = current
            && tuples[i].set(proto.is_icmp(), key, value)?
        {
            continue;
        }
        match key {
            "zone" => zone = value.parse().map_err(|_| format!("bad zone={value}"))?,
            "delta-time" => {
                delta = Some(value.parse().map_err(|_| format!("bad delta-time={value}"))?)
            }
            _ => {}
        }
    }
    if current != Some(1) {
        return Err("expected two tuples (src=… dst=… twice)".to_owned());
    }
    let icmp = proto.is_icmp();
    let orig = tuples[0].complete(icmp)?;
    let reply = tuples[1].complete(icmp)?;
    let Some(translation) = classify_entry(proto, orig, reply, zone, at)? else {
        return Ok(Line::NotNat);
    };
    let start = match (delta, start_str) {
        (Some(d), _) => i64::try_from(d)
            .ok()
            .and_then(|d| at.checked_sub(jiff::SignedDuration::from_secs(d)).ok()),
        (None, Some(s)) => Some(parse_ctime(&s).ok_or_else(|| format!("bad [start={s}]"))?),
        (None, None) => None,
    };
    Ok(Line::Record(LogRecord {
        event,
        at,
        start: if event == CtEvent::Destroy { start } else { None },
        translation,
    }))
}

/// The fields of a ulogd2 JSON line natrec reads (others are ignored). Addresses come from
/// IP2STR: `src_ip`/`dest_ip` (its CIM names) or the plain key names.
#[derive(Debug, Deserialize)]
struct UlogdLine<'a> {
    #[serde(rename = "ct.event")]
    event: Option<u32>,
    #[serde(rename = "orig.ip.protocol")]
    proto: Option<u8>,
    #[serde(borrow, rename = "src_ip", alias = "orig.ip.saddr.str", alias = "orig.ip.saddr")]
    orig_src: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "dest_ip", alias = "orig.ip.daddr.str", alias = "orig.ip.daddr")]
    orig_dst: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "reply.ip.saddr.str", alias = "reply.ip.saddr")]
    reply_src: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "reply.ip.daddr.str", alias = "reply.ip.daddr")]
    reply_dst: Option<Cow<'a, str>>,
    #[serde(rename = "orig.l4.sport")]
    orig_sport: Option<u16>,
    #[serde(rename = "orig.l4.dport")]
    orig_dport: Option<u16>,
    #[serde(rename = "reply.l4.sport")]
    reply_sport: Option<u16>,
    #[serde(rename = "reply.l4.dport")]
    reply_dport: Option<u16>,
    #[serde(rename = "flow.start.sec")]
    start_sec: Option<i64>,
    #[serde(rename = "flow.start.usec")]
    start_usec: Option<u32>,
    #[serde(rename = "flow.end.sec")]
    end_sec: Option<i64>,
    #[serde(rename = "flow.end.usec")]
    end_usec: Option<u32>,
    #[serde(borrow, alias = "@timestamp")]
    timestamp: Option<Cow<'a, str>>,
}

fn ulogd_addr(v: Option<&Cow<'_, str>>, key: &str) -> Result<IpAddr, String> {
    let s =
        v.ok_or_else(|| format!("no {key} field (the ulogd stack needs IP2STR before JSON)"))?;
    s.parse().map_err(|_| format!("{key} {s:?} is not an IP address"))
}

fn ulogd_time(
    sec: Option<i64>,
    usec: Option<u32>,
    what: &str,
) -> Result<Option<Timestamp>, String> {
    let Some(sec) = sec else {
        return Ok(None);
    };
    let usec = usec.unwrap_or(0);
    if usec >= 1_000_000 {
        return Err(format!("flow.{what}.usec {usec} is not below 1000000"));
    }
    Timestamp::new(sec, (usec * 1000) as i32).map(Some).map_err(|e| format!("flow.{what}.sec: {e}"))
}

/// Parses ulogd's `timestamp`: `2026-01-05T00:00:00+0000` (maybe with `.uuuuuu`), or, as
/// ulogd2 2.0.8 writes it, without an offset (`2026-11-24T22:56:40`): the gateway's local time,
/// read in the system time zone (`TZ`, `/etc/localtime`) of the importing machine.
fn parse_ulogd_timestamp(s: &str) -> Option<Timestamp> {
    if let Ok(t) =
        jiff::fmt::strtime::parse("%Y-%m-%dT%H:%M:%S%.f%z", s).and_then(|t| t.to_timestamp())
    {
        return Some(t);
    }
    let civil = jiff::fmt::strtime::parse("%Y-%m-%dT%H:%M:%S%.f", s).ok()?.to_datetime().ok()?;
    civil.to_zoned(jiff::tz::TimeZone::system()).ok().map(|z| z.timestamp())
}

/// Reads a line of ulogd2's JSON output (NFCT through IP2STR).
pub fn parse_ulogd_line(line: &str) -> Result<Line, String> {
    if line.trim().is_empty() {
        return Ok(Line::Ignored("blank line"));
    }
    let u: UlogdLine<'_> =
        serde_json::from_str(line).map_err(|e| format!("not a ulogd JSON object: {e}"))?;
    let event = match u.event {
        Some(1) => CtEvent::New,
        Some(4) => CtEvent::Destroy,
        Some(_) => return Ok(Line::Ignored("conntrack UPDATE event")),
        None => return Ok(Line::Ignored("not a conntrack event (no ct.event)")),
    };
    let proto = Proto(u.proto.ok_or("no orig.ip.protocol")?);
    let orig = (
        ulogd_addr(u.orig_src.as_ref(), "src_ip")?,
        ulogd_addr(u.orig_dst.as_ref(), "dest_ip")?,
        u.orig_sport.unwrap_or(0),
        u.orig_dport.unwrap_or(0),
    );
    let reply = (
        ulogd_addr(u.reply_src.as_ref(), "reply.ip.saddr.str")?,
        ulogd_addr(u.reply_dst.as_ref(), "reply.ip.daddr.str")?,
        u.reply_sport.unwrap_or(0),
        u.reply_dport.unwrap_or(0),
    );
    let start = ulogd_time(u.start_sec, u.start_usec, "start")?;
    let end = ulogd_time(u.end_sec, u.end_usec, "end")?;
    let stamp = match &u.timestamp {
        Some(s) => Some(parse_ulogd_timestamp(s).ok_or_else(|| format!("bad timestamp {s:?}"))?),
        None => None,
    };
    let at = match event {
        CtEvent::New => start.or(stamp),
        CtEvent::Destroy => end.or(stamp),
    }
    .ok_or("no time (flow.start.sec, flow.end.sec or timestamp)")?;
    let Some(translation) = classify_entry(proto, orig, reply, 0, at)? else {
        return Ok(Line::NotNat);
    };
    Ok(Line::Record(LogRecord {
        event,
        at,
        start: if event == CtEvent::Destroy { start } else { None },
        translation,
    }))
}

/// The two conntrack tuples that give `t` (the inverse of `classify`). For a hairpin (`Both`)
/// entry the address the inside host dialled is not recorded; the outside endpoint stands in.
fn tuples_of(t: &Translation) -> [(SocketAddr, SocketAddr); 2] {
    match t.kind {
        Kind::Snat => [(t.inside, t.remote), (t.remote, t.outside)],
        Kind::Dnat => [(t.remote, t.outside), (t.inside, t.remote)],
        Kind::Both => [(t.inside, t.outside), (t.remote, t.outside)],
    }
}

fn split_time(t: Timestamp) -> (i64, u32) {
    let ns = t.as_nanosecond();
    (ns.div_euclid(1_000_000_000) as i64, (ns.rem_euclid(1_000_000_000) / 1000) as u32)
}

fn l3_name(ip: IpAddr) -> (&'static str, u8) {
    match ip {
        IpAddr::V4(_) => ("ipv4", AF_INET),
        IpAddr::V6(_) => ("ipv6", AF_INET6),
    }
}

/// Appends `ev` as a `conntrack -E -o timestamp,extended` line (with its newline): a start as a
/// `[NEW]` line at its start time, an end as a `[DESTROY]` line at its end time with
/// `delta-time` (as with `nf_conntrack_timestamp=1`).
pub fn render_conntrack(ev: &FlowEvent, out: &mut String) {
    let t = ev.translation();
    let (new, at) = match ev {
        FlowEvent::Start(t) => (true, t.start),
        FlowEvent::End(t) => (false, t.end.unwrap_or(t.start)),
    };
    let (sec, usec) = split_time(at);
    let (l3, l3n) = l3_name(t.inside.ip());
    let l4 = t.proto.name().unwrap_or("unknown");
    let _ = write!(
        out,
        "[{sec:010}.{usec:06}]\t{:>9} {l3:<8} {l3n} {l4:<8} {} ",
        if new { "[NEW]" } else { "[DESTROY]" },
        t.proto.0
    );
    if new {
        let timeout = if t.proto == Proto::TCP { "120 SYN_SENT " } else { "30 " };
        out.push_str(timeout);
    }
    let tuples = tuples_of(t);
    // ICMP echo ids: the original one is the inside's (the outside's for DNAT), the reply's the
    // other one.
    let ids = if t.kind == Kind::Dnat {
        [t.outside.port(), t.inside.port()]
    } else {
        [t.inside.port(), t.outside.port()]
    };
    for (i, (src, dst)) in tuples.iter().enumerate() {
        let _ = write!(out, "src={} dst={} ", src.ip(), dst.ip());
        if t.proto.is_icmp() {
            let (req, rep) = if t.proto == Proto::ICMP { (8, 0) } else { (128, 129) };
            let _ = write!(out, "type={} code=0 id={} ", if i == 0 { req } else { rep }, ids[i]);
        } else {
            let _ = write!(out, "sport={} dport={} ", src.port(), dst.port());
        }
        if i == 0 && new {
            out.push_str("[UNREPLIED] ");
        }
    }
    if !new {
        if t.proto == Proto::TCP {
            out.push_str("[ASSURED] ");
        }
        if t.zone != 0 {
            let _ = write!(out, "zone={} ", t.zone);
        }
        let (start_sec, _) = split_time(t.start);
        let _ = write!(out, "delta-time={} ", (sec - start_sec).max(0));
    } else if t.zone != 0 {
        let _ = write!(out, "zone={} ", t.zone);
    }
    out.pop();
    out.push('\n');
}

/// Appends `ev` as a line of ulogd2's JSON output (NFCT through IP2STR, `ct.event` 1 or 4) with
/// its newline. `timestamp` is the event's time in UTC; `ct.id` is derived from the key and
/// start. Zones are not part of ulogd's NFCT keys and are lost.
pub fn render_ulogd_json(ev: &FlowEvent, out: &mut String) {
    let t = ev.translation();
    let (new, at) = match ev {
        FlowEvent::Start(t) => (true, t.start),
        FlowEvent::End(t) => (false, t.end.unwrap_or(t.start)),
    };
    let [(os, od), (rs, rd)] = tuples_of(t);
    let stamp = at.to_zoned(jiff::tz::TimeZone::UTC).strftime("%Y-%m-%dT%H:%M:%S+0000").to_string();
    let mut h = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&(t.key(), t.start), &mut h);
    let id = std::hash::Hasher::finish(&h) as u32;
    let p = t.proto.0;
    let _ =
        write!(out, r#"{{"timestamp": "{stamp}", "dvc": "Netfilter", "orig.ip.protocol": {p}, "#);
    if t.proto.is_icmp() {
        let _ = write!(
            out,
            r#""orig.raw.pktlen": 0, "orig.raw.pktcount": 0, "reply.ip.protocol": {p}, "reply.raw.pktlen": 0, "reply.raw.pktcount": 0, "icmp.code": 0, "icmp.type": 8, "#
        );
    } else {
        let _ = write!(
            out,
            r#""orig.l4.sport": {}, "orig.l4.dport": {}, "orig.raw.pktlen": 0, "orig.raw.pktcount": 0, "reply.ip.protocol": {p}, "reply.l4.sport": {}, "reply.l4.dport": {}, "reply.raw.pktlen": 0, "reply.raw.pktcount": 0, "#,
            os.port(),
            od.port(),
            rs.port(),
            rd.port()
        );
    }
    let (ss, su) = split_time(t.start);
    let _ = write!(
        out,
        r#""ct.mark": 0, "ct.id": {id}, "ct.event": {}, "flow.start.sec": {ss}, "flow.start.usec": {su}, "#,
        if new { 1 } else { 4 }
    );
    if !new {
        let (es, eu) = split_time(at);
        let _ = write!(out, r#""flow.end.sec": {es}, "flow.end.usec": {eu}, "#);
    }
    let _ = writeln!(
        out,
        r#""oob.family": {}, "oob.protocol": 0, "src_ip": "{}", "dest_ip": "{}", "reply.ip.saddr.str": "{}", "reply.ip.daddr.str": "{}"}}"#,
        l3_name(os.ip()).1,
        os.ip(),
        od.ip(),
        rs.ip(),
        rd.ip()
    );
}

/// Appends `ev` as a natrec JSON Lines line (with its newline).
pub fn render_jsonl(ev: &FlowEvent, out: &mut String) -> Result<(), serde_json::Error> {
    out.push_str(&serde_json::to_string(ev)?);
    out.push('\n');
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulogd_timestamps_with_and_without_an_offset_parse() {
        let utc: Timestamp = "2026-11-24T22:56:40Z".parse().expect("time");
        assert_eq!(parse_ulogd_timestamp("2026-11-24T23:56:40+0100"), Some(utc));
        assert_eq!(
            parse_ulogd_timestamp("2026-11-24T22:56:40.250000+0000"),
            Some(utc + jiff::SignedDuration::from_millis(250))
        );
        // ulogd2 2.0.8: local time without an offset.
        let local = jiff::civil::date(2026, 11, 24)
            .at(22, 56, 40, 0)
            .to_zoned(jiff::tz::TimeZone::system())
            .expect("local")
            .timestamp();
        assert_eq!(parse_ulogd_timestamp("2026-11-24T22:56:40"), Some(local));
        assert_eq!(parse_ulogd_timestamp("yesterday"), None);
    }
    use crate::synth::{self, Limit, ProtoMix, WorkloadParams};

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    fn import(format: Format, text: &str) -> (Vec<FlowEvent>, ImportReport) {
        let mut imp = Importer::new(format);
        imp.set_source("test.log");
        let mut out = Vec::new();
        for (i, l) in text.lines().enumerate() {
            imp.line(i as u64 + 1, l, &mut out);
        }
        (out, imp.finish())
    }

    const NEW_TCP: &str = "[1767571200.123456]\t    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=10.0.0.2 dst=198.51.100.7 sport=40000 dport=443 [UNREPLIED] src=198.51.100.7 dst=100.64.0.1 sport=443 dport=40001";
    const DESTROY_TCP: &str = "[1767571230.000001]\t[DESTROY] ipv4     2 tcp      6 src=10.0.0.2 dst=198.51.100.7 sport=40000 dport=443 src=198.51.100.7 dst=100.64.0.1 sport=443 dport=40001 [ASSURED] mark=0 delta-time=30 use=1 id=3735928559";

    #[test]
    fn conntrack_new_and_destroy_pair_into_one_translation() {
        let (out, rep) = import(Format::Conntrack, &format!("{NEW_TCP}\n{DESTROY_TCP}\n"));
        let start = Translation {
            kind: Kind::Snat,
            proto: Proto::TCP,
            inside: "10.0.0.2:40000".parse().expect("addr"),
            outside: "100.64.0.1:40001".parse().expect("addr"),
            remote: "198.51.100.7:443".parse().expect("addr"),
            zone: 0,
            start: ts("2026-01-05T00:00:00.123456Z"),
            end: None,
            flags: Flags::empty(),
        };
        let end = Translation { end: Some(ts("2026-01-05T00:00:30.000001Z")), ..start.clone() };
        assert_eq!(out, vec![FlowEvent::Start(start), FlowEvent::End(end)]);
        assert_eq!((rep.lines, rep.translations, rep.starts, rep.ends), (2, 1, 1, 1));
        assert_eq!((rep.end_only, rep.open_at_end, rep.malformed), (0, 0, 0));
    }

    #[test]
    fn destroy_without_new_is_end_only_with_start_from_delta_time_or_start_field() {
        let (out, rep) = import(Format::Conntrack, DESTROY_TCP);
        let [FlowEvent::End(t)] = out.as_slice() else { panic!("expected one end, got {out:?}") };
        assert_eq!(t.flags, Flags::END_ONLY);
        assert_eq!(t.start, ts("2026-01-05T00:00:00.000001Z"));
        assert_eq!(t.end, Some(ts("2026-01-05T00:00:30.000001Z")));
        assert_eq!((rep.end_only, rep.translations), (1, 1));

        let line = "[1767571230.000001]\t[DESTROY] ipv4     2 udp      17 src=10.0.0.2 dst=203.0.113.1 sport=5353 dport=53 src=203.0.113.1 dst=100.64.0.1 sport=53 dport=5353 [start=Sun Jan  4 23:59:59 2026] [stop=Mon Jan  5 00:00:30 2026]";
        let (out, _) = import(Format::Conntrack, line);
        assert_eq!(out[0].translation().start, ts("2026-01-04T23:59:59Z"));
        assert_eq!(out[0].translation().proto, Proto::UDP);

        // Without either, the start is the end, flagged approximate.
        let line = "[1767571230.5]\t[DESTROY] udp      17 src=10.0.0.2 dst=203.0.113.1 sport=5353 dport=53 src=203.0.113.1 dst=100.64.0.1 sport=53 dport=5353";
        let (out, rep) = import(Format::Conntrack, line);
        assert_eq!(rep.malformed_samples, vec![]);
        assert_eq!(out[0].translation().start, ts("2026-01-05T00:00:30.5Z"));
        assert_eq!(out[0].translation().flags, Flags::END_ONLY.union(Flags::START_APPROX));
    }

    #[test]
    fn conntrack_icmp_dnat_and_zone_are_classified() {
        let icmp = "[1767571200.000000]\t    [NEW] ipv4     2 icmp     1 30 src=10.0.0.2 dst=198.51.100.7 type=8 code=0 id=77 [UNREPLIED] src=198.51.100.7 dst=100.64.0.1 type=0 code=0 id=1024 zone=7 id=12345";
        let Line::Record(r) = parse_conntrack_line(icmp).expect("parse") else {
            panic!("not a record")
        };
        let t = r.translation;
        assert_eq!((t.kind, t.proto, t.zone), (Kind::Snat, Proto::ICMP, 7));
        assert_eq!(t.inside, "10.0.0.2:77".parse().expect("addr"));
        assert_eq!(t.outside, "100.64.0.1:1024".parse().expect("addr"));
        assert_eq!(t.remote, "198.51.100.7:0".parse().expect("addr"));

        let dnat = "[1767571200.000000]\t    [NEW] ipv6     10 tcp      6 120 SYN_SENT src=2001:db8::7 dst=2001:db8:ffff::1 sport=50000 dport=8080 [UNREPLIED] src=fd00::2 dst=2001:db8::7 sport=80 dport=50000";
        let Line::Record(r) = parse_conntrack_line(dnat).expect("parse") else {
            panic!("not a record")
        };
        let t = r.translation;
        assert_eq!(t.kind, Kind::Dnat);
        assert_eq!(t.inside, "[fd00::2]:80".parse().expect("addr"));
        assert_eq!(t.outside, "[2001:db8:ffff::1]:8080".parse().expect("addr"));
        assert_eq!(t.remote, "[2001:db8::7]:50000".parse().expect("addr"));
    }

    #[test]
    fn non_nat_update_and_malformed_lines_are_counted_never_fatal() {
        let text = [
            "[1767571200.000000]\t    [NEW] ipv4     2 udp      17 30 src=10.0.0.2 dst=10.0.0.3 sport=5000 dport=53 [UNREPLIED] src=10.0.0.3 dst=10.0.0.2 sport=53 dport=5000",
            "[1767571200.100000]\t [UPDATE] ipv4     2 tcp      6 60 SYN_RECV src=10.0.0.2 dst=198.51.100.7 sport=40000 dport=443 src=198.51.100.7 dst=100.64.0.1 sport=443 dport=40001",
            "    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=10.0.0.2 dst=198.51.100.7 sport=1 dport=2 src=198.51.100.7 dst=100.64.0.1 sport=2 dport=1",
            "[1767571200.200000]\t    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=10.0.0.2 dst=198.51.100.7 sport=70000 dport=443 src=198.51.100.7 dst=100.64.0.1 sport=443 dport=1",
            "",
            NEW_TCP,
            "[1767571200.300000]\t    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=10.0.0.2 dst=198.51.100.7",
            "conntrack v1.4.8 (conntrack-tools): 5 flow events have been shown.",
        ]
        .join("\n");
        let (out, rep) = import(Format::Conntrack, &text);
        assert_eq!(out.len(), 1);
        assert_eq!((rep.lines, rep.non_nat, rep.ignored, rep.malformed), (8, 1, 3, 3));
        let lines: Vec<u64> = rep.malformed_samples.iter().map(|m| m.line).collect();
        assert_eq!(lines, vec![3, 4, 7]);
        assert!(rep.malformed_samples[0].reason.contains("conntrack -E -o timestamp"));
        assert!(rep.malformed_samples[1].reason.contains("sport=70000"));
        assert_eq!(rep.malformed_samples[2].source, "test.log");
        assert_eq!(rep.open_at_end, 1);
    }

    #[test]
    fn only_the_first_ten_malformed_lines_are_kept_but_all_are_counted() {
        let text = "garbage\n".repeat(25);
        let (_, rep) = import(Format::UlogdJson, &text);
        assert_eq!(rep.malformed, 25);
        assert_eq!(rep.malformed_samples.len(), ImportReport::SAMPLES);
        assert_eq!(rep.malformed_samples[9].line, 10);
    }

    #[test]
    fn a_second_new_for_an_open_key_ends_the_first_approximately() {
        let again = NEW_TCP.replace("1767571200.123456", "1767571300.000000");
        let (out, rep) = import(Format::Conntrack, &format!("{NEW_TCP}\n{again}\n"));
        assert_eq!(out.len(), 3);
        let FlowEvent::End(lost) = &out[1] else { panic!("expected an end, got {:?}", out[1]) };
        assert_eq!(lost.flags, Flags::END_APPROX);
        assert_eq!(lost.end, Some(ts("2026-01-05T00:01:40Z")));
        assert_eq!((rep.lost_ends, rep.translations, rep.open_at_end), (1, 2, 1));
    }

    fn workload(mix: ProtoMix, ipv6_share: f64) -> Vec<FlowEvent> {
        let p = WorkloadParams {
            subscribers: 300,
            outside_pool: 2,
            remotes: 1_000,
            flows_per_second: 500.0,
            limit: Limit::Flows(5_000),
            resolution_ns: 1_000,
            dnat_share: 0.05,
            ipv6_share,
            mix,
            seed: 9,
            ..WorkloadParams::default()
        };
        synth::events(&p).expect("params").collect()
    }

    fn assert_same(got: &[FlowEvent], want: &[FlowEvent], what: &str) {
        if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
            panic!("{what}: event {i} differs:\n got {:?}\nwant {:?}", got[i], want[i]);
        }
        assert_eq!(got.len(), want.len(), "{what}: event count");
    }

    fn round_trip(format: Format, events: &[FlowEvent]) -> (Vec<FlowEvent>, ImportReport) {
        let mut text = String::new();
        for ev in events {
            render(format, ev, &mut text).expect("render");
        }
        import(format, &text)
    }

    #[test]
    fn synthetic_workload_round_trips_through_every_format() {
        let mix = ProtoMix { tcp: 0.5, udp: 0.45, icmp: 0.05 };
        let events = workload(mix, 0.1);
        assert!(events.iter().any(|e| e.translation().kind == Kind::Dnat));
        for format in [Format::Jsonl, Format::Conntrack] {
            let (out, rep) = round_trip(format, &events);
            assert_eq!(rep.malformed_samples, vec![], "{format}");
            assert_same(&out, &events, format.name());
            assert_eq!(rep.translations, 5_000);
            assert_eq!(
                (rep.end_only, rep.open_at_end, rep.lost_ends, rep.out_of_order),
                (0, 0, 0, 0)
            );
        }
        // ulogd does not log ICMP echo ids: compare without ICMP.
        let events = workload(ProtoMix { icmp: 0.0, ..mix }, 0.1);
        let (out, rep) = round_trip(Format::UlogdJson, &events);
        assert_eq!(rep.malformed_samples, vec![]);
        assert_same(&out, &events, "ulogd-json");
    }

    #[test]
    fn ulogd_icmp_has_no_echo_id_and_timestamp_is_a_fallback() {
        let line = r#"{"timestamp": "2026-01-05T01:00:00+0100", "dvc": "Netfilter", "orig.ip.protocol": 1, "icmp.code": 0, "icmp.type": 8, "ct.event": 1, "oob.family": 2, "src_ip": "10.0.0.2", "dest_ip": "198.51.100.7", "reply.ip.saddr.str": "198.51.100.7", "reply.ip.daddr.str": "100.64.0.1"}"#;
        let Line::Record(r) = parse_ulogd_line(line).expect("parse") else {
            panic!("not a record")
        };
        assert_eq!(r.at, ts("2026-01-05T00:00:00Z"));
        assert_eq!(r.translation.proto, Proto::ICMP);
        assert_eq!(r.translation.outside, "100.64.0.1:0".parse().expect("addr"));
        // Addresses as raw keys (no IP2STR) are not in ulogd's JSON at all.
        // Escaped strings are read too; a port of the wrong type is malformed.
        let escaped = line.replace(r#""src_ip": "10.0.0.2""#, r#""src_ip": "10.0.0.\u0032""#);
        assert_ne!(escaped, line);
        assert_eq!(parse_ulogd_line(&escaped), parse_ulogd_line(line));
        let bad_port = r#"{"ct.event": 1, "orig.ip.protocol": 6, "orig.l4.sport": "80", "flow.start.sec": 1, "src_ip": "10.0.0.2", "dest_ip": "198.51.100.7", "reply.ip.saddr.str": "198.51.100.7", "reply.ip.daddr.str": "100.64.0.1"}"#;
        assert!(parse_ulogd_line(bad_port).is_err());
        let bare = r#"{"ct.event": 1, "orig.ip.protocol": 6, "flow.start.sec": 1}"#;
        let err = parse_ulogd_line(bare).expect_err("no addresses");
        assert!(err.contains("IP2STR"), "{err}");
        assert_eq!(
            parse_ulogd_line(r#"{"oob.prefix": "x"}"#),
            Ok(Line::Ignored("not a conntrack event (no ct.event)"))
        );
    }

    #[test]
    fn jsonl_passes_events_through_and_counts_them() {
        let events = workload(ProtoMix { tcp: 1.0, udp: 0.0, icmp: 0.0 }, 0.0);
        let mut text = String::new();
        // Drop the first 100 starts: their ends become end-only in the count (not flagged).
        let mut dropped = 0;
        for ev in &events {
            if matches!(ev, FlowEvent::Start(_)) && dropped < 100 {
                dropped += 1;
                continue;
            }
            render_jsonl(ev, &mut text).expect("render");
        }
        text.push_str("{\"event\":\"bogus\"}\n");
        let (out, rep) = import(Format::Jsonl, &text);
        assert_eq!(out.len(), events.len() - 100);
        assert_eq!(
            (rep.starts, rep.ends, rep.translations, rep.malformed),
            (4_900, 5_000, 5_000, 1)
        );
    }

    #[test]
    fn out_of_order_lines_are_imported_and_counted() {
        let earlier =
            NEW_TCP.replace("1767571200.123456", "1767571100.000000").replace("40000", "40002");
        let (out, rep) = import(Format::Conntrack, &format!("{NEW_TCP}\n{earlier}\n"));
        assert_eq!(out.len(), 2);
        assert_eq!(rep.out_of_order, 1);
    }

    #[test]
    fn rendered_conntrack_lines_have_conntracks_layout() {
        let mut s = String::new();
        let Ok(Line::Record(r)) = parse_conntrack_line(NEW_TCP) else { panic!("parse") };
        render_conntrack(&FlowEvent::Start(r.translation.clone()), &mut s);
        assert_eq!(s, format!("{NEW_TCP}\n"));
        let end = Translation { end: Some(ts("2026-01-05T00:00:30.000001Z")), ..r.translation };
        s.clear();
        render_conntrack(&FlowEvent::End(end), &mut s);
        assert_eq!(
            s,
            "[1767571230.000001]\t[DESTROY] ipv4     2 tcp      6 src=10.0.0.2 dst=198.51.100.7 sport=40000 dport=443 src=198.51.100.7 dst=100.64.0.1 sport=443 dport=40001 [ASSURED] delta-time=30\n"
        );
    }
}
