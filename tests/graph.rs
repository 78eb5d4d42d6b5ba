//! The graph API and the runtime without crashes: validation errors, data
//! movement (key_by, rebalance, union, parallelism), watermarks, and a
//! failing task failing the job with its error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir::connectors::collect::{CollectSink, CountingSink};
use weir::connectors::generator::{Generator, W1Event};
use weir::connectors::{ConnectorContext, Source, SourcePoll};
use weir::operators::{Operator, OperatorError, Timestamp};
use weir::{JobBuilder, JobConfig, WeirError};

fn config(dir: &std::path::Path) -> JobConfig {
    JobConfig {
        checkpoint_interval: Some(Duration::from_millis(50)),
        ..JobConfig::with_checkpoint_dir(dir)
    }
}

fn invalid(job: JobBuilder) -> String {
    match job.build() {
        Err(WeirError::InvalidGraph(m)) => m,
        Err(e) => panic!("expected InvalidGraph, got {e}"),
        Ok(_) => panic!("expected InvalidGraph, the graph was accepted"),
    }
}

#[derive(Clone, Copy)]
struct Count;
impl weir::operators::KeyedProcess<u64, W1Event, u64> for Count {
    type State = u64;
    fn process(
        &mut self,
        _k: &u64,
        s: &mut Option<u64>,
        _r: W1Event,
        ctx: &mut weir::operators::KeyedContext<'_, u64>,
    ) -> Result<(), OperatorError> {
        *s.get_or_insert(0) += 1;
        ctx.emit(s.unwrap_or(0));
        Ok(())
    }
}

#[test]
fn a_stateful_operator_without_uid_is_rejected() {
    let job = JobBuilder::new("j");
    job.source("gen", Generator::w1_factory(Some(10), None))
        .uid("gen")
        .key_by(|e: &W1Event| e.key)
        .process("count", Count)
        .sink("out", CountingSink::factory());
    let m = invalid(job);
    assert!(m.contains("`count` needs a uid"), "{m}");

    let job = JobBuilder::new("j");
    job.source("gen", Generator::w1_factory(Some(10), None))
        .sink("out", CountingSink::factory());
    assert!(invalid(job).contains("`gen` needs a uid"));
}

#[test]
fn two_operators_with_one_uid_are_rejected() {
    let job = JobBuilder::new("j");
    job.source("gen", Generator::w1_factory(Some(10), None))
        .uid("same")
        .key_by(|e: &W1Event| e.key)
        .process("count", Count)
        .uid("same")
        .sink("out", CountingSink::factory());
    let m = invalid(job);
    assert!(m.contains("`gen` and `count` have the same uid `same`"), "{m}");
}

#[test]
fn parallelism_must_be_between_one_and_max_parallelism() {
    for (p, ok) in [(0, false), (1, true), (128, true), (129, false)] {
        let job = JobBuilder::new("j");
        job.source("gen", Generator::w1_factory(Some(10), None))
            .uid("gen")
            .parallelism(p)
            .sink("out", CountingSink::factory());
        match job.build() {
            Ok(_) => assert!(ok, "parallelism {p} accepted"),
            Err(e) => {
                assert!(!ok, "parallelism {p} rejected: {e}");
                assert!(
                    e.to_string().contains(&format!("parallelism {p} of `gen -> out`")),
                    "{e}"
                );
            }
        }
    }
}

#[test]
fn a_stream_that_goes_nowhere_and_a_job_without_sink_are_rejected() {
    let job = JobBuilder::new("j");
    let _ = job
        .source("gen", Generator::w1_factory(Some(10), None))
        .uid("gen")
        .map(|e: W1Event| e.key);
    assert!(invalid(job).contains("goes nowhere"));
    assert!(invalid(JobBuilder::new("j")).contains("no sink"));
    let job = JobBuilder::new("a/b");
    job.source("gen", Generator::w1_factory(Some(10), None))
        .uid("gen")
        .sink("out", CountingSink::factory());
    assert!(invalid(job).contains("directory name"));
}

#[test]
fn every_record_arrives_once_through_key_by_rebalance_and_union() {
    let dir = tempfile::tempdir().unwrap();
    let out = Arc::new(Mutex::new(Vec::new()));
    let job = JobBuilder::new("moves").default_parallelism(2);
    let a = job
        .source("a", Generator::w1_factory(Some(30_000), None))
        .uid("a")
        .map(|e: W1Event| e.index);
    let b = job
        .source("b", Generator::w1_factory(Some(20_000), None))
        .uid("b")
        .parallelism(3)
        .map(|e: W1Event| e.index + 1_000_000);
    a.union(b)
        .parallelism(4)
        .filter(|i: &u64| i % 7 != 3)
        .rebalance()
        .parallelism(1)
        .flat_map(|i: u64| [i, i])
        .key_by(|i: &u64| *i)
        .parallelism(3)
        .reduce("dedup", |a: &u64, _b: &u64| *a + 10_000_000)
        .uid("dedup")
        .sink("collect", CollectSink::factory(out.clone()));
    job.build().unwrap().run(config(dir.path())).unwrap();
    let mut got = out.lock().unwrap().clone();
    got.sort_unstable();
    let mut expected: Vec<u64> = (0..30_000u64)
        .chain((0..20_000).map(|i| i + 1_000_000))
        .filter(|i| i % 7 != 3)
        .flat_map(|i| [i, i + 10_000_000])
        .collect();
    expected.sort_unstable();
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected);
}

/// Emits `0..n` with event time = value, and the watermark after each batch.
struct Ticks {
    next: i64,
    end: i64,
}
impl Source<i64> for Ticks {
    fn poll(&mut self, out: &mut Vec<i64>, max: usize) -> weir::Result<SourcePoll> {
        if self.next >= self.end {
            return Ok(SourcePoll::End);
        }
        let n = (max as i64).min(self.end - self.next).min(10);
        out.extend(self.next..self.next + n);
        self.next += n;
        Ok(SourcePoll::Ready)
    }
    fn watermark(&mut self) -> Option<Timestamp> {
        Some(Timestamp(self.next - 1))
    }
    fn position(&mut self) -> weir::Result<Vec<u8>> {
        Ok(self.next.to_be_bytes().to_vec())
    }
}

#[derive(Clone)]
struct WatermarkProbe(Arc<Mutex<Vec<i64>>>);
impl Operator<i64, i64> for WatermarkProbe {
    fn process(&mut self, r: i64, out: &mut Vec<i64>) -> Result<(), OperatorError> {
        out.push(r);
        Ok(())
    }
    fn on_watermark(&mut self, w: Timestamp, _out: &mut Vec<i64>) -> Result<(), OperatorError> {
        self.0.lock().unwrap().push(w.0);
        Ok(())
    }
}

#[test]
fn watermarks_are_the_minimum_over_inputs_and_do_not_jump_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let job = JobBuilder::new("wm");
    let fast = job
        .source("fast", |_c: ConnectorContext| Ok(Ticks { next: 0, end: 1000 }))
        .uid("fast");
    let slow = job
        .source("slow", |_c: ConnectorContext| Ok(Ticks { next: 0, end: 500 }))
        .uid("slow");
    let probe = WatermarkProbe(seen.clone());
    fast.union(slow)
        .operator("probe", move || probe.clone())
        .sink("count", CountingSink::factory());
    job.build().unwrap().run(config(dir.path())).unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "watermarks must only advance: {seen:?}"
    );
    assert!(
        seen.contains(&499),
        "the slow input holds the watermark at its own: {seen:?}"
    );
    assert!(
        !seen.contains(&i64::MAX),
        "ending a bounded run must not advance event time to the end: {seen:?}"
    );
}

#[test]
fn a_failing_operator_fails_the_job_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let job = JobBuilder::new("fails").default_parallelism(2);
    job.source("gen", Generator::w1_factory(None, None))
        .uid("gen")
        .key_by(|e: &W1Event| e.key)
        .process("count", Count)
        .uid("count")
        .try_map(|c: u64| {
            if c >= 3 {
                Err(OperatorError(format!("count {c} is too high")))
            } else {
                Ok(c)
            }
        })
        .sink("out", CountingSink::factory());
    let started = Instant::now();
    let err = job.build().unwrap().run(config(dir.path())).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the job must end, not hang"
    );
    match err {
        WeirError::Operator { operator, message } => {
            assert!(operator.starts_with("try_map["), "{operator}");
            assert!(message.contains("too high"), "{message}");
        }
        other => panic!("expected an operator error, got {other}"),
    }
}

#[test]
fn a_panicking_task_fails_the_job_with_the_panic_message() {
    let dir = tempfile::tempdir().unwrap();
    let job = JobBuilder::new("panics");
    job.source("gen", Generator::w1_factory(None, None))
        .uid("gen")
        .map(|e: W1Event| {
            assert!(e.index < 5_000, "boom at {}", e.index);
            e
        })
        .sink("out", CountingSink::factory());
    let err = job.build().unwrap().run(config(dir.path())).unwrap_err();
    match err {
        WeirError::Panic { task, message } => {
            assert!(task.contains("gen"), "{task}");
            assert!(message.contains("boom at 5000"), "{message}");
        }
        other => panic!("expected a panic error, got {other}"),
    }
}

#[test]
fn bounded_and_drain_advances_event_time_to_the_end_before_the_final_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let job = JobBuilder::new("drain");
    let probe = WatermarkProbe(seen.clone());
    job.source("ticks", |_c: ConnectorContext| Ok(Ticks { next: 0, end: 100 }))
        .uid("ticks")
        .rebalance()
        .operator("probe", move || probe.clone())
        .sink("count", CountingSink::factory());
    let config = JobConfig {
        drain_at_end: true,
        ..config(dir.path())
    };
    job.build().unwrap().run(config).unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.last(), Some(&i64::MAX), "{seen:?}");
}

#[test]
fn a_tuple_key_brings_its_records_together_and_keeps_its_state_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let run = |records: u64| {
        let out = Arc::new(Mutex::new(Vec::new()));
        let job = JobBuilder::new("tuples").default_parallelism(2);
        job.source("gen", Generator::w1_factory(Some(records), None))
            .uid("gen")
            .map(|e: W1Event| (format!("k{}", e.key % 7), e.key % 2 == 0, 1u64))
            .key_by(|r: &(String, bool, u64)| (r.0.clone(), r.1))
            .reduce("count", |a, b| (a.0.clone(), a.1, a.2 + b.2))
            .uid("count")
            .map(|r: (String, bool, u64)| r)
            .sink("out", CollectSink::factory(out.clone()));
        job.build().unwrap().run(config(dir.path())).unwrap();
        let rows = out.lock().unwrap().clone();
        rows
    };
    let first = run(5_000);
    assert_eq!(first.len(), 5_000);
    let second = run(10_000);
    // The state of every (String, bool) key survived the restart: the
    // counts of the second run go on from the first run's.
    let mut highest = std::collections::HashMap::new();
    for (k, even, n) in first.iter().chain(&second) {
        let h = highest.entry((k.clone(), *even)).or_insert(0u64);
        *h = (*h).max(*n);
    }
    assert_eq!(
        highest.values().sum::<u64>(),
        10_000,
        "one running count per key over both runs"
    );
    assert!(highest.len() <= 14);
}

#[test]
fn a_teed_stream_feeds_two_sinks_and_a_split_routes_without_copying_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let run = |records: u64| {
        let (all, evens, odds) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(Mutex::new(Vec::new())),
        );
        let job = JobBuilder::new("fan-out").default_parallelism(2);
        let (a, b) = job
            .source("gen", Generator::w1_factory(Some(records), None))
            .uid("gen")
            .map(|e: W1Event| e.index)
            .tee();
        a.sink("all", CollectSink::factory(all.clone()));
        let (even, odd) = b.split(|i: u64| {
            if i % 2 == 0 {
                weir::operators::Either::Left(i)
            } else {
                weir::operators::Either::Right(i.to_string())
            }
        });
        even.key_by(|i: &u64| *i % 10)
            .reduce("max-even", |a, b| (*a).max(*b))
            .uid("max-even")
            .sink("evens", CollectSink::factory(evens.clone()));
        odd.sink("odds", CollectSink::factory(odds.clone()));
        let summary = job.build().unwrap().run(config(dir.path())).unwrap();
        let all: Vec<u64> = std::mem::take(&mut *all.lock().unwrap());
        let evens: Vec<u64> = std::mem::take(&mut *evens.lock().unwrap());
        let odds: Vec<String> = std::mem::take(&mut *odds.lock().unwrap());
        (summary, all, evens, odds)
    };
    let (first, all1, evens1, odds1) = run(10_000);
    assert_eq!(all1.len(), 10_000);
    assert_eq!(evens1.len(), 5_000);
    assert_eq!(odds1.len(), 5_000);
    let (second, all2, _, odds2) = run(20_000);
    assert_eq!(
        second.restored_from, first.last_checkpoint,
        "barriers reached both branches"
    );
    let mut all: Vec<u64> = all1.into_iter().chain(all2).collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..20_000).collect::<Vec<u64>>(),
        "each record once in the teed branch"
    );
    let odds: std::collections::HashSet<String> = odds1.into_iter().chain(odds2).collect();
    assert_eq!(odds.len(), 10_000);
}

/// Keeps every index of a key in a list state and the largest in a named value state.
#[derive(Clone, Copy)]
struct ListAndMax;
impl weir::operators::KeyedProcess<u64, W1Event, (u64, u64, usize)> for ListAndMax {
    type State = ();
    fn process(
        &mut self,
        key: &u64,
        _: &mut Option<()>,
        r: W1Event,
        ctx: &mut weir::operators::KeyedContext<'_, (u64, u64, usize)>,
    ) -> Result<(), OperatorError> {
        let max = ctx.value::<u64>("max").get()?.unwrap_or(0).max(r.index);
        ctx.value("max").set(&max)?;
        ctx.list::<u64>("indices").append(&r.index)?;
        let len = ctx.list::<u64>("indices").get()?.len();
        ctx.emit((*key, max, len));
        Ok(())
    }
}

#[test]
fn named_value_and_list_states_live_in_rocksdb_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let run = |records: u64| {
        let out = Arc::new(Mutex::new(Vec::new()));
        let job = JobBuilder::new("states").default_parallelism(2);
        job.source("gen", Generator::w1_factory_keys(Some(records), None, 50))
            .uid("gen")
            .key_by(|e: &W1Event| e.key)
            .process("list-and-max", ListAndMax)
            .uid("list-and-max")
            .sink("out", CollectSink::factory(out.clone()));
        job.build().unwrap().run(config(dir.path())).unwrap();
        let rows: Vec<(u64, u64, usize)> = out.lock().unwrap().clone();
        rows
    };
    let first = run(2_000);
    let second = run(4_000);
    let mut last: std::collections::HashMap<u64, (u64, usize)> = std::collections::HashMap::new();
    for (k, max, len) in first.into_iter().chain(second) {
        let e = last.entry(k).or_default();
        *e = (e.0.max(max), e.1.max(len));
    }
    assert_eq!(
        last.values().map(|(_, len)| len).sum::<usize>(),
        4_000,
        "every index once in its key's list"
    );
    assert!(last.values().all(|(max, _)| *max < 4_000));
}

#[test]
fn count_windows_fire_every_n_records_per_key_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let run = |records: u64| {
        let out = Arc::new(Mutex::new(Vec::new()));
        let job = JobBuilder::new("count-windows").default_parallelism(2);
        job.source("gen", Generator::w1_factory_keys(Some(records), None, 10))
            .uid("gen")
            .key_by(|e: &W1Event| e.key)
            .count_window_aggregate("per-100", 100, weir::operators::aggregators::Count)
            .uid("per-100")
            .sink("out", CollectSink::factory(out.clone()));
        job.build().unwrap().run(config(dir.path())).unwrap();
        let rows: Vec<(u64, u64)> = out.lock().unwrap().clone();
        rows
    };
    let mut rows = run(5_000);
    rows.extend(run(10_000));
    assert!(rows.iter().all(|(_, n)| *n == 100), "every window holds 100 records");
    // 10 000 records over 10 keys: each key fills its windows whatever the restart.
    let full: u64 = rows.iter().map(|(_, n)| n).sum();
    assert!(full > 9_000 && full <= 10_000, "{full} records in full windows");
}
