//! Event-time windows: which windows a timestamp belongs to.
//!
//! Windows are half-open `[start, end)` in milliseconds, aligned to epoch 0
//! plus an optional offset (Flink's semantics). Assignment is pure: the
//! runtime keeps each window's state in keyed state under the window's
//! namespace ([`Window::namespace`]) and fires it with an event-time timer at
//! `end - 1` (the window's maximum timestamp).

use crate::message::Timestamp;

/// A window `[start, end)` in ms since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    /// First millisecond in the window.
    pub start: i64,
    /// First millisecond after the window.
    pub end: i64,
}

impl Window {
    /// The largest timestamp in the window: its timer fires when the watermark reaches it.
    pub fn max_timestamp(&self) -> Timestamp {
        Timestamp(self.end.saturating_sub(1))
    }

    /// Fixed-width big-endian bytes that sort by (start, end) also for
    /// negative times (sign bit flipped): the window's state namespace.
    pub fn namespace(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&((self.start as u64) ^ (1 << 63)).to_be_bytes());
        out[8..].copy_from_slice(&((self.end as u64) ^ (1 << 63)).to_be_bytes());
        out
    }

    /// Reads a namespace written by [`Window::namespace`].
    pub fn from_namespace(bytes: &[u8]) -> Option<Window> {
        let start = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?) ^ (1 << 63);
        let end = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?) ^ (1 << 63);
        Some(Window {
            start: start as i64,
            end: end as i64,
        })
    }

    /// Whether the two windows share a millisecond.
    pub fn overlaps(&self, other: &Window) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// The smallest window covering both.
    pub fn cover(&self, other: &Window) -> Window {
        Window {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// The start of the window of `size` (with `offset`) containing `ts`,
/// correct for negative timestamps.
fn window_start(ts: i64, size: i64, offset: i64) -> i64 {
    ts - (ts - offset).rem_euclid(size)
}

/// Tumbling windows: fixed size, no overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tumbling {
    /// Window size in ms (> 0).
    pub size: i64,
    /// Shift of the window boundaries from epoch 0, in ms.
    pub offset: i64,
}

impl Tumbling {
    /// Windows of `size_ms`, aligned to the epoch.
    pub fn of(size_ms: i64) -> Self {
        Tumbling {
            size: size_ms,
            offset: 0,
        }
    }
    /// The one window containing `ts`.
    pub fn assign(&self, ts: i64) -> Window {
        let start = window_start(ts, self.size, self.offset);
        Window {
            start,
            end: start.saturating_add(self.size),
        }
    }
}

/// Sliding (hopping) windows: `size` long, one starting every `slide`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sliding {
    /// Window size in ms (> 0).
    pub size: i64,
    /// Distance between window starts in ms (> 0).
    pub slide: i64,
    /// Shift of the window boundaries from epoch 0, in ms.
    pub offset: i64,
}

impl Sliding {
    /// Windows of `size_ms` every `slide_ms`, aligned to the epoch.
    pub fn of(size_ms: i64, slide_ms: i64) -> Self {
        Sliding {
            size: size_ms,
            slide: slide_ms,
            offset: 0,
        }
    }
    /// Every window containing `ts`, latest start first, appended to `out`.
    pub fn assign(&self, ts: i64, out: &mut Vec<Window>) {
        let mut start = window_start(ts, self.slide, self.offset);
        while start > ts - self.size {
            out.push(Window {
                start,
                end: start + self.size,
            });
            start -= self.slide;
        }
    }
}

/// Session windows: records closer than `gap` belong to one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sessions {
    /// Inactivity gap in ms (> 0).
    pub gap: i64,
}

impl Sessions {
    /// The proto-window of one record: `[ts, ts + gap)`.
    pub fn assign(&self, ts: i64) -> Window {
        Window {
            start: ts,
            end: ts + self.gap,
        }
    }

    /// Merges `window` into the sorted, disjoint `sessions`; returns the
    /// resulting session and the sessions it absorbed (whose state the caller
    /// merges into it). Sessions merge when they overlap: a record exactly
    /// `gap` after the previous one starts a new session.
    pub fn merge(&self, sessions: &mut Vec<Window>, window: Window) -> (Window, Vec<Window>) {
        let mut merged = window;
        let mut absorbed = Vec::new();
        // Covering one session can make the result overlap the next: repeat.
        while let Some(i) = sessions.iter().position(|s| s.overlaps(&merged)) {
            let s = sessions.remove(i);
            merged = merged.cover(&s);
            absorbed.push(s);
        }
        let at = sessions.partition_point(|s| s.start < merged.start);
        sessions.insert(at, merged);
        (merged, absorbed)
    }
}

/// Assigns windows to a timestamp (tumbling or sliding).
pub trait Assigner: Clone + Send + 'static {
    /// Appends every window containing `ts` to `out`.
    fn assign_to(&self, ts: i64, out: &mut Vec<Window>);

    /// Calls `f` with every window containing `ts` (no allocation for the
    /// built-in assigners: the per-record path of window aggregates).
    fn for_each_window(&self, ts: i64, mut f: impl FnMut(Window)) {
        let mut windows = Vec::new();
        self.assign_to(ts, &mut windows);
        windows.into_iter().for_each(&mut f);
    }
}

impl Assigner for Tumbling {
    fn assign_to(&self, ts: i64, out: &mut Vec<Window>) {
        out.push(self.assign(ts));
    }
    fn for_each_window(&self, ts: i64, mut f: impl FnMut(Window)) {
        f(self.assign(ts));
    }
}

impl Assigner for Sliding {
    fn assign_to(&self, ts: i64, out: &mut Vec<Window>) {
        self.assign(ts, out);
    }
    fn for_each_window(&self, ts: i64, mut f: impl FnMut(Window)) {
        let mut start = window_start(ts, self.slide, self.offset);
        while start > ts.saturating_sub(self.size) {
            f(Window {
                start,
                end: start.saturating_add(self.size),
            });
            start -= self.slide;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tumbling_windows_are_half_open_and_aligned_to_the_epoch() {
        let t = Tumbling::of(10_000);
        assert_eq!(t.assign(0), Window { start: 0, end: 10_000 });
        assert_eq!(t.assign(9_999), Window { start: 0, end: 10_000 });
        assert_eq!(
            t.assign(10_000),
            Window {
                start: 10_000,
                end: 20_000
            }
        );
        assert_eq!(t.assign(-1), Window { start: -10_000, end: 0 });
        let shifted = Tumbling {
            size: 10_000,
            offset: 2_000,
        };
        assert_eq!(
            shifted.assign(1_999),
            Window {
                start: -8_000,
                end: 2_000
            }
        );
        assert_eq!(t.assign(9_999).max_timestamp(), Timestamp(9_999));
    }

    #[test]
    fn a_timestamp_is_in_size_over_slide_sliding_windows() {
        let s = Sliding::of(10_000, 2_000);
        let mut out = Vec::new();
        s.assign(11_000, &mut out);
        assert_eq!(out.len(), 5);
        assert!(out.iter().all(|w| w.start <= 11_000 && 11_000 < w.end), "{out:?}");
        assert_eq!(
            out[0],
            Window {
                start: 10_000,
                end: 20_000
            }
        );
        assert_eq!(
            out[4],
            Window {
                start: 2_000,
                end: 12_000
            }
        );
    }

    #[test]
    fn sessions_merge_when_records_are_closer_than_the_gap() {
        let s = Sessions { gap: 10_000 };
        let mut sessions = Vec::new();
        s.merge(&mut sessions, s.assign(0));
        s.merge(&mut sessions, s.assign(25_000));
        assert_eq!(sessions.len(), 2);
        // 12_000 bridges nothing yet: [12000, 22000) touches neither [0,10000) nor [25000,35000).
        s.merge(&mut sessions, s.assign(12_000));
        assert_eq!(sessions.len(), 3);
        // 9_999 joins the first and third.
        let (merged, absorbed) = s.merge(&mut sessions, s.assign(9_999));
        assert_eq!(merged, Window { start: 0, end: 22_000 });
        assert_eq!(absorbed.len(), 2);
        assert_eq!(
            sessions,
            vec![
                Window { start: 0, end: 22_000 },
                Window {
                    start: 25_000,
                    end: 35_000
                }
            ]
        );
        // Exactly `gap` after the end of activity starts a new session.
        let mut two = Vec::new();
        s.merge(&mut two, s.assign(0));
        s.merge(&mut two, s.assign(10_000));
        assert_eq!(two.len(), 2, "{two:?}");
    }

    #[test]
    fn namespaces_sort_like_windows_and_round_trip() {
        let ws = [
            Window { start: -5, end: 5 },
            Window { start: 0, end: 10 },
            Window { start: 0, end: 20 },
            Window { start: 7, end: 9 },
        ];
        let mut ns: Vec<[u8; 16]> = ws.iter().map(Window::namespace).collect();
        ns.sort();
        let back: Vec<Window> = ns.iter().map(|n| Window::from_namespace(n).unwrap()).collect();
        assert_eq!(back, ws.to_vec());
    }
}
