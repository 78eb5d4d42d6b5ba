//! Input and expected output of the `kafka-count` job in tests.

use crate::broker::{Broker, ToProduce};
use crate::common::Line;
use std::collections::HashMap;
use weir::connectors::generator::w1_event;

#[allow(dead_code)]
/// Input lines `id,key,value` for ids in `range`, spread over `partitions`.
pub fn input(range: std::ops::Range<u64>, partitions: i32) -> Vec<ToProduce> {
    range
        .map(|i| {
            let e = w1_event(i, 0);
            (
                None,
                format!("{},{},{}", e.index, e.key % 1000, e.value).into_bytes(),
                (i % partitions as u64) as i32,
            )
        })
        .collect()
}

#[allow(dead_code)]
/// As [`input`], partitioned by key (`key % partitions`): every record of a
/// key in one partition, as a keyed producer writes them.
pub fn input_by_key(range: std::ops::Range<u64>, partitions: i32) -> Vec<ToProduce> {
    range
        .map(|i| {
            let e = w1_event(i, 0);
            let key = e.key % 1000;
            (
                None,
                format!("{},{},{}", e.index, key, e.value).into_bytes(),
                (key % partitions as u64) as i32,
            )
        })
        .collect()
}

#[allow(dead_code)]
/// What a failure-free run outputs for ids `0..n`: per key, counts 1..=c.
pub fn expected(n: u64) -> Vec<Line> {
    let mut counts: HashMap<u64, u64> = HashMap::new();
    (0..n)
        .map(|i| {
            let key = w1_event(i, 0).key % 1000;
            let c = counts.entry(key).or_default();
            *c += 1;
            Line {
                index: i,
                key,
                count: *c,
            }
        })
        .collect()
}

#[allow(dead_code)]
/// The committed output, parsed (once no transaction is open on `topic`).
pub fn output(broker: &Broker, topic: &str) -> Vec<Line> {
    parse(broker.consume_all(topic, true))
}

#[allow(dead_code)]
/// The output committed so far by a job that still runs, parsed.
pub fn output_so_far(broker: &Broker, topic: &str) -> Vec<Line> {
    parse(broker.consume_committed_so_far(topic))
}

fn parse(consumed: Vec<crate::broker::Consumed>) -> Vec<Line> {
    consumed
        .into_iter()
        .map(|(_, _, _, v)| {
            let f: Vec<u64> = std::str::from_utf8(&v)
                .unwrap()
                .split(',')
                .map(|x| x.parse().unwrap())
                .collect();
            Line {
                index: f[0],
                key: f[1],
                count: f[2],
            }
        })
        .collect()
}

#[allow(dead_code)]
/// A sink serializer writing a `String` record as the value, no key.
pub fn line(s: &String, _key: &mut Vec<u8>, value: &mut Vec<u8>) -> Result<Option<i32>, String> {
    value.extend_from_slice(s.as_bytes());
    Ok(None)
}
