//! Committed offsets: the part of a consumer group that is replicated through the controller.
//!
//! Deterministic like the rest of the metadata: the coordinator validates a commit (membership,
//! ownership, the high watermark) before proposing it, and apply only records it. Membership
//! is not here: it lives in the coordinator's memory ([`super::coordinator`]) and is rebuilt by
//! members joining again after the coordinator moves.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weir_types::{GroupName, TopicName};

use crate::metadata::MAX_COMMIT_METADATA;

/// One committed position: the offset of the next record the group will consume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    /// The offset.
    pub offset: u64,
    /// Free text the committer stored with it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metadata: String,
    /// The proposer's clock at commit.
    pub committed_at_ms: i64,
}

/// A group's committed offsets, by topic then partition.
pub type GroupCommitted = BTreeMap<TopicName, BTreeMap<u32, CommittedOffset>>;

/// Every group's committed offsets. Each group sits behind its own `Arc`, so publishing the
/// state after a commit copies one group's map, not all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOffsets {
    #[serde(with = "shared_groups")]
    groups: BTreeMap<GroupName, Arc<GroupCommitted>>,
}

/// The groups map with its `Arc`s, as a plain map in JSON.
mod shared_groups {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use weir_types::GroupName;

    use super::GroupCommitted;

    pub(super) fn serialize<S: Serializer>(
        groups: &BTreeMap<GroupName, Arc<GroupCommitted>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let plain: BTreeMap<&GroupName, &GroupCommitted> =
            groups.iter().map(|(name, c)| (name, c.as_ref())).collect();
        plain.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<GroupName, Arc<GroupCommitted>>, D::Error> {
        let plain = BTreeMap::<GroupName, GroupCommitted>::deserialize(d)?;
        Ok(plain
            .into_iter()
            .map(|(name, c)| (name, Arc::new(c)))
            .collect())
    }
}

/// A change to the committed offsets, proposed by the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupCommand {
    /// Records offsets, all of them or (if a topic is gone) none.
    Commit {
        /// The group.
        group: GroupName,
        /// `(topic, partition, offset)`.
        offsets: Vec<(TopicName, u32, CommittedOffset)>,
    },
    /// Forgets a group's offsets.
    Delete {
        /// The group.
        group: GroupName,
    },
    /// Forgets the offsets of groups that stayed empty past the offsets retention, each only
    /// if nothing was committed to it since the proposer looked (its newest commit is still
    /// the one given).
    Expire {
        /// `(group, its newest commit's time as the proposer saw it)`.
        groups: Vec<(GroupName, i64)>,
    },
}

impl GroupOffsets {
    /// One group's offsets, if it has any.
    pub fn group(&self, group: &GroupName) -> Option<&Arc<GroupCommitted>> {
        self.groups.get(group)
    }

    /// The committed offset of one partition.
    pub fn offset(
        &self,
        group: &GroupName,
        topic: &TopicName,
        partition: u32,
    ) -> Option<&CommittedOffset> {
        self.groups.get(group)?.get(topic)?.get(&partition)
    }

    /// When `group` last committed an offset (the newest of its offsets' commit times).
    pub fn newest_commit_ms(&self, group: &GroupName) -> Option<i64> {
        self.groups
            .get(group)?
            .values()
            .flat_map(|partitions| partitions.values())
            .map(|c| c.committed_at_ms)
            .max()
    }

    /// Groups with committed offsets, by name.
    pub fn names(&self) -> impl Iterator<Item = &GroupName> {
        self.groups.keys()
    }

    /// Applies a command. `topic_partitions` says how many partitions a topic has (`None`:
    /// the topic does not exist), so a commit racing a topic deletion stores nothing.
    pub fn apply(
        &mut self,
        command: GroupCommand,
        topic_partitions: impl Fn(&TopicName) -> Option<u32>,
    ) -> Result<(), String> {
        match command {
            GroupCommand::Commit { group, offsets } => {
                for (topic, partition, committed) in &offsets {
                    if committed.metadata.len() > MAX_COMMIT_METADATA {
                        return Err(format!(
                            "metadata of the offset for {topic}/{partition} is {} bytes long; the limit is {MAX_COMMIT_METADATA}",
                            committed.metadata.len()
                        ));
                    }
                    match topic_partitions(topic) {
                        None => return Err(format!("topic '{topic}' does not exist")),
                        Some(count) if *partition >= count => {
                            return Err(format!("topic '{topic}' has no partition {partition}"));
                        }
                        Some(_) => {}
                    }
                }
                let committed = Arc::make_mut(self.groups.entry(group).or_default());
                for (topic, partition, offset) in offsets {
                    committed
                        .entry(topic)
                        .or_default()
                        .insert(partition, offset);
                }
                Ok(())
            }
            GroupCommand::Delete { group } => match self.groups.remove(&group) {
                Some(_) => Ok(()),
                None => Err(format!("group '{group}' has no committed offsets")),
            },
            GroupCommand::Expire { groups } => {
                for (group, seen) in groups {
                    if self
                        .newest_commit_ms(&group)
                        .is_some_and(|newest| newest <= seen)
                    {
                        self.groups.remove(&group);
                    }
                }
                Ok(())
            }
        }
    }

    /// Drops every group's offsets for a deleted topic; a group left without offsets is
    /// forgotten.
    pub fn forget_topic(&mut self, topic: &TopicName) {
        self.groups.retain(|_, committed| {
            if committed.contains_key(topic) {
                Arc::make_mut(committed).remove(topic);
            }
            !committed.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name<T: std::str::FromStr>(s: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        s.parse().unwrap()
    }

    fn at(offset: u64) -> CommittedOffset {
        CommittedOffset {
            offset,
            metadata: String::new(),
            committed_at_ms: 1,
        }
    }

    fn commit(group: &str, offsets: &[(&str, u32, u64)]) -> GroupCommand {
        GroupCommand::Commit {
            group: name(group),
            offsets: offsets
                .iter()
                .map(|(t, p, o)| (name(t), *p, at(*o)))
                .collect(),
        }
    }

    fn two_partitions(topic: &TopicName) -> Option<u32> {
        (topic.as_str() != "gone").then_some(2)
    }

    #[test]
    fn commits_overwrite_per_partition_and_groups_stay_apart() {
        let mut state = GroupOffsets::default();
        state
            .apply(commit("g", &[("t", 0, 5), ("t", 1, 7)]), two_partitions)
            .unwrap();
        state
            .apply(commit("g", &[("t", 0, 9)]), two_partitions)
            .unwrap();
        state
            .apply(commit("h", &[("t", 0, 1)]), two_partitions)
            .unwrap();
        let g = name("g");
        assert_eq!(state.offset(&g, &name("t"), 0).unwrap().offset, 9);
        assert_eq!(state.offset(&g, &name("t"), 1).unwrap().offset, 7);
        assert_eq!(state.offset(&name("h"), &name("t"), 0).unwrap().offset, 1);
        assert_eq!(state.names().count(), 2);
    }

    #[test]
    fn a_commit_naming_a_missing_topic_or_partition_stores_nothing() {
        let mut state = GroupOffsets::default();
        state
            .apply(commit("g", &[("t", 0, 5)]), two_partitions)
            .unwrap();
        let before = state.clone();
        assert!(
            state
                .apply(commit("g", &[("t", 0, 6), ("gone", 0, 1)]), two_partitions)
                .is_err()
        );
        assert!(
            state
                .apply(commit("g", &[("t", 0, 6), ("t", 2, 1)]), two_partitions)
                .is_err()
        );
        assert_eq!(state, before);
    }

    #[test]
    fn deleting_a_topic_drops_its_offsets_and_empty_groups() {
        let mut state = GroupOffsets::default();
        state
            .apply(commit("g", &[("t", 0, 5), ("u", 0, 1)]), two_partitions)
            .unwrap();
        state
            .apply(commit("h", &[("t", 0, 5)]), two_partitions)
            .unwrap();
        state.forget_topic(&name("t"));
        assert!(state.offset(&name("g"), &name("t"), 0).is_none());
        assert!(state.offset(&name("g"), &name("u"), 0).is_some());
        assert!(state.group(&name("h")).is_none());
    }

    #[test]
    fn expiry_spares_a_group_that_committed_after_the_proposer_looked() {
        let mut state = GroupOffsets::default();
        state
            .apply(commit("idle", &[("t", 0, 5)]), two_partitions)
            .unwrap();
        state
            .apply(commit("busy", &[("t", 0, 5)]), two_partitions)
            .unwrap();
        let seen = |g: &str| (name(g), state.newest_commit_ms(&name(g)).unwrap());
        let expire = GroupCommand::Expire {
            groups: vec![seen("idle"), seen("busy")],
        };
        // "busy" commits again before the expiry applies.
        let mut again = commit("busy", &[("t", 1, 6)]);
        if let GroupCommand::Commit { offsets, .. } = &mut again {
            offsets[0].2.committed_at_ms = 2;
        }
        state.apply(again, two_partitions).unwrap();
        state.apply(expire, two_partitions).unwrap();
        assert!(state.group(&name("idle")).is_none());
        assert_eq!(state.newest_commit_ms(&name("busy")), Some(2));
        assert!(state.offset(&name("busy"), &name("t"), 0).is_some());
    }

    #[test]
    fn the_state_round_trips_through_json() {
        let mut state = GroupOffsets::default();
        state
            .apply(commit("g", &[("t", 1, 5)]), two_partitions)
            .unwrap();
        let json = serde_json::to_vec(&state).unwrap();
        let back: GroupOffsets = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, state);
    }
}
