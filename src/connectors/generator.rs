//! The W1 record generator of `shared/bench/WORKLOADS.md`: deterministic,
//! checkpointed position, optional rate limit, bounded or endless.
//!
//! Global index `i` in `[0, N)`; `r = splitmix64(i)` with seed `0x5EED`;
//! `key = r % 100_000`, `value = r >> 44`. With parallelism `P`, subtask `j`
//! emits `i = k*P + j` for `k = 0, 1, ...`; its position is the next `k`.
//! Those `P` streams are the generator's splits: restored with another
//! parallelism, the subtasks deal them again and each split goes on from
//! its own position ([`Generator`]).

use super::{ConnectorContext, Source, SourcePoll};
use crate::clock;
use crate::error::{Result, WeirError};
use serde::{Deserialize, Serialize};

/// One generated record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct W1Event {
    /// Global index `i`.
    pub index: u64,
    /// `splitmix64(i) % 100_000`.
    pub key: u64,
    /// `splitmix64(i) >> 44`.
    pub value: u64,
    /// When the record was (scheduled to be) emitted, [`crate::clock::now_ns`].
    pub emit_ns: u64,
}

const SEED: u64 = 0x5EED;

/// The workload's splitmix64 of index `i`.
#[inline]
pub fn splitmix64(i: u64) -> u64 {
    let mut z = SEED.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Keys of the W1 generator unless told otherwise (WORKLOADS.md).
pub const W1_KEYS: u64 = 100_000;

/// The W1 event of index `i`.
#[inline]
pub fn w1_event(i: u64, emit_ns: u64) -> W1Event {
    w1_event_keys(i, emit_ns, W1_KEYS)
}

/// The W1 event of index `i` with `keys` distinct keys (more keys: more state).
#[inline]
pub fn w1_event_keys(i: u64, emit_ns: u64, keys: u64) -> W1Event {
    let r = splitmix64(i);
    W1Event {
        index: i,
        // The constant divisor compiles to a multiply; keep it the common path.
        key: if keys == W1_KEYS { r % W1_KEYS } else { r % keys.max(1) },
        value: r >> 44,
        emit_ns,
    }
}

/// One split of the index space: the indices `k * layout + split`.
#[derive(Debug, Clone, Copy)]
struct Split {
    split: u64,
    /// The next `k` to emit.
    next_k: u64,
    /// Past the last `k` (bounded runs).
    end_k: Option<u64>,
}

/// The first byte of a position that lists its splits (8 bytes without it:
/// the position of a generator older than splits, one split per subtask).
const SPLITS_FORMAT: u8 = 0x53;

/// A generator subtask.
///
/// The index space is cut into `layout` splits, split `j` holding the
/// indices `k * layout + j`, where `layout` is the parallelism of the run
/// that first started the job; a subtask owns the splits `j` with
/// `j % parallelism == subtask` and keeps a position per split. At the
/// first parallelism every subtask has one split (the indices `k*P + j`);
/// after a change of parallelism the splits are dealt again and each goes on
/// from its own position (a subtask beyond the number of splits has none).
#[derive(Debug)]
pub struct Generator {
    layout: u64,
    splits: Vec<Split>,
    /// The split being emitted.
    current: usize,
    /// Records emitted by this subtask in this run (paces a rate limit).
    emitted: u64,
    /// The schedule of a rate-limited run.
    pace: Option<super::pace::Pace>,
    /// Distinct keys.
    keys: u64,
    /// Whether the run has an end (`records` given).
    bounded: bool,
}

impl Generator {
    /// A factory for [`crate::graph::JobBuilder::source`]: `records` in total
    /// (`None` = endless), at most `rate` records/s in total (`None` = as fast
    /// as possible).
    pub fn w1_factory(
        records: Option<u64>,
        rate: Option<u64>,
    ) -> impl Fn(ConnectorContext) -> Result<Generator> + Clone + Send + 'static {
        move |ctx| Generator::new(&ctx, records, rate)
    }

    /// As [`Generator::w1_factory`], with `keys` distinct keys instead of
    /// [`W1_KEYS`] (the state grows with the keys).
    pub fn w1_factory_keys(
        records: Option<u64>,
        rate: Option<u64>,
        keys: u64,
    ) -> impl Fn(ConnectorContext) -> Result<Generator> + Clone + Send + 'static {
        move |ctx| {
            let mut g = Generator::new(&ctx, records, rate)?;
            g.keys = keys.max(1);
            Ok(g)
        }
    }

    /// Subtask `ctx.subtask` of the generator, resumed from the positions of
    /// every split in `ctx.restored_all`.
    ///
    /// # Errors
    /// [`WeirError::Connector`] when a restored position is malformed or a rate is 0.
    pub fn new(ctx: &ConnectorContext, records: Option<u64>, rate: Option<u64>) -> Result<Self> {
        let err = |message: String| WeirError::Connector {
            connector: format!("{}[{}]", ctx.uid, ctx.subtask),
            message,
        };
        let (subtask, parallelism) = (ctx.subtask as u64, ctx.parallelism.max(1) as u64);
        let (layout, positions) = if ctx.restored_all.is_empty() {
            (parallelism, Vec::new())
        } else {
            restored_splits(&ctx.restored_all).map_err(err)?
        };
        let end_k = |split: u64| records.map(|n| if n > split { (n - split).div_ceil(layout) } else { 0 });
        let splits: Vec<Split> = (0..layout)
            .filter(|j| j % parallelism == subtask)
            .map(|split| Split {
                split,
                next_k: positions.iter().find(|(j, _)| *j == split).map_or(0, |(_, k)| *k),
                end_k: end_k(split),
            })
            .collect();
        let pace = match rate {
            Some(0) => return Err(err("rate must be > 0".into())),
            Some(r) => Some(super::pace::Pace::new(
                r as f64 / parallelism as f64,
                clock::now_ns(),
                0,
            )),
            None => None,
        };
        Ok(Generator {
            layout,
            splits,
            current: 0,
            emitted: 0,
            pace,
            keys: W1_KEYS,
            bounded: records.is_some(),
        })
    }

    /// The records this subtask's splits have emitted, over all runs.
    pub fn next_position(&self) -> u64 {
        self.splits.iter().map(|s| s.next_k).sum()
    }
}

/// The layout and every split's position in the states of all subtasks.
fn restored_splits(states: &[Vec<u8>]) -> std::result::Result<(u64, Vec<(u64, u64)>), String> {
    let mut layout = None;
    let mut positions = Vec::new();
    for (subtask, bytes) in states.iter().enumerate() {
        let (this_layout, splits) = match bytes.as_slice() {
            // One split per subtask: the subtask's own.
            [a, b, c, d, e, f, g, h] => (
                states.len() as u64,
                vec![(subtask as u64, u64::from_be_bytes([*a, *b, *c, *d, *e, *f, *g, *h]))],
            ),
            [SPLITS_FORMAT, rest @ ..] if rest.len() >= 8 && (rest.len() - 8) % 16 == 0 => {
                let word = |at: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&rest[at..at + 8]);
                    u64::from_be_bytes(b)
                };
                let splits = (0..(rest.len() - 8) / 16).map(|i| (word(8 + 16 * i), word(16 + 16 * i)));
                (word(0), splits.collect())
            }
            other => {
                return Err(format!(
                    "restored generator position of subtask {subtask} is malformed ({} bytes)",
                    other.len()
                ))
            }
        };
        if layout.is_some_and(|l| l != this_layout) {
            return Err(format!(
                "restored generator positions disagree on the number of splits ({} and {this_layout})",
                layout.unwrap_or_default()
            ));
        }
        layout = Some(this_layout);
        positions.extend(splits);
    }
    Ok((layout.unwrap_or(1).max(1), positions))
}

impl Source<W1Event> for Generator {
    // Every subtask's state lists the positions of its splits.
    const POSITIONS_BY_SPLIT: bool = true;

    #[inline]
    fn poll(&mut self, out: &mut Vec<W1Event>, max: usize) -> Result<SourcePoll> {
        // The next split with records left (one split: the common case).
        let len = self.splits.len();
        if len == 0 {
            if self.bounded {
                return Ok(SourcePoll::End);
            }
            // More subtasks than splits: this one has nothing to do, ever.
            return Ok(SourcePoll::Idle(std::time::Duration::from_millis(200)));
        }
        let mut tried = 0;
        let split = loop {
            self.current %= len;
            let split = self.splits[self.current];
            if split.end_k.is_none_or(|end| split.next_k < end) {
                break split;
            }
            // Splits end at different times (after a rescale their positions
            // differ): the run ends when none has records left.
            tried += 1;
            if tried >= len {
                return Ok(SourcePoll::End);
            }
            self.current += 1;
        };
        let mut n = max as u64;
        if let Some(end) = split.end_k {
            n = n.min(end - split.next_k);
        }
        let (layout, keys) = (self.layout, self.keys);
        match &self.pace {
            None => {
                let now = clock::now_ns();
                for k in split.next_k..split.next_k + n {
                    out.push(w1_event_keys(k * layout + split.split, now, keys));
                }
            }
            Some(pace) => {
                n = match pace.due(self.emitted, n, clock::now_ns()) {
                    Ok(due) => due,
                    Err(wait) => return Ok(SourcePoll::Idle(wait)),
                };
                for (i, k) in (split.next_k..split.next_k + n).enumerate() {
                    out.push(w1_event_keys(
                        k * layout + split.split,
                        pace.scheduled_ns(self.emitted + i as u64),
                        keys,
                    ));
                }
            }
        }
        self.splits[self.current].next_k += n;
        self.emitted += n;
        // Several splits take turns by batch (none runs ahead for long).
        self.current = (self.current + 1) % len;
        Ok(SourcePoll::Ready)
    }

    fn is_idle(&self) -> bool {
        self.splits.is_empty()
    }

    fn remaining(&self) -> Option<u64> {
        self.splits
            .iter()
            .map(|s| s.end_k.map(|end| end.saturating_sub(s.next_k)))
            .sum()
    }

    fn position(&mut self) -> Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(9 + 16 * self.splits.len());
        bytes.push(SPLITS_FORMAT);
        bytes.extend_from_slice(&self.layout.to_be_bytes());
        for s in &self.splits {
            bytes.extend_from_slice(&s.split.to_be_bytes());
            bytes.extend_from_slice(&s.next_k.to_be_bytes());
        }
        Ok(bytes)
    }

    fn describe_position(&self) -> String {
        let splits: Vec<String> = self
            .splits
            .iter()
            .map(|s| format!("split {} next={}", s.split, s.next_k))
            .collect();
        splits.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ctx(subtask: usize, parallelism: usize, restored: Option<u64>) -> ConnectorContext {
        // A legacy (8-byte) position of every subtask, `k` each.
        ConnectorContext {
            restored_all: restored.map_or(Vec::new(), |k| vec![k.to_be_bytes().to_vec(); parallelism]),
            ..ConnectorContext::standalone("gen", subtask, parallelism)
        }
    }

    fn drain(g: &mut Generator) -> Vec<u64> {
        let mut out = Vec::new();
        while g.poll(&mut out, 7).unwrap() == SourcePoll::Ready {}
        out.iter().map(|e| e.index).collect()
    }

    #[test]
    fn subtasks_partition_the_index_space() {
        let mut all: Vec<u64> = (0..3)
            .flat_map(|j| drain(&mut Generator::new(&ctx(j, 3, None), Some(100), None).unwrap()))
            .collect();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn splits_are_dealt_again_when_the_parallelism_changes() {
        // Three subtasks run part of the way at different speeds, then
        // 3 -> 2 -> 5: every index comes out exactly once.
        const N: u64 = 1000;
        let mut seen = Vec::new();
        let mut states = Vec::new();
        for (j, batches) in [1usize, 3, 2].iter().enumerate() {
            let mut g = Generator::new(&ctx(j, 3, None), Some(N), None).unwrap();
            let mut out = Vec::new();
            for _ in 0..*batches {
                g.poll(&mut out, 10).unwrap();
            }
            seen.extend(out.iter().map(|e| e.index));
            states.push(g.position().unwrap());
        }
        for parallelism in [2usize, 5] {
            let mut next = Vec::new();
            for j in 0..parallelism {
                let c = ConnectorContext {
                    restored_all: states.clone(),
                    ..ConnectorContext::standalone("gen", j, parallelism)
                };
                let mut g = Generator::new(&c, Some(N), None).unwrap();
                let mut out = Vec::new();
                // Part of the way again (a subtask without splits ends at once).
                for _ in 0..2 {
                    if g.poll(&mut out, 7).unwrap() == SourcePoll::End {
                        break;
                    }
                }
                seen.extend(out.iter().map(|e| e.index));
                next.push(g.position().unwrap());
            }
            states = next;
        }
        // The last stage has fewer subtasks than splits: each drains several
        // splits that stand at different positions.
        for j in 0..2 {
            let c = ConnectorContext {
                restored_all: states.clone(),
                ..ConnectorContext::standalone("gen", j, 2)
            };
            seen.extend(drain(&mut Generator::new(&c, Some(N), None).unwrap()));
        }
        seen.sort();
        assert_eq!(seen, (0..N).collect::<Vec<_>>());
    }

    #[test]
    fn resumes_from_its_position() {
        let mut g = Generator::new(&ctx(1, 2, None), Some(20), None).unwrap();
        let mut out = Vec::new();
        g.poll(&mut out, 4).unwrap();
        let position = g.position().unwrap();
        let c = ConnectorContext {
            restored_all: vec![
                Generator::new(&ctx(0, 2, None), Some(20), None)
                    .unwrap()
                    .position()
                    .unwrap(),
                position,
            ],
            ..ConnectorContext::standalone("gen", 1, 2)
        };
        let rest = drain(&mut Generator::new(&c, Some(20), None).unwrap());
        assert_eq!(
            out.iter().map(|e| e.index).chain(rest).collect::<Vec<_>>(),
            vec![1, 3, 5, 7, 9, 11, 13, 15, 17, 19]
        );
    }

    #[test]
    fn matches_the_workload_definition() {
        // splitmix64 with seed 0x5EED, as every peer in shared/bench computes it.
        let r = splitmix64(0);
        let mut z = 0x5EEDu64.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        assert_eq!(r, z ^ (z >> 31));
        let e = w1_event(0, 0);
        assert_eq!((e.key, e.value), (r % 100_000, r >> 44));
    }

    #[test]
    fn a_rate_limit_paces_records() {
        let mut g = Generator::new(&ctx(0, 1, None), None, Some(1000)).unwrap();
        let mut out = Vec::new();
        let started = std::time::Instant::now();
        while out.len() < 50 {
            if let SourcePoll::Idle(d) = g.poll(&mut out, 1024).unwrap() {
                std::thread::sleep(d);
            }
        }
        assert!(
            started.elapsed() >= Duration::from_millis(45),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_malformed_position_is_an_error_naming_the_source() {
        let c = ConnectorContext {
            restored_all: vec![vec![1, 2]],
            ..ctx(0, 1, None)
        };
        let e = Generator::new(&c, None, None).unwrap_err().to_string();
        assert!(e.contains("gen[0]") && e.contains("2 bytes"), "{e}");
    }
}
