//! Recovery and bounded runs, in process: damaged checkpoints, an unusable
//! directory, rescaling (and its refusal), bounded runs over growing input, a small
//! write-back cache, on-demand checkpoints and a graceful stop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{committed_lines, compare, Line};
use std::path::Path;
use std::time::Duration;
use weir::checkpoint::{CheckpointStore, SubtaskState};
use weir::{JobConfig, JobSummary, WeirError};
use weir_workloads::jobs::{demo_job, DemoOptions};

fn options(dir: &Path, records: u64, parallelism: usize) -> DemoOptions {
    DemoOptions {
        records: Some(records),
        rate: None,
        parallelism,
        output: dir.join("out"),
        tee_output: None,
    }
}

fn config(dir: &Path) -> JobConfig {
    JobConfig {
        checkpoint_interval: Some(Duration::from_millis(50)),
        ..JobConfig::with_checkpoint_dir(dir.join("checkpoints"))
    }
}

fn run(dir: &Path, records: u64, parallelism: usize) -> Result<JobSummary, WeirError> {
    demo_job(&options(dir, records, parallelism))?.run(config(dir))
}

/// A run that may restore past damaged checkpoints (and so write again).
fn run_allowing_replay(dir: &Path, records: u64, parallelism: usize) -> Result<JobSummary, WeirError> {
    let config = JobConfig {
        allow_replay: true,
        ..config(dir)
    };
    demo_job(&options(dir, records, parallelism))?.run(config)
}

/// A damaged newest checkpoint refuses the restart naming it; allowing the
/// replay restores the previous one and writes again what was committed
/// after it: nothing lost, the duplicates as many as the replayed records.
fn refused_then_replayed(dir: &Path, damaged: &Path, records: u64, scenario: &str) -> JobSummary {
    let err = run(dir, records, 1).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, WeirError::ReplayRefused { .. }), "{text}");
    assert!(
        text.contains(&damaged.display().to_string()) && text.contains("allow_replay"),
        "the refusal names the damage and the choice: {text}"
    );
    let before = committed_lines(&dir.join("out"));
    let replayed = run_allowing_replay(dir, records, 1).unwrap();
    let after = committed_lines(&dir.join("out"));
    let (lost, _) = compare(&reference(records), &after);
    assert_eq!(lost, 0, "a replay loses nothing");
    let indices: std::collections::HashSet<u64> = after.iter().map(|l| l.index).collect();
    assert_eq!(indices.len() as u64, records);
    let replayed_lines = after.len() - before.len();
    assert!(
        replayed_lines > 0,
        "the output after the restored checkpoint was committed, so it comes again"
    );
    assert_eq!(
        after.len() - indices.len(),
        replayed_lines,
        "every line the replay wrote duplicates committed output"
    );
    common::publish_summary(
        &format!("zombie_damaged_{}", scenario.replace(' ', "_")),
        &format!(
            "zombie: damaged newest checkpoint ({scenario}): restart refused naming it; with allow_replay lost={lost}, \
             {replayed_lines} committed lines written again, as documented"
        ),
    );
    replayed
}

fn reference(records: u64) -> Vec<Line> {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), records, 2).unwrap();
    committed_lines(&dir.path().join("out"))
}

fn store(dir: &Path) -> CheckpointStore {
    CheckpointStore::open(&dir.join("checkpoints"), "demo").unwrap()
}

/// A state file (SST) that the newest checkpoint references and the one
/// before it does not.
fn own_sst_of_newest(st: &CheckpointStore) -> std::path::PathBuf {
    let ids = st.complete_ids().unwrap();
    assert!(ids.len() >= 2, "need two checkpoints, have {ids:?}");
    let files = |id| -> Vec<String> {
        let m = st.read_manifest(id).unwrap();
        m.operators
            .values()
            .flat_map(|o| o.subtasks.iter())
            .filter_map(|s| match s {
                SubtaskState::Rocks(h) => Some(h.shared.iter().map(|f| f.path.clone()).collect::<Vec<_>>()),
                _ => None,
            })
            .flatten()
            .collect()
    };
    let previous = files(ids[ids.len() - 2]);
    let own = files(ids[ids.len() - 1])
        .into_iter()
        .find(|f| !previous.contains(f))
        .expect("the newest checkpoint must have an SST of its own");
    st.job_dir().join(own)
}

#[test]
fn bounded_runs_over_growing_input_equal_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let first = run(dir.path(), 30_000, 2).unwrap();
    assert_eq!(first.restored_from, None);
    let second = run(dir.path(), 70_000, 2).unwrap();
    assert_eq!(
        second.restored_from, first.last_checkpoint,
        "the second run resumes from the first run's final checkpoint"
    );
    let third = run(dir.path(), 70_000, 2).unwrap();
    assert_eq!(third.restored_from, second.last_checkpoint);
    let actual = committed_lines(&dir.path().join("out"));
    assert_eq!(compare(&reference(70_000), &actual), (0, 0));
    assert_eq!(actual.len(), 70_000, "a run with nothing new adds nothing");
}

#[test]
fn a_truncated_newest_manifest_refuses_the_replay_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), 10_000, 1).unwrap();
    let first = run(dir.path(), 20_000, 1).unwrap();
    let newest = first.last_checkpoint.unwrap();
    let manifest = store(dir.path())
        .checkpoint_path(weir::operators::CheckpointId(newest))
        .join("MANIFEST");
    let bytes = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, &bytes[..bytes.len() / 2]).unwrap();

    let second = refused_then_replayed(dir.path(), &manifest, 20_000, "truncated manifest");
    assert!(
        second.restored_from.unwrap() < newest,
        "restored from {:?}",
        second.restored_from
    );
    assert_eq!(second.skipped_checkpoints.len(), 1);
    assert!(
        second.skipped_checkpoints[0].contains(&manifest.display().to_string()),
        "{:?}",
        second.skipped_checkpoints
    );
    assert!(
        second.skipped_checkpoints[0].contains("damaged manifest"),
        "{:?}",
        second.skipped_checkpoints
    );
}

#[test]
fn a_missing_state_file_refuses_the_replay_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), 10_000, 1).unwrap();
    let first = run(dir.path(), 20_000, 1).unwrap();
    let deleted = own_sst_of_newest(&store(dir.path()));
    std::fs::remove_file(&deleted).unwrap();

    let second = refused_then_replayed(dir.path(), &deleted, 20_000, "missing state file");
    assert!(second.restored_from.unwrap() < first.last_checkpoint.unwrap());
    assert!(
        second.skipped_checkpoints[0].contains(&deleted.display().to_string()),
        "{:?}",
        second.skipped_checkpoints
    );
}

#[test]
fn a_state_file_with_a_flipped_byte_makes_its_checkpoint_damaged() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), 10_000, 1).unwrap();
    run(dir.path(), 20_000, 1).unwrap();
    let corrupt = own_sst_of_newest(&store(dir.path()));
    let mut bytes = std::fs::read(&corrupt).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&corrupt, &bytes).unwrap();

    let err = run(dir.path(), 20_000, 1).unwrap_err().to_string();
    assert!(
        err.contains(&corrupt.display().to_string()) && err.contains("checksum"),
        "the corrupt file is named: {err}"
    );
}

#[test]
fn no_readable_checkpoint_is_an_error_not_an_empty_start() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), 5_000, 1).unwrap();
    let st = store(dir.path());
    for id in st.complete_ids().unwrap() {
        std::fs::write(st.checkpoint_path(id).join("MANIFEST"), b"{\"format\":").unwrap();
    }
    let err = run(dir.path(), 5_000, 1).unwrap_err();
    assert!(matches!(err, WeirError::NoUsableCheckpoint { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&st.job_dir().display().to_string()) && message.contains("refusing to start empty"),
        "{message}"
    );
}

#[test]
fn an_unusable_checkpoint_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the job's directory should be (root ignores permission bits, not this).
    std::fs::create_dir_all(dir.path().join("checkpoints")).unwrap();
    std::fs::write(dir.path().join("checkpoints/demo"), b"not a directory").unwrap();
    let err = run(dir.path(), 100, 1).unwrap_err();
    assert!(matches!(err, WeirError::Io { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&dir.path().join("checkpoints/demo").display().to_string()),
        "{err}"
    );
}

#[test]
fn changing_the_parallelism_rescales_the_demo_and_refuses_state_kept_per_subtask() {
    // The demo (generator splits, keyed state, file sink) goes on at another
    // parallelism: 5 000 records at 2, then up to 8 000 at 1, then 12 000 at 3.
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), 5_000, 2).unwrap();
    run(dir.path(), 8_000, 1).unwrap();
    run(dir.path(), 12_000, 3).unwrap();
    let (lost, duplicated) = compare(&reference(12_000), &committed_lines(&dir.path().join("out")));
    assert_eq!(
        (lost, duplicated),
        (0, 0),
        "bounded runs at parallelism 2, 1, 3 equal one run"
    );

    // An in-memory source keeps one position per subtask: refused, named.
    let job = |parallelism: usize| {
        let job = weir::JobBuilder::new("elements").default_parallelism(parallelism);
        job.source(
            "numbers",
            weir::connectors::memory::ElementSource::factory((0..100u64).collect()),
        )
        .uid("numbers")
        .sink("print", weir::connectors::memory::PrintSink::factory());
        job.build().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    job(2).run(JobConfig::with_checkpoint_dir(dir.path())).unwrap();
    let err = job(1)
        .run(JobConfig::with_checkpoint_dir(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`numbers`") && err.contains("parallelism 2") && err.contains("now has 1"),
        "{err}"
    );
}

#[test]
fn a_small_write_back_cache_gives_the_same_output() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JobConfig {
        state_cache_entries: 500,
        ..config(dir.path())
    };
    demo_job(&options(dir.path(), 60_000, 2)).unwrap().run(cfg).unwrap();
    assert_eq!(
        compare(&reference(60_000), &committed_lines(&dir.path().join("out"))),
        (0, 0)
    );
}

#[test]
fn on_demand_checkpoints_and_a_graceful_stop_of_an_endless_job() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DemoOptions {
        records: None,
        rate: Some(50_000),
        parallelism: 2,
        output: dir.path().join("out"),
        tee_output: None,
    };
    let cfg = JobConfig {
        checkpoint_interval: None,
        ..config(dir.path())
    };
    let handle = demo_job(&opts).unwrap().start(cfg).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    handle.trigger_checkpoint();
    std::thread::sleep(Duration::from_millis(200));
    handle.stop();
    let summary = handle.join().unwrap();
    assert_eq!(summary.checkpoints_completed, 2, "one on demand, one final");
    let lines = committed_lines(&dir.path().join("out"));
    assert!(!lines.is_empty());
    // Everything generated before the final barrier is committed, exactly once.
    let st = store(dir.path());
    let m = st
        .read_manifest(weir::operators::CheckpointId(summary.last_checkpoint.unwrap()))
        .unwrap();
    assert!(m.final_checkpoint);
    let mut indices: Vec<u64> = lines.iter().map(|l| l.index).collect();
    indices.sort_unstable();
    indices.dedup();
    assert_eq!(indices.len(), lines.len(), "no duplicates");
    let positions: u64 = m.operators["generator"]
        .subtasks
        .iter()
        .map(|s| match s {
            SubtaskState::Bytes { hex, .. } => {
                // 0x53, the number of splits, then (split, next k) pairs: 8 bytes each.
                let words: Vec<u64> = hex.as_bytes()[2..]
                    .chunks(16)
                    .map(|w| u64::from_str_radix(std::str::from_utf8(w).unwrap(), 16).unwrap())
                    .collect();
                words.iter().skip(2).step_by(2).sum::<u64>()
            }
            _ => panic!("generator state must be bytes"),
        })
        .sum();
    assert_eq!(
        positions,
        lines.len() as u64,
        "committed output matches the stored source positions"
    );
}

/// Per key (index % 50): a map from value % 40 to how often it was seen;
/// emits (index, distinct values of the key, count of this value).
#[derive(Clone, Copy)]
struct DistinctValues;

impl weir::operators::KeyedProcess<u64, weir::connectors::generator::W1Event, (u64, usize, u64)> for DistinctValues {
    type State = ();
    fn process(
        &mut self,
        _key: &u64,
        _state: &mut Option<()>,
        e: weir::connectors::generator::W1Event,
        ctx: &mut weir::operators::KeyedContext<'_, (u64, usize, u64)>,
    ) -> Result<(), weir::operators::OperatorError> {
        let mut seen = ctx.map::<u64, u64>("seen");
        let slot = e.value % 40;
        let n = seen.get(&slot)?.unwrap_or(0) + 1;
        seen.insert(&slot, &n)?;
        let distinct = seen.entries()?.len();
        ctx.emit((e.index, distinct, n));
        Ok(())
    }
}

fn map_state_run(dir: &Path, records: u64, cache_entries: usize) -> Vec<(u64, usize, u64)> {
    use weir::connectors::collect::CollectSink;
    use weir::connectors::generator::{Generator, W1Event};
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let job = weir::JobBuilder::new("maps");
    job.source("gen", Generator::w1_factory(Some(records), None))
        .uid("gen")
        .key_by(|e: &W1Event| e.index % 50)
        .parallelism(2)
        .process("distinct", DistinctValues)
        .uid("distinct")
        .sink("collect", CollectSink::factory(out.clone()));
    let cfg = JobConfig {
        state_cache_entries: cache_entries,
        ..config(dir)
    };
    job.build().unwrap().run(cfg).unwrap();
    let mut v = out.lock().unwrap().clone();
    v.sort_unstable();
    v
}

#[test]
fn map_state_survives_restarts_and_eviction() {
    let one = tempfile::tempdir().unwrap();
    let expected = map_state_run(one.path(), 8_000, 1 << 20);
    assert_eq!(expected.last().map(|r| r.1), Some(40), "every key saw all 40 slots");

    let split = tempfile::tempdir().unwrap();
    let mut actual = map_state_run(split.path(), 3_000, 30);
    actual.extend(map_state_run(split.path(), 8_000, 30));
    actual.sort_unstable();
    assert_eq!(actual, expected, "two bounded runs with a tiny cache equal one run");
}

#[test]
fn state_written_behind_and_evicted_restores_exactly() {
    let expected = reference(60_000);
    let dir = tempfile::tempdir().unwrap();
    // Paced, so each interval gets its slice points, and long enough for a
    // debug build's snapshot to end before them; a low threshold, so every
    // interval writes its changes behind (see `state::keyed`); a small
    // cache, so entries written behind are evicted and read back.
    let cfg = JobConfig {
        state_write_behind_entries: 16,
        state_cache_entries: 2_000,
        checkpoint_interval: Some(Duration::from_millis(200)),
        ..config(dir.path())
    };
    let paced = |records| DemoOptions {
        rate: Some(20_000),
        ..options(dir.path(), records, 2)
    };
    let first = demo_job(&paced(25_000)).unwrap().run(cfg.clone()).unwrap();
    let second = demo_job(&paced(60_000)).unwrap().run(cfg).unwrap();
    assert_eq!(second.restored_from, first.last_checkpoint);
    assert!(
        first.state_entries_written_behind > 0 && second.state_entries_written_behind > 0,
        "write-behind ran: {} and {} entries",
        first.state_entries_written_behind,
        second.state_entries_written_behind
    );
    let actual = committed_lines(&dir.path().join("out"));
    assert_eq!(compare(&expected, &actual), (0, 0));
}
