//! Reading value state from RocksDB into the cache: one key at a time, or
//! every missing key of a batch with one sorted `multi_get`.

use super::capture::Slot;
use super::KeyedStage;
use crate::error::Result;
use weir_operators::{decode_value, encode_state_key, KeyedProcess, StateKey};

/// The keys a batch misses in the cache, encoded for RocksDB (see
/// [`KeyedStage::load_batch`]); kept between batches for their buffers.
pub(super) struct BatchLoads<K> {
    keys: Vec<K>,
    /// The encoded keys, one after another; `spans[i]` is `keys[i]`'s.
    arena: Vec<u8>,
    spans: Vec<std::ops::Range<usize>>,
    /// Indices into `keys` in the byte order of their encoding, once each.
    order: Vec<usize>,
}

impl<K> Default for BatchLoads<K> {
    fn default() -> Self {
        BatchLoads {
            keys: Vec::new(),
            arena: Vec::new(),
            spans: Vec::new(),
            order: Vec::new(),
        }
    }
}

impl<K> BatchLoads<K> {
    fn clear(&mut self) {
        self.keys.clear();
        self.arena.clear();
        self.spans.clear();
        self.order.clear();
    }
}

impl<K, I, O, P, F> KeyedStage<K, I, O, P, F>
where
    K: StateKey,
    P: KeyedProcess<K, I, O>,
{
    /// Reads `key`'s state from RocksDB.
    pub(super) fn load(&mut self, key: &K) -> Result<Option<P::State>> {
        encode_state_key(key, b"", self.max_parallelism, &mut self.key_buf);
        crate::stats::bump(&self.stats.state_reads, 1);
        let bytes = self.db.get(&self.key_buf)?;
        self.decode_state(bytes.as_deref())
    }

    /// The state stored as `bytes` (`None`: no state).
    fn decode_state(&self, bytes: Option<&[u8]>) -> Result<Option<P::State>> {
        bytes
            .map(|bytes| {
                decode_value(bytes).map_err(|e| {
                    self.db
                        .state_error(format!("cannot decode state of operator `{}`: {e}", self.name))
                })
            })
            .transpose()
    }

    /// Puts a value just read from RocksDB into the cache.
    pub(super) fn insert_loaded(&mut self, key: K, value: Option<P::State>) {
        if self.cache.grows_on_insert() {
            // Growing moves every entry: a capture cannot go on across it.
            self.finish_capture();
            tracing::debug!(
                "{}: the state cache grows past {} entries (capacity {})",
                self.name,
                self.cache.len(),
                self.capacity
            );
        }
        self.cache.insert(key, Slot::loaded(value));
    }

    /// Loads every key of `keys` the cache lacks with one sorted RocksDB
    /// `multi_get`: it looks up the keys of one SST file together, where
    /// single reads would each pay for finding the file, its filter and its
    /// index again.
    pub(super) fn load_batch(&mut self, keys: &[K]) -> Result<()> {
        let mut loads = std::mem::take(&mut self.loads);
        loads.clear();
        for key in keys {
            if self.cache.get_mut(key).is_none() {
                encode_state_key(key, b"", self.max_parallelism, &mut self.key_buf);
                let start = loads.arena.len();
                loads.arena.extend_from_slice(&self.key_buf);
                loads.spans.push(start..loads.arena.len());
                loads.keys.push(key.clone());
            }
        }
        let BatchLoads {
            keys: missing,
            arena,
            spans,
            order,
        } = &mut loads;
        crate::stats::bump(&self.stats.state_reads, spans.len() as u64);
        order.extend(0..spans.len());
        order.sort_unstable_by(|&a, &b| arena[spans[a].clone()].cmp(&arena[spans[b].clone()]));
        order.dedup_by(|a, b| arena[spans[*a].clone()] == arena[spans[*b].clone()]);
        let found = self.db.multi_get(order.iter().map(|&i| &arena[spans[i].clone()]))?;
        // Decoded first: the pinned values borrow the instance the inserts change.
        let decoded = found
            .iter()
            .map(|bytes| self.decode_state(bytes.as_deref()))
            .collect::<Result<Vec<_>>>()?;
        drop(found);
        for (&i, value) in order.iter().zip(decoded) {
            self.insert_loaded(missing[i].clone(), value);
        }
        self.loads = loads;
        Ok(())
    }
}
