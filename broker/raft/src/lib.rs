//! Weir's replication layer: every partition and the controller are openraft groups.
//!
//! This is the only crate that touches openraft, so an upgrade of its fast-moving alpha API
//! touches one crate. Upward it offers two handles, [`PartitionReplica`] (append record batches,
//! watch the high watermark) and [`ControllerReplica`] (propose metadata commands to a state
//! machine the broker defines through [`MetadataState`]); downward it adapts openraft's storage
//! traits to [`weir_storage::LogDb`].
//!
//! The raft log is the partition log: a data entry holds one record batch, stored once; its
//! offsets are assigned by the log store from the log prefix (see `weir-storage`). The partition
//! state machine therefore only counts: it turns each applied batch into its base offset and
//! moves the high watermark, which bounds what consumers may read. It also keeps the
//! idempotent producers' state (Kafka's KIP-98), from which the partition leader tells a retry
//! from a new batch ([`PartitionReplica::append`]).

mod compactor;
mod config;
mod controller;
mod error;
pub mod fault_injection;
mod formation;
mod group;
mod lease;
mod liveness;
mod log_store;
mod network;
mod partition;
mod partition_state;
mod producers;
mod recent;
mod sequencer;
mod snapshot;
mod types;

pub use compactor::Compactions;
pub use config::GroupTimings;
pub use controller::{ControllerReplica, MetadataState};
pub use error::{ReplicaError, SequenceError, StartError};
pub use lease::LeaderLease;
pub use network::{
    CLUSTER_SECRET_METADATA, ClusterSecret, EntryGate, MAX_PEER_MESSAGE_BYTES, PeerChannel, Peers,
};
pub use partition::{PartitionReplica, ReplicaStatus, SharedByReplicas};
pub use partition_state::PartitionProgress;
pub use producers::{ProducerBatch, ProducerLimits, REMEMBERED_BATCHES};
pub use recent::{KeptEntries, NODE_KEPT_MAX_BYTES};
pub use types::{
    AppendBatch, AppendOutcome, Appended, CompactionTarget, NodeId, Request, Response, TypeConfig,
};
pub use weir_storage::GroupId;
