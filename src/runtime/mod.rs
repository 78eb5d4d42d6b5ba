//! Running a job: tasks on OS threads, channels between them, and the
//! checkpoint coordinator driving barriers, manifests and recovery.
//!
//! # Start
//! 1. Open the checkpoint store and pick the restore point (newest usable
//!    complete checkpoint, see [`crate::checkpoint::store`]).
//! 2. Check that the job's operators match the checkpoint (every uid with
//!    state exists, same parallelism).
//! 3. Create the channels, then each task (sources seek to their stored
//!    position, keyed tasks rebuild their RocksDB from the stored files,
//!    sinks finish or discard leftovers), then start the threads.
//!
//! # Run
//! The coordinator thread feeds the pure [`crate::checkpoint::Coordinator`]
//! with acks and time and carries out its actions. A failing task fails the
//! job: every other task is cancelled and [`JobHandle::join`] returns the
//! first error.

mod describe;
mod driver;
mod handle;
pub(crate) mod plan;
pub(crate) mod status;

pub use describe::{GraphEdge, GraphVertex, JobGraph};
pub use handle::{JobController, JobHandle, JobSummary};
pub use status::{
    CheckpointRecord, CheckpointStatus, JobState, JobStatus, LastCheckpoint, LatencySummary, Progress, RateSample,
    TaskStatus,
};

use crate::checkpoint::coordinator::{Coordinator, CoordinatorConfig};
use crate::checkpoint::lock::DirLock;
use crate::checkpoint::manifest::{Manifest, SubtaskState};
use crate::checkpoint::store::CheckpointStore;
use crate::config::JobConfig;
use crate::connectors::CheckpointRequest;
use crate::error::{panic_message, Result, WeirError};
use crate::state::StateEnv;
use crate::stats::TaskStats;
use crate::task::run::{spawn_snapshotter, RuntimeEvent, TaskRuntime};
use driver::{Driver, RunningTask};
use plan::{JobEnv, OperatorInfo, Plan, TaskContext};
use status::StatusBoard;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_operators::CheckpointId;

/// Starts a planned job: opens the checkpoint store, picks the restore
/// point, makes every task, starts the threads and the coordinator.
pub(crate) fn start(plan: Plan, config: JobConfig) -> Result<JobHandle> {
    let Plan {
        name,
        vertices,
        edges,
        operators,
    } = plan;
    config.validate()?;
    let started = Instant::now();
    let store = CheckpointStore::open_with(&config.checkpoint_dir, &name, &config.checkpoint_store_options)?;
    // One writer per store, from before the restore point is read until the
    // driver ends: a second run of the job on this directory is refused at
    // once, naming this one.
    let mut locks: Vec<DirLock> = store.lock()?.into_iter().collect();
    let (restore, skipped) = if config.restore {
        store.restore_point_and_skipped()?
    } else {
        (None, Vec::new())
    };
    if let (Some(m), false) = (&restore, skipped.is_empty()) {
        if !config.allow_replay {
            return Err(WeirError::ReplayRefused {
                dir: store.job_dir().to_path_buf(),
                damaged: skipped.join("\n"),
                usable: m.checkpoint_id,
            });
        }
        tracing::warn!(
            "job {name}: restoring checkpoint {} past {} damaged newer checkpoint(s) (allow_replay): the output \
             committed after checkpoint {} is written again",
            m.checkpoint_id,
            skipped.len(),
            m.checkpoint_id
        );
    }
    let parallelism: Vec<usize> = vertices.iter().map(|v| v.parallelism).collect();
    let mut restore = restore;
    let mut union_only = BTreeMap::new();
    if let Some(m) = &mut restore {
        union_only = reconcile(&operators, &parallelism, m, &store, config.allow_non_restored_state)?;
        tracing::info!("job {}: restoring from checkpoint {}", name, m.checkpoint_id);
        if m.drained {
            tracing::info!(
                "job {name}: checkpoint {} ended a drained run: its windows and timers have fired and event time \
                 is at its end, so records older than the input read so far are late",
                m.checkpoint_id
            );
        }
    }
    // Working directories of different jobs never share a folder; one job's
    // is locked like its store (two stores, one local directory). Beside a
    // store on a file system by default (snapshots hard-link SSTs into it);
    // for an object store under the system's temporary directory.
    let local_root = match (&config.local_state_dir, store.local_dir()) {
        (None, Some(dir)) => dir.join("local"),
        (Some(dir), _) => lock_local_root(dir, &name, &mut locks)?,
        (None, None) => lock_local_root(&std::env::temp_dir().join("weir-state"), &name, &mut locks)?,
    };
    let state = Arc::new(StateEnv::new(
        store.clone(),
        local_root,
        config.state_block_cache_bytes,
        config.state_write_buffer_bytes,
    )?);
    state.clean_stale_local_dirs();
    let written_behind = state.written_behind.clone();
    let timers_kept = state.timers_kept.clone();
    let next_id = store.checkpoint_ids()?.last().map_or(1, |c| c.0 + 1);
    let existing = store.complete_ids()?;

    for edge in &edges {
        let (from, to) = edge.endpoints();
        edge.materialize(parallelism[from], parallelism[to], config.channel_capacity);
    }
    let cancel = Arc::new(AtomicBool::new(false));
    let restored_from = restore.as_ref().map(|m| m.checkpoint_id);
    let env = JobEnv {
        job: name.clone(),
        parallelism: parallelism.clone(),
        batch_size: config.batch_size,
        drain_at_end: config.drain_at_end,
        state_cache_entries: config.state_cache_entries,
        state_write_behind_entries: config.state_write_behind_entries,
        checkpoint_interval_ms: config.checkpoint_interval.map(|d| d.as_millis() as i64),
        cancel: cancel.clone(),
        operators: operators.clone(),
        restore,
        union_only,
        state: state.clone(),
    };
    let (events_tx, events_rx) = crossbeam_channel::unbounded();
    let mut bodies = Vec::new();
    for v in &vertices {
        let Some(make) = &v.make else { continue };
        for s in 0..v.parallelism {
            let stats = Arc::new(TaskStats::default());
            let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
            let asks = events_tx.clone();
            let body = make(&TaskContext {
                env: &env,
                subtask: s,
                stats: stats.clone(),
                snapshot_jobs: jobs_tx.clone(),
                checkpoint_request: CheckpointRequest::new(move || {
                    let _ = asks.send(RuntimeEvent::Request { then_stop: false });
                }),
            })?;
            bodies.push((
                format!("{}[{}]", v.name, s),
                v.is_source,
                body,
                stats,
                (jobs_tx, jobs_rx),
            ));
        }
    }
    drop(env);
    state.drop_restore_cache();
    let restore_time = started.elapsed();
    if restored_from.is_some() {
        tracing::info!(
            "job {name}: state restored in {} ms: {} file(s) fetched from the store, {} reused from local disk",
            restore_time.as_millis(),
            state.fetched_at_restore.load(Ordering::Relaxed),
            state.reused_at_restore.load(Ordering::Relaxed)
        );
    }
    crate::failpoint::hit("restored");
    let graph = describe::JobGraph::of(
        &name,
        &vertices,
        &edges
            .iter()
            .map(|e| {
                let (from, to) = e.endpoints();
                (from, to, e.kind())
            })
            .collect::<Vec<_>>(),
        &operators,
    );
    let board = Arc::new(StatusBoard::new(
        name.clone(),
        started,
        bodies
            .iter()
            .map(|(name, is_source, _, stats, _)| (name.clone(), *is_source, stats.clone()))
            .collect(),
        restored_from,
        graph,
        config.describe(),
    ));
    let mut tasks = Vec::new();
    for (index, (name, is_source, body, stats, (snapshots, jobs))) in bodies.into_iter().enumerate() {
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
        let snapshotter = spawn_snapshotter(index, name.clone(), events_tx.clone(), jobs)?;
        let rt = TaskRuntime {
            name: name.clone(),
            commands: cmd_rx,
            events: events_tx.clone(),
            cancel: cancel.clone(),
            snapshots,
            stats: stats.clone(),
        };
        let events = events_tx.clone();
        let task_name = name.clone();
        let thread = std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(rt)));
                stats.finished.store(true, Ordering::Relaxed);
                let event = match result {
                    Ok(Ok(())) => RuntimeEvent::Finished { task: index },
                    Ok(Err(error)) => RuntimeEvent::Failed { task: index, error },
                    Err(p) => RuntimeEvent::Failed {
                        task: index,
                        error: WeirError::Panic {
                            task: task_name,
                            message: panic_message(&p),
                        },
                    },
                };
                let _ = events.send(event);
            })
            .map_err(|e| WeirError::io("cannot spawn task thread", &name, e))?;
        tasks.push(RunningTask {
            name,
            is_source,
            commands: cmd_tx,
            thread: Some(thread),
            snapshotter: Some(snapshotter),
        });
    }
    let coordinator = Coordinator::new(
        CoordinatorConfig {
            interval_ms: config.checkpoint_interval.map(|d| d.as_millis() as u64),
            timeout_ms: config.checkpoint_timeout.as_millis() as u64,
            retained: config.retained_checkpoints,
        },
        tasks.len(),
        next_id,
        existing,
    );
    let mut driver = Driver {
        job: name.clone(),
        store,
        locks,
        drained: false,
        drain_at_end: config.drain_at_end,
        persist_timeout: config.checkpoint_timeout,
        lingering: Vec::new(),
        stuck: Vec::new(),
        coordinator,
        tasks,
        events: events_rx,
        cancel,
        started,
        restore_time,
        uploads: Vec::new(),
        restored_from,
        completed: 0,
        last: restored_from,
        parallelism_by_uid: parallelism_by_uid(&operators, &parallelism),
        triggered_at: None,
        triggered_wall_ms: 0,
        failed_task: None,
        durations: Vec::new(),
        started_at: Vec::new(),
        skipped,
        board: board.clone(),
        // Sample at once, so that rates are known after the first second.
        sampled: Instant::now()
            .checked_sub(Duration::from_secs(1))
            .unwrap_or_else(Instant::now),
        last_bytes: 0,
        written_behind,
        timers_kept,
    };
    let thread = std::thread::Builder::new()
        .name("weir-coordinator".into())
        .spawn(move || driver.run())
        .map_err(|e| WeirError::io("cannot spawn coordinator thread", "weir-coordinator", e))?;
    Ok(JobHandle {
        controller: JobController {
            events: events_tx,
            board,
        },
        driver: thread,
    })
}

fn parallelism_by_uid(operators: &[OperatorInfo], parallelism: &[usize]) -> BTreeMap<String, usize> {
    operators
        .iter()
        .filter_map(|o| Some((o.uid.clone()?, parallelism[o.vertex])))
        .collect()
}

/// `<dir>/<job>`, locked for this run.
fn lock_local_root(dir: &std::path::Path, job: &str, locks: &mut Vec<DirLock>) -> Result<std::path::PathBuf> {
    let root = dir.join(job);
    locks.push(DirLock::acquire(&root, job)?);
    Ok(root)
}

/// A checkpoint must fit the job: same uids with state, same parallelism.
/// With `allow_non_restored` (Flink's `--allowNonRestoredState`) what does
/// not fit is dropped instead, with a warning naming it: state of uids the
/// job no longer has, and the per-subtask state of operators whose
/// parallelism changed. The latter's states stay readable as a whole
/// (`JobEnv::restored_all`), so a source that finds its splits there (Kafka
/// partitions) keeps its positions.
fn reconcile(
    operators: &[OperatorInfo],
    parallelism: &[usize],
    m: &mut Manifest,
    store: &CheckpointStore,
    allow_non_restored: bool,
) -> Result<BTreeMap<String, Vec<SubtaskState>>> {
    let path = store.checkpoint_path(CheckpointId(m.checkpoint_id));
    let choice = "start with JobConfig::allow_non_restored_state (--allow-non-restored-state) to drop it knowingly";
    let mut union_only = BTreeMap::new();
    let uids: Vec<String> = m.operators.keys().cloned().collect();
    for uid in uids {
        let Some(snap) = m.operators.get(&uid) else { continue };
        let Some(op) = operators.iter().find(|o| o.uid.as_deref() == Some(uid.as_str())) else {
            if !allow_non_restored {
                return Err(WeirError::Checkpoint {
                    path,
                    message: format!(
                        "it holds state of operator uid `{uid}`, which this job does not have (was a uid renamed?); \
                         {choice}"
                    ),
                });
            }
            tracing::warn!(
                "checkpoint {}: dropping the state of uid `{uid}`, which the job no longer has",
                m.checkpoint_id
            );
            m.operators.remove(&uid);
            continue;
        };
        let p = parallelism[op.vertex];
        let keyed = snap.subtasks.iter().any(|s| matches!(s, SubtaskState::Rocks(_)));
        if snap.parallelism != p && keyed {
            // Keyed state moves by key group: each new subtask rebuilds its
            // range from the instances that held it (`RocksInstance::open`).
            tracing::info!(
                "checkpoint {}: operator `{uid}` ran with parallelism {} and now has {p}: its keyed state is \
                 redistributed by key group",
                m.checkpoint_id,
                snap.parallelism
            );
            continue;
        }
        if snap.parallelism != p && op.positions_by_split {
            tracing::info!(
                "checkpoint {}: source `{uid}` ran with parallelism {} and now has {p}: its positions are looked up \
                 by split in the states of all its former subtasks",
                m.checkpoint_id,
                snap.parallelism
            );
            if let Some(snap) = m.operators.remove(&uid) {
                union_only.insert(uid, snap.subtasks);
            }
            continue;
        }
        if snap.parallelism != p && op.adopts_state {
            tracing::info!(
                "checkpoint {}: sink `{uid}` ran with parallelism {} and now has {p}: former subtask j's pending \
                 output is committed by subtask j % {p}",
                m.checkpoint_id,
                snap.parallelism
            );
            if let Some(snap) = m.operators.remove(&uid) {
                union_only.insert(uid, snap.subtasks);
            }
            continue;
        }
        if snap.parallelism != p {
            if !allow_non_restored {
                return Err(WeirError::Checkpoint {
                    path,
                    message: format!(
                        "operator `{uid}` ran with parallelism {} and now has {p}; its state is kept per subtask \
                         (keyed state is redistributed by key group, this is not keyed state); {choice}",
                        snap.parallelism
                    ),
                });
            }
            if !op.is_source {
                // A sink's state holds output not yet committed (its last
                // checkpoint's epochs): dropping it would lose that output.
                return Err(WeirError::Checkpoint {
                    path,
                    message: format!(
                        "sink `{uid}` ran with parallelism {} and now has {p}: its state may hold output of the last \
                         checkpoint that is not committed yet, which would be lost; run it once more with parallelism \
                         {} (a bounded run or a stop commits it), then change it",
                        snap.parallelism, snap.parallelism
                    ),
                });
            }
            tracing::warn!(
                "checkpoint {}: operator `{uid}` ran with parallelism {} and now has {p}: its positions are looked \
                 up by split (Kafka partitions) in the states of all its former subtasks",
                m.checkpoint_id,
                snap.parallelism,
            );
            if let Some(snap) = m.operators.remove(&uid) {
                union_only.insert(uid, snap.subtasks);
            }
        }
    }
    Ok(union_only)
}
