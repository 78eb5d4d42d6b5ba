//! One writer per store: a run holds its checkpoint store (and a separate
//! local state directory) exclusively; a second run is refused at once with
//! an error naming the directory and the holder, and nothing of the first
//! run is touched. Different jobs never share working directories.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir::connectors::collect::CollectSink;
use weir::connectors::generator::{Generator, W1Event};
use weir::{Job, JobBuilder, JobConfig, WeirError};

/// generator (`records`, paced) -> key_by -> running sum -> collected.
fn sums(name: &str, records: u64, rate: Option<u64>, out: Arc<Mutex<Vec<(u64, u64)>>>) -> Job {
    let job = JobBuilder::new(name).default_parallelism(2);
    job.source("gen", Generator::w1_factory(Some(records), rate))
        .uid("gen")
        .map(|e: W1Event| (e.key, e.value))
        .key_by(|r: &(u64, u64)| r.0)
        .reduce("sum", |a, b| (a.0, a.1 + b.1))
        .uid("sum")
        .sink("out", CollectSink::factory(out));
    job.build().unwrap()
}

fn config(dir: &Path) -> JobConfig {
    JobConfig {
        checkpoint_interval: Some(Duration::from_millis(50)),
        ..JobConfig::with_checkpoint_dir(dir)
    }
}

#[test]
fn a_second_run_on_one_store_is_refused_naming_the_holder_and_the_first_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let first_out = Arc::new(Mutex::new(Vec::new()));
    let first = sums("sums", 200_000, Some(100_000), first_out.clone())
        .start(config(dir.path()))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let err = match sums("sums", 1_000, None, Arc::default()).start(config(dir.path())) {
        Err(e) => e,
        Ok(h) => {
            h.cancel();
            panic!("a second run on a held store was started");
        }
    };
    let text = err.to_string();
    assert!(matches!(err, WeirError::StoreInUse { .. }), "{text}");
    assert!(err.is_retryable(), "the store is free again once the holder ends");
    assert!(
        text.contains(&dir.path().join("sums").display().to_string())
            && text.contains("job `sums`")
            && text.contains(&format!("pid {}", std::process::id())),
        "the refusal names the directory and the holder: {text}"
    );

    let summary = first.join().unwrap();
    let out = first_out.lock().unwrap();
    assert_eq!(out.len(), 200_000, "the first run saw every record once");
    assert!(summary.last_checkpoint.is_some());

    // Once the holder ended, the next run takes the store and resumes its final checkpoint.
    let again = sums("sums", 200_000, None, Arc::default())
        .run(config(dir.path()))
        .unwrap();
    assert_eq!(again.restored_from, summary.last_checkpoint);
}

#[test]
fn different_jobs_share_a_local_state_directory_without_touching_each_other() {
    let (a_dir, b_dir, local) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let with_local = |dir: &Path| JobConfig {
        local_state_dir: Some(local.path().to_path_buf()),
        ..config(dir)
    };
    let (a_out, b_out) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
    let a = sums("a", 100_000, Some(50_000), a_out.clone())
        .start(with_local(a_dir.path()))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let b = sums("b", 100_000, Some(50_000), b_out.clone())
        .start(with_local(b_dir.path()))
        .unwrap();
    a.join().unwrap();
    b.join().unwrap();
    assert_eq!(a_out.lock().unwrap().len(), 100_000);
    assert_eq!(b_out.lock().unwrap().len(), 100_000);
    assert!(local.path().join("a").is_dir() && local.path().join("b").is_dir());

    // One job name with two stores but one local directory: the second is refused.
    let (c_dir, d_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let held = sums("a", 100_000, Some(50_000), Arc::default())
        .start(with_local(d_dir.path()))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let err = sums("a", 10, None, Arc::default())
        .run(with_local(c_dir.path()))
        .unwrap_err();
    assert!(
        matches!(&err, WeirError::StoreInUse { dir, .. } if dir == &local.path().join("a")),
        "{err}"
    );
    held.cancel();
    let _ = held.join();
}
