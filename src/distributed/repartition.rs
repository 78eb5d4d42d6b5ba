//! Repartition topics: where a distributed job's graph is cut at a `key_by`
//! that must bring keys together across processes.
//!
//! The upstream sub-topology ends in an exactly-once Kafka sink writing each
//! record to the partition that owns its key's key group; the downstream one
//! starts with a `read_committed` Kafka source reading it. The partition
//! count divides the job's max parallelism, so a partition is exactly a
//! contiguous key-group range (the ranges keyed state is rescaled by).
//!
//! Every value starts with a one-byte tag, so that control records
//! (watermarks, end of input) can share the topic with data later without
//! a format change; a reader refuses a tag it does not know, naming it.

use crate::connectors::kafka::{format::Serializer, KafkaConnection, KafkaRecord};
use crate::error::{Result, WeirError};
use weir_operators::{key_group_of, subtask_for_key_group, StateKey};

/// The tag of a data record.
const TAG_RECORD: u8 = 0;

/// The name of the repartition topic in front of the operator `uid` of job
/// `job`: `weir-<job>-<uid>-repartition` (Kafka Streams' naming).
pub fn topic_name(job: &str, uid: &str) -> String {
    format!("weir-{job}-{uid}-repartition")
}

/// The partition (of `partitions`) that owns `key`: its key group's range.
/// `partitions` should divide `max_parallelism` (a partition then holds
/// whole key groups only); at most `max_parallelism`.
#[inline]
pub fn partition_of<K: StateKey>(key: &K, partitions: u16, max_parallelism: u16, scratch: &mut Vec<u8>) -> i32 {
    scratch.clear();
    key.encode_key(scratch);
    let group = key_group_of(scratch, max_parallelism);
    subtask_for_key_group(group, max_parallelism, usize::from(partitions.max(1))) as i32
}

/// The partition count of a repartition topic for an input of `input`
/// partitions: the smallest power of two at or above it (so it divides a
/// power-of-two max parallelism), at most `max_parallelism`.
pub fn default_partitions(input: usize, max_parallelism: u16) -> u16 {
    let wanted = input
        .max(1)
        .next_power_of_two()
        .min(usize::from(max_parallelism.max(1)));
    wanted as u16
}

/// The partitions of `topic` (an input whose count sizes a repartition topic).
///
/// # Errors
/// The cluster cannot be asked, or `topic` does not exist.
pub fn partition_count(cluster: &KafkaConnection, topic: &str) -> Result<usize> {
    use crate::connectors::kafka::admin;
    let n = admin::partitions_of(cluster, topic, std::time::Duration::from_secs(30)).map_err(|e| {
        admin::AdminError::from(e).into_error(
            &format!("topic {topic}"),
            "cannot read its metadata",
            cluster.bootstrap(),
        )
    })?;
    if n == 0 {
        return Err(WeirError::Config {
            key: "input".into(),
            message: format!("topic `{topic}` does not exist on {}", cluster.bootstrap()),
        });
    }
    Ok(n)
}

/// Creates the repartition topic `topic` with `partitions` partitions, or
/// checks that the existing one has that many: another count would move
/// keys between partitions, and with them between shards' state.
///
/// # Errors
/// [`WeirError::Kafka`] / [`WeirError::Connector`] when the cluster cannot be
/// asked or refuses, [`WeirError::Config`] (key `repartition_partitions`)
/// when the topic exists with another partition count.
pub fn ensure_topic(cluster: &KafkaConnection, topic: &str, partitions: u16) -> Result<()> {
    use crate::connectors::kafka::admin;
    let connector = format!("repartition topic {topic}");
    let timeout = std::time::Duration::from_secs(30);
    let bootstrap = cluster.bootstrap().to_string();
    let existing = admin::partitions_of(cluster, topic, timeout)
        .map_err(|e| admin::AdminError::from(e).into_error(&connector, "cannot read its metadata", &bootstrap))?;
    if existing == 0 {
        let replication = admin::broker_count(cluster, timeout)
            .map_err(|e| admin::AdminError::from(e).into_error(&connector, "cannot list the brokers", &bootstrap))?
            .clamp(1, 3) as i32;
        let spec = admin::TopicSpec {
            partitions: usize::from(partitions),
            replication,
            config: &[],
        };
        admin::create_topic(cluster, topic, spec)
            .map_err(|e| e.into_error(&connector, "cannot create it", &bootstrap))?;
        tracing::info!("created repartition topic {topic} with {partitions} partitions");
        return Ok(());
    }
    if existing != usize::from(partitions) {
        return Err(WeirError::Config {
            key: "repartition_partitions".into(),
            message: format!(
                "the repartition topic `{topic}` has {existing} partitions, this job asks for {partitions}: a key's \
                 partition (and so its shard and state) would change; keep {existing}, or start the job under a new name"
            ),
        });
    }
    Ok(())
}

/// The serializer of an upstream sub-topology's last operator: the key's
/// stable encoding as the Kafka key, the tag and `encode(record)` as the
/// value, the partition of the key's key group.
pub fn serializer<T, K, KF, E>(key_of: KF, encode: E, partitions: u16, max_parallelism: u16) -> impl Serializer<T>
where
    K: StateKey,
    KF: Fn(&T) -> K + Clone + Send + 'static,
    E: Fn(&T, &mut Vec<u8>) + Clone + Send + 'static,
{
    move |record: &T, key: &mut Vec<u8>, value: &mut Vec<u8>| -> std::result::Result<Option<i32>, String> {
        let k = key_of(record);
        let partition = partition_of(&k, partitions, max_parallelism, key);
        value.push(TAG_RECORD);
        encode(record, value);
        Ok(Some(partition))
    }
}

/// The deserializer of a downstream sub-topology's source: checks the tag
/// and decodes the rest with `decode`.
pub fn deserializer<T, D>(
    decode: D,
) -> impl Fn(&KafkaRecord<'_>) -> std::result::Result<T, String> + Clone + Send + 'static
where
    D: Fn(&[u8]) -> std::result::Result<T, String> + Clone + Send + 'static,
{
    move |record: &KafkaRecord<'_>| match record.payload.unwrap_or_default().split_first() {
        Some((&TAG_RECORD, rest)) => decode(rest),
        Some((tag, _)) => Err(format!(
            "not a record of a weir repartition topic (tag {tag}; a newer weir may have written it)"
        )),
        None => Err("an empty value in a weir repartition topic".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_operators::key_group_range;

    #[test]
    fn a_partition_holds_exactly_the_key_groups_of_its_range() {
        let (max, partitions) = (128u16, 8u16);
        let mut scratch = Vec::new();
        for key in 0u64..20_000 {
            let p = partition_of(&key, partitions, max, &mut scratch);
            scratch.clear();
            key.encode_key(&mut scratch);
            let group = key_group_of(&scratch, max).0;
            let range = key_group_range(p as usize, max, usize::from(partitions));
            assert!(
                range.contains(&group),
                "key {key}: group {group} not in partition {p}'s {range:?}"
            );
        }
    }

    #[test]
    fn default_partition_counts_divide_the_max_parallelism() {
        assert_eq!(default_partitions(0, 128), 1);
        assert_eq!(default_partitions(3, 128), 4);
        assert_eq!(default_partitions(6, 128), 8);
        assert_eq!(default_partitions(16, 128), 16);
        assert_eq!(default_partitions(500, 128), 128);
        for n in 1..300 {
            assert_eq!(128 % default_partitions(n, 128), 0);
        }
    }

    #[test]
    fn records_round_trip_and_foreign_values_are_refused_by_name() {
        let ser = serializer(
            |r: &(u64, String)| r.0,
            |r: &(u64, String), out: &mut Vec<u8>| out.extend_from_slice(r.1.as_bytes()),
            4,
            128,
        );
        let de = deserializer(|b: &[u8]| std::str::from_utf8(b).map(str::to_owned).map_err(|e| e.to_string()));
        let (mut key, mut value) = (Vec::new(), Vec::new());
        let mut ser = ser;
        let partition = ser.serialize(&(7, "seven".into()), &mut key, &mut value).unwrap();
        assert!(matches!(partition, Some(p) if (0..4).contains(&p)));
        let record = |payload: &[u8]| -> std::result::Result<String, String> {
            de(&KafkaRecord {
                topic: "t",
                partition: 0,
                offset: 0,
                key: Some(&key),
                payload: Some(payload),
                timestamp_ms: None,
            })
        };
        assert_eq!(record(&value).unwrap(), "seven");
        assert!(record(b"\x07abc").unwrap_err().contains("tag 7"));
        assert!(record(b"").unwrap_err().contains("empty"));
    }
}
