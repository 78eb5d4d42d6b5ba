//! Kafka against a real broker (noida-db on 127.0.0.1): bounded runs that
//! resume from the offsets in their checkpoints, read_committed input, bad
//! records, and the exactly-once sink's output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/broker.rs"]
mod broker;
mod common;
#[path = "support/kafka_data.rs"]
mod kafka_data;

use broker::Broker;
use common::compare;
use kafka_data::{expected, input, output};
use std::path::Path;
use std::time::Duration;
use weir::connectors::kafka::{BadRecordPolicy, Delivery};
use weir::jobs::{kafka_count_job, KafkaCountOptions};
use weir::{JobConfig, JobSummary};

fn options(broker: &Broker, bad_records: BadRecordPolicy) -> KafkaCountOptions {
    KafkaCountOptions {
        job: "kafka-count".into(),
        brokers: broker.bootstrap.clone(),
        input: "in".into(),
        output: "out".into(),
        parallelism: 2,
        bounded: true,
        delivery: Delivery::ExactlyOnce,
        bad_records,
    }
}

fn run(dir: &Path, options: &KafkaCountOptions) -> (JobSummary, u64) {
    let (job, progress) = kafka_count_job(options).unwrap();
    let config = JobConfig {
        checkpoint_interval: Some(Duration::from_millis(200)),
        ..JobConfig::with_checkpoint_dir(dir)
    };
    let summary = job.run(config).unwrap();
    (summary, progress.done.load(std::sync::atomic::Ordering::Relaxed))
}

#[test]
fn bounded_runs_resume_from_their_checkpointed_offsets() {
    let broker = Broker::start();
    broker.create_topic("in", 4);
    broker.create_topic("out", 4);
    let dir = tempfile::tempdir().unwrap();
    let opts = options(&broker, BadRecordPolicy::Fail);

    broker.produce("in", &input(0..100_000, 4));
    let (first, n1) = run(dir.path(), &opts);
    assert_eq!(n1, 100_000);
    broker.produce("in", &input(100_000..150_000, 4));
    let (second, n2) = run(dir.path(), &opts);
    assert_eq!(n2, 50_000, "the second run reads exactly the new records");
    assert_eq!(second.restored_from, first.last_checkpoint);
    let (_, n3) = run(dir.path(), &opts);
    assert_eq!(n3, 0, "a run with nothing new reads nothing");

    let out = output(&broker, "out");
    let (lost, duplicated) = compare(&expected(150_000), &out);
    common::publish_summary(
        "kafka_bounded_resume",
        &format!("bounded resume: runs read {n1} + {n2} + {n3} records; output {} lines, lost={lost} duplicated={duplicated}", out.len()),
    );
    assert_eq!((lost, duplicated), (0, 0));
    assert_eq!(out.len(), 150_000);

    // The stored offsets are where the input ends.
    let store = weir::checkpoint::CheckpointStore::open(dir.path(), "kafka-count").unwrap();
    let manifest = store.restore_point().unwrap().unwrap();
    let offsets = weir::connectors::kafka::source::stored_offsets(&manifest);
    assert_eq!(offsets.len(), 4);
    let ends = weir::connectors::kafka::source::end_offsets(
        &broker.bootstrap,
        offsets.iter().map(|o| (o.topic.as_str(), o.partition)),
    )
    .unwrap();
    for o in &offsets {
        assert_eq!(o.next_offset, ends[&(o.topic.clone(), o.partition)], "{o:?}");
    }
}

#[test]
fn the_source_reads_only_committed_records() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let broker = Broker::start();
    broker.create_topic("in", 1);
    broker.create_topic("out", 1);
    let producer: BaseProducer = broker
        .client_config()
        .set("transactional.id", "test-input")
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(10)).unwrap();
    let send = |ids: std::ops::Range<u64>| {
        for (_, v, p) in input(ids, 1) {
            producer
                .send(BaseRecord::<[u8], [u8]>::to("in").payload(&v).partition(p))
                .unwrap();
        }
    };
    producer.begin_transaction().unwrap();
    send(0..10);
    producer.flush(Duration::from_secs(10)).unwrap();
    producer.abort_transaction(Duration::from_secs(10)).unwrap();
    producer.begin_transaction().unwrap();
    send(10..15);
    producer.commit_transaction(Duration::from_secs(10)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (_, n) = run(dir.path(), &options(&broker, BadRecordPolicy::Fail));
    assert_eq!(n, 5, "aborted records are invisible to the read_committed source");
    let mut ids: Vec<u64> = output(&broker, "out").iter().map(|l| l.index).collect();
    ids.sort_unstable();
    assert_eq!(ids, (10..15).collect::<Vec<_>>());
}

#[test]
fn a_bad_record_fails_the_job_naming_topic_partition_and_offset_or_goes_to_the_dead_letter_topic() {
    let broker = Broker::start();
    broker.create_topic("in", 1);
    broker.create_topic("out", 1);
    broker.create_topic("dlq", 1);
    let mut records = input(0..5, 1);
    records.insert(3, (None, b"not,a-number".to_vec(), 0));
    broker.produce("in", &records);

    let dir = tempfile::tempdir().unwrap();
    let (job, _) = kafka_count_job(&options(&broker, BadRecordPolicy::Fail)).unwrap();
    let err = job
        .run(JobConfig::with_checkpoint_dir(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("topic `in` partition 0 offset 3"), "{err}");
    assert!(err.contains("expected `id,key,value`"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let (_, n) = run(dir.path(), &options(&broker, BadRecordPolicy::DeadLetter("dlq".into())));
    assert_eq!(n, 5);
    let dead = broker.consume_all("dlq", true);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].3, b"not,a-number");

    let dir = tempfile::tempdir().unwrap();
    let (job, progress) = kafka_count_job(&options(&broker, BadRecordPolicy::Skip)).unwrap();
    job.run(JobConfig::with_checkpoint_dir(dir.path())).unwrap();
    assert_eq!(progress.skipped.load(std::sync::atomic::Ordering::Relaxed), 1);
}
