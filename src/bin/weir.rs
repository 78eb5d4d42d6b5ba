//! The `weir` command line: run built-in jobs, look at checkpoints.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use weir::checkpoint::{CheckpointStore, SubtaskState};
use weir::config::ConfigFile;
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
    Nexmark(Box<NexmarkArgs>),
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
    /// Kafka -> key_by(key) -> running count and sum (RocksDB) -> Kafka.
    ///
    /// Input values are `id,key,value` (integers), output values `id,key,count,sum`.
    /// Offsets live in the checkpoints: after a crash or a bounded run, the next run
    /// continues exactly where the last checkpoint stopped.
    ///
    /// Example: weir run kafka-count --brokers 127.0.0.1:9092 --input in --output out --bounded
    KafkaCount {
        /// Kafka bootstrap servers.
        #[arg(long)]
        brokers: String,
        /// Input topic.
        #[arg(long)]
        input: String,
        /// Output topic.
        #[arg(long)]
        output: String,
        /// Stop at the end offsets seen at start, take a final checkpoint, exit.
        #[arg(long)]
        bounded: bool,
        /// Output delivery guarantee.
        #[arg(long, value_enum, default_value = "exactly-once")]
        delivery: DeliveryArg,
        /// Bad input values: `fail`, `skip`, or `dlq:TOPIC`.
        #[arg(long, default_value = "fail")]
        bad_records: String,
        /// Parallelism of every operator.
        #[arg(long, short, default_value_t = 2)]
        parallelism: usize,
        /// Job name (its directory under --checkpoint-dir).
        #[arg(long, default_value = "kafka-count")]
        job: String,
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(clap::Args)]
struct NexmarkArgs {
    /// The query: q0, q1, q2, q3, q5, q7, q8 or q11.
    #[arg(long)]
    query: weir::nexmark::queries::Query,
    /// Events from the built-in generator.
    #[arg(long)]
    generator: bool,
    /// Generator: events in total, 0 = endless [default: 10000000].
    #[arg(long)]
    events: Option<u64>,
    /// Generator: events per second of wall-clock time (default: as fast as possible).
    #[arg(long)]
    rate: Option<u64>,
    /// Generator: xor-ed into every event's seed (0 = the reference generator's events).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Generator: write the --events events to this file as JSON lines and
    /// exit without running the query (input for --source-file, Kafka or another engine).
    #[arg(long)]
    write_events: Option<PathBuf>,
    /// Kafka bootstrap servers.
    #[arg(long)]
    brokers: Option<String>,
    /// Kafka topic of JSON events.
    #[arg(long)]
    source_topic: Option<String>,
    /// Kafka topic for the result rows (exactly-once).
    #[arg(long)]
    sink_topic: Option<String>,
    /// A file of JSON events, one per line.
    #[arg(long)]
    source_file: Option<PathBuf>,
    /// Write the result rows here, one JSON object per line.
    #[arg(long)]
    sink_file: Option<PathBuf>,
    /// Kafka: stop at the end offsets seen at start, take a final checkpoint (keeping open windows), exit.
    #[arg(long)]
    bounded: bool,
    /// Parallelism of every operator.
    #[arg(long, short, default_value_t = 1)]
    parallelism: usize,
    /// Job name (its directory under --checkpoint-dir) [default: nexmark-<query>].
    #[arg(long)]
    job: Option<String>,
    /// Print the summary as one JSON line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: CommonArgs,
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
    /// Starts the Prometheus endpoint when asked for.
    fn serve_metrics(&self) -> anyhow::Result<()> {
        if let Some(addr) = self.metrics_addr {
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
        if let Some(path) = &self.config {
            ConfigFile::read(path)?.apply(&mut config);
        }
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

/// Prints `done/total records` to a terminal every second while it lives;
/// silent when stderr is not a terminal.
fn progress_reporter(progress: std::sync::Arc<weir::connectors::kafka::source::Progress>) -> Option<ProgressGuard> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let started = std::time::Instant::now();
    let thread = std::thread::spawn(move || {
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(500));
            let done = progress.done.load(std::sync::atomic::Ordering::Relaxed);
            let total = progress.total.load(std::sync::atomic::Ordering::Relaxed);
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
fn run_until_signalled(job: weir::Job, config: JobConfig) -> weir::Result<weir::JobSummary> {
    let handle = job.start(config)?;
    let controller = handle.controller();
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
    handle.join()
}

/// Bytes of the state files a checkpoint references.
fn checkpoint_bytes(m: &weir::checkpoint::Manifest) -> u64 {
    m.operators
        .values()
        .flat_map(|o| o.subtasks.iter())
        .map(|s| match s {
            SubtaskState::Rocks(h) => h.shared.iter().chain(&h.private).map(|f| f.size).sum(),
            SubtaskState::File { size, .. } => *size,
            SubtaskState::Bytes { hex, .. } => hex.len() as u64 / 2,
        })
        .sum()
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
            common.serve_metrics()?;
            let options = DemoOptions {
                records: (records > 0).then_some(records),
                rate: (rate > 0).then_some(rate),
                parallelism,
                output: output.clone(),
            };
            let summary = run_until_signalled(demo_job(&options)?, common.config()?).context("job `demo` failed")?;
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
        }) => {
            common.serve_metrics()?;
            let bad_records = match bad_records.as_str() {
                "fail" => BadRecordPolicy::Fail,
                "skip" => BadRecordPolicy::Skip,
                other => match other.strip_prefix("dlq:") {
                    Some(topic) if !topic.is_empty() => BadRecordPolicy::DeadLetter(topic.to_string()),
                    _ => anyhow::bail!("--bad-records must be `fail`, `skip` or `dlq:TOPIC`, not `{other}`"),
                },
            };
            let delivery = match delivery {
                DeliveryArg::None => Delivery::None,
                DeliveryArg::AtLeastOnce => Delivery::AtLeastOnce,
                DeliveryArg::ExactlyOnce => Delivery::ExactlyOnce,
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
                source_properties: Vec::new(),
            };
            let (job, progress) = kafka_count_job(&options)?;
            let reporter = progress_reporter(progress.clone());
            let summary = run_until_signalled(job, common.config()?).context("job failed")?;
            drop(reporter);
            let done = progress.done.load(std::sync::atomic::Ordering::Relaxed);
            let skipped = progress.skipped.load(std::sync::atomic::Ordering::Relaxed);
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
        Command::Nexmark(args) => run_nexmark(*args)?,
        Command::Offsets {
            dir,
            job,
            brokers,
            json,
        } => {
            let store = CheckpointStore::open(&dir, &job)?;
            let manifest = store.restore_point()?.context("no checkpoint")?;
            let offsets = weir::connectors::kafka::source::stored_offsets(&manifest);
            let ends = match &brokers {
                Some(b) => Some(weir::connectors::kafka::source::end_offsets(
                    b,
                    offsets.iter().map(|o| (o.topic.as_str(), o.partition)),
                )?),
                None => None,
            };
            let rows: Vec<serde_json::Value> = offsets
                .iter()
                .map(|o| {
                    let end = ends.as_ref().and_then(|e| e.get(&(o.topic.clone(), o.partition)).copied());
                    serde_json::json!({"source": o.source, "topic": o.topic, "partition": o.partition, "next_offset": o.next_offset, "end_offset": end, "lag": end.map(|e| (e - o.next_offset).max(0))})
                })
                .collect();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"job": job, "checkpoint": manifest.checkpoint_id, "offsets": rows})
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
                            serde_json::json!({"id": m.checkpoint_id, "created_unix_ms": m.created_unix_ms, "final": m.final_checkpoint, "operators": m.operators.len(), "bytes": checkpoint_bytes(&m)})
                        }
                        Err(e) => serde_json::json!({"id": id.0, "damaged": e.to_string()}),
                    };
                    println!("{line}");
                    continue;
                }
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

/// `weir nexmark`: picks the source and sink from the flags, runs the query,
/// prints a summary.
fn run_nexmark(args: NexmarkArgs) -> anyhow::Result<()> {
    use weir::nexmark::{generator::GeneratorConfig, nexmark_job, EventSource, RowSink, RunStats, Schedule};
    let query = args.query;
    let job_name = args.job.clone().unwrap_or_else(|| format!("nexmark-{}", query.name()));
    let kafka = args.brokers.is_some() || args.source_topic.is_some() || args.sink_topic.is_some();
    let modes = [args.generator, kafka, args.source_file.is_some()];
    anyhow::ensure!(
        modes.iter().filter(|m| **m).count() == 1,
        "choose one source: --generator, --brokers with --source-topic and --sink-topic, or --source-file"
    );
    // Flags that mean nothing in the chosen mode are errors, not silently ignored.
    let generator_only = [
        ("--events", args.events.is_some()),
        ("--rate", args.rate.is_some()),
        ("--seed", args.seed != 0),
        ("--write-events", args.write_events.is_some()),
    ];
    if let Some((flag, _)) = generator_only.iter().find(|(_, set)| *set && !args.generator) {
        anyhow::bail!("{flag} is for --generator runs");
    }
    anyhow::ensure!(
        kafka || !args.bounded,
        "--bounded is for Kafka runs (generator and file runs are bounded and drained)"
    );
    anyhow::ensure!(
        !kafka || !args.common.drain || args.bounded,
        "--drain needs --bounded (it fires every window when the bounded run ends)"
    );
    anyhow::ensure!(
        !kafka || args.sink_file.is_none(),
        "--sink-file is for --generator and --source-file runs"
    );
    if let Some(path) = &args.write_events {
        let generator = GeneratorConfig {
            seed: args.seed,
            ..GeneratorConfig::default()
        };
        let events = args.events.unwrap_or(DEFAULT_NEXMARK_EVENTS);
        write_events(path, events, &generator)?;
        println!("wrote {events} events to {}", path.display());
        return Ok(());
    }
    args.common.serve_metrics()?;
    let mut config = args.common.config()?;
    let started = std::time::Instant::now();
    if kafka {
        let (Some(brokers), Some(source_topic), Some(sink_topic)) = (args.brokers, args.source_topic, args.sink_topic)
        else {
            anyhow::bail!("a Kafka run needs --brokers, --source-topic and --sink-topic");
        };
        let source = EventSource::Kafka {
            brokers: brokers.clone(),
            topic: source_topic,
            bounded: args.bounded,
        };
        let sink = RowSink::Kafka {
            brokers,
            topic: sink_topic,
        };
        let (job, progress) = nexmark_job(&job_name, query, &source, sink, args.parallelism)?;
        let reporter = progress.kafka.clone().and_then(progress_reporter);
        let summary = run_until_signalled(job, config).with_context(|| format!("job `{job_name}` failed"))?;
        drop(reporter);
        let events = progress.events();
        print_nexmark_summary(args.json, query, &summary, events, None, None, started.elapsed());
        return Ok(());
    }
    // Generator and file runs are bounded and drained; one-shot (scratch
    // checkpoints) unless a checkpoint directory is configured, in which
    // case they resume from it and keep their committed rows next to it.
    config.drain_at_end = true;
    let scratch = tempfile_dir(&job_name)?;
    let parts = if config.checkpoint_dir == JobConfig::default().checkpoint_dir {
        config.checkpoint_dir = scratch.path.clone();
        scratch.path.join("rows")
    } else {
        config.checkpoint_dir.join(&job_name).join("rows")
    };
    let source = if args.generator {
        EventSource::Generator(GeneratorConfig {
            events: match args.events.unwrap_or(DEFAULT_NEXMARK_EVENTS) {
                0 => None,
                n => Some(n),
            },
            rate: args.rate,
            seed: args.seed,
            // Pacing and latency share one schedule, which starts once the job had time to start.
            pace_origin_ns: args
                .rate
                .map(|_| weir::clock::now_ns() + PACE_START_DELAY.as_nanos() as u64),
            ..GeneratorConfig::default()
        })
    } else {
        anyhow::ensure!(
            args.sink_file.is_some(),
            "a --source-file run needs --sink-file OUT.jsonl for its rows"
        );
        let path = args.source_file.clone().unwrap_or_default();
        anyhow::ensure!(path.is_file(), "--source-file {}: no such file", path.display());
        EventSource::File(path)
    };
    let stats = match (&source, args.rate) {
        (EventSource::Generator(g), Some(rate)) => RunStats::with_schedule(Some(Schedule {
            config: *g,
            origin_ns: g.pace_origin_ns.unwrap_or_else(weir::clock::now_ns),
            rate,
        })),
        _ => RunStats::new(),
    };
    let sink = match &args.sink_file {
        Some(_) => RowSink::Files(parts.clone()),
        None => RowSink::Stats(stats.clone()),
    };
    let (job, progress) = nexmark_job(&job_name, query, &source, sink, args.parallelism)?;
    let summary = run_until_signalled(job, config).with_context(|| format!("job `{job_name}` failed"))?;
    let elapsed = started.elapsed();
    let rows = match &args.sink_file {
        Some(out) => concatenate_parts(&parts, out)?,
        None => stats.rows(),
    };
    print_nexmark_summary(
        args.json,
        query,
        &summary,
        progress.events(),
        Some(rows),
        Some(&stats),
        elapsed,
    );
    Ok(())
}

/// Events of a generator run without `--events`.
const DEFAULT_NEXMARK_EVENTS: u64 = 10_000_000;

/// A paced generator's first event is due this long after the command starts,
/// so job start-up is not counted as latency.
const PACE_START_DELAY: Duration = Duration::from_millis(500);

/// Writes events `0..n` of the generator as JSON lines.
fn write_events(
    path: &std::path::Path,
    n: u64,
    config: &weir::nexmark::generator::GeneratorConfig,
) -> anyhow::Result<()> {
    use std::io::Write;
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    for i in 0..n {
        let event = weir::nexmark::generator::nexmark_event(i, config);
        serde_json::to_writer(&mut w, &event).with_context(|| format!("cannot write {}", path.display()))?;
        w.write_all(b"\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    w.flush().with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A directory removed when dropped.
struct ScratchDir {
    path: PathBuf,
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn tempfile_dir(job: &str) -> anyhow::Result<ScratchDir> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let path = std::env::temp_dir().join(format!("weir-{job}-{}-{nanos:x}", std::process::id()));
    std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(ScratchDir { path })
}

/// Joins the committed part files of `dir` (in name order) into `out`, atomically; returns the line count.
fn concatenate_parts(dir: &std::path::Path, out: &std::path::Path) -> anyhow::Result<u64> {
    use std::io::Write;
    let mut names: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("part-")))
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    let tmp = out.with_extension("weir-tmp");
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
    );
    let mut lines = 0u64;
    for name in &names {
        let bytes = std::fs::read(name).with_context(|| format!("cannot read {}", name.display()))?;
        lines += bytes.iter().filter(|b| **b == b'\n').count() as u64;
        w.write_all(&bytes)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
    }
    w.into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write {}: {}", tmp.display(), e.error()))?
        .sync_all()?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot rename {} to {}", tmp.display(), out.display()))?;
    Ok(lines)
}

fn print_nexmark_summary(
    json: bool,
    query: weir::nexmark::queries::Query,
    summary: &weir::JobSummary,
    events: u64,
    rows: Option<u64>,
    stats: Option<&weir::nexmark::RunStats>,
    elapsed: Duration,
) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let latency = |q: f64| stats.and_then(|s| s.latency_ms(q));
    let line = serde_json::json!({
        "bench": "nexmark",
        "query": query.name(),
        "events": events,
        "rows": rows,
        "elapsed_s": (secs * 1000.0).round() / 1000.0,
        "events_per_s": (events > 0).then(|| (events as f64 / secs).round()),
        "checkpoints": summary.checkpoints_completed,
        "restored_from": summary.restored_from,
        "latency_ms": {"p50": latency(0.5), "p99": latency(0.99), "max": stats.and_then(|s| s.latency_max_ms())},
    });
    if json {
        println!("{line}");
        return;
    }
    let mut text = format!(
        "nexmark {}: {events} events in {:.2} s ({:.0} events/s), {} rows, {} checkpoints",
        query.name(),
        secs,
        events as f64 / secs,
        rows.map_or("-".to_string(), |r| r.to_string()),
        summary.checkpoints_completed
    );
    if let (Some(p50), Some(p99)) = (latency(0.5), latency(0.99)) {
        text.push_str(&format!(", latency p50 {p50:.2} ms, p99 {p99:.2} ms"));
    }
    println!("{text}");
    println!("{line}");
}
