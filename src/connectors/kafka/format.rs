//! Turning Kafka records into typed records and back.

use serde::{de::DeserializeOwned, Serialize};

/// A consumed Kafka record, borrowed from the consumer.
#[derive(Debug, Clone, Copy)]
pub struct KafkaRecord<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes, if any.
    pub key: Option<&'a [u8]>,
    /// Value bytes, if any (`None` for a tombstone).
    pub payload: Option<&'a [u8]>,
    /// The record's Kafka timestamp (ms since the epoch), if any.
    pub timestamp_ms: Option<i64>,
}

/// Turns a Kafka record into a `T`; an `Err` is a bad record (see
/// [`super::BadRecordPolicy`]). Closures `Fn(&KafkaRecord) -> Result<T, String>` are deserializers.
pub trait Deserializer<T>: Clone + Send + 'static {
    /// Deserializes one record.
    ///
    /// # Errors
    /// Why the record cannot be read.
    fn deserialize(&mut self, record: &KafkaRecord<'_>) -> Result<T, String>;

    /// Deserializes one Kafka record that may hold several (a batch of a
    /// weir repartition topic), appending them to `out`; returns how many.
    /// By default one, from [`Deserializer::deserialize`]. A source's poll
    /// may then hand over a little more than it was asked for.
    ///
    /// # Errors
    /// Why the record cannot be read (then nothing was appended).
    #[inline]
    fn deserialize_into(&mut self, record: &KafkaRecord<'_>, out: &mut Vec<T>) -> Result<usize, String> {
        out.push(self.deserialize(record)?);
        Ok(1)
    }
}

impl<T, F: Fn(&KafkaRecord<'_>) -> Result<T, String> + Clone + Send + 'static> Deserializer<T> for F {
    #[inline]
    fn deserialize(&mut self, record: &KafkaRecord<'_>) -> Result<T, String> {
        self(record)
    }
}

/// The value bytes as they are (a tombstone is an empty vector).
pub fn bytes() -> impl Deserializer<Vec<u8>> {
    |r: &KafkaRecord<'_>| Ok(r.payload.unwrap_or_default().to_vec())
}

/// The value as UTF-8 text.
pub fn utf8() -> impl Deserializer<String> {
    |r: &KafkaRecord<'_>| {
        std::str::from_utf8(r.payload.unwrap_or_default())
            .map(str::to_owned)
            .map_err(|e| format!("value is not UTF-8: {e}"))
    }
}

/// The value as JSON of type `T`.
pub fn json<T: DeserializeOwned + Send + 'static>() -> impl Deserializer<T> {
    |r: &KafkaRecord<'_>| {
        serde_json::from_slice(r.payload.unwrap_or_default()).map_err(|e| format!("value is not valid JSON: {e}"))
    }
}

/// Turns a record into Kafka key and value bytes, written into the buffers
/// (cleared by the caller). Returning `Some(p)` picks the partition; `None`
/// lets the key decide (murmur2, as Kafka's Java client).
pub trait Serializer<T>: Clone + Send + 'static {
    /// Serializes one record.
    ///
    /// # Errors
    /// Why the record cannot be written.
    fn serialize(&mut self, record: &T, key: &mut Vec<u8>, value: &mut Vec<u8>) -> Result<Option<i32>, String>;

    /// Records the sink writes besides the data when `event` happens (a
    /// repartition topic's watermarks): each `(partition, value)` pushed to
    /// `out` goes out as a keyless record, in the same transaction as the
    /// data around it. None by default.
    fn control(&mut self, _event: SinkEvent, _out: &mut Vec<(i32, Vec<u8>)>) {}

    /// Whether this serializer gathers records into batches itself: the
    /// sink then hands each record to [`Serializer::gather`] instead of
    /// [`Serializer::serialize`], and after each batch of records writes
    /// what [`Serializer::control`] returns for [`SinkEvent::Flush`].
    fn gathers(&self) -> bool {
        false
    }

    /// With [`Serializer::gathers`]: takes one record into its batch.
    ///
    /// # Errors
    /// Why the record cannot be written.
    fn gather(&mut self, _record: &T) -> Result<(), String> {
        Err("this serializer does not gather records".into())
    }
}

/// What a sink tells its [`Serializer`] besides records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkEvent {
    /// The sink's input watermark advanced to this event time (ms).
    Watermark(i64),
    /// The sink's input turned idle (its sources have nothing to read).
    Idle,
    /// A checkpoint barrier arrived: what is held back goes out now.
    Checkpoint,
    /// The sink wrote a batch of records: gathered ones go out now.
    Flush,
}

impl<T, F: Fn(&T, &mut Vec<u8>, &mut Vec<u8>) -> Result<Option<i32>, String> + Clone + Send + 'static> Serializer<T>
    for F
{
    #[inline]
    fn serialize(&mut self, record: &T, key: &mut Vec<u8>, value: &mut Vec<u8>) -> Result<Option<i32>, String> {
        self(record, key, value)
    }
}

/// Serializes records as JSON values without a key.
pub fn json_value<T: Serialize>(
) -> impl Fn(&T, &mut Vec<u8>, &mut Vec<u8>) -> Result<Option<i32>, String> + Clone + Send + 'static {
    |r: &T, _k: &mut Vec<u8>, v: &mut Vec<u8>| serde_json::to_writer(v, r).map(|()| None).map_err(|e| e.to_string())
}

/// Serializes `Display` records as UTF-8 values without a key.
pub fn display_value<T: std::fmt::Display>(
) -> impl Fn(&T, &mut Vec<u8>, &mut Vec<u8>) -> Result<Option<i32>, String> + Clone + Send + 'static {
    |r: &T, _k: &mut Vec<u8>, v: &mut Vec<u8>| {
        use std::io::Write;
        write!(v, "{r}").map(|()| None).map_err(|e| e.to_string())
    }
}
