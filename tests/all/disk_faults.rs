//! Disk faults on real broker processes, through the simulated disk of `weir_tests::disk`: an
//! fsync that fails, and power lost with writes not yet synced.

use std::path::Path;

use bytes::Bytes;
use weir_proto::v1 as pb;
use weir_tests::ProcessCluster;
use weir_tests::disk::DiskMode;

const TOPIC: &str = "disk";

fn records(values: &[String]) -> Vec<pb::Record> {
    values
        .iter()
        .map(|v| pb::Record {
            value: Bytes::copy_from_slice(v.as_bytes()),
            ..Default::default()
        })
        .collect()
}

async fn three_nodes_on_simulated_disks() -> anyhow::Result<ProcessCluster> {
    let mut cluster = ProcessCluster::new(Path::new(crate::WEIR), 3).await?;
    cluster.simulate_disks(DiskMode::Honest);
    cluster.start_nodes(&cluster.node_ids()).await?;
    cluster
        .client(1)?
        .create_topic(pb::CreateTopicRequest {
            name: TOPIC.into(),
            partitions: 1,
            replication_factor: 3,
            ..Default::default()
        })
        .await?;
    Ok(cluster)
}

/// Produces `{prefix}-0` to `{prefix}-4`, one request each, through whichever of `nodes` leads;
/// records each at the offset it was acknowledged at.
async fn produce_five(
    cluster: &ProcessCluster,
    nodes: &[weir_tests::NodeId],
    prefix: &str,
    acked: &mut Vec<(u64, String)>,
) -> anyhow::Result<()> {
    for i in 0..5 {
        let value = format!("{prefix}-{i}");
        let (_, base) = cluster
            .produce_acked(nodes, TOPIC, 0, records(std::slice::from_ref(&value)))
            .await?;
        acked.push((base, value));
    }
    Ok(())
}

/// The values every node serves of the partition, once all agree on a high watermark of at
/// least `at_least`.
async fn every_replica(
    cluster: &ProcessCluster,
    at_least: u64,
) -> anyhow::Result<Vec<Vec<(u64, Bytes)>>> {
    let mut replicas = Vec::new();
    for node in cluster.node_ids() {
        cluster
            .wait_for_high_watermark(node, TOPIC, 0, at_least)
            .await?;
        let records = cluster.read_partition(node, TOPIC, 0).await?;
        replicas.push(records.into_iter().map(|r| (r.offset, r.value)).collect());
    }
    Ok(replicas)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_fsync_fails_acknowledges_nothing_and_another_takes_over()
-> anyhow::Result<()> {
    weir_tests::init_tracing();
    let mut cluster = three_nodes_on_simulated_disks().await?;
    let nodes = cluster.node_ids();
    let mut acked = Vec::new();
    produce_five(&cluster, &nodes, "before", &mut acked).await?;
    let failing = cluster.leader_of(TOPIC, 0).await?;
    cluster.set_fsync_failing(failing, true)?;

    // Straight to the failing leader, no retries: never acknowledged.
    let answer = cluster
        .client(failing)?
        .produce(pb::ProduceRequest {
            topic: TOPIC.into(),
            partition: Some(0),
            records: records(&["during".to_owned()]),
            acks: pb::Acks::All as i32,
            ..Default::default()
        })
        .await;
    assert!(
        answer.is_err(),
        "node {failing} acknowledged a write it could not sync: {answer:?}"
    );
    // Its storage failed, so it stops rather than serve on without acknowledging.
    let status = cluster.wait_for_exit(failing).await?;
    assert_eq!(
        status.code(),
        Some(1),
        "node {failing} exited with {status}"
    );

    // The others elect a leader among themselves and go on.
    let others: Vec<_> = nodes.iter().copied().filter(|&n| n != failing).collect();
    let new_leader = cluster.leader_among(&others, TOPIC, 0).await?;
    assert_ne!(new_leader, failing);
    produce_five(&cluster, &others, "after", &mut acked).await?;

    // The failed node comes back (its disk may have dropped what it had not synced) and
    // catches up: every replica holds every acknowledged record, once, where it was
    // acknowledged.
    cluster.lose_power(&[failing], 7)?;
    cluster.set_fsync_failing(failing, false)?;
    cluster.restart(failing).await?;
    let high = acked.iter().map(|(o, _)| o + 1).max().unwrap_or(0);
    let replicas = every_replica(&cluster, high).await?;
    for (node, replica) in nodes.iter().zip(&replicas) {
        assert_eq!(replica, &replicas[0], "node {node} differs from node 1");
        for (offset, value) in &acked {
            assert_eq!(
                replica.get(*offset as usize).map(|(o, v)| (*o, v.as_ref())),
                Some((*offset, value.as_bytes())),
                "node {node}: acknowledged {value} at {offset}"
            );
        }
        let during = replica
            .iter()
            .filter(|(_, v)| v.as_ref() == b"during")
            .count();
        assert!(
            during <= 1,
            "node {node} stores the unacknowledged write {during} times"
        );
    }
    Ok(())
}
