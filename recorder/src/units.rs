//! The values every command line and the config file share: durations, sizes and the time
//! resolution of stored times. Each is parsed here, so every flag and key takes the same forms.

use std::time::Duration;

use jiff::Timestamp;

/// A value that could not be read or represented.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error(
        "invalid duration {0:?}: expected a number of ms, s, m, h or d, or several (1m30s), \
         plain seconds (2.5), or ISO 8601 (PT1M30S)"
    )]
    Duration(String),
    #[error(
        "invalid size {0:?}: expected a number with an optional unit (e.g. 256MiB, 10G, 500MB)"
    )]
    Size(String),
    #[error("unknown time resolution {0:?}: expected ms, us or ns")]
    Resolution(String),
    /// A time outside the range of a resolution's 64-bit counter.
    #[error("time {0} cannot be represented")]
    OutOfRange(String),
}

/// Reads a non-negative duration: a sequence of numbers with units (`500ms`, `30s`, `15m`,
/// `1h`, `2d`, `1m30s`, `1.5h`; `min` is minutes too), plain seconds with an optional fraction
/// (`2.5`), or ISO 8601 (`PT1M30S`).
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let bad = || UnitError::Duration(s.to_owned());
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if t.starts_with(['P', 'p']) {
        let d: jiff::SignedDuration = t.parse().map_err(|_| bad())?;
        return Duration::try_from(d).map_err(|_| bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num.ends_with('.') {
            return Err(bad());
        }
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let secs_per_unit = match unit.trim() {
            // A bare number is seconds, and only on its own.
            "" if total.is_zero() && next.is_empty() => 1.0,
            "ms" => 0.001,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => return Err(bad()),
        };
        let part = if num.contains('.') {
            let n: f64 = num.parse().map_err(|_| bad())?;
            Duration::try_from_secs_f64(n * secs_per_unit).map_err(|_| bad())?
        } else {
            let n: u64 = num.parse().map_err(|_| bad())?;
            let ms = (secs_per_unit * 1000.0) as u64;
            n.checked_mul(ms).map(Duration::from_millis).ok_or_else(bad)?
        };
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = next;
    }
    Ok(total)
}

/// Reads a size in bytes: `256MiB`, `10G`, `500k`, `4096`. K/M/G/T and KiB/MiB/GiB/TiB are
/// powers of 1024; KB/MB/GB/TB powers of 1000.
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let bad = || UnitError::Size(s.to_owned());
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..digits].parse().map_err(|_| bad())?;
    let mult: u64 = match t[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// A duration as flags and the config file write it (`30s`, `1h`, `500ms`): read by
/// [`parse_duration`], shown in the largest unit that divides it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl std::fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0;
        if !d.subsec_nanos().is_multiple_of(1_000_000) {
            // Finer than the units take: plain seconds with a fraction.
            return write!(f, "{}.{:09}", d.as_secs(), d.subsec_nanos());
        }
        let ms = d.as_millis();
        let unit = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s")]
            .into_iter()
            .find(|&(n, _)| ms.is_multiple_of(n) && ms > 0);
        match unit {
            Some((n, u)) => write!(f, "{}{u}", ms / n),
            None if ms == 0 => f.write_str("0s"),
            None => write!(f, "{ms}ms"),
        }
    }
}

/// A size in bytes as flags and the config file write it (`16MiB`, `500G`): read by
/// [`parse_size`], shown in the largest binary unit that divides it. The config file also takes
/// a plain integer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0;
        let unit = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")]
            .into_iter()
            .find(|&(shift, _)| b > 0 && b.is_multiple_of(1u64 << shift));
        match unit {
            Some((shift, u)) => write!(f, "{}{u}", b >> shift),
            None => write!(f, "{b}"),
        }
    }
}

/// Parsed by `$parse`; serialized as their text; read from text, or (a size, or a duration in
/// seconds) from an integer.
macro_rules! serde_as_text {
    ($ty:ident, $parse:ident, $from_int:expr) => {
        impl std::str::FromStr for $ty {
            type Err = UnitError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $parse(s).map(Self)
            }
        }
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                #[derive(serde::Deserialize)]
                #[serde(untagged)]
                enum Raw {
                    Int(u64),
                    Text(String),
                }
                match Raw::deserialize(d)? {
                    Raw::Int(n) => Ok($from_int(n)),
                    Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
                }
            }
        }
    };
}
serde_as_text!(HumanDuration, parse_duration, |n| HumanDuration(Duration::from_secs(n)));
serde_as_text!(ByteSize, parse_size, ByteSize);

/// The unit in which a segment stores times; coarser units compress better.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Resolution {
    /// Milliseconds (the default).
    #[default]
    Millis,
    /// Microseconds.
    Micros,
    /// Nanoseconds (the kernel's own resolution).
    Nanos,
}

impl Resolution {
    pub(crate) fn code(self) -> u8 {
        match self {
            Resolution::Millis => 0,
            Resolution::Micros => 1,
            Resolution::Nanos => 2,
        }
    }
    pub(crate) fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(Resolution::Millis),
            1 => Some(Resolution::Micros),
            2 => Some(Resolution::Nanos),
            _ => None,
        }
    }
    /// Nanoseconds in one unit.
    pub fn nanos_per_unit(self) -> i128 {
        match self {
            Resolution::Millis => 1_000_000,
            Resolution::Micros => 1_000,
            Resolution::Nanos => 1,
        }
    }
    /// A time as a count of units since the Unix epoch (rounded down).
    pub fn to_units(self, t: Timestamp) -> Result<i64, UnitError> {
        i64::try_from(t.as_nanosecond().div_euclid(self.nanos_per_unit()))
            .map_err(|_| UnitError::OutOfRange(t.to_string()))
    }
    /// A count of units since the Unix epoch as a time.
    pub fn from_units(self, u: i64) -> Result<Timestamp, UnitError> {
        Timestamp::from_nanosecond(i128::from(u) * self.nanos_per_unit())
            .map_err(|_| UnitError::OutOfRange(format!("{u} units")))
    }
    /// `t` rounded down to this resolution: what the store gives back.
    pub fn truncate(self, t: Timestamp) -> Result<Timestamp, UnitError> {
        self.from_units(self.to_units(t)?)
    }
    /// A duration in units (rounded down, saturating).
    pub(crate) fn duration_units(self, d: Duration) -> i64 {
        i64::try_from(d.as_nanos() / self.nanos_per_unit().unsigned_abs()).unwrap_or(i64::MAX)
    }
    /// The setting's name (`ms`, `us`, `ns`).
    pub fn name(self) -> &'static str {
        match self {
            Resolution::Millis => "ms",
            Resolution::Micros => "us",
            Resolution::Nanos => "ns",
        }
    }
}

impl std::str::FromStr for Resolution {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ms" | "millis" | "milliseconds" => Ok(Resolution::Millis),
            "us" | "µs" | "micros" | "microseconds" => Ok(Resolution::Micros),
            "ns" | "nanos" | "nanoseconds" => Ok(Resolution::Nanos),
            _ => Err(UnitError::Resolution(s.to_owned())),
        }
    }
}

impl std::fmt::Display for Resolution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

// Serialized by its name (in `store::segment`, beside the segment listing that shows it).
impl<'de> serde::Deserialize<'de> for Resolution {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_every_documented_form() {
        let secs = Duration::from_secs;
        for (text, want) in [
            ("1h", secs(3600)),
            ("30m", secs(1800)),
            ("15min", secs(900)),
            ("2d", secs(2 * 86_400)),
            ("500ms", Duration::from_millis(500)),
            ("2", secs(2)),
            ("2.5", Duration::from_millis(2500)),
            ("1m30s", secs(90)),
            ("1h 30m", secs(5400)),
            ("1.5h", secs(5400)),
            ("PT1M30S", secs(90)),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in ["", "1 fortnight", "-1s", "1.", "s", "1m30", "PT-1S", "99999999999999999999s"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.to_string().contains("expected"), "{bad}: {err}");
        }
    }

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("5MB"), Ok(5_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999T").is_err());
        assert!(parse_size("12 parsecs").is_err_and(|e| e.to_string().contains("expected")));
    }

    #[test]
    fn durations_and_sizes_show_in_a_form_they_parse_back_from() {
        for text in ["0s", "500ms", "30s", "90s", "15m", "1h", "2d", "1.000000500"] {
            let d: HumanDuration = text.parse().expect(text);
            assert_eq!(d.to_string(), text);
            assert_eq!(d.to_string().parse::<HumanDuration>(), Ok(d));
        }
        assert_eq!(HumanDuration(Duration::from_secs(3600 + 60)).to_string(), "61m");
        for (n, text) in [(0, "0"), (4096, "4KiB"), (16 << 20, "16MiB"), (1000, "1000")] {
            assert_eq!(ByteSize(n).to_string(), text);
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(n)));
        }
    }

    #[test]
    fn config_values_deserialize_from_text_or_integers() {
        #[derive(serde::Deserialize, serde::Serialize, PartialEq, Debug)]
        struct T {
            d: HumanDuration,
            s: ByteSize,
            r: Resolution,
        }
        let t: T = toml::from_str("d = \"1m30s\"\ns = 65536\nr = \"us\"").expect("toml");
        assert_eq!(
            t,
            T {
                d: HumanDuration(Duration::from_secs(90)),
                s: ByteSize(1 << 16),
                r: Resolution::Micros
            }
        );
        assert_eq!(toml::to_string(&t).expect("ser"), "d = \"90s\"\ns = \"64KiB\"\nr = \"us\"\n");
        let err = toml::from_str::<T>("d = \"soon\"\ns = 1\nr = \"ms\"").expect_err("bad");
        assert!(err.to_string().contains("invalid duration"), "{err}");
        assert!(toml::from_str::<T>("d = 1\ns = 1\nr = 3").is_err(), "a resolution is text");
    }

    #[test]
    fn resolutions_round_down_and_name_themselves() {
        let t: Timestamp = "2026-01-01T00:00:00.123456789Z".parse().expect("time");
        let ms = Resolution::Millis;
        assert_eq!(ms.truncate(t).expect("ms").to_string(), "2026-01-01T00:00:00.123Z");
        assert_eq!(Resolution::Nanos.truncate(t), Ok(t));
        for r in [Resolution::Millis, Resolution::Micros, Resolution::Nanos] {
            assert_eq!(r.name().parse::<Resolution>(), Ok(r));
            assert_eq!(Resolution::from_code(r.code()), Some(r));
        }
        assert!("fortnights".parse::<Resolution>().is_err());
        assert!(Resolution::Nanos.to_units(Timestamp::MAX).is_err());
    }
}
