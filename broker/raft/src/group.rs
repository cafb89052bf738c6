//! What every raft group on a node has in common, whatever its state machine.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, Fatal, LinearizableReadError, RaftError};
use openraft::impls::ProgressResponder;
use openraft::raft::ClientWriteResult;
use openraft::storage::RaftStateMachine;
use openraft::{BasicNode, ChangeMembers, Raft, ReadPolicy, ServerState};
use weir_storage::GroupId;

use crate::config::{GroupKind, GroupTimings, raft_config};
use crate::error::{ReplicaError, StartError};
use crate::lease::{Kept, LeaderLease, Lease};
use crate::liveness::{GroupView, Reporter, Standing};
use crate::log_store::GroupLogStore;
use crate::network::Peers;
use crate::types::{NodeId, Request, Response, SnapshotBytes, TypeConfig};

/// A running raft group with state machine `SM`.
pub(crate) struct Group<SM: RaftStateMachine<TypeConfig>> {
    pub(crate) id: GroupId,
    pub(crate) raft: Raft<TypeConfig, SM>,
    pub(crate) peers: Peers,
    pub(crate) timings: GroupTimings,
    /// Held by whoever changes the membership on this node ([`Group::replace_voter`] and the
    /// task that finishes joint configurations), so they never race each other.
    membership_changes: Arc<tokio::sync::Mutex<()>>,
    /// For a partition group, which runs no raft timer while its leader is known alive: the
    /// node-level heartbeats it reports to, and its lease kept before writes
    /// ([`crate::liveness`]). `None` for the controller, which keeps openraft's timers.
    quiet: Option<Quiet>,
}

#[derive(Clone)]
struct Quiet {
    reporter: Arc<Reporter>,
    lease: Arc<Lease>,
}

impl<SM: RaftStateMachine<TypeConfig>> Clone for Group<SM> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            raft: self.raft.clone(),
            peers: self.peers.clone(),
            timings: self.timings,
            membership_changes: self.membership_changes.clone(),
            quiet: self.quiet.clone(),
        }
    }
}

impl<SM> Group<SM>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotBytes>,
{
    /// Starts raft over the group's log (see [`GroupLogStore::open`]); stored state is
    /// recovered (and everything committed re-applied) before this returns.
    pub(crate) async fn start(
        node_id: NodeId,
        id: GroupId,
        kind: GroupKind,
        log_store: GroupLogStore,
        peers: &Peers,
        timings: GroupTimings,
        state_machine: SM,
    ) -> Result<Self, StartError> {
        let config = raft_config(timings, kind)?;
        let raft = Raft::new(
            node_id,
            config,
            peers.for_group(id),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| StartError::Raft {
            group: id,
            source: Box::new(e),
        })?;
        peers.register(id, raft.clone());
        // A restarted leader does not resume its term (see `raft_config`); a lone voter has no
        // follower to disagree with, so it need not wait out an election timeout either (see
        // `settle_lone_voter`).
        if is_lone_voter(&raft, node_id) {
            raft.trigger()
                .elect(false)
                .await
                .map_err(|e| StartError::Raft {
                    group: id,
                    source: Box::new(e),
                })?;
        }
        let liveness = peers.liveness(node_id, timings);
        let quiet = (kind == GroupKind::Partition).then(|| Quiet {
            reporter: Arc::new(liveness.reporter(id)),
            lease: Arc::new(Lease::new(timings)),
        });
        let group = Self {
            id,
            raft,
            peers: peers.clone(),
            timings,
            membership_changes: Arc::default(),
            quiet,
        };
        tokio::spawn(group.clone().follow_membership());
        Ok(group)
    }

    /// Proposes `request` and returns the state machine's response once it is applied.
    pub(crate) async fn write(&self, request: Request) -> Result<Response, ReplicaError> {
        self.keep_lease().await;
        self.raft
            .client_write(request)
            .await
            .map(|r| r.data)
            .map_err(|e| write_error(self.id, e))
    }

    /// Hands `request` to raft and returns at once; the [`Proposal`] yields the state machine's
    /// response once the entry is applied, or why it was not (raft may refuse a write even
    /// while this node leads, for example when its leader lease lapsed).
    pub(crate) async fn propose(&self, request: Request) -> Result<Proposal, ReplicaError> {
        self.keep_lease().await;
        let (responder, answer) = ProgressResponder::complete_only();
        self.raft
            .client_write_ff(request, Some(responder))
            .await
            .map_err(|e| stopped(self.id, e))?;
        Ok(Proposal {
            group: self.id,
            answer,
        })
    }

    /// Before a write: renews a quiet partition leader's lapsed lease (see [`crate::lease`]).
    /// While no quorum renews it, this node's heartbeats stop saying it leads the group.
    async fn keep_lease(&self) {
        if let Some(quiet) = &self.quiet {
            match quiet.lease.keep(&self.raft).await {
                Kept::Held => {}
                Kept::Renewed => quiet.reporter.resume_claim(),
                Kept::Lost { until } => quiet.reporter.suspend_claim(until.into_std()),
            }
        }
    }

    /// Whether no other member is known to lead the group: for a partition group, as the
    /// node-level heartbeats tell ([`Reporter::unclaimed`]); the controller keeps openraft's
    /// timers and leases, under which a pre-vote is refused while a leader is alive.
    pub(crate) fn unclaimed(&self) -> bool {
        self.quiet
            .as_ref()
            .is_none_or(|quiet| quiet.reporter.unclaimed())
    }

    /// Keeps a partition replica's raft timer off until `until` while it follows and no leader
    /// is heard of ([`Reporter::hold_timer`]); the controller keeps openraft's timers.
    pub(crate) fn hold_timer(&self, until: tokio::time::Instant) {
        if let Some(quiet) = &self.quiet {
            quiet.reporter.hold_timer(until.into_std());
        }
    }

    /// Whether this node leads the group and its lease lapsed while the group was quiet (only
    /// partition groups go quiet).
    pub(crate) fn lease_lapsed(&self) -> bool {
        self.quiet
            .as_ref()
            .is_some_and(|quiet| quiet.lease.lapsed(&self.raft))
    }

    /// Returns once raft has handled every write handed to it before the call: each is then in
    /// the log or refused, and a refusal is answered ([`Proposal::answered`]).
    pub(crate) async fn handled_writes(&self) -> Result<(), ReplicaError> {
        self.raft
            .with_raft_state(|_| ())
            .await
            .map_err(|e| stopped(self.id, e))
    }

    /// Changes the voters one step: `add` joins as a learner first (this waits until it has
    /// caught up with the log), then the membership swaps in `add` and drops `remove`. Must run
    /// on the leader. Adding a voter already present or removing an absent one is a no-op.
    /// A learner that makes no progress for the configured stall time fails the change with
    /// `UNAVAILABLE`; it stays a learner, and the change can be run again.
    ///
    /// A joint configuration left by a change cut short counts as its new half: the change
    /// starts from the voters that change was heading for, never from the union of both halves.
    pub(crate) async fn replace_voter(
        &self,
        add: Option<(NodeId, String)>,
        remove: Option<NodeId>,
    ) -> Result<(), ReplicaError> {
        let _changing = self.membership_changes.lock().await;
        self.keep_lease().await;
        let mut voters = self.target_voters();
        let mut changed = false;
        if let Some((node, address)) = add
            && !voters.contains(&node)
        {
            self.raft
                .add_learner(node, BasicNode::new(address), false)
                .await
                .map_err(|e| write_error(self.id, e))?;
            self.wait_for_learner(node).await?;
            voters.insert(node);
            changed = true;
        }
        if let Some(node) = remove {
            changed |= voters.remove(&node);
        }
        if changed || self.is_joint() {
            self.raft
                .change_membership(voters, false)
                .await
                .map_err(|e| write_error(self.id, e))?;
        }
        // Learners an earlier change added and never promoted (a move cut short): their nodes
        // drop their replicas once the metadata no longer lists them, so they must leave the
        // group too, or the leader would count entries replicated to a log that is gone.
        let leftover: BTreeSet<NodeId> = {
            let metrics = self.raft.metrics().borrow_watched().clone();
            metrics
                .membership_config
                .membership()
                .learner_ids()
                .collect()
        };
        if !leftover.is_empty() {
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(leftover), false)
                .await
                .map_err(|e| write_error(self.id, e))?;
        }
        Ok(())
    }

    /// Takes `node` out of the group if it is only a learner (a change that failed before
    /// promoting it), so the leader forgets what it replicated there. Returns `true` when `node`
    /// is no member now, `false` when it is a voter (left alone). Must run on the leader.
    pub(crate) async fn drop_learner(&self, node: NodeId) -> Result<bool, ReplicaError> {
        let _changing = self.membership_changes.lock().await;
        let (voter, learner) = {
            let metrics = self.raft.metrics().borrow_watched().clone();
            let membership = metrics.membership_config.membership();
            (
                membership.voter_ids().any(|v| v == node),
                membership.learner_ids().any(|l| l == node),
            )
        };
        if voter {
            return Ok(false);
        }
        if learner {
            self.keep_lease().await;
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([node])), false)
                .await
                .map_err(|e| write_error(self.id, e))?;
        }
        Ok(true)
    }

    /// Runs for the group's life: whenever this node leads the group with its latest state and
    /// the membership is a joint configuration that no change on this node is finishing, it
    /// finishes it. A leader that dies between the two entries of a membership change leaves
    /// the group in joint consensus, and openraft leaves it there: every election then needs a
    /// majority of both halves, which is one node failure from no leader at all, and a node
    /// of either half cannot be retired. The change is finished forwards (to its new half),
    /// whose nodes all caught up as learners before the joint configuration was proposed.
    ///
    /// The same watch of the group's metrics decides when the raft timer runs. The timer drives
    /// elections and heartbeats only. A partition group reports where it stands to the
    /// node-level heartbeats, which decide ([`crate::liveness`]). The controller stops its
    /// timer while this node leads it alone and starts it again when the group has another
    /// member or this node stops leading it: a lone leader needs neither elections nor
    /// heartbeats.
    async fn follow_membership(self) {
        let mut metrics = self.raft.metrics();
        // The (term, membership) last tried, so a failure is tried once, not in a loop.
        let mut tried = None;
        let mut ticking = true;
        // What was last reported to the node-level heartbeats: (standing, membership).
        let mut reported = None;
        loop {
            let (stuck, alone, report) = {
                let m = metrics.borrow_watched();
                let stuck = (leads_with_latest_state(&m)
                    && is_joint(m.membership_config.membership()))
                .then(|| (m.current_term, *m.membership_config.log_id()));
                let now = (standing(&m), *m.membership_config.log_id());
                let report = (self.quiet.is_some() && reported != Some(now)).then(|| {
                    reported = Some(now);
                    view(&m)
                });
                (stuck, leads_alone(&m), report)
            };
            // Reported with the metrics guard dropped: the report may turn the group's timer
            // on or off, and the raft core cannot publish metrics while the guard is held.
            if let (Some(quiet), Some(view)) = (&self.quiet, report) {
                quiet.reporter.update(view);
            }
            if self.quiet.is_none() && alone == ticking {
                ticking = !alone;
                self.raft.runtime_config().tick(ticking);
            }
            if let Some(stuck) = stuck
                && tried.as_ref() != Some(&stuck)
            {
                tried = Some(stuck);
                let _changing = self.membership_changes.lock().await;
                // A change that held the lock may have finished it meanwhile.
                if self.is_leader() && self.is_joint() {
                    let target = self.target_voters();
                    tracing::info!(group = self.id, voters = ?target, "finishing a membership change its leader did not end");
                    if let Err(e) = self
                        .raft
                        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::new()), false)
                        .await
                    {
                        tracing::warn!(group = self.id, error = %e, "finishing a joint configuration failed; the next leader or change retries");
                    }
                }
            }
            if metrics.changed().await.is_err() {
                // Raft stopped: whatever its last metrics said, this replica leads nothing.
                if let Some(quiet) = &self.quiet {
                    quiet.reporter.stopped();
                }
                return;
            }
        }
    }

    /// Whether the membership this node has is a joint configuration (a change under way or
    /// cut short).
    fn is_joint(&self) -> bool {
        is_joint(
            self.raft
                .metrics()
                .borrow_watched()
                .membership_config
                .membership(),
        )
    }

    /// The voters the membership is heading for: its only configuration, or the new half of a
    /// joint one.
    fn target_voters(&self) -> BTreeSet<NodeId> {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .get_joint_config()
            .last()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until learner `node` has replicated the leader's log as it stands now, failing
    /// when it goes a stall time without progress or this node stops leading.
    async fn wait_for_learner(&self, node: NodeId) -> Result<(), ReplicaError> {
        let target = self
            .raft
            .metrics()
            .borrow_watched()
            .last_log_index
            .unwrap_or(0);
        let matched = |m: &openraft::RaftMetrics<TypeConfig>| {
            m.replication
                .as_ref()
                .and_then(|r| r.get(&node).copied().flatten())
                .map_or(0, |l| l.index)
        };
        let mut seen = None;
        loop {
            let waited = self
                .raft
                .wait(Some(self.timings.learner_stall))
                .metrics(
                    |m| {
                        m.state != ServerState::Leader
                            || matched(m) >= target
                            || Some(matched(m)) != seen
                    },
                    "the learner to make progress",
                )
                .await;
            let metrics = match waited {
                Ok(metrics) => metrics,
                Err(_) => {
                    return Err(ReplicaError::Unavailable {
                        group: self.id,
                        reason: format!(
                            "node {node} made no progress catching up for {:?} (it has index {} of {target}); it stays a learner: run the change again once it is reachable",
                            self.timings.learner_stall,
                            seen.unwrap_or(0)
                        ),
                    });
                }
            };
            if metrics.state != ServerState::Leader {
                return Err(ReplicaError::NotLeader {
                    group: self.id,
                    leader: metrics.current_leader,
                });
            }
            if matched(&metrics) >= target {
                return Ok(());
            }
            seen = Some(matched(&metrics));
        }
    }

    /// The leader this node knows of.
    pub(crate) fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// The address of `node` in the group's membership.
    pub(crate) fn address_of(&self, node: NodeId) -> Option<String> {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .get_node(&node)
            .map(|n| n.addr.clone())
    }

    /// The voters of the group's current membership.
    pub(crate) fn voters(&self) -> Vec<NodeId> {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// Every member of the group, voters and learners, of its current membership and of the
    /// last one committed: a change not committed yet may still be undone (its leader fails and
    /// the next one was elected without it), so the members it drops still count until then.
    pub(crate) fn members(&self) -> Vec<NodeId> {
        let watched = self.raft.metrics();
        let metrics = watched.borrow_watched();
        let mut members: Vec<NodeId> = [
            &metrics.membership_config,
            &metrics.committed_membership_config,
        ]
        .into_iter()
        .flat_map(|stored| {
            let membership = stored.membership();
            membership.voter_ids().chain(membership.learner_ids())
        })
        .collect();
        members.sort_unstable();
        members.dedup();
        members
    }

    /// [`Group::members`], confirmed current: a read-index round with a quorum shows this node
    /// still leads the group, so no other leader can have changed the membership unseen. A
    /// deposed leader that has not noticed yet has a stale view, and acting on it (dropping a
    /// replica it does not know of) would break the new leader's group.
    pub(crate) async fn confirmed_members(&self) -> Result<Vec<NodeId>, ReplicaError> {
        match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(_) => Ok(self.members()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                Err(ReplicaError::NotLeader {
                    group: self.id,
                    leader: f.leader_id,
                })
            }
            Err(RaftError::APIError(other)) => Err(ReplicaError::Unavailable {
                group: self.id,
                reason: other.to_string(),
            }),
            Err(RaftError::Fatal(fatal)) => Err(stopped(self.id, fatal)),
        }
    }

    /// Whether this node leads the group.
    pub(crate) fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().state == ServerState::Leader
    }

    /// Whether this node leads the group and has applied an entry of its own term. Only then
    /// is its applied state the group's latest: a leader elected a moment ago may not yet have
    /// learnt all its predecessor committed, and a follower may be behind.
    pub(crate) fn leads_with_latest_state(&self) -> bool {
        leads_with_latest_state(&self.raft.metrics().borrow_watched())
    }

    /// When this node is the group's only voter, waits (for at most `timeout`) until it leads
    /// the group with its latest state, as it did before it stopped: it stands for election
    /// as it starts. Other groups elect in their own time; this returns at once for them.
    pub(crate) async fn settle_lone_voter(&self, timeout: Duration) -> Result<(), ReplicaError> {
        let node_id = self.raft.metrics().borrow_watched().id;
        if !is_lone_voter(&self.raft, node_id) {
            return Ok(());
        }
        self.raft
            .wait(Some(timeout))
            .metrics(
                leads_with_latest_state,
                "the lone voter to lead with its latest state",
            )
            .await
            .map(|_| ())
            .map_err(|e| ReplicaError::Unavailable {
                group: self.id,
                reason: e.to_string(),
            })
    }

    /// `(term, last log index)` when this node leads the group.
    pub(crate) fn leadership(&self) -> Option<(u64, u64)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        (metrics.state == ServerState::Leader)
            .then(|| (metrics.current_term, metrics.last_log_index.unwrap_or(0)))
    }

    /// Waits, for at most `timeout`, until this node leads the group in `term` having applied
    /// an entry of `term` and every entry up to `barrier`. Fails with `NOT_LEADER` when the
    /// node loses that leadership meanwhile, and `UNAVAILABLE` when time runs out.
    pub(crate) async fn wait_applied_as_leader(
        &self,
        term: u64,
        barrier: u64,
        timeout: Duration,
    ) -> Result<(), ReplicaError> {
        let applied = |m: &openraft::RaftMetrics<TypeConfig>| {
            m.last_applied.as_ref().is_some_and(|applied| {
                applied.committed_leader_id().term == term && applied.index >= barrier
            })
        };
        let still_leader = |m: &openraft::RaftMetrics<TypeConfig>| {
            m.state == ServerState::Leader && m.current_term == term
        };
        let waited = self
            .raft
            .wait(Some(timeout))
            .metrics(
                |m| !still_leader(m) || applied(m),
                "the leader to apply its log",
            )
            .await;
        match waited {
            Ok(m) if still_leader(&m) => Ok(()),
            Ok(_) => Err(ReplicaError::NotLeader {
                group: self.id,
                leader: self.leader(),
            }),
            Err(_) => Err(ReplicaError::Unavailable {
                group: self.id,
                reason: format!(
                    "the leader has not applied its log up to index {barrier} within {timeout:?}"
                ),
            }),
        }
    }

    /// The term this node leads the group in; `None` when it does not lead it.
    pub(crate) fn leader_term(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        (metrics.state == ServerState::Leader).then_some(metrics.current_term)
    }

    /// This node's leadership of the group and its lease (openraft's: a quorum acknowledged
    /// it within the longest election timeout), read together; `None` when it does not lead.
    /// For a group that keeps openraft's heartbeats (the controller): a quiet partition
    /// group's lease lapses whenever it is quiet ([`crate::lease`]).
    pub(crate) fn leader_lease(&self) -> Option<LeaderLease> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        if metrics.state != ServerState::Leader {
            return None;
        }
        let term = metrics.current_term;
        Some(
            match crate::lease::lease_left(&metrics, self.timings.election_max) {
                None => LeaderLease::Held { term }, // leads alone
                Some(_) if metrics.last_quorum_acked.is_none() => LeaderLease::Unconfirmed { term },
                Some(left) if left.is_zero() => LeaderLease::Over { term },
                Some(_) => LeaderLease::Held { term },
            },
        )
    }

    /// Like [`Group::leader_lease`], but a leader elected a moment ago is given up to two
    /// heartbeat intervals for a quorum to acknowledge it (its first entry's replication).
    pub(crate) async fn confirmed_leader_lease(&self) -> Option<LeaderLease> {
        let lease = self.leader_lease();
        if !matches!(lease, Some(LeaderLease::Unconfirmed { .. })) {
            return lease;
        }
        // A timeout leaves it unconfirmed, which the caller refuses.
        let _ = self
            .raft
            .wait(Some(self.timings.heartbeat * 2))
            .metrics(
                |m| m.state != ServerState::Leader || m.last_quorum_acked.is_some(),
                "a quorum to acknowledge the new leader",
            )
            .await;
        self.leader_lease()
    }

    /// Waits until some node leads the group, for at most `timeout`.
    pub(crate) async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, ReplicaError> {
        let unavailable = |reason: String| ReplicaError::Unavailable {
            group: self.id,
            reason,
        };
        let metrics = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        metrics
            .current_leader
            .ok_or_else(|| unavailable("no leader".to_owned()))
    }

    /// Where a write this node cannot take as leader should go: the group's leader, waiting
    /// for at most `timeout` while there is none. While the leader it knows is a node whose
    /// heartbeats stopped, waits for its successor instead, for as long as electing one may
    /// take ([`Reporter::succession`]), so that the writer is sent to the new leader as soon
    /// as there is one, rather than to a dead node and then into its retry backoff; with no
    /// successor by then, the leader it knows.
    pub(crate) async fn leader_for_writes(
        &self,
        timeout: Duration,
    ) -> Result<NodeId, ReplicaError> {
        let Some(leader) = self.leader() else {
            return self.wait_for_leader(timeout).await;
        };
        let Some(quiet) = self
            .quiet
            .as_ref()
            .filter(|q| q.reporter.presumed_dead(leader))
        else {
            return Ok(leader);
        };
        let successor = self
            .raft
            .wait(Some(quiet.reporter.succession().min(timeout)))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != leader),
                "a successor to a leader presumed dead",
            )
            .await;
        Ok(successor
            .ok()
            .and_then(|m| m.current_leader)
            .unwrap_or(leader))
    }

    /// Each voter's replication state, when this node leads the group.
    pub(crate) fn replica_status(&self) -> Option<Vec<crate::partition::ReplicaStatus>> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let matched = metrics.replication.as_ref()?;
        let last = metrics.last_log_index.unwrap_or(0);
        let committed = metrics.local_committed.map_or(0, |c| c.index);
        Some(
            metrics
                .membership_config
                .membership()
                .voter_ids()
                .map(|node_id| {
                    let index = if node_id == metrics.id {
                        Some(last)
                    } else {
                        matched.get(&node_id).copied().flatten().map(|l| l.index)
                    };
                    crate::partition::ReplicaStatus {
                        node_id,
                        in_sync: index.is_some_and(|i| i >= committed),
                        lag: last.saturating_sub(index.unwrap_or(0)),
                    }
                })
                .collect(),
        )
    }

    /// Why the group stopped, if it did. A stopped group must be restarted; it is never
    /// silently dead.
    pub(crate) fn failure(&self) -> Option<String> {
        self.raft
            .metrics()
            .borrow_watched()
            .running_state
            .as_ref()
            .err()
            .map(ToString::to_string)
    }

    /// Waits until the group stops: `Some(why)` after a failure, `None` after a normal
    /// shutdown.
    pub(crate) async fn stopped(&self) -> Option<String> {
        let metrics = self
            .raft
            .wait(None)
            .metrics(|m| m.running_state.is_err(), "the group stopped")
            .await
            .ok()?;
        match metrics.running_state {
            Err(Fatal::Stopped) | Ok(()) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// Stops the group's raft tasks; its data stays on disk.
    pub(crate) async fn shutdown(&self) {
        self.peers.unregister(self.id);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(group = self.id, error = %e, "raft group did not shut down cleanly");
        }
    }
}

pub(crate) fn stopped(group: GroupId, e: Fatal<TypeConfig>) -> ReplicaError {
    ReplicaError::Stopped {
        group,
        reason: e.to_string(),
    }
}

fn write_error(
    group: GroupId,
    e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
) -> ReplicaError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ReplicaError::NotLeader {
            group,
            leader: f.leader_id,
        },
        RaftError::APIError(other) => ReplicaError::Indeterminate {
            group,
            reason: other.to_string(),
        },
        // The group failed on a storage error while this write may have been in flight: it may
        // have reached the disk, or other replicas, or neither.
        RaftError::Fatal(fatal @ Fatal::StorageError(_)) => ReplicaError::Indeterminate {
            group,
            reason: format!("the raft group stopped on a storage error: {fatal}"),
        },
        RaftError::Fatal(fatal) => stopped(group, fatal),
    }
}

/// Whether `node_id` is the only voter of the group `raft` runs.
fn is_lone_voter<SM: RaftStateMachine<TypeConfig>>(
    raft: &Raft<TypeConfig, SM>,
    node_id: NodeId,
) -> bool {
    let metrics = raft.metrics();
    let metrics = metrics.borrow_watched();
    let mut voters = metrics.membership_config.membership().voter_ids();
    voters.next() == Some(node_id) && voters.next().is_none()
}

/// Whether the node these metrics are of leads the group and is its only member (voter or
/// learner).
fn leads_alone(metrics: &openraft::RaftMetrics<TypeConfig>) -> bool {
    let mut members = metrics
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id);
    metrics.state == ServerState::Leader
        && members.next() == Some(metrics.id)
        && members.next().is_none()
}

/// Where the node these metrics are of stands in the group.
fn standing(metrics: &openraft::RaftMetrics<TypeConfig>) -> Standing {
    match metrics.state {
        ServerState::Leader => Standing::Leads {
            term: metrics.current_term,
        },
        ServerState::Candidate => Standing::Campaigns,
        _ => Standing::Follows {
            term: metrics.current_term,
        },
    }
}

/// The group as the node-level heartbeats need it: where this node stands, and who the other
/// members are.
fn view(metrics: &openraft::RaftMetrics<TypeConfig>) -> GroupView {
    GroupView {
        standing: standing(metrics),
        members: metrics
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != metrics.id)
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect(),
    }
}

/// Whether `membership` has two configurations (old and new voters) rather than one.
fn is_joint(membership: &openraft::Membership<NodeId, BasicNode>) -> bool {
    membership.get_joint_config().len() > 1
}

/// Whether the node these metrics are of leads the group and has applied an entry of its own
/// term (so everything committed before it).
fn leads_with_latest_state(metrics: &openraft::RaftMetrics<TypeConfig>) -> bool {
    metrics.state == ServerState::Leader
        && metrics
            .last_applied
            .as_ref()
            .is_some_and(|applied| applied.committed_leader_id().term == metrics.current_term)
}

/// A write handed to raft ([`Group::propose`]): a future of its answer, which can also be
/// looked at without waiting ([`Proposal::answered`]).
pub(crate) struct Proposal {
    group: GroupId,
    answer: tokio::sync::oneshot::Receiver<ClientWriteResult<TypeConfig>>,
}

impl Proposal {
    /// The answer, if raft has given it already. Raft answers a write it refuses while
    /// handling it, before it handles the next message, so a refusal is seen here as soon as
    /// any later write could have been accepted.
    pub(crate) fn answered(&mut self) -> Option<Result<Response, ReplicaError>> {
        match self.answer.try_recv() {
            Ok(result) => Some(self.outcome(result)),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => None,
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => Some(Err(self.dropped())),
        }
    }

    fn outcome(&self, result: ClientWriteResult<TypeConfig>) -> Result<Response, ReplicaError> {
        result
            .map(|response| response.data)
            .map_err(|e| write_error(self.group, RaftError::APIError(e)))
    }

    fn dropped(&self) -> ReplicaError {
        ReplicaError::Indeterminate {
            group: self.group,
            reason: "the raft group dropped the write (it stopped)".to_owned(),
        }
    }
}

impl Future for Proposal {
    type Output = Result<Response, ReplicaError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.answer)
            .poll(cx)
            .map(|answer| match answer {
                Ok(result) => self.outcome(result),
                Err(_) => Err(self.dropped()),
            })
    }
}
