//! Nexmark queries cut at their `key_by` into two stages for distributed
//! members (`weir nexmark --distributed`): `parse` reads the events and
//! writes the keyed records to the query's repartition topic, `keyed` reads
//! that topic (watermarks merged over the parse shards) and runs the rest.

use super::model::Event;
use super::queries::{self, Output, Query, OUT_OF_ORDERNESS_MS};
use weir::connectors::kafka::source::WatermarkStrategy;
use weir::connectors::kafka::{KafkaConnection, KafkaRecord, KafkaSink, KafkaSource};
use weir::distributed::repartition::{self, Hop};
use weir::{Job, JobBuilder, Result, WeirError};

/// The queries that run distributed: one `key_by` to cut at.
pub const DISTRIBUTED: [Query; 1] = [Query::Q11];

/// The uid of the operator behind the cut (names the repartition topic).
pub fn keyed_uid(query: Query) -> &'static str {
    match query {
        Query::Q11 => "q11-sessions",
        _ => "keyed",
    }
}

/// One side of the cut.
#[derive(Debug, Clone)]
pub enum NexmarkStage {
    /// Events -> the query up to its `key_by` -> the repartition topic.
    Parse {
        /// The repartition topic.
        repartition: String,
        /// Where this shard writes.
        hop: Hop,
    },
    /// The repartition topic -> the rest of the query -> the sink topic.
    Keyed {
        /// The repartition topic.
        repartition: String,
    },
}

/// What a stage's shard job reads and writes.
#[derive(Debug, Clone)]
pub struct StageOptions {
    /// Bootstrap servers and client properties.
    pub cluster: KafkaConnection,
    /// The topic of JSON events (the job's input).
    pub source_topic: String,
    /// The topic of result rows.
    pub sink_topic: String,
    /// Parse shards stop at their input's end; keyed shards when every
    /// parse shard did.
    pub bounded: bool,
    /// Parallelism of the keyed stage's operators.
    pub parallelism: usize,
    /// The partition this shard reads.
    pub partition: i32,
}

/// The job of one shard of `query`'s `stage`, named `name`.
///
/// # Errors
/// A query without a distributed plan; an invalid graph.
pub fn stage_job(name: &str, query: Query, stage: &NexmarkStage, options: &StageOptions) -> Result<Job> {
    if !DISTRIBUTED.contains(&query) {
        return Err(WeirError::Config {
            key: "query".into(),
            message: format!(
                "{} does not run distributed yet (these do: {})",
                query.name(),
                DISTRIBUTED.map(|q| q.name()).join(", ")
            ),
        });
    }
    match stage {
        NexmarkStage::Parse { repartition, hop } => {
            let parse = query.event_parser();
            let source = KafkaSource::new(&options.cluster, &[options.source_topic.as_str()])
                .only_partitions(&[options.partition])
                .bounded(options.bounded)
                .deserializer(move |r: &KafkaRecord<'_>| parse(r.payload.unwrap_or_default()))
                .event_time(Event::date_time)
                .watermarks(WatermarkStrategy::bounded_out_of_orderness(OUT_OF_ORDERNESS_MS));
            let job = JobBuilder::new(name).default_parallelism(1);
            let events = job.source("nexmark-kafka", source.factory()).uid("nexmark-source");
            let serializer = repartition::serializer(*hop, |b: &(i64, i64)| b.0, encode_pair);
            queries::q11_bids(events)
                .sink(
                    "repartition",
                    KafkaSink::new(&options.cluster, repartition, serializer).factory(),
                )
                .uid("repartition");
            job.build()
        }
        NexmarkStage::Keyed { repartition } => {
            let mut source = KafkaSource::new(&options.cluster, &[repartition.as_str()])
                .only_partitions(&[options.partition])
                .control(repartition::control);
            if options.bounded {
                source = source.upstream_input(&options.source_topic);
            }
            let source = source.deserializer(repartition::deserializer(decode_pair));
            let job = JobBuilder::new(name).default_parallelism(options.parallelism);
            let bids = job.source("repartition-in", source.factory()).uid("repartition-in");
            let serialize = |o: &Output, _key: &mut Vec<u8>, value: &mut Vec<u8>| {
                serde_json::to_writer(value, &o.row)
                    .map(|()| None)
                    .map_err(|e| e.to_string())
            };
            queries::q11_sessions(bids)
                .sink(
                    "nexmark-kafka-out",
                    KafkaSink::new(&options.cluster, &options.sink_topic, serialize).factory(),
                )
                .uid("nexmark-sink");
            job.build()
        }
    }
}

fn encode_pair(b: &(i64, i64), out: &mut Vec<u8>) {
    out.extend_from_slice(&b.0.to_le_bytes());
    out.extend_from_slice(&b.1.to_le_bytes());
}

fn decode_pair(bytes: &[u8]) -> std::result::Result<(i64, i64), String> {
    let field = |i: usize| {
        bytes
            .get(i * 8..i * 8 + 8)
            .and_then(|b| b.try_into().ok())
            .map(i64::from_le_bytes)
    };
    match (bytes.len(), field(0), field(1)) {
        (16, Some(a), Some(b)) => Ok((a, b)),
        (n, ..) => Err(format!("a q11 repartition record has 16 bytes, this one {n}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_and_a_wrong_size_is_named() {
        let mut out = Vec::new();
        encode_pair(&(-3, 1_700_000_000_000), &mut out);
        assert_eq!(decode_pair(&out), Ok((-3, 1_700_000_000_000)));
        assert!(decode_pair(&out[..15]).unwrap_err().contains("15"));
    }
}
