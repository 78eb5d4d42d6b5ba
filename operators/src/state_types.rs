//! More keyed state kinds beside the function's own value state and map
//! states, built on map states (so they live in RocksDB behind the
//! write-back overlay and are in every checkpoint): several named value
//! states and list states per key (Flink's `ValueState`, `ListState`).
//!
//! ```
//! use weir_operators::{KeyedContext, KeyedHarness, KeyedProcess, OperatorError};
//! #[derive(Clone)]
//! struct Track;
//! impl KeyedProcess<u64, u64, (u64, u64, usize)> for Track {
//!     type State = ();
//!     fn process(&mut self, key: &u64, _: &mut Option<()>, r: u64, ctx: &mut KeyedContext<'_, (u64, u64, usize)>)
//!         -> Result<(), OperatorError> {
//!         let max = ctx.value::<u64>("max").get()?.unwrap_or(0).max(r);
//!         ctx.value("max").set(&max)?;
//!         ctx.list::<u64>("seen").append(&r)?;
//!         let seen = ctx.list::<u64>("seen").get()?.len();
//!         ctx.emit((*key, max, seen));
//!         Ok(())
//!     }
//! }
//! let mut h = KeyedHarness::new(Track);
//! assert_eq!(h.feed(|_| 1, [5, 3, 9]), [(1, 5, 1), (1, 5, 2), (1, 9, 3)]);
//! ```
//!
//! Names beginning with U+0001 are reserved for these kinds.

use crate::keyed::{Aggregator, KeyedContext, MapState, StateValue};
use crate::message::Timestamp;
use crate::operator::OperatorError;

impl<'a, O> KeyedContext<'a, O> {
    /// The current key's value state `name`: one value of type `V` per key,
    /// beside the function's own `State` (Flink's named `ValueState`).
    pub fn value<V: StateValue>(&mut self, name: &str) -> ValueState<'_, V> {
        ValueState {
            map: self.map(&format!("\u{1}value:{name}")),
        }
    }

    /// The current key's value state `name` with a time to live (Flink's
    /// `StateTtlConfig`, processing time): a value not set again within
    /// `ttl_ms` of wall-clock time reads as absent, and is removed when read
    /// or, unread, by a cleanup timer soon after it expires (so keys that
    /// are never seen again do not keep their state). The expiry is stored
    /// with the value, so it holds across restarts.
    pub fn value_with_ttl<V: StateValue>(&mut self, name: &str, ttl_ms: i64) -> TtlValueState<'_, 'a, V, O> {
        let now = self.processing_time().0;
        TtlValueState::new(self, name, TtlTime::Processing, now, ttl_ms)
    }

    /// The current key's value state `name` with a time to live in *event
    /// time* (as Kafka Streams' retention: by the data's time, so a replay
    /// or a backfill expires state as the live run did): a value set at
    /// event time `t` ([`TtlValueState::set_at`], with the record's time)
    /// reads as absent once the watermark reaches `t + ttl_ms`, and a
    /// cleanup timer removes it then if it is not read. `set` takes the
    /// current watermark as the time.
    pub fn value_with_event_time_ttl<V: StateValue>(&mut self, name: &str, ttl_ms: i64) -> TtlValueState<'_, 'a, V, O> {
        let now = self.watermark().0;
        TtlValueState::new(self, name, TtlTime::Event, now, ttl_ms)
    }

    /// The current key's reducing state `name`: one value, folded with
    /// `reduce` as values are added (Flink's `ReducingState`).
    pub fn reducing<V: StateValue, R: Fn(&V, &V) -> V>(&mut self, name: &str, reduce: R) -> ReducingState<'_, V, R> {
        ReducingState {
            map: self.map(&format!("\u{1}reducing:{name}")),
            reduce,
        }
    }

    /// The current key's aggregating state `name`: an accumulator of
    /// `aggregator` that values are added to (Flink's `AggregatingState`).
    pub fn aggregating<'g, I, R, A: Aggregator<I, R>>(
        &mut self,
        name: &str,
        aggregator: &'g A,
    ) -> AggregatingState<'_, 'g, I, R, A> {
        AggregatingState {
            map: self.map(&format!("\u{1}aggregating:{name}")),
            aggregator,
            _types: std::marker::PhantomData,
        }
    }

    /// The current key's list state `name`: values of type `V` in the order
    /// appended (Flink's `ListState`).
    pub fn list<V: StateValue>(&mut self, name: &str) -> ListState<'_, 'a, V, O> {
        ListState {
            items: format!("\u{1}list:{name}"),
            length: format!("\u{1}list-length:{name}"),
            ctx: self,
            _v: std::marker::PhantomData,
        }
    }
}

/// A named value state of the current key.
pub struct ValueState<'s, V> {
    map: MapState<'s, u8, V>,
}

impl<V: StateValue> ValueState<'_, V> {
    /// The value, if set.
    ///
    /// # Errors
    /// A state store failure or an undecodable value.
    pub fn get(&mut self) -> Result<Option<V>, OperatorError> {
        self.map.get(&0)
    }

    /// Sets the value.
    ///
    /// # Errors
    /// A state store failure or an unencodable value.
    pub fn set(&mut self, value: &V) -> Result<(), OperatorError> {
        self.map.insert(&0, value)
    }

    /// Removes the value.
    ///
    /// # Errors
    /// A state store failure.
    pub fn clear(&mut self) -> Result<(), OperatorError> {
        self.map.remove(&0)
    }
}

/// A named reducing state of the current key.
pub struct ReducingState<'s, V, R> {
    map: MapState<'s, u8, V>,
    reduce: R,
}

impl<V: StateValue, R: Fn(&V, &V) -> V> ReducingState<'_, V, R> {
    /// The reduction of everything added, if anything was.
    ///
    /// # Errors
    /// A state store failure or an undecodable value.
    pub fn get(&mut self) -> Result<Option<V>, OperatorError> {
        self.map.get(&0)
    }

    /// Folds `value` into the reduction.
    ///
    /// # Errors
    /// A state store failure or an unencodable value.
    pub fn add(&mut self, value: &V) -> Result<(), OperatorError> {
        let next = match self.map.get(&0)? {
            Some(current) => (self.reduce)(&current, value),
            None => value.clone(),
        };
        self.map.insert(&0, &next)
    }

    /// Forgets the reduction.
    ///
    /// # Errors
    /// A state store failure.
    pub fn clear(&mut self) -> Result<(), OperatorError> {
        self.map.remove(&0)
    }
}

/// A named aggregating state of the current key.
pub struct AggregatingState<'s, 'g, I, R, A: Aggregator<I, R>> {
    map: MapState<'s, u8, A::Acc>,
    aggregator: &'g A,
    _types: std::marker::PhantomData<fn(I) -> R>,
}

impl<I, R, A: Aggregator<I, R>> AggregatingState<'_, '_, I, R, A> {
    /// The aggregate of everything added, if anything was.
    ///
    /// # Errors
    /// A state store failure or an undecodable accumulator.
    pub fn get(&mut self) -> Result<Option<R>, OperatorError> {
        Ok(self.map.get(&0)?.map(|acc| self.aggregator.result(&acc)))
    }

    /// Adds `record` to the accumulator.
    ///
    /// # Errors
    /// A state store failure or an unencodable accumulator.
    pub fn add(&mut self, record: &I) -> Result<(), OperatorError> {
        let mut acc = match self.map.get(&0)? {
            Some(acc) => acc,
            None => self.aggregator.create(),
        };
        self.aggregator.add(&mut acc, record);
        self.map.insert(&0, &acc)
    }

    /// Forgets the accumulator.
    ///
    /// # Errors
    /// A state store failure.
    pub fn clear(&mut self) -> Result<(), OperatorError> {
        self.map.remove(&0)
    }
}

/// Which clock a time to live runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TtlTime {
    /// The wall clock: processing-time timers clean up.
    Processing,
    /// The watermark: event-time timers clean up.
    Event,
}

impl TtlTime {
    /// The map that holds a TTL value state `name`: `(expires, value)` under
    /// map key 0. The expiry comes first so that cleanup can read it without
    /// knowing the value's type.
    fn map_name(self, name: &str) -> String {
        match self {
            TtlTime::Processing => format!("\u{1}ttl-value:{name}"),
            TtlTime::Event => format!("\u{1}event-ttl-value:{name}"),
        }
    }

    /// The namespace of the cleanup timers of TTL value state `name`.
    fn timer_namespace(self, name: &str) -> Vec<u8> {
        let prefix = match self {
            TtlTime::Processing => PROCESSING_TTL_TIMER,
            TtlTime::Event => EVENT_TTL_TIMER,
        };
        [prefix, name.as_bytes()].concat()
    }
}

/// Namespaces of weir's own cleanup timers (U+0001 is reserved): the state
/// name follows.
const PROCESSING_TTL_TIMER: &[u8] = b"\x01ttl\0";
const EVENT_TTL_TIMER: &[u8] = b"\x01event-ttl\0";

/// A named value state of the current key that expires `ttl_ms` after it
/// was last set (see [`KeyedContext::value_with_ttl`] and
/// [`KeyedContext::value_with_event_time_ttl`]).
pub struct TtlValueState<'s, 'a, V, O> {
    ctx: &'s mut KeyedContext<'a, O>,
    name: String,
    time: TtlTime,
    /// The time of the call on the state's clock (ms).
    now: i64,
    ttl_ms: i64,
    _v: std::marker::PhantomData<fn() -> V>,
}

impl<'s, 'a, V: StateValue, O> TtlValueState<'s, 'a, V, O> {
    fn new(ctx: &'s mut KeyedContext<'a, O>, name: &str, time: TtlTime, now: i64, ttl_ms: i64) -> Self {
        TtlValueState {
            ctx,
            name: name.to_string(),
            time,
            now,
            ttl_ms: ttl_ms.max(0),
            _v: std::marker::PhantomData,
        }
    }

    fn map(&mut self) -> MapState<'_, u8, (i64, V)> {
        let name = self.time.map_name(&self.name);
        self.ctx.map(&name)
    }

    /// The value, unless it expired (then it is removed).
    ///
    /// # Errors
    /// A state store failure or an undecodable value.
    pub fn get(&mut self) -> Result<Option<V>, OperatorError> {
        let now = self.now;
        let mut map = self.map();
        match map.get(&0)? {
            Some((expires, value)) if now < expires => Ok(Some(value)),
            Some(_) => {
                map.remove(&0)?;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Sets the value; it lives `ttl_ms` from now (processing time: the
    /// wall clock; event time: the current watermark).
    ///
    /// # Errors
    /// A state store failure or an unencodable value.
    pub fn set(&mut self, value: &V) -> Result<(), OperatorError> {
        self.set_at(value, Timestamp(self.now))
    }

    /// Sets the value as of time `at` (for event time, the record's time):
    /// it lives until `at + ttl_ms`.
    ///
    /// # Errors
    /// A state store failure or an unencodable value.
    pub fn set_at(&mut self, value: &V, at: Timestamp) -> Result<(), OperatorError> {
        let expires = at.0.saturating_add(self.ttl_ms);
        self.map().insert(&0, &(expires, value.clone()))?;
        // One cleanup timer per 1/16 of the TTL, not one per set: a key set
        // a million times keeps at most 17 timers, and the timer that fires
        // after the last set's expiry removes the value.
        let granule = (self.ttl_ms / 16).max(1);
        let cleanup = Timestamp(
            expires
                .saturating_add(granule - 1)
                .div_euclid(granule)
                .saturating_mul(granule),
        );
        let namespace = self.time.timer_namespace(&self.name);
        match self.time {
            TtlTime::Processing => self.ctx.register_processing_timer(cleanup, &namespace),
            TtlTime::Event => self.ctx.register_event_timer(cleanup, &namespace),
        }
        Ok(())
    }

    /// Removes the value.
    ///
    /// # Errors
    /// A state store failure.
    pub fn clear(&mut self) -> Result<(), OperatorError> {
        self.map().remove(&0)
    }
}

/// Runs weir's own timers of a key, the cleanup of expired TTL values, and
/// returns `Some` when `namespace` was one (the function's timer hook is then
/// not called); `None` for the function's own timers. The runtime and
/// [`crate::KeyedHarness`] call it for every timer that fires.
///
/// # Errors
/// A state store failure.
pub fn fire_state_timer<O>(
    namespace: &[u8],
    at: Timestamp,
    ctx: &mut KeyedContext<'_, O>,
) -> Option<Result<(), OperatorError>> {
    if namespace.first() != Some(&1) {
        return None; // the common case: a function's own timer
    }
    let (time, name) = if let Some(name) = namespace.strip_prefix(PROCESSING_TTL_TIMER) {
        (TtlTime::Processing, name)
    } else {
        (TtlTime::Event, namespace.strip_prefix(EVENT_TTL_TIMER)?)
    };
    let name = std::str::from_utf8(name).ok()?;
    let mut map = ctx.map::<u8, i64>(&time.map_name(name));
    // Only the expiry is decoded: it is the first field of `(expires, value)`.
    Some(match map.get(&0) {
        Ok(Some(expires)) if expires <= at.0 => map.remove(&0),
        Ok(_) => Ok(()), // set again since, or gone: a later timer cleans up
        Err(e) => Err(e),
    })
}

/// A named list state of the current key: entries keyed by their position
/// (big-endian, so a scan returns them in order), and the length beside
/// them, so that appending is one read and two writes.
pub struct ListState<'s, 'a, V, O> {
    ctx: &'s mut KeyedContext<'a, O>,
    items: String,
    length: String,
    _v: std::marker::PhantomData<fn() -> V>,
}

impl<V: StateValue, O> ListState<'_, '_, V, O> {
    fn len(&mut self) -> Result<u64, OperatorError> {
        Ok(self.ctx.map::<u8, u64>(&self.length).get(&0)?.unwrap_or(0))
    }

    /// Every value, in the order appended.
    ///
    /// # Errors
    /// A state store failure or an undecodable value.
    pub fn get(&mut self) -> Result<Vec<V>, OperatorError> {
        let entries = self.ctx.map::<u64, V>(&self.items).entries()?;
        Ok(entries.into_iter().map(|(_, v)| v).collect())
    }

    /// Appends `value`.
    ///
    /// # Errors
    /// A state store failure or an unencodable value.
    pub fn append(&mut self, value: &V) -> Result<(), OperatorError> {
        let next = self.len()?;
        self.ctx.map::<u64, V>(&self.items).insert(&next, value)?;
        self.ctx.map::<u8, u64>(&self.length).insert(&0, &(next + 1))
    }

    /// Replaces the whole list.
    ///
    /// # Errors
    /// A state store failure or an unencodable value.
    pub fn update(&mut self, values: &[V]) -> Result<(), OperatorError> {
        self.clear()?;
        let mut items = self.ctx.map::<u64, V>(&self.items);
        for (i, v) in values.iter().enumerate() {
            items.insert(&(i as u64), v)?;
        }
        self.ctx.map::<u8, u64>(&self.length).insert(&0, &(values.len() as u64))
    }

    /// Empties the list.
    ///
    /// # Errors
    /// A state store failure.
    pub fn clear(&mut self) -> Result<(), OperatorError> {
        self.ctx.map::<u64, V>(&self.items).clear()?;
        self.ctx.map::<u8, u64>(&self.length).remove(&0)
    }
}

#[cfg(test)]
mod tests {
    use crate::{KeyedContext, KeyedHarness, KeyedProcess, OperatorError, Timestamp};

    /// Counts a key's records, lists them, and reports the list 100 ms after each.
    #[derive(Clone)]
    struct Remind;

    impl KeyedProcess<u64, u64, (u64, usize)> for Remind {
        type State = u64;
        fn process(
            &mut self,
            _key: &u64,
            count: &mut Option<u64>,
            r: u64,
            ctx: &mut KeyedContext<'_, (u64, usize)>,
        ) -> Result<(), OperatorError> {
            *count.get_or_insert(0) += 1;
            ctx.list::<u64>("seen").append(&r)?;
            ctx.register_event_timer(Timestamp(r as i64 + 100), b"remind");
            Ok(())
        }
        fn on_timer(
            &mut self,
            key: &u64,
            _count: &mut Option<u64>,
            _at: Timestamp,
            _namespace: &[u8],
            ctx: &mut KeyedContext<'_, (u64, usize)>,
        ) -> Result<(), OperatorError> {
            let seen = ctx.list::<u64>("seen").get()?.len();
            ctx.emit((*key, seen));
            Ok(())
        }
    }

    /// Remembers the last record of a key for 1 s of processing time.
    #[derive(Clone)]
    struct LastSeen;

    impl KeyedProcess<u64, u64, (u64, Option<u64>)> for LastSeen {
        type State = ();
        fn process(
            &mut self,
            key: &u64,
            _: &mut Option<()>,
            r: u64,
            ctx: &mut KeyedContext<'_, (u64, Option<u64>)>,
        ) -> Result<(), OperatorError> {
            let before = ctx.value_with_ttl::<u64>("last", 1_000).get()?;
            ctx.value_with_ttl("last", 1_000).set(&r)?;
            ctx.emit((*key, before));
            Ok(())
        }
    }

    #[test]
    fn an_expired_value_that_is_never_read_again_is_cleaned_up() {
        let mut h = KeyedHarness::new(LastSeen);
        h.advance_processing_time(Timestamp(10_000));
        // Many sets share a few cleanup timers (one per 1/16 of the TTL).
        for t in 0..1_000 {
            h.set_processing_time_without_firing(Timestamp(10_000 + t));
            h.feed(|_| 1, [t as u64]);
        }
        assert!(h.processing_timers().len() <= 17, "{:?}", h.processing_timers().len());
        assert_eq!(h.map_state_entries(), 1);
        // Last set at 10 999: alive until 11 999, removed by the timer after it.
        assert_eq!(h.advance_processing_time(Timestamp(11_998)), []);
        assert_eq!(h.map_state_entries(), 1, "not expired yet");
        h.advance_processing_time(Timestamp(12_100));
        assert_eq!(h.map_state_entries(), 0, "removed without a read");
        assert_eq!(h.processing_timers(), []);
    }

    /// Remembers the last record of a key for 100 ms of event time (the
    /// record is its own time).
    #[derive(Clone)]
    struct LastSeenInEventTime;

    impl KeyedProcess<u64, u64, (u64, Option<u64>)> for LastSeenInEventTime {
        type State = ();
        fn process(
            &mut self,
            key: &u64,
            _: &mut Option<()>,
            r: u64,
            ctx: &mut KeyedContext<'_, (u64, Option<u64>)>,
        ) -> Result<(), OperatorError> {
            let mut last = ctx.value_with_event_time_ttl::<u64>("last", 100);
            let before = last.get()?;
            last.set_at(&r, Timestamp(r as i64))?;
            ctx.emit((*key, before));
            Ok(())
        }
    }

    #[test]
    fn an_event_time_ttl_expires_with_the_watermark_also_across_a_restore() {
        let mut h = KeyedHarness::new(LastSeenInEventTime);
        assert_eq!(h.feed(|_| 1, [1_000, 1_050]), [(1, None), (1, Some(1_000))]);
        // The wall clock does not matter, the watermark does.
        h.advance_processing_time(Timestamp(i64::MAX / 2));
        h.advance_watermark(Timestamp(1_149));
        assert_eq!(h.map_state_entries(), 1, "set at 1 050, alive until 1 150");
        let mut restored = KeyedHarness::restore(LastSeenInEventTime, &h.snapshot().unwrap()).unwrap();
        assert_eq!(restored.feed(|_| 1, [1_100]), [(1, Some(1_050))]);
        restored.advance_watermark(Timestamp(1_210));
        assert_eq!(restored.map_state_entries(), 0, "expired at 1 200 and removed unread");
        assert_eq!(restored.feed(|_| 1, [1_300]), [(1, None)]);
    }

    #[test]
    fn a_value_with_a_time_to_live_expires_also_across_a_restore() {
        let mut h = KeyedHarness::new(LastSeen);
        h.advance_processing_time(Timestamp(10_000));
        assert_eq!(h.feed(|_| 1, [5, 6]), [(1, None), (1, Some(5))]);
        let mut restored = KeyedHarness::restore(LastSeen, &h.snapshot().unwrap()).unwrap();
        restored.advance_processing_time(Timestamp(10_999));
        assert_eq!(
            restored.feed(|_| 1, [7]),
            [(1, Some(6))],
            "set at 10 000, alive until 11 000"
        );
        restored.advance_processing_time(Timestamp(12_000));
        assert_eq!(
            restored.feed(|_| 1, [8]),
            [(1, None)],
            "set at 10 999, expired at 11 999"
        );
    }

    /// The largest record of a key and the mean of its records, in named states.
    #[derive(Clone)]
    struct Stats;

    impl KeyedProcess<u64, i64, (u64, i64, f64)> for Stats {
        type State = ();
        fn process(
            &mut self,
            key: &u64,
            _: &mut Option<()>,
            r: i64,
            ctx: &mut KeyedContext<'_, (u64, i64, f64)>,
        ) -> Result<(), OperatorError> {
            let mut max = ctx.reducing("max", |a: &i64, b: &i64| (*a).max(*b));
            max.add(&r)?;
            let max = max.get()?.unwrap_or(i64::MIN);
            let mean = crate::aggregators::Avg(|x: &i64| *x);
            let mut avg = ctx.aggregating("mean", &mean);
            avg.add(&r)?;
            let avg = avg.get()?.unwrap_or(0.0);
            ctx.emit((*key, max, avg));
            Ok(())
        }
    }

    #[test]
    fn reducing_and_aggregating_states_fold_what_is_added() {
        let mut h = KeyedHarness::new(Stats);
        let out = h.feed(|_| 3, [4, 10, 1]);
        assert_eq!(out, [(3, 4, 4.0), (3, 10, 7.0), (3, 10, 5.0)]);
        let mut restored = KeyedHarness::restore(Stats, &h.snapshot().unwrap()).unwrap();
        assert_eq!(restored.feed(|_| 3, [5]), [(3, 10, 5.0)]);
    }

    #[test]
    fn a_harness_shows_its_timers_and_its_state_survives_a_snapshot_and_restore() {
        let mut h = KeyedHarness::new(Remind);
        h.feed(|_| 7, [1, 2]);
        let timers: Vec<(u64, i64)> = h.event_timers().iter().map(|(k, at, _)| (*k, at.0)).collect();
        assert_eq!(timers, [(7, 101), (7, 102)]);
        let snapshot = h.snapshot().unwrap();
        let mut restored = KeyedHarness::restore(Remind, &snapshot).unwrap();
        assert_eq!(
            restored.snapshot().unwrap(),
            snapshot,
            "a restore holds what was snapshotted"
        );
        assert_eq!(restored.state.get(&7), Some(&2));
        assert_eq!(restored.advance_watermark(Timestamp(101)), [(7, 2)]);
        assert_eq!(restored.event_timers().len(), 1);
    }
}
