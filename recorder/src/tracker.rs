//! Pairs what the capture sources report into one start and one end per translation.
//!
//! Three sources report the same conntrack entries: the eBPF programs (a start, at the entry's
//! first packet through a hooked interface; and, where the end probe runs, the end, as the
//! kernel frees the entry), ctnetlink DESTROY events (the end, with the kernel's own start and
//! stop timestamps, where the end probe does not run), and conntrack dumps (start-up seeding,
//! resync after a lost event). The tracker keeps the set of open translations keyed by [`FlowKey`] (which
//! contains a complete conntrack tuple, so no two live entries share it) and turns the reports
//! into a clean [`FlowEvent`] stream:
//!
//! - a start for a key that is open with the same start is a duplicate (the eBPF dedup map
//!   forgot the entry, or a dump saw it again) and is dropped, counted;
//! - a start for a key that is open with a *different* exact start means the old entry is gone
//!   (conntrack keeps tuples unique): it waits [`SUPERSEDED_GRACE`] for its own end event (which
//!   often comes a moment after the new entry's first packet), then is closed with an
//!   approximate end (the new start, an upper bound);
//! - an end for an open key closes it; an end for an unknown key, or for an entry older than the
//!   open one (the start was never seen), yields an end-only record and leaves the open one;
//! - a resync dump closes, with an approximate end, every open translation the kernel no longer
//!   has.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use jiff::Timestamp;

use crate::model::{Flags, FlowEvent, FlowKey, Kind, Proto, Translation};
use crate::open_table::OpenTable;
use crate::units::Resolution;

/// Counters of what the tracker saw, for the log and `--stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TrackerStats {
    pub starts: u64,
    pub ends: u64,
    pub duplicate_starts: u64,
    pub seeded: u64,
    /// Ends that arrived for translations whose start was never seen.
    pub end_only: u64,
    /// Translations closed with an approximate end (lost end event, slot reuse, restart).
    pub approx_ends: u64,
    /// End events that came after a resync had already closed their translation (the
    /// approximate end stands; the event is dropped).
    pub late_ends: u64,
}

/// The tracker's maps hash with foldhash (`fast`), several times faster than std's SipHash on
/// these keys. Keys contain remote addresses and ports that outside hosts choose, so the hash
/// must not be predictable: foldhash's secrets are random per process and per map, which defeats
/// precomputed collision sets (it does not claim to resist an attacker who could study the
/// process's hash timings interactively).
type Hasher = foldhash::fast::RandomState;
type Map<K, V> = HashMap<K, V, Hasher>;

/// The open translations and the rules that pair starts with ends.
#[derive(Debug, Default)]
pub struct Tracker {
    open: OpenMap,
    /// Translations a resync closed, by key → start, so that their late end event is not taken
    /// for an unseen translation. Bounded by [`CLOSED_MEMORY`].
    closed_by_resync: Map<FlowKey, Timestamp>,
    /// Entries whose tuple a newer entry took before their end event came, by key.
    superseded: Map<FlowKey, Superseded>,
    stats: TrackerStats,
    /// The resolution starts are compared at (translations recovered from the store come back
    /// rounded down to the store's resolution).
    resolution: Resolution,
}

/// An entry whose tuple a newer entry took, waiting for its own end event.
#[derive(Debug)]
struct Superseded {
    entry: Translation,
    /// The newer entry's start: the latest the old one can have ended.
    next_start: Timestamp,
}

/// How long a superseded entry waits for its end event before it is closed approximately.
pub const SUPERSEDED_GRACE: jiff::SignedDuration = jiff::SignedDuration::from_secs(3);

/// How many resync-closed translations the tracker remembers.
const CLOSED_MEMORY: usize = 1 << 20;

/// What the tracker keeps of an open translation besides its key: the key's fields come back
/// from the key itself, or from the report (same key) that found the translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Open {
    start: Timestamp,
    kind: Kind,
    flags: Flags,
}

impl Open {
    fn of(t: &Translation) -> Self {
        Self { start: t.start, kind: t.kind, flags: t.flags }
    }

    /// The open translation whose key is `k`.
    fn translation(self, k: &FlowKey) -> Translation {
        Translation {
            kind: self.kind,
            proto: k.proto,
            inside: k.inside,
            outside: k.outside,
            remote: k.remote,
            zone: k.zone,
            start: self.start,
            end: None,
            flags: self.flags,
        }
    }

    /// The open translation of the key of `t` (a report of the same key).
    fn like(self, t: &Translation) -> Translation {
        Translation {
            kind: self.kind,
            proto: t.proto,
            inside: t.inside,
            outside: t.outside,
            remote: t.remote,
            zone: t.zone,
            start: self.start,
            end: None,
            flags: self.flags,
        }
    }
}

/// Whether two reports of a key are the same conntrack entry: they differ only when both carry
/// the kernel's exact start and the starts differ (at resolution `r`).
fn same_entry(r: Resolution, a: Open, b: &Translation) -> bool {
    a.flags.contains(Flags::START_APPROX)
        || b.flags.contains(Flags::START_APPROX)
        || a.start == b.start
        || r.truncate(a.start).ok() == r.truncate(b.start).ok()
}

/// An all-IPv4 [`FlowKey`] in three words.
///
/// The open map is read at every start and every end, and with hundreds of thousands of open
/// translations nearly every read misses the CPU caches: its cost is the size of its slots.
/// With this key and [`Open`] a slot is 56 bytes, where a `FlowKey` and a `Translation` take
/// 248.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key4 {
    /// Inside address, outside address.
    addrs: u64,
    /// Remote address, inside port, outside port.
    remote_ports: u64,
    /// Remote port, zone, protocol.
    rest: u64,
}

impl Key4 {
    fn new(k: &FlowKey) -> Option<Self> {
        let (SocketAddr::V4(i), SocketAddr::V4(o), SocketAddr::V4(r)) =
            (k.inside, k.outside, k.remote)
        else {
            return None;
        };
        Some(Self {
            addrs: u64::from(i.ip().to_bits()) | u64::from(o.ip().to_bits()) << 32,
            remote_ports: u64::from(r.ip().to_bits())
                | u64::from(i.port()) << 32
                | u64::from(o.port()) << 48,
            rest: u64::from(r.port()) | u64::from(k.zone) << 16 | u64::from(k.proto.0) << 32,
        })
    }

    fn flow_key(self) -> FlowKey {
        let addr = |ip: u64, port: u64| {
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from_bits(ip as u32), port as u16))
        };
        FlowKey {
            zone: (self.rest >> 16) as u16,
            proto: Proto((self.rest >> 32) as u8),
            inside: addr(self.addrs, self.remote_ports >> 32),
            outside: addr(self.addrs >> 32, self.remote_ports >> 48),
            remote: addr(self.remote_ports, self.rest),
        }
    }
}

/// What a start did to the open map.
enum Started {
    /// The key was not open: the translation is now.
    New,
    /// The same entry was open already: nothing changed.
    Duplicate,
    /// Another entry held the key: the new one took its place; here is the old one.
    Replaced(Open),
}

/// What the open map held for an end.
enum Ended {
    /// The same entry, now removed.
    Same(Open),
    /// An older entry, now removed (it was gone before the ended one began).
    Stale(Open),
    /// A newer entry, left open.
    Newer,
    /// Nothing.
    Absent,
}

fn start_in<K: Copy + Hash + Eq>(
    map: &mut OpenTable<K, Open>,
    k: K,
    t: &Translation,
    r: Resolution,
) -> Started {
    match map.get_mut(&k) {
        Some(o) if !same_entry(r, *o, t) => Started::Replaced(std::mem::replace(o, Open::of(t))),
        Some(_) => Started::Duplicate,
        None => {
            map.insert(k, Open::of(t));
            Started::New
        }
    }
}

fn end_in<K: Copy + Hash + Eq>(
    map: &mut OpenTable<K, Open>,
    k: K,
    t: &Translation,
    r: Resolution,
) -> Ended {
    // `get`, then `remove` of the slot just read (in cache by then).
    let outcome = match map.get(&k) {
        None => return Ended::Absent,
        Some(&o) if same_entry(r, o, t) => Ended::Same(o),
        Some(&o) if t.start > o.start => Ended::Stale(o),
        Some(_) => return Ended::Newer,
    };
    map.remove(&k);
    outcome
}

/// The open translations: all-IPv4 keys packed ([`Key4`]), any others as they are.
#[derive(Debug, Default)]
struct OpenMap {
    v4: OpenTable<Key4, Open>,
    other: OpenTable<FlowKey, Open>,
}

impl OpenMap {
    fn len(&self) -> usize {
        self.v4.len() + self.other.len()
    }

    fn insert(&mut self, t: &Translation) {
        let k = t.key();
        match Key4::new(&k) {
            Some(k4) => self.v4.insert(k4, Open::of(t)),
            None => self.other.insert(k, Open::of(t)),
        };
    }

    fn start(&mut self, t: &Translation, r: Resolution) -> Started {
        let k = t.key();
        match Key4::new(&k) {
            Some(k4) => start_in(&mut self.v4, k4, t, r),
            None => start_in(&mut self.other, k, t, r),
        }
    }

    fn end(&mut self, t: &Translation, r: Resolution) -> Ended {
        let k = t.key();
        match Key4::new(&k) {
            Some(k4) => end_in(&mut self.v4, k4, t, r),
            None => end_in(&mut self.other, k, t, r),
        }
    }

    /// Brings the slot of `t`'s key into cache (see [`OpenTable::prefetch`]).
    fn prefetch(&self, t: &Translation) {
        let k = t.key();
        match Key4::new(&k) {
            Some(k4) => self.v4.prefetch(&k4),
            None => self.other.prefetch(&k),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (FlowKey, Open)> + '_ {
        let v4 = self.v4.iter().map(|(k, o)| (k.flow_key(), *o));
        v4.chain(self.other.iter().map(|(k, o)| (*k, *o)))
    }

    fn remove(&mut self, k: &FlowKey) -> Option<Open> {
        match Key4::new(k) {
            Some(k4) => self.v4.remove(&k4),
            None => self.other.remove(k),
        }
    }
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// A tracker that takes starts equal at `resolution` (the store's, when translations
    /// recovered from it are adopted).
    pub fn with_resolution(resolution: Resolution) -> Self {
        Self { resolution, ..Self::default() }
    }

    pub fn stats(&self) -> TrackerStats {
        self.stats
    }

    /// Number of open translations.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Asks the CPU for the memory a report of `t` will touch, a few reports before it comes:
    /// the open map is too big for the caches, and lookups announced this way overlap their
    /// waits for memory instead of taking them one after the other. A hint only.
    pub fn prefetch(&self, t: &Translation) {
        self.open.prefetch(t);
    }

    /// Takes translations recovered from the store as open without emitting anything: they were
    /// written before. Call [`Tracker::resync`] with the kernel's live set afterwards.
    pub fn adopt(&mut self, t: Translation) {
        self.open.insert(&t);
    }

    /// A translation was seen live (eBPF event, or a dump entry). `t.end` must be `None`.
    pub fn start(&mut self, t: Translation, out: &mut Vec<FlowEvent>) {
        match self.open.start(&t, self.resolution) {
            Started::Duplicate => {
                self.stats.duplicate_starts += 1;
                return;
            }
            Started::New => {}
            Started::Replaced(prev) => {
                // The previous entry with this tuple is gone (a new one cannot exist beside
                // it), but its end report may still be on its way: hold it for
                // SUPERSEDED_GRACE.
                let held = Superseded { entry: prev.like(&t), next_start: t.start };
                if let Some(older) = self.superseded.insert(t.key(), held) {
                    self.close_approx(older.entry, older.next_start, out);
                }
            }
        }
        self.stats.starts += 1;
        if t.flags.contains(Flags::SEEDED) {
            self.stats.seeded += 1;
        }
        out.push(FlowEvent::Start(t));
    }

    fn close_approx(&mut self, mut t: Translation, end: Timestamp, out: &mut Vec<FlowEvent>) {
        t.end = Some(end.max(t.start));
        t.flags.insert(Flags::END_APPROX);
        self.stats.approx_ends += 1;
        self.stats.ends += 1;
        out.push(FlowEvent::End(t));
    }

    /// Closes, with an approximate end (the start of the entry that took their tuple), the
    /// superseded entries whose end (end probe or DESTROY event) did not come within [`SUPERSEDED_GRACE`] of that
    /// start; with `now = None`, all of them (at shutdown).
    pub fn expire(&mut self, now: Option<Timestamp>, out: &mut Vec<FlowEvent>) {
        let due: Vec<FlowKey> = self
            .superseded
            .iter()
            .filter(|(_, s)| now.is_none_or(|n| n >= s.next_start + SUPERSEDED_GRACE))
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            if let Some(s) = self.superseded.remove(&k) {
                self.close_approx(s.entry, s.next_start, out);
            }
        }
    }

    /// A translation ended. `t` describes the entry as its end source did, the end probe or a
    /// DESTROY event (its `end` set, `END_APPROX` in its flags when the stop time is not the
    /// kernel's).
    pub fn end(&mut self, t: Translation, out: &mut Vec<FlowEvent>) {
        let r = self.resolution;
        // The end of an entry whose tuple a newer entry already holds. (`get` of an empty map,
        // the usual case, does not even hash the key.)
        if !self.superseded.is_empty() {
            let key = t.key();
            if self.superseded.get(&key).is_some_and(|s| same_entry(r, Open::of(&s.entry), &t))
                && let Some(s) = self.superseded.remove(&key)
            {
                self.close(s.entry, &t, out);
                return;
            }
        }
        match self.open.end(&t, r) {
            Ended::Same(open) => self.close(open.like(&t), &t, out),
            Ended::Stale(stale) => {
                // A newer entry than the open one ended: the open one was gone before it began.
                self.close_approx(stale.like(&t), t.start, out);
                self.end_only(t, out);
            }
            // An older entry than the open one: its start was never seen.
            Ended::Newer => self.end_only(t, out),
            Ended::Absent => {
                let key = t.key();
                if self.closed_by_resync.get(&key).is_some_and(|start| {
                    t.flags.contains(Flags::START_APPROX)
                        || r.truncate(*start).ok() == r.truncate(t.start).ok()
                }) {
                    // A resync closed it already: the approximate end stands.
                    self.closed_by_resync.remove(&key);
                    self.stats.late_ends += 1;
                } else {
                    self.end_only(t, out);
                }
            }
        }
    }

    /// Closes `open` with the end event `t` of the same entry.
    fn close(&mut self, mut open: Translation, t: &Translation, out: &mut Vec<FlowEvent>) {
        // Prefer the kernel's exact start when only the end event carries it.
        if open.flags.contains(Flags::START_APPROX) && !t.flags.contains(Flags::START_APPROX) {
            open.start = t.start;
            open.flags = Flags(open.flags.0 & !Flags::START_APPROX.0);
        }
        open.end = t.end.map(|e| e.max(open.start));
        if t.flags.contains(Flags::END_APPROX) {
            open.flags.insert(Flags::END_APPROX);
            self.stats.approx_ends += 1;
        }
        self.stats.ends += 1;
        out.push(FlowEvent::End(open));
    }

    fn end_only(&mut self, mut t: Translation, out: &mut Vec<FlowEvent>) {
        t.flags.insert(Flags::END_ONLY);
        self.stats.end_only += 1;
        self.stats.ends += 1;
        out.push(FlowEvent::End(t));
    }

    /// After a dump that listed every live entry (`live`), begun at `dump_started` and finished
    /// at `dump_done`: open translations that started before the dump and are not live ended
    /// unseen; they are closed at `dump_done` (an upper bound) with `END_APPROX`.
    pub fn resync(
        &mut self,
        live: &HashSet<FlowKey>,
        dump_started: Timestamp,
        dump_done: Timestamp,
        out: &mut Vec<FlowEvent>,
    ) {
        let gone: Vec<FlowKey> = self
            .open
            .iter()
            .filter(|(k, o)| o.start < dump_started && !live.contains(k))
            .map(|(k, _)| k)
            .collect();
        if self.closed_by_resync.len() + gone.len() > CLOSED_MEMORY {
            self.closed_by_resync.clear();
        }
        for k in gone {
            if let Some(o) = self.open.remove(&k) {
                self.closed_by_resync.insert(k, o.start);
                let mut t = o.translation(&k);
                t.end = Some(dump_done.max(t.start));
                t.flags.insert(Flags::END_APPROX);
                self.stats.approx_ends += 1;
                out.push(FlowEvent::End(t));
            }
        }
    }

    /// The open translations. At shutdown they stay open in the store: the next start
    /// reconciles them with the kernel's live entries.
    pub fn open_translations(&self) -> impl Iterator<Item = Translation> + '_ {
        self.open.iter().map(|(k, o)| o.translation(&k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Proto;

    fn t(inside_port: u16, start: &str, flags: Flags) -> Translation {
        let (inside, outside) =
            (format!("10.0.1.2:{inside_port}"), format!("100.64.0.1:{inside_port}"));
        crate::testing::tr(&inside, &outside, "10.99.0.2:53")
            .proto(Proto::UDP)
            .start(start.parse().expect("time"))
            .flags(flags)
            .build()
    }

    fn ended(mut x: Translation, end: &str, flags: Flags) -> Translation {
        x.end = Some(end.parse().expect("time"));
        x.flags.insert(flags);
        x
    }

    #[test]
    fn start_then_end_pairs_and_duplicates_are_dropped() {
        let mut tr = Tracker::new();
        let mut out = Vec::new();
        let a = t(4000, "2026-01-01T00:00:00Z", Flags::empty());
        tr.start(a.clone(), &mut out);
        tr.start(a.clone(), &mut out);
        assert_eq!(out, vec![FlowEvent::Start(a.clone())]);
        assert_eq!(tr.stats().duplicate_starts, 1);
        out.clear();
        tr.end(ended(a.clone(), "2026-01-01T00:00:30Z", Flags::empty()), &mut out);
        assert_eq!(out, vec![FlowEvent::End(ended(a, "2026-01-01T00:00:30Z", Flags::empty()))]);
        assert_eq!(tr.open_count(), 0);
    }

    #[test]
    fn a_reused_tuple_waits_for_the_old_entrys_end_then_closes_it_approximately() {
        let mut tr = Tracker::new();
        let mut out = Vec::new();
        let a = t(4000, "2026-01-01T00:00:00Z", Flags::empty());
        let b = t(4000, "2026-01-01T00:05:00Z", Flags::empty());
        tr.start(a.clone(), &mut out);
        tr.start(b.clone(), &mut out);
        assert_eq!(out, vec![FlowEvent::Start(a.clone()), FlowEvent::Start(b.clone())]);
        out.clear();
        let within: Timestamp = "2026-01-01T00:05:02Z".parse().expect("time");
        tr.expire(Some(within), &mut out);
        assert!(out.is_empty(), "still waiting for A's end event");
        let after: Timestamp = "2026-01-01T00:05:03Z".parse().expect("time");
        tr.expire(Some(after), &mut out);
        assert_eq!(out, vec![FlowEvent::End(ended(a, "2026-01-01T00:05:00Z", Flags::END_APPROX))]);
        assert_eq!(tr.open_count(), 1, "B stays open");
    }

    #[test]
    fn the_late_end_of_a_superseded_entry_closes_it_exactly_and_leaves_the_new_one_open() {
        let mut tr = Tracker::new();
        let mut out = Vec::new();
        let a = t(4000, "2026-01-01T00:00:00Z", Flags::empty());
        let b = t(4000, "2026-01-01T00:00:40Z", Flags::empty());
        tr.start(a.clone(), &mut out);
        tr.start(b.clone(), &mut out);
        out.clear();
        // A's DESTROY (it expired at 00:00:33) arrives after B's first packet.
        tr.end(ended(a.clone(), "2026-01-01T00:00:33Z", Flags::empty()), &mut out);
        assert_eq!(out, vec![FlowEvent::End(ended(a, "2026-01-01T00:00:33Z", Flags::empty()))]);
        out.clear();
        tr.expire(None, &mut out);
        assert!(out.is_empty());
        tr.end(ended(b.clone(), "2026-01-01T00:01:10Z", Flags::empty()), &mut out);
        assert_eq!(out, vec![FlowEvent::End(ended(b, "2026-01-01T00:01:10Z", Flags::empty()))]);
        assert_eq!((tr.stats().approx_ends, tr.stats().end_only), (0, 0));
    }

    #[test]
    fn the_end_of_an_older_unseen_entry_does_not_close_the_open_one() {
        let mut tr = Tracker::new();
        let mut out = Vec::new();
        let b = t(4000, "2026-01-01T00:00:40Z", Flags::empty());
        tr.start(b.clone(), &mut out);
        out.clear();
        let a = ended(
            t(4000, "2026-01-01T00:00:00Z", Flags::empty()),
            "2026-01-01T00:00:33Z",
            Flags::empty(),
        );
        tr.end(a.clone(), &mut out);
        assert_eq!(out, vec![FlowEvent::End(ended(a, "2026-01-01T00:00:33Z", Flags::END_ONLY))]);
        assert_eq!(tr.open_count(), 1, "B stays open");
    }

    #[test]
    fn an_end_without_a_start_is_recorded_as_end_only() {
        let mut tr = Tracker::new();
        let mut out = Vec::new();
        let a = ended(
            t(4000, "2026-01-01T00:00:00Z", Flags::empty()),
            "2026-01-01T00:00:09Z",
            Flags::empty(),
        );
        tr.end(a.clone(), &mut out);
        assert_eq!(out, vec![FlowEvent::End(ended(a, "2026-01-01T00:00:09Z", Flags::END_ONLY))]);
        assert_eq!(tr.stats().end_only, 1);
    }

    #[test]
    fn an_approximate_start_takes_the_kernel_start_from_the_end_event() {
        let mut tr = Tracker::new();
        let mut out = Vec::new();
        let seen = t(4000, "2026-01-01T00:00:01Z", Flags::START_APPROX);
        tr.start(seen, &mut out);
        let destroy = ended(
            t(4000, "2026-01-01T00:00:00.5Z", Flags::empty()),
            "2026-01-01T00:01:00Z",
            Flags::empty(),
        );
        out.clear();
        tr.end(destroy.clone(), &mut out);
        assert_eq!(out, vec![FlowEvent::End(destroy)]);
    }

    #[test]
    fn a_recovered_start_rounded_to_the_store_resolution_is_the_same_entry() {
        let mut tr = Tracker::with_resolution(Resolution::Millis);
        let mut out = Vec::new();
        tr.adopt(t(4000, "2026-01-01T00:00:00.123Z", Flags::empty()));
        tr.start(t(4000, "2026-01-01T00:00:00.123456789Z", Flags::SEEDED), &mut out);
        assert!(out.is_empty(), "not a new entry: {out:?}");
        tr.start(t(4000, "2026-01-01T00:00:00.124Z", Flags::empty()), &mut out);
        assert_eq!(out.len(), 1, "a start 1 ms later is another entry: {out:?}");
        assert!(
            matches!(&out[0], FlowEvent::Start(x) if x.start == "2026-01-01T00:00:00.124Z".parse::<Timestamp>().expect("time"))
        );
    }

    #[test]
    fn ipv6_translations_pair_like_ipv4_ones() {
        let mut tr = Tracker::new();
        let mut out = Vec::new();
        let mut a = t(4000, "2026-01-01T00:00:00Z", Flags::empty());
        a.inside = "[fd00::2]:4000".parse().expect("addr");
        a.outside = "[2001:db8::1]:4000".parse().expect("addr");
        a.remote = "[2001:db8:9::7]:53".parse().expect("addr");
        let b = t(4000, "2026-01-01T00:00:00Z", Flags::empty());
        tr.start(a.clone(), &mut out);
        tr.start(b.clone(), &mut out);
        tr.start(a.clone(), &mut out);
        assert_eq!(out, vec![FlowEvent::Start(a.clone()), FlowEvent::Start(b.clone())]);
        assert_eq!((tr.open_count(), tr.stats().duplicate_starts), (2, 1));
        let mut open: Vec<Translation> = tr.open_translations().collect();
        open.sort_by_key(|x| x.inside);
        assert_eq!(open, vec![b.clone(), a.clone()]);
        out.clear();
        tr.end(ended(a.clone(), "2026-01-01T00:00:30Z", Flags::empty()), &mut out);
        assert_eq!(out, vec![FlowEvent::End(ended(a, "2026-01-01T00:00:30Z", Flags::empty()))]);
        assert_eq!(tr.open_count(), 1, "the IPv4 one stays open");
    }

    #[test]
    fn a_tuple_reused_twice_before_any_end_closes_the_oldest_at_the_middle_start() {
        let mut tr = Tracker::new();
        let mut out = Vec::new();
        let a = t(4000, "2026-01-01T00:00:00Z", Flags::SEEDED);
        let b = t(4000, "2026-01-01T00:01:00Z", Flags::empty());
        let c = t(4000, "2026-01-01T00:02:00Z", Flags::empty());
        for x in [&a, &b, &c] {
            tr.start(x.clone(), &mut out);
        }
        assert_eq!(
            out,
            vec![
                FlowEvent::Start(a.clone()),
                FlowEvent::Start(b.clone()),
                FlowEvent::End(ended(a, "2026-01-01T00:01:00Z", Flags::END_APPROX)),
                FlowEvent::Start(c.clone()),
            ]
        );
        out.clear();
        // B's end still closes B exactly, and C's closes C.
        tr.end(ended(b.clone(), "2026-01-01T00:01:30Z", Flags::empty()), &mut out);
        tr.end(ended(c.clone(), "2026-01-01T00:02:30Z", Flags::empty()), &mut out);
        assert_eq!(
            out,
            vec![
                FlowEvent::End(ended(b, "2026-01-01T00:01:30Z", Flags::empty())),
                FlowEvent::End(ended(c, "2026-01-01T00:02:30Z", Flags::empty())),
            ]
        );
        assert_eq!(tr.open_count(), 0);
        assert_eq!((tr.stats().seeded, tr.stats().approx_ends, tr.stats().end_only), (1, 1, 0));
    }

    #[test]
    fn resync_closes_only_entries_the_kernel_no_longer_has() {
        let mut tr = Tracker::new();
        let mut out = Vec::new();
        let gone = t(4000, "2026-01-01T00:00:00Z", Flags::empty());
        let alive = t(4001, "2026-01-01T00:00:00Z", Flags::empty());
        let fresh = t(4002, "2026-01-01T00:10:00Z", Flags::empty());
        for x in [&gone, &alive, &fresh] {
            tr.start(x.clone(), &mut out);
        }
        out.clear();
        let live: HashSet<FlowKey> = [alive.key()].into();
        let started: Timestamp = "2026-01-01T00:09:00Z".parse().expect("time");
        let done: Timestamp = "2026-01-01T00:09:01Z".parse().expect("time");
        tr.resync(&live, started, done, &mut out);
        assert_eq!(
            out,
            vec![FlowEvent::End(ended(gone.clone(), "2026-01-01T00:09:01Z", Flags::END_APPROX))]
        );
        assert_eq!(tr.open_count(), 2, "the live one and the one newer than the dump stay open");
        // Its end event, late: dropped, not taken for an unseen translation.
        out.clear();
        tr.end(ended(gone, "2026-01-01T00:08:00Z", Flags::empty()), &mut out);
        assert!(out.is_empty());
        assert_eq!((tr.stats().late_ends, tr.stats().end_only), (1, 0));
    }
}

#[cfg(test)]
mod key_tests {
    use proptest::prelude::*;

    use super::*;

    fn v4(ip: u32, port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from_bits(ip), port))
    }

    proptest! {
        #[test]
        fn packed_ipv4_keys_give_back_the_flow_key_and_differ_when_it_does(
            a in any::<([u32; 3], [u16; 3], u16, u8)>(),
            b in any::<([u32; 3], [u16; 3], u16, u8)>(),
        ) {
            let key = |(ip, port, zone, proto): ([u32; 3], [u16; 3], u16, u8)| FlowKey {
                zone,
                proto: Proto(proto),
                inside: v4(ip[0], port[0]),
                outside: v4(ip[1], port[1]),
                remote: v4(ip[2], port[2]),
            };
            let (ka, kb) = (key(a), key(b));
            let (pa, pb) = (Key4::new(&ka).expect("v4"), Key4::new(&kb).expect("v4"));
            prop_assert_eq!(pa.flow_key(), ka);
            prop_assert_eq!(pa == pb, ka == kb);
        }
    }

    #[test]
    fn swapped_endpoints_are_other_keys_and_ipv6_keys_are_not_packed() {
        let k = FlowKey {
            zone: 0xffff,
            proto: Proto(255),
            inside: v4(0x0a00_0102, 65535),
            outside: v4(0x6440_0001, 1),
            remote: v4(0xc633_6407, 0),
        };
        let swapped = FlowKey { inside: k.outside, outside: k.inside, ..k };
        assert_ne!(Key4::new(&k), Key4::new(&swapped));
        assert_eq!(Key4::new(&k).map(Key4::flow_key), Some(k));
        let v6 = FlowKey { remote: "[2001:db8::7]:443".parse().expect("addr"), ..k };
        assert_eq!(Key4::new(&v6), None);
    }
}
