//! The strict broker restart: Apache Kafka stopped (SIGTERM, then in a
//! second round SIGKILL) and started again on the same data while
//! `kafka-count` reads *and* writes, with periodic checkpoints so that sink
//! transactions are open when the broker goes. The job rides it out and the
//! read_committed output equals a failure-free run's: nothing lost, nothing
//! doubled. Once per transaction protocol a 4.x broker offers
//! (`transaction.version` 1, and 2 = KIP-890), each on a broker of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/broker.rs"]
mod broker;
mod common;
#[path = "support/kafka_data.rs"]
mod kafka_data;

use broker::{broker_name, Broker, BrokerOptions, Stop};
use common::compare;
use kafka_data::{expected, input, output};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use weir::connectors::kafka::{BadRecordPolicy, Delivery};
use weir::JobConfig;
use weir_workloads::jobs::{kafka_count_job, KafkaCountOptions};

const RECORDS: u64 = 300_000;

fn rides_out_restarts(transaction_version: u8) {
    if std::env::var("TEST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt().with_env_filter("info").try_init();
    }
    let mut broker = Broker::start_with(BrokerOptions {
        transaction_version: Some(transaction_version),
        ..BrokerOptions::default()
    });
    let mut lines = Vec::new();
    for how in [Stop::Term, Stop::Kill] {
        let prefix = format!("{how:?}").to_lowercase();
        let (input_topic, output_topic) = (format!("{prefix}-in"), format!("{prefix}-out"));
        broker.create_topic(&input_topic, 4);
        broker.create_topic(&output_topic, 4);
        broker.produce(&input_topic, &input(0..RECORDS, 4));
        let dir = tempfile::tempdir().unwrap();
        let options = KafkaCountOptions {
            job: "restart".into(),
            cluster: broker.bootstrap.as_str().into(),
            input: input_topic,
            output: output_topic.clone(),
            parallelism: 2,
            bounded: true,
            delivery: Delivery::ExactlyOnce,
            bad_records: BadRecordPolicy::Fail,
            lost_input: Default::default(),
            // A small prefetch: the sources cannot race to the end (and the
            // final commit) before the broker is back.
            source_properties: vec![("queued.max.messages.kbytes".into(), "256".into())],
            sink_properties: Vec::new(),
            only_partitions: None,
            stage: weir_workloads::jobs::KafkaCountStage::Whole,
        };
        let (job, progress) = kafka_count_job(&options).unwrap();
        let config = JobConfig {
            checkpoint_interval: Some(Duration::from_millis(200)),
            ..JobConfig::with_checkpoint_dir(dir.path())
        };
        let handle = job.start(config).unwrap();
        let started = Instant::now();
        while progress.done.load(Ordering::Relaxed) < RECORDS / 5 && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let at = progress.done.load(Ordering::Relaxed);
        tracing::info!("stopping the broker ({how:?}) at {at} records");
        broker.restart(Duration::from_millis(1000), how);
        tracing::info!("broker is back");
        let summary = handle
            .join()
            .unwrap_or_else(|e| panic!("the job did not ride out a {how:?} restart: {e}\n{}", broker.log()));
        let out = output(&broker, &output_topic);
        let (lost, duplicated) = compare(&expected(RECORDS), &out);
        lines.push(format!(
            "{how:?} at {at} records: checkpoints={} lost={lost} duplicated={duplicated} output={}",
            summary.checkpoints_completed,
            out.len()
        ));
        assert_eq!((lost, duplicated, out.len() as u64), (0, 0, RECORDS), "after {how:?}");
        assert!(summary.checkpoints_completed >= 2, "{summary:?}");
    }
    common::publish_summary(
        &format!("kafka_broker_restart_tv{transaction_version}"),
        &format!(
            "broker restart: broker={} transaction.version={transaction_version}, job reading and writing: {}",
            broker_name(),
            lines.join("; ")
        ),
    );
}

#[test]
fn the_job_rides_out_broker_restarts_with_transaction_version_1() {
    rides_out_restarts(1);
}

#[test]
fn the_job_rides_out_broker_restarts_with_transaction_version_2() {
    rides_out_restarts(2);
}
