//! Kafka against Apache Kafka on 127.0.0.1 (the binary's shared broker, a
//! topic prefix per test): bounded runs that resume from the offsets in
//! their checkpoints, read_committed input, bad records, partitions added,
//! and the exactly-once sink's output. The broker restarts are proved in
//! `kafka_broker_restart.rs`, on brokers of their own.
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
use weir::{JobConfig, JobSummary};
use weir_workloads::jobs::{kafka_count_job, KafkaCountOptions};

/// `kafka-count` from `<prefix>-in` to `<prefix>-out`.
fn options(broker: &Broker, prefix: &str, bad_records: BadRecordPolicy) -> KafkaCountOptions {
    KafkaCountOptions {
        job: "kafka-count".into(),
        cluster: broker.bootstrap.as_str().into(),
        input: format!("{prefix}-in"),
        output: format!("{prefix}-out"),
        parallelism: 2,
        bounded: true,
        delivery: Delivery::ExactlyOnce,
        bad_records,
        lost_input: Default::default(),
        source_properties: Vec::new(),
        sink_properties: Vec::new(),
        only_partitions: None,
        stage: weir_workloads::jobs::KafkaCountStage::Whole,
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
    let broker = Broker::shared();
    broker.create_topic("resume-in", 4);
    broker.create_topic("resume-out", 4);
    let dir = tempfile::tempdir().unwrap();
    let opts = options(broker, "resume", BadRecordPolicy::Fail);

    broker.produce("resume-in", &input(0..100_000, 4));
    let (first, n1) = run(dir.path(), &opts);
    assert_eq!(n1, 100_000);
    broker.produce("resume-in", &input(100_000..150_000, 4));
    let (second, n2) = run(dir.path(), &opts);
    assert_eq!(n2, 50_000, "the second run reads exactly the new records");
    assert_eq!(second.restored_from, first.last_checkpoint);
    let (_, n3) = run(dir.path(), &opts);
    assert_eq!(n3, 0, "a run with nothing new reads nothing");

    let out = output(broker, "resume-out");
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
    let offsets = weir::connectors::kafka::stored_offsets(&manifest);
    assert_eq!(offsets.len(), 4);
    let ends = weir::connectors::kafka::end_offsets(
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
    let broker = Broker::shared();
    broker.create_topic("committed-in", 1);
    broker.create_topic("committed-out", 1);
    let producer: BaseProducer = broker
        .client_config()
        .set("transactional.id", "test-input")
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(10)).unwrap();
    let send = |ids: std::ops::Range<u64>| {
        for (_, v, p) in input(ids, 1) {
            producer
                .send(BaseRecord::<[u8], [u8]>::to("committed-in").payload(&v).partition(p))
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
    let (_, n) = run(dir.path(), &options(broker, "committed", BadRecordPolicy::Fail));
    assert_eq!(n, 5, "aborted records are invisible to the read_committed source");
    let mut ids: Vec<u64> = output(broker, "committed-out").iter().map(|l| l.index).collect();
    ids.sort_unstable();
    assert_eq!(ids, (10..15).collect::<Vec<_>>());
}

#[test]
fn a_bad_record_fails_the_job_naming_topic_partition_and_offset_or_goes_to_the_dead_letter_topic() {
    if std::env::var("TEST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,librdkafka=info,rdkafka=info")
            .try_init();
    }
    let broker = Broker::shared();
    broker.create_topic("bad-in", 1);
    broker.create_topic("bad-out", 1);
    broker.create_topic("bad-dlq", 1);
    let mut records = input(0..5, 1);
    records.insert(3, (None, b"not,a-number".to_vec(), 0));
    broker.produce("bad-in", &records);

    let dir = tempfile::tempdir().unwrap();
    let (job, _) = kafka_count_job(&options(broker, "bad", BadRecordPolicy::Fail)).unwrap();
    let err = job
        .run(JobConfig::with_checkpoint_dir(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("topic `bad-in` partition 0 offset 3"), "{err}");
    assert!(err.contains("expected `id,key,value`"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let (_, n) = run(
        dir.path(),
        &options(broker, "bad", BadRecordPolicy::DeadLetter("bad-dlq".into())),
    );
    assert_eq!(n, 5);
    let dead = broker.consume_all("bad-dlq", true);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].3, b"not,a-number");

    let dir = tempfile::tempdir().unwrap();
    let (job, progress) = kafka_count_job(&options(broker, "bad", BadRecordPolicy::Skip)).unwrap();
    job.run(JobConfig::with_checkpoint_dir(dir.path())).unwrap();
    assert_eq!(progress.skipped.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn a_bounded_run_killed_midway_and_run_again_gives_the_clean_output() {
    use std::os::unix::process::ExitStatusExt;
    let broker = Broker::shared();
    broker.create_topic("killed-in", 4);
    broker.create_topic("killed-out", 4);
    broker.produce("killed-in", &input(0..200_000, 4));
    let dir = tempfile::tempdir().unwrap();
    let run_cli = || {
        std::process::Command::new(common::WEIR)
            .args([
                "run",
                "kafka-count",
                "--bounded",
                "--checkpoint-interval-ms",
                "100",
                "--input",
                "killed-in",
                "--output",
                "killed-out",
            ])
            .args(["--brokers", &broker.bootstrap])
            .arg("--checkpoint-dir")
            .arg(dir.path())
            .env("WEIR_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut killed_midway = 0;
    for wait_ms in [900, 1200, 1500] {
        let mut child = run_cli();
        std::thread::sleep(Duration::from_millis(wait_ms));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            assert_eq!(child.wait().unwrap().signal(), Some(9));
            killed_midway += 1;
        }
    }
    assert!(killed_midway >= 1, "the bounded run finished before any kill");
    assert!(run_cli().wait().unwrap().success());
    let out = output(broker, "killed-out");
    assert_eq!(
        compare(&expected(200_000), &out),
        (0, 0),
        "killed {killed_midway} times"
    );
    assert_eq!(out.len(), 200_000);
}

#[test]
fn partitions_added_between_runs_are_read_and_moved_partitions_keep_their_offsets() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
    use std::sync::{Arc, Mutex};
    use weir::connectors::collect::CollectSink;
    use weir::connectors::kafka::{utf8, KafkaSource};
    let broker = Broker::shared();
    broker.create_topic("grow-a", 1);
    broker.create_topic("grow-b", 2);
    let lines = |topic: &str, range: std::ops::Range<u32>, partitions: i32| -> Vec<broker::ToProduce> {
        range
            .map(|i| {
                (
                    None,
                    format!("{topic}-{i}").into_bytes(),
                    (i % partitions as u32) as i32,
                )
            })
            .collect()
    };
    broker.produce("grow-a", &lines("a", 0..100, 1));
    broker.produce("grow-b", &lines("b", 0..100, 2));
    let dir = tempfile::tempdir().unwrap();
    let out = Arc::new(Mutex::new(Vec::new()));
    let run = || {
        let job = weir::JobBuilder::new("multi").default_parallelism(2);
        let source = KafkaSource::new(&broker.bootstrap, &["grow-a", "grow-b"])
            .bounded(true)
            .deserializer(utf8());
        job.source("kafka", source.factory())
            .uid("kafka")
            .sink("collect", CollectSink::factory(out.clone()));
        job.build()
            .unwrap()
            .run(JobConfig::with_checkpoint_dir(dir.path()))
            .unwrap();
    };
    run();
    // Topic `a` grows from 1 to 2 partitions: the partitions of `b` are numbered
    // after it, so they move to other subtasks; their offsets must follow.
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = broker.client_config().create().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = rt
        .block_on(admin.create_partitions(&[NewPartitions::new("grow-a", 2)], &AdminOptions::new()))
        .unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    std::thread::sleep(Duration::from_millis(500));
    broker.produce("grow-a", &lines("a", 100..200, 2));
    broker.produce("grow-b", &lines("b", 100..200, 2));
    run();
    let mut got = out.lock().unwrap().clone();
    got.sort();
    let mut want: Vec<String> = (0..200).flat_map(|i| [format!("a-{i}"), format!("b-{i}")]).collect();
    want.sort();
    assert_eq!(got, want, "every record exactly once, new partition included");
}

#[test]
fn checkpointed_offsets_reach_the_consumer_group_and_weir_offsets_shows_them() {
    use std::sync::{Arc, Mutex};
    use weir::connectors::collect::CollectSink;
    use weir::connectors::kafka::{utf8, KafkaSource, StartPosition};
    let broker = Broker::shared();
    broker.create_topic("group-in", 2);
    broker.produce("group-in", &input(0..1000, 2));
    let run = |dir: &Path, start: StartPosition| -> usize {
        let out = Arc::new(Mutex::new(Vec::new()));
        let job = weir::JobBuilder::new("grouped");
        let source = KafkaSource::new(&broker.bootstrap, &["group-in"])
            .group_id("monitoring")
            .start(start)
            .bounded(true)
            .deserializer(utf8());
        job.source("kafka", source.factory())
            .uid("kafka")
            .sink("collect", CollectSink::factory(out.clone()));
        job.build().unwrap().run(JobConfig::with_checkpoint_dir(dir)).unwrap();
        let n = out.lock().unwrap().len();
        n
    };
    let first = tempfile::tempdir().unwrap();
    assert_eq!(run(first.path(), StartPosition::Earliest), 1000);
    broker.produce("group-in", &input(1000..1300, 2));
    // A job without checkpoints that starts from the group's committed offsets
    // reads only what the first job had not (its final checkpoint was committed).
    let fresh = tempfile::tempdir().unwrap();
    assert_eq!(run(fresh.path(), StartPosition::Committed), 300);

    let cli = std::process::Command::new(common::WEIR)
        .args(["offsets"])
        .arg(first.path())
        .args(["--job", "grouped", "--brokers", &broker.bootstrap, "--json"])
        .output()
        .unwrap();
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    let report: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    let rows = report["offsets"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let lag: i64 = rows.iter().map(|r| r["lag"].as_i64().unwrap()).sum();
    assert_eq!(lag, 300, "the first job's checkpoint is 300 records behind: {report}");
}

/// Kafka `changed-in` (source parallelism `sources`) -> rebalance -> exactly-once Kafka `changed-out` (2 subtasks).
fn copy_job(broker: &Broker, sources: usize, with_count: bool) -> weir::Job {
    use weir::connectors::kafka::{utf8, KafkaSink, KafkaSource};
    let job = weir::JobBuilder::new("copy");
    let source = KafkaSource::new(&broker.bootstrap, &["changed-in"])
        .deserializer(utf8())
        .bounded(true);
    let stream = job
        .source("in", source.factory())
        .uid("in")
        .parallelism(sources)
        .rebalance()
        .parallelism(2);
    let stream = if with_count {
        stream
            .key_by(|s: &String| s.len() as u64)
            .reduce("count", |a: &String, _b| a.clone())
            .uid("count")
            .parallelism(2)
    } else {
        stream
    };
    stream
        .sink(
            "out",
            KafkaSink::new(&broker.bootstrap, "changed-out", kafka_data::line).factory(),
        )
        .uid("out")
        .parallelism(2);
    job.build().unwrap()
}

#[test]
fn a_changed_job_keeps_its_kafka_offsets_when_dropping_state_is_allowed() {
    let broker = Broker::shared();
    broker.create_topic("changed-in", 4);
    broker.create_topic("changed-out", 4);
    let dir = tempfile::tempdir().unwrap();
    let config = |allow: bool| JobConfig {
        allow_non_restored_state: allow,
        ..JobConfig::with_checkpoint_dir(dir.path())
    };
    broker.produce("changed-in", &input(0..10_000, 4));
    copy_job(broker, 2, true).run(config(false)).unwrap();
    broker.produce("changed-in", &input(10_000..15_000, 4));

    // The keyed operator removed and the source's parallelism changed.
    let err = copy_job(broker, 1, false).run(config(false)).unwrap_err().to_string();
    assert!(
        err.contains("allow_non_restored_state"),
        "refused, naming the choice: {err}"
    );
    copy_job(broker, 1, false).run(config(true)).unwrap();
    let rows = broker.consume_all("changed-out", true).len();
    common::publish_summary(
        "kafka_non_restored_state",
        &format!(
            "operator removed and source parallelism 2 -> 1 with allow_non_restored_state: offsets kept, {rows} rows for 15000 records"
        ),
    );
    assert_eq!(rows, 15_000, "the Kafka offsets survive: only the new records are read");

    // A sink at another parallelism: its former subtasks' pending epochs are
    // committed (or found committed) under their own transactional ids.
    let job = weir::JobBuilder::new("copy");
    let source = weir::connectors::kafka::KafkaSource::new(&broker.bootstrap, &["changed-in"])
        .deserializer(weir::connectors::kafka::utf8())
        .bounded(true);
    job.source("in", source.factory())
        .uid("in")
        .sink(
            "out",
            weir::connectors::kafka::KafkaSink::new(&broker.bootstrap, "changed-out", kafka_data::line).factory(),
        )
        .uid("out")
        .parallelism(3);
    job.build().unwrap().run(config(false)).unwrap();
    let rows = broker.consume_all("changed-out", true).len();
    assert_eq!(rows, 15_000, "the rescaled sink writes nothing twice");
}

#[test]
fn kafka_count_rescales_between_bounded_runs_with_exactly_once_output() {
    let broker = Broker::shared();
    broker.create_topic("rescale-in", 4);
    broker.create_topic("rescale-out", 4);
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(broker, "rescale", BadRecordPolicy::Fail);
    let mut end = 0;
    let mut read = Vec::new();
    // Source, keyed count and exactly-once sink all change parallelism.
    for (parallelism, more) in [(2usize, 30_000u64), (3, 20_000), (1, 20_000), (4, 10_000)] {
        broker.produce("rescale-in", &input(end..end + more, 4));
        end += more;
        opts.parallelism = parallelism;
        let (_, n) = run(dir.path(), &opts);
        read.push((parallelism, n));
        assert_eq!(n, more, "parallelism {parallelism} reads exactly the new records");
    }
    let out = output(broker, "rescale-out");
    let (lost, duplicated) = compare(&expected(end), &out);
    common::publish_summary(
        "kafka_rescale",
        &format!("kafka rescale: bounded runs at (parallelism, records) {read:?}: output {} lines, lost={lost} duplicated={duplicated}", out.len()),
    );
    assert_eq!((lost, duplicated), (0, 0));
}

#[test]
fn an_exactly_once_sink_asks_for_a_checkpoint_when_its_epoch_outgrows_the_bound() {
    use weir::connectors::kafka::{utf8, KafkaSink, KafkaSource};
    let broker = Broker::shared();
    broker.create_topic("epochs-in", 2);
    broker.create_topic("epochs-out", 2);
    broker.produce("epochs-in", &input(0..20_000, 2));
    let dir = tempfile::tempdir().unwrap();
    let job = weir::JobBuilder::new("bounded-epochs");
    let source = KafkaSource::new(&broker.bootstrap, &["epochs-in"])
        .deserializer(utf8())
        .bounded(true);
    job.source("in", source.factory())
        .uid("in")
        .sink(
            "out",
            KafkaSink::new(&broker.bootstrap, "epochs-out", kafka_data::line)
                .max_epoch_bytes(50_000)
                .factory(),
        )
        .uid("out");
    // No periodic checkpoints: without the bound, the whole input is one epoch.
    let config = JobConfig {
        checkpoint_interval: None,
        ..JobConfig::with_checkpoint_dir(dir.path())
    };
    let summary = job.build().unwrap().run(config).unwrap();
    let rows = broker.consume_all("epochs-out", true).len();
    common::publish_summary(
        "kafka_epoch_bound",
        &format!(
            "exactly-once sink, 20000 records of ~20 bytes, 50 kB epoch bound, no interval: {} checkpoints, {rows} rows",
            summary.checkpoints_completed
        ),
    );
    // Without the bound: the final checkpoint only. How many the bound adds
    // depends on how fast the input is read (asks during a checkpoint wait for it).
    assert!(summary.checkpoints_completed >= 2, "{summary:?}");
    assert_eq!(rows, 20_000);
}

#[test]
fn a_source_subtask_without_partitions_is_idle_and_does_not_hold_event_time_back() {
    use std::sync::{Arc, Mutex};
    use weir::connectors::collect::CollectSink;
    use weir::connectors::kafka::{utf8, KafkaSource, WatermarkStrategy};
    use weir::operators::aggregators::Count;
    use weir::operators::{Tumbling, Windowed};
    let broker = Broker::shared();
    broker.create_topic("idle-in", 1);
    // Event time = the value: 0..1000 ms, in order, on the only partition.
    let records: Vec<broker::ToProduce> = (0..1000).map(|t: u32| (None, t.to_string().into_bytes(), 0)).collect();
    broker.produce("idle-in", &records);
    let dir = tempfile::tempdir().unwrap();
    let out = Arc::new(Mutex::new(Vec::new()));
    // Two source subtasks for one partition: subtask 1 has none.
    let job = weir::JobBuilder::new("idle-subtask").default_parallelism(2);
    let source = KafkaSource::new(&broker.bootstrap, &["idle-in"])
        .deserializer(utf8())
        .watermarks(WatermarkStrategy::bounded_out_of_orderness(0))
        .event_time(|line: &String| line.parse().unwrap_or(0));
    job.source("kafka", source.factory())
        .uid("kafka")
        .key_by(|_: &String| 0u64)
        .window_aggregate("count", Tumbling::of(100), |l: &String| l.parse().unwrap_or(0), Count)
        .uid("count")
        .sink("collect", CollectSink::factory(out.clone()));
    let handle = job
        .build()
        .unwrap()
        .start(JobConfig::with_checkpoint_dir(dir.path()))
        .unwrap();
    // The watermark reaches 998 (newest - 0 - 1): windows up to 800..900 close.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while out.lock().unwrap().len() < 9 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    handle.cancel();
    let _ = handle.join();
    let mut got: Vec<(i64, u64)> = out
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, w): &(u64, Windowed<u64, String>)| match w {
            Windowed::Result { window, value } => Some((window.start, *value)),
            Windowed::Late(_) => None,
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..9).map(|w| (w * 100, 100)).collect::<Vec<_>>());
}
