//! The timestamp and watermark assigner of any stream
//! (`Stream::assign_timestamps_and_watermarks`, `..._punctuated_watermarks`):
//! event time with a bounded out-of-orderness, or watermarks that records
//! carry, whatever the source.
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

/// How a [`WatermarkStage`] derives watermarks from the records it sees.
pub(crate) trait WatermarkGenerator<T>: Send {
    /// Whether the watermark of the records before one with event time `ts`
    /// must go out before it (the record is behind that watermark).
    fn cut_before(&self, ts: i64) -> bool;
    /// Sees a record; `true` when the watermark must go out right after it.
    fn observe(&mut self, record: &T, ts: i64) -> bool;
    /// The watermark the records seen so far produce, if any.
    fn current(&self) -> Option<Timestamp>;
}

/// Bounded out-of-orderness: `max timestamp seen - out_of_orderness_ms`.
pub(crate) struct BoundedOutOfOrderness {
    out_of_orderness_ms: i64,
    /// The newest timestamp seen (`i64::MIN`: none yet).
    max_seen: i64,
}

impl BoundedOutOfOrderness {
    /// A generator allowing records `out_of_orderness_ms` behind the newest.
    pub(crate) fn new(out_of_orderness_ms: i64) -> Self {
        BoundedOutOfOrderness {
            out_of_orderness_ms: out_of_orderness_ms.max(0),
            max_seen: i64::MIN,
        }
    }
}

impl<T> WatermarkGenerator<T> for BoundedOutOfOrderness {
    fn cut_before(&self, ts: i64) -> bool {
        WatermarkGenerator::<T>::current(self).is_some_and(|w| Timestamp(ts) < w)
    }
    fn observe(&mut self, _record: &T, ts: i64) -> bool {
        self.max_seen = self.max_seen.max(ts);
        false
    }
    fn current(&self) -> Option<Timestamp> {
        (self.max_seen != i64::MIN).then(|| Timestamp(self.max_seen.saturating_sub(self.out_of_orderness_ms)))
    }
}

/// Punctuated: a record may carry a watermark (Flink's punctuated
/// `WatermarkGenerator::onEvent`), which goes out right after it.
pub(crate) struct Punctuated<P> {
    /// The watermark a record carries, from the record and its event time.
    pub(crate) watermark_of: P,
    /// The newest watermark carried so far.
    pub(crate) newest: Option<Timestamp>,
}

impl<T, P: FnMut(&T, i64) -> Option<i64> + Send> WatermarkGenerator<T> for Punctuated<P> {
    fn cut_before(&self, _ts: i64) -> bool {
        false // every watermark already went out right after its record
    }
    fn observe(&mut self, record: &T, ts: i64) -> bool {
        match (self.watermark_of)(record, ts) {
            Some(w) if self.newest.is_none_or(|n| Timestamp(w) > n) => {
                self.newest = Some(Timestamp(w));
                true
            }
            _ => false,
        }
    }
    fn current(&self) -> Option<Timestamp> {
        self.newest
    }
}

/// Assigns event time with `timestamp_of` and emits the watermarks of a
/// [`WatermarkGenerator`], never going backwards.
pub(crate) struct WatermarkStage<T, F, G> {
    pub(crate) timestamp_of: F,
    pub(crate) generator: G,
    /// The newest watermark sent on.
    pub(crate) emitted: Timestamp,
    pub(crate) out: Vec<T>,
    pub(crate) next: Box<dyn Downstream<T>>,
}

impl<T, F, G> WatermarkStage<T, F, G> {
    /// A stage with `generator` in front of `next`.
    pub(crate) fn with_generator(timestamp_of: F, generator: G, next: Box<dyn Downstream<T>>) -> Self {
        WatermarkStage {
            timestamp_of,
            generator,
            emitted: Timestamp::MIN,
            out: Vec::new(),
            next,
        }
    }
}

impl<T, F, G: WatermarkGenerator<T>> WatermarkStage<T, F, G> {
    /// Whether the generator's watermark is ahead of what was sent.
    fn advanced(&self) -> bool {
        self.generator.current().is_some_and(|w| w > self.emitted)
    }

    /// Sends what is buffered, then the current watermark if it advanced.
    fn send_watermark(&mut self) -> Result<()> {
        if let Some(watermark) = self.generator.current().filter(|w| *w > self.emitted) {
            if !self.out.is_empty() {
                self.next.records(&mut self.out)?;
            }
            self.emitted = watermark;
            self.next.watermark(watermark)?;
        }
        Ok(())
    }
}

impl<T: Send, F: FnMut(&T) -> i64 + Send, G: WatermarkGenerator<T>> Downstream<T> for WatermarkStage<T, F, G> {
    fn open(&mut self) -> Result<()> {
        self.next.open()
    }
    fn records(&mut self, batch: &mut Vec<T>) -> Result<()> {
        for record in batch.drain(..) {
            let ts = (self.timestamp_of)(&record);
            // Behind the watermark of the records before it: that watermark
            // goes first, so the record is judged against it.
            if self.generator.cut_before(ts) && self.advanced() {
                self.send_watermark()?;
            }
            let after = self.generator.observe(&record, ts);
            self.out.push(record);
            if after {
                self.send_watermark()?;
            }
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

    fn idle(&mut self) -> Result<()> {
        // No input, no records to time: the stream after is idle too.
        self.next.idle()
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

/// Marks its stream idle once no record has passed for a while
/// (`Stream::with_idleness`, Flink's `WatermarkStrategy.withIdleness`): the
/// tasks after it then take their event time from their other inputs
/// instead of waiting for this one's watermark. The next record makes the
/// stream active again.
pub(crate) struct IdlenessStage<T> {
    timeout_ms: i64,
    /// Wall-clock ms of the last record (the start before the first).
    last_record_ms: i64,
    /// Idle was sent on, and no record passed since.
    announced: bool,
    next: Box<dyn Downstream<T>>,
}

impl<T> IdlenessStage<T> {
    /// A stage in front of `next` that marks the stream idle after `timeout_ms`.
    pub(crate) fn new(timeout_ms: i64, next: Box<dyn Downstream<T>>) -> Self {
        IdlenessStage {
            timeout_ms: timeout_ms.max(0),
            last_record_ms: crate::clock::wall_clock_ms(),
            announced: false,
            next,
        }
    }

    fn announce(&mut self) -> Result<()> {
        if self.announced {
            return Ok(());
        }
        self.announced = true;
        self.next.idle()
    }
}

impl<T: Send> Downstream<T> for IdlenessStage<T> {
    fn open(&mut self) -> Result<()> {
        self.next.open()
    }
    fn records(&mut self, batch: &mut Vec<T>) -> Result<()> {
        if !batch.is_empty() {
            // Once per batch: the records after it make the stream active.
            self.last_record_ms = crate::clock::wall_clock_ms();
            self.announced = false;
        }
        self.next.records(batch)
    }
    fn watermark(&mut self, watermark: Timestamp) -> Result<()> {
        self.next.watermark(watermark)
    }
    fn idle(&mut self) -> Result<()> {
        self.announce()
    }
    fn processing_time(&mut self, now_ms: i64) -> Result<()> {
        // `i64::MIN`: the job is ending, and only snapshot work runs.
        if now_ms != i64::MIN && !self.announced && now_ms >= self.last_record_ms.saturating_add(self.timeout_ms) {
            self.announce()?;
        }
        self.next.processing_time(now_ms)
    }
    fn next_processing_timer(&self) -> Option<i64> {
        let own = (!self.announced).then(|| self.last_record_ms.saturating_add(self.timeout_ms));
        match (own, self.next.next_processing_timer()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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
        fn idle(&mut self) -> Result<()> {
            self.0.lock().unwrap().push("idle".into());
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
        let mut stage = WatermarkStage::with_generator(
            |t: &i64| *t,
            BoundedOutOfOrderness::new(50),
            Box::new(Seen(seen.clone())),
        );
        for b in batches {
            stage.records(&mut b.to_vec()).unwrap();
        }
        let out = seen.lock().unwrap().clone();
        out
    }

    #[test]
    fn a_punctuated_watermark_goes_out_right_after_its_record_whatever_the_batching() {
        let run = |batches: &[&[i64]]| {
            let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            // Records at multiples of 100 carry a watermark at their time.
            let punctuated = Punctuated {
                watermark_of: |_r: &i64, ts: i64| (ts % 100 == 0).then_some(ts),
                newest: None,
            };
            let mut stage = WatermarkStage::with_generator(|t: &i64| *t, punctuated, Box::new(Seen(seen.clone())));
            for b in batches {
                stage.records(&mut b.to_vec()).unwrap();
            }
            let out = seen.lock().unwrap().clone();
            out
        };
        let whole = run(&[&[50, 100, 70, 200, 150, 100]]);
        assert_eq!(whole, ["r50", "r100", "w100", "r70", "r200", "w200", "r150", "r100"]);
        let single: Vec<&[i64]> = vec![&[50], &[100], &[70], &[200], &[150], &[100]];
        assert_eq!(run(&single), whole, "a lower or equal watermark never goes out again");
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
