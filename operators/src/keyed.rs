//! Keyed processing: functions that see one key's state at a time.
//!
//! The runtime routes every record to the subtask owning its key group, looks
//! up that key's state (write-back cache in front of RocksDB), calls the
//! function, and marks the state dirty. Functions here are pure: the state is
//! handed in as `&mut Option<S>` (`None` = no state for this key; set it to
//! `None` to clear it), so they are tested with [`KeyedHarness`](crate::KeyedHarness) without any
//! storage.

use crate::codec::{decode_value, encode_value};
use crate::key::StateKey;
use crate::message::Timestamp;
use crate::operator::OperatorError;
use serde::{de::DeserializeOwned, Serialize};

/// The bounds a keyed state value needs: stored with postcard, cached typed.
pub trait StateValue: Serialize + DeserializeOwned + Clone + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + 'static> StateValue for T {}

/// Namespace/value pairs returned by [`KeyedStore::scan`].
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Byte-level namespaced state of the *current key*: what [`MapState`] is
/// built on. The runtime implements it over RocksDB (with a write-back
/// overlay), [`KeyedHarness`](crate::KeyedHarness) over memory. Namespaces of one key sort
/// bytewise, so a prefix is a contiguous range.
pub trait KeyedStore {
    /// The value at `namespace`.
    fn get(&mut self, namespace: &[u8]) -> Result<Option<Vec<u8>>, OperatorError>;
    /// Sets the value at `namespace`.
    fn put(&mut self, namespace: &[u8], value: Vec<u8>) -> Result<(), OperatorError>;
    /// Deletes the value at `namespace`.
    fn delete(&mut self, namespace: &[u8]) -> Result<(), OperatorError>;
    /// Every entry whose namespace starts with `prefix`, sorted by namespace.
    fn scan(&mut self, prefix: &[u8]) -> Result<Entries, OperatorError>;
    /// Calls [`KeyedProcess::on_timer`] for the current key and `namespace`
    /// when the watermark reaches `at` (once per key, time and namespace).
    fn register_event_timer(&mut self, at: Timestamp, namespace: &[u8]);
    /// Forgets a timer registered with [`KeyedStore::register_event_timer`].
    fn delete_event_timer(&mut self, at: Timestamp, namespace: &[u8]);
    /// The task's current event time (watermark).
    fn watermark(&self) -> Timestamp;
    /// Calls [`KeyedProcess::on_processing_timer`] for the current key and
    /// `namespace` when the wall clock reaches `at` (ms since the epoch).
    fn register_processing_timer(&mut self, at: Timestamp, namespace: &[u8]);
    /// Forgets a timer registered with [`KeyedStore::register_processing_timer`].
    fn delete_processing_timer(&mut self, at: Timestamp, namespace: &[u8]);
    /// The task's current processing time (wall clock, ms since the epoch).
    fn processing_time(&self) -> Timestamp;
}

/// What a keyed function sees besides its value state: the output and the
/// current key's map states.
pub struct KeyedContext<'a, O> {
    out: &'a mut Vec<O>,
    store: &'a mut dyn KeyedStore,
}

impl<'a, O> KeyedContext<'a, O> {
    /// A context writing to `out`, with map states in `store`.
    pub fn new(out: &'a mut Vec<O>, store: &'a mut dyn KeyedStore) -> Self {
        KeyedContext { out, store }
    }

    /// Emits one output record.
    #[inline]
    pub fn emit(&mut self, record: O) {
        self.out.push(record);
    }

    /// Registers an event-time timer of the current key: `on_timer` runs when
    /// the watermark reaches `at`. `namespace` tells timers apart (a window).
    /// Timers are keyed state: checkpointed, restored, exactly-once.
    pub fn register_event_timer(&mut self, at: Timestamp, namespace: &[u8]) {
        self.store.register_event_timer(at, namespace);
    }

    /// Deletes a timer of the current key.
    pub fn delete_event_timer(&mut self, at: Timestamp, namespace: &[u8]) {
        self.store.delete_event_timer(at, namespace);
    }

    /// The current event time of the task (its watermark).
    pub fn watermark(&self) -> Timestamp {
        self.store.watermark()
    }

    /// Registers a processing-time timer of the current key:
    /// `on_processing_timer` runs once the wall clock reaches `at` (ms since
    /// the epoch). Checkpointed like event-time timers; a timer whose time
    /// passed while the job was down fires right after the restore.
    pub fn register_processing_timer(&mut self, at: Timestamp, namespace: &[u8]) {
        self.store.register_processing_timer(at, namespace);
    }

    /// Deletes a processing-time timer of the current key.
    pub fn delete_processing_timer(&mut self, at: Timestamp, namespace: &[u8]) {
        self.store.delete_processing_timer(at, namespace);
    }

    /// The task's processing time (wall clock, ms since the epoch), as of the
    /// batch or timer being handled.
    pub fn processing_time(&self) -> Timestamp {
        self.store.processing_time()
    }

    /// The current key's map state `name` (a keyed map from `UK` to `UV`, kept
    /// in RocksDB; Flink's `MapState`). Names must not contain a NUL byte.
    pub fn map<UK: StateKey, UV: StateValue>(&mut self, name: &str) -> MapState<'_, UK, UV> {
        let mut prefix = Vec::with_capacity(name.len() + 1);
        prefix.extend(name.bytes().filter(|b| *b != 0));
        prefix.push(0);
        MapState {
            store: &mut *self.store,
            prefix,
            buf: Vec::new(),
            _types: std::marker::PhantomData,
        }
    }
}

/// A map state of the current key: `UK -> UV`. Every call reads or writes the
/// state store (through the runtime's overlay), so keep hot per-key data in
/// the value state and use maps for many or large entries per key.
pub struct MapState<'s, UK, UV> {
    store: &'s mut dyn KeyedStore,
    prefix: Vec<u8>,
    buf: Vec<u8>,
    _types: std::marker::PhantomData<fn() -> (UK, UV)>,
}

impl<UK: StateKey, UV: StateValue> MapState<'_, UK, UV> {
    fn namespace(&mut self, key: &UK) -> &[u8] {
        self.buf.clear();
        self.buf.extend_from_slice(&self.prefix);
        key.encode_key(&mut self.buf);
        &self.buf
    }

    /// The value of `key`.
    ///
    /// # Errors
    /// A state store failure or an undecodable value.
    pub fn get(&mut self, key: &UK) -> Result<Option<UV>, OperatorError> {
        self.namespace(key);
        match self.store.get(&self.buf)? {
            Some(bytes) => Ok(Some(decode_value(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Sets `key` to `value`.
    ///
    /// # Errors
    /// A state store failure or an unencodable value.
    pub fn insert(&mut self, key: &UK, value: &UV) -> Result<(), OperatorError> {
        let mut bytes = Vec::new();
        encode_value(value, &mut bytes)?;
        self.namespace(key);
        self.store.put(&self.buf, bytes)
    }

    /// Removes `key`.
    ///
    /// # Errors
    /// A state store failure.
    pub fn remove(&mut self, key: &UK) -> Result<(), OperatorError> {
        self.namespace(key);
        self.store.delete(&self.buf)
    }

    /// Every entry, ordered by the encoded map key (numeric order for integers).
    ///
    /// # Errors
    /// A state store failure or an undecodable entry.
    pub fn entries(&mut self) -> Result<Vec<(UK, UV)>, OperatorError> {
        let mut out = Vec::new();
        for (ns, bytes) in self.store.scan(&self.prefix)? {
            let key = UK::decode_key(&ns[self.prefix.len()..])
                .ok_or_else(|| OperatorError("undecodable map state key".into()))?;
            out.push((key, decode_value(&bytes)?));
        }
        Ok(out)
    }

    /// The entries whose encoded map key starts with `prefix` (the encoded
    /// bytes of a key part: for `Vec<u8>` keys, the bytes themselves), in order.
    ///
    /// # Errors
    /// A state store failure or an undecodable entry.
    pub fn entries_with_prefix(&mut self, prefix: &[u8]) -> Result<Vec<(UK, UV)>, OperatorError> {
        self.buf.clear();
        self.buf.extend_from_slice(&self.prefix);
        self.buf.extend_from_slice(prefix);
        let mut out = Vec::new();
        for (ns, bytes) in self.store.scan(&self.buf)? {
            let key = UK::decode_key(&ns[self.prefix.len()..])
                .ok_or_else(|| OperatorError("undecodable map state key".into()))?;
            out.push((key, decode_value(&bytes)?));
        }
        Ok(out)
    }

    /// Removes every entry.
    ///
    /// # Errors
    /// A state store failure.
    pub fn clear(&mut self) -> Result<(), OperatorError> {
        for (ns, _) in self.store.scan(&self.prefix)? {
            self.store.delete(&ns)?;
        }
        Ok(())
    }
}

/// A keyed process function: one value state per key (`State`, typed and
/// cached: the fast path), plus any number of map states through the
/// [`KeyedContext`].
///
/// # Examples
///
/// ```
/// use weir_operators::{KeyedContext, KeyedProcess, KeyedHarness, OperatorError};
/// struct Count;
/// impl KeyedProcess<u64, u64, (u64, u64)> for Count {
///     type State = u64;
///     fn process(&mut self, key: &u64, count: &mut Option<u64>, _r: u64, ctx: &mut KeyedContext<'_, (u64, u64)>)
///         -> Result<(), OperatorError> {
///         let c = count.get_or_insert(0);
///         *c += 1;
///         ctx.emit((*key, *c));
///         Ok(())
///     }
/// }
/// let mut h = KeyedHarness::new(Count);
/// assert_eq!(h.feed(|r| *r, [7, 7, 8]), vec![(7, 1), (7, 2), (8, 1)]);
/// ```
pub trait KeyedProcess<K, I, O>: Send + 'static {
    /// The per-key value state.
    type State: StateValue;
    /// Processes one record of `key`, with that key's state.
    fn process(
        &mut self,
        key: &K,
        state: &mut Option<Self::State>,
        record: I,
        ctx: &mut KeyedContext<'_, O>,
    ) -> Result<(), OperatorError>;

    /// An event-time timer of `key` registered for `at` and `namespace` fired
    /// (the watermark reached `at`). Timers fire in time order.
    fn on_timer(
        &mut self,
        _key: &K,
        _state: &mut Option<Self::State>,
        _at: Timestamp,
        _namespace: &[u8],
        _ctx: &mut KeyedContext<'_, O>,
    ) -> Result<(), OperatorError> {
        Ok(())
    }

    /// A processing-time timer of `key` registered for `at` and `namespace`
    /// fired (the wall clock reached `at`). Timers fire in time order.
    fn on_processing_timer(
        &mut self,
        _key: &K,
        _state: &mut Option<Self::State>,
        _at: Timestamp,
        _namespace: &[u8],
        _ctx: &mut KeyedContext<'_, O>,
    ) -> Result<(), OperatorError> {
        Ok(())
    }
}

/// `reduce`: keeps the running reduction per key and emits it after each record.
#[derive(Clone)]
pub struct Reduce<F>(pub F);
impl<K, T: StateValue, F: FnMut(&T, &T) -> T + Send + 'static> KeyedProcess<K, T, T> for Reduce<F> {
    type State = T;
    #[inline]
    fn process(
        &mut self,
        _key: &K,
        state: &mut Option<T>,
        record: T,
        ctx: &mut KeyedContext<'_, T>,
    ) -> Result<(), OperatorError> {
        let next = match state {
            Some(acc) => (self.0)(acc, &record),
            None => record,
        };
        ctx.emit(next.clone());
        *state = Some(next);
        Ok(())
    }
}

/// An incremental aggregation (Flink's `AggregateFunction`).
pub trait Aggregator<I, O>: Send + 'static {
    /// The accumulator kept per key.
    type Acc: StateValue;
    /// A fresh accumulator.
    fn create(&self) -> Self::Acc;
    /// Adds one record (by reference: a record in several windows is not cloned).
    fn add(&self, acc: &mut Self::Acc, record: &I);
    /// The current result.
    fn result(&self, acc: &Self::Acc) -> O;
}

/// `aggregate`: runs an [`Aggregator`] per key and emits `(key, result)` after each record.
#[derive(Clone)]
pub struct Aggregate<A>(pub A);
impl<K: Clone, I, O, A: Aggregator<I, O>> KeyedProcess<K, I, (K, O)> for Aggregate<A> {
    type State = A::Acc;
    #[inline]
    fn process(
        &mut self,
        key: &K,
        state: &mut Option<A::Acc>,
        record: I,
        ctx: &mut KeyedContext<'_, (K, O)>,
    ) -> Result<(), OperatorError> {
        let acc = state.get_or_insert_with(|| self.0.create());
        self.0.add(acc, &record);
        ctx.emit((key.clone(), self.0.result(acc)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::KeyedHarness;

    struct Avg;
    impl Aggregator<u64, f64> for Avg {
        type Acc = (u64, u64);
        fn create(&self) -> (u64, u64) {
            (0, 0)
        }
        fn add(&self, acc: &mut (u64, u64), r: &u64) {
            acc.0 += r;
            acc.1 += 1;
        }
        fn result(&self, acc: &(u64, u64)) -> f64 {
            acc.0 as f64 / acc.1 as f64
        }
    }

    #[test]
    fn reduce_emits_the_running_reduction_per_key() {
        let mut h = KeyedHarness::new(Reduce(|a: &(u8, u32), b: &(u8, u32)| (a.0, a.1 + b.1)));
        let out = h.feed(|r: &(u8, u32)| r.0, [(1, 5), (2, 1), (1, 7)]);
        assert_eq!(out, vec![(1, 5), (2, 1), (1, 12)]);
        assert_eq!(h.state[&1], (1, 12));
    }

    #[test]
    fn aggregate_keeps_an_accumulator_per_key() {
        let mut h = KeyedHarness::new(Aggregate(Avg));
        let out = h.feed(|r: &u64| r % 2, [2, 3, 4]);
        assert_eq!(out, vec![(0, 2.0), (1, 3.0), (0, 3.0)]);
    }

    /// Keeps, per key, the set of distinct values seen, in a map state.
    struct Distinct;
    impl KeyedProcess<u8, (u8, u32), (u8, Vec<(u32, u32)>)> for Distinct {
        type State = ();
        fn process(
            &mut self,
            key: &u8,
            _state: &mut Option<()>,
            r: (u8, u32),
            ctx: &mut KeyedContext<'_, (u8, Vec<(u32, u32)>)>,
        ) -> Result<(), OperatorError> {
            let mut seen = ctx.map::<u32, u32>("seen");
            let n = seen.get(&r.1)?.unwrap_or(0);
            seen.insert(&r.1, &(n + 1))?;
            if r.1 == 0 {
                seen.clear()?;
            }
            let entries = seen.entries()?;
            ctx.emit((*key, entries));
            Ok(())
        }
    }

    #[test]
    fn map_state_is_per_key_ordered_and_clearable() {
        let mut h = KeyedHarness::new(Distinct);
        let out = h.feed(|r: &(u8, u32)| r.0, [(1, 300), (2, 5), (1, 7), (1, 300), (2, 0)]);
        assert_eq!(
            out[2],
            (1, vec![(7, 1), (300, 1)]),
            "numeric order, key 2's entries not visible"
        );
        assert_eq!(out[3], (1, vec![(7, 1), (300, 2)]));
        assert_eq!(out[4], (2, vec![]), "cleared");
    }

    /// Counts records per key in tumbling 10 ms windows; emits (key, window start, count) when a window closes.
    struct WindowCount;
    impl KeyedProcess<u8, (u8, i64), (u8, i64, u64)> for WindowCount {
        type State = ();
        fn process(
            &mut self,
            _key: &u8,
            _state: &mut Option<()>,
            r: (u8, i64),
            ctx: &mut KeyedContext<'_, (u8, i64, u64)>,
        ) -> Result<(), OperatorError> {
            let w = crate::window::Tumbling::of(10).assign(r.1);
            let ns = w.namespace();
            let mut counts = ctx.map::<u8, u64>("count");
            let n = counts.get(&0)?.unwrap_or(0);
            counts.insert(&0, &(n + 1))?;
            drop(counts);
            let mut per_window = ctx.map::<i64, u64>("windows");
            let c = per_window.get(&w.start)?.unwrap_or(0);
            per_window.insert(&w.start, &(c + 1))?;
            drop(per_window);
            ctx.register_event_timer(w.max_timestamp(), &ns);
            Ok(())
        }
        fn on_timer(
            &mut self,
            key: &u8,
            _state: &mut Option<()>,
            _at: Timestamp,
            namespace: &[u8],
            ctx: &mut KeyedContext<'_, (u8, i64, u64)>,
        ) -> Result<(), OperatorError> {
            let w = crate::window::Window::from_namespace(namespace)
                .ok_or_else(|| OperatorError("bad namespace".into()))?;
            let mut per_window = ctx.map::<i64, u64>("windows");
            let c = per_window.get(&w.start)?.unwrap_or(0);
            per_window.remove(&w.start)?;
            drop(per_window);
            ctx.emit((*key, w.start, c));
            Ok(())
        }
    }

    /// Emits a key's count once, 100 ms of processing time after its first record.
    struct CountThenReport;
    impl KeyedProcess<u8, u8, (u8, u64, i64)> for CountThenReport {
        type State = u64;
        fn process(
            &mut self,
            _key: &u8,
            count: &mut Option<u64>,
            _r: u8,
            ctx: &mut KeyedContext<'_, (u8, u64, i64)>,
        ) -> Result<(), OperatorError> {
            if count.is_none() {
                let at = Timestamp(ctx.processing_time().0 + 100);
                ctx.register_processing_timer(at, b"report");
            }
            *count.get_or_insert(0) += 1;
            Ok(())
        }
        fn on_processing_timer(
            &mut self,
            key: &u8,
            count: &mut Option<u64>,
            at: Timestamp,
            namespace: &[u8],
            ctx: &mut KeyedContext<'_, (u8, u64, i64)>,
        ) -> Result<(), OperatorError> {
            assert_eq!(namespace, b"report");
            ctx.emit((*key, count.take().unwrap_or(0), at.0));
            Ok(())
        }
    }

    #[test]
    fn processing_timers_fire_by_the_clock_not_the_watermark() {
        let mut h = KeyedHarness::new(CountThenReport);
        h.advance_processing_time(Timestamp(1_000));
        h.feed(|r: &u8| *r, [1, 1, 2]);
        assert!(
            h.advance_watermark(Timestamp::MAX).is_empty(),
            "event time does not fire them"
        );
        h.advance_processing_time(Timestamp(1_050));
        h.feed(|r: &u8| *r, [2]);
        assert_eq!(h.advance_processing_time(Timestamp(1_099)), vec![]);
        assert_eq!(
            h.advance_processing_time(Timestamp(1_100)),
            vec![(1, 2, 1_100), (2, 2, 1_100)]
        );
    }

    #[test]
    fn timers_fire_in_time_order_when_the_watermark_passes_them() {
        let mut h = KeyedHarness::new(WindowCount);
        assert!(h
            .feed(|r: &(u8, i64)| r.0, [(1, 1), (1, 5), (2, 12), (1, 15), (2, 3)])
            .is_empty());
        assert_eq!(h.advance_watermark(Timestamp(8)), vec![], "window [0,10) ends at 9");
        assert_eq!(h.advance_watermark(Timestamp(9)), vec![(1, 0, 2), (2, 0, 1)]);
        assert_eq!(h.advance_watermark(Timestamp::MAX), vec![(1, 10, 1), (2, 10, 1)]);
    }
}
