//! The keyed stage's write-back cache: an open-addressing hash table from
//! key to state that can be told which keys come next.
//!
//! With many keys the record path is bound by memory latency: each record's
//! key lands on a cache line no CPU cache holds, and a lookup waits for it
//! (~100 ns here, more than the rest of the record's work). `std`'s map
//! cannot say where a key's entry lives before looking it up, so lookups
//! serialize on those misses. [`KeyCache::prefetch`] computes the slot of a
//! key a few records ahead and asks the CPU to load it, so the misses of a
//! batch overlap instead of adding up.
//!
//! Linear probing, at most 70 % full so a probe rarely goes past the first
//! slot; deletion (eviction) moves later entries of a cluster back instead
//! of leaving tombstones.

use crate::fxhash::FxHasher;
use std::hash::{Hash, Hasher};

/// Key → value, with [`KeyCache::prefetch`].
pub(crate) struct KeyCache<K, V> {
    slots: Vec<Option<(K, V)>>,
    len: usize,
    /// `64 - log2(slots.len())`: the slot of a key is the top bits of its hash.
    shift: u32,
}

const MIN_SLOTS: usize = 16;

impl<K: Hash + Eq, V> Default for KeyCache<K, V> {
    fn default() -> Self {
        Self::with_slots(MIN_SLOTS)
    }
}

impl<K: Hash + Eq, V> KeyCache<K, V> {
    fn with_slots(n: usize) -> Self {
        let mut slots = Vec::with_capacity(n);
        advise_huge_pages(&mut slots);
        slots.extend(std::iter::repeat_with(|| None).take(n));
        KeyCache {
            slots,
            len: 0,
            shift: 64 - n.trailing_zeros(),
        }
    }

    /// The first slot to probe for `key`: the high bits of its Fx hash
    /// (Fibonacci hashing: the low bits of a product mix poorly).
    #[inline]
    fn home(&self, key: &K) -> usize {
        let mut h = FxHasher::default();
        key.hash(&mut h);
        (h.finish() >> self.shift) as usize
    }

    #[inline]
    fn find(&self, key: &K) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            match &self.slots[i] {
                Some((k, _)) if k == key => return Ok(i),
                Some(_) => i = (i + 1) & mask,
                None => return Err(i),
            }
        }
    }

    /// Asks the CPU to start loading `key`'s slot: call it a few keys
    /// before the lookup.
    #[inline]
    pub(crate) fn prefetch(&self, key: &K) {
        let slot = &self.slots[self.home(key)];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint; it never faults, whatever the address.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>((slot as *const Option<(K, V)>).cast::<i8>());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The value of `key`.
    #[inline]
    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        match self.find(key) {
            Ok(i) => self.slots[i].as_mut().map(|(_, v)| v),
            Err(_) => None,
        }
    }

    /// Sets `key`'s value.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        match self.find(&key) {
            Ok(i) => self.slots[i] = Some((key, value)),
            Err(_) if self.grows_on_insert() => {
                self.grow();
                self.insert(key, value);
            }
            Err(i) => {
                self.slots[i] = Some((key, value));
                self.len += 1;
            }
        }
    }

    /// Doubles the table. The old table is given back to the kernel a few
    /// MiB at a time as its entries move, so memory peaks at the new table
    /// plus a little, not at both tables.
    fn grow(&mut self) {
        // Never dropped as a vector: released pages read as zeros, which
        // need not be valid entries (a panic in `hash` or `eq` leaks it).
        let mut old = std::mem::ManuallyDrop::new(std::mem::take(&mut self.slots));
        *self = Self::with_slots(old.len() * 2);
        let chunk = ((4 << 20) / std::mem::size_of::<Option<(K, V)>>().max(1)).max(1);
        let mut start = 0;
        while start < old.len() {
            let end = (start + chunk).min(old.len());
            for slot in &mut old[start..end] {
                if let Some((k, v)) = slot.take() {
                    self.insert(k, v);
                }
            }
            release_pages(&mut old[start..end]);
            start = end;
        }
        // SAFETY: every slot was emptied by `take` (nothing left to drop), and
        // released pages are never read again: only the allocation is freed.
        unsafe {
            old.set_len(0);
            std::mem::ManuallyDrop::drop(&mut old);
        }
    }

    /// Whether inserting one more key grows (and rehashes) the table.
    pub(crate) fn grows_on_insert(&self) -> bool {
        (self.len + 1) * 10 > self.slots.len() * 7
    }

    /// Number of slots (filled or not): positions for [`KeyCache::for_each_in`].
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Calls `f` on the entries in the slots `range` (slot positions stay
    /// valid until the table grows).
    pub(crate) fn for_each_in(&mut self, range: std::ops::Range<usize>, mut f: impl FnMut(&K, &mut V)) {
        let slots = self.slots.get_mut(range).unwrap_or_default();
        for (k, v) in slots.iter_mut().flatten() {
            f(k, v);
        }
    }

    /// Every entry.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.slots.iter().filter_map(|s| s.as_ref().map(|(k, v)| (k, v)))
    }

    /// Removes up to `n` entries for which `evictable` holds, looking at
    /// the slots from `cursor` on (wrapping) and passing over at most
    /// `scan` slots (once round the table at most); returns where to go on
    /// next time and how many slots it passed over. Slot positions change
    /// (see [`KeyCache::for_each_in`]).
    ///
    /// With `spread` > 1 it removes at most one entry per `spread` slots it
    /// passes. Linear probing needs the table evenly full: a cursor that
    /// empties the part of the table it passes leaves the part ahead of it
    /// nearly full (new keys land everywhere), and probe runs there grow to
    /// thousands of slots. Taking a bounded share per pass keeps the
    /// difference between the two small.
    pub(crate) fn evict(
        &mut self,
        cursor: usize,
        n: usize,
        scan: usize,
        spread: usize,
        mut evictable: impl FnMut(&V) -> bool,
    ) -> (usize, usize) {
        let count = self.slots.len();
        let mask = count - 1;
        let limit = scan.min(count);
        let (mut i, mut removed, mut passed) = (cursor & mask, 0, 0);
        while removed < n && passed < limit {
            if self.slots[i].as_ref().is_some_and(|(_, v)| evictable(v)) {
                // The slot now holds an entry moved back from later in its
                // cluster (never from before `i`), or nothing.
                self.remove_at(i);
                removed += 1;
                if spread > 1 {
                    i = (i + spread) & mask;
                    passed += spread;
                }
                // Else look at slot `i` again.
            } else {
                i = (i + 1) & mask;
                passed += 1;
            }
        }
        (i, passed)
    }

    /// Empties slot `i`, moving later entries of its cluster back so that
    /// every entry stays reachable from its home slot (no tombstones).
    fn remove_at(&mut self, mut i: usize) {
        let mask = self.slots.len() - 1;
        self.slots[i] = None;
        self.len -= 1;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let home = match &self.slots[j] {
                Some((k, _)) => self.home(k),
                None => return,
            };
            // The entry at `j` may fill the hole at `i` unless its home lies
            // cyclically in (i, j].
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                self.slots[i] = self.slots[j].take();
                i = j;
            }
        }
    }
}

/// Gives the whole pages inside `slots` back to the kernel. The caller
/// must not read `slots` again (released pages read as zeros, which need
/// not be a valid `T`), only free the allocation.
fn release_pages<T>(slots: &mut [T]) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = slots.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(slots);
        let (first, last) = ((start + PAGE - 1) & !(PAGE - 1), end & !(PAGE - 1));
        if last > first {
            // SAFETY: the range lies inside `slots`' allocation; MADV_DONTNEED
            // only drops its pages (the caller never reads them again).
            unsafe {
                libc::madvise(first as *mut libc::c_void, last - first, libc::MADV_DONTNEED);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = slots;
}

/// Asks Linux to back a large table with 2 MiB pages before it is first
/// touched: a lookup in a table of many MiB otherwise misses the TLB as
/// well as the cache (a page walk per key on top of the memory access).
fn advise_huge_pages<T>(table: &mut Vec<T>) {
    const HUGE: usize = 2 << 20;
    let bytes = table.capacity() * std::mem::size_of::<T>();
    if bytes < 2 * HUGE {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let start = table.as_mut_ptr() as usize;
        let aligned = (start + HUGE - 1) & !(HUGE - 1);
        let end = (start + bytes) & !(HUGE - 1);
        if end > aligned {
            // SAFETY: the range lies inside the vector's own allocation, and
            // MADV_HUGEPAGE changes only how it is backed, never its contents.
            unsafe {
                libc::madvise(aligned as *mut libc::c_void, end - aligned, libc::MADV_HUGEPAGE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::KeyCache;
    use std::collections::HashMap;

    #[test]
    fn eviction_keeps_every_other_entry_reachable() {
        let mut cache: KeyCache<u64, u64> = KeyCache::default();
        for k in 0..5000u64 {
            cache.insert(k, k * 2);
        }
        // Evict the odd values' keys in two rounds, from two cursors.
        let (cursor, _) = cache.evict(12345, 1000, usize::MAX, 1, |v| v % 4 == 2);
        cache.evict(cursor, usize::MAX, usize::MAX, 1, |v| v % 4 == 2);
        assert_eq!(cache.len(), 2500);
        for k in 0..5000u64 {
            assert_eq!(cache.get_mut(&k).copied(), (k % 2 == 0).then_some(k * 2), "key {k}");
        }
        cache.insert(7, 1);
        assert_eq!(cache.get_mut(&7).copied(), Some(1));
    }

    #[test]
    fn a_spread_eviction_takes_a_bounded_share_of_the_slots_it_passes() {
        let mut cache: KeyCache<u64, u64> = KeyCache::default();
        for k in 0..10_000u64 {
            cache.insert(k, k);
        }
        let slots = cache.slot_count();
        // Everything is evictable, but one per 8 slots passed at most.
        let (cursor, passed) = cache.evict(0, usize::MAX, 4096, 8, |_| true);
        assert!((4096..4096 + 8).contains(&passed), "passed {passed}");
        assert_eq!(cursor, passed % slots);
        let removed = 10_000 - cache.len();
        assert!(removed <= 4096 / 8 + 1 && removed > 0, "removed {removed}");
        // The rest stays reachable.
        let left = (0..10_000u64).filter(|k| cache.get_mut(k).is_some()).count();
        assert_eq!(left, cache.len());
        // A scan that finds nothing passes its whole budget, no more.
        assert_eq!(
            cache.evict(cursor, 5, 1000, 8, |_| false),
            ((cursor + 1000) % slots, 1000)
        );
    }

    #[test]
    fn behaves_like_a_map_through_growth_and_eviction() {
        let mut cache: KeyCache<u64, u64> = KeyCache::default();
        let mut model = HashMap::new();
        let mut x = 7u64;
        for round in 0..3 {
            for _ in 0..20_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let key = (x >> 33) % 5_000;
                cache.prefetch(&key);
                match cache.get_mut(&key) {
                    Some(v) => *v += 1,
                    None => cache.insert(key, round + 1),
                }
                *model.entry(key).or_insert(round) += 1;
            }
            assert_eq!(cache.len(), model.len());
            for (k, v) in &model {
                assert_eq!(cache.get_mut(k), Some(&mut v.clone()));
            }
            assert_eq!(cache.iter().count(), model.len());
            cache.evict(0, usize::MAX, usize::MAX, 1, |_| true);
            model.clear();
            assert_eq!(cache.get_mut(&1), None);
        }
    }
}
