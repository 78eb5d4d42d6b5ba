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

//!
//! # Layout
//! - [`source`]: the source as described by the user, and its running
//!   reader (`source/reader.rs`) with its dead-letter producer.
//! - `assign`: the pure rules of partition ownership and start offsets.
//! - [`offset`]: [`NextOffset`], the type of every position.
//! - [`position`]: what a source stores in a checkpoint.
//! - [`admin`]: metadata, watermarks, end offsets, topic creation.
//! - [`connection`]: bootstrap servers and the TLS/SASL properties every
//!   client of a connector gets; secrets never shown.
//! - [`sink`]: the sink, and its commit thread (`sink/commit.rs`).

pub mod admin;
mod assign;
pub mod connection;
pub mod format;
pub mod offset;
pub mod position;
pub mod sink;
pub mod source;

pub use format::{bytes, json, json_value, utf8, Deserializer, KafkaRecord, Serializer, SinkEvent};

pub use admin::end_offsets;
pub use connection::KafkaConnection;
pub use offset::NextOffset;
pub use position::{stored_offsets, KafkaPosition, PartitionPosition, StoredOffset};
pub use sink::{Delivery, KafkaSink};
pub use source::{BadRecordPolicy, KafkaSource, LostInputPolicy, StartPosition, WatermarkStrategy};

use crate::error::WeirError;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{BaseProducer, Partitioner, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use std::time::{Duration, Instant};

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

/// Turns a client error into [`WeirError::Kafka`] naming the connector and
/// what was done (`{action}: {error}`), the error kept as its source.
pub(crate) fn kafka_error(connector: &str, action: &str, e: KafkaError) -> WeirError {
    WeirError::kafka(connector, format!("{action}: {e}"), e)
}

/// As [`kafka_error`], for a request to the cluster: when the error says no
/// broker could be reached or would let the client in, the message also
/// names the bootstrap servers asked and how (`reached_at`: security
/// protocol, SASL mechanism and user; a wrong address, certificate or
/// password is the usual cause). Never a password, key or token.
pub(crate) fn broker_error(connector: &str, action: &str, reached_at: &str, e: KafkaError) -> WeirError {
    if !unreachable(&e) {
        return kafka_error(connector, action, e);
    }
    WeirError::kafka(connector, format!("{action}: {e} (bootstrap servers: {reached_at})"), e)
}

/// A connector error whose cause is not a client error (a fact weir checked,
/// a thread, a codec): `{action}: {why}`.
pub(crate) fn connector_error(connector: &str, action: &str, why: impl std::fmt::Display) -> WeirError {
    WeirError::Connector {
        connector: connector.to_string(),
        message: format!("{action}: {why}"),
    }
}

/// Whether the client gave up for want of a broker: the connection failed,
/// the address did not resolve, or the request timed out waiting for one.
fn unreachable(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::BrokerNotAvailable
                | RDKafkaErrorCode::NetworkException
                | RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::SSL
        )
    )
}

/// Waits until every message `producer` has in flight is acknowledged (or
/// `timeout` passes), serving its delivery reports meanwhile.
///
/// rdkafka's own `flush` (which `commit_transaction` calls first) polls in
/// whole 100 ms slices while anything is in flight, so each flush took at
/// least 100 ms: most of an exactly-once commit's latency, and a stall of
/// the task thread at every at-least-once checkpoint. Here the reports are
/// served as they come (checked every 0.5 ms); the producer's flush then
/// finds nothing left.
pub(crate) fn flush<C, P>(producer: &BaseProducer<C, P>, timeout: Duration) -> KafkaResult<()>
where
    C: ProducerContext<P>,
    P: Partitioner,
{
    let deadline = Instant::now() + timeout;
    while producer.in_flight_count() > 0 && Instant::now() < deadline {
        let before = producer.in_flight_count();
        // One event at most, without blocking (a `poll` of under a whole
        // millisecond would spin: rdkafka rounds the wait down to 0 ms).
        producer.poll(Duration::ZERO);
        if producer.in_flight_count() >= before {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    producer.flush(deadline.saturating_duration_since(Instant::now()))
}

/// The bootstrap servers a client configuration connects to, and how (a
/// property set by the user overrides the builder's), for error messages.
pub(crate) fn bootstrap_of(config: &rdkafka::ClientConfig) -> String {
    connection::reached_at(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_error_stays_the_source_and_the_message_is_unchanged() {
        let e = kafka_error(
            "in[0]",
            "cannot commit",
            KafkaError::ConsumerCommit(RDKafkaErrorCode::RebalanceInProgress),
        );
        let WeirError::Kafka { source, .. } = &e else {
            panic!("not a Kafka error: {e:?}")
        };
        assert!(matches!(**source, KafkaError::ConsumerCommit(_)), "{source:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "connector `in[0]`: cannot commit: {}",
                KafkaError::ConsumerCommit(RDKafkaErrorCode::RebalanceInProgress)
            )
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn an_unreachable_broker_is_reported_with_the_bootstrap_servers() {
        for code in [
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::OperationTimedOut,
            RDKafkaErrorCode::Resolve,
        ] {
            let e = broker_error(
                "in[0]",
                "cannot read metadata of topic `t`",
                "kafka-1:9092,kafka-2:9092",
                KafkaError::MetadataFetch(code),
            );
            let text = e.to_string();
            assert!(text.contains("bootstrap servers: kafka-1:9092,kafka-2:9092"), "{text}");
            assert!(
                text.starts_with("connector `in[0]`: cannot read metadata of topic `t`: "),
                "{text}"
            );
        }
    }

    #[test]
    fn other_broker_errors_keep_their_message_as_it_was() {
        let e = broker_error(
            "in[0]",
            "cannot read offsets of t/0",
            "kafka-1:9092",
            KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition),
        );
        assert!(!e.to_string().contains("kafka-1"), "{e}");
    }

    #[test]
    fn only_the_bootstrap_servers_are_read_from_the_config() {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", "b:9092").set("sasl.password", "hunter2");
        assert_eq!(bootstrap_of(&c), "b:9092");
    }
}
