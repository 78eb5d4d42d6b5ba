//! [`KeyedHarness`]: runs a [`KeyedProcess`] with its state, map states and
//! timers in memory, the test bench for keyed logic; it also runs weir's own
//! state timers ([`crate::state_types::fire_state_timer`]) as the runtime does.

use crate::key::StateKey;
use crate::keyed::{Entries, KeyedContext, KeyedProcess, KeyedStore};
use crate::message::Timestamp;
use crate::operator::OperatorError;
use std::collections::{BTreeMap, HashMap};

/// What a [`KeyedHarness`] keeps, encoded as a checkpoint holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct HarnessSnapshot {
    values: Vec<(Vec<u8>, Vec<u8>)>,
    maps: BTreeMap<(Vec<u8>, Vec<u8>), Vec<u8>>,
    timers: std::collections::BTreeSet<(i64, Vec<u8>, Vec<u8>)>,
    processing_timers: std::collections::BTreeSet<(i64, Vec<u8>, Vec<u8>)>,
    watermark: Timestamp,
    processing_time: Timestamp,
}

/// Runs a [`KeyedProcess`] over records with state in memory: the test
/// harness for keyed logic.
pub struct KeyedHarness<K, P: KeyedProcess<K, I, O>, I, O> {
    function: P,
    /// The value state per key after the records fed so far.
    pub state: HashMap<K, P::State>,
    /// Map states: (encoded key, namespace) -> encoded value.
    maps: BTreeMap<(Vec<u8>, Vec<u8>), Vec<u8>>,
    /// Event-time timers: (time, encoded key, namespace).
    timers: std::collections::BTreeSet<(i64, Vec<u8>, Vec<u8>)>,
    /// Processing-time timers, likewise.
    processing_timers: std::collections::BTreeSet<(i64, Vec<u8>, Vec<u8>)>,
    watermark: Timestamp,
    processing_time: Timestamp,
    _types: std::marker::PhantomData<fn(I) -> O>,
}

struct HarnessStore<'a> {
    key: Vec<u8>,
    maps: &'a mut BTreeMap<(Vec<u8>, Vec<u8>), Vec<u8>>,
    timers: &'a mut std::collections::BTreeSet<(i64, Vec<u8>, Vec<u8>)>,
    processing_timers: &'a mut std::collections::BTreeSet<(i64, Vec<u8>, Vec<u8>)>,
    watermark: Timestamp,
    processing_time: Timestamp,
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
    fn register_event_timer(&mut self, at: Timestamp, namespace: &[u8]) {
        self.timers.insert((at.0, self.key.clone(), namespace.to_vec()));
    }
    fn delete_event_timer(&mut self, at: Timestamp, namespace: &[u8]) {
        self.timers.remove(&(at.0, self.key.clone(), namespace.to_vec()));
    }
    fn watermark(&self) -> Timestamp {
        self.watermark
    }
    fn register_processing_timer(&mut self, at: Timestamp, namespace: &[u8]) {
        self.processing_timers
            .insert((at.0, self.key.clone(), namespace.to_vec()));
    }
    fn delete_processing_timer(&mut self, at: Timestamp, namespace: &[u8]) {
        self.processing_timers
            .remove(&(at.0, self.key.clone(), namespace.to_vec()));
    }
    fn processing_time(&self) -> Timestamp {
        self.processing_time
    }
}

impl<K: StateKey, I, O, P: KeyedProcess<K, I, O>> KeyedHarness<K, P, I, O> {
    /// A harness with empty state.
    pub fn new(function: P) -> Self {
        KeyedHarness {
            function,
            state: HashMap::new(),
            maps: BTreeMap::new(),
            timers: Default::default(),
            processing_timers: Default::default(),
            watermark: Timestamp::MIN,
            processing_time: Timestamp(0),
            _types: std::marker::PhantomData,
        }
    }

    /// The event-time timers registered and not fired: (key, time, namespace),
    /// in time order.
    pub fn event_timers(&self) -> Vec<(K, Timestamp, Vec<u8>)> {
        Self::decoded(&self.timers)
    }

    /// How many entries the keys' map states and named states (value, list,
    /// TTL) hold together, not counting the function's own value state: to
    /// test that state is cleaned up.
    pub fn map_state_entries(&self) -> usize {
        self.maps.len()
    }

    /// The processing-time timers registered and not fired, likewise.
    pub fn processing_timers(&self) -> Vec<(K, Timestamp, Vec<u8>)> {
        Self::decoded(&self.processing_timers)
    }

    fn decoded(timers: &std::collections::BTreeSet<(i64, Vec<u8>, Vec<u8>)>) -> Vec<(K, Timestamp, Vec<u8>)> {
        timers
            .iter()
            .filter_map(|(at, key, ns)| Some((K::decode_key(key)?, Timestamp(*at), ns.clone())))
            .collect()
    }

    /// Everything the function keeps, encoded with the checkpoint codec: what
    /// a checkpoint would hold. Restore it with [`KeyedHarness::restore`] to
    /// test that state survives a restart (and that it encodes at all).
    ///
    /// # Errors
    /// A value state that does not encode.
    pub fn snapshot(&self) -> Result<HarnessSnapshot, OperatorError> {
        let mut values = Vec::with_capacity(self.state.len());
        for (k, v) in &self.state {
            let (mut key, mut value) = (Vec::new(), Vec::new());
            k.encode_key(&mut key);
            crate::codec::encode_value(v, &mut value)?;
            values.push((key, value));
        }
        values.sort();
        Ok(HarnessSnapshot {
            values,
            maps: self.maps.clone(),
            timers: self.timers.clone(),
            processing_timers: self.processing_timers.clone(),
            watermark: self.watermark,
            processing_time: self.processing_time,
        })
    }

    /// A harness running `function` from `snapshot` (a restart).
    ///
    /// # Errors
    /// A key or value state that does not decode.
    pub fn restore(function: P, snapshot: &HarnessSnapshot) -> Result<Self, OperatorError> {
        let mut harness = Self::new(function);
        for (key, value) in &snapshot.values {
            let k = K::decode_key(key).ok_or_else(|| OperatorError("undecodable key in the snapshot".into()))?;
            harness.state.insert(k, crate::codec::decode_value(value)?);
        }
        harness.maps = snapshot.maps.clone();
        harness.timers = snapshot.timers.clone();
        harness.processing_timers = snapshot.processing_timers.clone();
        harness.watermark = snapshot.watermark;
        harness.processing_time = snapshot.processing_time;
        Ok(harness)
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
                timers: &mut self.timers,
                processing_timers: &mut self.processing_timers,
                watermark: self.watermark,
                processing_time: self.processing_time,
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

    /// Advances event time to `watermark`, firing due timers in time order,
    /// and returns their outputs.
    ///
    /// # Panics
    /// If the function fails or a timer's key does not decode (test helper).
    pub fn advance_watermark(&mut self, watermark: Timestamp) -> Vec<O> {
        self.watermark = watermark;
        self.fire(watermark, false)
    }

    /// Advances processing time to `now`, firing due processing-time timers
    /// in time order, and returns their outputs.
    ///
    /// # Panics
    /// If the function fails or a timer's key does not decode (test helper).
    pub fn advance_processing_time(&mut self, now: Timestamp) -> Vec<O> {
        self.processing_time = now;
        self.fire(now, true)
    }

    /// Sets processing time to `now` without firing timers: a timer that
    /// runs late, as on a busy task, for the records fed meanwhile.
    pub fn set_processing_time_without_firing(&mut self, now: Timestamp) {
        self.processing_time = now;
    }

    #[allow(clippy::expect_used)]
    fn fire(&mut self, until: Timestamp, processing: bool) -> Vec<O> {
        let mut out = Vec::new();
        loop {
            let set = if processing {
                &mut self.processing_timers
            } else {
                &mut self.timers
            };
            let Some(first) = set.first().cloned() else { break };
            if first.0 > until.0 {
                break;
            }
            set.remove(&first);
            let (at, encoded, namespace) = first;
            let key = K::decode_key(&encoded).expect("timer key decodes");
            let mut slot = self.state.remove(&key);
            let mut store = HarnessStore {
                key: encoded,
                maps: &mut self.maps,
                timers: &mut self.timers,
                processing_timers: &mut self.processing_timers,
                watermark: self.watermark,
                processing_time: self.processing_time,
            };
            let mut ctx = KeyedContext::new(&mut out, &mut store);
            let fired = if let Some(cleaned) = crate::state_types::fire_state_timer(&namespace, Timestamp(at), &mut ctx)
            {
                cleaned
            } else if processing {
                self.function
                    .on_processing_timer(&key, &mut slot, Timestamp(at), &namespace, &mut ctx)
            } else {
                self.function
                    .on_timer(&key, &mut slot, Timestamp(at), &namespace, &mut ctx)
            };
            fired.expect("timer failed");
            if let Some(s) = slot {
                self.state.insert(key, s);
            }
        }
        out
    }
}
