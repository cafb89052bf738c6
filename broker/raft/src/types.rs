//! The openraft type configuration shared by every group on a node.
//!
//! One configuration for partitions and the controller keeps one transport for all groups
//! possible: a message is a group id plus an openraft request of this one type.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weir_types::{EncodedBatch, Offset};

/// A node's id in the cluster. Ids are never reused.
pub type NodeId = u64;

/// What a client proposes to a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Append a record batch to a partition.
    Append(EncodedBatch),
    /// A metadata command for the controller, encoded by the broker.
    Controller(Bytes),
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Append(batch) => write!(
                f,
                "append {} records ({} bytes)",
                batch.header().record_count,
                batch.bytes().len()
            ),
            Request::Controller(cmd) => write!(f, "controller command ({} bytes)", cmd.len()),
        }
    }
}

/// What applying a [`Request`] produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A batch was appended at `base_offset`.
    Appended {
        /// Offset of the batch's first record.
        base_offset: Offset,
        /// Records in the batch.
        record_count: u32,
    },
    /// The controller's reply, encoded by the broker.
    Controller(Bytes),
    /// The entry carried nothing to answer (blank or membership entries, or a request sent to
    /// the wrong kind of group).
    Nothing,
}

openraft::declare_raft_types!(
    /// Weir's openraft type configuration.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
);

pub(crate) type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;
pub(crate) type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub(crate) type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub(crate) type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub(crate) type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub(crate) type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotBytes>;
/// Snapshots are small (metadata only for partitions), so they travel as bytes.
pub(crate) type SnapshotBytes = Vec<u8>;
