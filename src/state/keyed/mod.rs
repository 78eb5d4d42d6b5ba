//! The keyed stage: runs a [`KeyedProcess`] with each key's state taken from
//! a typed write-back cache in front of the task's RocksDB instance.
//!
//! Hot keys never touch RocksDB between checkpoints: a hit is one hash
//! lookup, a miss one RocksDB read ([`load`]). Five mechanisms share the
//! cache, each in its own file:
//!
//! - [`capture`]: epochs, and taking the entries changed before a barrier
//!   (cloned, typed, not encoded) without stopping the record path;
//! - [`write_behind`]: writing changed entries part-way through an interval,
//!   so the barrier's snapshot has less to write;
//! - [`evict`]: bounding the cache;
//! - [`overlay`]: map state, an ordered overlay of writes since the last
//!   barrier over layers still being flushed, over RocksDB;
//! - [`encode`]: the snapshot's encoding, off the record path;
//!
//! and [`work`] counts the state work handed to the task's snapshot thread.
//!
//! # Invariants
//!
//! 1. **Epochs.** Every change is made in the current `epoch`, which grows
//!    by one at each barrier and write-behind slice (`CLEAN`, 0, is no
//!    epoch). A cache entry's `changed_in` is `CLEAN`, the current epoch, or
//!    the epoch of the capture in progress; an entry is never changed in an
//!    epoch that has already been captured.
//! 2. **Capture yields barrier-time values.** A capture of epoch `e`
//!    delivers every entry changed in `e` exactly once, with its value as
//!    of the barrier: the steps take entries still changed in `e`, and a
//!    record about to change such an entry takes it first (copy-on-write).
//!    Slot positions hold still while it runs: nothing is evicted, and a
//!    cache that must grow finishes the capture first. One capture at a
//!    time: a barrier finishes the previous one before starting its own.
//! 3. **Durability in order.** Snapshots and write-behind slices run on the
//!    task's snapshot thread in the order they were handed off;
//!    `durable_epoch` is the newest epoch whose entries are in RocksDB and
//!    only grows (until a rebase). While any of that work is in flight the
//!    record path writes nothing to RocksDB (a snapshot would see later
//!    state), and the map layers it carries stay readable until then.
//! 4. **Write-behind.** At most one slice is queued at a time, never while
//!    a capture is in progress; it is a capture like a barrier's, so it
//!    moves the epoch and obeys 2 and 3.
//! 5. **Eviction only of durable values.** An entry is evicted only when
//!    its value is in RocksDB: unchanged since its last capture, and that
//!    capture's epoch durable (`taken_in <= durable_epoch`), or just
//!    written back by the stage itself with nothing in flight.
//! 6. **A failed state write fails the stage.** State work that does not
//!    end well (fails, panics or never runs) carried changes no later
//!    snapshot has; it sets `snapshot_failed`, and from then on the next
//!    batch or barrier fails with [`WeirError::State`] (retryable: the job
//!    restarts from its last complete checkpoint), and nothing is evicted.
//! 7. **Epoch rebase keeps the order.** Before the epoch counter wraps, the
//!    stage waits for all state work (every taken entry is then durable),
//!    renumbers the current epoch to `CLEAN + 1` and the durable epoch to
//!    `CLEAN`: changed entries stay changed and go into the next capture,
//!    written ones stay evictable.
//! 8. **Truthful errors.** A state failure under user code (a map-state
//!    read) reaches the task as that [`WeirError::State`], even when user
//!    code returns its own error for it, never as [`WeirError::Operator`].

mod capture;
mod encode;
mod evict;
mod load;
mod overlay;
#[cfg(test)]
mod tests;
mod work;
mod write_behind;

use super::cache::KeyCache;
use super::timers::{key_of, namespace_of, Timers};
use super::{RocksInstance, TimeDomain};
use crate::clock::wall_clock_ms;
use crate::error::{Result, WeirError};
use crate::task::chain::{Downstream, SnapshotBuilder};
use crate::task::run::SnapshotJob;
use capture::{Capture, Slot, CAPTURE_SLOTS, CLEAN};
use encode::write_snapshot;
use evict::EvictScan;
use load::BatchLoads;
use overlay::{CurrentKeyStore, MapLayers};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use weir_operators::state_types::fire_state_timer;
use weir_operators::{Barrier, CheckpointId, KeyedContext, KeyedProcess, StateKey, Timestamp};
use work::StateWork;
use write_behind::{SlicePolicy, WriteBehind};

/// How a [`KeyedStage`] is set up: what it is called and how much it keeps
/// in memory.
#[derive(Debug, Clone)]
pub(crate) struct KeyedStageConfig {
    /// Names the stage in errors and logs (`<operator>[<subtask>]`).
    pub(crate) name: String,
    /// The operator's uid: its state's name in checkpoints.
    pub(crate) uid: String,
    /// The subtask this stage runs in.
    pub(crate) subtask: usize,
    /// The job's number of key groups.
    pub(crate) max_parallelism: u16,
    /// Entries the write-back cache holds before it evicts.
    pub(crate) cache_entries: usize,
    /// Changed entries from which a write-behind slice is written (0: never).
    pub(crate) write_behind_entries: usize,
    /// The checkpoint interval (`None`: no periodic checkpoints, so no
    /// write-behind slices).
    pub(crate) checkpoint_interval_ms: Option<i64>,
    /// The task's counters: keys read from RocksDB (write-back cache
    /// misses) and the state size at each snapshot, for the status.
    pub(crate) stats: Arc<crate::stats::TaskStats>,
}

/// A keyed process function bound to its state.
pub(crate) struct KeyedStage<K, I, O, P: KeyedProcess<K, I, O>, F> {
    function: P,
    key_of: F,
    name: String,
    uid: String,
    subtask: usize,
    max_parallelism: u16,
    /// The task's counters (cache misses, state size).
    stats: Arc<crate::stats::TaskStats>,
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
    /// Where evictions look (see `evict_if_full`).
    evict_scan: EvictScan,
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
    /// A stage running `function` on the records keyed by `key_of`, with
    /// its state in `db` (restored timers and event time are read from it);
    /// its state work goes to the task's snapshot thread (`snapshot_jobs`).
    ///
    /// # Errors
    /// [`WeirError::State`] when the restored timers or event time cannot
    /// be read.
    pub(crate) fn new(
        function: P,
        key_of: F,
        config: KeyedStageConfig,
        snapshot_jobs: crossbeam_channel::Sender<SnapshotJob>,
        db: Arc<RocksInstance>,
        next: Box<dyn Downstream<O>>,
    ) -> Result<Self> {
        let KeyedStageConfig {
            name,
            uid,
            subtask,
            max_parallelism,
            cache_entries,
            write_behind_entries,
            checkpoint_interval_ms,
            stats,
        } = config;
        stats.keyed.store(true, Ordering::Relaxed);
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
            stats,
            cache: KeyCache::default(),
            epoch: CLEAN + 1,
            capture: None,
            write_behind: WriteBehind {
                policy: SlicePolicy::new(write_behind_entries, checkpoint_interval_ms, wall_clock_ms()),
                jobs: snapshot_jobs,
            },
            batch_keys: Vec::new(),
            capacity: cache_entries,
            db,
            in_flight: Arc::new(AtomicUsize::new(0)),
            snapshot_failed: Arc::new(AtomicBool::new(false)),
            durable_epoch: Arc::new(AtomicU32::new(CLEAN)),
            evict_scan: EvictScan::default(),
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

    /// Runs `call` with `key`'s state (loaded into the cache if needed) and
    /// a context for its outputs, map states and timers; marks the state
    /// dirty. `ahead` (starting with `key`, or empty) are the keys to be
    /// processed next: on a cache miss they are loaded together.
    ///
    /// # Errors
    /// The state error behind a failed call when there is one (see
    /// `MapLayers::failure`), else [`WeirError::Operator`].
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
            c.copy_on_write(key, slot);
        }
        write_behind.policy.note_change(slot.changed_in != *epoch);
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
        call(function, &mut slot.value, &mut ctx).map_err(|e| {
            // User code failed on a state error (or after one): that error is the cause.
            maps.failure.take().unwrap_or_else(|| WeirError::Operator {
                operator: name.clone(),
                message: e.0,
            })
        })
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
    fn open(&mut self) -> Result<()> {
        self.next.open()
    }

    fn records(&mut self, batch: &mut Vec<I>) -> Result<()> {
        self.check_snapshots()?;
        // Processing time as of this batch: one clock read per batch.
        self.processing_timers.now = wall_clock_ms();
        // Keys first, so each lookup can prefetch the cache slot of a key
        // a few records ahead (see `KeyCache`).
        let mut keys = std::mem::take(&mut self.batch_keys);
        keys.extend(batch.iter().map(&self.key_of));
        keys.iter().take(PREFETCH_AHEAD).for_each(|k| self.cache.prefetch(k));
        // The error, if any, is kept aside: a `Result` assigned (and the old
        // one dropped) per record cost W1 ~8 instructions a record.
        let mut failed = None;
        for (i, record) in batch.drain(..).enumerate() {
            if let Some(ahead) = keys.get(i + PREFETCH_AHEAD) {
                self.cache.prefetch(ahead);
            }
            let key = &keys[i];
            if let Err(e) = self.with_key(key, &keys[i..], |f, state, ctx| f.process(key, state, record, ctx)) {
                failed = Some(e);
                break;
            }
        }
        let batch_len = keys.len();
        keys.clear();
        self.batch_keys = keys;
        if let Some(e) = failed {
            return Err(e);
        }
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
                let namespace = namespace_of(&timer);
                match fire_state_timer(namespace, Timestamp(at), ctx) {
                    Some(cleaned) => cleaned,
                    None => f.on_timer(&key, state, Timestamp(at), namespace, ctx),
                }
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
                let namespace = namespace_of(&timer);
                match fire_state_timer(namespace, Timestamp(at), ctx) {
                    Some(cleaned) => cleaned,
                    None => f.on_processing_timer(&key, state, Timestamp(at), namespace, ctx),
                }
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

    fn idle(&mut self) -> Result<()> {
        self.next.idle()
    }

    fn barrier(&mut self, barrier: Barrier, snap: &mut SnapshotBuilder) -> Result<()> {
        self.check_snapshots()?;
        // The previous capture ends before this barrier's begins (rare: a
        // whole interval is normally enough for it).
        self.finish_capture();
        let (epoch, taken) = self.start_capture()?;
        self.write_behind.policy.barrier(wall_clock_ms());
        if barrier.then_stop {
            self.finish_capture(); // no record follows to take it step by step
            let kept = self.timers.pending() + self.processing_timers.pending();
            self.db.timers_kept.fetch_add(kept as u64, Ordering::Relaxed);
        }
        let (db, failed, durable, max_parallelism, id, stats) = (
            self.db.clone(),
            self.snapshot_failed.clone(),
            self.durable_epoch.clone(),
            self.max_parallelism,
            barrier.id,
            self.stats.clone(),
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
                if let Ok(state) = &result {
                    durable.fetch_max(epoch, Ordering::AcqRel);
                    work.succeeded();
                    if let crate::checkpoint::SubtaskState::Rocks(h) = state {
                        let bytes = h.shared.iter().chain(&h.private).map(|f| f.size).sum();
                        stats.state_bytes.store(bytes, Ordering::Relaxed);
                    }
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
