//! The topic a produce benchmark writes to: created if missing, and waited for until every
//! partition has a leader, so that no run measures an election; and its removal after a run
//! when the benchmark created it.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use weir_client::{Client, TopicSpec};

/// How long a new topic may take to elect its partition leaders.
const LEADER_WAIT: Duration = Duration::from_secs(30);
const LEADER_POLL: Duration = Duration::from_millis(100);

/// A topic ready to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ensured {
    /// Its partition count.
    pub partitions: u32,
    /// Whether this benchmark created it (and so may delete it).
    pub created: bool,
}

/// Makes sure `topic` exists (creating it with `partitions` partitions and
/// `replication_factor` replicas, 0 for the broker's default) with elected leaders.
pub async fn ensure_topic(
    client: &Client,
    topic: &str,
    partitions: u32,
    replication_factor: u32,
) -> anyhow::Result<Ensured> {
    let mut created = false;
    match client.describe_topic(topic).await {
        Ok(_) => {}
        Err(err) if err.reason() == Some("UNKNOWN_TOPIC") => {
            let spec =
                TopicSpec::new(topic, partitions).with_replication_factor(replication_factor);
            match client.create_topic(spec).await {
                Ok(_) => created = true,
                // Created by someone else meanwhile: usable, but not ours to delete.
                Err(err) if err.reason() == Some("TOPIC_ALREADY_EXISTS") => {}
                Err(err) => {
                    return Err(err).with_context(|| format!("cannot create topic {topic}"));
                }
            }
        }
        Err(err) => return Err(err).with_context(|| format!("cannot describe topic {topic}")),
    }
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        let info = client
            .describe_topic(topic)
            .await
            .with_context(|| format!("cannot describe topic {topic}"))?;
        if info.partitions.iter().all(|p| p.leader.is_some()) {
            let count = u32::try_from(info.partitions.len()).context("too many partitions")?;
            if count == 0 {
                bail!("topic {topic} has no partitions");
            }
            if count != partitions {
                tracing::warn!(
                    topic,
                    count,
                    "the topic exists with another partition count; using it"
                );
            }
            return Ok(Ensured {
                partitions: count,
                created,
            });
        }
        if Instant::now() >= deadline {
            bail!("topic {topic} still lacks partition leaders after {LEADER_WAIT:?}");
        }
        tokio::time::sleep(LEADER_POLL).await;
    }
}

/// Deletes `topic`, which a finished run wrote and nothing reads any more. A failure only
/// leaves the topic behind, so it is reported and otherwise ignored.
pub async fn remove_topic(client: &Client, topic: &str) {
    if let Err(err) = client.delete_topic(topic).await {
        tracing::warn!(topic, error = %err, "cannot delete a finished run's topic; it stays");
    }
}
