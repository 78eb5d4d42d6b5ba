//! Checkpoints on an object store (moto, an S3-compatible server on
//! 127.0.0.1): the demo job (generator -> key_by -> running count in RocksDB
//! -> exactly-once file sink) with `--checkpoint-dir s3://...`, killed during
//! uploads, between the last state file and the manifest, after the
//! manifest and during restores; two writers on one store; the store cut off
//! for seconds; the checkpoint tools on an `s3://` store. Each proof
//! compares the committed output with a failure-free run's and prints one
//! summary line for .ci/run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/azurite.rs"]
mod azurite;
mod common;
#[path = "support/s3.rs"]
mod s3;

use common::{
    committed_lines, compare, follow, kill_after, publish_summary, wait_for_checkpoints, wait_for_exit, KillRng,
    RunEnd, WEIR,
};
use s3::{CutProxy, S3Server};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A test's own prefix in the bucket.
fn prefix(test: &str) -> String {
    format!(
        "{test}-{}-{}",
        std::process::id(),
        common::KillRng::from_clock().seed % 1_000_000
    )
}

fn demo(checkpoints: &str, local: &Path, out: &Path, records: u64, endpoint: &str) -> Command {
    demo_with(checkpoints, local, out, records, S3Server::env_for(endpoint))
}

/// [`demo`] on any store, with the environment that reaches it.
fn demo_with(checkpoints: &str, local: &Path, out: &Path, records: u64, env: Vec<(&str, String)>) -> Command {
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
    .arg(records.to_string())
    .arg("--checkpoint-dir")
    .arg(checkpoints)
    .arg("--output")
    .arg(out)
    // Each run's working RocksDB of its own (the default is shared per job under $TMPDIR).
    .env("WEIR_LOCAL_STATE_DIR", local)
    .env("WEIR_LOG", "info")
    .env("RUST_BACKTRACE", "0")
    .envs(env)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    cmd
}

fn reference(records: u64) -> Vec<common::Line> {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(WEIR)
        .args(["run", "demo", "--parallelism", "2", "--records"])
        .arg(records.to_string())
        .arg("--checkpoint-dir")
        .arg(dir.path().join("checkpoints"))
        .arg("--output")
        .arg(dir.path().join("out"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let lines = committed_lines(&dir.path().join("out"));
    assert_eq!(lines.len() as u64, records);
    lines
}

/// Runs `weir args...` to success with `env`; its stdout and stderr, in
/// which no test secret appears.
fn tool(args: &[&str], env: Vec<(&str, String)>) -> String {
    let out = Command::new(WEIR).args(args).envs(env).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "weir {args:?} failed:\n{text}");
    assert!(!text.contains("weir-test-secret"), "a secret was printed:\n{text}");
    text
}

fn run_to_end(mut cmd: Command) -> String {
    let mut child = cmd.spawn().unwrap();
    let (_, _, log) = follow(&mut child);
    let status = wait_for_exit(&mut child, Duration::from_secs(300), "the run");
    let log = log.join().unwrap();
    assert!(status.success(), "run failed ({status}):\n{log}");
    log
}

#[test]
fn sigkill_during_uploads_commits_and_restores_loses_and_duplicates_nothing() {
    const RECORDS: u64 = 1_000_000;
    let server = S3Server::shared();
    let expected = reference(RECORDS);
    let url = S3Server::url(&prefix("kill"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut rng = KillRng::from_clock();
    let seed = rng.seed;
    let (mut kills, mut at) = (0, std::collections::BTreeMap::<&str, u32>::new());
    let mut runs = 0;
    let points = ["upload", "before-manifest", "after-manifest", "restore"];
    while kills < 12 || points.iter().any(|p| !at.contains_key(p)) {
        runs += 1;
        assert!(
            runs < 100,
            "could not get 12 kills, each dangerous point once, in 100 runs: {at:?}"
        );
        // The dangerous points in turn: mid-upload, all files stored but no
        // manifest yet, right after the manifest, mid-restore, and anywhere.
        let (point, failpoints) = match runs % 5 {
            0 => ("upload", "store-put-file=kill(10)"),
            1 => ("before-manifest", "before-manifest=kill(40)"),
            2 => ("after-manifest", "manifest-written=kill(40)"),
            3 => ("restore", "restore-fetch=kill(30)"),
            _ => ("random", "snapshot-async=sleep(40)"),
        };
        let local = dir.path().join(format!("local-{runs}"));
        let mut cmd = demo(&url, &local, &out, RECORDS, &server.endpoint);
        cmd.env("WEIR_FAILPOINTS", failpoints).args(["--rate", "40000"]);
        let mut child = cmd.spawn().unwrap();
        let (_, _, log) = follow(&mut child);
        // A run armed at a dangerous point gets as long as it needs to reach
        // it (a loaded machine may take a second to start and restore).
        let wait = if point == "random" {
            Duration::from_millis(300 + rng.below(900))
        } else {
            Duration::from_secs(20)
        };
        match kill_after(&mut child, wait, || {}) {
            RunEnd::Killed { by_failpoint } => {
                kills += 1;
                *at.entry(if by_failpoint { point } else { "random" }).or_default() += 1;
            }
            RunEnd::Exited(status) => {
                let log = log.join().unwrap();
                panic!("the job ended by itself ({status}) after {kills} kills; increase RECORDS\n{log}");
            }
        }
        let _ = log.join();
    }
    // A last kill after checkpoints, then a restart on the same local disk:
    // the restore takes the SSTs it still has there and downloads the rest.
    let local = dir.path().join("local-last");
    let mut cmd = demo(&url, &local, &out, RECORDS, &server.endpoint);
    cmd.args(["--rate", "40000"]);
    let mut child = cmd.spawn().unwrap();
    let (_, complete, log) = follow(&mut child);
    let first = complete.load(Ordering::SeqCst);
    wait_for_checkpoints(&complete, first.max(1) + 2, "the run before the last kill");
    child.kill().unwrap();
    let _ = child.wait();
    let _ = log.join();
    kills += 1;
    let log = run_to_end(demo(&url, &local, &out, RECORDS, &server.endpoint));
    let restored = log
        .lines()
        .find(|l| l.contains("state restored in"))
        .unwrap_or_else(|| panic!("the last run says what it restored:\n{log}"))
        .to_string();
    let reused: u64 = restored
        .split(", ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the reuse count: {restored}"));
    let actual = committed_lines(&out);
    let (lost, duplicated) = compare(&expected, &actual);
    publish_summary(
        "object_store_kill",
        &format!("s3 kill recovery: store=s3 (moto) kills={kills} lost={lost} duplicated={duplicated} (killed at {at:?}, runs={runs} seed={seed}; last restore: {reused} state files reused from local disk)"),
    );
    assert!(
        reused > 0,
        "a restart on the same disk must reuse local SSTs: {restored}"
    );
    assert_eq!(
        (lost, duplicated),
        (0, 0),
        "committed output differs from the failure-free run"
    );
}

#[test]
fn a_second_writer_on_an_s3_store_fences_the_first_and_the_output_stays_exact() {
    const RECORDS: u64 = 200_000;
    let server = S3Server::shared();
    let expected = reference(RECORDS);
    let url = S3Server::url(&prefix("fence"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Both runs write the same output (a job moved to another machine
    // would): the second takes over from the first's newest checkpoint.
    let mut first = demo(&url, &dir.path().join("local-a"), &out, RECORDS, &server.endpoint);
    first.args(["--rate", "20000"]);
    let mut first = first.spawn().unwrap();
    let (_, complete, first_log) = follow(&mut first);
    wait_for_checkpoints(&complete, 3, "the first writer");
    let mut second = demo(&url, &dir.path().join("local-b"), &out, RECORDS, &server.endpoint);
    second.args(["--rate", "20000"]);
    let mut second: Child = second.spawn().unwrap();
    let (_, _, second_log) = follow(&mut second);
    let status = wait_for_exit(&mut first, Duration::from_secs(60), "the fenced first writer");
    let first_log = first_log.join().unwrap();
    assert!(!status.success(), "the first writer must stop:\n{first_log}");
    assert!(
        first_log.contains("was taken over by another writer") && first_log.contains("now held by job `demo`"),
        "the first writer must say it was fenced and by whom:\n{first_log}"
    );
    let status = wait_for_exit(&mut second, Duration::from_secs(120), "the second writer");
    let second_log = second_log.join().unwrap();
    assert!(status.success(), "the second writer runs to the end:\n{second_log}");
    let actual = committed_lines(&out);
    let (lost, duplicated) = compare(&expected, &actual);
    publish_summary(
        "object_store_fence",
        &format!("s3 two writers: the first was fenced with a clear error, the second took over: lost={lost} duplicated={duplicated}"),
    );
    assert_eq!(
        (lost, duplicated),
        (0, 0),
        "committed output differs from the failure-free run"
    );
}

#[test]
fn a_store_cut_off_for_seconds_loses_nothing() {
    const RECORDS: u64 = 300_000;
    let server = S3Server::shared();
    let expected = reference(RECORDS);
    let proxy = CutProxy::to(server);
    let url = S3Server::url(&prefix("cut"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut cmd = demo(&url, &dir.path().join("local-1"), &out, RECORDS, &proxy.endpoint);
    // A checkpoint stuck behind the cut times out and a later one commits.
    cmd.args(["--rate", "40000"]).env("WEIR_CHECKPOINT_TIMEOUT_MS", "2000");
    let mut child = cmd.spawn().unwrap();
    let (_, complete, log) = follow(&mut child);
    wait_for_checkpoints(&complete, 3, "the job before the cut");
    proxy.cut();
    std::thread::sleep(Duration::from_secs(4));
    proxy.restore();
    let status = wait_for_exit(&mut child, Duration::from_secs(300), "the run through the cut");
    let log = log.join().unwrap();
    let aborted = log.matches("aborted:").count();
    let survived = status.success();
    if !survived {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!("the job stopped at the cut ({status}); its log ends:");
        for l in tail.iter().rev() {
            eprintln!("  {l}");
        }
        // The store did not answer in time: the job stopped; its restart
        // decides from what the store holds.
        run_to_end(demo(&url, &dir.path().join("local-2"), &out, RECORDS, &proxy.endpoint));
    }
    let actual = committed_lines(&out);
    let (lost, duplicated) = compare(&expected, &actual);
    publish_summary(
        "object_store_cut",
        &format!("s3 cut off for 4 s: lost={lost} duplicated={duplicated} (job survived the cut: {survived}, checkpoints aborted: {aborted})"),
    );
    assert_eq!(
        (lost, duplicated),
        (0, 0),
        "committed output differs from the failure-free run\n{log}"
    );
}

#[test]
fn an_upload_rate_bound_paces_every_checkpoint_and_loses_nothing() {
    const RECORDS: u64 = 600_000;
    const RATE: f64 = 1_000_000.0;
    let server = S3Server::shared();
    let expected = reference(RECORDS);
    let url = S3Server::url(&prefix("paced"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("job.toml");
    let out = dir.path().join("out");
    let run = |bound: &str| {
        std::fs::write(
            &config,
            format!("[checkpoint]\nupload_bytes_per_s = \"{bound}\"\nupload_concurrency = \"2\"\n"),
        )
        .unwrap();
        let mut cmd = demo(&url, &dir.path().join("local"), &out, RECORDS, &server.endpoint);
        cmd.arg("--config").arg(&config).arg("--json").stdout(Stdio::piped());
        cmd.output().unwrap()
    };

    // A bound that is not a rate is refused, naming its key.
    let refused = run("lots");
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && text.contains("checkpoint.upload_bytes_per_s"),
        "{text}"
    );

    let done = run("1MB");
    let log = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "the paced run failed:\n{log}");
    let summary: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    let uploads = summary["checkpoint_uploads"].as_array().unwrap();
    let sum = |field: &str| uploads.iter().map(|u| u[field].as_f64().unwrap()).sum::<f64>();
    let (bytes, seconds) = (sum("bytes_uploaded"), sum("upload_seconds"));
    assert!(
        bytes > 2.0 * RATE,
        "the state is too small to show a bound: {bytes} bytes"
    );
    // Each checkpoint's first file may go at once; every later byte waits
    // its turn at 1 MB/s (summed over the snapshot threads, time only grows).
    let first_files: f64 = uploads.len() as f64 * 256.0 * 1024.0;
    assert!(
        seconds >= (bytes - first_files) / RATE * 0.9,
        "{bytes} bytes went up in {seconds} s: faster than the bound"
    );
    let (lost, duplicated) = compare(&expected, &committed_lines(&out));
    publish_summary(
        "object_store_upload_bound",
        &format!(
            "s3 upload bound 1 MB/s: {} checkpoints put {:.1} MB in {seconds:.1} s of uploads ({:.2} MB/s); \
             a bad bound refused naming checkpoint.upload_bytes_per_s; lost={lost} duplicated={duplicated}",
            uploads.len(),
            bytes / 1e6,
            bytes / seconds / 1e6
        ),
    );
    assert_eq!((lost, duplicated), (0, 0), "{log}");
}

#[test]
fn the_checkpoint_tools_read_an_s3_store() {
    let server = S3Server::shared();
    let url = S3Server::url(&prefix("tools"));
    let dir = tempfile::tempdir().unwrap();
    run_to_end(demo(
        &url,
        &dir.path().join("local"),
        &dir.path().join("out"),
        50_000,
        &server.endpoint,
    ));
    let tool = |args: &[&str]| tool(args, server.env());
    let list = tool(&["checkpoints", "list", &url, "--job", "demo"]);
    assert!(list.contains("chk-"), "{list}");
    let show = tool(&["checkpoints", "show", &url, "--job", "demo"]);
    assert!(show.contains("of job demo"), "{show}");
    let gc = tool(&["checkpoints", "gc", &url, "--job", "demo", "--keep", "1"]);
    assert!(gc.contains("kept 1 checkpoint"), "{gc}");
    let after = tool(&["checkpoints", "list", &url, "--job", "demo", "--json"]);
    assert_eq!(after.lines().count(), 1, "{after}");
    // A job that never ran there is named with the jobs the prefix holds.
    let out = Command::new(WEIR)
        .args(["checkpoints", "list", &url, "--job", "nope"])
        .envs(server.env())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("job(s): demo"), "{text}");
}

#[test]
fn a_newer_claim_fences_every_write_of_the_older_writer() {
    let server = S3Server::shared();
    let url = S3Server::url(&prefix("claims"));
    // Settings as a [checkpoint] table would give them (no AWS_* variables).
    let options = weir::StoreOptions(
        [
            ("endpoint", server.endpoint.as_str()),
            ("allow_http", "true"),
            ("region", "us-east-1"),
            ("access_key_id", "weir-test-key"),
            ("secret_access_key", "weir-test-secret"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    );
    let open = || weir::checkpoint::CheckpointStore::open_with(Path::new(&url), "job", &options).unwrap();
    let (old, new) = (open(), open());
    assert_eq!(old.incarnation(), new.incarnation(), "one store, one incarnation");
    assert!(old.lock().unwrap().is_none(), "object stores have no lock file");
    old.prune(&[], &[]).unwrap();
    new.lock().unwrap();
    let err = old.prune(&[], &[]).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, weir::WeirError::Fenced { .. }) && text.contains("now held by job `job`"),
        "{text}"
    );
    assert!(
        !format!("{options:?}").contains("weir-test-secret"),
        "settings print without values"
    );
    let bad = weir::StoreOptions([("no_such_setting".to_string(), "1".to_string())].into_iter().collect());
    let err = weir::checkpoint::CheckpointStore::open_with(Path::new(&url), "job", &bad).unwrap_err();
    assert!(err.to_string().contains("checkpoint.no_such_setting"), "{err}");
}

/// `weir bench <args> --json` with its checkpoints under a prefix of its
/// own on the S3 test server; its JSON line.
fn bench_on_s3(args: &[&str], test: &str) -> serde_json::Value {
    let server = S3Server::shared();
    let out = Command::new(WEIR)
        .arg("bench")
        .args(args)
        .args(["--json", "--checkpoint-dir"])
        .arg(S3Server::url(&prefix(test)))
        .envs(server.env())
        .env("WEIR_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn bench_upload_compares_a_checkpoint_upload_with_a_plain_client() {
    // 70 MB of state in one SST: past the single-put limit, in parts.
    let line = bench_on_s3(&["upload", "--keys", "70000"], "bench-upload");
    let (weir, plain) = (
        line["weir_bytes"].as_u64().unwrap(),
        line["plain_bytes"].as_u64().unwrap(),
    );
    assert!(weir >= 70_000 * 1024, "1 KiB per key, incompressible: {line}");
    assert!(
        plain >= weir && plain < weir + 64 * 1024,
        "the plain client puts the same objects: {line}"
    );
    assert!(line["plain_multipart_mb_per_s"].as_f64().unwrap() > 0.0, "{line}");
    assert!(line["weir_mb_per_s"].as_f64().unwrap() > 0.0 && line["plain_single_put_mb_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_takeover_restores_a_prefetched_shard_from_local_disk() {
    let line = bench_on_s3(&["takeover", "--keys", "30000"], "bench-takeover");
    assert!(line["prefetched_files"].as_u64().unwrap() >= 1, "{line}");
    assert!(line["state_bytes"].as_u64().unwrap() >= 30_000 * 1024, "{line}");
    let (with, without) = (
        line["restore_with_prefetch_s"].as_f64().unwrap(),
        line["restore_without_prefetch_s"].as_f64().unwrap(),
    );
    assert!(with > 0.0 && without > 0.0, "{line}");
}

/// The same protocol on Azure Blob Storage (Azurite): kills at each
/// dangerous point, a second writer fencing the first, the tools.
#[test]
fn an_azure_store_survives_kills_fences_a_second_writer_and_serves_the_tools() {
    const RECORDS: u64 = 600_000;
    let server = azurite::Azurite::shared();
    let expected = reference(RECORDS);
    let url = azurite::Azurite::url(&prefix("az"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut rng = KillRng::from_clock();
    let seed = rng.seed;
    let mut kills = std::collections::BTreeMap::<&str, u32>::new();
    let points = [
        ("upload", "store-put-file=kill(10)"),
        ("before-manifest", "before-manifest=kill(40)"),
        ("after-manifest", "manifest-written=kill(40)"),
        ("restore", "restore-fetch=kill(30)"),
        ("random", "snapshot-async=sleep(40)"),
    ];
    for (run, (point, failpoints)) in points.iter().enumerate() {
        let mut cmd = demo_with(
            &url,
            &dir.path().join(format!("local-{run}")),
            &out,
            RECORDS,
            server.env(),
        );
        cmd.env("WEIR_FAILPOINTS", failpoints).args(["--rate", "40000"]);
        let mut child = cmd.spawn().unwrap();
        let (_, _, log) = follow(&mut child);
        let wait = if *point == "random" {
            Duration::from_millis(300 + rng.below(900))
        } else {
            Duration::from_secs(20)
        };
        match kill_after(&mut child, wait, || {}) {
            RunEnd::Killed { by_failpoint } => {
                *kills.entry(if by_failpoint { point } else { "random" }).or_default() += 1;
            }
            RunEnd::Exited(status) => panic!("the job ended by itself ({status})\n{}", log.join().unwrap()),
        }
        let _ = log.join();
    }
    // Two writers: the second takes over, the first stops fenced.
    let mut first = demo_with(&url, &dir.path().join("local-a"), &out, RECORDS, server.env());
    first.args(["--rate", "40000"]);
    let mut first = first.spawn().unwrap();
    let (_, complete, first_log) = follow(&mut first);
    wait_for_checkpoints(&complete, 2, "the first writer");
    let mut second = demo_with(&url, &dir.path().join("local-b"), &out, RECORDS, server.env());
    let mut second = second.spawn().unwrap();
    let (_, _, second_log) = follow(&mut second);
    let status = wait_for_exit(&mut first, Duration::from_secs(60), "the fenced first writer");
    let first_log = first_log.join().unwrap();
    assert!(
        !status.success() && first_log.contains("was taken over by another writer"),
        "the first writer must stop, fenced ({status}):\n{first_log}"
    );
    let status = wait_for_exit(&mut second, Duration::from_secs(300), "the second writer");
    let second_log = second_log.join().unwrap();
    assert!(status.success(), "the second writer runs to the end:\n{second_log}");
    let (lost, duplicated) = compare(&expected, &committed_lines(&out));

    // The tools read the store; its settings are never printed.
    let tool = |args: &[&str]| tool(args, server.env());
    let list = tool(&["checkpoints", "list", &url, "--job", "demo"]);
    assert!(list.contains("chk-"), "{list}");
    let show = tool(&["checkpoints", "show", &url, "--job", "demo"]);
    assert!(show.contains("of job demo") && show.contains("parallelism"), "{show}");
    publish_summary(
        "object_store_azure",
        &format!(
            "azure kill recovery and fencing: store=az (Azurite) kills={} lost={lost} duplicated={duplicated} \
             (killed at {kills:?}, seed={seed}; a second writer fenced the first; checkpoints list/show on az://)",
            kills.values().sum::<u32>()
        ),
    );
    assert_eq!(
        (lost, duplicated),
        (0, 0),
        "committed output differs from the failure-free run"
    );
}
