//! Event-time windows: per-sensor temperature statistics (count, mean, max)
//! over 10-second tumbling windows, from a JSON-lines file whose readings
//! arrive out of order.
//!
//! ```text
//! readings.jsonl -> key_by(sensor) -> window_aggregate(Tumbling 10 s, TempStats)
//!     -> (sensor, Windowed::Result { window, stats } | Windowed::Late(reading)) -> printed
//! ```
//!
//! ```sh
//! cargo run --example windowed_aggregation                       # built-in sample readings
//! cargo run --example windowed_aggregation -- --input my.jsonl   # {"sensor":"s1","ts":1700000001000,"celsius":20.5}
//! ```
//!
//! The source's watermark allows 2 s of disorder (Flink's
//! `forBoundedOutOfOrderness`): watermark = newest event time - 2 s - 1 ms. A
//! window fires once the watermark passes its end; a reading that arrives
//! later than that is not dropped but comes out as `Windowed::Late` (the side
//! output). The run is bounded and *drains* at the end
//! (`JobConfig::drain_at_end`): event time jumps to the end, so the last,
//! still open windows fire before the final checkpoint.

use clap::Parser;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use weir::connectors::collect::CollectSink;
use weir::connectors::line_source::LineSource;
use weir::operators::{Aggregator, Tumbling, Window, Windowed};
use weir::{JobBuilder, JobConfig};

#[derive(Parser)]
struct Args {
    /// JSON-lines readings; default: a built-in sample with out-of-order and late readings.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Window size in ms.
    #[arg(long, default_value_t = 10_000)]
    window_ms: i64,
    /// How far a reading may lag behind the newest one, in ms.
    #[arg(long, default_value_t = 2_000)]
    out_of_orderness_ms: i64,
}

/// One sensor reading; `ts` is the event time in ms since the epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reading {
    sensor: String,
    ts: i64,
    celsius: f64,
}

/// The built-in sample, in arrival order (times are 2023-11-14 22:13:xx UTC).
const SAMPLE: &str = r#"
{"sensor":"s1","ts":1700000001000,"celsius":20.0}
{"sensor":"s2","ts":1700000002000,"celsius":18.0}
{"sensor":"s1","ts":1700000004000,"celsius":21.0}
{"sensor":"s1","ts":1700000003000,"celsius":20.5}
{"sensor":"s2","ts":1700000008000,"celsius":19.0}
{"sensor":"s2","ts":1700000011000,"celsius":18.5}
{"sensor":"s1","ts":1700000009500,"celsius":21.5}
{"sensor":"s1","ts":1700000012000,"celsius":22.0}
{"sensor":"s1","ts":1700000005000,"celsius":99.9}
{"sensor":"s2","ts":1700000019000,"celsius":20.0}
{"sensor":"s1","ts":1700000015000,"celsius":23.0}
{"sensor":"s1","ts":1700000021000,"celsius":24.0}
{"sensor":"s2","ts":1700000025000,"celsius":21.0}
"#;
// s1 at :09.5 arrives after s2 at :11, but within the 2 s bound: still counted.
// s1 at :12 moves the watermark to :09.999, so window [:00, :10) fires;
// s1 at :05 (99.9 °C) then arrives too late for it: a late record.

/// Count, mean and maximum of a window (Flink's `AggregateFunction`): one
/// small accumulator per key and window, updated per record.
#[derive(Clone)]
struct TempStats;

#[derive(Debug)]
struct Stats {
    count: u64,
    mean: f64,
    max: f64,
}

impl Aggregator<Reading, Stats> for TempStats {
    /// (count, sum, max): kept in keyed state, so it must be serde.
    type Acc = (u64, f64, f64);
    fn create(&self) -> Self::Acc {
        (0, 0.0, f64::MIN)
    }
    fn add(&self, acc: &mut Self::Acc, r: &Reading) {
        *acc = (acc.0 + 1, acc.1 + r.celsius, acc.2.max(r.celsius));
    }
    fn result(&self, &(count, sum, max): &Self::Acc) -> Stats {
        Stats {
            count,
            mean: sum / count.max(1) as f64,
            max,
        }
    }
}

fn parse(line: &[u8]) -> Result<Reading, String> {
    serde_json::from_slice(line).map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    init_logging();
    let args = Args::parse();
    let scratch = tempfile::tempdir()?; // checkpoints (and the sample file) go here
    let input = match args.input {
        Some(path) => path,
        None => {
            let path = scratch.path().join("readings.jsonl");
            std::fs::write(&path, SAMPLE.trim_start())?;
            path
        }
    };

    // Event time and watermarks come from the source.
    let source = LineSource::new(&input, parse).event_time(|r: &Reading| r.ts, args.out_of_orderness_ms);
    let results = Arc::new(Mutex::new(Vec::new()));
    let job = JobBuilder::new("windowed-aggregation");
    job.source("readings", source.factory())
        .uid("readings")
        .key_by(|r: &Reading| r.sensor.clone())
        // Sliding windows: Sliding::of(size_ms, slide_ms); sessions: .session_aggregate(..).
        .window_aggregate("stats", Tumbling::of(args.window_ms), |r: &Reading| r.ts, TempStats)
        .uid("stats") // open windows and their accumulators are keyed state in RocksDB
        .sink("collect", CollectSink::factory(results.clone()));

    let config = JobConfig {
        // Fire every window at the end of the input instead of keeping the
        // open ones in the final checkpoint for a next run.
        drain_at_end: true,
        // The watermark advances after each batch the source hands over; one
        // line per batch lets this tiny file show out-of-order and late
        // readings. Leave the default (1024) for real inputs.
        batch_size: 1,
        ..JobConfig::with_checkpoint_dir(scratch.path().join("checkpoints"))
    };
    let summary = job.build()?.run(config)?;

    let mut results: Vec<_> = results
        .lock()
        .map_err(|_| anyhow::anyhow!("a sink panicked"))?
        .drain(..)
        .collect();
    results.sort_by_key(|(sensor, w)| match w {
        Windowed::Result { window, .. } => (0, window.start, sensor.clone()),
        Windowed::Late(r) => (1, r.ts, sensor.clone()),
    });
    for (sensor, windowed) in results {
        match windowed {
            Windowed::Result { window, value: s } => println!(
                "window {}  {sensor}  count {}  mean {:.2}  max {:.1}",
                span(window),
                s.count,
                s.mean,
                s.max
            ),
            Windowed::Late(r) => println!("late     {sensor} reading at {} ({} °C)", clock(r.ts), r.celsius),
        }
    }
    println!(
        "done in {:.1?}, final checkpoint {:?}",
        summary.elapsed, summary.last_checkpoint
    );
    Ok(())
}

/// `hh:mm:ss-hh:mm:ss` (UTC) of a window.
fn span(w: Window) -> String {
    format!("{}-{}", clock(w.start), clock(w.end))
}

fn clock(ms: i64) -> String {
    let s = ms.div_euclid(1000).rem_euclid(86_400);
    let frac = ms.rem_euclid(1000);
    let hms = format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
    if frac == 0 {
        hms
    } else {
        format!("{hms}.{frac:03}")
    }
}

/// Logs to stderr; `WEIR_LOG=info` shows checkpoints and more.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
