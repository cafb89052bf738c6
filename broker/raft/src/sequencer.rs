//! The partition leader's gate for idempotent producers' batches.
//!
//! A batch is judged against the partition's applied producer state with the batches this
//! leader proposed and raft has not applied yet laid over it, and is then either answered at
//! once (a retry of a stored batch gets its offsets; a batch out of sequence or of a fenced
//! epoch is refused), joined to its original still in raft (a retry waits for the original's
//! answer), or proposed. Judging and proposing happen under one lock, so batches enter the
//! log in the order they were judged.
//!
//! Correctness rests on two facts:
//! - when the gate first judges in a term, it notes the leader's last log index, and judges
//!   only once the leader has applied an entry of that term and everything up to that index:
//!   then every batch the log held before (an earlier leader's, or this node's own from before
//!   a crash, when openraft restores it as leader in the same term) is in the applied state,
//!   and every later batch in the log went through this gate;
//! - an in-flight batch stays on the overlay until raft answers for it, and the overlay is
//!   dropped when the term changes (a new term means the applied state is again the truth).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::storage::RaftStateMachine;
use tokio::sync::watch;

use crate::error::ReplicaError;
use crate::group::Group;
use crate::producers::{ProducerBatch, ProducerEntry, ProducerState, Verdict};
use crate::types::{
    AppendBatch, AppendOutcome, Appended, Request, Response, SnapshotBytes, TypeConfig,
};

type Outcome = Option<Result<AppendOutcome, ReplicaError>>;

/// How long a batch waits for a new leader to apply its log before it is refused as
/// `UNAVAILABLE` (retriable).
const LATEST_STATE_WAIT: Duration = Duration::from_secs(5);

/// One in-flight batch and where its answer will appear.
struct InFlightBatch {
    /// Tells this proposal from a later one of the same batch (after a term change).
    id: u64,
    batch: ProducerBatch,
    outcome: watch::Receiver<Outcome>,
}

/// The batches this leader proposed that raft has not answered for yet.
#[derive(Default)]
struct InFlight {
    /// The term they were proposed in.
    term: u64,
    /// The leader's last log index when the gate entered `term`: entries up to it must be
    /// applied before anything is judged.
    barrier: u64,
    next_id: u64,
    by_producer: HashMap<i64, Vec<InFlightBatch>>,
}

impl InFlight {
    fn forget(&mut self, producer_id: i64, id: u64) {
        if let Some(batches) = self.by_producer.get_mut(&producer_id) {
            batches.retain(|b| b.id != id);
            if batches.is_empty() {
                self.by_producer.remove(&producer_id);
            }
        }
    }
}

/// The gate of one partition replica.
#[derive(Default)]
pub(crate) struct Sequencer {
    /// Held from judging a batch until it is handed to raft.
    order: tokio::sync::Mutex<()>,
    in_flight: Arc<Mutex<InFlight>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the data consistent, so a panic elsewhere cannot leave it
    // half-updated.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sequencer {
    /// Appends an idempotent producer's batch through `group`, or answers a retry of one.
    pub(crate) async fn append<SM>(
        &self,
        group: &Group<SM>,
        producers: &Mutex<ProducerState>,
        append: AppendBatch,
        producer: ProducerBatch,
    ) -> Result<Appended, ReplicaError>
    where
        SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotBytes>,
    {
        let (mut outcome, duplicate) = {
            let _ordered = self.order.lock().await;
            let Some((term, last_log_index)) = group.leadership() else {
                return Err(ReplicaError::NotLeader {
                    group: group.id,
                    leader: group.leader(),
                });
            };
            let barrier = {
                let mut in_flight = lock(&self.in_flight);
                if in_flight.term != term {
                    // Batches of an earlier term are committed (and will be in the applied
                    // state) or gone; their answers still arrive, but no longer matter here.
                    in_flight.term = term;
                    in_flight.barrier = last_log_index;
                    in_flight.by_producer.clear();
                }
                in_flight.barrier
            };
            group
                .wait_applied_as_leader(term, barrier, LATEST_STATE_WAIT)
                .await?;
            let verdict = {
                // Only this (ordered) section changes the term, so it is still `term`.
                let in_flight = lock(&self.in_flight);
                let pending = in_flight.by_producer.get(&producer.producer_id);
                let applied = lock(producers);
                let overlay = ProducerEntry::with_in_flight(
                    applied.entry(producer.producer_id),
                    pending.into_iter().flatten().map(|b| &b.batch),
                );
                match ProducerEntry::check(overlay.as_ref(), &producer) {
                    Ok(Verdict::InFlight) => pending
                        .into_iter()
                        .flatten()
                        .find(|b| b.batch == producer)
                        .map(|b| b.outcome.clone()),
                    Ok(Verdict::Duplicate(outcome)) => {
                        return Ok(Appended {
                            outcome,
                            duplicate: true,
                        });
                    }
                    Ok(Verdict::Append) => None,
                    Err(source) => {
                        return Err(ReplicaError::Sequence {
                            group: group.id,
                            source,
                        });
                    }
                }
            };
            match verdict {
                Some(original) => (original, true),
                None => (self.propose(group, append, producer).await?, false),
            }
        };
        let answered =
            outcome
                .wait_for(Option::is_some)
                .await
                .map_err(|_| ReplicaError::Indeterminate {
                    group: group.id,
                    reason: "the write's outcome was lost".to_owned(),
                })?;
        let outcome = answered.clone().unwrap_or_else(|| {
            Err(ReplicaError::Indeterminate {
                group: group.id,
                reason: "the write's outcome was lost".to_owned(),
            })
        })?;
        Ok(Appended { outcome, duplicate })
    }

    /// Proposes the batch and tracks it until raft answers; called in order.
    async fn propose<SM>(
        &self,
        group: &Group<SM>,
        append: AppendBatch,
        producer: ProducerBatch,
    ) -> Result<watch::Receiver<Outcome>, ReplicaError>
    where
        SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotBytes>,
    {
        let applied = group.propose(Request::Append(append)).await?;
        let (answer, outcome) = watch::channel(None);
        let id = {
            let mut in_flight = lock(&self.in_flight);
            let id = in_flight.next_id;
            in_flight.next_id += 1;
            in_flight
                .by_producer
                .entry(producer.producer_id)
                .or_default()
                .push(InFlightBatch {
                    id,
                    batch: producer,
                    outcome: outcome.clone(),
                });
            id
        };
        // The answer is awaited apart from the request, so a client that gives up does not
        // leave a batch on the overlay that nothing will ever take off.
        let in_flight = self.in_flight.clone();
        let group_id = group.id;
        tokio::spawn(async move {
            let result = match applied.await {
                Ok(Response::Appended {
                    base_offset,
                    record_count,
                }) => Ok(AppendOutcome {
                    base_offset,
                    record_count,
                }),
                Ok(other) => Err(ReplicaError::Indeterminate {
                    group: group_id,
                    reason: format!("unexpected state machine response {other:?}"),
                }),
                Err(e) => Err(e),
            };
            // Off the overlay first: once answered, the applied state (or nothing) is the truth.
            lock(&in_flight).forget(producer.producer_id, id);
            let _ = answer.send(Some(result));
        });
        Ok(outcome)
    }
}
