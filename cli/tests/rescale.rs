//! Rescaling under SIGKILL: the demo job (generator -> key_by -> running
//! count in RocksDB -> exactly-once file sink) is killed at random moments
//! and restarted each time with another parallelism (2 -> 3 -> 1 -> 4 -> 2 -> 3,
//! then 4 to the end),
//! from the same checkpoints: keyed state moves by key group, the
//! generator's splits and the sink's pending output move to the new
//! subtasks. The committed output must equal a failure-free run's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "support/s3.rs"]
mod s3;

use common::{
    committed_lines, compare, follow, kill_after, publish_summary, wait_for_checkpoints, wait_for_exit, KillRng,
    RunEnd, WEIR,
};
use s3::S3Server;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const RECORDS: u64 = 300_000;

/// Where a test keeps its checkpoints: a directory, or a prefix on the S3 test server.
#[derive(Clone, Copy)]
enum Store<'a> {
    Local,
    S3(&'a S3Server, &'a str),
}

fn demo(dir: &Path, parallelism: usize, store: Store<'_>) -> Command {
    let mut cmd = Command::new(WEIR);
    cmd.args(["run", "demo", "--checkpoint-interval-ms", "150", "--parallelism"])
        .arg(parallelism.to_string())
        .arg("--records")
        .arg(RECORDS.to_string())
        .arg("--checkpoint-dir");
    match store {
        Store::Local => cmd.arg(dir.join("checkpoints")),
        Store::S3(server, url) => cmd
            .arg(url)
            .envs(server.env())
            .env("WEIR_LOCAL_STATE_DIR", dir.join("local")),
    };
    cmd.arg("--output")
        .arg(dir.join("out"))
        .env("WEIR_LOG", "info")
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn restarts_with_another_parallelism_after_sigkill_lose_and_duplicate_nothing() {
    rescale_under_kills(Store::Local, "local");
}

#[test]
fn restarts_with_another_parallelism_from_an_s3_store_lose_and_duplicate_nothing() {
    let server = S3Server::shared();
    let url = S3Server::url(&format!("rescale-{}", std::process::id()));
    rescale_under_kills(Store::S3(server, &url), "s3");
}

fn rescale_under_kills(store: Store<'_>, store_name: &str) {
    let reference = tempfile::tempdir().unwrap();
    let status = demo(reference.path(), 2, Store::Local)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let expected = committed_lines(&reference.path().join("out"));
    assert_eq!(expected.len() as u64, RECORDS);

    let dir = tempfile::tempdir().unwrap();
    let mut rng = KillRng::from_clock();
    let seed = rng.seed;
    let schedule = [2usize, 3, 1, 4, 2, 3];
    let mut rescaled = 0;
    for (run, parallelism) in schedule.iter().enumerate() {
        let mut cmd = demo(dir.path(), *parallelism, store);
        cmd.args(["--rate", "30000"]);
        let mut child = cmd.spawn().unwrap();
        let (_, complete, log) = follow(&mut child);
        // A checkpoint of this run first (so the next run rescales from it),
        // then a kill at a random moment.
        wait_for_checkpoints(&complete, 1, "the run");
        let wait = Duration::from_millis(rng.below(600));
        match kill_after(&mut child, wait, || {}) {
            RunEnd::Killed { .. } => {}
            RunEnd::Exited(status) => {
                let log = log.join().unwrap();
                panic!("run {run} ended by itself ({status}); increase RECORDS\n{log}");
            }
        }
        let log = log.join().unwrap();
        rescaled += usize::from(log.contains("redistributed by key group"));
    }
    let mut child = demo(dir.path(), 4, store).spawn().unwrap();
    let (_, _, log) = follow(&mut child);
    let status = wait_for_exit(&mut child, Duration::from_secs(180), "the last run");
    let log = log.join().unwrap();
    assert!(status.success(), "the last run failed ({status}):\n{log}");
    rescaled += usize::from(log.contains("redistributed by key group"));
    let actual = committed_lines(&dir.path().join("out"));
    let (lost, duplicated) = compare(&expected, &actual);
    publish_summary(
        &format!("rescale_{store_name}"),
        &format!(
            "rescale: demo {}->4 kills={} lost={lost} duplicated={duplicated} store={store_name} (runs that rescaled keyed state: {rescaled}, seed={seed})",
            schedule.map(|p| p.to_string()).join("->"),
            schedule.len()
        ),
    );
    assert_eq!(
        (lost, duplicated),
        (0, 0),
        "committed output differs from the failure-free run"
    );
    assert!(
        rescaled >= 2,
        "restarts must have rescaled from checkpoints of another parallelism"
    );
}
