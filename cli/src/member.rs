//! `--distributed` (`weir run kafka-count`, `weir nexmark`): this process
//! is one member of the job; the same command on more machines scales it
//! out (see `weir::distributed`).

use std::time::Duration;
use weir::connectors::kafka::KafkaConnection;
use weir::distributed::{repartition, run_member, Feeds, MemberHandle, MemberOptions, ShardContext, Stage};
use weir::Job;

/// The `--distributed` flags of `weir run kafka-count` and `weir nexmark`
/// (over the `[distributed]` table of a config file).
#[derive(clap::Args, Clone)]
pub(crate) struct DistributedArgs {
    /// Run as one member of the job: the members (this command on more
    /// machines, or more times on one) share the work through the Kafka
    /// consumer group `weir-<job>`. The input goes through the repartition
    /// topic `weir-<job>-<operator>-repartition` (created by the first
    /// member) to bring each key's records together; each partition of the
    /// input and of that topic is a shard with its own checkpoints under
    /// --checkpoint-dir (use s3:// so any member can restore any shard)
    /// [default: `distributed.enabled` of --config].
    #[arg(long)]
    pub(crate) distributed: bool,
    /// With --distributed: this member's id [default: host-pid].
    #[arg(long, requires = "distributed")]
    pub(crate) member_id: Option<String>,
    /// With --distributed: how long the group waits for a silent member
    /// before its shards move to the others [default: 10000].
    #[arg(long, requires = "distributed")]
    pub(crate) session_timeout_ms: Option<u64>,
    /// With --distributed: partitions of the repartition topic (a power of
    /// two, at most 128, so each holds whole key groups) [default: the
    /// input's partition count rounded up to a power of two]. A topic that
    /// exists must have this count.
    #[arg(long, requires = "distributed")]
    pub(crate) repartition_partitions: Option<u16>,
    /// With --distributed: every N ms, download the newest state of the
    /// shards this member does not run, so that taking one over finds it on
    /// local disk (off by default: each member then keeps a copy of the
    /// job's state).
    #[arg(long, requires = "distributed")]
    pub(crate) prefetch_interval_ms: Option<u64>,
    /// With --distributed (kafka-count): the input is already partitioned
    /// by key (every record of a key in one partition, as a keyed producer
    /// writes them): count where it is read, with no repartition hop.
    #[arg(long, requires = "distributed")]
    pub(crate) input_partitioned_by_key: bool,
}

impl DistributedArgs {
    /// The member's settings, flags over the config file's `[distributed]`
    /// table; `None` when the job is not distributed. `keyed_input_ok`:
    /// whether the command takes `input_partitioned_by_key`.
    pub(crate) fn resolve(
        self,
        file: &crate::config_file::DistributedSettings,
        keyed_input_ok: bool,
    ) -> anyhow::Result<Option<MemberArgs>> {
        if !(self.distributed || file.enabled.unwrap_or(false)) {
            return Ok(None);
        }
        let keyed = self.input_partitioned_by_key || file.input_partitioned_by_key.unwrap_or(false);
        anyhow::ensure!(
            keyed_input_ok || !keyed,
            "input_partitioned_by_key is for `weir run kafka-count` (this job always repartitions)"
        );
        let ms = Duration::from_millis;
        Ok(Some(MemberArgs {
            member_id: self.member_id.or_else(|| file.member_id.clone()),
            session_timeout: ms(self.session_timeout_ms.or(file.session_timeout_ms).unwrap_or(10_000)),
            hop: (!keyed).then_some(self.repartition_partitions.or(file.repartition_partitions)),
            prefetch_every: self.prefetch_interval_ms.or(file.prefetch_interval_ms).map(ms),
        }))
    }
}

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
