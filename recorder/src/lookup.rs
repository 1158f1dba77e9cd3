//! The contract between the attribution store and the query layer.
//!
//! A [`TranslationSource`] (the segment store's reader, or a plain `Vec` in tests) hands every
//! translation that matches a [`Filter`] to a callback, once per translation, merged (a
//! translation whose start and end were written apart arrives once, with its end if known).

use std::net::IpAddr;
use std::path::PathBuf;

use jiff::Timestamp;

use crate::model::{Proto, Translation};

/// An address, with or without a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndpointMatch {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl EndpointMatch {
    pub fn matches(&self, ep: &std::net::SocketAddr) -> bool {
        ep.ip() == self.ip && self.port.is_none_or(|p| p == ep.port())
    }
}

/// What to look for: translations whose lifetime touches `[from, to]` (inclusive; an open
/// translation lasts until now) and that match every endpoint given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub from: Timestamp,
    pub to: Timestamp,
    pub proto: Option<Proto>,
    pub outside: Option<EndpointMatch>,
    pub inside: Option<EndpointMatch>,
    pub remote: Option<EndpointMatch>,
}

impl Filter {
    /// Every translation, of any time.
    pub fn all() -> Filter {
        Filter {
            from: Timestamp::UNIX_EPOCH,
            to: Timestamp::MAX,
            proto: None,
            outside: None,
            inside: None,
            remote: None,
        }
    }

    /// The reference semantics every source must implement exactly.
    pub fn matches(&self, t: &Translation) -> bool {
        t.overlaps(self.from, self.to)
            && self.proto.is_none_or(|p| p == t.proto)
            && self.outside.is_none_or(|m| m.matches(&t.outside))
            && self.inside.is_none_or(|m| m.matches(&t.inside))
            && self.remote.is_none_or(|m| m.matches(&t.remote))
    }
}

/// A part of the store that could not be read; the rest still answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    pub segment: PathBuf,
    /// The block index inside the segment, when the damage is limited to one block.
    pub block: Option<u64>,
    pub reason: String,
}

/// What a scan did, for progress, metrics and honest answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub segments_total: usize,
    pub segments_opened: usize,
    /// Blocks read from disk and examined: decoded, or ruled out by their address dictionaries.
    pub blocks_read: u64,
    /// Blocks not read: their index entries (time range, endpoint filter) ruled them out.
    pub blocks_skipped: u64,
    /// Translations in the blocks read.
    pub translations_scanned: u64,
    /// Damaged segments or blocks that were skipped.
    pub damage: Vec<Damage>,
    /// The time range the source holds (earliest start to latest time written), if any.
    pub coverage: Option<(Timestamp, Timestamp)>,
}

/// Anything that can answer a [`Filter`].
pub trait TranslationSource {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Calls `f` once for every translation that matches `filter`.
    fn scan(
        &self,
        filter: &Filter,
        f: &mut dyn FnMut(&Translation),
    ) -> Result<ScanReport, Self::Error>;
}

/// An in-memory source: the reference implementation, for tests.
impl TranslationSource for [Translation] {
    type Error = std::convert::Infallible;

    fn scan(
        &self,
        filter: &Filter,
        f: &mut dyn FnMut(&Translation),
    ) -> Result<ScanReport, Self::Error> {
        let mut report =
            ScanReport { translations_scanned: self.len() as u64, ..ScanReport::default() };
        for t in self.iter().filter(|t| filter.matches(t)) {
            f(t);
        }
        report.coverage = self
            .iter()
            .map(|t| (t.start, t.end.unwrap_or(t.start)))
            .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)));
        Ok(report)
    }
}
