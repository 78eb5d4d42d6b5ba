//! Write-behind: part-way through a checkpoint interval, the entries changed
//! so far are taken like a barrier's (a new epoch and a capture) and
//! written to RocksDB by the task's snapshot thread, so the barrier's
//! snapshot has only the changes since then to write. W2 (200 k records/s
//! over 100 k keys) changes ~86 k keys a second, and writing them all at
//! the barrier took most of a 66–73 ms checkpoint.
//!
//! A slice is only worth it when the keys it writes are not about to change
//! again: with far more changes than changed keys (W1 at millions of records
//! a second over 100 k keys) every key would be written once per slice and
//! again at the barrier, so the slice is skipped ([`SlicePolicy::decide`]).

use super::encode::encode_values;
use super::work::StateWork;
use super::KeyedStage;
use crate::error::{Result, WeirError};
use crate::task::run::SnapshotJob;
use rocksdb::WriteBatch;
use std::sync::atomic::Ordering;
use weir_operators::{KeyedProcess, StateKey};

/// Where in the checkpoint interval slices are taken, in thousandths of it:
/// the last leaves the barrier ~7 % of the interval's changes.
const SLICE_POINTS: [i64; 3] = [500, 800, 930];

/// Changes per changed entry from which a slice is skipped (see the module doc).
const DENSE_CHANGES_PER_ENTRY: usize = 4;

/// The stage's write-behind: when to take a slice, and where to send it.
pub(super) struct WriteBehind {
    pub(super) policy: SlicePolicy,
    /// The task's snapshot thread: a slice is written there, in order with
    /// the snapshots (one started before it sees none of its changes; one
    /// started after it finds them in RocksDB).
    pub(super) jobs: crossbeam_channel::Sender<SnapshotJob>,
}

/// The counters the write-behind decision is made from; no clock, no I/O.
#[derive(Debug, Clone)]
pub(super) struct SlicePolicy {
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
}

/// What [`SlicePolicy::decide`] says at the end of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slice {
    /// No slice point reached, or the stage is busy: ask again later.
    NotYet,
    /// A slice point is reached but a slice is not worth it: pass the point.
    Skip,
    /// Pass the point and write the changed entries behind.
    Take,
}

impl SlicePolicy {
    /// `min_entries` changed entries make a slice worth it (0: never);
    /// `interval_ms` is the checkpoint interval; the interval starts at `now_ms`.
    pub(super) fn new(min_entries: usize, interval_ms: Option<i64>, now_ms: i64) -> Self {
        SlicePolicy {
            min_entries,
            interval_ms,
            last_barrier_ms: now_ms,
            points_passed: 0,
            changed: 0,
            changes: 0,
        }
    }

    /// A record changes an entry; `first_in_epoch`: the entry had no change
    /// in the current epoch yet.
    #[inline]
    pub(super) fn note_change(&mut self, first_in_epoch: bool) {
        self.changes += 1;
        if first_in_epoch {
            self.changed += 1;
        }
    }

    /// Every change counted so far has been taken (a new epoch) or written.
    pub(super) fn forget_changes(&mut self) {
        self.changed = 0;
        self.changes = 0;
    }

    /// A barrier at `now_ms` starts the next interval's slice points.
    pub(super) fn barrier(&mut self, now_ms: i64) {
        self.last_barrier_ms = now_ms;
        self.points_passed = 0;
    }

    /// The decision at processing time `now_ms`; `busy`: a capture or
    /// other state work is in progress. One piece of state work is queued
    /// at a time: slices must not pile up (each holds its entries) behind a
    /// snapshot thread that is behind.
    pub(super) fn decide(&self, now_ms: i64, busy: bool) -> Slice {
        let (Some(interval), Some(point)) = (self.interval_ms, SLICE_POINTS.get(self.points_passed)) else {
            return Slice::NotYet;
        };
        let due = self.last_barrier_ms.saturating_add(interval * point / 1000);
        if self.min_entries == 0 || busy || now_ms < due {
            return Slice::NotYet;
        }
        if self.changed < self.min_entries || self.changes >= DENSE_CHANGES_PER_ENTRY * self.changed {
            return Slice::Skip;
        }
        Slice::Take
    }

    /// The slice point [`SlicePolicy::decide`] found reached is passed.
    pub(super) fn pass_point(&mut self) {
        self.points_passed += 1;
    }
}

impl<K, I, O, P, F> KeyedStage<K, I, O, P, F>
where
    K: StateKey,
    P: KeyedProcess<K, I, O>,
{
    /// Writes the entries changed so far behind the record path when the
    /// interval has reached its next slice point (see [`SlicePolicy`]).
    pub(super) fn maybe_write_behind(&mut self) -> Result<()> {
        let busy = self.capture.is_some() || !self.state_work_idle();
        match self.write_behind.policy.decide(self.processing_timers.now, busy) {
            Slice::NotYet => return Ok(()),
            Slice::Skip => {
                self.write_behind.policy.pass_point();
                return Ok(());
            }
            Slice::Take => self.write_behind.policy.pass_point(),
        }
        let (epoch, taken) = self.start_capture()?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy with a 10 s interval started at 0 and `changed` entries
    /// changed `changes` times.
    fn policy(min_entries: usize, changed: usize, changes: usize) -> SlicePolicy {
        let mut p = SlicePolicy::new(min_entries, Some(10_000), 0);
        p.changed = changed;
        p.changes = changes;
        p
    }

    #[test]
    fn slices_are_taken_at_the_slice_points_of_the_interval_and_once_each() {
        let mut p = policy(10, 100, 100);
        assert_eq!(p.decide(4_999, false), Slice::NotYet);
        assert_eq!(p.decide(5_000, false), Slice::Take);
        p.pass_point();
        assert_eq!(p.decide(7_999, false), Slice::NotYet, "the first point is passed");
        assert_eq!(p.decide(8_000, false), Slice::Take);
        p.pass_point();
        assert_eq!(p.decide(9_300, false), Slice::Take);
        p.pass_point();
        assert_eq!(
            p.decide(i64::MAX, false),
            Slice::NotYet,
            "three slices per interval at most"
        );
        p.barrier(10_000);
        assert_eq!(p.decide(14_999, false), Slice::NotYet);
        assert_eq!(
            p.decide(15_000, false),
            Slice::Take,
            "a barrier starts the next interval's points"
        );
    }

    #[test]
    fn no_slice_while_busy_without_periodic_checkpoints_or_when_disabled() {
        assert_eq!(policy(10, 100, 100).decide(5_000, true), Slice::NotYet);
        assert_eq!(policy(0, 100, 100).decide(5_000, false), Slice::NotYet);
        let mut no_interval = SlicePolicy::new(10, None, 0);
        no_interval.note_change(true);
        assert_eq!(no_interval.decide(i64::MAX, false), Slice::NotYet);
    }

    #[test]
    fn a_slice_is_skipped_with_too_few_changed_entries_or_keys_that_keep_changing() {
        assert_eq!(policy(10, 9, 9).decide(5_000, false), Slice::Skip);
        // Four changes per changed entry: each would be written again at the barrier.
        assert_eq!(policy(10, 100, 400).decide(5_000, false), Slice::Skip);
        assert_eq!(policy(10, 100, 399).decide(5_000, false), Slice::Take);
    }

    #[test]
    fn changes_count_entries_once_per_epoch() {
        let mut p = policy(2, 0, 0);
        p.note_change(true);
        p.note_change(false);
        p.note_change(true);
        assert_eq!((p.changed, p.changes), (2, 3));
        p.forget_changes();
        assert_eq!((p.changed, p.changes), (0, 0));
        assert_eq!(p.decide(5_000, false), Slice::Skip);
    }
}
