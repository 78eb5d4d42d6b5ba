//! Sinks for tests and benchmarks: count records, or collect them in memory.
//! Neither takes part in checkpoints (at-least-once after a restart).

use super::{ConnectorContext, Sink};
use crate::error::Result;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use weir_operators::CheckpointId;

/// Counters shared by every subtask of a [`CountingSink`].
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Records seen.
    pub records: AtomicU64,
    /// Clock ([`crate::clock::now_ns`]) of the first record.
    pub first_ns: AtomicU64,
    /// Clock of the last record.
    pub last_ns: AtomicU64,
}

/// Counts records; nothing else.
pub struct CountingSink {
    stats: Arc<SinkStats>,
    local: u64,
}

impl CountingSink {
    /// A factory with counters nobody reads.
    pub fn factory() -> impl Fn(ConnectorContext) -> Result<CountingSink> + Send + 'static {
        Self::factory_with(Arc::new(SinkStats::default()))
    }

    /// A factory whose subtasks add to `stats`.
    pub fn factory_with(stats: Arc<SinkStats>) -> impl Fn(ConnectorContext) -> Result<CountingSink> + Send + 'static {
        move |_| {
            Ok(CountingSink {
                stats: stats.clone(),
                local: 0,
            })
        }
    }
}

impl<T> Sink<T> for CountingSink {
    fn is_stateful() -> bool {
        false
    }
    #[inline]
    fn write(&mut self, records: &mut Vec<T>) -> Result<()> {
        let n = records.len() as u64;
        records.clear();
        if n > 0 {
            let now = crate::clock::now_ns();
            if self.local == 0 {
                let _ = self
                    .stats
                    .first_ns
                    .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
            }
            self.local += n;
            self.stats.records.fetch_add(n, Ordering::Relaxed);
            self.stats.last_ns.fetch_max(now, Ordering::Relaxed);
        }
        Ok(())
    }
    fn snapshot(&mut self, _id: CheckpointId) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
    fn commit(&mut self, _id: CheckpointId) -> Result<()> {
        Ok(())
    }
}

/// Collects records into a shared vector.
pub struct CollectSink<T> {
    out: Arc<Mutex<Vec<T>>>,
}

impl<T: Send + 'static> CollectSink<T> {
    /// A factory whose subtasks append to `out`.
    pub fn factory(out: Arc<Mutex<Vec<T>>>) -> impl Fn(ConnectorContext) -> Result<CollectSink<T>> + Send + 'static {
        move |_| Ok(CollectSink { out: out.clone() })
    }
}

impl<T: Send + 'static> Sink<T> for CollectSink<T> {
    fn is_stateful() -> bool {
        false
    }
    fn write(&mut self, records: &mut Vec<T>) -> Result<()> {
        if let Ok(mut out) = self.out.lock() {
            out.append(records);
        }
        Ok(())
    }
    fn snapshot(&mut self, _id: CheckpointId) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
    fn commit(&mut self, _id: CheckpointId) -> Result<()> {
        Ok(())
    }
}
