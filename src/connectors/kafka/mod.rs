//! Kafka source and sink (rdkafka / librdkafka).
//!
//! The source keeps the offsets it consumed **in weir's checkpoints**, not in
//! the consumer group: recovery seeks to the offsets of the restored
//! checkpoint (the group's committed offsets are updated after each
//! checkpoint, for monitoring and tools only). It can run bounded: every
//! partition stops at the end offset seen at start (the last stable offset
//! under read_committed).
//!
//! The sink writes exactly-once without resuming another process's
//! transaction: see [`sink`].

pub mod format;
pub mod sink;
pub mod source;

pub use format::{bytes, json, utf8, Deserializer, KafkaRecord, Serializer};

pub use sink::{Delivery, KafkaSink};
pub use source::{BadRecordPolicy, KafkaPosition, KafkaSource, PartitionPosition, StartPosition, WatermarkStrategy};

use crate::error::WeirError;

/// The context of weir's consumers. weir asks for end-of-partition events
/// (`enable.partition.eof`) to see where a bounded read ends; librdkafka also
/// reports them as "global errors", which rdkafka would log at ERROR level.
/// They are not errors: this context drops them and logs the rest as before.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct QuietEof;

impl rdkafka::ClientContext for QuietEof {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::error::KafkaError;
        use rdkafka::types::RDKafkaErrorCode;
        match error {
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {}
            other => tracing::error!("librdkafka: {other}: {reason}"),
        }
    }
}

impl rdkafka::consumer::ConsumerContext for QuietEof {}

/// Turns an rdkafka error into a connector error naming the connector and what was done.
pub(crate) fn kafka_error(connector: &str, action: &str, e: impl std::fmt::Display) -> WeirError {
    WeirError::Connector {
        connector: connector.to_string(),
        message: format!("{action}: {e}"),
    }
}
