//! Keyed processing: functions that see one key's state at a time.
//!
//! The runtime routes every record to the subtask owning its key group, looks
//! up that key's state (write-back cache in front of RocksDB), calls the
//! function, and marks the state dirty. Functions here are pure: the state is
//! handed in as `&mut Option<S>` (`None` = no state for this key; set it to
//! `None` to clear it), so they are tested with [`KeyedHarness`] without any
//! storage.

use crate::operator::OperatorError;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::hash::Hash;

/// The bounds a keyed state value needs: stored with postcard, cached typed.
pub trait StateValue: Serialize + DeserializeOwned + Clone + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + 'static> StateValue for T {}

/// A keyed process function with one value state per key.
///
/// # Examples
///
/// ```
/// use weir_operators::{KeyedProcess, KeyedHarness, OperatorError};
/// struct Count;
/// impl KeyedProcess<u64, u64, (u64, u64)> for Count {
///     type State = u64;
///     fn process(&mut self, key: &u64, count: &mut Option<u64>, _r: u64, out: &mut Vec<(u64, u64)>)
///         -> Result<(), OperatorError> {
///         let c = count.get_or_insert(0);
///         *c += 1;
///         out.push((*key, *c));
///         Ok(())
///     }
/// }
/// let mut h = KeyedHarness::new(Count);
/// assert_eq!(h.feed(|r| *r, [7, 7, 8]), vec![(7, 1), (7, 2), (8, 1)]);
/// ```
pub trait KeyedProcess<K, I, O>: Send + 'static {
    /// The per-key state.
    type State: StateValue;
    /// Processes one record of `key`, with that key's state.
    fn process(
        &mut self,
        key: &K,
        state: &mut Option<Self::State>,
        record: I,
        out: &mut Vec<O>,
    ) -> Result<(), OperatorError>;
}

/// `reduce`: keeps the running reduction per key and emits it after each record.
#[derive(Clone)]
pub struct Reduce<F>(pub F);
impl<K, T: StateValue, F: FnMut(&T, &T) -> T + Send + 'static> KeyedProcess<K, T, T> for Reduce<F> {
    type State = T;
    #[inline]
    fn process(&mut self, _key: &K, state: &mut Option<T>, record: T, out: &mut Vec<T>) -> Result<(), OperatorError> {
        let next = match state {
            Some(acc) => (self.0)(acc, &record),
            None => record,
        };
        out.push(next.clone());
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
    /// Adds one record.
    fn add(&self, acc: &mut Self::Acc, record: I);
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
        out: &mut Vec<(K, O)>,
    ) -> Result<(), OperatorError> {
        let acc = state.get_or_insert_with(|| self.0.create());
        self.0.add(acc, record);
        out.push((key.clone(), self.0.result(acc)));
        Ok(())
    }
}

/// Runs a [`KeyedProcess`] over records with an in-memory state map: the
/// test harness for keyed logic.
pub struct KeyedHarness<K, P: KeyedProcess<K, I, O>, I, O> {
    function: P,
    /// The state per key after the records fed so far.
    pub state: HashMap<K, P::State>,
    _types: std::marker::PhantomData<fn(I) -> O>,
}

impl<K: Hash + Eq + Clone, I, O, P: KeyedProcess<K, I, O>> KeyedHarness<K, P, I, O> {
    /// A harness with empty state.
    pub fn new(function: P) -> Self {
        KeyedHarness {
            function,
            state: HashMap::new(),
            _types: std::marker::PhantomData,
        }
    }

    /// Feeds records, keyed by `key_of`, and returns the outputs.
    ///
    /// # Panics
    /// If the function returns an error (this is a test helper).
    #[allow(clippy::expect_used)]
    pub fn feed(&mut self, key_of: impl Fn(&I) -> K, records: impl IntoIterator<Item = I>) -> Vec<O> {
        let mut out = Vec::new();
        for r in records {
            let key = key_of(&r);
            let mut slot = self.state.remove(&key);
            self.function
                .process(&key, &mut slot, r, &mut out)
                .expect("keyed function failed");
            if let Some(s) = slot {
                self.state.insert(key, s);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Avg;
    impl Aggregator<u64, f64> for Avg {
        type Acc = (u64, u64);
        fn create(&self) -> (u64, u64) {
            (0, 0)
        }
        fn add(&self, acc: &mut (u64, u64), r: u64) {
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
}
