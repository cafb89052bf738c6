//! The nemesis: faults chosen by a seeded random source, injected into a [`ProcessCluster`]
//! and healed again.

use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use super::membership::MembershipChanges;
use super::moves::Moves;
use crate::{NodeId, ProcessCluster};

/// The kinds of fault, for choosing which a run injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// [`Fault::Kill`].
    Kill,
    /// [`Fault::Pause`].
    Pause,
    /// [`Fault::Isolate`].
    Isolate,
    /// [`Fault::Split`].
    Split,
    /// [`Fault::OneWay`].
    OneWay,
    /// [`Fault::Bridge`].
    Bridge,
    /// [`Fault::LoseAnswers`].
    LoseAnswers,
    /// [`Fault::Slow`].
    Slow,
    /// [`Fault::PowerLoss`] (needs simulated disks).
    PowerLoss,
    /// [`Fault::PowerLossAll`] (needs simulated disks).
    PowerLossAll,
    /// [`Fault::FailFsync`] (needs simulated disks).
    FailFsync,
    /// [`Fault::Move`] (needs fewer replicas than nodes, or nodes joining).
    Move,
    /// [`Fault::Membership`] (needs 3 nodes or more).
    Membership,
    /// [`Fault::Trim`].
    Trim,
}

impl FaultKind {
    /// Every kind that needs neither simulated disks nor spare nodes.
    pub const PROCESS_AND_NETWORK: [FaultKind; 8] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Isolate,
        FaultKind::Split,
        FaultKind::OneWay,
        FaultKind::Bridge,
        FaultKind::LoseAnswers,
        FaultKind::Slow,
    ];
    /// The kinds that need simulated disks.
    pub const DISK: [FaultKind; 3] = [
        FaultKind::PowerLoss,
        FaultKind::PowerLossAll,
        FaultKind::FailFsync,
    ];

    /// The kind's name, for counting and for the command line.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Isolate => "isolate",
            FaultKind::Split => "split",
            FaultKind::OneWay => "one-way",
            FaultKind::Bridge => "bridge",
            FaultKind::LoseAnswers => "lose-answers",
            FaultKind::Slow => "slow",
            FaultKind::PowerLoss => "power-loss",
            FaultKind::PowerLossAll => "power-loss-all",
            FaultKind::FailFsync => "fail-fsync",
            FaultKind::Move => "move",
            FaultKind::Membership => "membership",
            FaultKind::Trim => "trim",
        }
    }

    /// The kind called `name`.
    pub fn from_name(name: &str) -> Option<FaultKind> {
        Self::PROCESS_AND_NETWORK
            .into_iter()
            .chain(Self::DISK)
            .chain([FaultKind::Move, FaultKind::Membership, FaultKind::Trim])
            .find(|k| k.name() == name)
    }
}

/// One fault, and how it is healed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL; healed by starting the node again over its data.
    Kill(NodeId),
    /// SIGSTOP; healed by SIGCONT.
    Pause(NodeId),
    /// Every link to and from the node cut: a minority of one.
    Isolate(NodeId),
    /// The nodes split in two sides that cannot reach each other.
    Split(Vec<NodeId>),
    /// Messages from `from` to `to` lost; the other direction works.
    OneWay {
        /// The sender whose messages are lost.
        from: NodeId,
        /// Their destination.
        to: NodeId,
    },
    /// Every node reaches `bridge`, but the others do not reach each other.
    Bridge(NodeId),
    /// The answers `to` sends back on `from`'s connections are lost: requests carried out,
    /// acknowledgements never received.
    LoseAnswers {
        /// The node whose requests go unanswered.
        from: NodeId,
        /// The node that carries them out.
        to: NodeId,
    },
    /// Every link to and from the node delayed by this many milliseconds, each way.
    Slow(NodeId, u64),
    /// The node loses power: SIGKILL, and its disk loses a random part (from the seed) of what
    /// it wrote but had not synced; healed by starting it again.
    PowerLoss(NodeId, u64),
    /// Every node loses power at once.
    PowerLossAll(u64),
    /// Every fsync of the node fails (it stops, having acknowledged nothing it could not
    /// sync); healed by starting it again after a power loss, since a failed fsync may have
    /// dropped what the kernel held.
    FailFsync(NodeId, u64),
    /// A replica of the partition moves to a node without one (in the background; the
    /// number picks which, see [`Moves::start`]). Nothing to heal.
    Move(u32, u64),
    /// The next step of a node joining or leaving the cluster (the number picks among
    /// choices, see [`MembershipChanges::step`]). Nothing to heal.
    Membership(u64),
    /// The partition's records below some offset deleted (DeleteRecords through any node,
    /// followed to the leader): up to this many percent of its high watermark, at most half.
    /// Not a fault but an operation run while faults are: every replica must trim alike, and a
    /// replica behind the new log start must catch up from a snapshot. Nothing to heal.
    Trim(u32, u64),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Kill(n) => write!(f, "kill node {n}"),
            Fault::Pause(n) => write!(f, "pause node {n}"),
            Fault::Isolate(n) => write!(f, "isolate node {n}"),
            Fault::Split(side) => write!(f, "split off nodes {side:?}"),
            Fault::OneWay { from, to } => write!(f, "lose messages from node {from} to node {to}"),
            Fault::Bridge(n) => write!(f, "bridge through node {n} only"),
            Fault::LoseAnswers { from, to } => {
                write!(f, "lose node {to}'s answers to node {from}")
            }
            Fault::Slow(n, ms) => write!(f, "slow every link of node {n} by {ms} ms"),
            Fault::PowerLoss(n, seed) => write!(f, "cut the power of node {n} (seed {seed})"),
            Fault::PowerLossAll(seed) => write!(f, "cut the power of every node (seed {seed})"),
            Fault::FailFsync(n, _) => write!(f, "fail every fsync of node {n}"),
            Fault::Move(partition, _) => write!(f, "move a replica of partition {partition}"),
            Fault::Membership(_) => write!(f, "change the membership"),
            Fault::Trim(partition, percent) => {
                write!(
                    f,
                    "trim partition {partition} to {percent}% of its high watermark"
                )
            }
        }
    }
}

impl Fault {
    /// The fault's kind.
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Kill(_) => FaultKind::Kill,
            Fault::Pause(_) => FaultKind::Pause,
            Fault::Isolate(_) => FaultKind::Isolate,
            Fault::Split(_) => FaultKind::Split,
            Fault::OneWay { .. } => FaultKind::OneWay,
            Fault::Bridge(_) => FaultKind::Bridge,
            Fault::LoseAnswers { .. } => FaultKind::LoseAnswers,
            Fault::Slow(..) => FaultKind::Slow,
            Fault::PowerLoss(..) => FaultKind::PowerLoss,
            Fault::PowerLossAll(_) => FaultKind::PowerLossAll,
            Fault::FailFsync(..) => FaultKind::FailFsync,
            Fault::Move(..) => FaultKind::Move,
            Fault::Membership(_) => FaultKind::Membership,
            Fault::Trim(..) => FaultKind::Trim,
        }
    }

    /// A random fault of one of `kinds` for a cluster of `nodes` whose topic has `partitions`.
    pub fn random(
        rng: &mut StdRng,
        kinds: &[FaultKind],
        nodes: &[NodeId],
        partitions: u32,
    ) -> Fault {
        let node = *nodes.choose(rng).expect("a cluster has nodes");
        let other = |rng: &mut StdRng| {
            let others: Vec<NodeId> = nodes.iter().copied().filter(|&n| n != node).collect();
            *others.choose(rng).expect("a cluster of two nodes or more")
        };
        match *kinds.choose(rng).expect("at least one kind of fault") {
            FaultKind::Kill => Fault::Kill(node),
            FaultKind::Pause => Fault::Pause(node),
            FaultKind::Isolate => Fault::Isolate(node),
            FaultKind::Split => {
                // A minority side of 1 to (n-1)/2 nodes.
                let mut shuffled = nodes.to_vec();
                rand::seq::SliceRandom::shuffle(shuffled.as_mut_slice(), rng);
                let size = rng.random_range(1..=(nodes.len() - 1) / 2).max(1);
                shuffled.truncate(size);
                shuffled.sort_unstable();
                Fault::Split(shuffled)
            }
            FaultKind::OneWay => Fault::OneWay {
                from: node,
                to: other(rng),
            },
            FaultKind::Bridge => Fault::Bridge(node),
            FaultKind::Slow => Fault::Slow(node, rng.random_range(20..400)),
            FaultKind::LoseAnswers => Fault::LoseAnswers {
                from: node,
                to: other(rng),
            },
            FaultKind::PowerLoss => Fault::PowerLoss(node, rng.random()),
            FaultKind::PowerLossAll => Fault::PowerLossAll(rng.random()),
            FaultKind::FailFsync => Fault::FailFsync(node, rng.random()),
            FaultKind::Move => Fault::Move(rng.random_range(0..partitions.max(1)), rng.random()),
            FaultKind::Membership => Fault::Membership(rng.random()),
            FaultKind::Trim => Fault::Trim(
                rng.random_range(0..partitions.max(1)),
                rng.random_range(1..=50),
            ),
        }
    }

    /// Whether two faults can be active at once (they must not touch the same node's process
    /// or the same links in ways healing one would undo for the other, and no process may
    /// restart while a membership change is in doubt).
    pub fn combines_with(&self, other: &Fault) -> bool {
        if matches!(self, Fault::PowerLossAll(_)) || matches!(other, Fault::PowerLossAll(_)) {
            return false;
        }
        match (self, other) {
            (Fault::Membership(_), Fault::Membership(_)) => return false,
            (Fault::Membership(_), f) | (f, Fault::Membership(_)) => {
                return !f.heals_processes();
            }
            _ => {}
        }
        let processes = |f: &Fault| match f {
            Fault::Kill(n) | Fault::Pause(n) | Fault::PowerLoss(n, _) | Fault::FailFsync(n, _) => {
                Some(*n)
            }
            _ => None,
        };
        let links = |f: &Fault| {
            processes(f).is_none()
                && !matches!(f, Fault::Move(..) | Fault::Membership(_) | Fault::Trim(..))
        };
        match (processes(self), processes(other)) {
            (Some(a), Some(b)) => a != b,
            // Two link faults: healing either heals every link.
            _ => !(links(self) && links(other)),
        }
    }

    /// Whether healing the fault starts processes, which must reach a quorum to report ready:
    /// such faults are healed after the others.
    pub fn heals_processes(&self) -> bool {
        matches!(
            self,
            Fault::Kill(_)
                | Fault::Pause(_)
                | Fault::PowerLoss(..)
                | Fault::PowerLossAll(_)
                | Fault::FailFsync(..)
        )
    }

    /// Injects the fault. Returns `false` if it could not be (a move while one still runs).
    /// Link faults apply to joining nodes too.
    pub(super) async fn inject(
        &self,
        cluster: &mut ProcessCluster,
        moves: &mut Moves,
        membership: &mut MembershipChanges,
    ) -> anyhow::Result<bool> {
        let nodes = cluster.linked_ids();
        match self {
            Fault::Kill(n) => cluster.kill(*n)?,
            Fault::Pause(n) => cluster.pause(*n)?,
            Fault::Isolate(n) => cluster.isolate(*n),
            Fault::Split(side) => {
                for &a in side {
                    for &b in nodes.iter().filter(|b| !side.contains(b)) {
                        cluster.cut(a, b);
                        cluster.cut(b, a);
                    }
                }
            }
            Fault::OneWay { from, to } => cluster.cut(*from, *to),
            Fault::Bridge(bridge) => {
                for &a in &nodes {
                    for &b in &nodes {
                        if a != b && a != *bridge && b != *bridge {
                            cluster.cut(a, b);
                        }
                    }
                }
            }
            Fault::LoseAnswers { from, to } => cluster.link(*from, *to).mute(),
            Fault::Slow(n, ms) => {
                for other in nodes.iter().filter(|&&o| o != *n) {
                    cluster.link(*n, *other).slow(Duration::from_millis(*ms));
                    cluster.link(*other, *n).slow(Duration::from_millis(*ms));
                }
            }
            Fault::PowerLoss(n, seed) => cluster.lose_power(&[*n], *seed)?,
            Fault::PowerLossAll(seed) => cluster.lose_power(&nodes, *seed)?,
            Fault::FailFsync(n, _) => cluster.set_fsync_failing(*n, true)?,
            Fault::Move(partition, pick) => return Ok(moves.start(*partition, *pick, None)),
            Fault::Membership(pick) => membership.step(cluster, moves, *pick).await?,
            Fault::Trim(partition, percent) => return Ok(trim(cluster, *partition, *percent).await),
        }
        Ok(true)
    }

    /// Heals the fault.
    pub async fn heal(&self, cluster: &mut ProcessCluster) -> anyhow::Result<()> {
        match self {
            Fault::Kill(n) => cluster.restart(*n).await?,
            Fault::Pause(n) => cluster.resume(*n)?,
            Fault::LoseAnswers { from, to } => {
                // The lost bytes left its connections unusable: close them first.
                let link = cluster.link(*from, *to);
                link.reset_connections();
                link.unmute();
            }
            Fault::Slow(n, _) => {
                for other in cluster.linked_ids().into_iter().filter(|o| o != n) {
                    cluster.link(*n, other).slow(Duration::ZERO);
                    cluster.link(other, *n).slow(Duration::ZERO);
                }
            }
            Fault::Isolate(_) | Fault::Split(_) | Fault::OneWay { .. } | Fault::Bridge(_) => {
                cluster.heal_all();
            }
            Fault::PowerLoss(n, _) => cluster.restart(*n).await?,
            Fault::PowerLossAll(_) => cluster.start_nodes(&cluster.node_ids()).await?,
            Fault::FailFsync(n, seed) => {
                // Still running if it had nothing to commit; stopped by itself otherwise.
                cluster.lose_power(&[*n], *seed)?;
                cluster.set_fsync_failing(*n, false)?;
                cluster.restart(*n).await?;
            }
            Fault::Move(..) | Fault::Membership(_) | Fault::Trim(..) => {}
        }
        Ok(())
    }
}

/// Deletes the records of `partition` below `percent`% of its high watermark, through any
/// node that answers within a few seconds; returns whether the trim was acknowledged. (A trim
/// that fails or whose answer is lost may still take effect: the checker judges by the final
/// log start, never by what was asked.)
async fn trim(cluster: &ProcessCluster, partition: u32, percent: u64) -> bool {
    const ATTEMPT: Duration = Duration::from_secs(5);
    for node in cluster.node_ids() {
        let attempt = async {
            let client = weir_client::Client::connect(cluster.addr(node).to_string()).await?;
            let end = client
                .list_offsets(super::TOPIC, partition, weir_client::OffsetSpec::Latest)
                .await?
                .high_watermark;
            client
                .delete_records(super::TOPIC, partition, end * percent / 100)
                .await
        };
        if let Ok(Ok(_)) = tokio::time::timeout(ATTEMPT, attempt).await {
            return true;
        }
    }
    false
}
