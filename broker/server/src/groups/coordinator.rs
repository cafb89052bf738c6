//! The group coordinator: which members a consumer group has and which partitions each owns.
//!
//! Runs on the controller leader and keeps membership in memory only, as Kafka's coordinator
//! does: a member that stops heartbeating is removed after its session timeout, and when the
//! controller moves to another node the new leader starts with no members, so every member
//! gets `UNKNOWN_MEMBER` on its next heartbeat and joins again. Committed offsets are the
//! durable part and go through the controller log ([`super::offsets`]).
//!
//! Assignment is incremental and safe: the coordinator computes a target assignment with the
//! group's [`Assignor`] whenever members, subscriptions or partition counts change, and
//! hands a member a partition only once no other live member holds it. A member that loses a
//! partition keeps holding it until a heartbeat reports it released (after committing its
//! position), so a partition is never consumed by two live members at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use weir_types::{GroupName, TopicName};

use super::assignor::{Assignor, TopicPartition};
use crate::error::BrokerError;

/// The longest heartbeat interval given to members, whatever their session timeout.
const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);

/// The heartbeat interval of a member in the middle of a hand-over (it has partitions to
/// release or is waiting for some): a partition moves in a few of these rather than in a few
/// full intervals.
const HAND_OVER_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

/// The fewest entries the group map prunes its empty groups at.
const MIN_PRUNE_AT: usize = 64;

/// Live consumer groups, for one controller term.
#[derive(Default)]
pub(crate) struct Coordinator {
    state: Mutex<Terms>,
    /// Members of every live group, this term's or an earlier one's still in use.
    members: Arc<AtomicUsize>,
}

#[derive(Default)]
struct Terms {
    /// The controller term the groups below belong to.
    term: u64,
    groups: HashMap<GroupName, Arc<tokio::sync::Mutex<LiveGroup>>>,
    /// Once the map holds this many groups, those without members are dropped: requests that
    /// name groups without joining them (commits, resets) leave entries behind.
    prune_at: usize,
}

impl Coordinator {
    fn lock(&self, term: u64) -> std::sync::MutexGuard<'_, Terms> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.term != term {
            // Leadership was lost and regained (or is new): members of an earlier term may
            // have moved on with another coordinator, so nothing of it can be trusted.
            if !state.groups.is_empty() {
                tracing::info!(
                    old_term = state.term,
                    term,
                    groups = state.groups.len(),
                    "controller term changed; consumer group members must join again"
                );
            }
            state.groups.clear();
            state.term = term;
        }
        state
    }

    /// The live group `name`, created empty if it has no members yet.
    pub(crate) fn group(&self, term: u64, name: &GroupName) -> Arc<tokio::sync::Mutex<LiveGroup>> {
        let mut state = self.lock(term);
        if let Some(group) = state.groups.get(name) {
            return group.clone();
        }
        if state.groups.len() >= state.prune_at.max(MIN_PRUNE_AT) {
            retain_joined(&mut state.groups);
            state.prune_at = 2 * state.groups.len();
        }
        let group = Arc::new(tokio::sync::Mutex::new(LiveGroup::counted_in(
            self.members.clone(),
        )));
        state.groups.insert(name.clone(), group.clone());
        group
    }

    /// Members of every live group: what the coordinator holds in memory.
    pub(crate) fn member_count(&self) -> usize {
        self.members.load(Ordering::Relaxed)
    }

    /// The live group `name`, if it has been joined in this term.
    pub(crate) fn existing(
        &self,
        term: u64,
        name: &GroupName,
    ) -> Option<Arc<tokio::sync::Mutex<LiveGroup>>> {
        self.lock(term).groups.get(name).cloned()
    }

    /// Every group joined in this term; groups whose members all left are forgotten.
    pub(crate) fn groups(&self, term: u64) -> Vec<(GroupName, Arc<tokio::sync::Mutex<LiveGroup>>)> {
        let mut state = self.lock(term);
        retain_joined(&mut state.groups);
        state
            .groups
            .iter()
            .map(|(name, group)| (name.clone(), group.clone()))
            .collect()
    }
}

/// Drops the groups without members, but those in use by a request (the next pruning looks
/// again).
fn retain_joined(groups: &mut HashMap<GroupName, Arc<tokio::sync::Mutex<LiveGroup>>>) {
    groups.retain(|_, group| group.try_lock().map_or(true, |g| !g.members.is_empty()));
}

/// A member of a live group.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// What the client calls itself.
    pub(crate) client_id: String,
    /// Where its requests come from.
    pub(crate) client_address: String,
    /// The topics it consumes.
    pub(crate) topics: BTreeSet<TopicName>,
    /// It is removed when no heartbeat arrives for this long.
    pub(crate) session_timeout: Duration,
    /// Its last join or heartbeat.
    pub(crate) last_seen: Instant,
    /// Partitions it may be consuming: granted to it and not reported released.
    pub(crate) holding: BTreeSet<TopicPartition>,
}

impl Member {
    /// How often the member should heartbeat: a third of its session, at most 3 s.
    pub(crate) fn heartbeat_interval(&self) -> Duration {
        (self.session_timeout / 3).min(MAX_HEARTBEAT_INTERVAL)
    }
}

/// A consumer group's live state.
#[derive(Debug, Default)]
pub(crate) struct LiveGroup {
    assignor: Assignor,
    generation: u64,
    members: BTreeMap<String, Member>,
    /// The coordinator's count of members, kept by joins, leaves, expiries and drops.
    counted: Arc<AtomicUsize>,
    /// Where the assignor wants each partition, by member id.
    target: BTreeMap<String, BTreeSet<TopicPartition>>,
    /// The partition counts `target` was computed for.
    computed_for: BTreeMap<TopicName, u32>,
}

/// What a group is doing, as `ListGroups` and `DescribeGroup` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupState {
    /// No members (it may have committed offsets).
    Empty,
    /// Every member holds exactly its target partitions.
    Stable,
    /// Partitions are moving between members.
    Rebalancing,
}

impl GroupState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "empty",
            GroupState::Stable => "stable",
            GroupState::Rebalancing => "rebalancing",
        }
    }
}

impl Drop for LiveGroup {
    fn drop(&mut self) {
        self.counted
            .fetch_sub(self.members.len(), Ordering::Relaxed);
    }
}

impl LiveGroup {
    /// An empty group whose members count in `counted`.
    fn counted_in(counted: Arc<AtomicUsize>) -> Self {
        let mut group = Self::default();
        group.counted = counted;
        group
    }

    /// The group's assignor (meaningful while it has members).
    pub(crate) fn assignor(&self) -> Assignor {
        self.assignor
    }

    /// Bumped on every change of members, subscriptions or partition counts.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The live members by id.
    pub(crate) fn members(&self) -> &BTreeMap<String, Member> {
        &self.members
    }

    /// Whether it is empty, stable or rebalancing.
    pub(crate) fn state(&self) -> GroupState {
        if self.members.is_empty() {
            GroupState::Empty
        } else if self
            .members
            .iter()
            .all(|(id, m)| self.target.get(id).is_some_and(|t| *t == m.holding))
        {
            GroupState::Stable
        } else {
            GroupState::Rebalancing
        }
    }

    /// Removes members whose session expired by `now`; returns their ids.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<String> {
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| now.saturating_duration_since(m.last_seen) > m.session_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.members.remove(id);
        }
        self.counted.fetch_sub(expired.len(), Ordering::Relaxed);
        if !expired.is_empty() {
            self.membership_changed();
        }
        expired
    }

    /// Adds a member under `member_id`. The first member sets the group's assignor; later
    /// ones must name the same.
    pub(crate) fn join(
        &mut self,
        group: &GroupName,
        member_id: String,
        member: Member,
        assignor: Assignor,
    ) -> Result<(), BrokerError> {
        if !self.members.is_empty() && assignor != self.assignor {
            return Err(BrokerError::InconsistentGroupProtocol(format!(
                "group '{group}' uses the '{}' assignor; this member asked for '{assignor}'",
                self.assignor
            )));
        }
        self.assignor = assignor;
        if self.members.insert(member_id, member).is_none() {
            self.counted.fetch_add(1, Ordering::Relaxed);
        }
        self.membership_changed();
        Ok(())
    }

    /// Removes a member at its request.
    pub(crate) fn leave(&mut self, group: &GroupName, member_id: &str) -> Result<(), BrokerError> {
        if self.members.remove(member_id).is_none() {
            return Err(unknown_member(group, member_id));
        }
        self.counted.fetch_sub(1, Ordering::Relaxed);
        self.membership_changed();
        Ok(())
    }

    /// A member's heartbeat: it is alive and owns `owned`. Returns the partitions it may own
    /// from now on. `partitions` gives a topic's partition count (`None`: it no longer exists).
    pub(crate) fn heartbeat(
        &mut self,
        group: &GroupName,
        member_id: &str,
        owned: &BTreeSet<TopicPartition>,
        now: Instant,
        partitions: impl Fn(&TopicName) -> Option<u32>,
    ) -> Result<BTreeSet<TopicPartition>, BrokerError> {
        let member = self
            .members
            .get_mut(member_id)
            .ok_or_else(|| unknown_member(group, member_id))?;
        member.last_seen = now;
        // Released partitions are free for others; a claim to anything never granted is
        // ignored.
        member.holding.retain(|tp| owned.contains(tp));
        self.refresh_target(&partitions);
        let wanted = self.target.get(member_id).cloned().unwrap_or_default();
        let held_elsewhere: BTreeSet<&TopicPartition> = self
            .members
            .iter()
            .filter(|(id, _)| id.as_str() != member_id)
            .flat_map(|(_, m)| &m.holding)
            .collect();
        let grant: Vec<TopicPartition> = wanted
            .iter()
            .filter(|tp| !held_elsewhere.contains(tp))
            .cloned()
            .collect();
        let member = self
            .members
            .get_mut(member_id)
            .ok_or_else(|| unknown_member(group, member_id))?;
        member.holding.extend(grant);
        Ok(member.holding.intersection(&wanted).cloned().collect())
    }

    /// Checks that `member_id` (empty: a consumer outside the group's membership) may commit
    /// offsets for `partitions`.
    pub(crate) fn check_commit<'a>(
        &self,
        group: &GroupName,
        member_id: &str,
        partitions: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> Result<(), BrokerError> {
        if member_id.is_empty() {
            if !self.members.is_empty() {
                return Err(BrokerError::GroupNotEmpty(format!(
                    "group '{group}' has {} live member(s); only they may commit its offsets",
                    self.members.len()
                )));
            }
            return Ok(());
        }
        let member = self
            .members
            .get(member_id)
            .ok_or_else(|| unknown_member(group, member_id))?;
        let foreign: Vec<String> = partitions
            .into_iter()
            .filter(|tp| !member.holding.contains(tp))
            .map(|(topic, partition)| format!("{topic}/{partition}"))
            .collect();
        if !foreign.is_empty() {
            return Err(BrokerError::NotAssigned(format!(
                "member '{member_id}' of group '{group}' does not own {}",
                foreign.join(", ")
            )));
        }
        Ok(())
    }

    /// How soon `member_id` should heartbeat again: its normal interval, or a short one while
    /// its holdings differ from its target (it must report partitions released, or is waiting
    /// for ones others still hold), so hand-overs do not wait for whole intervals.
    pub(crate) fn heartbeat_interval_of(&self, member_id: &str) -> Option<Duration> {
        let member = self.members.get(member_id)?;
        let settled = self
            .target
            .get(member_id)
            .map_or(member.holding.is_empty(), |target| {
                *target == member.holding
            });
        let normal = member.heartbeat_interval();
        Some(if settled {
            normal
        } else {
            normal.min(HAND_OVER_HEARTBEAT_INTERVAL)
        })
    }

    /// The owner of each held partition.
    pub(crate) fn owners(&self) -> BTreeMap<&TopicPartition, &str> {
        self.members
            .iter()
            .flat_map(|(id, m)| m.holding.iter().map(move |tp| (tp, id.as_str())))
            .collect()
    }

    fn membership_changed(&mut self) {
        self.generation += 1;
        // Recomputed on the next heartbeat, with the partition counts of that moment.
        self.computed_for.clear();
        self.target.clear();
    }

    /// Recomputes the target assignment if members or partition counts changed since.
    fn refresh_target(&mut self, partitions: &impl Fn(&TopicName) -> Option<u32>) {
        let counts: BTreeMap<TopicName, u32> = self
            .members
            .values()
            .flat_map(|m| &m.topics)
            .filter_map(|topic| partitions(topic).map(|count| (topic.clone(), count)))
            .collect();
        if !self.target.is_empty() && counts == self.computed_for {
            return;
        }
        if !self.target.is_empty() {
            // Partitions were added or a topic deleted.
            self.generation += 1;
        }
        let subscriptions: BTreeMap<String, BTreeSet<TopicName>> = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.topics.clone()))
            .collect();
        self.target = self.assignor.assign(&subscriptions, &counts);
        self.computed_for = counts;
    }
}

pub(crate) fn unknown_member(group: &GroupName, member_id: &str) -> BrokerError {
    BrokerError::UnknownMember(format!(
        "member '{member_id}' is not a member of group '{group}' (its session expired, it left, or the coordinator moved); join again"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> TopicName {
        name.parse().unwrap()
    }

    fn member(now: Instant, topics: &[&str]) -> Member {
        Member {
            client_id: "test".into(),
            client_address: "127.0.0.1:1".into(),
            topics: topics.iter().map(|t| topic(t)).collect(),
            session_timeout: Duration::from_secs(10),
            last_seen: now,
            holding: BTreeSet::new(),
        }
    }

    fn six(t: &TopicName) -> Option<u32> {
        (t.as_str() == "t").then_some(6)
    }

    /// Heartbeats `id` reporting what it was last given; returns the new assignment.
    fn beat(
        g: &mut LiveGroup,
        id: &str,
        owned: &BTreeSet<TopicPartition>,
        now: Instant,
    ) -> BTreeSet<TopicPartition> {
        g.heartbeat(&"g".parse().unwrap(), id, owned, now, six)
            .unwrap()
    }

    #[test]
    fn a_partition_moves_only_after_its_owner_released_it() {
        let name: GroupName = "g".parse().unwrap();
        let now = Instant::now();
        let mut g = LiveGroup::default();
        g.join(&name, "a".into(), member(now, &["t"]), Assignor::Range)
            .unwrap();
        let a = beat(&mut g, "a", &BTreeSet::new(), now);
        assert_eq!(a.len(), 6);
        assert_eq!(g.state(), GroupState::Stable);

        g.join(&name, "b".into(), member(now, &["t"]), Assignor::Range)
            .unwrap();
        // b's share is still held by a: b gets nothing yet.
        assert!(beat(&mut g, "b", &BTreeSet::new(), now).is_empty());
        assert_eq!(g.state(), GroupState::Rebalancing);
        // Both are mid hand-over, so both are asked to come back soon.
        let normal = Duration::from_secs(3);
        assert_eq!(
            g.heartbeat_interval_of("b"),
            Some(HAND_OVER_HEARTBEAT_INTERVAL)
        );
        assert_eq!(
            g.heartbeat_interval_of("a"),
            Some(HAND_OVER_HEARTBEAT_INTERVAL)
        );
        // a is told to keep only its share...
        let a2 = beat(&mut g, "a", &a, now);
        assert_eq!(a2.len(), 3);
        // ...and still holds the rest until it reports them released.
        assert!(g.check_commit(&name, "a", &a).is_ok());
        let a3 = beat(&mut g, "a", &a2, now);
        assert_eq!(a3, a2);
        let b = beat(&mut g, "b", &BTreeSet::new(), now);
        assert_eq!(b.len(), 3);
        assert!(a3.is_disjoint(&b));
        assert_eq!(g.state(), GroupState::Stable);
        assert_eq!(g.heartbeat_interval_of("a"), Some(normal));
        assert_eq!(g.heartbeat_interval_of("b"), Some(normal));
        // Commits are fenced by ownership.
        assert!(matches!(
            g.check_commit(&name, "a", &b),
            Err(BrokerError::NotAssigned(_))
        ));
    }

    #[test]
    fn an_expired_member_frees_its_partitions_and_a_late_heartbeat_is_refused() {
        let name: GroupName = "g".parse().unwrap();
        let start = Instant::now();
        let mut g = LiveGroup::default();
        for id in ["a", "b", "c"] {
            g.join(&name, id.into(), member(start, &["t"]), Assignor::Range)
                .unwrap();
        }
        for id in ["a", "b", "c"] {
            assert_eq!(beat(&mut g, id, &BTreeSet::new(), start).len(), 2);
        }
        let later = start + Duration::from_secs(5);
        let held_a = g.members["a"].holding.clone();
        let held_b = g.members["b"].holding.clone();
        let owned_a = beat(&mut g, "a", &held_a, later);
        let owned_b = beat(&mut g, "b", &held_b, later);
        let expiry = start + Duration::from_secs(11);
        assert_eq!(g.expire(expiry), vec!["c".to_owned()]);
        // b is told to drop partition 2 on its first heartbeat, reports it released on its
        // second, and a takes it on its third.
        let (mut a, mut b) = (owned_a, owned_b);
        for _ in 0..3 {
            a = beat(&mut g, "a", &a, expiry);
            b = beat(&mut g, "b", &b, expiry);
        }
        assert_eq!((a.len(), b.len()), (3, 3));
        assert!(a.is_disjoint(&b));
        assert!(matches!(
            g.heartbeat(&name, "c", &BTreeSet::new(), expiry, six),
            Err(BrokerError::UnknownMember(_))
        ));
    }

    #[test]
    fn a_member_with_another_assignor_is_refused_and_changes_nothing() {
        let name: GroupName = "g".parse().unwrap();
        let now = Instant::now();
        let mut g = LiveGroup::default();
        g.join(&name, "a".into(), member(now, &["t"]), Assignor::Range)
            .unwrap();
        let generation = g.generation();
        let err = g
            .join(&name, "b".into(), member(now, &["t"]), Assignor::RoundRobin)
            .unwrap_err();
        assert!(matches!(err, BrokerError::InconsistentGroupProtocol(_)));
        assert_eq!(g.generation(), generation);
        assert_eq!(g.members().len(), 1);
    }

    #[test]
    fn commits_outside_membership_are_allowed_only_in_an_empty_group() {
        let name: GroupName = "g".parse().unwrap();
        let now = Instant::now();
        let mut g = LiveGroup::default();
        let tp = (topic("t"), 0);
        assert!(g.check_commit(&name, "", [&tp]).is_ok());
        g.join(&name, "a".into(), member(now, &["t"]), Assignor::Range)
            .unwrap();
        assert!(matches!(
            g.check_commit(&name, "", [&tp]),
            Err(BrokerError::GroupNotEmpty(_))
        ));
        assert!(matches!(
            g.check_commit(&name, "nobody", [&tp]),
            Err(BrokerError::UnknownMember(_))
        ));
    }

    #[test]
    fn a_new_term_forgets_every_member() {
        let coordinator = Coordinator::default();
        let name: GroupName = "g".parse().unwrap();
        let group = coordinator.group(3, &name);
        group
            .try_lock()
            .unwrap()
            .join(
                &name,
                "a".into(),
                member(Instant::now(), &["t"]),
                Assignor::Range,
            )
            .unwrap();
        assert!(coordinator.existing(3, &name).is_some());
        assert!(coordinator.existing(4, &name).is_none());
        assert!(coordinator.groups(4).is_empty());
    }

    #[test]
    fn the_member_count_follows_joins_leaves_expiries_and_dropped_terms() {
        let coordinator = Coordinator::default();
        let now = Instant::now();
        let join = |term, group: &str, id: &str| {
            let name: GroupName = group.parse().unwrap();
            coordinator
                .group(term, &name)
                .try_lock()
                .unwrap()
                .join(&name, id.into(), member(now, &["t"]), Assignor::Range)
                .unwrap();
        };
        join(1, "g", "a");
        join(1, "g", "b");
        join(1, "h", "c");
        // A member joining again under its id is not counted twice.
        join(1, "h", "c");
        assert_eq!(coordinator.member_count(), 3);
        let g: GroupName = "g".parse().unwrap();
        let group = coordinator.existing(1, &g).unwrap();
        group.try_lock().unwrap().leave(&g, "a").unwrap();
        assert_eq!(coordinator.member_count(), 2);
        // "b" and "c" have 10 s sessions.
        let expired = group
            .try_lock()
            .unwrap()
            .expire(now + Duration::from_secs(11));
        assert_eq!(expired, ["b"]);
        assert_eq!(coordinator.member_count(), 1);
        drop(group);
        // A new term drops every group, and their members with them.
        assert!(coordinator.groups(2).is_empty());
        assert_eq!(coordinator.member_count(), 0);
    }

    #[test]
    fn groups_named_without_members_do_not_pile_up() {
        let coordinator = Coordinator::default();
        for i in 0..10_000 {
            let name: GroupName = format!("g{i}").parse().unwrap();
            drop(coordinator.group(1, &name));
        }
        let held = coordinator.lock(1).groups.len();
        assert!(held <= 2 * MIN_PRUNE_AT, "{held} empty groups held");
    }
}
