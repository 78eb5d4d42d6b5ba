//! Proves the Apache Kafka harness (`tests/support/broker.rs`): the shared
//! broker, topic creation, produce and read back per partition, that
//! read_committed hides an aborted transaction while read_uncommitted shows
//! it, and that a broker of a test's own keeps its data across a SIGTERM and
//! a SIGKILL restart and is gone once dropped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/broker.rs"]
mod broker;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use broker::{Broker, Stop, ToProduce};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

#[test]
fn produce_and_consume_all_partitions() {
    let t = Instant::now();
    let broker = Broker::shared();
    eprintln!("broker start: {:?} ({})", t.elapsed(), broker.bootstrap);

    let t = Instant::now();
    broker.create_topic("plain", 3);
    eprintln!("create_topic: {:?}", t.elapsed());

    let records: Vec<ToProduce> = (0..300)
        .map(|i: i32| {
            let key = (i % 7 != 0).then(|| format!("k{}", i % 13).into_bytes());
            (key, format!("payload-{i}").into_bytes(), i % 3)
        })
        .collect();
    let t = Instant::now();
    broker.produce("plain", &records);
    eprintln!("produce 300: {:?}", t.elapsed());

    let t = Instant::now();
    let got = broker.consume_all("plain", false);
    eprintln!("consume_all 300: {:?}", t.elapsed());
    assert_eq!(got.len(), 300);
    for partition in 0..3 {
        let expected: Vec<_> = records
            .iter()
            .filter(|r| r.2 == partition)
            .map(|r| (r.0.clone(), r.1.clone()))
            .collect();
        let actual: Vec<_> = got.iter().filter(|r| r.0 == partition).collect();
        let offsets: Vec<i64> = actual.iter().map(|r| r.1).collect();
        assert_eq!(
            offsets,
            (0..100).collect::<Vec<i64>>(),
            "offsets of partition {partition}"
        );
        let actual: Vec<_> = actual.iter().map(|r| (r.2.clone(), r.3.clone())).collect();
        assert_eq!(actual, expected, "records of partition {partition}");
    }
    // Nothing transactional here: read_committed sees the same.
    assert_eq!(broker.consume_all("plain", true), got);
    // An empty topic reads as empty, at once.
    broker.create_topic("empty", 2);
    assert!(broker.consume_all("empty", true).is_empty());
}

#[test]
fn read_committed_hides_aborted_transaction() {
    let broker = Broker::shared();
    broker.create_topic("tx", 2);

    let producer: BaseProducer = broker
        .client_config()
        .set("transactional.id", "weir-harness-tx")
        .set("transaction.timeout.ms", "60000")
        .create()
        .expect("transactional producer");
    producer
        .init_transactions(Duration::from_secs(10))
        .expect("init_transactions");

    producer.begin_transaction().expect("begin_transaction 1");
    for i in 0..10 {
        let payload = format!("aborted-{i}");
        producer
            .send(BaseRecord::<(), _>::to("tx").payload(&payload).partition(i % 2))
            .expect("send aborted record");
    }
    // Make sure the aborted records are in the log before the abort.
    producer.flush(Duration::from_secs(10)).expect("flush aborted records");
    producer
        .abort_transaction(Duration::from_secs(10))
        .expect("abort_transaction");

    producer.begin_transaction().expect("begin_transaction 2");
    for i in 0..5 {
        let payload = format!("committed-{i}");
        producer
            .send(BaseRecord::<(), _>::to("tx").payload(&payload).partition(i % 2))
            .expect("send committed record");
    }
    producer
        .commit_transaction(Duration::from_secs(10))
        .expect("commit_transaction");

    let t = Instant::now();
    let committed = broker.consume_all("tx", true);
    eprintln!("consume_all read_committed: {:?}", t.elapsed());
    let payloads: Vec<String> = committed
        .iter()
        .map(|r| String::from_utf8(r.3.clone()).unwrap())
        .collect();
    assert_eq!(committed.len(), 5, "read_committed sees: {payloads:?}");
    assert!(payloads.iter().all(|p| p.starts_with("committed-")), "{payloads:?}");

    let t = Instant::now();
    let all = broker.consume_all("tx", false);
    eprintln!("consume_all read_uncommitted: {:?}", t.elapsed());
    assert_eq!(all.len(), 15);
    assert_eq!(all.iter().filter(|r| r.3.starts_with(b"aborted-")).count(), 10);
}

#[test]
fn an_own_broker_keeps_its_data_across_sigterm_and_sigkill_restarts_and_is_gone_when_dropped() {
    let t = Instant::now();
    let mut broker = Broker::start();
    eprintln!("own broker start: {:?}", t.elapsed());
    broker.create_topic("kept", 2);
    let first: Vec<ToProduce> = (0..100)
        .map(|i: i32| (None, format!("a{i}").into_bytes(), i % 2))
        .collect();
    broker.produce("kept", &first);
    for (how, round) in [(Stop::Term, "b"), (Stop::Kill, "c")] {
        let t = Instant::now();
        broker.restart(Duration::from_millis(200), how);
        eprintln!("restart after {how:?}: {:?}", t.elapsed());
        let more: Vec<ToProduce> = (0..100)
            .map(|i: i32| (None, format!("{round}{i}").into_bytes(), i % 2))
            .collect();
        broker.produce("kept", &more);
    }
    // acks=all on one node: everything acknowledged survived both restarts.
    let got = broker.consume_all("kept", false);
    assert_eq!(got.len(), 300);
    let addr = broker.bootstrap.clone();
    drop(broker);
    assert!(
        TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200)).is_err(),
        "the broker still accepts on {addr} after drop"
    );
}
