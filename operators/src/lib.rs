//! # weir-operators: what a weir job computes
//!
//! Pure logic, no threads, no I/O: the [`Message`] type that flows between
//! tasks, the [`Operator`] contract with the built-in one-to-one operators, the
//! keyed contract ([`KeyedProcess`], [`Reduce`], [`Aggregate`]), event-time
//! windows ([`window`], [`window_ops`]), joins ([`join`]), keys and key
//! groups ([`StateKey`], [`key_group_of`]) and the state codec. The runtime
//! (crate `weir`) runs these on threads with RocksDB state and checkpoints;
//! this crate's Cargo.toml has no tokio, rdkafka or rocksdb, so it cannot
//! grow a dependency on them by accident.
//!
//! ```
//! use weir_operators::{Map, Operator};
//! let mut double = Map(|x: u32| x * 2);
//! let mut out = Vec::new();
//! double.process(21, &mut out).unwrap();
//! assert_eq!(out, [42]);
//! ```
#![forbid(unsafe_code)]

pub mod aggregators;
pub mod codec;
pub mod global_window;
pub mod harness;
pub mod join;
pub mod key;
pub mod keyed;
pub mod message;
pub mod operator;
pub mod serde_key;
pub mod state_types;
pub mod window;
pub mod window_ops;

pub use aggregators::MergeAggregator;
pub use codec::{decode_value, encode_state_key, encode_value, CodecError};
pub use global_window::{FireMode, GlobalWindowAggregate, GlobalWindowState, Trigger};
pub use harness::{HarnessSnapshot, KeyedHarness};
pub use join::{Either, InnerJoin, IntervalJoin, JoinBuffers, WindowJoin};
pub use key::{
    key_group_of, key_group_range, key_hash, subtask_for_key_group, KeyGroup, StateKey, DEFAULT_MAX_PARALLELISM,
};
pub use keyed::{Aggregate, Aggregator, KeyedContext, KeyedProcess, KeyedStore, MapState, Reduce, StateValue};
pub use message::{Barrier, CheckpointId, Message, Timestamp};
pub use operator::{Filter, FlatMap, Inspect, Map, Operator, OperatorError, TryMap};
pub use state_types::{AggregatingState, ListState, ReducingState, TtlValueState, ValueState};
pub use window::{Assigner, Sessions, Sliding, Tumbling, Window};
pub use window_ops::{
    CountWindowAggregate, OpenWindow, OpenWindows, ProcessingTimeWindowAggregate, SessionAggregate, WindowAggregate,
    WindowProcess, Windowed,
};
