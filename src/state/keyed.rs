//! The keyed stage: runs a [`KeyedProcess`] with each key's state taken from
//! a typed write-back cache in front of the task's RocksDB instance.
//!
//! Hot keys never touch RocksDB between checkpoints: a hit is one hash
//! lookup, a miss one RocksDB read. At a barrier the dirty entries are cloned
//! (typed, not encoded) and handed to the background snapshot, which encodes
//! them into one `WriteBatch`; the record path pays only for the clone.

use super::RocksInstance;
use crate::checkpoint::manifest::SubtaskState;
use crate::error::{Result, WeirError};
use crate::runtime::chain::{Downstream, SnapshotBuilder};
use crate::runtime::fxhash::FxBuildHasher;
use rocksdb::WriteBatch;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use weir_operators::{
    decode_value, encode_state_key, encode_value, Barrier, CheckpointId, KeyedProcess, StateKey, Timestamp,
};

struct Slot<V> {
    value: Option<V>,
    dirty: bool,
}

/// A keyed process function bound to its state.
pub(crate) struct KeyedStage<K, I, O, P: KeyedProcess<K, I, O>, F> {
    function: P,
    key_of: F,
    name: String,
    uid: String,
    subtask: usize,
    max_parallelism: u16,
    cache: HashMap<K, Slot<P::State>, FxBuildHasher>,
    capacity: usize,
    db: Arc<RocksInstance>,
    /// Snapshots handed to the background and not finished: while > 0 the
    /// stage must not write to RocksDB (the snapshot would see later state).
    in_flight: Arc<AtomicUsize>,
    key_buf: Vec<u8>,
    out: Vec<O>,
    next: Box<dyn Downstream<O>>,
    _input: PhantomData<fn(I)>,
}

impl<K, I, O, P, F> KeyedStage<K, I, O, P, F>
where
    K: StateKey,
    P: KeyedProcess<K, I, O>,
{
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        function: P,
        key_of: F,
        name: String,
        uid: String,
        subtask: usize,
        max_parallelism: u16,
        capacity: usize,
        db: Arc<RocksInstance>,
        next: Box<dyn Downstream<O>>,
    ) -> Self {
        KeyedStage {
            function,
            key_of,
            name,
            uid,
            subtask,
            max_parallelism,
            cache: HashMap::with_hasher(FxBuildHasher::default()),
            capacity,
            db,
            in_flight: Arc::new(AtomicUsize::new(0)),
            key_buf: Vec::new(),
            out: Vec::new(),
            next,
            _input: PhantomData,
        }
    }

    fn load(&mut self, key: &K) -> Result<Option<P::State>> {
        encode_state_key(key, b"", self.max_parallelism, &mut self.key_buf);
        match self.db.get(&self.key_buf)? {
            None => Ok(None),
            Some(bytes) => decode_value(&bytes).map(Some).map_err(|e| {
                self.db
                    .state_error(format!("cannot decode state of operator `{}`: {e}", self.name))
            }),
        }
    }

    /// Bounds the cache: when it is over capacity and no snapshot is in
    /// flight, write the dirty entries to RocksDB and start over.
    fn evict_if_full(&mut self) -> Result<()> {
        if self.cache.len() <= self.capacity || self.in_flight.load(Ordering::Acquire) > 0 {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        let mut value_buf = Vec::new();
        for (key, slot) in self.cache.iter().filter(|(_, s)| s.dirty) {
            encode_state_key(key, b"", self.max_parallelism, &mut self.key_buf);
            match &slot.value {
                Some(v) => {
                    value_buf.clear();
                    encode_value(v, &mut value_buf).map_err(|e| self.db.state_error(e))?;
                    batch.put(&self.key_buf, &value_buf);
                }
                None => batch.delete(&self.key_buf),
            }
        }
        self.db.write(batch)?;
        self.cache.clear();
        Ok(())
    }
}

impl<K, I, O, P, F> Downstream<I> for KeyedStage<K, I, O, P, F>
where
    K: StateKey,
    I: Send,
    O: Send,
    P: KeyedProcess<K, I, O>,
    F: Fn(&I) -> K + Send,
{
    fn records(&mut self, batch: &mut Vec<I>) -> Result<()> {
        for record in batch.drain(..) {
            let key = (self.key_of)(&record);
            if !self.cache.contains_key(&key) {
                let value = self.load(&key)?;
                self.cache.insert(key.clone(), Slot { value, dirty: false });
            }
            let Self {
                cache,
                function,
                out,
                name,
                ..
            } = self;
            let Some(slot) = cache.get_mut(&key) else {
                continue;
            };
            slot.dirty = true;
            if let Err(e) = function.process(&key, &mut slot.value, record, out) {
                return Err(WeirError::Operator {
                    operator: name.clone(),
                    message: e.0,
                });
            }
        }
        if !self.out.is_empty() {
            self.next.records(&mut self.out)?;
        }
        self.evict_if_full()
    }

    fn watermark(&mut self, watermark: Timestamp) -> Result<()> {
        self.next.watermark(watermark)
    }

    fn flush(&mut self) -> Result<()> {
        self.next.flush()
    }

    fn barrier(&mut self, barrier: Barrier, snap: &mut SnapshotBuilder) -> Result<()> {
        let dirty: Vec<(K, Option<P::State>)> = self
            .cache
            .iter_mut()
            .filter(|(_, s)| s.dirty)
            .map(|(k, s)| {
                s.dirty = false;
                (k.clone(), s.value.clone())
            })
            .collect();
        let (db, in_flight, max_parallelism, id) = (
            self.db.clone(),
            self.in_flight.clone(),
            self.max_parallelism,
            barrier.id,
        );
        in_flight.fetch_add(1, Ordering::AcqRel);
        snap.pending.push((
            self.uid.clone(),
            self.subtask,
            Box::new(move || {
                let result = write_snapshot(&db, id, max_parallelism, dirty);
                in_flight.fetch_sub(1, Ordering::AcqRel);
                result
            }),
        ));
        self.next.barrier(barrier, snap)
    }

    fn checkpoint_complete(&mut self, id: CheckpointId) -> Result<()> {
        self.next.checkpoint_complete(id)
    }

    fn checkpoint_aborted(&mut self, id: CheckpointId) -> Result<()> {
        self.next.checkpoint_aborted(id)
    }

    fn end(&mut self) -> Result<()> {
        self.next.end()
    }
}

fn write_snapshot<K: StateKey, V: serde::Serialize>(
    db: &RocksInstance,
    id: CheckpointId,
    max_parallelism: u16,
    dirty: Vec<(K, Option<V>)>,
) -> Result<SubtaskState> {
    let mut batch = WriteBatch::default();
    let (mut key_buf, mut value_buf) = (Vec::new(), Vec::new());
    for (key, value) in dirty {
        encode_state_key(&key, b"", max_parallelism, &mut key_buf);
        match value {
            Some(v) => {
                value_buf.clear();
                encode_value(&v, &mut value_buf).map_err(|e| db.state_error(e))?;
                batch.put(&key_buf, &value_buf);
            }
            None => batch.delete(&key_buf),
        }
    }
    db.snapshot(id, batch).map(SubtaskState::Rocks)
}
