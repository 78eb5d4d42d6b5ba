//! The W1 record generator of `shared/bench/WORKLOADS.md`: deterministic,
//! checkpointed position, optional rate limit, bounded or endless.
//!
//! Global index `i` in `[0, N)`; `r = splitmix64(i)` with seed `0x5EED`;
//! `key = r % 100_000`, `value = r >> 44`. With parallelism `P`, subtask `j`
//! emits `i = k*P + j` for `k = 0, 1, ...`; its position is the next `k`.

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

/// A generator subtask.
#[derive(Debug)]
pub struct Generator {
    subtask: u64,
    parallelism: u64,
    next_k: u64,
    end_k: Option<u64>,
    /// The schedule of a rate-limited run.
    pace: Option<super::pace::Pace>,
    /// Distinct keys.
    keys: u64,
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

    /// Subtask `ctx.subtask` of the generator, resumed from `ctx.restored`.
    ///
    /// # Errors
    /// [`WeirError::Connector`] when the restored position is malformed or a rate is 0.
    pub fn new(ctx: &ConnectorContext, records: Option<u64>, rate: Option<u64>) -> Result<Self> {
        let err = |message: String| WeirError::Connector {
            connector: format!("{}[{}]", ctx.uid, ctx.subtask),
            message,
        };
        let next_k = match &ctx.restored {
            None => 0,
            Some(b) => u64::from_be_bytes(
                b.as_slice()
                    .try_into()
                    .map_err(|_| err(format!("restored generator position has {} bytes, expected 8", b.len())))?,
            ),
        };
        let (subtask, parallelism) = (ctx.subtask as u64, ctx.parallelism.max(1) as u64);
        let end_k = records.map(|n| {
            if n > subtask {
                (n - subtask).div_ceil(parallelism)
            } else {
                0
            }
        });
        let pace = match rate {
            Some(0) => return Err(err("rate must be > 0".into())),
            Some(r) => Some(super::pace::Pace::new(
                r as f64 / parallelism as f64,
                clock::now_ns(),
                next_k,
            )),
            None => None,
        };
        Ok(Generator {
            subtask,
            parallelism,
            next_k,
            end_k,
            pace,
            keys: W1_KEYS,
        })
    }

    /// The next position `k` (records emitted by this subtask so far).
    pub fn next_position(&self) -> u64 {
        self.next_k
    }
}

impl Source<W1Event> for Generator {
    #[inline]
    fn poll(&mut self, out: &mut Vec<W1Event>, max: usize) -> Result<SourcePoll> {
        let mut n = max as u64;
        if let Some(end) = self.end_k {
            n = n.min(end.saturating_sub(self.next_k));
            if n == 0 {
                return Ok(SourcePoll::End);
            }
        }
        match &self.pace {
            None => {
                let now = clock::now_ns();
                for k in self.next_k..self.next_k + n {
                    out.push(w1_event_keys(k * self.parallelism + self.subtask, now, self.keys));
                }
            }
            Some(pace) => {
                n = match pace.due(self.next_k, n, clock::now_ns()) {
                    Ok(due) => due,
                    Err(wait) => return Ok(SourcePoll::Idle(wait)),
                };
                for k in self.next_k..self.next_k + n {
                    out.push(w1_event_keys(
                        k * self.parallelism + self.subtask,
                        pace.scheduled_ns(k),
                        self.keys,
                    ));
                }
            }
        }
        self.next_k += n;
        Ok(SourcePoll::Ready)
    }

    fn position(&mut self) -> Result<Vec<u8>> {
        Ok(self.next_k.to_be_bytes().to_vec())
    }

    fn describe_position(&self) -> String {
        format!("next={}", self.next_k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ctx(subtask: usize, parallelism: usize, restored: Option<u64>) -> ConnectorContext {
        ConnectorContext {
            restored: restored.map(|k| k.to_be_bytes().to_vec()),
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
    fn resumes_from_its_position() {
        let mut g = Generator::new(&ctx(1, 2, None), Some(20), None).unwrap();
        let mut out = Vec::new();
        g.poll(&mut out, 4).unwrap();
        let pos = u64::from_be_bytes(g.position().unwrap().try_into().unwrap());
        let rest = drain(&mut Generator::new(&ctx(1, 2, Some(pos)), Some(20), None).unwrap());
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
            restored: Some(vec![1, 2]),
            ..ctx(0, 1, None)
        };
        let e = Generator::new(&c, None, None).unwrap_err().to_string();
        assert!(e.contains("gen[0]") && e.contains("2 bytes"), "{e}");
    }
}
