//! The manifest of one complete checkpoint: `chk-<n>/MANIFEST`, JSON.
//!
//! It lists, per operator uid and subtask, what that subtask needs to resume:
//! a source position, a sink's pending output, or the files of a RocksDB
//! instance (shared SSTs in `shared/<instance>/`, private metadata files in
//! `chk-<n>/<uid>-<subtask>/`). Paths are relative to the job directory, so a
//! checkpoint directory can be moved to another machine.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Current manifest format version.
pub const MANIFEST_FORMAT: u32 = 1;

/// One complete checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Format version ([`MANIFEST_FORMAT`]).
    pub format: u32,
    /// The job name.
    pub job: String,
    /// The checkpoint id.
    pub checkpoint_id: u64,
    /// Wall-clock time the manifest was written (ms since the Unix epoch).
    pub created_unix_ms: u64,
    /// Whether this was a final checkpoint (bounded run or stop).
    pub final_checkpoint: bool,
    /// Whether it ended a drained run (bounded + drain): every window and
    /// event-time timer had fired, event time was at its end.
    #[serde(default)]
    pub drained: bool,
    /// State per operator uid.
    pub operators: BTreeMap<String, OperatorSnapshot>,
}

impl Manifest {
    /// Bytes of state this checkpoint references: RocksDB files (also those
    /// shared with earlier checkpoints), state files and inline state.
    pub fn state_bytes(&self) -> u64 {
        self.operators
            .values()
            .flat_map(|o| o.subtasks.iter())
            .map(|s| match s {
                SubtaskState::Rocks(h) => h.shared.iter().chain(&h.private).map(|f| f.size).sum(),
                SubtaskState::File { size, .. } => *size,
                SubtaskState::Bytes { hex, .. } => hex.len() as u64 / 2,
            })
            .sum()
    }
}

/// The state of one operator: one entry per subtask (index = subtask).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OperatorSnapshot {
    /// Parallelism when the checkpoint was taken.
    pub parallelism: usize,
    /// Per-subtask state; index is the subtask.
    pub subtasks: Vec<SubtaskState>,
}

/// The state of one operator subtask.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SubtaskState {
    /// Small opaque state (a source position, a sink's pending files), hex.
    Bytes {
        /// Hex-encoded bytes.
        hex: String,
        /// Human-readable summary (for `weir checkpoints show`); not used to restore.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        describe: String,
    },
    /// Larger opaque state (a sink's uncommitted output) in a file of the
    /// checkpoint, relative to the job directory.
    File {
        /// Path relative to the job directory.
        path: String,
        /// Size in bytes (checked on restore).
        size: u64,
    },
    /// A RocksDB instance.
    Rocks(RocksHandle),
}

/// The files of one RocksDB instance in a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RocksHandle {
    /// The instance that wrote the new SSTs (unique per open of a DB).
    pub instance: String,
    /// Key groups held: `start..end`.
    pub key_groups: (u16, u16),
    /// Immutable SST files (relative to the job directory), shared between checkpoints.
    pub shared: Vec<StoredFile>,
    /// Metadata files private to this checkpoint (MANIFEST, CURRENT, OPTIONS).
    pub private: Vec<StoredFile>,
}

/// A file in the store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoredFile {
    /// Path relative to the job directory.
    pub path: String,
    /// Its name inside the RocksDB directory.
    pub name: String,
    /// Size in bytes (checked on restore).
    pub size: u64,
    /// CRC-32 of its bytes, checked when a checkpoint is restored: a file
    /// of the right size with a flipped byte makes the checkpoint damaged
    /// instead of a RocksDB error later. Absent in manifests of older weirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32: Option<u32>,
}

/// Lower-case hex of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Parses hex written by [`to_hex`].
pub(crate) fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&bytes)), Some(bytes));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
