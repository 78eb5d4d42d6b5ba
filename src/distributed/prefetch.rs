//! Prefetch: a member downloads the newest SSTs of the shards it does not
//! run into their local state directories, so that when the group gives it
//! one of them (a member died or left) the restore finds most files on
//! local disk instead of downloading them (librdkafka has no custom
//! assignors, so there are no placed standbys; every member prefetches
//! every shard it does not run, at a cost of disk and store traffic).
//!
//! A file is downloaded next to the shard's directory and moved in only
//! while the shard is not starting or running here (a start marks the
//! shard busy first) nor in another process on this machine (the
//! directory's lock is taken for the move): no prefetched file lands in a
//! directory a running job owns. The restore checks each file's size and CRC-32 before it uses it.

use super::{MemberOptions, Shared};
use crate::checkpoint::{CheckpointStore, SubtaskState};
use crate::config::JobConfig;
use crate::error::Result;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What one pass downloaded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fetched {
    pub(crate) files: u64,
    pub(crate) bytes: u64,
}

/// The local state directory of shard job `job` (as the runtime makes it).
fn local_root(config: &JobConfig, job: &str) -> PathBuf {
    config
        .local_state_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("weir-state"))
        .join(job)
}

/// Prefetches every `every` until `stop`.
pub(crate) fn run(options: MemberOptions, shared: Arc<Shared>, every: Duration, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match pass(&options, &shared, &stop) {
            Ok(f) if f.files > 0 => tracing::info!(
                "member {}: prefetched {} file(s), {} MiB of shards it does not run",
                options.member_id,
                f.files,
                f.bytes >> 20
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("member {}: prefetch: {e} (trying again)", options.member_id),
        }
        let mut waited = Duration::ZERO;
        while waited < every && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            waited += Duration::from_millis(100);
        }
    }
}

/// One pass over every shard of the job not busy here.
pub(crate) fn pass(options: &MemberOptions, shared: &Shared, stop: &AtomicBool) -> Result<Fetched> {
    let mut total = Fetched::default();
    for stage in &options.stages {
        let partitions = super::repartition::partition_count(&options.cluster, &stage.topic)?;
        for partition in 0..partitions as i32 {
            if stop.load(Ordering::Relaxed) {
                return Ok(total);
            }
            let job = options.shard_job_name(&stage.name, partition);
            if shared.is_busy(&job) {
                continue;
            }
            let f = shard(&options.config, shared, &job)?;
            total.files += f.files;
            total.bytes += f.bytes;
        }
    }
    Ok(total)
}

/// Downloads the SSTs of `job`'s newest checkpoint missing locally.
pub(crate) fn shard(config: &JobConfig, shared: &Shared, job: &str) -> Result<Fetched> {
    // A shard that never checkpointed has nothing to fetch.
    let Ok(store) = CheckpointStore::open_existing_with(&config.checkpoint_dir, job, &config.checkpoint_store_options)
    else {
        return Ok(Fetched::default());
    };
    // On a file system a restore links the store's files: nothing to fetch.
    if store.local_dir().is_some() {
        return Ok(Fetched::default());
    }
    let Some(manifest) = store.restore_point()? else {
        return Ok(Fetched::default());
    };
    let root = local_root(config, job);
    let staging = root.with_file_name(format!(".{job}.prefetch"));
    let mut fetched = Fetched::default();
    for op in manifest.operators.values() {
        for state in &op.subtasks {
            let SubtaskState::Rocks(handle) = state else { continue };
            for f in handle.shared.iter().filter(|f| f.name.ends_with(".sst")) {
                let dest = root.join(&handle.instance).join("db").join(&f.name);
                if std::fs::metadata(&dest).is_ok_and(|m| m.len() == f.size) {
                    continue;
                }
                let tmp = staging.join(&f.name);
                make_dir(&staging)?;
                store.fetch(&f.path, &tmp, f.crc32)?;
                // Moved in only while the shard is not busy here (a start
                // marks it busy under the same lock before it looks) and
                // no other process on this machine holds its directory
                // (the job's own lock, held only for the move).
                if !shared.unless_busy(job, || {
                    let Ok(_held) = crate::checkpoint::lock::DirLock::acquire(&root, job) else {
                        return Ok(false);
                    };
                    make_dir(dest.parent().unwrap_or(&root))?;
                    std::fs::rename(&tmp, &dest)
                        .map_err(|e| crate::error::WeirError::io("cannot move a prefetched file", &dest, e))?;
                    Ok(true)
                })? {
                    let _ = std::fs::remove_dir_all(&staging);
                    return Ok(fetched);
                }
                fetched.files += 1;
                fetched.bytes += f.size;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&staging);
    Ok(fetched)
}

fn make_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| crate::error::WeirError::io("cannot create a prefetch directory", dir, e))
}
