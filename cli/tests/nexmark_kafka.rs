//! Nexmark over Kafka on noida-db, through `weir nexmark`: every query reads a
//! topic of JSON events (3 partitions, out of order within the 4 s bound,
//! ties, persons after their auctions) and writes its rows to a topic
//! exactly-once. A read_committed dump of the rows must equal the
//! brute-force reference, both for one `--bounded --drain` run and for a
//! `--bounded` run over half the events followed, after the rest was
//! produced, by a `--bounded --drain` run (open windows, timers and join
//! state carried across in the checkpoint).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/broker.rs"]
mod broker;
mod common;
#[path = "support/nexmark_ref.rs"]
mod nexmark_ref;

use broker::{Broker, ToProduce};
use nexmark_ref::{diff, expected, parse_rows, perturbed};
use std::path::Path;
use std::process::Command;
use weir_workloads::nexmark::model::Event;
use weir_workloads::nexmark::queries::Query;

const EVENTS: u64 = 24_000;
const PARTITIONS: i32 = 3;

/// The events as Kafka records, round-robin over the partitions (each
/// partition keeps the order, so its disorder stays within the bound).
fn records(events: &[Event]) -> Vec<ToProduce> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| (None, e.to_json().into_bytes(), i as i32 % PARTITIONS))
        .collect()
}

fn nexmark(broker: &Broker, dir: &Path, query: Query, source: &str, sink: &str, job: &str, flags: &[&str]) {
    let run = Command::new(common::WEIR)
        .args(["nexmark", "--query", query.name(), "--parallelism", "2"])
        .args(["--checkpoint-interval-ms", "200", "--brokers", &broker.bootstrap])
        .args(["--source-topic", source, "--sink-topic", sink, "--job", job])
        .arg("--checkpoint-dir")
        .arg(dir)
        .args(flags)
        .env("WEIR_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{query:?} {flags:?}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn every_query_over_kafka_matches_the_reference_in_one_run_and_in_two() {
    let broker = Broker::shared();
    let events = perturbed(EVENTS);
    let all = records(&events);
    let half = all.len() / 2;
    broker.create_topic("events", PARTITIONS);
    broker.create_topic("events-growing", PARTITIONS);
    broker.produce("events", &all);
    broker.produce("events-growing", &all[..half]);
    let dir = tempfile::tempdir().unwrap();

    for query in Query::ALL {
        let sink = format!("{}-one", query.name());
        broker.create_topic(&sink, 2);
        let job = format!("{}-one", query.name());
        nexmark(
            broker,
            dir.path(),
            query,
            "events",
            &sink,
            &job,
            &["--bounded", "--drain"],
        );
        let sink = format!("{}-two", query.name());
        broker.create_topic(&sink, 2);
        let job = format!("{}-two", query.name());
        nexmark(broker, dir.path(), query, "events-growing", &sink, &job, &["--bounded"]);
    }
    broker.produce("events-growing", &all[half..]);
    let mut summary = Vec::new();
    for query in Query::ALL {
        let (sink, job) = (format!("{}-two", query.name()), format!("{}-two", query.name()));
        nexmark(
            broker,
            dir.path(),
            query,
            "events-growing",
            &sink,
            &job,
            &["--bounded", "--drain"],
        );
        let want = expected(query, &events);
        for run in ["one", "two"] {
            let topic = format!("{}-{run}", query.name());
            let values = broker.consume_all(&topic, true).into_iter().map(|c| c.3);
            let got = parse_rows(query, values);
            assert_eq!(
                diff(&want, &got),
                (0, 0),
                "{query:?} {run} run(s): {} rows expected, {} read",
                want.len(),
                got.len()
            );
        }
        summary.push(format!("{}={}", query.name(), want.len()));
    }
    common::publish_summary(
        "nexmark_kafka",
        &format!(
            "nexmark over kafka (broker={}): rows equal to the reference in 1 and 2 bounded runs: {}",
            broker::broker_name(),
            summary.join(" ")
        ),
    );
}
