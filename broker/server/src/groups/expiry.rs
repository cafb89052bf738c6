//! Offsets retention: the committed offsets of a group that stays empty are forgotten after
//! `groups.offsets_retention_ms`, as Kafka forgets them after `offsets.retention.minutes`.
//!
//! The controller leader looks periodically for groups with no live member whose newest commit
//! is older than the retention, and proposes their expiry through the controller log, naming
//! each group's newest commit as it saw it: a group that commits meanwhile keeps its offsets
//! (see [`GroupCommand::Expire`]). Membership lives only on the coordinator and a new
//! controller leader starts with none, so a new leader waits one longest session
//! (`groups.max_session_timeout_ms`) before its first look: long enough for every live member
//! to have joined it again.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::GroupCommand;
use crate::metadata::Command;
use crate::node::Node;

/// Starts the periodic expiry on `node` (it acts only while the node leads the controller).
pub(crate) fn spawn(node: Arc<Node>) {
    let retention = Duration::from_millis(node.config.groups.offsets_retention_ms);
    let settle = Duration::from_millis(u64::from(node.config.groups.max_session_timeout_ms));
    let every = (retention / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
    tokio::spawn(async move {
        // The controller term this node leads, and since when.
        let mut leading: Option<(u64, Instant)> = None;
        loop {
            tokio::select! {
                _ = node.shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let Some(term) = node.controller_term() else {
                leading = None;
                continue;
            };
            let since = match leading {
                Some((t, since)) if t == term => since,
                _ => leading.insert((term, Instant::now())).1,
            }
            .elapsed();
            if since < settle {
                continue;
            }
            if let Err(e) = expire(&node, term, retention).await {
                tracing::warn!(error = %e, "expiring the offsets of empty groups failed; will retry");
            }
        }
    });
}

/// Proposes the expiry of the groups that are empty and past the retention.
async fn expire(
    node: &Node,
    term: u64,
    retention: Duration,
) -> Result<(), crate::error::BrokerError> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let cutoff = now_ms.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
    let live: Vec<_> = node
        .coordinator
        .groups(term)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let offsets = node.group_offsets();
    let groups: Vec<_> = offsets
        .names()
        .filter(|name| !live.contains(name))
        .filter_map(|name| {
            let newest = offsets.newest_commit_ms(name)?;
            (newest < cutoff).then(|| (name.clone(), newest))
        })
        .collect();
    if groups.is_empty() {
        return Ok(());
    }
    let count = groups.len();
    node.propose(Command::Group(GroupCommand::Expire { groups }))
        .await?;
    tracing::info!(
        groups = count,
        ?retention,
        "expired the committed offsets of empty groups"
    );
    Ok(())
}
