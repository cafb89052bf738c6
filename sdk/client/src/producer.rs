//! [`Producer`]: batches records per partition and sends them in the background, idempotently
//! by default, with linger, size bounds, a window of requests in flight per partition, and
//! retries.

mod accumulator;
mod delivery;
mod sender;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, OnceCell, Semaphore};
use tokio::time::Instant;

use self::accumulator::PartitionQueue;
pub use self::delivery::Delivery;
use self::sender::Sender;
use crate::{Acks, Client, ClientError, ProducerId, ProducerRecord, RejectedRecord};

/// Batches in flight per partition at most with idempotence: a partition remembers the last 5
/// batches of each producer, so a retry is always of one it remembers.
pub const MAX_IN_FLIGHT_IDEMPOTENT: usize = 5;

/// The default [`ProducerConfig::batch_max_bytes`]: 1 MiB less what the broker stores beside a
/// batch, so that a full batch fills one 1 MiB run of the broker's pages.
pub const DEFAULT_BATCH_MAX_BYTES: usize = 1024 * 1024 - weir_types::STORED_BATCH_OVERHEAD;

/// How a [`Producer`] batches, retries and bounds its memory.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a partition's batch waits for more records before it is sent (Kafka's
    /// `linger.ms`); 5 ms by default.
    pub linger: Duration,
    /// A batch is sent before a record would take it over this many bytes encoded (Kafka's
    /// `batch.size`: the batch header and the records' framing count, each record at its
    /// widest); [`DEFAULT_BATCH_MAX_BYTES`] by default. The broker refuses batches over its
    /// `limits.max_batch_bytes`, 8 MiB by default. A size just under a power of two, less
    /// [`codec::STORED_BATCH_OVERHEAD`](crate::codec::STORED_BATCH_OVERHEAD), fills the broker's storage pages; one just over
    /// it writes twice as many bytes.
    pub batch_max_bytes: usize,
    /// A batch is sent once it holds this many records; unbounded by default.
    pub batch_max_records: usize,
    /// The acknowledgement level.
    pub acks: Acks,
    /// Each record sent is stored once, in send order per partition, across retries, leader
    /// failover and broker restarts (Kafka's `enable.idempotence`); on by default. Needs
    /// acknowledgements: with [`Acks::None`] it is off.
    pub idempotence: bool,
    /// Batches in flight per partition (Kafka's `max.in.flight.requests.per.connection`): 5 by
    /// default, and at most [`MAX_IN_FLIGHT_IDEMPOTENT`] with idempotence. Without idempotence
    /// a partition has one batch in flight, so a retry cannot reorder records.
    pub max_in_flight: usize,
    /// Payload bytes buffered and not yet acknowledged; `send` waits while they are over
    /// this. 32 MiB by default.
    pub buffer_max_bytes: usize,
    /// The first retry's backoff, doubling up to 1 s; 100 ms by default.
    pub retry_backoff: Duration,
    /// How long one produce request may go unanswered before it counts as failed with an
    /// unknown outcome (and is retried); 30 s by default.
    pub request_timeout: Duration,
    /// A record not acknowledged this long after its batch was formed fails with the last
    /// error; 30 s by default.
    pub delivery_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            linger: Duration::from_millis(5),
            batch_max_bytes: DEFAULT_BATCH_MAX_BYTES,
            batch_max_records: usize::MAX,
            acks: Acks::All,
            idempotence: true,
            max_in_flight: MAX_IN_FLIGHT_IDEMPOTENT,
            buffer_max_bytes: 32 * 1024 * 1024,
            retry_backoff: Duration::from_millis(100),
            request_timeout: Duration::from_secs(30),
            delivery_timeout: Duration::from_secs(30),
        }
    }
}

/// Where an acknowledged record was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The topic (shared by the records of a batch).
    pub topic: Arc<str>,
    /// The partition.
    pub partition: u32,
    /// Its offset; `None` with [`Acks::None`], or when the topic's produce chain changed the
    /// batch so that offsets no longer follow the records one to one.
    pub offset: Option<u64>,
}

/// Why a record was not delivered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    /// The request failed (after the retries retriable errors get); every record of its batch
    /// gets the same error, except those a produce chain rejected.
    #[error(transparent)]
    Failed(Arc<ClientError>),
    /// The topic's produce chain rejected the record: it dropped it or sent it to a
    /// dead-letter topic ([`RejectAction::Drop`](crate::RejectAction::Drop),
    /// [`DeadLetter`](crate::RejectAction::DeadLetter)), or refused its whole batch
    /// ([`RejectAction::Reject`](crate::RejectAction::Reject): nothing of the batch was stored,
    /// and its other records fail with the `RECORD_REJECTED` error).
    #[error("record rejected by {}: {}", .0.module, .0.reason)]
    Rejected(RejectedRecord),
    /// The producer's background task ended before the record's batch was answered (its
    /// runtime shut down). Records enqueued before the producer was dropped are still sent.
    #[error("the producer's task ended before the record was answered")]
    Closed,
}

/// A batching producer, following the Kafka producer's model: records are grouped per
/// partition and sent by a background task per partition.
///
/// - Idempotence (on by default, [`ProducerConfig::idempotence`]): **each record sent is stored
///   once, in send order per partition, across retries, leader failover and broker restarts.**
///   The producer asks the cluster for a producer id, numbers the records it sends to each
///   partition, and the partition's leader stores a batch only if it continues the sequence:
///   a retry of a stored batch is answered with its original offsets and stores nothing.
///   Records whose [`Delivery`] fails (after the delivery timeout) may or may not have been
///   stored; no other record is stored twice or out of order.
/// - Partitioning: a record's partition is the one it names ([`ProducerRecord::with_partition`]),
///   else its key chooses with Kafka's default partitioner, `(murmur2(key) & 0x7fffffff) %
///   partitions`, the same function the broker uses, so equal keys always share a partition
///   (while the partition count stays the same) and land where Kafka would put them. Records
///   without either stick to one partition until its batch is formed, then move to the next
///   (Kafka's sticky partitioner), so they form full batches.
/// - Batches are Kafka record batches the producer encodes ([`Client::produce_batch`]); up to
///   [`ProducerConfig::max_in_flight`] per partition are in flight at once.
/// - Retries: a batch failing with a retriable error ([`ClientError::is_retriable`]) is sent
///   again after a backoff until [`ProducerConfig::delivery_timeout`]. Without idempotence a
///   request that timed out or ended `OUTCOME_UNKNOWN` may have been stored, so a retry can
///   duplicate records. Records are never lost silently: each one's [`Delivery`] says whether
///   it was stored.
///
/// ```no_run
/// use weir_client::{Client, Producer, ProducerConfig, ProducerRecord};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let producer = Producer::new(Client::connect("127.0.0.1:7070").await?, ProducerConfig::default());
/// // One record, waiting for its offset:
/// let stored = producer.send("orders", ProducerRecord::new("first").with_key("customer-7")).await?;
/// println!("partition {} offset {:?}", stored.partition, stored.offset);
/// // Many, pipelined: enqueue returns once buffered; the deliveries resolve later.
/// let mut deliveries = Vec::new();
/// for i in 0..10_000 {
///     deliveries.push(producer.enqueue("orders", ProducerRecord::new(format!("{i}"))).await?);
/// }
/// producer.flush().await;
/// for delivery in deliveries {
///     delivery.await?;
/// }
/// # Ok(())
/// # }
/// ```
///
/// Dropping the last clone of a producer sends what it holds at once (without waiting for the
/// linger), and its background tasks end once every batch is answered.
#[derive(Clone)]
pub struct Producer {
    handle: Arc<Handle>,
}

/// The producer's handles share this; its drop closes the partitions' queues.
struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        for topic in lock(&self.inner.topics).values() {
            for queue in topic.queues.iter().flatten() {
                queue.close();
            }
        }
    }
}

struct Inner {
    client: Client,
    config: ProducerConfig,
    /// What the producer keeps per topic sent to, looked up once per record (by the topic's
    /// `&str`, so no name is copied).
    topics: Mutex<HashMap<String, Topic>>,
    /// Payload bytes buffered and not yet answered; each record takes its bytes and its
    /// batch's answer gives them back.
    buffer: Semaphore,
    /// Records enqueued and not yet answered.
    outstanding: AtomicUsize,
    /// Woken when `outstanding` drops to zero, for [`Producer::flush`]. A counter and a
    /// notification rather than a watch channel: a watch wakes its receivers on every change,
    /// which cost a notification per record.
    drained: Notify,
    /// The producer id, asked for when the first batch is sent.
    producer_id: OnceCell<ProducerId>,
}

/// One topic's routing: its partition count (learnt when the first record is sent to it),
/// where its keyless records go now, and its partitions' batches, each with a sender task
/// (started with the partition's first record).
struct Topic {
    partitions: u32,
    sticky: Sticky,
    queues: Vec<Option<Arc<PartitionQueue>>>,
}

impl Topic {
    fn new(partitions: u32) -> Self {
        Self {
            partitions,
            // A random start, as Kafka's: many short-lived producers spread out.
            sticky: Sticky {
                partition: rand_partition(partitions),
                ..Sticky::default()
            },
            queues: vec![None; partitions as usize],
        }
    }

    /// The partition of `record` (of `bytes` payload bytes): the one it names, its key's, or
    /// the sticky one.
    fn partition_of(
        &mut self,
        topic: &str,
        record: &ProducerRecord,
        bytes: usize,
        config: &ProducerConfig,
    ) -> Result<u32, ClientError> {
        let count = self.partitions;
        if count == 0 {
            return Err(ClientError::InvalidArgument(format!(
                "topic '{topic}' has no partitions"
            )));
        }
        Ok(match (record.partition, &record.key) {
            (Some(partition), _) if partition < count => partition,
            (Some(partition), _) => {
                return Err(ClientError::InvalidArgument(format!(
                    "topic '{topic}' has no partition {partition} (it has {count})"
                )));
            }
            (None, Some(key)) => partition_for_key(key, count),
            (None, None) => self.sticky.assign(bytes, count, config),
        })
    }
}

/// Where a topic's records without key or partition go: one partition until a batch of them
/// is full (or a batch of that partition was formed), then the next (Kafka's sticky
/// partitioner, KIP-480 and KIP-794).
#[derive(Debug, Clone, Copy, Default)]
struct Sticky {
    partition: u32,
    records: usize,
    bytes: usize,
}

impl Sticky {
    /// The partition of the next record of `bytes`, moving on first if it would overflow the
    /// batch the records since the last move make.
    fn assign(&mut self, bytes: usize, partitions: u32, config: &ProducerConfig) -> u32 {
        let full = self.records >= config.batch_max_records
            || self.bytes.saturating_add(bytes) > config.batch_max_bytes;
        if self.records > 0 && full {
            self.move_on(partitions);
        }
        self.records += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        self.partition % partitions.max(1)
    }

    fn move_on(&mut self, partitions: u32) {
        self.partition = (self.partition + 1) % partitions.max(1);
        self.records = 0;
        self.bytes = 0;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    fn idempotent(&self) -> bool {
        self.config.idempotence && self.config.acks != Acks::None
    }

    /// Batches in flight per partition at most.
    fn window(&self) -> usize {
        if self.idempotent() {
            self.config.max_in_flight.clamp(1, MAX_IN_FLIGHT_IDEMPOTENT)
        } else {
            1
        }
    }

    /// The producer id, asked for once (retrying retriable failures until the delivery timeout).
    async fn producer_id(&self) -> Result<ProducerId, ClientError> {
        self.producer_id
            .get_or_try_init(|| async {
                let deadline = Instant::now() + self.config.delivery_timeout;
                let mut backoff = self.config.retry_backoff;
                loop {
                    match self.client.init_producer_id().await {
                        Err(e) if e.is_retriable() && Instant::now() + backoff < deadline => {
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(1));
                        }
                        other => return other,
                    }
                }
            })
            .await
            .copied()
    }

    /// Moves the topic's keyless records on from `partition` once a batch of it was formed.
    fn batch_formed(&self, topic: &str, partition: u32) {
        if let Some(topic) = lock(&self.topics).get_mut(topic)
            && topic.sticky.partition == partition
        {
            topic.sticky.move_on(topic.partitions);
        }
    }

    /// Counts `count` records of `bytes` payload bytes answered.
    fn answered(&self, count: usize, bytes: usize) {
        self.buffer.add_permits(bytes);
        if self.outstanding.fetch_sub(count, Ordering::AcqRel) == count {
            self.drained.notify_waiters();
        }
    }

    /// The queue of `record`'s partition of `topic` (its sender task started when new), or
    /// `None` while the topic's partition count is not known.
    fn route(
        self: &Arc<Self>,
        topic: &str,
        record: &ProducerRecord,
        bytes: usize,
    ) -> Option<Result<Arc<PartitionQueue>, ClientError>> {
        let mut topics = lock(&self.topics);
        let known = topics.get_mut(topic)?;
        let partition = match known.partition_of(topic, record, bytes, &self.config) {
            Ok(partition) => partition,
            Err(e) => return Some(Err(e)),
        };
        let queue = known.queues[partition as usize].get_or_insert_with(|| {
            let queue = Arc::new(PartitionQueue::new(topic.into(), partition));
            tokio::spawn(Sender::new(self.clone(), queue.clone()).run());
            queue
        });
        Some(Ok(queue.clone()))
    }
}

impl Producer {
    /// A producer over `client`.
    pub fn new(client: Client, config: ProducerConfig) -> Self {
        let buffer = Semaphore::new(config.buffer_max_bytes.max(1));
        let inner = Arc::new(Inner {
            client,
            config,
            topics: Mutex::default(),
            buffer,
            outstanding: AtomicUsize::new(0),
            drained: Notify::new(),
            producer_id: OnceCell::new(),
        });
        Self {
            handle: Arc::new(Handle { inner }),
        }
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.handle.inner
    }

    /// Sends one record and waits until it is acknowledged (batched with whatever else is
    /// being sent meanwhile).
    pub async fn send(
        &self,
        topic: &str,
        record: ProducerRecord,
    ) -> Result<RecordMetadata, DeliveryError> {
        self.enqueue(topic, record)
            .await
            .map_err(|e| DeliveryError::Failed(Arc::new(e)))?
            .await
    }

    /// Buffers one record for sending, waiting while the buffer is full, and returns its
    /// [`Delivery`]. Fails at once when the topic does not exist, the record names a partition
    /// the topic does not have, is a tombstone with a value, or is larger than the whole buffer.
    pub async fn enqueue(
        &self,
        topic: &str,
        record: ProducerRecord,
    ) -> Result<Delivery, ClientError> {
        if record.tombstone && !record.value.is_empty() {
            // Refused here: in a batch it would fail every record batched with it.
            return Err(ClientError::InvalidArgument(format!(
                "a tombstone carries no value, but this one has {} bytes",
                record.value.len()
            )));
        }
        let inner = self.inner();
        let bytes = record.payload_len().max(1);
        let queue = self.route(topic, &record, bytes).await?;
        if bytes > inner.config.buffer_max_bytes {
            return Err(ClientError::InvalidArgument(format!(
                "a record of {bytes} bytes is larger than the producer's buffer ({} bytes)",
                inner.config.buffer_max_bytes
            )));
        }
        // Given back when the record's batch is answered (`Inner::answered`), not per record.
        inner
            .buffer
            .acquire_many(bytes as u32)
            .await
            .map_err(|_| ClientError::InvalidArgument("the producer is closed".into()))?
            .forget();
        inner.outstanding.fetch_add(1, Ordering::AcqRel);
        let (delivery, formed) = queue.append(record, bytes, &inner.config);
        if formed {
            // The next keyless records go elsewhere, so they fill a batch of their own.
            inner.batch_formed(topic, queue.partition());
        }
        Ok(delivery)
    }

    /// Waits until every record enqueued so far has been answered (stored or failed).
    pub async fn flush(&self) {
        loop {
            // Registered before the count is read, so a drop to zero in between is not missed.
            let drained = self.inner().drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.inner().outstanding.load(Ordering::Acquire) == 0 {
                return;
            }
            drained.await;
        }
    }

    /// The queue of `record`'s partition of `topic`, asking the cluster for the topic's
    /// partition count the first time.
    async fn route(
        &self,
        topic: &str,
        record: &ProducerRecord,
        bytes: usize,
    ) -> Result<Arc<PartitionQueue>, ClientError> {
        let inner = self.inner();
        if let Some(routed) = inner.route(topic, record, bytes) {
            return routed;
        }
        let info = inner.client.describe_topic(topic).await?;
        let partitions = info.partitions.len() as u32;
        lock(&inner.topics)
            .entry(topic.to_owned())
            .or_insert_with(|| Topic::new(partitions));
        inner
            .route(topic, record, bytes)
            .expect("the topic was learnt above")
    }
}

/// A partition chosen from the clock's nanoseconds: random enough to spread the first batches
/// of many producers, with no dependency for it.
fn rand_partition(partitions: u32) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos % partitions.max(1)
}

/// Kafka's default partitioner (the broker's too): `(murmur2(key) & 0x7fffffff) % partitions`.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    weir_types::partition_for_key(key, partitions).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyless_records_fill_a_batch_per_partition_in_turn() {
        let config = ProducerConfig {
            batch_max_records: 3,
            batch_max_bytes: 100,
            ..ProducerConfig::default()
        };
        let mut sticky = Sticky::default();
        let partitions: Vec<u32> = (0..7).map(|_| sticky.assign(10, 3, &config)).collect();
        assert_eq!(partitions, [0, 0, 0, 1, 1, 1, 2]);
        // Bytes fill a batch too; a record larger than a batch still goes, alone.
        let mut sticky = Sticky::default();
        assert_eq!(sticky.assign(60, 3, &config), 0);
        assert_eq!(sticky.assign(60, 3, &config), 1);
        assert_eq!(sticky.assign(500, 3, &config), 2);
        assert_eq!(sticky.assign(1, 3, &config), 0);
    }
}
