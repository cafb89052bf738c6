//! The bookkeeping of one `weir produce` run: which partition each line goes to, the lines read
//! but not yet sent (one queue per destination), which requests may go now, and what became of
//! every line. Pure, so routing, batching and the final report are tested without a broker.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use anyhow::anyhow;
use weir_client::{Acks, ClientError, ProduceOutcome, ProducerRecord};
use weir_types::partition_for_key;

/// Where a request goes: a partition, or `None` to let the broker choose (round-robin).
pub type Target = Option<u32>;

/// How lines are assigned to partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// Every record to one partition (`--partition`).
    Fixed(u32),
    /// Each keyed record to its key's partition under Kafka's partitioner, computed here: the
    /// broker partitions a request by its first key only, and a batch mixes keys.
    ByKey {
        /// The topic's partition count.
        partitions: u32,
    },
    /// Unkeyed records, spread by the broker.
    Broker,
}

impl Routing {
    fn target(self, record: &ProducerRecord) -> Target {
        match self {
            Self::Fixed(partition) => Some(partition),
            Self::ByKey { partitions } => record
                .key
                .as_ref()
                .map(|key| partition_for_key(key, partitions).0),
            Self::Broker => None,
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

/// What a request carries, to account for its answer.
#[derive(Debug)]
pub struct Sent {
    /// Where it went.
    pub target: Target,
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
    routing: Routing,
    /// Requests in flight at once to the broker's choice; a partition gets one at a time, so
    /// its records are stored in input order.
    broker_window: usize,
    queues: BTreeMap<Target, VecDeque<(u64, ProducerRecord)>>,
    in_flight: BTreeMap<Target, usize>,
    pending: usize,
    lines_read: u64,
    written: BTreeMap<u32, Written>,
    failures: Vec<(Lines, ClientError)>,
    rejected: Vec<(u64, String)>,
}

impl Ledger {
    /// An empty ledger routing lines by `routing`, with up to `broker_window` requests at once
    /// when the broker chooses partitions.
    pub fn new(routing: Routing, broker_window: usize) -> Self {
        Self {
            routing,
            broker_window: broker_window.max(1),
            queues: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            pending: 0,
            lines_read: 0,
            written: BTreeMap::new(),
            failures: Vec::new(),
            rejected: Vec::new(),
        }
    }

    /// Queues the records of the next input lines.
    pub fn push(&mut self, records: Vec<ProducerRecord>) {
        for record in records {
            self.lines_read += 1;
            self.pending += 1;
            self.queues
                .entry(self.routing.target(&record))
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

    /// The next request that may go now, from the queue whose oldest line is oldest: at most
    /// `max_records` records and `max_bytes` of payload (a larger single record goes alone).
    pub fn next_batch(&mut self, max_records: usize, max_bytes: usize) -> Option<Batch> {
        let target = self
            .queues
            .iter()
            .filter(|(target, queue)| !queue.is_empty() && self.has_room(**target))
            .min_by_key(|(_, queue)| queue.front().map(|(line, _)| *line))
            .map(|(target, _)| *target)?;
        let queue = self.queues.get_mut(&target)?;
        let mut bytes = 0;
        let count = queue
            .iter()
            .take(max_records)
            .take_while(|(_, record)| {
                bytes += record.payload_len();
                bytes <= max_bytes
            })
            .count()
            .max(1);
        let (lines, records): (Vec<u64>, Vec<ProducerRecord>) = queue.drain(..count).unzip();
        self.pending -= records.len();
        *self.in_flight.entry(target).or_default() += 1;
        Some(Batch {
            records,
            sent: Sent {
                target,
                lines: Lines(lines),
            },
        })
    }

    fn has_room(&self, target: Target) -> bool {
        let limit = if target.is_some() {
            1
        } else {
            self.broker_window
        };
        self.in_flight.get(&target).copied().unwrap_or(0) < limit
    }

    /// Accounts for the broker's answer to the request that carried `sent`.
    pub fn complete(&mut self, sent: Sent, result: Result<ProduceOutcome, ClientError>) {
        if let Some(n) = self.in_flight.get_mut(&sent.target) {
            *n = n.saturating_sub(1);
        }
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(err) => {
                self.failures.push((sent.lines, err));
                return;
            }
        };
        let stored = (sent.lines.0.len() as u64).saturating_sub(outcome.rejected.len() as u64);
        for rejected in outcome.rejected {
            let line = usize::try_from(rejected.index)
                .ok()
                .and_then(|index| sent.lines.0.get(index));
            match line {
                Some(&line) => self.rejected.push((line, rejected.reason)),
                None => tracing::warn!(
                    index = rejected.index,
                    "the broker rejected a record index outside the request"
                ),
            }
        }
        if stored == 0 {
            return;
        }
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

    /// The summary when every line was acknowledged; otherwise one line saying which were not.
    pub fn finish(mut self, input: InputEnd) -> anyhow::Result<Summary> {
        const SHOWN_REJECTIONS: usize = 3;
        let mut problems = Vec::new();
        self.failures.sort_by_key(|(lines, _)| lines.first());
        for (i, (lines, err)) in self.failures.iter().enumerate() {
            problems.push(if i == 0 {
                format!("{lines} not acknowledged: {err}")
            } else {
                format!("{lines} also failed")
            });
        }
        if !self.rejected.is_empty() {
            self.rejected.sort_by_key(|(line, _)| *line);
            let shown: Vec<String> = self
                .rejected
                .iter()
                .take(SHOWN_REJECTIONS)
                .map(|(line, reason)| format!("line {line}: {reason}"))
                .collect();
            let more = self.rejected.len().saturating_sub(SHOWN_REJECTIONS);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            problems.push(format!(
                "{} line(s) rejected by the broker ({}{more})",
                self.rejected.len(),
                shown.join("; ")
            ));
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

    fn stored(partition: u32, base_offset: u64) -> Result<ProduceOutcome, ClientError> {
        Ok(ProduceOutcome {
            partition,
            base_offset: Some(base_offset),
            rejected: Vec::new(),
        })
    }

    fn failed() -> Result<ProduceOutcome, ClientError> {
        Err(ClientError::InvalidArgument("bad".to_owned()))
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
        let mut ledger = Ledger::new(Routing::Broker, 10);
        ledger.push((0..5).map(|_| ProducerRecord::new(vec![0u8; 10])).collect());
        let batch = ledger.next_batch(2, 1000).expect("pending records");
        assert_eq!(batch.sent.lines, Lines(vec![1, 2]));
        let batch = ledger.next_batch(10, 25).expect("pending records");
        assert_eq!(batch.sent.lines, Lines(vec![3, 4]));
        let batch = ledger
            .next_batch(10, 5)
            .expect("one oversized record still goes");
        assert_eq!(batch.sent.lines, Lines(vec![5]));
        assert_eq!(batch.records.len(), 1);
        assert!(ledger.next_batch(10, 1000).is_none());
        assert_eq!(ledger.pending(), 0);
    }

    #[test]
    fn a_partition_has_one_request_in_flight_so_order_holds() {
        let mut ledger = Ledger::new(Routing::Fixed(2), 4);
        ledger.push(records(4));
        let first = ledger.next_batch(2, 1000).expect("pending");
        assert_eq!(first.sent.target, Some(2));
        assert!(
            ledger.next_batch(2, 1000).is_none(),
            "the partition is busy until the first answer"
        );
        ledger.complete(first.sent, stored(2, 0));
        let second = ledger.next_batch(2, 1000).expect("room again");
        assert_eq!(second.sent.lines, Lines(vec![3, 4]));
    }

    #[test]
    fn the_broker_spread_is_pipelined_up_to_the_window() {
        let mut ledger = Ledger::new(Routing::Broker, 2);
        ledger.push(records(3));
        assert!(ledger.next_batch(1, 1000).is_some());
        assert!(ledger.next_batch(1, 1000).is_some());
        assert!(ledger.next_batch(1, 1000).is_none(), "window of 2 is full");
    }

    #[test]
    fn keyed_records_go_to_their_keys_partitions() {
        let mut ledger = Ledger::new(Routing::ByKey { partitions: 4 }, 4);
        let keys = ["a", "b", "c", "a", "d", "b"];
        ledger.push(keyed(&keys));
        let mut seen = BTreeMap::new();
        while let Some(batch) = ledger.next_batch(100, 1_000_000) {
            let target = batch.sent.target.expect("keyed records have a partition");
            for record in &batch.records {
                let key = record.key.as_ref().expect("keyed");
                assert_eq!(partition_for_key(key, 4).0, target);
            }
            seen.insert(target, batch.sent.lines);
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
    fn all_acknowledged_summarises_offsets_per_partition() {
        let mut ledger = Ledger::new(Routing::Broker, 4);
        ledger.push(records(6));
        let a = ledger.next_batch(3, 1000).expect("pending");
        let b = ledger.next_batch(2, 1000).expect("pending");
        let c = ledger.next_batch(1, 1000).expect("pending");
        ledger.complete(b.sent, stored(1, 0));
        ledger.complete(a.sent, stored(0, 10));
        ledger.complete(c.sent, stored(0, 13));
        let summary = ledger
            .finish(InputEnd::Complete)
            .expect("everything acknowledged");
        assert_eq!(
            summary.describe("orders", Acks::All),
            "produced 6 records to orders: partition 0: 4 records at offsets 10-13, \
             partition 1: 2 records at offsets 0-1"
        );
    }

    #[test]
    fn summary_counts_single_records_in_the_singular() {
        let mut ledger = Ledger::new(Routing::Fixed(3), 4);
        ledger.push(records(1));
        let batch = ledger.next_batch(10, 1000).expect("pending");
        ledger.complete(batch.sent, stored(3, 41));
        let summary = ledger.finish(InputEnd::Complete).expect("acknowledged");
        assert_eq!(
            summary.describe("t", Acks::All),
            "produced 1 record to t: partition 3: 1 record at offsets 41-41"
        );
    }

    #[test]
    fn failures_name_the_lines_that_failed_and_were_not_sent() {
        let mut ledger = Ledger::new(Routing::Fixed(0), 4);
        ledger.push(records(6));
        let first = ledger.next_batch(2, 1000).expect("pending");
        ledger.complete(first.sent, stored(0, 0));
        let second = ledger.next_batch(2, 1000).expect("pending");
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

    #[test]
    fn rejected_records_fail_the_run_with_their_line_numbers() {
        let mut ledger = Ledger::new(Routing::Broker, 4);
        ledger.push(records(20));
        let _ = ledger.next_batch(10, 1000).expect("lines 1-10");
        let batch = ledger.next_batch(10, 1000).expect("lines 11-20");
        let outcome = ProduceOutcome {
            partition: 0,
            base_offset: Some(0),
            rejected: (0..5)
                .map(|index| RejectedRecord {
                    index: index * 2,
                    reason: format!("bad {index}"),
                })
                .collect(),
        };
        ledger.complete(batch.sent, Ok(outcome));
        let err = ledger
            .finish(InputEnd::Complete)
            .expect_err("rejections are failures");
        assert_eq!(
            err.to_string(),
            "5 line(s) rejected by the broker (line 11: bad 0; line 13: bad 1; line 15: bad 2 \
             and 2 more)"
        );
    }

    #[test]
    fn an_input_error_says_the_earlier_lines_went() {
        let mut ledger = Ledger::new(Routing::Fixed(0), 4);
        ledger.push(records(2));
        let batch = ledger.next_batch(10, 1000).expect("pending");
        ledger.complete(batch.sent, stored(0, 0));
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
