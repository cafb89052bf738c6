//! `weir consume TOPIC`: the console consumer. It prints the records of a topic, one per line by
//! default, from the end (tail), the beginning, or an offset, until `--max-messages`, until
//! `--timeout-ms` passes without a new record, or until Ctrl-C; each of these exits 0.
//!
//! It reads in one of three ways, as kcat and the Kafka console consumer do:
//! - `--partition P`: that partition alone, with long-polling `Fetch` requests rather than
//!   `Subscribe`: every request names its offset, so the position is always exact and a
//!   retriable error (leader moved, broker restart) is survived by asking again from the same
//!   offset; `--timeout-ms` maps directly onto the broker's wait; and `--max-messages` bounds
//!   what the broker sends, where a stream would run ahead of it.
//! - neither `--partition` nor `--group`: every partition of the topic, concurrently, through a
//!   `weir-client` [`Consumer`] assigned all of them. Records of one partition are printed in
//!   offset order; partitions interleave as their records arrive.
//! - `--group G`: the partitions the group's coordinator assigns, through a [`Consumer`] that
//!   joined the group; on exit the position of what was printed is committed.
//!
//! With `--module` (or a topic consume chain) the broker filters and transforms what it reads:
//! a fetch may return fewer records than it read, or none, so the next fetch starts where the
//! broker says it stopped reading (`next_offset`), never at the last record printed + 1.
//! Records a module rejected are reported on stderr.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use tokio::io::AsyncWriteExt;
use weir_client::{
    Client, Consumer, ConsumerConfig, FetchSpec, Fetched, ModuleRef, OffsetReset, OffsetSpec,
    RejectedOffset, StartAt, TopicPartition,
};

use crate::format::{DEFAULT_FORMAT, Format};
use crate::retry::with_retries;

/// Longest single long-poll; the loop polls again after it, so this only bounds how stale an
/// idle connection gets.
const MAX_POLL_WAIT: Duration = Duration::from_secs(5);

/// Options of `weir consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    topic: String,

    /// Start at the first stored record instead of the end.
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,

    /// Start at this offset instead of the end. Without --partition it applies to every
    /// partition, as in kcat: each starts at N, or at its first stored record if N was deleted,
    /// or at its end if it holds no record at N yet.
    #[arg(short, long, value_name = "N")]
    offset: Option<u64>,

    /// Read only this partition. Without it (and without --group) every partition of the
    /// topic is read, concurrently: records of one partition in offset order, partitions
    /// interleaved.
    #[arg(short, long, conflicts_with = "group")]
    partition: Option<u32>,

    /// Consume every partition of the topic as a member of this consumer group, starting
    /// where the group committed (or, for partitions without a commit, at the end, or the
    /// beginning with --from-beginning). On exit the position of every record printed is
    /// committed, as the Kafka console consumer does.
    #[arg(short, long, value_name = "GROUP", conflicts_with = "offset")]
    group: Option<String>,

    /// Exit after printing this many records (in all, across partitions).
    #[arg(short = 'n', long, value_name = "N")]
    max_messages: Option<u64>,

    /// Exit when no record arrives for this many milliseconds (records the modules filter out
    /// do not count).
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,

    /// Run this module over the records before printing them (instead of the topic's consume
    /// chain), as NAME[@VERSION][:KEY=VALUE,...]; a value cannot contain ','. Repeat to chain
    /// modules, in order. Records a module rejects are reported on stderr as `rejected offset N
    /// by MODULE: REASON`; when several partitions may be read (--group, or a topic with more
    /// than one partition and no --partition) as `rejected partition P offset N by MODULE:
    /// REASON`.
    #[arg(short, long = "module", value_name = "MODULE")]
    modules: Vec<ModuleRef>,

    /// Output template: %v value (NULL for a tombstone), %S value size (-1 for a tombstone),
    /// %k key, %o offset, %p partition, %t topic, %T timestamp, %h headers, %% and the escapes
    /// \n \t \r \\.
    #[arg(short, long, default_value = DEFAULT_FORMAT, value_name = "FMT")]
    format: Format,
}

/// Prints records of `args.topic` to stdout as `args.format` says.
pub async fn run(client: &Client, args: ConsumeArgs) -> anyhow::Result<()> {
    if let Some(group) = args.group.clone() {
        return run_in_group(client, args, group).await;
    }
    match args.partition {
        Some(partition) => run_on_partition(client, args, partition).await,
        None => run_on_every_partition(client, args).await,
    }
}

/// `weir consume --partition P`: that partition alone, fetch by fetch.
async fn run_on_partition(
    client: &Client,
    args: ConsumeArgs,
    partition: u32,
) -> anyhow::Result<()> {
    let start = match (args.from_beginning, args.offset) {
        (_, Some(offset)) => StartAt::Offset(offset),
        (true, None) => StartAt::Earliest,
        (false, None) => StartAt::Latest,
    };
    let mut offset = resolve_start(client, &args.topic, partition, start).await?;
    let idle_timeout = args.timeout_ms.map(Duration::from_millis);
    let mut idle_deadline = idle_timeout.map(|timeout| Instant::now() + timeout);
    let mut printed: u64 = 0;
    let mut out = tokio::io::stdout();
    let mut buffer = Vec::new();

    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    // Every way out of this loop but an error is a normal end: exit 0.
    loop {
        let remaining = args.max_messages.map(|max| max.saturating_sub(printed));
        if remaining == Some(0) {
            return Ok(());
        }
        let wait = match idle_deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(());
                }
                left.min(MAX_POLL_WAIT)
            }
            None => MAX_POLL_WAIT,
        };
        let mut spec = FetchSpec::new(&args.topic, partition, offset)
            .with_max_records(remaining.map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)))
            .with_max_wait_ms(u32::try_from(wait.as_millis()).unwrap_or(u32::MAX));
        spec.modules.clone_from(&args.modules);
        let fetched = tokio::select! {
            // A broker that stays down past the idle timeout is an error, not an idle partition.
            fetched = with_retries(idle_deadline, || client.fetch(spec.clone())) => fetched,
            signal = &mut ctrl_c => {
                signal.context("cannot listen for Ctrl-C")?;
                return Ok(());
            }
        }
        .with_context(|| format!("cannot read {}/{partition} at offset {offset}", args.topic))?;
        offset = fetched.next_offset;
        if fetched.records.is_empty() && fetched.rejected.is_empty() {
            continue;
        }
        idle_deadline = idle_timeout.map(|timeout| Instant::now() + timeout);
        for line in rejection_lines(&fetched) {
            eprintln!("{line}");
        }

        buffer.clear();
        let take = remaining.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
        for record in fetched.records.iter().take(take) {
            args.format
                .write(&mut buffer, &args.topic, partition, record);
            printed += 1;
        }
        // Flushed per batch so a tailing reader sees records as they arrive.
        if let Err(err) = write_all(&mut out, &buffer).await {
            // The reader went away (`weir consume ... | head`): nothing left to do.
            if err.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(anyhow::Error::new(err).context("cannot write to stdout"));
        }
    }
}

/// `weir consume` without `--partition` or `--group`: every partition of the topic, read
/// concurrently by a [`Consumer`] assigned all of them, outside any group.
async fn run_on_every_partition(client: &Client, args: ConsumeArgs) -> anyhow::Result<()> {
    let topic = client
        .describe_topic(args.topic.as_str())
        .await
        .with_context(|| format!("cannot look up topic {}", args.topic))?;
    let partitions: Vec<TopicPartition> = topic
        .partitions
        .iter()
        .map(|p| TopicPartition::new(args.topic.as_str(), p.partition))
        .collect();
    anyhow::ensure!(
        !partitions.is_empty(),
        "topic {} reports no partitions",
        args.topic
    );
    let idle_timeout = args.timeout_ms.map(Duration::from_millis);
    let mut consumer = Consumer::new(client.clone(), console_config(&args, None, idle_timeout));
    consumer
        .assign(&partitions)
        .await
        .with_context(|| format!("cannot look up where to start in {}", args.topic))?;
    if let Some(offset) = args.offset {
        for tp in &partitions {
            let listed = client
                .list_offsets(tp.topic.as_str(), tp.partition, OffsetSpec::Latest)
                .await
                .with_context(|| format!("cannot look up the offsets of {tp}"))?;
            let start = start_in_partition(offset, listed.log_start_offset, listed.high_watermark);
            consumer.seek(tp, start)?;
        }
    }
    let name_partitions = partitions.len() > 1;
    print_records(&mut consumer, &args, idle_timeout, name_partitions).await
}

/// Where `--offset requested` starts a partition whose log holds `[log_start, high_watermark)`
/// when it is applied to every partition: at `requested` if the partition has it (or is about
/// to: the high watermark itself), else at the nearest end, so records deleted by retention are
/// passed over and a partition that has not reached `requested` is tailed.
fn start_in_partition(requested: u64, log_start: u64, high_watermark: u64) -> u64 {
    requested.clamp(log_start, high_watermark.max(log_start))
}

/// The [`ConsumerConfig`] of the console consumer, in `group` or outside any.
fn console_config(
    args: &ConsumeArgs,
    group: Option<&str>,
    idle_timeout: Option<Duration>,
) -> ConsumerConfig {
    let mut config = ConsumerConfig {
        group: group.map(str::to_owned),
        ..ConsumerConfig::default()
    };
    config.client_id = "weir-console-consumer".into();
    // In a group, the position of what was printed is committed on exit, whatever happens
    // before.
    config.auto_commit = false;
    // With --offset the caller positions every partition itself; the reset then only applies
    // to a position that retention deleted, which continues at the oldest record left.
    config.offset_reset = if args.from_beginning || args.offset.is_some() {
        OffsetReset::Earliest
    } else {
        OffsetReset::Latest
    };
    config.modules.clone_from(&args.modules);
    if let Some(timeout) = idle_timeout {
        config.fetch_max_wait = timeout.min(MAX_POLL_WAIT);
    }
    config
}

/// `weir consume --group`: a member of `group` consuming every partition of the topic.
async fn run_in_group(client: &Client, args: ConsumeArgs, group: String) -> anyhow::Result<()> {
    let idle_timeout = args.timeout_ms.map(Duration::from_millis);
    let config = console_config(&args, Some(&group), idle_timeout);
    let mut consumer = Consumer::new(client.clone(), config);
    consumer
        .subscribe(&[&args.topic])
        .await
        .with_context(|| format!("cannot join group '{group}'"))?;
    // A member may be assigned any partition, so rejections always name theirs.
    let result = print_records(&mut consumer, &args, idle_timeout, true).await;
    let committed = consumer
        .commit()
        .await
        .with_context(|| format!("cannot commit the position of group '{group}'"));
    let closed = consumer.close().await;
    result?;
    committed?;
    closed.with_context(|| format!("cannot leave group '{group}'"))
}

/// Prints what `consumer` polls until `--max-messages`, `idle_timeout` or Ctrl-C; rejection
/// lines name the partition when `name_partitions`.
async fn print_records(
    consumer: &mut Consumer,
    args: &ConsumeArgs,
    idle_timeout: Option<Duration>,
    name_partitions: bool,
) -> anyhow::Result<()> {
    let mut idle_deadline = idle_timeout.map(|timeout| Instant::now() + timeout);
    let mut printed: u64 = 0;
    let mut out = tokio::io::stdout();
    let mut buffer = Vec::new();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let remaining = args.max_messages.map(|max| max.saturating_sub(printed));
        if remaining == Some(0) {
            return Ok(());
        }
        if idle_deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Ok(());
        }
        let records = tokio::select! {
            records = consumer.poll() => records.context("cannot consume")?,
            signal = &mut ctrl_c => {
                signal.context("cannot listen for Ctrl-C")?;
                return Ok(());
            }
        };
        for (tp, rejected) in consumer.take_rejected() {
            let partition = name_partitions.then_some(tp.partition);
            eprintln!("{}", rejection_line(partition, &rejected));
        }
        if records.is_empty() {
            continue;
        }
        idle_deadline = idle_timeout.map(|timeout| Instant::now() + timeout);
        buffer.clear();
        let take = remaining.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
        for record in records.iter().take(take) {
            args.format
                .write(&mut buffer, &record.topic, record.partition, &record.record);
            printed += 1;
        }
        // Records not printed (--max-messages reached) must not count as consumed (in a group
        // they would be committed): move their partitions back to the first of them.
        for record in records.iter().skip(take).rev() {
            let tp = TopicPartition::new(record.topic.to_string(), record.partition);
            consumer.seek(&tp, record.record.offset)?;
        }
        if let Err(err) = write_all(&mut out, &buffer).await {
            if err.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(anyhow::Error::new(err).context("cannot write to stdout"));
        }
    }
}

/// One line per record a consume-chain module rejected.
fn rejection_lines(fetched: &Fetched) -> impl Iterator<Item = String> + '_ {
    fetched
        .rejected
        .iter()
        .map(|rejected| rejection_line(None, rejected))
}

/// `rejected offset N by MODULE: REASON`, naming the partition too when several may be read.
fn rejection_line(partition: Option<u32>, rejected: &RejectedOffset) -> String {
    let partition = partition.map_or_else(String::new, |p| format!("partition {p} "));
    format!(
        "rejected {partition}offset {} by {}: {}",
        rejected.offset, rejected.module, rejected.reason
    )
}

async fn write_all(out: &mut tokio::io::Stdout, bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(bytes).await?;
    out.flush().await
}

/// The offset `start` stands for in the partition now.
async fn resolve_start(
    client: &Client,
    topic: &str,
    partition: u32,
    start: StartAt,
) -> anyhow::Result<u64> {
    let spec = match start {
        StartAt::Offset(offset) => return Ok(offset),
        StartAt::Earliest => OffsetSpec::Earliest,
        StartAt::Latest => OffsetSpec::Latest,
    };
    let listed = client
        .list_offsets(topic, partition, spec)
        .await
        .with_context(|| format!("cannot look up the start offset of {topic}/{partition}"))?;
    listed
        .offset
        .with_context(|| format!("the broker returned no {spec:?} offset for {topic}/{partition}"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ConsumeArgs,
    }

    #[test]
    fn from_beginning_and_offset_exclude_each_other() {
        assert!(
            Cli::try_parse_from(["consume", "t", "--from-beginning", "--offset", "3"]).is_err()
        );
        let cli = Cli::try_parse_from(["consume", "t", "--offset", "3", "-p", "2"])
            .expect("valid options");
        assert_eq!((cli.args.offset, cli.args.partition), (Some(3), Some(2)));
        assert!(!cli.args.from_beginning);
        let every = Cli::try_parse_from(["consume", "t", "--offset", "3"]).expect("valid options");
        assert_eq!(
            every.args.partition, None,
            "no --partition reads every partition"
        );
        assert!(Cli::try_parse_from(["consume", "t", "-p", "1", "--group", "g"]).is_err());
    }

    #[test]
    fn an_offset_for_every_partition_starts_each_within_its_log() {
        // The partition has the offset, or is about to (its high watermark): start there.
        assert_eq!(start_in_partition(5, 0, 10), 5);
        assert_eq!(start_in_partition(10, 0, 10), 10);
        // Retention deleted it: start at the oldest record left.
        assert_eq!(start_in_partition(5, 8, 10), 8);
        // Not reached yet: tail the partition from its end.
        assert_eq!(start_in_partition(50, 0, 10), 10);
        assert_eq!(start_in_partition(3, 0, 0), 0);
        // An inconsistent answer (log start past the high watermark) does not panic.
        assert_eq!(start_in_partition(3, 7, 4), 7);
    }

    #[test]
    fn modules_repeat_in_order_and_bad_ones_are_refused() {
        let cli = Cli::try_parse_from([
            "consume",
            "t",
            "--module",
            "filter:field=type,equals=click",
            "-m",
            "upper@2",
        ])
        .expect("valid modules");
        assert_eq!(
            cli.args.modules,
            [
                ModuleRef::new("filter")
                    .with_param("field", "type")
                    .with_param("equals", "click"),
                ModuleRef::new("upper").with_version(2),
            ]
        );
        assert!(
            Cli::try_parse_from(["consume", "t"])
                .expect("no modules")
                .args
                .modules
                .is_empty()
        );
        for bad in ["", "m@0", "m:k", "m:"] {
            assert!(
                Cli::try_parse_from(["consume", "t", "--module", bad]).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn rejections_print_their_offset_module_and_reason() {
        let fetched = Fetched {
            records: Vec::new(),
            next_offset: 10,
            rejected: vec![weir_client::RejectedOffset {
                offset: 7,
                reason: "no field type".to_owned(),
                module: "filter@1".to_owned(),
            }],
            high_watermark: 10,
            log_start_offset: 0,
        };
        assert_eq!(
            rejection_lines(&fetched).collect::<Vec<_>>(),
            ["rejected offset 7 by filter@1: no field type"]
        );
    }

    #[test]
    fn a_bad_format_is_refused_when_parsing_options() {
        assert!(Cli::try_parse_from(["consume", "t", "--format", "%q"]).is_err());
        let cli = Cli::try_parse_from(["consume", "t"]).expect("defaults");
        assert_eq!(
            cli.args.format,
            DEFAULT_FORMAT.parse().expect("valid default")
        );
    }
}
