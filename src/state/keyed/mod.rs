//! The keyed stage: runs a [`KeyedProcess`] with each key's state taken from
//! a typed write-back cache in front of the task's RocksDB instance.
//!
//! Hot keys never touch RocksDB between checkpoints: a hit is one hash
//! lookup, a miss one RocksDB read. The entries changed before a barrier are
//! cloned (typed, not encoded) and handed to the background snapshot, which
//! encodes them; the record path pays only for the clone, and not all at
//! once: see [`Capture`].
//!
//! Map state (byte-level, column family `map`) goes through an ordered
//! overlay of writes since the last barrier; at a barrier the overlay is
//! moved (not copied) to the snapshot and stays readable as a *flushing*
//! layer until the snapshot has written it to RocksDB.

use super::cache::KeyCache;
use super::timers::{key_of, namespace_of, TimerChanges, Timers};
use super::{RocksInstance, SortedValues, TimeDomain};
use crate::checkpoint::manifest::SubtaskState;
use crate::clock::wall_clock_ms;
use crate::error::{Result, WeirError};
use crate::runtime::chain::{Downstream, SnapshotBuilder};
use crate::runtime::task::SnapshotJob;
use rocksdb::WriteBatch;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use weir_operators::{
    decode_value, encode_state_key, encode_value, key_group_of, Barrier, CheckpointId, KeyedContext, KeyedProcess,
    KeyedStore, OperatorError, StateKey, Timestamp,
};

/// Map-state writes not yet in RocksDB: full key -> value (`None` = deleted).
type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Map-state writes since the last barrier, and those of barriers whose
/// snapshot has not yet written them to RocksDB (oldest first).
#[derive(Default)]
struct MapLayers {
    current: Overlay,
    flushing: Vec<Arc<Overlay>>,
}

/// The [`KeyedStore`] of the key being processed.
struct CurrentKeyStore<'a, K> {
    key: &'a K,
    max_parallelism: u16,
    prefix: Vec<u8>,
    layers: &'a mut MapLayers,
    timers: &'a mut Timers,
    processing_timers: &'a mut Timers,
    db: &'a RocksInstance,
}

impl<K: StateKey> CurrentKeyStore<'_, K> {
    /// `key_group | u32 key length | key | namespace`: the length makes a key
    /// that is a prefix of another unambiguous.
    fn full_key(&mut self, namespace: &[u8]) -> Vec<u8> {
        if self.prefix.is_empty() {
            self.prefix.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            self.key.encode_key(&mut self.prefix);
            let len = (self.prefix.len() - 6) as u32;
            let group = key_group_of(&self.prefix[6..], self.max_parallelism);
            self.prefix[..2].copy_from_slice(&group.0.to_be_bytes());
            self.prefix[2..6].copy_from_slice(&len.to_be_bytes());
        }
        let mut k = Vec::with_capacity(self.prefix.len() + namespace.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(namespace);
        k
    }

    fn fail(&self, e: WeirError) -> OperatorError {
        OperatorError(e.to_string())
    }
}

impl<K: StateKey> KeyedStore for CurrentKeyStore<'_, K> {
    fn register_event_timer(&mut self, at: Timestamp, namespace: &[u8]) {
        self.timers.register(self.key, at.0, namespace);
    }

    fn delete_event_timer(&mut self, at: Timestamp, namespace: &[u8]) {
        self.timers.delete(self.key, at.0, namespace);
    }

    fn watermark(&self) -> Timestamp {
        Timestamp(self.timers.now)
    }

    fn register_processing_timer(&mut self, at: Timestamp, namespace: &[u8]) {
        self.processing_timers.register(self.key, at.0, namespace);
    }

    fn delete_processing_timer(&mut self, at: Timestamp, namespace: &[u8]) {
        self.processing_timers.delete(self.key, at.0, namespace);
    }

    fn processing_time(&self) -> Timestamp {
        Timestamp(self.processing_timers.now)
    }

    fn get(&mut self, namespace: &[u8]) -> Result<Option<Vec<u8>>, OperatorError> {
        let k = self.full_key(namespace);
        if let Some(v) = self.layers.current.get(&k) {
            return Ok(v.clone());
        }
        for layer in self.layers.flushing.iter().rev() {
            if let Some(v) = layer.get(&k) {
                return Ok(v.clone());
            }
        }
        self.db.get_map(&k).map_err(|e| self.fail(e))
    }

    fn put(&mut self, namespace: &[u8], value: Vec<u8>) -> Result<(), OperatorError> {
        let k = self.full_key(namespace);
        self.layers.current.insert(k, Some(value));
        Ok(())
    }

    fn delete(&mut self, namespace: &[u8]) -> Result<(), OperatorError> {
        let k = self.full_key(namespace);
        self.layers.current.insert(k, None);
        Ok(())
    }

    fn scan(&mut self, prefix: &[u8]) -> Result<weir_operators::keyed::Entries, OperatorError> {
        let start = self.full_key(prefix);
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = self
            .db
            .scan_map(&start)
            .map_err(|e| self.fail(e))?
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        for layer in self
            .layers
            .flushing
            .iter()
            .map(|l| &**l)
            .chain(std::iter::once(&self.layers.current))
        {
            for (k, v) in layer.range(start.clone()..).take_while(|(k, _)| k.starts_with(&start)) {
                merged.insert(k.clone(), v.clone());
            }
        }
        let skip = self.prefix.len();
        Ok(merged
            .into_iter()
            .filter_map(|(k, v)| Some((k[skip..].to_vec(), v?)))
            .collect())
    }
}

struct Slot<V> {
    value: Option<V>,
    /// The epoch (checkpoint interval) of the last change not yet handed to
    /// a snapshot; `CLEAN` if none.
    changed_in: u32,
    /// The epoch whose capture took the last change (`CLEAN`: none since
    /// it was loaded): once that epoch is written to RocksDB, the entry may
    /// be evicted.
    taken_in: u32,
}

/// The keys a batch misses in the cache, encoded for RocksDB (see
/// [`KeyedStage::load_batch`]).
struct BatchLoads<K> {
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

/// `Slot::changed_in` of an entry with nothing to write.
const CLEAN: u32 = 0;

/// Taking a barrier's changed entries without stopping the record path for
/// it (a stop of 2–3 ms per checkpoint with 100 k changed keys, W2's tail):
/// the barrier only starts a new epoch. The entries changed in the old one
/// are then cloned a slice of the cache at a time after each batch
/// (`CAPTURE_SLOTS`), and copy-on-write: a record about to change an entry
/// of the old epoch not taken yet takes it first. When the last slice is
/// done the entries go to the snapshot, which waits for them on a channel.
struct Capture<K, V> {
    /// The epoch being taken.
    epoch: u32,
    /// The next cache slot to look at.
    next_slot: usize,
    taken: Captured<K, V>,
    deliver: crossbeam_channel::Sender<Captured<K, V>>,
}

/// The entries a capture took: key and value (`None`: deleted).
type Captured<K, V> = Vec<(K, Option<V>)>;

/// Cache slots looked at per step of a [`Capture`] (about 0.5 MB of the
/// table, tens of microseconds).
const CAPTURE_SLOTS: usize = 8192;

/// Cache slots an eviction passes over at most per batch (tens of
/// microseconds; more for batches of over 1024 records, two evictions'
/// worth per record): the table may hold few evictable entries, and a
/// batch must not pay for a scan of all of it.
const EVICT_SCAN_SLOTS: usize = 16384;

/// An eviction takes at most one entry per this many slots it passes, so
/// the cache table stays evenly full (see `KeyCache::evict`).
const EVICT_SPREAD: usize = 8;

/// Write-behind: part-way through a checkpoint interval, the entries changed
/// so far are taken like a barrier's (a new epoch and a [`Capture`]) and
/// written to RocksDB by a background thread, so the barrier's snapshot has
/// only the changes since then to write. W2 (200 k records/s over 100 k
/// keys) changes ~86 k keys a second, and writing them all at the barrier
/// took most of a 66–73 ms checkpoint.
///
/// A slice is only worth it when the keys it writes are not about to change
/// again: with far more changes than changed keys (W1 at millions of records
/// a second over 100 k keys) every key would be written once per slice and
/// again at the barrier, so the slice is skipped.
struct WriteBehind {
    /// Changed entries from which a slice is written (0: never).
    min_entries: usize,
    /// The checkpoint interval (ms; `None`: no periodic checkpoints, no
    /// slices), and the processing time of the last barrier (or of the
    /// start): slices are placed in the interval from there.
    interval_ms: Option<i64>,
    last_barrier_ms: i64,
    /// Slice points of this interval passed so far (`SLICE_POINTS`).
    points_passed: usize,
    /// Entries changed in the current epoch, and changes made in it.
    changed: usize,
    changes: usize,
    /// The task's snapshot thread: a slice is written there, in order with
    /// the snapshots (one started before it sees none of its changes; one
    /// started after it finds them in RocksDB).
    jobs: crossbeam_channel::Sender<SnapshotJob>,
}

/// One piece of state work handed to the snapshot thread (a snapshot or a
/// write-behind slice), counted in `in_flight` until it ends. Dropped
/// without `done` (it failed, panicked, or never ran because the job
/// stopped), it marks the stage failed: the changes it carried are in no
/// later snapshot either.
struct StateWork {
    in_flight: Arc<AtomicUsize>,
    failed: Arc<AtomicBool>,
    done: bool,
}

impl StateWork {
    fn start(in_flight: &Arc<AtomicUsize>, failed: &Arc<AtomicBool>) -> Self {
        in_flight.fetch_add(1, Ordering::AcqRel);
        StateWork {
            in_flight: in_flight.clone(),
            failed: failed.clone(),
            done: false,
        }
    }

    /// The work ended well. (A method, so that a closure calling it owns
    /// the whole guard, not just the flag.)
    fn succeeded(&mut self) {
        self.done = true;
    }
}

impl Drop for StateWork {
    fn drop(&mut self) {
        if !self.done {
            self.failed.store(true, Ordering::Release);
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where in the checkpoint interval slices are taken, in thousandths of it:
/// the last leaves the barrier ~7 % of the interval's changes.
const SLICE_POINTS: [i64; 3] = [500, 800, 930];

/// Changes per changed entry from which a slice is skipped (see [`WriteBehind`]).
const DENSE_CHANGES_PER_ENTRY: usize = 4;

/// A keyed process function bound to its state.
pub(crate) struct KeyedStage<K, I, O, P: KeyedProcess<K, I, O>, F> {
    function: P,
    key_of: F,
    name: String,
    uid: String,
    subtask: usize,
    max_parallelism: u16,
    cache: KeyCache<K, Slot<P::State>>,
    /// The current epoch: changes from now on go into the next snapshot.
    epoch: u32,
    /// A barrier's (or a write-behind slice's) changed entries still being
    /// taken, if any.
    capture: Option<Capture<K, P::State>>,
    write_behind: WriteBehind,
    /// The keys of the batch being processed (computed first, to prefetch).
    batch_keys: Vec<K>,
    capacity: usize,
    db: Arc<RocksInstance>,
    /// Snapshots handed to the background and not finished: while > 0 the
    /// stage must not write to RocksDB (the snapshot would see later state).
    in_flight: Arc<AtomicUsize>,
    /// Set by a snapshot of this stage that failed after its changes were
    /// taken: they are in no later checkpoint either, so the task must fail
    /// (and restart from the last complete checkpoint) rather than go on.
    snapshot_failed: Arc<AtomicBool>,
    /// The newest epoch whose captured entries are written to RocksDB (by
    /// its snapshot or write-behind slice, which run in order).
    durable_epoch: Arc<AtomicU32>,
    /// Where the next eviction looks first (see `evict_if_full`).
    evict_cursor: usize,
    /// Slots passed over by evictions that found no written entry since
    /// `durable_epoch` was last seen at `evict_durable`: once round the
    /// whole table, nothing more can be evicted until it moves.
    evict_passed: usize,
    evict_durable: u32,
    key_buf: Vec<u8>,
    /// Buffers of [`KeyedStage::load_batch`], kept between batches.
    loads: BatchLoads<K>,
    maps: MapLayers,
    timers: Timers,
    processing_timers: Timers,
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
        (write_behind_entries, checkpoint_interval_ms): (usize, Option<i64>),
        snapshot_jobs: crossbeam_channel::Sender<SnapshotJob>,
        db: Arc<RocksInstance>,
        next: Box<dyn Downstream<O>>,
    ) -> Result<Self> {
        // Event time resumes where the restored snapshot left it, so a record
        // late before a restart is late after it too.
        let restored_watermark = db.stored_watermark()?.unwrap_or(i64::MIN);
        let timers = Timers::restored(db.timers(TimeDomain::Event)?, restored_watermark);
        let processing_timers = Timers::restored(db.timers(TimeDomain::Processing)?, wall_clock_ms());
        Ok(KeyedStage {
            function,
            key_of,
            name,
            uid,
            subtask,
            max_parallelism,
            cache: KeyCache::default(),
            epoch: CLEAN + 1,
            capture: None,
            write_behind: WriteBehind {
                min_entries: write_behind_entries,
                interval_ms: checkpoint_interval_ms,
                last_barrier_ms: wall_clock_ms(),
                points_passed: 0,
                changed: 0,
                changes: 0,
                jobs: snapshot_jobs,
            },
            batch_keys: Vec::new(),
            capacity,
            db,
            in_flight: Arc::new(AtomicUsize::new(0)),
            snapshot_failed: Arc::new(AtomicBool::new(false)),
            durable_epoch: Arc::new(AtomicU32::new(CLEAN)),
            evict_cursor: 0,
            evict_passed: 0,
            evict_durable: CLEAN,
            key_buf: Vec::new(),
            loads: BatchLoads::default(),
            maps: MapLayers::default(),
            timers,
            processing_timers,
            out: Vec::new(),
            next,
            _input: PhantomData,
        })
    }

    fn load(&mut self, key: &K) -> Result<Option<P::State>> {
        encode_state_key(key, b"", self.max_parallelism, &mut self.key_buf);
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
    fn insert_loaded(&mut self, key: K, value: Option<P::State>) {
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
        let slot = Slot {
            value,
            changed_in: CLEAN,
            taken_in: CLEAN,
        };
        self.cache.insert(key, slot);
    }

    /// Loads every key of `keys` the cache lacks with one sorted RocksDB
    /// `multi_get`: it looks up the keys of one SST file together, where
    /// single reads would each pay for finding the file, its filter and its
    /// index again.
    fn load_batch(&mut self, keys: &[K]) -> Result<()> {
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

    /// Runs `call` with `key`'s state (loaded into the cache if needed) and
    /// a context for its outputs, map states and timers; marks the state
    /// dirty. `ahead` (starting with `key`, or empty) are the keys to be
    /// processed next: on a cache miss they are loaded together.
    fn with_key<C>(&mut self, key: &K, ahead: &[K], call: C) -> Result<()>
    where
        C: FnOnce(
            &mut P,
            &mut Option<P::State>,
            &mut KeyedContext<'_, O>,
        ) -> std::result::Result<(), weir_operators::OperatorError>,
    {
        if self.cache.get_mut(key).is_none() {
            if ahead.len() > 1 {
                self.load_batch(ahead)?;
            } else {
                let value = self.load(key)?;
                self.insert_loaded(key.clone(), value);
            }
        }
        let Self {
            cache,
            function,
            out,
            name,
            maps,
            timers,
            processing_timers,
            db,
            max_parallelism,
            epoch,
            capture,
            write_behind,
            ..
        } = self;
        let Some(slot) = cache.get_mut(key) else { return Ok(()) };
        if let Some(c) = capture {
            if slot.changed_in == c.epoch {
                // Copy-on-write: the snapshot gets the value as of its barrier.
                c.taken.push((key.clone(), slot.value.clone()));
            }
        }
        write_behind.changes += 1;
        if slot.changed_in != *epoch {
            write_behind.changed += 1;
        }
        slot.changed_in = *epoch;
        let mut store = CurrentKeyStore {
            key,
            max_parallelism: *max_parallelism,
            prefix: Vec::new(),
            layers: maps,
            timers,
            processing_timers,
            db,
        };
        let mut ctx = KeyedContext::new(out, &mut store);
        call(function, &mut slot.value, &mut ctx).map_err(|e| WeirError::Operator {
            operator: name.clone(),
            message: e.0,
        })
    }

    /// An error if a snapshot of this stage failed (see `snapshot_failed`).
    fn check_snapshots(&self) -> Result<()> {
        if self.snapshot_failed.load(Ordering::Acquire) {
            return Err(self.db.state_error(format!(
                "a snapshot of `{}` failed after taking its changes; the job must restart from the last complete checkpoint",
                self.name
            )));
        }
        Ok(())
    }

    /// Takes the next `slots` cache slots of the capture in progress; hands
    /// the entries to the snapshot when the whole cache has been looked at.
    fn advance_capture(&mut self, slots: usize) {
        let Some(c) = self.capture.as_mut() else { return };
        let end = c.next_slot.saturating_add(slots).min(self.cache.slot_count());
        let epoch = c.epoch;
        self.cache.for_each_in(c.next_slot..end, |key, slot| {
            if slot.changed_in == epoch {
                c.taken.push((key.clone(), slot.value.clone()));
                slot.changed_in = CLEAN;
                slot.taken_in = epoch;
            }
        });
        c.next_slot = end;
        if end == self.cache.slot_count() {
            if let Some(done) = self.capture.take() {
                // The snapshot may be gone (job cancelled): nothing to do then.
                let _ = done.deliver.send(done.taken);
            }
        }
    }

    fn finish_capture(&mut self) {
        self.advance_capture(usize::MAX);
    }

    /// Starts a new epoch whose predecessor's changed entries are taken
    /// step by step (see [`Capture`]); returns where they will be delivered.
    fn start_capture(&mut self) -> Result<crossbeam_channel::Receiver<Captured<K, P::State>>> {
        if self.epoch == u32::MAX {
            self.rebase_epochs()?;
        }
        let (deliver, taken) = crossbeam_channel::bounded(1);
        self.capture = Some(Capture {
            epoch: self.epoch,
            next_slot: 0,
            taken: Vec::new(),
            deliver,
        });
        self.epoch += 1;
        self.write_behind.changed = 0;
        self.write_behind.changes = 0;
        Ok(taken)
    }

    /// Before the epoch counter would wrap (after 2^32 barriers and slices),
    /// renumbers from the start so that `taken_in <= durable_epoch` keeps
    /// meaning "written": waits until no state work is in flight (so every
    /// taken entry is written), then the current epoch becomes `CLEAN + 1`.
    fn rebase_epochs(&mut self) -> Result<()> {
        self.wait_for_state_work()?;
        let slots = self.cache.slot_count();
        let current = self.epoch;
        self.cache.for_each_in(0..slots, |_, s| {
            if s.changed_in == current {
                s.changed_in = CLEAN + 1;
            }
            s.taken_in = CLEAN;
        });
        self.epoch = CLEAN + 1;
        self.durable_epoch.store(CLEAN, Ordering::Release);
        self.evict_passed = 0;
        Ok(())
    }

    /// Waits until the snapshot thread has finished this stage's state work
    /// (backpressure: it runs on a CPU this thread leaves free meanwhile).
    fn wait_for_state_work(&mut self) -> Result<()> {
        let mut waited = 0u32;
        while self.in_flight.load(Ordering::Acquire) > 0 {
            self.check_snapshots()?;
            // A snapshot thread gone (the job stops) never finishes the work.
            if waited % 100 == 0
                && self
                    .write_behind
                    .jobs
                    .send(SnapshotJob::Background(Box::new(|| {})))
                    .is_err()
            {
                return Err(WeirError::Cancelled);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
            waited = waited.wrapping_add(1);
        }
        self.check_snapshots()
    }

    /// Writes the entries changed so far behind the record path when the
    /// interval has reached its next slice point (see [`WriteBehind`]).
    fn maybe_write_behind(&mut self) -> Result<()> {
        let wb = &mut self.write_behind;
        let (Some(interval), Some(point)) = (wb.interval_ms, SLICE_POINTS.get(wb.points_passed)) else {
            return Ok(());
        };
        let due = wb.last_barrier_ms.saturating_add(interval * point / 1000);
        if wb.min_entries == 0 || self.capture.is_some() || self.processing_timers.now < due {
            return Ok(());
        }
        // One piece of state work queued at a time: slices must not pile up
        // (each holds its entries) behind a snapshot thread that is behind.
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Ok(());
        }
        wb.points_passed += 1;
        if wb.changed < wb.min_entries || wb.changes >= DENSE_CHANGES_PER_ENTRY * wb.changed {
            return Ok(());
        }
        let epoch = self.epoch;
        let taken = self.start_capture()?;
        let (db, durable, max_parallelism) = (self.db.clone(), self.durable_epoch.clone(), self.max_parallelism);
        // Counted as in flight: no synchronous write-back meanwhile.
        let mut work = StateWork::start(&self.in_flight, &self.snapshot_failed);
        let slice = Box::new(move || {
            let written = taken
                .recv()
                .map_err(|_| db.state_error("the task ended before its changed state was taken"))
                .and_then(|dirty| {
                    db.written_behind.fetch_add(dirty.len() as u64, Ordering::Relaxed);
                    tracing::debug!("{}: writing {} changed entries behind", db.task, dirty.len());
                    let mut batch = WriteBatch::default();
                    let entries = dirty.iter().map(|(k, v)| (k, v.as_ref()));
                    let sorted = encode_values(&db, max_parallelism, dirty.len(), entries, &mut batch)?;
                    drop(dirty); // encoded: memory back before the SST is written
                    db.write(batch)?;
                    db.ingest(sorted)
                });
            match written {
                Ok(()) => {
                    durable.fetch_max(epoch, Ordering::AcqRel);
                    work.succeeded();
                }
                Err(e) => tracing::error!("{}: write-behind failed: {e}", db.task),
            }
        });
        if self.write_behind.jobs.send(SnapshotJob::Background(slice)).is_err() {
            return Err(WeirError::Cancelled);
        }
        Ok(())
    }

    /// Bounds the cache. Over capacity, it evicts entries whose value is in
    /// RocksDB (unchanged since loaded, or written by a snapshot or a
    /// write-behind slice) down to 90 % of it, a part of the table at a
    /// time from a moving cursor. When too few are (most entries changed
    /// since the last write), it writes the changed entries back itself
    /// first: at once when no snapshot is in flight, else when 25 % over,
    /// after waiting for the state work in flight. `batch_len` records
    /// came in since the last call (each may have added an entry).
    fn evict_if_full(&mut self, batch_len: usize) -> Result<()> {
        // A failed snapshot's entries are not in RocksDB: evicting them
        // would read stale values back.
        self.check_snapshots()?;
        if self.capture.is_some() {
            // Slot positions must hold still for the capture, so nothing is
            // evicted meanwhile: over capacity, it takes bigger steps.
            if self.cache.len() <= self.capacity {
                return Ok(());
            }
            self.advance_capture(CAPTURE_SLOTS * 8);
            if self.capture.is_some() {
                return Ok(());
            }
        }
        let idle = self.in_flight.load(Ordering::Acquire) == 0;
        if idle {
            // Every snapshot handed off is in RocksDB now.
            self.maps.flushing.clear();
            if self.maps.current.len() > self.capacity {
                let mut batch = WriteBatch::default();
                self.db.batch_map(&mut batch, &self.maps.current)?;
                self.db.write(batch)?;
                self.maps.current.clear();
            }
        }
        if self.cache.len() <= self.capacity {
            return Ok(());
        }
        let target = self.capacity - self.capacity / 10;
        let durable = self.durable_epoch.load(Ordering::Acquire);
        if durable != self.evict_durable {
            self.evict_durable = durable;
            self.evict_passed = 0;
        }
        // An entry becomes evictable only when the epoch that took it is
        // written: after a whole round of the table without one, scan again
        // only once `durable` moves. Each call passes over a bounded number
        // of slots, so a batch never pays for a scan of the table.
        if self.evict_passed < self.cache.slot_count() {
            let written = move |s: &Slot<P::State>| s.changed_in == CLEAN && s.taken_in <= durable;
            let (before, excess) = (self.cache.len(), self.cache.len() - target);
            // Room to evict at least two entries per record of the batch.
            let scan = EVICT_SCAN_SLOTS.max(batch_len.saturating_mul(2 * EVICT_SPREAD));
            let (cursor, passed) = self.cache.evict(self.evict_cursor, excess, scan, EVICT_SPREAD, written);
            self.evict_cursor = cursor;
            self.evict_passed = match self.cache.len() < before {
                true => 0,
                false => self.evict_passed.saturating_add(passed),
            };
        }
        if self.cache.len() <= self.capacity {
            return Ok(());
        }
        if !idle {
            if self.cache.len() <= self.capacity + self.capacity / 4 {
                return Ok(()); // the snapshot in flight will make entries evictable
            }
            // Far over: wait for the state work in flight rather than grow.
            self.wait_for_state_work()?;
            self.maps.flushing.clear();
        }
        // Too few written entries: write the changed ones back now (many
        // sorted into an SST, no memtable skiplist inserts; a few through
        // the memtable), then evict.
        let changed = |(_, s): &(&K, &Slot<P::State>)| s.changed_in != CLEAN;
        let count = self.cache.iter().filter(changed).count();
        let entries = self.cache.iter().filter(changed).map(|(k, s)| (k, s.value.as_ref()));
        let mut batch = WriteBatch::default();
        let sorted = encode_values(&self.db, self.max_parallelism, count, entries, &mut batch)?;
        self.db.write(batch)?;
        self.db.ingest(sorted)?;
        // In RocksDB now, so in the next snapshot's native checkpoint.
        let slots = self.cache.slot_count();
        self.cache.for_each_in(0..slots, |_, s| {
            s.changed_in = CLEAN;
            s.taken_in = CLEAN;
        });
        self.write_behind.changed = 0;
        self.write_behind.changes = 0;
        let excess = self.cache.len() - target;
        (self.evict_cursor, _) = self
            .cache
            .evict(self.evict_cursor, excess, usize::MAX, EVICT_SPREAD, |_| true);
        self.evict_passed = 0;
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
        self.check_snapshots()?;
        // Processing time as of this batch: one clock read per batch.
        self.processing_timers.now = wall_clock_ms();
        // Keys first, so each lookup can prefetch the cache slot of a key
        // a few records ahead (see `KeyCache`).
        let mut keys = std::mem::take(&mut self.batch_keys);
        keys.extend(batch.iter().map(&self.key_of));
        keys.iter().take(PREFETCH_AHEAD).for_each(|k| self.cache.prefetch(k));
        let mut result = Ok(());
        for (i, record) in batch.drain(..).enumerate() {
            if let Some(ahead) = keys.get(i + PREFETCH_AHEAD) {
                self.cache.prefetch(ahead);
            }
            let key = &keys[i];
            result = self.with_key(key, &keys[i..], |f, state, ctx| f.process(key, state, record, ctx));
            if result.is_err() {
                break;
            }
        }
        let batch_len = keys.len();
        keys.clear();
        self.batch_keys = keys;
        result?;
        self.advance_capture(CAPTURE_SLOTS);
        if !self.out.is_empty() {
            self.next.records(&mut self.out)?;
        }
        self.maybe_write_behind()?;
        self.evict_if_full(batch_len)
    }

    fn watermark(&mut self, watermark: Timestamp) -> Result<()> {
        // Never behind the restored event time (sources may restart lower).
        let watermark = Timestamp(watermark.0.max(self.timers.now));
        self.timers.now = watermark.0;
        if watermark < Timestamp::MAX {
            self.timers.data_watermark = watermark.0;
        }
        // Fire due timers in time order; a timer registered while firing fires too if due.
        while let Some((at, timer)) = self.timers.pop_due(watermark.0) {
            if let Some(ahead) = self
                .timers
                .peek_firing(PREFETCH_AHEAD)
                .and_then(|t| K::decode_key(key_of(t)))
            {
                self.cache.prefetch(&ahead);
            }
            let key = K::decode_key(key_of(&timer)).ok_or_else(|| {
                self.db
                    .state_error(format!("a timer of `{}` has an undecodable key", self.name))
            })?;
            self.with_key(&key, &[], |f, state, ctx| {
                f.on_timer(&key, state, Timestamp(at), namespace_of(&timer), ctx)
            })?;
        }
        if !self.out.is_empty() {
            self.next.records(&mut self.out)?;
        }
        self.advance_capture(CAPTURE_SLOTS);
        self.next.watermark(watermark)
    }

    fn processing_time(&mut self, now_ms: i64) -> Result<()> {
        self.processing_timers.now = now_ms;
        while let Some((at, timer)) = self.processing_timers.pop_due(now_ms) {
            let key = K::decode_key(key_of(&timer)).ok_or_else(|| {
                self.db.state_error(format!(
                    "a processing-time timer of `{}` has an undecodable key",
                    self.name
                ))
            })?;
            self.with_key(&key, &[], |f, state, ctx| {
                f.on_processing_timer(&key, state, Timestamp(at), namespace_of(&timer), ctx)
            })?;
        }
        if !self.out.is_empty() {
            self.next.records(&mut self.out)?;
        }
        self.advance_capture(CAPTURE_SLOTS);
        self.next.processing_time(now_ms)
    }

    fn next_processing_timer(&self) -> Option<i64> {
        // A capture in progress asks for a call right away, so it finishes
        // while the input is idle too.
        let own = match self.capture {
            Some(_) => Some(i64::MIN),
            None => self.processing_timers.next_time(),
        };
        match (own, self.next.next_processing_timer()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn flush(&mut self) -> Result<()> {
        self.advance_capture(CAPTURE_SLOTS);
        self.next.flush()
    }

    fn latency_marker(&mut self, emitted: std::time::Instant) -> Result<()> {
        self.next.latency_marker(emitted)
    }

    fn barrier(&mut self, barrier: Barrier, snap: &mut SnapshotBuilder) -> Result<()> {
        self.check_snapshots()?;
        // The previous capture ends before this barrier's begins (rare: a
        // whole interval is normally enough for it).
        self.finish_capture();
        let epoch = self.epoch;
        let taken = self.start_capture()?;
        self.write_behind.last_barrier_ms = wall_clock_ms();
        self.write_behind.points_passed = 0;
        if barrier.then_stop {
            self.finish_capture(); // no record follows to take it step by step
        }
        let (db, failed, durable, max_parallelism, id) = (
            self.db.clone(),
            self.snapshot_failed.clone(),
            self.durable_epoch.clone(),
            self.max_parallelism,
            barrier.id,
        );
        let map_writes = Arc::new(std::mem::take(&mut self.maps.current));
        let timer_changes = self.timers.take_changes();
        let processing_timer_changes = self.processing_timers.take_changes();
        let watermark = self.timers.data_watermark;
        self.maps.flushing.push(map_writes.clone());
        let mut work = StateWork::start(&self.in_flight, &self.snapshot_failed);
        snap.pending.push((
            self.uid.clone(),
            self.subtask,
            Box::new(move || {
                let timers = [
                    (TimeDomain::Event, timer_changes),
                    (TimeDomain::Processing, processing_timer_changes),
                ];
                // A failed write-behind slice lost changes this snapshot would need.
                let result = if failed.load(Ordering::Acquire) {
                    Err(db.state_error("an earlier write-behind of this task failed"))
                } else {
                    taken
                        .recv()
                        .map_err(|_| db.state_error("the task ended before its changed state was taken"))
                        .and_then(|dirty| {
                            write_snapshot(&db, id, max_parallelism, dirty, &map_writes, &timers, watermark)
                        })
                };
                if result.is_ok() {
                    durable.fetch_max(epoch, Ordering::AcqRel);
                    work.succeeded();
                }
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
        self.finish_capture();
        self.next.end()
    }
}

/// How many records ahead the record path prefetches a key's cache slot:
/// enough to cover a memory access with the work of the records between.
const PREFETCH_AHEAD: usize = 8;

/// From this many changed keys on, a snapshot writes them into an SST for
/// ingestion instead of through the memtable.
const INGEST_AT_LEAST: usize = 4096;

fn write_snapshot<K: StateKey, V: serde::Serialize>(
    db: &RocksInstance,
    id: CheckpointId,
    max_parallelism: u16,
    dirty: Vec<(K, Option<V>)>,
    map_writes: &Overlay,
    timers: &[(TimeDomain, TimerChanges)],
    watermark: i64,
) -> Result<SubtaskState> {
    let mut batch = WriteBatch::default();
    db.batch_map(&mut batch, map_writes)?;
    for (domain, changes) in timers {
        db.batch_timers(&mut batch, *domain, changes)?;
    }
    if watermark > i64::MIN {
        db.batch_watermark(&mut batch, watermark)?;
    }
    let entries = dirty.iter().map(|(k, v)| (k, v.as_ref()));
    let sorted = encode_values(db, max_parallelism, dirty.len(), entries, &mut batch)?;
    drop(dirty); // encoded: memory back before the SST is written
    db.snapshot(id, batch, sorted).map(SubtaskState::Rocks)
}

/// Encodes changed value-state entries for RocksDB: many go into an SST
/// (see [`RocksInstance::ingest`], returned), a few are cheaper through the
/// memtable (`batch`).
fn encode_values<'a, K: StateKey + 'a, V: serde::Serialize + 'a>(
    db: &RocksInstance,
    max_parallelism: u16,
    count: usize,
    dirty: impl Iterator<Item = (&'a K, Option<&'a V>)>,
    batch: &mut WriteBatch,
) -> Result<SortedValues> {
    let (mut key_buf, mut value_buf) = (Vec::new(), Vec::new());
    let mut sorted = SortedValues::default();
    let ingest = count >= INGEST_AT_LEAST;
    for (key, value) in dirty {
        encode_state_key(key, b"", max_parallelism, &mut key_buf);
        if let Some(v) = value {
            value_buf.clear();
            encode_value(v, &mut value_buf).map_err(|e| db.state_error(e))?;
        }
        let added = match (value, ingest) {
            (Some(_), true) => sorted.put(&key_buf, &value_buf),
            (None, true) => sorted.delete(&key_buf),
            (Some(_), false) => {
                batch.put(&key_buf, &value_buf);
                true
            }
            (None, false) => {
                batch.delete(&key_buf);
                true
            }
        };
        if !added {
            return Err(db.state_error("a state key or value of 4 GiB or more cannot be stored"));
        }
    }
    Ok(sorted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_work_that_does_not_end_well_fails_the_stage_and_is_no_longer_in_flight() {
        let (in_flight, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let mut ok = StateWork::start(&in_flight, &failed);
        let dropped = StateWork::start(&in_flight, &failed);
        assert_eq!(in_flight.load(Ordering::Acquire), 2);
        // As the snapshot thread runs it: a boxed `FnOnce`, its captures dropped after the call.
        let job: Box<dyn FnOnce() + Send> = Box::new(move || ok.succeeded());
        job();
        assert_eq!(in_flight.load(Ordering::Acquire), 1);
        assert!(!failed.load(Ordering::Acquire), "work that ended well fails nothing");
        // A job dropped unrun (or panicking, or failing) marks the stage failed.
        drop(Box::new(move || drop(dropped)) as Box<dyn FnOnce() + Send>);
        assert_eq!(in_flight.load(Ordering::Acquire), 0);
        assert!(failed.load(Ordering::Acquire));
    }
}
