//! Keys, key groups and the fixed key hash.
//!
//! A key is hashed from its *encoded bytes* with a fixed function
//! ([`key_hash`]), never with std's randomly seeded hasher: a key must land in
//! the same key group in every process, run and version, or restored state is
//! lost. Key groups (`hash % max_parallelism`) are the unit in which keyed
//! state is assigned to subtasks; subtask `s` of `p` owns the contiguous range
//! of key groups computed by [`key_group_range`] (Flink's assignment).

/// Default number of key groups (the maximum parallelism of a keyed operator).
pub const DEFAULT_MAX_PARALLELISM: u16 = 128;

/// A key group: `key_hash(key bytes) % max_parallelism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyGroup(pub u16);

/// A key of keyed state and of `key_by`.
///
/// The encoding is part of the checkpoint format: it decides both the key group
/// and the bytes stored in RocksDB, so it must never change for a type.
/// Integers encode as fixed-width big-endian, strings and byte vectors as their
/// bytes.
pub trait StateKey: Clone + Eq + std::hash::Hash + Send + 'static {
    /// Appends the key's stable encoding to `out`.
    fn encode_key(&self, out: &mut Vec<u8>);
    /// Decodes a key written by [`StateKey::encode_key`]; `None` if malformed.
    fn decode_key(bytes: &[u8]) -> Option<Self>;
}

macro_rules! int_key {
    ($($t:ty),*) => {$(
        impl StateKey for $t {
            #[inline]
            fn encode_key(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }
            fn decode_key(bytes: &[u8]) -> Option<Self> {
                Some(<$t>::from_be_bytes(bytes.try_into().ok()?))
            }
        }
    )*};
}
int_key!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128);

impl StateKey for String {
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode_key(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

impl StateKey for Vec<u8> {
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode_key(bytes: &[u8]) -> Option<Self> {
        Some(bytes.to_vec())
    }
}

/// The fixed key hash: FNV-1a (64 bit) over the bytes, then the murmur3
/// `fmix64` finalizer so that keys differing in one byte spread over all key
/// groups. Frozen: changing it loses every restored keyed state.
#[inline]
pub fn key_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(h)
}

#[inline]
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// The key group of an encoded key.
#[inline]
pub fn key_group_of(encoded_key: &[u8], max_parallelism: u16) -> KeyGroup {
    KeyGroup((key_hash(encoded_key) % u64::from(max_parallelism.max(1))) as u16)
}

/// The subtask (of `parallelism`) that owns `group`.
#[inline]
pub fn subtask_for_key_group(group: KeyGroup, max_parallelism: u16, parallelism: usize) -> usize {
    usize::from(group.0) * parallelism / usize::from(max_parallelism.max(1))
}

/// The key groups owned by `subtask` of `parallelism`: `start..end`.
pub fn key_group_range(subtask: usize, max_parallelism: u16, parallelism: usize) -> std::ops::Range<u16> {
    let m = usize::from(max_parallelism);
    let start = (subtask * m).div_ceil(parallelism);
    let end = ((subtask + 1) * m).div_ceil(parallelism);
    (start as u16)..(end as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_frozen() {
        // These values are part of the checkpoint format: never change them.
        assert_eq!(key_hash(b""), fmix64(0xcbf2_9ce4_8422_2325));
        let mut k = Vec::new();
        42u64.encode_key(&mut k);
        assert_eq!(k, [0, 0, 0, 0, 0, 0, 0, 42]);
        assert_eq!(key_hash(&k), key_hash(&42u64.to_be_bytes()));
        assert_eq!(key_group_of(&k, 128), key_group_of(&42u64.to_be_bytes(), 128));
    }

    #[test]
    fn key_groups_spread_evenly() {
        let mut counts = [0u32; 128];
        let mut buf = Vec::new();
        for key in 0u64..128_000 {
            buf.clear();
            key.encode_key(&mut buf);
            counts[key_group_of(&buf, 128).0 as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }

    #[test]
    fn every_key_group_has_exactly_one_owner_and_ranges_agree() {
        for p in 1..=128usize {
            let mut owner = vec![usize::MAX; 128];
            for s in 0..p {
                for g in key_group_range(s, 128, p) {
                    assert_eq!(owner[g as usize], usize::MAX, "group {g} owned twice at p={p}");
                    owner[g as usize] = s;
                    assert_eq!(subtask_for_key_group(KeyGroup(g), 128, p), s, "p={p} g={g}");
                }
            }
            assert!(owner.iter().all(|&o| o != usize::MAX), "p={p}");
        }
    }
}
