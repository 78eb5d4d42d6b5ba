//! State work handed to the task's snapshot thread (snapshots and
//! write-behind slices): counted while in flight, and failing the stage if
//! it does not end well.
//!
//! The work runs in the order it was handed off, so its epochs become
//! durable in order (the stage's `durable_epoch` only grows).

use super::KeyedStage;
use crate::error::{Result, WeirError};
use crate::task::run::SnapshotJob;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use weir_operators::{KeyedProcess, StateKey};

/// One piece of state work handed to the snapshot thread (a snapshot or a
/// write-behind slice), counted in `in_flight` until it ends. Dropped
/// without `succeeded` (it failed, panicked, or never ran because the job
/// stopped), it marks the stage failed: the changes it carried are in no
/// later snapshot either.
pub(super) struct StateWork {
    in_flight: Arc<AtomicUsize>,
    failed: Arc<AtomicBool>,
    done: bool,
}

impl StateWork {
    /// Counts one more piece of work in flight.
    pub(super) fn start(in_flight: &Arc<AtomicUsize>, failed: &Arc<AtomicBool>) -> Self {
        in_flight.fetch_add(1, Ordering::AcqRel);
        StateWork {
            in_flight: in_flight.clone(),
            failed: failed.clone(),
            done: false,
        }
    }

    /// The work ended well. (A method, so that a closure calling it owns
    /// the whole guard, not just the flag.)
    pub(super) fn succeeded(&mut self) {
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

/// How many 1 ms waits for state work pass between checks that the
/// snapshot thread is still there.
const ALIVE_CHECK_EVERY: u32 = 100;

impl<K, I, O, P, F> KeyedStage<K, I, O, P, F>
where
    K: StateKey,
    P: KeyedProcess<K, I, O>,
{
    /// An error if a snapshot of this stage failed (see `snapshot_failed`).
    pub(super) fn check_snapshots(&self) -> Result<()> {
        if self.snapshot_failed.load(Ordering::Acquire) {
            return Err(self.db.state_error(format!(
                "a snapshot of `{}` failed after taking its changes; the job must restart from the last complete checkpoint",
                self.name
            )));
        }
        Ok(())
    }

    /// Whether no state work is in flight: every snapshot and slice handed
    /// off is in RocksDB.
    pub(super) fn state_work_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// Waits until the snapshot thread has finished this stage's state work
    /// (backpressure: it runs on a CPU this thread leaves free meanwhile).
    pub(super) fn wait_for_state_work(&mut self) -> Result<()> {
        let mut waited = 0u32;
        while !self.state_work_idle() {
            self.check_snapshots()?;
            // A snapshot thread gone (the job stops) never finishes the work.
            if waited % ALIVE_CHECK_EVERY == 0
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
