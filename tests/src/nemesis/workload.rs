//! The nemesis workload: writers appending unique values, readers following every partition,
//! and a consumer group that reads, commits, and has its committed offsets audited. Each task
//! records what it did and saw in the [`History`] and runs until told to stop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weir_client::{
    Client, Consumer, ConsumerConfig, FetchSpec, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, TopicPartition,
};

use super::TOPIC;
use super::history::{Append, Commit, CommittedView, History, Outcome, Read};

/// The consumer group of the workload.
pub(super) const GROUP: &str = "nemesis";

/// Keys a keyed writer cycles through.
const KEYS_PER_WRITER: u64 = 8;

/// One writer: an idempotent producer appending unique values until told to stop, recording
/// every outcome. An unkeyed writer names a random partition for each record; a `keyed` one
/// gives each record one of its keys and lets the producer's partitioner choose, so its
/// records' order in a partition is also their per-key order, and the partition it expects
/// (Kafka's default partitioner) is checked by where they are stored.
pub(super) async fn write(
    writer: u32,
    keyed: bool,
    seed: u64,
    addr: String,
    partitions: u32,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let client = connect(&addr).await?;
    let producer = Producer::new(
        client,
        ProducerConfig {
            request_timeout: Duration::from_secs(3),
            delivery_timeout: Duration::from_secs(10),
            ..ProducerConfig::default()
        },
    );
    let mut deliveries = tokio::task::JoinSet::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let value = format!("w{writer}-{seq}");
        let (partition, record) = if keyed {
            let key = format!("w{writer}-k{}", seq % KEYS_PER_WRITER);
            let partition = weir_types::partition_for_key(key.as_bytes(), partitions).0;
            let record = ProducerRecord::new(Bytes::from(value.clone())).with_key(key);
            (partition, record)
        } else {
            let partition = rng.random_range(0..partitions);
            let record = ProducerRecord {
                partition: Some(partition),
                ..ProducerRecord::new(Bytes::from(value.clone()))
            };
            (partition, record)
        };
        let mut append = Append {
            writer,
            seq,
            partition,
            value,
            outcome: Outcome::Failed,
        };
        seq += 1;
        match producer.enqueue(TOPIC, record).await {
            Ok(delivery) => {
                let history = history.clone();
                deliveries.spawn(async move {
                    append.outcome = match delivery.await {
                        Ok(meta) => meta
                            .offset
                            .map_or(Outcome::Unknown, |offset| Outcome::Ok { offset }),
                        Err(_) => Outcome::Failed,
                    };
                    history.append(append);
                });
            }
            Err(_) => history.append(append),
        }
        // Reap what was answered, so a long run holds only what is in flight.
        while let Some(done) = deliveries.try_join_next() {
            done?;
        }
        // About 200 appends a second per writer: enough to overlap every fault.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Every delivery ends within the delivery timeout.
    while let Some(done) = deliveries.join_next().await {
        done?;
    }
    Ok(())
}

/// One reader: follows a partition from offset 0, recording what it is served.
pub(super) async fn follow(
    partition: u32,
    addr: String,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let client = connect(&addr).await?;
    let mut next = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let spec = FetchSpec {
            max_wait_ms: 200,
            ..FetchSpec::new(TOPIC, partition, next)
        };
        match tokio::time::timeout(Duration::from_secs(3), client.fetch(spec)).await {
            Ok(Ok(fetched)) => {
                next = fetched.next_offset.max(next);
                history.read(fetched.records.into_iter().map(|r| Read {
                    partition,
                    offset: r.offset,
                    value: r.value,
                }));
            }
            // Faults make reads fail; the reader tries again.
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Ok(())
}

/// The group consumer: one member of [`GROUP`], reading every partition from the start and
/// committing, after each poll, the position after the records it returned (its
/// "processing" is noting the offsets). Every commit is recorded with its outcome.
pub(super) async fn consume_in_group(
    addr: String,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let client = connect(&addr).await?;
    let mut consumer = Consumer::new(
        client,
        ConsumerConfig {
            auto_commit: false,
            offset_reset: OffsetReset::Earliest,
            fetch_max_wait: Duration::from_millis(200),
            ..ConsumerConfig::with_group(GROUP)
        },
    );
    // The first join fails under some faults; once joined, the consumer rejoins by itself.
    while consumer.subscribe(&[TOPIC]).await.is_err() {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while !stop.load(Ordering::Relaxed) {
        let polled = match tokio::time::timeout(Duration::from_secs(3), consumer.poll()).await {
            Ok(Ok(records)) => records,
            _ => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut next: BTreeMap<u32, u64> = BTreeMap::new();
        for r in &polled {
            let after = r.record.offset + 1;
            next.entry(r.partition)
                .and_modify(|n| *n = (*n).max(after))
                .or_insert(after);
        }
        if next.is_empty() {
            continue;
        }
        let offsets: Vec<(TopicPartition, u64)> = next
            .iter()
            .map(|(&partition, &offset)| (TopicPartition::new(TOPIC, partition), offset))
            .collect();
        let committed =
            tokio::time::timeout(Duration::from_secs(3), consumer.commit_offsets(&offsets)).await;
        let acknowledged = matches!(committed, Ok(Ok(())));
        let completed = history.elapsed();
        history.commit(next.into_iter().map(|(partition, offset)| Commit {
            partition,
            offset,
            acknowledged,
            completed,
        }));
    }
    Ok(())
}

/// The auditor: asks for [`GROUP`]'s committed offsets every 200 ms and records each answer
/// with when it asked.
pub(super) async fn audit_commits(
    addr: String,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let client = connect(&addr).await?;
    while !stop.load(Ordering::Relaxed) {
        if let Some(view) = committed_view(&client, &history).await {
            history.committed_view(view);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// [`GROUP`]'s committed offsets now, if the query is answered within 3 s.
pub(super) async fn committed_view(client: &Client, history: &History) -> Option<CommittedView> {
    let invoked = history.elapsed();
    let answer = tokio::time::timeout(Duration::from_secs(3), client.committed_offsets(GROUP, &[]))
        .await
        .ok()?
        .ok()?;
    let offsets = answer
        .into_iter()
        .filter(|c| c.partition.topic == TOPIC)
        .map(|c| (c.partition.partition, c.offset))
        .collect();
    Some(CommittedView { invoked, offsets })
}

pub(super) async fn connect(addr: &str) -> anyhow::Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Client::connect(addr.to_owned()).await {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
