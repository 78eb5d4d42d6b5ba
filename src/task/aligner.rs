//! Barrier alignment for a task with several inputs: a pure state machine.
//!
//! Rule (DESIGN.md, checkpoints step 3): once `Barrier(n)` arrived on an
//! input, that input is blocked (the task stops reading it) until the barrier
//! has arrived on every input that has not ended; then the task snapshots and
//! forwards `Barrier(n)` once, and every input is readable again.

use weir_operators::Barrier;

/// What the task does after a barrier or an end arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aligned {
    /// Keep reading the inputs that are not blocked.
    Waiting,
    /// The barrier has arrived on every live input: snapshot and forward it.
    Complete(Barrier),
}

/// Tracks which inputs delivered the current barrier.
#[derive(Debug)]
pub struct BarrierAligner {
    blocked: Vec<bool>,
    ended: Vec<bool>,
    current: Option<Barrier>,
    arrived: usize,
}

impl BarrierAligner {
    /// An aligner for `inputs` inputs.
    pub fn new(inputs: usize) -> Self {
        BarrierAligner {
            blocked: vec![false; inputs],
            ended: vec![false; inputs],
            current: None,
            arrived: 0,
        }
    }

    /// Whether the task must not read `input` now.
    #[inline]
    pub fn is_blocked(&self, input: usize) -> bool {
        self.blocked[input]
    }

    fn live_inputs(&self) -> usize {
        self.ended.iter().filter(|e| !**e).count()
    }

    fn check_complete(&mut self) -> Aligned {
        match self.current {
            Some(b) if self.arrived >= self.live_inputs() => {
                self.current = None;
                self.arrived = 0;
                self.blocked.iter_mut().for_each(|x| *x = false);
                Aligned::Complete(b)
            }
            _ => Aligned::Waiting,
        }
    }

    /// `barrier` arrived on `input`.
    pub fn on_barrier(&mut self, input: usize, barrier: Barrier) -> Aligned {
        match self.current {
            Some(cur) if barrier.id < cur.id => return Aligned::Waiting, // stale: a newer one is aligning
            Some(cur) if barrier.id > cur.id => {
                // The older checkpoint was abandoned upstream: start over with the newer one.
                self.blocked.iter_mut().for_each(|x| *x = false);
                self.arrived = 0;
                self.current = Some(barrier);
            }
            Some(_) => {}
            None => self.current = Some(barrier),
        }
        if !self.blocked[input] {
            self.blocked[input] = true;
            self.arrived += 1;
        }
        self.check_complete()
    }

    /// `input` ended: it will deliver no barrier, so alignment stops waiting for it.
    pub fn on_end(&mut self, input: usize) -> Aligned {
        if !self.ended[input] {
            self.ended[input] = true;
            if self.blocked[input] {
                self.blocked[input] = false;
                self.arrived -= 1;
            }
        }
        self.check_complete()
    }

    /// Whether every input has ended.
    pub fn all_ended(&self) -> bool {
        self.ended.iter().all(|e| *e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_operators::CheckpointId;

    fn b(n: u64) -> Barrier {
        Barrier {
            id: CheckpointId(n),
            then_stop: false,
        }
    }

    #[test]
    fn barrier_waits_for_all_inputs() {
        let mut a = BarrierAligner::new(3);
        assert_eq!(a.on_barrier(1, b(1)), Aligned::Waiting);
        assert!(a.is_blocked(1) && !a.is_blocked(0));
        assert_eq!(a.on_barrier(0, b(1)), Aligned::Waiting);
        assert_eq!(a.on_barrier(2, b(1)), Aligned::Complete(b(1)));
        assert!(!a.is_blocked(0) && !a.is_blocked(1) && !a.is_blocked(2));
    }

    #[test]
    fn single_input_completes_at_once() {
        let mut a = BarrierAligner::new(1);
        assert_eq!(a.on_barrier(0, b(4)), Aligned::Complete(b(4)));
    }

    #[test]
    fn an_ended_input_is_not_waited_for() {
        let mut a = BarrierAligner::new(2);
        assert_eq!(a.on_barrier(0, b(2)), Aligned::Waiting);
        assert_eq!(a.on_end(1), Aligned::Complete(b(2)));
        assert_eq!(a.on_barrier(0, b(3)), Aligned::Complete(b(3)));
        assert!(!a.all_ended());
        a.on_end(0);
        assert!(a.all_ended());
    }

    #[test]
    fn a_newer_barrier_abandons_the_older_alignment() {
        let mut a = BarrierAligner::new(2);
        a.on_barrier(0, b(1));
        assert_eq!(a.on_barrier(1, b(2)), Aligned::Waiting);
        assert!(!a.is_blocked(0) && a.is_blocked(1));
        assert_eq!(a.on_barrier(0, b(1)), Aligned::Waiting, "stale barrier ignored");
        assert_eq!(a.on_barrier(0, b(2)), Aligned::Complete(b(2)));
    }

    #[test]
    fn a_duplicate_barrier_on_one_input_counts_once() {
        let mut a = BarrierAligner::new(2);
        a.on_barrier(0, b(1));
        assert_eq!(a.on_barrier(0, b(1)), Aligned::Waiting);
        assert_eq!(a.on_barrier(1, b(1)), Aligned::Complete(b(1)));
    }
}
