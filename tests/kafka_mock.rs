//! Fast tests of the Kafka source against librdkafka's in-process mock
//! cluster: partition assignment over subtasks, bounded runs that resume from
//! their checkpointed offsets, start positions, and bad records. The mock has
//! no real transactions, so every test produces plainly and reads
//! read_uncommitted; exactly-once claims are tested against a real broker in
//! `kafka_bounded.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir::connectors::collect::CollectSink;
use weir::connectors::kafka::source::Progress;
use weir::connectors::kafka::{stored_offsets, NextOffset, StoredOffset};
use weir::connectors::kafka::{BadRecordPolicy, KafkaRecord, KafkaSource, StartPosition};
use weir::{JobBuilder, JobConfig, JobSummary};

type Mock = MockCluster<'static, DefaultProducerContext>;
/// The deserializer of every test, as a type.
type Number = fn(&KafkaRecord<'_>) -> Result<u64, String>;

fn log() {
    if std::env::var("TEST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,librdkafka=info,rdkafka=info")
            .try_init();
    }
}

/// The tests of this file run one at a time: each starts a mock cluster, and
/// six at once on two cores make the timing of every test unlike a real run.
/// (On a loaded machine they found records that a poll took from the
/// consumer's own queue and returned together with `End`: dropped.)
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A mock cluster of one broker with these topics (name, partitions).
fn cluster(topics: &[(&str, i32)]) -> Mock {
    log();
    let mock = MockCluster::new(1).unwrap();
    for (topic, partitions) in topics {
        mock.create_topic(topic, *partitions, 1).unwrap();
    }
    mock
}

/// Writes these (partition, value) records to `topic` and waits for them.
fn produce(mock: &Mock, topic: &str, records: &[(i32, Vec<u8>)]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("linger.ms", "0")
        .create()
        .unwrap();
    for (partition, value) in records {
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(value).partition(*partition);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) => {
                    assert!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        ),
                        "{e}"
                    );
                    producer.poll(Duration::from_millis(5));
                    record = r;
                }
            }
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// The numbers `range` as text, spread round-robin over `partitions`.
fn numbers(range: std::ops::Range<u64>, partitions: i32) -> Vec<(i32, Vec<u8>)> {
    range
        .map(|i| ((i % partitions as u64) as i32, i.to_string().into_bytes()))
        .collect()
}

/// The deserializer of every test: the value is a decimal number.
fn number(r: &KafkaRecord<'_>) -> Result<u64, String> {
    let text = std::str::from_utf8(r.payload.unwrap_or_default()).map_err(|e| format!("value is not UTF-8: {e}"))?;
    text.parse().map_err(|e| format!("`{text}` is not a number: {e}"))
}

/// A bounded, read_uncommitted source of numbers.
fn source(mock: &Mock, topics: &[&str]) -> KafkaSource<u64, Number> {
    KafkaSource::new(mock.bootstrap_servers(), topics)
        .bounded(true)
        .read_committed(false)
        .deserializer(number as Number)
}

/// Runs `source` into a fresh vector; returns what came out (sorted) and the run's summary.
fn run(
    job: &str,
    parallelism: usize,
    dir: &Path,
    source: KafkaSource<u64, Number>,
) -> weir::Result<(Vec<u64>, JobSummary)> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let builder = JobBuilder::new(job).default_parallelism(parallelism);
    builder
        .source("kafka", source.factory())
        .uid("kafka")
        .sink("collect", CollectSink::factory(out.clone()));
    let summary = builder.build()?.run(JobConfig::with_checkpoint_dir(dir))?;
    let mut got = out.lock().unwrap().clone();
    got.sort_unstable();
    Ok((got, summary))
}

/// The Kafka offsets in the job's newest checkpoint.
fn offsets_in_checkpoint(dir: &Path, job: &str) -> Vec<StoredOffset> {
    let store = weir::checkpoint::CheckpointStore::open(dir, job).unwrap();
    let manifest = store.restore_point().unwrap().unwrap();
    stored_offsets(&manifest)
}

fn counts(progress: &Progress) -> (u64, u64, u64) {
    (
        progress.done.load(Ordering::Relaxed),
        progress.total.load(Ordering::Relaxed),
        progress.skipped.load(Ordering::Relaxed),
    )
}

#[test]
fn assignment_covers_every_partition_once() {
    let _serial = serial();
    let mock = cluster(&[("a", 3), ("b", 2)]);
    produce(&mock, "a", &numbers(0..300, 3));
    produce(&mock, "b", &numbers(1000..1200, 2));
    let dir = tempfile::tempdir().unwrap();
    let source = source(&mock, &["a", "b"]);
    let progress = source.progress();
    let (got, summary) = run("assign", 2, dir.path(), source).unwrap();
    let want: Vec<u64> = (0..300).chain(1000..1200).collect();
    assert_eq!(got.len(), want.len(), "every value exactly once");
    assert_eq!(got, want, "every value exactly once");
    assert_eq!(counts(&progress), (500, 500, 0));
    assert!(summary.last_checkpoint.is_some());

    // Each of the 5 partitions was assigned to exactly one of the 2 subtasks,
    // and each stopped at its end.
    let offsets = offsets_in_checkpoint(dir.path(), "assign");
    let stored: Vec<(&str, i32, i64)> = offsets
        .iter()
        .map(|o| (o.topic.as_str(), o.partition, o.next_offset.get()))
        .collect();
    assert_eq!(
        stored,
        vec![
            ("a", 0, 100),
            ("a", 1, 100),
            ("a", 2, 100),
            ("b", 0, 100),
            ("b", 1, 100)
        ]
    );
}

#[test]
fn a_second_bounded_run_seeks_to_the_stored_offsets() {
    let _serial = serial();
    let mock = cluster(&[("in", 2)]);
    let dir = tempfile::tempdir().unwrap();
    produce(&mock, "in", &numbers(0..100, 2));
    let (first, s1) = run("resume", 1, dir.path(), source(&mock, &["in"])).unwrap();
    assert_eq!(first, (0..100).collect::<Vec<_>>());

    produce(&mock, "in", &numbers(100..150, 2));
    let (second, s2) = run("resume", 1, dir.path(), source(&mock, &["in"])).unwrap();
    assert_eq!(
        second,
        (100..150).collect::<Vec<_>>(),
        "the second run reads exactly the new records"
    );
    assert_eq!(s2.restored_from, s1.last_checkpoint);

    let (third, s3) = run("resume", 1, dir.path(), source(&mock, &["in"])).unwrap();
    assert_eq!(third, Vec::<u64>::new(), "a run with nothing new reads nothing");
    assert_eq!(s3.restored_from, s2.last_checkpoint);

    let offsets = offsets_in_checkpoint(dir.path(), "resume");
    assert_eq!(offsets.len(), 2, "{offsets:?}");
    let ends = weir::connectors::kafka::end_offsets(
        mock.bootstrap_servers(),
        offsets.iter().map(|o| (o.topic.as_str(), o.partition)),
    )
    .unwrap();
    for o in &offsets {
        assert_eq!(o.next_offset, NextOffset::new(75), "{o:?}");
        assert_eq!(o.next_offset, ends[&(o.topic.clone(), o.partition)], "{o:?}");
    }
}

#[test]
fn start_positions() {
    let _serial = serial();
    let mock = cluster(&[("in", 2)]);
    produce(&mock, "in", &numbers(0..20, 2)); // partition 0: 0, 2, .., 18; partition 1: 1, 3, .., 19

    // Latest: nothing of what exists; the position it resolved to is stored,
    // so the next run reads what came after.
    let dir = tempfile::tempdir().unwrap();
    let latest = source(&mock, &["in"]).start(StartPosition::Latest);
    let progress = latest.progress();
    let (got, _) = run("latest", 1, dir.path(), latest).unwrap();
    assert_eq!(got, Vec::<u64>::new(), "Latest reads nothing of what exists");
    assert_eq!(counts(&progress), (0, 0, 0));
    let stored: Vec<i64> = offsets_in_checkpoint(dir.path(), "latest")
        .iter()
        .map(|o| o.next_offset.get())
        .collect();
    assert_eq!(stored, vec![10, 10]);
    produce(&mock, "in", &numbers(20..24, 2));
    let (got, _) = run(
        "latest",
        1,
        dir.path(),
        source(&mock, &["in"]).start(StartPosition::Latest),
    )
    .unwrap();
    assert_eq!(
        got,
        vec![20, 21, 22, 23],
        "a restored Latest run reads what came after it"
    );

    // Offsets: partition 0 from offset 5, partition 1 from the earliest.
    let dir = tempfile::tempdir().unwrap();
    let at = source(&mock, &["in"]).start(StartPosition::Offsets(vec![("in".into(), 0, NextOffset::new(5))]));
    let progress = at.progress();
    let (got, _) = run("offsets", 2, dir.path(), at).unwrap();
    let mut want: Vec<u64> = (0..24).filter(|i| i % 2 == 0).skip(5).collect();
    want.extend((0..24).filter(|i| i % 2 == 1));
    want.sort_unstable();
    assert_eq!(got, want, "partition 0 from offset 5, partition 1 from the earliest");
    assert_eq!(counts(&progress), (7 + 12, 7 + 12, 0));
}

#[test]
fn a_bad_record_names_topic_partition_offset() {
    let _serial = serial();
    let mock = cluster(&[("in", 2), ("dlq", 1)]);
    let mut records = numbers(0..10, 2);
    records.insert(6, (1, b"not a number".to_vec())); // partition 1, after 1, 3, 5: offset 3
    produce(&mock, "in", &records);
    let good: Vec<u64> = (0..10).collect();

    // Fail (the default).
    let dir = tempfile::tempdir().unwrap();
    let err = run("fail", 2, dir.path(), source(&mock, &["in"]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("topic `in` partition 1 offset 3"), "{err}");
    assert!(err.contains("`not a number` is not a number"), "{err}");

    // Skip: counted, the others are read.
    let dir = tempfile::tempdir().unwrap();
    let skip = source(&mock, &["in"]).on_bad_record(BadRecordPolicy::Skip);
    let progress = skip.progress();
    let (got, _) = run("skip", 2, dir.path(), skip).unwrap();
    assert_eq!(got, good);
    assert_eq!(counts(&progress), (10, 11, 1));
    let stored: Vec<i64> = offsets_in_checkpoint(dir.path(), "skip")
        .iter()
        .map(|o| o.next_offset.get())
        .collect();
    assert_eq!(stored, vec![5, 6], "the skipped record counts as consumed");

    // Dead letter: the raw value goes to `dlq`, its origin in headers.
    let dir = tempfile::tempdir().unwrap();
    let dead = source(&mock, &["in"]).on_bad_record(BadRecordPolicy::DeadLetter("dlq".into()));
    let progress = dead.progress();
    let (got, _) = run("dead-letter", 2, dir.path(), dead).unwrap();
    assert_eq!(got, good);
    assert_eq!(counts(&progress), (10, 11, 1));

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("group.id", "dlq-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("dlq", 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let msg = loop {
        assert!(Instant::now() < deadline, "nothing arrived in `dlq`");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => break msg.detach(),
            Some(Err(e)) => panic!("reading `dlq`: {e}"),
            None => {}
        }
    };
    assert_eq!(msg.payload(), Some(&b"not a number"[..]));
    assert_eq!(msg.offset(), 0);
    let headers = msg.headers().expect("headers");
    let header = |key: &str| {
        headers
            .iter()
            .find(|h| h.key == key)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(header("weir.source.topic").as_deref(), Some("in"));
    assert_eq!(header("weir.source.partition").as_deref(), Some("1"));
    assert_eq!(header("weir.source.offset").as_deref(), Some("3"));
    assert!(header("weir.error").unwrap().contains("is not a number"));
    // Nothing else in the dead-letter topic.
    let (low, high) = consumer.fetch_watermarks("dlq", 0, Duration::from_secs(5)).unwrap();
    assert_eq!((low, high), (0, 1));
}

/// A dead-letter record that the broker refuses must not be lost: either the
/// job fails, or the record reaches the dead-letter topic before the
/// checkpoint moves past it.
#[test]
fn a_dead_letter_that_cannot_be_written_is_not_lost() {
    let _serial = serial();
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let mock = cluster(&[("in", 1), ("dlq", 1)]);
    let mut records = numbers(0..10, 1);
    records.insert(3, (0, b"not a number".to_vec()));
    produce(&mock, "in", &records);
    // Every produce request fails with a permanent error.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 20],
    );
    let dir = tempfile::tempdir().unwrap();
    let dead = source(&mock, &["in"]).on_bad_record(BadRecordPolicy::DeadLetter("dlq".into()));
    let result = run("dead-letter-refused", 1, dir.path(), dead);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("group.id", "dlq-reader")
        .create()
        .unwrap();
    let (_, high) = consumer.fetch_watermarks("dlq", 0, Duration::from_secs(5)).unwrap();
    if let Ok((got, _)) = &result {
        let stored = offsets_in_checkpoint(dir.path(), "dead-letter-refused");
        assert_eq!(
            high,
            1,
            "the run succeeded ({} records, stored offsets {stored:?}) but the dead-letter topic is empty",
            got.len()
        );
    }
}

/// Records the watermarks it sees.
#[derive(Clone)]
struct WatermarkProbe(Arc<Mutex<Vec<i64>>>);

impl weir::operators::Operator<u64, u64> for WatermarkProbe {
    fn process(&mut self, r: u64, out: &mut Vec<u64>) -> Result<(), weir::operators::OperatorError> {
        out.push(r);
        Ok(())
    }
    fn on_watermark(
        &mut self,
        w: weir::operators::Timestamp,
        _out: &mut Vec<u64>,
    ) -> Result<(), weir::operators::OperatorError> {
        self.0.lock().unwrap().push(w.0);
        Ok(())
    }
}

fn watermarks_of_run(mock: &Mock, dir: &Path) -> Vec<i64> {
    watermarks_of_run_at(mock, dir, 1)
}

/// The watermarks one probe saw behind a `rebalance` (so each probe holds
/// the minimum over every source subtask), source at `parallelism`.
fn watermarks_of_run_at(mock: &Mock, dir: &Path, parallelism: usize) -> Vec<i64> {
    use weir::connectors::kafka::WatermarkStrategy;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let probe = WatermarkProbe(seen.clone());
    let source = source(mock, &["events"])
        .event_time(|v: &u64| *v as i64)
        .watermarks(WatermarkStrategy {
            out_of_orderness_ms: 100,
            idle_timeout: None,
        });
    let builder = JobBuilder::new("event-time").default_parallelism(parallelism);
    builder
        .source("kafka", source.factory())
        .uid("kafka")
        .rebalance()
        .operator("probe", move || probe.clone())
        .parallelism(1)
        .sink("count", weir::connectors::collect::CountingSink::factory());
    builder
        .build()
        .unwrap()
        .run(JobConfig::with_checkpoint_dir(dir))
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    seen
}

#[test]
fn watermarks_are_the_minimum_over_partitions_and_survive_a_restart() {
    let _serial = serial();
    let mock = cluster(&[("events", 2)]);
    let stamps = |p: i32, from: u64, to: u64, step: u64| {
        (from..=to)
            .step_by(step as usize)
            .map(move |t| (p, t.to_string().into_bytes()))
    };
    let first: Vec<_> = stamps(0, 1000, 10_000, 1000).chain(stamps(1, 500, 5000, 500)).collect();
    produce(&mock, "events", &first);
    let dir = tempfile::tempdir().unwrap();
    let run1 = watermarks_of_run(&mock, dir.path());
    assert!(run1.windows(2).all(|w| w[0] < w[1]), "{run1:?}");
    assert_eq!(
        run1.last(),
        Some(&4899),
        "min over partitions (5000) - out-of-orderness (100) - 1: {run1:?}"
    );

    let second: Vec<_> = stamps(0, 20_000, 30_000, 1000)
        .chain(stamps(1, 6000, 15_000, 1000))
        .collect();
    produce(&mock, "events", &second);
    let run2 = watermarks_of_run(&mock, dir.path());
    assert!(
        run2.iter().all(|w| *w > 4899),
        "a restarted job never moves its watermark back: {run2:?}"
    );
    assert_eq!(run2.last(), Some(&14_899), "{run2:?}");
}

#[test]
fn watermarks_never_move_back_across_a_rescale() {
    let _serial = serial();
    let mock = cluster(&[("events", 6)]);
    let dir = tempfile::tempdir().unwrap();
    // Partition p holds event times 1000 * (p + 1) * k: the partitions run
    // at different speeds, so a subtask's watermark depends on which
    // partitions it reads, and a rescale regroups them.
    let mut last = i64::MIN;
    for (round, parallelism) in [2usize, 3, 1, 6, 4].into_iter().enumerate() {
        let round = round as u64;
        let records: Vec<_> = (0..6)
            .flat_map(|p: i32| {
                (round * 10..(round + 1) * 10).map(move |k| (p, (1000 * (p as u64 + 1) * k).to_string().into_bytes()))
            })
            .collect();
        produce(&mock, "events", &records);
        let seen = watermarks_of_run_at(&mock, dir.path(), parallelism);
        assert!(!seen.is_empty(), "round {round} (p = {parallelism}) saw no watermark");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "round {round}: {seen:?}");
        assert!(
            seen[0] > last,
            "round {round} (p = {parallelism}) moved the watermark back: {} after {last} of the last run",
            seen[0]
        );
        // The slowest partition (0) bounds it: 1000 * k_max - 100 - 1.
        let k_max = (round + 1) * 10 - 1;
        assert_eq!(
            *seen.last().unwrap(),
            1000 * k_max as i64 - 101,
            "round {round}: {seen:?}"
        );
        last = *seen.last().unwrap();
    }
}

#[test]
fn the_status_shows_each_partitions_lag_until_it_is_read() {
    let _serial = serial();
    let mock = cluster(&[("lag", 2)]);
    // More than the channels between the tasks hold (16 batches of 1024), so
    // that the source is held back by the slow task and lags for seconds.
    produce(&mock, "lag", &numbers(0..60_000, 2));
    let dir = tempfile::tempdir().unwrap();
    let builder = JobBuilder::new("lag");
    builder
        .source("kafka", source(&mock, &["lag"]).bounded(false).factory())
        .uid("kafka")
        .rebalance()
        .map(|n: u64| {
            // About 20 000 records/s: the topic takes ~3 s to read.
            let until = Instant::now() + Duration::from_micros(50);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            n
        })
        .sink("count", weir::connectors::collect::CountingSink::factory());
    let handle = builder
        .build()
        .unwrap()
        .start(JobConfig::with_checkpoint_dir(dir.path()))
        .unwrap();
    let lag_of =
        |s: &weir::JobStatus| -> Vec<weir::PartitionLag> { s.tasks.iter().flat_map(|t| t.kafka_lag.clone()).collect() };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut saw_behind = false;
    loop {
        let s = handle.status();
        let lags = lag_of(&s);
        if lags.len() == 2 {
            for p in &lags {
                assert_eq!((p.topic.as_str(), p.end), ("lag", 30_000), "{lags:?}");
                assert_eq!(p.lag, p.end - p.position);
            }
            let total: i64 = lags.iter().map(|p| p.lag).sum();
            saw_behind |= total > 0;
            if total == 0 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the lag never reached 0:\n{s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(saw_behind, "the lag was never seen above 0 while the topic was read");
    handle.cancel();
    let _ = handle.join();
}

#[test]
fn a_source_that_cannot_reach_its_brokers_names_them() {
    let _serial = serial();
    log();
    let dir = tempfile::tempdir().unwrap();
    // Port 1 on the loopback: nothing listens, every connection is refused.
    let unreachable = KafkaSource::new("127.0.0.1:1", &["in"])
        .bounded(true)
        .deserializer(number as Number);
    let started = Instant::now();
    let err = run("unreachable", 1, dir.path(), unreachable).unwrap_err();
    eprintln!("failed after {:?}: {err:?}", started.elapsed());
    let text = err.to_string();
    assert!(text.contains("cannot reach the cluster"), "{text}");
    assert!(text.contains("(bootstrap servers: 127.0.0.1:1)"), "{text}");
    assert!(
        matches!(err, weir::WeirError::Kafka { .. }),
        "the client's error is kept: {err:?}"
    );
}

/// Runs numbers -> key_by(n % 50) -> running count per key (keyed state,
/// uid `count`) -> a vector, at `parallelism`; returns each key's newest
/// count in this run's output and how many records came out.
fn run_counts(
    mock: &Mock,
    parallelism: usize,
    dir: &Path,
) -> weir::Result<(std::collections::BTreeMap<u64, u64>, usize, JobSummary)> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let builder = JobBuilder::new("rescale").default_parallelism(parallelism);
    builder
        .source("kafka", source(mock, &["in"]).factory())
        .uid("kafka")
        .map(|n: u64| (n % 50, 1u64))
        .key_by(|p: &(u64, u64)| p.0)
        .reduce("count", |a: &(u64, u64), b: &(u64, u64)| (a.0, a.1 + b.1))
        .uid("count")
        .sink("collect", CollectSink::factory(out.clone()));
    let summary = builder.build()?.run(JobConfig::with_checkpoint_dir(dir))?;
    let got = out.lock().unwrap().clone();
    let mut newest = std::collections::BTreeMap::new();
    for (key, count) in &got {
        let c = newest.entry(*key).or_insert(0);
        *c = (*c).max(*count);
    }
    Ok((newest, got.len(), summary))
}

#[test]
fn keyed_state_and_offsets_follow_a_change_of_parallelism() {
    let _serial = serial();
    let mock = cluster(&[("in", 6)]);
    let dir = tempfile::tempdir().unwrap();
    // 2 -> 3 -> 1 -> 2: each run reads 3000 new numbers, 60 per key, and
    // counts on from the state the last run left at another parallelism.
    for (round, parallelism) in [2usize, 3, 1, 2].into_iter().enumerate() {
        let round = round as u64;
        produce(&mock, "in", &numbers(round * 3000..(round + 1) * 3000, 6));
        let (newest, records, summary) = run_counts(&mock, parallelism, dir.path()).unwrap();
        assert_eq!(
            records, 3000,
            "round {round} (p = {parallelism}) reads exactly the new records once"
        );
        assert_eq!(newest.len(), 50, "round {round}: every key");
        for (key, count) in &newest {
            assert_eq!(*count, 60 * (round + 1), "round {round} (p = {parallelism}): key {key}");
        }
        assert_eq!(summary.restored_from.is_some(), round > 0);
    }
}
