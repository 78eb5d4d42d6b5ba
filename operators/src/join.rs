//! Keyed two-input joins. Both inputs travel as one stream of [`Either`]
//! (`Stream::connect` in the graph API), partitioned by the join key, so
//! both sides of a key meet in one subtask and its keyed state:
//!
//! - [`InnerJoin`]: unbounded inner join; every matching pair exactly once,
//!   whatever the arrival order (both sides are kept in map state forever:
//!   bound the input or the key space).
//! - [`WindowJoin`]: the records of both sides that fall in the same event-time
//!   window (tumbling or sliding), handed to a function when the window fires.
//! - [`IntervalJoin`]: pairs with `right.ts` in `[left.ts + lower, left.ts +
//!   upper]`; each side's records are dropped from state once no future
//!   record of the other side can match them (by the watermark).

use crate::keyed::{KeyedContext, KeyedProcess, StateValue};
use crate::message::Timestamp;
use crate::operator::OperatorError;
use crate::window::{Assigner, Window};
use crate::window_ops::{open_window, OpenWindows, Windowed};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// A record of one of two inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Either<L, R> {
    /// From the first (left) input.
    Left(L),
    /// From the second (right) input.
    Right(R),
}

const LEFT: &str = "join-left";
const RIGHT: &str = "join-right";

/// Unbounded keyed inner join: emits `join(key, left, right)` once for every
/// pair of a left and a right record of one key, whichever came first.
///
/// ```
/// use weir_operators::{Either, InnerJoin, KeyedHarness};
/// // Persons (id, name) and auctions (seller, item), joined on the person id.
/// let mut h = KeyedHarness::new(InnerJoin {
///     join: |id: &u32, p: &(u32, String), a: &(u32, u64)| (*id, p.1.clone(), a.1),
/// });
/// let key = |e: &Either<(u32, String), (u32, u64)>| match e {
///     Either::Left(p) => p.0,
///     Either::Right(a) => a.0,
/// };
/// let out = h.feed(key, [Either::Right((1, 10)), Either::Left((1, "Ann".into())), Either::Right((1, 11))]);
/// assert_eq!(out, vec![(1, "Ann".to_string(), 10), (1, "Ann".to_string(), 11)]);
/// ```
#[derive(Clone)]
pub struct InnerJoin<F> {
    /// Builds the output of one matching pair.
    pub join: F,
}

impl<K, L, R, O, F> KeyedProcess<K, Either<L, R>, O> for InnerJoin<F>
where
    L: StateValue,
    R: StateValue,
    F: FnMut(&K, &L, &R) -> O + Clone + Send + 'static,
{
    type State = (u64, u64);
    fn process(
        &mut self,
        key: &K,
        state: &mut Option<(u64, u64)>,
        record: Either<L, R>,
        ctx: &mut KeyedContext<'_, O>,
    ) -> Result<(), OperatorError> {
        inner_join(&mut self.join, key, state, record, ctx)
    }
}

/// The join itself; the counts in the value state say whether the other side
/// has anything, so a key with one side only never scans.
fn inner_join<K, L: StateValue, R: StateValue, O>(
    join: &mut impl FnMut(&K, &L, &R) -> O,
    key: &K,
    state: &mut Option<(u64, u64)>,
    record: Either<L, R>,
    ctx: &mut KeyedContext<'_, O>,
) -> Result<(), OperatorError> {
    let counts = state.get_or_insert((0, 0));
    match record {
        Either::Left(l) => {
            if counts.1 > 0 {
                for (_, r) in ctx.map::<u64, R>(RIGHT).entries()? {
                    ctx.emit(join(key, &l, &r));
                }
            }
            ctx.map::<u64, L>(LEFT).insert(&counts.0, &l)?;
            counts.0 += 1;
        }
        Either::Right(r) => {
            if counts.0 > 0 {
                for (_, l) in ctx.map::<u64, L>(LEFT).entries()? {
                    ctx.emit(join(key, &l, &r));
                }
            }
            ctx.map::<u64, R>(RIGHT).insert(&counts.1, &r)?;
            counts.1 += 1;
        }
    }
    Ok(())
}

/// Window join (Flink's `join(...).window(...)` as a co-group): the records of
/// both sides of a key in one event-time window are buffered; when the
/// window fires and both sides have records, `function(key, window, lefts,
/// rights, out)` runs once (records in arrival order) and each output
/// becomes a [`Windowed::Result`]. A record whose windows have all fired goes
/// out as [`Windowed::Late`].
///
/// The buffers live in the key's value state, next to the open windows:
/// between checkpoints a record is appended in the state cache (no encoding,
/// no RocksDB), and a firing window hands its buffers over without a read.
/// A checkpoint encodes a key's whole buffers when it changed, so this suits
/// windows of up to thousands of records per key (a join's usual shape);
/// for more, buffer in map state with a [`KeyedProcess`] of your own.
#[derive(Clone)]
pub struct WindowJoin<W, TL, TR, F> {
    /// The window assigner (tumbling or sliding).
    pub assigner: W,
    /// Event time of a left record.
    pub left_time: TL,
    /// Event time of a right record.
    pub right_time: TR,
    /// Called per window with both sides.
    pub function: F,
}

/// The records of one window of a [`WindowJoin`] so far, per side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinBuffers<L, R> {
    /// Left records in arrival order.
    pub left: Vec<L>,
    /// Right records in arrival order.
    pub right: Vec<R>,
}

impl<K, L, R, O, W, TL, TR, F> KeyedProcess<K, Either<L, R>, (K, Windowed<O, Either<L, R>>)>
    for WindowJoin<W, TL, TR, F>
where
    K: Clone,
    L: StateValue,
    R: StateValue,
    O: Send + 'static,
    W: Assigner,
    TL: Fn(&L) -> i64 + Clone + Send + 'static,
    TR: Fn(&R) -> i64 + Clone + Send + 'static,
    F: FnMut(&K, Window, Vec<L>, Vec<R>, &mut Vec<O>) + Clone + Send + 'static,
{
    /// Open windows with the records of each side.
    type State = OpenWindows<JoinBuffers<L, R>>;

    fn process(
        &mut self,
        key: &K,
        state: &mut Option<Self::State>,
        record: Either<L, R>,
        ctx: &mut KeyedContext<'_, (K, Windowed<O, Either<L, R>>)>,
    ) -> Result<(), OperatorError> {
        let ts = match &record {
            Either::Left(l) => (self.left_time)(l),
            Either::Right(r) => (self.right_time)(r),
        };
        let watermark = ctx.watermark().0;
        let mut windows: SmallVec<[Window; 4]> = SmallVec::new();
        self.assigner.for_each_window(ts, |w| {
            if w.max_timestamp().0 > watermark {
                windows.push(w);
            }
        });
        let Some(last) = windows.pop() else {
            ctx.emit((key.clone(), Windowed::Late(record)));
            return Ok(());
        };
        let open = state.get_or_insert_with(OpenWindows::new);
        let empty = || JoinBuffers {
            left: Vec::new(),
            right: Vec::new(),
        };
        // A copy for every window but the last, which takes the record.
        for w in windows {
            let i = open_window(open, &w, w.max_timestamp().0, empty, ctx);
            let buffers = &mut open[i].acc;
            match &record {
                Either::Left(l) => buffers.left.push(l.clone()),
                Either::Right(r) => buffers.right.push(r.clone()),
            }
        }
        let i = open_window(open, &last, last.max_timestamp().0, empty, ctx);
        let buffers = &mut open[i].acc;
        match record {
            Either::Left(l) => buffers.left.push(l),
            Either::Right(r) => buffers.right.push(r),
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        key: &K,
        state: &mut Option<Self::State>,
        _at: Timestamp,
        namespace: &[u8],
        ctx: &mut KeyedContext<'_, (K, Windowed<O, Either<L, R>>)>,
    ) -> Result<(), OperatorError> {
        let window = Window::from_namespace(namespace)
            .ok_or_else(|| OperatorError("malformed window namespace in a timer".into()))?;
        let Some(open) = state.as_mut() else { return Ok(()) };
        let Ok(i) = open.binary_search_by(|o| (o.start, o.end).cmp(&(window.start, window.end))) else {
            return Ok(());
        };
        let done = open.remove(i);
        if open.is_empty() {
            *state = None;
        }
        let JoinBuffers { left, right } = done.acc;
        if !left.is_empty() && !right.is_empty() {
            let mut outputs = Vec::new();
            (self.function)(key, window, left, right, &mut outputs);
            for value in outputs {
                ctx.emit((key.clone(), Windowed::Result { window, value }));
            }
        }
        Ok(())
    }
}

/// Interval join (Flink's `intervalJoin().between(lower, upper)`): emits
/// `join(key, left, right)` for every pair with `right_ts` in
/// `[left_ts + lower, left_ts + upper]`, once, in whatever order they arrive.
/// A left record leaves state when the watermark passes `left_ts + upper`, a
/// right one when it passes `right_ts - lower`.
#[derive(Clone)]
pub struct IntervalJoin<TL, TR, F> {
    /// Lower bound of `right_ts - left_ts` (ms, inclusive; may be negative).
    pub lower: i64,
    /// Upper bound of `right_ts - left_ts` (ms, inclusive).
    pub upper: i64,
    /// Event time of a left record.
    pub left_time: TL,
    /// Event time of a right record.
    pub right_time: TR,
    /// Builds the output of one matching pair.
    pub join: F,
}

/// Map key of a buffered record: time (sign flipped, so it sorts) then sequence.
fn timed_slot(ts: i64, seq: u64) -> u128 {
    (u128::from((ts as u64) ^ (1 << 63)) << 64) | u128::from(seq)
}

fn slot_time(slot: u128) -> i64 {
    (((slot >> 64) as u64) ^ (1 << 63)) as i64
}

const LEFT_SIDE: u8 = 0;
const RIGHT_SIDE: u8 = 1;

impl<K, L, R, O, TL, TR, F> KeyedProcess<K, Either<L, R>, O> for IntervalJoin<TL, TR, F>
where
    L: StateValue,
    R: StateValue,
    O: Send + 'static,
    TL: Fn(&L) -> i64 + Clone + Send + 'static,
    TR: Fn(&R) -> i64 + Clone + Send + 'static,
    F: FnMut(&K, &L, &R) -> O + Clone + Send + 'static,
{
    /// Records buffered so far (a sequence for unique map keys).
    type State = u64;

    fn process(
        &mut self,
        key: &K,
        state: &mut Option<u64>,
        record: Either<L, R>,
        ctx: &mut KeyedContext<'_, O>,
    ) -> Result<(), OperatorError> {
        let seq = state.get_or_insert(0);
        let watermark = ctx.watermark().0;
        match record {
            Either::Left(l) => {
                let a = (self.left_time)(&l);
                for (slot, r) in ctx.map::<u128, R>(RIGHT).entries()? {
                    let b = slot_time(slot);
                    if a.saturating_add(self.lower) <= b && b <= a.saturating_add(self.upper) {
                        ctx.emit((self.join)(key, &l, &r));
                    }
                }
                let expires = a.saturating_add(self.upper).saturating_add(1);
                if expires > watermark {
                    ctx.map::<u128, L>(LEFT).insert(&timed_slot(a, *seq), &l)?;
                    ctx.register_event_timer(Timestamp(expires), &[LEFT_SIDE]);
                }
            }
            Either::Right(r) => {
                let b = (self.right_time)(&r);
                for (slot, l) in ctx.map::<u128, L>(LEFT).entries()? {
                    let a = slot_time(slot);
                    if a.saturating_add(self.lower) <= b && b <= a.saturating_add(self.upper) {
                        ctx.emit((self.join)(key, &l, &r));
                    }
                }
                let expires = b.saturating_sub(self.lower).saturating_add(1);
                if expires > watermark {
                    ctx.map::<u128, R>(RIGHT).insert(&timed_slot(b, *seq), &r)?;
                    ctx.register_event_timer(Timestamp(expires), &[RIGHT_SIDE]);
                }
            }
        }
        *seq += 1;
        Ok(())
    }

    fn on_timer(
        &mut self,
        _key: &K,
        _state: &mut Option<u64>,
        at: Timestamp,
        namespace: &[u8],
        ctx: &mut KeyedContext<'_, O>,
    ) -> Result<(), OperatorError> {
        // Drop the records of that side that can no longer match.
        match namespace.first() {
            Some(&LEFT_SIDE) => expire::<L>(ctx, LEFT, at.0.saturating_sub(self.upper)),
            Some(&RIGHT_SIDE) => expire::<R>(ctx, RIGHT, at.0.saturating_add(self.lower)),
            _ => Err(OperatorError("malformed interval-join timer".into())),
        }
    }
}

/// Removes the records of one interval-join side older than `bound`.
fn expire<V: StateValue>(ctx: &mut KeyedContext<'_, impl Sized>, side: &str, bound: i64) -> Result<(), OperatorError> {
    let mut map = ctx.map::<u128, V>(side);
    for (slot, _) in map.entries()? {
        if slot_time(slot) >= bound {
            break; // sorted by time
        }
        map.remove(&slot)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::KeyedHarness;
    use crate::window::Tumbling;

    type In = Either<(u8, i64), (u8, i64)>;

    fn key(e: &In) -> u8 {
        match e {
            Either::Left(l) => l.0,
            Either::Right(r) => r.0,
        }
    }

    #[test]
    fn inner_join_emits_every_pair_once_whatever_the_order() {
        let join = |_: &u8, l: &(u8, i64), r: &(u8, i64)| (l.1, r.1);
        let records: Vec<In> = vec![
            Either::Right((1, 10)),
            Either::Right((1, 11)),
            Either::Left((1, 1)),
            Either::Left((2, 2)),
            Either::Left((1, 3)),
            Either::Right((1, 12)),
            Either::Right((3, 30)),
        ];
        let mut expected = vec![(1, 10), (1, 11), (1, 12), (3, 10), (3, 11), (3, 12)];
        expected.sort();
        // Every order of arrival gives the same pairs.
        for rotation in 0..records.len() {
            let mut h = KeyedHarness::new(InnerJoin { join });
            let mut input = records.clone();
            input.rotate_left(rotation);
            let mut got = h.feed(key, input);
            got.sort();
            assert_eq!(got, expected, "rotation {rotation}");
        }
    }

    #[test]
    fn window_join_groups_both_sides_of_a_window() {
        fn count_pairs(_k: &u8, w: Window, l: Vec<(u8, i64)>, r: Vec<(u8, i64)>, out: &mut Vec<(i64, usize)>) {
            out.push((w.start, l.len() * r.len()));
        }
        type F = fn(&u8, Window, Vec<(u8, i64)>, Vec<(u8, i64)>, &mut Vec<(i64, usize)>);
        let t = |x: &(u8, i64)| x.1;
        let mut h = KeyedHarness::new(WindowJoin {
            assigner: Tumbling::of(10),
            left_time: t,
            right_time: t,
            function: count_pairs as F,
        });
        h.feed(
            key,
            [
                Either::Left((1, 1)),
                Either::Right((1, 2)),
                Either::Right((1, 9)),
                Either::Left((1, 15)), // window [10, 20) has no right: no output
                Either::Right((2, 3)), // key 2 has no left
            ],
        );
        let fired = h.advance_watermark(Timestamp::MAX);
        let w = Window { start: 0, end: 10 };
        assert_eq!(
            fired,
            vec![(
                1,
                Windowed::Result {
                    window: w,
                    value: (0, 2)
                }
            )]
        );
        assert!(h.state.is_empty());
        let late = h.feed(key, [Either::Left((1, 4))]);
        assert_eq!(late, vec![(1, Windowed::Late(Either::Left((1, 4))))]);
    }

    /// A record whose encoding starts with a large number (not a length).
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Click {
        user: u64,
        at: i64,
        page: String,
    }

    #[test]
    fn interval_join_cleanup_reads_struct_records() {
        let t = |c: &Click| c.at;
        let mut h = KeyedHarness::new(IntervalJoin {
            lower: 0,
            upper: 10,
            left_time: t,
            right_time: t,
            join: |_: &u64, l: &Click, r: &Click| (l.page.clone(), r.page.clone()),
        });
        let click = |at: i64, page: &str| Click {
            user: 1_000_000,
            at,
            page: page.into(),
        };
        let key = |e: &Either<Click, Click>| match e {
            Either::Left(c) | Either::Right(c) => c.user,
        };
        h.feed(key, [Either::Left(click(5, "home")), Either::Right(click(30, "late"))]);
        // Both cleanup timers fire and decode what they remove.
        assert!(h.advance_watermark(Timestamp(100)).is_empty());
        assert!(
            h.feed(key, [Either::Right(click(12, "cart"))]).is_empty(),
            "left 5 expired"
        );
    }

    #[test]
    fn interval_join_matches_the_bounds_and_forgets_expired_records() {
        let t = |x: &(u8, i64)| x.1;
        let mut h = KeyedHarness::new(IntervalJoin {
            lower: -2,
            upper: 3,
            left_time: t,
            right_time: t,
            join: |_: &u8, l: &(u8, i64), r: &(u8, i64)| (l.1, r.1),
        });
        let mut got = h.feed(
            key,
            [
                Either::Right((1, 8)), // matches left 10 (8 >= 10 - 2)
                Either::Left((1, 10)),
                Either::Right((1, 13)), // matches 10 (13 <= 10 + 3)
                Either::Right((1, 14)), // too late for 10
                Either::Right((1, 7)),  // too early for 10
            ],
        );
        got.sort();
        assert_eq!(got, vec![(10, 8), (10, 13)]);
        // Watermark 14: left 10 expired (10 + 3 < 14), so a right at 13 finds nothing.
        h.advance_watermark(Timestamp(14));
        assert!(h.feed(key, [Either::Right((1, 13))]).is_empty());
        // Right 14 is still kept (a left at 16 matches it: 14 >= 16 - 2).
        assert_eq!(h.feed(key, [Either::Left((1, 16))]), vec![(16, 14)]);
    }
}
