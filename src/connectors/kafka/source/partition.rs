//! One assigned partition of a Kafka source subtask: where it is, where a
//! bounded run stops it, its event time, and taking one record.

use super::super::format::{Deserializer, KafkaRecord};
use super::super::offset::NextOffset;
use super::dead_letter::BadRecord;
use super::{ControlDecoder, Upstreams};
use rdkafka::message::Message;
use std::time::Instant;

/// A consumed record, borrowed from the consumer.
pub(super) struct Incoming<'a> {
    pub(super) offset: i64,
    pub(super) timestamp_ms: Option<i64>,
    pub(super) key: Option<&'a [u8]>,
    pub(super) payload: Option<&'a [u8]>,
}

impl<'a> Incoming<'a> {
    pub(super) fn of(msg: &'a rdkafka::message::BorrowedMessage<'a>) -> Self {
        Incoming {
            offset: msg.offset(),
            timestamp_ms: msg.timestamp().to_millis(),
            key: msg.key(),
            payload: msg.payload(),
        }
    }
}

/// Takes one record of partition `p`: advances the position and emits it,
/// unless it lies past a bounded run's end. Returns it when it does not
/// deserialize.
pub(super) fn accept<T, D: Deserializer<T>>(
    p: &mut PartitionState,
    deserializer: &mut D,
    event_time: Option<fn(&T) -> i64>,
    control: Option<ControlDecoder>,
    r: &Incoming<'_>,
    out: &mut Vec<T>,
    emitted: &mut usize,
) -> Option<BadRecord> {
    if p.next_offset.is_after(r.offset) {
        return None; // already taken
    }
    if p.end.is_some_and(|end| !end.is_after(r.offset)) {
        p.done = true; // later records belong to the next run
        return None;
    }
    p.next_offset = NextOffset::after(r.offset);
    p.last_record = Instant::now();
    if let (Some(ts), None) = (r.timestamp_ms, event_time) {
        p.max_timestamp = Some(p.max_timestamp.map_or(ts, |m| m.max(ts)));
    }
    if p.end.is_some_and(|end| p.next_offset >= end) {
        p.done = true;
    }
    let record = KafkaRecord {
        topic: &p.topic,
        partition: p.partition,
        offset: r.offset,
        key: r.key,
        payload: r.payload,
        timestamp_ms: r.timestamp_ms,
    };
    if let (Some(decode), Some(upstreams)) = (control, p.upstreams.as_mut()) {
        if let Some(c) = decode(&record) {
            upstreams.apply(c);
            return None;
        }
    }
    let before = out.len();
    match deserializer.deserialize_into(&record, out) {
        Ok(n) => {
            if let Some(of) = event_time {
                for v in &out[before..] {
                    let ts = of(v);
                    p.max_timestamp = Some(p.max_timestamp.map_or(ts, |m| m.max(ts)));
                }
            }
            *emitted += n;
            None
        }
        Err(why) => Some({
            out.truncate(before);
            BadRecord {
                topic: p.topic.clone(),
                partition: p.partition,
                offset: r.offset,
                key: r.key.map(<[u8]>::to_vec),
                payload: r.payload.map(<[u8]>::to_vec),
                why,
            }
        }),
    }
}

/// What the reader knows of one assigned partition.
pub(super) struct PartitionState {
    pub(super) topic: String,
    pub(super) partition: i32,
    /// The next offset to read: what a checkpoint stores.
    pub(super) next_offset: NextOffset,
    /// Where a bounded run stops.
    pub(super) end: Option<NextOffset>,
    pub(super) done: bool,
    pub(super) max_timestamp: Option<i64>,
    pub(super) watermark: Option<i64>,
    /// With a control decoder: what the shards writing into it said.
    pub(super) upstreams: Option<Upstreams>,
    pub(super) last_record: Instant,
}
