//! Nexmark over Kafka on noida-db, through `weir nexmark`: every query reads a
//! topic of JSON events (3 partitions, out of order within the 4 s bound,
//! ties, persons after their auctions) and writes its rows to a topic
//! exactly-once. A read_committed dump of the rows must equal the
//! brute-force reference, both for one `--bounded --drain` run and for a
//! `--bounded` run over half the events at parallelism 2 followed, after the
//! rest was produced, by a `--bounded --drain` run at parallelism 3 (open
//! windows, timers and join state carried across in the checkpoint and
//! redistributed by key group).
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

/// One `weir nexmark` run over Kafka.
struct Run<'a> {
    query: Query,
    source: &'a str,
    sink: &'a str,
    job: &'a str,
    parallelism: usize,
}

fn nexmark(broker: &Broker, dir: &Path, run: Run<'_>, flags: &[&str]) {
    let Run {
        query,
        source,
        sink,
        job,
        parallelism,
    } = run;
    let run = Command::new(common::WEIR)
        .args([
            "nexmark",
            "--query",
            query.name(),
            "--parallelism",
            &parallelism.to_string(),
        ])
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
        let one = Run {
            query,
            source: "events",
            sink: &sink,
            job: &job,
            parallelism: 2,
        };
        nexmark(broker, dir.path(), one, &["--bounded", "--drain"]);
        let sink = format!("{}-two", query.name());
        broker.create_topic(&sink, 2);
        let job = format!("{}-two", query.name());
        let first_half = Run {
            query,
            source: "events-growing",
            sink: &sink,
            job: &job,
            parallelism: 2,
        };
        nexmark(broker, dir.path(), first_half, &["--bounded"]);
    }
    broker.produce("events-growing", &all[half..]);
    let mut summary = Vec::new();
    for query in Query::ALL {
        let (sink, job) = (format!("{}-two", query.name()), format!("{}-two", query.name()));
        // The second half at another parallelism: the job rescales from the
        // first run's checkpoint (open windows, join state, timers, offsets).
        let second_half = Run {
            query,
            source: "events-growing",
            sink: &sink,
            job: &job,
            parallelism: 3,
        };
        nexmark(broker, dir.path(), second_half, &["--bounded", "--drain"]);
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
            "nexmark over kafka (broker={}): rows equal to the reference in 1 bounded run, and in 2 with the second rescaled from parallelism 2 to 3: {}",
            broker::broker_name(),
            summary.join(" ")
        ),
    );
}
