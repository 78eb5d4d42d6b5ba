//! `weir run kafka-count --distributed`: this process is one member of the
//! job; the same command on more machines scales it out (see
//! `weir::distributed`).

use std::time::Duration;
use weir::distributed::{repartition, run_member, Feeds, MemberHandle, MemberOptions, Stage};
use weir_workloads::jobs::{kafka_count_job, kafka_count_repartition_topic, KafkaCountOptions, KafkaCountStage};

/// How this member joins.
pub(crate) struct MemberArgs {
    /// `--member-id`.
    pub(crate) member_id: Option<String>,
    /// `--session-timeout-ms`.
    pub(crate) session_timeout: Duration,
    /// Through a repartition topic (`Some`, with `--repartition-partitions`
    /// if given), or not (`--input-partitioned-by-key`).
    pub(crate) hop: Option<Option<u16>>,
}

/// The stages "parse" (input -> repartition topic) and "count"
/// (repartition topic -> output); the repartition topic is created (or
/// checked) with `partitions` or the input's count rounded up to a power of two.
fn stages(options: &KafkaCountOptions, partitions: Option<u16>) -> anyhow::Result<(Vec<Stage>, u16, u32)> {
    let max = weir_operators::DEFAULT_MAX_PARALLELISM;
    let upstreams = repartition::partition_count(&options.cluster, &options.input)?;
    let partitions = match partitions {
        Some(n) => {
            anyhow::ensure!(
                n >= 1 && n <= max && max % n == 0,
                "--repartition-partitions {n}: must divide {max} (1, 2, 4 ... {max}), so that a partition holds whole key groups"
            );
            n
        }
        None => repartition::default_partitions(upstreams, max),
    };
    let topic = kafka_count_repartition_topic(&options.job);
    repartition::ensure_topic(&options.cluster, &topic, partitions)?;
    let stages = vec![
        Stage {
            name: "parse".into(),
            topic: options.input.clone(),
            feeds: Some(Feeds {
                topic: topic.clone(),
                partitions,
            }),
        },
        Stage {
            name: "count".into(),
            topic,
            feeds: None,
        },
    ];
    Ok((stages, partitions, upstreams as u32))
}

/// Runs a member of `options.job` until SIGINT/SIGTERM (every shard stops
/// with a final checkpoint, the group hands them to the other members).
pub(crate) fn run(
    options: KafkaCountOptions,
    config: weir::JobConfig,
    args: MemberArgs,
    watch: crate::common::Watch,
) -> anyhow::Result<()> {
    let (mut member, partitions, upstreams) = match args.hop {
        None => (
            MemberOptions::new(&options.job, options.cluster.clone(), &options.input, config),
            0,
            0,
        ),
        Some(partitions) => {
            let (stages, partitions, upstreams) = stages(&options, partitions)?;
            (
                MemberOptions::staged(&options.job, options.cluster.clone(), stages, config),
                partitions,
                upstreams,
            )
        }
    };
    if let Some(id) = args.member_id {
        member.member_id = id;
    }
    member.session_timeout = args.session_timeout;
    member.bounded = options.bounded;
    let handle = MemberHandle::default();
    let on_signal = handle.clone();
    std::thread::Builder::new().name("weir-signals".into()).spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        rt.block_on(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            eprintln!("leaving the group: every shard stops with a final checkpoint");
            on_signal.stop();
        });
    })?;
    eprintln!(
        "member {} of job {} (group weir-{}, topics {})",
        member.member_id,
        member.job,
        member.job,
        member
            .stages
            .iter()
            .map(|s| s.topic.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The member's page lists its shards; each shard job's page is under shard/<partition>/.
    let ui = match watch.ui {
        Some((addr, ui_options)) => {
            let server = handle.serve_ui(addr, ui_options)?;
            eprintln!("web UI: {}", server.url());
            Some(server)
        }
        None => None,
    };
    // --status-every: the member's shards and their lag.
    let printer = watch.status_every.filter(|s| *s > 0).map(|secs| {
        let handle = handle.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(secs));
            if handle.is_stopping() {
                return;
            }
            eprint!("{}", handle.report());
        })
    });
    let status = run_member(
        member,
        |shard| {
            let mut shard_options = options.clone();
            shard_options.job = shard.job_name.clone();
            shard_options.only_partitions = Some(vec![shard.partition]);
            let repartition = kafka_count_repartition_topic(&options.job);
            shard_options.stage = match shard.stage.as_str() {
                "parse" => KafkaCountStage::Parse {
                    repartition,
                    partitions,
                    upstreams,
                },
                "count" => KafkaCountStage::Count { repartition },
                _ => KafkaCountStage::Whole,
            };
            Ok(kafka_count_job(&shard_options)?.0)
        },
        &handle,
    )?;
    eprintln!(
        "member {} left: {} shard(s) taken over, {} released, {} rebalance(s)",
        status.member_id, status.takeovers, status.released, status.rebalances
    );
    drop(ui);
    drop(printer);
    Ok(())
}
