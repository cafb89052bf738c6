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
//! Order: a partition has one request in flight at a time, so records of one partition (hence
//! of one key) are stored in input order. With `--key-separator` and no `--partition`, each
//! record goes to its key's partition under Kafka's partitioner (docs/api.md). Unkeyed records
//! without `--partition` are spread by the broker and promise no order.

mod input;
mod ledger;

use anyhow::Context;
use clap::Args;
use tokio::sync::mpsc;
use weir_client::{Acks, Client};

use self::input::{Input, read_records};
use self::ledger::{InputEnd, Ledger, Routing};
use crate::pipeline::ProducePipeline;

/// Requests in flight at once, over all partitions.
const MAX_IN_FLIGHT: usize = 4;

/// Upper bound on the payload bytes of one request, well under the broker's default batch limit
/// (8 MiB) so that long lines split into more requests instead of being refused.
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Chunks of records queued between the reader thread and the sender.
const INPUT_QUEUE_CHUNKS: usize = 4;

/// Options of `weir produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to write to.
    topic: String,

    /// Split each line at the first SEP into key and value; a line without SEP is an error.
    #[arg(short = 'K', long, value_name = "SEP",
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    key_separator: Option<String>,

    /// Partition to write to; without it keyed records go to their key's partition and unkeyed
    /// ones are spread by the broker.
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
    let routing = match (args.partition, &separator) {
        (Some(partition), _) => Routing::Fixed(partition),
        (None, Some(_)) => {
            let topic = client
                .describe_topic(&args.topic)
                .await
                .with_context(|| format!("cannot look up topic {}", args.topic))?;
            let partitions = u32::try_from(topic.partitions.len())
                .ok()
                .filter(|&n| n > 0)
                .with_context(|| {
                    format!(
                        "topic {} reports {} partitions",
                        args.topic,
                        topic.partitions.len()
                    )
                })?;
            Routing::ByKey { partitions }
        }
        (None, None) => Routing::Broker,
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
    let mut ledger = Ledger::new(routing, MAX_IN_FLIGHT);
    let max_pending = batch_size.saturating_mul(MAX_IN_FLIGHT);
    let mut input_end = None;
    loop {
        // After a failure nothing more is sent, so the report can say exactly which lines went.
        while pipeline.has_room() && !ledger.has_failed() {
            let Some(batch) = ledger.next_batch(batch_size, MAX_REQUEST_BYTES) else {
                break;
            };
            pipeline.send(batch.sent.target, batch.records, batch.sent);
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
                    ledger.complete(completion.tag, completion.result);
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
