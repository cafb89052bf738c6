//! What became of every line of one `weir produce` run, from the `Producer`'s per-record
//! deliveries: which were stored where, which a topic's produce chain rejected, and which were
//! not acknowledged. Pure, so the report is tested without a broker.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::anyhow;
use weir_client::{Acks, DeliveryError, RecordMetadata, RejectAction, RejectedRecord};

/// Input line numbers, counted from 1, in increasing order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lines(Vec<u64>);

impl Lines {
    fn push(&mut self, line: u64) {
        self.0.push(line);
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
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

/// A line the topic's produce chain rejected.
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
    /// without parenthesis when its whole request was refused.
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

/// Records written to one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Written {
    records: u64,
    /// Lowest and highest offsets reported; `None` with acks=none.
    offsets: Option<(u64, u64)>,
}

/// How reading the input ended.
#[derive(Debug)]
pub enum InputEnd {
    /// Every line was read.
    Complete,
    /// Reading stopped at a bad line or an I/O error; every earlier line was read.
    Failed(anyhow::Error),
}

/// The outcomes of one run's lines, taken in input order.
#[derive(Debug, Default)]
pub struct Report {
    lines: u64,
    written: BTreeMap<u32, Written>,
    /// Lines not acknowledged, and the first error among them.
    failed: Lines,
    first_error: Option<DeliveryError>,
    /// Lines whose batch a produce chain refused (`RECORD_REJECTED`).
    refused: Lines,
}

impl Report {
    /// Accounts for the next line's delivery; returns the line's rejection to report, if a
    /// produce chain rejected it.
    pub fn record(&mut self, outcome: Result<RecordMetadata, DeliveryError>) -> Option<Rejection> {
        self.lines += 1;
        let line = self.lines;
        match outcome {
            Ok(stored) => {
                let written = self.written.entry(stored.partition).or_default();
                written.records += 1;
                if let Some(offset) = stored.offset {
                    written.offsets = Some(match written.offsets {
                        Some((low, high)) => (low.min(offset), high.max(offset)),
                        None => (offset, offset),
                    });
                }
                None
            }
            Err(DeliveryError::Rejected(rejected)) => {
                let rejection = rejection(line, rejected);
                // Under the reject policy nothing of the batch was stored: the line failed.
                if rejection.action == RejectAction::Reject {
                    self.refused.push(line);
                    self.fail(line, DeliveryError::Rejected(as_record(&rejection)));
                }
                Some(rejection)
            }
            Err(error) => {
                self.fail(line, error);
                None
            }
        }
    }

    fn fail(&mut self, line: u64, error: DeliveryError) {
        self.failed.push(line);
        self.first_error.get_or_insert(error);
    }

    /// The summary when every line was acknowledged; otherwise one line saying which were not.
    pub fn finish(self, input: InputEnd) -> anyhow::Result<Summary> {
        let mut problems = Vec::new();
        if !self.failed.is_empty() {
            problems.push(if self.refused.is_empty() {
                let error = self
                    .first_error
                    .map_or_else(String::new, |e| format!(": {e}"));
                format!("{} not acknowledged{error}", self.failed)
            } else {
                // The broker's message counts indices in a request; the lines are what the user
                // has.
                format!(
                    "{} not acknowledged: the topic's produce chain rejected {} \
                     (RECORD_REJECTED; nothing of that request was stored)",
                    self.failed, self.refused
                )
            });
        }
        if let InputEnd::Failed(err) = input {
            problems.push(format!("{err:#}"));
            // Whether the lines before the bad one went, which a re-run must account for.
            if problems.len() == 1 && self.lines > 0 {
                let before = Lines((1..=self.lines).collect());
                let verb = if self.lines == 1 { "was" } else { "were" };
                problems.push(format!("{before} before it {verb} produced"));
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

fn rejection(line: u64, rejected: RejectedRecord) -> Rejection {
    Rejection {
        line,
        module: rejected.module,
        reason: rejected.reason,
        action: rejected.policy,
    }
}

fn as_record(rejection: &Rejection) -> RejectedRecord {
    RejectedRecord {
        index: 0,
        reason: rejection.reason.clone(),
        module: rejection.module.clone(),
        policy: rejection.action,
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
    use std::sync::Arc;

    use weir_client::ClientError;

    use super::*;

    fn stored(partition: u32, offset: u64) -> Result<RecordMetadata, DeliveryError> {
        Ok(RecordMetadata {
            topic: "t".into(),
            partition,
            offset: Some(offset),
        })
    }

    fn rejected(action: RejectAction) -> Result<RecordMetadata, DeliveryError> {
        Err(DeliveryError::Rejected(RejectedRecord {
            index: 0,
            reason: "no id".to_owned(),
            module: "json-validate@1".to_owned(),
            policy: action,
        }))
    }

    fn failed() -> Result<RecordMetadata, DeliveryError> {
        Err(DeliveryError::Failed(Arc::new(
            ClientError::InvalidArgument("refused".to_owned()),
        )))
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
    fn all_acknowledged_summarises_offsets_per_partition() {
        let mut report = Report::default();
        for outcome in [stored(0, 4), stored(1, 0), stored(0, 5), stored(0, 6)] {
            assert_eq!(report.record(outcome), None);
        }
        let summary = report.finish(InputEnd::Complete).unwrap();
        assert_eq!(
            summary.describe("t", Acks::All),
            "produced 4 records to t: partition 0: 3 records at offsets 4-6, partition 1: 1 record at offsets 0-0"
        );
        assert_eq!(
            Report::default()
                .finish(InputEnd::Complete)
                .unwrap()
                .describe("t", Acks::All),
            "produced 0 records to t"
        );
    }

    #[test]
    fn dropped_and_dead_lettered_lines_are_reported_and_the_run_succeeds() {
        let mut report = Report::default();
        assert_eq!(report.record(stored(0, 0)), None);
        let dropped = report.record(rejected(RejectAction::Drop)).unwrap();
        assert_eq!(
            dropped.to_string(),
            "record 2 rejected by json-validate@1 (dropped): no id"
        );
        let dead = report.record(rejected(RejectAction::DeadLetter)).unwrap();
        assert_eq!(
            dead.to_string(),
            "record 3 rejected by json-validate@1 (sent to dead-letter topic): no id"
        );
        assert!(report.finish(InputEnd::Complete).is_ok());
    }

    #[test]
    fn a_refused_batch_fails_the_run_naming_its_lines() {
        let mut report = Report::default();
        let collateral = || {
            Err(DeliveryError::Failed(Arc::new(
                ClientError::InvalidArgument("RECORD_REJECTED".to_owned()),
            )))
        };
        report.record(collateral());
        let refused = report.record(rejected(RejectAction::Reject)).unwrap();
        assert_eq!(
            refused.to_string(),
            "record 2 rejected by json-validate@1: no id"
        );
        report.record(collateral());
        report.record(rejected(RejectAction::Reject));
        let err = report.finish(InputEnd::Complete).unwrap_err();
        assert_eq!(
            err.to_string(),
            "lines 1-4 not acknowledged: the topic's produce chain rejected lines 2, 4 \
             (RECORD_REJECTED; nothing of that request was stored)"
        );
    }

    #[test]
    fn failures_name_the_lines_and_the_first_error() {
        let mut report = Report::default();
        report.record(stored(0, 0));
        report.record(failed());
        report.record(failed());
        let err = report.finish(InputEnd::Complete).unwrap_err();
        assert_eq!(
            err.to_string(),
            "lines 2-3 not acknowledged: invalid argument: refused"
        );
    }

    #[test]
    fn an_input_error_says_the_earlier_lines_went() {
        let mut report = Report::default();
        report.record(stored(0, 0));
        report.record(stored(0, 1));
        let err = report
            .finish(InputEnd::Failed(anyhow!(
                "line 3 has no key separator \":\""
            )))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 3 has no key separator \":\"; lines 1-2 before it were produced"
        );
    }
}
