//! Nexmark queries against an independent brute-force reference
//! (`support/nexmark_ref.rs`): the built-in generator through the library,
//! and a JSON-lines file with out-of-order events, ties and persons arriving
//! after their auctions through `weir nexmark --source-file`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "support/nexmark_ref.rs"]
mod nexmark_ref;

use nexmark_ref::{diff, disorder_ms, expected, generated, parse_rows, perturbed, test_config};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir::JobConfig;
use weir_workloads::nexmark::model::Event;
use weir_workloads::nexmark::queries::{Query, Row};
use weir_workloads::nexmark::{nexmark_job, EventSource, RowSink};

const EVENTS: u64 = 30_000;

#[test]
fn every_query_over_the_generator_matches_the_reference() {
    let events = generated(EVENTS);
    for query in Query::ALL {
        let dir = tempfile::tempdir().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let (job, _) = nexmark_job(
            "nexmark-gen",
            query,
            &EventSource::Generator(test_config(EVENTS)),
            RowSink::Collect(out.clone()),
            2,
        )
        .unwrap();
        let config = JobConfig {
            checkpoint_interval: Some(Duration::from_millis(100)),
            drain_at_end: true,
            ..JobConfig::with_checkpoint_dir(dir.path())
        };
        job.run(config).unwrap();
        let mut got: Vec<Row> = out.lock().unwrap().iter().map(|o| o.row.clone()).collect();
        got.sort();
        let want = expected(query, &events);
        assert!(!want.is_empty(), "{query:?}: the reference has rows");
        let (lost, extra) = diff(&want, &got);
        assert_eq!(
            (lost, extra),
            (0, 0),
            "{query:?}: {} rows expected, {} produced",
            want.len(),
            got.len()
        );
    }
}

#[test]
fn every_query_over_a_file_with_disorder_ties_and_late_persons_matches_the_reference() {
    let events = perturbed(EVENTS);
    // The data really has what the test claims.
    let disorder = disorder_ms(&events);
    assert!((1_000..4_000).contains(&disorder), "disorder {disorder} ms");
    let late_persons = events
        .iter()
        .enumerate()
        .filter(|(i, e)| match e {
            Event::Person(p) => events[..*i]
                .iter()
                .any(|a| matches!(a, Event::Auction(a) if a.seller == p.id)),
            _ => false,
        })
        .count();
    assert!(late_persons >= 3, "{late_persons} persons after their auctions");
    // Ties for the maximum: some window has more than one row in q5 and in q7.
    for query in [Query::Q5, Query::Q7] {
        let mut per_window = std::collections::BTreeMap::<i64, usize>::new();
        for row in expected(query, &events) {
            let start = match row {
                Row::Q5(r) => r.window_start,
                Row::Q7(r) => r.window_start,
                _ => unreachable!(),
            };
            *per_window.entry(start).or_default() += 1;
        }
        assert!(
            per_window.values().any(|n| *n > 1),
            "{query:?} has no tie: {per_window:?}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    let text: String = events.iter().map(|e| e.to_json() + "\n").collect();
    std::fs::write(&input, text).unwrap();
    for query in Query::ALL {
        let output = dir.path().join(format!("{}.jsonl", query.name()));
        let run = Command::new(common::WEIR)
            .args([
                "nexmark",
                "--query",
                query.name(),
                "--parallelism",
                "2",
                "--source-file",
            ])
            .arg(&input)
            .arg("--sink-file")
            .arg(&output)
            .env("WEIR_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{query:?}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let lines = std::fs::read(&output).unwrap();
        let got = parse_rows(
            query,
            lines
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec),
        );
        let want = expected(query, &events);
        assert_eq!(
            diff(&want, &got),
            (0, 0),
            "{query:?}: {} expected, {} produced",
            want.len(),
            got.len()
        );
    }
}

#[test]
fn a_bad_event_line_fails_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.jsonl");
    let good = generated(3).iter().map(|e| e.to_json() + "\n").collect::<String>();
    std::fs::write(&input, good + "{\"type\":\"bid\",\"auction\":1}\n").unwrap();
    let run = Command::new(common::WEIR)
        .args(["nexmark", "--query", "q0", "--source-file"])
        .arg(&input)
        .arg("--sink-file")
        .arg(dir.path().join("out.jsonl"))
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("bad.jsonl") && err.contains("line 4") && err.contains("bidder"),
        "{err}"
    );
    let unknown = Command::new(common::WEIR)
        .args(["nexmark", "--query", "q4", "--generator"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("retractions"));
}

/// A `--source-file` run that keeps its checkpoints (`--checkpoint-dir`),
/// SIGKILLed at random points and run again: the file source resumes at its
/// checkpointed line, helped by a parse thread, and the sink's one open part
/// is cut back to its checkpointed length, so the rows equal the reference:
/// nothing lost, nothing written twice.
#[test]
fn a_file_run_killed_and_run_again_writes_every_row_once() {
    // ~2 s of work for a debug build; five kills at most 0.35 s into a run leave the end for the last.
    let events = generated(500_000);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    let text: String = events.iter().map(|e| e.to_json() + "\n").collect();
    std::fs::write(&input, text).unwrap();
    let (output, checkpoints) = (dir.path().join("q0.jsonl"), dir.path().join("ck"));
    let run = || {
        let mut command = Command::new(common::WEIR);
        command
            .args([
                "nexmark",
                "--query",
                "q0",
                "--parse-threads",
                "1",
                "--checkpoint-interval-ms",
                "30",
            ])
            .arg("--source-file")
            .arg(&input)
            .arg("--sink-file")
            .arg(&output)
            .arg("--checkpoint-dir")
            .arg(&checkpoints)
            .env("WEIR_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        command
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut kills = 0;
    for i in 0..5u64 {
        let mut child = run().spawn().unwrap();
        // 100-350 ms: before, during and after checkpoints, mid-file.
        let after = 100 + (seed.rotate_left(i as u32 * 13) ^ i.wrapping_mul(0x9e37_79b9)) % 250;
        std::thread::sleep(Duration::from_millis(after));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
    }
    assert!(kills >= 3, "only {kills} runs were killed midway (seed {seed})");
    let status = run().status().unwrap();
    assert!(status.success(), "the last run failed (seed {seed})");
    let lines = std::fs::read(&output).unwrap();
    let got = parse_rows(
        Query::Q0,
        lines
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec),
    );
    let want = expected(Query::Q0, &events);
    assert_eq!(
        diff(&want, &got),
        (0, 0),
        "{kills} kills (seed {seed}): {} expected, {} produced",
        want.len(),
        got.len()
    );
    common::publish_summary(
        "nexmark_file_kill",
        &format!(
            "nexmark q0 over a file: kills={kills} lost=0 duplicated=0 (rows={} seed={seed})",
            got.len()
        ),
    );
}
