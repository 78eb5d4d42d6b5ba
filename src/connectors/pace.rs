//! Pacing of generator sources: record `k` of a subtask is due at a fixed
//! schedule, and its emit time is that schedule, so a stall shows up as
//! latency instead of being hidden (no coordinated omission).

use std::time::Duration;

/// A rate and the origin of the schedule.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Records per second of this subtask.
    per_second: f64,
    /// Clock ([`crate::clock::now_ns`]) at which record `origin_k` is due.
    origin_ns: u64,
    /// The subtask's position when the schedule started.
    origin_k: u64,
}

impl Pace {
    /// `per_second` records per second; record `origin_k` is due at `origin_ns`.
    pub fn new(per_second: f64, origin_ns: u64, origin_k: u64) -> Self {
        Pace {
            per_second,
            origin_ns,
            origin_k,
        }
    }

    /// When record `k` is due.
    pub fn scheduled_ns(&self, k: u64) -> u64 {
        self.origin_ns + (k.saturating_sub(self.origin_k) as f64 * 1e9 / self.per_second) as u64
    }

    /// How many of the next `n` records (from position `next_k`) are due at
    /// `now`; `Err(wait)` when none is, with the time until the next one.
    pub fn due(&self, next_k: u64, n: u64, now: u64) -> Result<u64, Duration> {
        if now >= self.origin_ns {
            let due = ((now - self.origin_ns) as f64 * self.per_second / 1e9) as u64 + self.origin_k + 1;
            let ready = n.min(due.saturating_sub(next_k));
            if ready > 0 {
                return Ok(ready);
            }
        }
        let wait = self.scheduled_ns(next_k).saturating_sub(now);
        Err(Duration::from_nanos(wait).max(Duration::from_micros(50)))
    }
}

#[cfg(test)]
mod tests {
    use super::Pace;

    #[test]
    fn records_are_due_on_their_schedule() {
        let pace = Pace::new(1000.0, 1_000_000_000, 0); // 1 record per ms from t = 1 s
        assert!(pace.due(0, 10, 999_000_000).is_err(), "nothing before the origin");
        assert_eq!(pace.due(0, 10, 1_000_000_000), Ok(1));
        assert_eq!(pace.due(0, 10, 1_004_500_000), Ok(5));
        assert_eq!(pace.due(5, 10, 1_004_500_000).unwrap_err().as_micros(), 500);
        assert_eq!(pace.scheduled_ns(7), 1_007_000_000);
    }
}
