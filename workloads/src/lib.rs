//! # weir-workloads: the jobs weir is measured and demonstrated on
//!
//! Built on the public API of the [`weir`] engine only, as a user's job would
//! be; the `weir` command (crate `weir-cli`), the benchmarks in `benches/` and
//! the end-to-end tests run them.
//!
//! - [`jobs`]: the demo job (`weir run demo`, the crash tests) and the
//!   benchmark workloads W1-W3, over a generator or Kafka.
//! - [`nexmark`]: Nexmark events, their deterministic generator and the
//!   queries (`weir nexmark`).
//! - [`mod@bench`]: latency recording without coordinated omission, summaries
//!   and SVG plots for `weir bench`.

pub mod bench;
pub mod jobs;
pub mod nexmark;
