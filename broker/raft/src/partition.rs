//! A partition's raft group, as the broker sees it: the replica handle.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::watch;
use weir_storage::{GroupId, LogDb};
use weir_types::{EncodedBatch, Offset};

use crate::compactor::{Compactions, compact_when_asked};
use crate::config::{GroupKind, GroupTimings};
use crate::error::{ReplicaError, StartError};
use crate::group::Group;
use crate::log_store::GroupLogStore;
use crate::network::Peers;
use crate::partition_state::{
    PartitionProgress, PartitionStateMachine, SharedProducers, lock_producers,
};
use crate::producers::{ProducerBatch, ProducerEntry, ProducerLimits, Verdict};
use crate::recent::{KeptEntries, RecentEntries};
use crate::sequencer::Sequencer;
use crate::types::{
    AppendBatch, AppendOutcome, Appended, CompactionTarget, NodeId, Request, Response,
};

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

/// What all of a node's partition replicas share.
#[derive(Debug, Clone, Default)]
pub struct SharedByReplicas {
    /// Their compaction passes: one at a time, and what they did.
    pub compactions: Compactions,
    /// The durable, unapplied entries they keep in memory for their state machines, and the
    /// bound on them all.
    pub kept_entries: KeptEntries,
}

/// A running replica of one partition on this node.
#[derive(Clone)]
pub struct PartitionReplica {
    group: Group<PartitionStateMachine>,
    progress: watch::Receiver<PartitionProgress>,
    producers: SharedProducers,
    sequencer: std::sync::Arc<Sequencer>,
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
        producer_limits: ProducerLimits,
        shared: SharedByReplicas,
    ) -> Result<Self, StartError> {
        // The state machine applies only what the log holds durably, and reads what it applies
        // from memory (see `crate::recent`).
        let recent = RecentEntries::kept_until_applied(shared.kept_entries);
        let storage = |source| StartError::Storage { group, source };
        let state_machine =
            PartitionStateMachine::open(db.clone(), group, producer_limits, recent.clone())
                .await
                .map_err(storage)?;
        let progress = state_machine.progress.subscribe();
        let producers = state_machine.producers.clone();
        tokio::spawn(compact_when_asked(
            db.clone(),
            group,
            progress.clone(),
            shared.compactions,
        ));
        let log_store = GroupLogStore::open(db, group, recent)
            .await
            .map_err(storage)?;
        let group = Group::start(
            node_id,
            group,
            GroupKind::Partition,
            log_store,
            &peers,
            timings,
            state_machine,
        )
        .await?;
        tokio::spawn(snapshot_at_log_start(group.clone(), progress.clone()));
        Ok(Self {
            group,
            progress,
            producers,
            sequencer: std::sync::Arc::default(),
        })
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

    /// The raft group id.
    pub fn group(&self) -> GroupId {
        self.group.id
    }

    /// Appends `batch` through raft and returns its offsets once it is committed (every voter
    /// of the quorum has fsynced it) and applied.
    ///
    /// An idempotent producer's batch (`producer`) is judged against the partition's producer
    /// state first, on the leader: a retry of a stored batch gets the original offsets and
    /// stores nothing, a retry of a batch still in raft waits for that batch's answer, and a
    /// batch out of sequence or of a fenced epoch is refused ([`ReplicaError::Sequence`]).
    ///
    /// `batch` is `None` only for an idempotent producer's batch whose records the produce
    /// chain all dropped: its sequence range is recorded, and no offset taken.
    pub async fn append(
        &self,
        batch: Option<EncodedBatch>,
        producer: Option<ProducerBatch>,
    ) -> Result<Appended, ReplicaError> {
        let append = AppendBatch { batch, producer };
        let Some(producer) = producer else {
            if append.batch.is_none() {
                return Err(ReplicaError::Indeterminate {
                    group: self.group.id,
                    reason: "an append without records needs an idempotent producer".to_owned(),
                });
            }
            return match self.group.write(Request::Append(append)).await? {
                Response::Appended {
                    base_offset,
                    record_count,
                } => Ok(Appended {
                    outcome: AppendOutcome {
                        base_offset,
                        record_count,
                    },
                    duplicate: false,
                }),
                other => Err(ReplicaError::Indeterminate {
                    group: self.group.id,
                    reason: format!("unexpected state machine response {other:?}"),
                }),
            };
        };
        self.sequencer
            .append(&self.group, &self.producers, append, producer)
            .await
    }

    /// Moves the partition's log start up to `log_start` (clamped to the high watermark; a
    /// no-op when the log already starts there or later), through raft so every replica trims
    /// at the same offset. Returns the log start after it. Must run on the leader.
    pub async fn trim(&self, log_start: Offset) -> Result<Offset, ReplicaError> {
        match self.group.write(Request::Trim { log_start }).await? {
            Response::Trimmed { log_start } => Ok(log_start),
            other => Err(ReplicaError::Indeterminate {
                group: self.group.id,
                reason: format!("unexpected state machine response {other:?}"),
            }),
        }
    }

    /// Asks every replica to compact the partition's log to `target` (merged with what was
    /// asked before; `below` clamped to the high watermark), through raft. Returns the target
    /// every replica now works towards; each compacts in the background. Must run on the
    /// leader.
    pub async fn compact(
        &self,
        target: CompactionTarget,
    ) -> Result<CompactionTarget, ReplicaError> {
        match self.group.write(Request::Compact(target)).await? {
            Response::Compacting(target) => Ok(target),
            other => Err(ReplicaError::Indeterminate {
                group: self.group.id,
                reason: format!("unexpected state machine response {other:?}"),
            }),
        }
    }

    /// Hands `batch` to raft without waiting for the outcome (acks=none); returns a future that
    /// completes once the batch is applied or dropped, for the caller to bound how much it has
    /// in flight. Not for idempotent producers' batches, whose sequence must be judged.
    pub async fn append_unacknowledged(
        &self,
        batch: EncodedBatch,
    ) -> Result<impl Future<Output = ()> + Send + 'static, ReplicaError> {
        if !self.is_leader() {
            return Err(ReplicaError::NotLeader {
                group: self.group.id,
                leader: self.leader(),
            });
        }
        let append = AppendBatch {
            batch: Some(batch),
            producer: None,
        };
        let applied = self.group.propose(Request::Append(append)).await?;
        Ok(async move {
            // Whatever the outcome, the batch no longer waits in raft.
            let _ = applied.await;
        })
    }

    /// The stored batch `producer` repeats, if the applied state remembers it: a retry, known
    /// before any work is done for it. (The leader's [`append`](Self::append) judges it again,
    /// against batches still in raft too.)
    pub fn stored_duplicate(&self, producer: &ProducerBatch) -> Option<AppendOutcome> {
        let producers = lock_producers(&self.producers);
        match ProducerEntry::check(producers.entry(producer.producer_id), producer) {
            Ok(Verdict::Duplicate(outcome)) => Some(outcome),
            _ => None,
        }
    }

    /// Idempotent producers' batches that reached this replica (as leader) ahead of their
    /// sequence and were held for the ones before them (a sign of reordering between client
    /// and broker).
    pub fn held_batches(&self) -> u64 {
        self.sequencer.held()
    }

    /// Idempotent producers this replica remembers.
    pub fn producer_count(&self) -> usize {
        lock_producers(&self.producers).len()
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

    /// Takes `node` out of the group if it is only a learner (a move that failed before
    /// promoting it); `true` when it is no member now, `false` when it is a voter. Must run on
    /// the leader.
    pub async fn drop_learner(&self, node: NodeId) -> Result<bool, ReplicaError> {
        self.group.drop_learner(node).await
    }

    /// The group's members, voters and learners, as this node's membership configs have them:
    /// the current one (during a change, the old and the new voters) and, until it is
    /// committed, the last committed one too. Unconfirmed: a deposed leader that has not
    /// noticed yet may have a stale view (see [`PartitionReplica::confirmed_members`]).
    pub fn members(&self) -> Vec<NodeId> {
        self.group.members()
    }

    /// [`PartitionReplica::members`], once a round with a quorum has confirmed that this node
    /// still leads the group (`NOT_LEADER` otherwise): a view another leader cannot have made
    /// stale.
    pub async fn confirmed_members(&self) -> Result<Vec<NodeId>, ReplicaError> {
        self.group.confirmed_members().await
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

    /// Whether this node leads the partition and its leader lease lapsed while nothing was
    /// written: its next write first confirms its leadership with one heartbeat round.
    pub fn lease_lapsed(&self) -> bool {
        self.group.lease_lapsed()
    }

    /// Whether this node's high watermark is the partition's: it leads the partition and has
    /// applied an entry of its own term. Any other replica's may be behind, so only such a
    /// leader can tell that an offset lies past the end of the log.
    pub fn knows_high_watermark(&self) -> bool {
        self.group.leads_with_latest_state()
    }

    /// Waits, for at most `timeout`, until this node knows the partition's high watermark (see
    /// [`knows_high_watermark`](Self::knows_high_watermark)). Fails with `NotLeader` when it does
    /// not lead the partition (or stops leading it), `Unavailable` when time runs out.
    pub async fn wait_knows_high_watermark(&self, timeout: Duration) -> Result<(), ReplicaError> {
        match self.group.leader_term() {
            Some(term) => self.group.wait_applied_as_leader(term, 0, timeout).await,
            None => Err(ReplicaError::NotLeader {
                group: self.group.id,
                leader: self.leader(),
            }),
        }
    }

    /// On a node that is the partition's only replica, waits (for at most `timeout`) until it
    /// leads the partition again with everything it stored applied; at once otherwise.
    pub async fn settle_lone_voter(&self, timeout: Duration) -> Result<(), ReplicaError> {
        self.group.settle_lone_voter(timeout).await
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

    /// Where a write this node cannot take as leader should go: the partition's leader,
    /// waiting for at most `timeout` while it has none, or while the one it has is a node whose
    /// heartbeats stopped and its successor is being elected.
    pub async fn leader_for_writes(&self, timeout: Duration) -> Result<NodeId, ReplicaError> {
        self.group.leader_for_writes(timeout).await
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

/// Runs for the replica's life: whenever the log start moves, asks raft for a snapshot, which
/// the state machine cuts at the new log start; raft then purges the entries below it from the
/// log (all but the last `max_in_snapshot_log_to_keep`, well behind the applied index, as
/// openraft issue #2116 needs), and a replica that falls behind installs the snapshot and
/// receives only the entries after it.
async fn snapshot_at_log_start(
    group: Group<PartitionStateMachine>,
    mut progress: watch::Receiver<PartitionProgress>,
) {
    // From zero: a replica that stopped before it snapshotted at its log start does so now.
    let mut asked_at = Offset(0);
    while progress.changed().await.is_ok() {
        let log_start = progress.borrow_and_update().log_start;
        if log_start > asked_at {
            asked_at = log_start;
            if group.raft.trigger().snapshot().await.is_err() {
                return; // raft stopped
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use openraft::StorageError;
    use openraft::entry::RaftEntry;
    use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
    use openraft::testing::common::log_id;
    use openraft::testing::log::{StoreBuilder, Suite};
    use weir_storage::{LogDbOptions, WriteBatch};
    use weir_types::{BatchLimits, Offset, Record};

    use super::*;
    use crate::types::{Entry, TypeConfig};

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
            let recent = RecentEntries::kept_until_applied(KeptEntries::default());
            let log = GroupLogStore::open(db.clone(), 9, recent.clone())
                .await
                .expect("open log store");
            let sm = PartitionStateMachine::open(db, 9, ProducerLimits::default(), recent)
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

    /// openraft applies an entry once it is submitted to the log store, which may be before
    /// its write is durable (a follower told the commit index by its leader). The high
    /// watermark must not cover a batch redb does not hold yet: a reader would find committed
    /// data missing and report it as damage.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_high_watermark_never_covers_a_batch_that_is_not_durable_yet() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db =
            LogDb::open(dir.path().join("log.redb"), LogDbOptions::default()).expect("open log db");
        let recent = RecentEntries::kept_until_applied(KeptEntries::default());
        let mut log = GroupLogStore::open(db.clone(), 9, recent.clone())
            .await
            .expect("open log store");
        let mut sm =
            PartitionStateMachine::open(db.clone(), 9, ProducerLimits::default(), recent.clone())
                .await
                .expect("open state machine");
        let progress = sm.progress.subscribe();

        // Hold the committer thread: a write whose completion blocks it until released.
        let (entered_tx, entered) = tokio::sync::oneshot::channel();
        let (release, held) = std::sync::mpsc::channel::<()>();
        db.submit(WriteBatch { ops: Vec::new() }, move |_| {
            let _ = entered_tx.send(());
            let _ = held.recv();
        });
        entered.await.expect("the committer runs the holding write");

        let record = Record {
            value: Bytes::from_static(b"v"),
            ..Record::default()
        };
        let batch = EncodedBatch::encode(&[record], BatchLimits::default()).expect("encode");
        let entry = Entry::new_normal(
            log_id::<TypeConfig>(1, 1, 1),
            Request::Append(AppendBatch {
                batch: Some(batch),
                producer: None,
            }),
        );
        log.append(vec![entry.clone()], IOFlushed::noop())
            .await
            .expect("append");
        let applying = tokio::spawn(async move {
            sm.apply(futures::stream::iter(vec![Ok((entry, None))]))
                .await
                .map(|()| sm)
        });
        // The state machine either finishes applying (publishing offset 0 over a batch the
        // held committer has not written) or waits for the write.
        while recent.waiters() == 0 && !applying.is_finished() {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            progress.borrow().high_watermark,
            Offset(0),
            "the high watermark covers a batch that is not durable"
        );

        release.send(()).expect("release the committer");
        let sm = applying.await.expect("apply task").expect("apply");
        let published = *progress.borrow();
        assert_eq!(published.high_watermark, Offset(1));
        let read = db
            .read_batches(
                9,
                Offset(0),
                Offset(u64::MAX),
                published.applied_index,
                usize::MAX,
            )
            .expect("read");
        assert_eq!(read.batches.len(), 1, "the batch the high watermark covers");
        assert_eq!(read.batches[0].header().base_offset, Offset(0));
        // Held in memory until applied, for the state machine to read (see `crate::recent`).
        assert!(
            recent.durable_indexes().is_empty(),
            "an applied entry is let go"
        );
        drop(sm);
    }
}
