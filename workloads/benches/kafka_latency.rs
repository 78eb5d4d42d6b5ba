//! End-to-end latency through Kafka with exactly-once output: records are
//! produced to `in` at a fixed rate (default 50 k/s, 4 partitions, W1 values
//! `id,key,value`), the job counts and sums per key and writes `out`
//! exactly-once, and a read_committed consumer notes when each output
//! record becomes visible. Latency = visible − produced, per record, after a
//! warm-up; p50/p99/max per setting. What bounds it is the commit: output
//! becomes visible when the checkpoint (weir) or commit (Kafka Streams)
//! that covers it completes, so it is about half the interval plus the
//! commit itself. weir at checkpoint intervals 1000, 200, 100, 50 and 20 ms
//! (throughput at each, to see how low it can go), and Kafka Streams 4.4
//! (`benches/peers/kafka-streams`, exactly_once_v2) at commit intervals 1000
//! and 100 ms, each on a fresh broker. One JSON line per run.
//!
//! weir also through a repartition topic as one distributed member
//! (`weir-hop`, the Kafka Streams peer's topology has that hop too) at
//! intervals 1000 and 100 ms.
//!
//! `cargo bench --bench kafka_latency [-- --rate 50000 --seconds 12 --warmup-s 4 --only weir|weir-hop|kafka-streams|none --intervals 100,50]`
//!
//! `--only none` measures the harness alone (the reader reads the input):
//! 3.7 ms p50 / 10.7 ms p99 here. Its producer lingers 5 ms (without it
//! the broker drowned in one-record requests) and its reader asks again
//! 5 ms after an empty fetch (librdkafka's default waits 500 ms; weir's
//! source now waits 20 ms, which is what took its latency from seconds to
//! the commit bound).

#[path = "support/hop.rs"]
mod hop;
#[path = "support/kafka.rs"]
mod kafka;

use kafka::{arg, count_options, create_topics, send_w1, start_broker, Error};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::JobConfig;
use weir_workloads::jobs::kafka_count_job;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// Records produced in the first seconds are not measured (start, JIT, rebalances).
/// (`--warmup-s`, default 4: a fresh broker's transaction coordinator can
/// take longer to load, so longer runs measure after a longer warm-up.)
static WARMUP_S: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(4);

/// When each id was produced (ns since `t0`), shared with the reader.
struct Clock {
    t0: Instant,
    produced: Vec<AtomicU64>,
}

/// Produces ids `0..n` to `in` at `rate` per second, paced per millisecond.
fn produce_paced(brokers: &str, clock: &Clock, rate: u64) -> Result<(), Error> {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("socket.nagle.disable", "true")
        .create()?;
    let n = clock.produced.len() as u64;
    for i in 0..n {
        // Record i is due at i / rate seconds. Sleeping only when a whole
        // millisecond ahead (the records due within it go out together, each
        // timed when sent): a sleep per record (20 µs apart at 50 k/s) took
        // 2/3 of a core on this 2-core machine, from the broker and the job.
        let due = Duration::from_nanos(i * 1_000_000_000 / rate);
        let now = clock.t0.elapsed();
        if due > now + Duration::from_millis(1) {
            std::thread::sleep(due - now);
        }
        clock.produced[i as usize].store(clock.t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        send_w1(&p, i)?;
        if i % 256 == 0 {
            p.poll(Duration::ZERO);
        }
    }
    p.flush(Duration::from_secs(60))?;
    Ok(())
}

/// Reads `out` read_committed until every id arrived; returns the latencies
/// (ms) of the ids produced after the warm-up.
fn read_latencies(brokers: &str, topic: &str, clock: &Clock, rate: u64) -> Result<Vec<f64>, Error> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "latency-reader")
        .set("isolation.level", "read_committed")
        // The broker answers as soon as a record is there; an empty answer
        // is asked again after 5 ms (librdkafka's default waits 500 ms).
        .set("fetch.wait.max.ms", "100")
        .set("fetch.error.backoff.ms", "5")
        .set("socket.nagle.disable", "true")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for part in 0..4 {
        tpl.add_partition_offset(topic, part, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let n = clock.produced.len();
    let skip = WARMUP_S.load(Ordering::Relaxed) * rate;
    let (mut seen, mut latencies) = (0usize, Vec::with_capacity(n));
    let deadline = Instant::now() + Duration::from_secs(300);
    while seen < n {
        if Instant::now() > deadline {
            return Err(format!("only {seen} of {n} output records arrived").into());
        }
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m?;
            let now = clock.t0.elapsed().as_nanos() as u64;
            let id: u64 = std::str::from_utf8(m.payload().unwrap_or_default())?
                .split(',')
                .next()
                .ok_or("an empty output value")?
                .parse()?;
            seen += 1;
            if id >= skip {
                let produced = clock.produced[id as usize].load(Ordering::Relaxed);
                latencies.push(now.saturating_sub(produced) as f64 / 1e6);
            }
        }
    }
    Ok(latencies)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// Starts a fresh broker, the engine (by `engine(brokers, n)`), the paced
/// producer and the reader; prints one JSON line.
fn measure(
    label: &str,
    interval_ms: u64,
    rate: u64,
    seconds: u64,
    engine: impl FnOnce(&str, u64) -> Result<Box<dyn FnOnce() -> Result<(), Error>>, Error>,
) -> Result<(), Error> {
    let broker = start_broker()?;
    create_topics(&broker.1, &["in", "out"])?;
    let n = rate * seconds;
    let finish = engine(&broker.1, n)?;
    let clock = Arc::new(Clock {
        t0: Instant::now(),
        produced: (0..n).map(|_| AtomicU64::new(0)).collect(),
    });
    let producer = {
        let (b, clock) = (broker.1.clone(), clock.clone());
        std::thread::spawn(move || produce_paced(&b, &clock, rate).map_err(|e| e.to_string()))
    };
    let topic = if label == "none" { "in" } else { "out" };
    let mut latencies = read_latencies(&broker.1, topic, &clock, rate)?;
    producer.join().map_err(|_| "the producer panicked")??;
    finish()?;
    latencies.sort_by(|a, b| a.total_cmp(b));
    if latencies.is_empty() {
        return Err("no latency measured".into());
    }
    println!(
        "{{\"bench\":\"kafka-latency\",\"engine\":\"{label}\",\"interval_ms\":{interval_ms},\"rate\":{rate},\"records\":{n},\"min_ms\":{:.1},\"p50_ms\":{:.1},\"p99_ms\":{:.1},\"max_ms\":{:.1}}}",
        latencies[0],
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );
    Ok(())
}

fn main() -> Result<(), Error> {
    // `WEIR_LOG=info` shows the job's checkpoints with times.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
    }
    let args: Vec<String> = std::env::args().collect();
    let (rate, seconds) = (arg(&args, "--rate", 50_000)?, arg(&args, "--seconds", 12)?);
    WARMUP_S.store(arg(&args, "--warmup-s", 4)?, Ordering::Relaxed);
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let only_is = |engine: &str| only.as_deref().is_none_or(|o| o == engine);
    // `--intervals 100,50`: only these checkpoint intervals of weir (ms).
    let chosen: Option<Vec<u64>> = args
        .iter()
        .position(|a| a == "--intervals")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').map(str::parse).collect())
        .transpose()?;
    let all_intervals = chosen.unwrap_or_else(|| vec![1000, 200, 100, 50, 20]);
    let weir_intervals: &[u64] = if only_is("weir") { &all_intervals } else { &[] };
    let hop_intervals: &[u64] = if only_is("weir-hop") { &[1000, 100] } else { &[] };
    let streams_intervals: &[u64] = if only_is("kafka-streams") { &[1000, 100] } else { &[] };
    // The harness alone: the reader reads the input (no engine, no transactions).
    if only.as_deref() == Some("none") {
        return measure("none", 0, rate, seconds, |_, _| Ok(Box::new(|| Ok(()))));
    }
    for &interval_ms in weir_intervals {
        measure("weir", interval_ms, rate, seconds, |brokers, _n| {
            let dir = tempfile::tempdir()?;
            let options = count_options(brokers, "latency", "out", 1, false);
            let (job, _) = kafka_count_job(&options)?;
            let handle = job.start(JobConfig {
                checkpoint_interval: Some(Duration::from_millis(interval_ms)),
                ..JobConfig::with_checkpoint_dir(dir.path())
            })?;
            Ok(Box::new(move || {
                handle.stop();
                handle.join()?;
                drop(dir);
                Ok(())
            }))
        })?;
    }
    // Through a repartition topic, as one distributed member (4 parse shards,
    // 4 repartition partitions, 4 count shards): the output of a record is
    // visible once the parse shard's checkpoint and then the count shard's
    // committed, so about one more interval than without the hop.
    for &interval_ms in hop_intervals {
        measure("weir-hop", interval_ms, rate, seconds, |brokers, _n| {
            let dir = tempfile::tempdir()?;
            let config = JobConfig {
                checkpoint_interval: Some(Duration::from_millis(interval_ms)),
                ..JobConfig::with_checkpoint_dir(dir.path())
            };
            let member = hop::start_hop_member(brokers, "latency-hop", "out", 4, false, config)?;
            // The member's shards start one after another: give them their start.
            std::thread::sleep(Duration::from_secs(4));
            Ok(Box::new(move || {
                member.stop()?;
                drop(dir);
                Ok(())
            }))
        })?;
    }
    for &interval_ms in streams_intervals {
        measure("kafka-streams", interval_ms, rate, seconds, |brokers, n| {
            let state = tempfile::tempdir()?;
            let mut child = Command::new("bash")
                .arg("benches/peers/kafka-streams/run.sh")
                .args(["--bootstrap", brokers, "--input", "in", "--output", "out"])
                .args([
                    "--records",
                    &n.to_string(),
                    "--commit-interval-ms",
                    &interval_ms.to_string(),
                ])
                .arg("--state-dir")
                .arg(state.path())
                .current_dir(ROOT)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            // Give the peer its start (two rebalances) before the input flows.
            std::thread::sleep(Duration::from_secs(4));
            Ok(Box::new(move || {
                let status = child.wait()?;
                drop(state);
                if status.success() {
                    Ok(())
                } else {
                    Err(format!("the Kafka Streams peer failed ({status})").into())
                }
            }))
        })?;
    }
    Ok(())
}
