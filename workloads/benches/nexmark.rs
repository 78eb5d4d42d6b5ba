//! Nexmark with the built-in generator: every query at p = 1 (or as given),
//! RocksDB state, a checkpoint every second, bounded + drain. Prints one
//! JSON line per query with events/s (first event to the job's end).
//!
//! `cargo bench --bench nexmark [-- --events N --queries q0,q5 --parallelism 1 --checkpoint-ms 1000]`

use std::time::{Duration, Instant};
use weir::JobConfig;
use weir_workloads::nexmark::generator::GeneratorConfig;
use weir_workloads::nexmark::queries::Query;
use weir_workloads::nexmark::{nexmark_job, EventSource, RowSink, RunStats};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let events: u64 = arg(&args, "--events").map_or(Ok(10_000_000), |s| s.parse())?;
    let checkpoint_ms: u64 = arg(&args, "--checkpoint-ms").map_or(Ok(1000), |s| s.parse())?;
    let parallelism: usize = arg(&args, "--parallelism").map_or(Ok(1), |s| s.parse())?;
    let queries: Vec<Query> = match arg(&args, "--queries") {
        Some(list) => list.split(',').map(str::parse).collect::<Result<_, _>>()?,
        None => Query::ALL.to_vec(),
    };
    for query in queries {
        let dir = tempfile::tempdir()?;
        let stats = RunStats::new();
        let generator = GeneratorConfig {
            events: Some(events),
            ..GeneratorConfig::default()
        };
        let (job, _) = nexmark_job(
            "nexmark-bench",
            query,
            &EventSource::Generator(generator),
            RowSink::Stats(stats.clone()),
            parallelism,
        )?;
        let config = JobConfig {
            checkpoint_interval: (checkpoint_ms > 0).then(|| Duration::from_millis(checkpoint_ms)),
            drain_at_end: true,
            ..JobConfig::with_checkpoint_dir(dir.path())
        };
        let started = Instant::now();
        let summary = job.run(config)?;
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "{{\"bench\":\"nexmark\",\"query\":\"{}\",\"p\":{parallelism},\"checkpoint_ms\":{checkpoint_ms},\"state\":\"rocksdb\",\"events\":{events},\"rows\":{},\"events_per_s\":{:.0},\"elapsed_s\":{elapsed:.3},\"checkpoints\":{}}}",
            query.name(),
            stats.rows(),
            events as f64 / elapsed,
            summary.checkpoints_completed,
        );
    }
    Ok(())
}
