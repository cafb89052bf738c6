//! `weir bench consume`: reads every partition of a topic from its log start to the high
//! watermark seen at the start, with large `Fetch` requests, and reports records/s and MB/s.
//! Partitions are read concurrently over one connection, each on a task of its own with one
//! fetch running ahead (sent before the answer in hand is decoded, as a consumer fetching while
//! its application works would).
//!
//! The reader is a variant ([`Reader`]): tasks asking for per-record messages or for the stored
//! record batches (see [`fetch`](super::fetch)), or weir-client's `Consumer` (see
//! [`consumer`](super::consumer)). Given several and `--rounds`, they run in turn over the same
//! data after an unmeasured warm-up read, and a comparison of their throughputs follows.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use futures::future::try_join_all;
use weir_client::{Client, PartitionInfo};

use super::compare::{Comparison, round_order};
use super::consumer;
use super::fetch::{self, Format, RawBroker};
use super::stats::Throughput;

/// Who reads the topic in one run of `weir bench consume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Reader {
    /// A task per partition, fetches answered with one protobuf message per record.
    Records,
    /// A task per partition, fetches answered with the stored record batches.
    Batches,
    /// weir-client's `Consumer`, every partition assigned.
    Consumer,
}

impl fmt::Display for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Records => "records",
            Self::Batches => "batches",
            Self::Consumer => "consumer",
        })
    }
}

impl Reader {
    /// The answer format of a task-per-partition reader; `None` for the `Consumer`.
    fn fetch_format(self) -> Option<Format> {
        match self {
            Self::Records => Some(Format::Records),
            Self::Batches => Some(Format::Batches),
            Self::Consumer => None,
        }
    }

    /// What a run with this reader includes, for the report.
    fn describe(self) -> &'static str {
        match self.fetch_format() {
            Some(format) => format.describe(),
            None => {
                "weir-client's Consumer, every partition assigned, polled in a loop; it asks for \
                 the stored batches and decodes them as the batches reader does, and hands each \
                 record to the caller"
            }
        }
    }
}

/// Bytes asked for per fetch by default: the broker's default bound.
const DEFAULT_MAX_BYTES: u32 = 4 * 1024 * 1024;

/// Options of `weir bench consume`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ConsumeBenchArgs {
    /// Topic to read, e.g. one filled by `weir bench produce`.
    #[arg(long, default_value = "weir-bench")]
    topic: String,

    /// Bytes asked for per fetch request.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BYTES)]
    max_bytes: u32,

    /// Who reads: `batches` (a task per partition asking for the stored record batches,
    /// decoded here), `records` (the same, asking for one message per record) or `consumer`
    /// (weir-client's `Consumer`). A comma-separated list compares them.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "batches")]
    format: Vec<Reader>,

    /// Reads of each format, in alternating order (A B, B A, A B, ...); with more than one read
    /// in all, an unmeasured warm-up read in the first format comes first.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
}

impl ConsumeBenchArgs {
    /// The reads `weir bench produce --consume` asks for: `topic` in `formats`, `rounds` times.
    pub fn after_produce(topic: String, formats: Vec<Reader>, rounds: u32) -> Self {
        Self {
            topic,
            max_bytes: DEFAULT_MAX_BYTES,
            format: formats,
            rounds,
        }
    }
}

/// Reads the whole topic once per format and round: `client` describes it, and the reads go
/// over a connection of their own to the broker at `address`. Prints each report as it
/// completes and the comparison at the end; `probe_mb_per_sec` is the disk probe of the same
/// run, if one ran.
pub async fn run(
    client: &Client,
    address: &str,
    args: ConsumeBenchArgs,
    probe_mb_per_sec: Option<f64>,
) -> anyhow::Result<()> {
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
    // A connection of its own (with the client's TLS settings), as a reader's would be.
    let broker = client
        .connect_to(address)
        .await
        .with_context(|| format!("cannot connect to {address}"))?;
    let mut comparison = Comparison::new(
        "consume",
        args.format.iter().map(ToString::to_string).collect(),
    );
    let runs = args.rounds as usize * args.format.len();
    if runs > 1 {
        // The first read of a process is slower than the next ones (the connection's windows,
        // buffers and caches still growing), which would favour the format read second.
        read_topic(&broker, &args, args.format[0], &topic.partitions, total).await?;
        println!(
            "warm-up (not measured): one read of {} as {}",
            args.topic, args.format[0]
        );
    }
    for round in 0..args.rounds {
        for variant in round_order(args.format.len(), round) {
            let reader = args.format[variant];
            let throughput = read_topic(&broker, &args, reader, &topic.partitions, total).await?;
            comparison.record(round, variant, throughput);
            let report = ConsumeReport {
                topic: &args.topic,
                partitions: topic.partitions.len(),
                reader,
                throughput,
                probe_mb_per_sec,
            };
            print!("{report}");
        }
    }
    if comparison.is_worth_showing() {
        print!("{comparison}");
    }
    Ok(())
}

/// Reads `partitions` (of `total`) records with `reader` and measures.
async fn read_topic(
    broker: &RawBroker,
    args: &ConsumeBenchArgs,
    reader: Reader,
    partitions: &[PartitionInfo],
    total: u64,
) -> anyhow::Result<Throughput> {
    match reader.fetch_format() {
        Some(format) => read_by_partition(broker, args, format, partitions, total).await,
        None => {
            let (topic, max_bytes) = (&args.topic, args.max_bytes);
            consumer::read_topic(broker, topic, max_bytes, partitions, total).await
        }
    }
}

/// Reads `partitions` (of `total` records) in `format`, concurrently, and measures.
async fn read_by_partition(
    broker: &RawBroker,
    args: &ConsumeBenchArgs,
    format: Format,
    partitions: &[PartitionInfo],
    total: u64,
) -> anyhow::Result<Throughput> {
    let progress = super::progress_bar(total, "records");
    let started = Instant::now();
    let topic: Arc<str> = args.topic.as_str().into();
    // A task per partition, so that answers are decoded on every worker thread.
    let read = try_join_all(partitions.iter().map(|partition| {
        tokio::spawn(read_partition(
            broker.clone(),
            topic.clone(),
            args.max_bytes,
            format,
            partition.clone(),
            progress.clone(),
        ))
    }))
    .await;
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    let (records, bytes) = read?
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .fold((0, 0), |(records, bytes), (r, b)| (records + r, bytes + b));
    Ok(Throughput {
        records,
        bytes,
        elapsed,
    })
}

/// Reads one partition in `format` up to the high watermark in `partition`; returns records and
/// payload bytes read. One fetch runs ahead: the next is sent as soon as an answer arrives (at
/// the offset the broker says to continue from), and the answer is decoded while the broker
/// reads the next, as a consumer that fetches while its application works would.
async fn read_partition(
    broker: RawBroker,
    topic: Arc<str>,
    max_bytes: u32,
    format: Format,
    partition: PartitionInfo,
    progress: indicatif::ProgressBar,
) -> anyhow::Result<(u64, u64)> {
    let end = partition.high_watermark;
    let send = |offset: u64| {
        let (broker, topic) = (broker.clone(), topic.clone());
        tokio::spawn(async move {
            fetch::request(
                &broker,
                &topic,
                partition.partition,
                offset,
                max_bytes,
                format,
            )
            .await
        })
    };
    let mut offset = partition.log_start_offset;
    let mut in_flight = (offset < end).then(|| send(offset));
    let (mut records, mut bytes) = (0, 0);
    while let Some(answer) = in_flight.take() {
        let fetch_failed = || {
            format!(
                "cannot fetch {topic}/{} at offset {offset}",
                partition.partition
            )
        };
        let response = answer.await?.with_context(fetch_failed)?;
        let next = fetch::next_offset(&response, offset);
        in_flight = next.filter(|&next| next < end).map(send);
        let fetched = fetch::count(response, offset, end, format).with_context(fetch_failed)?;
        if next.is_some_and(|next| next != fetched.next_offset) {
            bail!(
                "{topic}/{}: the fetch at offset {offset} said to continue at {next:?} but its \
                 records end at {}",
                partition.partition,
                fetched.next_offset
            );
        }
        offset = fetched.next_offset;
        records += fetched.records;
        bytes += fetched.bytes;
        progress.inc(fetched.records);
        if in_flight.is_none() && offset < end {
            // The broker named no offset to go on from: the records do.
            in_flight = Some(send(offset));
        }
    }
    Ok((records, bytes))
}

/// What one read of the topic measured.
#[derive(Debug, Clone)]
struct ConsumeReport<'a> {
    topic: &'a str,
    partitions: usize,
    reader: Reader,
    throughput: Throughput,
    probe_mb_per_sec: Option<f64>,
}

impl fmt::Display for ConsumeReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "consume from {} ({} partition(s)): {}",
            self.topic, self.partitions, self.throughput
        )?;
        match self.probe_mb_per_sec {
            Some(probe) if probe > 0.0 => writeln!(
                f,
                " = {:.2}× the sequential fdatasync bandwidth",
                self.throughput.mb_per_sec() / probe
            )?,
            _ => writeln!(f)?,
        }
        writeln!(f, "  as {}: {}", self.reader, self.reader.describe())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ConsumeBenchArgs,
    }

    #[test]
    fn defaults_read_batches_once_and_formats_form_a_list() {
        let args = Cli::try_parse_from(["consume"]).expect("defaults").args;
        assert_eq!(
            (args.topic.as_str(), args.max_bytes),
            ("weir-bench", 4 << 20)
        );
        assert_eq!((args.format, args.rounds), (vec![Reader::Batches], 1));
        let all = Cli::try_parse_from(["consume", "--format", "records,batches,consumer"])
            .expect("valid")
            .args;
        assert_eq!(
            all.format,
            [Reader::Records, Reader::Batches, Reader::Consumer]
        );
        assert!(Cli::try_parse_from(["consume", "--format", "json"]).is_err());
    }

    #[test]
    fn report_says_what_the_format_includes_and_relates_to_the_disk() {
        let report = ConsumeReport {
            topic: "weir-bench",
            partitions: 1,
            reader: Reader::Records,
            throughput: Throughput {
                records: 1000,
                bytes: 800_000_000,
                elapsed: Duration::from_secs(1),
            },
            probe_mb_per_sec: Some(400.0),
        };
        let text = report.to_string();
        assert!(
            text.starts_with(
                "consume from weir-bench (1 partition(s)): 1000 records/s, 800.0 MB/s"
            ),
            "{text}"
        );
        assert!(
            text.contains("= 2.00× the sequential fdatasync bandwidth"),
            "{text}"
        );
        assert!(
            text.contains("as records: FetchRequest.record_batches = false"),
            "{text}"
        );
        let unprobed = ConsumeReport {
            probe_mb_per_sec: None,
            ..report
        };
        assert!(!unprobed.to_string().contains("fdatasync"));
    }
}
