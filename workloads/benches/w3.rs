//! W3 of `shared/bench/WORKLOADS.md`: generator with event time `i / 1000`
//! ms -> key_by(key) -> tumbling 1 s event-time window count per key in
//! RocksDB keyed state -> `(key, window_start, count)` -> sink that checks
//! the counts add up to N. Checkpoint every second. One JSON line per run.
//!
//! `cargo bench --bench w3 [-- --records N --parallelism 1,2 --checkpoint-ms 1000]`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::connectors::Sink;
use weir::operators::CheckpointId;
use weir::JobConfig;
use weir_workloads::jobs::w3_job;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Adds up the window counts and counts the rows.
struct SumSink(Arc<(AtomicU64, AtomicU64)>);

impl Sink<(u64, i64, u64)> for SumSink {
    fn is_stateful() -> bool {
        false
    }
    fn write(&mut self, records: &mut Vec<(u64, i64, u64)>) -> weir::Result<()> {
        let sum: u64 = records.iter().map(|r| r.2).sum();
        self.0 .0.fetch_add(sum, Ordering::Relaxed);
        self.0 .1.fetch_add(records.len() as u64, Ordering::Relaxed);
        records.clear();
        Ok(())
    }
    fn snapshot(&mut self, _id: CheckpointId) -> weir::Result<Vec<u8>> {
        Ok(Vec::new())
    }
    fn commit(&mut self, _id: CheckpointId) -> weir::Result<()> {
        Ok(())
    }
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
        let totals = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let sink_totals = totals.clone();
        let config = JobConfig {
            checkpoint_interval: (checkpoint_ms > 0).then(|| Duration::from_millis(checkpoint_ms)),
            drain_at_end: true,
            ..JobConfig::with_checkpoint_dir(dir.path())
        };
        let job = w3_job(records, p, move |_| Ok(SumSink(sink_totals.clone())))?;
        let started = Instant::now();
        let summary = job.run(config)?;
        let elapsed = started.elapsed().as_secs_f64();
        let (sum, rows) = (totals.0.load(Ordering::Relaxed), totals.1.load(Ordering::Relaxed));
        assert_eq!(sum, records, "the window counts must add up to N");
        let mut durations: Vec<u128> = summary.checkpoint_durations.iter().map(|d| d.as_millis()).collect();
        durations.sort_unstable();
        let median = durations.get(durations.len() / 2).copied().unwrap_or(0);
        println!(
            "{{\"bench\":\"W3\",\"p\":{p},\"checkpoint_ms\":{checkpoint_ms},\"state\":\"rocksdb\",\"records\":{records},\"windows\":{rows},\"records_per_s\":{:.0},\"elapsed_s\":{elapsed:.3},\"checkpoints\":{},\"checkpoint_ms_median\":{median},\"checkpoint_ms_max\":{}}}",
            records as f64 / elapsed,
            summary.checkpoints_completed,
            durations.last().copied().unwrap_or(0),
        );
    }
    Ok(())
}
