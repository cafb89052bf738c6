//! `weir bench produce`: fixed-size records sent in batches with a bounded window of requests in
//! flight, closed-loop (as fast as acknowledgements allow) or open-loop at `--rate`, reporting
//! throughput and acknowledgement latency next to the disk probe of the same run.
//!
//! Open-loop latency is measured from each request's *scheduled* send time, not from when it was
//! actually sent: when the broker falls behind and the window stays full, the wait counts, so
//! the percentiles do not suffer from coordinated omission.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use weir_client::{Acks, Client, ProducerRecord, TopicSpec};

use super::probe::{self, SequentialWrite};
use super::stats::{LatencyRecorder, LatencySummary, Throughput};
use crate::pipeline::{Completion, ProducePipeline};

/// Chunk of the sequential probe: large enough to reach the disk's streaming bandwidth.
const PROBE_CHUNK_BYTES: usize = 1024 * 1024;
/// Samples and size of the small-write probe.
const PROBE_SYNC_WRITES: u32 = 200;
const PROBE_SYNC_BYTES: usize = 4 * 1024;

/// How long a new topic may take to elect its partition leaders.
const LEADER_WAIT: Duration = Duration::from_secs(30);
const LEADER_POLL: Duration = Duration::from_millis(100);

/// Options of `weir bench produce`.
#[derive(Debug, Clone, Args)]
pub struct ProduceBenchArgs {
    /// Topic to write to; created if missing.
    #[arg(long, default_value = "weir-bench")]
    topic: String,

    /// Records to send.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    records: u64,

    /// Value size of each record, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1024)]
    record_size: usize,

    /// Records per produce request.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,

    /// Partitions of the topic if it has to be created; requests go round-robin over them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    partitions: u32,

    /// Replicas per partition if the topic has to be created; 0 is the broker's default.
    #[arg(long, default_value_t = 0)]
    replication_factor: u32,

    /// Durability to wait for: all, leader or none (or Kafka's -1, 1, 0).
    #[arg(long, default_value_t = Acks::All, allow_hyphen_values = true)]
    acks: Acks,

    /// Produce requests in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,

    /// Target records per second, open-loop; 0 sends as fast as acknowledgements allow.
    #[arg(long, default_value_t = 0)]
    rate: u64,

    /// Directory of the disk probe; it should be on the broker's data disk.
    #[arg(long, value_name = "DIR", default_value = ".")]
    probe_dir: PathBuf,

    /// Size of the sequential-write probe in MiB; 0 skips the disk probe.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    probe_mib: u64,

    /// Afterwards, read the topic back (`bench consume`) to measure a warm log.
    #[arg(long)]
    consume: bool,
}

impl ProduceBenchArgs {
    /// The topic written to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Whether `--consume` asked for a consume run afterwards.
    pub fn consume_after(&self) -> bool {
        self.consume
    }
}

/// Everything `weir bench produce` measured.
#[derive(Debug, Clone)]
pub struct ProduceReport {
    args: ProduceBenchArgs,
    partitions: u32,
    probe: Option<ProbeReport>,
    throughput: Throughput,
    latency: Option<LatencySummary>,
    rejected: u64,
}

/// What the disk under `--probe-dir` can do.
#[derive(Debug, Clone)]
struct ProbeReport {
    sequential: SequentialWrite,
    sync: Option<LatencySummary>,
}

/// Probes the disk, then produces `args.records` records through `client` and measures.
pub async fn run(client: &Client, args: ProduceBenchArgs) -> anyhow::Result<ProduceReport> {
    let probe = if args.probe_mib > 0 {
        Some(probe_disk(args.probe_dir.clone(), args.probe_mib).await?)
    } else {
        None
    };
    let partitions = ensure_topic(client, &args).await?;
    let progress = super::progress_bar(args.records, "records");
    let load = produce_load(client, &args, partitions, &progress).await;
    progress.finish_and_clear();
    let (throughput, latency, rejected) = load?;
    Ok(ProduceReport {
        args,
        partitions,
        probe,
        throughput,
        latency,
        rejected,
    })
}

async fn probe_disk(dir: PathBuf, mib: u64) -> anyhow::Result<ProbeReport> {
    let shown = dir.display().to_string();
    tokio::task::spawn_blocking(move || -> std::io::Result<ProbeReport> {
        Ok(ProbeReport {
            sequential: probe::sequential_write(&dir, mib * 1024 * 1024, PROBE_CHUNK_BYTES)?,
            sync: probe::sync_latency(&dir, PROBE_SYNC_WRITES, PROBE_SYNC_BYTES)?,
        })
    })
    .await
    .context("the disk probe failed")?
    .with_context(|| format!("cannot probe the disk under {shown}"))
}

/// Makes sure the topic exists with elected leaders, and returns its partition count.
async fn ensure_topic(client: &Client, args: &ProduceBenchArgs) -> anyhow::Result<u32> {
    let topic = &args.topic;
    match client.describe_topic(topic).await {
        Ok(_) => {}
        Err(err) if err.reason() == Some("UNKNOWN_TOPIC") => {
            let spec = TopicSpec::new(topic, args.partitions)
                .with_replication_factor(args.replication_factor);
            match client.create_topic(spec).await {
                Ok(_) => {}
                // Created by someone else meanwhile: just as good.
                Err(err) if err.reason() == Some("TOPIC_ALREADY_EXISTS") => {}
                Err(err) => {
                    return Err(err).with_context(|| format!("cannot create topic {topic}"));
                }
            }
        }
        Err(err) => return Err(err).with_context(|| format!("cannot describe topic {topic}")),
    }
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        let info = client
            .describe_topic(topic)
            .await
            .with_context(|| format!("cannot describe topic {topic}"))?;
        if info.partitions.iter().all(|p| p.leader.is_some()) {
            let count = u32::try_from(info.partitions.len()).context("too many partitions")?;
            if count == 0 {
                bail!("topic {topic} has no partitions");
            }
            if count != args.partitions {
                tracing::warn!(
                    topic,
                    count,
                    "the topic exists with another partition count; using it"
                );
            }
            return Ok(count);
        }
        if Instant::now() >= deadline {
            bail!("topic {topic} still lacks partition leaders after {LEADER_WAIT:?}");
        }
        tokio::time::sleep(LEADER_POLL).await;
    }
}

/// What each request carries back to the measuring loop.
struct Sent {
    /// When the request was meant to be sent: its scheduled time open-loop, its actual send time
    /// closed-loop. Latency counts from here.
    intended: Instant,
    records: u64,
}

/// Sends the records and returns throughput, per-request latency and the rejected count.
async fn produce_load(
    client: &Client,
    args: &ProduceBenchArgs,
    partitions: u32,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<(Throughput, Option<LatencySummary>, u64)> {
    let batch_size = u64::from(args.batch_size);
    let max_in_flight = usize::try_from(args.concurrency).context("--concurrency is too large")?;
    // One random value shared by every record: building requests costs no copies, and the
    // payload is not compressible.
    let value = Bytes::from(probe::incompressible_bytes(args.record_size));
    let batch: Vec<ProducerRecord> = (0..batch_size)
        .map(|_| ProducerRecord::new(value.clone()))
        .collect();

    let mut pipeline = ProducePipeline::new(client.clone(), &args.topic, args.acks, max_in_flight);
    let mut latencies = LatencyRecorder::default();
    let mut acknowledged: u64 = 0;
    let mut rejected: u64 = 0;
    let mut handle = |completion: Completion<Sent>| -> anyhow::Result<()> {
        let outcome = completion.result.context("a produce request failed")?;
        latencies.record(
            completion
                .completed_at
                .saturating_duration_since(completion.tag.intended),
        );
        acknowledged += completion.tag.records;
        rejected += outcome.rejected.len() as u64;
        progress.inc(completion.tag.records);
        Ok(())
    };

    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut request: u64 = 0;
    while sent < args.records {
        let scheduled = (args.rate > 0).then(|| started + send_offset(sent, args.rate));
        if let Some(scheduled) = scheduled {
            tokio::time::sleep_until(scheduled.into()).await;
        }
        while !pipeline.has_room() {
            if let Some(completion) = pipeline.next_completion().await? {
                handle(completion)?;
            }
        }
        let count = batch_size.min(args.records - sent);
        let records =
            batch[..usize::try_from(count).context("--batch-size is too large")?].to_vec();
        let partition =
            u32::try_from(request % u64::from(partitions)).context("partition index overflow")?;
        let tag = Sent {
            intended: scheduled.unwrap_or_else(Instant::now),
            records: count,
        };
        pipeline.send(Some(partition), records, tag);
        sent += count;
        request += 1;
    }
    while let Some(completion) = pipeline.next_completion().await? {
        handle(completion)?;
    }
    let elapsed = started.elapsed();
    let bytes = acknowledged * args.record_size as u64;
    Ok((
        Throughput {
            records: acknowledged,
            bytes,
            elapsed,
        },
        latencies.summary(),
        rejected,
    ))
}

/// When, after the start, the request that begins with record number `records_before` is due at
/// `rate` records per second.
fn send_offset(records_before: u64, rate: u64) -> Duration {
    Duration::from_secs_f64(records_before as f64 / rate as f64)
}

impl fmt::Display for ProduceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let args = &self.args;
        if let Some(probe) = &self.probe {
            writeln!(
                f,
                "disk probe ({}): sequential write + fdatasync every {} KiB: {:.1} MB/s",
                args.probe_dir.display(),
                probe.sequential.chunk_bytes / 1024,
                probe.sequential.mb_per_sec()
            )?;
            if let Some(sync) = &probe.sync {
                writeln!(
                    f,
                    "disk probe ({}): {} KiB write + fdatasync: {sync}",
                    args.probe_dir.display(),
                    PROBE_SYNC_BYTES / 1024
                )?;
            }
        }
        let mode = if args.rate > 0 {
            format!(
                "open loop at {} records/s, latency from the scheduled send time",
                args.rate
            )
        } else {
            "closed loop".to_owned()
        };
        writeln!(
            f,
            "produce to {} ({} partition(s)): {} records of {} B, batch {}, concurrency {}, \
             acks {}, {mode}",
            args.topic,
            self.partitions,
            args.records,
            args.record_size,
            args.batch_size,
            args.concurrency,
            args.acks
        )?;
        write!(f, "  throughput: {}", self.throughput)?;
        match &self.probe {
            Some(probe) if probe.sequential.mb_per_sec() > 0.0 => writeln!(
                f,
                " = {:.0}% of the sequential fdatasync bandwidth",
                100.0 * self.throughput.mb_per_sec() / probe.sequential.mb_per_sec()
            )?,
            _ => writeln!(f)?,
        }
        if let Some(latency) = &self.latency {
            writeln!(f, "  ack latency per request: {latency}")?;
        }
        if self.rejected > 0 {
            writeln!(
                f,
                "  rejected by the topic's modules: {} records",
                self.rejected
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ProduceBenchArgs,
    }

    #[test]
    fn open_loop_schedule_spaces_requests_by_their_records() {
        assert_eq!(send_offset(0, 1000), Duration::ZERO);
        assert_eq!(send_offset(100, 1000), Duration::from_millis(100));
        assert_eq!(send_offset(2500, 1000), Duration::from_millis(2500));
    }

    #[test]
    fn defaults_follow_the_design() {
        let args = Cli::try_parse_from(["bench"]).expect("defaults").args;
        assert_eq!(args.topic, "weir-bench");
        assert_eq!(
            (args.record_size, args.batch_size, args.concurrency),
            (1024, 100, 8)
        );
        assert_eq!((args.partitions, args.rate, args.acks), (1, 0, Acks::All));
        assert_eq!(args.probe_mib, 256);
        assert!(Cli::try_parse_from(["bench", "--batch-size", "0"]).is_err());
        let kafka_acks = Cli::try_parse_from(["bench", "--acks", "-1"]).expect("Kafka spelling");
        assert_eq!(kafka_acks.args.acks, Acks::All);
    }

    #[test]
    fn report_relates_produce_bandwidth_to_the_disk() {
        let args = Cli::try_parse_from(["bench", "--records", "1000"])
            .expect("valid")
            .args;
        let report = ProduceReport {
            args,
            partitions: 1,
            probe: Some(ProbeReport {
                sequential: SequentialWrite {
                    bytes: 400_000_000,
                    chunk_bytes: PROBE_CHUNK_BYTES,
                    elapsed: Duration::from_secs(1),
                },
                sync: None,
            }),
            throughput: Throughput {
                records: 1000,
                bytes: 100_000_000,
                elapsed: Duration::from_secs(1),
            },
            latency: None,
            rejected: 0,
        };
        let text = report.to_string();
        assert!(text.contains("400.0 MB/s"), "{text}");
        assert!(text.contains("100.0 MB/s"), "{text}");
        assert!(
            text.contains("= 25% of the sequential fdatasync bandwidth"),
            "{text}"
        );
    }
}
