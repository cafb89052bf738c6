//! Fetch, Subscribe and ListOffsets: reading committed records, as records or as the stored
//! Kafka record batches, through the consumer's (or the topic's) consume chain.
//!
//! Reads never go past the high watermark and never serve damaged data: storage verifies every
//! batch it returns, and a read that starts at a damaged batch fails with `CORRUPT_DATA` at
//! that batch's offset.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use weir_proto::v1 as pb;
use weir_raft::PartitionProgress;
use weir_storage::ReadError;
use weir_types::{BatchEncoder, BatchLimits, EncodedBatch, Header, Offset, Record};
use weir_wasm::{Chain, ChainRecord};

use super::{BrokerService, Caller, ResponseStream, module_admin};
use crate::error::BrokerError;
use crate::fault_injection;
use crate::metadata::TopicInfo;
use crate::modules::ModuleHost;
use crate::node::{HostedPartition, Node, blocking};

/// How long a leader elected a moment ago may take to confirm its high watermark (to apply an
/// entry of its own term) before a request that needs it fails `UNAVAILABLE`.
const CONFIRM_WAIT: Duration = Duration::from_secs(5);

/// What one read returns, in the form the consumer asked for.
#[derive(Debug, Default)]
struct Read {
    records: Vec<pb::ConsumedRecord>,
    record_batches: Vec<Bytes>,
    rejected: Vec<pb::RejectedOffset>,
    /// One past the last offset read (whether or not the chain kept it); `None` if nothing was.
    next_offset: Option<Offset>,
    /// Records served, for the metrics.
    served: u64,
}

impl Read {
    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.record_batches.is_empty() && self.rejected.is_empty()
    }
}

/// How a read answers: records, or record batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Records,
    Batches,
}

impl Form {
    fn of(record_batches: bool) -> Self {
        if record_batches {
            Form::Batches
        } else {
            Form::Records
        }
    }
}

/// Limits of one read.
#[derive(Debug, Clone, Copy)]
struct ReadLimits {
    max_records: usize,
    max_bytes: usize,
}

/// Reads the committed batches of a partition holding offsets from `from` on, stopping once
/// `max_bytes` of batches are gathered or a batch reaches `until` (at least one batch, when one
/// is there). The first may start before `from`.
async fn committed_batches(
    node: &Node,
    hosted: &HostedPartition,
    (from, until): (Offset, Offset),
    progress: PartitionProgress,
    max_bytes: usize,
    holding: Holding,
) -> Result<Vec<EncodedBatch>, BrokerError> {
    if from >= progress.high_watermark {
        return Ok(Vec::new());
    }
    let db = node.partition_db.clone();
    let group = hosted.group();
    let where_ = format!("{}/{}", hosted.topic, hosted.partition);
    let read = blocking(move || {
        db.read_batches(group, from, until, progress.applied_index, max_bytes)
            .map_err(|e| corrupt_in(&where_, e))
    })
    .await?;
    if read.batches.is_empty() {
        // The state machine counted offsets the log does not hold: the log lost entries.
        return Err(BrokerError::Corrupt {
            message: format!(
                "{}/{}: no stored batch holds offset {from}, below the high watermark {}",
                hosted.topic, hosted.partition, progress.high_watermark
            ),
            offset: Some(from),
        });
    }
    Ok(match holding {
        Holding::WhileSent => read.batches,
        Holding::Queued => read.batches.iter().map(EncodedBatch::detached).collect(),
    })
}

/// How long what a read serves may share the memory of the storage read it came from: stored
/// batches are served without a copy, and they hold that read transaction open meanwhile, which
/// keeps redb from reusing the pages freed since (retention's, compaction's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holding {
    /// While the answer is sent: a fetch's (one a client is slow to take copies what it has
    /// not sent after a while and lets go, see `fetch_answer`).
    WhileSent,
    /// For as long as a slow reader leaves it queued: a subscription's messages, copied out of
    /// storage at once.
    Queued,
}

/// A read error, naming the partition.
fn corrupt_in(partition: &str, e: ReadError) -> BrokerError {
    match BrokerError::from(e) {
        BrokerError::Corrupt { message, offset } => BrokerError::Corrupt {
            message: format!("{partition}: {message}"),
            offset,
        },
        other => other,
    }
}

/// Records served from stored batches, and where the reader continues.
#[derive(Debug, PartialEq)]
struct RecordsRead {
    records: Vec<(Offset, Record)>,
    /// The first offset not served: with gaps compaction left, not necessarily the one after
    /// the last record. `None` when there were no batches.
    next_offset: Option<Offset>,
}

/// The records of `batches` from `from` up to the high watermark: at most `limits.max_records`,
/// stopping once `limits.max_bytes` of keys and values are gathered (at least one record).
fn records_of(
    batches: &[EncodedBatch],
    from: Offset,
    high_watermark: Offset,
    limits: ReadLimits,
) -> Result<RecordsRead, BrokerError> {
    let mut records = Vec::new();
    let mut bytes = 0usize;
    for batch in batches {
        for item in batch.records() {
            let (offset, record) = item.map_err(|e| BrokerError::Corrupt {
                message: format!("undecodable record in a verified batch: {e}"),
                offset: Some(batch.header().base_offset),
            })?;
            if offset < from {
                continue;
            }
            if offset >= high_watermark {
                return Ok(RecordsRead {
                    records,
                    next_offset: Some(high_watermark),
                });
            }
            if records.len() >= limits.max_records
                || (bytes >= limits.max_bytes && !records.is_empty())
            {
                return Ok(RecordsRead {
                    records,
                    next_offset: Some(offset),
                });
            }
            bytes += record.value.len() + record.key.as_ref().map_or(0, Bytes::len);
            records.push((offset, record));
        }
    }
    // Every record of the batches was served: the reader goes on after the last batch, past
    // the offsets compaction left without records at its end.
    let next_offset = batches
        .last()
        .map(|b| b.header().next_offset().min(high_watermark));
    Ok(RecordsRead {
        records,
        next_offset,
    })
}

/// Reads from `from` and shapes the answer: records (cut by the limits) or the stored batches
/// as they are, passed through `chain` when there is one, and held as `holding` says.
async fn read(
    node: &Node,
    hosted: &HostedPartition,
    from: Offset,
    progress: PartitionProgress,
    limits: ReadLimits,
    (form, holding): (Form, Holding),
    chain: Option<Chain>,
) -> Result<(Read, Option<Chain>), BrokerError> {
    // Records are cut at `max_records`: what lies past them need not be read (or verified).
    let until = match form {
        Form::Records => from.plus(limits.max_records as u64),
        Form::Batches => Offset(u64::MAX),
    };
    let batches = committed_batches(
        node,
        hosted,
        (from, until),
        progress,
        limits.max_bytes,
        holding,
    )
    .await?;
    if form == Form::Batches && chain.is_none() {
        let next_offset = batches.last().map(|b| b.header().next_offset());
        let served = batches
            .iter()
            .map(|b| u64::from(b.header().record_count))
            .sum();
        return Ok((
            Read {
                record_batches: batches.into_iter().map(EncodedBatch::into_bytes).collect(),
                next_offset,
                served,
                ..Read::default()
            },
            None,
        ));
    }
    let RecordsRead {
        records,
        next_offset: after,
    } = match form {
        Form::Records => records_of(&batches, from, progress.high_watermark, limits)?,
        // Batches are read whole, so the chain sees every record of them from `from` on (none
        // before it: the client would skip those, and an aggregate would count them twice).
        Form::Batches => records_of(
            &batches,
            from,
            progress.high_watermark,
            ReadLimits {
                max_records: usize::MAX,
                max_bytes: usize::MAX,
            },
        )?,
    };
    let next_offset = match form {
        Form::Records => after,
        Form::Batches => batches.last().map(|b| b.header().next_offset()),
    };
    let (records, rejected, unchanged, chain) = match chain {
        // A chain not prepared yet runs even over nothing: its stages' `init`s run, so refused
        // parameters fail the request wherever it reads.
        Some(chain) if !records.is_empty() || !chain.is_prepared() => {
            let ran = run_consume_chain(&node.modules, chain, records).await?;
            (ran.records, ran.rejected, ran.unchanged, Some(ran.chain))
        }
        chain => (records, Vec::new(), true, chain),
    };
    let served = records.len() as u64;
    let mut out = Read {
        rejected,
        next_offset,
        served,
        ..Read::default()
    };
    match form {
        Form::Records => {
            out.records = records
                .into_iter()
                .map(|(offset, record)| consumed(offset, record))
                .collect();
        }
        Form::Batches if unchanged => {
            out.record_batches = as_stored(batches, from, &records)?;
        }
        Form::Batches => out.record_batches = reencode(&records)?,
    }
    Ok((out, chain))
}

/// The batches a consume chain left unchanged: `records` are every record of `batches` from
/// `from` on. A batch the chain saw whole goes out as stored; one holding records before
/// `from`, which the chain did not see, is encoded again with the records it did.
fn as_stored(
    batches: Vec<EncodedBatch>,
    from: Offset,
    records: &[(Offset, Record)],
) -> Result<Vec<Bytes>, BrokerError> {
    let mut out = Vec::with_capacity(batches.len());
    let mut rest = records;
    for batch in batches {
        let end = batch.header().next_offset();
        let within = rest.partition_point(|(offset, _)| *offset < end);
        let (seen, after) = rest.split_at(within);
        rest = after;
        if batch.header().base_offset >= from {
            out.push(batch.into_bytes());
        } else if !seen.is_empty() {
            out.extend(reencode(seen)?);
        }
    }
    Ok(out)
}

/// Encodes a consume chain's survivors into batches that keep their offsets: a new batch
/// starts wherever the offsets stop increasing (several records a module derived from one).
fn reencode(records: &[(Offset, Record)]) -> Result<Vec<Bytes>, BrokerError> {
    // The chain's output is already bounded by the module limits; these batches go to a
    // consumer, never to the log.
    let encoder = BatchEncoder::new(BatchLimits {
        max_record_bytes: usize::MAX,
        max_batch_bytes: usize::MAX,
    });
    let mut batches = Vec::new();
    let mut start = 0;
    for end in 1..=records.len() {
        if end == records.len() || records[end].0 <= records[end - 1].0 {
            let batch = encoder
                .encode_at_offsets(&records[start..end])
                .map_err(|e| BrokerError::Internal(format!("re-encoding a chain's output: {e}")))?;
            batches.push(batch.into_bytes());
            start = end;
        }
    }
    Ok(batches)
}

/// What a consume chain made of a read.
struct ConsumeChainRun {
    chain: Chain,
    /// The survivors, at their offsets.
    records: Vec<(Offset, Record)>,
    rejected: Vec<pb::RejectedOffset>,
    /// `records` are the input records (see `ChainOutput::unchanged`).
    unchanged: bool,
}

/// Runs a consume chain over records (preparing it first if need be): survivors keep their
/// offsets.
async fn run_consume_chain(
    modules: &ModuleHost,
    chain: Chain,
    records: Vec<(Offset, Record)>,
) -> Result<ConsumeChainRun, BrokerError> {
    let input = records
        .into_iter()
        .map(|(offset, record)| ChainRecord {
            position: offset.0,
            record,
        })
        .collect();
    let (chain, output) = modules.run(chain, input).await?;
    let records = output
        .records
        .into_iter()
        .map(|r| (Offset(r.position), r.record))
        .collect();
    let rejected = output
        .rejected
        .into_iter()
        .map(|r| pb::RejectedOffset {
            offset: r.position,
            reason: r.reason,
            module: r.module.to_string(),
        })
        .collect();
    Ok(ConsumeChainRun {
        chain,
        records,
        rejected,
        unchanged: output.unchanged,
    })
}

fn consumed(offset: Offset, record: Record) -> pb::ConsumedRecord {
    pb::ConsumedRecord {
        offset: offset.0,
        key: record.key,
        value: record.value,
        headers: record
            .headers
            .into_iter()
            .map(|h: Header| pb::Header {
                key: h.key,
                value: h.value,
            })
            .collect(),
        timestamp_ms: record.timestamp_ms,
        tombstone: record.tombstone,
    }
}

impl BrokerService {
    /// Resolves `topic`/`partition` to the local replica serving reads (also one that stopped
    /// after a failure: see [`Node::hosted_for_reads`]).
    async fn readable(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(TopicInfo, HostedPartition), BrokerError> {
        let topic = self.topic(topic).await?;
        let partition = Node::check_partition(&topic, partition)?;
        let hosted = self.node()?.hosted_for_reads(&topic, partition)?;
        Ok((topic, hosted))
    }

    /// The replica's progress once its high watermark is the partition's: a follower's may lag
    /// (it sends the caller to the leader), and a leader elected a moment ago may not have
    /// applied all its predecessor committed (it is waited for, briefly). `ListOffsets` latest
    /// and the group commit check, which compares against it, must not answer from either.
    async fn confirmed_progress(
        &self,
        hosted: &HostedPartition,
    ) -> Result<PartitionProgress, BrokerError> {
        if !hosted.replica.knows_high_watermark() {
            let node = self.node()?;
            let what = || format!("{}/{}", hosted.topic, hosted.partition);
            if !hosted.replica.is_leader() {
                return Err(node.not_leader(what(), hosted.replica.leader()));
            }
            hosted
                .replica
                .wait_knows_high_watermark(CONFIRM_WAIT)
                .await
                .map_err(|e| node.replica_error(e))?;
        }
        Ok(*hosted.replica.progress().borrow())
    }

    /// Checks that `offset` is within `[log start, high watermark]`; returns it with the
    /// progress and the log start it was checked against.
    ///
    /// Past the high watermark is out of range only where the high watermark is known to be
    /// the partition's (a leader that has applied an entry of its term). A follower that is
    /// behind, or a leader elected a moment ago, may not have applied what a consumer already
    /// read elsewhere; it sends the consumer to the leader, or asks it to retry, instead of
    /// making it reset its position.
    async fn check_offset(
        &self,
        hosted: &HostedPartition,
        offset: i64,
    ) -> Result<(Offset, PartitionProgress, Offset), BrokerError> {
        let mut progress = *hosted.replica.progress().borrow();
        if fault_injection::serves_uncommitted_records() {
            progress = self.whole_log(hosted, progress).await?;
        }
        let log_start = progress.first_readable();
        let out_of_range = || BrokerError::OffsetOutOfRange {
            topic: hosted.topic.clone(),
            partition: hosted.partition,
            requested: offset,
            log_start,
            high_watermark: progress.high_watermark,
        };
        let offset = u64::try_from(offset).map_err(|_| out_of_range())?;
        if offset > progress.high_watermark.0
            && let Some(reason) = hosted.replica.failure()
        {
            // What a stopped replica knows of leadership froze when it stopped: send the
            // reader elsewhere (its client asks the bootstrap broker again).
            return Err(self.node()?.not_leader(
                format!(
                    "{}/{} (stopped on this node after a failure: {reason})",
                    hosted.topic, hosted.partition
                ),
                None,
            ));
        }
        if offset > progress.high_watermark.0 && !hosted.replica.knows_high_watermark() {
            let what = format!("{}/{}", hosted.topic, hosted.partition);
            return Err(match hosted.replica.leader() {
                Some(leader) if !hosted.replica.is_leader() => {
                    self.node()?.not_leader(what, Some(leader))
                }
                _ => BrokerError::Unavailable(format!(
                    "{what}: offset {offset} is past this replica's high watermark {}, which \
                     may be behind while leadership settles",
                    progress.high_watermark
                )),
            });
        }
        if offset < log_start.0 || offset > progress.high_watermark.0 {
            return Err(out_of_range());
        }
        Ok((Offset(offset), progress, log_start))
    }

    /// A broken broker's progress ([`fault_injection::serve_uncommitted_records`]): the whole
    /// log counted as committed.
    async fn whole_log(
        &self,
        hosted: &HostedPartition,
        progress: PartitionProgress,
    ) -> Result<PartitionProgress, BrokerError> {
        let db = self.node()?.partition_db.clone();
        let group = hosted.group();
        let end = blocking(move || {
            db.next_offset_through(group, u64::MAX)
                .map_err(BrokerError::from)
        })
        .await?;
        Ok(PartitionProgress {
            applied_index: u64::MAX,
            high_watermark: end.unwrap_or_default().max(progress.high_watermark),
            ..progress
        })
    }

    fn read_limits(limits: &crate::config::Limits, max_records: u32, max_bytes: u32) -> ReadLimits {
        let pick = |asked: u32, cap: u32| if asked == 0 { cap } else { asked.min(cap) };
        ReadLimits {
            max_records: pick(max_records, limits.max_fetch_records) as usize,
            max_bytes: pick(max_bytes, limits.max_fetch_bytes) as usize,
        }
    }

    /// The chain a consume request names, or else the topic's consume chain; `None` when
    /// there is neither. With `prepare`, every stage is instantiated and initialised now;
    /// without, when the chain first runs ([`ModuleHost::run`]).
    async fn consume_chain(
        &self,
        topic: &TopicInfo,
        modules: &[pb::ModuleRef],
        prepare: bool,
    ) -> Result<Option<Chain>, BrokerError> {
        if modules.is_empty() && topic.consume_chain.is_empty() {
            return Ok(None);
        }
        let node = self.node()?;
        let metadata = node.metadata();
        let specs = module_admin::consume_specs(&metadata, topic, modules)?;
        if specs.is_empty() {
            return Ok(None);
        }
        Ok(Some(node.modules.chain(&metadata, &specs, prepare).await?))
    }

    pub(super) async fn handle_fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<pb::FetchResponse, BrokerError> {
        let node = self.node()?;
        let req = request.into_inner();
        let (topic, hosted) = self.readable(&req.topic, req.partition).await?;
        let (offset, mut progress, log_start) = self.check_offset(&hosted, req.offset).await?;
        let wait = req.max_wait_ms.min(node.config.limits.max_fetch_wait_ms);
        let waits = offset >= progress.high_watermark && wait > 0;
        // A fetch that waits has its chain's `init`s run first, so bad parameters fail at once;
        // one that reads now has them run on the trip that runs the chain (one hand-off to a
        // blocking thread instead of two).
        let chain = self.consume_chain(&topic, &req.modules, waits).await?;
        let limits = Self::read_limits(&node.config.limits, req.max_records, req.max_bytes);
        if waits {
            progress = wait_for_records(
                node,
                &hosted,
                offset,
                Duration::from_millis(u64::from(wait)),
            )
            .await?;
        }
        let form = Form::of(req.record_batches);
        let answer = (form, Holding::WhileSent);
        let (read, _) = read(node, &hosted, offset, progress, limits, answer, chain).await?;
        self.metrics.fetched(&req.topic, read.served);
        Ok(pb::FetchResponse {
            next_offset: read.next_offset.unwrap_or(offset).0,
            records: read.records,
            high_watermark: progress.high_watermark.0,
            log_start_offset: log_start.0,
            rejected: read.rejected,
            record_batches: read.record_batches,
        })
    }

    pub(super) async fn handle_subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
        caller: Caller,
    ) -> Result<ResponseStream<pb::SubscribeResponse>, BrokerError> {
        let node = self.node()?;
        let open = node.budgets.subscription()?;
        let req = request.into_inner();
        // Checked again before each read: revoking READ ends the stream.
        let grant = self.standing(
            "Subscribe",
            caller,
            pb::SubscribeRequest {
                topic: req.topic.clone(),
                modules: req.modules.clone(),
                ..Default::default()
            },
        );
        let (topic, hosted) = self.readable(&req.topic, req.partition).await?;
        let progress = *hosted.replica.progress().borrow();
        use pb::start_position::Position;
        let start = match req.start.and_then(|s| s.position) {
            None | Some(Position::Latest(_)) => progress.high_watermark,
            Some(Position::Earliest(_)) => progress.first_readable(),
            Some(Position::Offset(o)) => {
                let offset = i64::try_from(o).unwrap_or(i64::MAX);
                self.check_offset(&hosted, offset).await?.0
            }
        };
        let limits = Self::read_limits(&node.config.limits, 0, req.max_bytes);
        let form = Form::of(req.record_batches);
        // One chain for the whole subscription: an aggregate's state runs across its messages.
        let mut chain = self.consume_chain(&topic, &req.modules, true).await?;
        let (tx, rx) = mpsc::channel(4);
        let node = node.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let _open = open;
            let mut position = start;
            loop {
                let progress = *hosted.replica.progress().borrow();
                if position < progress.high_watermark {
                    if let Err(e) = grant.check(&node.metadata()) {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                    let (read, kept_chain) = match read(
                        &node,
                        &hosted,
                        position,
                        progress,
                        limits,
                        (form, Holding::Queued),
                        chain.take(),
                    )
                    .await
                    {
                        Ok(read) => read,
                        Err(e) => {
                            let _ = tx.send(Err(e.into())).await;
                            return;
                        }
                    };
                    chain = kept_chain;
                    position = read.next_offset.unwrap_or(position);
                    metrics.fetched(hosted.topic.as_str(), read.served);
                    if read.is_empty() {
                        // Everything was filtered out: nothing to tell the subscriber.
                        continue;
                    }
                    let message = pb::SubscribeResponse {
                        records: read.records,
                        high_watermark: progress.high_watermark.0,
                        next_offset: position.0,
                        rejected: read.rejected,
                        record_batches: read.record_batches,
                    };
                    if tx.send(Ok(message)).await.is_err() {
                        return;
                    }
                    continue;
                }
                let waited = tokio::select! {
                    _ = tx.closed() => return,
                    waited = wait_for_records(&node, &hosted, position, Duration::from_secs(3600)) => waited,
                };
                if let Err(e) = waited {
                    // Ends the stream with the reason (shutdown, deleted or failed partition).
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    pub(super) async fn handle_list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<pb::ListOffsetsResponse, BrokerError> {
        let node = self.node()?;
        let req = request.into_inner();
        let (_, hosted) = self.readable(&req.topic, req.partition).await?;
        use pb::list_offsets_request::Spec;
        let progress = match req.spec {
            Some(Spec::Earliest(_)) => *hosted.replica.progress().borrow(),
            // Answers that rest on the high watermark need the partition's own.
            None | Some(Spec::Latest(_)) | Some(Spec::TimestampMs(_)) => {
                self.confirmed_progress(&hosted).await?
            }
        };
        let log_start = progress.first_readable();
        let (offset, timestamp_ms) = match req.spec {
            None | Some(Spec::Latest(_)) => (Some(progress.high_watermark.0), None),
            Some(Spec::Earliest(_)) => (Some(log_start.0), None),
            Some(Spec::TimestampMs(ts)) => {
                let db = node.partition_db.clone();
                let group = hosted.group();
                let where_ = format!("{}/{}", hosted.topic, hosted.partition);
                let found = blocking(move || {
                    db.offset_for_timestamp(group, ts, progress.applied_index)
                        .map_err(|e| corrupt_in(&where_, e))
                })
                .await?;
                match found {
                    Some((offset, ts)) if offset < progress.high_watermark => {
                        (Some(offset.0), Some(ts))
                    }
                    _ => (None, None),
                }
            }
        };
        Ok(pb::ListOffsetsResponse {
            offset,
            timestamp_ms,
            high_watermark: progress.high_watermark.0,
            log_start_offset: log_start.0,
        })
    }
}

/// Waits until the partition's high watermark passes `offset`, `timeout` elapses, or the
/// broker shuts down; returns the progress then. Fails if the replica stopped meanwhile (its
/// topic was deleted, or it failed), so a waiting consumer is told instead of spinning.
async fn wait_for_records(
    node: &Node,
    hosted: &HostedPartition,
    offset: Offset,
    timeout: Duration,
) -> Result<PartitionProgress, BrokerError> {
    let mut progress = hosted.replica.progress();
    let stopped = tokio::select! {
        _ = node.shutdown.cancelled() => return Err(BrokerError::ShuttingDown),
        _ = tokio::time::sleep(timeout) => false,
        waited = progress.wait_for(|p| p.high_watermark > offset) => waited.is_err(),
    };
    if stopped {
        return Err(BrokerError::Unavailable(format!(
            "{}/{} stopped on this node (deleted, or failed)",
            hosted.topic, hosted.partition
        )));
    }
    Ok(*hosted.replica.progress().borrow())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &str) -> Record {
        Record {
            value: Bytes::copy_from_slice(value.as_bytes()),
            timestamp_ms: 7,
            ..Record::default()
        }
    }

    #[test]
    fn a_chains_survivors_keep_their_offsets_in_valid_batches() {
        // Offsets 3 and 7 survived; a flat-map made two records of offset 7.
        let survivors = vec![
            (Offset(3), record("a")),
            (Offset(7), record("b")),
            (Offset(7), record("b2")),
            (Offset(9), record("c")),
        ];
        let batches = reencode(&survivors).unwrap();
        assert_eq!(
            batches.len(),
            2,
            "a new batch where offsets stop increasing"
        );
        let decoded: Vec<(u64, Bytes)> = batches
            .into_iter()
            .flat_map(|b| {
                let batch = EncodedBatch::verify(b).unwrap();
                batch
                    .records()
                    .map(|r| r.map(|(o, r)| (o.0, r.value)).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            decoded,
            [
                (3, Bytes::from("a")),
                (7, Bytes::from("b")),
                (7, Bytes::from("b2")),
                (9, Bytes::from("c"))
            ]
        );
    }

    #[test]
    fn records_are_cut_at_the_requested_offset_the_watermark_and_the_limits() {
        let batch = BatchEncoder::new(BatchLimits::default())
            .encode(&[record("a"), record("b"), record("c"), record("d")])
            .unwrap()
            .stamped(Offset(10), 1);
        let all = ReadLimits {
            max_records: 100,
            max_bytes: 1 << 20,
        };
        let offsets = |read: RecordsRead| {
            (
                read.records
                    .into_iter()
                    .map(|(o, _)| o.0)
                    .collect::<Vec<u64>>(),
                read.next_offset.map(|o| o.0),
            )
        };
        let batches = [batch];
        assert_eq!(
            offsets(records_of(&batches, Offset(11), Offset(13), all).unwrap()),
            (vec![11, 12], Some(13))
        );
        let two = ReadLimits {
            max_records: 2,
            ..all
        };
        assert_eq!(
            offsets(records_of(&batches, Offset(0), Offset(20), two).unwrap()),
            (vec![10, 11], Some(12))
        );
        let one_byte = ReadLimits {
            max_bytes: 1,
            ..all
        };
        assert_eq!(
            offsets(records_of(&batches, Offset(0), Offset(20), one_byte).unwrap()),
            (vec![10], Some(11))
        );
        // A batch compaction left with records at 10 and 12 of 10..=14: the reader goes on
        // after its last offset, not after its last record.
        let compacted = [batches[0]
            .retaining(|r| r.offset == Offset(10) || r.offset == Offset(12))
            .unwrap()
            .unwrap()];
        let extended = BatchEncoder::new(BatchLimits::default())
            .encode(&[
                record("a"),
                record("b"),
                record("c"),
                record("d"),
                record("e"),
            ])
            .unwrap()
            .stamped(Offset(10), 1);
        let compacted_wide = [extended
            .retaining(|r| r.offset == Offset(10) || r.offset == Offset(12))
            .unwrap()
            .unwrap()];
        assert_eq!(
            offsets(records_of(&compacted, Offset(11), Offset(20), all).unwrap()),
            (vec![12], Some(14))
        );
        assert_eq!(
            offsets(records_of(&compacted_wide, Offset(13), Offset(20), all).unwrap()),
            (vec![], Some(15))
        );
    }
}
