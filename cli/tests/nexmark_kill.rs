//! Exactly-once for a windowed Nexmark query under SIGKILL: `weir nexmark
//! --query q5` (sliding-window counts per auction, then the hottest auctions
//! per window: two keyed stages with timers) reads a Kafka topic that grows
//! by 2 s of events before each run, and is killed at random moments at
//! least 12 times, at least twice between "checkpoint complete" and
//! "transaction committed" (every third run dies at its first commit). A final `--bounded
//! --drain` run finishes the input. The read_committed rows must equal the
//! brute-force reference: nothing lost, nothing doubled.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/broker.rs"]
mod broker;
mod common;
#[path = "support/nexmark_ref.rs"]
mod nexmark_ref;

use broker::Broker;
use common::{kill_after, wait_for_exit, KillRng, RunEnd};
use nexmark_ref::{diff, expected, parse_rows, perturbed};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use weir_workloads::nexmark::queries::Query;

const EVENTS: u64 = 40_000;
const PARTITIONS: i32 = 3;

fn start(broker: &Broker, dir: &Path, last: bool, failpoints: &str) -> Child {
    let mut cmd = Command::new(common::WEIR);
    cmd.args(["nexmark", "--query", "q5", "--parallelism", "2"])
        .args(["--checkpoint-interval-ms", "150", "--brokers", &broker.bootstrap])
        .args(["--source-topic", "events", "--sink-topic", "rows"])
        .arg("--checkpoint-dir")
        .arg(dir)
        .env("WEIR_FAILPOINTS", failpoints)
        .env("WEIR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if last {
        cmd.args(["--bounded", "--drain"]);
    }
    cmd.spawn().unwrap()
}

fn stderr_of(child: &mut Child) -> String {
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    log
}

#[test]
fn sigkill_during_a_windowed_query_loses_and_duplicates_no_row() {
    let broker = Broker::shared();
    broker.create_topic("events", PARTITIONS);
    broker.create_topic("rows", 2);
    let events = perturbed(EVENTS);
    let records: Vec<broker::ToProduce> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (None, e.to_json().into_bytes(), i as i32 % PARTITIONS))
        .collect();
    let dir = tempfile::tempdir().unwrap();

    // The input grows while the job is being killed: each run starts with
    // 2 s of new events, so every run has windows to fire and rows to commit.
    let mut batches = records.chunks(2_000);
    let mut rng = KillRng::from_clock();
    let seed = rng.seed;
    let (mut kills, mut before_commit, mut runs) = (0, 0, 0);
    while kills < 12 || before_commit < 2 {
        runs += 1;
        assert!(
            runs < 100,
            "not enough kills in 100 runs (kills={kills} before_commit={before_commit}): the runs armed with kafka-before-commit=kill never committed"
        );
        if let Some(batch) = batches.next() {
            broker.produce("events", batch);
        }
        let failpoints = if runs % 3 == 0 {
            "kafka-before-commit=kill"
        } else {
            "snapshot-async=sleep(30)"
        };
        let mut child = start(broker, dir.path(), false, failpoints);
        // A run armed to die at its first commit gets as long as it needs to
        // reach it (a loaded CI machine may take seconds to start and fetch);
        // the others are killed at a random moment.
        let wait = if runs % 3 == 0 {
            Duration::from_secs(30)
        } else {
            Duration::from_millis(400 + rng.below(1000))
        };
        match kill_after(&mut child, wait, || {}) {
            RunEnd::Killed { by_failpoint: true } => {
                kills += 1;
                before_commit += 1;
            }
            RunEnd::Exited(status) => panic!(
                "the continuous job ended by itself ({status}):\n{}",
                stderr_of(&mut child)
            ),
            RunEnd::Killed { by_failpoint: false } => {
                kills += 1;
            }
        }
    }
    for batch in batches {
        broker.produce("events", batch);
    }

    let mut last = start(broker, dir.path(), true, "");
    let status = wait_for_exit(&mut last, Duration::from_secs(180), "the final bounded run");
    assert!(status.success(), "final run failed: {status}\n{}", stderr_of(&mut last));

    let got = parse_rows(Query::Q5, broker.consume_all("rows", true).into_iter().map(|c| c.3));
    let want = expected(Query::Q5, &events);
    let (lost, duplicated) = diff(&want, &got);
    common::publish_summary(
        "nexmark_kill",
        &format!(
            "nexmark q5 over kafka: broker={} kills={kills} lost={lost} duplicated={duplicated} (between checkpoint and commit={before_commit} runs={runs} rows={} seed={seed})",
            broker::broker_name(),
            got.len()
        ),
    );
    assert_eq!((lost, duplicated), (0, 0));
}
