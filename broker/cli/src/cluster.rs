//! `weir cluster status`: the cluster's nodes, which one leads the controller, and every
//! partition's leader, replicas, in-sync replicas, high watermark and lag.
//!
//! Only a partition's leader knows its followers' state, so the partition table merges the
//! answers of every reachable node, taking each partition from the node that leads it
//! ([`ask_every_node`], which `weir topic describe` and `weir module describe` use too).

use std::collections::BTreeMap;

use anyhow::Context;
use clap::Subcommand;
use weir_client::{Client, ClientError, ClusterInfo, PartitionInfo};

use crate::table;

/// A cluster command.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the cluster id, its nodes and the controller leader.
    Status,
    /// Add a node started with `weir broker --join` to the cluster.
    AddNode {
        /// The new node's id (never used before in this cluster).
        id: u64,
        /// HOST:PORT the new node serves on.
        address: String,
    },
    /// Remove a node that holds no partition replicas from the cluster.
    RemoveNode {
        /// The node's id.
        id: u64,
    },
    /// Move one replica of a partition from one node to another.
    MoveReplica {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The node giving up its replica.
        #[arg(long)]
        from: u64,
        /// The node receiving the replica.
        #[arg(long)]
        to: u64,
    },
}

impl ClusterCommand {
    /// Runs the command against `client`, printing its result to stdout.
    pub async fn run(self, client: &Client) -> anyhow::Result<()> {
        match self {
            Self::Status => {
                let cluster = client
                    .describe_cluster()
                    .await
                    .context("cannot describe the cluster")?;
                print!("{}", status(&cluster));
                let topics: Vec<String> = client
                    .list_topics()
                    .await
                    .context("cannot list topics")?
                    .into_iter()
                    .map(|t| t.name)
                    .collect();
                let partitions = leader_views(client, &cluster, &topics).await;
                if !partitions.is_empty() {
                    print!("\n{}", partition_table(&partitions));
                    print!(
                        "{}",
                        crate::topic::failure_lines(
                            partitions
                                .iter()
                                .map(|((t, p), info)| (format!("{t}/{p}"), info))
                        )
                    );
                }
            }
            Self::AddNode { id, address } => {
                let cluster = client
                    .add_node(id, address.as_str())
                    .await
                    .with_context(|| format!("cannot add node {id} at {address}"))?;
                print!("{}", status(&cluster));
            }
            Self::MoveReplica {
                topic,
                partition,
                from,
                to,
            } => {
                let info = client
                    .move_replica(topic.as_str(), partition, from, to)
                    .await
                    .with_context(|| {
                        format!("cannot move {topic}/{partition} from node {from} to node {to}")
                    })?;
                let replicas = info
                    .partitions
                    .get(partition as usize)
                    .map(|p| p.replicas.clone())
                    .unwrap_or_default();
                println!(
                    "Moved {topic}/{partition} from node {from} to node {to}; replicas now {replicas:?}."
                );
            }
            Self::RemoveNode { id } => {
                let cluster = client
                    .remove_node(id)
                    .await
                    .with_context(|| format!("cannot remove node {id}"))?;
                print!("{}", status(&cluster));
            }
        }
        Ok(())
    }
}

fn status(cluster: &ClusterInfo) -> String {
    let rows: Vec<[String; 3]> = cluster
        .nodes
        .iter()
        .map(|node| {
            let role = if cluster.controller == Some(node.node_id) {
                "controller"
            } else {
                ""
            };
            [
                node.node_id.to_string(),
                node.address.clone(),
                role.to_owned(),
            ]
        })
        .collect();
    let controller = cluster.controller.map_or_else(
        || "none (election in progress)".to_owned(),
        |id| id.to_string(),
    );
    let authorization = if cluster.authorization { "on" } else { "off" };
    let mut out = format!(
        "CLUSTER: {}  CONTROLLER: {controller}  AUTHORIZATION: {authorization}\n\n{}",
        cluster.cluster_id,
        table::render(["NODE", "ADDRESS", "ROLE"], &rows)
    );
    for node in &cluster.nodes {
        for warning in &node.warnings {
            out.push_str(&format!("WARNING: node {}: {warning}\n", node.node_id));
        }
    }
    out
}

/// Asks every node of `cluster` at once, each over a connection of its own, and returns each
/// node's id with its answer, in the cluster's node order. A node that cannot be reached or
/// fails only costs its answer, which is its error.
pub(crate) async fn ask_every_node<T, F, Fut>(
    client: &Client,
    cluster: &ClusterInfo,
    query: F,
) -> Vec<(u64, Result<T, ClientError>)>
where
    F: Fn(Client) -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let asks = cluster.nodes.iter().map(|node| {
        let query = &query;
        async move {
            let answer = match client.connect_to(node.address.as_str()).await {
                Ok(client) => query(client).await,
                Err(err) => Err(err),
            };
            (node.node_id, answer)
        }
    });
    futures::future::join_all(asks).await
}

/// Every partition of `topics`, as its leader describes it (or as the first node that
/// answered does, when no leader answered), keyed by (topic, partition). Only a partition's
/// replicas know its leader, and only the leader knows its followers' state, so every reachable
/// node of `cluster` is asked.
pub(crate) async fn leader_views(
    client: &Client,
    cluster: &ClusterInfo,
    topics: &[String],
) -> BTreeMap<(String, u32), PartitionInfo> {
    let answers = ask_every_node(client, cluster, |client| async move {
        let mut described = Vec::new();
        for topic in topics {
            // A topic a node cannot describe only costs that node's view of it.
            if let Ok(info) = client.describe_topic(topic.as_str()).await {
                described.push((topic.clone(), info.partitions));
            }
        }
        Ok(described)
    })
    .await;
    let mut views: BTreeMap<(String, u32), PartitionInfo> = BTreeMap::new();
    for (node_id, answer) in answers {
        let Ok(described) = answer else {
            continue;
        };
        for (topic, partitions) in described {
            for partition in partitions {
                let key = (topic.clone(), partition.partition);
                let leads = partition.leader == Some(node_id);
                if leads || !views.contains_key(&key) {
                    views.insert(key, partition);
                }
            }
        }
    }
    views
}

fn partition_table(partitions: &BTreeMap<(String, u32), PartitionInfo>) -> String {
    let rows: Vec<[String; 7]> = partitions
        .iter()
        .map(|((topic, partition), info)| {
            let ids = |ids: Vec<u64>| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
            let (in_sync, lag) = if info.replica_status.is_empty() {
                ("?".to_owned(), "?".to_owned())
            } else {
                (
                    ids(info
                        .replica_status
                        .iter()
                        .filter(|r| r.in_sync)
                        .map(|r| r.node_id)
                        .collect()),
                    info.replica_status
                        .iter()
                        .map(|r| r.lag)
                        .max()
                        .unwrap_or(0)
                        .to_string(),
                )
            };
            [
                topic.clone(),
                partition.to_string(),
                crate::topic::leader_cell(info),
                ids(info.replicas.clone()),
                in_sync,
                info.high_watermark.to_string(),
                lag,
            ]
        })
        .collect();
    table::render(
        [
            "TOPIC",
            "PARTITION",
            "LEADER",
            "REPLICAS",
            "IN-SYNC",
            "HIGH-WATERMARK",
            "MAX-LAG",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use weir_client::NodeInfo;

    use super::*;

    #[test]
    fn status_marks_the_controller_and_shows_warnings() {
        let cluster = ClusterInfo {
            cluster_id: "c1".to_owned(),
            controller: Some(2),
            nodes: vec![
                NodeInfo {
                    node_id: 1,
                    address: "10.0.0.1:7070".to_owned(),
                    warnings: vec!["listening beyond loopback without TLS".to_owned()],
                },
                NodeInfo {
                    node_id: 2,
                    address: "10.0.0.2:7070".to_owned(),
                    warnings: Vec::new(),
                },
            ],
            authorization: false,
        };
        assert_eq!(
            status(&cluster),
            "CLUSTER: c1  CONTROLLER: 2  AUTHORIZATION: off\n\
             \n\
             NODE  ADDRESS        ROLE\n\
             1     10.0.0.1:7070\n\
             2     10.0.0.2:7070  controller\n\
             WARNING: node 1: listening beyond loopback without TLS\n"
        );
    }

    #[test]
    fn partition_table_shows_in_sync_replicas_and_the_worst_lag() {
        let status = |node_id, in_sync, lag| weir_client::ReplicaStatus {
            node_id,
            in_sync,
            lag,
        };
        let mut partitions = BTreeMap::new();
        partitions.insert(
            ("t".to_owned(), 0),
            PartitionInfo {
                partition: 0,
                leader: Some(1),
                replicas: vec![1, 2, 3],
                high_watermark: 10,
                log_start_offset: 0,
                first_stored_offset: None,
                stored_bytes: None,
                replica_status: vec![status(1, true, 0), status(2, true, 0), status(3, false, 7)],
                failure: None,
            },
        );
        partitions.insert(
            ("t".to_owned(), 1),
            PartitionInfo {
                partition: 1,
                leader: None,
                replicas: vec![2, 3, 1],
                high_watermark: 0,
                log_start_offset: 0,
                first_stored_offset: None,
                stored_bytes: None,
                replica_status: Vec::new(),
                failure: None,
            },
        );
        assert_eq!(
            partition_table(&partitions),
            "TOPIC  PARTITION  LEADER  REPLICAS  IN-SYNC  HIGH-WATERMARK  MAX-LAG\n\
             t      0          1       1,2,3     1,2      10              7\n\
             t      1          -       2,3,1     ?        0               ?\n"
        );
    }
}
