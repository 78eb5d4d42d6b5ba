//! `weir checkpoints list|show|gc`: look at (and prune) a job's checkpoints.

use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;
use weir::checkpoint::{CheckpointStore, SubtaskState};

/// The `weir checkpoints` subcommands.
#[derive(Subcommand)]
pub(crate) enum CheckpointsCommand {
    /// List the complete checkpoints of a job.
    ///
    /// Example: weir checkpoints list weir-checkpoints --job demo
    List {
        /// Root of the checkpoint store: a directory, s3://bucket/prefix or az://container/prefix.
        dir: PathBuf,
        /// The job name.
        #[arg(long, default_value = "demo")]
        job: String,
        /// One JSON object per checkpoint.
        #[arg(long)]
        json: bool,
    },
    /// Delete all but the newest complete checkpoints, incomplete ones, and
    /// state files no kept checkpoint references. Refused while a run of the job holds its store.
    ///
    /// Example: weir checkpoints gc weir-checkpoints --job demo --keep 1
    Gc {
        /// Root of the checkpoint store: a directory, s3://bucket/prefix or az://container/prefix.
        dir: PathBuf,
        /// The job name.
        #[arg(long, default_value = "demo")]
        job: String,
        /// Complete checkpoints to keep (the newest).
        #[arg(long, default_value_t = 3)]
        keep: usize,
    },
    /// Print one manifest (default: the newest usable one).
    ///
    /// Example: weir checkpoints show weir-checkpoints --job demo --json
    Show {
        /// Root of the checkpoint store: a directory, s3://bucket/prefix or az://container/prefix.
        dir: PathBuf,
        /// The job name.
        #[arg(long, default_value = "demo")]
        job: String,
        /// Checkpoint id.
        #[arg(long)]
        id: Option<u64>,
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one `weir checkpoints` subcommand.
pub(crate) fn run(command: CheckpointsCommand) -> anyhow::Result<()> {
    match command {
        CheckpointsCommand::Gc { dir, job, keep } => {
            anyhow::ensure!(keep >= 1, "--keep must be at least 1");
            let store = CheckpointStore::open_existing(&dir, &job)?;
            // Pruning under a running job would delete files its next checkpoint references.
            let _lock = store.lock()?;
            let complete = store.complete_ids()?;
            let split = complete.len().saturating_sub(keep);
            let (remove, kept) = complete.split_at(split);
            store.prune(remove, kept)?;
            println!("kept {} checkpoint(s), deleted {}", kept.len(), remove.len());
        }
        CheckpointsCommand::List { dir, job, json } => {
            let store = CheckpointStore::open_existing(&dir, &job)?;
            let ids = store.complete_ids()?;
            if ids.is_empty() && !json {
                println!("job {job} has no complete checkpoint in {}", store.job_dir().display());
            }
            for id in ids {
                if json {
                    let line = match store.read_manifest(id) {
                        Ok(m) => {
                            serde_json::json!({"id": m.checkpoint_id, "created_unix_ms": m.created_unix_ms, "final": m.final_checkpoint, "operators": m.operators.len(), "bytes": m.state_bytes()})
                        }
                        Err(e) => serde_json::json!({"id": id.0, "damaged": e.to_string()}),
                    };
                    println!("{line}");
                    continue;
                }
                match store.read_manifest(id) {
                    Ok(m) => println!(
                        "chk-{}\t{}\t{} operators\t{} bytes{}",
                        m.checkpoint_id,
                        weir::clock::format_utc(m.created_unix_ms),
                        m.operators.len(),
                        m.state_bytes(),
                        if m.final_checkpoint { "\tfinal" } else { "" }
                    ),
                    Err(e) => println!("chk-{}\tDAMAGED: {e}", id.0),
                }
            }
        }
        CheckpointsCommand::Show { dir, job, id, json } => {
            let store = CheckpointStore::open_existing(&dir, &job)?;
            let manifest = match id {
                Some(id) => store.read_manifest(weir::operators::CheckpointId(id))?,
                None => store.restore_point()?.context("no checkpoint")?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&manifest)?);
            } else {
                println!(
                    "checkpoint {} of job {} (final: {})",
                    manifest.checkpoint_id, manifest.job, manifest.final_checkpoint
                );
                for (uid, op) in &manifest.operators {
                    println!("  {uid} (parallelism {})", op.parallelism);
                    for (s, state) in op.subtasks.iter().enumerate() {
                        match state {
                            SubtaskState::File { path, size } => println!("    [{s}] {size} bytes in {path}"),
                            SubtaskState::Bytes { hex, describe } => {
                                println!("    [{s}] {} bytes {describe}", hex.len() / 2)
                            }
                            SubtaskState::Rocks(h) => println!(
                                "    [{s}] RocksDB key groups {}..{}: {} SST ({} bytes), {} private files",
                                h.key_groups.0,
                                h.key_groups.1,
                                h.shared.len(),
                                h.shared.iter().map(|f| f.size).sum::<u64>(),
                                h.private.len()
                            ),
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
