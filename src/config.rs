//! Job configuration: one struct, sensible defaults.

use crate::error::{Result, WeirError};
use std::path::PathBuf;
use std::time::Duration;

/// How a job runs. Defaults: checkpoints every 1 s into `./weir-checkpoints`,
/// 10 min timeout, 3 retained, parallelism 1, 128 key groups.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Root of the checkpoint store; the job's checkpoints go to `<dir>/<job name>/`.
    pub checkpoint_dir: PathBuf,
    /// Interval between checkpoints; `None` disables periodic checkpoints
    /// (on-demand and final checkpoints still work).
    pub checkpoint_interval: Option<Duration>,
    /// A checkpoint not complete after this long is aborted.
    pub checkpoint_timeout: Duration,
    /// How many complete checkpoints to keep.
    pub retained_checkpoints: usize,
    /// Where the working RocksDB instances live. Default `<checkpoint_dir>/<job>/local`,
    /// which lets snapshots hard-link SST files into the store.
    pub local_state_dir: Option<PathBuf>,
    /// Bytes of the block cache shared by every RocksDB instance of the job.
    pub state_block_cache_bytes: usize,
    /// Bytes of memtables across every RocksDB instance (write-buffer manager).
    pub state_write_buffer_bytes: usize,
    /// Entries per task in the write-back cache in front of RocksDB.
    pub state_cache_entries: usize,
    /// Write-behind: a keyed task with at least this many changed cache
    /// entries part-way through a checkpoint interval writes them to RocksDB
    /// in the background, so the next checkpoint has only the rest to write
    /// (a shorter checkpoint). Skipped when the same keys change over and
    /// over (writing them early would only repeat the work). 0 disables it.
    pub state_write_behind_entries: usize,
    /// Capacity of each channel between tasks, in batches.
    pub channel_capacity: usize,
    /// Records per batch on a channel before it is flushed.
    pub batch_size: usize,
    /// Restore from the newest usable checkpoint (default); `false` starts empty.
    pub restore: bool,
    /// How a bounded run ends. `false` (default, Spark's Trigger.AvailableNow,
    /// Flink's stop-with-savepoint): the final checkpoint keeps open windows
    /// and timers for the next run. `true` (Flink's bounded source, stop
    /// --drain): when every source is done, event time jumps to the end
    /// (`Watermark(MAX)`) so every window and event-time timer fires, then the
    /// final checkpoint.
    pub drain_at_end: bool,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            checkpoint_dir: PathBuf::from("weir-checkpoints"),
            checkpoint_interval: Some(Duration::from_secs(1)),
            checkpoint_timeout: Duration::from_secs(600),
            retained_checkpoints: 3,
            local_state_dir: None,
            state_block_cache_bytes: 256 << 20,
            state_write_buffer_bytes: 128 << 20,
            state_cache_entries: 1 << 20,
            state_write_behind_entries: 4096,
            channel_capacity: 16,
            batch_size: 1024,
            restore: true,
            drain_at_end: false,
        }
    }
}

impl JobConfig {
    /// A default config with checkpoints under `dir`.
    pub fn with_checkpoint_dir(dir: impl Into<PathBuf>) -> Self {
        JobConfig {
            checkpoint_dir: dir.into(),
            ..JobConfig::default()
        }
    }

    /// Checks every value, naming the key of the first bad one.
    ///
    /// # Errors
    /// [`WeirError::Config`] for a zero or out-of-range value.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, message: &str| {
            Err(WeirError::Config {
                key: key.into(),
                message: message.into(),
            })
        };
        if self.checkpoint_interval == Some(Duration::ZERO) {
            return bad("checkpoint_interval", "must be > 0 (use None to disable)");
        }
        if self.checkpoint_timeout.is_zero() {
            return bad("checkpoint_timeout", "must be > 0");
        }
        if self.retained_checkpoints == 0 {
            return bad("retained_checkpoints", "must be >= 1");
        }
        if self.channel_capacity == 0 {
            return bad("channel_capacity", "must be >= 1");
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be >= 1");
        }
        if self.state_cache_entries == 0 {
            return bad("state_cache_entries", "must be >= 1");
        }
        Ok(())
    }
}

/// A job configuration file (TOML). Every key is optional; an unknown key or
/// a bad value is an error naming the key and the file.
///
/// ```toml
/// checkpoint_dir = "/var/lib/weir"
/// checkpoint_interval_ms = 1000   # 0: only on demand and final checkpoints
/// checkpoint_timeout_ms = 600000
/// retained_checkpoints = 3
/// state_cache_entries = 1048576
/// state_write_behind_entries = 4096   # 0: off
/// drain_at_end = false
/// metrics_addr = "127.0.0.1:9464"
///
/// [kafka]
/// brokers = "127.0.0.1:9092"
/// delivery = "exactly-once"      # or "at-least-once", "none"
/// bad_records = "dlq:bad-input"  # or "fail", "skip"
/// consumer = { "fetch.max.bytes" = "1048576" }
/// producer = { "linger.ms" = "5" }
/// ```
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// [`JobConfig::checkpoint_dir`].
    pub checkpoint_dir: Option<PathBuf>,
    /// [`JobConfig::checkpoint_interval`] in ms; 0 disables periodic checkpoints.
    pub checkpoint_interval_ms: Option<u64>,
    /// [`JobConfig::checkpoint_timeout`] in ms.
    pub checkpoint_timeout_ms: Option<u64>,
    /// [`JobConfig::retained_checkpoints`].
    pub retained_checkpoints: Option<usize>,
    /// [`JobConfig::local_state_dir`].
    pub local_state_dir: Option<PathBuf>,
    /// [`JobConfig::state_block_cache_bytes`].
    pub state_block_cache_bytes: Option<usize>,
    /// [`JobConfig::state_write_buffer_bytes`].
    pub state_write_buffer_bytes: Option<usize>,
    /// [`JobConfig::state_cache_entries`].
    pub state_cache_entries: Option<usize>,
    /// [`JobConfig::state_write_behind_entries`].
    pub state_write_behind_entries: Option<usize>,
    /// [`JobConfig::channel_capacity`].
    pub channel_capacity: Option<usize>,
    /// [`JobConfig::batch_size`].
    pub batch_size: Option<usize>,
    /// [`JobConfig::drain_at_end`].
    pub drain_at_end: Option<bool>,
    /// Serve Prometheus metrics on this address (the CLI; a library user
    /// installs the `metrics` recorder of their choice).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Settings of the Kafka connectors of the built-in jobs.
    #[serde(default)]
    pub kafka: KafkaSettings,
}

/// The `[kafka]` table of a config file.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port,...`.
    pub brokers: Option<String>,
    /// Output delivery guarantee: `none`, `at-least-once` or `exactly-once`.
    pub delivery: Option<DeliverySetting>,
    /// Input records that do not parse: `fail`, `skip` or `dlq:TOPIC`.
    pub bad_records: Option<BadRecordsSetting>,
    /// librdkafka properties of every consumer (they override weir's).
    #[serde(default)]
    pub consumer: std::collections::BTreeMap<String, String>,
    /// librdkafka properties of every producer (they override weir's).
    #[serde(default)]
    pub producer: std::collections::BTreeMap<String, String>,
}

/// `kafka.delivery` of a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliverySetting {
    /// No guarantee.
    None,
    /// At least once.
    AtLeastOnce,
    /// Exactly once (transactions committed with checkpoints).
    ExactlyOnce,
}

impl From<DeliverySetting> for crate::connectors::kafka::Delivery {
    fn from(d: DeliverySetting) -> Self {
        match d {
            DeliverySetting::None => crate::connectors::kafka::Delivery::None,
            DeliverySetting::AtLeastOnce => crate::connectors::kafka::Delivery::AtLeastOnce,
            DeliverySetting::ExactlyOnce => crate::connectors::kafka::Delivery::ExactlyOnce,
        }
    }
}

/// `kafka.bad_records` of a config file (and the `--bad-records` flag).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct BadRecordsSetting(pub crate::connectors::kafka::BadRecordPolicy);

impl TryFrom<String> for BadRecordsSetting {
    type Error = String;
    fn try_from(text: String) -> std::result::Result<Self, String> {
        use crate::connectors::kafka::BadRecordPolicy;
        match text.as_str() {
            "fail" => Ok(BadRecordsSetting(BadRecordPolicy::Fail)),
            "skip" => Ok(BadRecordsSetting(BadRecordPolicy::Skip)),
            other => match other.strip_prefix("dlq:") {
                Some(topic) if !topic.is_empty() => Ok(BadRecordsSetting(BadRecordPolicy::DeadLetter(topic.into()))),
                _ => Err(format!("must be `fail`, `skip` or `dlq:TOPIC`, not `{other}`")),
            },
        }
    }
}

/// The keys of [`ConfigFile`], which are also read from the environment as
/// `WEIR_<KEY>` (upper case), e.g. `WEIR_CHECKPOINT_INTERVAL_MS=500`.
pub const CONFIG_KEYS: [&str; 13] = [
    "checkpoint_dir",
    "checkpoint_interval_ms",
    "checkpoint_timeout_ms",
    "retained_checkpoints",
    "local_state_dir",
    "state_block_cache_bytes",
    "state_write_buffer_bytes",
    "state_cache_entries",
    "state_write_behind_entries",
    "channel_capacity",
    "batch_size",
    "drain_at_end",
    "metrics_addr",
];

impl ConfigFile {
    /// Parses TOML text; `origin` (a file name) goes into error messages.
    ///
    /// # Errors
    /// [`WeirError::Config`] naming the unknown or malformed key and `origin`.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| WeirError::Config {
            key: origin.to_string(),
            message: e.message().to_string() + &location(text, e.span()),
        })
    }

    /// Reads a TOML file.
    ///
    /// # Errors
    /// The file cannot be read, or as [`ConfigFile::parse`].
    pub fn read(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| WeirError::io("cannot read config file", path, e))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The `WEIR_<KEY>` environment variables, as a config layer.
    ///
    /// # Errors
    /// A variable with a malformed value, named.
    pub fn from_env() -> Result<Self> {
        let mut text = String::new();
        for key in CONFIG_KEYS {
            let var = format!("WEIR_{}", key.to_uppercase());
            if let Ok(value) = std::env::var(&var) {
                let quoted = key.ends_with("_dir") || key == "metrics_addr";
                let value = if quoted { format!("{value:?}") } else { value };
                text.push_str(&format!("{key} = {value}\n"));
            }
        }
        Self::parse(&text, "environment (WEIR_*)")
    }

    /// Applies every key that is set to `config`.
    pub fn apply(&self, config: &mut JobConfig) {
        if let Some(v) = &self.checkpoint_dir {
            config.checkpoint_dir = v.clone();
        }
        if let Some(v) = self.checkpoint_interval_ms {
            config.checkpoint_interval = (v > 0).then(|| Duration::from_millis(v));
        }
        if let Some(v) = self.checkpoint_timeout_ms {
            config.checkpoint_timeout = Duration::from_millis(v);
        }
        if let Some(v) = self.retained_checkpoints {
            config.retained_checkpoints = v;
        }
        if let Some(v) = &self.local_state_dir {
            config.local_state_dir = Some(v.clone());
        }
        if let Some(v) = self.state_block_cache_bytes {
            config.state_block_cache_bytes = v;
        }
        if let Some(v) = self.state_write_buffer_bytes {
            config.state_write_buffer_bytes = v;
        }
        if let Some(v) = self.state_cache_entries {
            config.state_cache_entries = v;
        }
        if let Some(v) = self.state_write_behind_entries {
            config.state_write_behind_entries = v;
        }
        if let Some(v) = self.channel_capacity {
            config.channel_capacity = v;
        }
        if let Some(v) = self.batch_size {
            config.batch_size = v;
        }
        if let Some(v) = self.drain_at_end {
            config.drain_at_end = v;
        }
    }
}

/// " (line L, column C)" of a byte span in `text`.
fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else { return String::new() };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.len() - line_start + 1;
    // The line itself names the key, also when the message only names the value.
    let source = text[line_start..].lines().next().unwrap_or("").trim();
    format!(" (line {line}, column {column}: `{source}`)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_sets_what_it_names_and_nothing_else() {
        let file = ConfigFile::parse("checkpoint_interval_ms = 250\nretained_checkpoints = 5\n", "job.toml").unwrap();
        let mut config = JobConfig::default();
        file.apply(&mut config);
        assert_eq!(config.checkpoint_interval, Some(Duration::from_millis(250)));
        assert_eq!(config.retained_checkpoints, 5);
        assert_eq!(config.batch_size, JobConfig::default().batch_size);
    }

    #[test]
    fn an_unknown_key_or_bad_value_names_the_key_and_the_file() {
        let err = ConfigFile::parse("checkpoint_intervall_ms = 250\n", "job.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("job.toml") && err.contains("checkpoint_intervall_ms") && err.contains("line 1"),
            "{err}"
        );
        let err = ConfigFile::parse("batch_size = \"big\"\n", "job.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("job.toml") && err.contains("line 1"), "{err}");
        let mut config = JobConfig::default();
        ConfigFile::parse("batch_size = 0\n", "job.toml")
            .unwrap()
            .apply(&mut config);
        assert!(config.validate().unwrap_err().to_string().contains("batch_size"));
    }

    #[test]
    fn the_kafka_table_and_metrics_address_are_checked_by_key() {
        let file = ConfigFile::parse(
            "metrics_addr = \"127.0.0.1:9464\"\n[kafka]\nbrokers = \"b:9092\"\ndelivery = \"at-least-once\"\nbad_records = \"dlq:bad\"\nconsumer = { \"fetch.max.bytes\" = \"1024\" }\n",
            "job.toml",
        )
        .unwrap();
        assert_eq!(file.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(file.kafka.brokers.as_deref(), Some("b:9092"));
        assert_eq!(file.kafka.delivery, Some(DeliverySetting::AtLeastOnce));
        assert_eq!(
            file.kafka.bad_records,
            Some(BadRecordsSetting(
                crate::connectors::kafka::BadRecordPolicy::DeadLetter("bad".into())
            ))
        );
        assert_eq!(
            file.kafka.consumer.get("fetch.max.bytes").map(String::as_str),
            Some("1024")
        );
        for (text, key) in [
            ("[kafka]\ndelivery = \"twice\"\n", "delivery"),
            ("[kafka]\nbad_records = \"drop\"\n", "bad_records"),
            ("[kafka]\nbroker = \"b:9092\"\n", "broker"),
            ("metrics_addr = \"localhost\"\n", "metrics_addr"),
        ] {
            let err = ConfigFile::parse(text, "job.toml").unwrap_err().to_string();
            assert!(err.contains("job.toml") && err.contains(key), "{text}: {err}");
        }
    }
}
