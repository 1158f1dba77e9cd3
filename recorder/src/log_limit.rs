//! Log lines that would repeat for as long as a condition lasts (a full disk, a ring buffer that
//! overflows every second) are limited: the first is logged at once, the repeats within the
//! next [`Repeats`] interval are counted, and the next line logged says how many were held back.
//! The counters themselves (`--stats-json`, the metrics) count every occurrence.

use std::time::{Duration, Instant};

/// How often a repeating line is logged at most, by default.
pub const EVERY: Duration = Duration::from_secs(60);

/// One kind of repeating log line.
#[derive(Debug)]
pub struct Repeats {
    every: Duration,
    last: Option<Instant>,
    held: u64,
}

impl Default for Repeats {
    fn default() -> Self {
        Self::new(EVERY)
    }
}

impl Repeats {
    pub const fn new(every: Duration) -> Self {
        Self { every, last: None, held: 0 }
    }

    /// Whether to log this occurrence now: `Some(n)` with the `n` occurrences held back since
    /// the last one logged, `None` when it is held back.
    pub fn admit(&mut self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|t| now.duration_since(t) < self.every) {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }

    /// The condition is over: the next occurrence is logged at once. Returns how many were
    /// held back since the last one logged.
    pub fn reset(&mut self) -> u64 {
        self.last = None;
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_logged_repeats_are_counted_until_the_interval_passes() {
        let mut r = Repeats::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(r.admit_at(t0), Some(0));
        for s in 1..60 {
            assert_eq!(r.admit_at(t0 + Duration::from_secs(s)), None, "second {s}");
        }
        assert_eq!(r.admit_at(t0 + Duration::from_secs(60)), Some(59));
        assert_eq!(r.admit_at(t0 + Duration::from_secs(61)), None);
        assert_eq!(r.reset(), 1);
        assert_eq!(r.admit_at(t0 + Duration::from_secs(62)), Some(0), "after a reset: at once");
    }
}
