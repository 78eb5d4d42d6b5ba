//! The command line's job settings: a TOML file (`--config`) and `WEIR_<KEY>`
//! environment variables, layered under the flags onto a [`JobConfig`].

use std::path::PathBuf;
use std::time::Duration;
use weir::connectors::kafka::{BadRecordPolicy, Delivery};
use weir::{JobConfig, Result, WeirError};

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
/// allow_replay = false   # true: restore past damaged checkpoints (duplicates)
/// metrics_addr = "127.0.0.1:9464"
///
/// [kafka]
/// brokers = "127.0.0.1:9092"
/// delivery = "exactly-once"      # or "at-least-once", "none"
/// bad_records = "dlq:bad-input"  # or "fail", "skip"
/// properties = { "security.protocol" = "SASL_SSL", "sasl.mechanism" = "SCRAM-SHA-512",
///                "sasl.username" = "weir", "sasl.password" = "${KAFKA_PASSWORD}" }
/// consumer = { "fetch.max.bytes" = "1048576" }
/// producer = { "linger.ms" = "5" }
///
/// [distributed]                  # run as a member of the job (the --distributed flags)
/// enabled = true
/// member_id = "worker-1"         # default host-pid
/// session_timeout_ms = 10000
/// repartition_partitions = 8
/// prefetch_interval_ms = 10000   # off by default
/// input_partitioned_by_key = false
///
/// [checkpoint]                   # an s3:// checkpoint_dir, over the AWS_* variables
/// endpoint = "http://127.0.0.1:9000"
/// allow_http = "true"
/// secret_access_key = "${S3_SECRET}"
/// upload_bytes_per_s = "100MB"   # the job's upload rate bound (weir's own key)
/// upload_concurrency = "8"       # files uploaded at once (weir's own key)
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
    /// [`JobConfig::allow_replay`].
    pub allow_replay: Option<bool>,
    /// [`JobConfig::allow_non_restored_state`].
    pub allow_non_restored_state: Option<bool>,
    /// Serve Prometheus metrics on this address (the CLI; a library user
    /// installs the `metrics` recorder of their choice).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Settings of the Kafka connectors of the built-in jobs.
    #[serde(default)]
    pub kafka: KafkaSettings,
    /// Run as a member of a distributed job (the `--distributed` flags).
    #[serde(default)]
    pub distributed: DistributedSettings,
    /// Settings of an `s3://` checkpoint store ([`JobConfig::checkpoint_store_options`]):
    /// `endpoint`, `region`, `access_key_id`, `secret_access_key`,
    /// `allow_http`...; a value `${NAME}` is read from the environment variable NAME.
    #[serde(default)]
    pub checkpoint: weir::StoreOptions,
}

/// The `[distributed]` table of a config file: each key as its flag.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributedSettings {
    /// `--distributed`.
    pub enabled: Option<bool>,
    /// `--member-id`.
    pub member_id: Option<String>,
    /// `--session-timeout-ms`.
    pub session_timeout_ms: Option<u64>,
    /// `--repartition-partitions`.
    pub repartition_partitions: Option<u16>,
    /// `--prefetch-interval-ms`.
    pub prefetch_interval_ms: Option<u64>,
    /// `--input-partitioned-by-key` (kafka-count).
    pub input_partitioned_by_key: Option<bool>,
}

/// The `[kafka]` table of a config file.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port,...`.
    pub brokers: Option<String>,
    /// Output delivery guarantee: `none`, `at-least-once` or `exactly-once`.
    pub delivery: Option<Delivery>,
    /// Input records that do not parse: `fail`, `skip` or `dlq:TOPIC`.
    pub bad_records: Option<BadRecordsSetting>,
    /// librdkafka properties of every client (TLS, SASL: `security.protocol`,
    /// `sasl.mechanism`, `sasl.username`, `sasl.password`, `ssl.ca.location`...);
    /// a value `${NAME}` is read from the environment variable NAME.
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
    /// librdkafka properties of every consumer (they override weir's).
    #[serde(default)]
    pub consumer: std::collections::BTreeMap<String, String>,
    /// librdkafka properties of every producer (they override weir's).
    #[serde(default)]
    pub producer: std::collections::BTreeMap<String, String>,
}

/// `kafka.bad_records` of a config file (and the `--bad-records` flag).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct BadRecordsSetting(pub BadRecordPolicy);

impl TryFrom<String> for BadRecordsSetting {
    type Error = String;
    fn try_from(text: String) -> std::result::Result<Self, String> {
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

/// The top-level keys of [`ConfigFile`] (taken from the struct itself, so the
/// list cannot fall behind it), which are also read from the environment as
/// `WEIR_<KEY>` (upper case), e.g. `WEIR_CHECKPOINT_INTERVAL_MS=500`. The
/// `[kafka]`, `[checkpoint]` and `[distributed]` tables are read from files only.
pub fn config_keys() -> Vec<&'static str> {
    field_names::<ConfigFile>()
        .iter()
        .copied()
        .filter(|k| !matches!(*k, "kafka" | "checkpoint" | "distributed"))
        .collect()
}

/// The field names serde derived for `T`: a deserializer that only records
/// what `deserialize_struct` is asked for.
fn field_names<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("field names recorded"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

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
        for key in config_keys() {
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
        if let Some(v) = self.allow_replay {
            config.allow_replay = v;
        }
        if let Some(v) = self.allow_non_restored_state {
            config.allow_non_restored_state = v;
        }
        for (k, v) in &self.checkpoint.0 {
            config.checkpoint_store_options.0.insert(k.clone(), v.clone());
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
    fn the_environment_keys_are_the_file_keys_but_the_kafka_table() {
        let keys = config_keys();
        assert_eq!(keys.len(), 15, "{keys:?}");
        assert!(keys.contains(&"checkpoint_interval_ms") && keys.contains(&"metrics_addr"));
        assert!(!keys.contains(&"kafka"));
    }

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
        assert_eq!(file.kafka.delivery, Some(Delivery::AtLeastOnce));
        assert_eq!(
            file.kafka.bad_records,
            Some(BadRecordsSetting(BadRecordPolicy::DeadLetter("bad".into())))
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
