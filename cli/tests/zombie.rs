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
use common::{committed_lines, compare, publish_summary, wait_for_exit, WEIR};
use kafka_data::{expected, input, output};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    let rc = unsafe { libc::kill(child.id() as i32, signal) };
    assert_eq!(rc, 0, "cannot send signal {signal} to {}", child.id());
}

/// Follows a child's log on a thread: the newest completed checkpoint, and
/// the whole log when the child ends.
fn follow(child: &mut Child) -> (Arc<AtomicU64>, std::thread::JoinHandle<String>) {
    let complete = Arc::new(AtomicU64::new(0));
    let seen = complete.clone();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(n) = line
                .split(" complete")
                .next()
                .filter(|_| line.contains(" complete"))
                .and_then(|h| h.rsplit(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
            {
                seen.fetch_max(n, Ordering::SeqCst);
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    (complete, reader)
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
    let mut a = demo(dir.path(), RECORDS, Some(100_000)).spawn().unwrap();
    let (complete, a_log) = follow(&mut a);
    let deadline = Instant::now() + Duration::from_secs(60);
    while complete.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "A completed no checkpoint in 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    // A zombie: paused right after a checkpoint completed, its sinks mid-epoch.
    signal(&a, libc::SIGSTOP);
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

#[test]
fn a_new_store_of_a_job_commits_its_pending_output_whatever_markers_an_earlier_store_left() {
    let broker = Broker::start();
    for topic in ["in", "out", "in2", "out2"] {
        broker.create_topic(topic, 2);
    }
    // The earlier incarnation: many checkpoints, so high commit markers.
    broker.produce("in", &input(0..60_000, 2));
    let first = tempfile::tempdir().unwrap();
    let run = kafka_count(
        &broker,
        first.path(),
        ("in", "out"),
        &["--bounded", "--checkpoint-interval-ms", "50"],
    )
    .output()
    .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

    // The same job name with a fresh checkpoint directory over a new topic,
    // killed between its (only, final) checkpoint and its commit: checkpoint 1
    // holds the whole output, and the earlier store's markers are all higher.
    broker.produce("in2", &input(0..20_000, 2));
    let second = tempfile::tempdir().unwrap();
    let killed = kafka_count(
        &broker,
        second.path(),
        ("in2", "out2"),
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
        &broker,
        second.path(),
        ("in2", "out2"),
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

    let out = output(&broker, "out2");
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
fn a_resumed_writer_fenced_off_by_a_newer_run_stops_and_never_fences_back() {
    let broker = Broker::start();
    for topic in ["in", "out"] {
        broker.create_topic(topic, 2);
    }
    broker.produce("in", &input(0..20_000, 2));
    // A: continuous, its transactional ids `weir-kc-<sink>-<subtask>`.
    let a_dir = tempfile::tempdir().unwrap();
    let mut a = kafka_count(
        &broker,
        a_dir.path(),
        ("in", "out"),
        &["--checkpoint-interval-ms", "100"],
    )
    .spawn()
    .unwrap();
    let (complete, a_log) = follow(&mut a);
    let deadline = Instant::now() + Duration::from_secs(60);
    while complete.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "A completed no checkpoint in 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(&a, libc::SIGSTOP);
    // B: the same job from another store takes the transactional ids over.
    let b_dir = tempfile::tempdir().unwrap();
    let b = kafka_count(
        &broker,
        b_dir.path(),
        ("in", "out"),
        &["--bounded", "--checkpoint-interval-ms", "100"],
    )
    .output()
    .unwrap();
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    broker.produce("in", &input(20_000..30_000, 2));
    signal(&a, libc::SIGCONT);
    let a_status = wait_for_exit(&mut a, Duration::from_secs(120), "A after it resumed");
    let a_log = a_log.join().unwrap();
    assert!(!a_status.success(), "A must stop once fenced:\n{a_log}");
    assert!(a_log.contains("fenced off"), "A says it was fenced:\n{a_log}");

    // B was not fenced back: the same store runs again and commits.
    broker.produce("in", &input(30_000..31_000, 2));
    let b_again = kafka_count(
        &broker,
        b_dir.path(),
        ("in", "out"),
        &["--bounded", "--checkpoint-interval-ms", "100"],
    )
    .output()
    .unwrap();
    assert!(b_again.status.success(), "{}", String::from_utf8_lossy(&b_again.stderr));
    let b_rows = output(&broker, "out").iter().filter(|l| l.index >= 30_000).count();
    publish_summary(
        "zombie_fenced",
        &format!(
            "zombie: paused Kafka writer resumed after a newer run took its transactional ids: stopped fenced ({a_status}), \
             newer run committed again ({b_rows} rows of its next input)"
        ),
    );
    assert_eq!(b_rows, 1_000);
}

#[test]
fn input_deleted_before_it_was_read_fails_the_job_naming_it_unless_skipping_was_chosen() {
    let broker = Broker::start();
    broker.create_topic("in", 1);
    broker.create_topic("out", 1);
    let dir = tempfile::tempdir().unwrap();
    broker.produce("in", &input(0..1_000, 1));
    let bounded = ["--bounded", "--checkpoint-interval-ms", "0"];
    let first = kafka_count(&broker, dir.path(), ("in", "out"), &bounded)
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    // While the job is down, retention deletes records it has not read.
    broker.produce("in", &input(1_000..2_000, 1));
    let low = broker.delete_records("in", 0, 1_500);
    assert_eq!(low, 1_500);
    let refused = kafka_count(&broker, dir.path(), ("in", "out"), &bounded)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "resuming past lost input must fail:\n{err}");
    assert!(
        err.contains("input lost")
            && err.contains("in/0")
            && err.contains("offset 1000")
            && err.contains("starts at 1500"),
        "the error names topic, partition, stored offset and log start:\n{err}"
    );
    // Skipping is an explicit, counted choice.
    let skipped = kafka_count(
        &broker,
        dir.path(),
        ("in", "out"),
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
    let rows = output(&broker, "out").len();
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
    let broker = Broker::start();
    for topic in ["in", "out"] {
        broker.create_topic(topic, 2);
    }
    broker.produce("in", &input(0..20_000, 2));
    let dir = tempfile::tempdir().unwrap();
    let mut job = kafka_count(&broker, dir.path(), ("in", "out"), &["--checkpoint-interval-ms", "100"])
        .spawn()
        .unwrap();
    let (complete, log) = follow(&mut job);
    let deadline = Instant::now() + Duration::from_secs(60);
    while complete.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "no checkpoint completed in 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
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
    .output()
    .unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let out = output(&broker, "out");
    let (lost, duplicated) = compare(&expected(20_000), &out);
    publish_summary(
        "zombie_cancel_frozen_broker",
        &format!(
            "zombie: broker frozen (SIGSTOP) mid-run, job cancelled in {took:.1?}, then run again: lost={lost} duplicated={duplicated}"
        ),
    );
    assert_eq!((lost, duplicated), (0, 0));
}
