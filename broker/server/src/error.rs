//! Broker errors and the one place they become gRPC statuses.
//!
//! Every error carries a stable, machine-readable reason (a `google.rpc.ErrorInfo` in the
//! status details, domain `weir.dev`). Reasons are part of the API: they are never renamed or
//! reused. The list is documented in `docs/api.md`.

use tonic::{Code, Status};
use weir_raft::{NodeId, ReplicaError, SequenceError};
use weir_storage::ReadError;
use weir_types::{BatchError, GroupName, InvalidName, Offset, PartitionId, TopicName};

use crate::metadata::CommandError;

/// Anything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The topic name is not valid.
    #[error("invalid topic name '{name}': {source}")]
    InvalidTopicName {
        /// The refused name.
        name: String,
        /// What is wrong with it.
        #[source]
        source: InvalidName,
    },
    /// No such topic.
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    /// The topic exists already.
    #[error("topic '{0}' already exists")]
    TopicExists(TopicName),
    /// Partition count out of range.
    #[error("partition count {requested} is out of range: must be 1 to {max}")]
    InvalidPartitions {
        /// Requested.
        requested: u32,
        /// Allowed maximum.
        max: u32,
    },
    /// Replication factor cannot be met.
    #[error("replication factor {requested} is invalid: {reason}")]
    InvalidReplicationFactor {
        /// Requested.
        requested: u32,
        /// Why.
        reason: String,
    },
    /// No such partition.
    #[error("topic '{topic}' has no partition {partition} (it has {count})")]
    UnknownPartition {
        /// The topic.
        topic: TopicName,
        /// The requested partition.
        partition: u32,
        /// How many partitions the topic has.
        count: u32,
    },
    /// The offset is outside the stored range.
    #[error(
        "offset {requested} is out of range for {topic}/{partition}: valid offsets are {log_start} to {high_watermark}"
    )]
    OffsetOutOfRange {
        /// The topic.
        topic: TopicName,
        /// The partition.
        partition: PartitionId,
        /// The requested offset.
        requested: i64,
        /// First stored offset.
        log_start: Offset,
        /// High watermark.
        high_watermark: Offset,
    },
    /// A produce request had no records.
    #[error("a produce request must contain at least one record")]
    EmptyBatch,
    /// A record or the batch is over the size limit.
    #[error("{0}")]
    TooLarge(String),
    /// A record is invalid.
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// A request field is invalid.
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// This node does not lead the partition.
    #[error("this node does not lead {what}; leader: {}", leader.map_or("unknown".to_owned(), |l| format!("node {l} at {}", leader_address.as_deref().unwrap_or("unknown address"))))]
    NotLeader {
        /// Which partition or group.
        what: String,
        /// The leader, if known.
        leader: Option<NodeId>,
        /// The leader's address, if known.
        leader_address: Option<String>,
    },
    /// The partition or controller is not available right now (no leader, starting up).
    #[error("unavailable right now: {0}; retry")]
    Unavailable(String),
    /// The write may or may not have happened.
    #[error("outcome of the write is unknown: {0}")]
    Indeterminate(String),
    /// Stored data failed verification.
    #[error("stored data is corrupt: {message}")]
    Corrupt {
        /// What is damaged, and where.
        message: String,
        /// The offset of the damaged batch, when it is known.
        offset: Option<Offset>,
    },
    /// An idempotent producer's batch does not continue its sequence in the partition.
    #[error("{0}")]
    OutOfOrderSequence(String),
    /// An idempotent producer's retry of a batch stored before those the partition remembers.
    #[error("{0}")]
    DuplicateSequence(String),
    /// An idempotent producer's batch is of an epoch a newer one fenced.
    #[error("{0}")]
    InvalidProducerEpoch(String),
    /// A produce request names a producer id the controller never issued.
    #[error("{0}")]
    UnknownProducerId(String),
    /// Storage or replication failed.
    #[error("internal error: {0}")]
    Internal(String),
    /// No such node in the cluster.
    #[error("node {0} is not a member of the cluster")]
    UnknownNode(NodeId),
    /// The node is already a member.
    #[error("node {0} is already a member of the cluster")]
    NodeExists(NodeId),
    /// The node still holds replicas.
    #[error("{0}")]
    NodeHasReplicas(String),
    /// A consumer group has as many members as it may have.
    #[error("{0}")]
    GroupMaxSizeReached(String),
    /// A topic config key or value is not one the broker takes.
    #[error("{0}")]
    InvalidConfig(String),
    /// The broker is shutting down.
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// The module bytes cannot be registered.
    #[error("invalid module '{name}': {reason}")]
    InvalidModule {
        /// The module's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The module version exists.
    #[error("{0}")]
    ModuleExists(String),
    /// No such module or version.
    #[error("{0}")]
    UnknownModule(String),
    /// The module is attached and cannot be deleted.
    #[error("{0}")]
    ModuleInUse(String),
    /// A module's `init` refused the parameters, or the chain request is malformed.
    #[error("{0}")]
    InvalidModuleParams(String),
    /// A module trapped, timed out, ran out of memory or returned garbage.
    #[error("{message}")]
    ModuleFailed {
        /// The module, as NAME@VERSION.
        module: String,
        /// What happened, naming the module and the limit.
        message: String,
    },
    /// Every module instance this node may hold (`modules.max_instances`) is in use by running
    /// chains and subscriptions; retriable once some finish.
    #[error("{0}")]
    ModulePoolExhausted(String),
    /// The node or the connection holds as many request bytes as it may; retry later.
    #[error("{0}")]
    Overloaded(String),
    /// The request is larger than any this node accepts.
    #[error("{0}")]
    RequestTooLarge(String),
    /// The node's data directory is below its free-space reserve (`disk.min_free_bytes`);
    /// retriable once space is freed.
    #[error("{0}")]
    DiskFull(String),
    /// The request's body did not arrive in time.
    #[error("{0}")]
    RequestTimedOut(String),
    /// The consumer group name is not valid.
    #[error("invalid group name '{name}': {source}")]
    InvalidGroupName {
        /// The refused name.
        name: String,
        /// What is wrong with it.
        #[source]
        source: InvalidName,
    },
    /// The group has neither members nor committed offsets.
    #[error("group '{0}' does not exist: it has no members and no committed offsets")]
    UnknownGroup(String),
    /// The member is not (or no longer) in the group.
    #[error("{0}")]
    UnknownMember(String),
    /// A joining member names another assignor than the group's members.
    #[error("{0}")]
    InconsistentGroupProtocol(String),
    /// The operation needs a group without members.
    #[error("{0}")]
    GroupNotEmpty(String),
    /// A member committed offsets for partitions it does not own.
    #[error("{0}")]
    NotAssigned(String),
    /// The broker a request was forwarded to (controller or partition leader) answered with
    /// this error; it is passed on unchanged (see [`BrokerError::forwarded`]).
    #[error("{}", .0.message())]
    Forwarded(Box<Status>),
    /// The request's credentials do not check out: an unknown user, a wrong password,
    /// malformed credentials, a client certificate without a name.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller lacks a permission the request needs; the message names it.
    #[error("{0}")]
    PermissionDenied(String),
    /// A user of that name exists.
    #[error("user '{0}' already exists")]
    UserExists(String),
    /// No user of that name exists.
    #[error("user '{0}' does not exist")]
    UnknownUser(String),
    /// A produce-path module rejected records of a request whose policy is `reject`.
    #[error("{} of the request's records rejected by the topic's produce chain: {}", .0.len(), summary(.0))]
    RecordsRejected(Vec<RejectedRecord>),
}

/// A record refused by a module: its index in the request, the module and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRecord {
    /// Index in the produce request.
    pub index: u32,
    /// NAME@VERSION.
    pub module: String,
    /// The module's reason.
    pub reason: String,
}

fn summary(rejected: &[RejectedRecord]) -> String {
    const SHOWN: usize = 3;
    let mut text = rejected
        .iter()
        .take(SHOWN)
        .map(|r| format!("record {} ({}: {})", r.index, r.module, r.reason))
        .collect::<Vec<_>>()
        .join("; ");
    if rejected.len() > SHOWN {
        text.push_str(&format!("; and {} more", rejected.len() - SHOWN));
    }
    text
}

impl BrokerError {
    /// The error a request this broker forwarded to `peer` (a node id or role, for the
    /// message) failed with. The peer's own answer carries a Weir reason and passes on
    /// unchanged. A failure without one never reached an answer: the peer was refused, reset
    /// or killed mid-call (tonic reports the last as `Cancelled`), or is no Weir broker. That
    /// is `UNAVAILABLE`, which clients retry, and by then the request may have a new place to
    /// go (a controller or partition leader failover).
    pub fn forwarded(peer: impl std::fmt::Display, status: Status) -> Self {
        if weir_proto::error::reason_of(&status).is_some() {
            BrokerError::Forwarded(Box::new(status))
        } else {
            BrokerError::Unavailable(format!(
                "forwarding to {peer} failed ({:?}: {})",
                status.code(),
                status.message()
            ))
        }
    }

    /// The stable reason string.
    pub fn reason(&self) -> &'static str {
        match self {
            BrokerError::InvalidTopicName { .. } => "INVALID_TOPIC_NAME",
            BrokerError::UnknownTopic(_) => "UNKNOWN_TOPIC",
            BrokerError::TopicExists(_) => "TOPIC_ALREADY_EXISTS",
            BrokerError::InvalidPartitions { .. } => "INVALID_PARTITIONS",
            BrokerError::InvalidReplicationFactor { .. } => "INVALID_REPLICATION_FACTOR",
            BrokerError::UnknownPartition { .. } => "UNKNOWN_PARTITION",
            BrokerError::OffsetOutOfRange { .. } => "OFFSET_OUT_OF_RANGE",
            BrokerError::EmptyBatch => "EMPTY_BATCH",
            BrokerError::TooLarge(_) => "RECORD_TOO_LARGE",
            BrokerError::InvalidRecord(_) => "INVALID_RECORD",
            BrokerError::InvalidArgument(_) => "INVALID_ARGUMENT",
            BrokerError::NotLeader { .. } => "NOT_LEADER",
            BrokerError::Unavailable(_) => "UNAVAILABLE",
            BrokerError::Indeterminate(_) => "OUTCOME_UNKNOWN",
            BrokerError::Corrupt { .. } => "CORRUPT_DATA",
            BrokerError::OutOfOrderSequence(_) => "OUT_OF_ORDER_SEQUENCE",
            BrokerError::DuplicateSequence(_) => "DUPLICATE_SEQUENCE_NUMBER",
            BrokerError::InvalidProducerEpoch(_) => "INVALID_PRODUCER_EPOCH",
            BrokerError::UnknownProducerId(_) => "UNKNOWN_PRODUCER_ID",
            BrokerError::Internal(_) => "INTERNAL",
            BrokerError::UnknownNode(_) => "UNKNOWN_NODE",
            BrokerError::NodeExists(_) => "NODE_ALREADY_EXISTS",
            BrokerError::NodeHasReplicas(_) => "NODE_HAS_REPLICAS",
            BrokerError::InvalidConfig(_) => "INVALID_CONFIG",
            BrokerError::GroupMaxSizeReached(_) => "GROUP_MAX_SIZE_REACHED",
            BrokerError::ShuttingDown => "SHUTTING_DOWN",
            BrokerError::InvalidModule { .. } => "INVALID_MODULE",
            BrokerError::ModuleExists(_) => "MODULE_EXISTS",
            BrokerError::UnknownModule(_) => "UNKNOWN_MODULE",
            BrokerError::ModuleInUse(_) => "MODULE_IN_USE",
            BrokerError::InvalidModuleParams(_) => "INVALID_MODULE_PARAMS",
            BrokerError::ModuleFailed { .. } => "MODULE_FAILED",
            BrokerError::ModulePoolExhausted(_) => "MODULE_POOL_EXHAUSTED",
            BrokerError::Overloaded(_) => "OVERLOADED",
            BrokerError::RequestTooLarge(_) => "REQUEST_TOO_LARGE",
            BrokerError::DiskFull(_) => "DISK_FULL",
            BrokerError::RequestTimedOut(_) => "REQUEST_TIMED_OUT",
            BrokerError::RecordsRejected(_) => "RECORD_REJECTED",
            BrokerError::InvalidGroupName { .. } => "INVALID_GROUP_NAME",
            BrokerError::UnknownGroup(_) => "UNKNOWN_GROUP",
            BrokerError::UnknownMember(_) => "UNKNOWN_MEMBER",
            BrokerError::InconsistentGroupProtocol(_) => "INCONSISTENT_GROUP_PROTOCOL",
            BrokerError::GroupNotEmpty(_) => "GROUP_NOT_EMPTY",
            BrokerError::NotAssigned(_) => "NOT_ASSIGNED",
            BrokerError::Unauthenticated(_) => "UNAUTHENTICATED",
            BrokerError::PermissionDenied(_) => "PERMISSION_DENIED",
            BrokerError::UserExists(_) => "USER_EXISTS",
            BrokerError::UnknownUser(_) => "UNKNOWN_USER",
            // Counted under this label in the metrics only; the client sees the leader's.
            BrokerError::Forwarded(_) => "FORWARDED",
        }
    }

    fn code(&self) -> Code {
        match self {
            BrokerError::InvalidTopicName { .. }
            | BrokerError::InvalidPartitions { .. }
            | BrokerError::InvalidReplicationFactor { .. }
            | BrokerError::EmptyBatch
            | BrokerError::TooLarge(_)
            | BrokerError::InvalidRecord(_)
            | BrokerError::InvalidArgument(_)
            | BrokerError::InvalidConfig(_)
            | BrokerError::InvalidModule { .. }
            | BrokerError::InvalidModuleParams(_)
            | BrokerError::RecordsRejected(_)
            | BrokerError::InvalidGroupName { .. }
            | BrokerError::InconsistentGroupProtocol(_)
            | BrokerError::UnknownProducerId(_) => Code::InvalidArgument,
            BrokerError::UnknownTopic(_)
            | BrokerError::UnknownPartition { .. }
            | BrokerError::UnknownNode(_)
            | BrokerError::UnknownModule(_)
            | BrokerError::UnknownGroup(_)
            | BrokerError::UnknownMember(_)
            | BrokerError::UnknownUser(_) => Code::NotFound,
            BrokerError::TopicExists(_)
            | BrokerError::NodeExists(_)
            | BrokerError::ModuleExists(_)
            | BrokerError::UserExists(_)
            | BrokerError::DuplicateSequence(_) => Code::AlreadyExists,
            BrokerError::NodeHasReplicas(_)
            | BrokerError::ModuleInUse(_)
            | BrokerError::ModuleFailed { .. }
            | BrokerError::GroupNotEmpty(_)
            | BrokerError::GroupMaxSizeReached(_)
            | BrokerError::NotAssigned(_)
            | BrokerError::OutOfOrderSequence(_)
            | BrokerError::InvalidProducerEpoch(_) => Code::FailedPrecondition,
            BrokerError::OffsetOutOfRange { .. } => Code::OutOfRange,
            BrokerError::NotLeader { .. } => Code::FailedPrecondition,
            BrokerError::Unavailable(_) | BrokerError::ShuttingDown => Code::Unavailable,
            BrokerError::ModulePoolExhausted(_)
            | BrokerError::Overloaded(_)
            | BrokerError::RequestTooLarge(_)
            | BrokerError::DiskFull(_) => Code::ResourceExhausted,
            BrokerError::RequestTimedOut(_) => Code::DeadlineExceeded,
            BrokerError::Indeterminate(_) => Code::Aborted,
            BrokerError::Corrupt { .. } => Code::DataLoss,
            BrokerError::Internal(_) => Code::Internal,
            BrokerError::Unauthenticated(_) => Code::Unauthenticated,
            BrokerError::PermissionDenied(_) => Code::PermissionDenied,
            BrokerError::Forwarded(status) => status.code(),
        }
    }

    /// The gRPC status for this error, with its reason (and a leader hint for NOT_LEADER).
    pub fn to_status(&self) -> Status {
        if let BrokerError::Forwarded(status) = self {
            return status.as_ref().clone();
        }
        let mut metadata = Vec::new();
        if let BrokerError::NotLeader {
            leader,
            leader_address,
            ..
        } = self
        {
            if let Some(leader) = leader {
                metadata.push(("leader".to_owned(), leader.to_string()));
            }
            if let Some(address) = leader_address {
                metadata.push(("leader_address".to_owned(), address.clone()));
            }
        }
        if let BrokerError::ModuleFailed { module, .. } = self {
            metadata.push(("module".to_owned(), module.clone()));
        }
        if let BrokerError::Corrupt {
            offset: Some(offset),
            ..
        } = self
        {
            metadata.push(("offset".to_owned(), offset.to_string()));
        }
        if let BrokerError::RecordsRejected(rejected) = self {
            let violations = rejected.iter().map(|r| {
                (
                    format!("records[{}]", r.index),
                    format!("{}: {}", r.module, r.reason),
                )
            });
            return weir_proto::error::status_with_violations(
                self.code(),
                self.to_string(),
                self.reason(),
                metadata,
                violations,
            );
        }
        weir_proto::error::status_with_reason(
            self.code(),
            self.to_string(),
            self.reason(),
            metadata,
        )
    }

    /// Parses a consumer group name from a request.
    pub fn group_name(name: &str) -> Result<GroupName, BrokerError> {
        name.parse()
            .map_err(|source| BrokerError::InvalidGroupName {
                name: name.to_owned(),
                source,
            })
    }

    /// Parses a topic name from a request.
    pub fn topic_name(name: &str) -> Result<TopicName, BrokerError> {
        name.parse()
            .map_err(|source| BrokerError::InvalidTopicName {
                name: name.to_owned(),
                source,
            })
    }
}

impl From<BrokerError> for Status {
    fn from(e: BrokerError) -> Self {
        e.to_status()
    }
}

impl From<ReplicaError> for BrokerError {
    fn from(e: ReplicaError) -> Self {
        match e {
            ReplicaError::NotLeader { group, leader } => BrokerError::NotLeader {
                what: format!("raft group {group}"),
                leader,
                leader_address: None,
            },
            ReplicaError::Unavailable { .. } => BrokerError::Unavailable(e.to_string()),
            ReplicaError::Indeterminate { .. } => BrokerError::Indeterminate(e.to_string()),
            ReplicaError::Stopped { .. } => BrokerError::Internal(e.to_string()),
            ReplicaError::Sequence { source, .. } => match source {
                SequenceError::DuplicateSequence { .. } => {
                    BrokerError::DuplicateSequence(source.to_string())
                }
                SequenceError::OutOfOrderSequence { .. } => {
                    BrokerError::OutOfOrderSequence(source.to_string())
                }
                SequenceError::InvalidProducerEpoch { .. } => {
                    BrokerError::InvalidProducerEpoch(source.to_string())
                }
            },
        }
    }
}

impl From<ReadError> for BrokerError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Corrupt { .. }
            | ReadError::IndexMismatch { .. }
            | ReadError::CorruptEntry { .. } => BrokerError::Corrupt {
                offset: e.corrupt_offset(),
                message: error_chain(&e),
            },
            ReadError::Database(_) => BrokerError::Internal(error_chain(&e)),
        }
    }
}

impl From<BatchError> for BrokerError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::Empty => BrokerError::EmptyBatch,
            BatchError::RecordTooLarge { .. } | BatchError::BatchTooLarge { .. } => {
                BrokerError::TooLarge(e.to_string())
            }
            other => BrokerError::InvalidRecord(other.to_string()),
        }
    }
}

impl From<CommandError> for BrokerError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::TopicExists(name) => BrokerError::TopicExists(name),
            CommandError::UnknownTopic(name) => BrokerError::UnknownTopic(name.to_string()),
            CommandError::NotEnoughNodes { requested, .. } => {
                BrokerError::InvalidReplicationFactor {
                    requested,
                    reason: e.to_string(),
                }
            }
            CommandError::NodeHasReplicas { .. } => BrokerError::NodeHasReplicas(e.to_string()),
            CommandError::UnknownNode(node) => BrokerError::UnknownNode(node),
            CommandError::UnknownPartition { topic, partition } => BrokerError::UnknownPartition {
                topic,
                partition,
                count: 0,
            },
            CommandError::ModuleExists { .. } => BrokerError::ModuleExists(e.to_string()),
            CommandError::UnknownModule { .. } | CommandError::NotAttached { .. } => {
                BrokerError::UnknownModule(e.to_string())
            }
            CommandError::ModuleInUse { .. } => BrokerError::ModuleInUse(e.to_string()),
            CommandError::AlreadyAttached { .. } => BrokerError::InvalidArgument(e.to_string()),
            CommandError::UserExists(name) => BrokerError::UserExists(name),
            CommandError::UnknownUser(name) => BrokerError::UnknownUser(name),
            CommandError::Invalid(reason) => BrokerError::InvalidArgument(reason),
            CommandError::InvalidConfig(reason) => BrokerError::InvalidConfig(reason),
        }
    }
}

/// An error and its sources, joined with ": ".
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl From<weir_raft::StartError> for BrokerError {
    fn from(e: weir_raft::StartError) -> Self {
        BrokerError::Internal(error_chain(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_answer_passes_on_and_a_failed_forward_is_unavailable() {
        let answered = weir_proto::error::status_with_reason(
            Code::NotFound,
            "group 'g' does not exist",
            "UNKNOWN_GROUP",
            Vec::new(),
        );
        let passed = BrokerError::forwarded("the controller leader", answered).to_status();
        assert_eq!(passed.code(), Code::NotFound);
        assert_eq!(
            weir_proto::error::reason_of(&passed).as_deref(),
            Some("UNKNOWN_GROUP")
        );

        // What tonic reports when the peer is killed mid-call.
        let cut = Status::cancelled("operation was canceled");
        let failed = BrokerError::forwarded("node 3", cut);
        assert_eq!(failed.reason(), "UNAVAILABLE");
        let status = failed.to_status();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("node 3"), "{}", status.message());
    }
}
