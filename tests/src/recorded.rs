//! What natrec recorded, checked against what the gateway's conntrack table had: the key of a
//! translation, its conntrack entry while the flow lives, the wait for its end, and the checks
//! that its start and end cover the flow the client saw. Shared by the capture tests (IPv4 and
//! IPv6) and the drop tests.

use std::net::SocketAddr;
use std::time::Duration;

use recorder::model::{Flags, FlowEvent, Kind, Proto, Translation};

use crate::conntrack::{CtTranslation, conntrack_flush, conntrack_list};
use crate::gateway::GatewayLab;
use crate::recorder_proc::NatrecRecord;
use crate::traffic::FlowDone;

/// How long to wait for end events after the last flow (natural expiry with the lab's short
/// timeouts and natrec's 1 s reaping), and again after flushing what is left.
pub const END_WAIT: Duration = Duration::from_secs(12);
/// How long to wait for end events after flushing the gateway's conntrack table.
pub const FLUSH_WAIT: Duration = Duration::from_secs(8);

/// What identifies a translation across natrec and conntrack.
pub type Key = (Kind, Proto, SocketAddr, SocketAddr, SocketAddr);

/// The key of a translation natrec recorded.
pub fn key_of(t: &Translation) -> Key {
    (t.kind, t.proto, t.inside, t.outside, t.remote)
}

/// The key of a translation in the gateway's conntrack table.
pub fn ct_key(t: &CtTranslation) -> Key {
    (t.kind, t.proto, t.inside, t.outside, t.remote)
}

/// The conntrack translation of a flow the client `done` made: an outbound one (SNAT) has the
/// client inside, an inbound one (DNAT) has it as the remote.
pub fn ct_translation_of(lab: &GatewayLab, done: &FlowDone, kind: Kind) -> CtTranslation {
    let ct = conntrack_list(lab.gateway()).expect("conntrack -L in the gateway");
    let found: Vec<CtTranslation> = ct
        .iter()
        .filter_map(|l| l.translation())
        .filter(|t| {
            t.kind == kind
                && t.proto == done.proto
                && match kind {
                    Kind::Dnat => t.remote == done.local,
                    _ => t.inside == done.local && t.remote == done.remote,
                }
        })
        .collect();
    assert_eq!(found.len(), 1, "one conntrack entry for {done:?}, found {found:?} in {ct:#?}");
    found[0]
}

/// Waits for an end event of every key; flushes the gateway's conntrack table if natural expiry
/// did not bring them all. Returns every event natrec wrote, after stopping it.
pub fn finish(lab: &GatewayLab, natrec: NatrecRecord, keys: &[Key]) -> Vec<FlowEvent> {
    finish_with_log(lab, natrec, keys).0
}

/// [`finish`], also returning natrec's stderr.
pub fn finish_with_log(
    lab: &GatewayLab,
    natrec: NatrecRecord,
    keys: &[Key],
) -> (Vec<FlowEvent>, String) {
    let all_ended = |events: &[FlowEvent]| {
        keys.iter()
            .all(|k| events.iter().any(|e| matches!(e, FlowEvent::End(t) if key_of(t) == *k)))
    };
    let (_, ended) = natrec.wait_for(END_WAIT, all_ended).expect("reading natrec's events");
    if !ended {
        eprintln!(
            "not every flow ended within {END_WAIT:?}; flushing the gateway's conntrack table"
        );
        conntrack_flush(lab.gateway()).expect("conntrack -F");
        natrec.wait_for(FLUSH_WAIT, all_ended).expect("reading natrec's events");
    }
    let (events, stderr) = natrec.stop().expect("stopping natrec record");
    eprintln!("natrec record's stderr:\n{stderr}");
    (events, stderr)
}

/// The single start and single end natrec wrote for `key`.
pub fn start_and_end<'a>(events: &'a [FlowEvent], key: &Key) -> (&'a Translation, &'a Translation) {
    let starts: Vec<&Translation> = events
        .iter()
        .filter_map(|e| match e {
            FlowEvent::Start(t) if key_of(t) == *key => Some(t),
            _ => None,
        })
        .collect();
    let ends: Vec<&Translation> = events
        .iter()
        .filter_map(|e| match e {
            FlowEvent::End(t) if key_of(t) == *key => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(
        starts.len(),
        1,
        "one start event for {key:?}, got {starts:?}; all events: {events:#?}"
    );
    assert_eq!(ends.len(), 1, "one end event for {key:?}, got {ends:?}; all events: {events:#?}");
    (starts[0], ends[0])
}

/// The lifetime natrec recorded covers the flow the client saw.
pub fn assert_covers(start: &Translation, end: &Translation, done: &FlowDone, seeded: bool) {
    assert_eq!(start.start, end.start, "the end event repeats the start: {start:?} / {end:?}");
    assert_eq!(start.end, None, "a start event has no end: {start:?}");
    let stop = end.end.unwrap_or_else(|| panic!("an end event has an end: {end:?}"));
    assert!(
        stop >= done.last_packet,
        "end {stop} before the last packet {} of {done:?}",
        done.last_packet
    );
    assert!(stop >= end.start, "end before start: {end:?}");
    if seeded {
        assert!(
            start.flags.contains(Flags::SEEDED),
            "a flow older than natrec is seeded: {start:?}"
        );
        // Entries made before natrec turned conntrack timestamps on have no start of their own.
        assert!(
            start.flags.contains(Flags::START_APPROX) || start.start <= done.first_reply,
            "a seeded start without START_APPROX must be exact: {start:?} vs {done:?}"
        );
    } else {
        assert!(!start.flags.contains(Flags::SEEDED), "a new flow is not seeded: {start:?}");
        assert!(
            !start.flags.contains(Flags::START_APPROX),
            "natrec turns timestamps on: {start:?}"
        );
        // natrec listens for ends before these flows: their ends are the kernel's.
        assert!(
            !end.flags.contains(Flags::END_APPROX) && !end.flags.contains(Flags::END_ONLY),
            "a flow made while natrec listened ends by its end event: {end:?}"
        );
        assert!(
            start.start <= done.first_reply,
            "start {} after the gateway translated the first packet (answered by {}): {done:?}",
            start.start,
            done.first_reply
        );
        assert!(
            start.start >= done.first_packet,
            "start {} before the client sent its first packet at {}",
            start.start,
            done.first_packet
        );
    }
}
