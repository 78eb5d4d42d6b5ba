//! What a repartition hop costs: `kafka-count` over the same input (W1
//! values `id,key,value`, 4 partitions, not partitioned by key) once as one
//! process (p = 1, no hop) and once as one distributed member whose input
//! goes through a repartition topic (4 parse shards -> 4 partitions -> 4
//! count shards), both bounded, exactly-once, 1 s checkpoints, on a fresh
//! Apache Kafka. CPU-seconds per million records of this process (weir's
//! threads and its Kafka clients; `getrusage`), and of the broker
//! separately (`/proc/<pid>/stat`), plus wall time. One JSON line.
//!
//! `cargo bench --bench kafka_hop [-- --records 2000000 --partitions 4]`

#[path = "support/hop.rs"]
mod hop;
#[path = "support/kafka.rs"]
mod kafka;

use kafka::{arg, count_options, create_topics, produce_input, start_broker, Error};
use std::time::{Duration, Instant};
use weir::JobConfig;
use weir_workloads::jobs::kafka_count_job;

/// CPU seconds (user + system) this process used so far.
fn own_cpu_s() -> f64 {
    // SAFETY: rusage is plain data; all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we pass; RUSAGE_SELF is valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU seconds process `pid` used so far (utime + stime in /proc).
fn cpu_of(pid: u32) -> Result<f64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) start after ") ".
    let rest = stat.rsplit_once(") ").ok_or("a /proc stat without a command")?.1;
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line (11 and 12 here).
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf with a valid name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// CPU and wall seconds of `run`, this process's and the broker's.
fn measured(broker: u32, run: impl FnOnce() -> Result<(), Error>) -> Result<(f64, f64, f64), Error> {
    let (own, theirs, started) = (own_cpu_s(), cpu_of(broker)?, Instant::now());
    run()?;
    Ok((
        own_cpu_s() - own,
        cpu_of(broker)? - theirs,
        started.elapsed().as_secs_f64(),
    ))
}

fn main() -> Result<(), Error> {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
    }
    let args: Vec<String> = std::env::args().collect();
    let records = arg(&args, "--records", 2_000_000)?;
    let partitions = arg(&args, "--partitions", 4)? as u16;
    let broker = start_broker()?;
    create_topics(&broker.1, &["in", "out-single", "out-hop"])?;
    produce_input(&broker.1, 0..records)?;
    let config = |dir: &std::path::Path| JobConfig {
        checkpoint_interval: Some(Duration::from_secs(1)),
        ..JobConfig::with_checkpoint_dir(dir)
    };
    let pid = broker.0.id();

    let dir = tempfile::tempdir()?;
    let single = measured(pid, || {
        let (job, _) = kafka_count_job(&count_options(&broker.1, "single", "out-single", 1, true))?;
        job.run(config(dir.path()))?;
        Ok(())
    })?;
    let dir = tempfile::tempdir()?;
    let mut shards = 0;
    let hopped = measured(pid, || {
        let member = hop::start_hop_member(&broker.1, "hop", "out-hop", partitions, true, config(dir.path()))?;
        shards = member.join()?.finished;
        Ok(())
    })?;
    // A member with nothing to read: what its shards cost while idle.
    create_topics(&broker.1, &["idle-out"])?;
    let dir = tempfile::tempdir()?;
    let member = hop::start_hop_member(&broker.1, "idle", "idle-out", partitions, false, config(dir.path()))?;
    // It catches up with `in` first (its own copy of the job), then idles.
    std::thread::sleep(Duration::from_secs(20));
    let idle = measured(pid, || {
        std::thread::sleep(Duration::from_secs(10));
        Ok(())
    })?;
    member.stop()?;
    let per_m = |cpu: f64| cpu / (records as f64 / 1e6);
    println!(
        "{}",
        serde_json::json!({
            "bench": "kafka-hop-cpu",
            "records": records,
            "repartition_partitions": partitions,
            "shards_finished": shards,
            "single": {"cpu_s_per_m": per_m(single.0), "broker_cpu_s_per_m": per_m(single.1), "wall_s": single.2},
            "hop": {"cpu_s_per_m": per_m(hopped.0), "broker_cpu_s_per_m": per_m(hopped.1), "wall_s": hopped.2},
            "hop_to_single_cpu": hopped.0 / single.0,
            "idle_member_cpu_per_s": idle.0 / idle.2,
        })
    );
    Ok(())
}
