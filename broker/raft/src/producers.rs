//! The idempotent producer's state of one partition (Kafka's KIP-98), as pure bookkeeping.
//!
//! Per producer id the partition remembers the epoch and the last [`REMEMBERED_BATCHES`]
//! batches: their sequence ranges and where they were stored. A batch is judged against that:
//!
//! - a batch whose sequence range is a remembered one is a retry: it gets the original offsets
//!   and is not stored again;
//! - a batch from an older epoch is refused (`INVALID_PRODUCER_EPOCH`): a newer epoch of the
//!   producer fenced it;
//! - a batch that does not continue the sequence (its first sequence is not one past the last
//!   remembered one, or not 0 in a new epoch) is refused (`OUT_OF_ORDER_SEQUENCE`): a batch
//!   before it is missing;
//! - a producer the partition does not know (never seen, or expired) must start at sequence 0
//!   (else `OUT_OF_ORDER_SEQUENCE`, to which an idempotent client answers with a new epoch,
//!   from 0). Kafka since KIP-360 accepts any first sequence, because its connections deliver
//!   one producer's requests in order; gRPC streams do not, so a producer's second batch may
//!   reach the leader before its first, and must not be taken for a start.
//!
//! The state is derived from the log: every replica applies each committed batch to it, so a
//! new leader has it, and it is persisted with the applied index, so a restart has it. On the
//! leader, the batches proposed but not yet applied are laid over the applied state
//! ([`ProducerEntry::with_in_flight`]), so a retry of a batch still in raft is recognised as
//! one ([`Verdict::InFlight`]) rather than stored twice.
//!
//! Bounds: an entry is dropped when its producer has been idle for the configured time (by
//! this replica's clock, as Kafka's `producer.id.expiration.ms`), and when a partition holds
//! more producers than allowed the one whose last batch is oldest in the log is dropped first,
//! which every replica decides alike.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_types::{Offset, ProducerStamp};

use crate::error::SequenceError;
use crate::types::AppendOutcome;

/// Batches remembered per producer: a producer has at most this many requests in flight per
/// partition, so a retry is always of one of them.
pub const REMEMBERED_BATCHES: usize = 5;

/// The sequence range of an idempotent producer's batch, as the producer sent it.
///
/// It travels in the raft entry beside the stored batch because a produce chain may store
/// fewer or more records than the producer sent, while the sequence numbers count what the
/// producer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProducerBatch {
    /// The producer id.
    pub producer_id: i64,
    /// The producer epoch.
    pub producer_epoch: i16,
    /// Sequence number of the batch's first record.
    pub first_sequence: i32,
    /// Sequence number of the batch's last record.
    pub last_sequence: i32,
}

impl ProducerBatch {
    /// The range of a batch of `record_count` records (at least 1) stamped with `stamp`.
    /// Sequence numbers wrap from `i32::MAX` to 0, as Kafka's do.
    pub fn new(stamp: ProducerStamp, record_count: u32) -> Self {
        Self {
            producer_id: stamp.producer_id,
            producer_epoch: stamp.producer_epoch,
            first_sequence: stamp.base_sequence,
            last_sequence: ProducerStamp::sequence_after(
                stamp.base_sequence,
                u64::from(record_count.saturating_sub(1)),
            ),
        }
    }
}

/// Whether `received` is ahead of `expected` (a batch before it is missing) rather than behind
/// it (older than what is remembered), on the wrapping sequence circle.
pub(crate) fn is_ahead(expected: i32, received: i32) -> bool {
    let space = i64::from(i32::MAX) + 1;
    let distance = (i64::from(received) - i64::from(expected)).rem_euclid(space);
    distance != 0 && distance < space / 2
}

/// Limits of the producer state of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerLimits {
    /// Producers remembered at most; beyond, the one whose last batch is oldest is forgotten.
    pub max_producers: usize,
    /// A producer idle this long is forgotten.
    pub idle_expiry: Duration,
}

impl Default for ProducerLimits {
    fn default() -> Self {
        Self {
            max_producers: 1_000,
            idle_expiry: Duration::from_secs(24 * 3600),
        }
    }
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It continues the producer's sequence: store it.
    Append,
    /// A retry of a stored batch: answer with its offsets, store nothing.
    Duplicate(AppendOutcome),
    /// A retry of a batch still in raft: wait for that batch's answer.
    InFlight,
}

/// One remembered batch; `outcome` is `None` while it is in raft (leader overlay only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Remembered {
    first_sequence: i32,
    last_sequence: i32,
    outcome: Option<(u64, u32)>,
}

/// What a partition remembers of one producer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProducerEntry {
    epoch: i16,
    /// Oldest first, at most [`REMEMBERED_BATCHES`].
    batches: VecDeque<Remembered>,
    /// Offset of the producer's last stored record: what eviction orders by.
    last_offset: u64,
    /// This replica's clock when the producer's last batch was applied, in ms.
    last_seen_ms: i64,
}

impl ProducerEntry {
    /// Judges `batch` against this producer's entry (`None`: an unknown producer).
    pub(crate) fn check(
        entry: Option<&Self>,
        batch: &ProducerBatch,
    ) -> Result<Verdict, SequenceError> {
        let producer_id = batch.producer_id;
        // The batch is stored if it starts where the producer's sequence continues.
        let continues = |expected: i32| {
            if batch.first_sequence == expected {
                Ok(Verdict::Append)
            } else {
                Err(SequenceError::OutOfOrderSequence {
                    producer_id,
                    expected,
                    received: batch.first_sequence,
                })
            }
        };
        let Some(entry) = entry else {
            return continues(0);
        };
        if batch.producer_epoch < entry.epoch {
            return Err(SequenceError::InvalidProducerEpoch {
                producer_id,
                current: entry.epoch,
                received: batch.producer_epoch,
            });
        }
        if batch.producer_epoch > entry.epoch {
            return continues(0);
        }
        if let Some(seen) = entry.batches.iter().find(|b| {
            b.first_sequence == batch.first_sequence && b.last_sequence == batch.last_sequence
        }) {
            return Ok(match seen.outcome {
                Some((base_offset, record_count)) => Verdict::Duplicate(AppendOutcome {
                    base_offset: Offset(base_offset),
                    record_count,
                }),
                None => Verdict::InFlight,
            });
        }
        if let Some(oldest) = entry.batches.front()
            && is_ahead(batch.last_sequence, oldest.first_sequence)
        {
            return Err(SequenceError::DuplicateSequence {
                producer_id,
                first: batch.first_sequence,
                last: batch.last_sequence,
                oldest_remembered: oldest.first_sequence,
            });
        }
        continues(entry.batches.back().map_or(0, |last| {
            ProducerStamp::sequence_after(last.last_sequence, 1)
        }))
    }

    /// `applied` with the batches of `in_flight` (proposed, not yet applied, in proposal order)
    /// laid over it; those already applied are skipped.
    pub(crate) fn with_in_flight<'a>(
        applied: Option<&Self>,
        in_flight: impl IntoIterator<Item = &'a ProducerBatch>,
    ) -> Option<Self> {
        let mut entry = applied.cloned();
        for batch in in_flight {
            if Self::check(entry.as_ref(), batch) == Ok(Verdict::Append) {
                remember(&mut entry, batch, None, 0);
            }
        }
        entry
    }
}

/// Records `batch` in `entry` (creating it), with its outcome when it was stored.
fn remember(
    entry: &mut Option<ProducerEntry>,
    batch: &ProducerBatch,
    outcome: Option<AppendOutcome>,
    now_ms: i64,
) {
    let entry = entry.get_or_insert_with(|| ProducerEntry {
        epoch: batch.producer_epoch,
        batches: VecDeque::with_capacity(REMEMBERED_BATCHES),
        last_offset: 0,
        last_seen_ms: now_ms,
    });
    if batch.producer_epoch != entry.epoch {
        entry.epoch = batch.producer_epoch;
        entry.batches.clear();
    }
    if entry.batches.len() == REMEMBERED_BATCHES {
        entry.batches.pop_front();
    }
    entry.batches.push_back(Remembered {
        first_sequence: batch.first_sequence,
        last_sequence: batch.last_sequence,
        outcome: outcome.map(|o| (o.base_offset.0, o.record_count)),
    });
    if let Some(o) = outcome {
        entry.last_offset = o.base_offset.0 + u64::from(o.record_count.max(1)) - 1;
        entry.last_seen_ms = now_ms;
    }
}

/// Producers whose entries changed in an [`ProducerState::apply`] or
/// [`ProducerState::expire`]: the rows to write and to delete.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Changes {
    pub(crate) updated: Vec<i64>,
    pub(crate) removed: Vec<i64>,
}

/// The producer state of one partition.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProducerState {
    entries: HashMap<i64, ProducerEntry>,
    limits: ProducerLimits,
}

impl ProducerState {
    pub(crate) fn new(limits: ProducerLimits) -> Self {
        Self {
            entries: HashMap::new(),
            limits,
        }
    }

    /// The entry of `producer_id`, if it is remembered.
    pub(crate) fn entry(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.entries.get(&producer_id)
    }

    /// Every entry, to persist or snapshot.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.entries.iter().map(|(id, e)| (*id, e))
    }

    /// Replaces the state with `entries` (from storage or a snapshot).
    pub(crate) fn restore(&mut self, entries: impl IntoIterator<Item = (i64, ProducerEntry)>) {
        self.entries = entries.into_iter().collect();
    }

    /// Records a stored batch, evicting the stalest producer if there are too many.
    pub(crate) fn apply(
        &mut self,
        batch: &ProducerBatch,
        outcome: AppendOutcome,
        now_ms: i64,
        changes: &mut Changes,
    ) {
        let mut entry = self.entries.remove(&batch.producer_id);
        remember(&mut entry, batch, Some(outcome), now_ms);
        if let Some(entry) = entry {
            self.entries.insert(batch.producer_id, entry);
        }
        changes.updated.push(batch.producer_id);
        while self.entries.len() > self.limits.max_producers {
            let stalest = self
                .entries
                .iter()
                .min_by_key(|(id, e)| (e.last_offset, **id))
                .map(|(id, _)| *id);
            let Some(stalest) = stalest else { break };
            self.entries.remove(&stalest);
            changes.updated.retain(|id| *id != stalest);
            changes.removed.push(stalest);
        }
    }

    /// Forgets producers idle for longer than the limit.
    pub(crate) fn expire(&mut self, now_ms: i64, changes: &mut Changes) {
        let idle_ms = i64::try_from(self.limits.idle_expiry.as_millis()).unwrap_or(i64::MAX);
        let expired: Vec<i64> = self
            .entries
            .iter()
            .filter(|(_, e)| now_ms.saturating_sub(e.last_seen_ms) >= idle_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.entries.remove(&id);
            changes.updated.retain(|u| *u != id);
            changes.removed.push(id);
        }
    }

    /// Producers remembered.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(producer_id: i64, epoch: i16, first: i32, count: u32) -> ProducerBatch {
        ProducerBatch::new(
            ProducerStamp {
                producer_id,
                producer_epoch: epoch,
                base_sequence: first,
            },
            count,
        )
    }

    fn stored(base_offset: u64, record_count: u32) -> AppendOutcome {
        AppendOutcome {
            base_offset: Offset(base_offset),
            record_count,
        }
    }

    fn state() -> ProducerState {
        ProducerState::new(ProducerLimits::default())
    }

    fn check(state: &ProducerState, b: &ProducerBatch) -> Result<Verdict, SequenceError> {
        ProducerEntry::check(state.entry(b.producer_id), b)
    }

    #[test]
    fn sequences_continue_and_retries_get_their_original_offsets() {
        let mut s = state();
        let mut changes = Changes::default();
        let first = batch(1, 0, 0, 3);
        assert_eq!(check(&s, &first), Ok(Verdict::Append));
        s.apply(&first, stored(10, 3), 0, &mut changes);
        let second = batch(1, 0, 3, 2);
        assert_eq!(check(&s, &second), Ok(Verdict::Append));
        s.apply(&second, stored(13, 2), 0, &mut changes);
        assert_eq!(check(&s, &first), Ok(Verdict::Duplicate(stored(10, 3))));
        assert_eq!(check(&s, &second), Ok(Verdict::Duplicate(stored(13, 2))));
        assert_eq!(
            check(&s, &batch(1, 0, 6, 1)),
            Err(SequenceError::OutOfOrderSequence {
                producer_id: 1,
                expected: 5,
                received: 6
            })
        );
        assert_eq!(changes.updated, [1, 1]);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = state();
        let mut changes = Changes::default();
        for i in 0..6 {
            s.apply(&batch(1, 0, i, 1), stored(i as u64, 1), 0, &mut changes);
        }
        assert_eq!(
            check(&s, &batch(1, 0, 1, 1)),
            Ok(Verdict::Duplicate(stored(1, 1)))
        );
        // Older than the window: stored, since later ones were; never stored again, and
        // answered as such without offsets.
        assert_eq!(
            check(&s, &batch(1, 0, 0, 1)),
            Err(SequenceError::DuplicateSequence {
                producer_id: 1,
                first: 0,
                last: 0,
                oldest_remembered: 1
            })
        );
        // Past the sequence: a gap.
        assert!(matches!(
            check(&s, &batch(1, 0, 8, 1)),
            Err(SequenceError::OutOfOrderSequence { expected: 6, .. })
        ));
        // Across the wrap too.
        let mut s = state();
        for i in 0..6 {
            let first = ProducerStamp::sequence_after(i32::MAX - 2, i);
            s.apply(&batch(2, 0, first, 1), stored(i, 1), 0, &mut changes);
        }
        assert!(matches!(
            check(&s, &batch(2, 0, i32::MAX - 2, 1)),
            Err(SequenceError::DuplicateSequence { .. })
        ));
        assert_eq!(
            check(&s, &batch(2, 0, 3, 1)),
            Ok(Verdict::Append),
            "the next after i32::MAX - 2 + 5 is 3"
        );
    }

    #[test]
    fn epochs_fence_and_a_new_epoch_starts_at_zero() {
        let mut s = state();
        let mut changes = Changes::default();
        s.apply(&batch(1, 2, 0, 1), stored(0, 1), 0, &mut changes);
        assert_eq!(
            check(&s, &batch(1, 1, 1, 1)),
            Err(SequenceError::InvalidProducerEpoch {
                producer_id: 1,
                current: 2,
                received: 1
            })
        );
        assert_eq!(
            check(&s, &batch(1, 3, 5, 1)),
            Err(SequenceError::OutOfOrderSequence {
                producer_id: 1,
                expected: 0,
                received: 5
            })
        );
        assert_eq!(check(&s, &batch(1, 3, 0, 1)), Ok(Verdict::Append));
        s.apply(&batch(1, 3, 0, 1), stored(1, 1), 0, &mut changes);
        // The old epoch's batches are forgotten with it.
        assert!(matches!(
            check(&s, &batch(1, 2, 0, 1)),
            Err(SequenceError::InvalidProducerEpoch { .. })
        ));
    }

    #[test]
    fn an_unknown_producer_starts_at_zero_and_sequences_wrap() {
        let s = state();
        assert_eq!(check(&s, &batch(9, 0, 0, 1)), Ok(Verdict::Append));
        assert_eq!(
            check(&s, &batch(9, 0, 1234, 1)),
            Err(SequenceError::OutOfOrderSequence {
                producer_id: 9,
                expected: 0,
                received: 1234
            })
        );
        assert!(is_ahead(0, 1234));
        assert!(!is_ahead(10, 5), "behind: older than expected");
        assert!(is_ahead(i32::MAX, 3), "ahead across the wrap");
        assert!(!is_ahead(3, i32::MAX), "behind across the wrap");
        let wrapping = batch(9, 0, i32::MAX - 1, 3);
        assert_eq!(wrapping.last_sequence, 0);
        let mut s = state();
        s.apply(&wrapping, stored(0, 3), 0, &mut Changes::default());
        assert_eq!(check(&s, &batch(9, 0, 1, 1)), Ok(Verdict::Append));
    }

    #[test]
    fn batches_in_raft_are_recognised_as_in_flight() {
        let mut s = state();
        s.apply(&batch(1, 0, 0, 1), stored(0, 1), 0, &mut Changes::default());
        let in_flight = [batch(1, 0, 1, 2), batch(1, 0, 3, 1)];
        let overlay = ProducerEntry::with_in_flight(s.entry(1), &in_flight);
        let judge = |b| ProducerEntry::check(overlay.as_ref(), &b);
        assert_eq!(judge(batch(1, 0, 1, 2)), Ok(Verdict::InFlight));
        assert_eq!(
            judge(batch(1, 0, 0, 1)),
            Ok(Verdict::Duplicate(stored(0, 1)))
        );
        assert_eq!(judge(batch(1, 0, 4, 1)), Ok(Verdict::Append));
        assert!(judge(batch(1, 0, 2, 1)).is_err());
        // Once applied, the overlay skips it and the stored outcome wins.
        s.apply(&in_flight[0], stored(1, 2), 0, &mut Changes::default());
        let overlay = ProducerEntry::with_in_flight(s.entry(1), &in_flight);
        assert_eq!(
            ProducerEntry::check(overlay.as_ref(), &in_flight[0]),
            Ok(Verdict::Duplicate(stored(1, 2)))
        );
    }

    #[test]
    fn idle_producers_expire_and_the_stalest_is_evicted_first() {
        let mut s = ProducerState::new(ProducerLimits {
            max_producers: 2,
            idle_expiry: Duration::from_secs(60),
        });
        let mut changes = Changes::default();
        s.apply(&batch(1, 0, 0, 1), stored(5, 1), 0, &mut changes);
        s.apply(&batch(2, 0, 0, 1), stored(3, 1), 1_000, &mut changes);
        s.apply(&batch(3, 0, 0, 1), stored(7, 1), 2_000, &mut changes);
        // Producer 2's last record is the oldest in the log.
        assert_eq!(changes.removed, [2]);
        assert_eq!(s.len(), 2);
        let mut changes = Changes::default();
        s.expire(61_000, &mut changes);
        assert_eq!(changes.removed, [1]);
        assert!(s.entry(3).is_some());
    }
}
