//! The openraft type configuration shared by every group on a node.
//!
//! One configuration for partitions and the controller keeps one transport for all groups
//! possible: a message is a group id plus an openraft request of this one type.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weir_types::{EncodedBatch, Offset};

use crate::producers::ProducerBatch;

/// A node's id in the cluster. Ids are never reused.
pub type NodeId = u64;

/// A batch to append to a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendBatch {
    /// The batch, as it is stored. `None` only for an idempotent producer's batch whose records
    /// the produce chain all dropped: the entry then records its sequence range and takes no
    /// offsets, so the producer's next batch continues the sequence.
    pub batch: Option<EncodedBatch>,
    /// The idempotent producer's sequence range, for batches of such a producer: what the
    /// partition's producer state records when the entry is applied.
    pub producer: Option<ProducerBatch>,
}

/// A compaction the partition's leader asked of every replica (`Request::Compact`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CompactionTarget {
    /// Records below this offset keep only the latest of each key.
    pub below: Offset,
    /// Tombstones (the latest of their key) with a timestamp before this go too.
    pub tombstones_before_ms: i64,
}

impl CompactionTarget {
    /// The target asking for both this and `other`: each bound at its furthest.
    pub fn merged(self, other: CompactionTarget) -> CompactionTarget {
        CompactionTarget {
            below: self.below.max(other.below),
            tombstones_before_ms: self.tombstones_before_ms.max(other.tombstones_before_ms),
        }
    }
}

/// What a client proposes to a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Append a record batch to a partition.
    Append(AppendBatch),
    /// A metadata command for the controller, encoded by the broker.
    Controller(Bytes),
    /// Move a partition's log start up to `log_start` (never down, never past the next
    /// offset): records below it are gone for consumers on every replica at once, and each
    /// replica deletes the batches wholly below it from its storage when it next snapshots.
    Trim {
        /// The new first offset.
        log_start: Offset,
    },
    /// Compact a partition's log (`cleanup.policy=compact`): every replica rewrites its own
    /// committed batches to the same records, in the background (see weir-storage's
    /// `compaction`). Bounds never move back; `below` never passes the next offset.
    Compact(CompactionTarget),
}

impl Request {
    /// The bytes this request carries: the record batch, or the controller command. What
    /// bounds a replication message's size.
    pub fn payload_bytes(&self) -> usize {
        match self {
            Request::Append(append) => append.batch.as_ref().map_or(0, |b| b.bytes().len()),
            Request::Controller(command) => command.len(),
            Request::Trim { .. } | Request::Compact(_) => 0,
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Append(append) => match &append.batch {
                Some(batch) => write!(
                    f,
                    "append {} records ({} bytes)",
                    batch.header().record_count,
                    batch.bytes().len()
                ),
                None => f.write_str("append a producer sequence without records"),
            },
            Request::Controller(cmd) => write!(f, "controller command ({} bytes)", cmd.len()),
            Request::Trim { log_start } => write!(f, "trim the log to start at {log_start}"),
            Request::Compact(target) => write!(
                f,
                "compact the log below {} (tombstones before {} ms)",
                target.below, target.tombstones_before_ms
            ),
        }
    }
}

/// Where a batch was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Offset of the first record (the next offset, when no record was stored).
    pub base_offset: Offset,
    /// Records stored.
    pub record_count: u32,
}

/// The answer to an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Where the batch is stored.
    pub outcome: AppendOutcome,
    /// The batch was an idempotent producer's retry of one already stored (or in raft): the
    /// outcome is the original's, and nothing was stored again.
    pub duplicate: bool,
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
    /// The log starts at `log_start` now (it may have been there already).
    Trimmed {
        /// The partition's first offset.
        log_start: Offset,
    },
    /// Every replica compacts to `target` (the asked one merged with earlier ones).
    Compacting(CompactionTarget),
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
