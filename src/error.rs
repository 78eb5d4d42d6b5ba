//! Errors of weir. Every variant names where the problem is: the operator, the
//! checkpoint path, the config key.

use std::path::PathBuf;

/// Result alias for weir.
pub type Result<T, E = WeirError> = std::result::Result<T, E>;

/// Everything that can go wrong when building or running a job.
#[derive(Debug, thiserror::Error)]
pub enum WeirError {
    /// The job graph is invalid (cycle, missing or duplicate uid, bad parallelism...).
    #[error("invalid job graph: {0}")]
    InvalidGraph(String),
    /// A configuration value is invalid.
    #[error("invalid configuration `{key}`: {message}")]
    Config {
        /// The configuration key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A file-system operation on the checkpoint store or local state failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What weir was doing.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A checkpoint exists but cannot be used.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint file or directory.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The checkpoint directory has checkpoints, and none of them is readable.
    #[error(
        "no usable checkpoint in {dir} although it holds {count} checkpoint(s); refusing to start empty:\n{details}"
    )]
    NoUsableCheckpoint {
        /// The job's checkpoint directory.
        dir: PathBuf,
        /// How many checkpoint directories were found.
        count: usize,
        /// Why each one was rejected.
        details: String,
    },
    /// The newest checkpoint(s) are damaged and an older one is usable, but
    /// restoring it would write again output already committed after it.
    #[error(
        "the newest checkpoint(s) of {dir} are damaged:\n{damaged}\nThe newest usable one is checkpoint {usable}, but \
         restoring it would write again the output committed after it (duplicates). Repair the damaged checkpoint(s) \
         (`weir checkpoints list` shows them), or allow the replay knowingly (JobConfig::allow_replay, \
         --allow-replay). Never delete a damaged chk-<n>: move it aside as chk-<n>.damaged, so its id is not used again."
    )]
    ReplayRefused {
        /// The job's checkpoint directory.
        dir: PathBuf,
        /// Why each newer checkpoint was rejected, naming its file.
        damaged: String,
        /// The newest checkpoint that reads and checks.
        usable: u64,
    },
    /// RocksDB reported an error.
    #[error("state of operator `{operator}` (RocksDB at {path}): {message}")]
    State {
        /// Operator uid and subtask.
        operator: String,
        /// The RocksDB directory.
        path: PathBuf,
        /// The RocksDB error.
        message: String,
    },
    /// An operator (user code) failed.
    #[error("operator `{operator}` failed: {message}")]
    Operator {
        /// Operator name and subtask.
        operator: String,
        /// The error it raised.
        message: String,
    },
    /// A task panicked.
    #[error("task `{task}` panicked: {message}")]
    Panic {
        /// The task's name.
        task: String,
        /// The panic payload.
        message: String,
    },
    /// A sink or source connector failed.
    #[error("connector `{connector}`: {message}")]
    Connector {
        /// The connector (uid and subtask).
        connector: String,
        /// What failed.
        message: String,
    },
    /// The Kafka client (librdkafka) reported an error to a connector.
    #[error("connector `{connector}`: {message}")]
    Kafka {
        /// The connector (uid and subtask), or the tool that asked.
        connector: String,
        /// What weir was doing and the client's error, with the bootstrap
        /// servers where a broker could not be reached.
        message: String,
        /// The client's error, for code that matches on its kind (boxed:
        /// it is large, and errors travel through every `Result`).
        #[source]
        source: Box<rdkafka::error::KafkaError>,
    },
    /// Another run holds the store's lock: one writer per store.
    #[error(
        "{dir} is in use by {holder}; a second writer would corrupt it: stop the other run (or wait for it to end), or use another directory"
    )]
    StoreInUse {
        /// The locked directory (checkpoint store of a job, or its local state).
        dir: PathBuf,
        /// Who holds it: job, pid, host, since when.
        holder: String,
    },
    /// Another writer took over what this run writes (a checkpoint of its
    /// store, a Kafka transactional id): this run is a zombie or a second
    /// writer, and stops without writing more. Not retryable: the newer
    /// writer is the one that goes on.
    #[error("{what} was taken over by another writer: this run is fenced off and stops")]
    Fenced {
        /// What was taken over: a checkpoint path, a transactional id.
        what: String,
    },
    /// The job was cancelled.
    #[error("job cancelled")]
    Cancelled,
    /// weir broke one of its own invariants (a bug in weir, not in the job):
    /// please report it with the message.
    #[error("internal error (a bug in weir): {0}")]
    Internal(String),
}

impl WeirError {
    /// Wraps an I/O error with what was being done and the path.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        WeirError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// A Kafka client error met by `connector` while doing what `message` says.
    pub fn kafka(connector: impl Into<String>, message: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        WeirError::Kafka {
            connector: connector.into(),
            message: message.into(),
            source: Box::new(source),
        }
    }

    /// Whether restarting the job from its last checkpoint may succeed (an I/O
    /// or connector hiccup), as opposed to a fatal error in the job itself.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            WeirError::Io { .. }
                | WeirError::Connector { .. }
                | WeirError::Kafka { .. }
                | WeirError::State { .. }
                | WeirError::StoreInUse { .. }
        )
    }
}

/// The text of a panic payload (a task's, a parser thread's), for
/// [`WeirError::Panic`] and messages.
pub(crate) fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
