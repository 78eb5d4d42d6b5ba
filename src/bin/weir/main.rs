//! The `weir` command line: run built-in jobs, look at checkpoints.

mod bench;
mod nexmark;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use weir::checkpoint::{CheckpointStore, SubtaskState};
use weir::config::{BadRecordsSetting, ConfigFile};
use weir::connectors::kafka::{BadRecordPolicy, Delivery};
use weir::jobs::{demo_job, kafka_count_job, DemoOptions, KafkaCountOptions};
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
    /// Run a Nexmark query (q0 q1 q2 q3 q5 q7 q8 q11) over Kafka, the built-in generator, or a file.
    ///
    /// Over Kafka (exactly-once; offsets and open windows in the checkpoints):
    ///   weir nexmark --query q5 --brokers 127.0.0.1:9092 --source-topic nexmark --sink-topic q5-out
    ///       --checkpoint-dir DIR [--bounded [--drain]] [--parallelism N] [--checkpoint-interval-ms MS]
    ///
    /// With the built-in generator (no broker; prints throughput, and latency with --rate):
    ///   weir nexmark --query q5 --generator --events 10000000 [--rate R]
    ///
    /// Over a file of JSON events, one per line (bounded + drain, rows as JSON lines):
    ///   weir nexmark --query q5 --source-file EVENTS.jsonl --sink-file OUT.jsonl
    ///
    /// Example: weir nexmark --query q5 --generator --events 1000000
    #[command(verbatim_doc_comment)]
    Nexmark(Box<nexmark::NexmarkArgs>),
    /// Benchmarks: W1, W2 (latency at a fixed rate, with a plot), W3 and the Nexmark queries.
    ///
    /// W1: generator -> key_by -> running sum (RocksDB) -> sink, as fast as possible.
    /// W2: W1 paced at --rate for --duration-s; latency = sink time - scheduled
    ///     emit time (no coordinated omission), p50..max for the whole run, after
    ///     the warm-up and around checkpoints; --plot writes latency over time (SVG).
    /// W3: tumbling 1 s event-time window count per key.
    /// q0..q11: a Nexmark query over the built-in generator (latency with --rate).
    ///
    /// Example: weir bench w1 w2 w3 --parallelism 1,2 --plot plots/
    /// Example: weir bench w2 --rate 200000 --duration-s 60 --plot w2.svg --json
    /// Example: weir bench q5 q7 --records 10000000
    #[command(verbatim_doc_comment)]
    Bench(bench::BenchArgs),
    /// The Kafka offsets stored in the newest checkpoint, and the lag to the topics' ends.
    ///
    /// Example: weir offsets weir-checkpoints --job kafka-count --brokers 127.0.0.1:9092
    Offsets {
        /// Root directory of the checkpoint store.
        dir: PathBuf,
        /// The job name.
        #[arg(long)]
        job: String,
        /// Kafka bootstrap servers: also show the lag to each partition's end.
        #[arg(long)]
        brokers: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RunCommand {
    /// Benchmarks: the same as `weir bench` (see `weir bench --help`).
    ///
    /// Example: weir run bench w2 --rate 200000 --duration-s 60 --plot w2.svg
    Bench(bench::BenchArgs),
    /// A Nexmark query: the same as `weir nexmark` (see `weir nexmark --help`).
    ///
    /// Example: weir run nexmark --query q5 --generator --events 1000000
    Nexmark(Box<nexmark::NexmarkArgs>),
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
        /// Print the run's summary and per-task counters as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Kafka -> key_by(key) -> running count and sum (RocksDB) -> Kafka.
    ///
    /// Input values are `id,key,value` (integers), output values `id,key,count,sum`.
    /// Offsets live in the checkpoints: after a crash or a bounded run, the next run
    /// continues exactly where the last checkpoint stopped.
    ///
    /// Example: weir run kafka-count --brokers 127.0.0.1:9092 --input in --output out --bounded
    KafkaCount {
        /// Kafka bootstrap servers [default: `kafka.brokers` of --config].
        #[arg(long)]
        brokers: Option<String>,
        /// Input topic.
        #[arg(long)]
        input: String,
        /// Output topic.
        #[arg(long)]
        output: String,
        /// Stop at the end offsets seen at start, take a final checkpoint, exit.
        #[arg(long)]
        bounded: bool,
        /// Output delivery guarantee [default: `kafka.delivery` of --config, or exactly-once].
        #[arg(long, value_enum)]
        delivery: Option<DeliveryArg>,
        /// Bad input values: `fail`, `skip`, or `dlq:TOPIC` [default:
        /// `kafka.bad_records` of --config, or fail].
        #[arg(long)]
        bad_records: Option<String>,
        /// Parallelism of every operator.
        #[arg(long, short, default_value_t = 2)]
        parallelism: usize,
        /// Job name (its directory under --checkpoint-dir).
        #[arg(long, default_value = "kafka-count")]
        job: String,
        #[command(flatten)]
        common: CommonArgs,
        /// Print the run's summary and per-task counters as one JSON line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DeliveryArg {
    None,
    AtLeastOnce,
    ExactlyOnce,
}

#[derive(clap::Args)]
struct CommonArgs {
    /// A TOML file with job settings (keys as in `weir::config::ConfigFile`);
    /// `WEIR_<KEY>` environment variables override it, flags override both.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Root directory of the checkpoint store [default: weir-checkpoints].
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Milliseconds between checkpoints, 0 = only the final one [default: 1000].
    #[arg(long)]
    checkpoint_interval_ms: Option<u64>,
    /// Abort a checkpoint not complete after this many milliseconds [default: 600000].
    #[arg(long)]
    checkpoint_timeout_ms: Option<u64>,
    /// Bounded runs: fire every event-time window and timer at the end
    /// (bounded + drain) instead of keeping them in the final checkpoint.
    #[arg(long)]
    drain: bool,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464).
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Print the job's live status (per task: records in/out and rates,
    /// backpressure, output queue, Kafka lag; the last checkpoint) to stderr
    /// every this many seconds.
    #[arg(long, value_name = "SECS")]
    status_every: Option<u64>,
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
        /// One JSON object per checkpoint.
        #[arg(long)]
        json: bool,
    },
    /// Delete all but the newest complete checkpoints, incomplete ones, and
    /// state files no kept checkpoint references. Do not run it while the job runs.
    ///
    /// Example: weir checkpoints gc weir-checkpoints --job demo --keep 1
    Gc {
        /// Root directory of the checkpoint store.
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

impl CommonArgs {
    /// The config file (empty without --config).
    fn file(&self) -> anyhow::Result<ConfigFile> {
        Ok(match &self.config {
            Some(path) => ConfigFile::read(path)?,
            None => ConfigFile::default(),
        })
    }

    /// Starts the Prometheus endpoint when asked for (flag, then
    /// `WEIR_METRICS_ADDR`, then `metrics_addr` of the config file).
    fn serve_metrics(&self) -> anyhow::Result<()> {
        let addr = match self.metrics_addr {
            Some(a) => Some(a),
            None => ConfigFile::from_env()?.metrics_addr.or(self.file()?.metrics_addr),
        };
        if let Some(addr) = addr {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .with_http_listener(addr)
                .install()
                .with_context(|| format!("cannot serve metrics on {addr} (--metrics-addr)"))?;
            tracing::info!("Prometheus metrics on http://{addr}/metrics");
        }
        Ok(())
    }

    /// Defaults, then the config file, then `WEIR_*` variables, then flags.
    fn config(&self) -> anyhow::Result<JobConfig> {
        let mut config = JobConfig::default();
        self.file()?.apply(&mut config);
        ConfigFile::from_env()?.apply(&mut config);
        ConfigFile {
            checkpoint_dir: self.checkpoint_dir.clone(),
            checkpoint_interval_ms: self.checkpoint_interval_ms,
            checkpoint_timeout_ms: self.checkpoint_timeout_ms,
            drain_at_end: self.drain.then_some(true),
            ..ConfigFile::default()
        }
        .apply(&mut config);
        config.validate()?;
        Ok(config)
    }
}

/// What the progress line of a bounded run counts.
enum ProgressOf {
    /// No progress line (endless runs).
    Nothing,
    /// A Kafka source's counters: records consumed of the offsets to consume.
    Kafka(std::sync::Arc<weir::connectors::kafka::source::Progress>),
    /// Records read by the source tasks, of this many.
    Records(u64),
}

/// Prints `done/total records, rate, ETA` to stderr every 500 ms while it
/// lives; nothing when stderr is not a terminal.
fn progress_reporter(of: ProgressOf, controller: weir::JobController) -> Option<ProgressGuard> {
    use std::io::IsTerminal;
    use std::sync::atomic::Ordering::Relaxed;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let counts: Box<dyn Fn() -> (u64, u64) + Send> = match of {
        ProgressOf::Nothing => return None,
        ProgressOf::Kafka(p) => Box::new(move || (p.done.load(Relaxed), p.total.load(Relaxed))),
        ProgressOf::Records(total) => Box::new(move || {
            let status = controller.status();
            let done = status.tasks.iter().filter(|t| t.is_source).map(|t| t.records_in).sum();
            (done, total)
        }),
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let started = std::time::Instant::now();
    let thread = std::thread::spawn(move || {
        while !flag.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(500));
            let (done, total) = counts();
            let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
            if total > 0 {
                let eta = (total.saturating_sub(done)) as f64 / rate.max(1.0);
                eprint!(
                    "\r{done}/{total} records ({:.0}%), {rate:.0}/s, ETA {eta:.0} s   ",
                    100.0 * done as f64 / total as f64
                );
            } else {
                eprint!("\r{done} records, {rate:.0}/s   ");
            }
        }
        eprintln!();
    });
    Some(ProgressGuard {
        stop,
        thread: Some(thread),
    })
}

struct ProgressGuard {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ProgressGuard {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `job` until it ends. The first SIGINT (Ctrl-C) or SIGTERM stops it
/// with a final checkpoint (sources stop at a barrier, sinks commit); a second
/// one cancels it.
fn run_until_signalled(
    job: weir::Job,
    config: JobConfig,
    status_every: Option<u64>,
    progress: ProgressOf,
) -> weir::Result<(weir::JobSummary, weir::JobStatus)> {
    let handle = job.start(config)?;
    let controller = handle.controller();
    // The progress line and the status table would garble each other.
    let progress = progress_reporter(
        if status_every.is_some() {
            ProgressOf::Nothing
        } else {
            progress
        },
        handle.controller(),
    );
    let status_printer = status_every.filter(|s| *s > 0).map(|secs| {
        let controller = handle.controller();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut next = std::time::Instant::now() + Duration::from_secs(secs);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if std::time::Instant::now() >= next {
                    next += Duration::from_secs(secs);
                    eprintln!("{}", controller.status());
                }
            }
        });
        ProgressGuard {
            stop,
            thread: Some(thread),
        }
    });
    let final_status = handle.controller();
    std::thread::Builder::new()
        .name("weir-signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
                else {
                    return;
                };
                let mut stops = 0;
                loop {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    stops += 1;
                    if stops == 1 {
                        eprintln!("stopping with a final checkpoint (again to cancel)");
                        controller.stop();
                    } else {
                        eprintln!("cancelling");
                        controller.cancel();
                    }
                }
            });
        })
        .map_err(|e| weir::WeirError::io("cannot spawn signal thread", "weir-signals", e))?;
    let summary = handle.join();
    drop(status_printer);
    drop(progress);
    Ok((summary?, final_status.status()))
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a Unix time in ms (civil-from-days, proleptic Gregorian).
fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One JSON line about a finished run: the summary and every task's counters.
fn summary_json(summary: &weir::JobSummary, status: &weir::JobStatus, extra: serde_json::Value) -> String {
    let mut line = serde_json::json!({
        "job": summary.job,
        "elapsed_s": summary.elapsed.as_secs_f64(),
        "restored_from": summary.restored_from,
        "checkpoints_completed": summary.checkpoints_completed,
        "last_checkpoint": summary.last_checkpoint,
        "checkpoint_ms": summary.checkpoint_durations.iter().map(|d| d.as_secs_f64() * 1000.0).collect::<Vec<_>>(),
        "tasks": status.tasks,
    });
    if let (Some(line), serde_json::Value::Object(extra)) = (line.as_object_mut(), extra) {
        line.extend(extra);
    }
    line.to_string()
}

fn main() -> anyhow::Result<()> {
    // Checkpoints allocate and free tens of MB each interval (changed state
    // taken for a snapshot, sorted SST input). glibc serves a block freed
    // once from its heap afterwards (it raises its mmap threshold) and keeps
    // the memory: a fixed threshold returns such blocks to the kernel on
    // free (peak RSS of the state > memory benchmark 590 -> 480-520 MB).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called first thing in main, before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
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
            json,
        }) => {
            common.serve_metrics()?;
            let options = DemoOptions {
                records: (records > 0).then_some(records),
                rate: (rate > 0).then_some(rate),
                parallelism,
                output: output.clone(),
            };
            let progress = if records > 0 {
                ProgressOf::Records(records)
            } else {
                ProgressOf::Nothing
            };
            let (summary, status) =
                run_until_signalled(demo_job(&options)?, common.config()?, common.status_every, progress)
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
        }
        Command::Run(RunCommand::KafkaCount {
            brokers,
            input,
            output,
            bounded,
            delivery,
            bad_records,
            parallelism,
            job,
            common,
            json,
        }) => {
            common.serve_metrics()?;
            // Flags, then the `[kafka]` table of the config file, then defaults.
            let kafka = common.file()?.kafka;
            let Some(brokers) = brokers.or(kafka.brokers) else {
                anyhow::bail!("kafka-count needs --brokers (or `brokers` in the [kafka] table of --config)");
            };
            let bad_records = match bad_records {
                Some(text) => {
                    BadRecordsSetting::try_from(text)
                        .map_err(|e| anyhow::anyhow!("--bad-records {e}"))?
                        .0
                }
                None => kafka.bad_records.map_or(BadRecordPolicy::Fail, |b| b.0),
            };
            let delivery = match delivery {
                Some(DeliveryArg::None) => Delivery::None,
                Some(DeliveryArg::AtLeastOnce) => Delivery::AtLeastOnce,
                Some(DeliveryArg::ExactlyOnce) => Delivery::ExactlyOnce,
                None => kafka.delivery.map_or(Delivery::ExactlyOnce, Delivery::from),
            };
            let options = KafkaCountOptions {
                job,
                brokers,
                input,
                output,
                parallelism,
                bounded,
                delivery,
                bad_records,
                source_properties: kafka.consumer.into_iter().collect(),
                sink_properties: kafka.producer.into_iter().collect(),
            };
            let (job, progress) = kafka_count_job(&options)?;
            let of = if bounded {
                ProgressOf::Kafka(progress.clone())
            } else {
                ProgressOf::Nothing
            };
            let (summary, status) =
                run_until_signalled(job, common.config()?, common.status_every, of).context("job failed")?;
            let done = progress.done.load(std::sync::atomic::Ordering::Relaxed);
            let skipped = progress.skipped.load(std::sync::atomic::Ordering::Relaxed);
            if json {
                let extra = serde_json::json!({"records": done, "skipped": skipped});
                println!("{}", summary_json(&summary, &status, extra));
                return Ok(());
            }
            if done == 0 && skipped == 0 && bounded {
                println!(
                    "job {}: 0 records, offsets unchanged (checkpoint {})",
                    summary.job,
                    summary.last_checkpoint.map_or("none".into(), |c| c.to_string())
                );
            } else {
                println!(
                    "job {} done in {:.2?}: {done} records ({skipped} skipped), restored from {}, last checkpoint {}",
                    summary.job,
                    summary.elapsed,
                    summary
                        .restored_from
                        .map_or("nothing".into(), |c| format!("checkpoint {c}")),
                    summary.last_checkpoint.map_or("none".into(), |c| c.to_string()),
                );
            }
        }
        Command::Nexmark(args) | Command::Run(RunCommand::Nexmark(args)) => nexmark::run(*args)?,
        Command::Bench(args) | Command::Run(RunCommand::Bench(args)) => bench::run(args)?,
        Command::Offsets {
            dir,
            job,
            brokers,
            json,
        } => {
            let store = CheckpointStore::open(&dir, &job)?;
            let manifest = store.restore_point()?.context("no checkpoint")?;
            let offsets = weir::connectors::kafka::stored_offsets(&manifest);
            let ends = match &brokers {
                Some(b) => Some(weir::connectors::kafka::end_offsets(
                    b,
                    offsets.iter().map(|o| (o.topic.as_str(), o.partition)),
                )?),
                None => None,
            };
            let rows: Vec<serde_json::Value> = offsets
                .iter()
                .map(|o| {
                    let end = ends.as_ref().and_then(|e| e.get(&(o.topic.clone(), o.partition)).copied());
                    serde_json::json!({"source": o.source, "topic": o.topic, "partition": o.partition, "next_offset": o.next_offset, "end_offset": end, "lag": end.map(|e| o.next_offset.lag(e))})
                })
                .collect();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"job": job, "checkpoint": manifest.checkpoint_id, "offsets": rows})
                );
            } else if rows.is_empty() {
                println!(
                    "checkpoint {} of job {job} holds no Kafka offsets (the job has no Kafka source)",
                    manifest.checkpoint_id
                );
            } else {
                println!("checkpoint {} of job {job}", manifest.checkpoint_id);
                println!(
                    "{:<20} {:<24} {:>9} {:>14} {:>14} {:>10}",
                    "source", "topic", "partition", "next offset", "end offset", "lag"
                );
                for r in &rows {
                    let opt = |k: &str| r[k].as_i64().map_or("-".to_string(), |v| v.to_string());
                    println!(
                        "{:<20} {:<24} {:>9} {:>14} {:>14} {:>10}",
                        r["source"].as_str().unwrap_or(""),
                        r["topic"].as_str().unwrap_or(""),
                        opt("partition"),
                        opt("next_offset"),
                        opt("end_offset"),
                        opt("lag")
                    );
                }
            }
        }
        Command::Checkpoints(CheckpointsCommand::Gc { dir, job, keep }) => {
            anyhow::ensure!(keep >= 1, "--keep must be at least 1");
            let store = CheckpointStore::open(&dir, &job)?;
            let complete = store.complete_ids()?;
            let split = complete.len().saturating_sub(keep);
            let (remove, kept) = complete.split_at(split);
            store.prune(remove, kept)?;
            println!("kept {} checkpoint(s), deleted {}", kept.len(), remove.len());
        }
        Command::Checkpoints(CheckpointsCommand::List { dir, job, json }) => {
            let store = CheckpointStore::open(&dir, &job)?;
            for id in store.complete_ids()? {
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
                        utc(m.created_unix_ms),
                        m.operators.len(),
                        m.state_bytes(),
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
