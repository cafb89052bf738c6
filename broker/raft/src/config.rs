//! Raft timings and per-kind group configuration.

use std::sync::Arc;
use std::time::Duration;

use openraft::{Config, SnapshotPolicy};

use crate::error::StartError;

/// Heartbeat and election timings shared by all groups of a node.
///
/// The defaults are slower than openraft's, within DESIGN §4's ranges (heartbeat 250–500 ms,
/// election 1.5–3 s). Partition groups share one heartbeat per pair of nodes while quiet
/// (`broker/raft/src/liveness.rs`), so shorter timings cost no more per idle partition. The
/// longest election timeout is also the leader lease, which a dead leader's followers wait out
/// before they elect another: 2 s rather than 3 keeps writes stopped for under 3 s after a
/// leader dies (issue #15's P7; docs/benchmarks.md), as Redpanda's 1.5 s election timeout does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupTimings {
    /// The controller leader's heartbeat interval, and the interval of the node-level
    /// heartbeats that stand in for the partition groups' own.
    pub heartbeat: Duration,
    /// Lower bound of the randomised election timeout; a peer unheard for this long is taken
    /// for dead by the node-level heartbeats.
    pub election_min: Duration,
    /// Upper bound of the randomised election timeout, and openraft's leader lease.
    pub election_max: Duration,
    /// How long a learner catching up (a replica being added) may make no progress before
    /// adding it fails.
    pub learner_stall: Duration,
}

impl Default for GroupTimings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(250),
            election_min: Duration::from_millis(1500),
            election_max: Duration::from_millis(2000),
            learner_stall: Duration::from_secs(30),
        }
    }
}

/// Which kind of group a configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupKind {
    /// A partition: the log is the data, so it is never snapshotted or purged by raft
    /// (retention will purge it far behind the apply point).
    Partition,
    /// The controller: small state, snapshotted so its log stays short.
    Controller,
}

/// How long a leader whose lease lapsed and could not be renewed holds back from trying again:
/// long enough for the followers it still reaches to let their leases lapse too and vote for
/// another node (openraft issue #2080). The least openraft accepts for its own suppression:
/// the lease (the longest election timeout) plus one election timeout.
pub(crate) fn lease_retry_pause(timings: GroupTimings) -> Duration {
    2 * timings.election_max
}

pub(crate) fn raft_config(
    timings: GroupTimings,
    kind: GroupKind,
) -> Result<Arc<Config>, StartError> {
    let millis = |d: Duration| d.as_millis() as u64;
    let config = Config {
        cluster_name: "weir".to_owned(),
        heartbeat_interval: millis(timings.heartbeat),
        election_timeout_min: millis(timings.election_min),
        election_timeout_max: millis(timings.election_max),
        enable_pre_vote: Some(true),
        // A leader that reaches a minority of followers but not a quorum keeps those
        // followers' leases fresh, so they refuse the votes the connected quorum needs to
        // elect another (openraft issue #2080; on four controller voters, leader + one
        // follower against two, nobody can make progress). After its lease expires such a
        // leader goes quiet for this long, its followers' leases lapse, and the others elect.
        // The least openraft accepts: the lease plus one election timeout. Partition groups
        // send no raft heartbeats of their own (`crate::liveness`): their leaders renew a
        // lapsed lease on demand and hold back from renewing for as long after a failed
        // renewal (`crate::group`), which openraft's suppression would block instead.
        quorum_loss_probe_interval: match kind {
            GroupKind::Partition => None,
            GroupKind::Controller => Some(lease_retry_pause(timings).as_millis() as u64),
        },
        // A leader sends entries to its followers before its own write of them is durable. If
        // it crashes in between and restarts as leader of the same term (openraft's default),
        // its next entries take log ids its followers already hold different entries under,
        // and log matching keeps both: replicas diverge at acknowledged offsets. Standing for
        // election again gives its new entries a new term.
        enable_leader_restore: Some(false),
        snapshot_policy: match kind {
            GroupKind::Partition => SnapshotPolicy::Never,
            GroupKind::Controller => SnapshotPolicy::LogsSinceLast(1000),
        },
        max_in_snapshot_log_to_keep: 100,
        ..Default::default()
    };
    config
        .validate()
        .map(Arc::new)
        .map_err(|e| StartError::Config(e.to_string()))
}
