//! What a Kafka source stores in a checkpoint, and reading it back out of a
//! manifest (`weir offsets`, tests).
//!
//! # Wire format
//! `weir-kafka-1:` followed by the postcard encoding of [`KafkaPosition`].
//! [`NextOffset`] is `#[serde(transparent)]`, so the bytes are those of the
//! `i64` the field was before; the tests below pin them.

use super::offset::NextOffset;
use super::source::Upstreams;
use serde::{Deserialize, Serialize};

/// The offset of one partition in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPosition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset to read.
    pub next_offset: NextOffset,
    /// The partition's watermark, if event time is on.
    pub watermark: Option<i64>,
    /// What the shards writing into it said (a repartition topic read with
    /// [`super::KafkaSource::control`]).
    pub upstreams: Option<Upstreams>,
}

/// [`PartitionPosition`] as `weir-kafka-1:` stores it (no upstreams).
#[derive(Serialize, Deserialize)]
struct PartitionV1 {
    topic: String,
    partition: i32,
    next_offset: NextOffset,
    watermark: Option<i64>,
}

/// A Kafka source subtask's position: what a checkpoint stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KafkaPosition {
    /// Per assigned partition.
    pub partitions: Vec<PartitionPosition>,
}

/// Tells a Kafka position apart from other sources' states in a manifest:
/// version 1 (no partition has upstreams, byte for byte what weir always
/// wrote) and version 2 (with upstreams).
const POSITION_MAGIC: &[u8] = b"weir-kafka-1:";
const POSITION_MAGIC_2: &[u8] = b"weir-kafka-2:";

impl KafkaPosition {
    /// Encodes for a checkpoint.
    pub fn encode(&self) -> Vec<u8> {
        if self.partitions.iter().any(|p| p.upstreams.is_some()) {
            let mut out = POSITION_MAGIC_2.to_vec();
            out.extend(postcard::to_stdvec(self).unwrap_or_default());
            return out;
        }
        let v1: Vec<PartitionV1> = self
            .partitions
            .iter()
            .map(|p| PartitionV1 {
                topic: p.topic.clone(),
                partition: p.partition,
                next_offset: p.next_offset,
                watermark: p.watermark,
            })
            .collect();
        let mut out = POSITION_MAGIC.to_vec();
        out.extend(postcard::to_stdvec(&(v1,)).unwrap_or_default());
        out
    }
    /// Decodes what [`KafkaPosition::encode`] wrote; `None` for other bytes
    /// (another kind of source).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if let Some(v2) = bytes.strip_prefix(POSITION_MAGIC_2) {
            return postcard::from_bytes(v2).ok();
        }
        let (v1,): (Vec<PartitionV1>,) = postcard::from_bytes(bytes.strip_prefix(POSITION_MAGIC)?).ok()?;
        Some(KafkaPosition {
            partitions: v1
                .into_iter()
                .map(|p| PartitionPosition {
                    topic: p.topic,
                    partition: p.partition,
                    next_offset: p.next_offset,
                    watermark: p.watermark,
                    upstreams: None,
                })
                .collect(),
        })
    }
}

/// One Kafka offset stored in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOffset {
    /// The source operator's uid.
    pub source: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset to read.
    pub next_offset: NextOffset,
}

/// The Kafka offsets stored in `manifest`, by source, topic and partition.
pub fn stored_offsets(manifest: &crate::checkpoint::Manifest) -> Vec<StoredOffset> {
    let mut out = Vec::new();
    for (uid, op) in &manifest.operators {
        for state in &op.subtasks {
            let crate::checkpoint::SubtaskState::Bytes { hex, .. } = state else {
                continue;
            };
            let Some(position) = crate::checkpoint::manifest::from_hex(hex).and_then(|b| KafkaPosition::decode(&b))
            else {
                continue;
            };
            out.extend(position.partitions.into_iter().map(|p| StoredOffset {
                source: uid.clone(),
                topic: p.topic,
                partition: p.partition,
                next_offset: p.next_offset,
            }));
        }
    }
    out.sort_by(|a, b| (&a.source, &a.topic, a.partition).cmp(&(&b.source, &b.topic, b.partition)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The position as it was declared before [`NextOffset`]: checkpoints
    /// written by earlier versions hold exactly this.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct LegacyPartition {
        topic: String,
        partition: i32,
        next_offset: i64,
        watermark: Option<i64>,
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct LegacyPosition {
        partitions: Vec<LegacyPartition>,
    }

    fn sample() -> KafkaPosition {
        KafkaPosition {
            partitions: vec![
                PartitionPosition {
                    topic: "in".into(),
                    partition: 0,
                    next_offset: NextOffset::new(75),
                    watermark: None,
                    upstreams: None,
                },
                PartitionPosition {
                    topic: "other".into(),
                    partition: 3,
                    next_offset: NextOffset::new(1 << 33),
                    watermark: Some(-5),
                    upstreams: None,
                },
            ],
        }
    }

    #[test]
    fn a_position_encodes_as_the_i64_fields_did() {
        let legacy = LegacyPosition {
            partitions: vec![
                LegacyPartition {
                    topic: "in".into(),
                    partition: 0,
                    next_offset: 75,
                    watermark: None,
                },
                LegacyPartition {
                    topic: "other".into(),
                    partition: 3,
                    next_offset: 1 << 33,
                    watermark: Some(-5),
                },
            ],
        };
        let mut old = POSITION_MAGIC.to_vec();
        old.extend(postcard::to_stdvec(&legacy).unwrap());
        assert_eq!(sample().encode(), old);
        assert_eq!(KafkaPosition::decode(&old), Some(sample()));
    }

    #[test]
    fn a_checkpointed_position_decodes_byte_for_byte() {
        // Bytes of `{ partitions: [{ "in", 2, next_offset 75, watermark None }] }`
        // as weir wrote them: magic, 1 entry, "in", partition 2 (zigzag 4),
        // offset 75 (zigzag 150 = 0x96 0x01), no watermark.
        let mut bytes = b"weir-kafka-1:".to_vec();
        bytes.extend([1, 2, b'i', b'n', 4, 0x96, 0x01, 0]);
        let p = KafkaPosition::decode(&bytes).unwrap();
        assert_eq!(
            p.partitions,
            vec![PartitionPosition {
                topic: "in".into(),
                partition: 2,
                next_offset: NextOffset::new(75),
                watermark: None,
                upstreams: None,
            }]
        );
        assert_eq!(p.encode(), bytes);
    }

    #[test]
    fn a_position_with_upstreams_round_trips_as_version_2() {
        let mut position = sample();
        let mut upstreams = Upstreams::default();
        upstreams.apply(super::super::source::Control::Watermark {
            upstream: 1,
            upstreams: 2,
            at: 42,
        });
        position.partitions[1].upstreams = Some(upstreams);
        let bytes = position.encode();
        assert!(bytes.starts_with(b"weir-kafka-2:"));
        assert_eq!(KafkaPosition::decode(&bytes), Some(position));
    }

    #[test]
    fn other_sources_states_are_not_positions() {
        assert_eq!(KafkaPosition::decode(b"\x00\x01\x02"), None);
        assert_eq!(KafkaPosition::decode(b""), None);
    }
}
