//! `weir run kafka-count --distributed`: this process is one member of the
//! job; the same command on more machines scales it out (see
//! `weir::distributed`).

use std::time::Duration;
use weir::distributed::{run_member, MemberHandle, MemberOptions};
use weir_workloads::jobs::{kafka_count_job, KafkaCountOptions};

/// Runs a member of `options.job` until SIGINT/SIGTERM (every shard stops
/// with a final checkpoint, the group hands them to the other members).
pub(crate) fn run(
    options: KafkaCountOptions,
    config: weir::JobConfig,
    member_id: Option<String>,
    session_timeout: Duration,
    watch: crate::common::Watch,
) -> anyhow::Result<()> {
    let mut member = MemberOptions::new(&options.job, options.cluster.clone(), &options.input, config);
    if let Some(id) = member_id {
        member.member_id = id;
    }
    member.session_timeout = session_timeout;
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
        "member {} of job {} (group weir-{})",
        member.member_id, member.job, member.job
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
