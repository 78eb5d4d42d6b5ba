//! Which partitions a source subtask reads, and from which offset: pure
//! functions of the topics' metadata, the restored checkpoint and the
//! configured [`StartPosition`]. No I/O: the reader asks the broker for the
//! metadata, the watermarks and (for `Committed`/`Timestamp`) one offset per
//! partition, and passes the answers in.
//!
//! # Rules
//! 1. **Numbering.** Topics in the order given to the source, each topic's
//!    partitions ascending; partition number `i` belongs to subtask
//!    `i % parallelism` ([`plan`]).
//! 2. **Restore first.** A partition found in the restored checkpoint starts
//!    at its stored offset, looked up in the states of *all* subtasks: a
//!    partition added to an earlier topic shifts the numbering, so a
//!    partition may have been another subtask's in the last run.
//! 3. **Else the configured start**: earliest = log start, latest = high
//!    watermark, committed = the group's offset else earliest, timestamp =
//!    the first offset at or after it else latest, explicit offsets else
//!    earliest ([`resolve_start`]). A partition added since the checkpoint
//!    starts this way too.
//! 4. **Clamping.** Whatever the start, it is clamped into the partition's
//!    range `low..=high` (retention deleted the records, or the topic was
//!    recreated): below the log start reads from the log start, above the end
//!    from the end. The reader logs a warning naming both offsets. A
//!    *restored* offset below the log start means unread input was deleted
//!    ([`Start::lost_from`]): the reader fails unless the job chose to skip
//!    lost input.
//! 5. **Bounded runs** end every partition at the high watermark (last stable
//!    offset under read_committed) seen at start.
//! 6. Restored partitions of topics no longer subscribed are ignored.

use super::offset::NextOffset;
use super::position::{KafkaPosition, PartitionPosition};
use std::collections::HashMap;

/// Where a partition starts when the checkpoint has no offset for it.
#[derive(Debug, Clone, PartialEq)]
pub enum StartPosition {
    /// The oldest retained record.
    Earliest,
    /// After the newest record.
    Latest,
    /// The consumer group's committed offset, else the oldest record.
    Committed,
    /// The first record with a timestamp at or after this (ms since the epoch).
    Timestamp(i64),
    /// These positions (topic, partition, next offset to read); other
    /// partitions from the oldest record.
    Offsets(Vec<(String, i32, NextOffset)>),
}

/// One partition of a subscribed topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TopicPartition {
    /// Topic.
    pub(crate) topic: String,
    /// Partition id.
    pub(crate) partition: i32,
}

/// The positions of a restored checkpoint, from every subtask, by partition.
#[derive(Debug, Default)]
pub(crate) struct Restored(HashMap<(String, i32), PartitionPosition>);

impl Restored {
    /// Indexes the positions of all subtasks; should two hold the same
    /// partition, the later one wins (as it always has).
    pub(crate) fn new(positions: impl IntoIterator<Item = KafkaPosition>) -> Self {
        Restored(
            positions
                .into_iter()
                .flat_map(|p| p.partitions)
                .map(|p| ((p.topic.clone(), p.partition), p))
                .collect(),
        )
    }

    /// Decodes the states of every subtask; `None` when one is not a Kafka position.
    pub(crate) fn decode(states: &[Vec<u8>]) -> Option<Self> {
        let positions: Option<Vec<KafkaPosition>> = states.iter().map(|b| KafkaPosition::decode(b)).collect();
        positions.map(Restored::new)
    }

    fn get(&self, tp: &TopicPartition) -> Option<&PartitionPosition> {
        self.0.get(&(tp.topic.clone(), tp.partition))
    }
}

/// Where a partition's start offset comes from, before the broker is asked.
/// `Committed` and `Timestamp` need one lookup each (see [`resolve_start`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartFrom {
    /// The offset stored in the restored checkpoint.
    Restored(NextOffset),
    /// The log start offset.
    Earliest,
    /// The high watermark.
    Latest,
    /// The consumer group's committed offset.
    Committed,
    /// The first offset with a timestamp at or after this (ms).
    Timestamp(i64),
    /// An offset given in [`StartPosition::Offsets`].
    Explicit(NextOffset),
}

/// A partition this subtask reads, before any offset is asked of the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Planned {
    /// The partition.
    pub(crate) tp: TopicPartition,
    /// Where its start comes from.
    pub(crate) from: StartFrom,
    /// Its restored watermark, if the checkpoint had one.
    pub(crate) watermark: Option<i64>,
    /// Its restored upstream shards' watermarks, if the checkpoint had them.
    pub(crate) upstreams: Option<super::source::Upstreams>,
}

/// The partitions subtask `subtask` of `parallelism` owns (rules 1, 2, 3, 6),
/// given each subscribed topic's partition ids in subscription order.
pub(crate) fn plan(
    topics: &[(String, Vec<i32>)],
    subtask: usize,
    parallelism: usize,
    restored: &Restored,
    start: &StartPosition,
) -> Vec<Planned> {
    owned_partitions(topics, subtask, parallelism)
        .into_iter()
        .map(|tp| {
            let stored = restored.get(&tp);
            Planned {
                from: match stored {
                    Some(p) => StartFrom::Restored(p.next_offset),
                    None => configured_start(&tp, start),
                },
                watermark: stored.and_then(|p| p.watermark),
                upstreams: stored.and_then(|p| p.upstreams.clone()),
                tp,
            }
        })
        .collect()
}

/// Numbers every partition (topics in order, partitions ascending) and keeps
/// those with number `% parallelism == subtask`.
fn owned_partitions(topics: &[(String, Vec<i32>)], subtask: usize, parallelism: usize) -> Vec<TopicPartition> {
    let parallelism = parallelism.max(1);
    topics
        .iter()
        .flat_map(|(topic, ids)| {
            let mut ids = ids.clone();
            ids.sort_unstable();
            ids.into_iter().map(move |partition| TopicPartition {
                topic: topic.clone(),
                partition,
            })
        })
        .enumerate()
        .filter(|(i, _)| i % parallelism == subtask)
        .map(|(_, tp)| tp)
        .collect()
}

fn configured_start(tp: &TopicPartition, start: &StartPosition) -> StartFrom {
    match start {
        StartPosition::Earliest => StartFrom::Earliest,
        StartPosition::Latest => StartFrom::Latest,
        StartPosition::Committed => StartFrom::Committed,
        StartPosition::Timestamp(ts) => StartFrom::Timestamp(*ts),
        StartPosition::Offsets(list) => list
            .iter()
            .find(|(t, p, _)| *t == tp.topic && *p == tp.partition)
            .map_or(StartFrom::Earliest, |(_, _, o)| StartFrom::Explicit(*o)),
    }
}

/// A partition's offsets at start: the log start and the high watermark
/// (the last stable offset under read_committed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Watermarks {
    /// The oldest retained offset.
    pub(crate) low: NextOffset,
    /// The end: the offset the next written record will get.
    pub(crate) high: NextOffset,
}

/// A partition's concrete start, so that a checkpoint is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Start {
    /// The first offset to read.
    pub(crate) offset: NextOffset,
    /// Where a bounded run stops.
    pub(crate) end: Option<NextOffset>,
    /// The offset asked for, when clamping moved it (rule 4).
    pub(crate) clamped_from: Option<NextOffset>,
    /// A restored offset below the log start: records from it up to
    /// `offset` were deleted before the job read them (rule 4).
    pub(crate) lost_from: Option<NextOffset>,
}

/// Resolves `from` to an offset in `marks` (rules 3, 4, 5). `looked_up` is
/// the broker's answer for `Committed` (the committed offset) and
/// `Timestamp` (`offsets_for_times`), `None` when it named no offset; it is
/// ignored for the other kinds.
pub(crate) fn resolve_start(from: StartFrom, marks: Watermarks, looked_up: Option<NextOffset>, bounded: bool) -> Start {
    let Watermarks { low, high } = marks;
    let wanted = match from {
        StartFrom::Restored(o) | StartFrom::Explicit(o) => o,
        StartFrom::Earliest => low,
        StartFrom::Latest => high,
        StartFrom::Committed => looked_up.unwrap_or(low),
        StartFrom::Timestamp(_) => looked_up.unwrap_or(high),
    };
    // `high.max(low)`: a partition whose end is below its start (seen
    // briefly after a truncation) starts at its log start.
    let offset = wanted.clamp(low, high.max(low));
    Start {
        offset,
        end: bounded.then_some(high),
        clamped_from: (offset != wanted).then_some(wanted),
        lost_from: (matches!(from, StartFrom::Restored(_)) && wanted < low).then_some(wanted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(offset: i64) -> NextOffset {
        NextOffset::new(offset)
    }

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }

    fn topics(list: &[(&str, i32)]) -> Vec<(String, Vec<i32>)> {
        list.iter().map(|(t, n)| (t.to_string(), (0..*n).collect())).collect()
    }

    fn owned(list: &[(&str, i32)], subtask: usize, parallelism: usize) -> Vec<(String, i32)> {
        plan(
            &topics(list),
            subtask,
            parallelism,
            &Restored::default(),
            &StartPosition::Earliest,
        )
        .into_iter()
        .map(|p| (p.tp.topic, p.tp.partition))
        .collect()
    }

    fn names(list: &[(&str, i32)]) -> Vec<(String, i32)> {
        list.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    fn position(topic: &str, partition: i32, next: i64, watermark: Option<i64>) -> PartitionPosition {
        PartitionPosition {
            topic: topic.into(),
            partition,
            next_offset: o(next),
            watermark,
            upstreams: None,
        }
    }

    fn restored(positions: Vec<Vec<PartitionPosition>>) -> Restored {
        Restored::new(positions.into_iter().map(|partitions| KafkaPosition { partitions }))
    }

    const MARKS: Watermarks = Watermarks {
        low: NextOffset::new(10),
        high: NextOffset::new(50),
    };

    #[test]
    fn partitions_are_numbered_topic_by_topic_in_the_given_order() {
        assert_eq!(
            owned(&[("b", 2), ("a", 3)], 0, 1),
            names(&[("b", 0), ("b", 1), ("a", 0), ("a", 1), ("a", 2)])
        );
    }

    #[test]
    fn partition_ids_are_sorted_whatever_order_the_metadata_lists_them_in() {
        let meta = vec![("t".to_string(), vec![2, 0, 1])];
        let got: Vec<i32> = plan(&meta, 0, 2, &Restored::default(), &StartPosition::Earliest)
            .into_iter()
            .map(|p| p.tp.partition)
            .collect();
        assert_eq!(got, vec![0, 2]);
    }

    #[test]
    fn at_parallelism_one_the_subtask_owns_every_partition() {
        assert_eq!(owned(&[("t", 4)], 0, 1).len(), 4);
    }

    #[test]
    fn numbers_are_dealt_round_robin_across_topics() {
        // Numbers: a/0=0 a/1=1 a/2=2 b/0=3 b/1=4.
        let list = [("a", 3), ("b", 2)];
        assert_eq!(owned(&list, 0, 2), names(&[("a", 0), ("a", 2), ("b", 1)]));
        assert_eq!(owned(&list, 1, 2), names(&[("a", 1), ("b", 0)]));
        assert_eq!(owned(&list, 0, 3), names(&[("a", 0), ("b", 0)]));
        assert_eq!(owned(&list, 1, 3), names(&[("a", 1), ("b", 1)]));
        assert_eq!(owned(&list, 2, 3), names(&[("a", 2)]));
    }

    #[test]
    fn every_partition_has_exactly_one_owner_at_every_parallelism() {
        let list = [("a", 5), ("b", 1), ("c", 7)];
        for parallelism in 1..=16 {
            let mut all: Vec<(String, i32)> = (0..parallelism).flat_map(|s| owned(&list, s, parallelism)).collect();
            all.sort();
            let mut want = owned(&list, 0, 1);
            want.sort();
            assert_eq!(all, want, "parallelism {parallelism}");
        }
    }

    #[test]
    fn more_subtasks_than_partitions_leaves_some_idle() {
        assert_eq!(owned(&[("t", 2)], 2, 4), vec![]);
        assert_eq!(owned(&[("t", 2)], 3, 4), vec![]);
    }

    #[test]
    fn a_parallelism_of_zero_is_taken_as_one() {
        assert_eq!(owned(&[("t", 3)], 0, 0).len(), 3);
    }

    #[test]
    fn a_restored_partition_starts_at_its_stored_offset_with_its_watermark() {
        let r = restored(vec![vec![position("t", 0, 42, Some(1_000))]]);
        let p = plan(&topics(&[("t", 1)]), 0, 1, &r, &StartPosition::Latest);
        assert_eq!(
            p,
            vec![Planned {
                tp: tp("t", 0),
                from: StartFrom::Restored(o(42)),
                watermark: Some(1_000),
                upstreams: None,
            }]
        );
    }

    #[test]
    fn a_restored_offset_is_found_in_another_subtasks_state() {
        // Last run: p = 2 over t/0, t/1 (subtask 1 had t/1). Now t has a
        // third partition and "a" comes first: numbering moved.
        let r = restored(vec![vec![position("t", 0, 5, None)], vec![position("t", 1, 7, None)]]);
        let p = plan(&topics(&[("a", 1), ("t", 3)]), 0, 2, &r, &StartPosition::Earliest);
        // Numbers: a/0=0 t/0=1 t/1=2 t/2=3; subtask 0 owns a/0 and t/1.
        assert_eq!(p[1].tp, tp("t", 1));
        assert_eq!(p[1].from, StartFrom::Restored(o(7)));
    }

    #[test]
    fn a_partition_added_since_the_checkpoint_starts_from_the_configured_position() {
        let r = restored(vec![vec![position("t", 0, 5, Some(9)), position("t", 1, 6, None)]]);
        let p = plan(&topics(&[("t", 3)]), 0, 1, &r, &StartPosition::Latest);
        assert_eq!(p[2].tp, tp("t", 2));
        assert_eq!(p[2].from, StartFrom::Latest);
        assert_eq!(p[2].watermark, None, "no restored watermark for a new partition");
    }

    #[test]
    fn restored_topics_no_longer_subscribed_are_ignored() {
        let r = restored(vec![vec![position("gone", 0, 99, None), position("t", 0, 3, None)]]);
        let p = plan(&topics(&[("t", 1)]), 0, 1, &r, &StartPosition::Earliest);
        assert_eq!(
            p.iter().map(|p| (&p.tp, p.from)).collect::<Vec<_>>(),
            vec![(&tp("t", 0), StartFrom::Restored(o(3)))]
        );
    }

    #[test]
    fn without_a_checkpoint_the_configured_start_applies() {
        let t = topics(&[("t", 2)]);
        let none = Restored::default();
        let from = |start: StartPosition| -> Vec<StartFrom> {
            plan(&t, 0, 1, &none, &start).into_iter().map(|p| p.from).collect()
        };
        assert_eq!(from(StartPosition::Earliest), vec![StartFrom::Earliest; 2]);
        assert_eq!(from(StartPosition::Latest), vec![StartFrom::Latest; 2]);
        assert_eq!(from(StartPosition::Committed), vec![StartFrom::Committed; 2]);
        assert_eq!(from(StartPosition::Timestamp(7)), vec![StartFrom::Timestamp(7); 2]);
    }

    #[test]
    fn explicit_offsets_apply_to_their_partition_and_others_start_earliest() {
        let start = StartPosition::Offsets(vec![("t".into(), 1, o(5)), ("other".into(), 0, o(9))]);
        let p = plan(&topics(&[("t", 2)]), 0, 1, &Restored::default(), &start);
        assert_eq!(p[0].from, StartFrom::Earliest);
        assert_eq!(p[1].from, StartFrom::Explicit(o(5)));
    }

    #[test]
    fn a_restored_offset_wins_over_an_explicit_one() {
        let r = restored(vec![vec![position("t", 0, 20, None)]]);
        let start = StartPosition::Offsets(vec![("t".into(), 0, o(5))]);
        let p = plan(&topics(&[("t", 1)]), 0, 1, &r, &start);
        assert_eq!(p[0].from, StartFrom::Restored(o(20)));
    }

    #[test]
    fn the_later_subtask_state_wins_for_a_partition_stored_twice() {
        let r = restored(vec![vec![position("t", 0, 1, None)], vec![position("t", 0, 2, None)]]);
        let p = plan(&topics(&[("t", 1)]), 0, 1, &r, &StartPosition::Earliest);
        assert_eq!(p[0].from, StartFrom::Restored(o(2)));
    }

    #[test]
    fn undecodable_restored_state_is_refused() {
        let good = KafkaPosition::default().encode();
        assert!(Restored::decode(std::slice::from_ref(&good)).is_some());
        assert!(Restored::decode(&[good, b"not kafka".to_vec()]).is_none());
        assert!(Restored::decode(&[]).is_some(), "no checkpoint: nothing restored");
    }

    #[test]
    fn earliest_and_latest_are_the_watermarks() {
        assert_eq!(resolve_start(StartFrom::Earliest, MARKS, None, false).offset, o(10));
        assert_eq!(resolve_start(StartFrom::Latest, MARKS, None, false).offset, o(50));
    }

    #[test]
    fn committed_uses_the_groups_offset_else_earliest() {
        assert_eq!(
            resolve_start(StartFrom::Committed, MARKS, Some(o(30)), false).offset,
            o(30)
        );
        assert_eq!(resolve_start(StartFrom::Committed, MARKS, None, false).offset, o(10));
    }

    #[test]
    fn a_timestamp_uses_the_found_offset_else_latest() {
        let at = StartFrom::Timestamp(1_700_000_000_000);
        assert_eq!(resolve_start(at, MARKS, Some(o(33)), false).offset, o(33));
        assert_eq!(resolve_start(at, MARKS, None, false).offset, o(50));
    }

    #[test]
    fn a_lookup_is_ignored_for_the_kinds_that_need_none() {
        let start = resolve_start(StartFrom::Restored(o(20)), MARKS, Some(o(40)), false);
        assert_eq!(start.offset, o(20));
        assert_eq!(
            resolve_start(StartFrom::Earliest, MARKS, Some(o(40)), false).offset,
            o(10)
        );
    }

    #[test]
    fn an_offset_in_range_is_kept_as_it_is() {
        for offset in [10, 11, 49, 50] {
            let start = resolve_start(StartFrom::Restored(o(offset)), MARKS, None, false);
            assert_eq!((start.offset, start.clamped_from), (o(offset), None), "{offset}");
        }
    }

    #[test]
    fn a_restored_offset_below_the_log_start_starts_at_the_log_start() {
        let start = resolve_start(StartFrom::Restored(o(3)), MARKS, None, false);
        assert_eq!(start.offset, o(10), "records deleted by retention are gone");
        assert_eq!(start.clamped_from, Some(o(3)));
    }

    #[test]
    fn a_restored_offset_past_the_end_starts_at_the_end() {
        let start = resolve_start(StartFrom::Restored(o(80)), MARKS, None, false);
        assert_eq!(start.offset, o(50), "the topic was recreated with fewer records");
        assert_eq!(start.clamped_from, Some(o(80)));
    }

    #[test]
    fn only_a_restored_offset_below_the_log_start_is_lost_input() {
        let marks = Watermarks {
            low: o(10),
            high: o(50),
        };
        let restored = resolve_start(StartFrom::Restored(o(3)), marks, None, false);
        assert_eq!((restored.offset, restored.lost_from), (o(10), Some(o(3))));
        let at_start = resolve_start(StartFrom::Restored(o(10)), marks, None, false);
        assert_eq!(at_start.lost_from, None, "the log start itself lost nothing");
        let explicit = resolve_start(StartFrom::Explicit(o(3)), marks, None, false);
        assert_eq!(explicit.lost_from, None, "a configured start was never read input");
        let past_end = resolve_start(StartFrom::Restored(o(80)), marks, None, false);
        assert_eq!(past_end.lost_from, None);
    }

    #[test]
    fn explicit_and_committed_offsets_are_clamped_too() {
        let start = resolve_start(StartFrom::Explicit(o(0)), MARKS, None, false);
        assert_eq!((start.offset, start.clamped_from), (o(10), Some(o(0))));
        let start = resolve_start(StartFrom::Committed, MARKS, Some(o(99)), false);
        assert_eq!((start.offset, start.clamped_from), (o(50), Some(o(99))));
    }

    #[test]
    fn an_end_below_the_log_start_clamps_to_the_log_start() {
        let odd = Watermarks { low: o(10), high: o(4) };
        let start = resolve_start(StartFrom::Restored(o(7)), odd, None, false);
        assert_eq!(start.offset, o(10));
        assert_eq!(start.clamped_from, Some(o(7)));
    }

    #[test]
    fn a_bounded_run_ends_at_the_high_watermark_and_an_unbounded_one_never() {
        assert_eq!(resolve_start(StartFrom::Earliest, MARKS, None, true).end, Some(o(50)));
        assert_eq!(resolve_start(StartFrom::Earliest, MARKS, None, false).end, None);
    }

    #[test]
    fn an_empty_partition_starts_and_ends_at_the_same_offset() {
        let empty = Watermarks { low: o(0), high: o(0) };
        let start = resolve_start(StartFrom::Latest, empty, None, true);
        assert_eq!((start.offset, start.end, start.clamped_from), (o(0), Some(o(0)), None));
    }
}
