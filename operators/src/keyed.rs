//! Keyed processing: functions that see one key's state at a time.
//!
//! The runtime routes every record to the subtask owning its key group, looks
//! up that key's state (write-back cache in front of RocksDB), calls the
//! function, and marks the state dirty. Functions here are pure: the state is
//! handed in as `&mut Option<S>` (`None` = no state for this key; set it to
//! `None` to clear it), so they are tested with [`KeyedHarness`] without any
//! storage.

use crate::codec::{decode_value, encode_value};
use crate::key::StateKey;
use crate::operator::OperatorError;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The bounds a keyed state value needs: stored with postcard, cached typed.
pub trait StateValue: Serialize + DeserializeOwned + Clone + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + 'static> StateValue for T {}

/// Namespace/value pairs returned by [`KeyedStore::scan`].
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Byte-level namespaced state of the *current key*: what [`MapState`] is
/// built on. The runtime implements it over RocksDB (with a write-back
/// overlay), [`KeyedHarness`] over memory. Namespaces of one key sort
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
        ctx: &mut KeyedContext<'_, (K, O)>,
    ) -> Result<(), OperatorError> {
        let acc = state.get_or_insert_with(|| self.0.create());
        self.0.add(acc, record);
        ctx.emit((key.clone(), self.0.result(acc)));
        Ok(())
    }
}

/// Runs a [`KeyedProcess`] over records with state in memory: the test
/// harness for keyed logic.
pub struct KeyedHarness<K, P: KeyedProcess<K, I, O>, I, O> {
    function: P,
    /// The value state per key after the records fed so far.
    pub state: HashMap<K, P::State>,
    /// Map states: (encoded key, namespace) -> encoded value.
    maps: BTreeMap<(Vec<u8>, Vec<u8>), Vec<u8>>,
    _types: std::marker::PhantomData<fn(I) -> O>,
}

struct HarnessStore<'a> {
    key: Vec<u8>,
    maps: &'a mut BTreeMap<(Vec<u8>, Vec<u8>), Vec<u8>>,
}

impl KeyedStore for HarnessStore<'_> {
    fn get(&mut self, namespace: &[u8]) -> Result<Option<Vec<u8>>, OperatorError> {
        Ok(self.maps.get(&(self.key.clone(), namespace.to_vec())).cloned())
    }
    fn put(&mut self, namespace: &[u8], value: Vec<u8>) -> Result<(), OperatorError> {
        self.maps.insert((self.key.clone(), namespace.to_vec()), value);
        Ok(())
    }
    fn delete(&mut self, namespace: &[u8]) -> Result<(), OperatorError> {
        self.maps.remove(&(self.key.clone(), namespace.to_vec()));
        Ok(())
    }
    fn scan(&mut self, prefix: &[u8]) -> Result<Entries, OperatorError> {
        let start = (self.key.clone(), prefix.to_vec());
        Ok(self
            .maps
            .range(start..)
            .take_while(|((k, ns), _)| *k == self.key && ns.starts_with(prefix))
            .map(|((_, ns), v)| (ns.clone(), v.clone()))
            .collect())
    }
}

impl<K: StateKey, I, O, P: KeyedProcess<K, I, O>> KeyedHarness<K, P, I, O> {
    /// A harness with empty state.
    pub fn new(function: P) -> Self {
        KeyedHarness {
            function,
            state: HashMap::new(),
            maps: BTreeMap::new(),
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
            let mut encoded = Vec::new();
            key.encode_key(&mut encoded);
            let mut store = HarnessStore {
                key: encoded,
                maps: &mut self.maps,
            };
            let mut ctx = KeyedContext::new(&mut out, &mut store);
            self.function
                .process(&key, &mut slot, r, &mut ctx)
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
}
