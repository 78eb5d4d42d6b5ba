//! The batch job that keeps its Kafka offsets, weir against Spark Structured
//! Streaming with `Trigger.AvailableNow` (`benches/peers/spark`), on one
//! Apache Kafka broker and the same topic: run 1 reads the 200 k records
//! there, 50 k more are produced, run 2 reads only those; per key a running
//! count and sum (`id,key,count,sum` per record). weir is `kafka-count
//! --bounded` (exactly-once, checkpoint every 1 s, p = 2), timed from
//! building the job to its end (the CLI process adds ~10 ms); Spark from its
//! process start to its exit (JVM and Python start are part of what a
//! user waits for). Both outputs are checked per key (counts 1..n, running
//! sums) by the peers' verify tool. Prints one JSON line per engine and the
//! ratio.
//!
//! `cargo bench --bench kafka_bounded_spark [-- --records N --more M]`
//! (needs Java 17+, Maven and PyPI: the Spark peer installs pyspark once).

#[path = "support/kafka.rs"]
mod kafka;

use kafka::{arg, count_options, create_topics, produce_input, start_broker, Error};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weir::JobConfig;
use weir_workloads::jobs::kafka_count_job;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// One bounded weir run `in` -> `out-weir` on the store in `dir`: (seconds, records read).
fn weir_run(brokers: &str, dir: &std::path::Path) -> Result<(f64, u64), Error> {
    let started = Instant::now();
    let options = count_options(brokers, "nightly", "out-weir", 2, true);
    let (job, progress) = kafka_count_job(&options)?;
    job.run(JobConfig {
        checkpoint_interval: Some(Duration::from_secs(1)),
        ..JobConfig::with_checkpoint_dir(dir)
    })?;
    let read = progress.done.load(std::sync::atomic::Ordering::Relaxed);
    Ok((started.elapsed().as_secs_f64(), read))
}

/// One Spark AvailableNow run `in` -> `out-spark` with its checkpoint in `dir`: (seconds, records).
fn spark_run(brokers: &str, dir: &std::path::Path) -> Result<(f64, u64), Error> {
    let out = Command::new("bash")
        .arg("benches/peers/spark/run.sh")
        .args([
            "--bootstrap",
            brokers,
            "--input",
            "in",
            "--output",
            "out-spark",
            "--checkpoint",
        ])
        .arg(dir)
        .current_dir(ROOT)
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(format!("the Spark peer failed ({})", out.status).into());
    }
    let json: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim())?;
    let seconds = json["seconds"].as_f64().ok_or("the Spark peer printed no seconds")?;
    Ok((seconds, json["records"].as_u64().unwrap_or(0)))
}

/// The peers' verify tool on `output`: per key, counts 1..n and running sums over all of `in`.
fn verify(brokers: &str, output: &str) -> Result<String, Error> {
    let out = Command::new("bash")
        .args([
            "benches/peers/kafka-streams/run.sh",
            "tool",
            "verify",
            "--bootstrap",
            brokers,
        ])
        .args(["--input", "in", "--output", output])
        .current_dir(ROOT)
        .stderr(Stdio::inherit())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !text.contains("\"verify\":\"ok\"") {
        return Err(format!("{output} does not verify: {text}").into());
    }
    Ok(text)
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let (first, more) = (arg(&args, "--records", 200_000)?, arg(&args, "--more", 50_000)?);
    let broker = start_broker()?;
    create_topics(&broker.1, &["in", "out-weir", "out-spark"])?;
    produce_input(&broker.1, 0..first)?;
    let (weir_dir, spark_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);

    let weir1 = weir_run(&broker.1, weir_dir.path())?;
    let spark1 = spark_run(&broker.1, spark_dir.path())?;
    produce_input(&broker.1, first..first + more)?;
    let weir2 = weir_run(&broker.1, weir_dir.path())?;
    let spark2 = spark_run(&broker.1, spark_dir.path())?;
    assert_eq!(
        (weir1.1, weir2.1),
        (first, more),
        "weir reads everything once, then only the new records"
    );
    assert_eq!((spark1.1, spark2.1), (first, more), "so does Spark");
    verify(&broker.1, "out-weir")?;
    verify(&broker.1, "out-spark")?;

    let (weir_total, spark_total) = (weir1.0 + weir2.0, spark1.0 + spark2.0);
    println!(
        "{{\"bench\":\"kafka-bounded-two-runs\",\"engine\":\"weir\",\"records\":[{first},{more}],\"run_s\":[{:.3},{:.3}],\"total_s\":{weir_total:.3},\"delivery\":\"exactly-once\",\"verified\":true}}",
        weir1.0, weir2.0
    );
    println!(
        "{{\"bench\":\"kafka-bounded-two-runs\",\"peer\":\"spark-available-now\",\"records\":[{first},{more}],\"run_s\":[{:.3},{:.3}],\"total_s\":{spark_total:.3},\"delivery\":\"at-least-once\",\"verified\":true,\"weir_speedup\":{:.1}}}",
        spark1.0,
        spark2.0,
        spark_total / weir_total
    );
    Ok(())
}
