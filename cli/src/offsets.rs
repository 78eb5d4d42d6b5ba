//! `weir offsets`: the Kafka offsets stored in a job's newest checkpoint, and the lag.

use anyhow::Context;
use std::path::PathBuf;
use weir::checkpoint::CheckpointStore;

/// The arguments of `weir offsets`.
#[derive(clap::Args)]
pub(crate) struct OffsetsArgs {
    /// Root of the checkpoint store: a directory, s3://bucket/prefix or az://container/prefix.
    pub(crate) dir: PathBuf,
    /// The job name.
    #[arg(long)]
    pub(crate) job: String,
    /// With --brokers: also show the lag to each partition's end.
    #[command(flatten)]
    pub(crate) kafka: crate::common::KafkaArgs,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Prints the offsets (and, with brokers, the lag) as a table or JSON.
pub(crate) fn run(args: OffsetsArgs) -> anyhow::Result<()> {
    let OffsetsArgs { dir, job, kafka, json } = args;
    let cluster = kafka.connection(&Default::default())?;
    let store = CheckpointStore::open_existing(&dir, &job)?;
    let manifest = store.restore_point()?.context("no checkpoint")?;
    let offsets = weir::connectors::kafka::stored_offsets(&manifest);
    let ends = match &cluster {
        Some(cluster) => Some(weir::connectors::kafka::end_offsets(
            cluster,
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
    Ok(())
}
