//! `weir nexmark`: the Nexmark queries over Kafka, the built-in generator or
//! a JSON-lines file (see the `nexmark` module of the library).

use crate::common::CommonArgs;
use crate::session::{run_until_signalled, ProgressOf};
use anyhow::Context;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weir::JobConfig;

// The flags of `weir nexmark` (its help text is the subcommand's doc comment in main.rs).
#[derive(clap::Args)]
pub(crate) struct NexmarkArgs {
    /// The query: q0, q1, q2, q3, q5, q7, q8 or q11.
    #[arg(long)]
    query: weir_workloads::nexmark::queries::Query,
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
    #[command(flatten)]
    kafka: crate::common::KafkaArgs,
    /// Kafka topic of JSON events.
    #[arg(long)]
    source_topic: Option<String>,
    /// Kafka topic for the result rows (exactly-once).
    #[arg(long)]
    sink_topic: Option<String>,
    /// A file of JSON events, one per line.
    #[arg(long)]
    source_file: Option<PathBuf>,
    /// Write the result rows here, one JSON object per line (without it, a
    /// generator or file run only counts them).
    #[arg(long)]
    sink_file: Option<PathBuf>,
    /// --source-file: helper threads parsing events ahead of each source
    /// subtask, in file order [default: the cores left over by
    /// --parallelism, per subtask, at most 4].
    #[arg(long)]
    parse_threads: Option<usize>,
    /// Kafka: stop at the end offsets seen at start, take a final checkpoint (keeping open windows), exit.
    #[arg(long)]
    bounded: bool,
    /// Parallelism of every operator.
    #[arg(long, short, default_value_t = 1)]
    parallelism: usize,
    /// Job name (its directory under --checkpoint-dir) [default: nexmark-QUERY].
    #[arg(long)]
    job: Option<String>,
    /// Print the summary as one JSON line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    member: crate::member::DistributedArgs,
    #[command(flatten)]
    common: CommonArgs,
}

/// `weir nexmark --distributed`: this process is one member of the job.
fn run_distributed(
    args: &NexmarkArgs,
    member: crate::member::MemberArgs,
    job: String,
    cluster: weir::connectors::kafka::KafkaConnection,
    source_topic: String,
    sink_topic: String,
    config: JobConfig,
) -> anyhow::Result<()> {
    use weir_workloads::nexmark::distributed::{keyed_uid, stage_job, NexmarkStage, StageOptions, DISTRIBUTED};
    let query = args.query;
    anyhow::ensure!(
        DISTRIBUTED.contains(&query),
        "--distributed runs {} (a query with one key_by to cut at); {} does not yet",
        DISTRIBUTED.map(|q| q.name()).join(", "),
        query.name()
    );
    let plan = crate::member::Plan {
        job,
        cluster: cluster.clone(),
        input: source_topic.clone(),
        keyed_uid: keyed_uid(query),
        bounded: args.bounded,
    };
    let parallelism = args.parallelism;
    crate::member::run(plan, "keyed", config, member, args.common.watch(), |shard, hop| {
        let Some(hop) = hop else {
            return Err(weir::WeirError::Internal(
                "a distributed nexmark job has a repartition topic".into(),
            ));
        };
        let stage = if shard.stage == "parse" {
            NexmarkStage::Parse {
                repartition: hop.topic.clone(),
                hop: weir::distributed::repartition::Hop {
                    partitions: hop.partitions,
                    max_parallelism: weir_operators::DEFAULT_MAX_PARALLELISM,
                    upstream: shard.partition as u32,
                    upstreams: hop.upstreams,
                },
            }
        } else {
            NexmarkStage::Keyed {
                repartition: hop.topic.clone(),
            }
        };
        let options = StageOptions {
            cluster: cluster.clone(),
            source_topic: source_topic.clone(),
            sink_topic: sink_topic.clone(),
            bounded: args.bounded,
            parallelism,
            partition: shard.partition,
        };
        stage_job(&shard.job_name, query, &stage, &options)
    })
}

/// `weir nexmark`: picks the source and sink from the flags, runs the query,
/// prints a summary.
pub(crate) fn run(args: NexmarkArgs) -> anyhow::Result<()> {
    use weir_workloads::nexmark::{generator::GeneratorConfig, nexmark_job, EventSource, RowSink, RunStats, Schedule};
    let query = args.query;
    let job_name = args.job.clone().unwrap_or_else(|| format!("nexmark-{}", query.name()));
    let kafka = args.kafka.brokers.is_some() || args.source_topic.is_some() || args.sink_topic.is_some();
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
        args.source_file.is_some() || args.parse_threads.is_none(),
        "--parse-threads is for --source-file runs"
    );
    anyhow::ensure!(
        !kafka || args.sink_file.is_none(),
        "--sink-file is for --generator and --source-file runs"
    );
    let member = args.member.clone().resolve(&args.common.file()?.distributed, false)?;
    anyhow::ensure!(kafka || member.is_none(), "--distributed is for Kafka runs");
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
        let cluster = args.kafka.connection(&args.common.file()?.kafka)?;
        let (Some(cluster), Some(source_topic), Some(sink_topic)) =
            (cluster, args.source_topic.clone(), args.sink_topic.clone())
        else {
            anyhow::bail!(
                "a Kafka run needs --brokers (or `brokers` in the [kafka] table of --config), --source-topic and --sink-topic"
            );
        };
        if let Some(member) = member {
            return run_distributed(&args, member, job_name, cluster, source_topic, sink_topic, config);
        }
        let source = EventSource::Kafka {
            cluster: cluster.clone(),
            topic: source_topic,
            bounded: args.bounded,
        };
        let sink = RowSink::Kafka {
            cluster,
            topic: sink_topic,
        };
        let (job, progress) = nexmark_job(&job_name, query, &source, sink, args.parallelism)?;
        let of = match (&progress.kafka, args.bounded) {
            (Some(p), true) => ProgressOf::Kafka(p.clone()),
            _ => ProgressOf::Nothing,
        };
        let (summary, _) = run_until_signalled(job, config, args.common.watch(), of)
            .with_context(|| format!("job `{job_name}` failed"))?;
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
        let path = args.source_file.clone().unwrap_or_default();
        anyhow::ensure!(path.is_file(), "--source-file {}: no such file", path.display());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        EventSource::File {
            path,
            parse_threads: args.parse_threads.unwrap_or_else(|| {
                let spare = cores.saturating_sub(args.parallelism) / args.parallelism.max(1);
                spare.min(DEFAULT_MAX_PARSE_THREADS)
            }),
        }
    };
    let stats = match (&source, args.rate) {
        (EventSource::Generator(g), Some(rate)) => RunStats::with_schedule(Some(Schedule {
            config: *g,
            origin_ns: g.pace_origin_ns.unwrap_or_else(weir::clock::now_ns),
            rate,
        })),
        _ => RunStats::new(),
    };
    let rows_written = Arc::new(AtomicU64::new(0));
    let sink = match &args.sink_file {
        Some(_) => RowSink::Files {
            dir: parts.clone(),
            rows_written: rows_written.clone(),
        },
        None => RowSink::Stats(stats.clone()),
    };
    let (job, progress) = nexmark_job(&job_name, query, &source, sink, args.parallelism)?;
    let of = match &source {
        EventSource::Generator(GeneratorConfig { events: Some(n), .. }) => ProgressOf::Records(*n),
        _ => ProgressOf::Nothing,
    };
    let (summary, _) = run_until_signalled(job, config, args.common.watch(), of)
        .with_context(|| format!("job `{job_name}` failed"))?;
    let elapsed = started.elapsed();
    let rows = match &args.sink_file {
        // Rows in the scratch directory are this run's, all committed by its
        // final checkpoint, and ours to move; rows kept next to a checkpoint
        // directory stay there (a later run resumes beside them) and include
        // earlier runs', so they are counted in the file.
        Some(out) if parts.starts_with(&scratch.path) => {
            concatenate_parts(&parts, out, true)?;
            rows_written.load(Ordering::Relaxed)
        }
        Some(out) => {
            concatenate_parts(&parts, out, false)?;
            count_lines(out)?
        }
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

/// Default helper threads per file source subtask at most: past a few, the
/// subtask's own work downstream is the limit, not parsing.
const DEFAULT_MAX_PARSE_THREADS: usize = 4;

/// Events of a generator run without `--events`.
const DEFAULT_NEXMARK_EVENTS: u64 = 10_000_000;

/// A paced generator's first event is due this long after the command starts,
/// so job start-up is not counted as latency.
const PACE_START_DELAY: Duration = Duration::from_millis(500);

/// Writes events `0..n` of the generator as JSON lines.
fn write_events(
    path: &std::path::Path,
    n: u64,
    config: &weir_workloads::nexmark::generator::GeneratorConfig,
) -> anyhow::Result<()> {
    use std::io::Write;
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    for i in 0..n {
        let event = weir_workloads::nexmark::generator::nexmark_event(i, config);
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

/// Joins the committed part files of `dir` (in name order) into `out`, atomically.
fn concatenate_parts(dir: &std::path::Path, out: &std::path::Path, may_move: bool) -> anyhow::Result<()> {
    let mut names: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("part-")))
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    // One part (p = 1) that may move: a rename instead of a copy of every
    // row (2 s of an 8 s q0 run over 2 M events), when on one file system.
    if let [only] = names.as_slice() {
        if may_move && std::fs::rename(only, out).is_ok() {
            return Ok(());
        }
    }
    let tmp = out.with_extension("weir-tmp");
    let mut w = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    for name in &names {
        let mut part = std::fs::File::open(name).with_context(|| format!("cannot read {}", name.display()))?;
        // File to file: the kernel copies (copy_file_range), not this process.
        std::io::copy(&mut part, &mut w).with_context(|| format!("cannot write {}", tmp.display()))?;
    }
    w.sync_all()
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot rename {} to {}", tmp.display(), out.display()))
}

/// The lines of `path`.
fn count_lines(path: &std::path::Path) -> anyhow::Result<u64> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (mut buf, mut lines) = (vec![0u8; 1 << 20], 0u64);
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            return Ok(lines);
        }
        lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
    }
}

fn print_nexmark_summary(
    json: bool,
    query: weir_workloads::nexmark::queries::Query,
    summary: &weir::JobSummary,
    events: u64,
    rows: Option<u64>,
    stats: Option<&weir_workloads::nexmark::RunStats>,
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
