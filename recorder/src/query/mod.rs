//! Answers "who held outside X:Y (talking to Z) at T" — and what an inside host or a remote did
//! in a time range — from any [`TranslationSource`].
//!
//! An answer names inside endpoints (and their accounts, when a [`SubscriberMap`] is given),
//! never a person. It never claims more than the data shows: when several inside endpoints
//! match, [`Answer::ambiguity`] says how many and which extra fact would tell them apart; when a
//! time is approximate, lies outside the retained data, or part of the store was damaged,
//! [`Answer::notes`] says so.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::lookup::{Damage, EndpointMatch, Filter, ScanReport, TranslationSource};
use crate::model::{Flags, Proto, Translation};

mod output;
pub mod subscribers;
pub mod time;

pub use output::{SummaryRow, TranslationRow, write_csv, write_jsonl, write_table};
pub use subscribers::{SubscriberError, SubscriberMap};
pub use time::{DEFAULT_WINDOW, TimeError, parse_duration, parse_time, parse_tz};

/// Why a query could not be asked or answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("expected an IP address or IP:PORT (IPv6 with a port as [ADDR]:PORT), got {0:?}")]
    BadEndpoint(String),
    #[error("the range is reversed: the start {from} is after the end {to}")]
    ReversedRange { from: Timestamp, to: Timestamp },
    #[error("the window of {window} around {at} leaves the supported time range")]
    WindowOutOfRange { at: Timestamp, window: SignedDuration },
    #[error("expected at least one endpoint to look for (outside, inside or remote)")]
    NoEndpoint,
    #[error("reading the store")]
    Source(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Reads `IP`, `IP:PORT`, `[IPv6]:PORT` or a bare IPv6 address.
pub fn parse_endpoint(s: &str) -> Result<EndpointMatch, QueryError> {
    let t = s.trim();
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(EndpointMatch { ip, port: None });
    }
    if let Ok(sa) = t.parse::<SocketAddr>() {
        return Ok(EndpointMatch { ip: sa.ip(), port: Some(sa.port()) });
    }
    if let Some(inner) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']'))
        && let Ok(ip) = inner.parse::<IpAddr>()
    {
        return Ok(EndpointMatch { ip, port: None });
    }
    Err(QueryError::BadEndpoint(s.to_owned()))
}

/// Writes an endpoint match as the operator would type it.
pub fn endpoint_text(m: &EndpointMatch) -> String {
    match (m.ip, m.port) {
        (ip, Some(p)) => SocketAddr::new(ip, p).to_string(),
        (ip, None) => ip.to_string(),
    }
}

/// The time a query is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// An instant reported by someone else, give or take `window` (clock skew).
    At { at: Timestamp, window: SignedDuration },
    /// Every translation whose lifetime touches `[from, to]`.
    Range { from: Timestamp, to: Timestamp },
}

impl When {
    /// The inclusive interval the store is asked about.
    pub fn interval(&self) -> Result<(Timestamp, Timestamp), QueryError> {
        match *self {
            When::At { at, window } => {
                let oor = || QueryError::WindowOutOfRange { at, window };
                let window = window.abs();
                Ok((
                    at.checked_sub(window).map_err(|_| oor())?,
                    at.checked_add(window).map_err(|_| oor())?,
                ))
            }
            When::Range { from, to } if from > to => Err(QueryError::ReversedRange { from, to }),
            When::Range { from, to } => Ok((from, to)),
        }
    }
}

/// A question: endpoints to match (at least one), a protocol, a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub outside: Option<EndpointMatch>,
    pub inside: Option<EndpointMatch>,
    pub remote: Option<EndpointMatch>,
    pub proto: Option<Proto>,
    pub when: When,
}

impl Query {
    /// The filter the store is asked with.
    pub fn filter(&self) -> Result<Filter, QueryError> {
        if self.outside.is_none() && self.inside.is_none() && self.remote.is_none() {
            return Err(QueryError::NoEndpoint);
        }
        let (from, to) = self.when.interval()?;
        Ok(Filter {
            from,
            to,
            proto: self.proto,
            outside: self.outside,
            inside: self.inside,
            remote: self.remote,
        })
    }
}

/// The question of an abuse report: who held `outside` (towards `remote`) at `at`?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutsideQuery {
    pub outside: EndpointMatch,
    pub remote: Option<EndpointMatch>,
    pub proto: Option<Proto>,
    pub at: Timestamp,
    /// Half-width of the window around `at` ([`DEFAULT_WINDOW`] is the usual choice).
    pub window: SignedDuration,
}

impl From<OutsideQuery> for Query {
    fn from(q: OutsideQuery) -> Self {
        Query {
            outside: Some(q.outside),
            inside: None,
            remote: q.remote,
            proto: q.proto,
            when: When::At { at: q.at, window: q.window },
        }
    }
}

/// One matching translation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub translation: Translation,
    /// For a query at an instant: whether the lifetime covers the instant itself (not only the
    /// window around it).
    pub at_instant: Option<bool>,
    /// The inside endpoint's account, when a subscriber map was given and holds it.
    pub account: Option<String>,
}

/// A fact that would tell the matching inside endpoints apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Separator {
    /// The query named an outside address without a port, and they held different ports of it:
    /// `--outside IP:PORT` separates them.
    OutsidePort,
    /// They talked to different remotes: `--remote IP[:PORT]` separates them.
    Remote,
    /// Same remote address, different remote ports: give the remote's port.
    RemotePort,
    /// Different protocols: `--proto`.
    Proto,
    /// They held the endpoint one after another: a narrower time separates them.
    Time,
    /// Exactly one held it at the instant itself; the others only within the window.
    Window,
}

/// Why an answer names more than one inside endpoint, and how to narrow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ambiguity {
    /// How many distinct inside endpoints (zone, ip:port) matched.
    pub distinct_inside: usize,
    /// Extra facts each of which alone would tell them apart (empty: none would).
    pub separated_by: Vec<Separator>,
    /// When every candidate is on one inside host (differing only in port), that host.
    pub one_host: Option<IpAddr>,
    /// One sentence for the operator.
    pub hint: String,
}

/// Something the operator must know to read an answer right.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// The end event was lost: the true end is at or before `end`.
    EndApprox { inside: SocketAddr, outside: SocketAddr, end: Timestamp },
    /// The start is when natrec first saw the entry: the true start is at or before it.
    StartApprox { inside: SocketAddr, outside: SocketAddr, start: Timestamp },
    /// The store holds nothing at all.
    NoData,
    /// Part of the asked interval is before the oldest retained data.
    BeforeRetained { earliest: Timestamp },
    /// Part of the asked interval is after the newest data written.
    AfterRetained { latest: Timestamp },
    /// A damaged segment or block was skipped; the answer may miss translations it held.
    Damaged(Damage),
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::EndApprox { inside, outside, end } => write!(
                f,
                "the end of {inside} -> {outside} is approximate (its end event was lost): it ended at or before {end}"
            ),
            Note::StartApprox { inside, outside, start } => write!(
                f,
                "the start of {inside} -> {outside} is approximate (first seen by natrec): it began at or before {start}"
            ),
            Note::NoData => f.write_str("the store holds no translations"),
            Note::BeforeRetained { earliest } => write!(
                f,
                "the asked time reaches before the oldest retained data ({earliest}): translations before it are not known"
            ),
            Note::AfterRetained { latest } => write!(
                f,
                "the asked time reaches after the newest data written ({latest}): later translations are not known yet"
            ),
            Note::Damaged(d) => {
                write!(f, "damaged {}", d.segment.display())?;
                if let Some(b) = d.block {
                    write!(f, " block {b}")?;
                }
                write!(f, " skipped ({}): the answer may miss translations it held", d.reason)
            }
        }
    }
}

/// The answer to a [`Query`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub query: Query,
    /// The interval the store was asked about.
    pub from: Timestamp,
    pub to: Timestamp,
    /// Every matching translation, by start time.
    pub candidates: Vec<Candidate>,
    /// How many distinct inside endpoints (zone, ip:port) matched.
    pub distinct_inside: usize,
    /// Set when a query about an outside endpoint matched several inside endpoints.
    pub ambiguity: Option<Ambiguity>,
    pub notes: Vec<Note>,
    /// What the store did.
    pub report: ScanReport,
    /// Fractional digits of the seconds in output times: the store's resolution (3 for
    /// milliseconds); `None` prints as many as a time needs.
    pub precision: Option<usize>,
}

impl Answer {
    /// Whether anything matched (exit status 0 rather than 1).
    pub fn found(&self) -> bool {
        !self.candidates.is_empty()
    }

    /// Names each candidate's account from a subscriber map; when an ambiguous answer's
    /// candidates all belong to one account, the hint says so (the account is then certain).
    pub fn label_accounts(&mut self, map: &SubscriberMap) {
        for c in &mut self.candidates {
            c.account = map.lookup(c.translation.inside.ip()).map(str::to_owned);
        }
        let accounts: HashSet<Option<&str>> =
            self.candidates.iter().map(|c| c.account.as_deref()).collect();
        if let (Some(amb), [Some(account)]) =
            (&mut self.ambiguity, accounts.into_iter().collect::<Vec<_>>().as_slice())
        {
            amb.hint.push_str(&format!("; all of them belong to account {account}"));
        }
    }
}

/// Asks `source` a query and builds an honest answer.
pub fn ask<S>(source: &S, query: &Query) -> Result<Answer, QueryError>
where
    S: TranslationSource + ?Sized,
{
    let filter = query.filter()?;
    let mut found: Vec<Translation> = Vec::new();
    let report = source
        .scan(&filter, &mut |t| found.push(t.clone()))
        .map_err(|e| QueryError::Source(Box::new(e)))?;
    found.sort_by(|a, b| {
        (a.start, a.inside, a.outside, a.remote, a.proto, a.zone)
            .cmp(&(b.start, b.inside, b.outside, b.remote, b.proto, b.zone))
    });
    let at = match query.when {
        When::At { at, .. } => Some(at),
        When::Range { .. } => None,
    };
    let candidates: Vec<Candidate> = found
        .into_iter()
        .map(|translation| Candidate {
            at_instant: at.map(|at| translation.overlaps(at, at)),
            translation,
            account: None,
        })
        .collect();
    let distinct_inside = candidates
        .iter()
        .map(|c| (c.translation.zone, c.translation.inside))
        .collect::<HashSet<_>>()
        .len();
    let ambiguity = match &query.outside {
        Some(outside) if distinct_inside > 1 => {
            Some(ambiguity(query, outside, &candidates, distinct_inside))
        }
        _ => None,
    };
    let notes = notes(&filter, &candidates, &report);
    Ok(Answer {
        query: query.clone(),
        from: filter.from,
        to: filter.to,
        candidates,
        distinct_inside,
        ambiguity,
        notes,
        report,
        precision: None,
    })
}

/// Who held an outside endpoint at an instant: [`ask`] for an abuse report.
pub fn who_held<S>(source: &S, q: &OutsideQuery) -> Result<Answer, QueryError>
where
    S: TranslationSource + ?Sized,
{
    ask(source, &Query::from(*q))
}

/// Above this many candidates the pairwise analysis of what separates them is skipped.
const ANALYSIS_LIMIT: usize = 20_000;

type InsideKey = (u16, SocketAddr);

fn key(t: &Translation) -> InsideKey {
    (t.zone, t.inside)
}

/// Whether every value of `f` is seen with one inside endpoint only (so the value separates).
fn separates<V: std::hash::Hash + Eq>(cands: &[Candidate], f: impl Fn(&Translation) -> V) -> bool {
    let mut owner: HashMap<V, InsideKey> = HashMap::new();
    cands.iter().all(|c| {
        let k = key(&c.translation);
        *owner.entry(f(&c.translation)).or_insert(k) == k
    })
}

/// Whether no two candidates of different inside endpoints were alive at the same time.
fn disjoint_in_time(cands: &[Candidate]) -> bool {
    // Candidates are sorted by start; keep the ones still alive at each start.
    let mut alive: Vec<(Option<Timestamp>, InsideKey)> = Vec::new();
    for c in cands {
        let t = &c.translation;
        alive.retain(|(end, _)| end.is_none_or(|e| e >= t.start));
        if alive.iter().any(|(_, k)| *k != key(t)) {
            return false;
        }
        alive.push((t.end, key(t)));
    }
    true
}

fn ambiguity(query: &Query, outside: &EndpointMatch, cands: &[Candidate], n: usize) -> Ambiguity {
    let what = endpoint_text(outside);
    let hosts: HashSet<(u16, IpAddr)> =
        cands.iter().map(|c| (c.translation.zone, c.translation.inside.ip())).collect();
    let one_host = (hosts.len() == 1).then(|| cands[0].translation.inside.ip());
    let mut hint = format!("{n} inside endpoints held {what} in the asked time");
    if let Some(host) = one_host {
        hint.push_str(&format!(", all on one inside host {host} (different ports)"));
    }
    if cands.len() > ANALYSIS_LIMIT {
        hint.push_str(&format!(
            "; too many matches ({}) to analyse: narrow the query",
            cands.len()
        ));
        return Ambiguity { distinct_inside: n, separated_by: Vec::new(), one_host, hint };
    }
    let mut seps = Vec::new();
    let mut advice = Vec::new();
    let concurrent = !disjoint_in_time(cands);
    if outside.port.is_none() && separates(cands, |t| t.outside.port()) {
        seps.push(Separator::OutsidePort);
        advice.push(format!(
            "they held {} different ports of {what}: give the port the report names, --outside {what}:PORT",
            cands.iter().map(|c| c.translation.outside.port()).collect::<HashSet<_>>().len()
        ));
    }
    if query.remote.is_none() && separates(cands, |t| t.remote.ip()) {
        seps.push(Separator::Remote);
        advice.push(format!(
            "they talked to {} different remotes{}: add --remote IP[:PORT]",
            cands.iter().map(|c| c.translation.remote.ip()).collect::<HashSet<_>>().len(),
            if concurrent {
                " at the same time (one outside port is shared across remotes)"
            } else {
                ""
            }
        ));
    } else if query.remote.is_none_or(|r| r.port.is_none()) && separates(cands, |t| t.remote) {
        seps.push(Separator::RemotePort);
        advice.push(
            "they talked to different remote ports: give --remote IP:PORT with the port".to_owned(),
        );
    }
    if query.proto.is_none() && separates(cands, |t| t.proto) {
        seps.push(Separator::Proto);
        advice.push("they used different protocols: add --proto".to_owned());
    }
    if !concurrent {
        seps.push(Separator::Time);
        advice.push(
            "they held it one after another (the port was reused over time): narrow the time"
                .to_owned(),
        );
    }
    if let When::At { at, window } = query.when {
        let at_instant: HashSet<InsideKey> = cands
            .iter()
            .filter(|c| c.at_instant == Some(true))
            .map(|c| key(&c.translation))
            .collect();
        if at_instant.len() == 1 && !window.is_zero() {
            let (zone, inside) =
                at_instant.into_iter().next().unwrap_or((0, cands[0].translation.inside));
            seps.push(Separator::Window);
            let zone = if zone == 0 { String::new() } else { format!(" (zone {zone})") };
            advice.push(format!(
                "only {inside}{zone} held it at {at} itself, the others within ±{window:#}: \
                 if both clocks agree, --window 0 leaves that one"
            ));
        }
    }
    if advice.is_empty() {
        let port = if outside.port.is_none() { "an outside port, " } else { "" };
        advice.push(format!(
            "neither {port}--remote, --proto nor a narrower time tells them apart from this data \
             (they overlap in time towards the same remote, e.g. in different conntrack zones)"
        ));
    }
    hint.push_str(": ");
    hint.push_str(&advice.join("; or "));
    Ambiguity { distinct_inside: n, separated_by: seps, one_host, hint }
}

fn notes(filter: &Filter, cands: &[Candidate], report: &ScanReport) -> Vec<Note> {
    let mut notes = Vec::new();
    match report.coverage {
        None if report.damage.is_empty() => notes.push(Note::NoData),
        None => {}
        Some((earliest, latest)) => {
            if filter.from < earliest {
                notes.push(Note::BeforeRetained { earliest });
            }
            if filter.to > latest {
                notes.push(Note::AfterRetained { latest });
            }
        }
    }
    for c in cands {
        let t = &c.translation;
        if t.flags.contains(Flags::START_APPROX) {
            notes.push(Note::StartApprox { inside: t.inside, outside: t.outside, start: t.start });
        }
        if t.flags.contains(Flags::END_APPROX)
            && let Some(end) = t.end
        {
            notes.push(Note::EndApprox { inside: t.inside, outside: t.outside, end });
        }
    }
    notes.extend(report.damage.iter().cloned().map(Note::Damaged));
    notes
}

#[cfg(test)]
mod tests;
