//! The live status of a running job, read from its handle: records in/out
//! and rates per task, backpressure, end-to-end latency, checkpoints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};
use weir::connectors::collect::CountingSink;
use weir::connectors::generator::{Generator, W1Event};
use weir::{JobBuilder, JobConfig, JobStatus, TaskStatus};
use weir_workloads::jobs::{demo_job, DemoOptions};

fn config(dir: &std::path::Path) -> JobConfig {
    JobConfig {
        checkpoint_interval: Some(Duration::from_millis(100)),
        ..JobConfig::with_checkpoint_dir(dir)
    }
}

fn tasks<'a>(status: &'a JobStatus, vertex: &str) -> Vec<&'a TaskStatus> {
    status.tasks.iter().filter(|t| t.name.starts_with(vertex)).collect()
}

/// Polls `status` until `ready` holds (or 20 s pass) and returns the last status.
fn wait_for(status: impl Fn() -> JobStatus, ready: impl Fn(&JobStatus) -> bool) -> JobStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status();
        if ready(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "the status never got there; last:\n{s}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_handle_shows_records_rates_latency_and_checkpoints_of_a_running_job() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DemoOptions {
        records: None,
        rate: Some(20_000),
        parallelism: 2,
        output: dir.path().join("out"),
        tee_output: None,
    };
    let handle = demo_job(&opts).unwrap().start(config(dir.path())).unwrap();
    let controller = handle.controller();
    let s = wait_for(
        || handle.status(),
        |s| {
            let sinks = tasks(s, "key_by -> running-count-sum -> file-sink[");
            s.checkpoints.last.is_some()
                && tasks(s, "generator[").iter().all(|t| t.records_out_per_sec > 0.0)
                && sinks
                    .iter()
                    .all(|t| t.latency.is_some_and(|l| l.count > 0) && t.records_in > 0)
        },
    );
    assert_eq!(s.job, "demo");
    assert_eq!(tasks(&s, "generator[").len(), 2);
    assert_eq!(tasks(&s, "key_by -> running-count-sum -> file-sink[").len(), 2);
    // 20 000 records/s over both generator subtasks, give or take a loaded machine.
    let rate: f64 = tasks(&s, "generator[").iter().map(|t| t.records_out_per_sec).sum();
    assert!((2_000.0..60_000.0).contains(&rate), "source rate {rate}/s\n{s}");
    let last = s.checkpoints.last.clone().unwrap();
    assert!(last.bytes > 0, "a checkpoint with keyed state has bytes\n{s}");
    assert!(s.checkpoints.completed >= 1);
    for t in tasks(&s, "key_by -> running-count-sum -> file-sink[") {
        let l = t.latency.unwrap();
        assert!(l.p50_ms > 0.0 && l.p50_ms <= l.p99_ms && l.p99_ms <= l.max_ms, "{l:?}");
        assert!(t.output_queue.is_none(), "a sink task has no output channel");
    }
    for t in tasks(&s, "generator[") {
        let (queued, capacity) = t.output_queue.unwrap();
        assert!(queued <= capacity && capacity > 0);
        assert!(
            t.backpressured_ms_per_sec < 500.0,
            "an unloaded job is not backpressured\n{s}"
        );
    }
    // Counters only grow.
    let later = wait_for(
        || controller.status(),
        |l| l.tasks[0].records_out > s.tasks[0].records_out,
    );
    assert!(later.uptime > s.uptime);

    handle.stop();
    let summary = handle.join().unwrap();
    // After the end: every task finished, and what the sources sent arrived.
    let end = controller.status();
    assert!(end.tasks.iter().all(|t| t.finished), "{end}");
    let sent: u64 = tasks(&end, "generator[").iter().map(|t| t.records_out).sum();
    let received: u64 = tasks(&end, "key_by -> running-count-sum -> file-sink[")
        .iter()
        .map(|t| t.records_in)
        .sum();
    let written: u64 = tasks(&end, "key_by -> running-count-sum -> file-sink[")
        .iter()
        .map(|t| t.records_out)
        .sum();
    assert_eq!((sent, written), (received, received));
    for t in tasks(&end, "generator[") {
        assert_eq!(t.records_in, t.records_out, "a source task sends what it reads");
    }
    assert_eq!(end.checkpoints.last.as_ref().map(|l| l.id), summary.last_checkpoint);
    assert!(end.checkpoints.last.as_ref().unwrap().final_checkpoint);
    // The status serializes for `--json` output and prints as a table.
    let json = serde_json::to_value(&end).unwrap();
    assert_eq!(json["tasks"].as_array().unwrap().len(), 4);
    assert!(end.to_string().contains("generator[1]"));
}

#[test]
fn a_slow_operator_shows_up_as_backpressure_on_the_task_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let job = JobBuilder::new("slow");
    job.source("generator", Generator::w1_factory(None, None))
        .uid("generator")
        .rebalance()
        .map(|e: W1Event| {
            // About 20 000 records/s: far slower than the generator.
            let until = Instant::now() + Duration::from_micros(50);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            e.key
        })
        .sink("count", CountingSink::factory());
    let handle = job.build().unwrap().start(config(dir.path())).unwrap();
    let s = wait_for(
        || handle.status(),
        |s| tasks(s, "generator[")[0].backpressured_ms_per_sec > 500.0,
    );
    let (queued, capacity) = tasks(&s, "generator[")[0].output_queue.unwrap();
    assert!(
        queued * 2 >= capacity,
        "a backpressured task's output channel is mostly full\n{s}"
    );
    let slow = s.tasks.iter().find(|t| !t.name.starts_with("generator[")).unwrap();
    assert!(
        slow.backpressured_ms_per_sec < 100.0,
        "the slow task itself is not blocked\n{s}"
    );
    handle.cancel();
    let _ = handle.join();
}
