//! `weir bench consume --format consumer`: the topic read by weir-client's `Consumer`, as an
//! application reads it: every partition assigned (no group), `poll` in a loop, each record
//! taken in hand and dropped, until every partition's position reaches the end seen at the
//! start. Beside the `batches` reader (a task per partition, one fetch running ahead, the same
//! batches verified and decoded the same way), this measures what the `Consumer` itself costs
//! (issue #15, P6).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use weir_client::{Client, Consumer, ConsumerConfig, OffsetReset, PartitionInfo, TopicPartition};

use super::stats::Throughput;

/// Reads `partitions` of `topic` (`total` records in all) from their log start to their high
/// watermark with one `Consumer` over `client`'s connection, asking for `max_bytes` per fetch,
/// checking that every record comes once and in order. The clock starts after the partitions
/// are assigned (which asks the broker where each starts), at the first `poll`.
pub async fn read_topic(
    client: &Client,
    topic: &str,
    max_bytes: u32,
    partitions: &[PartitionInfo],
    total: u64,
) -> anyhow::Result<Throughput> {
    let config = ConsumerConfig {
        client_id: "weir-bench".into(),
        auto_commit: false,
        offset_reset: OffsetReset::Earliest,
        fetch_max_bytes: max_bytes,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client.clone(), config);
    let assigned: Vec<TopicPartition> = partitions
        .iter()
        .map(|p| TopicPartition::new(topic, p.partition))
        .collect();
    consumer
        .assign(&assigned)
        .await
        .with_context(|| format!("cannot assign the partitions of {topic}"))?;
    // Per partition: the next offset expected and the end.
    let mut reading: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    for (tp, partition) in assigned.iter().zip(partitions) {
        consumer.seek(tp, partition.log_start_offset)?;
        if partition.log_start_offset < partition.high_watermark {
            reading.insert(
                partition.partition,
                (partition.log_start_offset, partition.high_watermark),
            );
        }
    }
    let progress = super::progress_bar(total, "records");
    let topic: Arc<str> = topic.into();
    let (mut records, mut bytes) = (0, 0);
    let started = Instant::now();
    while !reading.is_empty() {
        let polled = consumer
            .poll()
            .await
            .with_context(|| format!("cannot poll {topic}"))?;
        let before = records;
        for record in polled {
            let offset = record.record.offset;
            let Some((next, end)) = reading.get_mut(&record.partition) else {
                continue; // read to its end already: later records are not counted
            };
            if offset != *next || *record.topic != *topic {
                bail!(
                    "{}/{} gave offset {offset} where {next} was next",
                    record.topic,
                    record.partition
                );
            }
            *next += 1;
            records += 1;
            bytes += record.record.payload_len() as u64;
            if *next == *end {
                reading.remove(&record.partition);
            }
        }
        progress.inc(records - before);
    }
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    drop(consumer);
    if records != total {
        bail!("the consumer read {records} records of {total}");
    }
    Ok(Throughput {
        records,
        bytes,
        elapsed,
    })
}
