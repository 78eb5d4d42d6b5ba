//! The `weir` command line: run built-in jobs, look at checkpoints.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use weir::checkpoint::{CheckpointStore, SubtaskState};
use weir::jobs::{demo_job, DemoOptions};
use weir::JobConfig;

/// weir: record-at-a-time stream processing with exactly-once RocksDB state.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a built-in job.
    #[command(subcommand)]
    Run(RunCommand),
    /// Look at the checkpoints of a job.
    #[command(subcommand)]
    Checkpoints(CheckpointsCommand),
}

#[derive(Subcommand)]
enum RunCommand {
    /// generator -> key_by(key) -> running count and sum (RocksDB) -> exactly-once files.
    ///
    /// Bounded by default: generates --records records, takes a final checkpoint
    /// and exits; a second run with the same --checkpoint-dir resumes where the
    /// first stopped (and so has nothing left to do).
    ///
    /// Example: weir run demo --records 1000000 --parallelism 2
    Demo {
        /// Records to generate in total (0 = endless).
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Records per second in total (0 = as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Parallelism of every operator.
        #[arg(long, short, default_value_t = 2)]
        parallelism: usize,
        #[command(flatten)]
        common: CommonArgs,
        /// Directory of the committed output files.
        #[arg(long, default_value = "weir-output")]
        output: PathBuf,
    },
}

#[derive(clap::Args)]
struct CommonArgs {
    /// Root directory of the checkpoint store.
    #[arg(long, default_value = "weir-checkpoints")]
    checkpoint_dir: PathBuf,
    /// Milliseconds between checkpoints (0 = only the final one).
    #[arg(long, default_value_t = 1000)]
    checkpoint_interval_ms: u64,
    /// Abort a checkpoint not complete after this many milliseconds.
    #[arg(long, default_value_t = 600_000)]
    checkpoint_timeout_ms: u64,
}

#[derive(Subcommand)]
enum CheckpointsCommand {
    /// List the complete checkpoints of a job.
    ///
    /// Example: weir checkpoints list weir-checkpoints --job demo
    List {
        /// Root directory of the checkpoint store.
        dir: PathBuf,
        /// The job name.
        #[arg(long, default_value = "demo")]
        job: String,
    },
    /// Print one manifest (default: the newest usable one).
    ///
    /// Example: weir checkpoints show weir-checkpoints --job demo --json
    Show {
        /// Root directory of the checkpoint store.
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

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Run(RunCommand::Demo {
            records,
            rate,
            parallelism,
            common,
            output,
        }) => {
            let options = DemoOptions {
                records: (records > 0).then_some(records),
                rate: (rate > 0).then_some(rate),
                parallelism,
                output: output.clone(),
            };
            let config = JobConfig {
                checkpoint_interval: (common.checkpoint_interval_ms > 0)
                    .then(|| Duration::from_millis(common.checkpoint_interval_ms)),
                checkpoint_timeout: Duration::from_millis(common.checkpoint_timeout_ms),
                ..JobConfig::with_checkpoint_dir(&common.checkpoint_dir)
            };
            let summary = demo_job(&options)?.run(config).context("job `demo` failed")?;
            println!(
                "job {} done in {:.2?}: restored from {}, {} checkpoints, last {}; output in {}",
                summary.job,
                summary.elapsed,
                summary
                    .restored_from
                    .map_or("nothing".into(), |c| format!("checkpoint {c}")),
                summary.checkpoints_completed,
                summary.last_checkpoint.map_or("none".into(), |c| c.to_string()),
                output.display()
            );
        }
        Command::Checkpoints(CheckpointsCommand::List { dir, job }) => {
            let store = CheckpointStore::open(&dir, &job)?;
            for id in store.complete_ids()? {
                match store.read_manifest(id) {
                    Ok(m) => println!(
                        "chk-{}\t{}\t{} operators{}",
                        m.checkpoint_id,
                        m.created_unix_ms,
                        m.operators.len(),
                        if m.final_checkpoint { "\tfinal" } else { "" }
                    ),
                    Err(e) => println!("chk-{}\tDAMAGED: {e}", id.0),
                }
            }
        }
        Command::Checkpoints(CheckpointsCommand::Show { dir, job, id, json }) => {
            let store = CheckpointStore::open(&dir, &job)?;
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
