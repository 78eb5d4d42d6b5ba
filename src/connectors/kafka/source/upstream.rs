//! A partition that other jobs' shards write into (a repartition topic of
//! a distributed job): their watermarks and idleness, merged.
//!
//! Each upstream shard writes control records into every partition it
//! feeds; the partition's event time is the minimum over the upstream
//! shards that are neither idle nor ended, as a task's is over its inputs.
//! The count of upstream shards travels in every control record, so a
//! partition knows whom it waits for once any of them spoke.
//!
//! A bounded upstream shard that reached the end of its input partition
//! says so with the offset it ended at; the partition is complete once
//! every upstream shard ended at (or past) its input partition's current
//! end (see [`super::KafkaSource::upstream_input`]).

use serde::{Deserialize, Serialize};

/// A record that steers the reader instead of carrying data (see
/// [`super::KafkaSource::control`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Upstream shard `upstream` (of `upstreams`) has event time `at` (ms):
    /// none of its later records is older.
    Watermark {
        /// The upstream shard's index.
        upstream: u32,
        /// How many upstream shards write into the partition.
        upstreams: u32,
        /// Its watermark.
        at: i64,
    },
    /// Upstream shard `upstream` has nothing to read: it stops holding
    /// event time back until its next watermark.
    Idle {
        /// The upstream shard's index.
        upstream: u32,
        /// How many upstream shards write into the partition.
        upstreams: u32,
    },
    /// Upstream shard `upstream` read its input partition up to `offset`
    /// (a bounded run ended) and wrote everything before this record.
    End {
        /// The upstream shard's index.
        upstream: u32,
        /// How many upstream shards write into the partition.
        upstreams: u32,
        /// The next offset of its input partition it would have read.
        offset: i64,
    },
}

/// What the upstream shards of one partition told it; kept in checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstreams {
    /// Per upstream shard: its newest watermark, if it sent one.
    pub watermarks: Vec<Option<i64>>,
    /// Per upstream shard: idle since its last watermark.
    pub idle: Vec<bool>,
    /// Per upstream shard: the input offset it ended at, if it ended.
    pub ends: Vec<Option<i64>>,
}

/// A partition's event time from its upstream shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Merged {
    /// An active upstream shard has not sent a watermark: hold back.
    Unknown,
    /// The minimum over the active upstream shards.
    At(i64),
    /// Every upstream shard is idle.
    Idle,
}

impl Upstreams {
    /// Takes one control record.
    pub(crate) fn apply(&mut self, control: Control) {
        let (Control::Watermark {
            upstream, upstreams, ..
        }
        | Control::Idle { upstream, upstreams }
        | Control::End {
            upstream, upstreams, ..
        }) = control;
        // More upstream shards than known (the upstream topic grew): wait
        // for the new ones too.
        let n = (upstreams.max(upstream + 1)) as usize;
        if self.watermarks.len() < n {
            self.watermarks.resize(n, None);
        }
        self.idle.resize(self.watermarks.len(), false);
        self.ends.resize(self.watermarks.len(), None);
        let i = upstream as usize;
        match control {
            Control::Watermark { at, .. } => {
                // Never backwards: an upstream shard restored from an older
                // checkpoint repeats event time it had passed.
                self.watermarks[i] = Some(self.watermarks[i].map_or(at, |w| w.max(at)));
                self.idle[i] = false;
                // It runs again (a later run, or a restart of a finished
                // shard): its end is the one it will send next.
                self.ends[i] = None;
            }
            Control::Idle { .. } => self.idle[i] = true,
            Control::End { offset, .. } => self.ends[i] = Some(self.ends[i].map_or(offset, |e| e.max(offset))),
        }
    }

    /// Each upstream shard's end offset, once every one of them ended.
    pub(crate) fn all_ended(&self) -> Option<Vec<i64>> {
        if self.watermarks.is_empty() {
            return None;
        }
        self.ends.iter().copied().collect()
    }

    /// The partition's event time.
    pub(crate) fn merged(&self) -> Merged {
        if self.watermarks.is_empty() {
            return Merged::Unknown;
        }
        let mut min: Option<i64> = None;
        for ((w, idle), end) in self.watermarks.iter().zip(&self.idle).zip(&self.ends) {
            if *idle || end.is_some() {
                continue;
            }
            match w {
                Some(w) => min = Some(min.map_or(*w, |m| m.min(*w))),
                None => return Merged::Unknown,
            }
        }
        min.map_or(Merged::Idle, Merged::At)
    }
}

/// Whether every upstream shard ended at or past the current end of its
/// input partition (`input_end(u)`): an input that grew since a shard
/// ended waits for that shard's next end.
///
/// # Errors
/// The first end that cannot be read.
pub(crate) fn reached_input_end<E>(ends: &[i64], mut input_end: impl FnMut(i32) -> Result<i64, E>) -> Result<bool, E> {
    for (u, end) in ends.iter().enumerate() {
        if *end < input_end(u as i32)? {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wm(upstream: u32, at: i64) -> Control {
        Control::Watermark {
            upstream,
            upstreams: 3,
            at,
        }
    }

    #[test]
    fn event_time_is_the_minimum_over_active_upstream_shards() {
        let mut u = Upstreams::default();
        assert_eq!(u.merged(), Merged::Unknown);
        u.apply(wm(0, 100));
        u.apply(wm(2, 50));
        // Shard 1 has not spoken: hold back.
        assert_eq!(u.merged(), Merged::Unknown);
        u.apply(wm(1, 70));
        assert_eq!(u.merged(), Merged::At(50));
        // An idle shard does not stall the others.
        u.apply(Control::Idle {
            upstream: 2,
            upstreams: 3,
        });
        assert_eq!(u.merged(), Merged::At(70));
        // It comes back with its next watermark.
        u.apply(wm(2, 60));
        assert_eq!(u.merged(), Merged::At(60));
        // Never backwards per shard.
        u.apply(wm(2, 10));
        assert_eq!(u.merged(), Merged::At(60));
        for i in 0..3 {
            u.apply(Control::Idle {
                upstream: i,
                upstreams: 3,
            });
        }
        assert_eq!(u.merged(), Merged::Idle);
    }

    #[test]
    fn a_partition_knows_its_upstreams_ends_once_all_ended() {
        let mut u = Upstreams::default();
        assert_eq!(u.all_ended(), None);
        u.apply(wm(0, 100));
        u.apply(Control::End {
            upstream: 1,
            upstreams: 3,
            offset: 40,
        });
        assert_eq!(u.all_ended(), None);
        // An ended shard no longer holds event time back.
        u.apply(wm(2, 70));
        assert_eq!(u.merged(), Merged::At(70));
        // A shard that speaks again is no longer ended.
        u.apply(wm(1, 80));
        assert_eq!(u.merged(), Merged::At(70));
        u.apply(Control::End {
            upstream: 1,
            upstreams: 3,
            offset: 40,
        });
        for (upstream, offset) in [(0, 10), (2, 30), (1, 20)] {
            u.apply(Control::End {
                upstream,
                upstreams: 3,
                offset,
            });
        }
        // The furthest end of each shard.
        assert_eq!(u.all_ended(), Some(vec![10, 40, 30]));
        assert_eq!(u.merged(), Merged::Idle);
    }

    #[test]
    fn a_partition_is_complete_when_each_upstream_ended_at_its_inputs_end() {
        let input = [10i64, 20];
        let at = |u: i32| Ok::<i64, ()>(input[u as usize]);
        assert_eq!(reached_input_end(&[10, 20], at), Ok(true));
        // Input 1 grew past where its shard ended.
        assert_eq!(reached_input_end(&[10, 19], at), Ok(false));
        assert_eq!(reached_input_end(&[10, 20], |_| Err("unreachable")), Err("unreachable"));
    }

    #[test]
    fn a_grown_upstream_is_waited_for() {
        let mut u = Upstreams::default();
        u.apply(Control::Watermark {
            upstream: 0,
            upstreams: 1,
            at: 5,
        });
        assert_eq!(u.merged(), Merged::At(5));
        u.apply(Control::Watermark {
            upstream: 0,
            upstreams: 2,
            at: 6,
        });
        assert_eq!(u.merged(), Merged::Unknown);
        u.apply(Control::Watermark {
            upstream: 1,
            upstreams: 2,
            at: 9,
        });
        assert_eq!(u.merged(), Merged::At(6));
    }
}
