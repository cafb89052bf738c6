//! Damaged record batches on disk: whichever byte of a stored batch is damaged, every read of it
//! (Fetch as records, Fetch as batches, Subscribe) fails with `CORRUPT_DATA` at the batch's
//! offset, the intact batches around it are served unchanged, and the other partitions keep
//! serving; in a cluster, a follower catching up never stores a batch its source holds
//! damaged, and gets the records from a healthy replica instead, and a replica stopped on a
//! damaged batch is repaired by moving it to another node.
//!
//! Damage is done with `weir_storage::fault` on the data of a stopped node.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use tonic::Code;
use weir_proto::error::{metadata_of, reason_of};
use weir_proto::v1 as pb;
use weir_storage::fault;
use weir_tests::{
    InProcessBroker, LeaderRoute, NodeId, ProcessCluster, RawClient, eventually, fetch_all,
};

/// How long one message of a subscription may take to arrive.
const STREAM_WAIT: Duration = Duration::from_secs(20);

/// How long a cluster may take to elect, fail over or catch up. Bounds a hang only.
const GENEROUS: Duration = Duration::from_secs(60);

/// The raft group of the first partition of the first topic created (group 0 is the
/// controller's, and a topic's partitions take the next groups in order).
const FIRST_PARTITION_GROUP: u64 = 1;

fn record(value: &str) -> pb::Record {
    pb::Record {
        key: Some(Bytes::from(format!("key-of-{value}"))),
        value: Bytes::from(value.to_owned()),
        headers: vec![pb::Header {
            key: "h".into(),
            value: Bytes::from(value.to_owned()),
        }],
        timestamp_ms: Some(1_700_000_000_000),
        tombstone: false,
    }
}

fn produce_request(topic: &str, partition: u32, values: &[&str]) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: topic.into(),
        partition: Some(partition),
        records: values.iter().map(|v| record(v)).collect(),
        acks: pb::Acks::All as i32,
        ..Default::default()
    }
}

fn fetch(topic: &str, partition: u32, offset: u64, record_batches: bool) -> pb::FetchRequest {
    pb::FetchRequest {
        topic: topic.into(),
        partition,
        offset: offset as i64,
        record_batches,
        ..Default::default()
    }
}

fn subscribe(
    topic: &str,
    partition: u32,
    offset: u64,
    record_batches: bool,
) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        topic: topic.into(),
        partition,
        start: Some(pb::StartPosition {
            position: Some(pb::start_position::Position::Offset(offset)),
        }),
        record_batches,
        ..Default::default()
    }
}

fn values(records: &[pb::ConsumedRecord]) -> Vec<(u64, String)> {
    records
        .iter()
        .map(|r| (r.offset, String::from_utf8_lossy(&r.value).into_owned()))
        .collect()
}

/// Asserts that `status` reports corruption of the batch at `offset`.
fn assert_corrupt_at(status: &tonic::Status, offset: u64, what: &str) {
    assert_eq!(status.code(), Code::DataLoss, "{what}: {status:?}");
    assert_eq!(
        reason_of(status).as_deref(),
        Some("CORRUPT_DATA"),
        "{what}: {status:?}"
    );
    assert_eq!(
        metadata_of(status, "offset"),
        Some(offset.to_string()),
        "{what}: the error names the damaged batch's offset: {status:?}"
    );
}

/// The first thing a subscription yields: a message, or the error that ends it.
async fn first_streamed(
    c: &mut RawClient,
    request: pb::SubscribeRequest,
) -> anyhow::Result<Result<pb::SubscribeResponse, tonic::Status>> {
    let mut stream = match c.subscribe(request).await {
        Ok(stream) => stream.into_inner(),
        Err(status) => return Ok(Err(status)),
    };
    let item = tokio::time::timeout(STREAM_WAIT, stream.message()).await?;
    Ok(item.and_then(|m| m.ok_or_else(|| tonic::Status::unknown("the stream ended"))))
}

/// A byte of a stored batch to damage, and what the error names.
#[derive(Debug, Clone, Copy)]
struct Damage {
    /// The header field (or part of the records) the byte lies in.
    field: &'static str,
    /// Which byte of the batch; `None` for its last byte (in its last record).
    at: Option<usize>,
    /// What the error message names.
    reported_as: &'static str,
}

impl Damage {
    const fn at(field: &'static str, at: usize, reported_as: &'static str) -> Self {
        Self {
            field,
            at: Some(at),
            reported_as,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_damaged_byte_of_a_stored_batch_is_reported_at_its_offset_and_never_served()
-> anyhow::Result<()> {
    // Partition 0: batch A (offsets 0-1), batch B (2-4, the one damaged), batch C (5-6).
    // Partition 1: one batch, never damaged.
    let broker = InProcessBroker::start().await?;
    let mut c = broker.raw_client().await?;
    c.create_topic(pb::CreateTopicRequest {
        name: "t".into(),
        partitions: 2,
        replication_factor: 1,
        configs: HashMap::new(),
    })
    .await?;
    for batch in [&["a0", "a1"][..], &["b0", "b1", "b2"], &["c0", "c1"]] {
        c.produce(produce_request("t", 0, batch)).await?;
    }
    c.produce(produce_request("t", 1, &["other-0", "other-1"]))
        .await?;
    let intact = c.fetch(fetch("t", 0, 0, true)).await?.into_inner();
    assert_eq!(intact.record_batches.len(), 3);
    let batch_a = intact.record_batches[0].clone();
    let batch_c = intact.record_batches[2].clone();
    let (pristine, _pristine_temp) = broker.stop().await;

    // What the CRC covers (from the attributes on) is caught by the CRC; what it does not is
    // checked against what the log recorded, or is the format's own (length, magic).
    let damages = [
        Damage::at("base offset", 7, "base offset"),
        Damage::at("batch length", 11, "batch length"),
        Damage::at("partition leader epoch", 15, "leader epoch"),
        Damage::at("magic", 16, "magic byte 3"),
        Damage::at("CRC", 19, "checksum"),
        Damage::at("attributes", 21, "checksum"),
        Damage::at("last offset delta", 26, "checksum"),
        Damage::at("record count", 60, "checksum"),
        Damage::at("first record's length", 61, "checksum"),
        Damage {
            field: "last byte of the records",
            at: None,
            reported_as: "checksum",
        },
    ];
    for damage in damages {
        let temp = tempfile::tempdir()?;
        let dir = temp.path().join("data");
        weir_tests::copy_dir(&pristine, &dir)?;
        let db = dir.join("partitions.redb");
        let indexes = fault::batch_indexes(&db, FIRST_PARTITION_GROUP)?;
        assert_eq!(indexes.len(), 3, "partition 0 holds three batches");
        let victim = indexes[1];
        let len = fault::batch_len(&db, FIRST_PARTITION_GROUP, victim)?
            .context("the entry holds a batch")?;
        let at = damage.at.unwrap_or(len - 1);
        assert!(fault::flip_batch_byte(
            &db,
            FIRST_PARTITION_GROUP,
            victim,
            at
        )?);
        let what = format!("{} (byte {at} of {len})", damage.field);

        let broker = InProcessBroker::start_in(&dir).await?;
        let mut c = broker.raw_client().await?;
        // Every read that reaches the damaged batch fails, at its offset.
        for (offset, batches) in [(2, false), (3, false), (2, true), (4, true)] {
            let status = c
                .fetch(fetch("t", 0, offset, batches))
                .await
                .expect_err("a damaged batch must not be served");
            let read = format!("{what}: fetch from {offset}, record_batches {batches}");
            assert_corrupt_at(&status, 2, &read);
            assert!(
                status.message().contains(damage.reported_as),
                "{read}: the message should name the damage ({}): {}",
                damage.reported_as,
                status.message()
            );
        }
        for batches in [false, true] {
            let read = format!("{what}: subscribe from 2, record_batches {batches}");
            let status = first_streamed(&mut c, subscribe("t", 0, 2, batches))
                .await?
                .expect_err(&read);
            assert_corrupt_at(&status, 2, &read);
        }

        // Reads from before it get the intact batch before it, and nothing else.
        let records = c.fetch(fetch("t", 0, 0, false)).await?.into_inner();
        assert_eq!(
            values(&records.records),
            vec![(0, "a0".into()), (1, "a1".into())],
            "{what}"
        );
        assert_eq!(records.next_offset, 2, "{what}");
        let batches = c.fetch(fetch("t", 0, 0, true)).await?.into_inner();
        assert_eq!(batches.record_batches, vec![batch_a.clone()], "{what}");
        assert_eq!(batches.next_offset, 2, "{what}");
        let mut stream = c.subscribe(subscribe("t", 0, 0, true)).await?.into_inner();
        let first = tokio::time::timeout(STREAM_WAIT, stream.message())
            .await??
            .context("the subscription ended")?;
        assert_eq!(first.record_batches, vec![batch_a.clone()], "{what}");
        let status = tokio::time::timeout(STREAM_WAIT, stream.message())
            .await?
            .expect_err("the subscription stops at the damaged batch");
        assert_corrupt_at(&status, 2, &format!("{what}: subscription from 0"));

        // The intact batch after it is served as it was.
        let after = c.fetch(fetch("t", 0, 5, true)).await?.into_inner();
        assert_eq!(after.record_batches, vec![batch_c.clone()], "{what}");
        let after = c.fetch(fetch("t", 0, 5, false)).await?.into_inner();
        assert_eq!(
            values(&after.records),
            vec![(5, "c0".into()), (6, "c1".into())],
            "{what}"
        );

        // The other partition serves and takes writes.
        assert_eq!(
            values(&fetch_all(&mut c, "t", 1).await?),
            vec![(0, "other-0".into()), (1, "other-1".into())],
            "{what}"
        );
        let produced = c
            .produce(produce_request("t", 1, &["other-2"]))
            .await?
            .into_inner();
        assert_eq!(produced.base_offset, Some(2), "{what}");
        broker.stop().await;
    }
    Ok(())
}

/// Produces `values` as one batch through whichever of `nodes` leads (stored at most once:
/// [`ProcessCluster::produce_acked`]); returns the base offset.
async fn produce_acked(
    cluster: &ProcessCluster,
    nodes: &[NodeId],
    topic: &str,
    values: &[&str],
) -> anyhow::Result<u64> {
    let records = values.iter().map(|v| record(v)).collect();
    Ok(cluster.produce_acked(nodes, topic, 0, records).await?.1)
}

/// A partition whose leader holds a damaged copy of a batch a follower still needs, with its
/// replica stopped by the damage: what `damage_the_leaders_copy` leaves behind.
struct DamagedLeader {
    /// The node whose copy is damaged (the partition's leader when the damage was made).
    damaged: NodeId,
    /// The follower that missed the later batches and was caught up from the damaged node.
    behind: NodeId,
    /// The third replica, which holds every batch intact (cut off from the others on return).
    healthy: NodeId,
    /// Every value produced, in offset order from 0.
    produced: Vec<String>,
    /// The offset of the damaged batch.
    damaged_offset: u64,
    /// What the damaged node's failure says.
    needle: String,
}

/// On a partition of `topic` replicated on `replicas` (three nodes): two batches every replica
/// has; one follower stops and three more batches go to the other two; the leader stops, the
/// middle of those three is damaged in its copy, and it restarts; the healthy replica is cut
/// off and the follower restarts, so the damaged node is the only one that can lead (the
/// follower's log is behind) and must read the damaged batch to catch the follower up. Returns
/// once the damaged node's replica stopped on it. The healthy node is still cut off.
async fn damage_the_leaders_copy(
    cluster: &mut ProcessCluster,
    replicas: &[NodeId],
    topic: &str,
) -> anyhow::Result<DamagedLeader> {
    let mut produced: Vec<String> = Vec::new();
    for b in 0..2 {
        let values: Vec<String> = (0..2).map(|i| format!("early-{b}-{i}")).collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let base = produce_acked(cluster, replicas, topic, &refs).await?;
        assert_eq!(base, produced.len() as u64);
        produced.extend(values);
    }
    for &node in replicas {
        cluster
            .wait_for_high_watermark(node, topic, 0, produced.len() as u64)
            .await?;
    }

    let damaged = cluster.leader_among(replicas, topic, 0).await?;
    let others: Vec<NodeId> = replicas.iter().copied().filter(|&n| n != damaged).collect();
    let (behind, healthy) = (others[0], others[1]);
    assert!(cluster.terminate(behind)?, "node {behind} stops cleanly");

    let mut bases = Vec::new();
    for b in 0..3 {
        let values: Vec<String> = (0..3).map(|i| format!("late-{b}-{i}")).collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let base = produce_acked(cluster, &[damaged, healthy], topic, &refs).await?;
        assert_eq!(base, produced.len() as u64);
        bases.push(base);
        produced.extend(values);
    }
    let total = produced.len() as u64;
    for node in [damaged, healthy] {
        cluster
            .wait_for_high_watermark(node, topic, 0, total)
            .await?;
    }

    assert!(cluster.terminate(damaged)?, "node {damaged} stops cleanly");
    let db = cluster.data_dir(damaged).join("partitions.redb");
    let indexes = fault::batch_indexes(&db, FIRST_PARTITION_GROUP)?;
    assert_eq!(indexes.len(), 5, "node {damaged} holds all five batches");
    assert!(fault::flip_last_byte(
        &db,
        FIRST_PARTITION_GROUP,
        indexes[3]
    )?);
    cluster.restart(damaged).await?;

    cluster.isolate(healthy);
    cluster.restart(behind).await?;
    let damaged_offset = bases[1];
    let needle = format!("corrupt batch at offset {damaged_offset}");
    let failure = eventually(GENEROUS, "the damaged node's replica to stop", || async {
        cluster.partition_on(damaged, topic, 0).await?.failure
    })
    .await?;
    assert!(failure.contains(&needle), "{failure}");
    Ok(DamagedLeader {
        damaged,
        behind,
        healthy,
        produced,
        damaged_offset,
        needle,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_catching_up_never_stores_a_batch_its_leader_holds_damaged() -> anyhow::Result<()>
{
    let mut cluster = ProcessCluster::start(Path::new(crate::WEIR), 3).await?;
    let topic = "replicated";
    let created = cluster
        .client(1)?
        .create_topic(pb::CreateTopicRequest {
            name: topic.into(),
            partitions: 1,
            replication_factor: 3,
            configs: HashMap::new(),
        })
        .await?
        .into_inner()
        .topic
        .context("CreateTopic describes the topic")?;
    let replicas = sorted_replicas(&created.partitions[0]);
    assert_eq!(replicas, vec![1, 2, 3]);
    let DamagedLeader {
        damaged,
        behind,
        healthy,
        produced,
        damaged_offset,
        needle,
    } = damage_the_leaders_copy(&mut cluster, &replicas, topic).await?;
    let total = produced.len() as u64;
    let so_far = cluster.read_partition(behind, topic, 0).await?;
    assert!(
        so_far.len() < total as usize,
        "the follower cannot have caught up from the damaged node alone: {}",
        so_far.len()
    );
    assert_eq!(
        values(&so_far),
        expected(&produced[..so_far.len()]),
        "the follower serves only what was produced"
    );

    // Once the healthy node is back it catches the follower up: every record as produced,
    // as the healthy node serves it.
    cluster.heal_all();
    cluster
        .wait_for_high_watermark(behind, topic, 0, total)
        .await?;
    let from_behind = cluster.read_partition(behind, topic, 0).await?;
    let from_healthy = cluster.read_partition(healthy, topic, 0).await?;
    assert_eq!(values(&from_behind), expected(&produced));
    assert_eq!(
        from_behind, from_healthy,
        "keys, headers and timestamps too"
    );
    let mut batches = Vec::new();
    for node in [behind, healthy] {
        let stored = cluster
            .client(node)?
            .fetch(fetch(topic, 0, 0, true))
            .await?
            .into_inner();
        assert_eq!(stored.next_offset, total, "node {node} serves every batch");
        batches.push(stored.record_batches);
    }
    assert_eq!(batches[0], batches[1], "the same batches, bit for bit");

    // The damaged node serves nothing of the partition, and says why: the damaged batch, at
    // its offset.
    let mut on_damaged = cluster.client(damaged)?;
    for batches in [false, true] {
        let status = on_damaged
            .fetch(fetch(topic, 0, damaged_offset, batches))
            .await
            .expect_err("the damaged batch must not be served");
        assert!(status.message().contains(&needle), "{status:?}");
        assert_corrupt_at(
            &status,
            damaged_offset,
            &format!("node {damaged}, record_batches {batches}"),
        );
    }
    Ok(())
}

/// `values` as `values()` reports them when stored from offset 0.
fn expected(values: &[String]) -> Vec<(u64, String)> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u64, v.clone()))
        .collect()
}

/// Sends `MoveReplica` for partition 0 of `topic` to `leader`, following `NOT_LEADER` hints
/// among `nodes`, and returns the topic as the answering node describes it afterwards. Only
/// `NOT_LEADER` is retried: a move refused with it changed nothing or stopped halfway with an
/// extra replica, which a re-run completes.
async fn move_replica_on_leader(
    cluster: &ProcessCluster,
    leader: NodeId,
    nodes: &[NodeId],
    topic: &str,
    (from, to): (NodeId, NodeId),
) -> anyhow::Result<pb::TopicDescription> {
    let mut route = LeaderRoute::new(nodes.iter().map(|&id| (id, cluster.addr(id))).collect());
    route.go_to(leader);
    let request = pb::MoveReplicaRequest {
        topic: topic.into(),
        partition: 0,
        from_node: from,
        to_node: to,
    };
    let deadline = tokio::time::Instant::now() + GENEROUS;
    loop {
        let (node, _) = route.target();
        let mut client = cluster.client(node)?;
        let answer = tokio::time::timeout(GENEROUS, client.move_replica(request.clone()))
            .await
            .with_context(|| format!("MoveReplica on node {node} got no answer in {GENEROUS:?}"))?;
        let status = match answer {
            Ok(response) => {
                return response
                    .into_inner()
                    .topic
                    .context("MoveReplica describes the topic");
            }
            Err(status) => status,
        };
        anyhow::ensure!(
            reason_of(&status).as_deref() == Some("NOT_LEADER")
                && tokio::time::Instant::now() < deadline,
            "MoveReplica {from} -> {to} on node {node} failed: {status:?}"
        );
        route.failed(&status);
        // Not synchronisation: a pause between attempts while an election settles.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The replicas `description` lists, sorted.
fn sorted_replicas(description: &pb::PartitionDescription) -> Vec<NodeId> {
    let mut replicas = description.replicas.clone();
    replicas.sort_unstable();
    replicas
}

/// The operators' repair for a replica stopped on a damaged batch (docs/operations.md,
/// "Damaged data"): moving it to another node gives that node every batch, intact, from the
/// leader, drops the damaged replica from the metadata and its data from its node, and leaves
/// the partition taking writes on three healthy replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_on_damage_is_replaced_by_moving_it() -> anyhow::Result<()> {
    let mut cluster = ProcessCluster::start(Path::new(crate::WEIR), 4).await?;
    let topic = "repaired";
    let created = cluster
        .client(1)?
        .create_topic(pb::CreateTopicRequest {
            name: topic.into(),
            partitions: 1,
            replication_factor: 3,
            configs: HashMap::new(),
        })
        .await?
        .into_inner()
        .topic
        .context("CreateTopic describes the topic")?;
    let replicas = sorted_replicas(&created.partitions[0]);
    assert_eq!(replicas.len(), 3, "{created:?}");
    let spare = cluster
        .node_ids()
        .into_iter()
        .find(|n| !replicas.contains(n))
        .context("4 nodes, 3 replicas: one node is spare")?;

    let DamagedLeader {
        damaged,
        behind,
        healthy,
        mut produced,
        damaged_offset,
        ..
    } = damage_the_leaders_copy(&mut cluster, &replicas, topic).await?;
    let total = produced.len() as u64;
    let damaged_db = cluster.data_dir(damaged).join("partitions.redb");

    // The healthy replicas elect a leader among themselves and catch up.
    cluster.heal_all();
    for node in [healthy, behind] {
        cluster
            .wait_for_high_watermark(node, topic, 0, total)
            .await?;
    }
    let leader = cluster.leader_among(&[healthy, behind], topic, 0).await?;

    // The repair: the damaged node's replica moves to the spare node.
    let moved = move_replica_on_leader(
        &cluster,
        leader,
        &[healthy, behind],
        topic,
        (damaged, spare),
    )
    .await?;
    let mut current = vec![healthy, behind, spare];
    current.sort_unstable();
    assert_eq!(sorted_replicas(&moved.partitions[0]), current, "{moved:?}");
    for node in cluster.node_ids() {
        let what = format!("node {node}'s metadata to drop node {damaged}'s replica");
        let seen = eventually(GENEROUS, &what, || async {
            let view = cluster.partition_on(node, topic, 0).await?;
            (!view.replicas.contains(&damaged)).then_some(view)
        })
        .await?;
        assert_eq!(sorted_replicas(&seen), current, "node {node}: {seen:?}");
    }

    // The new replica serves every record produced, as the healthy ones do, in the same
    // batches bit for bit: it copied them from the leader, not from the damaged node.
    cluster
        .wait_for_high_watermark(spare, topic, 0, total)
        .await?;
    let from_healthy = cluster.read_partition(healthy, topic, 0).await?;
    assert_eq!(values(&from_healthy), expected(&produced));
    for node in [behind, spare] {
        let records = cluster.read_partition(node, topic, 0).await?;
        assert_eq!(
            records, from_healthy,
            "node {node}: keys, headers, timestamps"
        );
    }
    let mut batches = Vec::new();
    for node in current.iter().copied() {
        let stored = cluster
            .client(node)?
            .fetch(fetch(topic, 0, 0, true))
            .await?
            .into_inner();
        assert_eq!(stored.next_offset, total, "node {node} serves every batch");
        assert_eq!(stored.record_batches.len(), 5, "node {node}");
        batches.push((node, stored.record_batches));
    }
    for (node, stored) in &batches[1..] {
        assert_eq!(
            stored, &batches[0].1,
            "node {node} holds node {}'s batches, bit for bit",
            batches[0].0
        );
    }

    // The damaged node no longer hosts the partition: no failure to report, and reads are sent
    // to a replica instead of meeting the damaged batch.
    eventually(GENEROUS, "the damaged node to drop its replica", || async {
        let view = cluster.partition_on(damaged, topic, 0).await?;
        view.failure.is_none().then_some(())
    })
    .await?;
    for batches in [false, true] {
        let status = cluster
            .client(damaged)?
            .fetch(fetch(topic, 0, damaged_offset, batches))
            .await
            .expect_err("a node without a replica serves no reads of it");
        assert_eq!(
            reason_of(&status).as_deref(),
            Some("NOT_LEADER"),
            "node {damaged}, record_batches {batches}: {status:?}"
        );
    }

    // The partition takes writes on its three current replicas.
    let after = ["after-0", "after-1"];
    let base = produce_acked(&cluster, &current, topic, &after).await?;
    assert_eq!(
        base, total,
        "the write after the repair follows every record"
    );
    produced.extend(after.map(str::to_owned));
    let total = produced.len() as u64;
    for &node in &current {
        cluster
            .wait_for_high_watermark(node, topic, 0, total)
            .await?;
        let records = cluster.read_partition(node, topic, 0).await?;
        assert_eq!(values(&records), expected(&produced), "node {node}");
    }

    // The damaged node deleted the replica's data when its metadata dropped the replica.
    assert!(cluster.terminate(damaged)?, "node {damaged} stops cleanly");
    let left = fault::batch_indexes(&damaged_db, FIRST_PARTITION_GROUP)?;
    assert!(
        left.is_empty(),
        "node {damaged} still stores batches of the moved replica at indexes {left:?}"
    );
    Ok(())
}
