//! One partition's batches being formed: records are appended to the open batch as they are
//! enqueued (Kafka's record accumulator), and the partition's sender takes a batch once it is
//! full or has lingered, so the sender is woken once per batch rather than once per record.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use weir_types::BATCH_HEADER_LEN;

use super::delivery::{Answers, Delivery};
use super::{ProducerConfig, lock};
use crate::ProducerRecord;

/// A batch being formed, or formed and waiting for its sender.
pub(super) struct Batch {
    pub(super) records: Vec<ProducerRecord>,
    /// The records' payload bytes, held in the producer's buffer until the batch is answered.
    pub(super) bytes: usize,
    /// The most bytes the batch takes encoded (its header, and each record at its widest).
    encoded_bound: usize,
    pub(super) answers: Answers,
    /// When its first record arrived; it is sent at the latest a linger after.
    started: Instant,
}

impl Batch {
    fn is_full(&self, config: &ProducerConfig) -> bool {
        self.records.len() >= config.batch_max_records
            || self.encoded_bound >= config.batch_max_bytes
    }

    /// Whether a record taking `encoded` bytes at most would take it over a bound (a record
    /// larger than a whole batch still goes, alone).
    fn overflows_with(&self, encoded: usize, config: &ProducerConfig) -> bool {
        !self.records.is_empty()
            && (self.records.len() >= config.batch_max_records
                || self.encoded_bound.saturating_add(encoded) > config.batch_max_bytes)
    }
}

#[derive(Default)]
struct Batches {
    open: Option<Batch>,
    formed: VecDeque<Batch>,
    /// No record will be appended any more: the producer was dropped.
    closed: bool,
}

impl Batches {
    /// Moves the open batch to the formed ones.
    fn form(&mut self) {
        if let Some(open) = self.open.take() {
            self.formed.push_back(open);
        }
    }
}

/// What [`PartitionQueue::next`] found.
pub(super) enum Next {
    Batch(Batch),
    /// The producer was dropped and every batch was taken.
    Closed,
}

/// The batches of one partition, shared by the producer (appending) and the partition's sender
/// (taking).
pub(super) struct PartitionQueue {
    topic: Arc<str>,
    partition: u32,
    batches: Mutex<Batches>,
    /// Woken when a batch starts or is formed, and when the producer is dropped.
    changed: Notify,
}

impl PartitionQueue {
    pub(super) fn new(topic: Arc<str>, partition: u32) -> Self {
        Self {
            topic,
            partition,
            batches: Mutex::default(),
            changed: Notify::new(),
        }
    }

    pub(super) fn topic(&self) -> &Arc<str> {
        &self.topic
    }

    pub(super) fn partition(&self) -> u32 {
        self.partition
    }

    /// Appends `record` (of `bytes` payload bytes) to the open batch, forming it first if the
    /// record would overflow it, and after if it is then full. Returns the record's delivery
    /// and whether a batch was formed.
    pub(super) fn append(
        &self,
        record: ProducerRecord,
        bytes: usize,
        config: &ProducerConfig,
    ) -> (Delivery, bool) {
        let encoded = record.encoded_len_bound();
        let mut batches = lock(&self.batches);
        let mut formed = false;
        if batches
            .open
            .as_ref()
            .is_some_and(|open| open.overflows_with(encoded, config))
        {
            batches.form();
            formed = true;
        }
        let started = batches.open.is_none();
        let open = batches.open.get_or_insert_with(|| Batch {
            records: Vec::new(),
            bytes: 0,
            encoded_bound: BATCH_HEADER_LEN,
            answers: Answers::new(self.topic.clone(), self.partition),
            started: Instant::now(),
        });
        let delivery = open.answers.delivery(open.records.len() as u32);
        open.records.push(record);
        open.bytes = open.bytes.saturating_add(bytes);
        open.encoded_bound = open.encoded_bound.saturating_add(encoded);
        if open.is_full(config) {
            batches.form();
            formed = true;
        }
        drop(batches);
        if started || formed {
            self.changed.notify_one();
        }
        (delivery, formed)
    }

    /// No more records: the sender takes what is left at once, then ends.
    pub(super) fn close(&self) {
        let mut batches = lock(&self.batches);
        batches.closed = true;
        batches.form();
        drop(batches);
        self.changed.notify_one();
    }

    /// The next batch to send: a formed one at once, the open one once it has lingered.
    /// Returns whether the batch was formed by lingering (not by filling up) too.
    pub(super) async fn next(&self, linger: Duration) -> (Next, bool) {
        loop {
            let lingered_until = {
                let mut batches = lock(&self.batches);
                if let Some(batch) = batches.formed.pop_front() {
                    return (Next::Batch(batch), false);
                }
                let now = Instant::now();
                if let Some(batch) = batches.open.take_if(|open| open.started + linger <= now) {
                    return (Next::Batch(batch), true);
                }
                match &batches.open {
                    Some(open) => Some(open.started + linger),
                    None if batches.closed => return (Next::Closed, false),
                    None => None,
                }
            };
            // `notify_one` keeps a wake-up for a sender not waiting yet, so a batch started or
            // formed between the look above and this wait is not missed.
            match lingered_until {
                Some(deadline) => {
                    tokio::select! {
                        () = self.changed.notified() => {}
                        () = tokio::time::sleep_until(deadline) => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DEFAULT_BATCH_MAX_BYTES;
    use crate::producer::sender::encode;

    /// A batch formed by size is as large as the bound allows once encoded, and no larger: at
    /// the default bound the broker stores it in one 1 MiB run of pages.
    #[test]
    fn a_full_batch_encodes_within_the_batch_bound_and_nearly_fills_it() {
        let config = ProducerConfig::default();
        let queue = PartitionQueue::new("t".into(), 0);
        let record = |i: usize| {
            ProducerRecord::new(vec![b'v'; 1000 + i % 50])
                .with_key(format!("key-{i}"))
                .with_header("trace", "0123456789")
        };
        let mut i = 0;
        let formed = loop {
            let record = record(i);
            let bytes = record.payload_len();
            let (_, formed) = queue.append(record, bytes, &config);
            i += 1;
            if formed {
                break lock(&queue.batches)
                    .formed
                    .pop_front()
                    .expect("a formed batch");
            }
        };
        let count = formed.records.len();
        let encoded = encode(formed.records, None).expect("encode").bytes().len();
        assert!(encoded <= DEFAULT_BATCH_MAX_BYTES, "{encoded} bytes");
        assert!(
            encoded > DEFAULT_BATCH_MAX_BYTES / 100 * 98,
            "{encoded} bytes in {count} records"
        );
        assert_eq!(DEFAULT_BATCH_MAX_BYTES, 1024 * 1024 - 4096);
    }
}
