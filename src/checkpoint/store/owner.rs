//! One writer per store: a lock file on a file system; on an object store
//! (no locks there) create-only ownership claims checked before every
//! reservation, commit and pruning, and tombstones that close the
//! checkpoints an older writer left in flight.

use super::CheckpointStore;
use crate::checkpoint::lock::DirLock;
use crate::error::{Result, WeirError};
use std::sync::atomic::Ordering;
use weir_operators::CheckpointId;

/// Where the ownership claims of an object store are: `owners/<n>`, one
/// per writer that ever ran, created only if absent.
const OWNERS: &str = "owners";

/// How a tombstone manifest starts (a checkpoint closed by a newer claim).
const TOMBSTONE: &str = "closed by claim ";

/// Tombstones are shorter than this; every manifest is longer.
const TOMBSTONE_MAX_BYTES: u64 = 64;

impl CheckpointStore {
    /// Takes the store for a run (or `weir checkpoints gc`): one writer per
    /// store. On a file system, an exclusive lock held until the returned
    /// lock is dropped: a second writer is refused at once. On an object
    /// store (no locks there), an ownership claim: `owners/<n>` is created
    /// only if absent with the next number, and from then on every
    /// reservation, commit and pruning of this store first checks that no
    /// later claim exists. A paused or cut-off writer that comes back after
    /// another took over is fenced before it commits or deletes anything;
    /// only a writer frozen inside that check and the create-only commit
    /// can still commit one checkpoint, which the newer writer never
    /// restores over (its own ids are reserved create-only too).
    ///
    /// # Errors
    /// [`WeirError::StoreInUse`] naming the directory and the holder.
    pub fn lock(&self) -> Result<Option<DirLock>> {
        match self.backend.local_root() {
            Some(dir) => DirLock::acquire(dir, &self.job).map(Some),
            None => {
                self.claim()?;
                Ok(None)
            }
        }
    }

    /// The numbers of the ownership claims made on this store.
    fn claims(&self) -> Result<Vec<u64>> {
        Ok(self
            .backend
            .list(OWNERS)?
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect())
    }

    fn claim(&self) -> Result<()> {
        let holder = format!(
            "job `{}`, pid {} on host {}, since {}",
            self.job,
            std::process::id(),
            crate::checkpoint::lock::hostname(),
            crate::clock::format_utc(crate::clock::wall_clock_ms().max(0) as u64)
        );
        loop {
            let next = self.claims()?.into_iter().max().unwrap_or(0) + 1;
            match self.backend.create(&format!("{OWNERS}/{next}"), holder.as_bytes()) {
                Ok(()) => {
                    self.owner.store(next, Ordering::Relaxed);
                    return self.close_incomplete(next);
                }
                // Another writer claimed that number first: take the next.
                Err(WeirError::Fenced { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// After claim `claim`: every reserved checkpoint without a manifest
    /// gets a tombstone in its manifest's place (create-only). An older
    /// writer that passed its ownership check just before the claim then
    /// either committed its manifest first (and it is restored, so its
    /// committed output is never written twice) or loses the create and is
    /// fenced.
    fn close_incomplete(&self, claim: u64) -> Result<()> {
        let tombstone = format!("{TOMBSTONE}{claim} of {}\n", crate::checkpoint::local::random_id());
        for id in self.checkpoint_ids()? {
            let rel = Self::manifest_rel(id);
            if self.backend.size(&rel)?.is_none() {
                match self.backend.create(&rel, tombstone.as_bytes()) {
                    // Committed meanwhile by the older writer: a real checkpoint.
                    Ok(()) | Err(WeirError::Fenced { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Whether the manifest of `id` is a tombstone (see
    /// [`CheckpointStore::close_incomplete`]): its size gives it away, a
    /// manifest is longer.
    pub(super) fn is_tombstone(&self, id: CheckpointId, size: u64) -> Result<bool> {
        if size > TOMBSTONE_MAX_BYTES {
            return Ok(false);
        }
        Ok(self
            .backend
            .get(&Self::manifest_rel(id))?
            .is_some_and(|b| b.starts_with(TOMBSTONE.as_bytes())))
    }

    /// Whether this writer claimed an object store and still holds it: a
    /// checkpoint id it found taken was then reserved by an older writer
    /// just before this one's claim fenced it, and the id is skipped.
    pub(crate) fn holds_claim(&self) -> Result<bool> {
        Ok(self.owner.load(Ordering::Relaxed) != 0 && self.check_owner().is_ok())
    }

    /// Fails when another writer claimed the store after this one.
    ///
    /// # Errors
    /// [`WeirError::Fenced`] naming the store and the newer holder.
    pub(super) fn check_owner(&self) -> Result<()> {
        let mine = self.owner.load(Ordering::Relaxed);
        if mine == 0 {
            return Ok(());
        }
        if let Some(newer) = self.claims()?.into_iter().filter(|n| *n > mine).max() {
            let holder = self
                .backend
                .get(&format!("{OWNERS}/{newer}"))?
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            return Err(WeirError::Fenced {
                what: format!("checkpoint store {} (now held by {holder})", self.job_dir().display()),
            });
        }
        Ok(())
    }
}
