//! Checkpoints: the coordinator state machine, the manifest format and the
//! store on disk. See DESIGN.md "Checkpoints" for the protocol.

pub mod coordinator;
pub mod manifest;
pub mod store;

pub use coordinator::{Action, Coordinator, CoordinatorConfig};
pub use manifest::{Manifest, OperatorSnapshot, RocksHandle, StoredFile, SubtaskState};
pub use store::CheckpointStore;
