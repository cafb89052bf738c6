//! `weir bench consume`: reads every partition of a topic from its log start to the high
//! watermark seen at the start, with large `Fetch` requests, and reports records/s and MB/s.
//! Partitions are read concurrently, one request in flight per partition.

use std::fmt;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use futures::future::try_join_all;
use weir_client::{Client, FetchSpec, PartitionInfo};

use super::stats::Throughput;

/// Options of `weir bench consume`.
#[derive(Debug, Clone, Args)]
pub struct ConsumeBenchArgs {
    /// Topic to read, e.g. one filled by `weir bench produce`.
    #[arg(long, default_value = "weir-bench")]
    topic: String,

    /// Bytes asked for per fetch request.
    #[arg(long, value_name = "BYTES", default_value_t = 4 * 1024 * 1024)]
    max_bytes: u32,
}

impl ConsumeBenchArgs {
    /// The defaults, for `topic`.
    pub fn for_topic(topic: String) -> Self {
        Self {
            topic,
            max_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Everything `weir bench consume` measured.
#[derive(Debug, Clone)]
pub struct ConsumeReport {
    topic: String,
    partitions: usize,
    throughput: Throughput,
}

/// Reads the whole topic through `client` and measures.
pub async fn run(client: &Client, args: ConsumeBenchArgs) -> anyhow::Result<ConsumeReport> {
    let topic = client
        .describe_topic(&args.topic)
        .await
        .with_context(|| format!("cannot describe topic {}", args.topic))?;
    let total: u64 = topic
        .partitions
        .iter()
        .map(|p| p.high_watermark.saturating_sub(p.log_start_offset))
        .sum();
    if total == 0 {
        bail!(
            "topic {} is empty; fill it first, e.g. with `weir bench produce --topic {}`",
            args.topic,
            args.topic
        );
    }
    let progress = super::progress_bar(total, "records");
    let started = Instant::now();
    let read = try_join_all(
        topic
            .partitions
            .iter()
            .map(|partition| read_partition(client, &args, partition, &progress)),
    )
    .await;
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    let (records, bytes) = read?
        .into_iter()
        .fold((0, 0), |(records, bytes), (r, b)| (records + r, bytes + b));
    Ok(ConsumeReport {
        topic: args.topic,
        partitions: topic.partitions.len(),
        throughput: Throughput {
            records,
            bytes,
            elapsed,
        },
    })
}

/// Reads one partition up to the high watermark in `partition`; returns records and payload
/// bytes read.
async fn read_partition(
    client: &Client,
    args: &ConsumeBenchArgs,
    partition: &PartitionInfo,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<(u64, u64)> {
    let end = partition.high_watermark;
    let mut offset = partition.log_start_offset;
    let (mut records, mut bytes) = (0, 0);
    while offset < end {
        let spec =
            FetchSpec::new(&args.topic, partition.partition, offset).with_max_bytes(args.max_bytes);
        let fetched = client.fetch(spec).await.with_context(|| {
            format!(
                "cannot fetch {}/{} at offset {offset}",
                args.topic, partition.partition
            )
        })?;
        let Some(last) = fetched.records.last() else {
            bail!(
                "fetch of {}/{} at offset {offset} returned nothing below the high watermark {end}",
                args.topic,
                partition.partition
            );
        };
        offset = last.offset + 1;
        let wanted = fetched.records.iter().filter(|r| r.offset < end);
        let (n, b) = wanted.fold((0, 0), |(n, b), r| (n + 1, b + r.payload_len() as u64));
        records += n;
        bytes += b;
        progress.inc(n);
    }
    Ok((records, bytes))
}

impl fmt::Display for ConsumeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "consume from {} ({} partition(s)): {}",
            self.topic, self.partitions, self.throughput
        )
    }
}
