//! `--distributed` (`weir run kafka-count`, `weir nexmark`): this process
//! is one member of the job; the same command on more machines scales it
//! out (see `weir::distributed`).

use std::time::Duration;
use weir::connectors::kafka::KafkaConnection;
use weir::distributed::{repartition, run_member, Feeds, MemberHandle, MemberOptions, ShardContext, Stage};
use weir::Job;

/// How this member joins.
pub(crate) struct MemberArgs {
    /// `--member-id`.
    pub(crate) member_id: Option<String>,
    /// `--session-timeout-ms`.
    pub(crate) session_timeout: Duration,
    /// Through a repartition topic (`Some`, with `--repartition-partitions`
    /// if given), or not (`--input-partitioned-by-key`).
    pub(crate) hop: Option<Option<u16>>,
    /// `--prefetch-interval-ms`.
    pub(crate) prefetch_every: Option<Duration>,
}

/// The distributed job: its name, input, and the operator behind the cut.
pub(crate) struct Plan {
    /// The job's name.
    pub(crate) job: String,
    /// The cluster.
    pub(crate) cluster: KafkaConnection,
    /// The input topic.
    pub(crate) input: String,
    /// The uid of the keyed operator behind the cut (names the repartition topic).
    pub(crate) keyed_uid: &'static str,
    /// Shard jobs end at their input's end; the member when all did.
    pub(crate) bounded: bool,
}

/// The repartition topic between the stages "parse" and the keyed one.
pub(crate) struct Hop {
    /// The topic.
    pub(crate) topic: String,
    /// Its partitions.
    pub(crate) partitions: u16,
    /// The input's partitions (the parse shards).
    pub(crate) upstreams: u32,
}

/// The stages "parse" (input -> repartition topic) and `keyed` (repartition
/// topic -> output); the repartition topic is created (or checked) with
/// `partitions` or the input's count rounded up to a power of two.
fn stages(plan: &Plan, keyed: &str, partitions: Option<u16>) -> anyhow::Result<(Vec<Stage>, Hop)> {
    let max = weir_operators::DEFAULT_MAX_PARALLELISM;
    let upstreams = repartition::partition_count(&plan.cluster, &plan.input)?;
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
    let topic = repartition::topic_name(&plan.job, plan.keyed_uid);
    repartition::ensure_topic(&plan.cluster, &topic, partitions)?;
    let stages = vec![
        Stage {
            name: "parse".into(),
            topic: plan.input.clone(),
            feeds: Some(Feeds {
                topic: topic.clone(),
                partitions,
            }),
        },
        Stage {
            name: keyed.into(),
            topic: topic.clone(),
            feeds: None,
        },
    ];
    let hop = Hop {
        topic,
        partitions,
        upstreams: upstreams as u32,
    };
    Ok((stages, hop))
}

/// Runs a member of `plan.job` until SIGINT/SIGTERM (every shard stops with
/// a final checkpoint, the group hands them to the other members) or, when
/// bounded, until every shard it holds finished. `make` builds a shard's
/// job: of stage "parse" or `keyed` with the hop, of the only stage without.
pub(crate) fn run<F>(
    plan: Plan,
    keyed: &str,
    config: weir::JobConfig,
    args: MemberArgs,
    watch: crate::common::Watch,
    make: F,
) -> anyhow::Result<()>
where
    F: Fn(&ShardContext, Option<&Hop>) -> weir::Result<Job> + Sync,
{
    let (mut member, hop) = match args.hop {
        None => (
            MemberOptions::new(&plan.job, plan.cluster.clone(), &plan.input, config),
            None,
        ),
        Some(partitions) => {
            let (stages, hop) = stages(&plan, keyed, partitions)?;
            (
                MemberOptions::staged(&plan.job, plan.cluster.clone(), stages, config),
                Some(hop),
            )
        }
    };
    if let Some(id) = args.member_id {
        member.member_id = id;
    }
    member.session_timeout = args.session_timeout;
    member.bounded = plan.bounded;
    member.prefetch_every = args.prefetch_every;
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
    // The member's page lists its shards; each shard job's page is under shard/<job>/.
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
    let status = run_member(member, |shard| make(shard, hop.as_ref()), &handle)?;
    eprintln!(
        "member {} left: {} shard(s) taken over, {} finished, {} released, {} rebalance(s)",
        status.member_id, status.takeovers, status.finished, status.released, status.rebalances
    );
    drop(ui);
    drop(printer);
    Ok(())
}
