//! `weir produce TOPIC`: the console producer. Every stdin line becomes one record; the command
//! exits 0 only when every line has been acknowledged, and otherwise names the lines that were
//! not.
//!
//! A reader thread turns stdin into records ([`input`]); weir-client's [`Producer`] partitions,
//! batches and sends them (idempotently, with up to 5 batches in flight per partition, retrying
//! through leader changes), and answers each record; [`report`] accounts for every line from
//! those answers, in input order. Routing is the Producer's: `--partition`, else a keyed line
//! (with `--key-separator`) goes to its key's partition (docs/api.md), and unkeyed lines fill a
//! batch per partition in turn (Kafka's sticky partitioner).
//!
//! Order: the lines of one partition (hence of one key, and all lines of a one-partition topic)
//! are stored in input order, each once.
//!
//! Tombstones: with `--tombstone`, a line whose value is empty becomes a record with a null
//! value (as rpk's `--tombstone`); without it, an empty value is an empty value.
//!
//! Modules: a record the topic's produce chain rejects is reported on stderr by its input line,
//! `record LINE rejected by MODULE (dropped|sent to dead-letter topic): REASON`. Records the
//! topic's policy dropped or dead-lettered count as handled (exit 0); a request the chain
//! refused (`RECORD_REJECTED`) stored nothing, so its lines fail the run.

mod input;
mod report;

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use tokio::sync::mpsc;
use weir_client::{Acks, Client, Delivery, Producer, ProducerConfig};

use self::input::{Input, empty_as_tombstone, read_records};
use self::report::{InputEnd, Report};
use crate::pipeline::DELIVERY_TIMEOUT;
use crate::retry::with_retries;

/// Upper bound on the encoded bytes of one batch, well under the broker's default batch limit
/// (8 MiB) so that long lines split into more batches instead of being refused, and far enough
/// under 4 MiB that the broker stores a full batch in a 4 MiB run of pages, not an 8 MiB one.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024 - weir_types::STORED_BATCH_OVERHEAD;

/// Chunks of records queued between the reader thread and the sender.
const INPUT_QUEUE_CHUNKS: usize = 4;

/// Lines sent and not yet accounted for, at most: bounds what a fast pipe makes the command
/// hold beyond the producer's own buffer.
const MAX_UNANSWERED_LINES: usize = 100_000;

/// Options of `weir produce`.
#[derive(Debug, Args)]
#[command(after_help = "\
When the topic has a produce chain, each record a module rejects is reported on stderr by its \
input line: `record LINE rejected by MODULE (dropped|sent to dead-letter topic): REASON`. \
Records dropped or dead-lettered by the topic's policy still let the command exit 0 when every \
other line was acknowledged. Under the reject policy the broker stores nothing of a request \
with a rejected record: its rejected lines are reported the same way (without the parenthesis) \
and the command exits 1.")]
pub struct ProduceArgs {
    /// Topic to write to.
    topic: String,

    /// Split each line at the first SEP into key and value; a line without SEP is an error.
    #[arg(short = 'K', long, value_name = "SEP",
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    key_separator: Option<String>,

    /// Partition to write to; without it keyed records go to their key's partition and unkeyed
    /// ones fill a batch per partition, round-robin.
    #[arg(short, long)]
    partition: Option<u32>,

    /// Durability to wait for: all, leader or none (or Kafka's -1, 1, 0).
    #[arg(long, default_value_t = Acks::All, allow_hyphen_values = true)]
    acks: Acks,

    /// Most records per batch (produce request).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,

    /// Produce lines with an empty value (empty lines, or `KEY<SEP>` with --key-separator) as
    /// tombstones: records with a null value, which delete their key from a compacted topic
    /// (rpk's flag). A topic with a produce chain refuses tombstones.
    #[arg(short = 'Z', long)]
    tombstone: bool,

    /// Print a summary of the records and offsets written to stderr.
    #[arg(short, long)]
    verbose: bool,
}

/// Produces stdin to `args.topic`, line by line.
pub async fn run(client: &Client, args: ProduceArgs) -> anyhow::Result<()> {
    let batch_size = usize::try_from(args.batch_size).context("--batch-size is too large")?;
    let separator = args.key_separator.map(String::into_bytes);
    check_destination(client, &args.topic, args.partition).await?;
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: args.acks,
            batch_max_records: batch_size,
            batch_max_bytes: MAX_BATCH_BYTES,
            delivery_timeout: DELIVERY_TIMEOUT,
            ..ProducerConfig::default()
        },
    );

    let (tx, mut rx) = mpsc::channel(INPUT_QUEUE_CHUNKS);
    // A plain thread rather than `spawn_blocking`: a read of an idle terminal never returns, and
    // the runtime must not wait for it on exit.
    std::thread::Builder::new()
        .name("weir-stdin".to_owned())
        .spawn(move || {
            read_records(
                std::io::stdin(),
                separator.as_deref(),
                batch_size,
                |input| tx.blocking_send(input).is_ok(),
            );
        })
        .context("cannot start the stdin reader")?;

    let mut unanswered: VecDeque<Delivery> = VecDeque::new();
    let mut report = Report::default();
    let mut input_end = None;
    loop {
        let can_read = input_end.is_none() && unanswered.len() < MAX_UNANSWERED_LINES;
        tokio::select! {
            input = rx.recv(), if can_read => match input {
                Some(Input::Records(records)) => {
                    for mut record in records {
                        record.partition = args.partition;
                        if args.tombstone {
                            record = empty_as_tombstone(record);
                        }
                        let delivery = producer
                            .enqueue(&args.topic, record)
                            .await
                            .with_context(|| format!("cannot produce to {}", args.topic))?;
                        unanswered.push_back(delivery);
                    }
                }
                Some(Input::Failed(err)) => input_end = Some(InputEnd::Failed(err)),
                None => input_end = Some(InputEnd::Complete),
            },
            // Lines are accounted for in input order.
            outcome = next_answer(&mut unanswered), if !unanswered.is_empty() => {
                unanswered.pop_front();
                if let Some(rejection) = report.record(outcome) {
                    eprintln!("{rejection}");
                }
            }
            else => break,
        }
    }
    let summary = report.finish(input_end.unwrap_or(InputEnd::Complete))?;
    if args.verbose {
        eprintln!("{}", summary.describe(&args.topic, args.acks));
    }
    Ok(())
}

/// The answer of the oldest line still unanswered (which stays in place until popped).
async fn next_answer(
    unanswered: &mut VecDeque<Delivery>,
) -> Result<weir_client::RecordMetadata, weir_client::DeliveryError> {
    match unanswered.front_mut() {
        Some(delivery) => delivery.await,
        // Not polled with nothing unanswered (see the select's guard).
        None => std::future::pending().await,
    }
}

/// Checks that `topic` exists (and has `partition`, when one is named) before reading stdin, as
/// patiently as a record is retried, so a typo fails at once with one clear line.
async fn check_destination(
    client: &Client,
    topic: &str,
    partition: Option<u32>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    let info = with_retries(Some(deadline), || client.describe_topic(topic))
        .await
        .with_context(|| format!("cannot look up topic {topic}"))?;
    let count = info.partitions.len();
    if let Some(partition) = partition {
        anyhow::ensure!(
            (partition as usize) < count,
            "topic {topic} has no partition {partition} (it has {count})"
        );
    }
    Ok(())
}
