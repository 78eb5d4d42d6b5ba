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
    /// `ttl_ms` of wall-clock time reads as absent and is removed when read.
    /// The expiry is stored with the value, so it holds across restarts.
    pub fn value_with_ttl<V: StateValue>(&mut self, name: &str, ttl_ms: i64) -> TtlValueState<'_, V> {
        let now = self.processing_time().0;
        TtlValueState {
            map: self.map(&format!("\u{1}ttl-value:{name}")),
            now,
            ttl_ms: ttl_ms.max(0),
        }
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

/// A named value state of the current key that expires `ttl_ms` after it
/// was last set.
pub struct TtlValueState<'s, V> {
    map: MapState<'s, u8, (V, i64)>,
    /// Processing time of the call (ms since the epoch).
    now: i64,
    ttl_ms: i64,
}

impl<V: StateValue> TtlValueState<'_, V> {
    /// The value, unless it expired (then it is removed).
    ///
    /// # Errors
    /// A state store failure or an undecodable value.
    pub fn get(&mut self) -> Result<Option<V>, OperatorError> {
        match self.map.get(&0)? {
            Some((value, expires)) if self.now < expires => Ok(Some(value)),
            Some(_) => {
                self.map.remove(&0)?;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Sets the value; it lives `ttl_ms` from now.
    ///
    /// # Errors
    /// A state store failure or an unencodable value.
    pub fn set(&mut self, value: &V) -> Result<(), OperatorError> {
        let expires = self.now.saturating_add(self.ttl_ms);
        self.map.insert(&0, &(value.clone(), expires))
    }

    /// Removes the value.
    ///
    /// # Errors
    /// A state store failure.
    pub fn clear(&mut self) -> Result<(), OperatorError> {
        self.map.remove(&0)
    }
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
