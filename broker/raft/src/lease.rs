//! A quiet partition leader's lease, renewed before it writes.
//!
//! openraft accepts a write only from a leader whose lease holds: a quorum acknowledged it
//! within the longest election timeout. Replication acknowledgements renew the lease while
//! entries flow, but a partition group sends no heartbeats while nothing happens
//! ([`crate::liveness`]), so its lease lapses after that long quiet. Before a write, such a
//! leader asks openraft for one heartbeat round and waits for a quorum to answer it.
//!
//! A leader that reaches no quorum must not keep renewing: each heartbeat it sends renews the
//! lease of the followers it does reach, and they refuse their votes to the nodes that could
//! elect a new leader (openraft issue #2080). After a failed renewal the leader holds back for
//! [`lease_retry_pause`](crate::config::lease_retry_pause); its writes meanwhile are refused as
//! from a node that is not the leader, and the clients look for the new one.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::storage::RaftStateMachine;
use openraft::{Instant as _, Raft, RaftMetrics, ServerState, TokioInstant};
use tokio::time::Instant;

use crate::config::{GroupTimings, lease_retry_pause};
use crate::types::TypeConfig;

/// A leader's standing under openraft's leader lease ([`ControllerReplica::leader_lease`]).
///
/// [`ControllerReplica::leader_lease`]: crate::ControllerReplica::leader_lease
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderLease {
    /// A quorum acknowledged this node as leader within the lease (or it leads alone): no
    /// other node can have been elected since.
    Held {
        /// The term it leads in.
        term: u64,
    },
    /// Elected a moment ago: no quorum has acknowledged it yet.
    Unconfirmed {
        /// The term it leads in.
        term: u64,
    },
    /// It leads, but no quorum acknowledged it within the lease: it may be cut off from the
    /// other voters, and they may have elected another leader.
    Over {
        /// The term it believes it leads in.
        term: u64,
    },
}

/// What keeping the lease before a write came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kept {
    /// Nothing to do: the lease holds, or this node does not lead, or leads alone.
    Held,
    /// A heartbeat round renewed it.
    Renewed,
    /// No quorum answered the heartbeat round (or a failure a moment ago holds this node
    /// back) until the instant given: the write will be refused.
    Lost { until: Instant },
}

/// Keeps a partition leader's lease before it writes.
#[derive(Debug)]
pub(crate) struct Lease {
    /// openraft's leader lease: the longest election timeout.
    length: Duration,
    /// How long a renewal may wait for a quorum.
    patience: Duration,
    /// How long to hold back after a failed renewal.
    pause: Duration,
    /// When a renewal last failed; held while a renewal runs, so writers arriving together
    /// share one.
    failed_at: tokio::sync::Mutex<Option<Instant>>,
}

impl Lease {
    pub(crate) fn new(timings: GroupTimings) -> Self {
        Self {
            length: timings.election_max,
            patience: timings.election_min,
            pause: lease_retry_pause(timings),
            failed_at: tokio::sync::Mutex::new(None),
        }
    }

    /// Returns once the lease holds, as far as this node can make it: at once while it holds
    /// (or this node does not lead, or leads alone: then openraft answers the write itself),
    /// after a heartbeat round otherwise. A renewal that fails leaves the write to be refused.
    pub(crate) async fn keep<SM: RaftStateMachine<TypeConfig>>(
        &self,
        raft: &Raft<TypeConfig, SM>,
    ) -> Kept {
        if self.holds(raft) {
            return Kept::Held;
        }
        let mut failed_at = self.failed_at.lock().await;
        if self.holds(raft) {
            return Kept::Held; // renewed by the writer that held the lock
        }
        if let Some(at) = *failed_at
            && at.elapsed() < self.pause
        {
            return Kept::Lost {
                until: at + self.pause,
            };
        }
        let asked = TokioInstant::now();
        if raft.trigger().heartbeat().await.is_err() {
            return Kept::Held; // stopped: the write fails with that
        }
        let renewed = raft
            .wait(Some(self.patience))
            .metrics(
                |m| {
                    m.state != ServerState::Leader
                        || m.last_quorum_acked.as_ref().is_some_and(|at| **at >= asked)
                },
                "a quorum to acknowledge the leader",
            )
            .await;
        match renewed {
            Ok(m) if m.state == ServerState::Leader => {
                *failed_at = None;
                Kept::Renewed
            }
            Ok(_) => Kept::Held, // no longer the leader: nothing to hold back from
            Err(_) => {
                // Debug only: a node cut off from its peers meets this once per pause for
                // every partition it leads and is written to; `weir_partition_leases_lapsed`
                // and the peers' own lines about this node tell the operator.
                tracing::debug!(
                    pause = ?self.pause,
                    "a partition leader's lease lapsed and no quorum renewed it; holding back"
                );
                let now = Instant::now();
                *failed_at = Some(now);
                Kept::Lost {
                    until: now + self.pause,
                }
            }
        }
    }

    /// Whether a write needs no renewal first: the lease has more than half its length left,
    /// or this node does not lead, or leads alone.
    fn holds<SM: RaftStateMachine<TypeConfig>>(&self, raft: &Raft<TypeConfig, SM>) -> bool {
        self.left(raft).is_none_or(|left| left > self.length / 2)
    }

    /// Whether this node leads the group, with followers, and its lease lapsed (it has been
    /// quiet for that long): its next write renews the lease first.
    pub(crate) fn lapsed<SM: RaftStateMachine<TypeConfig>>(
        &self,
        raft: &Raft<TypeConfig, SM>,
    ) -> bool {
        self.left(raft).is_some_and(|left| left.is_zero())
    }

    /// What is left of the lease; `None` when there is no lease to keep (this node does not
    /// lead, or leads alone).
    fn left<SM: RaftStateMachine<TypeConfig>>(
        &self,
        raft: &Raft<TypeConfig, SM>,
    ) -> Option<Duration> {
        lease_left(&raft.metrics().borrow_watched(), self.length)
    }
}

/// What is left of the lease of length `length` of the leader these metrics are of: how long
/// until a quorum's last acknowledgement is that old. `None` when there is no lease to keep
/// (the node does not lead, or leads alone).
pub(crate) fn lease_left(metrics: &RaftMetrics<TypeConfig>, length: Duration) -> Option<Duration> {
    if metrics.state != ServerState::Leader {
        return None;
    }
    let mut voters = metrics.membership_config.membership().voter_ids();
    if voters.next().is_some() && voters.next().is_none() {
        return None;
    }
    let acked = metrics.last_quorum_acked.as_ref();
    Some(acked.map_or(Duration::ZERO, |at| length.saturating_sub(at.elapsed())))
}
