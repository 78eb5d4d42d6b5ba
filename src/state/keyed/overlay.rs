//! Map state (byte-level, column family `map`) as user code sees it: an
//! ordered overlay of the writes since the last barrier over the layers
//! still being flushed by snapshots, over RocksDB.
//!
//! At a barrier the current overlay is *moved* (not copied) into the
//! snapshot and stays readable as a flushing layer until no state work is
//! in flight (then every snapshot handed off has written it to RocksDB).

use super::super::timers::Timers;
use super::super::RocksInstance;
use crate::error::WeirError;
use std::collections::BTreeMap;
use std::sync::Arc;
use weir_operators::{key_group_of, KeyedStore, OperatorError, StateKey, Timestamp};

/// Map-state writes not yet in RocksDB: full key -> value (`None` = deleted).
pub(super) type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Map-state writes since the last barrier, and those of barriers whose
/// snapshot has not yet written them to RocksDB (oldest first).
#[derive(Default)]
pub(super) struct MapLayers {
    /// Writes since the last barrier.
    pub(super) current: Overlay,
    /// Earlier barriers' writes, oldest first, until their snapshot is done.
    pub(super) flushing: Vec<Arc<Overlay>>,
    /// The state error behind the last [`OperatorError`] a map-state call
    /// gave user code. User code only sees it as text and returns its own
    /// error; the stage returns this one instead, so a RocksDB fault stays a
    /// retryable [`WeirError::State`] and does not become a fatal
    /// [`WeirError::Operator`]. Kept here, beside the map states it is
    /// about, and not as a field of [`CurrentKeyStore`]: one more field
    /// built per record cost W1 ~8 instructions a record (9 %).
    pub(super) failure: Option<WeirError>,
}

/// The [`KeyedStore`] of the key being processed.
pub(super) struct CurrentKeyStore<'a, K> {
    pub(super) key: &'a K,
    pub(super) max_parallelism: u16,
    /// `key_group | u32 key length | key`, built on first use.
    pub(super) prefix: Vec<u8>,
    pub(super) layers: &'a mut MapLayers,
    pub(super) timers: &'a mut Timers,
    pub(super) processing_timers: &'a mut Timers,
    pub(super) db: &'a RocksInstance,
}

impl<K: StateKey> CurrentKeyStore<'_, K> {
    /// `key_group | u32 key length | key | namespace`: the length makes a key
    /// that is a prefix of another unambiguous.
    fn full_key(&mut self, namespace: &[u8]) -> Vec<u8> {
        if self.prefix.is_empty() {
            self.prefix.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            self.key.encode_key(&mut self.prefix);
            let len = (self.prefix.len() - 6) as u32;
            let group = key_group_of(&self.prefix[6..], self.max_parallelism);
            self.prefix[..2].copy_from_slice(&group.0.to_be_bytes());
            self.prefix[2..6].copy_from_slice(&len.to_be_bytes());
        }
        let mut k = Vec::with_capacity(self.prefix.len() + namespace.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(namespace);
        k
    }

    /// Remembers `e` for the stage (see [`MapLayers::failure`]) and gives
    /// user code its text.
    fn fail(&mut self, e: WeirError) -> OperatorError {
        let error = OperatorError(e.to_string());
        self.layers.failure = Some(e);
        error
    }
}

impl<K: StateKey> KeyedStore for CurrentKeyStore<'_, K> {
    fn register_event_timer(&mut self, at: Timestamp, namespace: &[u8]) {
        self.timers.register(self.key, at.0, namespace);
    }

    fn delete_event_timer(&mut self, at: Timestamp, namespace: &[u8]) {
        self.timers.delete(self.key, at.0, namespace);
    }

    fn watermark(&self) -> Timestamp {
        Timestamp(self.timers.now)
    }

    fn register_processing_timer(&mut self, at: Timestamp, namespace: &[u8]) {
        self.processing_timers.register(self.key, at.0, namespace);
    }

    fn delete_processing_timer(&mut self, at: Timestamp, namespace: &[u8]) {
        self.processing_timers.delete(self.key, at.0, namespace);
    }

    fn processing_time(&self) -> Timestamp {
        Timestamp(self.processing_timers.now)
    }

    fn get(&mut self, namespace: &[u8]) -> Result<Option<Vec<u8>>, OperatorError> {
        let k = self.full_key(namespace);
        if let Some(v) = self.layers.current.get(&k) {
            return Ok(v.clone());
        }
        for layer in self.layers.flushing.iter().rev() {
            if let Some(v) = layer.get(&k) {
                return Ok(v.clone());
            }
        }
        self.db.get_map(&k).map_err(|e| self.fail(e))
    }

    fn put(&mut self, namespace: &[u8], value: Vec<u8>) -> Result<(), OperatorError> {
        let k = self.full_key(namespace);
        self.layers.current.insert(k, Some(value));
        Ok(())
    }

    fn delete(&mut self, namespace: &[u8]) -> Result<(), OperatorError> {
        let k = self.full_key(namespace);
        self.layers.current.insert(k, None);
        Ok(())
    }

    fn scan(&mut self, prefix: &[u8]) -> Result<weir_operators::keyed::Entries, OperatorError> {
        let start = self.full_key(prefix);
        let stored = match self.db.scan_map(&start) {
            Ok(stored) => stored,
            Err(e) => return Err(self.fail(e)),
        };
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = stored.into_iter().map(|(k, v)| (k, Some(v))).collect();
        for layer in self
            .layers
            .flushing
            .iter()
            .map(|l| &**l)
            .chain(std::iter::once(&self.layers.current))
        {
            for (k, v) in layer.range(start.clone()..).take_while(|(k, _)| k.starts_with(&start)) {
                merged.insert(k.clone(), v.clone());
            }
        }
        let skip = self.prefix.len();
        Ok(merged
            .into_iter()
            .filter_map(|(k, v)| Some((k[skip..].to_vec(), v?)))
            .collect())
    }
}
