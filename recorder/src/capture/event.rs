//! Ring-buffer events as translations.

use jiff::Timestamp;
use recorder_common::{NatEvent, NatKind};

use super::ClockMap;
use crate::model::{Flags, Translation};

/// Builds an ended translation from the end probe's event; `jiffy_ns` is the kernel tick.
///
/// The end is the moment the entry was freed, less the time it had been expired (conntrack
/// reaps expired entries lazily): the same stop time the kernel's timestamp extension records.
/// The start is the one reported at the entry's start; where none was (the entry never passed
/// a hooked interface, or its start event was lost), the tracker pairs the end with the open
/// translation of the same tuple, and an unpaired end is recorded end-only with its end standing
/// in for the start (flagged `start_approx`).
pub fn end_translation(ev: &NatEvent, clock: &ClockMap, jiffy_ns: u64) -> Option<Translation> {
    let kind = NatKind::from_u8(ev.kind)?;
    let end = clock.wall(ev.ktime_ns.saturating_sub(u64::from(ev.late_jiffies) * jiffy_ns));
    let (start, flags) = match (ev.start_known, ev.ct_start_ns) {
        (1, ns) if ns != 0 => (Timestamp::from_nanosecond(ns as i128).ok()?, Flags::empty()),
        _ => (end, Flags::START_APPROX),
    };
    let mut t = Translation::from_endpoints(ev.family, ev.proto, kind, &ev.ep, ev.zone, start)?;
    t.end = Some(end.max(start));
    t.flags = flags;
    Some(t)
}

/// Builds a translation from an eBPF start event.
pub fn start_translation(ev: &NatEvent, clock: &ClockMap) -> Option<Translation> {
    let kind = NatKind::from_u8(ev.kind)?;
    let (start, flags) = match ev.ct_start_ns {
        0 => (clock.wall(ev.ktime_ns), Flags::START_APPROX),
        ns => (Timestamp::from_nanosecond(ns as i128).ok()?, Flags::empty()),
    };
    let mut t = Translation::from_endpoints(ev.family, ev.proto, kind, &ev.ep, ev.zone, start)?;
    t.flags = flags;
    Some(t)
}

#[cfg(test)]
mod tests {
    use recorder_common::Hook;

    use super::*;

    fn end_event(start_known: u8, ct_start_ns: u64, ktime_ns: u64, late_jiffies: u32) -> NatEvent {
        let mut ep = recorder_common::Endpoints::default();
        ep.inside[..4].copy_from_slice(&[10, 0, 0, 2]);
        ep.outside[..4].copy_from_slice(&[100, 64, 0, 1]);
        ep.remote[..4].copy_from_slice(&[100, 64, 1, 1]);
        (ep.inside_port, ep.outside_port, ep.remote_port) =
            (5000u16.to_be(), 6000u16.to_be(), 53u16.to_be());
        NatEvent {
            ktime_ns,
            ct_start_ns,
            ct_id: 0xffff_8880_0000_1000,
            ep,
            zone: 0,
            family: recorder_common::AF_INET,
            proto: recorder_common::PROTO_UDP,
            ct_status: recorder_common::IPS_SRC_NAT | recorder_common::IPS_CONFIRMED,
            ifindex: 0,
            kind: NatKind::Snat as u8,
            ctinfo: 0,
            hook: Hook::CtFree as u8,
            start_known,
            late_jiffies,
            _pad: [0; 4],
        }
    }

    #[test]
    fn an_end_event_ends_when_the_entry_expired_and_keeps_the_reported_start() {
        let clock = ClockMap::new();
        let jiffy = 4_000_000; // HZ=250
        let freed = 50_000_000_000u64;
        let start_ns = 1_700_000_000_000_000_000u64;
        // Freed 300 jiffies (1.2 s) after it expired.
        let t = end_translation(&end_event(1, start_ns, freed, 300), &clock, jiffy).expect("end");
        assert_eq!(t.end, Some(clock.wall(freed - 1_200_000_000)));
        assert_eq!(t.start, Timestamp::from_nanosecond(start_ns as i128).expect("start"));
        assert_eq!(t.flags, Flags::empty());
        assert_eq!(t.inside, "10.0.0.2:5000".parse().expect("addr"));
        assert_eq!(t.outside, "100.64.0.1:6000".parse().expect("addr"));
        // Deleted before its timeout: ended when freed.
        let t = end_translation(&end_event(1, start_ns, freed, 0), &clock, jiffy).expect("end");
        assert_eq!(t.end, Some(clock.wall(freed)));
        // No start reported (or reported without a timestamp): the end stands in, flagged.
        for (known, ns) in [(0, 0), (0, start_ns), (1, 0)] {
            let t = end_translation(&end_event(known, ns, freed, 0), &clock, jiffy).expect("end");
            assert_eq!(t.start, clock.wall(freed), "start_known {known}, start {ns}");
            assert_eq!(t.end, Some(t.start));
            assert_eq!(t.flags, Flags::START_APPROX);
        }
        // Garbage kind: not a translation.
        let mut bad = end_event(1, start_ns, freed, 0);
        bad.kind = 9;
        assert!(end_translation(&bad, &clock, jiffy).is_none());
    }
}
