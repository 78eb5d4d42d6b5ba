//! The per-task contract: what every stage of a task implements and the
//! loops that drive it.
//!
//! - [`chain`]: a task's inside, a chain of [`chain::Downstream`] stages
//!   ending in a tail that sends to channels ([`chain::ChannelOut`]) or writes
//!   to a sink ([`chain::SinkTail`]); the routers of an exchange.
//! - [`run`]: the two task loops (source tasks and input tasks), the one place
//!   where messages are matched, and each task's snapshot thread.
//! - [`aligner`]: the pure barrier aligner of a task with several inputs.
//! - [`watermarks`]: the timestamp and watermark assigner stage.
//! - [`fork`]: a fork into two chains (fan-out, split).
//!
//! This layer knows nothing of threads being started or of the coordinator:
//! the runtime above starts the loops and talks to them through
//! [`run::TaskCommand`] and [`run::RuntimeEvent`].

pub(crate) mod aligner;
pub(crate) mod chain;
pub(crate) mod fork;
pub(crate) mod run;
pub(crate) mod watermarks;
