//! Each replica's compactor: runs the compaction its partition's leader asked for
//! ([`Request::Compact`](crate::Request::Compact), applied into the replica's progress) over the
//! replica's own log, in the background, one pass at a time.
//!
//! Every replica runs the same pass over the same committed records and ends with the same
//! records (weir-storage's `compaction` says why), so nothing about the result is replicated but
//! the request. A pass interrupted (a crash, a restart) runs again from the stored state.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Semaphore, watch};
use weir_storage::{CompactionOutcome, GroupId, LogDb};

use crate::partition_state::PartitionProgress;
use crate::types::CompactionTarget;

/// What a node's replicas share for compaction: one pass runs at a time (each holds a map of
/// its dirty part's keys, and reads and rewrites batches), and counters of the work, for
/// metrics.
#[derive(Debug, Clone)]
pub struct Compactions(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    running: Semaphore,
    passes: AtomicU64,
    failures: AtomicU64,
    records_removed: AtomicU64,
    bytes_reclaimed: AtomicU64,
}

impl Default for Compactions {
    fn default() -> Self {
        Compactions(Arc::new(Shared {
            running: Semaphore::new(1),
            passes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            records_removed: AtomicU64::new(0),
            bytes_reclaimed: AtomicU64::new(0),
        }))
    }
}

impl Compactions {
    /// Passes finished.
    pub fn passes(&self) -> u64 {
        self.0.passes.load(Ordering::Relaxed)
    }

    /// Passes that failed (they run again at the next request).
    pub fn failures(&self) -> u64 {
        self.0.failures.load(Ordering::Relaxed)
    }

    /// Records compaction removed.
    pub fn records_removed(&self) -> u64 {
        self.0.records_removed.load(Ordering::Relaxed)
    }

    /// Batch bytes compaction removed.
    pub fn bytes_reclaimed(&self) -> u64 {
        self.0.bytes_reclaimed.load(Ordering::Relaxed)
    }

    fn count(&self, outcome: &CompactionOutcome) {
        self.0.passes.fetch_add(1, Ordering::Relaxed);
        self.0
            .records_removed
            .fetch_add(outcome.records_removed, Ordering::Relaxed);
        self.0.bytes_reclaimed.fetch_add(
            outcome.bytes_before.saturating_sub(outcome.bytes_after),
            Ordering::Relaxed,
        );
    }
}

/// Whether a log compacted as `done` still has to be compacted to `target`.
fn behind(done: Option<CompactionTarget>, target: CompactionTarget) -> bool {
    done.is_none_or(|done| {
        target.below > done.below || target.tombstones_before_ms > done.tombstones_before_ms
    })
}

/// The pass this replica can run now, if any: the target asked for, once the replica has
/// applied every offset below it (a replica that installed a snapshot learns the target before
/// it receives the entries after the snapshot).
fn due(progress: &PartitionProgress, done: Option<CompactionTarget>) -> Option<CompactionTarget> {
    progress
        .compaction
        .filter(|t| behind(done, *t) && t.below <= progress.high_watermark)
}

/// How far this replica's log is compacted, as its storage recorded.
async fn stored_state(db: &LogDb, group: GroupId) -> Option<Option<CompactionTarget>> {
    let db = db.clone();
    let stored = tokio::task::spawn_blocking(move || db.compaction_state(group)).await;
    match stored {
        Ok(Ok(state)) => Some(state.map(|s| CompactionTarget {
            below: s.below,
            tombstones_before_ms: s.tombstones_before_ms,
        })),
        Ok(Err(e)) => {
            tracing::warn!(group, error = %e, "reading how far the log is compacted failed; compacting from the start");
            Some(None)
        }
        Err(_) => None, // the runtime is shutting down
    }
}

/// Runs for the replica's life (until its progress channel closes): whenever the asked
/// compaction is ahead of what the log has had, runs a pass to it.
pub(crate) async fn compact_when_asked(
    db: LogDb,
    group: GroupId,
    mut progress: watch::Receiver<PartitionProgress>,
    compactions: Compactions,
) {
    // Most partitions are never compacted: their replicas read nothing, at start-up or later,
    // until a compaction is asked for.
    if progress.wait_for(|p| p.compaction.is_some()).await.is_err() {
        return; // the replica stopped
    }
    let mut resets = progress.borrow().log_resets;
    let Some(mut done) = stored_state(&db, group).await else {
        return;
    };
    loop {
        let current = *progress.borrow_and_update();
        if current.log_resets != resets {
            // A snapshot replaced the log, and storage forgot how far it was compacted.
            resets = current.log_resets;
            let Some(stored) = stored_state(&db, group).await else {
                return;
            };
            done = stored;
        }
        if let Some(target) = due(&current, done) {
            let Ok(_turn) = compactions.0.running.acquire().await else {
                return;
            };
            let db = db.clone();
            let pass = tokio::task::spawn_blocking(move || {
                db.compact(group, target.below, target.tombstones_before_ms)
            })
            .await;
            match pass {
                Ok(Ok(outcome)) => {
                    compactions.count(&outcome);
                    tracing::debug!(
                        group,
                        below = %target.below,
                        dirty_keys = outcome.dirty_keys,
                        batches_rewritten = outcome.batches_rewritten,
                        records_removed = outcome.records_removed,
                        bytes_before = outcome.bytes_before,
                        bytes_after = outcome.bytes_after,
                        "compacted the log"
                    );
                    done = Some(target);
                }
                Ok(Err(e)) => {
                    compactions.0.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(group, below = %target.below, error = %e, "compacting the log failed; trying again at the next request");
                    // Taken as done so it is not retried in a loop: the leader's next request
                    // (or a restart) runs a pass again.
                    done = Some(target);
                }
                Err(_) => return,
            }
        }
        if progress
            .wait_for(|p| p.log_resets != resets || due(p, done).is_some())
            .await
            .is_err()
        {
            return; // the replica stopped
        }
    }
}
