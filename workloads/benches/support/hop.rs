//! `kafka-count` run as distributed members through a repartition topic,
//! for the benches: stage `parse` (`in` -> repartition topic) and stage
//! `count` (repartition topic -> output), wired as `weir run kafka-count
//! --distributed` wires them, on weir's public API.
#![allow(dead_code)]

use super::kafka::{count_options, Error};
use std::thread::JoinHandle;
use weir::distributed::{repartition, run_member, Feeds, MemberHandle, MemberOptions, MemberStatus, Stage};
use weir::JobConfig;
use weir_workloads::jobs::{kafka_count_job, kafka_count_repartition_topic, KafkaCountStage};

/// A member running on a thread of its own.
pub struct HopMember {
    /// Its handle (stop, status).
    pub handle: MemberHandle,
    thread: JoinHandle<weir::Result<MemberStatus>>,
}

impl HopMember {
    /// Waits for the member to end (a bounded member ends by itself).
    pub fn join(self) -> Result<MemberStatus, Error> {
        Ok(self.thread.join().map_err(|_| "the member panicked")??)
    }

    /// Leaves the group (final checkpoints) and waits.
    pub fn stop(self) -> Result<MemberStatus, Error> {
        self.handle.stop();
        self.join()
    }
}

/// Starts one member of job `job` reading `in` (4 partitions) through a
/// repartition topic of `partitions` partitions into `output`.
pub fn start_hop_member(
    brokers: &str,
    job: &str,
    output: &str,
    partitions: u16,
    bounded: bool,
    config: JobConfig,
) -> Result<HopMember, Error> {
    let options = count_options(brokers, job, output, 1, bounded);
    let topic = kafka_count_repartition_topic(job);
    repartition::ensure_topic(&options.cluster, &topic, partitions)?;
    let upstreams = repartition::partition_count(&options.cluster, "in")? as u32;
    let stages = vec![
        Stage {
            name: "parse".into(),
            topic: "in".into(),
            feeds: Some(Feeds {
                topic: topic.clone(),
                partitions,
            }),
        },
        Stage {
            name: "count".into(),
            topic: topic.clone(),
            feeds: None,
        },
    ];
    let mut member = MemberOptions::staged(job, options.cluster.clone(), stages, config);
    member.bounded = bounded;
    let handle = MemberHandle::default();
    let running = handle.clone();
    let thread = std::thread::spawn(move || {
        run_member(
            member,
            |shard| {
                let mut o = options.clone();
                o.job = shard.job_name.clone();
                o.only_partitions = Some(vec![shard.partition]);
                o.stage = if shard.stage == "parse" {
                    KafkaCountStage::Parse {
                        repartition: topic.clone(),
                        partitions,
                        upstreams,
                    }
                } else {
                    KafkaCountStage::Count {
                        repartition: topic.clone(),
                    }
                };
                Ok(kafka_count_job(&o)?.0)
            },
            &running,
        )
    });
    Ok(HopMember { handle, thread })
}
