//! `weir run demo`: generator -> key_by -> running count and sum -> exactly-once files.

use crate::common::CommonArgs;
use crate::session::{run_until_signalled, summary_json, ProgressOf};
use anyhow::Context;
use std::path::PathBuf;
use weir_workloads::jobs::{demo_job, DemoOptions};

/// The flags of `weir run demo`.
#[derive(clap::Args)]
pub(crate) struct DemoArgs {
    /// Records to generate in total (0 = endless).
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) records: u64,
    /// Records per second in total (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub(crate) rate: u64,
    /// Parallelism of every operator.
    #[arg(long, short, default_value_t = 2)]
    pub(crate) parallelism: usize,
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// Directory of the committed output files.
    #[arg(long, default_value = "weir-output")]
    pub(crate) output: PathBuf,
    /// Also write a copy of the output here (a second sink fed by a tee).
    #[arg(long, value_name = "DIR")]
    pub(crate) tee: Option<PathBuf>,
    /// Print the run's summary and per-task counters as one JSON line.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs the demo job until it ends or is stopped by a signal.
pub(crate) fn run(args: DemoArgs) -> anyhow::Result<()> {
    let DemoArgs {
        records,
        rate,
        parallelism,
        common,
        output,
        tee,
        json,
    } = args;
    common.serve_metrics()?;
    let options = DemoOptions {
        records: (records > 0).then_some(records),
        rate: (rate > 0).then_some(rate),
        parallelism,
        output: output.clone(),
        tee_output: tee,
    };
    let progress = if records > 0 {
        ProgressOf::Records(records)
    } else {
        ProgressOf::Nothing
    };
    let (summary, status) = run_until_signalled(demo_job(&options)?, common.config()?, common.watch(), progress)
        .context("job `demo` failed")?;
    if json {
        let extra = serde_json::json!({"output": output.display().to_string()});
        println!("{}", summary_json(&summary, &status, extra));
        return Ok(());
    }
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
    Ok(())
}
