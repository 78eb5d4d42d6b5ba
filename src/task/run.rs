//! The two task loops (source tasks and input tasks) and the background
//! snapshot thread of each task. This is the one place where [`Message`]s
//! are matched.

use super::aligner::{Aligned, BarrierAligner};
use super::chain::{Downstream, SnapshotBuilder};
use crate::checkpoint::manifest::{to_hex, SubtaskState};
use crate::clock::wall_clock_ms;
use crate::connectors::{Source, SourcePoll};
use crate::error::{panic_message, Result, WeirError};
use crate::stats::{bump, TaskStats};
use crossbeam_channel::{Receiver, RecvTimeoutError, Select, Sender, TryRecvError};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_operators::{Barrier, CheckpointId, Message, Timestamp};

/// From the coordinator to a task.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TaskCommand {
    /// Sources only: inject this barrier now.
    Trigger(Barrier),
    /// The checkpoint is complete (its manifest is durable).
    Complete(CheckpointId),
    /// The checkpoint was aborted.
    Abort(CheckpointId),
    /// Stop at once; the job failed or was cancelled.
    Cancel,
}

/// From tasks (and the job handle) to the coordinator.
#[derive(Debug)]
pub(crate) enum RuntimeEvent {
    Ack {
        task: usize,
        id: CheckpointId,
        states: Vec<(String, usize, SubtaskState)>,
    },
    Decline {
        task: usize,
        id: CheckpointId,
        reason: String,
    },
    SourceAtEnd,
    Finished {
        task: usize,
    },
    Failed {
        task: usize,
        error: WeirError,
    },
    Request {
        then_stop: bool,
    },
    Cancel,
}

/// What a running task holds to talk to the rest of the job.
pub(crate) struct TaskRuntime {
    /// The task's name (`<vertex>[<subtask>]`), for metrics and logs.
    pub(crate) name: String,
    pub(crate) commands: Receiver<TaskCommand>,
    pub(crate) events: Sender<RuntimeEvent>,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) snapshots: Sender<SnapshotJob>,
    /// Live counters for the job's status and metrics.
    pub(crate) stats: Arc<TaskStats>,
}

const POLL: Duration = Duration::from_millis(100);

/// How often a source task sends a latency marker.
const LATENCY_MARKER_INTERVAL: Duration = Duration::from_millis(200);

impl TaskRuntime {
    fn try_command(&self) -> Option<TaskCommand> {
        match self.commands.try_recv() {
            Ok(c) => Some(c),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(TaskCommand::Cancel),
        }
    }

    fn command_within(&self, wait: Duration) -> Option<TaskCommand> {
        match self.commands.recv_timeout(wait) {
            Ok(c) => Some(c),
            Err(RecvTimeoutError::Timeout) => self.cancel.load(Ordering::Relaxed).then_some(TaskCommand::Cancel),
            Err(RecvTimeoutError::Disconnected) => Some(TaskCommand::Cancel),
        }
    }

    fn next_command(&self) -> TaskCommand {
        loop {
            if let Some(c) = self.command_within(POLL) {
                return c;
            }
        }
    }

    fn submit(&self, snap: SnapshotBuilder) -> Result<()> {
        self.snapshots
            .send(SnapshotJob::Snapshot(snap))
            .map_err(|_| WeirError::Cancelled)
    }
}

/// Work for a task's snapshot thread, done in the order submitted.
pub(crate) enum SnapshotJob {
    /// The asynchronous parts of a snapshot, acknowledged when done.
    Snapshot(SnapshotBuilder),
    /// Other state work that must stay in order with the snapshots (a keyed
    /// stage's write-behind); it reports its own failures.
    Background(Box<dyn FnOnce() + Send>),
}

/// Spawns the background thread that finishes a task's snapshots (the
/// asynchronous parts, in order, from `jobs`) and acknowledges them.
pub(crate) fn spawn_snapshotter(
    task: usize,
    name: String,
    events: Sender<RuntimeEvent>,
    jobs: Receiver<SnapshotJob>,
) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("{name}-snapshot"))
        .spawn(move || {
            lower_own_priority();
            for job in jobs {
                let snap = match job {
                    SnapshotJob::Snapshot(snap) => snap,
                    SnapshotJob::Background(work) => {
                        // A panic is the work's own failure to report; the thread goes on.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(work));
                        continue;
                    }
                };
                let id = snap.id;
                let mut states = snap.ready;
                let mut failure = None;
                for (uid, subtask, part) in snap.pending {
                    match std::panic::catch_unwind(AssertUnwindSafe(part)) {
                        Ok(Ok(state)) => states.push((uid, subtask, state)),
                        Ok(Err(e)) => {
                            failure = Some(e.to_string());
                            break;
                        }
                        Err(p) => {
                            failure = Some(format!("snapshot of `{uid}` panicked: {}", panic_message(&p)));
                            break;
                        }
                    }
                }
                let event = match failure {
                    None => RuntimeEvent::Ack { task, id, states },
                    Some(reason) => RuntimeEvent::Decline { task, id, reason },
                };
                if events.send(event).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| WeirError::io("cannot spawn snapshot thread for", name, e))
}

/// Makes the calling thread yield the CPU to the task threads: snapshot
/// work is in the background, and on a busy machine it must not delay
/// records. `SCHED_IDLE` runs the thread only on a CPU nothing else wants,
/// and a waking task thread preempts it at once (nice 10, the fallback,
/// still let it hold a CPU for a scheduler slice of several ms: W2's tail).
/// Best effort, ignored where not permitted.
fn lower_own_priority() {
    // SAFETY: gettid, sched_setscheduler and setpriority have no
    // memory-safety preconditions (the parameter is a valid local); on Linux
    // a thread id changes that thread only.
    unsafe {
        let tid = libc::gettid();
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) != 0 {
            let _ = libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
        }
    }
}

/// Runs a source subtask: poll the source, push through the chain, and
/// inject barriers exactly between two records when the coordinator asks.
pub(crate) fn run_source<T: Send, S: Source<T>>(
    mut source: S,
    mut chain: Box<dyn Downstream<T>>,
    uid: String,
    subtask: usize,
    batch_size: usize,
    drain_at_end: bool,
    rt: TaskRuntime,
) -> Result<()> {
    chain.open()?;
    let mut buf = Vec::with_capacity(batch_size);
    let mut next_marker = Instant::now() + LATENCY_MARKER_INTERVAL;
    let mut final_checkpoint = FinalCheckpoint::default();
    let mut at_end = false;
    let mut watermark = Timestamp::MIN;
    // Idle was sent on, and no record or watermark since.
    let mut announced_idle = false;
    // The earliest processing-time timer of the chain (an idleness timeout).
    let mut next_timer = next_call(&*chain, false);
    loop {
        let command = if final_checkpoint.is_forwarded() || at_end {
            Some(rt.next_command())
        } else if let Some(c) = rt.try_command() {
            Some(c)
        } else {
            match source.poll(&mut buf, batch_size)? {
                SourcePoll::Ready => {
                    if !buf.is_empty() {
                        announced_idle = false;
                        bump(&rt.stats.records_in, buf.len() as u64);
                        chain.records(&mut buf)?;
                    }
                    if let Some(w) = source.watermark() {
                        if w > watermark {
                            announced_idle = false;
                            watermark = w;
                            rt.stats.watermark.store(w.0, Ordering::Relaxed);
                            chain.watermark(w)?;
                        }
                    }
                    let now = Instant::now();
                    if now >= next_marker {
                        next_marker = now + LATENCY_MARKER_INTERVAL;
                        chain.latency_marker(now)?;
                        let end_at = source.remaining().map_or(-1, |left| {
                            let read = rt.stats.records_in.load(Ordering::Relaxed);
                            read.saturating_add(left).min(i64::MAX as u64) as i64
                        });
                        rt.stats.end_at.store(end_at, Ordering::Relaxed);
                    }
                    None
                }
                SourcePoll::Idle(wait) => {
                    chain.flush()?;
                    if !announced_idle && source.is_idle() {
                        announced_idle = true;
                        chain.idle()?;
                    }
                    let until_timer = next_timer.map_or(POLL, |due| {
                        Duration::from_millis(due.saturating_sub(wall_clock_ms()).max(0) as u64)
                    });
                    rt.command_within(wait.min(POLL).min(until_timer))
                }
                SourcePoll::End => {
                    if drain_at_end {
                        // Bounded + drain: fire every window before the final checkpoint.
                        chain.watermark(Timestamp::MAX)?;
                    }
                    chain.flush()?;
                    at_end = true;
                    let read = rt.stats.records_in.load(Ordering::Relaxed);
                    rt.stats
                        .end_at
                        .store(read.min(i64::MAX as u64) as i64, Ordering::Relaxed);
                    let _ = rt.events.send(RuntimeEvent::SourceAtEnd);
                    None
                }
            }
        };
        if next_timer.is_some_and(|due| wall_clock_ms() >= due) {
            let ending = final_checkpoint.is_forwarded();
            chain.processing_time(if ending { i64::MIN } else { wall_clock_ms() })?;
        }
        next_timer = next_call(&*chain, final_checkpoint.is_forwarded());
        match command {
            None => {}
            Some(TaskCommand::Trigger(barrier)) => {
                chain.flush()?;
                let mut snap = SnapshotBuilder {
                    id: barrier.id,
                    ready: Vec::new(),
                    pending: Vec::new(),
                };
                let position = SubtaskState::Bytes {
                    hex: to_hex(&source.position()?),
                    describe: source.describe_position(),
                };
                snap.ready.push((uid.clone(), subtask, position));
                chain.barrier(barrier, &mut snap)?;
                rt.submit(snap)?;
                final_checkpoint.forwarded(barrier);
            }
            Some(command) => {
                if let TaskCommand::Complete(id) = command {
                    source.checkpoint_complete(id)?;
                }
                final_checkpoint.on_command(command, &mut *chain)?;
                if final_checkpoint.is_complete() {
                    return chain.end();
                }
            }
        }
    }
}

/// Runs a subtask fed by channels: aligned barriers, min watermarks, End.
pub(crate) fn run_input<T: Send>(
    inputs: Vec<Receiver<Message<T>>>,
    mut chain: Box<dyn Downstream<T>>,
    rt: TaskRuntime,
) -> Result<()> {
    chain.open()?;
    let n = inputs.len();
    let mut aligner = BarrierAligner::new(n);
    let mut watermarks = vec![Timestamp::MIN; n];
    let mut open = vec![true; n];
    // Inputs that said they are idle (`Message::Idle`) and sent nothing since.
    let mut idle = vec![false; n];
    // This task's output was marked idle, and nothing reactivated an input since.
    let mut announced_idle = false;
    let mut current_watermark = Timestamp::MIN;
    let mut final_checkpoint = FinalCheckpoint::default();
    let alignment = metrics::histogram!("weir_checkpoint_alignment_seconds", "task" => rt.name.clone());
    // When the first barrier of the checkpoint being aligned arrived.
    let mut aligning_since: Option<Instant> = None;
    // The earliest processing-time timer of the chain, checked after every message.
    let mut next_timer = next_call(&*chain, false);

    loop {
        // The set of readable inputs changes only at barriers and ends, so the
        // Select is rebuilt only then.
        let mut select = Select::new();
        let mut index = Vec::with_capacity(n);
        for i in (0..n).filter(|&i| open[i] && !aligner.is_blocked(i)) {
            select.recv(&inputs[i]);
            index.push(i);
        }
        let command_op = select.recv(&rt.commands);
        loop {
            if let Some(due) = next_timer {
                let now = wall_clock_ms();
                if now >= due {
                    // Once the final barrier has passed, the job is ending:
                    // due timers stay in its checkpoint (they fire in the next
                    // run); only snapshot work goes on.
                    let ending = final_checkpoint.is_forwarded();
                    chain.processing_time(if ending { i64::MIN } else { now })?;
                    next_timer = next_call(&*chain, ending);
                }
            }
            let op = match select.try_select() {
                Ok(op) => op,
                Err(_) => {
                    chain.flush()?; // nothing ready: push buffered output on (adaptive batching)
                                    // Sleep until input arrives, or at most until the next processing-time timer.
                    let wait = next_timer.map_or(POLL, |due| {
                        Duration::from_millis(due.saturating_sub(wall_clock_ms()).max(0) as u64).min(POLL)
                    });
                    match select.select_timeout(wait) {
                        Ok(op) => op,
                        Err(_) if rt.cancel.load(Ordering::Relaxed) => return Err(WeirError::Cancelled),
                        Err(_) => continue,
                    }
                }
            };
            if op.index() == command_op {
                let command = op.recv(&rt.commands).unwrap_or(TaskCommand::Cancel);
                final_checkpoint.on_command(command, &mut *chain)?;
                continue;
            }
            let i = index[op.index()];
            let message = op.recv(&inputs[i]).map_err(|_| WeirError::Cancelled)?;
            let aligned = match message {
                Message::Records(mut batch) => {
                    if idle[i] {
                        idle[i] = false;
                        announced_idle = false;
                    }
                    bump(&rt.stats.records_in, batch.len() as u64);
                    chain.records(&mut batch)?;
                    next_timer = next_call(&*chain, final_checkpoint.is_forwarded());
                    continue;
                }
                Message::Watermark(w) => {
                    let woke = std::mem::replace(&mut idle[i], false);
                    announced_idle &= !woke;
                    if w > watermarks[i] || woke {
                        watermarks[i] = watermarks[i].max(w);
                        advance_watermark(&watermarks, &open, &idle, &mut current_watermark, &mut *chain)?;
                        rt.stats.watermark.store(current_watermark.0, Ordering::Relaxed);
                        next_timer = next_call(&*chain, final_checkpoint.is_forwarded());
                    }
                    continue;
                }
                Message::Idle => {
                    idle[i] = true;
                    advance_watermark(&watermarks, &open, &idle, &mut current_watermark, &mut *chain)?;
                    rt.stats.watermark.store(current_watermark.0, Ordering::Relaxed);
                    if !announced_idle && (0..n).all(|j| !open[j] || idle[j]) {
                        announced_idle = true;
                        chain.idle()?;
                    }
                    next_timer = next_call(&*chain, final_checkpoint.is_forwarded());
                    continue;
                }
                Message::LatencyMarker(emitted) => {
                    chain.latency_marker(emitted)?;
                    continue;
                }
                Message::Barrier(barrier) => {
                    aligning_since.get_or_insert_with(Instant::now);
                    aligner.on_barrier(i, barrier)
                }
                Message::End => {
                    open[i] = false;
                    let aligned = aligner.on_end(i);
                    advance_watermark(&watermarks, &open, &idle, &mut current_watermark, &mut *chain)?;
                    aligned
                }
            };
            if let Aligned::Complete(barrier) = aligned {
                if let Some(since) = aligning_since.take() {
                    let took = since.elapsed();
                    alignment.record(took.as_secs_f64());
                    rt.stats
                        .last_alignment_ns
                        .store(took.as_nanos() as u64, Ordering::Relaxed);
                }
                chain.flush()?;
                let mut snap = SnapshotBuilder {
                    id: barrier.id,
                    ready: Vec::new(),
                    pending: Vec::new(),
                };
                chain.barrier(barrier, &mut snap)?;
                rt.submit(snap)?;
                final_checkpoint.forwarded(barrier);
                // A keyed stage now takes its changed state step by step and
                // asks to be called right away for it, idle input or not.
                next_timer = next_call(&*chain, final_checkpoint.is_forwarded());
            }
            if aligner.all_ended() {
                // Sinks commit the final checkpoint before the task ends.
                while final_checkpoint.is_forwarded() && !final_checkpoint.is_complete() {
                    final_checkpoint.on_command(rt.next_command(), &mut *chain)?;
                }
                return chain.end();
            }
            break; // readable inputs changed: rebuild the Select
        }
    }
}

/// When the run loop must call the chain's `processing_time` next: at its
/// earliest processing-time timer, or, once the final checkpoint's barrier
/// has passed (`ending`), only for snapshot work in progress (asked as
/// `i64::MIN`): timers that fire then would emit output after the final
/// checkpoint, which the next run emits again from the restored timers.
fn next_call<T>(chain: &dyn Downstream<T>, ending: bool) -> Option<i64> {
    let next = chain.next_processing_timer();
    if ending {
        next.filter(|&at| at == i64::MIN)
    } else {
        next
    }
}

/// The final checkpoint of a task (the barrier flagged "then stop" it
/// forwarded) and the one place where a task takes the coordinator's
/// `Complete` and `Abort`.
#[derive(Debug, Default)]
struct FinalCheckpoint {
    /// The final barrier forwarded, until its checkpoint is aborted.
    id: Option<CheckpointId>,
    /// Whether that checkpoint completed (sinks committed it).
    complete: bool,
}

impl FinalCheckpoint {
    /// Remembers `barrier` when it is the final one.
    fn forwarded(&mut self, barrier: Barrier) {
        if barrier.then_stop {
            self.id = Some(barrier.id);
            self.complete = false;
        }
    }

    /// A final barrier went out and was not aborted.
    fn is_forwarded(&self) -> bool {
        self.id.is_some()
    }

    /// The final checkpoint completed: the task may end.
    fn is_complete(&self) -> bool {
        self.id.is_some() && self.complete
    }

    /// Tells the chain a checkpoint completed or was aborted. An aborted
    /// final checkpoint is forgotten: the coordinator retries it with a new
    /// final barrier. `Trigger` is for sources, which take it themselves.
    ///
    /// # Errors
    /// The chain's error, or [`WeirError::Cancelled`] on `Cancel`.
    fn on_command<T>(&mut self, command: TaskCommand, chain: &mut dyn Downstream<T>) -> Result<()> {
        match command {
            TaskCommand::Complete(id) => {
                chain.checkpoint_complete(id)?;
                self.complete |= self.id == Some(id);
            }
            TaskCommand::Abort(id) => {
                chain.checkpoint_aborted(id)?;
                if self.id == Some(id) {
                    self.id = None;
                }
            }
            TaskCommand::Trigger(_) => {}
            TaskCommand::Cancel => return Err(WeirError::Cancelled),
        }
        Ok(())
    }
}

/// Event time of a multi-input task: the minimum over inputs that are not
/// idle, open or ended alike. An input that ended keeps the watermark it
/// reached: its end is the end of this run (a bounded run, or a source out
/// of data), and the next run resumes it there, so the others must not
/// fire windows it may still add to (`drain_at_end` ends it with the end of
/// time instead). One that ended without any event time holds nothing (a
/// subtask without partitions). An idle input does not hold the others
/// back; when every open input is idle and no ended one holds, the newest
/// of their watermarks (as Flink's watermark valve does: nothing is coming,
/// so what they reached is safe until one wakes).
fn advance_watermark<T>(
    watermarks: &[Timestamp],
    open: &[bool],
    idle: &[bool],
    current: &mut Timestamp,
    chain: &mut dyn Downstream<T>,
) -> Result<()> {
    let inputs = 0..watermarks.len();
    let holding = |&i: &usize| !idle[i] && (open[i] || watermarks[i] > Timestamp::MIN);
    let active = inputs.clone().filter(holding).map(|i| watermarks[i]).min();
    let next = match active {
        Some(m) => Some(m),
        None => inputs.filter(|&i| open[i]).map(|i| watermarks[i]).max(),
    };
    match next {
        Some(m) if m > *current => {
            *current = m;
            chain.watermark(m)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A chain that records the watermarks it was sent and the checkpoints it heard completed or aborted.
    #[derive(Default)]
    struct Heard(Vec<String>);

    impl Downstream<u32> for Heard {
        fn records(&mut self, _: &mut Vec<u32>) -> Result<()> {
            Ok(())
        }
        fn watermark(&mut self, w: Timestamp) -> Result<()> {
            self.0.push(format!("watermark {}", w.0));
            Ok(())
        }
        fn idle(&mut self) -> Result<()> {
            Ok(())
        }
        fn flush(&mut self) -> Result<()> {
            Ok(())
        }
        fn barrier(&mut self, _: Barrier, _: &mut SnapshotBuilder) -> Result<()> {
            Ok(())
        }
        fn checkpoint_complete(&mut self, id: CheckpointId) -> Result<()> {
            self.0.push(format!("complete {}", id.0));
            Ok(())
        }
        fn checkpoint_aborted(&mut self, id: CheckpointId) -> Result<()> {
            self.0.push(format!("aborted {}", id.0));
            Ok(())
        }
        fn end(&mut self) -> Result<()> {
            Ok(())
        }
        fn latency_marker(&mut self, _: Instant) -> Result<()> {
            Ok(())
        }
    }

    fn barrier(id: u64, then_stop: bool) -> Barrier {
        Barrier {
            id: CheckpointId(id),
            then_stop,
        }
    }

    #[test]
    fn a_task_ends_only_when_its_final_checkpoint_completes() {
        let (mut last, mut chain) = (FinalCheckpoint::default(), Heard::default());
        last.forwarded(barrier(1, false));
        assert!(!last.is_forwarded());
        last.forwarded(barrier(2, true));
        last.on_command(TaskCommand::Complete(CheckpointId(1)), &mut chain)
            .unwrap();
        assert!(
            last.is_forwarded() && !last.is_complete(),
            "an earlier checkpoint is not the final one"
        );
        last.on_command(TaskCommand::Complete(CheckpointId(2)), &mut chain)
            .unwrap();
        assert!(last.is_complete());
        assert_eq!(
            chain.0,
            ["complete 1", "complete 2"],
            "every completion reaches the chain"
        );
    }

    #[test]
    fn an_aborted_final_checkpoint_is_forgotten_until_the_retry_is_forwarded() {
        let (mut last, mut chain) = (FinalCheckpoint::default(), Heard::default());
        last.forwarded(barrier(3, true));
        last.on_command(TaskCommand::Abort(CheckpointId(3)), &mut chain)
            .unwrap();
        assert!(!last.is_forwarded() && !last.is_complete());
        last.forwarded(barrier(4, true));
        last.on_command(TaskCommand::Complete(CheckpointId(3)), &mut chain)
            .unwrap();
        assert!(
            !last.is_complete(),
            "the aborted one completing late does not end the task"
        );
        last.on_command(TaskCommand::Complete(CheckpointId(4)), &mut chain)
            .unwrap();
        assert!(last.is_complete());
        assert!(matches!(
            last.on_command(TaskCommand::Cancel, &mut chain),
            Err(WeirError::Cancelled)
        ));
        assert_eq!(chain.0, ["aborted 3", "complete 3", "complete 4"]);
    }

    #[test]
    fn an_ended_input_holds_event_time_where_it_ended() {
        let (mut current, mut chain) = (Timestamp::MIN, Heard::default());
        let mut step = |marks: [i64; 3], open: [bool; 3], idle: [bool; 3]| {
            advance_watermark(&marks.map(Timestamp), &open, &idle, &mut current, &mut chain).unwrap();
            chain.0.clone()
        };
        step([10, 20, i64::MIN], [true; 3], [false; 3]);
        step([10, 20, i64::MIN], [true, true, false], [false; 3]);
        step([10, 30, i64::MIN], [false, true, false], [false; 3]);
        let sent = step([10, 40, i64::MIN], [false, true, false], [false; 3]);
        assert_eq!(
            sent,
            ["watermark 10"],
            "an input without event time that ended holds nothing; one that ended at 10 holds 10"
        );
        let sent = step([10, 40, i64::MIN], [false, true, false], [true, false, false]);
        assert_eq!(
            sent,
            ["watermark 10", "watermark 40"],
            "one that went idle before it ended does not hold"
        );
    }
}
