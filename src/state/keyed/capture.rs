//! Epochs and the epoch capture: taking a barrier's (or a write-behind
//! slice's) changed entries without stopping the record path for it.
//!
//! A stop of 2–3 ms per checkpoint with 100 k changed keys was W2's tail,
//! so the barrier only starts a new epoch. The entries changed in the old
//! one are then cloned a slice of the cache at a time after each batch
//! ([`CAPTURE_SLOTS`]), and copy-on-write: a record about to change an
//! entry of the old epoch not taken yet takes it first
//! ([`Capture::copy_on_write`]). When the last slice is done the entries go
//! to the snapshot, which waits for them on a channel.

use super::KeyedStage;
use crate::error::Result;
use std::sync::atomic::Ordering;
use weir_operators::{KeyedProcess, StateKey};

/// A cache entry: a key's value state and where its last change is.
pub(super) struct Slot<V> {
    /// The key's state (`None`: none, or deleted).
    pub(super) value: Option<V>,
    /// The epoch (checkpoint interval) of the last change not yet handed to
    /// a snapshot; `CLEAN` if none.
    pub(super) changed_in: u32,
    /// The epoch whose capture took the last change (`CLEAN`: none since
    /// it was loaded): once that epoch is written to RocksDB, the entry may
    /// be evicted.
    pub(super) taken_in: u32,
}

impl<V> Slot<V> {
    /// A value just read from RocksDB: nothing to write.
    pub(super) fn loaded(value: Option<V>) -> Self {
        Slot {
            value,
            changed_in: CLEAN,
            taken_in: CLEAN,
        }
    }
}

/// `Slot::changed_in` of an entry with nothing to write (and no epoch: the
/// first is `CLEAN + 1`).
pub(super) const CLEAN: u32 = 0;

/// The entries a capture took: key and value (`None`: deleted).
pub(super) type Captured<K, V> = Vec<(K, Option<V>)>;

/// Where a capture's entries arrive once it is done (the snapshot or
/// write-behind slice waits on it).
pub(super) type Delivery<K, V> = crossbeam_channel::Receiver<Captured<K, V>>;

/// Cache slots looked at per step of a [`Capture`] (about 0.5 MB of the
/// table, tens of microseconds).
pub(super) const CAPTURE_SLOTS: usize = 8192;

/// The changed entries of one epoch being taken (see the module doc).
pub(super) struct Capture<K, V> {
    /// The epoch being taken.
    pub(super) epoch: u32,
    /// The next cache slot to look at.
    pub(super) next_slot: usize,
    pub(super) taken: Captured<K, V>,
    pub(super) deliver: crossbeam_channel::Sender<Captured<K, V>>,
}

impl<K: Clone, V: Clone> Capture<K, V> {
    /// Called before `key`'s entry changes: if the change of this
    /// capture's epoch has not been taken yet, takes it now, so the
    /// snapshot gets the value as of its barrier. (The step that reaches
    /// the slot later finds it changed in a later epoch and passes it.)
    #[inline]
    pub(super) fn copy_on_write(&mut self, key: &K, slot: &Slot<V>) {
        if slot.changed_in == self.epoch {
            self.taken.push((key.clone(), slot.value.clone()));
        }
    }
}

/// Whether the epoch counter must be renumbered before `epoch` is taken
/// (the next would wrap).
pub(super) fn needs_rebase(epoch: u32) -> bool {
    epoch == u32::MAX
}

/// `slot` renumbered for a rebase of `current` to `CLEAN + 1`, with every
/// earlier epoch written: a change of the current epoch stays one (it is
/// taken by the next capture); every take is durable (`CLEAN` is never
/// above the durable epoch), so the entry stays evictable.
pub(super) fn rebased<V>(slot: &mut Slot<V>, current: u32) {
    if slot.changed_in == current {
        slot.changed_in = CLEAN + 1;
    }
    slot.taken_in = CLEAN;
}

impl<K, I, O, P, F> KeyedStage<K, I, O, P, F>
where
    K: StateKey,
    P: KeyedProcess<K, I, O>,
{
    /// Takes the next `slots` cache slots of the capture in progress; hands
    /// the entries to the snapshot when the whole cache has been looked at.
    pub(super) fn advance_capture(&mut self, slots: usize) {
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

    /// Takes the rest of the capture in progress at once.
    pub(super) fn finish_capture(&mut self) {
        self.advance_capture(usize::MAX);
    }

    /// Starts a new epoch whose predecessor's changed entries are taken
    /// step by step (see [`Capture`]); returns the epoch taken (to mark
    /// durable once written: read after a rebase, so never the number from
    /// before it) and where its entries will be delivered. No capture may
    /// be in progress.
    pub(super) fn start_capture(&mut self) -> Result<(u32, Delivery<K, P::State>)> {
        if needs_rebase(self.epoch) {
            self.rebase_epochs()?;
        }
        let captured = self.epoch;
        let (deliver, taken) = crossbeam_channel::bounded(1);
        self.capture = Some(Capture {
            epoch: self.epoch,
            next_slot: 0,
            taken: Vec::new(),
            deliver,
        });
        self.epoch += 1;
        self.write_behind.policy.forget_changes();
        Ok((captured, taken))
    }

    /// Before the epoch counter would wrap (after 2^32 barriers and slices),
    /// renumbers from the start so that `taken_in <= durable_epoch` keeps
    /// meaning "written": waits until no state work is in flight (so every
    /// taken entry is written), then the current epoch becomes `CLEAN + 1`
    /// (see [`rebased`]).
    pub(super) fn rebase_epochs(&mut self) -> Result<()> {
        self.wait_for_state_work()?;
        let slots = self.cache.slot_count();
        let current = self.epoch;
        self.cache.for_each_in(0..slots, |_, s| rebased(s, current));
        self.epoch = CLEAN + 1;
        self.durable_epoch.store(CLEAN, Ordering::Release);
        self.evict_scan.restart();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_on_write_takes_only_a_change_of_the_captured_epoch() {
        let (deliver, _taken) = crossbeam_channel::bounded(1);
        let mut c = Capture::<u32, u64> {
            epoch: 7,
            next_slot: 0,
            taken: Vec::new(),
            deliver,
        };
        let mut slot = Slot::loaded(Some(1));
        c.copy_on_write(&1, &slot);
        assert!(c.taken.is_empty(), "a clean entry has nothing for the snapshot");
        slot.changed_in = 8;
        c.copy_on_write(&1, &slot);
        assert!(c.taken.is_empty(), "a change of the new epoch is the next snapshot's");
        slot.changed_in = 7;
        c.copy_on_write(&1, &slot);
        assert_eq!(c.taken, vec![(1, Some(1))]);
    }

    #[test]
    fn rebase_keeps_current_changes_changed_and_every_take_durable() {
        let current = u32::MAX;
        let mut changed_now = Slot::loaded(Some(1u8));
        changed_now.changed_in = current;
        changed_now.taken_in = current - 1;
        let mut taken_before = Slot::loaded(Some(2u8));
        taken_before.taken_in = current - 1;
        rebased(&mut changed_now, current);
        rebased(&mut taken_before, current);
        // The renumbered current epoch is the first; the next barrier takes it.
        assert_eq!((changed_now.changed_in, changed_now.taken_in), (CLEAN + 1, CLEAN));
        // Written before the rebase: evictable with the durable epoch reset to CLEAN.
        assert_eq!((taken_before.changed_in, taken_before.taken_in), (CLEAN, CLEAN));
        assert!(super::super::evict::evictable(&taken_before, CLEAN));
        assert!(!super::super::evict::evictable(&changed_now, CLEAN));
    }

    #[test]
    fn only_the_last_epoch_number_needs_a_rebase() {
        assert!(!needs_rebase(CLEAN + 1));
        assert!(!needs_rebase(u32::MAX - 1));
        assert!(needs_rebase(u32::MAX));
    }
}
