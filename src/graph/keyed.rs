//! Keyed streams: `key_by`'s result and the stateful operators on it
//! (keyed process functions, reduce, aggregate, windows).

use super::{ChainPending, StageMaker, Stream};
use crate::state::keyed::{KeyedStage, KeyedStageConfig};
use crate::state::RocksInstance;
use crate::task::chain::Downstream;
use std::marker::PhantomData;
use weir_operators::{
    key_group_range, Aggregate, Aggregator, Inspect, KeyedProcess, MergeAggregator, Reduce, SessionAggregate, StateKey,
    StateValue, WindowAggregate, WindowProcess, Windowed,
};

/// A stream partitioned by key, ready for keyed state.
pub struct KeyedStream<T: Send + 'static, K, F> {
    pub(super) stream: Stream<T>,
    pub(super) key_of: F,
    /// Allowed lateness of the windows built on this stream (ms).
    pub(super) allowed_lateness_ms: i64,
    pub(super) _k: PhantomData<fn() -> K>,
}

impl<T: Send + 'static, K: StateKey, F: Fn(&T) -> K + Clone + Send + 'static> KeyedStream<T, K, F> {
    /// How long after its end a window of the builders that follow
    /// (`window_aggregate`, `session_aggregate`, `window_process`) waits for
    /// late records (Flink's `allowedLateness`): it fires once the watermark
    /// passes `end - 1 + ms`, and only records behind that become
    /// `Windowed::Late` (split them into their own sink with `Stream::split`).
    pub fn allowed_lateness(mut self, ms: i64) -> Self {
        self.allowed_lateness_ms = ms.max(0);
        self
    }

    /// Sets the parallelism of the keyed vertex.
    pub fn parallelism(mut self, parallelism: usize) -> Self {
        self.stream = self.stream.parallelism(parallelism);
        self
    }

    /// Runs a keyed process function with one value state per key, kept in
    /// RocksDB. Stateful: give it a uid.
    pub fn process<O: Send + 'static, P: KeyedProcess<K, T, O> + Clone>(
        mut self,
        name: &str,
        function: P,
    ) -> Stream<O> {
        let (graph, vertex) = (self.stream.graph.clone(), self.stream.vertex);
        let (op, max_parallelism) = {
            let mut g = graph.borrow_mut();
            (g.add_operator(name, true, vertex), g.max_parallelism)
        };
        let key_of = self.key_of.clone();
        let name = name.to_string();
        let stage: StageMaker<T, O> = Box::new(move |cx, next| {
            let (env, subtask) = (cx.env, cx.subtask);
            let uid = env.uid(op)?;
            let groups = key_group_range(subtask, max_parallelism, env.parallelism[vertex]);
            let range = (groups.start, groups.end);
            let restore = env.restored_keyed(&uid, range, max_parallelism)?;
            let db = RocksInstance::open(
                env.state(),
                &format!("{uid}-{subtask}"),
                range,
                max_parallelism,
                &restore,
            )?;
            let config = KeyedStageConfig {
                name: format!("{name}[{subtask}]"),
                uid,
                subtask,
                max_parallelism,
                cache_entries: env.state_cache_entries,
                write_behind_entries: env.state_write_behind_entries,
                checkpoint_interval_ms: env.checkpoint_interval_ms,
                stats: cx.stats.clone(),
            };
            Ok(Box::new(KeyedStage::new(
                function.clone(),
                key_of.clone(),
                config,
                cx.snapshot_jobs.clone(),
                db,
                next,
            )?) as Box<dyn Downstream<T>>)
        });
        let inner = self.stream.take();
        Stream::new(graph, vertex, op, Box::new(ChainPending { inner, stage }))
    }

    /// One output per record, in the keyed vertex (no new exchange): the
    /// result is a plain stream, as Flink's `KeyedStream::map` gives a
    /// `DataStream`; `key_by` again to use keyed state on the new type.
    pub fn map<U: Send + 'static, M: FnMut(T) -> U + Clone + Send + 'static>(self, f: M) -> Stream<U> {
        self.stream.map(f)
    }

    /// Keeps a running reduction per key and emits it after each record.
    pub fn reduce<R: FnMut(&T, &T) -> T + Clone + Send + 'static>(self, name: &str, f: R) -> Stream<T>
    where
        T: StateValue,
    {
        self.process(name, Reduce(f))
    }

    /// Aggregates per key and event-time window (tumbling or sliding):
    /// emits `(key, Windowed::Result { window, value })` when the watermark
    /// passes a window's end, and `(key, Windowed::Late(record))` for a record
    /// whose windows have all fired. Windows, accumulators and timers are
    /// keyed state: checkpointed and exactly-once. Stateful: give it a uid.
    pub fn window_aggregate<O, W, A, TS>(
        self,
        name: &str,
        assigner: W,
        timestamp_of: TS,
        aggregator: A,
    ) -> Stream<(K, Windowed<O, T>)>
    where
        T: Clone,
        O: Send + 'static,
        W: weir_operators::Assigner,
        A: Aggregator<T, O> + Clone,
        TS: Fn(&T) -> i64 + Clone + Send + 'static,
    {
        let lateness = self.allowed_lateness_ms;
        let function = WindowAggregate {
            allowed_lateness_ms: lateness,
            ..WindowAggregate::new(assigner, timestamp_of, aggregator)
        };
        count_late(self.process(name, function), name)
    }

    /// Aggregates per key and session window (records closer than `gap_ms`
    /// form one session; Flink's `EventTimeSessionWindows`): emits `(key,
    /// Windowed::Result { window, value })` with `window = [first record, last
    /// record + gap)` when the watermark passes its end, late records as
    /// `Windowed::Late`. Stateful: give it a uid.
    pub fn session_aggregate<O, A, TS>(
        self,
        name: &str,
        gap_ms: i64,
        timestamp_of: TS,
        aggregator: A,
    ) -> Stream<(K, Windowed<O, T>)>
    where
        O: Send + 'static,
        A: MergeAggregator<T, O> + Clone,
        TS: Fn(&T) -> i64 + Clone + Send + 'static,
    {
        let lateness = self.allowed_lateness_ms;
        let function = SessionAggregate {
            allowed_lateness_ms: lateness,
            ..SessionAggregate::new(gap_ms, timestamp_of, aggregator)
        };
        count_late(self.process(name, function), name)
    }

    /// Runs a full-window function per key and window (Flink's
    /// `ProcessWindowFunction`): the window's records, buffered in keyed map
    /// state, are handed to `function(key, window, records, out)` when it
    /// fires; each output becomes a `Windowed::Result`. Stateful: give it a uid.
    pub fn window_process<O, W, WF, TS>(
        self,
        name: &str,
        assigner: W,
        timestamp_of: TS,
        function: WF,
    ) -> Stream<(K, Windowed<O, T>)>
    where
        T: StateValue,
        O: Send + 'static,
        W: weir_operators::Assigner,
        WF: FnMut(&K, weir_operators::Window, Vec<T>, &mut Vec<O>) + Clone + Send + 'static,
        TS: Fn(&T) -> i64 + Clone + Send + 'static,
    {
        let lateness = self.allowed_lateness_ms;
        count_late(
            self.process(
                name,
                WindowProcess {
                    assigner,
                    function,
                    timestamp_of,
                    allowed_lateness_ms: lateness,
                },
            ),
            name,
        )
    }

    /// Count windows (Flink's `countWindow`): per key, every `size` records
    /// form a window, aggregated incrementally; emits `(key, result)` when a
    /// window is full. An unfilled window is keyed state (kept across
    /// restarts and bounded runs). Stateful: give it a uid.
    pub fn count_window_aggregate<O: Send + 'static, A: Aggregator<T, O> + Clone>(
        self,
        name: &str,
        size: u64,
        aggregator: A,
    ) -> Stream<(K, O)> {
        self.process(name, weir_operators::CountWindowAggregate { size, aggregator })
    }

    /// Aggregates per key in one global window (Flink's `GlobalWindows`):
    /// `(key, result)` goes out whenever `trigger` fires (every n records,
    /// at the end of each busy processing-time interval, or when event time
    /// ends in a bounded + drain run); `mode` says whether a firing starts a
    /// new window or keeps accumulating. The window is keyed state: give it
    /// a uid.
    pub fn global_window_aggregate<O: Send + 'static, A: Aggregator<T, O> + Clone>(
        self,
        name: &str,
        trigger: weir_operators::Trigger,
        mode: weir_operators::FireMode,
        aggregator: A,
    ) -> Stream<(K, O)> {
        self.process(
            name,
            weir_operators::GlobalWindowAggregate {
                trigger,
                mode,
                aggregator,
            },
        )
    }

    /// Aggregates per key and tumbling *processing-time* window of `size`
    /// (Flink's `TumblingProcessingTimeWindows`): a record counts in the
    /// window of the wall-clock time it arrives at; `(key, window, result)`
    /// is emitted when the clock passes the window's end. No watermarks and
    /// nothing late; results depend on arrival times (not reproducible on
    /// replay, as in Flink). The open window is keyed state: give it a uid.
    pub fn processing_time_window_aggregate<O: Send + 'static, A: Aggregator<T, O> + Clone>(
        self,
        name: &str,
        size: std::time::Duration,
        aggregator: A,
    ) -> Stream<(K, weir_operators::Window, O)> {
        let size_ms = i64::try_from(size.as_millis()).unwrap_or(i64::MAX).max(1);
        self.process(
            name,
            weir_operators::ProcessingTimeWindowAggregate { size_ms, aggregator },
        )
    }

    /// Runs an incremental aggregation per key; emits `(key, result)` after each record.
    pub fn aggregate<O: Send + 'static, A: Aggregator<T, O> + Clone>(
        self,
        name: &str,
        aggregator: A,
    ) -> Stream<(K, O)> {
        self.process(name, Aggregate(aggregator))
    }
}

/// Counts the late records of a window operator in
/// `weir_late_records_total{operator}` as they pass (they stay in the stream
/// as `Windowed::Late`, the side output).
fn count_late<K: Send + 'static, O: Send + 'static, I: Send + 'static>(
    stream: Stream<(K, Windowed<O, I>)>,
    operator: &str,
) -> Stream<(K, Windowed<O, I>)> {
    let window_op = stream.last_op;
    let operator = operator.to_string();
    // Registered on first use, so a recorder installed after the graph was built still sees it.
    let mut counter: Option<metrics::Counter> = None;
    let count = move |r: &(K, Windowed<O, I>)| {
        if let Windowed::Late(_) = r.1 {
            counter
                .get_or_insert_with(|| metrics::counter!("weir_late_records_total", "operator" => operator.clone()))
                .increment(1);
        }
    };
    let mut counted = stream.operator("count-late", move || Inspect(count.clone()));
    // `.uid(..)` after the window method names the window operator, not the counter.
    counted.last_op = window_op;
    counted
}
