//! One partition's sender: takes the partition's batches as they are formed (full, or lingered),
//! keeps up to a window of them in flight, and answers each batch's records once its fate is
//! known.
//!
//! Invariants (idempotent mode):
//! - batches are sent in the order they were formed, each with the next sequence numbers, and
//!   answers are taken in that order (the window's front first);
//! - after a retriable failure of the front batch every batch in flight behind it is waited
//!   for and all that are not stored are sent again, in order, with the same sequence numbers:
//!   the partition stores each exactly once (a retry of a stored one is answered as a
//!   duplicate with its original offsets);
//! - after a definitive failure of the front batch (nothing of it stored: the records are
//!   refused), its sequence numbers are given to the batches behind it, which the partition
//!   refused as out of sequence;
//! - batches travel on separate HTTP/2 streams and may reach the leader out of order (it holds
//!   one ahead of its sequence a moment for the ones before): `OUT_OF_ORDER_SEQUENCE` for a
//!   batch sent while an earlier one was unanswered is such a reordering, and the batch is sent
//!   again as it is once the earlier ones are answered;
//! - `DUPLICATE_SEQUENCE_NUMBER` answers a retry of a batch stored before the last batches the
//!   partition remembers (its answers were lost while the batches behind it were stored): the
//!   batch is stored, and its records are answered so, without offsets (as Kafka's producer
//!   does);
//! - `OUT_OF_ORDER_SEQUENCE` for a batch sent with nothing before it unanswered means the
//!   partition expects a sequence of an earlier batch this sender gave up on (delivery timeout)
//!   that was never stored, or no longer knows the producer: the sender starts a new epoch of
//!   its producer id for this partition, from sequence 0.
//!
//! Without idempotence the window is one batch, retried as it is: order is kept, and a retry
//! after an unknown outcome may store the batch twice.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use weir_types::{BatchEncoder, BatchLimits, EncodedBatch, Header, ProducerStamp, Record};

use super::Inner;
use super::accumulator::{Batch, Next, PartitionQueue};
use super::delivery::{Answers, BatchAnswer};
use crate::{ClientError, ProduceOutcome, ProducerId, ProducerRecord};

/// The sequence numbers of one partition (pure bookkeeping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Sequence {
    producer: Option<ProducerId>,
    next: i32,
}

impl Sequence {
    /// Sequencing for `producer`; `None` without idempotence.
    pub(super) fn new(producer: Option<ProducerId>) -> Self {
        Self { producer, next: 0 }
    }

    /// The stamp of the next batch of `count` records, which takes the next sequence numbers.
    pub(super) fn take(&mut self, count: usize) -> Option<ProducerStamp> {
        let producer = self.producer?;
        let stamp = ProducerStamp {
            producer_id: producer.id,
            producer_epoch: producer.epoch,
            base_sequence: self.next,
        };
        self.next = ProducerStamp::sequence_after(self.next, count as u64);
        Some(stamp)
    }

    /// Makes `first` the next sequence again: the batch that took it was not stored.
    pub(super) fn rewind(&mut self, first: i32) {
        self.next = first;
    }

    /// Starts a new epoch from sequence 0. `false` when the epoch cannot grow (a new producer
    /// id is needed).
    pub(super) fn new_epoch(&mut self) -> bool {
        match &mut self.producer {
            Some(producer) if producer.epoch < i16::MAX => {
                producer.epoch += 1;
                self.next = 0;
                true
            }
            _ => false,
        }
    }

    /// Replaces the producer (after it was fenced), from sequence 0.
    pub(super) fn reset(&mut self, producer: ProducerId) {
        self.producer = Some(producer);
        self.next = 0;
    }

    pub(super) fn is_idempotent(&self) -> bool {
        self.producer.is_some()
    }
}

type Answer = Result<ProduceOutcome, ClientError>;

/// A batch sent (or to be sent again), and the answering side of its records' deliveries.
struct InFlight {
    answers: Answers,
    /// Its records.
    count: usize,
    /// Its records' payload bytes, held in the producer's buffer until it is answered.
    bytes: usize,
    batch: EncodedBatch,
    deadline: Instant,
    /// Whether an earlier batch was unanswered when this one was last sent: it may have
    /// overtaken it.
    sent_behind: bool,
    request: JoinHandle<Answer>,
}

/// What to do after the front batch failed.
enum Failure {
    /// Retriable: wait for the rest, send every batch not stored again, same sequences.
    Retry,
    /// It overtook an earlier batch: send it (and the rest) again at once, same sequences.
    Overtook,
    /// Nothing of it was stored and it will not be: answer its records with the error, give
    /// its sequence numbers to the batches behind it.
    Refused,
    /// The partition expects an earlier sequence: a new epoch, from 0.
    OutOfSequence,
    /// A newer epoch of the producer id wrote here: a new producer id.
    Fenced,
    /// It was stored before the batches the partition remembers: stored, offsets unknown.
    StoredEarlier,
}

fn classify(e: &ClientError, idempotent: bool, sent_behind: bool) -> Failure {
    match e.reason() {
        Some("OUT_OF_ORDER_SEQUENCE") if idempotent && sent_behind => Failure::Overtook,
        Some("OUT_OF_ORDER_SEQUENCE") if idempotent => Failure::OutOfSequence,
        Some("INVALID_PRODUCER_EPOCH" | "UNKNOWN_PRODUCER_ID") if idempotent => Failure::Fenced,
        Some("DUPLICATE_SEQUENCE_NUMBER") if idempotent => Failure::StoredEarlier,
        _ if e.is_retriable() => Failure::Retry,
        _ => Failure::Refused,
    }
}

/// One partition's sender task.
pub(super) struct Sender {
    inner: Arc<Inner>,
    queue: Arc<PartitionQueue>,
    sequence: Option<Sequence>,
    window: VecDeque<InFlight>,
    backoff: Duration,
}

impl Sender {
    pub(super) fn new(inner: Arc<Inner>, queue: Arc<PartitionQueue>) -> Self {
        let backoff = inner.config.retry_backoff;
        Self {
            inner,
            queue,
            sequence: None,
            window: VecDeque::new(),
            backoff,
        }
    }

    /// Runs until the producer is dropped and every batch is answered.
    pub(super) async fn run(mut self) {
        let queue = self.queue.clone();
        let linger = self.inner.config.linger;
        let mut open = true;
        loop {
            let room = self.window.len() < self.inner.window();
            if open && room {
                tokio::select! {
                    biased;
                    answer = front_answer(&mut self.window), if !self.window.is_empty() => {
                        self.on_answer(answer).await;
                    }
                    (next, lingered) = queue.next(linger) => match next {
                        Next::Batch(batch) => {
                            if lingered {
                                // The next keyless records go elsewhere, so they fill a batch
                                // of their own.
                                self.inner.batch_formed(queue.topic(), queue.partition());
                            }
                            self.send_new(batch).await;
                        }
                        Next::Closed => open = false,
                    },
                }
            } else if !self.window.is_empty() {
                let answer = front_answer(&mut self.window).await;
                self.on_answer(answer).await;
            } else if !open {
                return;
            }
        }
    }

    /// Encodes and sends a new batch with the next sequence numbers.
    async fn send_new(&mut self, batch: Batch) {
        let Batch {
            records,
            bytes,
            answers,
            ..
        } = batch;
        let count = records.len();
        let sequence = match self.sequence().await {
            Ok(sequence) => sequence,
            Err(e) => return self.inner.answer(answers, count, bytes, failed(e)),
        };
        let stamp = sequence.take(count);
        let batch = match encode(records, stamp) {
            Ok(batch) => batch,
            Err(e) => {
                // Never sent: give the sequence numbers back.
                if let (Some(sequence), Some(stamp)) = (self.sequence.as_mut(), stamp) {
                    sequence.rewind(stamp.base_sequence);
                }
                return self.inner.answer(answers, count, bytes, failed(e));
            }
        };
        let deadline = Instant::now() + self.inner.config.delivery_timeout;
        let sent_behind = !self.window.is_empty();
        let request = self.request(batch.bytes().clone());
        self.window.push_back(InFlight {
            answers,
            count,
            bytes,
            batch,
            deadline,
            sent_behind,
            request,
        });
    }

    /// The partition's sequencing, asking for a producer id first when idempotent.
    async fn sequence(&mut self) -> Result<&mut Sequence, ClientError> {
        if self.sequence.is_none() {
            let producer = match self.inner.idempotent() {
                true => Some(self.inner.producer_id().await?),
                false => None,
            };
            self.sequence = Some(Sequence::new(producer));
        }
        Ok(self.sequence.get_or_insert_with(|| Sequence::new(None)))
    }

    fn request(&self, batch: Bytes) -> JoinHandle<Answer> {
        let client = self.inner.client.clone();
        let (topic, partition) = (self.queue.topic().to_string(), self.queue.partition());
        let (acks, timeout) = (self.inner.config.acks, self.inner.config.request_timeout);
        tokio::spawn(async move {
            match tokio::time::timeout(timeout, client.produce_batch(topic, partition, batch, acks))
                .await
            {
                Ok(answer) => answer,
                Err(_) => Err(ClientError::from(tonic::Status::deadline_exceeded(
                    format!(
                        "no answer to a produce request within {timeout:?}; it may still be stored"
                    ),
                ))),
            }
        })
    }

    async fn on_answer(&mut self, answer: Answer) {
        let Some(front) = self.window.pop_front() else {
            return;
        };
        let error = match answer {
            Ok(outcome) => {
                self.backoff = self.inner.config.retry_backoff;
                return self.inner.stored(front, outcome);
            }
            Err(e) => e,
        };
        let idempotent = self.sequence.as_ref().is_some_and(Sequence::is_idempotent);
        match classify(&error, idempotent, front.sent_behind) {
            Failure::StoredEarlier => {
                let outcome = ProduceOutcome {
                    partition: self.queue.partition(),
                    base_offset: None,
                    record_count: front.count as u32,
                    duplicate: true,
                    rejected: Vec::new(),
                };
                self.inner.stored(front, outcome);
            }
            Failure::Overtook if Instant::now() < front.deadline => {
                let unstored = self.drain(front).await;
                for batch in unstored {
                    self.resend(batch, None);
                }
            }
            Failure::Overtook => self.inner.failed(front, error),
            Failure::Retry if Instant::now() + self.backoff < front.deadline => {
                let unstored = self.drain(front).await;
                tokio::time::sleep(self.backoff).await;
                self.backoff = (self.backoff * 2).min(Duration::from_secs(1));
                for batch in unstored {
                    self.resend(batch, None);
                }
            }
            // Out of time: the records fail with what was last heard, which may be an unknown
            // outcome. The batches behind go on; if this one was not stored they meet
            // OUT_OF_ORDER_SEQUENCE, and a new epoch follows.
            Failure::Retry => self.inner.failed(front, error),
            Failure::Refused => {
                let first = front.batch.header().base_sequence;
                self.inner.failed(front, error);
                if idempotent {
                    let unstored = self.drain_behind().await;
                    if let Some(sequence) = self.sequence.as_mut() {
                        sequence.rewind(first);
                    }
                    self.resequence(unstored);
                }
            }
            Failure::OutOfSequence => {
                let unstored = self.drain(front).await;
                let renewed = self.sequence.as_mut().is_some_and(Sequence::new_epoch);
                if !renewed {
                    return self.fail_all(unstored, error);
                }
                tracing::warn!(topic = %self.queue.topic(), partition = self.queue.partition(), "the partition expects a sequence this producer gave up on; continuing in a new epoch");
                self.resequence(unstored);
            }
            Failure::Fenced => {
                let unstored = self.drain(front).await;
                match self.inner.client.init_producer_id().await {
                    Ok(producer) => {
                        tracing::warn!(topic = %self.queue.topic(), partition = self.queue.partition(), error = %error, "producer fenced on this partition; continuing with a new producer id");
                        if let Some(sequence) = self.sequence.as_mut() {
                            sequence.reset(producer);
                        }
                        self.resequence(unstored);
                    }
                    Err(_) => self.fail_all(unstored, error),
                }
            }
        }
    }

    /// Waits for every batch behind `front`; answers those stored and returns, with `front`
    /// first, those that are not, in order.
    async fn drain(&mut self, front: InFlight) -> Vec<InFlight> {
        let mut unstored = vec![front];
        unstored.extend(self.drain_behind().await);
        unstored
    }

    /// Waits for every batch in the window; answers those stored and returns the rest.
    async fn drain_behind(&mut self) -> Vec<InFlight> {
        let mut unstored = Vec::new();
        while let Some(mut batch) = self.window.pop_front() {
            match (&mut batch.request).await {
                Ok(Ok(outcome)) => self.inner.stored(batch, outcome),
                _ => unstored.push(batch),
            }
        }
        unstored
    }

    /// Gives `batches` the next sequence numbers (in order) and sends them again.
    fn resequence(&mut self, batches: Vec<InFlight>) {
        for batch in batches {
            let stamp = self.sequence.as_mut().and_then(|s| s.take(batch.count));
            self.resend(batch, stamp);
        }
    }

    /// Sends `batch` again, with `stamp` as its producer fields if given.
    fn resend(&mut self, mut batch: InFlight, stamp: Option<ProducerStamp>) {
        if let Some(stamp) = stamp {
            batch.batch = batch.batch.with_producer(stamp);
        }
        batch.sent_behind = !self.window.is_empty();
        batch.request = self.request(batch.batch.bytes().clone());
        self.window.push_back(batch);
    }

    fn fail_all(&mut self, batches: Vec<InFlight>, error: ClientError) {
        let error = Arc::new(error);
        for batch in batches {
            self.inner.answer(
                batch.answers,
                batch.count,
                batch.bytes,
                BatchAnswer::failed(error.clone()),
            );
        }
    }
}

/// The answer of the window's front batch.
async fn front_answer(window: &mut VecDeque<InFlight>) -> Answer {
    match window.front_mut() {
        Some(front) => (&mut front.request).await.unwrap_or_else(|e| {
            Err(ClientError::InvalidArgument(format!(
                "the produce task failed: {e}"
            )))
        }),
        // Not polled with an empty window (see the callers).
        None => std::future::pending().await,
    }
}

/// Encodes `records` as one batch. Timestamps not set are the producer's clock now, as in
/// Kafka's clients.
pub(super) fn encode(
    records: Vec<ProducerRecord>,
    stamp: Option<ProducerStamp>,
) -> Result<EncodedBatch, ClientError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let records: Vec<Record> = records
        .into_iter()
        .map(|record| Record {
            key: record.key,
            value: record.value,
            headers: record
                .headers
                .into_iter()
                .map(|(key, value)| Header { key, value })
                .collect(),
            timestamp_ms: record.timestamp_ms.unwrap_or(now),
            // Encoded as a null value; `Producer::enqueue` refused a tombstone with a value.
            tombstone: record.tombstone,
        })
        .collect();
    // The broker applies its own limits and refuses what is over them.
    let limits = BatchLimits {
        max_record_bytes: usize::MAX,
        max_batch_bytes: usize::MAX,
    };
    BatchEncoder::new(limits)
        .with_producer(stamp)
        .encode(&records)
        .map_err(|e| ClientError::InvalidArgument(format!("cannot encode the batch: {e}")))
}

fn failed(error: ClientError) -> BatchAnswer {
    BatchAnswer::failed(Arc::new(error))
}

impl Inner {
    /// Answers the records of a batch the partition stored.
    fn stored(&self, batch: InFlight, outcome: ProduceOutcome) {
        let answer = BatchAnswer::stored(outcome, batch.count);
        self.answer(batch.answers, batch.count, batch.bytes, answer);
    }

    /// Answers the records of a batch that was not stored with `error` (those a produce chain
    /// rejected, under `RECORD_REJECTED`, with their rejection).
    fn failed(&self, batch: InFlight, error: ClientError) {
        self.answer(batch.answers, batch.count, batch.bytes, failed(error));
    }

    /// Answers a batch of `count` records and `bytes` payload bytes, giving its bytes back to
    /// the buffer.
    fn answer(&self, answers: Answers, count: usize, bytes: usize, answer: BatchAnswer) {
        answers.answer(answer);
        self.answered(count, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn producer(epoch: i16) -> ProducerId {
        ProducerId { id: 7, epoch }
    }

    #[test]
    fn batches_take_consecutive_sequences_and_a_refused_one_gives_them_back() {
        let mut s = Sequence::new(Some(producer(0)));
        assert_eq!(s.take(3).map(|p| p.base_sequence), Some(0));
        let refused = s.take(2).map(|p| p.base_sequence);
        assert_eq!(refused, Some(3));
        assert_eq!(s.take(1).map(|p| p.base_sequence), Some(5));
        s.rewind(3);
        assert_eq!(s.take(1).map(|p| p.base_sequence), Some(3));
    }

    #[test]
    fn a_new_epoch_starts_at_zero_and_sequences_wrap() {
        let mut s = Sequence::new(Some(producer(0)));
        s.take(10);
        assert!(s.new_epoch());
        let stamp = s.take(1).unwrap();
        assert_eq!((stamp.producer_epoch, stamp.base_sequence), (1, 0));
        let mut last = Sequence::new(Some(producer(i16::MAX)));
        assert!(
            !last.new_epoch(),
            "the epoch cannot grow: a new id is needed"
        );
        let mut wrapping = Sequence::new(Some(producer(0)));
        wrapping.rewind(i32::MAX - 1);
        wrapping.take(3);
        assert_eq!(wrapping.take(1).map(|p| p.base_sequence), Some(1));
        assert_eq!(Sequence::new(None).take(5), None);
    }

    #[test]
    fn failures_are_classified_by_reason() {
        let status = |reason| -> ClientError {
            weir_proto::error::status_with_reason(tonic::Code::Unknown, "m", reason, []).into()
        };
        let cases = [
            ("OUT_OF_ORDER_SEQUENCE", true, false, "out of sequence"),
            ("OUT_OF_ORDER_SEQUENCE", true, true, "overtook"),
            ("OUT_OF_ORDER_SEQUENCE", false, false, "refused"),
            ("INVALID_PRODUCER_EPOCH", true, false, "fenced"),
            ("DUPLICATE_SEQUENCE_NUMBER", true, false, "stored earlier"),
            ("DUPLICATE_SEQUENCE_NUMBER", false, false, "refused"),
            ("NOT_LEADER", true, true, "retry"),
            ("OUTCOME_UNKNOWN", false, false, "retry"),
            ("INVALID_RECORD", true, false, "refused"),
        ];
        for (reason, idempotent, sent_behind, expected) in cases {
            let got = match classify(&status(reason), idempotent, sent_behind) {
                Failure::Retry => "retry",
                Failure::Overtook => "overtook",
                Failure::Refused => "refused",
                Failure::OutOfSequence => "out of sequence",
                Failure::Fenced => "fenced",
                Failure::StoredEarlier => "stored earlier",
            };
            assert_eq!(
                got, expected,
                "{reason} idempotent={idempotent} behind={sent_behind}"
            );
        }
    }
}
