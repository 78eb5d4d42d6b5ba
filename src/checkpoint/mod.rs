//! Checkpoints: the manifest format, the store (a directory or an object
//! store, behind one backend trait), and (inside the
//! crate) the pure coordinator. See DESIGN.md "Checkpoints" for the protocol.
//!
//! The public part is what tools need to look at a job's checkpoints
//! (`weir checkpoints list|show|gc`, `weir offsets`): open a
//! [`CheckpointStore`], list its checkpoints, read a [`Manifest`].

pub(crate) mod backend;
pub(crate) mod coordinator;
pub(crate) mod local;
pub mod lock;
pub mod manifest;
pub(crate) mod object;
pub mod store;
pub(crate) mod transfer;

pub use lock::DirLock;
pub use manifest::{Manifest, OperatorSnapshot, RocksHandle, StoredFile, SubtaskState};
pub use store::{CheckpointStore, UploadStats};
