//! Zombies: a run paused (SIGSTOP) while another starts on the same store,
//! a run fenced off by a newer one, and a store that is a new incarnation of
//! a job whose earlier incarnation left higher commit markers behind. Each
//! case compares the committed output with a failure-free run's and prints
//! one `zombie: ...` line for .ci/run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/broker.rs"]
mod broker;
mod common;
#[path = "support/kafka_data.rs"]
mod kafka_data;

use broker::Broker;
use common::{committed_lines, compare, follow, publish_summary, wait_for_checkpoints, wait_for_exit, WEIR};
use kafka_data::{expected, input, output};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    let rc = unsafe { libc::kill(child.id() as i32, signal) };
    assert_eq!(rc, 0, "cannot send signal {signal} to {}", child.id());
}

fn demo(dir: &Path, records: u64, rate: Option<u64>) -> Command {
    let mut cmd = Command::new(WEIR);
    cmd.args([
        "run",
        "demo",
        "--parallelism",
        "2",
        "--checkpoint-interval-ms",
        "100",
        "--records",
    ])
    .arg(records.to_string())
    .arg("--checkpoint-dir")
    .arg(dir.join("checkpoints"))
    .arg("--output")
    .arg(dir.join("out"))
    .env("WEIR_LOG", "info")
    .env("RUST_BACKTRACE", "0")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if let Some(r) = rate {
        cmd.args(["--rate", &r.to_string()]);
    }
    cmd
}

#[test]
fn a_paused_run_keeps_its_store_and_a_second_start_is_refused_until_it_ends() {
    const RECORDS: u64 = 300_000;
    let reference = tempfile::tempdir().unwrap();
    let status = demo(reference.path(), RECORDS, None).status().unwrap();
    assert!(status.success());
    let expected_lines = committed_lines(&reference.path().join("out"));
    assert_eq!(expected_lines.len() as u64, RECORDS);

    let dir = tempfile::tempdir().unwrap();
    // Paced to take ~15 s, so A is far from its end when it is paused even on
    // a loaded machine (a run that already ended would hold no lock).
    let mut a = demo(dir.path(), RECORDS, Some(20_000)).spawn().unwrap();
    let (_, complete, a_log) = follow(&mut a);
    wait_for_checkpoints(&complete, 2, "A");
    // A zombie: paused right after a checkpoint completed, its sinks mid-epoch.
    signal(&a, libc::SIGSTOP);
    assert!(a.try_wait().unwrap().is_none(), "A ended before it could be paused");
    let started = Instant::now();
    let b = demo(dir.path(), RECORDS, None).output().unwrap();
    let refused_in = started.elapsed();
    let b_err = String::from_utf8_lossy(&b.stderr);
    assert!(!b.status.success(), "B must not run while A holds the store:\n{b_err}");
    assert!(
        b_err.contains("is in use by") && b_err.contains(&format!("pid {}", a.id())),
        "B's refusal names the holder:\n{b_err}"
    );
    assert!(
        refused_in < Duration::from_secs(10),
        "refused at once, not after {refused_in:?}"
    );
    signal(&a, libc::SIGCONT);
    let a_status = wait_for_exit(&mut a, Duration::from_secs(120), "A after it resumed");
    let a_log = a_log.join().unwrap();
    assert!(a_status.success(), "A goes on after the pause:\n{a_log}");
    // Once A ended, B takes the store: it restores A's final checkpoint, nothing is left.
    let b = demo(dir.path(), RECORDS, None).output().unwrap();
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));

    let actual = committed_lines(&dir.path().join("out"));
    let (lost, duplicated) = compare(&expected_lines, &actual);
    publish_summary(
        "zombie_paused_store",
        &format!(
            "zombie: run paused after a checkpoint, second start on its store refused in {refused_in:.1?} naming the holder, \
             paused run resumed: lost={lost} duplicated={duplicated}"
        ),
    );
    assert_eq!((lost, duplicated), (0, 0));
}

fn kafka_count(broker: &Broker, dir: &Path, topics: (&str, &str), extra: &[&str]) -> Command {
    let mut cmd = Command::new(WEIR);
    cmd.args(["run", "kafka-count", "--parallelism", "2", "--job", "kc"])
        .args(["--input", topics.0, "--output", topics.1])
        .args(["--brokers", &broker.bootstrap])
        .arg("--checkpoint-dir")
        .arg(dir)
        .args(extra)
        .env("WEIR_LOG", "info")
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// A bounded `kafka-count` run `topics.0` -> `topics.1` on the store in `dir`, to its end.
fn bounded_kafka_count(broker: &Broker, dir: &Path, topics: (&str, &str)) -> std::process::Output {
    kafka_count(broker, dir, topics, &["--bounded", "--checkpoint-interval-ms", "100"])
        .output()
        .unwrap()
}

#[test]
fn a_new_store_of_a_job_commits_its_pending_output_whatever_markers_an_earlier_store_left() {
    let broker = Broker::shared();
    for topic in [
        "incarnation-in",
        "incarnation-out",
        "incarnation-in2",
        "incarnation-out2",
    ] {
        broker.create_topic(topic, 2);
    }
    // The earlier incarnation: many checkpoints, so high commit markers.
    broker.produce("incarnation-in", &input(0..60_000, 2));
    let first = tempfile::tempdir().unwrap();
    let run = kafka_count(
        broker,
        first.path(),
        ("incarnation-in", "incarnation-out"),
        &["--bounded", "--checkpoint-interval-ms", "50"],
    )
    .output()
    .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

    // The same job name with a fresh checkpoint directory over a new topic,
    // killed between its (only, final) checkpoint and its commit: checkpoint 1
    // holds the whole output, and the earlier store's markers are all higher.
    broker.produce("incarnation-in2", &input(0..20_000, 2));
    let second = tempfile::tempdir().unwrap();
    let killed = kafka_count(
        broker,
        second.path(),
        ("incarnation-in2", "incarnation-out2"),
        &["--bounded", "--checkpoint-interval-ms", "0"],
    )
    .env("WEIR_FAILPOINTS", "kafka-before-commit=kill")
    .output()
    .unwrap();
    assert_eq!(
        killed.status.signal(),
        Some(9),
        "the run dies at its commit:\n{}",
        String::from_utf8_lossy(&killed.stderr)
    );
    let again = kafka_count(
        broker,
        second.path(),
        ("incarnation-in2", "incarnation-out2"),
        &["--bounded", "--checkpoint-interval-ms", "0"],
    )
    .output()
    .unwrap();
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{log}");
    assert!(
        log.contains("another incarnation"),
        "the earlier store's markers are found and said to be ignored:\n{log}"
    );

    let out = output(broker, "incarnation-out2");
    let (lost, duplicated) = compare(&expected(20_000), &out);
    publish_summary(
        "zombie_incarnation",
        &format!(
            "zombie: new checkpoint store of a job whose earlier store left higher markers, killed before its commit: \
             lost={lost} duplicated={duplicated} (rows={})",
            out.len()
        ),
    );
    assert_eq!((lost, duplicated), (0, 0));
}

#[test]
fn an_open_transaction_of_another_store_of_the_job_does_not_hide_a_commit_marker() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    const JOB: &str = "hidden-marker";
    let broker = Broker::shared();
    for topic in ["hidden-in", "hidden-out"] {
        broker.create_topic(topic, 2);
    }
    broker.produce("hidden-in", &input(0..20_000, 2));
    let markers = format!("weir-markers.{JOB}.kafka-out");
    broker.create_topic(&markers, 1);
    let run = |dir: &Path, failpoints: &str| {
        Command::new(WEIR)
            .args(["run", "kafka-count", "--job", JOB, "--parallelism", "1", "--bounded"])
            .args(["--checkpoint-interval-ms", "0"])
            .args([
                "--input",
                "hidden-in",
                "--output",
                "hidden-out",
                "--brokers",
                &broker.bootstrap,
            ])
            .arg("--checkpoint-dir")
            .arg(dir)
            .env("WEIR_FAILPOINTS", failpoints)
            .env("WEIR_LOG", "info")
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    };
    // Another store of the same job (a second deployment on the cluster)
    // opens a transaction on the marker partition and keeps it open.
    let other: BaseProducer = broker
        .client_config()
        .set("transactional.id", "weir-test-another-store-of-the-job")
        .create()
        .unwrap();
    other.init_transactions(Duration::from_secs(30)).unwrap();
    other.begin_transaction().unwrap();
    other
        .send(
            BaseRecord::to(&markers)
                .partition(0)
                .key(&format!("{JOB}/kafka-out/0@another"))
                .payload("7"),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    other.flush(Duration::from_secs(30)).unwrap();

    // This store commits its output and marker (above the open transaction)
    // and dies before its checkpoint says so: the epoch stays pending.
    let dir = tempfile::tempdir().unwrap();
    let killed = run(dir.path(), "kafka-after-commit=kill");
    assert_eq!(
        killed.status.signal(),
        Some(9),
        "the run dies after its commit:\n{}",
        String::from_utf8_lossy(&killed.stderr)
    );
    // The other store's transaction ends a while after the restart begins.
    let ender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        other.commit_transaction(Duration::from_secs(30)).unwrap();
    });
    let started = Instant::now();
    let again = run(dir.path(), "");
    let waited = started.elapsed();
    ender.join().unwrap();
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{log}");
    assert!(
        !log.contains("again ("),
        "the restart found the marker and did not commit the output a second time:\n{log}"
    );
    let out = output(broker, "hidden-out");
    let (lost, duplicated) = compare(&expected(20_000), &out);
    publish_summary(
        "zombie_hidden_marker",
        &format!(
            "zombie: another store's open transaction on the marker partition, restart after a commit: \
             lost={lost} duplicated={duplicated} (the marker read waited for it: restart took {:.1} s)",
            waited.as_secs_f64()
        ),
    );
    assert_eq!((lost, duplicated), (0, 0));
}

#[test]
fn a_writer_fenced_off_by_a_newer_one_stops_with_fenced_and_never_fences_back() {
    use weir::connectors::kafka::KafkaSink;
    use weir::connectors::{ConnectorContext, Sink};
    use weir::operators::CheckpointId;
    let broker = Broker::shared();
    broker.create_topic("fenced-out", 1);
    // Two subtasks of one store (the same transactional id): A is the zombie
    // a lock failure or a paused process would leave, B its replacement.
    let ctx = ConnectorContext {
        job: "fence".into(),
        incarnation: "00aa00aa00aa00aa".into(),
        ..ConnectorContext::standalone("fenced-out", 0, 1)
    };
    let factory = KafkaSink::new(&broker.bootstrap, "fenced-out", kafka_data::line).factory();
    let mut a = factory(ctx.clone()).unwrap();
    a.open().unwrap();
    a.write(&mut vec!["from A".to_string()]).unwrap();
    a.snapshot(CheckpointId(1)).unwrap();
    let mut b = factory(ctx.clone()).unwrap();
    b.open().unwrap(); // init_transactions: A is fenced
    let a_end = a.commit(CheckpointId(1)).and_then(|()| a.finish());
    let err = a_end.expect_err("the fenced writer must fail");
    assert!(
        matches!(err, weir::WeirError::Fenced { .. }) && !err.is_retryable(),
        "a fenced writer stops with Fenced, which no supervisor retries: {err}"
    );
    assert!(err.to_string().contains("taken over by another writer"), "{err}");
    // B was not fenced back: it commits.
    b.write(&mut vec!["from B".to_string()]).unwrap();
    b.snapshot(CheckpointId(1)).unwrap();
    b.commit(CheckpointId(1)).unwrap();
    b.finish().unwrap();
    let rows: Vec<String> = broker
        .consume_all("fenced-out", true)
        .into_iter()
        .map(|c| String::from_utf8(c.3).unwrap())
        .collect();
    publish_summary(
        "zombie_fenced",
        &format!("zombie: a Kafka writer fenced by a newer one of its store stops with Fenced (not retryable); committed rows {rows:?}"),
    );
    assert_eq!(rows, ["from B"], "only the newer writer's output is committed");
}

#[test]
fn input_deleted_before_it_was_read_fails_the_job_naming_it_unless_skipping_was_chosen() {
    let broker = Broker::shared();
    broker.create_topic("lost-in", 1);
    broker.create_topic("lost-out", 1);
    let dir = tempfile::tempdir().unwrap();
    broker.produce("lost-in", &input(0..1_000, 1));
    let bounded = ["--bounded", "--checkpoint-interval-ms", "0"];
    let first = kafka_count(broker, dir.path(), ("lost-in", "lost-out"), &bounded)
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    // While the job is down, retention deletes records it has not read.
    broker.produce("lost-in", &input(1_000..2_000, 1));
    let low = broker.delete_records("lost-in", 0, 1_500);
    assert_eq!(low, 1_500);
    let refused = kafka_count(broker, dir.path(), ("lost-in", "lost-out"), &bounded)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "resuming past lost input must fail:\n{err}");
    assert!(
        err.contains("input lost")
            && err.contains("lost-in/0")
            && err.contains("offset 1000")
            && err.contains("starts at 1500"),
        "the error names topic, partition, stored offset and log start:\n{err}"
    );
    // Skipping is an explicit, counted choice.
    let skipped = kafka_count(
        broker,
        dir.path(),
        ("lost-in", "lost-out"),
        &[&bounded[..], &["--skip-lost-input", "--json"]].concat(),
    )
    .stdout(Stdio::piped())
    .output()
    .unwrap();
    assert!(skipped.status.success(), "{}", String::from_utf8_lossy(&skipped.stderr));
    let summary = String::from_utf8_lossy(&skipped.stdout);
    assert!(
        summary.contains("\"records\":500"),
        "only what is left is read: {summary}"
    );
    let rows = output(broker, "lost-out").len();
    publish_summary(
        "zombie_lost_input",
        &format!(
            "zombie: stored offset 1000 below log start 1500: refused naming it; with --skip-lost-input 500 read, 500 counted lost (rows={rows})"
        ),
    );
    assert_eq!(rows, 1_500);
}

#[test]
fn a_job_whose_broker_stops_answering_is_cancelled_in_bounded_time() {
    // Its own broker: this test freezes it.
    let broker = Broker::start();
    for topic in ["in", "out"] {
        broker.create_topic(topic, 2);
    }
    broker.produce("in", &input(0..20_000, 2));
    let dir = tempfile::tempdir().unwrap();
    let mut job = kafka_count(&broker, dir.path(), ("in", "out"), &["--checkpoint-interval-ms", "100"])
        .spawn()
        .unwrap();
    let (_, complete, log) = follow(&mut job);
    wait_for_checkpoints(&complete, 2, "the job");
    // The broker freezes: commits, flushes and fetches hang.
    let frozen = broker.pid();
    // SAFETY: kill(2) on the broker this test started.
    assert_eq!(unsafe { libc::kill(frozen as i32, libc::SIGSTOP) }, 0);
    std::thread::sleep(Duration::from_millis(500));
    signal(&job, libc::SIGINT); // stop: a final checkpoint that cannot commit
    std::thread::sleep(Duration::from_secs(1));
    signal(&job, libc::SIGINT); // cancel
    let cancelled = Instant::now();
    let status = wait_for_exit(&mut job, Duration::from_secs(60), "the cancelled job");
    let took = cancelled.elapsed();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(frozen as i32, libc::SIGCONT) }, 0);
    let log = log.join().unwrap();
    assert!(!status.success(), "a cancelled job does not report success:\n{log}");
    assert!(
        took < Duration::from_secs(25),
        "cancel took {took:?} (bounded by a 10 s grace):\n{log}"
    );

    // Exactly-once holds across the messy end: a bounded run finishes the input.
    let again = kafka_count(
        &broker,
        dir.path(),
        ("in", "out"),
        &["--bounded", "--checkpoint-interval-ms", "100"],
    )
    .env("WEIR_LOG", "info,weir::connectors::kafka::sink=debug")
    .output()
    .unwrap();
    let again_log = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{again_log}");
    let out = output(&broker, "out");
    let (lost, duplicated) = compare(&expected(20_000), &out);
    if (lost, duplicated) != (0, 0) {
        let mut ids: Vec<u64> = out.iter().map(|l| l.index).collect();
        ids.sort_unstable();
        let missing: Vec<u64> = (0..20_000u64)
            .filter(|i| ids.binary_search(i).is_err())
            .take(20)
            .collect();
        eprintln!(
            "lost={lost} duplicated={duplicated} rows={} first missing ids {missing:?}\nfirst run:\n{log}\nsecond run:\n{again_log}",
            out.len()
        );
    }
    publish_summary(
        "zombie_cancel_frozen_broker",
        &format!(
            "zombie: broker frozen (SIGSTOP) mid-run, job cancelled in {took:.1?}, then run again: lost={lost} duplicated={duplicated}"
        ),
    );
    assert_eq!((lost, duplicated), (0, 0));
}

#[test]
fn a_paused_kafka_run_keeps_its_store_and_exactly_once_holds_when_it_resumes() {
    let broker = Broker::shared();
    for topic in ["paused-in", "paused-out"] {
        broker.create_topic(topic, 2);
    }
    broker.produce("paused-in", &input(0..20_000, 2));
    let dir = tempfile::tempdir().unwrap();
    let mut a = kafka_count(
        broker,
        dir.path(),
        ("paused-in", "paused-out"),
        &["--checkpoint-interval-ms", "100"],
    )
    .spawn()
    .unwrap();
    let (_, complete, a_log) = follow(&mut a);
    wait_for_checkpoints(&complete, 2, "A");
    signal(&a, libc::SIGSTOP);
    // B on the same store: refused while A holds it, paused or not.
    let b = bounded_kafka_count(broker, dir.path(), ("paused-in", "paused-out"));
    let b_err = String::from_utf8_lossy(&b.stderr);
    assert!(!b.status.success() && b_err.contains("is in use by"), "{b_err}");
    signal(&a, libc::SIGCONT);
    broker.produce("paused-in", &input(20_000..25_000, 2));
    std::thread::sleep(Duration::from_secs(2));
    signal(&a, libc::SIGTERM); // stop with a final checkpoint
    let a_status = wait_for_exit(&mut a, Duration::from_secs(60), "A after its stop");
    let a_log = a_log.join().unwrap();
    assert!(a_status.success(), "{a_log}");
    // Then B finishes what is left.
    let b = bounded_kafka_count(broker, dir.path(), ("paused-in", "paused-out"));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let out = output(broker, "paused-out");
    let (lost, duplicated) = compare(&expected(25_000), &out);
    publish_summary(
        "zombie_paused_kafka",
        &format!(
            "zombie: Kafka -> Kafka run paused after a checkpoint, second start on its store refused, first resumed and stopped, second finished: lost={lost} duplicated={duplicated}"
        ),
    );
    assert_eq!((lost, duplicated), (0, 0));
}
