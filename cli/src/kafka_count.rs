//! `weir run kafka-count`: Kafka -> key_by -> running count and sum -> Kafka.

use crate::common::{CommonArgs, KafkaArgs};
use crate::config_file::BadRecordsSetting;
use crate::session::{run_until_signalled, summary_json, ProgressOf};
use anyhow::Context;
use weir::connectors::kafka::{BadRecordPolicy, Delivery, LostInputPolicy};
use weir_workloads::jobs::{kafka_count_job, KafkaCountOptions, KafkaCountStage};

/// The flags of `weir run kafka-count`.
#[derive(clap::Args)]
pub(crate) struct KafkaCountArgs {
    #[command(flatten)]
    pub(crate) kafka: KafkaArgs,
    /// Input topic.
    #[arg(long)]
    pub(crate) input: String,
    /// Output topic.
    #[arg(long)]
    pub(crate) output: String,
    /// Stop at the end offsets seen at start, take a final checkpoint, exit.
    #[arg(long)]
    pub(crate) bounded: bool,
    /// Output delivery guarantee [default: `kafka.delivery` of --config, or exactly-once].
    #[arg(long)]
    pub(crate) delivery: Option<Delivery>,
    /// Bad input values: `fail`, `skip`, or `dlq:TOPIC` [default:
    /// `kafka.bad_records` of --config, or fail].
    #[arg(long)]
    pub(crate) bad_records: Option<String>,
    /// Input deleted (by retention) before the job read it: go on from the
    /// log start and count the gap, instead of failing the job naming it.
    #[arg(long)]
    pub(crate) skip_lost_input: bool,
    /// Parallelism of every operator.
    #[arg(long, short, default_value_t = 2)]
    pub(crate) parallelism: usize,
    /// Job name (its directory under --checkpoint-dir).
    #[arg(long, default_value = "kafka-count")]
    pub(crate) job: String,
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// Print the run's summary and per-task counters as one JSON line.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) member: crate::member::DistributedArgs,
}

/// Runs the Kafka count job until it ends (bounded) or is stopped by a signal.
pub(crate) fn run(args: KafkaCountArgs) -> anyhow::Result<()> {
    let KafkaCountArgs {
        kafka: kafka_args,
        input,
        output,
        bounded,
        delivery,
        bad_records,
        skip_lost_input,
        parallelism,
        job,
        common,
        json,
        member,
    } = args;
    common.serve_metrics()?;
    // Flags, then the `[kafka]` table of the config file, then defaults.
    let kafka = common.file()?.kafka;
    let Some(cluster) = kafka_args.connection(&kafka)? else {
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
    let delivery = delivery.or(kafka.delivery).unwrap_or(Delivery::ExactlyOnce);
    let options = KafkaCountOptions {
        job,
        cluster,
        input,
        output,
        parallelism,
        bounded,
        delivery,
        bad_records,
        lost_input: if skip_lost_input {
            LostInputPolicy::Skip
        } else {
            LostInputPolicy::Fail
        },
        source_properties: kafka.consumer.into_iter().collect(),
        sink_properties: kafka.producer.into_iter().collect(),
        only_partitions: None,
        stage: weir_workloads::jobs::KafkaCountStage::Whole,
    };
    if let Some(args) = member.resolve(&common.file()?.distributed, true)? {
        let plan = crate::member::Plan {
            job: options.job.clone(),
            cluster: options.cluster.clone(),
            input: options.input.clone(),
            keyed_uid: "running-count-sum",
            bounded,
        };
        return crate::member::run(plan, "count", common.config()?, args, common.watch(), |shard, hop| {
            let mut shard_options = options.clone();
            shard_options.job = shard.job_name.clone();
            shard_options.only_partitions = Some(vec![shard.partition]);
            shard_options.stage = match (shard.stage.as_str(), hop) {
                ("parse", Some(hop)) => KafkaCountStage::Parse {
                    repartition: hop.topic.clone(),
                    partitions: hop.partitions,
                    upstreams: hop.upstreams,
                },
                ("count", Some(hop)) => KafkaCountStage::Count {
                    repartition: hop.topic.clone(),
                },
                _ => KafkaCountStage::Whole,
            };
            Ok(kafka_count_job(&shard_options)?.0)
        });
    }
    let (job, progress) = kafka_count_job(&options)?;
    let of = if bounded {
        ProgressOf::Kafka(progress.clone())
    } else {
        ProgressOf::Nothing
    };
    let (summary, status) = run_until_signalled(job, common.config()?, common.watch(), of).context("job failed")?;
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
    Ok(())
}
