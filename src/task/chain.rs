//! The inside of a task: a chain of stages, each a [`Downstream`] of the one
//! before, ending in a tail that sends to channels or writes to a sink.
//!
//! Calls between stages are per *batch* (one dynamic call per stage per
//! batch); inside a stage the record loop is monomorphized over the operator,
//! so user closures inline into it. Output vectors are reused: no allocation
//! per record.

use crate::checkpoint::manifest::{to_hex, SubtaskState};
use crate::checkpoint::store::CheckpointStore;
use crate::connectors::Sink;
use crate::error::{Result, WeirError};
use crate::stats::{bump, TaskStats};
use crossbeam_channel::{SendTimeoutError, Sender};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_operators::{
    key_group_of, subtask_for_key_group, Barrier, CheckpointId, Message, Operator, StateKey, Timestamp,
};

/// The part of a snapshot that runs off the record path.
pub(crate) type AsyncPart = Box<dyn FnOnce() -> Result<SubtaskState> + Send>;

/// What the stages of a task contribute to checkpoint `id`.
pub(crate) struct SnapshotBuilder {
    pub(crate) id: CheckpointId,
    /// (operator uid, subtask, state) ready now.
    pub(crate) ready: Vec<(String, usize, SubtaskState)>,
    /// (operator uid, subtask, work) to finish in the background.
    pub(crate) pending: Vec<(String, usize, AsyncPart)>,
}

/// Receives what flows through a task, stage by stage.
pub(crate) trait Downstream<T>: Send {
    /// Before the first message, on the task's thread: sinks connect
    /// ([`crate::connectors::Sink::open`]); stages pass it on. Tails that
    /// are channels have nothing to open.
    fn open(&mut self) -> Result<()> {
        Ok(())
    }
    /// Processes (drains) a batch.
    fn records(&mut self, batch: &mut Vec<T>) -> Result<()>;
    /// Event time advanced.
    fn watermark(&mut self, watermark: Timestamp) -> Result<()>;
    /// The task's input went idle ([`weir_operators::Message::Idle`]): pass
    /// it on; a channel tail tells every receiver, after what it buffered.
    fn idle(&mut self) -> Result<()>;
    /// The wall clock reached `now_ms` (ms since the epoch): fire due
    /// processing-time timers, then pass it on. Tails ignore it.
    fn processing_time(&mut self, _now_ms: i64) -> Result<()> {
        Ok(())
    }
    /// The earliest processing-time timer of this stage and the ones after it.
    fn next_processing_timer(&self) -> Option<i64> {
        None
    }
    /// The task's input has nothing ready: push buffered output on.
    fn flush(&mut self) -> Result<()>;
    /// Snapshot own state into `snap`, then pass the barrier on.
    fn barrier(&mut self, barrier: Barrier, snap: &mut SnapshotBuilder) -> Result<()>;
    /// Checkpoint `id` is complete.
    fn checkpoint_complete(&mut self, id: CheckpointId) -> Result<()>;
    /// Checkpoint `id` was aborted.
    fn checkpoint_aborted(&mut self, _id: CheckpointId) -> Result<()> {
        Ok(())
    }
    /// All input ended.
    fn end(&mut self) -> Result<()>;
    /// A latency marker sent at `emitted`: pass it on (a sink records its age).
    fn latency_marker(&mut self, emitted: Instant) -> Result<()>;
}

/// A stateless operator and the rest of the chain after it.
pub(crate) struct Stage<I, O, Op> {
    pub(crate) op: Op,
    pub(crate) name: String,
    pub(crate) out: Vec<O>,
    pub(crate) next: Box<dyn Downstream<O>>,
    pub(crate) _input: PhantomData<fn(I)>,
}

impl<I, O, Op> Stage<I, O, Op> {
    pub(crate) fn new(op: Op, name: String, next: Box<dyn Downstream<O>>) -> Self {
        Stage {
            op,
            name,
            out: Vec::new(),
            next,
            _input: PhantomData,
        }
    }

    fn fail(&self, e: weir_operators::OperatorError) -> WeirError {
        WeirError::Operator {
            operator: self.name.clone(),
            message: e.0,
        }
    }

    fn push(&mut self) -> Result<()> {
        if self.out.is_empty() {
            Ok(())
        } else {
            self.next.records(&mut self.out)
        }
    }
}

impl<I: Send, O: Send, Op: Operator<I, O>> Downstream<I> for Stage<I, O, Op> {
    fn open(&mut self) -> Result<()> {
        self.next.open()
    }
    #[inline]
    fn records(&mut self, batch: &mut Vec<I>) -> Result<()> {
        for record in batch.drain(..) {
            if let Err(e) = self.op.process(record, &mut self.out) {
                return Err(self.fail(e));
            }
        }
        self.push()
    }
    fn watermark(&mut self, watermark: Timestamp) -> Result<()> {
        self.op
            .on_watermark(watermark, &mut self.out)
            .map_err(|e| self.fail(e))?;
        self.push()?;
        self.next.watermark(watermark)
    }
    fn idle(&mut self) -> Result<()> {
        self.next.idle()
    }
    fn processing_time(&mut self, now_ms: i64) -> Result<()> {
        self.next.processing_time(now_ms)
    }
    fn next_processing_timer(&self) -> Option<i64> {
        self.next.next_processing_timer()
    }
    fn latency_marker(&mut self, emitted: Instant) -> Result<()> {
        self.next.latency_marker(emitted)
    }
    fn flush(&mut self) -> Result<()> {
        self.next.flush()
    }
    fn barrier(&mut self, barrier: Barrier, snap: &mut SnapshotBuilder) -> Result<()> {
        self.next.barrier(barrier, snap)
    }
    fn checkpoint_complete(&mut self, id: CheckpointId) -> Result<()> {
        self.next.checkpoint_complete(id)
    }
    fn checkpoint_aborted(&mut self, id: CheckpointId) -> Result<()> {
        self.next.checkpoint_aborted(id)
    }
    fn end(&mut self) -> Result<()> {
        self.op.on_end(&mut self.out).map_err(|e| self.fail(e))?;
        self.push()?;
        self.next.end()
    }
}

/// Sends `msg`, waiting while the channel is full (backpressure) but
/// giving up when the job is cancelled or the receiver is gone.
pub(crate) fn send<T>(sender: &Sender<Message<T>>, mut msg: Message<T>, cancel: &AtomicBool) -> Result<()> {
    match sender.try_send(msg) {
        Ok(()) => return Ok(()),
        Err(crossbeam_channel::TrySendError::Full(m)) => msg = m,
        Err(crossbeam_channel::TrySendError::Disconnected(_)) => return Err(WeirError::Cancelled),
    }
    loop {
        match sender.send_timeout(msg, Duration::from_millis(100)) {
            Ok(()) => return Ok(()),
            Err(SendTimeoutError::Timeout(m)) => {
                if cancel.load(Ordering::Relaxed) {
                    return Err(WeirError::Cancelled);
                }
                msg = m;
            }
            Err(SendTimeoutError::Disconnected(_)) => return Err(WeirError::Cancelled),
        }
    }
}

/// Picks the output channel of a record.
pub(crate) trait Router<T>: Send {
    /// Index in `0..outputs`.
    fn route(&mut self, record: &T, outputs: usize) -> usize;
}

/// `key_by`: key -> key group -> owning subtask.
pub(crate) struct KeyRouter<F> {
    pub(crate) key_of: F,
    pub(crate) max_parallelism: u16,
    pub(crate) scratch: Vec<u8>,
}

impl<T, K: StateKey, F: Fn(&T) -> K + Send> Router<T> for KeyRouter<F> {
    #[inline]
    fn route(&mut self, record: &T, outputs: usize) -> usize {
        self.scratch.clear();
        (self.key_of)(record).encode_key(&mut self.scratch);
        subtask_for_key_group(
            key_group_of(&self.scratch, self.max_parallelism),
            self.max_parallelism,
            outputs,
        )
    }
}

/// Round-robin over outputs (rebalance, union).
pub(crate) struct RoundRobin(pub(crate) usize);

impl<T> Router<T> for RoundRobin {
    #[inline]
    fn route(&mut self, _record: &T, outputs: usize) -> usize {
        self.0 = (self.0 + 1) % outputs;
        self.0
    }
}

/// The tail of a task that feeds another task: one buffer per downstream
/// subtask, flushed when full, when the input is idle, or before a control
/// message (adaptive batching, no timers).
pub(crate) struct ChannelOut<T, R> {
    pub(crate) senders: Vec<Sender<Message<T>>>,
    pub(crate) buffers: Vec<Vec<T>>,
    pub(crate) batch_size: usize,
    pub(crate) router: R,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) stats: Arc<TaskStats>,
    /// The output the next latency marker takes (they rotate over outputs).
    pub(crate) next_marker_output: usize,
}

impl<T: Send, R: Router<T>> ChannelOut<T, R> {
    pub(crate) fn new(
        senders: Vec<Sender<Message<T>>>,
        batch_size: usize,
        router: R,
        cancel: Arc<AtomicBool>,
        stats: Arc<TaskStats>,
    ) -> Self {
        let buffers = senders.iter().map(|_| Vec::with_capacity(batch_size)).collect();
        let capacity = senders.first().and_then(|s| s.capacity()).unwrap_or(0);
        stats.output_capacity.store(capacity as u64, Ordering::Relaxed);
        ChannelOut {
            senders,
            buffers,
            batch_size,
            router,
            cancel,
            stats,
            next_marker_output: 0,
        }
    }

    /// Sends on output `i`, counting the time spent waiting for room
    /// (backpressure) and how full the channel is afterwards.
    fn send_to(&self, i: usize, msg: Message<T>) -> Result<()> {
        let sender = &self.senders[i];
        if sender.is_full() {
            let waiting = Instant::now();
            send(sender, msg, &self.cancel)?;
            bump(&self.stats.blocked_ns, waiting.elapsed().as_nanos() as u64);
        } else {
            send(sender, msg, &self.cancel)?;
        }
        self.stats.output_queue.store(sender.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn send_buffer(&mut self, i: usize) -> Result<()> {
        let batch = std::mem::replace(&mut self.buffers[i], Vec::with_capacity(self.batch_size));
        bump(&self.stats.records_out, batch.len() as u64);
        self.send_to(i, Message::Records(batch))
    }

    fn broadcast(&mut self, make: impl Fn() -> Message<T>) -> Result<()> {
        self.flush()?;
        for i in 0..self.senders.len() {
            self.send_to(i, make())?;
        }
        Ok(())
    }
}

impl<T: Send, R: Router<T>> Downstream<T> for ChannelOut<T, R> {
    #[inline]
    fn records(&mut self, batch: &mut Vec<T>) -> Result<()> {
        let n = self.senders.len();
        if n == 1 {
            self.buffers[0].append(batch);
            if self.buffers[0].len() >= self.batch_size {
                self.send_buffer(0)?;
            }
            return Ok(());
        }
        for record in batch.drain(..) {
            let i = self.router.route(&record, n);
            self.buffers[i].push(record);
            if self.buffers[i].len() >= self.batch_size {
                self.send_buffer(i)?;
            }
        }
        Ok(())
    }
    fn watermark(&mut self, watermark: Timestamp) -> Result<()> {
        self.broadcast(|| Message::Watermark(watermark))
    }
    fn idle(&mut self) -> Result<()> {
        self.broadcast(|| Message::Idle)
    }
    fn flush(&mut self) -> Result<()> {
        for i in 0..self.buffers.len() {
            if !self.buffers[i].is_empty() {
                self.send_buffer(i)?;
            }
        }
        Ok(())
    }
    fn barrier(&mut self, barrier: Barrier, _snap: &mut SnapshotBuilder) -> Result<()> {
        self.broadcast(|| Message::Barrier(barrier))
    }
    fn checkpoint_complete(&mut self, _id: CheckpointId) -> Result<()> {
        Ok(())
    }
    fn end(&mut self) -> Result<()> {
        self.broadcast(|| Message::End)
    }
    fn latency_marker(&mut self, emitted: Instant) -> Result<()> {
        // One output, behind the records buffered for it, so that the marker
        // measures their wait; rotating spreads markers over every path.
        let i = self.next_marker_output % self.senders.len().max(1);
        self.next_marker_output = i + 1;
        if !self.buffers[i].is_empty() {
            self.send_buffer(i)?;
        }
        self.send_to(i, Message::LatencyMarker(emitted))
    }
}

/// Sink state up to this size is kept inline in the manifest, larger in a file.
const INLINE_STATE_BYTES: usize = 64 << 10;

/// The tail of a task that ends in a sink.
pub(crate) struct SinkTail<T, S> {
    pub(crate) sink: S,
    pub(crate) store: CheckpointStore,
    pub(crate) uid: Option<String>,
    pub(crate) name: String,
    pub(crate) subtask: usize,
    pub(crate) stats: Arc<TaskStats>,
    /// `weir_latency_seconds` and `weir_sink_commit_seconds` of this sink subtask.
    pub(crate) latency: metrics::Histogram,
    pub(crate) commit_time: metrics::Histogram,
    pub(crate) _records: PhantomData<fn(T)>,
}

/// A sink's small state, kept in the manifest.
fn inline_state(bytes: &[u8]) -> SubtaskState {
    SubtaskState::Bytes {
        hex: to_hex(bytes),
        describe: String::new(),
    }
}

impl<T: Send, S: Sink<T>> Downstream<T> for SinkTail<T, S> {
    fn open(&mut self) -> Result<()> {
        self.sink.open()
    }
    #[inline]
    fn records(&mut self, batch: &mut Vec<T>) -> Result<()> {
        bump(&self.stats.records_out, batch.len() as u64);
        self.sink.write(batch)
    }
    fn watermark(&mut self, watermark: Timestamp) -> Result<()> {
        self.sink.watermark(watermark)
    }
    fn idle(&mut self) -> Result<()> {
        self.sink.idle()
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    fn barrier(&mut self, barrier: Barrier, snap: &mut SnapshotBuilder) -> Result<()> {
        let bytes = if barrier.then_stop {
            self.sink.snapshot_final(barrier.id)?
        } else {
            self.sink.snapshot(barrier.id)?
        };
        let sync = self.sink.deferred_sync();
        let Some(uid) = &self.uid else {
            return sync.map_or(Ok(()), |sync| sync());
        };
        if bytes.len() <= INLINE_STATE_BYTES && sync.is_none() {
            snap.ready.push((uid.clone(), self.subtask, inline_state(&bytes)));
            return Ok(());
        }
        // An fsync of the output, or large state (uncommitted output), off the record path.
        let rel_dir = self.store.private_rel(barrier.id, &format!("{uid}-{}", self.subtask));
        let store = self.store.clone();
        snap.pending.push((
            uid.clone(),
            self.subtask,
            Box::new(move || {
                if let Some(sync) = sync {
                    sync()?;
                }
                if bytes.len() <= INLINE_STATE_BYTES {
                    return Ok(inline_state(&bytes));
                }
                let path = format!("{rel_dir}/sink.state");
                store.put(&path, &bytes)?;
                Ok(SubtaskState::File {
                    path,
                    size: bytes.len() as u64,
                })
            }),
        ));
        Ok(())
    }
    fn checkpoint_complete(&mut self, id: CheckpointId) -> Result<()> {
        let started = Instant::now();
        let committed = self.sink.commit(id);
        self.commit_time.record(started.elapsed().as_secs_f64());
        if committed.is_ok() {
            self.stats
                .committed_checkpoint
                .store(id.0, std::sync::atomic::Ordering::Relaxed);
        }
        // Errors that name their connector (or are fatal as they are) pass
        // unchanged; others get the sink's name.
        committed.map_err(|e| match e {
            WeirError::Connector { .. } | WeirError::Kafka { .. } | WeirError::Fenced { .. } => e,
            other => WeirError::Connector {
                connector: format!("{}[{}]", self.name, self.subtask),
                message: other.to_string(),
            },
        })
    }
    fn end(&mut self) -> Result<()> {
        self.sink.finish()
    }
    fn latency_marker(&mut self, emitted: Instant) -> Result<()> {
        let age = emitted.elapsed();
        self.latency.record(age.as_secs_f64());
        self.stats.record_latency(age);
        Ok(())
    }
}
