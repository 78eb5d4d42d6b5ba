//! Encoding captured value-state entries for RocksDB, and the background
//! part of a barrier's snapshot.

use super::super::timers::TimerChanges;
use super::super::{RocksInstance, SortedValues, TimeDomain};
use super::capture::Captured;
use super::overlay::Overlay;
use crate::checkpoint::manifest::SubtaskState;
use crate::error::Result;
use rocksdb::WriteBatch;
use weir_operators::{encode_state_key, encode_value, CheckpointId, StateKey};

/// From this many changed keys on, a snapshot writes them into an SST for
/// ingestion instead of through the memtable.
pub(super) const INGEST_AT_LEAST: usize = 4096;

/// The background part of snapshot `id`: writes a barrier's captured
/// entries (`dirty`), map-state writes, timer changes and event time
/// (`watermark`, `i64::MIN`: none yet) to RocksDB, then takes the native
/// checkpoint and puts it into the store.
pub(super) fn write_snapshot<K: StateKey, V: serde::Serialize>(
    db: &RocksInstance,
    id: CheckpointId,
    max_parallelism: u16,
    dirty: Captured<K, V>,
    map_writes: &Overlay,
    timers: &[(TimeDomain, TimerChanges)],
    watermark: i64,
) -> Result<SubtaskState> {
    let mut batch = WriteBatch::default();
    db.batch_map(&mut batch, map_writes)?;
    for (domain, changes) in timers {
        db.batch_timers(&mut batch, *domain, changes)?;
    }
    if watermark > i64::MIN {
        db.batch_watermark(&mut batch, watermark)?;
    }
    let entries = dirty.iter().map(|(k, v)| (k, v.as_ref()));
    let sorted = encode_values(db, max_parallelism, dirty.len(), entries, &mut batch)?;
    drop(dirty); // encoded: memory back before the SST is written
    db.snapshot(id, batch, sorted).map(SubtaskState::Rocks)
}

/// Encodes `count` changed value-state entries for RocksDB (`None`:
/// deleted): many go into an SST (see [`RocksInstance::ingest`],
/// returned), a few are cheaper through the memtable (`batch`).
pub(super) fn encode_values<'a, K: StateKey + 'a, V: serde::Serialize + 'a>(
    db: &RocksInstance,
    max_parallelism: u16,
    count: usize,
    dirty: impl Iterator<Item = (&'a K, Option<&'a V>)>,
    batch: &mut WriteBatch,
) -> Result<SortedValues> {
    let (mut key_buf, mut value_buf) = (Vec::new(), Vec::new());
    let mut sorted = SortedValues::default();
    let ingest = count >= INGEST_AT_LEAST;
    for (key, value) in dirty {
        encode_state_key(key, b"", max_parallelism, &mut key_buf);
        if let Some(v) = value {
            value_buf.clear();
            encode_value(v, &mut value_buf).map_err(|e| db.state_error(e))?;
        }
        let added = match (value, ingest) {
            (Some(_), true) => sorted.put(&key_buf, &value_buf),
            (None, true) => sorted.delete(&key_buf),
            (Some(_), false) => {
                batch.put(&key_buf, &value_buf);
                true
            }
            (None, false) => {
                batch.delete(&key_buf);
                true
            }
        };
        if !added {
            return Err(db.state_error("a state key or value of 4 GiB or more cannot be stored"));
        }
    }
    Ok(sorted)
}
