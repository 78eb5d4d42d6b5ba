//! One monotonic clock for the whole process, in nanoseconds since its first
//! use: sources stamp records with it and sinks measure latency against it.

use std::sync::OnceLock;
use std::time::Instant;

fn anchor() -> Instant {
    static ANCHOR: OnceLock<Instant> = OnceLock::new();
    *ANCHOR.get_or_init(Instant::now)
}

/// Nanoseconds since the process clock's anchor.
#[inline]
pub fn now_ns() -> u64 {
    anchor().elapsed().as_nanos() as u64
}

/// The instant `ns` nanoseconds after the anchor.
pub fn instant_at(ns: u64) -> Instant {
    anchor() + std::time::Duration::from_nanos(ns)
}

/// The wall clock in ms since the Unix epoch: processing time of timers.
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
