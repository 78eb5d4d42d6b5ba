//! Global windows with triggers (Flink's `GlobalWindows` with a `Trigger`):
//! one window per key that holds every record of the key, and a trigger that
//! says when its aggregate goes out.
//!
//! ```
//! use weir_operators::aggregators::Sum;
//! use weir_operators::{FireMode, GlobalWindowAggregate, KeyedHarness, Timestamp, Trigger};
//! // Per key, the sum of the records seen, once event time ends (a bounded
//! // run with drain), as Flink's batch mode fires a global window.
//! let mut h = KeyedHarness::new(GlobalWindowAggregate {
//!     trigger: Trigger::EndOfEventTime,
//!     mode: FireMode::Purge,
//!     aggregator: Sum(|r: &i64| *r),
//! });
//! assert!(h.feed(|_| 1u8, [3, 4]).is_empty());
//! assert_eq!(h.advance_watermark(Timestamp::MAX), [(1, 7)]);
//! ```

use crate::keyed::{Aggregator, KeyedContext, KeyedProcess};
use crate::message::Timestamp;
use crate::operator::OperatorError;
use serde::{Deserialize, Serialize};

/// When a global window's aggregate goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    /// After every `n` records of the key (Flink's `CountTrigger`; with
    /// [`FireMode::Purge`] the count windows of `count_window_aggregate`).
    Count(u64),
    /// At the end of the processing-time interval (of this length in ms,
    /// aligned to multiples of it) in which a record arrived since the last
    /// firing (Flink's `ContinuousProcessingTimeTrigger`, but a key that
    /// receives nothing does not fire again and keeps no timer).
    ProcessingTime(i64),
    /// When event time ends: a bounded run with drain (`Watermark(MAX)`),
    /// as Flink fires global windows at the end of a bounded input.
    EndOfEventTime,
}

/// What a firing does to the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FireMode {
    /// Emits and starts over: each result covers the records since the last
    /// firing (Flink's `PurgingTrigger`).
    Purge,
    /// Emits and keeps the records: each result covers every record of the
    /// key so far (a running aggregate emitted at the trigger's pace).
    Accumulate,
}

/// A keyed global window: records are added to the key's one window and
/// `(key, result)` goes out whenever the [`Trigger`] fires. The window is
/// the key's value state (kept across restarts and bounded runs).
#[derive(Clone)]
pub struct GlobalWindowAggregate<A> {
    /// When the aggregate goes out.
    pub trigger: Trigger,
    /// Whether a firing starts a new window.
    pub mode: FireMode,
    /// The aggregation of the window's records.
    pub aggregator: A,
}

/// A key's global window: the accumulator, the records added since the last
/// firing, and the time of the timer that fires it next, if one is set.
pub type GlobalWindowState<Acc> = (Acc, u64, Option<i64>);

impl<A> GlobalWindowAggregate<A> {
    /// Emits the window's result and purges or keeps it.
    fn fire<K: Clone, I, O>(
        &self,
        key: &K,
        state: &mut Option<GlobalWindowState<A::Acc>>,
        out: &mut KeyedContext<'_, (K, O)>,
    ) where
        A: Aggregator<I, O>,
    {
        let Some((acc, since, timer)) = state.as_mut() else {
            return;
        };
        out.emit((key.clone(), self.aggregator.result(acc)));
        match self.mode {
            FireMode::Purge => *state = None,
            FireMode::Accumulate => {
                *since = 0;
                *timer = None;
            }
        }
    }
}

impl<K, I, O, A> KeyedProcess<K, I, (K, O)> for GlobalWindowAggregate<A>
where
    K: Clone,
    A: Aggregator<I, O> + Clone + Send + 'static,
{
    type State = GlobalWindowState<A::Acc>;

    fn process(
        &mut self,
        key: &K,
        state: &mut Option<Self::State>,
        record: I,
        ctx: &mut KeyedContext<'_, (K, O)>,
    ) -> Result<(), OperatorError> {
        let (acc, since, timer) = state.get_or_insert_with(|| (self.aggregator.create(), 0, None));
        self.aggregator.add(acc, &record);
        *since += 1;
        match self.trigger {
            Trigger::Count(n) => {
                if *since >= n.max(1) {
                    self.fire(key, state, ctx);
                }
            }
            Trigger::ProcessingTime(interval_ms) => {
                if timer.is_none() {
                    let interval = interval_ms.max(1);
                    let now = ctx.processing_time().0;
                    // The last instant of the interval `now` is in.
                    let at = (now - now.rem_euclid(interval)).saturating_add(interval - 1);
                    ctx.register_processing_timer(Timestamp(at), &[]);
                    *timer = Some(at);
                }
            }
            Trigger::EndOfEventTime => {
                if timer.is_none() {
                    ctx.register_event_timer(Timestamp::MAX, &[]);
                    *timer = Some(Timestamp::MAX.0);
                }
            }
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        key: &K,
        state: &mut Option<Self::State>,
        at: Timestamp,
        _namespace: &[u8],
        ctx: &mut KeyedContext<'_, (K, O)>,
    ) -> Result<(), OperatorError> {
        if self.trigger == Trigger::EndOfEventTime && state.as_ref().is_some_and(|s| s.2 == Some(at.0)) {
            self.fire(key, state, ctx);
        }
        Ok(())
    }

    fn on_processing_timer(
        &mut self,
        key: &K,
        state: &mut Option<Self::State>,
        at: Timestamp,
        _namespace: &[u8],
        ctx: &mut KeyedContext<'_, (K, O)>,
    ) -> Result<(), OperatorError> {
        if matches!(self.trigger, Trigger::ProcessingTime(_)) && state.as_ref().is_some_and(|s| s.2 == Some(at.0)) {
            self.fire(key, state, ctx);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregators::{Count, Sum};
    use crate::KeyedHarness;

    #[test]
    fn a_count_trigger_fires_every_n_records_purging_or_accumulating() {
        let mut purging = KeyedHarness::new(GlobalWindowAggregate {
            trigger: Trigger::Count(2),
            mode: FireMode::Purge,
            aggregator: Sum(|r: &i64| *r),
        });
        assert_eq!(purging.feed(|_| 0u8, [1, 2, 3, 4, 5]), [(0, 3), (0, 7)]);
        let mut accumulating = KeyedHarness::new(GlobalWindowAggregate {
            trigger: Trigger::Count(2),
            mode: FireMode::Accumulate,
            aggregator: Sum(|r: &i64| *r),
        });
        assert_eq!(accumulating.feed(|_| 0u8, [1, 2, 3, 4, 5]), [(0, 3), (0, 10)]);
        // The unfilled rest survives a restore.
        let mut restored = KeyedHarness::restore(
            GlobalWindowAggregate {
                trigger: Trigger::Count(2),
                mode: FireMode::Accumulate,
                aggregator: Sum(|r: &i64| *r),
            },
            &accumulating.snapshot().unwrap(),
        )
        .unwrap();
        assert_eq!(restored.feed(|_| 0u8, [6]), [(0, 21)]);
    }

    #[test]
    fn a_processing_time_trigger_fires_once_per_busy_interval() {
        let mut h = KeyedHarness::new(GlobalWindowAggregate {
            trigger: Trigger::ProcessingTime(100),
            mode: FireMode::Accumulate,
            aggregator: Count,
        });
        h.advance_processing_time(Timestamp(1_010));
        assert!(h.feed(|r: &u8| *r, [1, 1, 2]).is_empty());
        assert_eq!(h.processing_timers().len(), 2, "one timer per key");
        let mut fired = h.advance_processing_time(Timestamp(1_099));
        fired.sort_unstable();
        assert_eq!(fired, [(1, 2), (2, 1)]);
        // Nothing arrived: no firing and no timer.
        assert!(h.advance_processing_time(Timestamp(1_300)).is_empty());
        assert!(h.processing_timers().is_empty());
        // Key 1 again: a running count.
        assert!(h.feed(|r: &u8| *r, [1]).is_empty());
        assert_eq!(h.advance_processing_time(Timestamp(1_399)), [(1, 3)]);
    }

    #[test]
    fn an_end_of_event_time_trigger_fires_only_when_event_time_ends() {
        let mut h = KeyedHarness::new(GlobalWindowAggregate {
            trigger: Trigger::EndOfEventTime,
            mode: FireMode::Purge,
            aggregator: Count,
        });
        assert!(h.feed(|r: &u8| *r, [1, 2, 1]).is_empty());
        assert!(h.advance_watermark(Timestamp(1 << 60)).is_empty());
        let mut fired = h.advance_watermark(Timestamp::MAX);
        fired.sort_unstable();
        assert_eq!(fired, [(1, 2), (2, 1)]);
    }
}
