//! `weir cluster status`: the cluster's nodes and which one leads the controller.

use anyhow::Context;
use clap::Subcommand;
use weir_client::{Client, ClusterInfo};

use crate::table;

/// A cluster command.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the cluster id, its nodes and the controller leader.
    Status,
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
    format!(
        "CLUSTER: {}  CONTROLLER: {controller}\n\n{}",
        cluster.cluster_id,
        table::render(["NODE", "ADDRESS", "ROLE"], &rows)
    )
}

#[cfg(test)]
mod tests {
    use weir_client::NodeInfo;

    use super::*;

    #[test]
    fn status_marks_the_controller() {
        let cluster = ClusterInfo {
            cluster_id: "c1".to_owned(),
            controller: Some(2),
            nodes: vec![
                NodeInfo {
                    node_id: 1,
                    address: "10.0.0.1:7070".to_owned(),
                },
                NodeInfo {
                    node_id: 2,
                    address: "10.0.0.2:7070".to_owned(),
                },
            ],
        };
        assert_eq!(
            status(&cluster),
            "CLUSTER: c1  CONTROLLER: 2\n\
             \n\
             NODE  ADDRESS        ROLE\n\
             1     10.0.0.1:7070\n\
             2     10.0.0.2:7070  controller\n"
        );
    }
}
