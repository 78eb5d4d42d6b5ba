//! Bounding the cache: evicting entries whose value is in RocksDB, and
//! writing changed entries back when too few are.
//!
//! Over capacity, the stage evicts entries whose value is in RocksDB
//! (unchanged since loaded, or written by a snapshot or a write-behind
//! slice, see [`evictable`]) down to 90 % of it, a part of the table at a
//! time from a moving cursor. When too few are (most entries changed since
//! the last write), it writes the changed entries back itself first: at
//! once when no state work is in flight, else when 25 % over, after
//! waiting for the state work in flight ([`when_still_full`]).

use super::capture::{Slot, CAPTURE_SLOTS, CLEAN};
use super::encode::encode_values;
use super::KeyedStage;
use crate::error::Result;
use rocksdb::WriteBatch;
use std::sync::atomic::Ordering;
use weir_operators::{KeyedProcess, StateKey};

/// Cache slots an eviction passes over at most per batch (tens of
/// microseconds; more for batches of over 1024 records, two evictions'
/// worth per record): the table may hold few evictable entries, and a
/// batch must not pay for a scan of all of it.
const EVICT_SCAN_SLOTS: usize = 16384;

/// An eviction takes at most one entry per this many slots it passes, so
/// the cache table stays evenly full (see `KeyCache::evict`).
const EVICT_SPREAD: usize = 8;

/// Whether `slot`'s value is in RocksDB with `durable` the newest epoch
/// written: no change since its last capture, and that capture's epoch is
/// written (`CLEAN`: none since loaded). Evicting anything else would read
/// a stale value back.
#[inline]
pub(super) fn evictable<V>(slot: &Slot<V>, durable: u32) -> bool {
    slot.changed_in == CLEAN && slot.taken_in <= durable
}

/// How many entries an over-full cache is brought down to: 90 % of its
/// capacity, so that an eviction is not due again at the next new key.
pub(super) fn evict_target(capacity: usize) -> usize {
    capacity - capacity / 10
}

/// Slots one eviction may pass over after a batch of `batch_len` records:
/// room to evict at least two entries per record of the batch.
pub(super) fn scan_budget(batch_len: usize) -> usize {
    EVICT_SCAN_SLOTS.max(batch_len.saturating_mul(2 * EVICT_SPREAD))
}

/// With a capture in progress (slot positions must hold still for it, so
/// nothing is evicted): how many slots to take at once so that it ends
/// sooner, when the cache of `len` entries is over `capacity`.
pub(super) fn capture_step_when_full(len: usize, capacity: usize) -> Option<usize> {
    (len > capacity).then_some(CAPTURE_SLOTS * 8)
}

/// Whether the map-state overlay of `overlay_len` writes is written to
/// RocksDB now (only when no state work is in flight): it is bounded like
/// the cache.
pub(super) fn flush_overlay(overlay_len: usize, capacity: usize) -> bool {
    overlay_len > capacity
}

/// What [`when_still_full`] says after eviction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StillFull {
    /// Within capacity: nothing more to do.
    Fits,
    /// A little over while state work is in flight: its end will make
    /// entries evictable.
    LeaveToStateWork,
    /// Far over while state work is in flight: wait for it rather than
    /// grow, then write back.
    WaitThenWriteBack,
    /// Over with nothing in flight: write the changed entries back now.
    WriteBack,
}

/// The decision for a cache of `len` entries after eviction; `idle`: no
/// state work in flight.
pub(super) fn when_still_full(len: usize, capacity: usize, idle: bool) -> StillFull {
    match (len <= capacity, idle) {
        (true, _) => StillFull::Fits,
        (false, true) => StillFull::WriteBack,
        (false, false) if len <= capacity + capacity / 4 => StillFull::LeaveToStateWork,
        (false, false) => StillFull::WaitThenWriteBack,
    }
}

/// Where evictions look and whether another look can find anything.
///
/// An entry becomes evictable only when the epoch that took it is written:
/// after a whole round of the table without one, scan again only once the
/// durable epoch moves. Each call passes over a bounded number of slots, so
/// a batch never pays for a scan of the table.
#[derive(Debug, Default)]
pub(super) struct EvictScan {
    /// Where the next eviction looks first.
    pub(super) cursor: usize,
    /// Slots passed over by evictions that found nothing since
    /// `durable_seen` was last seen.
    passed: usize,
    durable_seen: u32,
}

impl EvictScan {
    /// The durable epoch is `durable` now: if it moved, the whole table is
    /// worth a look again.
    pub(super) fn see_durable(&mut self, durable: u32) {
        if durable != self.durable_seen {
            self.durable_seen = durable;
            self.passed = 0;
        }
    }

    /// Whether a table of `slot_count` slots may hold an evictable entry
    /// not yet passed over.
    pub(super) fn may_find(&self, slot_count: usize) -> bool {
        self.passed < slot_count
    }

    /// An eviction stopped at `cursor` after passing `passed` slots;
    /// `evicted`: it removed something.
    pub(super) fn scanned(&mut self, cursor: usize, passed: usize, evicted: bool) {
        self.cursor = cursor;
        self.passed = match evicted {
            true => 0,
            false => self.passed.saturating_add(passed),
        };
    }

    /// Entries may have become evictable without the durable epoch moving
    /// (written back, or epochs rebased).
    pub(super) fn restart(&mut self) {
        self.passed = 0;
    }
}

impl<K, I, O, P, F> KeyedStage<K, I, O, P, F>
where
    K: StateKey,
    P: KeyedProcess<K, I, O>,
{
    /// Bounds the cache (see the module doc). `batch_len` records came in
    /// since the last call (each may have added an entry).
    pub(super) fn evict_if_full(&mut self, batch_len: usize) -> Result<()> {
        // A failed snapshot's entries are not in RocksDB: evicting them
        // would read stale values back.
        self.check_snapshots()?;
        if self.capture.is_some() {
            let Some(step) = capture_step_when_full(self.cache.len(), self.capacity) else {
                return Ok(());
            };
            self.advance_capture(step);
            if self.capture.is_some() {
                return Ok(());
            }
        }
        let idle = self.state_work_idle();
        if idle {
            // Every snapshot handed off is in RocksDB now.
            self.maps.flushing.clear();
            if flush_overlay(self.maps.current.len(), self.capacity) {
                let mut batch = WriteBatch::default();
                self.db.batch_map(&mut batch, &self.maps.current)?;
                self.db.write(batch)?;
                self.maps.current.clear();
            }
        }
        if self.cache.len() <= self.capacity {
            return Ok(());
        }
        let target = evict_target(self.capacity);
        let durable = self.durable_epoch.load(Ordering::Acquire);
        self.evict_scan.see_durable(durable);
        if self.evict_scan.may_find(self.cache.slot_count()) {
            let (before, excess) = (self.cache.len(), self.cache.len() - target);
            let (cursor, passed) = self.cache.evict(
                self.evict_scan.cursor,
                excess,
                scan_budget(batch_len),
                EVICT_SPREAD,
                move |s| evictable(s, durable),
            );
            self.evict_scan.scanned(cursor, passed, self.cache.len() < before);
        }
        match when_still_full(self.cache.len(), self.capacity, idle) {
            StillFull::Fits | StillFull::LeaveToStateWork => return Ok(()),
            StillFull::WaitThenWriteBack => {
                self.wait_for_state_work()?;
                self.maps.flushing.clear();
            }
            StillFull::WriteBack => {}
        }
        self.write_back_and_evict(target)
    }

    /// Writes every changed entry to RocksDB now (many sorted into an SST,
    /// no memtable skiplist inserts; a few through the memtable), then
    /// evicts down to `target`. No state work may be in flight.
    fn write_back_and_evict(&mut self, target: usize) -> Result<()> {
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
        self.write_behind.policy.forget_changes();
        let excess = self.cache.len() - target;
        (self.evict_scan.cursor, _) =
            self.cache
                .evict(self.evict_scan.cursor, excess, usize::MAX, EVICT_SPREAD, |_| true);
        self.evict_scan.restart();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(changed_in: u32, taken_in: u32) -> Slot<()> {
        Slot {
            value: None,
            changed_in,
            taken_in,
        }
    }

    #[test]
    fn only_entries_whose_last_take_is_durable_are_evictable() {
        assert!(evictable(&slot(CLEAN, CLEAN), CLEAN), "loaded and never changed");
        assert!(!evictable(&slot(3, CLEAN), 5), "changed and not taken yet");
        assert!(!evictable(&slot(CLEAN, 4), 3), "taken by an epoch not written yet");
        assert!(evictable(&slot(CLEAN, 4), 4));
        assert!(!evictable(&slot(6, 4), 9), "changed again after a written take");
    }

    #[test]
    fn eviction_brings_the_cache_to_ninety_percent_with_a_bounded_scan() {
        assert_eq!(evict_target(1000), 900);
        assert_eq!(evict_target(5), 5);
        assert_eq!(scan_budget(1), EVICT_SCAN_SLOTS);
        assert_eq!(scan_budget(10_000), 10_000 * 2 * EVICT_SPREAD);
        assert_eq!(scan_budget(usize::MAX), usize::MAX);
    }

    #[test]
    fn a_full_cache_writes_back_at_once_when_idle_and_waits_only_when_far_over() {
        assert_eq!(when_still_full(100, 100, false), StillFull::Fits);
        assert_eq!(when_still_full(101, 100, true), StillFull::WriteBack);
        assert_eq!(when_still_full(125, 100, false), StillFull::LeaveToStateWork);
        assert_eq!(when_still_full(126, 100, false), StillFull::WaitThenWriteBack);
    }

    #[test]
    fn a_capture_steps_faster_only_over_capacity_and_the_overlay_flushes_past_it() {
        assert_eq!(capture_step_when_full(100, 100), None);
        assert_eq!(capture_step_when_full(101, 100), Some(CAPTURE_SLOTS * 8));
        assert!(!flush_overlay(100, 100));
        assert!(flush_overlay(101, 100));
    }

    #[test]
    fn a_scan_round_without_evictions_waits_for_the_durable_epoch_to_move() {
        let mut scan = EvictScan::default();
        scan.see_durable(3);
        assert!(scan.may_find(64));
        scan.scanned(40, 40, false);
        scan.scanned(16, 24, false);
        assert_eq!(scan.cursor, 16);
        assert!(!scan.may_find(64), "once round the table without an evictable entry");
        scan.see_durable(3);
        assert!(!scan.may_find(64), "nothing new is written");
        scan.see_durable(4);
        assert!(scan.may_find(64), "a newly written epoch makes entries evictable");
        scan.scanned(8, 64, true);
        assert!(scan.may_find(64), "an eviction that found something looks again");
        scan.scanned(8, 64, false);
        scan.restart();
        assert!(scan.may_find(64));
    }
}
