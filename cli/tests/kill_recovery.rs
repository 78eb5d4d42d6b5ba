//! Exactly-once under SIGKILL: the demo job (generator -> key_by -> running
//! count in RocksDB -> exactly-once file sink, P = 2, a checkpoint every
//! 150 ms) is killed at random moments, at least 20 times, at least 5 of them
//! while a checkpoint is in flight and some between "manifest written" and
//! "sinks committed", restarted each time from the same checkpoint directory,
//! and its committed output is compared with a failure-free run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{committed_lines, compare, follow, kill_after, publish_summary, wait_for_exit, KillRng, RunEnd, WEIR};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

const RECORDS: u64 = 600_000;

fn start(dir: &Path, rate: Option<u64>, failpoints: &str) -> Child {
    let mut cmd = Command::new(WEIR);
    cmd.args([
        "run",
        "demo",
        "--parallelism",
        "2",
        "--checkpoint-interval-ms",
        "150",
        "--records",
    ])
    .arg(RECORDS.to_string())
    .arg("--checkpoint-dir")
    .arg(dir.join("checkpoints"))
    .arg("--output")
    .arg(dir.join("out"))
    // Fan-out: a tee feeds a second exactly-once sink in the same task.
    .arg("--tee")
    .arg(dir.join("tee"))
    .env("WEIR_FAILPOINTS", failpoints)
    .env(
        "WEIR_CHECKPOINT_TIMEOUT_MS",
        if failpoints.contains("sleep(130)") {
            "150"
        } else {
            "600000"
        },
    )
    // Write-behind slices between checkpoints, so kills land in them too.
    .env("WEIR_STATE_WRITE_BEHIND_ENTRIES", "256")
    .env("WEIR_LOG", "info")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if let Some(r) = rate {
        cmd.args(["--rate", &r.to_string()]);
    }
    cmd.spawn().unwrap()
}

fn run_to_end(dir: &Path, failpoints: &str) {
    let mut child = start(dir, None, failpoints);
    let (_, _, log) = follow(&mut child);
    let status = wait_for_exit(&mut child, Duration::from_secs(180), "the run");
    let log = log.join().unwrap();
    assert!(status.success(), "run failed ({status}):\n{log}");
}

#[test]
fn sigkill_at_random_points_loses_and_duplicates_nothing() {
    let reference = tempfile::tempdir().unwrap();
    run_to_end(reference.path(), "");
    let expected = committed_lines(&reference.path().join("out"));
    assert_eq!(
        expected.len() as u64,
        RECORDS,
        "the failure-free run must commit every record once"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut rng = KillRng::from_clock();
    let seed = rng.seed;
    let (mut kills, mut mid_checkpoint, mut after_manifest, mut runs, mut aborted) = (0, 0, 0, 0, 0);
    while kills < 20 || mid_checkpoint < 5 || after_manifest < 2 {
        runs += 1;
        assert!(runs < 200, "could not get enough kills in 200 runs (kills={kills} mid={mid_checkpoint} after_manifest={after_manifest})");
        // Every third run may kill itself right after the manifest is written,
        // before LATEST and before any sink commits; the others stretch the
        // asynchronous snapshot so that kills often land mid-checkpoint.
        let failpoints = match runs % 3 {
            0 => "manifest-written=kill(60)",
            // Snapshots about as slow as the checkpoint timeout (set below):
            // some checkpoints abort, and a later one commits their output.
            1 => "snapshot-async=sleep(130)",
            _ => "snapshot-async=sleep(40)",
        };
        let mut child = start(dir.path(), Some(40_000), failpoints);
        let (triggered, complete, log) = follow(&mut child);
        let wait = Duration::from_millis(100 + rng.below(600));
        let mut in_flight = false;
        let end = kill_after(&mut child, wait, || {
            in_flight = triggered.load(Ordering::SeqCst) > complete.load(Ordering::SeqCst)
        });
        match end {
            RunEnd::Killed { by_failpoint: true } => {
                kills += 1;
                after_manifest += 1;
            }
            RunEnd::Exited(status) => {
                let log = log.join().unwrap();
                panic!("the job ended by itself ({status}) after {kills} kills; increase RECORDS\n{log}");
            }
            RunEnd::Killed { by_failpoint: false } => {
                kills += 1;
                if in_flight {
                    mid_checkpoint += 1;
                }
            }
        }
        aborted += log.join().map_or(0, |text| text.matches("aborted:").count());
    }
    run_to_end(dir.path(), "");
    let actual = committed_lines(&dir.path().join("out"));
    let (lost, duplicated) = compare(&expected, &actual);
    let teed = committed_lines(&dir.path().join("tee"));
    let (tee_lost, tee_duplicated) = compare(&expected, &teed);
    publish_summary(
        "kill_recovery",
        &format!("kills={kills} lost={lost} duplicated={duplicated}, tee branch lost={tee_lost} duplicated={tee_duplicated} (mid_checkpoint={mid_checkpoint} after_manifest={after_manifest} checkpoints aborted by timeout={aborted} runs={runs} seed={seed})"),
    );
    assert_eq!(
        (lost, duplicated),
        (0, 0),
        "committed output differs from the failure-free run"
    );
    assert_eq!(
        (tee_lost, tee_duplicated),
        (0, 0),
        "the tee's branch differs from the failure-free run"
    );
    assert_eq!(actual.len(), expected.len());
}
