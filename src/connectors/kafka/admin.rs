//! Requests to the cluster that the source, the sink and `weir offsets`
//! share: topic metadata, watermarks, committed and timestamp offsets, end
//! offsets, topic creation. Each answer that is a position comes back as a
//! [`NextOffset`]; the callers turn errors into [`WeirError`]s naming the
//! connector and, for an unreachable broker, the bootstrap servers.

use super::assign::Watermarks;
use super::connection::KafkaConnection;
use super::offset::NextOffset;
use super::{broker_error, connector_error};
use crate::error::{Result, WeirError};
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::Duration;

/// Why an admin helper failed: the client's error, kept as the source of
/// [`WeirError::Kafka`], or something weir found wrong.
#[derive(Debug)]
pub(crate) enum AdminError {
    /// librdkafka failed.
    Kafka(KafkaError),
    /// Not a client error (a refused topic creation, a timeout of weir's own).
    Other(String),
}

impl From<KafkaError> for AdminError {
    fn from(e: KafkaError) -> Self {
        AdminError::Kafka(e)
    }
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminError::Kafka(e) => e.fmt(f),
            AdminError::Other(why) => f.write_str(why),
        }
    }
}

impl AdminError {
    /// The connector error: `{action}: {cause}`, with the bootstrap servers
    /// when the client could not reach a broker.
    pub(crate) fn into_error(self, connector: &str, action: &str, bootstrap: &str) -> WeirError {
        match self {
            AdminError::Kafka(e) => broker_error(connector, action, bootstrap, e),
            AdminError::Other(why) => connector_error(connector, action, why),
        }
    }
}

/// The ids of `topic`'s partitions in the cluster's metadata, as listed;
/// empty when the topic does not exist (or the broker reports an error for it).
pub(crate) fn partition_ids<C: ConsumerContext>(
    client: &impl Consumer<C>,
    topic: &str,
    timeout: Duration,
) -> KafkaResult<Vec<i32>> {
    let md = client.fetch_metadata(Some(topic), timeout)?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or_else(Vec::new, |t| t.partitions().iter().map(|p| p.id()).collect()))
}

/// Whether a request failed only because the partition has no leader at
/// the moment (an election, a broker just unfenced after a pause): asked
/// again, it succeeds once the cluster settled.
fn leaderless(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::FencedLeaderEpoch
                | RDKafkaErrorCode::UnknownLeaderEpoch
        )
    )
}

/// `request` again while it fails for want of a leader, until `timeout`
/// (then its last error).
fn until_led<T>(timeout: Duration, mut request: impl FnMut(Duration) -> KafkaResult<T>) -> KafkaResult<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match request(left) {
            Err(e) if leaderless(&e) && !left.is_zero() => {
                tracing::debug!("no leader yet ({e}): asking again");
                std::thread::sleep(Duration::from_millis(100).min(left));
            }
            other => return other,
        }
    }
}

/// The partition's log start and end (the last stable offset under
/// read_committed), waiting up to `timeout` for a leader.
pub(crate) fn watermarks<C: ConsumerContext>(
    client: &impl Consumer<C>,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> KafkaResult<Watermarks> {
    let (low, high) = until_led(timeout, |left| client.fetch_watermarks(topic, partition, left))?;
    Ok(Watermarks {
        low: NextOffset::new(low),
        high: NextOffset::new(high),
    })
}

/// The consumer group's committed offset of the partition, if it has one.
pub(crate) fn committed_offset<C: ConsumerContext>(
    client: &impl Consumer<C>,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> KafkaResult<Option<NextOffset>> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let committed = client.committed_offsets(tpl, timeout)?;
    Ok(concrete(committed.find_partition(topic, partition).map(|e| e.offset())))
}

/// The first offset of the partition with a timestamp at or after `ts_ms`,
/// if there is one.
pub(crate) fn offset_for_time<C: ConsumerContext>(
    client: &impl Consumer<C>,
    topic: &str,
    partition: i32,
    ts_ms: i64,
    timeout: Duration,
) -> KafkaResult<Option<NextOffset>> {
    let mut tpl = TopicPartitionList::new();
    // Offsets-for-times requests carry the timestamp in the offset field.
    tpl.add_partition_offset(topic, partition, Offset::Offset(ts_ms))?;
    let found = client.offsets_for_times(tpl, timeout)?;
    Ok(concrete(found.find_partition(topic, partition).map(|e| e.offset())))
}

/// A concrete offset; `None` for "none" answers (invalid, end, beginning).
fn concrete(offset: Option<Offset>) -> Option<NextOffset> {
    match offset {
        Some(Offset::Offset(o)) => Some(NextOffset::new(o)),
        _ => None,
    }
}

/// How long `weir offsets` waits for each end offset.
const END_OFFSETS_TIMEOUT: Duration = Duration::from_secs(30);

/// The current end offsets (last stable offsets, read_committed) of these
/// partitions, asked of `cluster` (bootstrap servers, or a
/// [`KafkaConnection`] with TLS/SASL properties).
///
/// # Errors
/// When the brokers cannot be reached (the message names them).
pub fn end_offsets<'a>(
    cluster: impl Into<KafkaConnection>,
    partitions: impl IntoIterator<Item = (&'a str, i32)>,
) -> Result<HashMap<(String, i32), NextOffset>> {
    const TOOL: &str = "weir offsets";
    let cluster = cluster.into();
    let reached_at = cluster.describe();
    let consumer: BaseConsumer = cluster
        .client_config()
        .set("group.id", "weir-offsets")
        .set("isolation.level", "read_committed")
        .create()
        .map_err(|e| broker_error(TOOL, "cannot create consumer", &reached_at, e))?;
    let mut out = HashMap::new();
    for (topic, partition) in partitions {
        let marks = watermarks(&consumer, topic, partition, END_OFFSETS_TIMEOUT).map_err(|e| {
            broker_error(
                TOOL,
                &format!("cannot read the end of {topic}/{partition}"),
                &reached_at,
                e,
            )
        })?;
        out.insert((topic.to_string(), partition), marks.high);
    }
    Ok(out)
}

/// Partitions of `topic` in the cluster's metadata (0: no such topic), asked
/// by a probe client of its own.
pub(crate) fn partitions_of(cluster: &KafkaConnection, topic: &str, timeout: Duration) -> KafkaResult<usize> {
    let probe: BaseConsumer = cluster.client_config().create()?;
    Ok(partition_ids(&probe, topic, timeout)?.len())
}

/// How a topic weir creates is made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TopicSpec<'a> {
    /// Partitions.
    pub(crate) partitions: usize,
    /// Replicas of each partition, at most the brokers in the cluster.
    pub(crate) replication: i32,
    /// Topic configuration (`cleanup.policy`, `min.insync.replicas`...).
    pub(crate) config: &'a [(&'a str, &'a str)],
}

/// Brokers in the cluster's metadata, asked by a probe client of its own.
pub(crate) fn broker_count(cluster: &KafkaConnection, timeout: Duration) -> KafkaResult<usize> {
    let probe: BaseConsumer = cluster.client_config().create()?;
    Ok(probe.fetch_metadata(None, timeout)?.brokers().len())
}

/// Runs one admin request: the admin client is async, so it runs on a
/// runtime of its own, on a thread of its own (`what` names it), so that a
/// job started from inside a tokio runtime does not nest one runtime in
/// another.
fn admin_request(
    cluster: &KafkaConnection,
    what: &'static str,
    request: impl FnOnce(&AdminClient<DefaultClientContext>, &tokio::runtime::Runtime) -> std::result::Result<(), AdminError>
        + Send
        + 'static,
) -> std::result::Result<(), AdminError> {
    let client = cluster.client_config();
    let run = move || -> std::result::Result<(), AdminError> {
        let admin: AdminClient<DefaultClientContext> = client.create()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| AdminError::Other(e.to_string()))?;
        request(&admin, &rt)
    };
    std::thread::Builder::new()
        .name(format!("weir-{what}"))
        .spawn(run)
        .map_err(|e| AdminError::Other(e.to_string()))?
        .join()
        .unwrap_or_else(|_| Err(AdminError::Other(format!("the thread of `{what}` panicked"))))
}

/// The admin options of every request weir makes.
fn admin_options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))
}

/// Creates `topic` as `spec` says through the admin API; an existing topic
/// is not an error.
pub(crate) fn create_topic(
    cluster: &KafkaConnection,
    topic: &str,
    spec: TopicSpec<'_>,
) -> std::result::Result<(), AdminError> {
    let topic = topic.to_string();
    let config: Vec<(String, String)> = spec
        .config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (partitions, replication) = (spec.partitions, spec.replication);
    admin_request(cluster, "create-topic", move |admin, rt| {
        let mut new = NewTopic::new(&topic, partitions as i32, TopicReplication::Fixed(replication));
        for (k, v) in &config {
            new = new.set(k, v);
        }
        for r in rt.block_on(admin.create_topics([&new], &admin_options()))? {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => return Err(AdminError::Other(format!("cannot create topic `{t}`: {code}"))),
            }
        }
        Ok(())
    })
}

/// Grows `topic` to `total` partitions (a topic that has them already is
/// left as it is).
pub(crate) fn add_partitions(
    cluster: &KafkaConnection,
    topic: &str,
    total: usize,
) -> std::result::Result<(), AdminError> {
    let topic = topic.to_string();
    admin_request(cluster, "add-partitions", move |admin, rt| {
        let grow = NewPartitions::new(&topic, total);
        for r in rt.block_on(admin.create_partitions([&grow], &admin_options()))? {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::InvalidPartitions)) => {}
                Err((t, code)) => {
                    return Err(AdminError::Other(format!(
                        "cannot add partitions to topic `{t}`: {code}"
                    )))
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_without_a_leader_is_asked_again_and_other_errors_are_not() {
        let mut calls = 0;
        let led = until_led(Duration::from_secs(5), |_| {
            calls += 1;
            if calls < 3 {
                Err(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownPartition))
            } else {
                Ok(7)
            }
        });
        assert_eq!((led.ok(), calls), (Some(7), 3));

        let mut calls = 0;
        let failed: KafkaResult<()> = until_led(Duration::from_secs(5), |_| {
            calls += 1;
            Err(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition))
        });
        assert!(failed.is_err());
        assert_eq!(calls, 1, "a missing topic is not waited for");

        let started = std::time::Instant::now();
        let timed_out: KafkaResult<()> = until_led(Duration::from_millis(300), |_| {
            Err(KafkaError::MetadataFetch(RDKafkaErrorCode::LeaderNotAvailable))
        });
        assert!(timed_out.is_err() && started.elapsed() < Duration::from_secs(2));
    }
}
