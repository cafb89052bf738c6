//! The controller group: a replicated state machine for cluster metadata.
//!
//! What the metadata *is* (topics, assignments, …) belongs to the broker, which implements
//! [`MetadataState`]; this module replicates its commands and snapshots.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use openraft::errors::{Fatal, LinearizableReadError, RaftError};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, ReadPolicy};
use weir_storage::{GroupId, LogDb};

use crate::config::{GroupKind, GroupTimings};
use crate::error::{ReplicaError, StartError};
use crate::group::{Group, stopped};
use crate::lease::LeaderLease;
use crate::log_store::GroupLogStore;
use crate::network::Peers;
use crate::recent::RecentEntries;
use crate::snapshot::{self, PreparedSnapshot};
use crate::types::{
    LogId, NodeId, Request, Response, Snapshot, SnapshotBytes, SnapshotMeta, StoredMembership,
    TypeConfig,
};

/// Cluster metadata as a deterministic state machine, defined by the broker.
///
/// Every replica applies the same commands in the same order, so `apply` must depend only on
/// the state and the command: no clocks, no randomness, no I/O.
pub trait MetadataState: Send + Sync + 'static {
    /// Applies one encoded command and returns the encoded reply for the proposer.
    fn apply(&mut self, command: &[u8]) -> Bytes;
    /// Encodes the whole state.
    fn snapshot(&self) -> Bytes;
    /// Replaces the state with a decoded snapshot.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String>;
}

/// openraft's state machine around a [`MetadataState`].
pub(crate) struct ControllerStateMachine<S> {
    db: LogDb,
    group: GroupId,
    state: S,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

impl<S: MetadataState> RaftStateMachine<TypeConfig> for ControllerStateMachine<S> {
    type SnapshotData = SnapshotBytes;
    type SnapshotBuilder = PreparedSnapshot;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<St>(&mut self, mut entries: St) -> Result<(), io::Error>
    where
        St: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            self.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Normal(Request::Controller(command)) => {
                    Response::Controller(self.state.apply(&command))
                }
                EntryPayload::Normal(
                    request @ (Request::Append(_) | Request::Trim { .. } | Request::Compact(_)),
                ) => {
                    tracing::warn!(
                        group = self.group,
                        %request,
                        "partition request in the controller log ignored"
                    );
                    Response::Nothing
                }
                EntryPayload::Blank => Response::Nothing,
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    Response::Nothing
                }
            };
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        PreparedSnapshot {
            db: self.db.clone(),
            group: self.group,
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
            },
            data: self.state.snapshot().to_vec(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        data: SnapshotBytes,
    ) -> Result<(), io::Error> {
        self.state
            .restore(&data)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        snapshot::store(&self.db, self.group, meta, &data, Vec::new()).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        snapshot::load(&self.db, self.group).await
    }
}

/// Proposes on this node only: fails with `NotLeader` on a follower.
async fn propose_locally<S: MetadataState>(
    group: &Group<ControllerStateMachine<S>>,
    command: Bytes,
) -> Result<Bytes, ReplicaError> {
    match group.write(Request::Controller(command)).await? {
        Response::Controller(reply) => Ok(reply),
        other => Err(ReplicaError::Indeterminate {
            group: group.id,
            reason: format!("unexpected state machine response {other:?}"),
        }),
    }
}

/// A running replica of the controller group on this node.
pub struct ControllerReplica<S: MetadataState> {
    group: Group<ControllerStateMachine<S>>,
}

impl<S: MetadataState> Clone for ControllerReplica<S> {
    fn clone(&self) -> Self {
        Self {
            group: self.group.clone(),
        }
    }
}

impl<S: MetadataState> ControllerReplica<S> {
    /// Starts the controller replica; `state` is the empty metadata, rebuilt from the stored
    /// snapshot and log before this returns.
    pub async fn start(
        node_id: NodeId,
        group: GroupId,
        db: LogDb,
        peers: Peers,
        timings: GroupTimings,
        state: S,
    ) -> Result<Self, StartError> {
        let state_machine = ControllerStateMachine {
            db: db.clone(),
            group,
            state,
            last_applied: None,
            membership: StoredMembership::default(),
        };
        // The controller's state lives in memory: applying an entry before it is flushed
        // publishes nothing a reader looks for in the log.
        let log_store = GroupLogStore::open(db, group, RecentEntries::default())
            .await
            .map_err(|source| StartError::Storage { group, source })?;
        let group = Group::start(
            node_id,
            group,
            GroupKind::Controller,
            log_store,
            &peers,
            timings,
            state_machine,
        )
        .await?;
        let local = group.clone();
        peers.set_controller(Arc::new(move |command| {
            let local = local.clone();
            Box::pin(async move { propose_locally(&local, command).await })
        }));
        Ok(Self { group })
    }

    /// Forms the group with `members` as its first voters and `preferred` as its first leader,
    /// if this replica never belonged to it (a no-op otherwise). Only the preferred leader
    /// stands for election at once; the others initialise the group only if it is not heard
    /// from within an election timeout.
    pub async fn form(
        &self,
        members: &BTreeMap<NodeId, String>,
        preferred: NodeId,
    ) -> Result<(), ReplicaError> {
        self.group.form(members, preferred).await
    }

    /// Proposes an encoded command; returns the state machine's encoded reply once the
    /// command is committed and applied. On a follower the command is forwarded, once, to the
    /// controller leader.
    pub async fn propose(&self, command: Bytes) -> Result<Bytes, ReplicaError> {
        match propose_locally(&self.group, command.clone()).await {
            Err(ReplicaError::NotLeader {
                group,
                leader: Some(leader),
            }) => {
                let addr = self.route_to(leader).ok_or(ReplicaError::NotLeader {
                    group,
                    leader: Some(leader),
                })?;
                self.group
                    .peers
                    .forward_controller(&addr, command)
                    .await
                    .map_err(|status| ReplicaError::Unavailable {
                        group,
                        reason: format!(
                            "forwarding to controller leader {leader} at {addr}: {}",
                            status.message()
                        ),
                    })
            }
            other => other,
        }
    }

    /// Adds `node` at `address` as a controller voter: first as a learner until it has caught
    /// up with the log, then as a voter. Must run on the controller leader.
    pub async fn add_voter(&self, node: NodeId, address: String) -> Result<(), ReplicaError> {
        self.group.replace_voter(Some((node, address)), None).await
    }

    /// Removes `node` from the controller's voters. Must run on the controller leader.
    pub async fn remove_voter(&self, node: NodeId) -> Result<(), ReplicaError> {
        self.group.replace_voter(None, Some(node)).await
    }

    /// The controller's voters.
    pub fn voters(&self) -> Vec<NodeId> {
        self.group.voters()
    }

    /// Waits, for at most `timeout`, until `node` is among the voters of the membership this
    /// replica knows: for a node being added, until its learner phase is over.
    pub async fn wait_to_be_voter(
        &self,
        node: NodeId,
        timeout: Duration,
    ) -> Result<(), ReplicaError> {
        self.group
            .raft
            .wait(Some(timeout))
            .metrics(
                |m| {
                    m.membership_config
                        .membership()
                        .voter_ids()
                        .any(|v| v == node)
                },
                "this node to become a controller voter",
            )
            .await
            .map(|_| ())
            .map_err(|e| ReplicaError::Unavailable {
                group: self.group.id,
                reason: format!("node {node} is not a controller voter: {e}"),
            })
    }

    /// Confirms, for at most `timeout`, that this node still leads the controller (a quorum
    /// answers it in its term) and has applied everything committed before the call: what a
    /// read of the leader's state needs not to be stale. A leader cut off from the others keeps
    /// believing it leads until it hears of a newer one; here it fails with `NOT_LEADER` (once
    /// it knows) or `UNAVAILABLE`.
    pub async fn read_barrier(&self, timeout: Duration) -> Result<(), ReplicaError> {
        let group = self.group.id;
        let unavailable = |reason: String| ReplicaError::Unavailable { group, reason };
        match tokio::time::timeout(timeout, self.leader_read_barrier()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward)))) => {
                Err(ReplicaError::NotLeader {
                    group,
                    leader: forward.leader_id,
                })
            }
            Ok(Err(RaftError::APIError(other))) => Err(unavailable(other.to_string())),
            Ok(Err(RaftError::Fatal(fatal))) => Err(stopped(group, fatal)),
            Err(_) => Err(unavailable(format!(
                "leadership not confirmed by a quorum within {timeout:?}"
            ))),
        }
    }

    /// On the leader: a linearizable read barrier, then the apply catching up with it.
    async fn leader_read_barrier(
        &self,
    ) -> Result<(), RaftError<TypeConfig, LinearizableReadError<TypeConfig>>> {
        let raft = &self.group.raft;
        let read_log_id = raft.ensure_linearizable(ReadPolicy::ReadIndex).await?;
        // Without a timeout this wait fails only when raft stops.
        raft.wait(None)
            .applied_index_at_least(Some(read_log_id.log_id().index), "controller caught up")
            .await
            .map(|_| ())
            .map_err(|_| RaftError::Fatal(Fatal::Stopped))
    }

    /// Waits until this replica has applied everything committed before the call, for at
    /// most `timeout`: on the leader a linearizable read barrier; on a follower, until it has
    /// heard from the leader and applied up to the commit index the leader reported.
    pub async fn catch_up(&self, timeout: Duration) -> Result<(), ReplicaError> {
        let group = self.group.id;
        let raft = &self.group.raft;
        let unavailable = |reason: String| ReplicaError::Unavailable { group, reason };
        let wait = async {
            match self.leader_read_barrier().await {
                Ok(()) => Ok(()),
                Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(_))) => raft
                    .wait(None)
                    .metrics(
                        |m| {
                            // The commit index as the leader reported it, not the one this
                            // node recovered from its own (possibly stale) storage.
                            m.current_leader.is_some()
                                && m.cluster_committed.is_some()
                                && m.last_applied.map(|l| l.index)
                                    >= m.cluster_committed.map(|c| c.index)
                        },
                        "follower caught up with the leader's commit index",
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| unavailable(e.to_string())),
                Err(RaftError::APIError(other)) => Err(unavailable(other.to_string())),
                Err(RaftError::Fatal(fatal)) => Err(stopped(group, fatal)),
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| unavailable(format!("not caught up within {timeout:?}")))?
    }

    /// The leader this node currently knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.group.leader()
    }

    /// Whether this node leads the controller.
    pub fn is_leader(&self) -> bool {
        self.group.is_leader()
    }

    /// The term this node leads the controller in; `None` when it does not lead it. State a
    /// leader keeps only in memory (consumer group membership) belongs to one term: a new term
    /// starts it afresh.
    pub fn leader_term(&self) -> Option<u64> {
        self.group.leader_term()
    }

    /// This node's leadership of the controller and its lease, read together; `None` when it
    /// does not lead. A leader cut off from the other voters believes it leads until it hears
    /// of a newer term; once no quorum acknowledged it within the longest election timeout
    /// (openraft's leader lease) the others may have elected another. The controller keeps
    /// openraft's heartbeats, so a leader that reaches a quorum renews its lease every
    /// heartbeat interval.
    pub fn leader_lease(&self) -> Option<LeaderLease> {
        self.group.leader_lease()
    }

    /// Like [`ControllerReplica::leader_lease`], but a leader elected a moment ago is given up
    /// to two heartbeat intervals for a quorum to acknowledge it.
    pub async fn confirmed_leader_lease(&self) -> Option<LeaderLease> {
        self.group.confirmed_leader_lease().await
    }

    /// The address this node uses to reach `node`: its own route if it has one, else the
    /// address in the controller membership.
    pub fn route_to(&self, node: NodeId) -> Option<String> {
        self.group
            .address_of(node)
            .map(|advertised| self.group.peers.address_of(node, &advertised))
    }

    /// Waits until some node leads the controller, for at most `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, ReplicaError> {
        self.group.wait_for_leader(timeout).await
    }

    /// Stops the controller's raft tasks.
    pub async fn shutdown(&self) {
        self.group.shutdown().await
    }
}
