//! [`Producer`]: batches records per partition and sends them in the background, with linger,
//! a batch size bound, retries and a bound on requests in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::{Acks, Client, ClientError, ProducerRecord, RejectedRecord};

/// How a [`Producer`] batches, retries and bounds its memory.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a partition's batch waits for more records before it is sent (Kafka's
    /// `linger.ms`); 5 ms by default.
    pub linger: Duration,
    /// A batch is sent once its records reach this many payload bytes; 1 MiB by default
    /// (the broker refuses requests over its `limits.max_batch_bytes`, 8 MiB by default).
    pub batch_max_bytes: usize,
    /// The acknowledgement level.
    pub acks: Acks,
    /// Produce requests in flight at once over all partitions; one per partition at most, so
    /// records of a partition are stored in the order sent. 5 by default.
    pub max_in_flight: usize,
    /// Payload bytes buffered and not yet acknowledged; `send` waits while they are over
    /// this. 32 MiB by default.
    pub buffer_max_bytes: usize,
    /// The first retry's backoff, doubling up to 1 s; 100 ms by default.
    pub retry_backoff: Duration,
    /// A record not acknowledged this long after it was sent fails with the last error;
    /// 30 s by default.
    pub delivery_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            linger: Duration::from_millis(5),
            batch_max_bytes: 1024 * 1024,
            acks: Acks::All,
            max_in_flight: 5,
            buffer_max_bytes: 32 * 1024 * 1024,
            retry_backoff: Duration::from_millis(100),
            delivery_timeout: Duration::from_secs(30),
        }
    }
}

/// Where an acknowledged record was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// Its offset; `None` with [`Acks::None`], or when the topic's produce chain changed the
    /// batch so that offsets no longer follow the records one to one.
    pub offset: Option<u64>,
}

/// Why a record was not delivered. Every record of a failed batch gets the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    /// The request failed (after the retries retriable errors get).
    #[error(transparent)]
    Failed(Arc<ClientError>),
    /// The topic's produce chain dropped the record or sent it to a dead-letter topic.
    #[error("record rejected by {}: {}", .0.module, .0.reason)]
    Rejected(RejectedRecord),
    /// The producer was dropped before the record was sent.
    #[error("the producer was closed before the record was sent")]
    Closed,
}

/// A record's acknowledgement, from [`Producer::enqueue`].
pub struct Delivery(oneshot::Receiver<Result<RecordMetadata, DeliveryError>>);

impl Future for Delivery {
    type Output = Result<RecordMetadata, DeliveryError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(DeliveryError::Closed)))
    }
}

/// A batching producer, following the Kafka producer's model: records are grouped per
/// partition and sent by a background task per partition.
///
/// - Partitioning: a record's key chooses its partition with Kafka's default partitioner,
///   `(murmur2(key) & 0x7fffffff) % partitions`, the same function the broker uses, so equal
///   keys always share a partition (while the partition count stays the same) and land where
///   Kafka would put them. Records without a key stick to one partition until its batch is
///   sent, then move to the next (Kafka's sticky partitioner), so they form full batches.
/// - Retries: a batch failing with a retriable error ([`ClientError::is_retriable`]) is sent
///   again after a backoff until [`ProducerConfig::delivery_timeout`]. Requests answered
///   `NOT_LEADER` were not stored and are simply resent to the new leader; but a request that
///   timed out or ended `OUTCOME_UNKNOWN` may have been stored, so a retry can **duplicate**
///   records (there is no idempotent producer yet). Records are never lost silently: each
///   one's [`Delivery`] says whether it was stored.
/// - Order: one request per partition at a time, so a partition stores records in the order
///   they were sent, retries included.
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
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    config: ProducerConfig,
    /// Partition counts of topics sent to.
    partitions: Mutex<HashMap<String, u32>>,
    /// The queue of each partition's sender task.
    queues: Mutex<HashMap<(String, u32), mpsc::UnboundedSender<Pending>>>,
    /// Where keyless records of each topic go now.
    sticky: Mutex<HashMap<String, u32>>,
    in_flight: Semaphore,
    buffer: Arc<Semaphore>,
    /// Records enqueued and not yet answered.
    outstanding: watch::Sender<usize>,
}

struct Pending {
    record: ProducerRecord,
    bytes: usize,
    done: oneshot::Sender<Result<RecordMetadata, DeliveryError>>,
    _buffered: tokio::sync::OwnedSemaphorePermit,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Producer {
    /// A producer over `client`.
    pub fn new(client: Client, config: ProducerConfig) -> Self {
        let in_flight = Semaphore::new(config.max_in_flight.max(1));
        let buffer = Arc::new(Semaphore::new(config.buffer_max_bytes.max(1)));
        Self {
            inner: Arc::new(Inner {
                client,
                config,
                partitions: Mutex::default(),
                queues: Mutex::default(),
                sticky: Mutex::default(),
                in_flight,
                buffer,
                outstanding: watch::Sender::new(0),
            }),
        }
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
    /// [`Delivery`]. Fails at once when the topic does not exist or the record is larger than
    /// the whole buffer.
    pub async fn enqueue(
        &self,
        topic: &str,
        record: ProducerRecord,
    ) -> Result<Delivery, ClientError> {
        let partition = self.partition_for(topic, &record).await?;
        let bytes = record.payload_len().max(1);
        if bytes > self.inner.config.buffer_max_bytes {
            return Err(ClientError::InvalidArgument(format!(
                "a record of {bytes} bytes is larger than the producer's buffer ({} bytes)",
                self.inner.config.buffer_max_bytes
            )));
        }
        let permit = self
            .inner
            .buffer
            .clone()
            .acquire_many_owned(bytes as u32)
            .await
            .map_err(|_| ClientError::InvalidArgument("the producer is closed".into()))?;
        let (done, delivery) = oneshot::channel();
        self.inner.outstanding.send_modify(|n| *n += 1);
        let pending = Pending {
            record,
            bytes,
            done,
            _buffered: permit,
        };
        let key = (topic.to_owned(), partition);
        let mut queues = lock(&self.inner.queues);
        let queue = queues.entry(key.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run_partition(self.inner.clone(), key.0.clone(), key.1, rx));
            tx
        });
        if let Err(mpsc::error::SendError(pending)) = queue.send(pending) {
            // The task ended (it never does while the producer lives); answer here.
            self.inner.outstanding.send_modify(|n| *n -= 1);
            let _ = pending.done.send(Err(DeliveryError::Closed));
        }
        Ok(Delivery(delivery))
    }

    /// Waits until every record enqueued so far has been answered (stored or failed).
    pub async fn flush(&self) {
        let mut outstanding = self.inner.outstanding.subscribe();
        let _ = outstanding.wait_for(|n| *n == 0).await;
    }

    async fn partition_for(
        &self,
        topic: &str,
        record: &ProducerRecord,
    ) -> Result<u32, ClientError> {
        let known = lock(&self.inner.partitions).get(topic).copied();
        let count = match known {
            Some(count) => count,
            None => {
                let info = self.inner.client.describe_topic(topic).await?;
                let count = info.partitions.len() as u32;
                lock(&self.inner.partitions).insert(topic.to_owned(), count);
                count
            }
        };
        Ok(match &record.key {
            Some(key) => partition_for_key(key, count),
            None => {
                *lock(&self.inner.sticky)
                    .entry(topic.to_owned())
                    .or_insert(0)
                    % count.max(1)
            }
        })
    }
}

/// Kafka's default partitioner (the broker's too): `(murmur2(key) & 0x7fffffff) % partitions`.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    weir_types::partition_for_key(key, partitions).0
}

/// One partition's sender: collects a batch (up to the size bound or the linger), sends it
/// with retries, answers every record, and starts over.
async fn run_partition(
    inner: Arc<Inner>,
    topic: String,
    partition: u32,
    mut queue: mpsc::UnboundedReceiver<Pending>,
) {
    while let Some(first) = queue.recv().await {
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        let linger_until = Instant::now() + inner.config.linger;
        while bytes < inner.config.batch_max_bytes {
            match tokio::time::timeout_at(linger_until, queue.recv()).await {
                Ok(Some(next)) => {
                    bytes += next.bytes;
                    batch.push(next);
                }
                Ok(None) | Err(_) => break,
            }
        }
        // The next keyless records go elsewhere, so they fill a batch of their own.
        {
            let partitions = lock(&inner.partitions).get(&topic).copied().unwrap_or(1);
            let mut sticky = lock(&inner.sticky);
            if let Some(current) = sticky.get_mut(&topic)
                && *current == partition
            {
                *current = (partition + 1) % partitions.max(1);
            }
        }
        let answers = send_batch(&inner, &topic, partition, &batch).await;
        let count = batch.len();
        for (pending, answer) in batch.into_iter().zip(answers) {
            let _ = pending.done.send(answer);
        }
        inner.outstanding.send_modify(|n| *n -= count);
    }
}

/// Sends one batch, retrying retriable failures; returns each record's answer.
async fn send_batch(
    inner: &Inner,
    topic: &str,
    partition: u32,
    batch: &[Pending],
) -> Vec<Result<RecordMetadata, DeliveryError>> {
    let records: Vec<ProducerRecord> = batch.iter().map(|p| p.record.clone()).collect();
    let deadline = Instant::now() + inner.config.delivery_timeout;
    let mut backoff = inner.config.retry_backoff;
    let outcome = loop {
        let result = {
            let _permit = inner.in_flight.acquire().await;
            inner
                .client
                .produce(topic, Some(partition), records.clone(), inner.config.acks)
                .await
        };
        match result {
            Err(e) if e.is_retriable() && Instant::now() + backoff < deadline => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            other => break other,
        }
    };
    match outcome {
        Ok(outcome) => {
            let one_to_one =
                outcome.rejected.is_empty() && outcome.record_count as usize == batch.len();
            let mut rejected: HashMap<u32, RejectedRecord> =
                outcome.rejected.into_iter().map(|r| (r.index, r)).collect();
            (0..batch.len())
                .map(|i| match rejected.remove(&(i as u32)) {
                    Some(r) => Err(DeliveryError::Rejected(r)),
                    None => Ok(RecordMetadata {
                        topic: topic.to_owned(),
                        partition,
                        offset: outcome
                            .base_offset
                            .filter(|_| one_to_one)
                            .map(|base| base + i as u64),
                    }),
                })
                .collect()
        }
        Err(e) => {
            let e = Arc::new(e);
            batch
                .iter()
                .map(|_| Err(DeliveryError::Failed(e.clone())))
                .collect()
        }
    }
}
