//! The dead-letter producer of a source ([`BadRecordPolicy::DeadLetter`]):
//! a rejected record goes unchanged to the dead-letter topic, with the error
//! and its origin in headers.
//!
//! # Durability
//! Writes are flushed, and their delivery checked, at every barrier
//! ([`DeadLetters::flush`]): a checkpoint that counts a record as consumed
//! never counts a dead letter the broker did not take.
//!
//! [`BadRecordPolicy::DeadLetter`]: super::BadRecordPolicy::DeadLetter

use super::super::connection::KafkaConnection;
use super::super::sink::DeliveryReport;
use super::super::{bootstrap_of, broker_error, connector_error, kafka_error};
use crate::error::Result;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// A record the deserializer rejected, owned so that the consumer can be used again.
pub(super) struct BadRecord {
    /// Topic it came from.
    pub(super) topic: String,
    /// Partition it came from.
    pub(super) partition: i32,
    /// Its offset (of the record, not a position).
    pub(super) offset: i64,
    /// Its key bytes.
    pub(super) key: Option<Vec<u8>>,
    /// Its value bytes.
    pub(super) payload: Option<Vec<u8>>,
    /// Why the deserializer rejected it.
    pub(super) why: String,
}

/// An idempotent producer to the dead-letter topic.
pub(super) struct DeadLetters {
    topic: String,
    producer: BaseProducer<DeliveryReport>,
}

/// How long a barrier waits for dead letters to be acknowledged.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

impl DeadLetters {
    /// A producer to `topic` on `cluster`.
    pub(super) fn open(name: &str, cluster: &KafkaConnection, topic: &str) -> Result<Self> {
        let mut c = cluster.client_config();
        c.set("enable.idempotence", "true");
        let producer = c
            .create_with_context(DeliveryReport::default())
            .map_err(|e| broker_error(name, "cannot create dead-letter producer", &bootstrap_of(&c), e))?;
        Ok(DeadLetters {
            topic: topic.to_string(),
            producer,
        })
    }

    /// Sends `bad` with the error and its origin in headers (waiting while
    /// the producer's queue is full).
    pub(super) fn send(&self, name: &str, bad: &BadRecord) -> Result<()> {
        let (p, o) = (bad.partition.to_string(), bad.offset.to_string());
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "weir.error",
                value: Some(bad.why.as_bytes()),
            })
            .insert(Header {
                key: "weir.source.topic",
                value: Some(bad.topic.as_bytes()),
            })
            .insert(Header {
                key: "weir.source.partition",
                value: Some(p.as_bytes()),
            })
            .insert(Header {
                key: "weir.source.offset",
                value: Some(o.as_bytes()),
            });
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic).headers(headers);
        if let Some(k) = &bad.key {
            record = record.key(k);
        }
        if let Some(v) = &bad.payload {
            record = record.payload(v);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    self.producer.poll(Duration::from_millis(10));
                    record = r;
                }
                Err((e, _)) => {
                    return Err(kafka_error(
                        name,
                        &format!("cannot write to dead-letter topic `{}`", self.topic),
                        e,
                    ))
                }
            }
        }
    }

    /// Serves delivery reports (no waiting).
    pub(super) fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Waits until every dead letter is acknowledged; a refused one fails
    /// the checkpoint rather than being skipped.
    pub(super) fn flush(&self, name: &str) -> Result<()> {
        super::super::flush(&self.producer, FLUSH_TIMEOUT)
            .map_err(|e| kafka_error(name, "cannot flush the dead-letter topic", e))?;
        match self.producer.context().take_failure() {
            Some(failure) => Err(connector_error(name, "cannot write to the dead-letter topic", failure)),
            None => Ok(()),
        }
    }
}
