//! The nemesis: faults chosen by a seeded random source, injected into a [`ProcessCluster`]
//! and healed again.

use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use crate::{NodeId, ProcessCluster};

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
        }
    }
}

impl Fault {
    /// The kind's name, for counting.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Kill(_) => "kill",
            Fault::Pause(_) => "pause",
            Fault::Isolate(_) => "isolate",
            Fault::Split(_) => "split",
            Fault::OneWay { .. } => "one-way",
            Fault::Bridge(_) => "bridge",
            Fault::LoseAnswers { .. } => "lose-answers",
            Fault::Slow(..) => "slow",
        }
    }

    /// A random fault for a cluster of `nodes`.
    pub fn random(rng: &mut StdRng, nodes: &[NodeId]) -> Fault {
        let node = *nodes.choose(rng).expect("a cluster has nodes");
        let other = |rng: &mut StdRng| {
            let others: Vec<NodeId> = nodes.iter().copied().filter(|&n| n != node).collect();
            *others.choose(rng).expect("a cluster of two nodes or more")
        };
        match rng.random_range(0..8) {
            0 => Fault::Kill(node),
            1 => Fault::Pause(node),
            2 => Fault::Isolate(node),
            3 => {
                // A minority side of 1 to (n-1)/2 nodes.
                let mut shuffled = nodes.to_vec();
                rand::seq::SliceRandom::shuffle(shuffled.as_mut_slice(), rng);
                let size = rng.random_range(1..=(nodes.len() - 1) / 2).max(1);
                shuffled.truncate(size);
                shuffled.sort_unstable();
                Fault::Split(shuffled)
            }
            4 => Fault::OneWay {
                from: node,
                to: other(rng),
            },
            5 => Fault::Bridge(node),
            6 => Fault::Slow(node, rng.random_range(20..400)),
            _ => Fault::LoseAnswers {
                from: node,
                to: other(rng),
            },
        }
    }

    /// Whether two faults can be active at once (they must not touch the same node's process
    /// or the same links in ways healing one would undo for the other).
    pub fn combines_with(&self, other: &Fault) -> bool {
        let process = |f: &Fault| match f {
            Fault::Kill(n) | Fault::Pause(n) => Some(*n),
            _ => None,
        };
        match (process(self), process(other)) {
            (Some(a), Some(b)) => a != b,
            (Some(_), None) | (None, Some(_)) => true,
            // Two link faults: healing either heals every link.
            (None, None) => false,
        }
    }

    /// Injects the fault.
    pub fn inject(&self, cluster: &mut ProcessCluster) -> anyhow::Result<()> {
        let nodes = cluster.node_ids();
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
        }
        Ok(())
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
                for other in cluster.node_ids().into_iter().filter(|o| o != n) {
                    cluster.link(*n, other).slow(Duration::ZERO);
                    cluster.link(other, *n).slow(Duration::ZERO);
                }
            }
            Fault::Isolate(_) | Fault::Split(_) | Fault::OneWay { .. } | Fault::Bridge(_) => {
                cluster.heal_all();
            }
        }
        Ok(())
    }
}
