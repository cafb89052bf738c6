//! When the leader of a compacted partition (`cleanup.policy` with `compact`) asks its replicas
//! to compact ([`PartitionReplica::compact`](weir_raft::PartitionReplica::compact)), and how
//! far: every replica then runs the same pass (weir-storage's `compaction`).
//!
//! - **How far**: up to the high watermark, but never into the tail whose batches are newer
//!   than `min.compaction.lag.ms`, and at most [`MAX_DIRTY_OFFSETS`] past the last pass (each
//!   replica maps the keys of that stretch in memory).
//! - **When**: once the bytes written since the last pass are at least
//!   `min.cleanable.dirty.ratio` of the log's (as Kafka's cleaner picks logs by their dirty part), or a tombstone the last pass kept has become
//!   older than `delete.retention.ms` (tombstones are removed by a pass, so one is due).
//! - Not while the last pass asked for has not finished on this node.

use weir_raft::CompactionTarget;
use weir_types::Offset;

use super::now_ms;
use crate::error::BrokerError;
use crate::metadata::TopicConfig;
use crate::node::{HostedPartition, Node, blocking};

/// The most offsets one pass compacts past the last one: bounds what each replica holds of
/// the dirty part (per record its offset, key id and tombstone time; per key its hash and
/// latest offset: some 64 bytes a record, 32 MiB at most).
pub(crate) const MAX_DIRTY_OFFSETS: u64 = 1 << 19;

/// Asks the replicas of `hosted` (led here) to compact, if a pass is due.
pub(super) async fn ask_if_due(
    node: &Node,
    hosted: &HostedPartition,
    config: &TopicConfig,
) -> Result<(), BrokerError> {
    let progress = *hosted.replica.progress().borrow();
    let (db, group) = (node.partition_db.clone(), hosted.group());
    let now = now_ms();
    let lag_ms = i64::try_from(config.min_compaction_lag_ms).unwrap_or(i64::MAX);
    let (done, log_bytes, lag_point) = blocking(move || {
        let read = || -> Result<_, weir_storage::ReadError> {
            let done = db.compaction_state(group)?;
            let log_bytes = db.log_bytes(group)?;
            let lag_point = match lag_ms {
                0 => progress.high_watermark,
                lag => {
                    db.retention_point(group, now.saturating_sub(lag), progress.high_watermark)?
                }
            };
            Ok((done, log_bytes, lag_point))
        };
        read().map_err(BrokerError::from)
    })
    .await?;
    let done_target = done.map(|d| CompactionTarget {
        below: d.below,
        tombstones_before_ms: d.tombstones_before_ms,
    });
    if let Some(asked) = progress.compaction
        && done_target.is_none_or(|d| d.merged(asked) != d)
    {
        return Ok(()); // the last pass asked for is still running here
    }
    let clean_from = done.map_or(Offset(0), |d| d.below).max(progress.log_start);
    let below = lag_point.min(clean_from.plus(MAX_DIRTY_OFFSETS));
    let retention_ms = i64::try_from(config.delete_retention_ms).unwrap_or(i64::MAX);
    let tombstones_before_ms = now
        .saturating_sub(retention_ms)
        .max(done.map_or(i64::MIN, |d| d.tombstones_before_ms));
    // What was written since the last pass (less what retention trimmed since).
    let dirty_bytes = log_bytes.saturating_sub(done.map_or(0, |d| d.log_bytes_after));
    let dirty_enough = below > clean_from
        && log_bytes > 0
        && dirty_bytes as f64 >= config.min_cleanable_dirty_ratio * log_bytes as f64;
    let tombstones_due = done
        .and_then(|d| d.oldest_tombstone_ms)
        .is_some_and(|oldest| oldest < tombstones_before_ms);
    if !dirty_enough && !tombstones_due {
        return Ok(());
    }
    let target = CompactionTarget {
        below: below.max(clean_from),
        tombstones_before_ms,
    };
    let asked = hosted
        .replica
        .compact(target)
        .await
        .map_err(|e| node.replica_error(e))?;
    tracing::debug!(topic = %hosted.topic, partition = %hosted.partition, below = %asked.below, dirty_bytes, log_bytes, "asked the replicas to compact");
    Ok(())
}
