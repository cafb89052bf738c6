//! Produce types: the record a producer sends, the acknowledgement level it waits for, and what
//! the broker answers.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use weir_proto::v1;

use crate::RejectAction;

/// A record to produce: an optional key, a value (or a tombstone's null value), headers and an
/// optional timestamp.
///
/// ```
/// use weir_client::ProducerRecord;
///
/// let record = ProducerRecord::new("{\"total\": 42}")
///     .with_key("customer-7")
///     .with_header("content-type", "application/json");
/// assert_eq!(record.key.as_deref(), Some(&b"customer-7"[..]));
///
/// // Deletes customer-7 from a compacted topic.
/// let delete = ProducerRecord::tombstone("customer-7");
/// assert!(delete.tombstone && delete.value.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProducerRecord {
    /// The key; `None` is "no key", which differs from an empty key.
    pub key: Option<Bytes>,
    /// The value; empty for a tombstone.
    pub value: Bytes,
    /// The value is null: a tombstone, which deletes the key from a compacted topic (Kafka's
    /// null value), as distinct from an empty value. `value` must then be empty, or the record
    /// is refused.
    pub tombstone: bool,
    /// Headers, in order; keys may repeat.
    pub headers: Vec<(String, Bytes)>,
    /// Milliseconds since the Unix epoch; `None` is the time it is sent: the
    /// [`Producer`](crate::Producer)'s clock when it forms the batch, or the broker's append
    /// time with [`Client::produce`](crate::Client::produce).
    pub timestamp_ms: Option<i64>,
    /// The partition to write to; `None` lets the [`Producer`](crate::Producer) choose (by key,
    /// or sticky round-robin). [`Client::produce`](crate::Client::produce) takes its partition
    /// as an argument instead.
    pub partition: Option<u32>,
}

impl ProducerRecord {
    /// A record with `value`, no key, no headers and the broker's timestamp.
    pub fn new(value: impl Into<Bytes>) -> Self {
        Self {
            value: value.into(),
            ..Self::default()
        }
    }

    /// A tombstone for `key`: a record with a null value, which deletes the key from a
    /// compacted topic. (A topic with a produce chain refuses tombstones: modules have no null
    /// value.)
    pub fn tombstone(key: impl Into<Bytes>) -> Self {
        Self {
            key: Some(key.into()),
            tombstone: true,
            ..Self::default()
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Appends a header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }

    /// Sets the partition the [`Producer`](crate::Producer) writes it to.
    pub fn with_partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the timestamp, in milliseconds since the Unix epoch.
    pub fn with_timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }

    /// Bytes of key, value and headers: the payload size, excluding framing.
    pub fn payload_len(&self) -> usize {
        crate::payload_len(self.key.as_ref(), &self.value, &self.headers)
    }

    /// The most bytes the record takes in an encoded batch, wherever it lies in it.
    pub(crate) fn encoded_len_bound(&self) -> usize {
        weir_types::record_len_bound(
            self.key.as_ref().map(bytes::Bytes::len),
            (!self.tombstone).then_some(self.value.len()),
            self.headers
                .iter()
                .map(|(key, value)| (key.len(), value.len())),
        )
    }
}

impl From<ProducerRecord> for v1::Record {
    fn from(record: ProducerRecord) -> Self {
        Self {
            key: record.key,
            value: record.value,
            headers: record
                .headers
                .into_iter()
                .map(|(key, value)| v1::Header { key, value })
                .collect(),
            timestamp_ms: record.timestamp_ms,
            tombstone: record.tombstone,
        }
    }
}

/// How much durability a produce request waits for before it is acknowledged.
///
/// Parses from `all`, `leader` and `none`, and from Kafka's `-1`, `1` and `0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Acks {
    /// Committed on a quorum of replicas, each having fsynced. The default.
    #[default]
    All,
    /// Kafka's `acks=1`. Today the broker treats it as [`Acks::All`]: it acknowledges only once a
    /// quorum of replicas, each having fsynced, holds the batch.
    Leader,
    /// Accepted for replication; nothing is promised and no offset is returned.
    None,
}

/// The text given for an [`Acks`] is none of the accepted spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid acks {input:?}: expected all, leader, none (or -1, 1, 0)")]
pub struct ParseAcksError {
    /// The refused text.
    pub input: String,
}

impl FromStr for Acks {
    type Err = ParseAcksError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "all" | "-1" => Ok(Self::All),
            "leader" | "1" => Ok(Self::Leader),
            "none" | "0" => Ok(Self::None),
            _ => Err(ParseAcksError {
                input: s.to_owned(),
            }),
        }
    }
}

impl fmt::Display for Acks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::All => "all",
            Self::Leader => "leader",
            Self::None => "none",
        })
    }
}

impl From<Acks> for v1::Acks {
    fn from(acks: Acks) -> Self {
        match acks {
            Acks::All => Self::All,
            Acks::Leader => Self::Leader,
            Acks::None => Self::None,
        }
    }
}

/// The broker's answer to a produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceOutcome {
    /// The partition the records went to.
    pub partition: u32,
    /// Offset of the first stored record; the stored records have consecutive offsets from it.
    /// `None` with [`Acks::None`], or when no record was stored.
    pub base_offset: Option<u64>,
    /// Records stored: the request's records minus those in [`rejected`](Self::rejected), plus
    /// any a produce-path module added (a flat-map can turn one record into several). They take
    /// the offsets from `base_offset` to `base_offset + record_count - 1`.
    pub record_count: u32,
    /// The request was an idempotent producer's retry of a batch already stored: the answer
    /// repeats the original's partition, base offset and record count, and nothing was stored
    /// again. (The original's [`rejected`](Self::rejected) list is not repeated.)
    pub duplicate: bool,
    /// Records the topic's produce chain dropped or sent to a dead-letter topic, with the
    /// module and its reason; they were not stored in the topic. (When a module whose policy
    /// is [`RejectPolicy::Reject`](crate::RejectPolicy::Reject) rejects records, the request
    /// fails instead: see [`ClientError::rejected_records`](crate::ClientError::rejected_records).)
    pub rejected: Vec<RejectedRecord>,
}

/// An idempotent producer's identity, issued by [`Client::init_producer_id`](crate::Client::init_producer_id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerId {
    /// The producer id: unique in the cluster, never reused.
    pub id: i64,
    /// The epoch the id was issued with (0).
    pub epoch: i16,
}

/// A record of a produce request that a produce-path module rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRecord {
    /// Its position in the request, from 0.
    pub index: u32,
    /// Why it was refused, as the module said.
    pub reason: String,
    /// The module that refused it, as `NAME@VERSION`.
    pub module: String,
    /// What the broker did with it.
    pub policy: RejectAction,
}

impl From<v1::RejectedRecord> for RejectedRecord {
    fn from(rejected: v1::RejectedRecord) -> Self {
        Self {
            index: rejected.index,
            reason: rejected.reason,
            module: rejected.module,
            policy: RejectAction::from_wire(rejected.policy),
        }
    }
}

impl From<v1::ProduceResponse> for ProduceOutcome {
    fn from(response: v1::ProduceResponse) -> Self {
        Self {
            partition: response.partition,
            base_offset: response.base_offset,
            record_count: response.record_count,
            duplicate: response.duplicate,
            rejected: response
                .rejected
                .into_iter()
                .map(RejectedRecord::from)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_parse_names_and_kafka_numbers() {
        for (input, acks) in [
            ("all", Acks::All),
            ("ALL", Acks::All),
            ("-1", Acks::All),
            ("leader", Acks::Leader),
            ("1", Acks::Leader),
            ("none", Acks::None),
            ("0", Acks::None),
        ] {
            assert_eq!(input.parse::<Acks>(), Ok(acks), "{input}");
        }
        assert_eq!(
            "2".parse::<Acks>(),
            Err(ParseAcksError {
                input: "2".to_owned()
            })
        );
        assert!("quorum".parse::<Acks>().is_err());
    }

    #[test]
    fn acks_display_round_trips() {
        for acks in [Acks::All, Acks::Leader, Acks::None] {
            assert_eq!(acks.to_string().parse::<Acks>(), Ok(acks));
        }
        assert_eq!(Acks::default(), Acks::All);
    }

    #[test]
    fn record_converts_to_the_wire_message() {
        let wire = v1::Record::from(
            ProducerRecord::new("v")
                .with_key("")
                .with_header("h", "1")
                .with_timestamp_ms(7),
        );
        assert_eq!(wire.key, Some(Bytes::new()), "an empty key stays a key");
        assert_eq!(&wire.value[..], b"v");
        assert_eq!(wire.headers.len(), 1);
        assert_eq!(wire.headers[0].key, "h");
        assert_eq!(wire.timestamp_ms, Some(7));
        assert_eq!(v1::Record::from(ProducerRecord::new("v")).key, None);
    }

    #[test]
    fn payload_len_counts_key_value_and_headers() {
        let record = ProducerRecord::new("value")
            .with_key("key")
            .with_header("h", "12");
        assert_eq!(record.payload_len(), 5 + 3 + 1 + 2);
    }

    #[test]
    fn outcome_carries_the_record_count_and_each_rejection() {
        let outcome = ProduceOutcome::from(v1::ProduceResponse {
            partition: 2,
            base_offset: Some(40),
            rejected: vec![
                v1::RejectedRecord {
                    index: 1,
                    reason: "no id".to_owned(),
                    module: "validate@3".to_owned(),
                    policy: v1::RejectPolicy::DeadLetter as i32,
                },
                v1::RejectedRecord {
                    index: 4,
                    reason: "too old".to_owned(),
                    module: "age@1".to_owned(),
                    policy: v1::RejectPolicy::Drop as i32,
                },
            ],
            record_count: 7,
            duplicate: false,
        });
        assert_eq!(
            (outcome.partition, outcome.base_offset, outcome.record_count),
            (2, Some(40), 7)
        );
        assert_eq!(
            outcome.rejected,
            [
                RejectedRecord {
                    index: 1,
                    reason: "no id".to_owned(),
                    module: "validate@3".to_owned(),
                    policy: RejectAction::DeadLetter,
                },
                RejectedRecord {
                    index: 4,
                    reason: "too old".to_owned(),
                    module: "age@1".to_owned(),
                    policy: RejectAction::Drop,
                },
            ]
        );
    }
}
