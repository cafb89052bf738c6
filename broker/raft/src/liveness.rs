//! Node-level heartbeats, and partition groups that are quiet while nothing happens.
//!
//! openraft keeps a group alive with timers: every `heartbeat_ms` its leader sends each follower
//! a heartbeat, and every group on every node ticks five times per heartbeat interval to check
//! them. With hundreds of partitions that costs most of a core while nothing is written
//! (docs/benchmarks.md, 2026-12-06). A partition group here runs no raft timer at all while its
//! leader is known to be alive:
//!
//! - Each node sends each peer one heartbeat per `heartbeat_ms` ([`NodeHeartbeat`], Redpanda's
//!   coalesced heartbeats), naming the partition groups it shares with that peer which it leads,
//!   with their terms.
//! - A leader's raft timer is off: it sends no raft heartbeats. Its entries, and its commit
//!   index, still reach followers at once, as openraft replicates them without a timer. A
//!   peer that restarted (a new incarnation in its heartbeats) or is heard again after falling
//!   silent may have missed the last commit index, so each group this node leads it in sends
//!   it one raft heartbeat ([`Liveness::heard`]). Heartbeats also name the leader's commit
//!   index per group: a follower that stays behind it while it does not move (the message
//!   that carried it was lost, or reached the follower before its group ran) says so in its
//!   reply, and the leader sends that group's followers one raft heartbeat
//!   ([`Liveness::remind_behind`]).
//! - A follower's timer is off while a node it hears from says it leads the group in the
//!   follower's term or a later one. When that node misses its heartbeats for
//!   `election_min_ms`, or stops naming the group, the follower's timer starts again and raft
//!   elects a new leader as it would have without the change. After a dead node, the timer
//!   starts, and the follower stands for election at once, when the leader leases the
//!   followers granted that node have run out (`election_max_ms` after its last message; a
//!   pre-vote refused under a lease is tried again only an election timeout later, and
//!   openraft's own timer waits for the lease plus an election timeout), after a random delay
//!   of up to two heartbeat intervals, so that the followers of a dead node do not all stand
//!   at the same instant and split the vote.
//! - After a restart, a replica that is not its group's preferred leader holds its timer off for
//!   `election_max_ms` unless a leader is heard of first ([`Reporter::hold_timer`]): the
//!   preferred leader stands at once, and stays the only candidate (see `crate::formation`).
//! - A leader whose lease lapsed while it was quiet (no quorum acknowledged anything for
//!   `election_max_ms`) is refused writes by openraft; the group confirms its leadership with
//!   one heartbeat round first ([`crate::lease`]).
//!
//! The controller group keeps openraft's own timers: it is one group, and its elections decide
//! who runs the cluster.
//!
//! [`NodeHeartbeat`]: weir_proto::internal::NodeHeartbeat

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use weir_storage::GroupId;

use crate::config::GroupTimings;
use crate::types::NodeId;

/// Most groups one heartbeat may name; a larger one is refused (no node hosts that many).
pub(crate) const MAX_LEADS_PER_HEARTBEAT: usize = 1 << 20;

/// Where a partition group stands on this node, as its metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// This node leads the group in `term`.
    Leads { term: u64 },
    /// This node is a follower or a learner in `term`, whether or not it knows the leader.
    Follows { term: u64 },
    /// This node is a candidate: it needs its timer to retry elections.
    Campaigns,
}

/// A partition group as the node-level heartbeats see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupView {
    pub(crate) standing: Standing,
    /// Every other member (voters and learners), with the address it advertises.
    pub(crate) members: Vec<(NodeId, String)>,
}

/// What the node-level heartbeats do to a partition group's raft.
pub(crate) trait GroupTimers: Send + Sync {
    /// Turns the group's raft timer (elections and heartbeats) on or off.
    fn set_ticking(&self, group: GroupId, on: bool);
    /// Starts a pre-vote round for the group now. openraft's own timer would wait for a whole
    /// election timeout past the leader's lease; this is called once that lease has run out.
    fn campaign(&self, group: GroupId);
    /// Sends the group's followers one raft heartbeat now, which carries the leader's commit
    /// index: a quiet leader sends none by itself, and a follower that restarted (its commit
    /// index is written lazily) or was cut off may have missed the last one it sent.
    fn remind(&self, group: GroupId);
    /// How many of the group's entries this node knows committed (its commit index + 1, 0 for
    /// none); `None` while the group does not run here.
    fn committed(&self, group: GroupId) -> Option<u64>;
}

/// A group a heartbeat's sender leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Leadership {
    /// The term the sender leads it in.
    pub(crate) term: u64,
    /// How many entries the sender committed there: its commit index + 1 (0: none).
    pub(crate) committed: u64,
}

/// A heartbeat this node owes a peer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HeartbeatDue {
    pub(crate) node: NodeId,
    /// The address the peer advertises in the groups' membership.
    pub(crate) advertised: String,
    /// The groups shared with the peer that this node leads.
    pub(crate) leads: Vec<(GroupId, Leadership)>,
}

/// A peer as the heartbeats it sends show it.
#[derive(Debug, Default)]
struct Peer {
    /// When its last heartbeat arrived; `None` before the first.
    heard: Option<Instant>,
    /// Whether it counts as alive: heard within the timeout.
    alive: bool,
    /// The groups its last heartbeat said it leads.
    leads: HashMap<GroupId, Leadership>,
    /// Its process's incarnation, as its last heartbeat said.
    incarnation: Option<u64>,
    /// Whether its last heartbeat said it has started every partition replica assigned to it.
    serving: bool,
}

#[derive(Debug)]
struct Group {
    /// The running instance of the group that reported it ([`Reporter`]).
    instance: u64,
    view: GroupView,
    /// Whether the group's raft timer is on, as last set here (openraft starts it on).
    ticking: bool,
    /// Bumped whenever the timer's fate is decided again, so a delayed start that is no
    /// longer wanted does nothing.
    decision: u64,
    /// While this node leads the group but failed to renew its lease: until then its
    /// heartbeats do not say it leads the group ([`Reporter::suspend_claim`]).
    claim_suspended_until: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    peers: HashMap<NodeId, Peer>,
    groups: HashMap<GroupId, Group>,
    /// Followers' timers held off for a while ([`Reporter::hold_timer`]); kept apart from
    /// `groups` because a hold may come before the group's first report.
    holds: HashMap<GroupId, Hold>,
}

/// A follower's raft timer kept off until `until`, for one running instance of its group.
#[derive(Debug, Clone, Copy)]
struct Hold {
    instance: u64,
    until: Instant,
}

/// What one change asks of the groups' timers.
#[derive(Debug, Default)]
struct Changes {
    stop: Vec<GroupId>,
    start: Vec<Start>,
}

/// A group's timer to start, after a random delay.
#[derive(Debug)]
struct Start {
    group: GroupId,
    /// The decision it belongs to.
    decision: u64,
    /// Not before then.
    not_before: Instant,
    /// Whether to stand for election at once too (its leader's node is dead).
    campaign: bool,
}

/// This node's view of its peers' liveness, and of which partition groups can do without their
/// raft timers. Shared by the transport (which sends and receives the heartbeats) and the
/// groups (which report where they stand).
pub(crate) struct Liveness {
    node_id: NodeId,
    /// This process's incarnation, sent in every heartbeat.
    pub(crate) incarnation: u64,
    /// How often heartbeats are sent.
    pub(crate) interval: Duration,
    /// How long a peer may go unheard before the groups it leads start their timers.
    timeout: Duration,
    /// openraft's leader lease: how long after a leader's last message its followers refuse
    /// to vote for another.
    lease: Duration,
    /// The longest random delay before a follower's timer starts again.
    stagger: Duration,
    timers: Arc<dyn GroupTimers>,
    state: Mutex<State>,
    random: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Liveness")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Liveness {
    pub(crate) fn new(
        node_id: NodeId,
        timings: GroupTimings,
        timers: Arc<dyn GroupTimers>,
    ) -> Self {
        let random = std::collections::hash_map::RandomState::new();
        Self {
            node_id,
            incarnation: random.hash_one((node_id, std::time::SystemTime::now())),
            interval: timings.heartbeat,
            timeout: timings.election_min,
            lease: timings.election_max,
            stagger: (2 * timings.heartbeat)
                .min(timings.election_max.saturating_sub(timings.election_min)),
            timers,
            state: Mutex::default(),
            random,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records where `reporter`'s group stands now (called whenever its metrics change it).
    fn update(self: &Arc<Self>, reporter: &Reporter, view: GroupView) {
        let (group, instance) = (reporter.group, reporter.instance);
        let changes = {
            let mut state = self.state();
            match state.groups.get_mut(&group) {
                Some(entry) if entry.instance == instance && entry.view == view => return,
                Some(entry) => {
                    if entry.view.standing != view.standing {
                        // A suspended claim was of the leadership that just ended.
                        entry.claim_suspended_until = None;
                    }
                    entry.instance = instance;
                    entry.view = view;
                }
                None => {
                    // openraft starts a group with its timer on.
                    let entry = Group {
                        instance,
                        view,
                        ticking: true,
                        decision: 0,
                        claim_suspended_until: None,
                    };
                    state.groups.insert(group, entry);
                }
            }
            let now = Instant::now();
            let mut changes = Changes::default();
            state.decide(group, now, false, &mut changes);
            (changes, now)
        };
        self.apply(changes.0, changes.1);
    }

    /// Forgets `group` (it is shut down on this node).
    pub(crate) fn remove(&self, group: GroupId) {
        let mut state = self.state();
        state.groups.remove(&group);
        state.holds.remove(&group);
    }

    /// A reporter for a newly started instance of `group`.
    pub(crate) fn reporter(self: &Arc<Self>, group: GroupId) -> Reporter {
        static INSTANCES: AtomicU64 = AtomicU64::new(0);
        Reporter {
            liveness: self.clone(),
            group,
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Records whether `node` says it has started every partition replica assigned to it.
    pub(crate) fn serving(&self, node: NodeId, serving: bool) {
        self.state().peers.entry(node).or_default().serving = serving;
    }

    /// Records a heartbeat from `node` (its process's `incarnation`), naming the groups it
    /// leads. A peer heard again after it fell silent, or that restarted, gets a raft heartbeat
    /// from each group this node leads it in: a quiet leader sends none by itself, and that
    /// peer may have missed the commit index that went out last.
    ///
    /// Returns the groups whose commit index here is behind the one `node` names, although
    /// that did not move since its previous heartbeat: `node` should remind them
    /// ([`Liveness::remind_behind`]). While entries are committed the leader's index moves,
    /// and the follower's lag is only what is in flight.
    pub(crate) fn heard(
        self: &Arc<Self>,
        node: NodeId,
        incarnation: u64,
        leads: HashMap<GroupId, Leadership>,
    ) -> Vec<GroupId> {
        let (changes, now, remind, unmoved) = {
            let mut state = self.state();
            let peer = state.peers.entry(node).or_default();
            let revived = !peer.alive && peer.heard.is_some();
            let restarted = peer.incarnation.is_some_and(|known| known != incarnation);
            let first = peer.heard.is_none();
            peer.heard = Some(Instant::now());
            peer.alive = true;
            peer.incarnation = Some(incarnation);
            let unmoved: Vec<(GroupId, u64)> = leads
                .iter()
                .filter(|&(group, lead)| lead.committed > 0 && peer.leads.get(group) == Some(lead))
                .map(|(&group, lead)| (group, lead.committed))
                .collect();
            let same_claims = peer.leads.len() == leads.len()
                && leads
                    .iter()
                    .all(|(group, lead)| peer.leads.get(group).map(|l| l.term) == Some(lead.term));
            if !first && !revived && !restarted && same_claims {
                peer.leads = leads;
                drop(state);
                return self.behind(unmoved);
            }
            if restarted {
                tracing::info!(node, "peer restarted");
            } else if revived {
                tracing::info!(node, "peer's heartbeats arrive again");
            }
            // Every group the peer named before or names now may decide differently. One it no
            // longer names has no leader this node knows of: its followers stand once the
            // leases they granted that node run out (it may have heartbeated them a moment ago,
            // when it found it could not reach a quorum).
            let mut touched: Vec<GroupId> = peer.leads.keys().copied().collect();
            touched.extend(leads.keys().filter(|g| !peer.leads.contains_key(g)));
            peer.leads = leads;
            let now = Instant::now();
            let leases_end = now + self.lease + self.interval;
            let mut changes = Changes::default();
            for group in touched {
                state.decide(group, leases_end, true, &mut changes);
            }
            let remind = if revived || restarted {
                state.led_with(node)
            } else {
                Vec::new()
            };
            (changes, now, remind, unmoved)
        };
        self.apply(changes, now);
        for group in remind {
            self.timers.remind(group);
        }
        self.behind(unmoved)
    }

    /// Which of `(group, leader's commit index)` this node's replica has not reached.
    fn behind(&self, unmoved: Vec<(GroupId, u64)>) -> Vec<GroupId> {
        unmoved
            .into_iter()
            .filter(|&(group, committed)| {
                self.timers
                    .committed(group)
                    .is_some_and(|here| here < committed)
            })
            .map(|(group, _)| group)
            .collect()
    }

    /// `node` answered a heartbeat saying its replicas of `groups` are behind the commit index
    /// this node named: each of them that this node leads with `node` a member sends its
    /// followers one raft heartbeat.
    pub(crate) fn remind_behind(&self, node: NodeId, groups: &[GroupId]) {
        let remind: Vec<GroupId> = {
            let state = self.state();
            groups
                .iter()
                .copied()
                .filter(|group| {
                    state
                        .groups
                        .get(group)
                        .is_some_and(|entry| entry.leads_with(node))
                })
                .collect()
        };
        if !remind.is_empty() {
            tracing::debug!(node, groups = ?remind, "peer is behind the commit index; reminding it");
        }
        for group in remind {
            self.timers.remind(group);
        }
    }

    /// Marks the peers not heard from within the timeout as dead, so the groups they led start
    /// their timers: not before the followers' leases from those leaders have run out (a
    /// pre-vote refused under a lease is tried again only an election timeout later), then
    /// after a random delay.
    pub(crate) fn expire(self: &Arc<Self>, now: Instant) {
        let changes = {
            let mut state = self.state();
            let mut touched = Vec::new();
            for (node, peer) in &mut state.peers {
                let silent = peer
                    .heard
                    .is_none_or(|heard| now.saturating_duration_since(heard) > self.timeout);
                if peer.alive && silent {
                    peer.alive = false;
                    // The leader's last entries may have reached the followers up to one
                    // interval after its last heartbeat reached this node.
                    let leases_end = peer
                        .heard
                        .map_or(now, |heard| heard + self.lease + self.interval);
                    touched.extend(peer.leads.keys().map(|&group| (group, leases_end)));
                    tracing::info!(
                        node,
                        led = peer.leads.len(),
                        "peer missed its heartbeats; the partition groups it led start their election timers"
                    );
                }
            }
            let mut changes = Changes::default();
            for (group, leases_end) in touched {
                state.decide(group, leases_end, true, &mut changes);
            }
            changes
        };
        self.apply(changes, now);
    }

    /// The heartbeats this node owes its peers now: one per node it shares a group with.
    pub(crate) fn due(&self) -> Vec<HeartbeatDue> {
        let mut due: HashMap<NodeId, HeartbeatDue> = HashMap::new();
        let mut led = Vec::new();
        {
            let state = self.state();
            let now = Instant::now();
            for (&group, entry) in &state.groups {
                let suspended = entry.claim_suspended_until.is_some_and(|until| until > now);
                let term = match entry.view.standing {
                    Standing::Leads { term } if !suspended => Some(term),
                    _ => None,
                };
                for (node, advertised) in &entry.view.members {
                    let heartbeat = due.entry(*node).or_insert_with(|| HeartbeatDue {
                        node: *node,
                        advertised: advertised.clone(),
                        leads: Vec::new(),
                    });
                    if let Some(term) = term {
                        heartbeat
                            .leads
                            .push((group, Leadership { term, committed: 0 }));
                    }
                }
                if term.is_some() {
                    led.push(group);
                }
            }
        }
        // The commit indexes are read outside the state's lock (each from its group's raft).
        let committed: HashMap<GroupId, u64> = led
            .into_iter()
            .map(|group| (group, self.timers.committed(group).unwrap_or(0)))
            .collect();
        for heartbeat in due.values_mut() {
            for (group, lead) in &mut heartbeat.leads {
                lead.committed = committed.get(group).copied().unwrap_or(0);
            }
        }
        due.into_values().collect()
    }

    /// Partition groups on this node whose raft timer runs.
    pub(crate) fn ticking(&self) -> usize {
        self.state().groups.values().filter(|g| g.ticking).count()
    }

    /// Whether `node` sent heartbeats and then fell silent for longer than the timeout: the
    /// groups it leads are being taken over.
    pub(crate) fn presumed_dead(&self, node: NodeId) -> bool {
        self.state()
            .peers
            .get(&node)
            .is_some_and(|peer| peer.heard.is_some() && !peer.alive)
    }

    /// The longest the followers of a node presumed dead take to elect a new leader, counted
    /// from the moment it was presumed dead: their leases run out at most one lease and one
    /// interval after its last heartbeat ([`Liveness::expire`]), which came before that moment;
    /// they stand within the stagger after that, and one more interval covers the vote.
    pub(crate) fn succession(&self) -> Duration {
        self.lease + 2 * self.interval + self.stagger
    }

    /// Peers that count as alive, of those that ever sent a heartbeat.
    pub(crate) fn alive_peers(&self) -> Vec<(NodeId, bool)> {
        let mut peers: Vec<_> = self
            .state()
            .peers
            .iter()
            .map(|(node, peer)| (*node, peer.alive))
            .collect();
        peers.sort_unstable();
        peers
    }

    /// Stops and starts timers as `changes` asks; `now` is the instant the changes were
    /// decided at.
    fn apply(self: &Arc<Self>, changes: Changes, now: Instant) {
        for group in changes.stop {
            self.timers.set_ticking(group, false);
        }
        for start in changes.start {
            let delay =
                start.not_before.saturating_duration_since(now) + self.start_delay(start.group);
            if delay.is_zero() {
                self.start_if_still_wanted(&start);
                continue;
            }
            let liveness = Arc::clone(self);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                liveness.start_if_still_wanted(&start);
            });
        }
    }

    fn start_if_still_wanted(&self, start: &Start) {
        let wanted = {
            let mut state = self.state();
            match state.groups.get_mut(&start.group) {
                Some(entry) if entry.decision == start.decision && !entry.ticking => {
                    entry.ticking = true;
                    true
                }
                _ => false,
            }
        };
        if wanted {
            self.timers.set_ticking(start.group, true);
            if start.campaign {
                self.timers.campaign(start.group);
            }
        }
    }

    /// A random delay in `[0, stagger]`, different for each group and call.
    fn start_delay(&self, group: GroupId) -> Duration {
        if self.stagger.is_zero() {
            return Duration::ZERO;
        }
        let random = self.random.hash_one((group, self.node_id, Instant::now()));
        let nanos = self.stagger.as_nanos().max(1) as u64;
        Duration::from_nanos(random % nanos)
    }
}

/// How one running instance of a partition group reports where it stands. A group that stops
/// on a failure and is started again is a new instance: the old one's last words cannot
/// remove the new one's report.
pub(crate) struct Reporter {
    liveness: Arc<Liveness>,
    group: GroupId,
    instance: u64,
}

impl Reporter {
    /// Records where the group stands now.
    pub(crate) fn update(&self, view: GroupView) {
        self.liveness.update(self, view);
    }

    /// This node leads the group but could not renew its lease (no quorum answered): its
    /// heartbeats stop saying it leads the group until `until`, so the followers it still
    /// reaches stand for election with the rest (one of them may hold entries the others
    /// lack, and only it can win).
    pub(crate) fn suspend_claim(&self, until: Instant) {
        self.set_claim_suspension(Some(until));
    }

    /// The lease was renewed: heartbeats say again that this node leads the group.
    pub(crate) fn resume_claim(&self) {
        self.set_claim_suspension(None);
    }

    fn set_claim_suspension(&self, until: Option<Instant>) {
        let mut state = self.liveness.state();
        if let Some(entry) = state.groups.get_mut(&self.group)
            && entry.instance == self.instance
        {
            entry.claim_suspended_until = until;
        }
    }

    /// Whether no one is known to lead the group although every other member of it is heard
    /// from and serves (has started its partition replicas): none of their heartbeats claims
    /// it. After a restart of the whole cluster, or of the node that led the group, nobody
    /// does; the group's preferred leader may then stand at once. While a member is not heard
    /// from, this is false: it may lead the group, and a pre-vote would not protect it (the
    /// leases its followers granted lapse while the group is quiet). While one is still
    /// starting, the group may not run there yet, and an election would be asked in vain.
    pub(crate) fn unclaimed(&self) -> bool {
        let state = self.liveness.state();
        let Some(entry) = state.groups.get(&self.group) else {
            return false;
        };
        !entry.view.members.is_empty()
            && entry.view.members.iter().all(|(member, _)| {
                state.peers.get(member).is_some_and(|peer| {
                    peer.alive && peer.serving && !peer.leads.contains_key(&self.group)
                })
            })
    }

    /// Whether `node`, which this group knows as its leader, fell silent: see
    /// [`Liveness::presumed_dead`].
    pub(crate) fn presumed_dead(&self, node: NodeId) -> bool {
        self.liveness.presumed_dead(node)
    }

    /// How long electing a successor to a leader presumed dead may take: see
    /// [`Liveness::succession`].
    pub(crate) fn succession(&self) -> Duration {
        self.liveness.succession()
    }

    /// The group stopped: it leads nothing any more, whatever its last metrics said.
    pub(crate) fn stopped(&self) {
        let mut state = self.liveness.state();
        if state
            .groups
            .get(&self.group)
            .is_some_and(|entry| entry.instance == self.instance)
        {
            state.groups.remove(&self.group);
        }
        if state
            .holds
            .get(&self.group)
            .is_some_and(|hold| hold.instance == self.instance)
        {
            state.holds.remove(&self.group);
        }
    }

    /// Keeps the group's raft timer off until `until` while this replica follows and no
    /// leader is heard of, then lets it start as it would have (after the random delay). A
    /// restarted replica that is not the group's preferred leader calls this: the preferred
    /// leader stands at once when no one leads the group, and a timer of this replica that
    /// fired meanwhile would only make a second candidate, whose higher term deposes the
    /// leader just elected (after a restart of the whole cluster, thousands of groups elect
    /// at once and their messages are slow). A leader heard of in the meantime stops the
    /// timer as usual.
    pub(crate) fn hold_timer(&self, until: Instant) {
        let (changes, now) = {
            let mut state = self.liveness.state();
            state.holds.insert(
                self.group,
                Hold {
                    instance: self.instance,
                    until,
                },
            );
            let now = Instant::now();
            let mut changes = Changes::default();
            if state
                .groups
                .get(&self.group)
                .is_some_and(|entry| entry.instance == self.instance)
            {
                state.decide(self.group, now, false, &mut changes);
            }
            (changes, now)
        };
        self.liveness.apply(changes, now);
    }
}

impl Group {
    /// Whether this node leads the group and `node` is a member of it.
    fn leads_with(&self, node: NodeId) -> bool {
        matches!(self.view.standing, Standing::Leads { .. })
            && self.view.members.iter().any(|(member, _)| *member == node)
    }
}

impl State {
    /// The groups this node leads that `node` is a member of.
    fn led_with(&self, node: NodeId) -> Vec<GroupId> {
        self.groups
            .iter()
            .filter(|(_, entry)| entry.leads_with(node))
            .map(|(&group, _)| group)
            .collect()
    }

    /// Decides whether `group`'s timer must run, and records the change in `changes`; a timer
    /// to start starts not before `not_before`, and with an election at once if `campaign`.
    fn decide(
        &mut self,
        group: GroupId,
        not_before: Instant,
        campaign: bool,
        changes: &mut Changes,
    ) {
        let led_elsewhere = |term: u64| {
            self.peers.values().any(|peer| {
                peer.alive && peer.leads.get(&group).is_some_and(|led| led.term >= term)
            })
        };
        let Some(entry) = self.groups.get(&group) else {
            return;
        };
        let tick = match entry.view.standing {
            // A leader needs no timer: it sends no raft heartbeats, and elects no one.
            Standing::Leads { .. } => false,
            Standing::Follows { term } => !led_elsewhere(term),
            Standing::Campaigns => true,
        };
        // A follower's timer held past `not_before` starts when the hold ends; a leader heard
        // of ends the hold (the timer then waits for that leader as any other's).
        let hold = self
            .holds
            .get(&group)
            .filter(|hold| hold.instance == entry.instance)
            .copied();
        let held_until = match (entry.view.standing, hold) {
            (Standing::Follows { .. }, Some(_)) if !tick => {
                self.holds.remove(&group);
                None
            }
            (Standing::Follows { .. }, Some(hold)) if hold.until > not_before => Some(hold.until),
            _ => None,
        };
        let Some(entry) = self.groups.get_mut(&group) else {
            return;
        };
        entry.decision += 1;
        let start = Start {
            group,
            decision: entry.decision,
            not_before: held_until.unwrap_or(not_before),
            campaign,
        };
        match (entry.ticking, tick) {
            (true, false) => {
                entry.ticking = false;
                changes.stop.push(group);
            }
            (true, true) if held_until.is_some() => {
                entry.ticking = false;
                changes.stop.push(group);
                changes.start.push(start);
            }
            (false, true) => changes.start.push(start),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// What the heartbeats asked of the groups' rafts.
    #[derive(Default)]
    struct Recorded {
        ticking: Mutex<HashMap<GroupId, bool>>,
        starts: AtomicUsize,
        campaigns: Mutex<Vec<GroupId>>,
        reminders: Mutex<Vec<GroupId>>,
        committed: Mutex<HashMap<GroupId, u64>>,
    }

    impl GroupTimers for Recorded {
        fn set_ticking(&self, group: GroupId, on: bool) {
            self.ticking.lock().unwrap().insert(group, on);
            if on {
                self.starts.fetch_add(1, Ordering::Relaxed);
            }
        }

        fn campaign(&self, group: GroupId) {
            self.campaigns.lock().unwrap().push(group);
        }

        fn remind(&self, group: GroupId) {
            self.reminders.lock().unwrap().push(group);
        }

        fn committed(&self, group: GroupId) -> Option<u64> {
            self.committed.lock().unwrap().get(&group).copied()
        }
    }

    impl Recorded {
        fn ticking(&self, group: GroupId) -> Option<bool> {
            self.ticking.lock().unwrap().get(&group).copied()
        }

        fn campaigns(&self) -> Vec<GroupId> {
            self.campaigns.lock().unwrap().clone()
        }

        fn reminders(&self) -> Vec<GroupId> {
            let mut groups = self.reminders.lock().unwrap().clone();
            groups.sort_unstable();
            groups
        }
    }

    fn liveness_with(election_max: Duration) -> (Arc<Liveness>, Arc<Recorded>) {
        let recorded = Arc::new(Recorded::default());
        let timings = GroupTimings {
            heartbeat: Duration::from_millis(100),
            election_min: Duration::from_millis(500),
            election_max,
            ..GroupTimings::default()
        };
        let liveness = Liveness::new(1, timings, recorded.clone());
        (Arc::new(liveness), recorded)
    }

    /// No random delay: a timer that must start starts at once.
    fn liveness() -> (Arc<Liveness>, Arc<Recorded>) {
        liveness_with(Duration::from_millis(500))
    }

    fn lead(term: u64, committed: u64) -> Leadership {
        Leadership { term, committed }
    }

    /// A heartbeat's claims: `(group, term)`, nothing committed.
    fn claims(pairs: &[(GroupId, u64)]) -> HashMap<GroupId, Leadership> {
        pairs
            .iter()
            .map(|&(group, term)| (group, lead(term, 0)))
            .collect()
    }

    fn follows(term: u64) -> GroupView {
        GroupView {
            standing: Standing::Follows { term },
            members: vec![(2, "b:1".to_owned()), (3, "c:1".to_owned())],
        }
    }

    #[tokio::test]
    async fn a_follower_stops_its_timer_while_its_leaders_node_is_heard_and_starts_it_when_that_node_falls_silent()
     {
        let (liveness, recorded) = liveness();
        liveness.reporter(7).update(follows(3));
        assert_eq!(liveness.ticking(), 1, "no leader heard of yet");

        liveness.heard(2, 1, claims(&[(7, 3)]));
        assert_eq!(recorded.ticking(7), Some(false));
        assert_eq!(liveness.ticking(), 0);

        // Heard again, saying the same: nothing changes.
        liveness.heard(2, 1, claims(&[(7, 3)]));
        assert_eq!(liveness.ticking(), 0);

        // Node 2 falls silent past the timeout.
        liveness.expire(Instant::now() + Duration::from_secs(1));
        assert_eq!(recorded.ticking(7), Some(true));
        assert_eq!(liveness.ticking(), 1);
        assert_eq!(liveness.alive_peers(), vec![(2, false)]);
        assert_eq!(
            recorded.campaigns(),
            vec![7],
            "its leader is dead: it stands at once"
        );
    }

    #[tokio::test]
    async fn a_group_is_unclaimed_only_once_every_other_member_is_heard_serving_and_claims_none() {
        let (liveness, _recorded) = liveness();
        let reporter = liveness.reporter(7);
        assert!(!reporter.unclaimed(), "the group has not reported yet");
        reporter.update(follows(3));
        assert!(!reporter.unclaimed(), "no member heard from yet");
        liveness.serving(2, true);
        liveness.heard(2, 1, claims(&[]));
        assert!(
            !reporter.unclaimed(),
            "node 3, not heard from yet, may lead it"
        );
        liveness.heard(3, 1, claims(&[(8, 3)]));
        assert!(!reporter.unclaimed(), "node 3 is still starting");
        liveness.serving(3, true);
        assert!(reporter.unclaimed(), "both heard, neither leads group 7");

        liveness.heard(3, 1, claims(&[(7, 3), (8, 3)]));
        assert!(!reporter.unclaimed(), "node 3 leads it");
        liveness.heard(3, 2, claims(&[]));
        assert!(
            reporter.unclaimed(),
            "node 3 restarted, and leads it no more"
        );
        liveness.expire(Instant::now() + Duration::from_secs(1));
        assert!(!reporter.unclaimed(), "both members fell silent");
    }

    #[tokio::test]
    async fn a_peer_is_presumed_dead_only_after_it_was_heard_and_then_missed() {
        let (liveness, _recorded) = liveness();
        assert!(
            !liveness.presumed_dead(2),
            "never heard: nothing is known of it"
        );
        liveness.serving(2, true);
        assert!(!liveness.presumed_dead(2), "still never heard");
        liveness.heard(2, 1, claims(&[(7, 3)]));
        assert!(!liveness.presumed_dead(2));
        liveness.expire(Instant::now() + Duration::from_secs(1));
        assert!(liveness.presumed_dead(2), "silent past the timeout");
        liveness.heard(2, 1, claims(&[(7, 3)]));
        assert!(!liveness.presumed_dead(2), "heard again");
    }

    #[tokio::test]
    async fn a_leadership_claim_of_an_older_term_does_not_stop_a_followers_timer() {
        let (liveness, recorded) = liveness();
        liveness.reporter(7).update(follows(4));
        liveness.heard(2, 1, claims(&[(7, 3)]));
        assert_eq!(
            liveness.ticking(),
            1,
            "node 2 led term 3; this replica is in term 4"
        );
        // A claim of a later term will do: that leader will catch this replica up.
        liveness.heard(3, 1, claims(&[(7, 5)]));
        assert_eq!(liveness.ticking(), 0);
        // The claim withdrawn (node 3 no longer leads): the timer starts again, with an
        // election, once the leases node 3 may have renewed a moment ago have run out.
        liveness.heard(3, 1, claims(&[]));
        assert_eq!(liveness.ticking(), 0, "not before the leases run out");
        let decision = liveness.state().groups[&7].decision;
        liveness.start_if_still_wanted(&Start {
            group: 7,
            decision,
            not_before: Instant::now(),
            campaign: true,
        });
        assert_eq!(liveness.ticking(), 1);
        assert_eq!(recorded.campaigns(), vec![7]);
    }

    #[tokio::test]
    async fn a_leader_runs_no_timer_and_names_its_groups_to_their_members_only() {
        let (liveness, _recorded) = liveness();
        liveness.reporter(7).update(GroupView {
            standing: Standing::Leads { term: 2 },
            members: vec![(2, "b:1".to_owned())],
        });
        liveness.reporter(8).update(follows(1));
        assert_eq!(liveness.ticking(), 1, "group 8 has heard of no leader");
        let mut due = liveness.due();
        due.sort_unstable_by_key(|d| d.node);
        assert_eq!(
            due,
            vec![
                HeartbeatDue {
                    node: 2,
                    advertised: "b:1".to_owned(),
                    leads: vec![(7, lead(2, 0))],
                },
                HeartbeatDue {
                    node: 3,
                    advertised: "c:1".to_owned(),
                    leads: vec![],
                },
            ]
        );
    }

    #[tokio::test]
    async fn a_timer_start_that_is_no_longer_wanted_does_nothing() {
        // Starts wait for a 10 s lease: none runs during the test on its own.
        let (liveness, recorded) = liveness_with(Duration::from_secs(10));
        liveness.reporter(7).update(follows(3));
        liveness.heard(2, 1, claims(&[(7, 3)]));
        // Silent: a start is scheduled; then heard again before it runs.
        liveness.expire(Instant::now() + Duration::from_secs(1));
        let scheduled = liveness.state().groups[&7].decision;
        liveness.heard(2, 1, claims(&[(7, 3)]));
        liveness.start_if_still_wanted(&Start {
            group: 7,
            decision: scheduled,
            not_before: Instant::now(),
            campaign: true,
        });
        assert_eq!(recorded.starts.load(Ordering::Relaxed), 0);
        assert!(recorded.campaigns().is_empty());
        assert_eq!(liveness.ticking(), 0);
    }

    #[tokio::test]
    async fn a_stopped_instance_withdraws_its_claim_but_not_its_successors() {
        let (liveness, _recorded) = liveness();
        let leads = GroupView {
            standing: Standing::Leads { term: 2 },
            members: vec![(2, "b:1".to_owned())],
        };
        let first = liveness.reporter(7);
        first.update(leads.clone());
        first.stopped();
        assert!(
            liveness.due().iter().all(|due| due.leads.is_empty()),
            "a stopped group leads nothing"
        );

        first.update(leads.clone());
        let second = liveness.reporter(7);
        second.update(GroupView {
            standing: Standing::Leads { term: 3 },
            ..leads
        });
        // The first instance's task ends late, after the second started.
        first.stopped();
        assert_eq!(liveness.due()[0].leads, vec![(7, lead(3, 0))]);
    }

    #[tokio::test]
    async fn a_held_followers_timer_starts_when_the_hold_ends_unless_a_leader_is_heard_first() {
        let (liveness, recorded) = liveness();
        let reporter = liveness.reporter(7);
        reporter.update(follows(3));
        assert_eq!(liveness.ticking(), 1, "no leader heard of");
        let until = Instant::now() + Duration::from_secs(60);
        reporter.hold_timer(until);
        assert_eq!(recorded.ticking(7), Some(false), "held");
        assert_eq!(liveness.ticking(), 0);
        // The hold ends: the start decided with it goes ahead.
        let held = liveness.state().groups[&7].decision;
        liveness.start_if_still_wanted(&Start {
            group: 7,
            decision: held,
            not_before: until,
            campaign: false,
        });
        assert_eq!(recorded.ticking(7), Some(true));

        // A new instance of the group, held before its first report: held from that report.
        let reporter = liveness.reporter(7);
        reporter.hold_timer(until);
        reporter.update(follows(4));
        assert_eq!(liveness.ticking(), 0, "held from the first report");
        let held = liveness.state().groups[&7].decision;
        // Its leader is heard of before the hold ends: the held start is void, and so is the
        // hold.
        liveness.heard(2, 1, claims(&[(7, 4)]));
        liveness.start_if_still_wanted(&Start {
            group: 7,
            decision: held,
            not_before: until,
            campaign: false,
        });
        assert_eq!(liveness.ticking(), 0, "led by node 2");
        assert!(recorded.campaigns().is_empty());
        assert!(liveness.state().holds.is_empty(), "the hold ended");

        // A hold already over holds nothing.
        let reporter = liveness.reporter(8);
        reporter.hold_timer(Instant::now());
        reporter.update(follows(1));
        assert_eq!(recorded.ticking(8), None, "never turned off");
        assert_eq!(liveness.ticking(), 1);
    }

    #[tokio::test]
    async fn after_a_dead_leader_a_timer_waits_for_the_leases_it_granted_to_run_out() {
        let (liveness, _recorded) = liveness();
        liveness.reporter(7).update(follows(3));
        liveness.heard(2, 1, claims(&[(7, 3)]));
        // Silent past the timeout (500 ms), not yet past the lease and one interval (600 ms).
        liveness.expire(Instant::now() + Duration::from_millis(550));
        assert_eq!(liveness.alive_peers(), vec![(2, false)]);
        assert_eq!(liveness.ticking(), 0, "the start waits for the leases");
    }

    #[tokio::test]
    async fn a_leader_that_could_not_renew_its_lease_stops_saying_it_leads() {
        let (liveness, _recorded) = liveness();
        let reporter = liveness.reporter(7);
        reporter.update(GroupView {
            standing: Standing::Leads { term: 2 },
            members: vec![(2, "b:1".to_owned())],
        });
        reporter.suspend_claim(Instant::now() + Duration::from_secs(60));
        assert_eq!(liveness.due()[0].leads, vec![]);
        reporter.resume_claim();
        assert_eq!(liveness.due()[0].leads, vec![(7, lead(2, 0))]);
        // A suspension that ran out is over by itself.
        reporter.suspend_claim(Instant::now());
        assert_eq!(liveness.due()[0].leads, vec![(7, lead(2, 0))]);
    }

    /// A quiet leader sends its followers nothing while nothing is written, so a follower that
    /// restarted (or was cut off) may never learn the commit index of the last entries it
    /// holds. When its node restarts (a new incarnation) or is heard again after falling
    /// silent, each group this node leads it in sends one raft heartbeat; other heartbeats,
    /// and groups it is no member of or this node does not lead, send none.
    #[tokio::test]
    async fn a_peer_that_restarted_or_was_silent_is_reminded_of_the_groups_led_here() {
        let (liveness, recorded) = liveness();
        let leads = |term| GroupView {
            standing: Standing::Leads { term },
            members: vec![(2, "b:1".to_owned()), (3, "c:1".to_owned())],
        };
        liveness.reporter(7).update(leads(3));
        liveness.reporter(8).update(leads(4));
        liveness.reporter(9).update(GroupView {
            standing: Standing::Leads { term: 1 },
            members: vec![(3, "c:1".to_owned())],
        });
        liveness.reporter(10).update(follows(3));
        liveness.heard(2, 1, claims(&[]));
        liveness.heard(2, 1, claims(&[]));
        assert_eq!(recorded.reminders(), Vec::<GroupId>::new(), "nothing new");

        // Node 2's process restarted.
        liveness.heard(2, 2, claims(&[]));
        assert_eq!(recorded.reminders(), [7, 8]);
        liveness.heard(2, 2, claims(&[]));
        assert_eq!(recorded.reminders(), [7, 8]);

        // Node 2 falls silent, then is heard again.
        liveness.expire(Instant::now() + Duration::from_secs(5));
        liveness.heard(2, 2, claims(&[]));
        assert_eq!(recorded.reminders(), [7, 7, 8, 8]);
    }

    /// A follower that missed the message carrying its leader's last commit index (lost, or
    /// sent before its group ran again after a restart) hears nothing more from a quiet
    /// leader. Heartbeats name the leader's commit index; a follower still behind it after it
    /// stood still for a heartbeat says so, and the leader reminds that group alone. While
    /// the leader's index moves (entries in flight), nobody is reminded.
    #[tokio::test]
    async fn a_follower_behind_a_quiet_leaders_commit_index_gets_that_group_reminded() {
        let (follower, here) = liveness();
        follower.reporter(7).update(follows(3));
        follower.reporter(8).update(follows(3));
        // Group 8's replica knows nothing committed (a restarted one may not).
        here.committed.lock().unwrap().extend([(7, 10), (8, 0)]);
        let heartbeat =
            |seven: u64, eight: u64| HashMap::from([(7, lead(3, seven)), (8, lead(3, eight))]);
        assert_eq!(
            follower.heard(2, 1, heartbeat(10, 5)),
            [] as [GroupId; 0],
            "first heard"
        );
        assert_eq!(
            follower.heard(2, 1, heartbeat(12, 6)),
            [] as [GroupId; 0],
            "moving"
        );
        let mut behind = follower.heard(2, 1, heartbeat(12, 6));
        behind.sort_unstable();
        assert_eq!(behind, [7, 8], "both stood still ahead of this replica");
        here.committed.lock().unwrap().insert(7, 12);
        assert_eq!(follower.heard(2, 1, heartbeat(12, 6)), [8]);
        here.committed.lock().unwrap().insert(8, 6);
        assert_eq!(
            follower.heard(2, 1, heartbeat(12, 6)),
            [] as [GroupId; 0],
            "caught up"
        );

        // The leader's side: it reminds the groups it leads with that peer as a member only.
        let (leader, recorded) = liveness();
        leader.reporter(7).update(GroupView {
            standing: Standing::Leads { term: 3 },
            members: vec![(1, "a:1".to_owned())],
        });
        leader.reporter(8).update(follows(3));
        leader.reporter(9).update(GroupView {
            standing: Standing::Leads { term: 3 },
            members: vec![(4, "d:1".to_owned())],
        });
        leader.remind_behind(1, &[7, 8, 9, 10]);
        assert_eq!(recorded.reminders(), [7]);
        // The commit index it names is its replica's.
        recorded.committed.lock().unwrap().insert(7, 12);
        assert_eq!(
            leader.due().iter().find(|d| d.node == 1).unwrap().leads,
            vec![(7, lead(3, 12))]
        );
    }
}
