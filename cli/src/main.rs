//! The `weir` command line: run built-in jobs, look at checkpoints.

mod bench;
mod checkpoints;
mod common;
mod config_file;
mod demo;
mod kafka_count;
mod member;
mod nexmark;
mod offsets;
mod session;

use checkpoints::CheckpointsCommand;
use clap::{Parser, Subcommand};

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
    Offsets(offsets::OffsetsArgs),
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
    Demo(demo::DemoArgs),
    /// Kafka -> key_by(key) -> running count and sum (RocksDB) -> Kafka.
    ///
    /// Input values are `id,key,value` (integers), output values `id,key,count,sum`.
    /// Offsets live in the checkpoints: after a crash or a bounded run, the next run
    /// continues exactly where the last checkpoint stopped.
    ///
    /// Example: weir run kafka-count --brokers 127.0.0.1:9092 --input in --output out --bounded
    KafkaCount(kafka_count::KafkaCountArgs),
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
        Command::Run(RunCommand::Demo(args)) => demo::run(args),
        Command::Run(RunCommand::KafkaCount(args)) => kafka_count::run(args),
        Command::Nexmark(args) | Command::Run(RunCommand::Nexmark(args)) => nexmark::run(*args),
        Command::Bench(args) | Command::Run(RunCommand::Bench(args)) => bench::run(args),
        Command::Offsets(args) => offsets::run(args),
        Command::Checkpoints(command) => checkpoints::run(command),
    }
}
