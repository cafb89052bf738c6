//! How a new group gets its first voters and its first leader.
//!
//! Every initial replica of a group may write its first membership (openraft accepts the same
//! membership written by each), so a group forms even when some of its nodes are down at
//! creation. But only one of them should stand for election at first: openraft orders two
//! candidates of the same term by node id, so a replica that stood in the first term refuses the
//! entries of another that already won it with a lower id, and that leader steps down again (one
//! more election, and requests answered NOT_LEADER without a hint meanwhile). Which replica
//! timed out first also decided who led, whatever placement preferred.
//!
//! So the preferred leader initialises the group and stands at once (with a pre-vote, which a
//! running leader refuses), and again every heartbeat interval until the group has a leader or
//! its own election timer takes over. The other replicas give it one election timeout to be
//! heard from and initialise the group themselves only if it was not: then it is down, and they
//! elect among themselves as before.
//!
//! A restarted preferred leader stands too, once every other member is heard from, has started
//! its partition replicas, and does not claim the group ([`crate::liveness`]). After the whole
//! cluster restarted, no group has a leader, and openraft's timers elect one an election
//! timeout after each replica started, often in vain while its peers are still starting
//! theirs: 1,000 partitions on three nodes took 7–9 s to be led (docs/benchmarks.md). A group
//! led elsewhere is left alone: its leader's node claims it. The other restarted replicas hold
//! their election timers for as long as the preferred leader may stand (the longest election
//! timeout), unless a leader is heard of first: a timer that fires while thousands of groups
//! elect at once, before the new leader's first message arrived, makes a second candidate whose
//! higher term deposes that leader. If the preferred leader is down, its group is elected up
//! to that long later than it would have been.

use std::collections::BTreeMap;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{InitializeError, RaftError};
use openraft::metrics::WaitError;
use openraft::storage::RaftStateMachine;
use openraft::{BasicNode, RaftMetrics, ServerState};
use tokio::time::Instant;

use crate::error::ReplicaError;
use crate::group::Group;
use crate::types::{NodeId, SnapshotBytes, TypeConfig};

impl<SM> Group<SM>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotBytes>,
{
    /// Forms the group with `members` as its first voters and `preferred` as its first leader.
    /// On a replica that already belongs to the group (a restart, or one the leader reached
    /// first) the preferred leader stands if no one leads the group, and the others hold their
    /// election timers meanwhile. The waiting (see the module documentation) happens in the
    /// background.
    pub(crate) async fn form(
        &self,
        members: &BTreeMap<NodeId, String>,
        preferred: NodeId,
    ) -> Result<(), ReplicaError> {
        let me = self.raft.metrics().borrow_watched().id;
        if me == preferred || !members.contains_key(&preferred) {
            if self.initialize(members).await? {
                tokio::spawn(self.clone().stand_until_led(Occasion::Formed));
            } else if me == preferred {
                tokio::spawn(self.clone().stand_until_led(Occasion::Restarted));
            }
        } else if self.joined().await? {
            // Restarted (or reached by the leader already), and not the preferred leader:
            // leave it the first election, for as long as it may stand.
            self.hold_timer(Instant::now() + self.timings.election_max);
        } else {
            tokio::spawn(self.clone().initialize_unless_heard(members.clone()));
        }
        Ok(())
    }

    /// Whether this replica has a log or has heard from a candidate or leader of its group, as
    /// its raft core knows (the metrics may not show a restarted replica's stored state yet).
    async fn joined(&self) -> Result<bool, ReplicaError> {
        self.raft
            .is_initialized()
            .await
            .map_err(|e| ReplicaError::Unavailable {
                group: self.id,
                reason: e.to_string(),
            })
    }

    /// Makes `members` the group's first voters; whether it did (`false` on a group that
    /// already has a membership or has heard from a candidate or leader).
    async fn initialize(&self, members: &BTreeMap<NodeId, String>) -> Result<bool, ReplicaError> {
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
            .collect();
        match self.raft.initialize(nodes).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(ReplicaError::Unavailable {
                group: self.id,
                reason: e.to_string(),
            }),
        }
    }

    /// Stands for election now, and again every heartbeat interval while the group has no
    /// leader and this replica is not a candidate already (an election still under way is
    /// left to finish: standing again would only move it to the next term), for at most the
    /// occasion's window; from then on its own timer stands for it. An attempt fails while the
    /// other replicas have not started the group yet. After a restart, only while no other
    /// member is known to lead the group ([`Group::unclaimed`]).
    async fn stand_until_led(self, occasion: Occasion) {
        let (within, only_unclaimed) = match occasion {
            Occasion::Formed => (self.timings.election_min, false),
            Occasion::Restarted => (self.timings.election_max, true),
        };
        let until = Instant::now() + within;
        loop {
            let idle = {
                let metrics = self.raft.metrics();
                let metrics = metrics.borrow_watched();
                metrics.current_leader.is_none() && metrics.state == ServerState::Follower
            } && (!only_unclaimed || self.unclaimed());
            if idle && self.raft.trigger().elect(true).await.is_err() {
                return;
            }
            let led = self
                .raft
                .wait(Some(self.timings.heartbeat))
                .metrics(|m| m.current_leader.is_some(), "a leader")
                .await;
            if !matches!(led, Err(WaitError::Timeout(..))) || Instant::now() >= until {
                return;
            }
        }
    }

    /// Initialises the group with `members` unless its preferred leader (or any candidate)
    /// is heard from within the longest election timeout.
    async fn initialize_unless_heard(self, members: BTreeMap<NodeId, String>) {
        let heard = self
            .raft
            .wait(Some(self.timings.election_max))
            .metrics(has_joined, "the preferred leader to be heard from")
            .await;
        if !matches!(heard, Err(WaitError::Timeout(..))) {
            return;
        }
        tracing::info!(
            group = self.id,
            "the group's preferred leader was not heard from within an election timeout; \
             initialising the group here"
        );
        if let Err(e) = self.initialize(&members).await {
            tracing::warn!(group = self.id, error = %e, "could not initialise the group");
        }
    }
}

/// Why a group's preferred leader stands for election outside its election timer.
#[derive(Debug, Clone, Copy)]
enum Occasion {
    /// It has just formed the group: no one can lead it yet.
    Formed,
    /// It restarted, and the group may have a leader elsewhere, or none at all (the whole
    /// cluster restarted, or the leader did): it stands only while no member claims the group,
    /// for up to the longest election timeout, as the members come up.
    Restarted,
}

/// Whether the replica these metrics are of has a log or has heard from a candidate or leader
/// of its group (and so may no longer initialise it).
fn has_joined(metrics: &RaftMetrics<TypeConfig>) -> bool {
    metrics.last_log_index.is_some() || metrics.current_term > 0
}
