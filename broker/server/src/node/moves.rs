//! Replica moves (`weir topic move`): a partition's replica from one node to another, run on the
//! partition's leader, and the settling of what a move cut short left listed.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_raft::{GroupId, NodeId};
use weir_types::PartitionId;

use super::{HostedPartition, Node, partition_info};
use crate::error::BrokerError;
use crate::metadata::{Command, PartitionInfo, TopicInfo};

/// How often a node looks, in the partitions it leads, for replicas the metadata lists and the
/// raft group no longer has.
const SETTLE_EVERY: Duration = Duration::from_secs(5);

impl Node {
    /// Starts the periodic settling of the partitions this node leads, until shutdown: a
    /// replica the metadata lists and the partition's raft group no longer has is dropped from
    /// the metadata ([`Node::settle_replicas`]). A move cut short after its membership change
    /// leaves one (its leader died before the last step, or the controller refused it); its
    /// node, no longer sent anything, would otherwise describe the partition as its own without
    /// a leader, and hold the requests routed to it, until the next move of the partition
    /// settled it.
    pub(crate) fn spawn_settler(self: Arc<Self>) {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(SETTLE_EVERY) => {}
                }
                for hosted in self.hosted_partitions() {
                    if let Err(e) = self.settle_if_strays(&hosted).await {
                        tracing::warn!(topic = %hosted.topic, partition = %hosted.partition, error = %e, "dropping replicas left by a move cut short failed; will retry");
                    }
                }
            }
        });
    }

    /// Settles `hosted` if this node leads it, no move of it runs, and its raft group, as this
    /// node sees it, lacks a replica the metadata lists. Only then does it ask a quorum
    /// whether it still leads ([`Node::settle_replicas`]), so a pass costs nothing per
    /// settled partition but a look at its metadata.
    async fn settle_if_strays(&self, hosted: &HostedPartition) -> Result<(), BrokerError> {
        if !hosted.replica.is_leader() {
            return Ok(());
        }
        let metadata = self.metadata();
        let Some(topic) = metadata.topics.get(&hosted.topic) else {
            return Ok(()); // deleted meanwhile
        };
        let info = partition_info(topic, hosted.partition)?;
        let members = hosted.replica.members();
        if info.replicas.iter().all(|r| members.contains(r)) {
            return Ok(());
        }
        // A running move lists its new replica before the raft group takes it, and settles
        // the partition itself first.
        let Some(_settling) = MoveGuard::take(&self.moving, hosted.group()) else {
            return Ok(());
        };
        // Bounded: a leader cut off from its quorum must not hold the partition's move guard,
        // or the passes over the partitions after it, for as long as the cut lasts.
        let settled = self.settle_replicas(topic, hosted.partition, info.clone(), hosted);
        match tokio::time::timeout(SETTLE_EVERY, settled).await {
            Ok(settled) => settled.map(drop),
            Err(_) => Err(BrokerError::Unavailable(format!(
                "no quorum confirmed the leadership of {}/{} within {SETTLE_EVERY:?}",
                topic.name, hosted.partition
            ))),
        }
    }

    /// Moves the replica of `topic`/`partition` on `from` to `to`, on the partition's leader:
    /// the metadata adds `to` (whose node starts an empty replica), the raft group takes `to`
    /// as a learner until it has caught up and then swaps it for `from`, and finally the
    /// metadata drops `from` (whose node stops its replica and deletes the data). A move
    /// interrupted halfway leaves an extra replica in the metadata, never a missing one: the
    /// partition's leader drops every replica its raft group does not have, within
    /// [`SETTLE_EVERY`] ([`Node::spawn_settler`]), and so does the next move of the partition
    /// before it starts. One move (or settling) per partition runs at a time.
    pub(crate) async fn move_replica(
        &self,
        topic: &TopicInfo,
        partition: PartitionId,
        from: NodeId,
        to: NodeId,
    ) -> Result<(), BrokerError> {
        let info = partition_info(topic, partition)?;
        let what = format!("{}/{}", topic.name, partition);
        if from == to {
            return Err(BrokerError::InvalidArgument(format!(
                "moving {what} from node {from} to itself"
            )));
        }
        let address = self
            .metadata()
            .nodes
            .get(&to)
            .map(|n| n.address.clone())
            .ok_or(BrokerError::UnknownNode(to))?;
        let hosted = self.leader_of(topic, partition).await?;
        let _running = MoveGuard::take(&self.moving, hosted.group()).ok_or_else(|| {
            BrokerError::Unavailable(format!(
                "a move of {what} is running; try again when it ends"
            ))
        })?;
        let info = self
            .settle_replicas(topic, partition, info.clone(), &hosted)
            .await?;
        if !info.replicas.contains(&from) {
            return Err(BrokerError::InvalidArgument(format!(
                "node {from} holds no replica of {what} (replicas: {:?})",
                info.replicas
            )));
        }
        // A node listed but not voting (a learner a move cut short left) may be moved to again:
        // that move completes. One that votes already holds a replica: moving there would only
        // drop `from`, shrinking the partition's replicas.
        let voters = hosted.replica.replica_status().unwrap_or_default();
        if voters.iter().any(|r| r.node_id == to) {
            return Err(BrokerError::InvalidArgument(format!(
                "node {to} already holds a replica of {what}"
            )));
        }
        tracing::info!(partition = %what, from, to, "moving replica");
        let command = |add: bool| {
            let (topic, partition) = (topic.name.clone(), partition.0);
            if add {
                Command::AddReplica {
                    topic,
                    partition,
                    node: to,
                }
            } else {
                Command::RemoveReplica {
                    topic,
                    partition,
                    node: from,
                }
            }
        };
        self.propose(command(true)).await?;
        if let Err(e) = hosted.replica.replace_voter((to, address), from).await {
            self.roll_back_move(&what, command(true), &hosted).await;
            return Err(self.replica_error(e));
        }
        self.propose(command(false)).await?;
        let mut moved = info;
        if !moved.replicas.contains(&to) {
            moved.replicas.push(to);
        }
        moved.replicas.retain(|&r| r != from);
        // The membership change removed the learners an earlier move cut short had added; the
        // metadata drops them too, if this node still leads (a leader that moved its own
        // replica away does not, and no longer knows the group: the next leader settles them).
        let mut settled = if from == self.config.node_id {
            moved.replicas
        } else {
            match self
                .settle_replicas(topic, partition, moved.clone(), &hosted)
                .await
            {
                Ok(settled) => settled.replicas,
                Err(e) => {
                    tracing::warn!(partition = %what, error = %e, "the move is done, but dropping the replicas left by moves cut short failed; the partition's leader drops them later");
                    moved.replicas
                }
            }
        };
        settled.sort_unstable();
        // Answer with what this node's metadata says, so wait until the changes reached it
        // (this node may follow the controller).
        let (name, index) = (topic.name.clone(), partition.0 as usize);
        self.wait_for_metadata(|m| {
            m.topics
                .get(&name)
                .and_then(|t| t.partitions.get(index))
                .is_none_or(|p| {
                    let mut now = p.replicas.clone();
                    now.sort_unstable();
                    now == settled
                })
        })
        .await;
        Ok(())
    }

    /// Undoes the first step of a move whose membership change failed (`added`: the
    /// `AddReplica` it proposed), if the new replica never became a voter: the raft group drops
    /// it as a learner, then the metadata drops it, and its node deletes what it received.
    /// Without this, every move cut short left one more replica listed, until moves found no
    /// node without one (the nemesis saw six listed for a partition of three). Best effort: a
    /// leader that lost its leadership meanwhile leaves it to the next leader's settling.
    async fn roll_back_move(&self, what: &str, added: Command, hosted: &HostedPartition) {
        let Command::AddReplica {
            topic,
            partition,
            node,
        } = added
        else {
            return;
        };
        match hosted.replica.drop_learner(node).await {
            Ok(true) => {
                let dropped = self
                    .propose(Command::RemoveReplica {
                        topic,
                        partition,
                        node,
                    })
                    .await;
                match dropped {
                    Ok(_) => {
                        tracing::info!(partition = %what, node, "move failed; its new replica was dropped")
                    }
                    Err(e) => {
                        tracing::warn!(partition = %what, node, error = %e, "move failed, and dropping its new replica from the metadata failed too; the partition's leader drops it later")
                    }
                }
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(partition = %what, node, error = %e, "move failed, and taking its new replica out of the raft group failed too; the next move does")
            }
        }
    }

    /// Drops from the metadata every replica of `topic`/`partition` that its raft group (led
    /// here) does not have, as a voter or a learner: what a move cut short left behind. Returns
    /// the partition as it is then.
    ///
    /// A learner stays listed: its node keeps the entries it has, which the leader counts as
    /// replicated to it; dropping it would delete them, and a move back to that node would then
    /// show the leader a follower whose log went backwards (openraft stops the group on that).
    async fn settle_replicas(
        &self,
        topic: &TopicInfo,
        partition: PartitionId,
        info: PartitionInfo,
        hosted: &HostedPartition,
    ) -> Result<PartitionInfo, BrokerError> {
        // Only a leader's own view counts, confirmed current: a leader deposed without knowing
        // it would drop the replicas its successor added (found by the nemesis: a group whose
        // joint configuration counted on two nodes the metadata had dropped).
        let members = hosted
            .replica
            .confirmed_members()
            .await
            .map_err(|e| self.replica_error(e))?;
        let strays: Vec<NodeId> = info
            .replicas
            .iter()
            .copied()
            .filter(|r| !members.contains(r))
            .collect();
        if strays.is_empty() {
            return Ok(info);
        }
        for &node in &strays {
            tracing::warn!(
                partition = %format!("{}/{}", topic.name, partition),
                node,
                "dropping a replica the partition's raft group does not have (left by a move cut short)"
            );
            self.propose(Command::RemoveReplica {
                topic: topic.name.clone(),
                partition: partition.0,
                node,
            })
            .await?;
        }
        let mut settled = info;
        settled.replicas.retain(|r| !strays.contains(r));
        Ok(settled)
    }
}

/// Marks a partition's move as running for as long as it lives.
struct MoveGuard<'a> {
    moving: &'a Mutex<HashSet<GroupId>>,
    group: GroupId,
}

impl<'a> MoveGuard<'a> {
    /// Marks `group`'s move as running; `None` if one already is. No guard is built for a
    /// refusal: dropping it would take the lock held here, and unmark the running move.
    fn take(moving: &'a Mutex<HashSet<GroupId>>, group: GroupId) -> Option<Self> {
        let newly_marked = moving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group);
        if newly_marked {
            Some(MoveGuard { moving, group })
        } else {
            None
        }
    }
}

impl Drop for MoveGuard<'_> {
    fn drop(&mut self) {
        self.moving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    /// A second move of a partition, or a settling pass, while one runs is refused. Before, the
    /// refusal built a guard anyway and dropped it with the set locked: the thread waited for
    /// itself for good (a node's whole runtime stopped under the nemesis once the settler ran
    /// during moves), and the dropped guard would have cleared the running move's mark.
    #[test]
    fn a_partition_whose_move_runs_is_refused_a_second_guard_and_keeps_the_first() {
        let moving: &'static Mutex<HashSet<GroupId>> = Box::leak(Box::default());
        let first = MoveGuard::take(moving, 7).expect("no move runs yet");
        let (told, answer) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let second = MoveGuard::take(moving, 7).is_some();
            let _ = told.send(second);
        });
        let Ok(second) = answer.recv_timeout(Duration::from_secs(10)) else {
            // Dropping the first guard would wait for the stuck thread's lock too.
            std::mem::forget(first);
            panic!("the second take never returned: it waits for the lock it holds");
        };
        assert!(!second, "a second guard for a running move");
        assert!(
            moving.lock().unwrap().contains(&7),
            "the running move is still marked"
        );
        drop(first);
        assert!(moving.lock().unwrap().is_empty());
        assert!(MoveGuard::take(moving, 7).is_some(), "free again");
    }
}
