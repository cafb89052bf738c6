//! The checker: what a nemesis run's history and the cluster's final state must satisfy.
//!
//! Pure: it sees the operations the workload recorded and what every replica holds at the end,
//! and lists every violation it finds (never stopping at the first):
//! - an acknowledged record missing, or at another offset than acknowledged (lost);
//! - a record stored more than once (duplicate), or one no writer sent (unexpected);
//! - one writer's records out of their send order within a partition (reordered);
//! - replicas of a partition that differ, byte for byte (diverged), or did not catch up;
//! - a record a reader saw that the final log does not hold at that offset (vanished);
//! - a group's committed offset, once a commit of it was acknowledged, answered lower by a
//!   query sent after that (commit lost: the offset was lost or moved backwards).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use bytes::Bytes;

use super::history::{Append, Commit, CommittedView, Outcome, Read};

/// One partition's final state.
#[derive(Debug, Clone, Default)]
pub struct FinalPartition {
    /// The partition's log start: records below it were trimmed (the checker does not count
    /// them lost, nor reads of them vanished).
    pub log_start: u64,
    /// The partition's records, `(offset, value)`, from its log start, as its leader serves them.
    pub records: Vec<(u64, Bytes)>,
    /// Every replica's stored batches, exactly as served, by node.
    pub replicas: BTreeMap<u64, Vec<Bytes>>,
}

/// Something the run must never show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// An acknowledged record is not in the log at the offset it was acknowledged at.
    Lost {
        /// The partition.
        partition: u32,
        /// The record's value.
        value: String,
        /// The acknowledged offset.
        acknowledged: u64,
        /// Where it is instead, if anywhere.
        found: Option<u64>,
    },
    /// A record is stored more than once.
    Duplicate {
        /// The partition.
        partition: u32,
        /// The record's value.
        value: String,
        /// Its offsets.
        offsets: Vec<u64>,
    },
    /// A record no writer sent to this partition.
    Unexpected {
        /// The partition.
        partition: u32,
        /// The offset.
        offset: u64,
        /// Its value.
        value: String,
    },
    /// A writer's records are stored out of the order it sent them in.
    Reordered {
        /// The partition.
        partition: u32,
        /// The writer.
        writer: u32,
        /// The record sent earlier, stored later, and its offset.
        earlier: (String, u64),
        /// The record sent later, stored earlier, and its offset.
        later: (String, u64),
    },
    /// Two replicas of a partition hold different bytes.
    Diverged {
        /// The partition.
        partition: u32,
        /// The first node.
        a: u64,
        /// The other node.
        b: u64,
        /// The index of the first batch that differs.
        batch: usize,
    },
    /// A reader saw a record the final log does not hold there.
    Vanished {
        /// The partition.
        partition: u32,
        /// The offset read.
        offset: u64,
        /// The value read.
        read: String,
        /// What the final log holds there.
        now: Option<String>,
    },
    /// A query of the group's committed offsets, sent after a commit was acknowledged, answered
    /// a lower offset (or none) for its partition.
    CommitLost {
        /// The partition.
        partition: u32,
        /// The highest offset acknowledged as committed before the query was sent.
        acknowledged: u64,
        /// What the query answered.
        answered: Option<u64>,
        /// When the query was sent, since the start of the run.
        queried_at: std::time::Duration,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Lost {
                partition,
                value,
                acknowledged,
                found,
            } => write!(
                f,
                "lost: {value} acknowledged at {partition}@{acknowledged}, found {found:?}"
            ),
            Violation::Duplicate {
                partition,
                value,
                offsets,
            } => {
                write!(f, "duplicate: {value} stored at {partition}@{offsets:?}")
            }
            Violation::Unexpected {
                partition,
                offset,
                value,
            } => {
                write!(
                    f,
                    "unexpected: {partition}@{offset} holds {value}, which no writer sent there"
                )
            }
            Violation::Reordered {
                partition,
                writer,
                earlier,
                later,
            } => write!(
                f,
                "reordered: writer {writer} sent {} before {}, partition {partition} stores them the other way (at {} and {})",
                earlier.0, later.0, earlier.1, later.1
            ),
            Violation::Diverged {
                partition,
                a,
                b,
                batch,
            } => write!(
                f,
                "diverged: partition {partition} differs between nodes {a} and {b} from batch {batch}"
            ),
            Violation::Vanished {
                partition,
                offset,
                read,
                now,
            } => write!(
                f,
                "vanished: a reader saw {read} at {partition}@{offset}; the log now holds {now:?}"
            ),
            Violation::CommitLost {
                partition,
                acknowledged,
                answered,
                queried_at,
            } => write!(
                f,
                "commit lost: offset {acknowledged} of partition {partition} was committed, a query at {:.3}s answered {answered:?}",
                queried_at.as_secs_f64()
            ),
        }
    }
}

/// What the checker counted, besides violations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Appends acknowledged.
    pub acknowledged: usize,
    /// Of those, trimmed since (below the final log start): not checked.
    pub trimmed: usize,
    /// Appends that failed or whose outcome is unknown.
    pub indefinite: usize,
    /// Of those, stored all the same.
    pub indefinite_stored: usize,
    /// Records read during the run.
    pub read: usize,
    /// Group offset commits acknowledged (one per partition in a commit).
    pub commits: usize,
    /// Queries of the group's committed offsets answered.
    pub commit_queries: usize,
}

/// Checks `appends` and `reads` against the final state of every partition.
pub fn check(
    appends: &[Append],
    reads: &[Read],
    partitions: &BTreeMap<u32, FinalPartition>,
) -> (Tally, Vec<Violation>) {
    let mut violations = Vec::new();
    let mut tally = Tally {
        read: reads.len(),
        ..Tally::default()
    };
    // Where each value is stored, per partition.
    let mut stored: HashMap<(u32, &[u8]), Vec<u64>> = HashMap::new();
    for (&partition, state) in partitions {
        for (offset, value) in &state.records {
            stored
                .entry((partition, value.as_ref()))
                .or_default()
                .push(*offset);
        }
    }
    let sent: HashMap<(u32, &[u8]), &Append> = appends
        .iter()
        .map(|a| ((a.partition, a.value.as_bytes()), a))
        .collect();

    for append in appends {
        let at = stored.get(&(append.partition, append.value.as_bytes()));
        match append.outcome {
            Outcome::Ok { offset } => {
                tally.acknowledged += 1;
                let trimmed = partitions
                    .get(&append.partition)
                    .is_some_and(|p| offset < p.log_start);
                if trimmed {
                    tally.trimmed += 1;
                } else if at.is_none_or(|offsets| !offsets.contains(&offset)) {
                    violations.push(Violation::Lost {
                        partition: append.partition,
                        value: append.value.clone(),
                        acknowledged: offset,
                        found: at.and_then(|o| o.first().copied()),
                    });
                }
            }
            Outcome::Failed | Outcome::Unknown => {
                tally.indefinite += 1;
                tally.indefinite_stored += usize::from(at.is_some());
            }
        }
    }
    for (&partition, state) in partitions {
        let mut seen: HashMap<&[u8], Vec<u64>> = HashMap::new();
        let mut last_by_writer: HashMap<u32, (&Append, u64)> = HashMap::new();
        for (offset, value) in &state.records {
            seen.entry(value.as_ref()).or_default().push(*offset);
            let Some(append) = sent.get(&(partition, value.as_ref())) else {
                violations.push(Violation::Unexpected {
                    partition,
                    offset: *offset,
                    value: String::from_utf8_lossy(value).into_owned(),
                });
                continue;
            };
            if let Some((previous, at)) = last_by_writer.insert(append.writer, (append, *offset))
                && previous.seq > append.seq
            {
                violations.push(Violation::Reordered {
                    partition,
                    writer: append.writer,
                    earlier: (append.value.clone(), *offset),
                    later: (previous.value.clone(), at),
                });
            }
        }
        for (value, offsets) in seen {
            if offsets.len() > 1 {
                violations.push(Violation::Duplicate {
                    partition,
                    value: String::from_utf8_lossy(value).into_owned(),
                    offsets,
                });
            }
        }
        let mut replicas = state.replicas.iter();
        if let Some((&a, first)) = replicas.next() {
            for (&b, other) in replicas {
                let differs = first
                    .iter()
                    .zip(other)
                    .position(|(x, y)| x != y)
                    .or_else(|| (first.len() != other.len()).then(|| first.len().min(other.len())));
                if let Some(batch) = differs {
                    violations.push(Violation::Diverged {
                        partition,
                        a,
                        b,
                        batch,
                    });
                }
            }
        }
    }
    for read in reads {
        let partition = partitions.get(&read.partition);
        if partition.is_some_and(|p| read.offset < p.log_start) {
            continue; // trimmed since
        }
        let now = partition
            .and_then(|p| p.records.iter().find(|(o, _)| *o == read.offset))
            .map(|(_, v)| v);
        if now != Some(&read.value) {
            violations.push(Violation::Vanished {
                partition: read.partition,
                offset: read.offset,
                read: String::from_utf8_lossy(&read.value).into_owned(),
                now: now.map(|v| String::from_utf8_lossy(v).into_owned()),
            });
        }
    }
    (tally, violations)
}

/// Checks every committed-offset query against the commits acknowledged before it was sent:
/// for each partition it must answer at least the highest of them. The group consumer commits
/// only forward from what it was last answered, so a lower answer is a commit lost or undone.
/// Adds to `tally`'s commit counts.
pub fn check_commits(
    commits: &[Commit],
    views: &[CommittedView],
    tally: &mut Tally,
) -> Vec<Violation> {
    let mut acknowledged: Vec<&Commit> = commits.iter().filter(|c| c.acknowledged).collect();
    acknowledged.sort_by_key(|c| c.completed);
    let mut views: Vec<&CommittedView> = views.iter().collect();
    views.sort_by_key(|v| v.invoked);
    tally.commits += acknowledged.len();
    tally.commit_queries += views.len();
    let mut violations = Vec::new();
    // The highest acknowledged offset per partition among the commits answered so far.
    let mut floor: BTreeMap<u32, u64> = BTreeMap::new();
    let mut next_commit = acknowledged.iter().peekable();
    for view in views {
        while let Some(commit) = next_commit.next_if(|c| c.completed < view.invoked) {
            let highest = floor.entry(commit.partition).or_default();
            *highest = (*highest).max(commit.offset);
        }
        for (&partition, &highest) in &floor {
            let answered = view.offsets.get(&partition).copied();
            if answered.is_none_or(|a| a < highest) {
                violations.push(Violation::CommitLost {
                    partition,
                    acknowledged: highest,
                    answered,
                    queried_at: view.invoked,
                });
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(writer: u32, seq: u64, partition: u32, outcome: Outcome) -> Append {
        Append {
            writer,
            seq,
            partition,
            value: format!("w{writer}-{seq}"),
            outcome,
        }
    }

    fn log(values: &[&str]) -> FinalPartition {
        let records: Vec<(u64, Bytes)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u64, Bytes::copy_from_slice(v.as_bytes())))
            .collect();
        let batch = Bytes::from(values.concat());
        FinalPartition {
            log_start: 0,
            records,
            replicas: BTreeMap::from([(1, vec![batch.clone()]), (2, vec![batch])]),
        }
    }

    #[test]
    fn trimmed_records_are_neither_lost_nor_vanished_but_only_below_the_log_start() {
        let appends = [
            append(1, 0, 0, Outcome::Ok { offset: 0 }),
            append(1, 1, 0, Outcome::Ok { offset: 1 }),
            append(1, 2, 0, Outcome::Ok { offset: 2 }),
        ];
        let reads = |offset: u64, value: &'static [u8]| Read {
            partition: 0,
            offset,
            value: Bytes::from_static(value),
        };
        // Offsets 0 and 1 trimmed; 2 kept.
        let mut p = log(&["w1-2"]);
        p.records = vec![(2, Bytes::from_static(b"w1-2"))];
        p.log_start = 2;
        let partitions = BTreeMap::from([(0, p.clone())]);
        let (tally, violations) = check(&appends, &[reads(0, b"w1-0")], &partitions);
        assert_eq!(violations, Vec::new());
        assert_eq!((tally.acknowledged, tally.trimmed), (3, 2));
        // At or above the log start, a missing record is still lost, a changed one vanished.
        p.records.clear();
        let partitions = BTreeMap::from([(0, p)]);
        let (_, violations) = check(&appends, &[reads(2, b"w1-2")], &partitions);
        assert_eq!(violations.len(), 2, "{violations:#?}");
    }

    #[test]
    fn a_clean_history_passes() {
        let appends = [
            append(1, 0, 0, Outcome::Ok { offset: 0 }),
            append(1, 1, 0, Outcome::Unknown),
            append(2, 0, 0, Outcome::Ok { offset: 1 }),
        ];
        let reads = [Read {
            partition: 0,
            offset: 1,
            value: Bytes::from_static(b"w2-0"),
        }];
        let partitions = BTreeMap::from([(0, log(&["w1-0", "w2-0"]))]);
        let (tally, violations) = check(&appends, &reads, &partitions);
        assert_eq!(violations, []);
        assert_eq!(
            tally,
            Tally {
                acknowledged: 2,
                indefinite: 1,
                indefinite_stored: 0,
                read: 1,
                ..Tally::default()
            }
        );
    }

    #[test]
    fn every_kind_of_violation_is_found() {
        let appends = [
            append(1, 0, 0, Outcome::Ok { offset: 0 }),
            append(1, 1, 0, Outcome::Ok { offset: 1 }),
            append(1, 2, 0, Outcome::Ok { offset: 2 }),
            append(2, 0, 0, Outcome::Failed),
        ];
        let reads = [Read {
            partition: 0,
            offset: 3,
            value: Bytes::from_static(b"gone"),
        }];
        // w1-0 lost, w1-2 before w1-1, w2-0 twice, "x" never sent; replicas differ.
        let mut p = log(&["w1-2", "w1-1", "w2-0", "w2-0", "x"]);
        p.replicas.insert(3, vec![Bytes::from_static(b"other")]);
        let partitions = BTreeMap::from([(0, p)]);
        let (_, violations) = check(&appends, &reads, &partitions);
        let kinds: Vec<&str> = violations
            .iter()
            .map(|v| match v {
                Violation::Lost { .. } => "lost",
                Violation::Duplicate { .. } => "duplicate",
                Violation::Unexpected { .. } => "unexpected",
                Violation::Reordered { .. } => "reordered",
                Violation::Diverged { .. } => "diverged",
                Violation::Vanished { .. } => "vanished",
                Violation::CommitLost { .. } => "commit lost",
            })
            .collect();
        for kind in [
            "lost",
            "duplicate",
            "unexpected",
            "reordered",
            "diverged",
            "vanished",
        ] {
            assert!(kinds.contains(&kind), "no {kind} in {violations:#?}");
        }
        // w1-1 acknowledged at 1 and stored at 1; w1-2 acknowledged at 2, stored at 0.
        assert!(violations.contains(&Violation::Lost {
            partition: 0,
            value: "w1-2".into(),
            acknowledged: 2,
            found: Some(0)
        }));
    }

    fn commit(partition: u32, offset: u64, acknowledged: bool, completed_ms: u64) -> Commit {
        Commit {
            partition,
            offset,
            acknowledged,
            completed: std::time::Duration::from_millis(completed_ms),
        }
    }

    fn view(invoked_ms: u64, offsets: &[(u32, u64)]) -> CommittedView {
        CommittedView {
            invoked: std::time::Duration::from_millis(invoked_ms),
            offsets: offsets.iter().copied().collect(),
        }
    }

    #[test]
    fn committed_offsets_must_not_fall_below_an_acknowledged_commit() {
        let commits = [
            commit(0, 10, true, 100),
            commit(1, 4, true, 100),
            // Not acknowledged: a query may or may not see it.
            commit(0, 30, false, 300),
            commit(0, 20, true, 500),
        ];
        let clean = [
            // Sent before the first commit was answered: anything goes.
            view(50, &[]),
            view(200, &[(0, 10), (1, 4)]),
            view(400, &[(0, 30), (1, 4)]),
            // Sent before the commit of 20 was answered: 10 is still fine.
            view(450, &[(0, 10), (1, 4)]),
            view(600, &[(0, 20), (1, 4)]),
        ];
        let mut tally = Tally::default();
        assert_eq!(check_commits(&commits, &clean, &mut tally), []);
        assert_eq!((tally.commits, tally.commit_queries), (3, 5));

        let lost = [view(600, &[(0, 10), (1, 4)]), view(700, &[(0, 20)])];
        let violations = check_commits(&commits, &lost, &mut Tally::default());
        assert_eq!(
            violations,
            [
                Violation::CommitLost {
                    partition: 0,
                    acknowledged: 20,
                    answered: Some(10),
                    queried_at: std::time::Duration::from_millis(600),
                },
                Violation::CommitLost {
                    partition: 1,
                    acknowledged: 4,
                    answered: None,
                    queried_at: std::time::Duration::from_millis(700),
                },
            ]
        );
    }
}
