//! A fork inside a task: each record goes to one branch, the other or both
//! (a stream with two consumers, or a split by a function); everything else
//! (watermarks, barriers, the end) reaches both branches, so the checkpoint
//! protocol is unchanged: a barrier passes the first branch, then the second,
//! before the task acknowledges.

use super::chain::{Downstream, SnapshotBuilder};
use crate::error::Result;
use std::time::Instant;
use weir_operators::{Barrier, CheckpointId, Timestamp};

/// Routes each record with `route` into the outputs of two branches.
pub(crate) struct ForkStage<T, A, B, F> {
    pub(crate) route: F,
    pub(crate) left: Box<dyn Downstream<A>>,
    pub(crate) right: Box<dyn Downstream<B>>,
    pub(crate) out_left: Vec<A>,
    pub(crate) out_right: Vec<B>,
    pub(crate) _input: std::marker::PhantomData<fn(T)>,
}

impl<T, A, B, F> ForkStage<T, A, B, F> {
    /// A fork in front of `left` and `right`.
    pub(crate) fn new(route: F, left: Box<dyn Downstream<A>>, right: Box<dyn Downstream<B>>) -> Self {
        ForkStage {
            route,
            left,
            right,
            out_left: Vec::new(),
            out_right: Vec::new(),
            _input: std::marker::PhantomData,
        }
    }
}

impl<T: Send, A: Send, B: Send, F: FnMut(T, &mut Vec<A>, &mut Vec<B>) + Send> Downstream<T> for ForkStage<T, A, B, F> {
    fn open(&mut self) -> Result<()> {
        self.left.open()?;
        self.right.open()
    }
    fn records(&mut self, batch: &mut Vec<T>) -> Result<()> {
        for record in batch.drain(..) {
            (self.route)(record, &mut self.out_left, &mut self.out_right);
        }
        if !self.out_left.is_empty() {
            self.left.records(&mut self.out_left)?;
        }
        if !self.out_right.is_empty() {
            self.right.records(&mut self.out_right)?;
        }
        Ok(())
    }

    fn watermark(&mut self, watermark: Timestamp) -> Result<()> {
        self.left.watermark(watermark)?;
        self.right.watermark(watermark)
    }

    fn idle(&mut self) -> Result<()> {
        self.left.idle()?;
        self.right.idle()
    }

    fn processing_time(&mut self, now_ms: i64) -> Result<()> {
        self.left.processing_time(now_ms)?;
        self.right.processing_time(now_ms)
    }

    fn next_processing_timer(&self) -> Option<i64> {
        match (self.left.next_processing_timer(), self.right.next_processing_timer()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn flush(&mut self) -> Result<()> {
        self.left.flush()?;
        self.right.flush()
    }

    fn barrier(&mut self, barrier: Barrier, snap: &mut SnapshotBuilder) -> Result<()> {
        self.left.barrier(barrier, snap)?;
        self.right.barrier(barrier, snap)
    }

    fn checkpoint_complete(&mut self, id: CheckpointId) -> Result<()> {
        self.left.checkpoint_complete(id)?;
        self.right.checkpoint_complete(id)
    }

    fn checkpoint_aborted(&mut self, id: CheckpointId) -> Result<()> {
        self.left.checkpoint_aborted(id)?;
        self.right.checkpoint_aborted(id)
    }

    fn end(&mut self) -> Result<()> {
        self.left.end()?;
        self.right.end()
    }

    fn latency_marker(&mut self, emitted: Instant) -> Result<()> {
        self.left.latency_marker(emitted)?;
        self.right.latency_marker(emitted)
    }
}
