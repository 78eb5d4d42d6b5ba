//! The one codec of weir state: postcard for values, a fixed byte layout for
//! state keys.
//!
//! State key layout (sorts by key group first, so a key-group range is one
//! contiguous RocksDB range):
//!
//! ```text
//! key_group: u16 big-endian | key bytes (StateKey::encode_key) | namespace bytes
//! ```
//!
//! Values are postcard (serde); postcard 1.x's wire format is frozen, which
//! matters because checkpoints are read by later versions.

use crate::key::{key_group_of, KeyGroup, StateKey};
use serde::{de::DeserializeOwned, Serialize};

/// A value could not be encoded or decoded.
#[derive(Debug)]
pub struct CodecError(pub String);

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for CodecError {}

/// Appends the postcard encoding of `value` to `out`.
pub fn encode_value<V: Serialize>(value: &V, out: &mut Vec<u8>) -> Result<(), CodecError> {
    // Straight into `out`: no vector per value.
    *out = postcard::to_extend(value, std::mem::take(out)).map_err(|e| CodecError(format!("encode: {e}")))?;
    Ok(())
}

/// Decodes a postcard value.
pub fn decode_value<V: DeserializeOwned>(bytes: &[u8]) -> Result<V, CodecError> {
    postcard::from_bytes(bytes).map_err(|e| CodecError(format!("decode: {e}")))
}

/// Writes the full state key of `key` (with `namespace`) into `out`, replacing
/// its contents, and returns the key group.
pub fn encode_state_key<K: StateKey>(key: &K, namespace: &[u8], max_parallelism: u16, out: &mut Vec<u8>) -> KeyGroup {
    out.clear();
    out.extend_from_slice(&[0, 0]);
    key.encode_key(out);
    let group = key_group_of(&out[2..], max_parallelism);
    out[..2].copy_from_slice(&group.0.to_be_bytes());
    out.extend_from_slice(namespace);
    group
}

/// The key group prefix of a state key written by [`encode_state_key`].
pub fn state_key_group(state_key: &[u8]) -> Option<KeyGroup> {
    Some(KeyGroup(u16::from_be_bytes(state_key.get(..2)?.try_into().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_keys_sort_by_key_group_then_key() {
        let mut keys: Vec<(KeyGroup, Vec<u8>)> = (0u64..2000)
            .map(|k| {
                let mut out = Vec::new();
                let g = encode_state_key(&k, b"", 128, &mut out);
                (g, out)
            })
            .collect();
        keys.sort_by(|a, b| a.1.cmp(&b.1));
        assert!(
            keys.windows(2).all(|w| w[0].0 <= w[1].0),
            "byte order must follow key group order"
        );
        for (g, bytes) in &keys {
            assert_eq!(state_key_group(bytes), Some(*g));
        }
        // Fixed-width big-endian keys sort numerically inside a key group.
        let (a, b) = (&keys[0], &keys[1]);
        if a.0 == b.0 {
            assert!(u64::decode_key(&a.1[2..]) < u64::decode_key(&b.1[2..]));
        }
    }

    #[test]
    fn namespace_follows_the_key() {
        let mut out = Vec::new();
        encode_state_key(&7u32, &[9, 9], 128, &mut out);
        assert_eq!(&out[2..], &[0, 0, 0, 7, 9, 9]);
    }

    #[test]
    fn values_round_trip() {
        let mut out = Vec::new();
        encode_value(&(1u64, String::from("x")), &mut out).unwrap();
        let back: (u64, String) = decode_value(&out).unwrap();
        assert_eq!(back, (1, "x".into()));
        assert!(decode_value::<(u64, String)>(&out[..1]).is_err());
    }
}
