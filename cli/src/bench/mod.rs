//! `weir bench`: the workloads of `shared/bench/WORKLOADS.md` (W1, W2, W3)
//! and the Nexmark queries, with RocksDB state and checkpoints, printing a
//! table for people and one JSON line per run, and (W2) an SVG plot of
//! latency over time.

mod state;

use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::connectors::collect::{CountingSink, SinkStats};
use weir::JobConfig;
use weir_workloads::bench::{latency_svg, LatencyLog, LatencyReport, LatencySink};
use weir_workloads::jobs::{w1_job_with, w3_job};
use weir_workloads::nexmark::generator::GeneratorConfig;
use weir_workloads::nexmark::queries::Query;
use weir_workloads::nexmark::{nexmark_job, EventSource, RowSink, RunStats, Schedule};

/// The flags of `weir bench` (its help text is on the command).
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Workloads: w1 w2 w3 q0 q1 q2 q3 q5 q7 q8 q11, rescale (state built at the first of two
    /// --parallelism values, restored at the second), upload (state on s3:// against a plain
    /// client), takeover (a distributed shard's restore on another member, with and without
    /// prefetch) [default: w1 w2 w3].
    workloads: Vec<String>,
    /// Records (W1, W3) or events (Nexmark) per run [default: 20000000 (W1, W3), 10000000 (Nexmark)].
    #[arg(long)]
    records: Option<u64>,
    /// Records per second of W2, or events per second of a Nexmark run (then with latency).
    #[arg(long)]
    rate: Option<u64>,
    /// Seconds W2 runs.
    #[arg(long, default_value_t = 60)]
    duration_s: u64,
    /// Seconds of W2's start left out of the "after warm-up" latency.
    #[arg(long, default_value_t = 10)]
    warmup_s: u64,
    /// Parallelisms to run, comma-separated.
    #[arg(long, default_value = "1", value_delimiter = ',')]
    parallelism: Vec<usize>,
    /// Milliseconds between checkpoints (0: only the final one).
    #[arg(long, default_value_t = 1000)]
    checkpoint_interval_ms: u64,
    /// Distinct keys of W1/W2: the size of the keyed state.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Entries of the write-back cache per keyed task (0: the default).
    #[arg(long, default_value_t = 0)]
    cache_entries: usize,
    /// MiB of RocksDB's block cache, memtables included (0: the default, 256).
    #[arg(long, default_value_t = 0)]
    block_cache_mb: usize,
    /// upload: MiB of a RocksDB memtable (0: the default, 128). With a small
    /// --cache-entries the state is flushed as it grows, into SSTs of this
    /// size (RocksDB's steady layout) instead of one flush at the end.
    #[arg(long, default_value_t = 0)]
    write_buffer_mb: usize,
    /// W2: write the latency plot here (a file.svg, or a directory for one file per run).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Where checkpoints go [default: a temporary directory, removed after each run].
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Only the JSON lines, no table.
    #[arg(long)]
    json: bool,
    /// W1: serve the web UI on this address while it runs (to measure what
    /// an open page costs; the URL is printed to stderr at start).
    #[arg(long, value_name = "ADDR")]
    ui_addr: Option<std::net::SocketAddr>,
}

/// One finished run, for the table.
struct Row {
    name: String,
    p: usize,
    records: u64,
    per_s: f64,
    checkpoints: u64,
    ckpt_median_ms: f64,
    ckpt_max_ms: f64,
    latency: Option<weir_workloads::bench::Percentiles>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let workloads = if args.workloads.is_empty() {
        vec!["w1".to_string(), "w2".into(), "w3".into()]
    } else {
        args.workloads.clone()
    };
    let mut rows = Vec::new();
    for w in &workloads {
        match w.to_ascii_lowercase().as_str() {
            "rescale" => {
                state::rescale(&args)?;
                continue;
            }
            "upload" => {
                state::upload(&args)?;
                continue;
            }
            "takeover" => {
                state::takeover(&args)?;
                continue;
            }
            _ => {}
        }
        for &p in &args.parallelism {
            anyhow::ensure!(p >= 1, "--parallelism must be at least 1");
            let scratch = tempfile::tempdir().context("cannot create a temporary checkpoint directory")?;
            let dir = args
                .checkpoint_dir
                .clone()
                .unwrap_or_else(|| scratch.path().to_path_buf());
            let mut config = JobConfig {
                checkpoint_interval: (args.checkpoint_interval_ms > 0)
                    .then(|| Duration::from_millis(args.checkpoint_interval_ms)),
                restore: false,
                ..JobConfig::with_checkpoint_dir(dir)
            };
            if args.cache_entries > 0 {
                config.state_cache_entries = args.cache_entries;
            }
            if args.block_cache_mb > 0 {
                config.state_block_cache_bytes = args.block_cache_mb << 20;
            }
            let row = match w.to_ascii_lowercase().as_str() {
                "w1" => w1(&args, p, config)?,
                "w2" => w2(&args, p, config)?,
                "w3" => w3(&args, p, config)?,
                other => {
                    let query: Query = other
                        .parse()
                        .map_err(|e| anyhow::anyhow!("unknown workload `{w}`: w1, w2, w3 or a Nexmark query ({e})"))?;
                    nexmark(&args, query, p, config)?
                }
            };
            rows.push(row);
        }
    }
    if !args.json && !rows.is_empty() {
        print_table(&rows);
    }
    Ok(())
}

fn checkpoint_stats(summary: &weir::JobSummary) -> (f64, f64) {
    let mut ms: Vec<f64> = summary
        .checkpoint_durations
        .iter()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    (
        ms.get(ms.len() / 2).copied().unwrap_or(0.0),
        ms.last().copied().unwrap_or(0.0),
    )
}

/// Prints one JSON line, with the process's peak resident memory so far.
fn json_line(mut fields: serde_json::Value) {
    if let (Some(map), Some(mb)) = (fields.as_object_mut(), peak_rss_mb()) {
        map.insert("peak_rss_mb".into(), mb.into());
    }
    println!("{fields}");
}

/// Peak resident set size of this process in MiB (`VmHWM`, Linux).
fn peak_rss_mb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

fn w1(args: &BenchArgs, p: usize, config: JobConfig) -> anyhow::Result<Row> {
    let records = args.records.unwrap_or(20_000_000);
    let stats = Arc::new(SinkStats::default());
    let job = w1_job_with(
        Some(records),
        None,
        args.keys,
        p,
        CountingSink::factory_with(stats.clone()),
    )?;
    let summary = match args.ui_addr {
        None => job.run(config)?,
        Some(addr) => {
            let handle = job.start(config)?;
            let ui = handle.controller().serve_ui(addr, weir::ui::UiOptions::default())?;
            eprintln!("web UI: {}", ui.url());
            handle.join()?
        }
    };
    let seen = stats.records.load(std::sync::atomic::Ordering::Relaxed);
    anyhow::ensure!(seen == records, "W1 lost records: {seen} of {records} reached the sink");
    let span_ns = stats
        .last_ns
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(stats.first_ns.load(std::sync::atomic::Ordering::Relaxed))
        .max(1);
    let per_s = records as f64 * 1e9 / span_ns as f64;
    let (median, max) = checkpoint_stats(&summary);
    json_line(serde_json::json!({
        "bench": "W1", "p": p, "state": "rocksdb", "keys": args.keys, "records": records,
        "records_per_s": per_s.round(), "elapsed_s": summary.elapsed.as_secs_f64(),
        "checkpoint_interval_ms": args.checkpoint_interval_ms, "checkpoints": summary.checkpoints_completed,
        "checkpoint_ms_median": median, "checkpoint_ms_max": max,
    }));
    Ok(Row {
        name: "W1".into(),
        p,
        records,
        per_s,
        checkpoints: summary.checkpoints_completed,
        ckpt_median_ms: median,
        ckpt_max_ms: max,
        latency: None,
    })
}

fn w2(args: &BenchArgs, p: usize, config: JobConfig) -> anyhow::Result<Row> {
    let rate = args.rate.unwrap_or(200_000);
    anyhow::ensure!(rate > 0, "--rate must be > 0");
    let records = rate * args.duration_s;
    let log = LatencyLog::new(weir::clock::now_ns());
    let job = w1_job_with(
        Some(records),
        Some(rate),
        args.keys,
        p,
        LatencySink::factory(log.clone()),
    )?;
    let started = Instant::now();
    let summary = job.run(config)?;
    let elapsed = started.elapsed();
    let checkpoints: Vec<(Duration, Duration)> = summary
        .checkpoint_started
        .iter()
        .copied()
        .zip(summary.checkpoint_durations.iter().copied())
        .collect();
    let report: LatencyReport = log.report(Duration::from_secs(args.warmup_s), &checkpoints);
    let (median, max) = checkpoint_stats(&summary);
    if let Some(path) = &args.plot {
        let file = if path.extension().is_some_and(|e| e == "svg") {
            path.clone()
        } else {
            std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
            path.join(format!("w2-p{p}-{rate}.svg"))
        };
        let title = format!(
            "weir W2: {rate} records/s, p = {p}, RocksDB, checkpoint every {} ms",
            args.checkpoint_interval_ms
        );
        std::fs::write(&file, latency_svg(&title, &report, &checkpoints))
            .with_context(|| format!("cannot write the plot {}", file.display()))?;
        if !args.json {
            eprintln!("wrote {}", file.display());
        }
    }
    json_line(serde_json::json!({
        "bench": "W2", "p": p, "state": "rocksdb", "keys": args.keys, "rate": rate, "records": records,
        "elapsed_s": elapsed.as_secs_f64(),
        "checkpoint_interval_ms": args.checkpoint_interval_ms, "checkpoints": summary.checkpoints_completed,
        "checkpoint_ms_median": median, "checkpoint_ms_max": max,
        "latency_ms": {"whole": report.whole, "after_warmup": report.after_warmup, "around_checkpoints": report.around_checkpoints, "warmup_s": report.warmup_s},
    }));
    Ok(Row {
        name: format!("W2 @{rate}/s"),
        p,
        records,
        per_s: records as f64 / elapsed.as_secs_f64(),
        checkpoints: summary.checkpoints_completed,
        ckpt_median_ms: median,
        ckpt_max_ms: max,
        latency: report.after_warmup.or(report.whole),
    })
}

fn w3(args: &BenchArgs, p: usize, mut config: JobConfig) -> anyhow::Result<Row> {
    let records = args.records.unwrap_or(20_000_000);
    config.drain_at_end = true;
    let job = w3_job(records, p, CountingSink::factory())?;
    let started = Instant::now();
    let summary = job.run(config)?;
    let elapsed = started.elapsed().as_secs_f64();
    let (median, max) = checkpoint_stats(&summary);
    json_line(serde_json::json!({
        "bench": "W3", "p": p, "state": "rocksdb", "records": records,
        "records_per_s": (records as f64 / elapsed).round(), "elapsed_s": elapsed,
        "checkpoint_interval_ms": args.checkpoint_interval_ms, "checkpoints": summary.checkpoints_completed,
        "checkpoint_ms_median": median, "checkpoint_ms_max": max,
    }));
    Ok(Row {
        name: "W3".into(),
        p,
        records,
        per_s: records as f64 / elapsed,
        checkpoints: summary.checkpoints_completed,
        ckpt_median_ms: median,
        ckpt_max_ms: max,
        latency: None,
    })
}

fn nexmark(args: &BenchArgs, query: Query, p: usize, mut config: JobConfig) -> anyhow::Result<Row> {
    let events = args.records.unwrap_or(10_000_000);
    config.drain_at_end = true;
    let generator = GeneratorConfig {
        events: Some(events),
        pace_origin_ns: args.rate.map(|_| weir::clock::now_ns()),
        rate: args.rate,
        ..GeneratorConfig::default()
    };
    let stats = match args.rate {
        Some(rate) => RunStats::with_schedule(Some(Schedule {
            config: generator,
            origin_ns: generator.pace_origin_ns.unwrap_or_else(weir::clock::now_ns),
            rate,
        })),
        None => RunStats::new(),
    };
    let (job, _) = nexmark_job(
        "nexmark-bench",
        query,
        &EventSource::Generator(generator),
        RowSink::Stats(stats.clone()),
        p,
    )?;
    let started = Instant::now();
    let summary = job.run(config)?;
    let elapsed = started.elapsed().as_secs_f64();
    let (median, max) = checkpoint_stats(&summary);
    let latency = stats.latency_ms(0.5).map(|p50| weir_workloads::bench::Percentiles {
        count: stats.rows(),
        p50_ms: p50,
        p90_ms: stats.latency_ms(0.9).unwrap_or(0.0),
        p99_ms: stats.latency_ms(0.99).unwrap_or(0.0),
        p999_ms: stats.latency_ms(0.999).unwrap_or(0.0),
        p9999_ms: stats.latency_ms(0.9999).unwrap_or(0.0),
        max_ms: stats.latency_max_ms().unwrap_or(0.0),
    });
    json_line(serde_json::json!({
        "bench": "nexmark", "query": query.name(), "p": p, "state": "rocksdb", "events": events, "rate": args.rate,
        "rows": stats.rows(), "events_per_s": (events as f64 / elapsed).round(), "elapsed_s": elapsed,
        "checkpoint_interval_ms": args.checkpoint_interval_ms, "checkpoints": summary.checkpoints_completed,
        "checkpoint_ms_median": median, "checkpoint_ms_max": max, "latency_ms": latency,
    }));
    Ok(Row {
        name: format!("nexmark {}", query.name()),
        p,
        records: events,
        per_s: events as f64 / elapsed,
        checkpoints: summary.checkpoints_completed,
        ckpt_median_ms: median,
        ckpt_max_ms: max,
        latency,
    })
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<16} {:>2} {:>12} {:>14} {:>6} {:>18} {:>30}",
        "workload", "p", "records", "records/s", "ckpts", "ckpt ms med/max", "latency ms p50/p99/p99.9/max"
    );
    for r in rows {
        let latency = r.latency.map_or("-".to_string(), |l| {
            format!("{:.2}/{:.2}/{:.2}/{:.1}", l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms)
        });
        println!(
            "{:<16} {:>2} {:>12} {:>14.0} {:>6} {:>18} {:>30}",
            r.name,
            r.p,
            r.records,
            r.per_s,
            r.checkpoints,
            format!("{:.0}/{:.0}", r.ckpt_median_ms, r.ckpt_max_ms),
            latency
        );
    }
}
