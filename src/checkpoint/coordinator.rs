//! The checkpoint coordinator: a pure state machine (no threads, no clock).
//!
//! The runtime feeds it events (`tick`, `on_ack`, `on_persisted`, ...) with
//! the current time in milliseconds and carries out the [`Action`]s it
//! returns: tell the sources to inject a barrier, write a manifest, notify
//! tasks, abort, prune. Rules (DESIGN.md, checkpoints):
//! - at most one checkpoint in flight; a trigger asked for meanwhile waits;
//! - a checkpoint is complete when every task acknowledged it, and is
//!   announced only after its manifest is durable;
//! - one that is not acknowledged within the timeout, or declined, is aborted;
//! - the newest `retained` complete checkpoints are kept, older ones pruned.

use std::collections::{BTreeMap, VecDeque};
use weir_operators::CheckpointId;

/// Index of a task (operator chain subtask) in the running job.
pub type TaskIndex = usize;

/// Coordinator settings.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Periodic trigger interval in ms; `None` = only on demand.
    pub interval_ms: Option<u64>,
    /// Abort a checkpoint not complete after this many ms.
    pub timeout_ms: u64,
    /// Complete checkpoints to keep.
    pub retained: usize,
}

/// What the runtime must do.
#[derive(Debug, PartialEq)]
pub enum Action<S> {
    /// Tell every source to inject `Barrier(id)` (flagged `then_stop` for a final one).
    Trigger {
        /// The new checkpoint.
        id: CheckpointId,
        /// A final checkpoint: sources end after it.
        then_stop: bool,
    },
    /// Every task acknowledged: write the manifest atomically, then call
    /// [`Coordinator::on_persisted`] (or `on_persist_failed`).
    Persist {
        /// The checkpoint.
        id: CheckpointId,
        /// Snapshots by task.
        snapshots: BTreeMap<TaskIndex, S>,
        /// Whether this is a final checkpoint.
        then_stop: bool,
    },
    /// The manifest is durable: tell every task (sinks commit now).
    NotifyComplete {
        /// The checkpoint.
        id: CheckpointId,
        /// Whether this is a final checkpoint.
        then_stop: bool,
    },
    /// Give up on a checkpoint; tasks discard what they prepared for it.
    Abort {
        /// The checkpoint.
        id: CheckpointId,
        /// Why.
        reason: String,
        /// Whether it was a final checkpoint (the job cannot end cleanly without it).
        then_stop: bool,
    },
    /// Delete these checkpoints (older than the retained ones) and files no
    /// retained manifest references.
    Prune {
        /// Checkpoints to delete.
        remove: Vec<CheckpointId>,
        /// Checkpoints still retained.
        keep: Vec<CheckpointId>,
    },
}

#[derive(Debug)]
struct InFlight<S> {
    id: CheckpointId,
    started_ms: u64,
    then_stop: bool,
    acks: BTreeMap<TaskIndex, S>,
    persisting: bool,
}

/// The coordinator state machine.
#[derive(Debug)]
pub struct Coordinator<S> {
    config: CoordinatorConfig,
    tasks: usize,
    next_id: u64,
    in_flight: Option<InFlight<S>>,
    last_trigger_ms: Option<u64>,
    requested: Option<bool>, // Some(then_stop): a trigger asked for while one was in flight
    completed: VecDeque<CheckpointId>,
    stopped: bool,
}

impl<S> Coordinator<S> {
    /// A coordinator for `tasks` tasks whose next checkpoint id is `next_id`
    /// (one above the newest checkpoint in the store) and whose store already
    /// holds the complete checkpoints `existing` (oldest first).
    pub fn new(config: CoordinatorConfig, tasks: usize, next_id: u64, existing: Vec<CheckpointId>) -> Self {
        Coordinator {
            config,
            tasks,
            next_id: next_id.max(1),
            in_flight: None,
            last_trigger_ms: None,
            requested: None,
            completed: existing.into(),
            stopped: false,
        }
    }

    /// The checkpoint in flight, if any.
    #[cfg(test)]
    pub fn in_flight(&self) -> Option<CheckpointId> {
        self.in_flight.as_ref().map(|f| f.id)
    }

    /// When [`Coordinator::tick`] next has something to do (ms), if ever.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.stopped {
            return None;
        }
        match &self.in_flight {
            Some(f) if !f.persisting => Some(f.started_ms + self.config.timeout_ms),
            Some(_) => None,
            None => match (self.requested, self.config.interval_ms) {
                (Some(_), _) => Some(0),
                // The first periodic checkpoint comes one interval after the start (as in Flink).
                (None, Some(iv)) => Some(self.last_trigger_ms.unwrap_or(0) + iv),
                (None, None) => None,
            },
        }
    }

    fn start(&mut self, now_ms: u64, then_stop: bool) -> Action<S> {
        let id = CheckpointId(self.next_id);
        self.next_id += 1;
        self.last_trigger_ms = Some(now_ms);
        self.in_flight = Some(InFlight {
            id,
            started_ms: now_ms,
            then_stop,
            acks: BTreeMap::new(),
            persisting: false,
        });
        if then_stop {
            self.stopped = true; // no periodic checkpoints after a final one
        }
        Action::Trigger { id, then_stop }
    }

    /// Time passed: abort a timed-out checkpoint, trigger a due one.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Action<S>> {
        let mut actions = Vec::new();
        if let Some(f) = &self.in_flight {
            if !f.persisting && now_ms >= f.started_ms + self.config.timeout_ms {
                let (id, then_stop) = (f.id, f.then_stop);
                self.in_flight = None;
                if then_stop {
                    self.stopped = false;
                    self.requested = Some(true);
                }
                actions.push(Action::Abort {
                    id,
                    reason: format!("timed out after {} ms", self.config.timeout_ms),
                    then_stop,
                });
            }
        }
        if self.in_flight.is_none() {
            if let Some(then_stop) = self.requested.take() {
                actions.push(self.start(now_ms, then_stop));
            } else if let (Some(iv), false) = (self.config.interval_ms, self.stopped) {
                if now_ms >= self.last_trigger_ms.unwrap_or(0) + iv {
                    actions.push(self.start(now_ms, false));
                }
            }
        }
        actions
    }

    /// Asks for a checkpoint now (on demand), or a final one (`then_stop`)
    /// when the sources are done or the user stops the job. Waits for the one
    /// in flight, if any.
    pub fn request(&mut self, now_ms: u64, then_stop: bool) -> Vec<Action<S>> {
        if self.stopped {
            return Vec::new();
        }
        self.requested = Some(self.requested.unwrap_or(false) || then_stop);
        self.tick(now_ms)
    }

    /// Task `task` acknowledged checkpoint `id` with its snapshot.
    pub fn on_ack(&mut self, task: TaskIndex, id: CheckpointId, snapshot: S) -> Vec<Action<S>> {
        let Some(f) = self.in_flight.as_mut() else {
            return Vec::new();
        };
        if f.id != id || f.persisting {
            return Vec::new(); // late ack of an aborted checkpoint
        }
        f.acks.insert(task, snapshot);
        if f.acks.len() < self.tasks {
            return Vec::new();
        }
        f.persisting = true;
        let snapshots = std::mem::take(&mut f.acks);
        vec![Action::Persist {
            id,
            snapshots,
            then_stop: f.then_stop,
        }]
    }

    /// Task `task` cannot take checkpoint `id`: abort it.
    pub fn on_decline(&mut self, id: CheckpointId, reason: String) -> Vec<Action<S>> {
        match &self.in_flight {
            Some(f) if f.id == id && !f.persisting => {
                let then_stop = f.then_stop;
                self.in_flight = None;
                if then_stop {
                    self.stopped = false;
                    self.requested = Some(true);
                }
                vec![Action::Abort { id, reason, then_stop }]
            }
            _ => Vec::new(),
        }
    }

    /// The manifest of `id` is durable: announce it and prune.
    pub fn on_persisted(&mut self, id: CheckpointId) -> Vec<Action<S>> {
        let then_stop = match &self.in_flight {
            Some(f) if f.id == id => f.then_stop,
            _ => return Vec::new(),
        };
        self.in_flight = None;
        self.completed.push_back(id);
        let mut actions = vec![Action::NotifyComplete { id, then_stop }];
        let mut remove = Vec::new();
        while self.completed.len() > self.config.retained {
            if let Some(old) = self.completed.pop_front() {
                remove.push(old);
            }
        }
        if !remove.is_empty() {
            actions.push(Action::Prune {
                remove,
                keep: self.completed.iter().copied().collect(),
            });
        }
        actions
    }

    /// Writing the manifest of `id` failed: abort it.
    pub fn on_persist_failed(&mut self, id: CheckpointId, reason: String) -> Vec<Action<S>> {
        if let Some(f) = self.in_flight.as_mut() {
            if f.id == id {
                f.persisting = false;
            }
        }
        self.on_decline(id, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coordinator(tasks: usize) -> Coordinator<&'static str> {
        Coordinator::new(
            CoordinatorConfig {
                interval_ms: Some(100),
                timeout_ms: 1000,
                retained: 3,
            },
            tasks,
            1,
            vec![],
        )
    }

    fn c(n: u64) -> CheckpointId {
        CheckpointId(n)
    }

    #[test]
    fn triggers_on_interval_and_completes_after_every_ack() {
        let mut co = coordinator(2);
        assert!(
            co.tick(0).is_empty(),
            "the first checkpoint comes one interval after the start"
        );
        assert_eq!(co.next_deadline(), Some(100));
        assert_eq!(
            co.tick(100),
            vec![Action::Trigger {
                id: c(1),
                then_stop: false
            }]
        );
        assert!(co.on_ack(0, c(1), "a").is_empty());
        let acts = co.on_ack(1, c(1), "b");
        match &acts[..] {
            [Action::Persist {
                id,
                snapshots,
                then_stop: false,
            }] => {
                assert_eq!(*id, c(1));
                assert_eq!(snapshots.values().copied().collect::<Vec<_>>(), vec!["a", "b"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            co.on_persisted(c(1)),
            vec![Action::NotifyComplete {
                id: c(1),
                then_stop: false
            }]
        );
        assert!(co.tick(150).is_empty(), "interval not yet elapsed");
        assert_eq!(
            co.tick(200),
            vec![Action::Trigger {
                id: c(2),
                then_stop: false
            }]
        );
    }

    #[test]
    fn at_most_one_in_flight() {
        let mut co = coordinator(1);
        co.tick(100);
        assert!(co.tick(600).is_empty(), "no second trigger while 1 is in flight");
        assert!(co.request(600, false).is_empty(), "on-demand waits too");
        co.on_ack(0, c(1), "x");
        co.on_persisted(c(1));
        assert_eq!(
            co.tick(601),
            vec![Action::Trigger {
                id: c(2),
                then_stop: false
            }],
            "the queued request runs at once"
        );
    }

    #[test]
    fn timeout_aborts_and_the_next_checkpoint_proceeds() {
        let mut co = coordinator(2);
        co.tick(100);
        co.on_ack(0, c(1), "a");
        let acts = co.tick(1100);
        assert_eq!(
            acts[0],
            Action::Abort {
                id: c(1),
                reason: "timed out after 1000 ms".into(),
                then_stop: false
            }
        );
        assert_eq!(
            acts[1],
            Action::Trigger {
                id: c(2),
                then_stop: false
            }
        );
        assert!(
            co.on_ack(1, c(1), "late").is_empty(),
            "a late ack of an aborted checkpoint is ignored"
        );
        co.on_ack(0, c(2), "a");
        assert!(matches!(co.on_ack(1, c(2), "b")[..], [Action::Persist { .. }]));
    }

    #[test]
    fn decline_aborts() {
        let mut co = coordinator(2);
        co.tick(100);
        assert_eq!(
            co.on_decline(c(1), "disk full".into()),
            vec![Action::Abort {
                id: c(1),
                reason: "disk full".into(),
                then_stop: false
            }]
        );
        assert_eq!(co.in_flight(), None);
    }

    #[test]
    fn keeps_the_last_three_and_prunes_older() {
        let mut co = coordinator(1);
        let mut pruned = Vec::new();
        for n in 1..=5u64 {
            co.tick(n * 100);
            co.on_ack(0, c(n), "s");
            co.on_persist_failed(c(99), "ignored: not in flight".into());
            for a in co.on_persisted(c(n)) {
                if let Action::Prune { remove, keep } = a {
                    assert_eq!(keep.len(), 3);
                    pruned.extend(remove);
                }
            }
        }
        assert_eq!(pruned, vec![c(1), c(2)]);
    }

    #[test]
    fn a_final_checkpoint_stops_periodic_triggers() {
        let mut co = coordinator(1);
        assert_eq!(
            co.request(0, true),
            vec![Action::Trigger {
                id: c(1),
                then_stop: true
            }]
        );
        co.on_ack(0, c(1), "s");
        assert_eq!(
            co.on_persisted(c(1)),
            vec![Action::NotifyComplete {
                id: c(1),
                then_stop: true
            }]
        );
        assert!(co.tick(10_000).is_empty());
        assert_eq!(co.next_deadline(), None);
    }

    #[test]
    fn an_aborted_final_checkpoint_is_retried() {
        let mut co = coordinator(1);
        co.request(0, true);
        let acts = co.tick(1000);
        assert_eq!(
            acts[1],
            Action::Trigger {
                id: c(2),
                then_stop: true
            }
        );
    }

    #[test]
    fn ids_continue_after_a_restore() {
        let mut co: Coordinator<()> = Coordinator::new(
            CoordinatorConfig {
                interval_ms: None,
                timeout_ms: 10,
                retained: 3,
            },
            1,
            8,
            vec![c(6), c(7)],
        );
        assert!(co.tick(0).is_empty(), "no interval: only on demand");
        assert_eq!(
            co.request(0, false),
            vec![Action::Trigger {
                id: c(8),
                then_stop: false
            }]
        );
    }
}
