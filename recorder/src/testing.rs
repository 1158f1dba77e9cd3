//! Helpers for tests of natrec and of tools built on it (feature `test-util`; the crate's own
//! tests turn it on): a [`Translation`] builder with the defaults tests mostly want.
//!
//! Seeded random numbers come from [`crate::rng`], and temporary directories from `tempfile`,
//! whose guard removes them even when a test fails.

use std::net::SocketAddr;

use jiff::Timestamp;

use crate::model::{Flags, Kind, Proto, Translation};

/// When a built translation starts unless told: 2030-01-01T10:00:00Z.
pub const T0: Timestamp = Timestamp::constant(1_893_492_000, 0);

/// A translation of `inside` to `outside` towards `remote` (each `ip:port`, IPv6 as
/// `[ip]:port`): TCP source NAT in zone 0, started at [`T0`], still open, no flags. Panics on an
/// address that does not parse, which in a test is the test's own mistake.
pub fn tr(inside: &str, outside: &str, remote: &str) -> TranslationBuilder {
    let addr = |what: &str, s: &str| -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("the {what} address {s:?}: {e}"))
    };
    TranslationBuilder(Translation {
        kind: Kind::Snat,
        proto: Proto::TCP,
        inside: addr("inside", inside),
        outside: addr("outside", outside),
        remote: addr("remote", remote),
        zone: 0,
        start: T0,
        end: None,
        flags: Flags::empty(),
    })
}

/// Builds a [`Translation`]; see [`tr`].
#[derive(Clone, Debug)]
#[must_use]
pub struct TranslationBuilder(Translation);

impl TranslationBuilder {
    pub fn kind(mut self, kind: Kind) -> Self {
        self.0.kind = kind;
        self
    }
    pub fn proto(mut self, proto: Proto) -> Self {
        self.0.proto = proto;
        self
    }
    pub fn zone(mut self, zone: u16) -> Self {
        self.0.zone = zone;
        self
    }
    pub fn flags(mut self, flags: Flags) -> Self {
        self.0.flags = flags;
        self
    }
    pub fn start(mut self, start: Timestamp) -> Self {
        self.0.start = start;
        self
    }
    /// The end, or `None` for a translation still open.
    pub fn end(mut self, end: Option<Timestamp>) -> Self {
        self.0.end = end;
        self
    }
    pub fn build(self) -> Translation {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_every_setter() {
        let t = tr("10.0.0.2:5000", "100.64.0.1:6000", "[2001:db8::1]:443").build();
        assert_eq!(
            (t.kind, t.proto, t.zone, t.start, t.end),
            (Kind::Snat, Proto::TCP, 0, T0, None)
        );
        assert_eq!(T0.to_string(), "2030-01-01T10:00:00Z");
        assert!(t.remote.is_ipv6() && t.flags == Flags::empty());
        let end = T0.checked_add(jiff::SignedDuration::from_secs(5)).expect("time");
        let u = tr("10.0.0.2:5000", "100.64.0.1:6000", "10.9.0.1:53")
            .kind(Kind::Dnat)
            .proto(Proto::UDP)
            .zone(3)
            .flags(Flags::SEEDED)
            .start(end)
            .end(Some(end))
            .build();
        assert_eq!((u.kind, u.proto, u.zone, u.flags), (Kind::Dnat, Proto::UDP, 3, Flags::SEEDED));
        assert_eq!((u.start, u.end), (end, Some(end)));
    }

    #[test]
    #[should_panic(expected = "the outside address")]
    fn a_bad_address_names_itself() {
        let _ = tr("10.0.0.2:5000", "nope", "10.9.0.1:53");
    }
}
