//! The timestamp and watermark assigner of any stream
//! (`Stream::assign_timestamps_and_watermarks`): event time with a bounded
//! out-of-orderness, whatever the source.
//!
//! # Lateness does not depend on batching
//! Records move in batches, and a watermark sent after a batch would let a
//! record that is behind its predecessors' watermark pass as on time when it
//! shares their batch. So the stage cuts a batch right before such a record:
//! what came before goes on, then the watermark the predecessors produced,
//! then the record, which the windows after see as late. In-order input
//! (the common case) is never cut: one watermark per batch, at its end.

use super::chain::{Downstream, SnapshotBuilder};
use crate::error::Result;
use std::time::Instant;
use weir_operators::{Barrier, CheckpointId, Timestamp};

/// Assigns event time with `timestamp_of` and emits
/// `max timestamp seen - out_of_orderness_ms` as the watermark.
pub(crate) struct WatermarkStage<T, F> {
    pub(crate) timestamp_of: F,
    pub(crate) out_of_orderness_ms: i64,
    /// The newest timestamp seen (`i64::MIN`: none yet).
    pub(crate) max_seen: i64,
    /// The newest watermark sent on.
    pub(crate) emitted: Timestamp,
    pub(crate) out: Vec<T>,
    pub(crate) next: Box<dyn Downstream<T>>,
}

impl<T, F> WatermarkStage<T, F> {
    /// A stage in front of `next`.
    pub(crate) fn new(timestamp_of: F, out_of_orderness_ms: i64, next: Box<dyn Downstream<T>>) -> Self {
        WatermarkStage {
            timestamp_of,
            out_of_orderness_ms: out_of_orderness_ms.max(0),
            max_seen: i64::MIN,
            emitted: Timestamp::MIN,
            out: Vec::new(),
            next,
        }
    }

    /// The watermark the records seen so far produce.
    fn current(&self) -> Timestamp {
        Timestamp(self.max_seen.saturating_sub(self.out_of_orderness_ms))
    }

    /// Sends what is buffered, then the current watermark if it advanced.
    fn send_watermark(&mut self) -> Result<()> {
        let watermark = self.current();
        if self.max_seen != i64::MIN && watermark > self.emitted {
            if !self.out.is_empty() {
                self.next.records(&mut self.out)?;
            }
            self.emitted = watermark;
            self.next.watermark(watermark)?;
        }
        Ok(())
    }
}

impl<T: Send, F: FnMut(&T) -> i64 + Send> Downstream<T> for WatermarkStage<T, F> {
    fn records(&mut self, batch: &mut Vec<T>) -> Result<()> {
        for record in batch.drain(..) {
            let ts = (self.timestamp_of)(&record);
            // Behind the watermark of the records before it: that watermark
            // goes first, so the record is judged against it.
            if Timestamp(ts) < self.current() && self.current() > self.emitted {
                self.send_watermark()?;
            }
            self.max_seen = self.max_seen.max(ts);
            self.out.push(record);
        }
        if !self.out.is_empty() {
            self.next.records(&mut self.out)?;
        }
        self.send_watermark()
    }

    fn watermark(&mut self, watermark: Timestamp) -> Result<()> {
        // Upstream event time is replaced by this stage's, except the end of
        // time (a bounded + drain run fires every window).
        if watermark == Timestamp::MAX && self.emitted < Timestamp::MAX {
            self.emitted = Timestamp::MAX;
            return self.next.watermark(watermark);
        }
        Ok(())
    }

    fn processing_time(&mut self, now_ms: i64) -> Result<()> {
        self.next.processing_time(now_ms)
    }

    fn next_processing_timer(&self) -> Option<i64> {
        self.next.next_processing_timer()
    }

    fn flush(&mut self) -> Result<()> {
        self.next.flush()
    }

    fn barrier(&mut self, barrier: Barrier, snap: &mut SnapshotBuilder) -> Result<()> {
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

    fn latency_marker(&mut self, emitted: Instant) -> Result<()> {
        self.next.latency_marker(emitted)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Records what reaches it: `r<ts>` for records, `w<ts>` for watermarks.
    struct Seen(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl Downstream<i64> for Seen {
        fn records(&mut self, batch: &mut Vec<i64>) -> Result<()> {
            let mut seen = self.0.lock().unwrap();
            seen.extend(batch.drain(..).map(|t| format!("r{t}")));
            Ok(())
        }
        fn watermark(&mut self, w: Timestamp) -> Result<()> {
            self.0.lock().unwrap().push(format!("w{}", w.0));
            Ok(())
        }
        fn flush(&mut self) -> Result<()> {
            Ok(())
        }
        fn barrier(&mut self, _: Barrier, _: &mut SnapshotBuilder) -> Result<()> {
            Ok(())
        }
        fn checkpoint_complete(&mut self, _: CheckpointId) -> Result<()> {
            Ok(())
        }
        fn end(&mut self) -> Result<()> {
            Ok(())
        }
        fn latency_marker(&mut self, _: Instant) -> Result<()> {
            Ok(())
        }
    }

    fn run(batches: &[&[i64]]) -> Vec<String> {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut stage = WatermarkStage::new(|t: &i64| *t, 50, Box::new(Seen(seen.clone())));
        for b in batches {
            stage.records(&mut b.to_vec()).unwrap();
        }
        let out = seen.lock().unwrap().clone();
        out
    }

    #[test]
    fn in_order_input_gets_one_watermark_per_batch() {
        assert_eq!(run(&[&[100, 200, 300]]), ["r100", "r200", "r300", "w250"]);
    }

    #[test]
    fn a_record_behind_its_predecessors_watermark_follows_that_watermark() {
        let whole = run(&[&[100, 200, 300, 10, 400]]);
        assert_eq!(whole, ["r100", "r200", "r300", "w250", "r10", "r400", "w350"]);
        // Batch by batch, the same records meet the same watermarks.
        let single: Vec<&[i64]> = vec![&[100], &[200], &[300], &[10], &[400]];
        let one_by_one = run(&single);
        let watermark_before_10 = |v: &[String]| {
            let at = v.iter().position(|e| e == "r10").unwrap();
            v[..at].iter().rev().find(|e| e.starts_with('w')).cloned()
        };
        assert_eq!(watermark_before_10(&whole), watermark_before_10(&one_by_one));
        assert_eq!(watermark_before_10(&whole).as_deref(), Some("w250"));
    }
}
