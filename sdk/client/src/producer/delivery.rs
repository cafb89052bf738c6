//! A batch's answer, shared by the [`Delivery`] of each of its records: one answer is written
//! per batch, and each record's result is read from it with the record's index, instead of a
//! channel and a [`RecordMetadata`] built per record (Kafka's producer shares one result per
//! batch the same way).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use super::{DeliveryError, RecordMetadata, lock};
use crate::{ClientError, ProduceOutcome, RejectedRecord};

/// What became of a batch.
#[derive(Debug)]
pub(super) enum BatchAnswer {
    /// Stored (or found stored by a retry). Record `i`'s offset is `base_offset + i` when the
    /// offsets follow the records one to one, else unknown.
    Stored {
        base_offset: Option<u64>,
        rejected: HashMap<u32, RejectedRecord>,
    },
    /// Not stored: every record fails with `error`, except those a produce chain rejected.
    Failed {
        error: Arc<ClientError>,
        rejected: HashMap<u32, RejectedRecord>,
    },
    /// The batch was dropped unanswered: the producer's task ended with it.
    Closed,
}

impl BatchAnswer {
    /// The answer to a batch of `count` records that the partition stored.
    pub(super) fn stored(outcome: ProduceOutcome, count: usize) -> Self {
        let one_to_one = outcome.rejected.is_empty() && outcome.record_count as usize == count;
        Self::Stored {
            base_offset: outcome.base_offset.filter(|_| one_to_one),
            rejected: by_index(outcome.rejected),
        }
    }

    /// The answer to a batch that was not stored: the records a produce chain rejected (under
    /// `RECORD_REJECTED`) with their rejection, the others with `error`.
    pub(super) fn failed(error: Arc<ClientError>) -> Self {
        let rejected = by_index(error.rejected_records());
        Self::Failed { error, rejected }
    }
}

fn by_index(rejected: Vec<RejectedRecord>) -> HashMap<u32, RejectedRecord> {
    rejected.into_iter().map(|r| (r.index, r)).collect()
}

/// The part a batch and its records' deliveries share.
struct Shared {
    topic: Arc<str>,
    partition: u32,
    answer: OnceLock<BatchAnswer>,
    /// The deliveries waiting, one slot each (a delivery polled again replaces its waker).
    waiting: Mutex<Vec<Option<Waker>>>,
}

impl Shared {
    /// Record `index`'s result; `None` until the batch is answered.
    fn result(&self, index: u32) -> Option<Result<RecordMetadata, DeliveryError>> {
        let answer = self.answer.get()?;
        Some(match answer {
            BatchAnswer::Stored {
                base_offset,
                rejected,
            } => match rejected.get(&index) {
                Some(r) => Err(DeliveryError::Rejected(r.clone())),
                None => Ok(RecordMetadata {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    offset: base_offset.map(|base| base + u64::from(index)),
                }),
            },
            BatchAnswer::Failed { error, rejected } => Err(match rejected.get(&index) {
                Some(r) => DeliveryError::Rejected(r.clone()),
                None => DeliveryError::Failed(error.clone()),
            }),
            BatchAnswer::Closed => Err(DeliveryError::Closed),
        })
    }
}

/// The answering side of one batch, held by whoever holds the batch. Answered once; dropped
/// unanswered, its records fail with [`DeliveryError::Closed`].
pub(super) struct Answers(Arc<Shared>);

impl Answers {
    pub(super) fn new(topic: Arc<str>, partition: u32) -> Self {
        Self(Arc::new(Shared {
            topic,
            partition,
            answer: OnceLock::new(),
            waiting: Mutex::new(Vec::new()),
        }))
    }

    /// The delivery of the batch's record `index`.
    pub(super) fn delivery(&self, index: u32) -> Delivery {
        Delivery {
            shared: self.0.clone(),
            index,
            slot: None,
        }
    }

    /// Answers every record of the batch, waking the deliveries waiting.
    pub(super) fn answer(self, answer: BatchAnswer) {
        self.settle(answer);
    }

    fn settle(&self, answer: BatchAnswer) {
        if self.0.answer.set(answer).is_err() {
            return;
        }
        // Taken under the lock after the answer is set: a delivery registering concurrently
        // either is in this list or sees the answer once it holds the lock.
        let waiting = std::mem::take(&mut *lock(&self.0.waiting));
        for waker in waiting.into_iter().flatten() {
            waker.wake();
        }
    }
}

impl Drop for Answers {
    fn drop(&mut self) {
        self.settle(BatchAnswer::Closed);
    }
}

/// A record's acknowledgement, from [`Producer::enqueue`](super::Producer::enqueue): resolves
/// once the record's batch is answered.
pub struct Delivery {
    shared: Arc<Shared>,
    index: u32,
    /// This delivery's slot among the batch's waiting ones, once it waited.
    slot: Option<usize>,
}

impl Delivery {
    /// The partition the record was put in (chosen when it was enqueued). A partition answers
    /// its records in the order they were enqueued.
    pub fn partition(&self) -> u32 {
        self.shared.partition
    }
}

impl Future for Delivery {
    type Output = Result<RecordMetadata, DeliveryError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(result) = this.shared.result(this.index) {
            return Poll::Ready(result);
        }
        let mut waiting = lock(&this.shared.waiting);
        // Again under the lock: the answer may have been set (and the list taken) meanwhile.
        if let Some(result) = this.shared.result(this.index) {
            return Poll::Ready(result);
        }
        let waker = Some(cx.waker().clone());
        match this.slot {
            Some(slot) if slot < waiting.len() => waiting[slot] = waker,
            _ => {
                this.slot = Some(waiting.len());
                waiting.push(waker);
            }
        }
        Poll::Pending
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("topic", &self.shared.topic)
            .field("partition", &self.shared.partition)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(
        delivery: &mut Delivery,
        waker: &Arc<CountingWaker>,
    ) -> Poll<Result<RecordMetadata, DeliveryError>> {
        let waker = Waker::from(waker.clone());
        Pin::new(delivery).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn every_record_reads_its_own_result_from_the_batch_answer() {
        let answers = Answers::new("orders".into(), 3);
        let mut deliveries: Vec<Delivery> = (0..3).map(|i| answers.delivery(i)).collect();
        let woken = Arc::new(CountingWaker(AtomicUsize::new(0)));
        for delivery in &mut deliveries {
            assert!(poll(delivery, &woken).is_pending());
        }
        // Polled again while waiting: the waker is replaced, not added.
        assert!(poll(&mut deliveries[0], &woken).is_pending());
        let rejected = RejectedRecord {
            index: 1,
            reason: "no".into(),
            module: "m".into(),
            policy: crate::RejectAction::Drop,
        };
        answers.answer(BatchAnswer::stored(
            ProduceOutcome {
                partition: 3,
                base_offset: Some(40),
                record_count: 2,
                duplicate: false,
                rejected: vec![rejected],
            },
            3,
        ));
        assert_eq!(
            woken.0.load(Ordering::SeqCst),
            3,
            "one wake per waiting delivery"
        );
        let results: Vec<_> = deliveries
            .iter_mut()
            .map(|d| match poll(d, &woken) {
                Poll::Ready(Ok(stored)) => {
                    format!("{}/{} {:?}", stored.topic, stored.partition, stored.offset)
                }
                Poll::Ready(Err(e)) => e.to_string(),
                Poll::Pending => "pending".into(),
            })
            .collect();
        // A produce chain rejected one: the offsets no longer follow the records.
        assert_eq!(
            results,
            ["orders/3 None", "record rejected by m: no", "orders/3 None"]
        );

        let answers = Answers::new("orders".into(), 0);
        let mut stored = answers.delivery(2);
        answers.answer(BatchAnswer::stored(
            ProduceOutcome {
                partition: 0,
                base_offset: Some(40),
                record_count: 3,
                duplicate: false,
                rejected: Vec::new(),
            },
            3,
        ));
        assert!(matches!(
            poll(&mut stored, &woken),
            Poll::Ready(Ok(RecordMetadata {
                offset: Some(42),
                ..
            }))
        ));
    }

    #[test]
    fn a_batch_dropped_unanswered_closes_its_deliveries() {
        let answers = Answers::new("t".into(), 0);
        let mut delivery = answers.delivery(0);
        let woken = Arc::new(CountingWaker(AtomicUsize::new(0)));
        assert!(poll(&mut delivery, &woken).is_pending());
        drop(answers);
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert!(matches!(
            poll(&mut delivery, &woken),
            Poll::Ready(Err(DeliveryError::Closed))
        ));
    }
}
