//! Retention (`retention.ms`, `retention.bytes`, for topics whose `cleanup.policy` includes
//! `delete`): the leader of each partition periodically finds the batches its topic no longer
//! keeps and moves the partition's log start past them,
//! through raft (`PartitionReplica::trim`), so every replica trims at the same offset. Each
//! replica then snapshots at the new log start and purges the entries below it from its log
//! (weir-raft). Whole batches only, never past the high watermark.
//!
//! - By time: a batch goes once its newest record's timestamp (the producer's, or the leader's
//!   clock on `LogAppendTime` topics) is older than `retention.ms`, and every batch before it
//!   has gone, as Kafka judges a segment by its largest timestamp.
//! - By size: the oldest batches go while the partition holds more than `retention.bytes` of
//!   them, to a sixteenth of the bound (see [`sizes`]).
//!
//! The same periodic check asks for compaction on topics whose policy includes `compact` (see
//! [`compaction`]).

mod compaction;
mod sizes;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use weir_raft::GroupId;

use crate::error::BrokerError;
use crate::metadata::TopicConfig;
use crate::node::{HostedPartition, Node, blocking};
use sizes::PartitionSizes;

/// Batches whose sizes one read of the log returns, so a scan holds a bounded list and a short
/// read transaction.
const SCAN_BATCHES: usize = 4096;

/// Starts the periodic retention check on `node`, every `retention.check_interval_ms`.
pub(crate) fn spawn(node: Arc<Node>) {
    let every = Duration::from_millis(node.config.retention.check_interval_ms);
    tokio::spawn(async move {
        // The sizes of the partitions this node leads with a `retention.bytes`.
        let mut sizes: HashMap<GroupId, PartitionSizes> = HashMap::new();
        loop {
            tokio::select! {
                _ = node.shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let leading: Vec<HostedPartition> = node
                .hosted_partitions()
                .into_iter()
                .filter(|h| h.replica.is_leader())
                .collect();
            // A partition led again later is scanned again: another leader may have trimmed it.
            sizes.retain(|group, _| leading.iter().any(|h| h.group() == *group));
            for hosted in leading {
                let Some(topic) = node.metadata().topics.get(&hosted.topic).cloned() else {
                    continue; // deleted meanwhile
                };
                let config = node.topic_config(&topic);
                if config.delete
                    && let Err(e) = enforce(&node, &hosted, &config, &mut sizes).await
                {
                    tracing::warn!(topic = %hosted.topic, partition = %hosted.partition, error = %e, "enforcing retention failed; will retry");
                }
                if config.compact
                    && let Err(e) = compaction::ask_if_due(&node, &hosted, &config).await
                {
                    tracing::warn!(topic = %hosted.topic, partition = %hosted.partition, error = %e, "asking for compaction failed; will retry");
                }
            }
        }
    });
}

/// Moves the log start of `hosted` (led here) past the batches its topic's retention no
/// longer keeps, if there are any.
async fn enforce(
    node: &Node,
    hosted: &HostedPartition,
    config: &TopicConfig,
    sizes: &mut HashMap<GroupId, PartitionSizes>,
) -> Result<(), BrokerError> {
    let progress = *hosted.replica.progress().borrow();
    let (db, group) = (node.partition_db.clone(), hosted.group());
    let limit = progress.high_watermark;
    let mut log_start = progress.log_start;
    if let Some(retention_ms) = config.retention_ms {
        let keep_from_ms = now_ms().saturating_sub(i64::try_from(retention_ms).unwrap_or(i64::MAX));
        let db = db.clone();
        let by_time = blocking(move || {
            db.retention_point(group, keep_from_ms, limit)
                .map_err(BrokerError::from)
        })
        .await?;
        log_start = log_start.max(by_time);
    }
    match config.retention_bytes {
        Some(limit_bytes) => {
            let counted = sizes
                .entry(group)
                .and_modify(|s| {
                    if s.limit_bytes != limit_bytes {
                        *s = PartitionSizes::new(limit_bytes);
                    }
                })
                .or_insert_with(|| PartitionSizes::new(limit_bytes));
            // A stretch at a time: a new leader scans the whole retained log once.
            loop {
                let from = counted.scanned_to;
                let db = db.clone();
                let new = blocking(move || {
                    db.batch_sizes(group, from, limit, SCAN_BATCHES)
                        .map_err(BrokerError::from)
                })
                .await?;
                let done = new.len() < SCAN_BATCHES;
                for (base, count, bytes) in new {
                    counted.add(base, count, bytes);
                }
                if done {
                    break;
                }
            }
            if let Some(by_size) = counted.log_start_above(log_start) {
                log_start = by_size;
            }
        }
        None => {
            sizes.remove(&group);
        }
    }
    if log_start <= progress.log_start {
        return Ok(());
    }
    let trimmed = hosted
        .replica
        .trim(log_start)
        .await
        .map_err(|e| node.replica_error(e))?;
    tracing::debug!(topic = %hosted.topic, partition = %hosted.partition, log_start = %trimmed, "retention moved the log start");
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
