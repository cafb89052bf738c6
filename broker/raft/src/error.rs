//! Errors of the replication layer, in terms the broker can map to client statuses.

use crate::types::NodeId;

/// A group could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The raft configuration was refused.
    #[error("invalid raft configuration: {0}")]
    Config(String),
    /// openraft could not start the group (storage failure while loading state).
    #[error("cannot start raft group {group}")]
    Raft {
        /// The group.
        group: u64,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Stored state could not be read.
    #[error("cannot read stored state of raft group {group}")]
    Storage {
        /// The group.
        group: u64,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A proposal or query on a group failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReplicaError {
    /// This node is not the group's leader; `leader` is the current one if known.
    #[error("not the leader of group {group}; leader is {leader:?}")]
    NotLeader {
        /// The group.
        group: u64,
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// The group stopped (shut down, or failed on a storage error).
    #[error("raft group {group} is not running: {reason}")]
    Stopped {
        /// The group.
        group: u64,
        /// Why.
        reason: String,
    },
    /// The outcome of the write is unknown (for example the leader changed while it was in
    /// flight): it may or may not have been committed.
    #[error("outcome unknown for a write to group {group}: {reason}")]
    Indeterminate {
        /// The group.
        group: u64,
        /// What happened.
        reason: String,
    },
    /// An idempotent producer's batch is out of sequence or of a fenced epoch.
    #[error("raft group {group}: {source}")]
    Sequence {
        /// The group.
        group: u64,
        /// What was wrong.
        #[source]
        source: SequenceError,
    },
    /// The group has no leader, or not enough replicas to commit, within the wait allowed.
    #[error("raft group {group} is unavailable: {reason}")]
    Unavailable {
        /// The group.
        group: u64,
        /// What is missing.
        reason: String,
    },
}

/// An idempotent producer's batch was refused; nothing of it was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// The batch does not continue the producer's sequence in this partition: a batch before it
    /// is missing (or it repeats one older than the partition remembers).
    #[error("producer {producer_id}: out-of-order sequence {received}, expected {expected}")]
    OutOfOrderSequence {
        /// The producer.
        producer_id: i64,
        /// The first sequence the partition expects next from it.
        expected: i32,
        /// The batch's first sequence.
        received: i32,
    },
    /// A retry of a batch stored before the batches the partition remembers: its sequences
    /// come before theirs, and a producer's batches are stored only in sequence, so it was
    /// stored, at offsets no longer known (Kafka's `DUPLICATE_SEQUENCE_NUMBER`).
    #[error(
        "producer {producer_id}: sequences {first}..={last} were stored before the last batches this partition remembers (from sequence {oldest_remembered}); their offsets are no longer known"
    )]
    DuplicateSequence {
        /// The producer.
        producer_id: i64,
        /// The batch's first sequence.
        first: i32,
        /// The batch's last sequence.
        last: i32,
        /// The first sequence of the oldest batch the partition remembers.
        oldest_remembered: i32,
    },
    /// A newer epoch of the producer has written to this partition: this one is fenced.
    #[error("producer {producer_id}: epoch {received} is older than its current epoch {current}")]
    InvalidProducerEpoch {
        /// The producer.
        producer_id: i64,
        /// The epoch the partition knows.
        current: i16,
        /// The batch's epoch.
        received: i16,
    },
}

impl ReplicaError {
    /// Whether retrying the same request (possibly on another node) can succeed.
    pub fn is_retriable(&self) -> bool {
        !matches!(
            self,
            ReplicaError::Stopped { .. } | ReplicaError::Sequence { .. }
        )
    }
}
