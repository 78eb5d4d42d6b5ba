//! Keyed event-time window operators: incremental aggregates over tumbling
//! and sliding windows ([`WindowAggregate`]), merging session windows
//! ([`SessionAggregate`]), and full-window functions that see every record
//! of a window at once ([`WindowProcess`]).
//!
//! # State
//! The open windows of a key and their accumulators live in the key's value
//! state (a small sorted vector): it is cached in memory between checkpoints,
//! so adding a record is a hash lookup, not a RocksDB access. A full-window
//! function buffers records in map state instead (a window may hold many).
//! Each open window has one event-time timer at its end (plus the allowed
//! lateness), registered when the window opens; all of it is keyed state,
//! checkpointed and exactly-once.
//!
//! # Late records
//! A record whose windows have all fired (the watermark passed their end plus
//! the allowed lateness) is not dropped: it goes out as [`Windowed::Late`],
//! the side output the caller filters, counts or stores.

use crate::aggregators::MergeAggregator;
use crate::keyed::{Aggregator, KeyedContext, KeyedProcess, StateValue};
use crate::message::Timestamp;
use crate::operator::OperatorError;
use crate::window::{Assigner, Window};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// What a window operator emits for a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Windowed<O, I> {
    /// A window closed (the watermark passed its end) with this result.
    Result {
        /// The window.
        window: Window,
        /// The aggregate of its records (or one output of a full-window function).
        value: O,
    },
    /// A record that arrived after every window it belongs to had fired
    /// (beyond the allowed lateness): the side output of late records.
    Late(I),
}

/// One open window of a key and what it holds so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenWindow<A> {
    /// First millisecond of the window.
    pub start: i64,
    /// First millisecond after it.
    pub end: i64,
    /// The accumulator (or, for a full-window function, the record count).
    pub acc: A,
}

impl<A> OpenWindow<A> {
    fn window(&self) -> Window {
        Window {
            start: self.start,
            end: self.end,
        }
    }
}

/// The open windows of a key, sorted by (start, end): inline while there
/// is one (a tumbling window), so the record path reads it from the cache
/// entry itself instead of following a pointer to the heap. Encoded like a
/// `Vec`.
pub type OpenWindows<A> = SmallVec<[OpenWindow<A>; 1]>;

/// When a window fires: its last millisecond plus the allowed lateness.
fn fire_time(window: &Window, allowed_lateness_ms: i64) -> i64 {
    window.max_timestamp().0.saturating_add(allowed_lateness_ms)
}

/// The index of `window` in the sorted `open`, or where it would go.
fn find<A>(open: &[OpenWindow<A>], window: &Window) -> Result<usize, usize> {
    open.binary_search_by(|o| (o.start, o.end).cmp(&(window.start, window.end)))
}

/// The index of `window` in the sorted `open`, opening it (with `empty`)
/// and registering its timer at `fires_at` if it was not open yet: the one
/// place a window opens.
pub(crate) fn open_window<A, O>(
    open: &mut OpenWindows<A>,
    window: &Window,
    fires_at: i64,
    empty: impl FnOnce() -> A,
    ctx: &mut KeyedContext<'_, O>,
) -> usize {
    match find(open, window) {
        Ok(i) => i,
        Err(i) => {
            open.insert(
                i,
                OpenWindow {
                    start: window.start,
                    end: window.end,
                    acc: empty(),
                },
            );
            ctx.register_event_timer(Timestamp(fires_at), &window.namespace());
            i
        }
    }
}

fn malformed() -> OperatorError {
    OperatorError("malformed window namespace in a timer".into())
}

/// Fires the open window named by a timer's `namespace`: emits its result
/// and forgets it (the state goes when no window is left).
fn fire_aggregate<K: Clone, I, O, A: Aggregator<I, O>>(
    aggregator: &A,
    key: &K,
    state: &mut Option<OpenWindows<A::Acc>>,
    namespace: &[u8],
    ctx: &mut KeyedContext<'_, (K, Windowed<O, I>)>,
) -> Result<(), OperatorError> {
    let window = Window::from_namespace(namespace).ok_or_else(malformed)?;
    let Some(open) = state.as_mut() else { return Ok(()) };
    if let Ok(i) = find(open, &window) {
        let done = open.remove(i);
        let value = aggregator.result(&done.acc);
        ctx.emit((key.clone(), Windowed::Result { window, value }));
    }
    if open.is_empty() {
        *state = None;
    }
    Ok(())
}

/// Incremental aggregation per key and event-time window (tumbling or
/// sliding, Flink's `window(...).aggregate(...)`): results are emitted when
/// the watermark passes a window's end plus `allowed_lateness_ms`.
#[derive(Clone)]
pub struct WindowAggregate<W, A, T> {
    /// The window assigner.
    pub assigner: W,
    /// The aggregation.
    pub aggregator: A,
    /// Event time of a record (ms).
    pub timestamp_of: T,
    /// How long after a window's end records are still added (and the window fires).
    pub allowed_lateness_ms: i64,
}

impl<W, A, T> WindowAggregate<W, A, T> {
    /// Windows from `assigner`, no allowed lateness.
    pub fn new(assigner: W, timestamp_of: T, aggregator: A) -> Self {
        WindowAggregate {
            assigner,
            aggregator,
            timestamp_of,
            allowed_lateness_ms: 0,
        }
    }
}

impl<K, I, O, W, A, T> KeyedProcess<K, I, (K, Windowed<O, I>)> for WindowAggregate<W, A, T>
where
    K: Clone,
    I: Send + 'static,
    W: Assigner,
    A: Aggregator<I, O> + Clone,
    T: Fn(&I) -> i64 + Clone + Send + 'static,
{
    type State = OpenWindows<A::Acc>;

    fn process(
        &mut self,
        key: &K,
        state: &mut Option<Self::State>,
        record: I,
        ctx: &mut KeyedContext<'_, (K, Windowed<O, I>)>,
    ) -> Result<(), OperatorError> {
        let ts = (self.timestamp_of)(&record);
        let watermark = ctx.watermark().0;
        let open = state.get_or_insert_with(OpenWindows::new);
        let mut taken = false;
        let (aggregator, lateness) = (&self.aggregator, self.allowed_lateness_ms);
        self.assigner.for_each_window(ts, |w| {
            let fires_at = fire_time(&w, lateness);
            if fires_at <= watermark {
                return; // this window has fired already
            }
            taken = true;
            let i = open_window(open, &w, fires_at, || aggregator.create(), ctx);
            aggregator.add(&mut open[i].acc, &record);
        });
        if open.is_empty() {
            *state = None;
        }
        if !taken {
            ctx.emit((key.clone(), Windowed::Late(record)));
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        key: &K,
        state: &mut Option<Self::State>,
        _at: Timestamp,
        namespace: &[u8],
        ctx: &mut KeyedContext<'_, (K, Windowed<O, I>)>,
    ) -> Result<(), OperatorError> {
        fire_aggregate(&self.aggregator, key, state, namespace, ctx)
    }
}

/// Session windows per key (Flink's `EventTimeSessionWindows`): a record at
/// `ts` opens `[ts, ts + gap)`; sessions that overlap merge, accumulators and
/// all. A session fires when the watermark passes its end (last record +
/// gap) plus the allowed lateness, so its window is `[first record, last
/// record + gap)`.
#[derive(Clone)]
pub struct SessionAggregate<A, T> {
    /// Inactivity gap in ms: a record `gap` or more after the previous one starts a new session.
    pub gap: i64,
    /// The aggregation (mergeable).
    pub aggregator: A,
    /// Event time of a record (ms).
    pub timestamp_of: T,
    /// How long after a session's end records may still join it.
    pub allowed_lateness_ms: i64,
}

impl<A, T> SessionAggregate<A, T> {
    /// Sessions with `gap_ms`, no allowed lateness.
    pub fn new(gap_ms: i64, timestamp_of: T, aggregator: A) -> Self {
        SessionAggregate {
            gap: gap_ms,
            aggregator,
            timestamp_of,
            allowed_lateness_ms: 0,
        }
    }
}

impl<K, I, O, A, T> KeyedProcess<K, I, (K, Windowed<O, I>)> for SessionAggregate<A, T>
where
    K: Clone,
    I: Send + 'static,
    A: MergeAggregator<I, O> + Clone,
    T: Fn(&I) -> i64 + Clone + Send + 'static,
{
    type State = OpenWindows<A::Acc>;

    fn process(
        &mut self,
        key: &K,
        state: &mut Option<Self::State>,
        record: I,
        ctx: &mut KeyedContext<'_, (K, Windowed<O, I>)>,
    ) -> Result<(), OperatorError> {
        let ts = (self.timestamp_of)(&record);
        let open = state.get_or_insert_with(OpenWindows::new);
        // The sessions the new record bridges are contiguous in the sorted list.
        let mut merged = Window {
            start: ts,
            end: ts.saturating_add(self.gap),
        };
        let first = open.partition_point(|o| o.end <= merged.start);
        let mut last = first;
        while last < open.len() && open[last].start < merged.end {
            merged = merged.cover(&open[last].window());
            last += 1;
        }
        if fire_time(&merged, self.allowed_lateness_ms) <= ctx.watermark().0 {
            if open.is_empty() {
                *state = None;
            }
            ctx.emit((key.clone(), Windowed::Late(record)));
            return Ok(());
        }
        if last == first + 1 && open[first].window() == merged {
            // Inside one session without extending it: no timer moves.
            self.aggregator.add(&mut open[first].acc, &record);
            return Ok(());
        }
        let mut acc = self.aggregator.create();
        self.aggregator.add(&mut acc, &record);
        for old in open.drain(first..last) {
            let w = old.window();
            ctx.delete_event_timer(Timestamp(fire_time(&w, self.allowed_lateness_ms)), &w.namespace());
            self.aggregator.merge(&mut acc, old.acc);
        }
        open.insert(
            first,
            OpenWindow {
                start: merged.start,
                end: merged.end,
                acc,
            },
        );
        ctx.register_event_timer(
            Timestamp(fire_time(&merged, self.allowed_lateness_ms)),
            &merged.namespace(),
        );
        Ok(())
    }

    fn on_timer(
        &mut self,
        key: &K,
        state: &mut Option<Self::State>,
        _at: Timestamp,
        namespace: &[u8],
        ctx: &mut KeyedContext<'_, (K, Windowed<O, I>)>,
    ) -> Result<(), OperatorError> {
        fire_aggregate(&self.aggregator, key, state, namespace, ctx)
    }
}

/// A full-window function (Flink's `ProcessWindowFunction`): the records of
/// each window of a key are buffered in map state and handed over together,
/// in arrival order, when the window fires; every output it appends becomes a
/// [`Windowed::Result`] of that window.
#[derive(Clone)]
pub struct WindowProcess<W, F, T> {
    /// The window assigner (tumbling or sliding).
    pub assigner: W,
    /// Called once per window with its records: `(key, window, records, out)`.
    pub function: F,
    /// Event time of a record (ms).
    pub timestamp_of: T,
    /// How long after a window's end records are still added.
    pub allowed_lateness_ms: i64,
}

const WINDOW_RECORDS: &str = "window-records";

/// Map-state key of record `seq` of `window`: sorts by window, then arrival.
fn record_slot(window: &Window, seq: u64) -> Vec<u8> {
    let mut k = window.namespace().to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

impl<K, I, O, W, F, T> KeyedProcess<K, I, (K, Windowed<O, I>)> for WindowProcess<W, F, T>
where
    K: Clone,
    I: StateValue,
    O: Send + 'static,
    W: Assigner,
    F: FnMut(&K, Window, Vec<I>, &mut Vec<O>) + Clone + Send + 'static,
    T: Fn(&I) -> i64 + Clone + Send + 'static,
{
    /// Open windows with their record counts.
    type State = OpenWindows<u64>;

    fn process(
        &mut self,
        key: &K,
        state: &mut Option<Self::State>,
        record: I,
        ctx: &mut KeyedContext<'_, (K, Windowed<O, I>)>,
    ) -> Result<(), OperatorError> {
        let ts = (self.timestamp_of)(&record);
        let watermark = ctx.watermark().0;
        let mut windows = Vec::new();
        self.assigner.assign_to(ts, &mut windows);
        let open = state.get_or_insert_with(OpenWindows::new);
        let mut taken = false;
        for w in windows {
            let fires_at = fire_time(&w, self.allowed_lateness_ms);
            if fires_at <= watermark {
                continue;
            }
            taken = true;
            let i = open_window(open, &w, fires_at, || 0, ctx);
            let seq = open[i].acc;
            open[i].acc += 1;
            ctx.map::<Vec<u8>, I>(WINDOW_RECORDS)
                .insert(&record_slot(&w, seq), &record)?;
        }
        if open.is_empty() {
            *state = None;
        }
        if !taken {
            ctx.emit((key.clone(), Windowed::Late(record)));
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        key: &K,
        state: &mut Option<Self::State>,
        _at: Timestamp,
        namespace: &[u8],
        ctx: &mut KeyedContext<'_, (K, Windowed<O, I>)>,
    ) -> Result<(), OperatorError> {
        let window = Window::from_namespace(namespace).ok_or_else(malformed)?;
        let Some(open) = state.as_mut() else { return Ok(()) };
        let Ok(i) = find(open, &window) else { return Ok(()) };
        let done = open.remove(i);
        if open.is_empty() {
            *state = None;
        }
        let mut records = ctx.map::<Vec<u8>, I>(WINDOW_RECORDS);
        let mut buffered = Vec::with_capacity(done.acc as usize);
        for (slot, record) in records.entries_with_prefix(&window.namespace())? {
            records.remove(&slot)?;
            buffered.push(record);
        }
        drop(records);
        let mut outputs = Vec::new();
        (self.function)(key, window, buffered, &mut outputs);
        for value in outputs {
            ctx.emit((key.clone(), Windowed::Result { window, value }));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregators::Count;
    use crate::harness::KeyedHarness;
    use crate::window::{Sliding, Tumbling};

    type Rec = (u8, i64);
    type Out = (u8, Windowed<u64, Rec>);

    fn ts(r: &Rec) -> i64 {
        r.1
    }

    fn result(key: u8, start: i64, end: i64, value: u64) -> Out {
        (
            key,
            Windowed::Result {
                window: Window { start, end },
                value,
            },
        )
    }

    fn sliding(size: i64, slide: i64, lateness: i64) -> WindowAggregate<Sliding, Count, fn(&Rec) -> i64> {
        WindowAggregate {
            allowed_lateness_ms: lateness,
            ..WindowAggregate::new(Sliding::of(size, slide), ts as fn(&Rec) -> i64, Count)
        }
    }

    #[test]
    fn sliding_counts_fire_at_the_window_end_and_late_records_go_aside() {
        let mut h = KeyedHarness::new(sliding(10, 5, 0));
        h.feed(|r| r.0, [(1, 1), (1, 6), (1, 12)]);
        let fired: Vec<Out> = h.advance_watermark(Timestamp(9));
        assert_eq!(fired, vec![result(1, -5, 5, 1), result(1, 0, 10, 2)], "in time order");
        // Time 3 belongs to [-5, 5) and [0, 10), both fired.
        let late = h.feed(|r| r.0, [(1, 3)]);
        assert_eq!(late, vec![(1, Windowed::Late((1, 3)))]);
        let rest = h.advance_watermark(Timestamp::MAX);
        assert_eq!(rest, vec![result(1, 5, 15, 2), result(1, 10, 20, 1)]);
        assert!(h.state.is_empty(), "fired windows leave no state");
    }

    #[test]
    fn allowed_lateness_keeps_a_window_open_longer() {
        let mut h = KeyedHarness::new(sliding(10, 10, 5));
        h.feed(|r| r.0, [(1, 1)]);
        assert!(h.advance_watermark(Timestamp(12)).is_empty(), "fires at 9 + 5");
        assert!(h.feed(|r| r.0, [(1, 2)]).is_empty(), "still on time");
        assert_eq!(h.advance_watermark(Timestamp(14)), vec![result(1, 0, 10, 2)]);
    }

    fn sessions(gap: i64) -> SessionAggregate<Count, fn(&Rec) -> i64> {
        SessionAggregate::new(gap, ts as fn(&Rec) -> i64, Count)
    }

    #[test]
    fn sessions_merge_out_of_order_records_and_fire_once_per_session() {
        let mut h = KeyedHarness::new(sessions(10));
        // Key 1: 9 bridges [0, 10) and [12, 22) into [0, 22); 30 stays apart.
        h.feed(|r| r.0, [(1, 0), (1, 30), (1, 12), (2, 5), (1, 9)]);
        assert_eq!(h.state[&1].len(), 2, "{:?}", h.state[&1]);
        let fired = h.advance_watermark(Timestamp(21));
        assert_eq!(fired, vec![result(2, 5, 15, 1), result(1, 0, 22, 3)], "in time order");
        let fired = h.advance_watermark(Timestamp::MAX);
        assert_eq!(fired, vec![result(1, 30, 40, 1)]);
        assert!(h.state.is_empty());
    }

    #[test]
    fn a_record_exactly_one_gap_later_starts_a_new_session() {
        let mut h = KeyedHarness::new(sessions(10_000));
        h.feed(|r| r.0, [(7, 0), (7, 9_999), (7, 19_999)]);
        assert_eq!(
            h.advance_watermark(Timestamp::MAX),
            vec![result(7, 0, 19_999, 2), result(7, 19_999, 29_999, 1)]
        );
    }

    #[test]
    fn a_record_only_joining_a_fired_session_is_late() {
        let mut h = KeyedHarness::new(sessions(10));
        h.feed(|r| r.0, [(1, 0)]);
        assert_eq!(h.advance_watermark(Timestamp(9)), vec![result(1, 0, 10, 1)]);
        assert_eq!(h.feed(|r| r.0, [(1, -5)]), vec![(1, Windowed::Late((1, -5)))]);
        assert!(h.feed(|r| r.0, [(1, 5)]).is_empty(), "[5, 15) has not fired");
    }

    #[test]
    fn a_full_window_function_sees_every_record_of_its_window() {
        fn max_and_ties(_k: &u8, _w: Window, records: Vec<Rec>, out: &mut Vec<i64>) {
            let max = records.iter().map(|r| r.1 % 7).max().unwrap_or(0);
            out.extend(records.iter().filter(|r| r.1 % 7 == max).map(|r| r.1));
        }
        type F = fn(&u8, Window, Vec<Rec>, &mut Vec<i64>);
        let mut h = KeyedHarness::new(WindowProcess {
            assigner: Tumbling::of(100),
            function: max_and_ties as F,
            timestamp_of: ts as fn(&Rec) -> i64,
            allowed_lateness_ms: 0,
        });
        h.feed(|r| r.0, [(1, 6), (1, 13), (1, 50), (1, 150), (1, 20)]);
        let fired = h.advance_watermark(Timestamp(99));
        let w = Window { start: 0, end: 100 };
        assert_eq!(
            fired,
            vec![
                (1, Windowed::Result { window: w, value: 6 }),
                (1, Windowed::Result { window: w, value: 13 }),
                (1, Windowed::Result { window: w, value: 20 }),
            ],
            "ties in arrival order"
        );
        assert_eq!(h.advance_watermark(Timestamp::MAX).len(), 1);
        assert!(h.state.is_empty());
    }
}

/// Count windows (Flink's `countWindow(size)`): per key, every `size`
/// records form a window; its aggregate is emitted when the window is full.
/// A window not full yet stays in the key's state (also across restarts).
#[derive(Clone)]
pub struct CountWindowAggregate<A> {
    /// Records per window (at least 1).
    pub size: u64,
    /// The aggregation of a window's records.
    pub aggregator: A,
}

impl<K, I, O, A> KeyedProcess<K, I, (K, O)> for CountWindowAggregate<A>
where
    K: Clone,
    A: Aggregator<I, O> + Clone + Send + 'static,
{
    /// The open window: its accumulator and how many records it has.
    type State = (A::Acc, u64);

    fn process(
        &mut self,
        key: &K,
        state: &mut Option<(A::Acc, u64)>,
        record: I,
        ctx: &mut KeyedContext<'_, (K, O)>,
    ) -> Result<(), OperatorError> {
        let (acc, count) = state.get_or_insert_with(|| (self.aggregator.create(), 0));
        self.aggregator.add(acc, &record);
        *count += 1;
        if *count >= self.size.max(1) {
            ctx.emit((key.clone(), self.aggregator.result(acc)));
            *state = None;
        }
        Ok(())
    }
}

/// Tumbling processing-time windows (Flink's
/// `TumblingProcessingTimeWindows`): a record belongs to the window of the
/// wall-clock time it arrives at; per key, a window's aggregate is emitted as
/// `(key, window, result)` when the clock passes its end (a processing-time
/// timer), or earlier, when a record of a later window arrives before that
/// timer ran. Nothing is ever late. The open window is keyed state.
#[derive(Clone)]
pub struct ProcessingTimeWindowAggregate<A> {
    /// Window length in milliseconds (at least 1).
    pub size_ms: i64,
    /// The aggregation of a window's records.
    pub aggregator: A,
}

impl<A> ProcessingTimeWindowAggregate<A> {
    fn window_of(&self, now: Timestamp) -> Window {
        let size = self.size_ms.max(1);
        let start = now.0 - now.0.rem_euclid(size);
        Window {
            start,
            end: start.saturating_add(size),
        }
    }
}

impl<K, I, O, A> KeyedProcess<K, I, (K, Window, O)> for ProcessingTimeWindowAggregate<A>
where
    K: Clone,
    A: Aggregator<I, O> + Clone + Send + 'static,
{
    /// The open window: its start and accumulator.
    type State = (i64, A::Acc);

    fn process(
        &mut self,
        key: &K,
        state: &mut Option<(i64, A::Acc)>,
        record: I,
        ctx: &mut KeyedContext<'_, (K, Window, O)>,
    ) -> Result<(), OperatorError> {
        let window = self.window_of(ctx.processing_time());
        if let Some((start, acc)) = state.as_ref() {
            if *start != window.start {
                // An earlier window whose timer has not run yet: it is over.
                let closed = Window {
                    start: *start,
                    end: start.saturating_add(self.size_ms.max(1)),
                };
                ctx.emit((key.clone(), closed, self.aggregator.result(acc)));
                ctx.delete_processing_timer(closed.max_timestamp(), &[]);
                *state = None;
            }
        }
        let (_, acc) = state.get_or_insert_with(|| {
            ctx.register_processing_timer(window.max_timestamp(), &[]);
            (window.start, self.aggregator.create())
        });
        self.aggregator.add(acc, &record);
        Ok(())
    }

    fn on_processing_timer(
        &mut self,
        key: &K,
        state: &mut Option<(i64, A::Acc)>,
        at: Timestamp,
        _namespace: &[u8],
        ctx: &mut KeyedContext<'_, (K, Window, O)>,
    ) -> Result<(), OperatorError> {
        if let Some((start, acc)) = state.as_ref() {
            let window = self.window_of(Timestamp(*start));
            if window.max_timestamp() <= at {
                ctx.emit((key.clone(), window, self.aggregator.result(acc)));
                *state = None;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod processing_window_tests {
    use super::*;
    use crate::aggregators::Count;
    use crate::KeyedHarness;

    fn w(start: i64) -> Window {
        Window {
            start,
            end: start + 100,
        }
    }

    #[test]
    fn a_processing_time_window_fires_when_the_clock_passes_its_end() {
        let mut h = KeyedHarness::new(ProcessingTimeWindowAggregate {
            size_ms: 100,
            aggregator: Count,
        });
        h.advance_processing_time(Timestamp(1_010));
        assert!(h.feed(|r: &u8| u64::from(*r), [1, 1, 2]).is_empty());
        assert!(
            h.advance_watermark(Timestamp::MAX).is_empty(),
            "event time does not close them"
        );
        assert_eq!(h.processing_timers().len(), 2, "one timer per key and window");
        h.advance_processing_time(Timestamp(1_050));
        assert!(h.feed(|r: &u8| u64::from(*r), [1]).is_empty());
        assert_eq!(h.advance_processing_time(Timestamp(1_098)), vec![]);
        let mut fired = h.advance_processing_time(Timestamp(1_099));
        fired.sort_by_key(|f| f.0);
        assert_eq!(fired, vec![(1, w(1_000), 3), (2, w(1_000), 1)]);
        // The open window survives a snapshot and fires after the restore.
        h.advance_processing_time(Timestamp(1_150));
        h.feed(|r: &u8| u64::from(*r), [2, 2]);
        let mut restored: KeyedHarness<u64, _, u8, _> = KeyedHarness::restore(
            ProcessingTimeWindowAggregate {
                size_ms: 100,
                aggregator: Count,
            },
            &h.snapshot().unwrap(),
        )
        .unwrap();
        assert_eq!(
            restored.advance_processing_time(Timestamp(1_199)),
            vec![(2, w(1_100), 2)]
        );
    }

    #[test]
    fn a_record_of_a_later_window_closes_the_earlier_one_when_its_timer_is_late() {
        let mut h = KeyedHarness::new(ProcessingTimeWindowAggregate {
            size_ms: 100,
            aggregator: Count,
        });
        h.set_processing_time_without_firing(Timestamp(1_010));
        h.feed(|r: &u8| u64::from(*r), [1]);
        // The clock moved past the window's end, but its timer did not run yet.
        h.set_processing_time_without_firing(Timestamp(1_120));
        assert_eq!(h.feed(|r: &u8| u64::from(*r), [1]), vec![(1, w(1_000), 1)]);
        assert_eq!(h.advance_processing_time(Timestamp(1_199)), vec![(1, w(1_100), 1)]);
    }
}

#[cfg(test)]
mod count_window_tests {
    use super::*;
    use crate::aggregators::Sum;
    use crate::KeyedHarness;

    #[test]
    fn a_count_window_fires_every_size_records_per_key() {
        let mut h = KeyedHarness::new(CountWindowAggregate {
            size: 3,
            aggregator: Sum(|r: &(u8, i64)| r.1),
        });
        let out = h.feed(
            |r: &(u8, i64)| u64::from(r.0),
            [(1, 1), (2, 10), (1, 2), (1, 3), (2, 20), (1, 4)],
        );
        assert_eq!(out, [(1, 6)], "key 1's first three; key 2 and key 1's fourth wait");
        let mut restored = KeyedHarness::restore(h_function(), &h.snapshot().unwrap()).unwrap();
        assert_eq!(restored.feed(|r: &(u8, i64)| u64::from(r.0), [(2, 30)]), [(2, 60)]);
    }

    /// The aggregation of the test, by a function pointer (another type than the closure's).
    type ByPointer = CountWindowAggregate<Sum<fn(&(u8, i64)) -> i64>>;

    fn h_function() -> ByPointer {
        fn value(r: &(u8, i64)) -> i64 {
            r.1
        }
        CountWindowAggregate {
            size: 3,
            aggregator: Sum(value as fn(&(u8, i64)) -> i64),
        }
    }
}
