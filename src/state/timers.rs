//! The timers of one time domain of a keyed task: all in memory, grouped by
//! time, and the net changes since the last snapshot for the next one.
//!
//! # Layout
//! A pending timer is its time plus `u32 key length | key | namespace`
//! ([`KeyAndNamespace`]), one allocation. Timers are grouped in one bucket
//! per time (a hash set inside), so registering is a B-tree search among the
//! distinct times (few: a window's end is shared by every key) and a hash
//! insert, not a comparison of byte strings against thousands of others.
//! Timers of one time fire in key order, so the output order does not
//! depend on hash iteration.
//!
//! # What a snapshot writes
//! Timers fire in time order and all due timers fire at once, so after the
//! watermark (or the clock) reached `t` no stored timer at or before `t` is
//! pending. A snapshot therefore deletes the stored timers that fired with
//! one range deletion up to the newest such `t`, and writes only the timers
//! registered since the last snapshot plus point deletions of the stored
//! timers removed without firing. A timer registered and fired between two
//! snapshots (a window opened and closed) is never written at all.

use crate::fxhash::FxBuildHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use weir_operators::StateKey;

/// The most entries a new bucket is sized for in advance.
const BUCKET_HINT_MAX: usize = 4096;

/// A timer without its time: `u32 key length (big-endian) | key | namespace`.
pub(crate) type KeyAndNamespace = Box<[u8]>;

/// Pending timers of one time: whether each is in RocksDB as of the last snapshot.
type Bucket = HashMap<KeyAndNamespace, bool, FxBuildHasher>;

/// The stored form of a timer's time: sign bit flipped, big-endian, so the
/// column family is ordered by time.
pub(crate) fn encode_time(at: i64) -> [u8; 8] {
    ((at as u64) ^ (1 << 63)).to_be_bytes()
}

/// Splits a stored timer into its time and the rest; `None` if malformed.
pub(crate) fn decode_timer(bytes: &[u8]) -> Option<(i64, KeyAndNamespace)> {
    let at = (u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?) ^ (1 << 63)) as i64;
    let rest = bytes.get(8..)?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    rest.get(4..4 + len)?;
    Some((at, rest.into()))
}

/// The key part of a [`KeyAndNamespace`].
pub(crate) fn key_of(timer: &[u8]) -> &[u8] {
    let len = timer
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_be_bytes) as usize;
    timer.get(4..4 + len).unwrap_or(&[])
}

/// The namespace part of a [`KeyAndNamespace`].
pub(crate) fn namespace_of(timer: &[u8]) -> &[u8] {
    timer.get(4 + key_of(timer).len()..).unwrap_or(&[])
}

/// What a snapshot writes for one time domain.
#[derive(Default)]
pub(crate) struct TimerChanges {
    /// Delete every stored timer at or before this time: all of them fired.
    pub(crate) delete_through: Option<i64>,
    /// Stored timers removed without firing.
    pub(crate) deleted: Vec<(i64, KeyAndNamespace)>,
    /// Timers to put, as stored keys (`time | key and namespace`) one after
    /// another in `arena`, each ending at the matching offset in `ends`.
    pub(crate) arena: Vec<u8>,
    pub(crate) ends: Vec<usize>,
}

impl TimerChanges {
    /// The stored keys of the timers to put.
    pub(crate) fn puts(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter().copied()).map(|(s, e)| &self.arena[s..e])
    }
}

/// The timers of one time domain of a task.
#[derive(Default)]
pub(crate) struct Timers {
    buckets: BTreeMap<i64, Bucket>,
    /// Times whose bucket holds timers not in RocksDB yet.
    unstored: BTreeSet<i64>,
    /// Stored timers deleted (not fired) since the last snapshot.
    deleted: Vec<(i64, KeyAndNamespace)>,
    /// The bucket being fired, sorted, and the index of the next timer;
    /// a timer deleted before its turn is marked `true` (cancelled).
    firing: Vec<(KeyAndNamespace, bool)>,
    firing_at: i64,
    firing_next: usize,
    /// Every timer due at this time has fired (`i64::MIN`: none yet).
    fired_through: i64,
    /// What the last snapshot's range deletion covered.
    deleted_through: i64,
    /// Size of the last bucket fired: the size hint of a new bucket.
    last_bucket_len: usize,
    /// Reused to encode a timer before looking it up.
    scratch: Vec<u8>,
    /// The domain's current time: the watermark, or the wall clock of the batch.
    pub(crate) now: i64,
    /// Event time: the newest watermark below `Timestamp::MAX` (what a
    /// snapshot keeps: a drained run's end of time is not carried over).
    pub(crate) data_watermark: i64,
}

impl Timers {
    /// Timers registered and not fired (nor deleted).
    pub(crate) fn pending(&self) -> usize {
        let firing = self.firing[self.firing_next.min(self.firing.len())..]
            .iter()
            .filter(|(_, cancelled)| !cancelled)
            .count();
        let buckets: usize = self
            .buckets
            .iter()
            .filter(|(at, _)| **at != self.firing_at || self.firing.is_empty())
            .map(|(_, b)| b.len())
            .sum();
        firing + buckets
    }

    /// Timers restored from a snapshot (all stored), with the domain at `now`.
    pub(crate) fn restored(stored: Vec<(i64, KeyAndNamespace)>, now: i64) -> Self {
        let mut timers = Timers {
            fired_through: i64::MIN,
            deleted_through: i64::MIN,
            firing_at: i64::MIN,
            now,
            data_watermark: now,
            ..Timers::default()
        };
        for (at, timer) in stored {
            timers.buckets.entry(at).or_default().insert(timer, true);
        }
        timers
    }

    fn encode(&mut self, key: &impl StateKey, namespace: &[u8]) {
        self.scratch.clear();
        self.scratch.extend_from_slice(&[0; 4]);
        key.encode_key(&mut self.scratch);
        let len = (self.scratch.len() - 4) as u32;
        self.scratch[..4].copy_from_slice(&len.to_be_bytes());
        self.scratch.extend_from_slice(namespace);
    }

    /// Where the timer just encoded is in the bucket being fired, if it is
    /// still to fire there.
    fn find_firing(&self, at: i64) -> Option<usize> {
        if at != self.firing_at || self.firing_next >= self.firing.len() {
            return None;
        }
        let rest = &self.firing[self.firing_next..];
        rest.binary_search_by(|(t, _)| (**t).cmp(&self.scratch[..]))
            .ok()
            .map(|i| self.firing_next + i)
    }

    /// Registers a timer of `key` (no-op if it is pending).
    pub(crate) fn register(&mut self, key: &impl StateKey, at: i64, namespace: &[u8]) {
        self.encode(key, namespace);
        if let Some(i) = self.find_firing(at) {
            self.firing[i].1 = false; // still to fire; cancelled before: fires again
            return;
        }
        // Sized for the last bucket fired (a window's end is shared by as
        // many keys as the last window's was), at most `BUCKET_HINT_MAX`: a
        // big bucket must not make every later one big (sessions, timeouts).
        let expected = self.last_bucket_len.min(BUCKET_HINT_MAX);
        let bucket = self
            .buckets
            .entry(at)
            .or_insert_with(|| Bucket::with_capacity_and_hasher(expected, FxBuildHasher::default()));
        if !bucket.contains_key(&self.scratch[..]) {
            bucket.insert(self.scratch.as_slice().into(), false);
            self.unstored.insert(at);
        }
    }

    /// Forgets a pending timer (no-op if there is none).
    pub(crate) fn delete(&mut self, key: &impl StateKey, at: i64, namespace: &[u8]) {
        self.encode(key, namespace);
        if let Some(i) = self.find_firing(at) {
            // At or before `now`: the range deletion after firing covers it.
            self.firing[i].1 = true;
            return;
        }
        let Some(bucket) = self.buckets.get_mut(&at) else {
            return;
        };
        if let Some((timer, stored)) = bucket.remove_entry(&self.scratch[..]) {
            if stored {
                self.deleted.push((at, timer));
            }
            if bucket.is_empty() {
                self.buckets.remove(&at);
            }
        }
    }

    /// The time of the earliest pending timer.
    pub(crate) fn next_time(&self) -> Option<i64> {
        let firing = (self.firing_next < self.firing.len()).then_some(self.firing_at);
        match (firing, self.buckets.first_key_value().map(|(t, _)| *t)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Removes and returns the next timer due at `now` (in time order, then
    /// key order); `None` when none is left, and then every timer due at
    /// `now` has fired.
    pub(crate) fn pop_due(&mut self, now: i64) -> Option<(i64, KeyAndNamespace)> {
        loop {
            while self.firing_next < self.firing.len() {
                let (timer, cancelled) = std::mem::take(&mut self.firing[self.firing_next]);
                self.firing_next += 1;
                if !cancelled {
                    return Some((self.firing_at, timer));
                }
            }
            // Timers registered while firing go into the buckets, so the
            // earliest bucket may be earlier than or equal to the one fired.
            match self.buckets.first_key_value() {
                Some((&at, _)) if at <= now => {
                    let bucket = self.buckets.remove(&at).unwrap_or_default();
                    self.unstored.remove(&at);
                    self.last_bucket_len = bucket.len();
                    self.start_firing(at, bucket);
                }
                _ => {
                    self.firing.clear();
                    self.firing_next = 0;
                    self.fired_through = self.fired_through.max(now);
                    return None;
                }
            }
        }
    }

    /// Makes `bucket` the one being fired, in key order. The sort compares
    /// the first 16 bytes of each timer held inline (length and most keys)
    /// and reads a timer's bytes only on a tie, so it does not chase a
    /// pointer per comparison.
    fn start_firing(&mut self, at: i64, bucket: Bucket) {
        let mut sorted: Vec<(u128, KeyAndNamespace)> = bucket
            .into_keys()
            .map(|t| {
                let mut head = [0u8; 16];
                let n = t.len().min(16);
                head[..n].copy_from_slice(&t[..n]);
                (u128::from_be_bytes(head), t)
            })
            .collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        self.firing.clear();
        self.firing.extend(sorted.into_iter().map(|(_, t)| (t, false)));
        self.firing_at = at;
        self.firing_next = 0;
    }

    /// The timer `ahead` places after the next one to fire in the current
    /// bucket, if any: the stage prefetches its key's state.
    pub(crate) fn peek_firing(&self, ahead: usize) -> Option<&[u8]> {
        self.firing.get(self.firing_next + ahead).map(|(t, _)| &t[..])
    }

    /// The changes since the last snapshot; from now on they count as stored.
    pub(crate) fn take_changes(&mut self) -> TimerChanges {
        let mut changes = TimerChanges {
            deleted: std::mem::take(&mut self.deleted),
            ..TimerChanges::default()
        };
        if self.fired_through > self.deleted_through {
            changes.delete_through = Some(self.fired_through);
            self.deleted_through = self.fired_through;
        }
        // Pending timers at or before the range deletion (registered after
        // their time had fired, still waiting for the next watermark) are
        // written again after it, stored or not.
        let mut times: Vec<i64> = self.buckets.range(..=self.deleted_through).map(|(t, _)| *t).collect();
        times.extend(std::mem::take(&mut self.unstored).range(self.deleted_through.saturating_add(1)..));
        for at in times {
            let Some(bucket) = self.buckets.get_mut(&at) else {
                continue;
            };
            let rewrite = at <= self.deleted_through;
            for (timer, stored) in bucket.iter_mut() {
                if rewrite || !*stored {
                    *stored = true;
                    changes.arena.extend_from_slice(&encode_time(at));
                    changes.arena.extend_from_slice(timer);
                    changes.ends.push(changes.arena.len());
                }
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::{key_of, namespace_of, Timers};

    fn fire_all(t: &mut Timers, now: i64) -> Vec<(i64, Vec<u8>, Vec<u8>)> {
        std::iter::from_fn(|| t.pop_due(now))
            .map(|(at, k)| (at, key_of(&k).to_vec(), namespace_of(&k).to_vec()))
            .collect()
    }

    fn puts(t: &mut Timers) -> (Option<i64>, usize, usize) {
        let c = t.take_changes();
        (c.delete_through, c.ends.len(), c.deleted.len())
    }

    #[test]
    fn timers_fire_in_time_then_key_order_once() {
        let mut t = Timers::restored(Vec::new(), i64::MIN);
        t.register(&b"b".to_vec(), 20, b"w");
        t.register(&b"a".to_vec(), 20, b"w");
        t.register(&b"c".to_vec(), 10, b"w");
        t.register(&b"a".to_vec(), 20, b"w"); // again: still one
        t.register(&b"a".to_vec(), 30, b"w");
        assert_eq!(t.next_time(), Some(10));
        let fired = fire_all(&mut t, 20);
        let expected = [(10, b"c"), (20, b"a"), (20, b"b")].map(|(at, k)| (at, k.to_vec(), b"w".to_vec()));
        assert_eq!(fired, expected);
        assert_eq!(t.next_time(), Some(30));
    }

    #[test]
    fn a_timer_deleted_or_registered_while_its_time_fires_is_honoured() {
        let mut t = Timers::restored(Vec::new(), i64::MIN);
        for k in [b"a", b"b", b"c", b"e"] {
            t.register(&k.to_vec(), 10, b"");
        }
        assert_eq!(t.pop_due(10).map(|(at, _)| at), Some(10)); // fires a
        t.delete(&b"e".to_vec(), 10, b""); // e has not fired yet: it must not
        t.register(&b"b".to_vec(), 10, b""); // b is about to fire: not twice
        t.delete(&b"c".to_vec(), 10, b""); // deleted, then registered again: fires
        t.register(&b"c".to_vec(), 10, b"");
        t.register(&b"d".to_vec(), 5, b""); // a new due timer fires in this round
        let rest = fire_all(&mut t, 10);
        let keys: Vec<_> = rest.iter().map(|(_, k, _)| k.clone()).collect();
        assert_eq!(keys, [b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]);
    }

    #[test]
    fn snapshots_write_only_net_changes_and_one_range_deletion_for_fired_timers() {
        let mut t = Timers::restored(Vec::new(), i64::MIN);
        // Opened and fired between two snapshots: nothing but the range.
        t.register(&b"k".to_vec(), 10, b"w");
        fire_all(&mut t, 10);
        assert_eq!(puts(&mut t), (Some(10), 0, 0));
        // Registered and kept: one put; nothing the next time.
        t.register(&b"k".to_vec(), 20, b"w");
        assert_eq!(puts(&mut t), (None, 1, 0));
        assert_eq!(puts(&mut t), (None, 0, 0));
        // Stored and deleted: a point deletion; stored and fired: the range.
        t.register(&b"j".to_vec(), 30, b"w");
        puts(&mut t);
        t.delete(&b"j".to_vec(), 30, b"w");
        fire_all(&mut t, 25);
        assert_eq!(puts(&mut t), (Some(25), 0, 1));
        // Registered at a time already fired: written again after the range.
        t.register(&b"late".to_vec(), 5, b"");
        assert_eq!(puts(&mut t), (None, 1, 0));
        fire_all(&mut t, 26);
        t.register(&b"late2".to_vec(), 7, b"");
        assert_eq!(puts(&mut t), (Some(26), 1, 0));
    }

    #[test]
    fn restored_timers_are_stored() {
        let mut t = Timers::restored(vec![(5, vec![0, 0, 0, 1, b'k'].into())], 0);
        assert_eq!(puts(&mut t), (None, 0, 0));
        t.delete(&b"k".to_vec(), 5, b"");
        assert_eq!(puts(&mut t), (None, 0, 1));
    }
}
