//! Event-time timers in keyed state: a tumbling-window count built on
//! `register_event_timer` / `on_timer`, fired by watermarks, checkpointed with
//! the rest of the state: bounded runs keep open windows for the next run,
//! bounded + drain fires them all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir::connectors::collect::CollectSink;
use weir::connectors::{ConnectorContext, Source, SourcePoll};
use weir::operators::{KeyedContext, KeyedProcess, OperatorError, Timestamp, Tumbling, Window};
use weir::{JobBuilder, JobConfig};

/// Emits `i` for `i` in `0..end` with event time `i` ms, except the quiet
/// times in `GAP`; watermark = last time.
struct Clock {
    next: i64,
    end: i64,
}

/// No records at these times: a window open before them gets no new record
/// after them, so only its (restored) timer can fire it.
const GAP: std::ops::Range<i64> = 450..520;

impl Source<i64> for Clock {
    fn poll(&mut self, out: &mut Vec<i64>, max: usize) -> weir::Result<SourcePoll> {
        if self.next >= self.end {
            return Ok(SourcePoll::End);
        }
        let n = (max as i64).min(self.end - self.next).min(37);
        out.extend((self.next..self.next + n).filter(|t| !GAP.contains(t)));
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

/// Counts records per key in tumbling 100 ms windows; emits (key, window start, count).
#[derive(Clone, Copy)]
struct WindowCount;

impl KeyedProcess<i64, i64, (i64, i64, u64)> for WindowCount {
    type State = ();
    fn process(
        &mut self,
        _k: &i64,
        _s: &mut Option<()>,
        t: i64,
        ctx: &mut KeyedContext<'_, (i64, i64, u64)>,
    ) -> Result<(), OperatorError> {
        let w = Tumbling::of(100).assign(t);
        let mut counts = ctx.map::<i64, u64>("counts");
        let c = counts.get(&w.start)?.unwrap_or(0);
        counts.insert(&w.start, &(c + 1))?;
        drop(counts);
        ctx.register_event_timer(w.max_timestamp(), &w.namespace());
        Ok(())
    }
    fn on_timer(
        &mut self,
        key: &i64,
        _s: &mut Option<()>,
        _at: Timestamp,
        namespace: &[u8],
        ctx: &mut KeyedContext<'_, (i64, i64, u64)>,
    ) -> Result<(), OperatorError> {
        let w = Window::from_namespace(namespace).ok_or_else(|| OperatorError("bad window".into()))?;
        let mut counts = ctx.map::<i64, u64>("counts");
        let c = counts.get(&w.start)?.unwrap_or(0);
        counts.remove(&w.start)?;
        drop(counts);
        ctx.emit((*key, w.start, c));
        Ok(())
    }
}

fn run(dir: &std::path::Path, end: i64, drain: bool) -> Vec<(i64, i64, u64)> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let job = JobBuilder::new("windows");
    job.source("clock", move |c: ConnectorContext| {
        let next = c.restored.map_or(0, |b| i64::from_be_bytes(b.try_into().unwrap()));
        Ok(Clock { next, end })
    })
    .uid("clock")
    .key_by(|t: &i64| t % 7)
    .parallelism(2)
    .process("window-count", WindowCount)
    .uid("window-count")
    .sink("collect", CollectSink::factory(out.clone()));
    let config = JobConfig {
        checkpoint_interval: Some(Duration::from_millis(50)),
        drain_at_end: drain,
        ..JobConfig::with_checkpoint_dir(dir)
    };
    job.build().unwrap().run(config).unwrap();
    let v = out.lock().unwrap().clone();
    v
}

fn expected(end: i64) -> Vec<(i64, i64, u64)> {
    let mut counts = std::collections::BTreeMap::new();
    for t in (0..end).filter(|t| !GAP.contains(t)) {
        *counts.entry((t % 7, t - t % 100)).or_insert(0u64) += 1;
    }
    counts.into_iter().map(|((k, w), c)| (k, w, c)).collect()
}

#[test]
fn windows_fire_when_the_watermark_passes_and_drain_fires_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut got = run(dir.path(), 1050, true);
    got.sort_unstable();
    assert_eq!(got, expected(1050));
}

#[test]
fn open_windows_and_their_timers_survive_bounded_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut got = run(dir.path(), 420, false);
    assert!(
        got.iter().all(|(_, w, _)| *w < 400),
        "only windows the watermark passed fired: {got:?}"
    );
    // The window [400, 500) gets its last records in this run (GAP follows):
    // only its restored timer can fire it in the next one.
    got.extend(run(dir.path(), 450, false));
    got.extend(run(dir.path(), 777, false));
    got.extend(run(dir.path(), 1050, true));
    got.sort_unstable();
    assert_eq!(got, expected(1050), "four runs (three keeping open windows) equal one");
}

#[derive(Clone)]
struct Count;

impl weir::operators::Aggregator<i64, u64> for Count {
    type Acc = u64;
    fn create(&self) -> u64 {
        0
    }
    fn add(&self, acc: &mut u64, _t: &i64) {
        *acc += 1;
    }
    fn result(&self, acc: &u64) -> u64 {
        *acc
    }
}

fn run_builtin(dir: &std::path::Path, end: i64, drain: bool) -> Vec<(i64, i64, u64)> {
    run_builtin_with_summary(dir, end, drain).0
}

fn run_builtin_with_summary(dir: &std::path::Path, end: i64, drain: bool) -> (Vec<(i64, i64, u64)>, weir::JobSummary) {
    use weir::operators::Windowed;
    let out = Arc::new(Mutex::new(Vec::new()));
    let job = JobBuilder::new("builtin-windows");
    job.source("clock", move |c: ConnectorContext| {
        let next = c.restored.map_or(0, |b| i64::from_be_bytes(b.try_into().unwrap()));
        Ok(Clock { next, end })
    })
    .uid("clock")
    .key_by(|t: &i64| t % 7)
    .parallelism(2)
    .window_aggregate("count", Tumbling::of(100), |t: &i64| *t, Count)
    .uid("count")
    .map(|(k, w): (i64, Windowed<u64, i64>)| match w {
        Windowed::Result { window, value } => (k, window.start, value),
        Windowed::Late(t) => (k, -1, t as u64),
    })
    .sink("collect", CollectSink::factory(out.clone()));
    let config = JobConfig {
        checkpoint_interval: Some(Duration::from_millis(50)),
        drain_at_end: drain,
        ..JobConfig::with_checkpoint_dir(dir)
    };
    let summary = job.build().unwrap().run(config).unwrap();
    let v = out.lock().unwrap().clone();
    (v, summary)
}

#[test]
fn a_bounded_run_says_how_many_timers_it_keeps_for_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    // Up to 450 ms: the windows [400, 500) of every key (7) are still open.
    let (_, kept) = run_builtin_with_summary(dir.path(), 450, false);
    assert_eq!(kept.timers_kept, 7, "{kept:?}");
    let (_, drained) = run_builtin_with_summary(dir.path(), 1050, true);
    assert_eq!(drained.timers_kept, 0, "a drained run fires everything: {drained:?}");
}

#[test]
fn the_built_in_window_aggregate_counts_exactly_once_across_bounded_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut got = run_builtin(dir.path(), 450, false);
    got.extend(run_builtin(dir.path(), 1050, true));
    got.sort_unstable();
    assert_eq!(got, expected(1050));
}

/// Registers a processing-time timer 1 s after each key's first record and
/// emits `(key, records seen)` when it fires.
#[derive(Clone, Copy)]
struct ReportLater;

impl KeyedProcess<i64, i64, (i64, u64)> for ReportLater {
    type State = u64;
    fn process(
        &mut self,
        _k: &i64,
        seen: &mut Option<u64>,
        _t: i64,
        ctx: &mut KeyedContext<'_, (i64, u64)>,
    ) -> Result<(), OperatorError> {
        if seen.is_none() {
            let at = Timestamp(ctx.processing_time().0 + 1_000);
            ctx.register_processing_timer(at, b"report");
        }
        *seen.get_or_insert(0) += 1;
        Ok(())
    }
    fn on_processing_timer(
        &mut self,
        key: &i64,
        seen: &mut Option<u64>,
        at: Timestamp,
        _ns: &[u8],
        ctx: &mut KeyedContext<'_, (i64, u64)>,
    ) -> Result<(), OperatorError> {
        assert!(ctx.processing_time() >= at, "fired before its time");
        ctx.emit((*key, seen.take().unwrap_or(0)));
        Ok(())
    }
}

fn run_reports(dir: &std::path::Path, end: i64) -> Vec<(i64, u64)> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let job = JobBuilder::new("processing-timers");
    job.source("clock", move |c: ConnectorContext| {
        let next = c.restored.map_or(0, |b| i64::from_be_bytes(b.try_into().unwrap()));
        Ok(Clock { next, end })
    })
    .uid("clock")
    .key_by(|t: &i64| t % 10)
    .process("report-later", ReportLater)
    .uid("report-later")
    .sink("collect", CollectSink::factory(out.clone()));
    job.build().unwrap().run(JobConfig::with_checkpoint_dir(dir)).unwrap();
    let mut v = out.lock().unwrap().clone();
    v.sort_unstable();
    v
}

#[test]
fn processing_time_timers_fire_by_the_wall_clock_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // The bounded run ends long before its timers are due: they go into the final checkpoint.
    assert_eq!(run_reports(dir.path(), 100), vec![]);
    std::thread::sleep(Duration::from_millis(1_100));
    // Restored and overdue, they fire as the next run starts (which has no new records).
    let fired = run_reports(dir.path(), 100);
    assert_eq!(fired, (0..10).map(|k| (k, 10)).collect::<Vec<_>>());
    assert_eq!(run_reports(dir.path(), 100), vec![], "each timer fires once");
}

#[test]
fn processing_time_windows_count_every_record_once_across_runs() {
    use weir::operators::aggregators::Count;
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let out = Arc::new(Mutex::new(Vec::new()));
        let job = JobBuilder::new("processing-windows");
        job.source("clock", move |c: ConnectorContext| {
            let next = c.restored.map_or(0, |b| i64::from_be_bytes(b.try_into().unwrap()));
            Ok(Clock { next, end: 100 })
        })
        .uid("clock")
        .key_by(|t: &i64| t % 10)
        .processing_time_window_aggregate("per-100ms", Duration::from_millis(100), Count)
        .uid("per-100ms")
        .sink("collect", CollectSink::factory(out.clone()));
        job.build()
            .unwrap()
            .run(JobConfig::with_checkpoint_dir(dir.path()))
            .unwrap();
        let v = out.lock().unwrap().clone();
        v
    };
    // Windows still open when the bounded run ends go into its checkpoint;
    // overdue after the pause, they fire as the next run starts.
    let mut all = run();
    std::thread::sleep(Duration::from_millis(250));
    all.extend(run());
    assert_eq!(run(), vec![], "each window fires once");
    for (_, window, _) in &all {
        assert_eq!((window.start % 100, window.end - window.start), (0, 100), "{window:?}");
    }
    let mut per_key = std::collections::BTreeMap::new();
    for (key, _, count) in &all {
        *per_key.entry(*key).or_insert(0u64) += count;
    }
    assert_eq!(
        per_key,
        (0..10).map(|k| (k, 10)).collect(),
        "every record counted once: {all:?}"
    );
}

/// The clock, except that a restored subtask first replays an old time (50):
/// a record late for a window that fired before the restart.
struct ReplaysOld {
    clock: Clock,
    old: Option<i64>,
}

impl Source<i64> for ReplaysOld {
    fn poll(&mut self, out: &mut Vec<i64>, max: usize) -> weir::Result<SourcePoll> {
        if let Some(t) = self.old.take() {
            out.push(t);
            return Ok(SourcePoll::Ready);
        }
        self.clock.poll(out, max)
    }
    fn watermark(&mut self) -> Option<Timestamp> {
        self.clock.watermark()
    }
    fn position(&mut self) -> weir::Result<Vec<u8>> {
        self.clock.position()
    }
}

#[test]
fn a_record_late_before_a_restart_is_late_after_it() {
    use weir::operators::Windowed;
    let dir = tempfile::tempdir().unwrap();
    let run = |end: i64| {
        let out = Arc::new(Mutex::new(Vec::new()));
        let job = JobBuilder::new("late-after-restart");
        job.source("clock", move |c: ConnectorContext| {
            let restored = c.restored.map(|b| i64::from_be_bytes(b.try_into().unwrap()));
            Ok(ReplaysOld {
                clock: Clock {
                    next: restored.unwrap_or(0),
                    end,
                },
                old: restored.map(|_| 50),
            })
        })
        .uid("clock")
        .key_by(|_t: &i64| 0i64)
        .window_aggregate("count", Tumbling::of(100), |t: &i64| *t, Count)
        .uid("count")
        .map(|(_, w): (i64, Windowed<u64, i64>)| match w {
            Windowed::Result { window, value } => (window.start, value),
            Windowed::Late(t) => (-1, t as u64),
        })
        .sink("collect", CollectSink::factory(out.clone()));
        job.build()
            .unwrap()
            .run(JobConfig::with_checkpoint_dir(dir.path()))
            .unwrap();
        let v = out.lock().unwrap().clone();
        v
    };
    let first = run(300);
    assert!(
        first.contains(&(0, 100)),
        "window [0, 100) fired in the first run: {first:?}"
    );
    let second = run(400);
    assert!(
        second.contains(&(-1, 50)),
        "50 is late after the restart too: {second:?}"
    );
    assert!(
        !second.iter().any(|r| r.0 == 0),
        "window [0, 100) does not fire twice: {second:?}"
    );
}

/// (key, window start or -1 for a late record, count or the late time) of
/// in-memory events, event time from the records, at a given batch size.
fn windows_of_elements(batch_size: usize) -> Vec<(i64, i64, u64)> {
    windows_of_elements_late(batch_size, 0)
}

fn windows_of_elements_late(batch_size: usize, allowed_lateness_ms: i64) -> Vec<(i64, i64, u64)> {
    // 10 comes after 300: behind the watermark 300 - 50 of the records before it.
    let times = vec![100i64, 120, 200, 300, 10, 310, 420, 150, 500, 630];
    window_counts("elements", times, batch_size, allowed_lateness_ms, |s| {
        s.assign_timestamps_and_watermarks(|t: &i64| *t, 50)
    })
}

/// Tumbling 100 ms window counts of in-memory event times, event time and
/// watermarks assigned by `timed`, at a given batch size, bounded + drain:
/// (key, window start or -1 for a late record, count or the late time).
fn window_counts(
    name: &str,
    times: Vec<i64>,
    batch_size: usize,
    allowed_lateness_ms: i64,
    timed: impl FnOnce(weir::Stream<i64>) -> weir::Stream<i64>,
) -> Vec<(i64, i64, u64)> {
    use weir::connectors::memory::ElementSource;
    use weir::operators::Windowed;
    let dir = tempfile::tempdir().unwrap();
    let out = Arc::new(Mutex::new(Vec::new()));
    let job = JobBuilder::new(name);
    timed(job.source("times", ElementSource::factory(times)).uid("times"))
        .key_by(|_: &i64| 0u64)
        .allowed_lateness(allowed_lateness_ms)
        .window_aggregate("count", Tumbling::of(100), |t: &i64| *t, Count)
        .uid("count")
        .map(|(k, w): (u64, Windowed<u64, i64>)| match w {
            Windowed::Result { window, value } => (k as i64, window.start, value),
            Windowed::Late(t) => (k as i64, -1, t as u64),
        })
        .sink("collect", CollectSink::factory(out.clone()));
    let config = JobConfig {
        batch_size,
        drain_at_end: true,
        ..JobConfig::with_checkpoint_dir(dir.path())
    };
    job.build().unwrap().run(config).unwrap();
    let mut v = out.lock().unwrap().clone();
    v.sort_unstable();
    v
}

#[test]
fn lateness_does_not_depend_on_the_batch_size() {
    let one = windows_of_elements(1);
    let many = windows_of_elements(1024);
    assert_eq!(one, many, "the same records are late at batch size 1 and 1024");
    assert!(one.contains(&(0, -1, 10)), "10 after 300 (bound 50) is late: {one:?}");
    assert!(one.contains(&(0, -1, 150)), "150 after 420 is late: {one:?}");
    assert!(one.contains(&(0, 100, 2)) && one.contains(&(0, 600, 1)), "{one:?}");
}

/// The windows of in-memory events whose records at multiples of 100 carry
/// a watermark (punctuated), at a given batch size.
fn punctuated_windows(batch_size: usize) -> Vec<(i64, i64, u64)> {
    // 300 carries watermark 300: 250 after it is late; 350 is not (300 < 350).
    let times = vec![120i64, 200, 180, 300, 250, 350, 420, 500, 460];
    window_counts("punctuated", times, batch_size, 0, |s| {
        s.assign_timestamps_and_punctuated_watermarks(|t: &i64| *t, |_t: &i64, ts| (ts % 100 == 0).then_some(ts))
    })
}

#[test]
fn punctuated_watermarks_make_the_same_records_late_at_any_batch_size() {
    let one = punctuated_windows(1);
    assert_eq!(one, punctuated_windows(1024), "batch size 1 and 1024 agree");
    assert_eq!(
        one,
        vec![
            (0, -1, 180),
            (0, -1, 250),
            (0, -1, 460),
            (0, 100, 1),
            (0, 200, 1),
            (0, 300, 2),
            (0, 400, 1),
            (0, 500, 1)
        ],
        "180 after 200's watermark, 250 after 300's and 460 after 500's are late"
    );
}

#[test]
fn allowed_lateness_on_a_window_builder_keeps_windows_open_for_late_records() {
    let got = windows_of_elements_late(1024, 200);
    assert!(
        !got.iter().any(|(_, start, _)| *start == -1),
        "nothing is late with 200 ms: {got:?}"
    );
    assert!(got.contains(&(0, 0, 1)) && got.contains(&(0, 100, 3)), "{got:?}");
}

/// Subtask 0 emits event times `0..1000` and then has nothing more; every
/// other subtask never has a record (a partition-less or quiet source
/// subtask). Never ends: a continuous job.
struct OneBusySubtask {
    next: i64,
    busy: bool,
}

impl Source<i64> for OneBusySubtask {
    fn poll(&mut self, out: &mut Vec<i64>, max: usize) -> weir::Result<SourcePoll> {
        if !self.busy || self.next >= 1000 {
            return Ok(SourcePoll::Idle(Duration::from_millis(10)));
        }
        let n = (max as i64).min(1000 - self.next);
        out.extend(self.next..self.next + n);
        self.next += n;
        Ok(SourcePoll::Ready)
    }
    fn position(&mut self) -> weir::Result<Vec<u8>> {
        Ok(self.next.to_be_bytes().to_vec())
    }
}

/// The tumbling 100 ms windows that fire within `wait` in a continuous job
/// at parallelism 2 whose second source subtask never has a record.
fn windows_with_a_quiet_subtask(idleness: Option<Duration>, wait: Duration) -> Vec<(u64, i64, u64)> {
    use weir::operators::aggregators::Count;
    use weir::operators::Windowed;
    let dir = tempfile::tempdir().unwrap();
    let out = Arc::new(Mutex::new(Vec::new()));
    let job = JobBuilder::new("quiet-subtask");
    let timed = job
        .source("times", |c: ConnectorContext| {
            Ok(OneBusySubtask {
                next: 0,
                busy: c.subtask == 0,
            })
        })
        .uid("times")
        .parallelism(2)
        .assign_timestamps_and_watermarks(|t: &i64| *t, 0);
    let timed = match idleness {
        Some(timeout) => timed.with_idleness(timeout),
        None => timed,
    };
    timed
        .key_by(|t: &i64| (*t % 2) as u64)
        .window_aggregate("count", Tumbling::of(100), |t: &i64| *t, Count)
        .uid("count")
        .parallelism(2)
        .sink("collect", CollectSink::factory(out.clone()));
    let handle = job
        .build()
        .unwrap()
        .start(JobConfig::with_checkpoint_dir(dir.path()))
        .unwrap();
    let deadline = std::time::Instant::now() + wait;
    // The 10 windows of each key can fire (event time reaches 999).
    while out.lock().unwrap().len() < 20 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    handle.cancel();
    let _ = handle.join();
    let mut v: Vec<(u64, i64, u64)> = out
        .lock()
        .unwrap()
        .iter()
        .map(|(k, w): &(u64, Windowed<u64, i64>)| match w {
            Windowed::Result { window, value } => (*k, window.start, *value),
            Windowed::Late(t) => (*k, -1, *t as u64),
        })
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn an_idle_source_subtask_does_not_hold_event_time_back() {
    // Without idleness the quiet subtask's watermark (none) holds every window.
    let held = windows_with_a_quiet_subtask(None, Duration::from_millis(1_500));
    assert_eq!(held, vec![], "no window can fire while a subtask has no event time");
    // With it, the quiet subtask is idle after 100 ms and the windows fire.
    let fired = windows_with_a_quiet_subtask(Some(Duration::from_millis(100)), Duration::from_secs(30));
    let expected: Vec<(u64, i64, u64)> = [0u64, 1]
        .into_iter()
        .flat_map(|k| (0..10).map(move |w| (k, w * 100, 50u64)))
        .collect();
    assert_eq!(fired, expected, "every closed window once, with all its records");
}

#[test]
fn a_global_window_keeps_its_records_across_bounded_runs_until_event_time_ends() {
    use weir::connectors::memory::ElementSource;
    use weir::operators::aggregators::Count;
    use weir::operators::{FireMode, Trigger};
    let dir = tempfile::tempdir().unwrap();
    let run = |drain: bool| {
        let out = Arc::new(Mutex::new(Vec::new()));
        let job = JobBuilder::new("global-window");
        job.source("numbers", ElementSource::factory((0..100i64).collect()))
            .uid("numbers")
            .key_by(|t: &i64| (t % 3) as u64)
            .global_window_aggregate("per-key", Trigger::EndOfEventTime, FireMode::Purge, Count)
            .uid("per-key")
            .sink("collect", CollectSink::factory(out.clone()));
        let config = JobConfig {
            drain_at_end: drain,
            ..JobConfig::with_checkpoint_dir(dir.path())
        };
        job.build().unwrap().run(config).unwrap();
        let mut v = out.lock().unwrap().clone();
        v.sort_unstable();
        v
    };
    assert_eq!(run(false), vec![], "the window stays open at a bounded run's end");
    // The next run reads nothing new; draining fires what the first one kept.
    assert_eq!(run(true), vec![(0, 34), (1, 33), (2, 33)]);
}
