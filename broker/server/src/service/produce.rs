//! Produce and InitProducerId: validating what a producer sent, running the topic's produce
//! chain, and appending through the partition leader, idempotently when the producer is.
//!
//! A request carries `records` (encoded here into a Kafka v2 batch) or a `record_batch` the
//! client encoded (validated in full and stored as it is). Everything is checked before
//! anything is stored. An idempotent producer's batch (a producer id in the batch header, or
//! `producer` beside `records`) is judged by the partition leader against the producer's
//! sequence (see weir-raft's `PartitionReplica::append`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::Request;
use weir_proto::v1 as pb;
use weir_raft::{Appended, ProducerBatch};
use weir_types::{
    BatchEncoder, EncodedBatch, Header, ProducerStamp, Record, TopicName, partition_for_key,
};

use super::{BrokerService, now_ms};
use crate::error::{BrokerError, RejectedRecord};
use crate::metadata::{RejectPolicy, TimestampType, TopicInfo};
use crate::modules::dead_letter_record;
use crate::node::Node;

/// A produce request's records, validated and encoded.
struct Produced {
    /// The batch as the producer sent it (or as encoded from `records`).
    batch: EncodedBatch,
    /// The idempotent producer's fields, when it is one.
    producer: Option<ProducerStamp>,
}

impl Produced {
    /// Validates a request's records or record batch.
    fn from_request(
        records: Vec<pb::Record>,
        record_batch: Bytes,
        producer: Option<pb::ProducerSequence>,
        limits: weir_types::BatchLimits,
    ) -> Result<Self, BrokerError> {
        match (records.is_empty(), record_batch.is_empty()) {
            (true, true) => Err(BrokerError::EmptyBatch),
            (false, false) => Err(BrokerError::InvalidArgument(
                "records and record_batch are alternatives: send one of them".into(),
            )),
            (false, true) => {
                let producer = producer.map(producer_stamp).transpose()?;
                let batch = BatchEncoder::new(limits)
                    .with_producer(producer)
                    .encode(&to_records(records)?)?;
                Ok(Self { batch, producer })
            }
            (true, false) => {
                if producer.is_some() {
                    return Err(BrokerError::InvalidArgument(
                        "with record_batch the producer fields are the batch header's: leave \
                         `producer` unset"
                            .into(),
                    ));
                }
                let batch = EncodedBatch::validate_produced(record_batch, limits)?;
                let producer = batch.header().producer();
                Ok(Self { batch, producer })
            }
        }
    }

    fn first_key(&self) -> Option<Bytes> {
        self.batch
            .records()
            .next()
            .and_then(Result::ok)
            .and_then(|(_, record)| record.key)
    }

    /// The producer's sequence range: over the records it sent, whatever the chain keeps.
    fn producer_batch(&self) -> Option<ProducerBatch> {
        self.producer
            .map(|stamp| ProducerBatch::new(stamp, self.batch.header().record_count))
    }
}

/// Checks the `producer` fields beside `records`.
fn producer_stamp(p: pb::ProducerSequence) -> Result<ProducerStamp, BrokerError> {
    if p.producer_id < 0 {
        return Err(BrokerError::InvalidArgument(format!(
            "producer id {} is negative",
            p.producer_id
        )));
    }
    let producer_epoch = i16::try_from(p.producer_epoch)
        .ok()
        .filter(|e| *e >= 0)
        .ok_or_else(|| {
            BrokerError::InvalidArgument(format!(
                "producer epoch {} is outside 0 to 32767",
                p.producer_epoch
            ))
        })?;
    if p.base_sequence < 0 {
        return Err(BrokerError::InvalidArgument(format!(
            "base sequence {} is negative",
            p.base_sequence
        )));
    }
    Ok(ProducerStamp {
        producer_id: p.producer_id,
        producer_epoch,
        base_sequence: p.base_sequence,
    })
}

/// Turns produced records into domain records, stamping the broker's time where none was given.
fn to_records(records: Vec<pb::Record>) -> Result<Vec<Record>, BrokerError> {
    let now = now_ms();
    records
        .into_iter()
        .enumerate()
        .map(|(index, r)| {
            let timestamp_ms = r.timestamp_ms.unwrap_or(now);
            if timestamp_ms < 0 {
                return Err(BrokerError::InvalidRecord(format!(
                    "record {index} has a negative timestamp ({timestamp_ms})"
                )));
            }
            Ok(Record {
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|h| Header {
                        key: h.key,
                        value: h.value,
                    })
                    .collect(),
                timestamp_ms,
                // The encoder refuses a tombstone with a value, naming the record.
                tombstone: r.tombstone,
            })
        })
        .collect()
}

/// Refuses a batch for a compacted topic that holds a record without a key: compaction keeps
/// the latest record of each key, so a keyless one has no place there (Kafka refuses it too).
fn refuse_keyless(topic: &str, batch: &EncodedBatch) -> Result<(), BrokerError> {
    for (index, record) in batch.compaction_records().enumerate() {
        if record.map_err(BrokerError::from)?.key.is_none() {
            return Err(BrokerError::InvalidRecord(format!(
                "record {index} has no key, and topic '{topic}' is compacted \
                 (cleanup.policy includes compact): every record needs a key"
            )));
        }
    }
    Ok(())
}

fn to_pb_record(record: Record) -> pb::Record {
    pb::Record {
        key: record.key,
        value: record.value,
        headers: record
            .headers
            .into_iter()
            .map(|h| pb::Header {
                key: h.key,
                value: h.value,
            })
            .collect(),
        timestamp_ms: Some(record.timestamp_ms),
        tombstone: record.tombstone,
    }
}

/// What a produce chain left to store.
struct ProduceChainRun {
    /// The records to store; `None` when they are the request's records, every one as the
    /// producer sent it (see `ChainOutput::unchanged`).
    kept: Option<Vec<Record>>,
    /// The records dropped or dead-lettered.
    report: Vec<pb::RejectedRecord>,
}

/// Refuses records a produce chain cannot take: tombstones, since the module ABI has no null
/// value (a module could neither see nor keep one).
fn check_chain_input(records: &[Record], topic: &TopicName) -> Result<(), BrokerError> {
    match records.iter().position(|r| r.tombstone) {
        Some(index) => Err(BrokerError::InvalidRecord(format!(
            "record {index} is a tombstone (a null value): tombstones cannot pass through \
             topic '{topic}''s produce chain, whose modules have no null value"
        ))),
        None => Ok(()),
    }
}

impl BrokerService {
    pub(super) async fn handle_produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<pb::ProduceResponse, BrokerError> {
        let node = self.node()?;
        let req = request.into_inner();
        let acks = pb::Acks::try_from(req.acks).map_err(|_| {
            BrokerError::InvalidArgument(format!("unknown acks value {}", req.acks))
        })?;
        let topic = self.topic(&req.topic).await?;
        let started = Instant::now();
        let config = node.topic_config(&topic);
        let limits = node.batch_limits_for(&config);
        let produced = Produced::from_request(req.records, req.record_batch, req.producer, limits)
            .map_err(|e| match e {
                BrokerError::TooLarge(m) if limits != node.config.batch_limits() => {
                    BrokerError::TooLarge(format!(
                        "{m} (topic '{}' has max.message.bytes={})",
                        topic.name, limits.max_batch_bytes
                    ))
                }
                other => other,
            })?;
        let partitions = topic.partitions.len() as u32;
        let partition = match (req.partition, produced.first_key()) {
            (Some(p), _) => Node::check_partition(&topic, p)?,
            (None, Some(key)) => partition_for_key(&key, partitions),
            (None, None) => node.next_round_robin(partitions),
        };
        let producer = produced.producer_batch();
        if let Some(producer) = &producer {
            if acks == pb::Acks::None {
                return Err(BrokerError::InvalidArgument(
                    "an idempotent producer needs acknowledgements: use acks=all".into(),
                ));
            }
            node.check_producer_issued(producer.producer_id).await?;
        }
        let hosted = node.leader_of(&topic, partition).await?;
        let answer = |appended: Appended, rejected| {
            let stored = appended.outcome.record_count > 0;
            pb::ProduceResponse {
                partition: partition.0,
                base_offset: stored.then_some(appended.outcome.base_offset.0),
                rejected,
                record_count: appended.outcome.record_count,
                duplicate: appended.duplicate,
            }
        };
        // A retry of a stored batch is answered before the produce chain runs again (and
        // before its dead-letter records would be produced twice).
        if let Some(outcome) = producer
            .as_ref()
            .and_then(|p| hosted.replica.stored_duplicate(p))
        {
            self.metrics.duplicate(&req.topic);
            let duplicate = Appended {
                outcome,
                duplicate: true,
            };
            return Ok(answer(duplicate, Vec::new()));
        }
        node.disk.check_room()?;
        let mut batch = Some(produced.batch);
        let mut rejected = Vec::new();
        if !topic.produce_chain.is_empty() {
            let records: Vec<Record> = batch
                .as_ref()
                .map(|b| b.records().map(|r| r.map(|(_, r)| r)).collect())
                .transpose()
                .map_err(BrokerError::from)?
                .unwrap_or_default();
            check_chain_input(&records, &topic.name)?;
            let ran = self.run_produce_chain(&topic, records).await?;
            rejected = ran.report;
            batch = match ran.kept {
                // Every record as the producer sent it: its batch is stored as it came.
                None => batch,
                Some(kept) if kept.is_empty() => None,
                Some(kept) => {
                    // The broker changed the records, so it encodes the batch again: the
                    // producer's id, epoch and base sequence stay, the CRC is new.
                    let encoder = BatchEncoder::new(limits).with_producer(produced.producer);
                    Some(encoder.encode(&kept).map_err(|e| {
                        BrokerError::InvalidRecord(format!(
                            "the produce chain's output cannot be stored: {e}"
                        ))
                    })?)
                }
            };
            if batch.is_none() && producer.is_none() {
                // Nothing to store, and no sequence to record.
                return Ok(pb::ProduceResponse {
                    partition: partition.0,
                    base_offset: None,
                    rejected,
                    record_count: 0,
                    duplicate: false,
                });
            }
        }
        if config.compact
            && let Some(batch) = &batch
        {
            refuse_keyless(topic.name.as_str(), batch)?;
        }
        if config.timestamp_type == TimestampType::LogAppendTime {
            // The leader's clock when it appends, as Kafka's LogAppendTime: the batch keeps its
            // records' bytes and says so in its header.
            batch = batch.map(|b| b.with_log_append_time(now_ms()));
        }
        let batch_bytes = batch.as_ref().map_or(0, |b| b.bytes().len() as u64);
        if acks == pb::Acks::None {
            // `batch` is set: without a producer, an empty chain output returned above.
            if let Some(batch) = batch {
                let record_count = batch.header().record_count;
                let wait = Duration::from_millis(u64::from(node.config.limits.produce_timeout_ms));
                let room = node
                    .budgets
                    .unacknowledged(batch.bytes().len(), wait)
                    .await?;
                let applied = hosted
                    .replica
                    .append_unacknowledged(batch)
                    .await
                    .map_err(|e| node.replica_error(e))?;
                tokio::spawn(async move {
                    applied.await;
                    drop(room);
                });
                self.metrics.produced(
                    &req.topic,
                    u64::from(record_count),
                    batch_bytes,
                    started.elapsed(),
                );
                return Ok(pb::ProduceResponse {
                    partition: partition.0,
                    base_offset: None,
                    rejected,
                    record_count,
                    duplicate: false,
                });
            }
        }
        // On a single node the leader's fsync is the quorum, so `leader` equals `all`.
        let timeout = Duration::from_millis(u64::from(node.config.limits.produce_timeout_ms));
        // Without a quorum a raft write waits forever; the producer must hear instead.
        let appended = tokio::time::timeout(timeout, hosted.replica.append(batch, producer))
            .await
            .map_err(|_| {
                BrokerError::Indeterminate(format!(
                    "{}/{} did not commit the batch within {timeout:?}: a quorum of its replicas is not reachable; it may still commit",
                    topic.name, partition
                ))
            })?
            .map_err(|e| match node.replica_error(e) {
                // Name the partition: the producer has many.
                BrokerError::OutOfOrderSequence(m) => {
                    BrokerError::OutOfOrderSequence(format!("{}/{partition}: {m}", topic.name))
                }
                BrokerError::DuplicateSequence(m) => {
                    BrokerError::DuplicateSequence(format!("{}/{partition}: {m}", topic.name))
                }
                BrokerError::InvalidProducerEpoch(m) => {
                    BrokerError::InvalidProducerEpoch(format!("{}/{partition}: {m}", topic.name))
                }
                other => other,
            })?;
        if appended.duplicate {
            self.metrics.duplicate(&req.topic);
        } else {
            self.metrics.produced(
                &req.topic,
                u64::from(appended.outcome.record_count),
                batch_bytes,
                started.elapsed(),
            );
        }
        Ok(answer(appended, rejected))
    }

    /// Runs a topic's produce chain and applies each rejecting attachment's policy: `reject`
    /// fails the request (listing every rejected record), `dead-letter` produces the records to
    /// the dead-letter topic before anything of the request is stored, `drop` drops them.
    async fn run_produce_chain(
        &self,
        topic: &TopicInfo,
        records: Vec<Record>,
    ) -> Result<ProduceChainRun, BrokerError> {
        let node = self.node()?;
        let metadata = node.metadata();
        let output = node.modules.run_produce(&metadata, topic, records).await?;
        let mut refused = Vec::new();
        let mut report = Vec::new();
        let mut dead_letters: BTreeMap<TopicName, Vec<pb::Record>> = BTreeMap::new();
        for r in output.rejected {
            let index = r.position as u32;
            let policy = topic
                .produce_chain
                .get(r.stage)
                .map_or(&RejectPolicy::Reject, |a| &a.on_reject);
            refused.push(RejectedRecord {
                index,
                module: r.module.to_string(),
                reason: r.reason.clone(),
            });
            let policy = match policy {
                RejectPolicy::Reject => continue,
                RejectPolicy::Drop => pb::RejectPolicy::Drop,
                RejectPolicy::DeadLetter(dead_letter) => {
                    let record =
                        dead_letter_record(r.record, &topic.name, r.position, &r.module, &r.reason);
                    dead_letters
                        .entry(dead_letter.clone())
                        .or_default()
                        .push(to_pb_record(record));
                    pb::RejectPolicy::DeadLetter
                }
            };
            report.push(pb::RejectedRecord {
                index,
                reason: r.reason,
                module: r.module.to_string(),
                policy: policy as i32,
            });
        }
        if refused.len() > report.len() {
            return Err(BrokerError::RecordsRejected(refused));
        }
        for (dead_letter, records) in dead_letters {
            let dead_letter = node.topic(&dead_letter).await?;
            node.produce_to(&dead_letter, records).await?;
        }
        Ok(ProduceChainRun {
            kept: (!output.unchanged)
                .then(|| output.records.into_iter().map(|r| r.record).collect()),
            report,
        })
    }

    pub(super) async fn handle_init_producer_id(
        &self,
        _request: Request<pb::InitProducerIdRequest>,
    ) -> Result<pb::InitProducerIdResponse, BrokerError> {
        let producer_id = self.node()?.init_producer_id().await?;
        tracing::debug!(producer_id, "producer id issued");
        Ok(pb::InitProducerIdResponse {
            producer_id,
            producer_epoch: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &str) -> pb::Record {
        pb::Record {
            value: Bytes::copy_from_slice(value.as_bytes()),
            timestamp_ms: Some(5),
            ..pb::Record::default()
        }
    }

    #[test]
    fn records_and_a_batch_are_alternatives() {
        let limits = weir_types::BatchLimits::default();
        let batch = EncodedBatch::encode(&to_records(vec![record("a")]).unwrap(), limits).unwrap();
        assert!(matches!(
            Produced::from_request(vec![record("a")], batch.bytes().clone(), None, limits),
            Err(BrokerError::InvalidArgument(_))
        ));
        assert!(matches!(
            Produced::from_request(Vec::new(), Bytes::new(), None, limits),
            Err(BrokerError::EmptyBatch)
        ));
        let from_batch =
            Produced::from_request(Vec::new(), batch.bytes().clone(), None, limits).unwrap();
        assert_eq!(from_batch.batch.bytes(), batch.bytes(), "stored as sent");
        let producer = pb::ProducerSequence {
            producer_id: 4,
            producer_epoch: 1,
            base_sequence: 10,
        };
        let from_records = Produced::from_request(
            vec![record("a"), record("b")],
            Bytes::new(),
            Some(producer),
            limits,
        )
        .unwrap();
        assert_eq!(
            from_records.producer_batch(),
            Some(ProducerBatch {
                producer_id: 4,
                producer_epoch: 1,
                first_sequence: 10,
                last_sequence: 11
            })
        );
        assert_eq!(from_records.batch.header().producer_id, 4);
    }

    #[test]
    fn tombstones_are_encoded_as_null_values_and_one_with_a_value_is_refused() {
        let limits = weir_types::BatchLimits::default();
        let tombstone = pb::Record {
            key: Some(Bytes::from_static(b"k")),
            tombstone: true,
            timestamp_ms: Some(5),
            ..pb::Record::default()
        };
        let produced = Produced::from_request(
            vec![tombstone.clone(), record("")],
            Bytes::new(),
            None,
            limits,
        )
        .unwrap();
        let stored: Vec<Record> = produced.batch.records().map(|r| r.unwrap().1).collect();
        assert!(stored[0].tombstone && stored[0].value.is_empty());
        assert!(!stored[1].tombstone && stored[1].value.is_empty());
        assert_eq!(to_pb_record(stored[0].clone()), tombstone);
        let mut with_value = tombstone;
        with_value.value = Bytes::from_static(b"v");
        let err = Produced::from_request(vec![record("a"), with_value], Bytes::new(), None, limits)
            .err()
            .unwrap();
        assert!(
            matches!(&err, BrokerError::InvalidRecord(m) if m.contains("record 1") && m.contains("tombstone")),
            "{err}"
        );
        // A produce chain takes none.
        let topic: TopicName = "t".parse().unwrap();
        assert!(check_chain_input(&stored[1..], &topic).is_ok());
        let err = check_chain_input(&stored, &topic).unwrap_err();
        assert!(
            matches!(&err, BrokerError::InvalidRecord(m) if m.starts_with("record 0 is a tombstone")),
            "{err}"
        );
    }

    #[test]
    fn producer_fields_out_of_range_are_refused() {
        for (id, epoch, sequence) in [(-1, 0, 0), (1, -1, 0), (1, 40_000, 0), (1, 0, -5)] {
            let fields = pb::ProducerSequence {
                producer_id: id,
                producer_epoch: epoch,
                base_sequence: sequence,
            };
            assert!(
                matches!(producer_stamp(fields), Err(BrokerError::InvalidArgument(_))),
                "{id} {epoch} {sequence}"
            );
        }
    }
}
