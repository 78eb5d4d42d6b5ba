//! W1 of `shared/bench/WORKLOADS.md`: generator -> key_by(key) -> running sum
//! in RocksDB keyed state -> `(key, sum, ingest_ns)` -> counting sink, with a
//! checkpoint every second, at p = 1 and p = 2. Prints one JSON line per run.
//!
//! `cargo bench --bench w1 [-- --records N --parallelism 1,2 --checkpoint-ms 1000]`

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use weir::connectors::collect::SinkStats;
use weir::JobConfig;
use weir_workloads::jobs::w1_job;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let records: u64 = arg(&args, "--records").map_or(Ok(20_000_000), |s| s.parse())?;
    let checkpoint_ms: u64 = arg(&args, "--checkpoint-ms").map_or(Ok(1000), |s| s.parse())?;
    let parallelisms: Vec<usize> = arg(&args, "--parallelism")
        .unwrap_or_else(|| "1,2".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    for p in parallelisms {
        let dir = tempfile::tempdir()?;
        let stats = Arc::new(SinkStats::default());
        let config = JobConfig {
            checkpoint_interval: (checkpoint_ms > 0).then(|| Duration::from_millis(checkpoint_ms)),
            ..JobConfig::with_checkpoint_dir(dir.path())
        };
        let summary = w1_job(Some(records), None, p, stats.clone())?.run(config)?;
        let seen = stats.records.load(Ordering::Relaxed);
        assert_eq!(seen, records, "every record must reach the sink");
        let span_ns = stats
            .last_ns
            .load(Ordering::Relaxed)
            .saturating_sub(stats.first_ns.load(Ordering::Relaxed))
            .max(1);
        let mut durations: Vec<u128> = summary.checkpoint_durations.iter().map(|d| d.as_millis()).collect();
        durations.sort_unstable();
        let median = durations.get(durations.len() / 2).copied().unwrap_or(0);
        println!(
            "{{\"bench\":\"W1\",\"p\":{p},\"checkpoint_ms\":{checkpoint_ms},\"state\":\"rocksdb\",\"records\":{records},\"records_per_s\":{:.0},\"elapsed_s\":{:.3},\"checkpoints\":{},\"checkpoint_ms_median\":{median},\"checkpoint_ms_max\":{}}}",
            records as f64 * 1e9 / span_ns as f64,
            summary.elapsed.as_secs_f64(),
            summary.checkpoints_completed,
            durations.last().copied().unwrap_or(0),
        );
    }
    Ok(())
}
