//! Command-line options of the attribution store, shared by `record` and `import`.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use recorder::store::{Resolution, WriterOptions};

/// Where and how segments are written.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Write segments into this directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Seal the active segment when it is this old (e.g. 1h, 30m).
    #[arg(long, value_name = "AGE", default_value = "1h", value_parser = parse_duration)]
    pub rotate_age: Duration,
    /// Seal the active segment when it reaches this size (e.g. 256MiB, 1G).
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub rotate_size: u64,
    /// Flush and fsync buffered translations at least this often (e.g. 1s, 500ms).
    #[arg(long, value_name = "INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub flush_interval: Duration,
    /// Delete sealed segments whose newest record is older than this many days.
    #[arg(long, value_name = "DAYS")]
    pub retain_days: Option<u32>,
    /// Delete the oldest sealed segments while they take more than this (e.g. 500G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub retain_size: Option<u64>,
    /// Unit of stored times: ms (default, smallest), us or ns.
    #[arg(long, value_name = "UNIT", default_value = "ms", value_parser = parse_resolution)]
    pub time_resolution: Resolution,
    /// zstd level of sealed blocks (1-22). Measured on the synthetic workload (`cargo bench -p
    /// recorder --bench store`): 1 (default) gives 7.89 bytes per translation and about 0.3 µs
    /// of CPU per translation at seal time (on the writer's seal thread); 9 gives 7.91 for
    /// 0.5 µs; 19 is the smallest (7.62) for 3.3 µs.
    #[arg(long, value_name = "LEVEL", default_value_t = WriterOptions::default().seal_level, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub seal_level: i32,
}

impl StoreArgs {
    /// The writer options, or `None` when `--dir` was not given.
    pub fn to_options(&self) -> anyhow::Result<Option<WriterOptions>> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        if self.rotate_age.is_zero() {
            bail!("--rotate-age must be longer than zero");
        }
        if self.flush_interval.is_zero() {
            bail!("--flush-interval must be longer than zero");
        }
        if self.rotate_size < 1 << 16 {
            bail!("--rotate-size must be at least 64KiB");
        }
        if self.retain_days == Some(0) {
            bail!("--retain-days must be at least 1");
        }
        Ok(Some(WriterOptions {
            dir: dir.clone(),
            rotate_age: self.rotate_age,
            rotate_size: self.rotate_size,
            flush_interval: self.flush_interval,
            retain_days: self.retain_days,
            retain_size: self.retain_size,
            resolution: self.time_resolution,
            seal_level: self.seal_level,
            ..WriterOptions::default()
        }))
    }
}

fn split_number(s: &str) -> Option<(u64, &str)> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n = s[..digits].parse().ok()?;
    Some((n, s[digits..].trim()))
}

/// Parses `500ms`, `30s`, `15m`, `1h`, `2d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || {
        format!("invalid duration {s:?}: expected a number with ms, s, m, h or d (e.g. 1h, 500ms)")
    };
    let (n, unit) = split_number(s).ok_or_else(err)?;
    let secs = |k: u64| n.checked_mul(k).map(Duration::from_secs).ok_or_else(err);
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => secs(1),
        "m" | "min" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => Err(err()),
    }
}

/// Parses `256MiB`, `10G`, `500k`, `4096` (bytes). K/M/G/T and KiB/MiB/GiB/TiB are powers of
/// 1024; KB/MB/GB/TB powers of 1000.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let err = || {
        format!(
            "invalid size {s:?}: expected a number with an optional unit (e.g. 256MiB, 10G, 500MB)"
        )
    };
    let (n, unit) = split_number(s).ok_or_else(err)?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(err()),
    };
    n.checked_mul(mult).ok_or_else(err)
}

fn parse_resolution(s: &str) -> Result<Resolution, String> {
    s.parse::<Resolution>().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse_with_clear_errors() {
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("1 fortnight").is_err_and(|e| e.contains("expected")));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("5MB"), Ok(5_000_000));
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999T").is_err());
    }
}
