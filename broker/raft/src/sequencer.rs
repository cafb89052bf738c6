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
//!   dropped when the term changes (a new term means the applied state is again the truth);
//! - raft may refuse a write and accept a later one in the same term (openraft refuses writes
//!   while the leader's lease has lapsed, after a stall, say, and accepts them again once a
//!   quorum answers). So a batch is judged against its producer's in-flight batches only once
//!   raft has handled them ([`Group::handled_writes`]: each is in the log or refused) and every
//!   refusal is taken off the overlay ([`InFlight::settle`]); a batch judged to continue one
//!   raft refused is never proposed, and one judged to continue batches in the log follows
//!   them there (both commit, or the term changes and neither counts).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::storage::RaftStateMachine;
use tokio::sync::{Notify, watch};
use weir_storage::GroupId;

use crate::error::{ReplicaError, SequenceError};
use crate::group::{Group, Proposal};
use crate::producers::{ProducerBatch, ProducerEntry, ProducerState, Verdict, is_ahead};
use crate::types::{
    AppendBatch, AppendOutcome, Appended, Request, Response, SnapshotBytes, TypeConfig,
};

type Outcome = Option<Result<AppendOutcome, ReplicaError>>;

/// How long a batch waits for a new leader to apply its log before it is refused as
/// `UNAVAILABLE` (retriable).
const LATEST_STATE_WAIT: Duration = Duration::from_secs(5);

/// How long a batch ahead of its producer's sequence waits for the batches before it before it
/// is refused as `OUT_OF_ORDER_SEQUENCE`.
const AHEAD_WAIT: Duration = Duration::from_millis(500);

/// One in-flight batch, raft's answer to come, and where it is passed on.
struct InFlightBatch {
    /// Tells this proposal from a later one of the same batch (after a term change).
    id: u64,
    /// The term it was proposed in: it is on the overlay only in that term.
    term: u64,
    batch: ProducerBatch,
    proposal: Proposal,
    answer: watch::Sender<Outcome>,
}

/// The batches this node proposed that raft has not answered for yet.
#[derive(Default)]
struct InFlight {
    /// The term the gate judges in; only the batches proposed in it are on the overlay.
    term: u64,
    /// The leader's last log index when the gate entered `term`: entries up to it must be
    /// applied before anything is judged.
    barrier: u64,
    next_id: u64,
    by_producer: HashMap<i64, Vec<InFlightBatch>>,
}

impl InFlight {
    /// Whether `producer_id` has batches proposed in `term` that raft has not answered for.
    fn has_unanswered(&self, producer_id: i64, term: u64) -> bool {
        self.by_producer
            .get(&producer_id)
            .is_some_and(|batches| batches.iter().any(|b| b.term == term))
    }

    /// Takes every batch of `producer_id` raft has answered for off the overlay, passing the
    /// answers on. Returns whether any was.
    fn settle(&mut self, producer_id: i64, group: GroupId) -> bool {
        let Some(batches) = self.by_producer.get_mut(&producer_id) else {
            return false;
        };
        let before = batches.len();
        batches.retain_mut(|b| match b.proposal.answered() {
            Some(result) => {
                b.answer.send_replace(Some(appended(group, result)));
                false
            }
            None => true,
        });
        let settled = batches.len() < before;
        if batches.is_empty() {
            self.by_producer.remove(&producer_id);
        }
        settled
    }

    /// Polls raft's answer for batch `id` of `producer_id`; once it comes, takes the batch
    /// off the overlay and passes the answer on. Ready at once if it is gone already.
    fn poll_answer(
        &mut self,
        producer_id: i64,
        id: u64,
        group: GroupId,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let Some(batches) = self.by_producer.get_mut(&producer_id) else {
            return std::task::Poll::Ready(());
        };
        let Some(at) = batches.iter().position(|b| b.id == id) else {
            return std::task::Poll::Ready(());
        };
        let std::task::Poll::Ready(result) = std::pin::Pin::new(&mut batches[at].proposal).poll(cx)
        else {
            return std::task::Poll::Pending;
        };
        let batch = batches.remove(at);
        if batches.is_empty() {
            self.by_producer.remove(&producer_id);
        }
        batch.answer.send_replace(Some(appended(group, result)));
        std::task::Poll::Ready(())
    }
}

/// What a state machine response to an append means for its batch.
fn appended(
    group: GroupId,
    response: Result<Response, ReplicaError>,
) -> Result<AppendOutcome, ReplicaError> {
    match response {
        Ok(Response::Appended {
            base_offset,
            record_count,
        }) => Ok(AppendOutcome {
            base_offset,
            record_count,
        }),
        Ok(other) => Err(ReplicaError::Indeterminate {
            group,
            reason: format!("unexpected state machine response {other:?}"),
        }),
        Err(e) => Err(e),
    }
}

/// The gate of one partition replica.
#[derive(Default)]
pub(crate) struct Sequencer {
    /// Held from judging a batch until it is handed to raft.
    order: tokio::sync::Mutex<()>,
    in_flight: Arc<Mutex<InFlight>>,
    /// Told whenever a batch enters or leaves raft, for the batches waiting for their turn.
    changed: Arc<Notify>,
    /// Batches that arrived ahead of their producer's sequence and were held.
    held: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the data consistent, so a panic elsewhere cannot leave it
    // half-updated.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What judging a batch decided.
enum Step {
    /// Wait for this answer: the batch's own (`duplicate` false) or its original's.
    Await(watch::Receiver<Outcome>, bool),
    /// A retry of a stored batch, answered at once.
    Done(Appended),
    /// The batch is ahead of its producer's sequence: the batches before it may still arrive.
    Ahead(ReplicaError),
}

impl Sequencer {
    /// Batches held so far because they arrived ahead of their producer's sequence.
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Appends an idempotent producer's batch through `group`, or answers a retry of one.
    ///
    /// A batch ahead of its producer's sequence waits (up to [`AHEAD_WAIT`]) for the batches
    /// before it: a producer's requests travel on separate HTTP/2 streams and may arrive out of
    /// order. It is judged again whenever a batch enters or leaves raft.
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
        let hold_until = tokio::time::Instant::now() + AHEAD_WAIT;
        let mut held = false;
        let (mut outcome, duplicate) = loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before judging, so a change right after is not missed.
            changed.as_mut().enable();
            match self.judge(group, producers, &append, producer).await? {
                Step::Done(appended) => return Ok(appended),
                Step::Await(outcome, duplicate) => break (outcome, duplicate),
                Step::Ahead(refusal) => {
                    if !held {
                        held = true;
                        self.held.fetch_add(1, Ordering::Relaxed);
                    }
                    if tokio::time::timeout_at(hold_until, changed).await.is_err() {
                        return Err(refusal);
                    }
                }
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

    /// Judges the batch in order with every other, and proposes it if it continues its
    /// producer's sequence.
    async fn judge<SM>(
        &self,
        group: &Group<SM>,
        producers: &Mutex<ProducerState>,
        append: &AppendBatch,
        producer: ProducerBatch,
    ) -> Result<Step, ReplicaError>
    where
        SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotBytes>,
    {
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
                // Batches of an earlier term are committed (and will be in the applied state)
                // or gone: they leave the overlay, though their answers still arrive.
                in_flight.term = term;
                in_flight.barrier = last_log_index;
            }
            in_flight.barrier
        };
        group
            .wait_applied_as_leader(term, barrier, LATEST_STATE_WAIT)
            .await?;
        if lock(&self.in_flight).has_unanswered(producer.producer_id, term) {
            group.handled_writes().await?;
        }
        let original = {
            // Only this (ordered) section changes the term, so it is still `term`.
            let mut in_flight = lock(&self.in_flight);
            if in_flight.settle(producer.producer_id, group.id) {
                self.changed.notify_waiters();
            }
            let pending: Vec<&InFlightBatch> = in_flight
                .by_producer
                .get(&producer.producer_id)
                .into_iter()
                .flatten()
                .filter(|b| b.term == term)
                .collect();
            let applied = lock(producers);
            let overlay = ProducerEntry::with_in_flight(
                applied.entry(producer.producer_id),
                pending.iter().map(|b| &b.batch),
            );
            let verdict = ProducerEntry::check(overlay.as_ref(), &producer);
            tracing::debug!(group = group.id, ?producer, ?verdict, "judged");
            match verdict {
                Ok(Verdict::InFlight) => pending
                    .iter()
                    .find(|b| b.batch == producer)
                    .map(|b| b.answer.subscribe()),
                Ok(Verdict::Duplicate(outcome)) => {
                    return Ok(Step::Done(Appended {
                        outcome,
                        duplicate: true,
                    }));
                }
                Ok(Verdict::Append) => None,
                Err(source) => {
                    let ahead = matches!(
                        source,
                        SequenceError::OutOfOrderSequence { expected, received, .. }
                            if is_ahead(expected, received)
                    );
                    let refusal = ReplicaError::Sequence {
                        group: group.id,
                        source,
                    };
                    return if ahead {
                        Ok(Step::Ahead(refusal))
                    } else {
                        Err(refusal)
                    };
                }
            }
        };
        Ok(match original {
            Some(original) => Step::Await(original, true),
            None => Step::Await(self.propose(group, append.clone(), producer).await?, false),
        })
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
        let proposal = group.propose(Request::Append(append)).await?;
        let (answer, outcome) = watch::channel(None);
        let id = {
            let mut in_flight = lock(&self.in_flight);
            let (id, term) = (in_flight.next_id, in_flight.term);
            in_flight.next_id += 1;
            in_flight
                .by_producer
                .entry(producer.producer_id)
                .or_default()
                .push(InFlightBatch {
                    id,
                    term,
                    batch: producer,
                    proposal,
                    answer,
                });
            id
        };
        self.changed.notify_waiters();
        // The answer is awaited apart from the request, so a client that gives up does not
        // leave a batch on the overlay that nothing will ever take off. Judging may take it
        // off first (`InFlight::settle`); either way it is passed on once.
        let in_flight = self.in_flight.clone();
        let changed = self.changed.clone();
        let (producer_id, group_id) = (producer.producer_id, group.id);
        tokio::spawn(async move {
            std::future::poll_fn(|cx| lock(&in_flight).poll_answer(producer_id, id, group_id, cx))
                .await;
            changed.notify_waiters();
        });
        Ok(outcome)
    }
}
