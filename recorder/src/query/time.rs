//! Reading the times and durations an operator types: RFC 3339 with any offset, a civil
//! `YYYY-MM-DD HH:MM:SS` read in a time zone, or Unix epoch seconds with a fraction.

use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};
use jiff::{SignedDuration, Timestamp};

/// The default half-width of the window around `--at`: clock skew between the gateway and
/// whoever reports the abuse.
pub const DEFAULT_WINDOW: SignedDuration = SignedDuration::from_secs(2);

/// A time, zone or duration that could not be read; each message says what was expected.
#[derive(Debug, thiserror::Error)]
pub enum TimeError {
    #[error(
        "expected a time as RFC 3339 (2026-11-24T22:18:00Z, any offset), 'YYYY-MM-DD HH:MM:SS[.frac]' \
         (read in --tz, default UTC) or Unix seconds (1795990680.25), got {0:?}"
    )]
    Unrecognized(String),
    #[error(
        "{input:?} does not exist or is ambiguous in time zone {tz} (a DST change): give an explicit offset such as +01:00"
    )]
    Ambiguous { input: String, tz: String },
    #[error("time {0:?} is outside the supported range")]
    OutOfRange(String),
    #[error(
        "expected a time zone as an IANA name (Europe/Berlin), UTC or an offset (+02:00), got {0:?}"
    )]
    BadZone(String),
    #[error(
        "expected a non-negative duration such as 2s, 500ms, 1m30s, 1h or plain seconds (2.5), got {0:?}"
    )]
    BadDuration(String),
}

/// Reads a time zone: `UTC`/`Z`, a fixed offset `±HH:MM` (or `±HH`), or an IANA name.
pub fn parse_tz(s: &str) -> Result<TimeZone, TimeError> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("utc") || t == "Z" {
        return Ok(TimeZone::UTC);
    }
    let signed = match t.as_bytes().first() {
        Some(b'+') => Some((1, &t[1..])),
        Some(b'-') => Some((-1, &t[1..])),
        _ => None,
    };
    if let Some((sign, body)) = signed {
        let (h, m) = match body.split_once(':') {
            Some((h, m)) => (h, m),
            None if body.len() == 4 => body.split_at(2),
            None => (body, "0"),
        };
        let bad = || TimeError::BadZone(s.to_owned());
        let h: i32 = h.parse().map_err(|_| bad())?;
        let m: i32 = m.parse().map_err(|_| bad())?;
        if h > 25 || m > 59 {
            return Err(bad());
        }
        let offset = Offset::from_seconds(sign * (h * 3600 + m * 60)).map_err(|_| bad())?;
        return Ok(TimeZone::fixed(offset));
    }
    TimeZone::get(t).map_err(|_| TimeError::BadZone(s.to_owned()))
}

/// Reads a time as the operator typed it.
///
/// - RFC 3339 / ISO 8601 with an offset (`2026-11-24T22:18:00+01:00`, `…Z`, a space instead of
///   `T`): the offset given wins over `tz`.
/// - A civil time without offset (`2026-11-24 22:18:00`, optional fraction): read in `tz`
///   (UTC when `None`); a time a DST change makes ambiguous or skips is an error.
/// - Unix epoch seconds, optionally with up to nine fractional digits (`1795990680.25`).
pub fn parse_time(s: &str, tz: Option<&TimeZone>) -> Result<Timestamp, TimeError> {
    let t = s.trim();
    if let Some(ts) = parse_epoch(t)? {
        return Ok(ts);
    }
    if let Ok(ts) = t.parse::<Timestamp>() {
        return Ok(ts);
    }
    if has_offset(t) {
        // An offset was given but the whole did not parse: do not silently ignore it.
        return Err(TimeError::Unrecognized(s.to_owned()));
    }
    let dt: DateTime = t.parse().map_err(|_| TimeError::Unrecognized(s.to_owned()))?;
    let tz = tz.cloned().unwrap_or(TimeZone::UTC);
    tz.to_ambiguous_timestamp(dt).unambiguous().map_err(|_| TimeError::Ambiguous {
        input: s.to_owned(),
        tz: tz.iana_name().map_or_else(|| format!("{tz:?}"), str::to_owned),
    })
}

/// Whether a date-time string carries a UTC offset or `Z` after its time part.
fn has_offset(t: &str) -> bool {
    let Some(time_start) = t.find(['T', 't', ' ']) else { return false };
    let time = &t[time_start + 1..];
    time.contains(['Z', 'z', '+', '-', '['])
}

/// Unix seconds with an optional fraction; `Ok(None)` when `t` is not of that shape.
fn parse_epoch(t: &str) -> Result<Option<Timestamp>, TimeError> {
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = int.strip_prefix('-').unwrap_or(int);
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Ok(None);
    }
    if t.ends_with('.') || frac.len() > 9 {
        return Err(TimeError::Unrecognized(t.to_owned()));
    }
    let out_of_range = || TimeError::OutOfRange(t.to_owned());
    let secs: i64 = int.parse().map_err(|_| out_of_range())?;
    let nanos = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(9)
        .fold(0i32, |n, b| n * 10 + i32::from(b - b'0'));
    let ts = if int.starts_with('-') && nanos > 0 {
        Timestamp::new(secs - 1, 1_000_000_000 - nanos)
    } else {
        Timestamp::new(secs, nanos)
    };
    ts.map(Some).map_err(|_| out_of_range())
}

/// Reads a non-negative duration in any form [`crate::units::parse_duration`] takes.
pub fn parse_duration(s: &str) -> Result<SignedDuration, TimeError> {
    crate::units::parse_duration(s)
        .ok()
        .and_then(|d| SignedDuration::try_from(d).ok())
        .ok_or_else(|| TimeError::BadDuration(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn rfc3339_with_any_offset() {
        assert_eq!(
            parse_time("2026-11-24T22:18:00Z", None).expect("z"),
            ts("2026-11-24T22:18:00Z")
        );
        assert_eq!(
            parse_time("2026-11-24T23:18:00.5+01:00", None).expect("offset"),
            ts("2026-11-24T22:18:00.5Z")
        );
        // The offset given wins over --tz.
        let berlin = parse_tz("Europe/Berlin").expect("tz");
        assert_eq!(
            parse_time("2026-11-24 22:18:00-05:00", Some(&berlin)).expect("space"),
            ts("2026-11-25T03:18:00Z")
        );
    }

    #[test]
    fn civil_times_are_read_in_the_zone() {
        assert_eq!(
            parse_time("2026-11-24 22:18:00", None).expect("utc"),
            ts("2026-11-24T22:18:00Z")
        );
        let berlin = parse_tz("Europe/Berlin").expect("tz");
        assert_eq!(
            parse_time("2026-11-24 22:18:00.25", Some(&berlin)).expect("berlin"),
            ts("2026-11-24T21:18:00.25Z")
        );
        let fixed = parse_tz("+05:30").expect("fixed");
        assert_eq!(
            parse_time("2026-11-24 22:18:00", Some(&fixed)).expect("fixed"),
            ts("2026-11-24T16:48:00Z")
        );
        // 02:30 on the last Sunday of March does not exist in Berlin; 02:30 in October happens twice.
        assert!(matches!(
            parse_time("2026-03-29 02:30:00", Some(&berlin)),
            Err(TimeError::Ambiguous { .. })
        ));
        assert!(matches!(
            parse_time("2026-10-25 02:30:00", Some(&berlin)),
            Err(TimeError::Ambiguous { .. })
        ));
    }

    #[test]
    fn epoch_seconds_with_fractions() {
        assert_eq!(
            parse_time("1795990680", None).expect("int"),
            Timestamp::from_second(1_795_990_680).expect("t")
        );
        assert_eq!(
            parse_time("1795990680.000001", None).expect("frac"),
            Timestamp::new(1_795_990_680, 1_000).expect("t")
        );
        assert_eq!(
            parse_time("-1.5", None).expect("neg"),
            Timestamp::new(-2, 500_000_000).expect("t")
        );
        assert!(parse_time("1795990680.1234567891", None).is_err());
        assert!(parse_time("1795990680.", None).is_err());
    }

    #[test]
    fn bad_times_and_zones_say_what_was_expected() {
        for bad in ["yesterday", "2026-13-01 00:00:00", "2026-11-24T22:18:00+99:00", "", "22:18"] {
            let err = parse_time(bad, None).expect_err(bad).to_string();
            assert!(err.contains("expected a time"), "{bad}: {err}");
        }
        assert!(parse_tz("Mars/Olympus").is_err());
        assert!(parse_tz("+2x").is_err());
        assert_eq!(
            parse_tz("-0300").expect("tz").to_offset(Timestamp::UNIX_EPOCH).seconds(),
            -3 * 3600
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s").expect("2s"), SignedDuration::from_secs(2));
        assert_eq!(parse_duration("500ms").expect("ms"), SignedDuration::from_millis(500));
        assert_eq!(parse_duration("1m30s").expect("m s"), SignedDuration::from_secs(90));
        assert_eq!(parse_duration("2.5").expect("plain"), SignedDuration::from_millis(2500));
        assert_eq!(parse_duration("0").expect("zero"), SignedDuration::ZERO);
        assert_eq!(parse_duration("PT1H").expect("iso"), SignedDuration::from_hours(1));
        for bad in ["-2s", "two", "", "1.2.3"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
