//! Rescaling: a task whose key-group range changed (the job restored with
//! another parallelism) builds its RocksDB instance from every checkpointed
//! instance that overlaps the range, as Flink does: the best-overlapping
//! one is restored as it is and clipped with range deletions, the others'
//! entries of the range are copied in.

use super::{
    timers, RocksInstance, StateEnv, COLUMN_FAMILIES, DEFAULT_CF, MAP_CF, META_CF, PROC_TIMERS_CF, TIMERS_CF,
    WATERMARK_KEY,
};
use crate::checkpoint::manifest::RocksHandle;
use crate::error::{Result, WeirError};
use rocksdb::{WriteBatch, DB};
use std::fs;
use std::path::Path;
use weir_operators::key_group_of;

impl RocksInstance {
    /// Makes this instance (restored from `base`, or empty) hold exactly
    /// its key groups of the checkpointed `instances`: the value and map
    /// entries of other groups are range-deleted (keys start with their
    /// group), timers of other groups deleted one by one (they are ordered
    /// by time), and the entries and timers of this range held by the other
    /// instances are copied in from read-only opens of their files. The
    /// stored event time is the least of the instances' (no timer fires
    /// early).
    pub(super) fn rescale(
        &self,
        env: &StateEnv,
        max_parallelism: u16,
        base: Option<&RocksHandle>,
        instances: &[&RocksHandle],
    ) -> Result<()> {
        let (start, end) = self.key_groups;
        let in_range = |group: u16| (start..end).contains(&group);
        for cf in [DEFAULT_CF, MAP_CF] {
            let handle = self.cf(cf)?;
            let mut batch = WriteBatch::default();
            if start > 0 {
                batch.delete_range_cf(handle, [0u8, 0].as_slice(), start.to_be_bytes().as_slice());
            }
            batch.delete_range_cf(handle, end.to_be_bytes().as_slice(), [0xFFu8, 0xFF, 0xFF].as_slice());
            self.write(batch)?;
        }
        let group_of_timer = |stored: &[u8]| {
            timers::decode_timer(stored).map(|(_, timer)| key_group_of(timers::key_of(&timer), max_parallelism).0)
        };
        let mut batch = WriteBatch::default();
        for cf in [TIMERS_CF, PROC_TIMERS_CF] {
            let handle = self.cf(cf)?;
            for item in self.db.iterator_cf(handle, rocksdb::IteratorMode::Start) {
                let (k, _) = item.map_err(|e| self.state_error(e))?;
                match group_of_timer(&k) {
                    Some(group) if in_range(group) => {}
                    Some(_) => batch.delete_cf(handle, &k),
                    None => return Err(self.state_error("a stored timer is malformed")),
                }
            }
        }
        self.write(batch)?;
        let mut watermark = self.stored_watermark()?;
        for (i, other) in instances.iter().enumerate() {
            if base.is_some_and(|b| std::ptr::eq(b, *other)) {
                continue;
            }
            let dir = self.dir.join(format!("rescale-{i}"));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).map_err(|e| WeirError::io("cannot create state directory", &dir, e))?;
            for f in other.shared.iter().chain(&other.private) {
                env.store.fetch(&f.path, &dir.join(&f.name), f.crc32)?;
            }
            let copied = self.copy_in(&dir, other, max_parallelism, &mut watermark);
            let _ = fs::remove_dir_all(&dir);
            copied?;
        }
        if let Some(w) = watermark {
            let mut batch = WriteBatch::default();
            self.batch_watermark(&mut batch, w)?;
            self.write(batch)?;
        }
        tracing::info!(
            "{}: rescaled: key groups {start}..{end} from {} checkpointed instance(s)",
            self.task,
            instances.len()
        );
        Ok(())
    }

    /// Copies this instance's key groups out of the checkpointed instance
    /// whose files are in `dir`, and lowers `watermark` to its event time.
    fn copy_in(
        &self,
        dir: &Path,
        other: &RocksHandle,
        max_parallelism: u16,
        watermark: &mut Option<i64>,
    ) -> Result<()> {
        let (start, end) = (
            self.key_groups.0.max(other.key_groups.0),
            self.key_groups.1.min(other.key_groups.1),
        );
        let source =
            DB::open_cf_for_read_only(&self.options, dir, COLUMN_FAMILIES, false).map_err(|e| WeirError::State {
                operator: self.task.clone(),
                path: dir.to_path_buf(),
                message: format!("cannot open checkpointed instance `{}` to rescale: {e}", other.instance),
            })?;
        let source_cf = |name: &str| {
            source
                .cf_handle(name)
                .ok_or_else(|| self.state_error(format!("column family `{name}` is missing in `{}`", other.instance)))
        };
        // Each column family's part is written straight into an SST (the
        // source iterates in key order) and ingested: no memtable, no WAL.
        for cf in [DEFAULT_CF, MAP_CF, TIMERS_CF, PROC_TIMERS_CF] {
            let timers = cf == TIMERS_CF || cf == PROC_TIMERS_CF;
            let mut options = rocksdb::ReadOptions::default();
            if !timers {
                // Value and map keys start with their key group.
                options.set_iterate_lower_bound(start.to_be_bytes().to_vec());
                options.set_iterate_upper_bound(end.to_be_bytes().to_vec());
            }
            let path = self.dir.join(format!("rescale-{}-{cf}.sst", other.instance));
            let mut writer = rocksdb::SstFileWriter::create(&self.options);
            writer.open(&path).map_err(|e| self.state_error(e))?;
            let mut entries = 0u64;
            for item in source.iterator_cf_opt(source_cf(cf)?, options, rocksdb::IteratorMode::Start) {
                let (k, v) = item.map_err(|e| self.state_error(e))?;
                if timers {
                    // Timers are ordered by time: each is placed by its key's group.
                    let group = timers::decode_timer(&k)
                        .map(|(_, timer)| key_group_of(timers::key_of(&timer), max_parallelism).0)
                        .ok_or_else(|| self.state_error("a stored timer is malformed"))?;
                    if !(start..end).contains(&group) {
                        continue;
                    }
                }
                writer.put(&k, &v).map_err(|e| self.state_error(e))?;
                entries += 1;
            }
            if entries == 0 {
                drop(writer);
                let _ = fs::remove_file(&path);
                continue;
            }
            writer.finish().map_err(|e| self.state_error(e))?;
            let mut ingest = rocksdb::IngestExternalFileOptions::default();
            ingest.set_move_files(true);
            let ingested = self.db.ingest_external_file_cf_opts(self.cf(cf)?, &ingest, vec![&path]);
            let _ = fs::remove_file(&path);
            ingested.map_err(|e| self.state_error(e))?;
        }
        if let Some(v) = source
            .get_cf(source_cf(META_CF)?, WATERMARK_KEY)
            .map_err(|e| self.state_error(e))?
        {
            let theirs = v.as_slice().try_into().map(i64::from_be_bytes).ok();
            *watermark = match (*watermark, theirs) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(())
    }
}
