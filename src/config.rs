//! Job configuration: one struct, sensible defaults.

use crate::error::{Result, WeirError};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Key-value settings of an object store; `Debug` shows the keys only
/// (values hold credentials).
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct StoreOptions(pub BTreeMap<String, String>);

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// How a job runs. Defaults: checkpoints every 1 s into `./weir-checkpoints`,
/// 10 min timeout, 3 retained, parallelism 1, 128 key groups.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Root of the checkpoint store; the job's checkpoints go to `<dir>/<job name>/`.
    /// A directory, a `file://` URL, or an object store prefix
    /// `s3://bucket/prefix` (credentials and endpoint from the `AWS_*`
    /// environment variables) or `az://container/prefix` (Azure Blob
    /// Storage, from the `AZURE_*` variables).
    pub checkpoint_dir: PathBuf,
    /// Settings of an object-store `checkpoint_dir`, over the environment
    /// variables: `object_store`'s S3 keys (`endpoint`, `region`,
    /// `access_key_id`, `secret_access_key`, `allow_http`...) or Azure keys
    /// (`account_name`, `access_key`, `sas_key`...), and weir's own
    /// `upload_concurrency` and `upload_bytes_per_s`. Values are never printed.
    pub checkpoint_store_options: StoreOptions,
    /// Interval between checkpoints; `None` disables periodic checkpoints
    /// (on-demand and final checkpoints still work).
    pub checkpoint_interval: Option<Duration>,
    /// A checkpoint not complete after this long is aborted.
    pub checkpoint_timeout: Duration,
    /// How many complete checkpoints to keep.
    pub retained_checkpoints: usize,
    /// Where the working RocksDB instances live. Default `<checkpoint_dir>/<job>/local`,
    /// which lets snapshots hard-link SST files into the store; with an
    /// object store (`s3://...`) `$TMPDIR/weir-state/<job>`.
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
    /// When the newest checkpoint(s) are damaged, restore an older one
    /// anyway. Off by default: the sinks committed the output of the damaged
    /// checkpoints, and restoring an older one writes that output again
    /// (duplicates). Flink has no such fallback at all; turn it on only to
    /// trade duplicates for availability, knowingly.
    pub allow_replay: bool,
    /// Restore a checkpoint that does not fit the job (Flink's
    /// `--allowNonRestoredState`): the state of uids the job no longer has,
    /// and the per-subtask state of operators whose parallelism changed, is
    /// dropped with a warning naming it, instead of refusing to start. A
    /// source that keeps its positions by split (Kafka) still finds them.
    pub allow_non_restored_state: bool,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            checkpoint_dir: PathBuf::from("weir-checkpoints"),
            checkpoint_store_options: StoreOptions::default(),
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
            allow_replay: false,
            allow_non_restored_state: false,
        }
    }
}

/// `location` as it may be shown: a URL's user and password (`user:pass@`)
/// and query (a SAS token's `?sv=...&sig=...`) replaced by [`REDACTED`];
/// a path unchanged.
pub fn redact_url(location: &str) -> String {
    let Some((scheme, rest)) = location.split_once("://") else {
        return location.to_string();
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, _)) => (rest, format!("?{REDACTED}")),
        None => (rest, String::new()),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("{REDACTED}@{host}"),
        None => authority.to_string(),
    };
    format!("{scheme}://{authority}{path}{query}")
}

/// Whether a setting's name says it holds a secret (its value is never
/// shown): `secret`, `token`, `password`, `key` or `credential` in it.
pub fn is_secret_setting(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "secret",
        "token",
        "password",
        "passwd",
        "key",
        "credential",
        "sasl.jaas",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// The value shown for a secret setting.
pub const REDACTED: &str = "<redacted>";

impl JobConfig {
    /// Every setting as JSON for people and tools (the web UI's
    /// `/api/config`): durations in seconds, sizes in bytes, store options
    /// with secret values replaced by [`REDACTED`].
    pub fn describe(&self) -> serde_json::Value {
        let store_options: serde_json::Map<String, serde_json::Value> = self
            .checkpoint_store_options
            .0
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret_setting(k) { REDACTED } else { v.as_str() };
                (k.clone(), shown.into())
            })
            .collect();
        serde_json::json!({
            "checkpoint_dir": redact_url(&self.checkpoint_dir.display().to_string()),
            "checkpoint_store_options": store_options,
            "checkpoint_interval_s": self.checkpoint_interval.map(|d| d.as_secs_f64()),
            "checkpoint_timeout_s": self.checkpoint_timeout.as_secs_f64(),
            "retained_checkpoints": self.retained_checkpoints,
            "local_state_dir": self.local_state_dir.as_ref().map(|d| d.display().to_string()),
            "state_block_cache_bytes": self.state_block_cache_bytes,
            "state_write_buffer_bytes": self.state_write_buffer_bytes,
            "state_cache_entries": self.state_cache_entries,
            "state_write_behind_entries": self.state_write_behind_entries,
            "channel_capacity": self.channel_capacity,
            "batch_size": self.batch_size,
            "restore": self.restore,
            "drain_at_end": self.drain_at_end,
            "allow_replay": self.allow_replay,
            "allow_non_restored_state": self.allow_non_restored_state,
        })
    }

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn describe_shows_every_setting_and_no_secret() {
        assert_eq!(redact_url("/var/lib/weir"), "/var/lib/weir");
        assert_eq!(redact_url("s3://bucket/jobs"), "s3://bucket/jobs");
        assert_eq!(
            redact_url("https://me:pa55@acct.blob.core.windows.net/c/p?sv=1&sig=abc"),
            format!("https://{REDACTED}@acct.blob.core.windows.net/c/p?{REDACTED}")
        );
        let mut config = JobConfig::with_checkpoint_dir("s3://bucket/jobs");
        for (k, v) in [
            ("endpoint", "http://127.0.0.1:9000"),
            ("access_key_id", "AKIDEXAMPLE"),
            ("secret_access_key", "wJalrXUtnFEMI"),
            ("session_token", "FwoGZXIvY"),
        ] {
            config.checkpoint_store_options.0.insert(k.into(), v.into());
        }
        let shown = config.describe();
        let text = shown.to_string();
        for secret in ["AKIDEXAMPLE", "wJalrXUtnFEMI", "FwoGZXIvY"] {
            assert!(!text.contains(secret), "{secret} shown: {text}");
        }
        assert_eq!(shown["checkpoint_store_options"]["endpoint"], "http://127.0.0.1:9000");
        assert_eq!(shown["checkpoint_store_options"]["secret_access_key"], REDACTED);
        assert_eq!(shown["checkpoint_dir"], "s3://bucket/jobs");
        assert_eq!(shown["checkpoint_interval_s"], 1.0);
        assert!(is_secret_setting("sasl.password") && is_secret_setting("ssl.key.password"));
        assert!(!is_secret_setting("bootstrap.servers") && !is_secret_setting("region"));
    }
}
