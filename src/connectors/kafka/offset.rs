//! [`NextOffset`]: a position in a Kafka partition.
//!
//! Kafka uses one `i64` for two things: the offset *of a record*, and a
//! *position* (the offset of the next record to read: a consumer's position,
//! a committed offset, a high watermark, what a checkpoint stores). Mixing
//! them up is an off-by-one, and an off-by-one here either reads a record
//! twice or loses one. So positions are a type of their own, and "consumed
//! offset + 1" is written once, in [`NextOffset::after`]. Record offsets (of
//! a [`super::KafkaRecord`], in a dead letter's headers) stay plain `i64`.
//!
//! # Invariants
//! - `NextOffset::after(o)` is the position right after record `o`:
//!   `after(o).is_after(o)` and not `after(o).is_after(o + 1)`.
//! - Serde sees a bare `i64` (`#[serde(transparent)]`), so positions in
//!   checkpoints written before this type existed decode unchanged.

use serde::{Deserialize, Serialize};

/// The offset of the next record to read from a partition (the consumed
/// offset plus one), also the meaning of a high watermark (end offset), a log start
/// offset, a committed offset and a consumer's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NextOffset(i64);

impl NextOffset {
    /// A position as Kafka states it (a watermark, a committed offset, a
    /// consumer's position, an offset stored in a checkpoint): no `+ 1`.
    #[inline]
    pub const fn new(offset: i64) -> Self {
        NextOffset(offset)
    }

    /// The position after the record at `consumed`: the one place where a
    /// consumed offset becomes the next one to read.
    #[inline]
    pub const fn after(consumed: i64) -> Self {
        // Saturating: Kafka offsets never come near i64::MAX, and a bogus
        // one must not panic the source in debug builds.
        NextOffset(consumed.saturating_add(1))
    }

    /// The offset as Kafka wants it (`Offset::Offset`, a JSON report).
    #[inline]
    pub const fn get(self) -> i64 {
        self.0
    }

    /// Whether the record at `offset` lies before this position: consumed
    /// already (for a reader's position), or inside the range (for an end).
    #[inline]
    pub const fn is_after(self, offset: i64) -> bool {
        offset < self.0
    }

    /// Offsets from here up to `end` (records and transaction markers still
    /// to read), 0 when this position is at or past it.
    #[inline]
    pub const fn lag(self, end: NextOffset) -> i64 {
        let d = end.0.saturating_sub(self.0);
        if d > 0 {
            d
        } else {
            0
        }
    }
}

impl std::fmt::Display for NextOffset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_record_is_the_next_offset() {
        assert_eq!(NextOffset::after(41), NextOffset::new(42));
        assert_eq!(NextOffset::after(-1), NextOffset::new(0), "before the first record");
    }

    #[test]
    fn a_position_is_after_exactly_the_records_before_it() {
        let p = NextOffset::after(7);
        assert!(p.is_after(7), "the consumed record");
        assert!(p.is_after(0));
        assert!(!p.is_after(8), "the next record is not consumed yet");
    }

    #[test]
    fn after_does_not_overflow() {
        assert_eq!(NextOffset::after(i64::MAX), NextOffset::new(i64::MAX));
    }

    #[test]
    fn lag_counts_offsets_to_the_end_and_is_never_negative() {
        assert_eq!(NextOffset::new(10).lag(NextOffset::new(25)), 15);
        assert_eq!(NextOffset::new(25).lag(NextOffset::new(25)), 0);
        assert_eq!(
            NextOffset::new(30).lag(NextOffset::new(25)),
            0,
            "past the end (truncated log)"
        );
    }

    #[test]
    fn serde_sees_a_bare_i64() {
        for o in [0i64, 1, 75, -1, 1 << 40, i64::MAX] {
            assert_eq!(
                postcard::to_stdvec(&NextOffset::new(o)).unwrap(),
                postcard::to_stdvec(&o).unwrap()
            );
            assert_eq!(serde_json::to_string(&NextOffset::new(o)).unwrap(), o.to_string());
        }
    }

    #[test]
    fn displays_as_the_number() {
        assert_eq!(NextOffset::new(1234).to_string(), "1234");
    }
}
