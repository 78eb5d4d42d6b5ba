//! The command line: Prometheus metrics of a running job, and `--help`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn scrape(addr: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

#[test]
fn a_running_job_serves_prometheus_metrics() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(common::WEIR)
        .args([
            "run",
            "demo",
            "--records",
            "0",
            "--rate",
            "20000",
            "--checkpoint-interval-ms",
            "100",
            "--metrics-addr",
            &addr,
        ])
        .arg("--checkpoint-dir")
        .arg(dir.path().join("ck"))
        .arg("--output")
        .arg(dir.path().join("out"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    let found = loop {
        if let Some(body) = scrape(&addr) {
            if body.contains("weir_checkpoints_completed_total") && body.contains("weir_source_records_total") {
                break true;
            }
            last = body;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        found,
        "metrics never showed checkpoints and source records; last scrape:\n{last}"
    );
}

#[test]
fn every_command_has_help_with_an_example() {
    for args in [
        vec!["run", "demo"],
        vec!["run", "kafka-count"],
        vec!["checkpoints", "list"],
        vec!["offsets"],
    ] {
        let out = std::process::Command::new(common::WEIR)
            .args(&args)
            .arg("--help")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("Example:"), "{args:?}: {text}");
    }
}

#[test]
fn a_config_file_with_an_unknown_key_is_refused_naming_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.toml");
    std::fs::write(&file, "checkpoint_interval_ms = 100\nretained_checkpoint = 2\n").unwrap();
    let out = std::process::Command::new(common::WEIR)
        .args(["run", "demo", "--records", "10", "--config"])
        .arg(&file)
        .arg("--checkpoint-dir")
        .arg(dir.path().join("ck"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("retained_checkpoint") && err.contains("job.toml") && err.contains("line 2"),
        "{err}"
    );

    std::fs::write(&file, "retained_checkpoints = 1\n").unwrap();
    let out = std::process::Command::new(common::WEIR)
        .args(["run", "demo", "--records", "1000", "--config"])
        .arg(&file)
        .arg("--checkpoint-dir")
        .arg(dir.path().join("ck"))
        .arg("--output")
        .arg(dir.path().join("out"))
        .env("WEIR_CHECKPOINT_INTERVAL_MS", "0")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let store = weir::checkpoint::CheckpointStore::open(&dir.path().join("ck"), "demo").unwrap();
    assert_eq!(
        store.complete_ids().unwrap().len(),
        1,
        "retained_checkpoints = 1 from the file"
    );
}

#[test]
fn sigterm_stops_with_a_final_checkpoint_and_commits_everything_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(common::WEIR)
        .args(["run", "demo", "--records", "0", "--rate", "20000"])
        .arg("--checkpoint-dir")
        .arg(dir.path().join("ck"))
        .arg("--output")
        .arg(dir.path().join("out"))
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the job did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let store = weir::checkpoint::CheckpointStore::open(&dir.path().join("ck"), "demo").unwrap();
    let manifest = store.restore_point().unwrap().unwrap();
    assert!(manifest.final_checkpoint, "the newest checkpoint is the final one");
    let generated: u64 = manifest.operators["generator"]
        .subtasks
        .iter()
        .map(|s| match s {
            weir::checkpoint::SubtaskState::Bytes { hex, .. } => u64::from_str_radix(hex, 16).unwrap(),
            _ => panic!("generator state must be bytes"),
        })
        .sum();
    let lines = common::committed_lines(&dir.path().join("out"));
    assert!(generated > 0);
    assert_eq!(
        lines.len() as u64,
        generated,
        "every record before the final barrier is committed, once"
    );
}

#[test]
fn checkpoints_list_json_and_gc() {
    let dir = tempfile::tempdir().unwrap();
    let run = |records: &str| {
        let out = std::process::Command::new(common::WEIR)
            .args(["run", "demo", "--records", records, "--checkpoint-interval-ms", "0"])
            .arg("--checkpoint-dir")
            .arg(dir.path().join("ck"))
            .arg("--output")
            .arg(dir.path().join("out"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    run("1000");
    run("2000");
    run("3000");
    let list = || {
        let out = std::process::Command::new(common::WEIR)
            .args(["checkpoints", "list"])
            .arg(dir.path().join("ck"))
            .args(["--job", "demo", "--json"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let before = list();
    assert_eq!(before.len(), 3);
    assert!(before
        .iter()
        .all(|c| c["final"] == true && c["bytes"].as_u64().unwrap() > 0));
    let gc = std::process::Command::new(common::WEIR)
        .args(["checkpoints", "gc"])
        .arg(dir.path().join("ck"))
        .args(["--job", "demo", "--keep", "1"])
        .output()
        .unwrap();
    assert!(gc.status.success());
    let after = list();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["id"], before[2]["id"]);
    run("3000"); // the kept checkpoint restores
}
