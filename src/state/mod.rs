//! Keyed state: one RocksDB instance per stateful task, a write-back cache in
//! front of it, and snapshots as RocksDB native checkpoints copied (hard
//! linked) into the checkpoint store.
//!
//! # Memory
//! Every instance of a job shares one block cache and one write-buffer
//! manager ([`StateEnv`]), so RocksDB memory has one bound set in
//! [`crate::JobConfig`]. The write-back cache adds `state_cache_entries`
//! entries per task; SST filters and indexes (about 1.3 bytes per stored
//! key) are held by the open SSTs, outside the block cache.
//!
//! # Snapshots
//! At a barrier the task hands its dirty cache entries to a background
//! thread ([`RocksInstance::snapshot`]) which writes them as one `WriteBatch`
//! (WAL off: checkpoints give durability), makes a native checkpoint (flush +
//! hard links) and puts new SSTs into `shared/<instance>/` of the store. SSTs
//! already in the store are referenced, not copied again (incremental). Until
//! that is done the task serves reads from its cache and does not write to
//! RocksDB, so the snapshot sees exactly the state at the barrier.

mod cache;
pub(crate) mod keyed;
mod rescale;
pub(crate) mod timers;

use crate::checkpoint::local::random_id;
use crate::checkpoint::manifest::{RocksHandle, StoredFile};
use crate::checkpoint::store::CheckpointStore;
use crate::error::{Result, WeirError};
use rocksdb::{BlockBasedOptions, Cache, Options, WriteBatch, WriteBufferManager, WriteOptions, DB};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use weir_operators::CheckpointId;

/// Where a run keeps the working directories of earlier runs until its
/// tasks are restored (see [`StateEnv::clean_stale_local_dirs`]).
const RESTORE_CACHE: &str = "restore-cache";

/// Value-state changes of one snapshot, encoded into one arena (no
/// allocation per entry), to be sorted and written into an SST.
#[derive(Default)]
pub(crate) struct SortedValues {
    arena: Vec<u8>,
    entries: Vec<ValueEntry>,
}

/// 24 bytes: a snapshot may hold millions of them.
struct ValueEntry {
    /// The key's first 8 bytes, big-endian, zero-padded: most comparisons
    /// of the sort end here, without a `memcmp` call.
    prefix: u64,
    /// Where the key starts in the arena; its value follows it.
    at: usize,
    key_len: u32,
    /// `DELETED`: a deletion.
    value_len: u32,
}

/// `ValueEntry::value_len` of a deletion.
const DELETED: u32 = u32::MAX;

impl ValueEntry {
    fn key<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        &arena[self.at..self.at + self.key_len as usize]
    }

    /// `None` for a deletion.
    fn value<'a>(&self, arena: &'a [u8]) -> Option<&'a [u8]> {
        let start = self.at + self.key_len as usize;
        (self.value_len != DELETED).then(|| &arena[start..start + self.value_len as usize])
    }
}

impl SortedValues {
    /// Adds `key` with `value` (`None`: a deletion); `false` (nothing added)
    /// when either is 4 GiB or longer.
    fn push(&mut self, key: &[u8], value: Option<&[u8]>) -> bool {
        let value_len = match value.map(|v| u32::try_from(v.len())) {
            None => DELETED,
            Some(Ok(n)) if n != DELETED => n,
            Some(_) => return false,
        };
        let Ok(key_len) = u32::try_from(key.len()) else {
            return false;
        };
        let at = self.arena.len();
        self.arena.extend_from_slice(key);
        self.arena.extend_from_slice(value.unwrap_or_default());
        let mut head = [0u8; 8];
        let n = key.len().min(8);
        head[..n].copy_from_slice(&key[..n]);
        self.entries.push(ValueEntry {
            prefix: u64::from_be_bytes(head),
            at,
            key_len,
            value_len,
        });
        true
    }

    /// Puts `key` with `value`; `false` (nothing put) when either is 4 GiB
    /// or longer.
    #[must_use]
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8]) -> bool {
        self.push(key, Some(value))
    }

    /// Deletes `key`; `false` (nothing done) when it is 4 GiB or longer.
    #[must_use]
    pub(crate) fn delete(&mut self, key: &[u8]) -> bool {
        self.push(key, None)
    }
}

/// Resources shared by every RocksDB instance of a running job.
pub(crate) struct StateEnv {
    /// RocksDB's environment with its flush and compaction threads at a lower
    /// CPU priority than the record path.
    env: Option<rocksdb::Env>,
    cache: Cache,
    write_buffers: WriteBufferManager,
    local_root: PathBuf,
    run_id: String,
    pub(crate) store: CheckpointStore,
    /// State files a restore took from the restore cache / fetched from the store.
    pub(crate) reused_at_restore: std::sync::atomic::AtomicU64,
    pub(crate) fetched_at_restore: std::sync::atomic::AtomicU64,
    /// Entries written by write-behind, over every instance (see `keyed`).
    pub(crate) written_behind: Arc<std::sync::atomic::AtomicU64>,
    /// Timers (open windows among them) that final checkpoints kept for the
    /// next run, over every instance: [`crate::JobSummary::timers_kept`].
    pub(crate) timers_kept: Arc<std::sync::atomic::AtomicU64>,
}

impl StateEnv {
    pub(crate) fn new(
        store: CheckpointStore,
        local_root: PathBuf,
        block_cache: usize,
        write_buffers: usize,
    ) -> Result<Self> {
        fs::create_dir_all(&local_root)
            .map_err(|e| WeirError::io("cannot create local state directory", &local_root, e))?;
        let cache = Cache::new_lru_cache(block_cache);
        let write_buffers =
            WriteBufferManager::new_write_buffer_manager_with_cache(write_buffers, false, cache.clone());
        // Instance names must never repeat (SST names are unique only within
        // one instance's life): random, not the clock and the pid.
        let run_id = random_id();
        store.set_live_run(&run_id);
        // Checkpoint flushes must not take the CPU from the tasks (tail latency).
        let env = rocksdb::Env::new().ok().map(|mut env| {
            env.lower_thread_pool_cpu_priority();
            env.lower_high_priority_thread_pool_cpu_priority();
            env
        });
        Ok(StateEnv {
            env,
            cache,
            write_buffers,
            local_root,
            run_id,
            store,
            reused_at_restore: Default::default(),
            fetched_at_restore: Default::default(),
            written_behind: Default::default(),
            timers_kept: Default::default(),
        })
    }

    /// Moves the working directories left by earlier (crashed) runs aside:
    /// a restore takes the state files it finds there (same instance, name,
    /// size and checksum) instead of fetching them from the store, which on
    /// an object store is a download. [`StateEnv::drop_restore_cache`]
    /// deletes them once every task is made.
    pub(crate) fn clean_stale_local_dirs(&self) {
        let cache = self.local_root.join(RESTORE_CACHE);
        let _ = fs::remove_dir_all(&cache);
        let _ = fs::create_dir_all(&cache);
        if let Ok(entries) = fs::read_dir(&self.local_root) {
            // The lock file stays: deleting it would let a second run lock a new one.
            for e in entries
                .flatten()
                .filter(|e| e.file_name() != crate::checkpoint::lock::LOCK_FILE && e.file_name() != RESTORE_CACHE)
            {
                if fs::rename(e.path(), cache.join(e.file_name())).is_err() {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
    }

    /// Deletes what [`StateEnv::clean_stale_local_dirs`] moved aside.
    pub(crate) fn drop_restore_cache(&self) {
        let _ = fs::remove_dir_all(self.local_root.join(RESTORE_CACHE));
    }

    /// A file of `instance` left in the restore cache with `f`'s name, size
    /// and checksum.
    fn cached(&self, instance: &str, f: &StoredFile) -> Option<PathBuf> {
        let path = self
            .local_root
            .join(RESTORE_CACHE)
            .join(instance)
            .join("db")
            .join(&f.name);
        let len = fs::metadata(&path).ok()?.len();
        if len != f.size {
            return None;
        }
        match (f.crc32, crate::checkpoint::local::file_crc32(&path)) {
            (Some(expected), Ok((_, found))) if found == expected => Some(path),
            _ => None,
        }
    }

    fn options(&self) -> Options {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.cache);
        // A key not in the write-back cache is often not in RocksDB either (its
        // first record): a Bloom filter answers that without reading SSTs.
        table.set_bloom_filter(10.0, false);
        // State is read by point lookups: a hash index in each data block
        // finds a key without a binary search over the block's restarts.
        table.set_data_block_index_type(rocksdb::DataBlockIndexType::BinaryAndHash);
        table.set_data_block_hash_ratio(0.75);
        // Index and filter blocks stay with their open SST, outside the block
        // cache (about 1.3 bytes per key: 10 bits of filter, a little index).
        // In the cache, a whole SST's filter (megabytes) is more than a cache
        // shard holds, so it would be read and checksummed from the file on
        // every lookup; partitioned (4 KiB pieces) it costs a cache lookup
        // and a search of the partition index per SST per key: measured 2.4x
        // slower on the state > memory benchmark.
        table.set_cache_index_and_filter_blocks(false);
        opts.set_block_based_table_factory(&table);
        opts.set_write_buffer_manager(&self.write_buffers);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.set_max_background_jobs(2);
        if let Some(env) = &self.env {
            opts.set_env(env);
        }
        opts.set_keep_log_file_num(2);
        opts
    }
}

/// Column families of every instance: value state (`default`, keys
/// `key_group | key`), map state (`map`, keys `key_group | u32 key length |
/// key | map name | 0 | map key`), event-time timers (`timers`) and
/// processing-time timers (`proc_timers`), both ordered by time, and the
/// task's own bookkeeping (`meta`: its event time). A native checkpoint
/// covers all of them.
const COLUMN_FAMILIES: [&str; 5] = [DEFAULT_CF, MAP_CF, TIMERS_CF, PROC_TIMERS_CF, META_CF];
const DEFAULT_CF: &str = "default";
const META_CF: &str = "meta";
/// The key in `meta` of the task's event time (i64 big-endian) at the snapshot.
const WATERMARK_KEY: &[u8] = b"watermark";
const MAP_CF: &str = "map";
const TIMERS_CF: &str = "timers";
const PROC_TIMERS_CF: &str = "proc_timers";

/// How many key groups two `start..end` ranges share.
fn overlap(a: (u16, u16), b: (u16, u16)) -> u16 {
    a.1.min(b.1).saturating_sub(a.0.max(b.0))
}

/// The smallest key greater than every key starting with `prefix`; `None`
/// when there is none (empty, or all 0xFF).
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut bound = prefix.to_vec();
    while let Some(last) = bound.pop() {
        if last < u8::MAX {
            bound.push(last + 1);
            return Some(bound);
        }
    }
    None
}

/// Which clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeDomain {
    /// The watermark.
    Event,
    /// The wall clock.
    Processing,
}

impl TimeDomain {
    fn column_family(self) -> &'static str {
        match self {
            TimeDomain::Event => TIMERS_CF,
            TimeDomain::Processing => PROC_TIMERS_CF,
        }
    }
}

/// One task's RocksDB instance.
pub(crate) struct RocksInstance {
    /// `<uid>-<subtask>`: names the task in errors and in the store.
    pub(crate) task: String,
    /// Unique per open: SST names are unique only within one instance's life.
    instance: String,
    dir: PathBuf,
    db: std::mem::ManuallyDrop<DB>,
    /// The options the instance was opened with (SST files written for
    /// ingestion must match them).
    options: Options,
    key_groups: (u16, u16),
    store: CheckpointStore,
    /// Local SST name -> where it already is in the store.
    in_store: Mutex<HashMap<String, StoredFile>>,
    /// SST files written for ingestion so far (names them).
    ingested: std::sync::atomic::AtomicU64,
    /// The job's count of entries written behind ([`StateEnv::written_behind`]).
    pub(crate) written_behind: Arc<std::sync::atomic::AtomicU64>,
    /// The job's count of timers kept by final checkpoints ([`StateEnv::timers_kept`]).
    pub(crate) timers_kept: Arc<std::sync::atomic::AtomicU64>,
}

impl RocksInstance {
    /// Opens the instance of `task` for the key groups `key_groups`
    /// (`start..end`), rebuilt from the checkpointed instances in `restore`:
    /// none (empty), the one of the same range (as it was), or, after a
    /// change of parallelism, every instance whose range overlaps (see
    /// [`RocksInstance::rescale`]). `max_parallelism` (the number of key
    /// groups) places timers in their groups.
    pub(crate) fn open(
        env: &StateEnv,
        task: &str,
        key_groups: (u16, u16),
        max_parallelism: u16,
        restore: &[&RocksHandle],
    ) -> Result<Arc<Self>> {
        let overlapping: Vec<&RocksHandle> = restore
            .iter()
            .copied()
            .filter(|h| overlap(h.key_groups, key_groups) > 0)
            .collect();
        // The instance sharing the most key groups is restored as it is and
        // clipped; the others' parts are copied in (as Flink rescales).
        let base = overlapping
            .iter()
            .copied()
            .max_by_key(|h| overlap(h.key_groups, key_groups));
        let db = Self::open_one(env, task, key_groups, base)?;
        if base.is_some_and(|b| b.key_groups != key_groups) || overlapping.len() > 1 {
            db.rescale(env, max_parallelism, base, &overlapping)?;
        }
        Ok(db)
    }

    fn open_one(
        env: &StateEnv,
        task: &str,
        key_groups: (u16, u16),
        restore: Option<&RocksHandle>,
    ) -> Result<Arc<Self>> {
        let instance = format!("{task}-{}", env.run_id);
        let dir = env.local_root.join(&instance);
        let db_dir = dir.join("db");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&db_dir).map_err(|e| WeirError::io("cannot create state directory", &db_dir, e))?;
        let mut in_store = HashMap::new();
        if let Some(handle) = restore {
            for f in handle.shared.iter().chain(&handle.private) {
                let dest = db_dir.join(&f.name);
                // Only the immutable SSTs: the private files (MANIFEST,
                // OPTIONS) of a working directory are not the checkpoint's.
                let local = if f.name.ends_with(".sst") && env.store.local_dir().is_none() {
                    env.cached(&handle.instance, f)
                } else {
                    None
                };
                match local {
                    Some(src) if fs::hard_link(&src, &dest).is_ok() => env.reused_at_restore.fetch_add(1, Relaxed),
                    _ => {
                        env.store.fetch(&f.path, &dest, f.crc32)?;
                        env.fetched_at_restore.fetch_add(1, Relaxed)
                    }
                };
            }
            for f in &handle.shared {
                in_store.insert(f.name.clone(), f.clone());
            }
        }
        let options = env.options();
        // Every column family gets the instance's options: `DB::open_cf` by
        // name would give them RocksDB's defaults (no Bloom filter, no shared
        // block cache, so no memory bound either).
        let families = COLUMN_FAMILIES
            .iter()
            .map(|name| rocksdb::ColumnFamilyDescriptor::new(*name, options.clone()));
        let db = DB::open_cf_descriptors(&options, &db_dir, families).map_err(|e| WeirError::State {
            operator: task.to_string(),
            path: db_dir.clone(),
            message: e.to_string(),
        })?;
        Ok(Arc::new(RocksInstance {
            task: task.to_string(),
            instance,
            dir,
            db: std::mem::ManuallyDrop::new(db),
            options,
            key_groups,
            store: env.store.clone(),
            in_store: Mutex::new(in_store),
            ingested: std::sync::atomic::AtomicU64::new(0),
            written_behind: env.written_behind.clone(),
            timers_kept: env.timers_kept.clone(),
        }))
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| self.state_error(format!("column family `{name}` is missing")))
    }

    /// Reads one value.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<rocksdb::DBPinnableSlice<'_>>> {
        self.db.get_pinned(key).map_err(|e| self.state_error(e))
    }

    /// Reads many values at once; `keys` must be in byte order and
    /// distinct. The values come in the order of `keys`.
    pub(crate) fn multi_get<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k [u8]>,
    ) -> Result<Vec<Option<rocksdb::DBPinnableSlice<'_>>>> {
        let cf = self
            .db
            .cf_handle("default")
            .ok_or_else(|| self.state_error("column family `default` is missing"))?;
        self.db
            .batched_multi_get_cf(cf, keys, true)
            .into_iter()
            .map(|r| r.map_err(|e| self.state_error(e)))
            .collect()
    }

    fn map_cf(&self) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(MAP_CF)
            .ok_or_else(|| self.state_error("column family `map` is missing"))
    }

    /// Reads one map-state entry.
    pub(crate) fn get_map(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.map_cf()?, key).map_err(|e| self.state_error(e))
    }

    fn meta_cf(&self) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(META_CF)
            .ok_or_else(|| self.state_error("column family `meta` is missing"))
    }

    /// The event time the task had at the snapshot this instance was restored from.
    pub(crate) fn stored_watermark(&self) -> Result<Option<i64>> {
        match self.db.get_cf(self.meta_cf()?, WATERMARK_KEY) {
            Ok(None) => Ok(None),
            Ok(Some(v)) => {
                let bytes: [u8; 8] = v
                    .as_slice()
                    .try_into()
                    .map_err(|_| self.state_error("the stored watermark is malformed"))?;
                Ok(Some(i64::from_be_bytes(bytes)))
            }
            Err(e) => Err(self.state_error(e)),
        }
    }

    /// Adds the task's event time to `batch`.
    pub(crate) fn batch_watermark(&self, batch: &mut WriteBatch, watermark: i64) -> Result<()> {
        batch.put_cf(self.meta_cf()?, WATERMARK_KEY, watermark.to_be_bytes());
        Ok(())
    }

    /// Every map-state entry whose key starts with `prefix`, in key order.
    ///
    /// The iterator gets the prefix's successor as its upper bound: without
    /// it, RocksDB skips every deleted entry (tombstone) after the prefix
    /// before it can say there is nothing more, and a window or join that
    /// deletes what it fired leaves long runs of them.
    pub(crate) fn scan_map(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mode = rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward);
        let mut options = rocksdb::ReadOptions::default();
        if let Some(bound) = prefix_successor(prefix) {
            options.set_iterate_upper_bound(bound);
        }
        let mut out = Vec::new();
        for item in self.db.iterator_cf_opt(self.map_cf()?, options, mode) {
            let (k, v) = item.map_err(|e| self.state_error(e))?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    /// Adds map-state writes (`None` = delete) to `batch`.
    pub(crate) fn batch_map<'a>(
        &self,
        batch: &mut WriteBatch,
        entries: impl IntoIterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)>,
    ) -> Result<()> {
        let cf = self.map_cf()?;
        for (k, v) in entries {
            match v {
                Some(v) => batch.put_cf(cf, k, v),
                None => batch.delete_cf(cf, k),
            }
        }
        Ok(())
    }

    fn timer_cf(&self, domain: TimeDomain) -> Result<&rocksdb::ColumnFamily> {
        let name = domain.column_family();
        self.db
            .cf_handle(name)
            .ok_or_else(|| self.state_error(format!("column family `{name}` is missing")))
    }

    /// Every timer of `domain` stored in this instance.
    pub(crate) fn timers(&self, domain: TimeDomain) -> Result<Vec<(i64, timers::KeyAndNamespace)>> {
        let cf = self.timer_cf(domain)?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
            let (k, _) = item.map_err(|e| self.state_error(e))?;
            out.push(timers::decode_timer(&k).ok_or_else(|| self.state_error("a stored timer is malformed"))?);
        }
        Ok(out)
    }

    /// Adds a snapshot's timer changes to `batch`: the range deletion of
    /// fired timers first, so that a timer put again after it stays.
    pub(crate) fn batch_timers(
        &self,
        batch: &mut WriteBatch,
        domain: TimeDomain,
        changes: &timers::TimerChanges,
    ) -> Result<()> {
        let cf = self.timer_cf(domain)?;
        if let Some(through) = changes.delete_through {
            let from = timers::encode_time(i64::MIN);
            match through.checked_add(1) {
                Some(next) => batch.delete_range_cf(cf, from, timers::encode_time(next)),
                // The end of time: past every stored key (`u32::MAX` key lengths do not occur).
                None => batch.delete_range_cf(cf, &from[..], &[0xff; 12][..]),
            }
        }
        let mut key = Vec::new();
        for (at, timer) in &changes.deleted {
            key.clear();
            key.extend_from_slice(&timers::encode_time(*at));
            key.extend_from_slice(timer);
            batch.delete_cf(cf, &key);
        }
        for stored in changes.puts() {
            batch.put_cf(cf, stored, []);
        }
        Ok(())
    }

    pub(crate) fn state_error(&self, e: impl std::fmt::Display) -> WeirError {
        WeirError::State {
            operator: self.task.clone(),
            path: self.dir.clone(),
            message: e.to_string(),
        }
    }

    /// Writes `batch` without WAL.
    pub(crate) fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        self.db.write_opt(batch, &wo).map_err(|e| self.state_error(e))
    }

    /// The asynchronous part of a snapshot: apply the barrier's dirty
    /// entries, take a native checkpoint, put its files into the store.
    pub(crate) fn snapshot(&self, id: CheckpointId, batch: WriteBatch, values: SortedValues) -> Result<RocksHandle> {
        let started = std::time::Instant::now();
        self.write(batch)?;
        self.ingest(values)?;
        let written = started.elapsed();
        crate::failpoint::hit("snapshot-async");
        let local = self.dir.join(format!("chk-{}", id.0));
        let _ = fs::remove_dir_all(&local);
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.db).map_err(|e| self.state_error(e))?;
        checkpoint.create_checkpoint(&local).map_err(|e| self.state_error(e))?;
        let native = started.elapsed();
        let result = self.upload(id, &local);
        let _ = fs::remove_dir_all(&local);
        tracing::debug!(
            "{}: snapshot {id}: write {:?}, native checkpoint {:?}, store {:?}",
            self.task,
            written,
            native - written,
            started.elapsed() - native
        );
        result
    }

    /// Writes many value-state changes straight into an SST and ingests it:
    /// no memtable insert and nothing for the native checkpoint to flush,
    /// about a third of the work of a batch write plus flush.
    pub(crate) fn ingest(&self, mut values: SortedValues) -> Result<()> {
        if values.entries.is_empty() {
            return Ok(());
        }
        let n = self.ingested.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let arena = &values.arena;
        // Byte order of the keys: by prefix, then (equal prefixes) the whole key.
        values
            .entries
            .sort_unstable_by(|a, b| a.prefix.cmp(&b.prefix).then_with(|| a.key(arena).cmp(b.key(arena))));
        let path = self.dir.join(format!("ingest-{n}.sst"));
        let mut writer = rocksdb::SstFileWriter::create(&self.options);
        writer.open(&path).map_err(|e| self.state_error(e))?;
        for e in &values.entries {
            let key = e.key(arena);
            match e.value(arena) {
                Some(v) => writer.put(key, v),
                None => writer.delete(key),
            }
            .map_err(|err| self.state_error(err))?;
        }
        writer.finish().map_err(|e| self.state_error(e))?;
        let mut opts = rocksdb::IngestExternalFileOptions::default();
        opts.set_move_files(true);
        let ingested = self.db.ingest_external_file_opts(&opts, vec![&path]);
        let _ = fs::remove_file(&path);
        ingested.map_err(|e| self.state_error(e))
    }

    fn upload(&self, id: CheckpointId, local: &Path) -> Result<RocksHandle> {
        let shared_rel = self.store.shared_rel(&self.instance);
        let private_rel = self.store.private_rel(id, &self.task);
        let mut in_store = self
            .in_store
            .lock()
            .map_err(|_| self.state_error("snapshot bookkeeping poisoned"))?;
        let (mut shared, mut new) = (Vec::new(), Vec::new());
        for entry in fs::read_dir(local).map_err(|e| WeirError::io("cannot list", local, e))? {
            let entry = entry.map_err(|e| WeirError::io("cannot list", local, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_sst = name.ends_with(".sst");
            if is_sst {
                // In the store already (pruning spares this run's files):
                // referenced, not put again.
                if let Some(f) = in_store.get(&name) {
                    shared.push(f.clone());
                    continue;
                }
            }
            let dir = if is_sst { &shared_rel } else { &private_rel };
            new.push((entry.path(), format!("{dir}/{name}"), name, is_sst));
        }
        self.store.note_reused(shared.len() as u64);
        let files: Vec<(PathBuf, String)> = new.iter().map(|(src, rel, ..)| (src.clone(), rel.clone())).collect();
        let stored = self.store.put_files(&files, &[&shared_rel, &private_rel])?;
        let mut private = Vec::new();
        for ((_, path, name, is_sst), (size, crc)) in new.into_iter().zip(stored) {
            let f = StoredFile {
                path,
                name: name.clone(),
                size,
                crc32: Some(crc),
            };
            if is_sst {
                in_store.insert(name, f.clone());
                shared.push(f);
            } else {
                private.push(f);
            }
        }
        shared.sort();
        private.sort();
        Ok(RocksHandle {
            instance: self.instance.clone(),
            key_groups: self.key_groups,
            shared,
            private,
        })
    }
}

impl Drop for RocksInstance {
    fn drop(&mut self) {
        // SAFETY: `db` is not used after this point; it is closed before its
        // files are removed.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.db) };
        // The working directory is scratch: everything durable is in the store.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::{prefix_successor, RocksInstance, StateEnv, COLUMN_FAMILIES};
    use crate::checkpoint::store::CheckpointStore;

    /// `DB::open_cf` by name gives every column family RocksDB's default
    /// options: no Bloom filter, no shared block cache. Each must have ours.
    #[test]
    fn every_column_family_has_the_instance_options_and_multi_get_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), "job").unwrap();
        let env = StateEnv::new(store, dir.path().join("local"), 8 << 20, 8 << 20).unwrap();
        let db = RocksInstance::open(&env, "op-0", (0, 127), 128, &[]).unwrap();
        let options = std::fs::read_dir(db.dir.join("db"))
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("OPTIONS-"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .unwrap();
        let filters = options.matches("filter_policy=bloomfilter").count();
        assert_eq!(filters, COLUMN_FAMILIES.len(), "{options}");

        let mut batch = rocksdb::WriteBatch::default();
        for k in [b"a", b"c", b"e"] {
            batch.put(k, k);
        }
        db.write(batch).unwrap();
        let keys: [&[u8]; 4] = [b"a", b"b", b"c", b"e"];
        let got: Vec<Option<Vec<u8>>> = db
            .multi_get(keys)
            .unwrap()
            .into_iter()
            .map(|v| v.map(|v| v.to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![Some(b"a".to_vec()), None, Some(b"c".to_vec()), Some(b"e".to_vec())]
        );
    }

    #[test]
    fn the_prefix_successor_bounds_exactly_the_keys_with_the_prefix() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_successor(&[]), None);
    }
}
