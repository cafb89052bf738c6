//! The bookkeeping of one `weir produce` run: which partition each line goes to, the lines read
//! but not yet sent (one queue per partition), which requests may go now, and what became of
//! every line. Pure, so routing, batching and the final report are tested without a broker.
//!
//! Invariant: every request names its partition and a partition has at most one request in
//! flight, so the lines of one partition are stored in input order. (Two requests in flight to
//! one partition may be applied in either order.)
//!
//! Records a topic's produce chain rejects are reported with their input line numbers, mapped
//! back from their indices in the request: those dropped or dead-lettered do not fail the run
//! (the broker did what the topic's policy says), while a request refused with
//! `RECORD_REJECTED` does, like any request that was not stored.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use anyhow::anyhow;
use weir_client::{Acks, ClientError, ProduceOutcome, ProducerRecord, RejectAction};
use weir_types::partition_for_key;

/// How lines are assigned to partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// Every record to one partition (`--partition`).
    Fixed(u32),
    /// Kafka's default partitioner over the topic's partitions, computed here so that every
    /// request names its partition: a keyed record goes to its key's partition (the broker would
    /// partition a request by its first key only, and a batch mixes keys); unkeyed records stick
    /// to one partition until they fill a batch, then move to the next one round-robin (Kafka's
    /// sticky partitioner, KIP-480 and KIP-794).
    Spread {
        /// The topic's partition count; 0 is taken as 1.
        partitions: u32,
        /// The partition unkeyed records stick to first. Chosen at random per run, as Kafka
        /// does, so that many short runs do not all land on one partition.
        first_sticky: u32,
    },
}

/// The most one request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most records per request, at least 1.
    pub records: usize,
    /// Most payload bytes per request; a larger single record still goes, alone.
    pub bytes: usize,
}

impl BatchLimits {
    /// How many of `payload_lens` (in order) fit in one request: as many as the limits allow, and
    /// at least one.
    fn fitting(self, payload_lens: impl Iterator<Item = usize>) -> usize {
        let mut bytes = 0usize;
        payload_lens
            .take(self.records.max(1))
            .take_while(|len| {
                bytes = bytes.saturating_add(*len);
                bytes <= self.bytes
            })
            .count()
            .max(1)
    }
}

/// Where unkeyed records go under [`Routing::Spread`]: the current sticky partition and what has
/// been assigned to it since it became current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sticky {
    partitions: u32,
    partition: u32,
    records: usize,
    bytes: usize,
}

impl Sticky {
    fn new(partitions: u32, first: u32) -> Self {
        let partitions = partitions.max(1);
        Self {
            partitions,
            partition: first % partitions,
            records: 0,
            bytes: 0,
        }
    }

    /// The partition of the next unkeyed record, of `payload_len` bytes. The sticky partition
    /// moves on once the records assigned to it make a full batch under `limits` (the cut
    /// [`BatchLimits::fitting`] makes), so a run of unkeyed lines fills one batch per partition.
    fn assign(&mut self, payload_len: usize, limits: BatchLimits) -> u32 {
        let full = self.records >= limits.records.max(1)
            || self.bytes.saturating_add(payload_len) > limits.bytes;
        if self.records > 0 && full {
            self.partition = (self.partition + 1) % self.partitions;
            self.records = 0;
            self.bytes = 0;
        }
        self.records += 1;
        self.bytes = self.bytes.saturating_add(payload_len);
        self.partition
    }
}

/// The routing decisions of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Router {
    Fixed(u32),
    Spread { partitions: u32, sticky: Sticky },
}

impl Router {
    fn new(routing: Routing) -> Self {
        match routing {
            Routing::Fixed(partition) => Self::Fixed(partition),
            Routing::Spread {
                partitions,
                first_sticky,
            } => Self::Spread {
                partitions,
                sticky: Sticky::new(partitions, first_sticky),
            },
        }
    }

    fn partition(&mut self, record: &ProducerRecord, limits: BatchLimits) -> u32 {
        match self {
            Self::Fixed(partition) => *partition,
            Self::Spread { partitions, sticky } => match &record.key {
                Some(key) => partition_for_key(key, *partitions).0,
                None => sticky.assign(record.payload_len(), limits),
            },
        }
    }
}

/// Input line numbers, counted from 1, in increasing order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lines(Vec<u64>);

impl Lines {
    fn first(&self) -> Option<u64> {
        self.0.first().copied()
    }
}

impl fmt::Display for Lines {
    /// `line 7`, `lines 3-5`, `lines 3-5, 9, 12-20`, or with more runs
    /// `lines 3-5, 9, 12-20 and 41 more`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN_RUNS: usize = 3;
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for &line in &self.0 {
            match runs.last_mut() {
                Some((_, last)) if *last + 1 == line => *last = line,
                _ => runs.push((line, line)),
            }
        }
        f.write_str(if self.0.len() == 1 { "line " } else { "lines " })?;
        for (i, (first, last)) in runs.iter().take(SHOWN_RUNS).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if first == last {
                write!(f, "{first}")?;
            } else {
                write!(f, "{first}-{last}")?;
            }
        }
        let more: u64 = runs
            .iter()
            .skip(SHOWN_RUNS)
            .map(|(first, last)| last - first + 1)
            .sum();
        if more > 0 {
            write!(f, " and {more} more")?;
        }
        Ok(())
    }
}

/// A record of the input that a produce-path module rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Its input line, from 1.
    pub line: u64,
    /// The module, as `NAME@VERSION`.
    pub module: String,
    /// The module's reason.
    pub reason: String,
    /// What the broker did with it.
    pub action: RejectAction,
}

impl fmt::Display for Rejection {
    /// `record LINE rejected by MODULE (dropped): REASON`, `(sent to dead-letter topic)`, or
    /// without parenthesis when the whole request was refused.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record {} rejected by {}", self.line, self.module)?;
        match self.action {
            RejectAction::Reject => {}
            RejectAction::Drop => f.write_str(" (dropped)")?,
            RejectAction::DeadLetter => f.write_str(" (sent to dead-letter topic)")?,
        }
        write!(f, ": {}", self.reason)
    }
}

/// What a request carries, to account for its answer.
#[derive(Debug)]
pub struct Sent {
    /// The partition it went to.
    pub partition: u32,
    lines: Lines,
}

/// A request ready to send.
#[derive(Debug)]
pub struct Batch {
    /// Its records, in input order.
    pub records: Vec<ProducerRecord>,
    /// What to hand back to [`Ledger::complete`] with its answer.
    pub sent: Sent,
}

/// Records written to one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Written {
    records: u64,
    /// Lowest and highest offsets stored; `None` with acks=none.
    offsets: Option<(u64, u64)>,
}

/// How reading the input ended.
#[derive(Debug)]
pub enum InputEnd {
    /// Every line was read.
    Complete,
    /// Reading stopped at a bad line or an I/O error; every earlier line was read.
    Failed(anyhow::Error),
    /// Reading stopped because sending failed.
    Abandoned,
}

/// The lines of one run, from reading to acknowledgement.
#[derive(Debug)]
pub struct Ledger {
    router: Router,
    limits: BatchLimits,
    queues: BTreeMap<u32, VecDeque<(u64, ProducerRecord)>>,
    /// Partitions with a request in flight: at most one each, so their lines stay in order.
    busy: BTreeSet<u32>,
    pending: usize,
    lines_read: u64,
    written: BTreeMap<u32, Written>,
    failures: Vec<Failure>,
}

/// A request that was not stored.
#[derive(Debug)]
struct Failure {
    lines: Lines,
    error: ClientError,
    /// The lines the produce chain refused, when that is why (`RECORD_REJECTED`).
    refused: Lines,
}

impl Ledger {
    /// An empty ledger routing lines by `routing` into requests bounded by `limits`.
    pub fn new(routing: Routing, limits: BatchLimits) -> Self {
        Self {
            router: Router::new(routing),
            limits,
            queues: BTreeMap::new(),
            busy: BTreeSet::new(),
            pending: 0,
            lines_read: 0,
            written: BTreeMap::new(),
            failures: Vec::new(),
        }
    }

    /// Queues the records of the next input lines.
    pub fn push(&mut self, records: Vec<ProducerRecord>) {
        for record in records {
            self.lines_read += 1;
            self.pending += 1;
            let partition = self.router.partition(&record, self.limits);
            self.queues
                .entry(partition)
                .or_default()
                .push_back((self.lines_read, record));
        }
    }

    /// Records read and not yet sent.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Whether a request failed; nothing more should be sent then.
    pub fn has_failed(&self) -> bool {
        !self.failures.is_empty()
    }

    /// The next request that may go now: from the idle partition whose oldest queued line is
    /// oldest, as many of its lines as the limits allow. `None` when every partition with queued
    /// lines has a request in flight.
    pub fn next_batch(&mut self) -> Option<Batch> {
        let partition = self
            .queues
            .iter()
            .filter(|(partition, _)| !self.busy.contains(*partition))
            .filter_map(|(partition, queue)| queue.front().map(|(line, _)| (*line, *partition)))
            .min()
            .map(|(_, partition)| partition)?;
        let queue = self.queues.get_mut(&partition)?;
        let count = self
            .limits
            .fitting(queue.iter().map(|(_, record)| record.payload_len()));
        let (lines, records): (Vec<u64>, Vec<ProducerRecord>) = queue.drain(..count).unzip();
        self.pending -= records.len();
        self.busy.insert(partition);
        Some(Batch {
            records,
            sent: Sent {
                partition,
                lines: Lines(lines),
            },
        })
    }

    /// Accounts for the broker's answer to the request that carried `sent`, and returns the
    /// records of it that the topic's produce chain rejected, by input line: dropped or
    /// dead-lettered ones of a stored request, or those that made the broker refuse it.
    pub fn complete(
        &mut self,
        sent: Sent,
        result: Result<ProduceOutcome, ClientError>,
    ) -> Vec<Rejection> {
        self.busy.remove(&sent.partition);
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(error) => {
                let rejections = rejections(&sent.lines, error.rejected_records());
                self.failures.push(Failure {
                    lines: sent.lines,
                    error,
                    refused: Lines(rejections.iter().map(|r| r.line).collect()),
                });
                return rejections;
            }
        };
        let rejections = rejections(&sent.lines, outcome.rejected);
        // The broker's count: a module may also add records (flat-map).
        let stored = u64::from(outcome.record_count);
        if stored > 0 {
            let written = self.written.entry(outcome.partition).or_default();
            written.records += stored;
            if let Some(base) = outcome.base_offset {
                let (low, high) = (base, base + stored - 1);
                written.offsets = Some(match written.offsets {
                    Some((lo, hi)) => (lo.min(low), hi.max(high)),
                    None => (low, high),
                });
            }
        }
        rejections
    }

    /// The summary when every line was acknowledged; otherwise one line saying which were not.
    pub fn finish(mut self, input: InputEnd) -> anyhow::Result<Summary> {
        let mut problems = Vec::new();
        self.failures.sort_by_key(|failure| failure.lines.first());
        for (i, failure) in self.failures.iter().enumerate() {
            let lines = &failure.lines;
            problems.push(match (i, failure.refused.first()) {
                // The broker's message counts request indices; the lines are what the user has.
                (0, Some(_)) => format!(
                    "{lines} not acknowledged: the topic's produce chain rejected {} \
                     (RECORD_REJECTED; nothing of that request was stored)",
                    failure.refused
                ),
                (0, None) => format!("{lines} not acknowledged: {}", failure.error),
                (_, Some(_)) => format!("{lines} also failed: {} rejected", failure.refused),
                (_, None) => format!("{lines} also failed"),
            });
        }
        let mut unsent: Vec<u64> = self
            .queues
            .values()
            .flat_map(|queue| queue.iter().map(|(line, _)| *line))
            .collect();
        unsent.sort_unstable();
        if !unsent.is_empty() {
            problems.push(format!("{} not sent", Lines(unsent)));
        }
        match input {
            InputEnd::Complete => {}
            InputEnd::Abandoned => {
                problems.push(format!("input after line {} not read", self.lines_read));
            }
            InputEnd::Failed(err) => {
                problems.push(format!("{err:#}"));
                // Whether the lines before the bad one went, which a re-run must account for.
                if problems.len() == 1 && self.lines_read > 0 {
                    let before = Lines((1..=self.lines_read).collect());
                    let verb = if self.lines_read == 1 { "was" } else { "were" };
                    problems.push(format!("{before} before it {verb} produced"));
                }
            }
        }
        if problems.is_empty() {
            Ok(Summary {
                written: self.written,
            })
        } else {
            Err(anyhow!(problems.join("; ")))
        }
    }
}

/// The records of `rejected`, by their index in the request that carried `lines`, as input
/// lines, in line order.
fn rejections(lines: &Lines, rejected: Vec<weir_client::RejectedRecord>) -> Vec<Rejection> {
    let mut rejections: Vec<Rejection> = rejected
        .into_iter()
        .filter_map(|rejected| {
            let line = usize::try_from(rejected.index)
                .ok()
                .and_then(|index| lines.0.get(index));
            match line {
                Some(&line) => Some(Rejection {
                    line,
                    module: rejected.module,
                    reason: rejected.reason,
                    action: rejected.policy,
                }),
                None => {
                    tracing::warn!(
                        index = rejected.index,
                        "the broker rejected a record index outside the request"
                    );
                    None
                }
            }
        })
        .collect();
    rejections.sort_by_key(|r| r.line);
    rejections
}

/// What was written, for `--verbose`.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    written: BTreeMap<u32, Written>,
}

impl Summary {
    /// One line: how many records went where.
    pub fn describe(&self, topic: &str, acks: Acks) -> String {
        let total: u64 = self.written.values().map(|w| w.records).sum();
        let parts: Vec<String> = self
            .written
            .iter()
            .map(|(partition, written)| match written.offsets {
                Some((low, high)) => format!(
                    "partition {partition}: {} at offsets {low}-{high}",
                    records(written.records)
                ),
                None => format!("partition {partition}: {}", records(written.records)),
            })
            .collect();
        let offsets_note = if acks == Acks::None {
            " (acks=none: no offsets reported)"
        } else {
            ""
        };
        if parts.is_empty() {
            format!("produced 0 records to {topic}")
        } else {
            format!(
                "produced {} to {topic}{offsets_note}: {}",
                records(total),
                parts.join(", ")
            )
        }
    }
}

/// `1 record`, `2 records`.
fn records(n: u64) -> String {
    if n == 1 {
        "1 record".to_owned()
    } else {
        format!("{n} records")
    }
}

#[cfg(test)]
mod tests {
    use weir_client::RejectedRecord;

    use super::*;

    fn records(n: usize) -> Vec<ProducerRecord> {
        (0..n)
            .map(|i| ProducerRecord::new(format!("v{i}")))
            .collect()
    }

    fn keyed(keys: &[&str]) -> Vec<ProducerRecord> {
        keys.iter()
            .map(|key| ProducerRecord::new("v").with_key(key.to_string()))
            .collect()
    }

    fn limits(records: usize, bytes: usize) -> BatchLimits {
        BatchLimits { records, bytes }
    }

    fn spread(partitions: u32) -> Routing {
        Routing::Spread {
            partitions,
            first_sticky: 0,
        }
    }

    /// The answer storing `record_count` records at `base_offset`.
    fn stored_n(
        partition: u32,
        base_offset: u64,
        record_count: u32,
    ) -> Result<ProduceOutcome, ClientError> {
        Ok(ProduceOutcome {
            duplicate: false,
            partition,
            base_offset: Some(base_offset),
            record_count,
            rejected: Vec::new(),
        })
    }

    fn failed() -> Result<ProduceOutcome, ClientError> {
        Err(ClientError::InvalidArgument("bad".to_owned()))
    }

    /// Every batch the ledger lets go now, as (partition, lines).
    fn drain_ready(ledger: &mut Ledger) -> Vec<(u32, Lines)> {
        std::iter::from_fn(|| ledger.next_batch())
            .map(|batch| (batch.sent.partition, batch.sent.lines))
            .collect()
    }

    #[test]
    fn lines_display_as_compact_runs() {
        assert_eq!(Lines(vec![7]).to_string(), "line 7");
        assert_eq!(Lines(vec![3, 4, 5]).to_string(), "lines 3-5");
        assert_eq!(
            Lines(vec![3, 4, 5, 9, 12, 13]).to_string(),
            "lines 3-5, 9, 12-13"
        );
        assert_eq!(
            Lines(vec![1, 3, 5, 7, 8, 9]).to_string(),
            "lines 1, 3, 5 and 3 more"
        );
    }

    #[test]
    fn batches_respect_record_and_byte_bounds_and_number_lines() {
        let ten_bytes = || ProducerRecord::new(vec![0u8; 10]);
        let mut ledger = Ledger::new(Routing::Fixed(0), limits(2, 25));
        ledger.push((0..3).map(|_| ten_bytes()).collect());
        let batch = ledger.next_batch().expect("pending records");
        assert_eq!(batch.sent.lines, Lines(vec![1, 2]), "cut at 2 records");
        ledger.complete(batch.sent, stored_n(0, 0, 2));

        let mut ledger = Ledger::new(Routing::Fixed(0), limits(10, 25));
        ledger.push((0..3).map(|_| ten_bytes()).collect());
        let batch = ledger.next_batch().expect("pending records");
        assert_eq!(batch.sent.lines, Lines(vec![1, 2]), "cut at 25 bytes");
        ledger.complete(batch.sent, stored_n(0, 0, 2));
        ledger.push(vec![ProducerRecord::new(vec![0u8; 100])]);
        let batch = ledger.next_batch().expect("pending records");
        assert_eq!(batch.sent.lines, Lines(vec![3]));
        ledger.complete(batch.sent, stored_n(0, 2, 1));
        let batch = ledger
            .next_batch()
            .expect("one oversized record still goes");
        assert_eq!(batch.sent.lines, Lines(vec![4]));
        assert_eq!(batch.records.len(), 1);
        assert!(ledger.next_batch().is_none());
        assert_eq!(ledger.pending(), 0);
    }

    #[test]
    fn a_partition_has_one_request_in_flight_so_order_holds() {
        let mut ledger = Ledger::new(Routing::Fixed(2), limits(2, 1000));
        ledger.push(records(4));
        let first = ledger.next_batch().expect("pending");
        assert_eq!(first.sent.partition, 2);
        assert!(
            ledger.next_batch().is_none(),
            "the partition is busy until the first answer"
        );
        ledger.complete(first.sent, stored_n(2, 0, 2));
        let second = ledger.next_batch().expect("room again");
        assert_eq!(second.sent.lines, Lines(vec![3, 4]));
    }

    #[test]
    fn unkeyed_lines_on_one_partition_go_in_order_one_request_at_a_time() {
        // The case that once reordered: 1000 unkeyed lines to a 1-partition topic.
        let mut ledger = Ledger::new(spread(1), limits(100, 1 << 20));
        ledger.push(records(1000));
        assert_eq!(
            ledger.queues.keys().copied().collect::<Vec<_>>(),
            [0],
            "every line waits in the one partition's queue"
        );
        let mut sent_lines = Vec::new();
        let mut offset = 0;
        while let Some(batch) = ledger.next_batch() {
            assert_eq!(batch.sent.partition, 0);
            assert!(
                ledger.next_batch().is_none(),
                "a second request to the partition must wait for the first"
            );
            sent_lines.extend_from_slice(&batch.sent.lines.0);
            let count = u32::try_from(batch.records.len()).expect("at most 100 records");
            ledger.complete(batch.sent, stored_n(0, offset, count));
            offset += u64::from(count);
        }
        assert_eq!(sent_lines, (1..=1000).collect::<Vec<u64>>(), "input order");
        let summary = ledger.finish(InputEnd::Complete).expect("all acknowledged");
        assert_eq!(
            summary.describe("lines", Acks::All),
            "produced 1000 records to lines: partition 0: 1000 records at offsets 0-999"
        );
    }

    #[test]
    fn sticky_routing_fills_a_batch_per_partition_round_robin() {
        let mut ledger = Ledger::new(
            Routing::Spread {
                partitions: 3,
                first_sticky: 1,
            },
            limits(2, 1000),
        );
        ledger.push(records(9));
        assert_eq!(
            drain_ready(&mut ledger),
            [
                (1, Lines(vec![1, 2])),
                (2, Lines(vec![3, 4])),
                (0, Lines(vec![5, 6])),
            ],
            "one request per partition at a time, each a full batch"
        );
        ledger.complete(
            Sent {
                partition: 1,
                lines: Lines(vec![1, 2]),
            },
            stored_n(1, 0, 2),
        );
        assert_eq!(
            drain_ready(&mut ledger),
            [(1, Lines(vec![7, 8]))],
            "back to the first partition after a round"
        );
        assert_eq!(
            ledger.queues.get(&2).map(|q| q.len()),
            Some(1),
            "line 9 waits for partition 2"
        );
    }

    #[test]
    fn the_sticky_partition_moves_on_when_a_batch_is_full_of_bytes() {
        let mut ledger = Ledger::new(spread(2), limits(100, 25));
        ledger.push((0..5).map(|_| ProducerRecord::new(vec![0u8; 10])).collect());
        assert_eq!(
            drain_ready(&mut ledger),
            [(0, Lines(vec![1, 2])), (1, Lines(vec![3, 4]))]
        );
        assert_eq!(ledger.queues.get(&0).map(|q| q.len()), Some(1));
    }

    #[test]
    fn keyed_records_go_to_their_keys_partitions() {
        let mut ledger = Ledger::new(spread(4), limits(100, 1_000_000));
        let keys = ["a", "b", "c", "a", "d", "b"];
        ledger.push(keyed(&keys));
        let mut seen = BTreeMap::new();
        while let Some(batch) = ledger.next_batch() {
            let partition = batch.sent.partition;
            for record in &batch.records {
                let key = record.key.as_ref().expect("keyed");
                assert_eq!(partition_for_key(key, 4).0, partition);
            }
            seen.insert(partition, batch.sent.lines);
        }
        let lines_of = |key: &str| -> Vec<u64> {
            (1u64..)
                .zip(keys)
                .filter(|(_, k)| {
                    partition_for_key(k.as_bytes(), 4) == partition_for_key(key.as_bytes(), 4)
                })
                .map(|(line, _)| line)
                .collect()
        };
        let a = partition_for_key(b"a", 4).0;
        assert_eq!(seen.get(&a), Some(&Lines(lines_of("a"))));
    }

    #[test]
    fn keyed_records_leave_the_sticky_partition_alone() {
        let mut ledger = Ledger::new(spread(4), limits(2, 1000));
        let mut input = records(1);
        input.extend(keyed(&["a", "b", "c"]));
        input.extend(records(2));
        ledger.push(input);
        let partition_of = |line: u64| {
            ledger
                .queues
                .iter()
                .find(|(_, queue)| queue.iter().any(|(l, _)| *l == line))
                .map(|(partition, _)| *partition)
        };
        assert_eq!(
            (partition_of(1), partition_of(5), partition_of(6)),
            (Some(0), Some(0), Some(1)),
            "unkeyed lines 1 and 5 fill partition 0's batch; line 6 moves on"
        );
    }

    #[test]
    fn all_acknowledged_summarises_offsets_per_partition() {
        let mut ledger = Ledger::new(spread(2), limits(3, 1000));
        ledger.push(records(6));
        let a = ledger.next_batch().expect("lines 1-3 to partition 0");
        let b = ledger.next_batch().expect("lines 4-6 to partition 1");
        ledger.complete(b.sent, stored_n(1, 0, 3));
        ledger.complete(a.sent, stored_n(0, 10, 3));
        let summary = ledger
            .finish(InputEnd::Complete)
            .expect("everything acknowledged");
        assert_eq!(
            summary.describe("orders", Acks::All),
            "produced 6 records to orders: partition 0: 3 records at offsets 10-12, \
             partition 1: 3 records at offsets 0-2"
        );
    }

    #[test]
    fn summary_counts_single_records_in_the_singular() {
        let mut ledger = Ledger::new(Routing::Fixed(3), limits(10, 1000));
        ledger.push(records(1));
        let batch = ledger.next_batch().expect("pending");
        ledger.complete(batch.sent, stored_n(3, 41, 1));
        let summary = ledger.finish(InputEnd::Complete).expect("acknowledged");
        assert_eq!(
            summary.describe("t", Acks::All),
            "produced 1 record to t: partition 3: 1 record at offsets 41-41"
        );
    }

    #[test]
    fn failures_name_the_lines_that_failed_and_were_not_sent() {
        let mut ledger = Ledger::new(Routing::Fixed(0), limits(2, 1000));
        ledger.push(records(6));
        let first = ledger.next_batch().expect("pending");
        ledger.complete(first.sent, stored_n(0, 0, 2));
        let second = ledger.next_batch().expect("pending");
        ledger.complete(second.sent, failed());
        assert!(ledger.has_failed());
        let err = ledger
            .finish(InputEnd::Abandoned)
            .expect_err("lines 3-4 failed");
        assert_eq!(
            err.to_string(),
            "lines 3-4 not acknowledged: invalid argument: bad; lines 5-6 not sent; \
             input after line 6 not read"
        );
    }

    fn rejected(index: u32, action: RejectAction) -> RejectedRecord {
        RejectedRecord {
            index,
            reason: format!("bad {index}"),
            module: "validate@2".to_owned(),
            policy: action,
        }
    }

    #[test]
    fn dropped_and_dead_lettered_records_are_reported_by_line_and_the_run_succeeds() {
        let mut ledger = Ledger::new(spread(2), limits(10, 1000));
        ledger.push(records(20));
        let first = ledger.next_batch().expect("lines 1-10");
        let second = ledger.next_batch().expect("lines 11-20");
        let outcome = ProduceOutcome {
            duplicate: false,
            partition: second.sent.partition,
            base_offset: Some(0),
            // 10 lines, 2 rejected, and a flat-map turned one record into two.
            record_count: 9,
            rejected: vec![
                rejected(6, RejectAction::DeadLetter),
                rejected(2, RejectAction::Drop),
            ],
        };
        let rejections = ledger.complete(second.sent, Ok(outcome));
        assert_eq!(
            rejections
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                "record 13 rejected by validate@2 (dropped): bad 2",
                "record 17 rejected by validate@2 (sent to dead-letter topic): bad 6",
            ]
        );
        let partition = first.sent.partition;
        assert!(
            ledger
                .complete(first.sent, stored_n(partition, 0, 10))
                .is_empty()
        );
        let summary = ledger
            .finish(InputEnd::Complete)
            .expect("records the topic's policy dropped do not fail the run");
        assert_eq!(
            summary.describe("t", Acks::All),
            "produced 19 records to t: partition 0: 10 records at offsets 0-9, \
             partition 1: 9 records at offsets 0-8"
        );
    }

    #[test]
    fn a_request_the_produce_chain_refused_fails_the_run_naming_the_lines() {
        let mut ledger = Ledger::new(Routing::Fixed(0), limits(10, 1000));
        ledger.push(records(20));
        let first = ledger.next_batch().expect("lines 1-10");
        ledger.complete(first.sent, stored_n(0, 0, 10));
        let second = ledger.next_batch().expect("lines 11-20");
        let refused = weir_proto::error::status_with_violations(
            tonic::Code::InvalidArgument,
            "2 of the request's records rejected",
            "RECORD_REJECTED",
            [],
            [
                ("records[4]".to_owned(), "validate@2: no id".to_owned()),
                ("records[0]".to_owned(), "validate@2: bad type".to_owned()),
            ],
        );
        let rejections = ledger.complete(second.sent, Err(refused.into()));
        assert_eq!(
            rejections
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                "record 11 rejected by validate@2: bad type",
                "record 15 rejected by validate@2: no id",
            ]
        );
        assert!(ledger.has_failed());
        let err = ledger
            .finish(InputEnd::Complete)
            .expect_err("a refused request fails the run");
        assert_eq!(
            err.to_string(),
            "lines 11-20 not acknowledged: the topic's produce chain rejected lines 11, 15 \
             (RECORD_REJECTED; nothing of that request was stored)"
        );
    }

    #[test]
    fn an_input_error_says_the_earlier_lines_went() {
        let mut ledger = Ledger::new(Routing::Fixed(0), limits(10, 1000));
        ledger.push(records(2));
        let batch = ledger.next_batch().expect("pending");
        ledger.complete(batch.sent, stored_n(0, 0, 2));
        let err = ledger
            .finish(InputEnd::Failed(anyhow!(
                "line 3 has no key separator \":\""
            )))
            .expect_err("a bad line fails the run");
        assert_eq!(
            err.to_string(),
            "line 3 has no key separator \":\"; lines 1-2 before it were produced"
        );
    }
}
