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

    /// Appends the key as one *component* of a composite key (a tuple, an
    /// `Option`): self-delimiting, so the next component can follow. The
    /// default is a `u32` big-endian length and [`StateKey::encode_key`];
    /// fixed-width types write their bytes only, and strings and byte vectors
    /// an order-preserving escaped form (`0x00` as `0x00 0xFF`, ended by
    /// `0x00 0x01`). Frozen like `encode_key`.
    fn encode_component(&self, out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        self.encode_key(out);
        let len = (out.len() - at - 4) as u32;
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Decodes a component written by [`StateKey::encode_component`] from the
    /// front of `bytes`: the key and the bytes it took; `None` if malformed.
    fn decode_component(bytes: &[u8]) -> Option<(Self, usize)> {
        let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let key = Self::decode_key(bytes.get(4..4 + len)?)?;
        Some((key, 4 + len))
    }
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
            #[inline]
            fn encode_component(&self, out: &mut Vec<u8>) {
                self.encode_key(out);
            }
            fn decode_component(bytes: &[u8]) -> Option<(Self, usize)> {
                const N: usize = std::mem::size_of::<$t>();
                Some((<$t>::from_be_bytes(bytes.get(..N)?.try_into().ok()?), N))
            }
        }
    )*};
}
int_key!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128);

impl StateKey for bool {
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode_key(bytes: &[u8]) -> Option<Self> {
        match bytes {
            [0] => Some(false),
            [1] => Some(true),
            _ => None,
        }
    }
    fn encode_component(&self, out: &mut Vec<u8>) {
        self.encode_key(out);
    }
    fn decode_component(bytes: &[u8]) -> Option<(Self, usize)> {
        Some((Self::decode_key(bytes.get(..1)?)?, 1))
    }
}

impl StateKey for char {
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&u32::from(*self).to_be_bytes());
    }
    fn decode_key(bytes: &[u8]) -> Option<Self> {
        char::from_u32(u32::from_be_bytes(bytes.try_into().ok()?))
    }
    fn encode_component(&self, out: &mut Vec<u8>) {
        self.encode_key(out);
    }
    fn decode_component(bytes: &[u8]) -> Option<(Self, usize)> {
        Some((Self::decode_key(bytes.get(..4)?)?, 4))
    }
}

/// Byte strings inside a composite key: `0x00` escaped as `0x00 0xFF`, the
/// end as `0x00 0x01`, so that components sort as their bytes do and a
/// string never runs into the next component.
fn encode_escaped(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 1]);
}

/// The bytes of an escaped component and the length it took.
fn decode_escaped(bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        match *bytes.get(i)? {
            0 => match *bytes.get(i + 1)? {
                0xFF => out.push(0),
                1 => return Some((out, i + 2)),
                _ => return None,
            },
            b => {
                out.push(b);
                i += 1;
                continue;
            }
        }
        i += 2;
    }
}

impl StateKey for String {
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode_key(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
    fn encode_component(&self, out: &mut Vec<u8>) {
        encode_escaped(self.as_bytes(), out);
    }
    fn decode_component(bytes: &[u8]) -> Option<(Self, usize)> {
        let (raw, used) = decode_escaped(bytes)?;
        Some((String::from_utf8(raw).ok()?, used))
    }
}

impl StateKey for Vec<u8> {
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode_key(bytes: &[u8]) -> Option<Self> {
        Some(bytes.to_vec())
    }
    fn encode_component(&self, out: &mut Vec<u8>) {
        encode_escaped(self, out);
    }
    fn decode_component(bytes: &[u8]) -> Option<(Self, usize)> {
        decode_escaped(bytes)
    }
}

/// `None` as `0x00`, `Some(k)` as `0x01` and `k` as a component: `None`
/// sorts first.
impl<T: StateKey> StateKey for Option<T> {
    fn encode_key(&self, out: &mut Vec<u8>) {
        self.encode_component(out);
    }
    fn decode_key(bytes: &[u8]) -> Option<Self> {
        let (key, used) = Self::decode_component(bytes)?;
        (used == bytes.len()).then_some(key)
    }
    fn encode_component(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(k) => {
                out.push(1);
                k.encode_component(out);
            }
        }
    }
    fn decode_component(bytes: &[u8]) -> Option<(Self, usize)> {
        match *bytes.first()? {
            0 => Some((None, 1)),
            1 => {
                let (k, used) = T::decode_component(&bytes[1..])?;
                Some((Some(k), 1 + used))
            }
            _ => None,
        }
    }
}

/// Tuples: their elements as components, one after another (so a tuple of
/// integers and strings sorts element by element).
macro_rules! tuple_key {
    ($($name:ident)+) => {
        impl<$($name: StateKey),+> StateKey for ($($name,)+) {
            #[allow(non_snake_case)]
            fn encode_key(&self, out: &mut Vec<u8>) {
                let ($($name,)+) = self;
                $($name.encode_component(out);)+
            }
            fn decode_key(bytes: &[u8]) -> Option<Self> {
                let (key, used) = Self::decode_component(bytes)?;
                (used == bytes.len()).then_some(key)
            }
            fn encode_component(&self, out: &mut Vec<u8>) {
                self.encode_key(out);
            }
            #[allow(non_snake_case)]
            fn decode_component(bytes: &[u8]) -> Option<(Self, usize)> {
                let mut at = 0;
                $(
                    let ($name, used) = $name::decode_component(bytes.get(at..)?)?;
                    at += used;
                )+
                Some((($($name,)+), at))
            }
        }
    };
}
tuple_key!(A B);
tuple_key!(A B C);
tuple_key!(A B C D);
tuple_key!(A B C D E);

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

    fn encoded<K: StateKey>(k: &K) -> Vec<u8> {
        let mut out = Vec::new();
        k.encode_key(&mut out);
        out
    }

    #[test]
    fn composite_keys_round_trip() {
        let keys = [
            ("a\0b".to_string(), 7u64, true),
            (String::new(), 0, false),
            ("\u{ff}\0\0".to_string(), u64::MAX, true),
        ];
        for k in keys {
            assert_eq!(
                <(String, u64, bool)>::decode_key(&encoded(&k)),
                Some(k.clone()),
                "{k:?}"
            );
        }
        let nested = (Some(vec![0u8, 0, 255]), (3i32, 'x'), None::<String>);
        assert_eq!(StateKey::decode_key(&encoded(&nested)), Some(nested.clone()));
        assert_eq!(
            <(String, u64)>::decode_key(&encoded(&("a".to_string(), 1u64))[..5]),
            None,
            "truncated"
        );
    }

    #[test]
    fn composite_keys_sort_element_by_element() {
        let mut keys = vec![
            ("b".to_string(), 1u64),
            ("a".to_string(), 2),
            ("ab".to_string(), 0),
            ("a".to_string(), 1),
            ("a\0".to_string(), 0),
        ];
        let mut by_bytes = keys.clone();
        by_bytes.sort_by_key(encoded);
        keys.sort();
        assert_eq!(by_bytes, keys);
        assert!(encoded(&None::<u8>) < encoded(&Some(0u8)));
    }

    #[test]
    fn composite_key_groups_are_frozen() {
        // A golden test: these key groups are part of the checkpoint format.
        let groups: Vec<u16> = [
            encoded(&("user-1".to_string(), 42u64)),
            encoded(&(7u32, "eu".to_string(), false)),
            encoded(&Some(("x".to_string(), 'y'))),
            encoded(&(None::<i64>, vec![0u8, 1])),
        ]
        .iter()
        .map(|k| key_group_of(k, 128).0)
        .collect();
        assert_eq!(groups, GOLDEN_GROUPS);
        // Plain keys are unchanged by the composite encodings.
        assert_eq!(encoded(&"ab".to_string()), b"ab");
        assert_eq!(encoded(&vec![0u8, 1]), [0, 1]);
    }

    const GOLDEN_GROUPS: [u16; 4] = [40, 28, 73, 82];

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
