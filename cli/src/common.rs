//! Flags every job command shares, and how they layer over the config file
//! and the environment.

use crate::config_file::{ConfigFile, KafkaSettings};
use anyhow::Context;
use std::path::PathBuf;
use std::time::Duration;
use weir::connectors::kafka::KafkaConnection;
use weir::JobConfig;

/// How a command reaches Kafka: bootstrap servers and client properties.
#[derive(clap::Args, Default)]
pub(crate) struct KafkaArgs {
    /// Kafka bootstrap servers [default: `kafka.brokers` of --config].
    #[arg(long)]
    pub(crate) brokers: Option<String>,
    /// A librdkafka property of every Kafka client, e.g.
    /// `security.protocol=SASL_SSL`, `sasl.mechanism=SCRAM-SHA-512`,
    /// `ssl.ca.location=ca.pem` (repeatable; over the `[kafka.properties]`
    /// table of --config). A value `${NAME}` is read from the environment
    /// variable NAME: keep passwords off the command line.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    pub(crate) properties: Vec<String>,
}

impl KafkaArgs {
    /// The cluster: flags over the `[kafka]` table of the config file;
    /// `None` without bootstrap servers.
    pub(crate) fn connection(&self, file: &KafkaSettings) -> anyhow::Result<Option<KafkaConnection>> {
        let Some(brokers) = self.brokers.clone().or(file.brokers.clone()) else {
            return Ok(None);
        };
        let mut cluster = KafkaConnection::new(&brokers);
        for (key, value) in &file.properties {
            cluster.set(
                key,
                &expand(value).with_context(|| format!("`{key}` in the [kafka.properties] table"))?,
            );
        }
        for flag in &self.properties {
            let Some((key, value)) = flag.split_once('=') else {
                anyhow::bail!("--kafka-property takes KEY=VALUE, and `{flag}` has no `=`");
            };
            cluster.set(
                key.trim(),
                &expand(value).with_context(|| format!("--kafka-property {}", key.trim()))?,
            );
        }
        Ok(Some(cluster))
    }
}

/// A property value: `${NAME}` is the environment variable NAME (an error
/// naming it when unset), anything else is itself.
pub(crate) fn expand(value: &str) -> anyhow::Result<String> {
    match value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
        Some(name) => std::env::var(name).with_context(|| format!("the environment variable {name} is not set")),
        None => Ok(value.to_string()),
    }
}

/// Checkpoint, config, metrics and status flags of a job command.
#[derive(clap::Args)]
pub(crate) struct CommonArgs {
    /// A TOML file with job settings (keys as in the README's "Configuration");
    /// `WEIR_<KEY>` environment variables override it, flags override both.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Root of the checkpoint store: a directory, s3://bucket/prefix (settings from the AWS_*
    /// environment variables) or az://container/prefix (AZURE_*) [default: weir-checkpoints].
    #[arg(long)]
    pub(crate) checkpoint_dir: Option<PathBuf>,
    /// Milliseconds between checkpoints, 0 = only the final one [default: 1000].
    #[arg(long)]
    pub(crate) checkpoint_interval_ms: Option<u64>,
    /// Abort a checkpoint not complete after this many milliseconds [default: 600000].
    #[arg(long)]
    pub(crate) checkpoint_timeout_ms: Option<u64>,
    /// Bounded runs: fire every event-time window and timer at the end
    /// (bounded + drain) instead of keeping them in the final checkpoint.
    #[arg(long)]
    pub(crate) drain: bool,
    /// When the newest checkpoints are damaged, restore an older one anyway:
    /// the output committed after it is written again (duplicates).
    #[arg(long)]
    pub(crate) allow_replay: bool,
    /// Restore a checkpoint that does not fit the job: drop (with a warning)
    /// the state of removed operators and of operators whose parallelism
    /// changed; Kafka sources keep their offsets.
    #[arg(long)]
    pub(crate) allow_non_restored_state: bool,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464).
    #[arg(long)]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    /// Print the job's live status (per task: records in/out and rates,
    /// backpressure, output queue, Kafka lag; the last checkpoint) to stderr
    /// every this many seconds.
    #[arg(long, value_name = "SECS")]
    pub(crate) status_every: Option<u64>,
    /// Serve the web UI (job graph, rates, backpressure, checkpoints, Kafka
    /// lag, latency, failures) on this address, e.g. 127.0.0.1:8080 (port 0:
    /// any free port; the URL is printed at start).
    #[arg(long, value_name = "ADDR")]
    pub(crate) ui_addr: Option<std::net::SocketAddr>,
    /// Let the web UI trigger checkpoints, stop and cancel the job (POST only).
    #[arg(long, requires = "ui_addr")]
    pub(crate) ui_allow_control: bool,
    /// Keep the web UI up this many seconds after the job ended (its final state).
    #[arg(long, value_name = "SECS", requires = "ui_addr", default_value_t = 0)]
    pub(crate) ui_linger_s: u64,
}

/// How a job command watches its job: the status table, the web UI.
pub(crate) struct Watch {
    /// `--status-every`.
    pub(crate) status_every: Option<u64>,
    /// `--ui-addr` with its options.
    pub(crate) ui: Option<(std::net::SocketAddr, weir::ui::UiOptions)>,
    /// `--ui-linger-s`.
    pub(crate) ui_linger: Duration,
}

impl CommonArgs {
    /// The status and UI flags.
    pub(crate) fn watch(&self) -> Watch {
        Watch {
            status_every: self.status_every,
            ui: self.ui_addr.map(|addr| {
                (
                    addr,
                    weir::ui::UiOptions {
                        allow_control: self.ui_allow_control,
                        extra_config: None,
                    },
                )
            }),
            ui_linger: Duration::from_secs(self.ui_linger_s),
        }
    }

    /// The config file (empty without --config).
    pub(crate) fn file(&self) -> anyhow::Result<ConfigFile> {
        Ok(match &self.config {
            Some(path) => ConfigFile::read(path)?,
            None => ConfigFile::default(),
        })
    }

    /// Starts the Prometheus endpoint when asked for (flag, then
    /// `WEIR_METRICS_ADDR`, then `metrics_addr` of the config file).
    pub(crate) fn serve_metrics(&self) -> anyhow::Result<()> {
        let addr = match self.metrics_addr {
            Some(a) => Some(a),
            None => ConfigFile::from_env()?.metrics_addr.or(self.file()?.metrics_addr),
        };
        if let Some(addr) = addr {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .with_http_listener(addr)
                .install()
                .with_context(|| format!("cannot serve metrics on {addr} (--metrics-addr)"))?;
            tracing::info!("Prometheus metrics on http://{addr}/metrics");
        }
        Ok(())
    }

    /// Defaults, then the config file, then `WEIR_*` variables, then flags.
    pub(crate) fn config(&self) -> anyhow::Result<JobConfig> {
        let mut config = JobConfig::default();
        self.file()?.apply(&mut config);
        ConfigFile::from_env()?.apply(&mut config);
        ConfigFile {
            checkpoint_dir: self.checkpoint_dir.clone(),
            checkpoint_interval_ms: self.checkpoint_interval_ms,
            checkpoint_timeout_ms: self.checkpoint_timeout_ms,
            drain_at_end: self.drain.then_some(true),
            allow_replay: self.allow_replay.then_some(true),
            allow_non_restored_state: self.allow_non_restored_state.then_some(true),
            ..ConfigFile::default()
        }
        .apply(&mut config);
        for (key, value) in config.checkpoint_store_options.0.iter_mut() {
            *value = expand(value).with_context(|| format!("`{key}` in the [checkpoint] table"))?;
        }
        config.validate()?;
        Ok(config)
    }
}
