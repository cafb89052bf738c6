//! A partition's raft group: the state machine that assigns offsets, and the replica handle.

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use weir_storage::{GroupId, LogDb, MetaKey};
use weir_types::{EncodedBatch, Offset};

use crate::config::{GroupKind, GroupTimings};
use crate::error::{ReplicaError, StartError};
use crate::group::{Group, stopped};
#[cfg(test)]
use crate::log_store::GroupLogStore;
use crate::log_store::{blocking, read_meta_json};
use crate::network::Peers;
use crate::snapshot::{self, PreparedSnapshot};
use crate::types::{
    LogId, NodeId, Request, Response, Snapshot, SnapshotBytes, SnapshotMeta, StoredMembership,
    TypeConfig,
};

/// How far a partition has been applied: what consumers may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionProgress {
    /// The last applied raft index; log entries up to it are committed.
    pub applied_index: u64,
    /// One past the last committed offset: the next offset a consumer will see.
    pub high_watermark: Offset,
}

/// The applied state, persisted lazily and carried in snapshots.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AppliedState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    next_offset: Offset,
}

/// The partition state machine. The data already lives in the log; applying an entry only
/// assigns its offsets (the same ones the log store stamped, because both count from the log
/// prefix) and publishes the new high watermark.
pub(crate) struct PartitionStateMachine {
    db: LogDb,
    group: GroupId,
    state: AppliedState,
    progress: watch::Sender<PartitionProgress>,
}

impl PartitionStateMachine {
    async fn open(db: LogDb, group: GroupId) -> io::Result<Self> {
        let applied: Option<AppliedState> = {
            let db = db.clone();
            blocking(move || read_meta_json(&db, group, MetaKey::Applied)).await?
        };
        let state = applied.unwrap_or_default();
        let (progress, _) = watch::channel(progress_of(&state));
        Ok(Self {
            db,
            group,
            state,
            progress,
        })
    }

    fn publish(&self) {
        let progress = progress_of(&self.state);
        self.progress.send_if_modified(|current| {
            let changed = *current != progress;
            *current = progress;
            changed
        });
    }

    fn persist_lazily(&self) -> io::Result<()> {
        let bytes = serde_json::to_vec(&self.state).map_err(io::Error::other)?;
        self.db.put_lazy(self.group, MetaKey::Applied, bytes.into());
        Ok(())
    }
}

fn progress_of(state: &AppliedState) -> PartitionProgress {
    PartitionProgress {
        applied_index: state.last_applied.map_or(0, |l| l.index),
        high_watermark: state.next_offset,
    }
}

impl RaftStateMachine<TypeConfig> for PartitionStateMachine {
    type SnapshotData = SnapshotBytes;
    type SnapshotBuilder = PreparedSnapshot;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.state.last_applied, self.state.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            self.state.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Normal(Request::Append(batch)) => {
                    let base_offset = self.state.next_offset;
                    let record_count = batch.header().record_count;
                    self.state.next_offset = base_offset.plus(u64::from(record_count));
                    Response::Appended {
                        base_offset,
                        record_count,
                    }
                }
                EntryPayload::Normal(Request::Controller(_)) => {
                    tracing::warn!(
                        group = self.group,
                        "controller command in a partition log ignored"
                    );
                    Response::Nothing
                }
                EntryPayload::Blank => Response::Nothing,
                EntryPayload::Membership(m) => {
                    self.state.membership = StoredMembership::new(Some(entry.log_id), m);
                    Response::Nothing
                }
            };
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        self.persist_lazily()?;
        self.publish();
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        PreparedSnapshot {
            db: self.db.clone(),
            group: self.group,
            meta: SnapshotMeta {
                last_log_id: self.state.last_applied,
                last_membership: self.state.membership.clone(),
            },
            data: serde_json::to_vec(&self.state)
                .expect("the applied state is plain data (integers and log ids) that JSON encodes"),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotBytes,
    ) -> Result<(), io::Error> {
        let state: AppliedState = serde_json::from_slice(&snapshot).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad partition snapshot: {e}"),
            )
        })?;
        self.state = AppliedState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            next_offset: state.next_offset,
        };
        let applied = serde_json::to_vec(&self.state).map_err(io::Error::other)?;
        let extra = vec![weir_storage::WriteOp::PutMeta {
            group: self.group,
            key: MetaKey::Applied,
            value: applied.into(),
        }];
        snapshot::store(&self.db, self.group, meta, &snapshot, extra).await?;
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        snapshot::load(&self.db, self.group).await
    }
}

/// A replica's replication state, as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// The replica's node.
    pub node_id: NodeId,
    /// Whether it holds every committed entry.
    pub in_sync: bool,
    /// Raft log entries it is behind the leader's log.
    pub lag: u64,
}

/// What a successful append returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Offset of the first record.
    pub base_offset: Offset,
    /// Records appended.
    pub record_count: u32,
}

/// A running replica of one partition on this node.
#[derive(Clone)]
pub struct PartitionReplica {
    group: Group<PartitionStateMachine>,
    progress: watch::Receiver<PartitionProgress>,
}

impl std::fmt::Debug for PartitionReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionReplica")
            .field("group", &self.group.id)
            .finish()
    }
}

impl PartitionReplica {
    /// Starts (or restarts) the replica of `group` on this node. The group's stored state is
    /// recovered before this returns: everything committed before a crash is applied again.
    pub async fn start(
        node_id: NodeId,
        group: GroupId,
        db: LogDb,
        peers: Peers,
        timings: GroupTimings,
    ) -> Result<Self, StartError> {
        let state_machine = PartitionStateMachine::open(db.clone(), group)
            .await
            .map_err(|source| StartError::Storage { group, source })?;
        let progress = state_machine.progress.subscribe();
        let group = Group::start(
            node_id,
            group,
            GroupKind::Partition,
            db,
            &peers,
            timings,
            state_machine,
        )
        .await?;
        Ok(Self { group, progress })
    }

    /// Makes `members` the group's first voters, if the group was never initialised. A no-op
    /// (not an error) on a group that already has a membership.
    pub async fn initialize(&self, members: &BTreeMap<NodeId, String>) -> Result<(), ReplicaError> {
        self.group.initialize(members).await
    }

    /// The raft group id.
    pub fn group(&self) -> GroupId {
        self.group.id
    }

    /// Appends `batch` through raft and returns its offsets once it is committed (every voter
    /// of the quorum has fsynced it) and applied.
    pub async fn append(&self, batch: EncodedBatch) -> Result<AppendOutcome, ReplicaError> {
        match self.group.write(Request::Append(batch)).await? {
            Response::Appended {
                base_offset,
                record_count,
            } => Ok(AppendOutcome {
                base_offset,
                record_count,
            }),
            other => Err(ReplicaError::Indeterminate {
                group: self.group.id,
                reason: format!("unexpected state machine response {other:?}"),
            }),
        }
    }

    /// Hands `batch` to raft without waiting for the outcome (acks=none).
    pub async fn append_unacknowledged(&self, batch: EncodedBatch) -> Result<(), ReplicaError> {
        if !self.is_leader() {
            return Err(ReplicaError::NotLeader {
                group: self.group.id,
                leader: self.leader(),
            });
        }
        self.group
            .raft
            .client_write_ff(Request::Append(batch), None)
            .await
            .map_err(|e| stopped(self.group.id, e))
    }

    /// Replaces the voter `remove` by `add` (at its address): `add` first catches up as a
    /// learner. Must run on the leader.
    pub async fn replace_voter(
        &self,
        add: (NodeId, String),
        remove: NodeId,
    ) -> Result<(), ReplicaError> {
        self.group.replace_voter(Some(add), Some(remove)).await
    }

    /// The applied index and high watermark, updated as entries are applied.
    pub fn progress(&self) -> watch::Receiver<PartitionProgress> {
        self.progress.clone()
    }

    /// The leader this node currently knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.group.leader()
    }

    /// Whether this node is the group's leader.
    pub fn is_leader(&self) -> bool {
        self.group.is_leader()
    }

    /// Whether this node's high watermark is the partition's: it leads the partition and has
    /// applied an entry of its own term. Any other replica's may be behind, so only such a
    /// leader can tell that an offset lies past the end of the log.
    pub fn knows_high_watermark(&self) -> bool {
        self.group.leads_with_latest_state()
    }

    /// Each voter's replication state, as seen by this node when it leads the group.
    pub fn replica_status(&self) -> Option<Vec<ReplicaStatus>> {
        self.group.replica_status()
    }

    /// Waits until the group stops: `Some(why)` after a failure (a storage error, say),
    /// `None` after a normal shutdown.
    pub async fn stopped(&self) -> Option<String> {
        self.group.stopped().await
    }

    /// Why the group stopped, if it did (for example a storage error).
    pub fn failure(&self) -> Option<String> {
        self.group.failure()
    }

    /// Waits until some node leads the group, for at most `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, ReplicaError> {
        self.group.wait_for_leader(timeout).await
    }

    /// Stops the group's raft tasks. Data stays on disk.
    pub async fn shutdown(&self) {
        self.group.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use openraft::StorageError;
    use openraft::testing::log::{StoreBuilder, Suite};
    use weir_storage::LogDbOptions;

    use super::*;

    struct Builder;

    impl StoreBuilder<TypeConfig, GroupLogStore, PartitionStateMachine, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<
            (tempfile::TempDir, GroupLogStore, PartitionStateMachine),
            StorageError<TypeConfig>,
        > {
            let dir = tempfile::tempdir().expect("temp dir");
            let db = LogDb::open(dir.path().join("log.redb"), LogDbOptions::default())
                .expect("open log db");
            let log = GroupLogStore::open(db.clone(), 9)
                .await
                .expect("open log store");
            let sm = PartitionStateMachine::open(db, 9)
                .await
                .expect("open state machine");
            Ok((dir, log, sm))
        }
    }

    /// openraft's own storage conformance suite, run against the redb-backed stores.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openraft_storage_suite() {
        Suite::test_all(Builder).await.expect("storage suite");
    }
}
