//! Command-line options of the attribution store, shared by `record` and `import`.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use recorder::store::{Resolution, WriterOptions};
use recorder::units::{parse_duration, parse_size};

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
    #[arg(long, value_name = "UNIT", default_value = "ms", value_parser = clap::value_parser!(Resolution))]
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
