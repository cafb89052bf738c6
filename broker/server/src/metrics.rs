//! Operator metrics in the Prometheus / OpenMetrics text format, served over HTTP at `/metrics`.
//!
//! Request counters are updated on the request path; storage and partition figures are read at
//! scrape time from their sources (the committer's counters, the replicas' progress), so there is
//! no second copy of them to drift.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admission::{Admission, REFUSAL_REASONS};
use crate::node::{HostedPartition, Node};
use crate::security::Audit;

/// Labels of per-topic counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TopicLabels {
    pub(crate) topic: String,
}

/// Labels of the request error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ErrorLabels {
    pub(crate) rpc: String,
    pub(crate) reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: String,
}

/// Counters updated by request handlers.
#[derive(Debug)]
pub(crate) struct RequestMetrics {
    pub(crate) produced_records: Family<TopicLabels, Counter>,
    pub(crate) produced_bytes: Family<TopicLabels, Counter>,
    pub(crate) fetched_records: Family<TopicLabels, Counter>,
    pub(crate) duplicate_batches: Family<TopicLabels, Counter>,
    pub(crate) errors: Family<ErrorLabels, Counter>,
    pub(crate) produce_seconds: Histogram,
}

impl RequestMetrics {
    fn new() -> Self {
        Self {
            produced_records: Family::default(),
            produced_bytes: Family::default(),
            fetched_records: Family::default(),
            duplicate_batches: Family::default(),
            errors: Family::default(),
            // 100 µs to ~13 s.
            produce_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
        }
    }

    /// Counts a failed request by RPC and stable reason.
    pub(crate) fn error(&self, rpc: &str, reason: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                rpc: rpc.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a produced batch and its acknowledgement latency.
    pub(crate) fn produced(&self, topic: &str, records: u64, bytes: u64, latency: Duration) {
        let labels = TopicLabels {
            topic: topic.to_owned(),
        };
        self.produced_records.get_or_create(&labels).inc_by(records);
        self.produced_bytes.get_or_create(&labels).inc_by(bytes);
        self.produce_seconds.observe(latency.as_secs_f64());
    }

    /// Counts an idempotent producer's retry that was answered with its original offsets.
    pub(crate) fn duplicate(&self, topic: &str) {
        self.duplicate_batches
            .get_or_create(&TopicLabels {
                topic: topic.to_owned(),
            })
            .inc();
    }

    /// Counts records served to consumers.
    pub(crate) fn fetched(&self, topic: &str, records: u64) {
        self.fetched_records
            .get_or_create(&TopicLabels {
                topic: topic.to_owned(),
            })
            .inc_by(records);
    }
}

/// Reads the admission budgets at scrape time.
#[derive(Debug)]
struct AdmissionCollector {
    admission: Arc<Admission>,
}

impl Collector for AdmissionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let a = &self.admission;
        let limits = a.limits();
        let gauges = [
            (
                "weir_request_bytes_in_flight",
                "Client request bytes read and not yet answered (bounded by limits.max_request_bytes_in_flight)",
                a.client_bytes_in_flight(),
            ),
            (
                "weir_request_bytes_in_flight_max",
                "limits.max_request_bytes_in_flight",
                limits.node_bytes,
            ),
            (
                "weir_peer_request_bytes_in_flight",
                "Peer (replication) request bytes read and not yet answered",
                a.peer_bytes_in_flight(),
            ),
        ];
        for (name, help, value) in gauges {
            ConstGauge::new(value as i64).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Gauge,
            )?)?;
        }
        ConstCounter::new(crate::SUPPRESSED_LOG_EVENTS.load(Ordering::Relaxed) as f64).encode(
            encoder.encode_descriptor(
                "weir_log_events_suppressed",
                "Log events suppressed as repeats (a dependency's warning from one call site more than once in 10 s)",
                None,
                MetricType::Counter,
            )?,
        )?;
        let mut refused = encoder.encode_descriptor(
            "weir_requests_refused",
            "Requests refused before they were handled, by reason: over a budget (OVERLOADED), too large, or stalled on the way",
            None,
            MetricType::Counter,
        )?;
        for (reason, count) in REFUSAL_REASONS.iter().zip(a.refused()) {
            let labels = [("reason", *reason)];
            ConstCounter::new(count as f64).encode(refused.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Quiet partitions: leaders whose lease lapsed, groups whose raft timer runs, and each peer
/// the node-level heartbeats heard from.
fn encode_heartbeat_status(
    encoder: &mut DescriptorEncoder,
    node: &Node,
    hosted: &[HostedPartition],
) -> Result<(), std::fmt::Error> {
    let lapsed = hosted.iter().filter(|p| p.replica.lease_lapsed()).count();
    ConstGauge::new(lapsed as i64).encode(encoder.encode_descriptor(
        "weir_partition_leases_lapsed",
        "Partitions this node leads that were quiet past their leader lease: the next write confirms leadership with one heartbeat round first",
        None,
        MetricType::Gauge,
    )?)?;
    let (ticking, peers) = node.peers.heartbeat_status();
    ConstGauge::new(ticking as i64).encode(encoder.encode_descriptor(
        "weir_raft_partition_timers",
        "Partition raft groups on this node whose election and heartbeat timer runs (the others are quiet while their leader's node is heard)",
        None,
        MetricType::Gauge,
    )?)?;
    let mut alive = encoder.encode_descriptor(
        "weir_peer_alive",
        "1 while a peer's node-level heartbeats arrive within the shortest election timeout",
        None,
        MetricType::Gauge,
    )?;
    for (peer, is_alive) in peers {
        let peer = peer.to_string();
        ConstGauge::new(i64::from(is_alive))
            .encode(alive.encode_family(&[("peer", peer.as_str())])?)?;
    }
    Ok(())
}

/// Reads node-wide figures at scrape time.
#[derive(Debug)]
struct NodeCollector {
    node: Weak<Node>,
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(node) = self.node.upgrade() else {
            return Ok(());
        };
        let stats = node.partition_db.stats();
        let counters = [
            (
                "weir_storage_commits",
                "Transactions committed (one fsync each) by the partition log committer",
                stats.commits.load(Ordering::Relaxed) as f64,
            ),
            (
                "weir_storage_write_requests",
                "Durable write requests completed by the partition log committer",
                stats.requests.load(Ordering::Relaxed) as f64,
            ),
            (
                "weir_storage_appended_bytes",
                "Bytes of log entries appended",
                stats.appended_bytes.load(Ordering::Relaxed) as f64,
            ),
            (
                "weir_storage_commit_seconds",
                "Time spent committing (writing and fsyncing)",
                stats.commit_durations.sum_seconds(),
            ),
        ];
        for (name, help, value) in counters {
            let metric = ConstCounter::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)?;
        }
        encode_duration_histogram(
            &mut encoder,
            "weir_storage_commit_duration_seconds",
            "How long each commit of the partition log took (writing and fsyncing); every durable write of the node waits for the commit in progress",
            &stats.commit_durations,
        )?;
        encode_duration_histogram(
            &mut encoder,
            "weir_storage_write_wait_seconds",
            "How long each durable write of the partition log waited from its submission until the commit that made it durable (the commit in progress, then its own): storage's share of produce latency",
            &stats.write_waits,
        )?;

        let hosted = node.hosted_partitions();
        encode_partition_gauge(
            &mut encoder,
            "weir_partition_high_watermark",
            "One past the last committed offset",
            &hosted,
            |p| p.replica.progress().borrow().high_watermark.0 as i64,
        )?;
        encode_partition_gauge(
            &mut encoder,
            "weir_partition_stored_bytes",
            "Bytes of the log entries this node's replica stores (record batches and their raft envelopes)",
            &hosted,
            // A read transaction of one metadata row per partition; -1 if it cannot be read.
            |p| {
                node.partition_db
                    .log_bytes(p.group())
                    .map_or(-1, |b| b.min(i64::MAX as u64) as i64)
            },
        )?;
        encode_partition_gauge(
            &mut encoder,
            "weir_partition_is_leader",
            "1 if this node leads the partition",
            &hosted,
            |p| i64::from(p.replica.is_leader()),
        )?;
        encode_partition_gauge(
            &mut encoder,
            "weir_partition_producers",
            "Idempotent producers the partition remembers (bounded by producers.max_per_partition)",
            &hosted,
            |p| p.replica.producer_count() as i64,
        )?;
        let mut held = encoder.encode_descriptor(
            "weir_partition_held_batches",
            "Idempotent batches that reached the leader ahead of their producer's sequence and were held for the ones before",
            None,
            MetricType::Counter,
        )?;
        for partition in &hosted {
            ConstCounter::new(partition.replica.held_batches() as f64)
                .encode(held.encode_family(&partition_labels(partition))?)?;
        }
        encode_module_counters(&mut encoder, &node)?;
        encode_heartbeat_status(&mut encoder, &node, &hosted)?;
        let (instances, max_instances) = node.modules.instances();
        ConstGauge::new(i64::from(instances)).encode(encoder.encode_descriptor(
            "weir_module_instances",
            "Module instances alive: stages of running chains, subscriptions and warm produce chains",
            None,
            MetricType::Gauge,
        )?)?;
        ConstGauge::new(i64::from(max_instances)).encode(encoder.encode_descriptor(
            "weir_module_instances_max",
            "Module instances this node may hold at once (modules.max_instances)",
            None,
            MetricType::Gauge,
        )?)?;
        ConstGauge::new(node.budgets.unacknowledged_bytes() as i64).encode(
            encoder.encode_descriptor(
                "weir_unacknowledged_bytes",
                "Bytes of acks=none batches handed to raft and not applied yet (bounded by limits.max_unacknowledged_bytes)",
                None,
                MetricType::Gauge,
            )?,
        )?;
        ConstGauge::new(node.budgets.open_subscriptions() as i64).encode(
            encoder.encode_descriptor(
                "weir_subscriptions",
                "Subscriptions open on this node (bounded by limits.max_subscriptions)",
                None,
                MetricType::Gauge,
            )?,
        )?;
        ConstGauge::new(node.disk.free_bytes().min(i64::MAX as u64) as i64).encode(
            encoder.encode_descriptor(
                "weir_disk_free_bytes",
                "Bytes free on the data directory's filesystem at the last sample",
                None,
                MetricType::Gauge,
            )?,
        )?;
        ConstGauge::new(node.disk.min_free_bytes().min(i64::MAX as u64) as i64).encode(
            encoder.encode_descriptor(
                "weir_disk_min_free_bytes",
                "The free-space reserve (disk.min_free_bytes): below it, produce is refused with DISK_FULL",
                None,
                MetricType::Gauge,
            )?,
        )?;
        ConstCounter::new(node.disk.refused() as f64).encode(encoder.encode_descriptor(
            "weir_disk_full_refusals",
            "Produce requests refused with DISK_FULL",
            None,
            MetricType::Counter,
        )?)?;
        let kept = &node.shared_by_replicas.kept_entries;
        for (name, help, value) in [
            (
                "weir_raft_kept_entries_bytes",
                "Bytes of durable, not yet applied entries this node's partitions keep in memory",
                kept.bytes(),
            ),
            (
                "weir_raft_kept_entries_max_bytes",
                "The bound on weir_raft_kept_entries_bytes: past it, the oldest are read back from the log instead",
                kept.max_bytes(),
            ),
        ] {
            ConstGauge::new(value.min(i64::MAX as usize) as i64)
                .encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        let compactions = &node.shared_by_replicas.compactions;
        for (name, help, value) in [
            (
                "weir_compaction_passes",
                "Compaction passes this node's replicas finished",
                compactions.passes(),
            ),
            (
                "weir_compaction_failures",
                "Compaction passes that failed (they run again at the next request)",
                compactions.failures(),
            ),
            (
                "weir_compaction_removed_records",
                "Records compaction removed from this node's replicas",
                compactions.records_removed(),
            ),
            (
                "weir_compaction_reclaimed_bytes",
                "Batch bytes compaction removed from this node's replicas",
                compactions.bytes_reclaimed(),
            ),
        ] {
            ConstCounter::new(value as f64).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Counter,
            )?)?;
        }
        let failed = ConstGauge::new(node.failed_partitions() as i64);
        failed.encode(encoder.encode_descriptor(
            "weir_partitions_failed",
            "Assigned partitions whose replica failed to start or stopped after a failure on this node",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleLabels {
    module: String,
    version: String,
}

/// A module counter: name, help, and how to read it from the stats.
type ModuleCounter = (
    &'static str,
    &'static str,
    fn(&weir_wasm::ModuleStats) -> f64,
);

/// Encodes the counters of every module version this node has run, labelled by module and
/// version.
fn encode_module_counters(
    encoder: &mut DescriptorEncoder,
    node: &Node,
) -> Result<(), std::fmt::Error> {
    let all = node.modules.registered_stats(&node.metadata().modules);
    let counters: [ModuleCounter; 6] = [
        (
            "weir_module_invocations",
            "Calls into the module (one per batch)",
            |s| s.invocations as f64,
        ),
        (
            "weir_module_records_in",
            "Records handed to the module",
            |s| s.records_in as f64,
        ),
        (
            "weir_module_records_out",
            "Records the module kept or produced",
            |s| s.records_out as f64,
        ),
        (
            "weir_module_records_rejected",
            "Records the module rejected",
            |s| s.records_rejected as f64,
        ),
        (
            "weir_module_errors",
            "Calls that failed: traps, timeouts, memory or output limits, bad output",
            |s| s.errors as f64,
        ),
        (
            "weir_module_busy_seconds",
            "Time spent inside the module",
            |s| s.busy.as_secs_f64(),
        ),
    ];
    for (name, help, value) in counters {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (id, stats) in &all {
            let labels = ModuleLabels {
                module: id.name.clone(),
                version: id.version.to_string(),
            };
            ConstCounter::new(value(stats)).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// Encodes durations the storage counted in fixed buckets as a histogram.
fn encode_duration_histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    durations: &weir_storage::DurationBuckets,
) -> Result<(), std::fmt::Error> {
    let buckets = durations.buckets();
    encoder
        .encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(
            durations.sum_seconds(),
            buckets.iter().map(|(_, count)| count).sum(),
            &buckets,
            None,
        )
}

/// Encodes one gauge per hosted partition, labelled by topic and partition.
fn encode_partition_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    hosted: &[HostedPartition],
    value: impl Fn(&HostedPartition) -> i64,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for partition in hosted {
        ConstGauge::new(value(partition))
            .encode(family.encode_family(&partition_labels(partition))?)?;
    }
    Ok(())
}

fn partition_labels(partition: &HostedPartition) -> PartitionLabels {
    PartitionLabels {
        topic: partition.topic.to_string(),
        partition: partition.partition.to_string(),
    }
}

/// The metrics registry of a broker.
pub(crate) struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub(crate) fn new(
        node: &Arc<Node>,
        requests: &RequestMetrics,
        admission: &Arc<Admission>,
        audit: &Audit,
        runtime_stalls: &Counter,
    ) -> Self {
        let mut registry = Registry::default();
        registry.register(
            "weir_runtime_stalls",
            "Times the node's async runtime ran no task for 3 s (its worker threads held)",
            runtime_stalls.clone(),
        );
        registry.register(
            "weir_authentication_failures",
            "Requests refused as UNAUTHENTICATED (or overloaded password checks), by reason",
            audit.authentication_failures.clone(),
        );
        registry.register(
            "weir_authorization_denials",
            "Requests refused as PERMISSION_DENIED, by RPC, missing operation and resource type",
            audit.authorization_denials.clone(),
        );
        registry.register(
            "weir_peer_requests_refused",
            "Peer-service (raft, controller forwarding) requests from callers that are not nodes",
            audit.peer_refusals.clone(),
        );
        registry.register(
            "weir_produced_records",
            "Records appended and acknowledged",
            requests.produced_records.clone(),
        );
        registry.register(
            "weir_produced_bytes",
            "Bytes of record batches appended and acknowledged",
            requests.produced_bytes.clone(),
        );
        registry.register(
            "weir_fetched_records",
            "Records served to consumers",
            requests.fetched_records.clone(),
        );
        registry.register(
            "weir_produce_duplicates",
            "Idempotent producers' retries answered with the original offsets, nothing stored",
            requests.duplicate_batches.clone(),
        );
        registry.register(
            "weir_request_errors",
            "Failed requests by RPC and stable reason",
            requests.errors.clone(),
        );
        registry.register(
            "weir_produce_latency_seconds",
            "Time from receiving a produce request to acknowledging it",
            requests.produce_seconds.clone(),
        );
        registry.register_collector(Box::new(NodeCollector {
            node: Arc::downgrade(node),
        }));
        registry.register_collector(Box::new(AdmissionCollector {
            admission: admission.clone(),
        }));
        Self { registry }
    }

    /// The current metrics in the OpenMetrics text format.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

impl RequestMetrics {
    /// A fresh set of request counters.
    pub(crate) fn shared() -> Arc<Self> {
        Arc::new(Self::new())
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener accept failed");
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(metrics, &request).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, %peer, "metrics connection ended with an error");
            }
        });
    }
}

async fn respond(
    metrics: Arc<Metrics>,
    request: &Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) =
        if request.method() == Method::GET && request.uri().path() == "/metrics" {
            // Off the async workers: the per-partition gauges read the log database.
            match tokio::task::spawn_blocking(move || metrics.render()).await {
                Ok(body) => (
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    body,
                ),
                Err(e) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("rendering the metrics failed: {e}\n"),
                ),
            }
        } else {
            (
                StatusCode::NOT_FOUND,
                "text/plain",
                "only GET /metrics is served here\n".to_owned(),
            )
        };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
