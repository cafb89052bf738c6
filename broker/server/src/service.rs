//! The `weir.v1.Broker` gRPC service: request validation and translation, nothing else.
//!
//! Every handler validates its whole request before changing anything, and fails through
//! [`BrokerError`], which is the only place statuses are built.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use weir_proto::v1 as pb;
use weir_proto::v1::broker_server::Broker;
use weir_raft::PartitionProgress;
use weir_types::{EncodedBatch, Header, Offset, PartitionId, Record, TopicName, partition_for_key};

use crate::error::{BrokerError, RejectedRecord};
use crate::metadata::{Command, ModulePath, RejectPolicy, TopicInfo};
use crate::metrics::RequestMetrics;
use crate::modules::{ModuleHost, dead_letter_record};
use crate::node::{HostedPartition, Node, blocking};
use weir_wasm::{Chain, ChainRecord};

mod groups;
mod module_admin;

/// The gRPC service over a [`Node`].
#[derive(Clone)]
pub(crate) struct BrokerService {
    /// Set once the node has started; the service is served earlier, because a starting node
    /// already takes part in elections through the same port.
    node: Arc<OnceLock<Arc<Node>>>,
    metrics: Arc<RequestMetrics>,
}

impl BrokerService {
    pub(crate) fn new(node: Arc<OnceLock<Arc<Node>>>, metrics: Arc<RequestMetrics>) -> Self {
        Self { node, metrics }
    }

    fn node(&self) -> Result<&Arc<Node>, BrokerError> {
        self.node
            .get()
            .ok_or_else(|| BrokerError::Unavailable("this broker is still starting".into()))
    }

    /// Turns a handler's result into the gRPC answer, counting failures by reason.
    fn answer<T>(&self, rpc: &str, result: Result<T, BrokerError>) -> Result<Response<T>, Status> {
        result.map(Response::new).map_err(|e| {
            self.metrics.error(rpc, e.reason());
            if matches!(e, BrokerError::Corrupt(_) | BrokerError::Internal(_)) {
                tracing::error!(rpc, error = %e, "request failed");
            } else {
                tracing::debug!(rpc, error = %e, "request refused");
            }
            e.to_status()
        })
    }

    async fn topic(&self, name: &str) -> Result<TopicInfo, BrokerError> {
        self.node()?.topic(&BrokerError::topic_name(name)?).await
    }

    /// Describes a topic as this node sees it: replicas from the metadata, leader and offsets
    /// from the local replicas.
    async fn describe(&self, topic: &TopicInfo) -> Result<pb::TopicDescription, BrokerError> {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for (index, info) in topic.partitions.iter().enumerate() {
            let mut description = pb::PartitionDescription {
                partition: index as u32,
                replicas: info.replicas.clone(),
                failure: self.node()?.partition_failure(info.group),
                ..Default::default()
            };
            if let Ok(hosted) = self.node()?.hosted(topic, PartitionId(index as u32)) {
                let progress = *hosted.replica.progress().borrow();
                description.leader = hosted.replica.leader();
                description.replica_status = hosted
                    .replica
                    .replica_status()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|r| pb::ReplicaStatus {
                        node_id: r.node_id,
                        in_sync: r.in_sync,
                        lag: r.lag,
                    })
                    .collect();
                description.high_watermark = progress.high_watermark.0;
                description.log_start_offset =
                    self.node()?.log_start(hosted.group(), progress).await?.0;
            }
            partitions.push(description);
        }
        Ok(pb::TopicDescription {
            name: topic.name.to_string(),
            replication_factor: topic.replication_factor,
            partitions,
            configs: topic.configs.clone().into_iter().collect(),
            produce_chain: module_admin::attachments(topic, ModulePath::Produce),
            consume_chain: module_admin::attachments(topic, ModulePath::Consume),
        })
    }

    /// Resolves `topic`/`partition` to the local replica serving reads.
    async fn readable(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(TopicInfo, HostedPartition), BrokerError> {
        let topic = self.topic(topic).await?;
        let partition = Node::check_partition(&topic, partition)?;
        let hosted = self.node()?.hosted(&topic, partition)?;
        Ok((topic, hosted))
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
        let progress = *hosted.replica.progress().borrow();
        let log_start = self.node()?.log_start(hosted.group(), progress).await?;
        let out_of_range = || BrokerError::OffsetOutOfRange {
            topic: hosted.topic.clone(),
            partition: hosted.partition,
            requested: offset,
            log_start,
            high_watermark: progress.high_watermark,
        };
        let offset = u64::try_from(offset).map_err(|_| out_of_range())?;
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

    fn fetch_limits(
        limits: &crate::config::Limits,
        max_records: u32,
        max_bytes: u32,
    ) -> (usize, usize) {
        let pick = |asked: u32, cap: u32| if asked == 0 { cap } else { asked.min(cap) };
        (
            pick(max_records, limits.max_fetch_records) as usize,
            pick(max_bytes, limits.max_fetch_bytes) as usize,
        )
    }
}

/// Reads committed records of a partition from `from`: at most `max_records`, and stopping
/// once `max_bytes` of values and keys are gathered (at least one record if any is there).
pub(crate) async fn read_committed(
    node: &Node,
    hosted: &HostedPartition,
    from: Offset,
    progress: PartitionProgress,
    max_records: usize,
    max_bytes: usize,
) -> Result<Vec<pb::ConsumedRecord>, BrokerError> {
    if from >= progress.high_watermark {
        return Ok(Vec::new());
    }
    let db = node.partition_db.clone();
    let group = hosted.group();
    blocking(move || {
        let read = db.read_batches(group, from, progress.applied_index, max_bytes)?;
        let mut records = Vec::new();
        let mut bytes = 0usize;
        'batches: for batch in &read.batches {
            for item in batch.records() {
                let (offset, record) = item.map_err(|e| {
                    BrokerError::Corrupt(format!("group {group}: undecodable record: {e}"))
                })?;
                if offset < from {
                    continue;
                }
                if offset >= progress.high_watermark
                    || records.len() >= max_records
                    || (bytes >= max_bytes && !records.is_empty())
                {
                    break 'batches;
                }
                bytes += record.value.len() + record.key.as_ref().map_or(0, Bytes::len);
                records.push(consumed(offset, record));
            }
        }
        Ok(records)
    })
    .await
}

/// Runs a consume chain over fetched records: survivors keep their offsets.
async fn run_consume_chain(
    chain: Chain,
    records: Vec<pb::ConsumedRecord>,
) -> Result<(Chain, (Vec<pb::ConsumedRecord>, Vec<pb::RejectedOffset>)), BrokerError> {
    let input = records
        .into_iter()
        .map(|r| ChainRecord {
            position: r.offset,
            record: Record {
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
                timestamp_ms: r.timestamp_ms,
            },
        })
        .collect();
    let (chain, output) = ModuleHost::run(chain, input).await?;
    let records = output
        .records
        .into_iter()
        .map(|r| consumed(Offset(r.position), r.record))
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
    Ok((chain, (records, rejected)))
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
    }
}

fn consumed(offset: Offset, record: Record) -> pb::ConsumedRecord {
    pb::ConsumedRecord {
        offset: offset.0,
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
        timestamp_ms: record.timestamp_ms,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Turns produced records into domain records, stamping append time where none was given.
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
            })
        })
        .collect()
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl BrokerService {
    async fn handle_create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<pb::CreateTopicResponse, BrokerError> {
        let node = self.node()?;
        let req = request.into_inner();
        let name = BrokerError::topic_name(&req.name)?;
        let max = node.config.limits.max_partitions_per_topic;
        if req.partitions == 0 || req.partitions > max {
            return Err(BrokerError::InvalidPartitions {
                requested: req.partitions,
                max,
            });
        }
        let replication_factor = match req.replication_factor {
            0 => 1,
            rf => rf,
        };
        if let Some(key) = req.configs.keys().next() {
            return Err(BrokerError::InvalidArgument(format!(
                "unknown topic config '{key}': this broker supports no topic configs yet"
            )));
        }
        let topic = node
            .propose(Command::CreateTopic {
                name,
                partitions: req.partitions,
                replication_factor,
                configs: BTreeMap::new(),
            })
            .await?
            .topic()
            .ok_or_else(|| BrokerError::Internal("controller returned no topic".into()))?;
        node.wait_until_ready(&topic).await?;
        tracing::info!(partitions = topic.partitions.len(), "topic created");
        Ok(pb::CreateTopicResponse {
            topic: Some(self.describe(&topic).await?),
        })
    }

    async fn handle_delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<pb::DeleteTopicResponse, BrokerError> {
        let node = self.node()?;
        let name = BrokerError::topic_name(&request.into_inner().name)?;
        node.propose(Command::DeleteTopic { name }).await?;
        node.reconcile().await?;
        tracing::info!("topic deleted");
        Ok(pb::DeleteTopicResponse {})
    }

    async fn handle_list_topics(
        &self,
        _request: Request<pb::ListTopicsRequest>,
    ) -> Result<pb::ListTopicsResponse, BrokerError> {
        let topics = self
            .node()?
            .metadata()
            .topics
            .values()
            .map(|t| pb::TopicSummary {
                name: t.name.to_string(),
                partitions: t.partitions.len() as u32,
                replication_factor: t.replication_factor,
            })
            .collect();
        Ok(pb::ListTopicsResponse { topics })
    }

    async fn handle_describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<pb::DescribeTopicResponse, BrokerError> {
        let topic = self.topic(&request.into_inner().name).await?;
        Ok(pb::DescribeTopicResponse {
            topic: Some(self.describe(&topic).await?),
        })
    }

    async fn handle_produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<pb::ProduceResponse, BrokerError> {
        let node = self.node()?;
        let req = request.into_inner();
        let acks = pb::Acks::try_from(req.acks).map_err(|_| {
            BrokerError::InvalidArgument(format!("unknown acks value {}", req.acks))
        })?;
        let topic = self.topic(&req.topic).await?;
        if req.records.is_empty() {
            return Err(BrokerError::EmptyBatch);
        }
        let partitions = topic.partitions.len() as u32;
        let partition = match (req.partition, &req.records[0].key) {
            (Some(p), _) => Node::check_partition(&topic, p)?,
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => node.next_round_robin(partitions),
        };
        let started = std::time::Instant::now();
        let records = to_records(req.records)?;
        // Encoded before any module runs, so bad records fail the same way with or without a
        // produce chain.
        let mut batch = EncodedBatch::encode(&records, node.config.batch_limits())
            .map_err(BrokerError::from)?;
        let mut record_count = records.len() as u64;
        let hosted = node.leader_of(&topic, partition).await?;
        let mut rejected = Vec::new();
        if !topic.produce_chain.is_empty() {
            let kept;
            (kept, rejected) = self.run_produce_chain(&topic, records).await?;
            if kept.is_empty() {
                return Ok(pb::ProduceResponse {
                    partition: partition.0,
                    base_offset: None,
                    rejected,
                    record_count: 0,
                });
            }
            batch = EncodedBatch::encode(&kept, node.config.batch_limits()).map_err(|e| {
                BrokerError::InvalidRecord(format!(
                    "the produce chain's output cannot be stored: {e}"
                ))
            })?;
            record_count = kept.len() as u64;
        }
        let batch_bytes = batch.bytes().len() as u64;
        let base_offset = match acks {
            pb::Acks::None => {
                hosted
                    .replica
                    .append_unacknowledged(batch)
                    .await
                    .map_err(|e| node.replica_error(e))?;
                None
            }
            // On a single node the leader's fsync is the quorum, so `leader` equals `all`.
            pb::Acks::Unspecified | pb::Acks::All | pb::Acks::Leader => {
                let timeout =
                    Duration::from_millis(u64::from(node.config.limits.produce_timeout_ms));
                // Without a quorum a raft write waits forever; the producer must hear instead.
                let appended = tokio::time::timeout(timeout, hosted.replica.append(batch))
                    .await
                    .map_err(|_| {
                        BrokerError::Indeterminate(format!(
                            "{}/{} did not commit the batch within {timeout:?}: a quorum of its replicas is not reachable; it may still commit",
                            topic.name, partition
                        ))
                    })?
                    .map_err(|e| node.replica_error(e))?;
                Some(appended.base_offset.0)
            }
        };
        self.metrics
            .produced(&req.topic, record_count, batch_bytes, started.elapsed());
        Ok(pb::ProduceResponse {
            partition: partition.0,
            base_offset,
            rejected,
            record_count: record_count as u32,
        })
    }

    /// Runs a topic's produce chain and applies each rejecting attachment's policy: `reject`
    /// fails the request (listing every rejected record), `dead-letter` produces the records to
    /// the dead-letter topic before anything of the request is stored, `drop` drops them.
    /// Returns the records to store and the report of those dropped or dead-lettered.
    async fn run_produce_chain(
        &self,
        topic: &TopicInfo,
        records: Vec<Record>,
    ) -> Result<(Vec<Record>, Vec<pb::RejectedRecord>), BrokerError> {
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
        Ok((
            output.records.into_iter().map(|r| r.record).collect(),
            report,
        ))
    }

    async fn handle_fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<pb::FetchResponse, BrokerError> {
        let node = self.node()?;
        let req = request.into_inner();
        let (topic, hosted) = self.readable(&req.topic, req.partition).await?;
        let (offset, mut progress, log_start) = self.check_offset(&hosted, req.offset).await?;
        // Built (and its `init`s run) before waiting, so bad parameters fail at once.
        let chain = self.consume_chain(&topic, &req.modules).await?;
        let (max_records, max_bytes) =
            Self::fetch_limits(&node.config.limits, req.max_records, req.max_bytes);
        let wait = req.max_wait_ms.min(node.config.limits.max_fetch_wait_ms);
        if offset >= progress.high_watermark && wait > 0 {
            progress = wait_for_records(
                node,
                &hosted,
                offset,
                Duration::from_millis(u64::from(wait)),
            )
            .await?;
        }
        let records =
            read_committed(node, &hosted, offset, progress, max_records, max_bytes).await?;
        let next_offset = records.last().map_or(offset.0, |r| r.offset + 1);
        let (records, rejected) = match chain {
            Some(chain) if !records.is_empty() => run_consume_chain(chain, records).await?.1,
            _ => (records, Vec::new()),
        };
        self.metrics.fetched(&req.topic, records.len() as u64);
        Ok(pb::FetchResponse {
            records,
            high_watermark: progress.high_watermark.0,
            log_start_offset: log_start.0,
            next_offset,
            rejected,
        })
    }

    /// The chain a consume request names, or else the topic's consume chain; `None` when
    /// there is neither. Every stage is instantiated and initialised.
    async fn consume_chain(
        &self,
        topic: &TopicInfo,
        modules: &[pb::ModuleRef],
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
        Ok(Some(node.modules.chain(&metadata, &specs, true).await?))
    }

    async fn handle_subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<ResponseStream<pb::SubscribeResponse>, BrokerError> {
        let node = self.node()?;
        let req = request.into_inner();
        let (topic, hosted) = self.readable(&req.topic, req.partition).await?;
        let progress = *hosted.replica.progress().borrow();
        use pb::start_position::Position;
        let start = match req.start.and_then(|s| s.position) {
            None | Some(Position::Latest(_)) => progress.high_watermark,
            Some(Position::Earliest(_)) => node.log_start(hosted.group(), progress).await?,
            Some(Position::Offset(o)) => {
                let offset = i64::try_from(o).unwrap_or(i64::MAX);
                self.check_offset(&hosted, offset).await?.0
            }
        };
        let (_, max_bytes) = Self::fetch_limits(&node.config.limits, 0, req.max_bytes);
        let max_records = node.config.limits.max_fetch_records as usize;
        // One chain for the whole subscription: an aggregate's state runs across its messages.
        let mut chain = self.consume_chain(&topic, &req.modules).await?;
        let (tx, rx) = mpsc::channel(4);
        let node = node.clone();
        tokio::spawn(async move {
            let mut position = start;
            loop {
                let progress = *hosted.replica.progress().borrow();
                let records = match read_committed(
                    &node,
                    &hosted,
                    position,
                    progress,
                    max_records,
                    max_bytes,
                )
                .await
                {
                    Ok(records) => records,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                if let Some(last) = records.last() {
                    position = Offset(last.offset + 1);
                    let (records, rejected) = match chain.take() {
                        None => (records, Vec::new()),
                        Some(running) => match run_consume_chain(running, records).await {
                            Ok((running, output)) => {
                                chain = Some(running);
                                output
                            }
                            Err(e) => {
                                let _ = tx.send(Err(e.into())).await;
                                return;
                            }
                        },
                    };
                    if records.is_empty() && rejected.is_empty() {
                        // Everything was filtered out: nothing to tell the subscriber.
                        continue;
                    }
                    let message = pb::SubscribeResponse {
                        records,
                        high_watermark: progress.high_watermark.0,
                        next_offset: position.0,
                        rejected,
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

    async fn handle_list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<pb::ListOffsetsResponse, BrokerError> {
        let node = self.node()?;
        let req = request.into_inner();
        let (_, hosted) = self.readable(&req.topic, req.partition).await?;
        let progress = *hosted.replica.progress().borrow();
        let log_start = node.log_start(hosted.group(), progress).await?;
        use pb::list_offsets_request::Spec;
        let (offset, timestamp_ms) = match req.spec {
            None | Some(Spec::Latest(_)) => (Some(progress.high_watermark.0), None),
            Some(Spec::Earliest(_)) => (Some(log_start.0), None),
            Some(Spec::TimestampMs(ts)) => {
                let db = node.partition_db.clone();
                let group = hosted.group();
                let found = blocking(move || {
                    Ok(db.offset_for_timestamp(group, ts, progress.applied_index)?)
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

    async fn handle_add_node(
        &self,
        request: Request<pb::AddNodeRequest>,
    ) -> Result<pb::DescribeClusterResponse, BrokerError> {
        let req = request.into_inner();
        let peer: crate::config::Peer = format!("{}={}", req.node_id, req.address)
            .parse()
            .map_err(BrokerError::InvalidArgument)?;
        self.node()?.add_node(peer.id, peer.address).await?;
        self.handle_describe_cluster(Request::new(pb::DescribeClusterRequest {}))
            .await
    }

    async fn handle_remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<pb::DescribeClusterResponse, BrokerError> {
        self.node()?
            .remove_node(request.into_inner().node_id)
            .await?;
        self.handle_describe_cluster(Request::new(pb::DescribeClusterRequest {}))
            .await
    }

    async fn handle_move_replica(
        &self,
        request: Request<pb::MoveReplicaRequest>,
    ) -> Result<pb::DescribeTopicResponse, BrokerError> {
        let node = self.node()?;
        let req = request.into_inner();
        let topic = self.topic(&req.topic).await?;
        let partition = Node::check_partition(&topic, req.partition)?;
        node.move_replica(&topic, partition, req.from_node, req.to_node)
            .await?;
        let topic = self.topic(&req.topic).await?;
        Ok(pb::DescribeTopicResponse {
            topic: Some(self.describe(&topic).await?),
        })
    }

    async fn handle_describe_cluster(
        &self,
        _request: Request<pb::DescribeClusterRequest>,
    ) -> Result<pb::DescribeClusterResponse, BrokerError> {
        let node = self.node()?;
        let metadata = node.metadata();
        Ok(pb::DescribeClusterResponse {
            nodes: metadata
                .nodes
                .values()
                .map(|n| pb::NodeDescription {
                    node_id: n.id,
                    address: n.address.clone(),
                })
                .collect(),
            controller: node.controller_leader(),
            cluster_id: metadata.cluster_id.clone().unwrap_or_default(),
        })
    }
}

#[tonic::async_trait]
impl Broker for BrokerService {
    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().name))]
    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        self.answer("CreateTopic", self.handle_create_topic(request).await)
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().name))]
    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        self.answer("DeleteTopic", self.handle_delete_topic(request).await)
    }

    async fn list_topics(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        self.answer("ListTopics", self.handle_list_topics(request).await)
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        self.answer("DescribeTopic", self.handle_describe_topic(request).await)
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, records = request.get_ref().records.len()))]
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        self.answer("Produce", self.handle_produce(request).await)
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition, offset = request.get_ref().offset))]
    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        self.answer("Fetch", self.handle_fetch(request).await)
    }

    type SubscribeStream = ResponseStream<pb::SubscribeResponse>;

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition))]
    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.answer("Subscribe", self.handle_subscribe(request).await)
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        self.answer("ListOffsets", self.handle_list_offsets(request).await)
    }

    async fn describe_cluster(
        &self,
        request: Request<pb::DescribeClusterRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        self.answer(
            "DescribeCluster",
            self.handle_describe_cluster(request).await,
        )
    }

    async fn add_node(
        &self,
        request: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        self.answer("AddNode", self.handle_add_node(request).await)
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        self.answer("RemoveNode", self.handle_remove_node(request).await)
    }

    async fn move_replica(
        &self,
        request: Request<pb::MoveReplicaRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        self.answer("MoveReplica", self.handle_move_replica(request).await)
    }

    #[tracing::instrument(skip_all, fields(module = %request.get_ref().name, bytes = request.get_ref().wasm.len()))]
    async fn register_module(
        &self,
        request: Request<pb::RegisterModuleRequest>,
    ) -> Result<Response<pb::ModuleDescription>, Status> {
        self.answer("RegisterModule", self.handle_register_module(request).await)
    }

    async fn list_modules(
        &self,
        request: Request<pb::ListModulesRequest>,
    ) -> Result<Response<pb::ListModulesResponse>, Status> {
        self.answer("ListModules", self.handle_list_modules(request).await)
    }

    async fn describe_module(
        &self,
        request: Request<pb::DescribeModuleRequest>,
    ) -> Result<Response<pb::ModuleDescription>, Status> {
        self.answer("DescribeModule", self.handle_describe_module(request).await)
    }

    #[tracing::instrument(skip_all, fields(module = %request.get_ref().name))]
    async fn delete_module(
        &self,
        request: Request<pb::DeleteModuleRequest>,
    ) -> Result<Response<pb::DeleteModuleResponse>, Status> {
        self.answer("DeleteModule", self.handle_delete_module(request).await)
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic))]
    async fn attach_module(
        &self,
        request: Request<pb::AttachModuleRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        self.answer("AttachModule", self.handle_attach_module(request).await)
    }

    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, module = %request.get_ref().name))]
    async fn detach_module(
        &self,
        request: Request<pb::DetachModuleRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        self.answer("DetachModule", self.handle_detach_module(request).await)
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group))]
    async fn join_group(
        &self,
        request: Request<pb::JoinGroupRequest>,
    ) -> Result<Response<pb::JoinGroupResponse>, Status> {
        self.answer("JoinGroup", self.handle_join_group(request).await)
    }

    async fn group_heartbeat(
        &self,
        request: Request<pb::GroupHeartbeatRequest>,
    ) -> Result<Response<pb::GroupHeartbeatResponse>, Status> {
        self.answer("GroupHeartbeat", self.handle_group_heartbeat(request).await)
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group))]
    async fn leave_group(
        &self,
        request: Request<pb::LeaveGroupRequest>,
    ) -> Result<Response<pb::LeaveGroupResponse>, Status> {
        self.answer("LeaveGroup", self.handle_leave_group(request).await)
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group))]
    async fn commit_offsets(
        &self,
        request: Request<pb::CommitOffsetsRequest>,
    ) -> Result<Response<pb::CommitOffsetsResponse>, Status> {
        self.answer("CommitOffsets", self.handle_commit_offsets(request).await)
    }

    async fn fetch_committed_offsets(
        &self,
        request: Request<pb::FetchCommittedOffsetsRequest>,
    ) -> Result<Response<pb::FetchCommittedOffsetsResponse>, Status> {
        self.answer(
            "FetchCommittedOffsets",
            self.handle_fetch_committed_offsets(request).await,
        )
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        self.answer("ListGroups", self.handle_list_groups(request).await)
    }

    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::GroupDescription>, Status> {
        self.answer("DescribeGroup", self.handle_describe_group(request).await)
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group))]
    async fn reset_group_offsets(
        &self,
        request: Request<pb::ResetGroupOffsetsRequest>,
    ) -> Result<Response<pb::ResetGroupOffsetsResponse>, Status> {
        self.answer(
            "ResetGroupOffsets",
            self.handle_reset_group_offsets(request).await,
        )
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group))]
    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        self.answer("DeleteGroup", self.handle_delete_group(request).await)
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
