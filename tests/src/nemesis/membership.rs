//! Nodes joining and leaving the cluster while faults run: changes of the controller's voters
//! and of where replicas may be placed.
//!
//! One node at a time joins and leaves again, so the cluster has its first nodes plus at most
//! one: a node set up with the next unused id starts with `--join` and is added through
//! `AddNode`; a replica moves onto it at once, and later replica moves (`super::moves`) may
//! place more. At the next step it drains:
//! nothing moves onto it any more, each of its replicas moves away (one move per step, in the
//! background like every move), and once it holds none it is removed through `RemoveNode` and
//! stopped. The next join takes a new id. The first nodes never leave: the workload's clients
//! know only them.
//!
//! `AddNode` and `RemoveNode` are sent, again while unanswered or retriable, while the faults
//! of their round are active, for a few seconds; a change still in doubt is completed once
//! those faults are healed, before the next round (`MembershipChanges::complete`), and must
//! then take effect. So must an added node's start: it registers with the controller leader
//! before it serves, and a fault may cut it off from that leader until it heals. So that no node restarts while the controller's voters are in doubt (a
//! node whose `--peers` differ from them refuses to start), a membership step is never
//! combined with a fault that stops processes (see
//! [`Fault::combines_with`](super::Fault::combines_with)).

use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_client::{Client, ClientError, ClusterInfo};

use super::history::History;
use super::moves::{Moves, any_node};
use crate::{Launch, NodeId, ProcessCluster};

/// How long `AddNode` or `RemoveNode` is tried while the round's faults are active.
const WHILE_FAULTED: Duration = Duration::from_secs(5);

/// How long a change in doubt may take to take effect once every fault is healed, retries
/// included, before the run fails.
const CHANGE_DEADLINE: Duration = Duration::from_secs(90);

/// How long one attempt may go unanswered.
const ATTEMPT: Duration = Duration::from_secs(20);

/// The membership changes of a run.
pub(super) struct MembershipChanges {
    /// The first nodes' addresses, which the changes are sent to.
    addrs: Vec<String>,
    /// The topic's partition count.
    partitions: u32,
    history: Arc<History>,
    /// A node set up by [`MembershipChanges::prepare`] to join at the next step.
    prepared: Option<NodeId>,
    /// The node the last join added, while it is a member.
    joined: Option<NodeId>,
    /// Whether `joined` drains: its replicas move away, none move onto it.
    draining: bool,
    /// A change sent but not known to have taken effect.
    pending: Pending,
    /// What the changes did.
    pub(super) counts: MembershipCounts,
}

/// What a run's membership changes did.
#[derive(Debug, Clone, Copy, Default)]
pub struct MembershipCounts {
    /// Nodes that joined.
    pub joined: u64,
    /// Replica moves started to drain a node.
    pub drain_moves: u64,
    /// Nodes that left.
    pub removed: u64,
}

/// A membership change in doubt.
enum Pending {
    None,
    /// Node `id`, launched, is being added; `pick` chooses the replica moved onto it.
    Join {
        id: NodeId,
        launch: Launch,
        pick: u64,
    },
    /// Node `id` was added and has not reported that it serves yet: it registers itself with
    /// the controller leader first, which a fault may keep it from.
    Start {
        id: NodeId,
        launch: Launch,
        pick: u64,
    },
    /// The drained node is being removed.
    Remove(NodeId),
}

/// How a change ended.
enum Change {
    /// It took effect (perhaps before an answer was lost).
    Done,
    /// The cluster refused it, saying why.
    Refused(ClientError),
}

impl MembershipChanges {
    pub(super) fn new(addrs: Vec<String>, partitions: u32, history: Arc<History>) -> Self {
        Self {
            addrs,
            partitions,
            history,
            prepared: None,
            joined: None,
            draining: false,
            pending: Pending::None,
            counts: MembershipCounts::default(),
        }
    }

    /// Sets up the node the next step adds, if it adds one, before the round's faults are
    /// injected: they then cut its links too.
    pub(super) async fn prepare(&mut self, cluster: &mut ProcessCluster) -> anyhow::Result<()> {
        if self.joined.is_none() && self.prepared.is_none() {
            self.prepared = Some(cluster.add_joiner().await?);
        }
        Ok(())
    }

    /// Takes the next step: adds the prepared node and moves a replica onto it; or starts
    /// draining the joined one; or moves one of the draining node's replicas away (`pick`
    /// chooses which and where); or removes the drained node.
    pub(super) async fn step(
        &mut self,
        cluster: &mut ProcessCluster,
        moves: &mut Moves,
        pick: u64,
    ) -> anyhow::Result<()> {
        if let Some(id) = self.prepared.take() {
            self.history.event(format!("node {id} joins"));
            let launch = cluster.launch(id)?;
            self.pending = Pending::Join { id, launch, pick };
            return self.advance(cluster, moves, WHILE_FAULTED).await;
        }
        let Some(id) = self.joined else {
            return Ok(());
        };
        if !self.draining {
            self.draining = true;
            moves.set_targets(
                cluster
                    .node_ids()
                    .into_iter()
                    .filter(|&n| n != id)
                    .collect(),
            );
            self.history.event(format!("node {id} drains"));
        }
        let (_, topic) = match any_node(&self.addrs).await {
            Ok(found) => found,
            Err(e) => {
                // Under the round's fault: the next step looks again.
                self.history.event(format!(
                    "node {id} drains: no node described the topic: {e:#}"
                ));
                return Ok(());
            }
        };
        let held: Vec<u32> = topic
            .partitions
            .iter()
            .filter(|p| p.replicas.contains(&id))
            .map(|p| p.partition)
            .collect();
        if moves.is_running() {
            // Perhaps moving a replica onto it, chosen before it drained.
            return Ok(());
        }
        if let Some(&partition) = held.get(pick as usize % held.len().max(1)) {
            if moves.start(partition, pick, Some(id)) {
                self.counts.drain_moves += 1;
            }
            return Ok(());
        }
        self.pending = Pending::Remove(id);
        self.advance(cluster, moves, WHILE_FAULTED).await
    }

    /// Completes the change in doubt, if any, now that every fault is healed: it must take
    /// effect within [`CHANGE_DEADLINE`].
    pub(super) async fn complete(
        &mut self,
        cluster: &mut ProcessCluster,
        moves: &mut Moves,
    ) -> anyhow::Result<()> {
        self.advance(cluster, moves, CHANGE_DEADLINE).await?;
        match &self.pending {
            Pending::None => Ok(()),
            Pending::Join { id, .. } => anyhow::bail!(
                "adding node {id} did not take effect within {CHANGE_DEADLINE:?} of every fault healed"
            ),
            Pending::Start { id, .. } => anyhow::bail!(
                "node {id} was added but did not serve within {CHANGE_DEADLINE:?} of every fault healed"
            ),
            Pending::Remove(id) => anyhow::bail!(
                "removing node {id} did not take effect within {CHANGE_DEADLINE:?} of every fault healed"
            ),
        }
    }

    /// Sends the pending change, again while unanswered or retriable, for at most `within`;
    /// it stays pending if it has not taken effect by then.
    async fn advance(
        &mut self,
        cluster: &mut ProcessCluster,
        moves: &mut Moves,
        within: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::None => Ok(()),
            Pending::Join { id, launch, pick } => {
                let address = cluster.addr(id).to_string();
                let added = change(&self.addrs, "NODE_ALREADY_EXISTS", deadline, |client| {
                    let address = address.clone();
                    async move { client.add_node(id, address).await }
                })
                .await;
                match added {
                    None => {
                        self.pending = Pending::Join { id, launch, pick };
                        Ok(())
                    }
                    Some(Change::Refused(e)) => anyhow::bail!("adding node {id} was refused: {e}"),
                    Some(Change::Done) => {
                        self.await_start(cluster, moves, (id, launch, pick), deadline)
                            .await
                    }
                }
            }
            Pending::Start { id, launch, pick } => {
                self.await_start(cluster, moves, (id, launch, pick), deadline)
                    .await
            }
            Pending::Remove(id) => {
                let removed = change(&self.addrs, "UNKNOWN_NODE", deadline, |client| async move {
                    client.remove_node(id).await
                })
                .await;
                match removed {
                    None => self.pending = Pending::Remove(id),
                    Some(Change::Done) => {
                        cluster.retire(id)?;
                        self.joined = None;
                        self.draining = false;
                        self.counts.removed += 1;
                        self.history.event(format!("node {id} left"));
                    }
                    Some(Change::Refused(e)) if e.reason() == Some("NODE_HAS_REPLICAS") => {
                        self.history
                            .event(format!("node {id} not removed yet: {e}"));
                    }
                    Some(Change::Refused(e)) => {
                        anyhow::bail!("removing node {id} was refused: {e}")
                    }
                }
                Ok(())
            }
        }
    }

    /// Waits until `deadline` for the added node to serve; it joined then, and a replica moves
    /// onto it. Otherwise its start stays pending.
    async fn await_start(
        &mut self,
        cluster: &mut ProcessCluster,
        moves: &mut Moves,
        (id, launch, pick): (NodeId, Launch, u64),
        deadline: Instant,
    ) -> anyhow::Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        match cluster.await_started_within(launch, left).await? {
            Some(launch) => self.pending = Pending::Start { id, launch, pick },
            None => {
                cluster.admit(id);
                moves.set_targets(cluster.node_ids());
                self.joined = Some(id);
                self.counts.joined += 1;
                self.history.event(format!("node {id} joined"));
                moves.start(pick as u32 % self.partitions, pick, None);
            }
        }
        Ok(())
    }
}

/// Sends a membership change through the first of the first nodes that answers, again while
/// the answer is a retriable error or none, until it takes effect or is refused; `None` if
/// neither happened by `deadline`. `already` is the reason a repeat of a change that took
/// effect is refused with.
async fn change<F, Fut>(
    addrs: &[String],
    already: &str,
    deadline: Instant,
    send: F,
) -> Option<Change>
where
    F: Fn(Client) -> Fut,
    Fut: Future<Output = Result<ClusterInfo, ClientError>>,
{
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        if let Ok((client, _)) = any_node(addrs).await {
            match tokio::time::timeout(left.min(ATTEMPT), send(client)).await {
                Ok(Ok(_)) => return Some(Change::Done),
                Ok(Err(e)) if e.reason() == Some(already) => return Some(Change::Done),
                Ok(Err(e)) if !e.is_retriable() => return Some(Change::Refused(e)),
                Ok(Err(_)) | Err(_) => {}
            }
        }
        // A pace for the retries, not synchronisation.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
