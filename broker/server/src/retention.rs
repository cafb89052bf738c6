//! Time-based retention (`retention.ms`): the leader of each partition periodically finds the
//! batches whose newest record is older than the topic's retention and moves the partition's
//! log start past them, through raft (`PartitionReplica::trim`), so every replica trims at the
//! same offset. Each replica then snapshots at the new log start and purges the entries below
//! it from its log (weir-raft). Whole batches only, never past the high watermark; a batch is
//! judged by its newest record's timestamp (the producer's, or the leader's clock on
//! `LogAppendTime` topics), as Kafka judges a segment by its largest timestamp.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::BrokerError;
use crate::node::{HostedPartition, Node, blocking};

/// Starts the periodic retention check on `node`, every `retention.check_interval_ms`.
pub(crate) fn spawn(node: Arc<Node>) {
    let every = Duration::from_millis(node.config.retention.check_interval_ms);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = node.shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            for hosted in node.hosted_partitions() {
                if !hosted.replica.is_leader() {
                    continue;
                }
                if let Err(e) = enforce(&node, &hosted).await {
                    tracing::warn!(topic = %hosted.topic, partition = %hosted.partition, error = %e, "enforcing retention failed; will retry");
                }
            }
        }
    });
}

/// Moves the log start of `hosted` (led here) past the batches its topic's `retention.ms` no
/// longer keeps, if there are any.
async fn enforce(node: &Node, hosted: &HostedPartition) -> Result<(), BrokerError> {
    let Some(topic) = node.metadata().topics.get(&hosted.topic).cloned() else {
        return Ok(()); // deleted meanwhile
    };
    let Some(retention_ms) = node.topic_config(&topic).retention_ms else {
        return Ok(());
    };
    let progress = *hosted.replica.progress().borrow();
    let keep_from_ms = now_ms().saturating_sub(i64::try_from(retention_ms).unwrap_or(i64::MAX));
    let (db, group) = (node.partition_db.clone(), hosted.group());
    let limit = progress.high_watermark;
    let log_start = blocking(move || {
        db.retention_point(group, keep_from_ms, limit)
            .map_err(BrokerError::from)
    })
    .await?;
    if log_start <= progress.log_start {
        return Ok(());
    }
    let trimmed = hosted
        .replica
        .trim(log_start)
        .await
        .map_err(|e| node.replica_error(e))?;
    tracing::info!(topic = %hosted.topic, partition = %hosted.partition, log_start = %trimmed, retention_ms, "retention moved the log start");
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
