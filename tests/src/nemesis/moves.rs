//! Replica moves while faults run. Each move is a membership change of the partition's raft
//! group (the new replica joins as a learner, catches up and is swapped in for the old one)
//! between two controller commands. Moves run one at a time in the background, so faults land
//! in the middle of them; a move a fault cut short leaves an extra replica, never a missing
//! one, and the nemesis runs it again at the end until it completes. Replicas move only to
//! the nodes [`Moves::set_targets`] names: not to a node being drained before its removal
//! (`super::membership`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use weir_client::Client;

use super::TOPIC;
use super::history::History;
use crate::NodeId;

/// How long one attempt at a move may take.
const ATTEMPT: Duration = Duration::from_secs(30);

/// One replica move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Move {
    partition: u32,
    from: NodeId,
    to: NodeId,
}

impl std::fmt::Display for Move {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "move partition {}'s replica from node {} to node {}",
            self.partition, self.from, self.to
        )
    }
}

/// A move's end: done, or failed (perhaps before it was even chosen) with why.
type Outcome = Result<Move, (Option<Move>, String)>;

/// The moves of a run.
pub(super) struct Moves {
    addrs: Vec<String>,
    /// The nodes replicas may move to.
    targets: Vec<NodeId>,
    history: Arc<History>,
    running: Option<JoinHandle<Outcome>>,
    /// Moves that failed after they were chosen, to run again at the end.
    unfinished: Vec<Move>,
    /// What became of the moves.
    pub(super) counts: MoveCounts,
}

/// What became of a run's moves.
#[derive(Debug, Clone, Copy, Default)]
pub struct MoveCounts {
    /// Moves started (a replica and a node to move it to were found).
    pub started: u64,
    /// Moves that completed at the first attempt.
    pub completed: u64,
    /// Moves a fault cut short that completed when run again at the end, or were found in
    /// effect then (the new node holds a replica and the old one none: the move completed
    /// though its answer was lost, or later moves and drains left the same placement).
    pub redone: u64,
    /// Moves a fault cut short whose old replica had moved away, or whose new node had left
    /// the cluster, by the end (run again, they only drop what they left behind).
    pub moot: u64,
}

impl Moves {
    /// Moves among `targets`, asking the nodes at `addrs` (which must stay members).
    pub(super) fn new(addrs: Vec<String>, targets: Vec<NodeId>, history: Arc<History>) -> Self {
        Self {
            addrs,
            targets,
            history,
            running: None,
            unfinished: Vec::new(),
            counts: MoveCounts::default(),
        }
    }

    /// Makes `targets` the nodes replicas may move to, from the next move on.
    pub(super) fn set_targets(&mut self, targets: Vec<NodeId>) {
        self.targets = targets;
    }

    /// Whether a move runs.
    pub(super) fn is_running(&self) -> bool {
        self.running.as_ref().is_some_and(|r| !r.is_finished())
    }

    /// Starts moving a replica of `partition` unless a move is still running: the replica on
    /// node `from` if given, else the one on the `pick`-th of its nodes, goes to the `pick`-th
    /// target that holds none (both counted around). Returns whether it started.
    pub(super) fn start(&mut self, partition: u32, pick: u64, from: Option<NodeId>) -> bool {
        if self.is_running() {
            return false;
        }
        self.take_finished();
        let addrs = self.addrs.clone();
        let targets = self.targets.clone();
        let history = self.history.clone();
        self.running = Some(tokio::spawn(async move {
            let not_started = |reason: String| {
                history.event(format!(
                    "no move of partition {partition} (from node {from:?}): {reason}"
                ));
                (None, reason)
            };
            let (client, topic) = any_node(&addrs)
                .await
                .map_err(|e| not_started(format!("no node answered: {e}")))?;
            let replicas = topic
                .partitions
                .get(partition as usize)
                .map(|p| p.replicas.clone())
                .unwrap_or_default();
            let from = match from {
                Some(node) => replicas.contains(&node).then_some(node),
                None => replicas.get(pick as usize % replicas.len().max(1)).copied(),
            };
            let mut spare: Vec<NodeId> = targets
                .iter()
                .copied()
                .filter(|n| !replicas.contains(n))
                .collect();
            if spare.is_empty() {
                // Every target listed: some only as learners moves cut short left (a move
                // there completes; the broker refuses nodes that vote already).
                spare = targets.into_iter().filter(|&n| Some(n) != from).collect();
            }
            spare.sort_unstable();
            let (Some(from), Some(&to)) =
                (from, spare.get((pick / 7) as usize % spare.len().max(1)))
            else {
                return Err(not_started(format!(
                    "none possible: replicas {replicas:?}, targets {spare:?}"
                )));
            };
            let chosen = Move {
                partition,
                from,
                to,
            };
            history.event(format!("{chosen}: started"));
            let outcome = attempt(&client, chosen).await;
            history.event(match &outcome {
                Ok(()) => format!("{chosen}: done"),
                Err(e) => format!("{chosen}: failed: {e}"),
            });
            outcome.map(|()| chosen).map_err(|e| (Some(chosen), e))
        }));
        true
    }

    /// Records the outcome of the move that ran, if it ended.
    fn take_finished(&mut self) {
        if let Some(running) = self.running.take_if(|r| r.is_finished()) {
            self.record(futures::FutureExt::now_or_never(running));
        }
    }

    fn record(&mut self, outcome: Option<Result<Outcome, tokio::task::JoinError>>) {
        match outcome {
            Some(Ok(Ok(_))) => {
                self.counts.started += 1;
                self.counts.completed += 1;
            }
            Some(Ok(Err((Some(chosen), _)))) => {
                self.counts.started += 1;
                self.unfinished.push(chosen);
            }
            // No move was possible, or the task was lost.
            _ => {}
        }
    }

    /// Waits for the running move, then runs every move that failed again until it completes
    /// (within two minutes each).
    pub(super) async fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(running) = self.running.take() {
            let outcome = running.await;
            self.record(Some(outcome));
        }
        for chosen in std::mem::take(&mut self.unfinished) {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut tries = 0;
            let moot = loop {
                // Each try starts from the next node, as a client given every node would: a
                // node whose replica a move cut short removed from the raft group describes
                // the partition as its own, with no leader, until the partition's leader drops
                // that replica from the metadata (within 5 s of its election).
                let mut addrs = self.addrs.clone();
                let start = tries % addrs.len().max(1);
                addrs.rotate_left(start);
                tries += 1;
                let outcome = match any_node(&addrs).await {
                    Ok((client, _)) => attempt(&client, chosen).await,
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(()) => break false,
                    // Done before its answer was lost, or its old replica moved since, or
                    // its new node has left the cluster or holds a replica since.
                    Err(e)
                        if e.contains("holds no replica")
                            || e.contains("not a member")
                            || e.contains("already holds a replica") =>
                    {
                        break true;
                    }
                    Err(e) if Instant::now() > deadline => {
                        anyhow::bail!("{chosen} never completed: {e}")
                    }
                    // A pace for the retries, not synchronisation.
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            };
            if moot && !self.took_effect(chosen).await {
                self.history.event(format!(
                    "{chosen}: moot at the end (no replica there, or no such node, any more)"
                ));
                self.counts.moot += 1;
            } else if moot {
                self.history.event(format!(
                    "{chosen}: in effect at the end (the new node holds a replica, the old one none)"
                ));
                self.counts.redone += 1;
            } else {
                self.history
                    .event(format!("{chosen}: completed at the end"));
                self.counts.redone += 1;
            }
        }
        Ok(())
    }

    /// Whether the partition's replicas now include the move's new node and not its old one:
    /// what the move was for holds.
    async fn took_effect(&self, chosen: Move) -> bool {
        let Ok((_, topic)) = any_node(&self.addrs).await else {
            return false;
        };
        topic
            .partitions
            .get(chosen.partition as usize)
            .is_some_and(|p| p.replicas.contains(&chosen.to) && !p.replicas.contains(&chosen.from))
    }
}

async fn attempt(client: &Client, chosen: Move) -> Result<(), String> {
    match tokio::time::timeout(
        ATTEMPT,
        client.move_replica(TOPIC, chosen.partition, chosen.from, chosen.to),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {ATTEMPT:?}")),
    }
}

/// A client of the first node that describes the topic, and what it said.
pub(super) async fn any_node(addrs: &[String]) -> anyhow::Result<(Client, weir_client::TopicInfo)> {
    let mut last = anyhow::anyhow!("no nodes");
    for addr in addrs {
        let answer = tokio::time::timeout(Duration::from_secs(2), async {
            let client = Client::connect(addr.clone()).await?;
            let topic = client.describe_topic(TOPIC).await?;
            anyhow::Ok((client, topic))
        })
        .await;
        match answer {
            Ok(Ok(found)) => return Ok(found),
            Ok(Err(e)) => last = e.context(addr.clone()),
            Err(_) => last = anyhow::anyhow!("{addr}: no answer"),
        }
    }
    Err(last)
}
