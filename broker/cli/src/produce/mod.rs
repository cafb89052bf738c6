//! `weir produce TOPIC`: the console producer. Every stdin line becomes one record; the command
//! exits 0 only when every line has been acknowledged, and otherwise names the lines that were
//! not.
//!
//! A reader thread turns stdin into records ([`input`]); the [`ledger`] routes them to
//! partitions and keeps one queue per destination; this module sends what the ledger allows
//! through a bounded window of requests. A batch goes as soon as its partition has no request in
//! flight, with whatever has been read by then: a line typed at a terminal goes out at once,
//! while a piped file fills batches up to `--batch-size` during the round trips (group commit,
//! without a linger timer).
//!
//! Routing: every request names its partition. With `--partition`, all lines go there. Without
//! it, the partitions are chosen here as Kafka's default partitioner does: a keyed line (with
//! `--key-separator`) goes to its key's partition (docs/api.md); unkeyed lines stick to one
//! partition until they fill a batch, then move on to the next partition round-robin.
//!
//! Order: a partition has one request in flight at a time, so the lines of one partition (hence
//! of one key, and all lines of a one-partition topic) are stored in input order. Requests to
//! different partitions overlap, up to [`MAX_IN_FLIGHT`].
//!
//! Modules: a record the topic's produce chain rejects is reported on stderr by its input line,
//! `record LINE rejected by MODULE (dropped|sent to dead-letter topic): REASON`. Records the
//! topic's policy dropped or dead-lettered count as handled (exit 0); a request the chain
//! refused (`RECORD_REJECTED`) stored nothing, so its lines fail the run.

mod input;
mod ledger;

use std::time::Instant;

use anyhow::Context;
use clap::Args;
use tokio::sync::mpsc;
use weir_client::{Acks, Client};

use self::input::{Input, read_records};
use self::ledger::{BatchLimits, InputEnd, Ledger, Routing};
use crate::pipeline::{DELIVERY_TIMEOUT, ProducePipeline};
use crate::retry::with_retries;

/// Requests in flight at once, over all partitions (one per partition at most).
const MAX_IN_FLIGHT: usize = 4;

/// Upper bound on the payload bytes of one request, well under the broker's default batch limit
/// (8 MiB) so that long lines split into more requests instead of being refused.
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Chunks of records queued between the reader thread and the sender.
const INPUT_QUEUE_CHUNKS: usize = 4;

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

    /// Most records per produce request.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,

    /// Print a summary of the records and offsets written to stderr.
    #[arg(short, long)]
    verbose: bool,
}

/// Produces stdin to `args.topic`, line by line.
pub async fn run(client: &Client, args: ProduceArgs) -> anyhow::Result<()> {
    let batch_size = usize::try_from(args.batch_size).context("--batch-size is too large")?;
    let separator = args.key_separator.map(String::into_bytes);
    let routing = match args.partition {
        Some(partition) => Routing::Fixed(partition),
        None => {
            let partitions = partition_count(client, &args.topic).await?;
            Routing::Spread {
                partitions,
                first_sticky: rand::random_range(0..partitions),
            }
        }
    };

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

    let mut pipeline = ProducePipeline::new(client.clone(), &args.topic, args.acks, MAX_IN_FLIGHT);
    let mut ledger = Ledger::new(
        routing,
        BatchLimits {
            records: batch_size,
            bytes: MAX_REQUEST_BYTES,
        },
    );
    let max_pending = batch_size.saturating_mul(MAX_IN_FLIGHT);
    let mut input_end = None;
    loop {
        // After a failure nothing more is sent, so the report can say exactly which lines went.
        while pipeline.has_room() && !ledger.has_failed() {
            let Some(batch) = ledger.next_batch() else {
                break;
            };
            pipeline.send(Some(batch.sent.partition), batch.records, batch.sent);
        }
        let can_read =
            input_end.is_none() && !ledger.has_failed() && ledger.pending() < max_pending;
        tokio::select! {
            input = rx.recv(), if can_read => match input {
                Some(Input::Records(records)) => ledger.push(records),
                Some(Input::Failed(err)) => input_end = Some(InputEnd::Failed(err)),
                None => input_end = Some(InputEnd::Complete),
            },
            completion = pipeline.next_completion(), if !pipeline.is_idle() => {
                if let Some(completion) = completion? {
                    for rejection in ledger.complete(completion.tag, completion.result) {
                        eprintln!("{rejection}");
                    }
                }
            }
            else => break,
        }
    }
    let summary = ledger.finish(input_end.unwrap_or(InputEnd::Abandoned))?;
    if args.verbose {
        eprintln!("{}", summary.describe(&args.topic, args.acks));
    }
    Ok(())
}

/// The partition count of `topic`, at least 1. Asked as patiently as a produce request is
/// retried, since no line can be routed without it.
async fn partition_count(client: &Client, topic: &str) -> anyhow::Result<u32> {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    let info = with_retries(Some(deadline), || client.describe_topic(topic))
        .await
        .with_context(|| format!("cannot look up topic {topic}"))?;
    u32::try_from(info.partitions.len())
        .ok()
        .filter(|&n| n > 0)
        .with_context(|| format!("topic {topic} reports {} partitions", info.partitions.len()))
}
