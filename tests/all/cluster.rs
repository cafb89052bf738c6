//! Three-node clusters of real `weir broker` processes: replication, leader failover under
//! SIGKILL and SIGSTOP, network partitions, catch-up after restart, loss of quorum, cluster
//! formation, and bad cluster configuration.
//!
//! Every test builds its own cluster ([`ProcessCluster`]); peer links go through proxies the
//! test cuts to make partitions. Producers follow `NOT_LEADER` hints and move to another node
//! on other failures, like a real client would ([`LeaderRoute`]).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::weir;
use anyhow::Context;
use bytes::Bytes;
use tonic::Code;
use weir_proto::error::reason_of;
use weir_proto::v1 as pb;
use weir_proto::v1::broker_client::BrokerClient;
use weir_tests::test_broker::BuiltInFault;
use weir_tests::{
    LeaderRoute, NodeId, ProcessCluster, RaftTimings, eventually, lazy_channel, run_to_exit,
};

/// How long one produce attempt may take before the producer gives up on it and moves on.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a failover, election or catch-up may take before a test fails. Generous: this
/// bounds a hang, it does not measure speed.
const GENEROUS: Duration = Duration::from_secs(30);

/// A record that exercises every field: key, value, a header and (mostly) an explicit
/// timestamp; every fifth record leaves the timestamp to the broker.
fn record(tag: &str, seq: u64) -> pb::Record {
    pb::Record {
        key: Some(Bytes::from(format!("key-{}", seq % 7))),
        value: Bytes::from(format!("{tag}-{seq}")),
        headers: vec![pb::Header {
            key: "tag".into(),
            value: Bytes::from(tag.to_owned()),
        }],
        timestamp_ms: (!seq.is_multiple_of(5)).then_some(1_700_000_000_000 + seq as i64),
        tombstone: false,
    }
}

fn batch(tag: &str, from: u64, count: u64) -> Vec<pb::Record> {
    (from..from + count).map(|seq| record(tag, seq)).collect()
}

fn produce_request(topic: &str, partition: u32, records: Vec<pb::Record>) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: topic.into(),
        partition: Some(partition),
        records,
        acks: pb::Acks::All as i32,
        ..Default::default()
    }
}

/// Whether `stored` is what `produced` asked to store (a broker-stamped timestamp is only
/// known to be set).
fn same_record(stored: &pb::ConsumedRecord, produced: &pb::Record) -> bool {
    stored.key == produced.key
        && stored.value == produced.value
        && stored.headers == produced.headers
        && produced
            .timestamp_ms
            .is_none_or(|t| t == stored.timestamp_ms)
}

fn value_of(record: &pb::ConsumedRecord) -> String {
    String::from_utf8_lossy(&record.value).into_owned()
}

/// Creates `topic` with `partitions` partitions on 3 replicas and waits until every partition
/// has a leader all nodes agree on.
async fn create_replicated_topic(
    cluster: &ProcessCluster,
    topic: &str,
    partitions: u32,
) -> anyhow::Result<()> {
    let mut admin = cluster.client(1)?;
    let created = admin
        .create_topic(pb::CreateTopicRequest {
            name: topic.into(),
            partitions,
            replication_factor: 3,
            configs: HashMap::new(),
        })
        .await?
        .into_inner()
        .topic
        .context("CreateTopic describes the topic")?;
    assert_eq!(created.replication_factor, 3);
    for p in &created.partitions {
        let mut replicas = p.replicas.clone();
        replicas.sort_unstable();
        assert_eq!(
            replicas,
            vec![1, 2, 3],
            "partition {} is on every node",
            p.partition
        );
    }
    for partition in 0..partitions {
        cluster.leader_of(topic, partition).await?;
    }
    Ok(())
}

/// [`ProcessCluster::produce_acked`]: stored at most once, through whichever of `nodes` leads.
async fn produce_acked(
    cluster: &ProcessCluster,
    nodes: &[NodeId],
    topic: &str,
    partition: u32,
    records: Vec<pb::Record>,
) -> anyhow::Result<(NodeId, u64)> {
    cluster
        .produce_acked(nodes, topic, partition, records)
        .await
}

/// Asserts that `stored` holds `produced` from offset `base` on.
fn assert_stored_at(
    stored: &[pb::ConsumedRecord],
    base: u64,
    produced: &[pb::Record],
    node: NodeId,
) {
    for (i, record) in produced.iter().enumerate() {
        let offset = base as usize + i;
        let found = stored.get(offset);
        assert!(
            found.is_some_and(|s| same_record(s, record)),
            "node {node}: offset {offset} holds {found:?}, expected {record:?}"
        );
    }
}

/// Waits until every node in `nodes` has the high watermark the leader of the partition has
/// now, and returns what each one serves. Use once writes have stopped.
async fn converged_copies(
    cluster: &ProcessCluster,
    nodes: &[NodeId],
    topic: &str,
    partition: u32,
) -> anyhow::Result<BTreeMap<NodeId, Vec<pb::ConsumedRecord>>> {
    let leader = cluster.leader_among(nodes, topic, partition).await?;
    let mut high_watermark = cluster
        .partition_on(leader, topic, partition)
        .await
        .context("the leader answers")?
        .high_watermark;
    // A leader elected a moment ago reports a high watermark only once it has committed in
    // its term; until then a follower may know a higher (committed, so still valid) one.
    for &node in nodes {
        if let Some(description) = cluster.partition_on(node, topic, partition).await {
            high_watermark = high_watermark.max(description.high_watermark);
        }
    }
    let mut copies = BTreeMap::new();
    for &node in nodes {
        let reached = cluster
            .wait_for_high_watermark(node, topic, partition, high_watermark)
            .await?;
        assert_eq!(
            reached, high_watermark,
            "node {node} is not ahead of the leader"
        );
        copies.insert(node, cluster.read_partition(node, topic, partition).await?);
    }
    Ok(copies)
}

/// Asserts that every node serves the same records: offsets, keys, values, headers and
/// timestamps. Returns that one list.
fn assert_identical(copies: &BTreeMap<NodeId, Vec<pb::ConsumedRecord>>) -> Vec<pb::ConsumedRecord> {
    let (&first, reference) = copies.iter().next().expect("at least one node");
    for (&node, copy) in copies {
        assert_eq!(
            copy.len(),
            reference.len(),
            "node {node} serves {} records, node {first} serves {}",
            copy.len(),
            reference.len()
        );
        for (a, b) in copy.iter().zip(reference) {
            assert_eq!(
                a, b,
                "node {node} and node {first} differ at offset {}",
                b.offset
            );
        }
    }
    reference.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_and_serve_from_every_node() -> anyhow::Result<()> {
    let cluster = ProcessCluster::start(weir(), 3).await?;
    let topic = "replicated";
    create_replicated_topic(&cluster, topic, 3).await?;

    let all = cluster.node_ids();
    let mut produced: BTreeMap<u32, Vec<pb::Record>> = BTreeMap::new();
    for partition in 0..3 {
        let leader = cluster.leader_of(topic, partition).await?;
        let mut nodes = vec![leader];
        nodes.extend(all.iter().filter(|&&n| n != leader));
        for b in 0..4 {
            let records = batch(&format!("p{partition}"), b * 5, 5);
            let (_, base) =
                produce_acked(&cluster, &nodes, topic, partition, records.clone()).await?;
            let log = produced.entry(partition).or_default();
            assert_eq!(base, log.len() as u64, "offsets follow each other");
            log.extend(records);
        }
    }

    for (&partition, records) in &produced {
        let copies = converged_copies(&cluster, &all, topic, partition).await?;
        for (&node, copy) in &copies {
            assert_eq!(
                copy.len(),
                records.len(),
                "node {node}, partition {partition}"
            );
            assert_stored_at(copy, 0, records, node);
        }
        assert_identical(&copies);
    }
    Ok(())
}

/// What the producers of the SIGKILL test had acknowledged.
#[derive(Default)]
struct Ledger {
    /// Offset → the node that acknowledged it and the record.
    acked: BTreeMap<u64, (NodeId, pb::Record)>,
    /// Offsets acknowledged twice: must stay empty.
    repeated: Vec<(u64, String, String)>,
}

impl Ledger {
    fn record(&mut self, node: NodeId, base: u64, records: Vec<pb::Record>) {
        for (i, record) in records.into_iter().enumerate() {
            let offset = base + i as u64;
            let value = String::from_utf8_lossy(&record.value).into_owned();
            if let Some((_, earlier)) = self.acked.insert(offset, (node, record)) {
                self.repeated.push((
                    offset,
                    String::from_utf8_lossy(&earlier.value).into_owned(),
                    value,
                ));
            }
        }
    }

    fn acked_by_other_than(&self, node: NodeId) -> usize {
        self.acked.values().filter(|(n, _)| *n != node).count()
    }
}

/// Streams batches of 3 records (acks=all) until `stop`, never resending a batch (a failed
/// batch may or may not be stored; the next one gets new values) and recording what was
/// acknowledged where.
async fn stream_producer(
    tag: String,
    nodes: Vec<(NodeId, SocketAddr)>,
    first: NodeId,
    topic: &'static str,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut channels = BTreeMap::new();
    for &(id, addr) in &nodes {
        channels.insert(id, lazy_channel(addr)?);
    }
    let mut route = LeaderRoute::new(nodes);
    route.go_to(first);
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        let (node, _) = route.target();
        let records = batch(&tag, seq, 3);
        seq += 3;
        let mut client = BrokerClient::new(channels[&node].clone());
        let request = produce_request(topic, 0, records.clone());
        let status = match tokio::time::timeout(ATTEMPT_TIMEOUT, client.produce(request)).await {
            Ok(Ok(response)) => {
                let base = response
                    .into_inner()
                    .base_offset
                    .context("acks=all returns a base offset")?;
                ledger.lock().expect("ledger").record(node, base, records);
                continue;
            }
            Ok(Err(status)) => status,
            Err(_) => tonic::Status::deadline_exceeded("no answer"),
        };
        route.failed(&status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sigkill_mid_stream_loses_nothing_acknowledged() -> anyhow::Result<()> {
    const TOPIC: &str = "failover";
    let mut cluster = ProcessCluster::start(weir(), 3).await?;
    create_replicated_topic(&cluster, TOPIC, 1).await?;
    let leader = cluster.leader_of(TOPIC, 0).await?;

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..3)
        .map(|i| {
            tokio::spawn(stream_producer(
                format!("producer{i}"),
                cluster.addrs(),
                leader,
                TOPIC,
                ledger.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let acked_count = || ledger.lock().expect("ledger").acked.len();

    // Kill at a point that varies from run to run, with the producers in full flight.
    let kill_after = 60 + (std::process::id() as usize % 60);
    eventually(GENEROUS, "acknowledged records before the kill", || {
        let n = acked_count();
        async move { (n >= kill_after).then_some(()) }
    })
    .await?;
    cluster.kill(leader)?;
    eprintln!(
        "killed the leader, node {leader}, after {} acknowledged records",
        acked_count()
    );

    eventually(GENEROUS, "writes acknowledged by a new leader", || {
        let n = ledger.lock().expect("ledger").acked_by_other_than(leader);
        async move { (n >= 60).then_some(()) }
    })
    .await?;
    let survivors: Vec<NodeId> = cluster
        .node_ids()
        .into_iter()
        .filter(|&n| n != leader)
        .collect();
    let new_leader = cluster.leader_among(&survivors, TOPIC, 0).await?;
    assert_ne!(new_leader, leader);
    eprintln!(
        "node {new_leader} leads; {} records acknowledged",
        acked_count()
    );
    stop.store(true, Ordering::Relaxed);
    for producer in producers {
        producer.await??;
    }

    let ledger = std::mem::take(&mut *ledger.lock().expect("ledger"));
    assert!(
        ledger.repeated.is_empty(),
        "offsets acknowledged twice (offset, first value, second value): {:?}",
        ledger.repeated
    );
    assert!(ledger.acked.len() >= kill_after + 60);
    let last_acked = *ledger
        .acked
        .keys()
        .next_back()
        .expect("acknowledged records");

    // Every acknowledged record is at its acknowledged offset on every live node.
    for &node in &survivors {
        cluster
            .wait_for_high_watermark(node, TOPIC, 0, last_acked + 1)
            .await?;
        let stored = cluster.read_partition(node, TOPIC, 0).await?;
        for (&offset, (by, record)) in &ledger.acked {
            let found = stored.get(offset as usize);
            assert!(
                found.is_some_and(|s| same_record(s, record)),
                "node {node}: offset {offset} (acknowledged by node {by}) holds {found:?}, expected {record:?}"
            );
        }
    }

    // The killed node comes back, catches up, and all three serve byte-identical logs.
    cluster.restart(leader).await?;
    let copies = converged_copies(&cluster, &cluster.node_ids(), TOPIC, 0).await?;
    let log = assert_identical(&copies);
    assert!(log.len() as u64 > last_acked);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_minority_leader_cannot_acknowledge() -> anyhow::Result<()> {
    const TOPIC: &str = "partitioned";
    let cluster = ProcessCluster::start(weir(), 3).await?;
    create_replicated_topic(&cluster, TOPIC, 1).await?;
    let all = cluster.node_ids();
    let old = cluster.leader_of(TOPIC, 0).await?;
    let before = batch("before", 0, 5);
    let (_, before_base) = produce_acked(&cluster, &[old], TOPIC, 0, before.clone()).await?;
    for &node in &all {
        cluster
            .wait_for_high_watermark(node, TOPIC, 0, before_base + 5)
            .await?;
    }

    cluster.isolate(old);
    // The isolated leader may still believe it leads, but it cannot reach a quorum: the write
    // must fail or stay unanswered, never be acknowledged.
    let mut isolated = cluster.client(old)?;
    let lost = batch("unacknowledged", 0, 3);
    let attempt = tokio::time::timeout(
        Duration::from_secs(3),
        isolated.produce(produce_request(TOPIC, 0, lost)),
    )
    .await;
    match &attempt {
        Ok(Ok(response)) => panic!("an isolated leader acknowledged a write: {response:?}"),
        Ok(Err(status)) => eprintln!("the isolated leader, node {old}, refused: {status:?}"),
        Err(_) => eprintln!("the isolated leader, node {old}, did not answer"),
    }

    // The majority elects a leader among itself and accepts writes.
    let majority: Vec<NodeId> = all.iter().copied().filter(|&n| n != old).collect();
    let new = cluster.leader_among(&majority, TOPIC, 0).await?;
    assert_ne!(new, old);
    let after = batch("after", 0, 5);
    let (by, after_base) = produce_acked(&cluster, &majority, TOPIC, 0, after.clone()).await?;
    assert_ne!(by, old);

    cluster.heal_all();
    let copies = converged_copies(&cluster, &all, TOPIC, 0).await?;
    let log = assert_identical(&copies);
    assert_stored_at(&log, before_base, &before, old);
    assert_stored_at(&log, after_base, &after, old);
    let leaked: Vec<String> = log
        .iter()
        .map(value_of)
        .filter(|v| v.starts_with("unacknowledged"))
        .collect();
    assert!(
        leaked.is_empty(),
        "the isolated leader's write survived: {leaked:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_catches_up() -> anyhow::Result<()> {
    const TOPIC: &str = "catch-up";
    let mut cluster = ProcessCluster::start(weir(), 3).await?;
    create_replicated_topic(&cluster, TOPIC, 1).await?;
    let all = cluster.node_ids();
    let leader = cluster.leader_of(TOPIC, 0).await?;
    let follower = *all.iter().find(|&&n| n != leader).expect("3 nodes");

    let mut produced = Vec::new();
    let first = batch("first", 0, 10);
    let (_, base) = produce_acked(&cluster, &[leader], TOPIC, 0, first.clone()).await?;
    produced.push((base, first));

    cluster.kill(follower)?;
    let live: Vec<NodeId> = all.iter().copied().filter(|&n| n != follower).collect();
    for b in 0..5 {
        let records = batch("while-down", b * 10, 10);
        let (_, base) = produce_acked(&cluster, &live, TOPIC, 0, records.clone()).await?;
        produced.push((base, records));
    }

    cluster.restart(follower).await?;
    let copies = converged_copies(&cluster, &all, TOPIC, 0).await?;
    let log = assert_identical(&copies);
    assert_eq!(log.len(), 60);
    for (base, records) in &produced {
        assert_stored_at(&copies[&follower], *base, records, follower);
    }
    Ok(())
}

/// A batch's base offset and its records.
type AckedBatch = (u64, Vec<pb::Record>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_non_leader_does_not_interrupt_producers() -> anyhow::Result<()> {
    const TOPIC: &str = "steady";
    let mut cluster = ProcessCluster::start(weir(), 3).await?;
    create_replicated_topic(&cluster, TOPIC, 1).await?;
    let leader = cluster.leader_of(TOPIC, 0).await?;
    // A node that leads nothing: neither this partition nor the controller.
    let controller = cluster
        .client(leader)?
        .describe_cluster(pb::DescribeClusterRequest {})
        .await?
        .into_inner()
        .controller;
    let victim = cluster
        .node_ids()
        .into_iter()
        .find(|&n| n != leader && Some(n) != controller)
        .expect("of 3 nodes, at most 2 lead something");

    let acked: Arc<Mutex<Vec<AckedBatch>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let mut client = cluster.client(leader)?;
        let (acked, stop) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                let records = batch("steady", seq, 4);
                seq += 4;
                let request = produce_request(TOPIC, 0, records.clone());
                let response = tokio::time::timeout(ATTEMPT_TIMEOUT, client.produce(request))
                    .await
                    .with_context(|| format!("produce of record {seq} got no answer"))?
                    .with_context(|| format!("produce of record {seq} failed"))?;
                let base = response.into_inner().base_offset.context("base offset")?;
                acked.lock().expect("acked").push((base, records));
            }
            anyhow::Ok(())
        })
    };
    let acked_batches = || acked.lock().expect("acked").len();

    eventually(GENEROUS, "batches acknowledged before the kill", || {
        let n = acked_batches();
        let failed = producer.is_finished();
        async move { (n >= 20 || failed).then_some(()) }
    })
    .await?;
    anyhow::ensure!(
        !producer.is_finished(),
        "the producer failed before any node was killed"
    );
    cluster.kill(victim)?;
    let at_kill = acked_batches();
    eventually(GENEROUS, "batches acknowledged after the kill", || {
        let n = acked_batches();
        // The producer ends at its first failure: stop waiting then, and report it below.
        let failed = producer.is_finished();
        async move { (n >= at_kill + 40 || failed).then_some(()) }
    })
    .await
    .with_context(|| format!("the producer stalled after node {victim} was killed"))?;
    stop.store(true, Ordering::Relaxed);
    producer
        .await?
        .with_context(|| format!("a produce failed after node {victim} was killed"))?;
    assert!(acked_batches() >= at_kill + 40);

    let acked = std::mem::take(&mut *acked.lock().expect("acked"));
    let mut next = 0;
    for (base, records) in &acked {
        assert_eq!(*base, next, "acknowledged batches follow each other");
        next += records.len() as u64;
    }
    let live: Vec<NodeId> = cluster
        .node_ids()
        .into_iter()
        .filter(|&n| n != victim)
        .collect();
    let copies = converged_copies(&cluster, &live, TOPIC, 0).await?;
    let log = assert_identical(&copies);
    assert_eq!(log.len() as u64, next);
    for (base, records) in &acked {
        assert_stored_at(&log, *base, records, leader);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rf3_with_two_nodes_down_fails_clearly() -> anyhow::Result<()> {
    const TOPIC: &str = "no-quorum";
    // The broker gives up on a commit after `produce_timeout_ms`; shorter than the default 10 s
    // so the test is quick, and well below the client's own 15 s bound on a hang.
    let mut cluster =
        ProcessCluster::new_with_config(weir(), 3, "[limits]\nproduce_timeout_ms = 2000\n").await?;
    cluster.start_nodes(&cluster.node_ids()).await?;
    create_replicated_topic(&cluster, TOPIC, 1).await?;
    let leader = cluster.leader_of(TOPIC, 0).await?;
    let (_, base) = produce_acked(&cluster, &[leader], TOPIC, 0, batch("quorate", 0, 3)).await?;
    assert_eq!(base, 0);
    let killed: Vec<NodeId> = cluster
        .node_ids()
        .into_iter()
        .filter(|&n| n != leader)
        .collect();
    for &node in &killed {
        cluster.kill(node)?;
    }

    // A leader that lost its quorum cannot commit; it must say so rather than hang.
    let mut client = cluster.client(leader)?;
    let answer = tokio::time::timeout(
        Duration::from_secs(15),
        client.produce(produce_request(TOPIC, 0, batch("alone", 0, 3))),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "produce (acks=all) to the last live node of 3 got no answer in 15 s; it should fail with UNAVAILABLE, OUTCOME_UNKNOWN or NOT_LEADER"
        )
    })?;
    let status = match answer {
        Ok(response) => panic!("a write was acknowledged without a quorum: {response:?}"),
        Err(status) => status,
    };
    eprintln!("the leader without a quorum answered {status:?}");
    let reason = reason_of(&status);
    assert!(
        matches!(
            reason.as_deref(),
            Some("UNAVAILABLE" | "OUTCOME_UNKNOWN" | "NOT_LEADER")
        ),
        "unexpected error {status:?}"
    );
    assert!(!status.message().is_empty());
    // What was committed before is still served.
    let stored = cluster.read_partition(leader, TOPIC, 0).await?;
    assert_eq!(
        stored.iter().map(value_of).collect::<Vec<_>>(),
        ["quorate-0", "quorate-1", "quorate-2"]
    );

    // With one replica back there is a quorum again: writes succeed, and the two live copies
    // agree (the unknown-outcome batch may or may not be among them).
    let back = *killed.first().expect("two nodes were killed");
    cluster.restart(back).await?;
    let live = [leader, back];
    let after = batch("recovered", 0, 3);
    let (_, base) = produce_acked(&cluster, &live, TOPIC, 0, after.clone()).await?;
    let copies = converged_copies(&cluster, &live, TOPIC, 0).await?;
    let log = assert_identical(&copies);
    assert_stored_at(&log, 0, &batch("quorate", 0, 3), leader);
    assert_stored_at(&log, base, &after, leader);
    Ok(())
}

/// Runs `weir broker` with a bad `--peers` setup and returns its stderr once it has exited
/// with a failure, having printed no listening line and created no data.
async fn refused_broker(node_id: &str, peers: &str) -> anyhow::Result<String> {
    let temp = tempfile::tempdir()?;
    let data_dir = temp.path().join("data");
    let data = data_dir.to_str().context("utf-8 temp path")?;
    let output = run_to_exit(
        weir(),
        &[
            "broker",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "none",
            "--data-dir",
            data,
            "--node-id",
            node_id,
            "--peers",
            peers,
        ],
        GENEROUS,
    )
    .await?;
    assert!(!output.status.success(), "the broker must refuse to start");
    assert!(
        output.stdout.is_empty(),
        "stdout: {:?}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(!data_dir.exists(), "a refused start creates no data");
    Ok(String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_with_a_duplicate_id_are_refused() -> anyhow::Result<()> {
    let stderr = refused_broker("1", "1=127.0.0.1:7001,2=127.0.0.1:7002,2=127.0.0.1:7003").await?;
    assert!(stderr.contains("more than once"), "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_id_missing_from_peers_is_refused() -> anyhow::Result<()> {
    let stderr = refused_broker("4", "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003").await?;
    assert!(stderr.contains("not among the peers"), "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_factor_above_node_count_is_refused() -> anyhow::Result<()> {
    let cluster = ProcessCluster::start(weir(), 3).await?;
    let mut client = cluster.client(2)?;
    let status = client
        .create_topic(pb::CreateTopicRequest {
            name: "too-many-replicas".into(),
            partitions: 1,
            replication_factor: 4,
            configs: HashMap::new(),
        })
        .await
        .expect_err("RF 4 on 3 nodes must be refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        reason_of(&status).as_deref(),
        Some("INVALID_REPLICATION_FACTOR")
    );
    // Nothing was created, on any node.
    for node in cluster.node_ids() {
        let topics = cluster
            .client(node)?
            .list_topics(pb::ListTopicsRequest {})
            .await?
            .into_inner()
            .topics;
        assert!(topics.is_empty(), "node {node} lists {topics:?}");
    }
    // RF 3 fits and works.
    create_replicated_topic(&cluster, "three-replicas", 1).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_different_peers_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    const TOPIC: &str = "membership";
    let mut cluster = ProcessCluster::start(weir(), 3).await?;
    create_replicated_topic(&cluster, TOPIC, 1).await?;
    let (_, base) =
        produce_acked(&cluster, &cluster.node_ids(), TOPIC, 0, batch("kept", 0, 4)).await?;
    cluster
        .wait_for_high_watermark(3, TOPIC, 0, base + 4)
        .await?;
    cluster.kill(3)?;

    // Node 3 comes back believing in a fourth node the cluster never had.
    let mut args = cluster.broker_args(3);
    let peers = args
        .iter()
        .position(|a| a == "--peers")
        .context("--peers is among the arguments")?
        + 1;
    args[peers].push_str(",4=127.0.0.1:9");
    let output = run_to_exit(weir(), &args, GENEROUS).await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a node with different peers must not start"
    );
    assert!(
        output.stdout.is_empty(),
        "it never reported listening: {:?}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(stderr.contains("disagree"), "{stderr}");

    // With its real peers it starts over the same data and serves what it had.
    cluster.restart(3).await?;
    let copies = converged_copies(&cluster, &cluster.node_ids(), TOPIC, 0).await?;
    let log = assert_identical(&copies);
    assert_stored_at(&log, base, &batch("kept", 0, 4), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_is_replaced_and_rejoins_as_follower() -> anyhow::Result<()> {
    const TOPIC: &str = "frozen";
    let mut cluster = ProcessCluster::start(weir(), 3).await?;
    create_replicated_topic(&cluster, TOPIC, 1).await?;
    let all = cluster.node_ids();
    let old = cluster.leader_of(TOPIC, 0).await?;
    let before = batch("before", 0, 5);
    let (_, before_base) = produce_acked(&cluster, &[old], TOPIC, 0, before.clone()).await?;

    // SIGSTOP: the leader keeps its connections open but says nothing, unlike a crash.
    cluster.pause(old)?;
    let others: Vec<NodeId> = all.iter().copied().filter(|&n| n != old).collect();
    let new = cluster.leader_among(&others, TOPIC, 0).await?;
    assert_ne!(new, old);
    let during = batch("during", 0, 5);
    let (by, during_base) = produce_acked(&cluster, &others, TOPIC, 0, during.clone()).await?;
    assert_ne!(by, old);

    cluster.resume(old)?;
    let copies = converged_copies(&cluster, &all, TOPIC, 0).await?;
    let log = assert_identical(&copies);
    assert_stored_at(&log, before_base, &before, old);
    assert_stored_at(&log, during_base, &during, old);
    Ok(())
}

/// A leader that crashes before its own log write is durable may already have sent the entries
/// to its followers, which stored them. Restarted, it must not lead again in the term it led:
/// its next entries would take log positions (index and term) at which the followers hold the
/// lost ones, raft's log matching would keep both, and the replicas would serve different
/// records at acknowledged offsets.
///
/// The lost tail is made by restarting the leader over an image of its data directory taken
/// before the last writes (copied while the process was stopped, so it is what a crash at that
/// moment leaves), once both followers hold those writes. The followers are slow to time out
/// (restarted with long election timeouts once the partition has a leader), so they elect no
/// one while the leader restarts: a leader that resumed its old term would meet them unchanged.
/// The partition's first election runs with the quick timings of the other tests: replicas that
/// all stand at once can split the vote, and a retry must not wait out a long timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_lost_its_log_tail_does_not_lead_its_old_term_again() -> anyhow::Result<()> {
    const TOPIC: &str = "amnesia";
    let mut cluster = ProcessCluster::new(weir(), 3).await?;
    let all = cluster.node_ids();
    cluster.start_nodes(&all).await?;
    create_replicated_topic(&cluster, TOPIC, 1).await?;
    let leader = cluster.leader_of(TOPIC, 0).await?;
    let followers: Vec<NodeId> = all.iter().copied().filter(|&n| n != leader).collect();
    let patient = RaftTimings {
        heartbeat_ms: 100,
        election_min_ms: 10_000,
        election_max_ms: 12_000,
    };
    for &follower in &followers {
        cluster.set_raft_timings(follower, patient)?;
        cluster.terminate(follower)?;
        cluster.restart(follower).await?;
    }
    assert_eq!(
        cluster.leader_of(TOPIC, 0).await?,
        leader,
        "restarting the followers moved no leadership"
    );
    let kept = batch("kept", 0, 5);
    let (_, kept_base) = produce_acked(&cluster, &[leader], TOPIC, 0, kept.clone()).await?;

    let temp = tempfile::tempdir()?;
    let image = temp.path().join("leader");
    cluster.pause(leader)?;
    let copied = weir_tests::copy_dir(cluster.data_dir(leader), &image);
    cluster.resume(leader)?;
    copied?;

    let mut forgotten = Vec::new();
    for i in 0..3 {
        let records = batch("forgotten", i * 4, 4);
        let (by, base) = produce_acked(&cluster, &[leader], TOPIC, 0, records.clone()).await?;
        assert_eq!(by, leader);
        forgotten.push((base, records));
    }
    // Both followers hold them, so they are committed without the leader: what it forgets
    // is only what a crash before its own fsync may take.
    for &follower in &followers {
        cluster
            .wait_for_high_watermark(follower, TOPIC, 0, 5 + 12)
            .await?;
    }
    cluster.kill(leader)?;
    std::fs::remove_dir_all(cluster.data_dir(leader))?;
    std::fs::rename(&image, cluster.data_dir(leader))?;
    cluster.restart(leader).await?;

    let next = cluster.leader_of(TOPIC, 0).await?;
    let after = batch("after", 0, 6);
    let (_, after_base) = produce_acked(&cluster, &[next], TOPIC, 0, after.clone()).await?;
    let copies = converged_copies(&cluster, &all, TOPIC, 0).await?;
    let log = assert_identical(&copies);
    assert_stored_at(&log, kept_base, &kept, leader);
    for (base, records) in &forgotten {
        assert_stored_at(&log, *base, records, leader);
    }
    assert_stored_at(&log, after_base, &after, leader);
    assert_eq!(log.len(), 5 + 12 + 6, "nothing else is stored");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_waits_for_an_unreachable_controller_leader() -> anyhow::Result<()> {
    let mut cluster = ProcessCluster::new(weir(), 3).await?;
    // Node 1 hears the others but cannot send to them yet (say its routes are not up): it
    // learns who leads the controller but cannot register with it.
    cluster.cut(1, 2);
    cluster.cut(1, 3);
    let late = cluster.launch(1)?;
    cluster.start_nodes(&[2, 3]).await?;
    let controller = cluster
        .client(2)?
        .describe_cluster(pb::DescribeClusterRequest {})
        .await?
        .into_inner()
        .controller
        .context("a controller leader")?;
    // Its first connection went to the election it started; wait (briefly) for a second one,
    // its attempt to register, before healing. Not seeing it only weakens the test.
    let tried = eventually(Duration::from_secs(5), "node 1 to try to register", || {
        let refused = cluster.link(1, controller).refused();
        async move { (refused >= 2).then_some(refused) }
    })
    .await;
    eprintln!("node 1 was refused by the controller leader: {tried:?}");

    cluster.heal_all();
    cluster.await_started(late).await.context(
        "a node must keep trying to register while the controller leader is unreachable, not exit",
    )?;
    // Registered: RF 3 needs all three nodes, and replicates to node 1.
    create_replicated_topic(&cluster, "late-joiner", 1).await?;
    let (_, base) = produce_acked(
        &cluster,
        &cluster.node_ids(),
        "late-joiner",
        0,
        batch("j", 0, 3),
    )
    .await?;
    let copies = converged_copies(&cluster, &cluster.node_ids(), "late-joiner", 0).await?;
    assert_stored_at(&assert_identical(&copies), base, &batch("j", 0, 3), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_node_cannot_change_cluster_metadata() -> anyhow::Result<()> {
    let cluster = ProcessCluster::start(weir(), 3).await?;
    let controller = cluster
        .client(1)?
        .describe_cluster(pb::DescribeClusterRequest {})
        .await?
        .into_inner()
        .controller
        .context("a controller leader")?;
    let isolated = *cluster
        .node_ids()
        .iter()
        .find(|&&n| n != controller)
        .expect("3 nodes");
    let create = |name: &str| pb::CreateTopicRequest {
        name: name.into(),
        partitions: 1,
        replication_factor: 1,
        configs: HashMap::new(),
    };

    // Every route the node has to the others is cut: a metadata change needs the controller
    // leader, which it cannot reach, so it must not happen.
    cluster.isolate(isolated);
    let attempt = tokio::time::timeout(
        Duration::from_secs(10),
        cluster
            .client(isolated)?
            .create_topic(create("from-the-island")),
    )
    .await;
    eprintln!("CreateTopic on the isolated node {isolated}: {attempt:?}");
    let topics_on_controller = cluster
        .client(controller)?
        .list_topics(pb::ListTopicsRequest {})
        .await?
        .into_inner()
        .topics;
    assert!(
        !matches!(attempt, Ok(Ok(_))) && topics_on_controller.is_empty(),
        "node {isolated}, cut off from every peer, created a topic through controller leader \
         {controller}: its controller forwarding does not go through its --peers routes \
         (controller now lists {topics_on_controller:?})"
    );

    // Healed, the same node creates topics again.
    cluster.heal_all();
    eventually(
        GENEROUS,
        "a topic created through the healed node",
        || async {
            let mut client = cluster.client(isolated).ok()?;
            match client.create_topic(create("from-the-mainland")).await {
                Ok(_) => Some(()),
                Err(status) if status.code() == Code::AlreadyExists => Some(()),
                Err(_) => None,
            }
        },
    )
    .await?;
    for node in cluster.node_ids() {
        eventually(GENEROUS, "the topic on every node", || async {
            let topics = cluster
                .client(node)
                .ok()?
                .list_topics(pb::ListTopicsRequest {})
                .await
                .ok()?
                .into_inner()
                .topics;
            topics
                .iter()
                .any(|t| t.name == "from-the-mainland")
                .then_some(())
        })
        .await?;
    }
    Ok(())
}

/// The Rust client, connected to a node that does not lead a partition, follows the broker's
/// NOT_LEADER answer to the leader and then goes straight there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_follows_not_leader_to_the_leader() -> anyhow::Result<()> {
    const TOPIC: &str = "routed";
    let cluster = ProcessCluster::start(weir(), 3).await?;
    create_replicated_topic(&cluster, TOPIC, 1).await?;
    let leader = cluster.leader_of(TOPIC, 0).await?;
    let elsewhere = cluster
        .node_ids()
        .into_iter()
        .find(|&n| n != leader)
        .ok_or_else(|| anyhow::anyhow!("a 3-node cluster has a non-leader"))?;

    let client = weir_client::Client::connect(cluster.addr(elsewhere).to_string()).await?;
    assert_eq!(client.cached_leader(TOPIC, 0), None);
    let outcome = client
        .produce(
            TOPIC,
            Some(0),
            vec![weir_client::ProducerRecord::new("routed")],
            weir_client::Acks::All,
        )
        .await?;
    assert_eq!(outcome.base_offset, Some(0));
    assert_eq!(
        client.cached_leader(TOPIC, 0),
        Some(cluster.addr(leader).to_string()),
        "the leader named by NOT_LEADER is remembered"
    );
    let second = client
        .produce(
            TOPIC,
            Some(0),
            vec![weir_client::ProducerRecord::new("direct")],
            weir_client::Acks::All,
        )
        .await?;
    assert_eq!(second.base_offset, Some(1));
    let fetched = client
        .fetch(weir_client::FetchSpec::new(TOPIC, 0, 0))
        .await?;
    let values: Vec<&[u8]> = fetched.records.iter().map(|r| r.value.as_ref()).collect();
    assert_eq!(values, vec![&b"routed"[..], &b"direct"[..]]);
    Ok(())
}

/// A write sent to a follower whose leader's node died is answered once a successor is elected,
/// naming it, not at once naming the dead node: a client's next attempt then lands at once
/// instead of after its retry backoff (issue #15, P7). Long leases hold the election back well
/// past the moment the follower presumes the leader dead, so that the old answer, which named
/// the dead node, cannot pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_of_a_dead_leader_sends_writes_to_its_successor() -> anyhow::Result<()> {
    const TOPIC: &str = "succession";
    let long_leases = RaftTimings {
        heartbeat_ms: 100,
        election_min_ms: 400,
        election_max_ms: 4_000,
    };
    let mut cluster = ProcessCluster::new(weir(), 3).await?;
    let ids = cluster.node_ids();
    for &id in &ids {
        cluster.set_raft_timings(id, long_leases)?;
    }
    cluster.start_nodes(&ids).await?;
    create_replicated_topic(&cluster, TOPIC, 1).await?;
    let (_, base) = produce_acked(&cluster, &ids, TOPIC, 0, batch("before", 0, 1)).await?;
    assert_eq!(base, 0);
    // Quiet: the followers know the leader by its node's heartbeats, which they then miss.
    for &id in &ids {
        node_gauge_reaches(&cluster, id, "weir_raft_partition_timers", |t| t == 0).await?;
    }
    let dead = cluster.leader_of(TOPIC, 0).await?;
    let follower = ids
        .iter()
        .copied()
        .find(|&id| id != dead)
        .context("a 3-node cluster has a follower")?;

    cluster.kill(dead)?;
    let alive_gauge = format!("weir_peer_alive{{peer=\"{dead}\"}}");
    node_gauge_reaches(&cluster, follower, &alive_gauge, |alive| alive == 0).await?;
    let answer = cluster
        .client(follower)?
        .produce(produce_request(TOPIC, 0, batch("after", 1, 1)))
        .await;
    let successor = match answer {
        Ok(stored) => {
            assert_eq!(stored.into_inner().base_offset, Some(1));
            follower
        }
        Err(status) => {
            assert_eq!(
                reason_of(&status).as_deref(),
                Some("NOT_LEADER"),
                "{status:?}"
            );
            let named = weir_proto::error::metadata_of(&status, "leader")
                .context("NOT_LEADER names the leader")?;
            assert_ne!(
                named,
                dead.to_string(),
                "the dead node was named: {status:?}"
            );
            named.parse()?
        }
    };
    assert_eq!(cluster.leader_of(TOPIC, 0).await?, successor);
    Ok(())
}

/// A topic created while a node is down still gets a leader for every partition, including the
/// ones whose preferred leader is the missing node, and takes writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_created_while_a_node_is_down_elect_leaders() -> anyhow::Result<()> {
    const TOPIC: &str = "born-degraded";
    let mut cluster = ProcessCluster::start(weir(), 3).await?;
    cluster.kill(1)?;
    let mut admin = cluster.client(2)?;
    let created = loop {
        match admin
            .create_topic(pb::CreateTopicRequest {
                name: TOPIC.into(),
                partitions: 3,
                replication_factor: 3,
                configs: HashMap::new(),
            })
            .await
        {
            Ok(created) => break created.into_inner().topic,
            // Node 1 is the controller's first leader: the controller elects another first.
            Err(status)
                if matches!(
                    reason_of(&status).as_deref(),
                    Some("UNAVAILABLE" | "NOT_LEADER")
                ) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // An earlier attempt created it but timed out waiting for leaders.
            Err(status) if reason_of(&status).as_deref() == Some("TOPIC_ALREADY_EXISTS") => {
                break cluster.describe(2, TOPIC).await;
            }
            Err(status) => anyhow::bail!("create failed: {status:?}"),
        }
    };
    let placed = created.ok_or_else(|| anyhow::anyhow!("no topic"))?;
    assert!(
        placed
            .partitions
            .iter()
            .any(|p| p.replicas.first() == Some(&1)),
        "some partition prefers the dead node: {placed:?}"
    );
    for partition in 0..3 {
        let (_, base) =
            produce_acked(&cluster, &[2, 3], TOPIC, partition, batch("degraded", 0, 2)).await?;
        assert_eq!(base, 0, "partition {partition}");
    }
    Ok(())
}

/// Asserts that each of `topic`'s `partitions` is led by its preferred replica (listed first).
async fn assert_led_by_preferred_replicas(
    cluster: &ProcessCluster,
    topic: &str,
    partitions: u32,
) -> anyhow::Result<()> {
    let described = cluster.describe(1, topic).await.context("describe")?;
    assert_eq!(described.partitions.len(), partitions as usize);
    let mut led = Vec::new();
    for p in &described.partitions {
        let leader = cluster.leader_of(topic, p.partition).await?;
        led.push((p.partition, leader, p.replicas.first().copied()));
    }
    assert!(
        led.iter()
            .all(|&(_, leader, preferred)| Some(leader) == preferred),
        "(partition, leader, preferred leader): {led:?}"
    );
    Ok(())
}

/// Writes each of `partitions`' first record (at offset 0), then stops every node (SIGTERM).
async fn write_first_records_and_stop(
    cluster: &mut ProcessCluster,
    topic: &str,
    partitions: impl IntoIterator<Item = u32>,
) -> anyhow::Result<()> {
    for partition in partitions {
        let (_, base) = produce_acked(
            cluster,
            &cluster.node_ids(),
            topic,
            partition,
            batch("before", 0, 1),
        )
        .await?;
        assert_eq!(base, 0);
    }
    for node in cluster.node_ids() {
        assert!(cluster.terminate(node)?, "node {node} stopped cleanly");
    }
    Ok(())
}

/// A new topic's partitions are first led by their preferred replicas (each listed first, spread
/// over the nodes by placement). Before, every replica initialised the group and stood for
/// election when its own timer fired: the first leader was whichever fired first, and two
/// replicas standing in the same first term made one that had already won step down again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_partition_is_first_led_by_its_preferred_replica() -> anyhow::Result<()> {
    const TOPIC: &str = "preferred";
    const PARTITIONS: u32 = 6;
    let cluster = ProcessCluster::start(weir(), 3).await?;
    create_replicated_topic(&cluster, TOPIC, PARTITIONS).await?;
    assert_led_by_preferred_replicas(&cluster, TOPIC, PARTITIONS).await?;
    Ok(())
}

/// After the whole cluster restarted, no partition has a leader. Each one's preferred replica
/// stands as soon as it hears from the other members and none of them claims the partition, so
/// it leads again. Before, openraft's timers elected whichever replica's timer fired first, an
/// election timeout after its start and often in vain while the others were still starting
/// theirs (1,000 partitions on three nodes took 8.3 s to be led).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_whole_cluster_restart_partitions_are_led_by_their_preferred_replicas()
-> anyhow::Result<()> {
    const TOPIC: &str = "restarted";
    const PARTITIONS: u32 = 6;
    let mut cluster = ProcessCluster::start(weir(), 3).await?;
    create_replicated_topic(&cluster, TOPIC, PARTITIONS).await?;
    write_first_records_and_stop(&mut cluster, TOPIC, 0..PARTITIONS).await?;
    cluster.start_nodes(&cluster.node_ids()).await?;

    assert_led_by_preferred_replicas(&cluster, TOPIC, PARTITIONS).await?;
    let (_, next) = produce_acked(
        &cluster,
        &cluster.node_ids(),
        TOPIC,
        0,
        batch("after", 1, 1),
    )
    .await?;
    assert_eq!(next, 1, "the restarted partition continues its log");
    Ok(())
}

/// The restarted replicas that are not a partition's preferred leader hold their election
/// timers while it may stand; when its node stays down, they elect one of themselves once the
/// hold is over, and the partition takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_whole_cluster_restart_without_a_preferred_leaders_node_its_partitions_are_led_by_another()
-> anyhow::Result<()> {
    const TOPIC: &str = "restarted-without-one";
    const PARTITIONS: u32 = 3;
    let mut cluster = ProcessCluster::start(weir(), 3).await?;
    create_replicated_topic(&cluster, TOPIC, PARTITIONS).await?;
    let described = cluster.describe(1, TOPIC).await.context("describe")?;
    let down: NodeId = 1;
    let orphaned: Vec<u32> = described
        .partitions
        .iter()
        .filter(|p| p.replicas.first() == Some(&down))
        .map(|p| p.partition)
        .collect();
    assert!(
        !orphaned.is_empty(),
        "node {down} is some partition's preferred leader"
    );
    write_first_records_and_stop(&mut cluster, TOPIC, orphaned.iter().copied()).await?;
    let up: Vec<NodeId> = cluster
        .node_ids()
        .into_iter()
        .filter(|&n| n != down)
        .collect();
    cluster.start_nodes(&up).await?;

    for &partition in &orphaned {
        let leader = cluster.leader_among(&up, TOPIC, partition).await?;
        assert_ne!(leader, down);
        let (_, next) =
            produce_acked(&cluster, &up, TOPIC, partition, batch("after", 1, 1)).await?;
        assert_eq!(next, 1, "{TOPIC}/{partition} continues its log");
    }
    Ok(())
}

/// `weir topic describe` through any node shows each partition as its leader sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_through_any_node_shows_the_leaders_view() -> anyhow::Result<()> {
    const TOPIC: &str = "described";
    let cluster = ProcessCluster::start(weir(), 3).await?;
    create_replicated_topic(&cluster, TOPIC, 3).await?;
    let mut leaders = Vec::new();
    for partition in 0..3 {
        leaders.push(cluster.leader_of(TOPIC, partition).await?);
    }
    for node in cluster.node_ids() {
        let output = std::process::Command::new(crate::WEIR)
            .args(["--broker", &cluster.addr(node).to_string()])
            .args(["topic", "describe", TOPIC])
            .output()?;
        assert!(output.status.success(), "{output:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip_while(|l| !l.starts_with("PARTITION"))
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows.len(), 3, "{text}");
        for (partition, row) in rows.iter().enumerate() {
            assert_eq!(
                row[1],
                leaders[partition].to_string(),
                "through node {node}: {text}"
            );
            assert_ne!(row[3], "?", "the leader's in-sync view is shown: {text}");
        }
    }
    Ok(())
}

/// A child process killed when dropped, so a failing test leaves nothing running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A node started with `--join` becomes a member through `AddNode` (sent to any node), takes
/// replicas, cannot be removed while it holds them, and leaves through `RemoveNode`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_takes_replicas_and_leaves_once_empty() -> anyhow::Result<()> {
    use std::io::BufRead;
    let cluster = ProcessCluster::start(weir(), 3).await?;
    let temp = tempfile::tempdir()?;
    let config = temp.path().join("node-4.toml");
    std::fs::write(
        &config,
        "[raft]\nheartbeat_ms = 100\nelection_min_ms = 400\nelection_max_ms = 800\n",
    )?;
    let address = weir_tests::free_port()?.to_string();
    let mut joiner = std::process::Command::new(crate::WEIR)
        .args([
            "broker",
            "--node-id",
            "4",
            "--join",
            "--metrics-listen",
            "none",
        ])
        .args(["--listen", &address])
        .arg("--data-dir")
        .arg(temp.path().join("node-4"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = joiner
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    // Killed however the test ends.
    let joiner = KillOnDrop(joiner);
    let started = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map(|_| line)
    });

    let mut admin = cluster.client(2)?;
    let bad = admin
        .add_node(pb::AddNodeRequest {
            node_id: 4,
            address: "no-port".into(),
        })
        .await
        .expect_err("an address without a port is refused");
    assert_eq!(
        reason_of(&bad).as_deref(),
        Some("INVALID_ARGUMENT"),
        "{bad:?}"
    );
    let taken = admin
        .add_node(pb::AddNodeRequest {
            node_id: 3,
            address: address.clone(),
        })
        .await
        .expect_err("an existing id is refused");
    assert_eq!(
        reason_of(&taken).as_deref(),
        Some("NODE_ALREADY_EXISTS"),
        "{taken:?}"
    );

    admin
        .add_node(pb::AddNodeRequest {
            node_id: 4,
            address: address.clone(),
        })
        .await?;
    let line = tokio::time::timeout(GENEROUS, started).await???;
    assert!(line.starts_with("weir broker listening on"), "{line:?}");
    weir_tests::eventually(GENEROUS, "node 4 registered", || {
        let mut admin = admin.clone();
        async move {
            let nodes = admin
                .describe_cluster(pb::DescribeClusterRequest {})
                .await
                .ok()?
                .into_inner()
                .nodes;
            nodes.iter().any(|n| n.node_id == 4).then_some(())
        }
    })
    .await?;

    // Four replicas need four nodes: possible now.
    admin
        .create_topic(pb::CreateTopicRequest {
            name: "wide".into(),
            partitions: 1,
            replication_factor: 4,
            configs: HashMap::new(),
        })
        .await?;
    let client = weir_client::Client::connect(cluster.addr(1).to_string()).await?;
    // The replicas start on each node as the new metadata reaches it: retry while they do.
    let produced = weir_tests::eventually(GENEROUS, "the new topic takes a write", || {
        let client = client.clone();
        async move {
            match client
                .produce(
                    "wide",
                    Some(0),
                    vec![weir_client::ProducerRecord::new("on four nodes")],
                    weir_client::Acks::All,
                )
                .await
            {
                Ok(produced) => Some(Ok(produced)),
                Err(e) if e.is_retriable() => None,
                Err(e) => Some(Err(e)),
            }
        }
    })
    .await??;
    assert_eq!(produced.base_offset, Some(0));
    let on_node_4 = weir_client::Client::connect(address.as_str()).await?;
    let fetched = weir_tests::eventually(GENEROUS, "node 4 has the record", || {
        let on_node_4 = on_node_4.clone();
        async move {
            let fetched = on_node_4
                .fetch(weir_client::FetchSpec::new("wide", 0, 0))
                .await
                .ok()?;
            (!fetched.records.is_empty()).then_some(fetched)
        }
    })
    .await?;
    assert_eq!(fetched.records[0].value.as_ref(), b"on four nodes");

    let busy = admin
        .remove_node(pb::RemoveNodeRequest { node_id: 4 })
        .await
        .expect_err("a node with replicas stays");
    assert_eq!(
        reason_of(&busy).as_deref(),
        Some("NODE_HAS_REPLICAS"),
        "{busy:?}"
    );
    assert!(busy.message().contains("wide/0"), "{busy:?}");

    admin
        .delete_topic(pb::DeleteTopicRequest {
            name: "wide".into(),
        })
        .await?;
    let after = admin
        .remove_node(pb::RemoveNodeRequest { node_id: 4 })
        .await?
        .into_inner();
    assert_eq!(
        after.nodes.iter().map(|n| n.node_id).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    drop(joiner);
    let unknown = admin
        .remove_node(pb::RemoveNodeRequest { node_id: 4 })
        .await
        .expect_err("node 4 is gone");
    assert_eq!(
        reason_of(&unknown).as_deref(),
        Some("UNKNOWN_NODE"),
        "{unknown:?}"
    );
    let too_wide = admin
        .create_topic(pb::CreateTopicRequest {
            name: "too-wide".into(),
            partitions: 1,
            replication_factor: 4,
            configs: HashMap::new(),
        })
        .await
        .expect_err("three nodes cannot hold four replicas");
    assert_eq!(
        reason_of(&too_wide).as_deref(),
        Some("INVALID_REPLICATION_FACTOR")
    );
    Ok(())
}

/// A node joining with `--peers` (how it reaches the others, here through the test's proxies)
/// starts once the cluster has added it, although its controller replica catches up as a
/// learner before it is a voter; every node then names it among its peers, restarts included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_with_peers_starts_once_added() -> anyhow::Result<()> {
    let mut cluster = ProcessCluster::start(weir(), 3).await?;
    let joiner = cluster.add_joiner().await?;
    assert_eq!(joiner, 4);
    let launch = cluster.launch(joiner)?;
    cluster
        .client(2)?
        .add_node(pb::AddNodeRequest {
            node_id: joiner,
            address: cluster.addr(joiner).to_string(),
        })
        .await?;
    cluster.await_started(launch).await?;
    cluster.admit(joiner);
    assert_eq!(cluster.node_ids(), vec![1, 2, 3, 4]);
    let nodes = |description: pb::DescribeClusterResponse| {
        let mut ids: Vec<NodeId> = description.nodes.iter().map(|n| n.node_id).collect();
        ids.sort_unstable();
        ids
    };
    // The joiner answers from its own copy of the controller state, which may not yet have
    // applied the entry that added it when it starts serving.
    let joiner_client = cluster.client(joiner)?;
    eventually(GENEROUS, "the joiner to list all four nodes", || {
        let mut client = joiner_client.clone();
        async move {
            let described = client
                .describe_cluster(pb::DescribeClusterRequest {})
                .await
                .ok()?
                .into_inner();
            (nodes(described) == vec![1, 2, 3, 4]).then_some(())
        }
    })
    .await?;

    // An old node and the new one restart with the four peers.
    cluster.kill(1)?;
    cluster.restart(1).await?;
    cluster.kill(joiner)?;
    cluster.restart(joiner).await?;
    cluster
        .client(1)?
        .create_topic(pb::CreateTopicRequest {
            name: "on-four".into(),
            partitions: 1,
            replication_factor: 4,
            configs: HashMap::new(),
        })
        .await?;
    let (_, base) = produce_acked(
        &cluster,
        &cluster.node_ids(),
        "on-four",
        0,
        batch("four", 0, 3),
    )
    .await?;
    let copies = converged_copies(&cluster, &cluster.node_ids(), "on-four", 0).await?;
    assert_eq!(copies.len(), 4);
    assert_stored_at(&assert_identical(&copies), base, &batch("four", 0, 3), 4);
    Ok(())
}

/// A partition's replicas move between nodes without losing data: first a follower's, then
/// the leader's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_move_between_nodes_without_losing_data() -> anyhow::Result<()> {
    const TOPIC: &str = "moving";
    let cluster = ProcessCluster::start(weir(), 3).await?;
    let mut admin = cluster.client(1)?;
    admin
        .create_topic(pb::CreateTopicRequest {
            name: TOPIC.into(),
            partitions: 1,
            replication_factor: 2,
            configs: HashMap::new(),
        })
        .await?;
    let client = weir_client::Client::connect(cluster.addr(1).to_string()).await?;
    let produce = |value: &'static str| {
        let client = client.clone();
        async move {
            weir_tests::eventually(GENEROUS, "a write is acknowledged", || {
                let client = client.clone();
                async move {
                    match client
                        .produce(
                            TOPIC,
                            Some(0),
                            vec![weir_client::ProducerRecord::new(value)],
                            weir_client::Acks::All,
                        )
                        .await
                    {
                        Ok(outcome) => Some(Ok(outcome.base_offset)),
                        Err(e) if e.is_retriable() => None,
                        Err(e) => Some(Err(e)),
                    }
                }
            })
            .await?
            .map_err(anyhow::Error::from)
        }
    };
    assert_eq!(produce("a").await?, Some(0));
    assert_eq!(produce("b").await?, Some(1));

    let replicas = |info: &weir_client::TopicInfo| -> Vec<u64> {
        let mut r = info.partitions[0].replicas.clone();
        r.sort_unstable();
        r
    };
    let before = client.describe_topic(TOPIC).await?;
    let leader = cluster.leader_of(TOPIC, 0).await?;
    let follower = *before.partitions[0]
        .replicas
        .iter()
        .find(|&&r| r != leader)
        .ok_or_else(|| anyhow::anyhow!("RF 2 has a follower"))?;
    let spare = *cluster
        .node_ids()
        .iter()
        .find(|n| !before.partitions[0].replicas.contains(n))
        .ok_or_else(|| anyhow::anyhow!("3 nodes, RF 2: one node is spare"))?;

    let bad = client
        .move_replica(TOPIC, 0, spare, follower)
        .await
        .expect_err("the spare node holds no replica");
    assert_eq!(bad.reason(), Some("INVALID_ARGUMENT"), "{bad}");
    // Onto a node that holds one already: refused, rather than shrinking the replicas to one.
    let onto_a_replica = client
        .move_replica(TOPIC, 0, follower, leader)
        .await
        .expect_err("the leader holds a replica");
    assert_eq!(
        onto_a_replica.reason(),
        Some("INVALID_ARGUMENT"),
        "{onto_a_replica}"
    );
    assert_eq!(
        replicas(&client.describe_topic(TOPIC).await?),
        replicas(&before)
    );

    let moved = client.move_replica(TOPIC, 0, follower, spare).await?;
    let mut expected = vec![leader, spare];
    expected.sort_unstable();
    assert_eq!(replicas(&moved), expected);
    assert_eq!(produce("c").await?, Some(2));

    // The new replica serves everything, including what was written before it existed.
    let spare_values = weir_tests::eventually(GENEROUS, "the new replica caught up", || {
        let mut on_spare = cluster.client(spare).ok();
        async move {
            let fetched = on_spare
                .as_mut()?
                .fetch(pb::FetchRequest {
                    modules: Vec::new(),
                    topic: TOPIC.into(),
                    partition: 0,
                    offset: 0,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            (fetched.records.len() == 3).then(|| {
                fetched
                    .records
                    .iter()
                    .map(|r| (r.offset, r.value.clone()))
                    .collect::<Vec<_>>()
            })
        }
    })
    .await?;
    assert_eq!(
        spare_values,
        vec![
            (0, Bytes::from_static(b"a")),
            (1, Bytes::from_static(b"b")),
            (2, Bytes::from_static(b"c"))
        ]
    );

    // Now the leader's own replica moves to the node that just gave one up.
    let moved = client.move_replica(TOPIC, 0, leader, follower).await?;
    let mut expected = vec![spare, follower];
    expected.sort_unstable();
    assert_eq!(replicas(&moved), expected);
    assert_eq!(produce("d").await?, Some(3));
    Ok(())
}

/// `nodes` brokers whose moves give up on a learner after 2 s without progress, with `topic`
/// created: one partition, two replicas.
async fn cluster_with_quick_learner_stall(
    nodes: usize,
    topic: &str,
) -> anyhow::Result<ProcessCluster> {
    let mut cluster =
        ProcessCluster::new_with_config(weir(), nodes, "learner_stall_ms = 2000\n").await?;
    cluster.start_nodes(&cluster.node_ids()).await?;
    cluster
        .client(1)?
        .create_topic(pb::CreateTopicRequest {
            name: topic.into(),
            partitions: 1,
            replication_factor: 2,
            configs: HashMap::new(),
        })
        .await?;
    Ok(cluster)
}

/// Moves `topic`/0's replica from `from` to `to`, a stopped node, until the move fails because
/// the new replica made no progress (retrying while the controller elects a leader); returns
/// that error.
async fn move_until_it_stalls(
    client: &weir_client::Client,
    topic: &str,
    from: NodeId,
    to: NodeId,
) -> anyhow::Result<weir_client::ClientError> {
    eventually(
        Duration::from_secs(60),
        "the move to fail on the stall",
        || async move {
            let answer = tokio::time::timeout(GENEROUS, client.move_replica(topic, 0, from, to));
            let Ok(answer) = answer.await else {
                return Some(Err(anyhow::anyhow!("the move waited for the stopped node")));
            };
            match answer {
                Ok(moved) => Some(Err(anyhow::anyhow!("moved to a stopped node: {moved:?}"))),
                Err(e) if e.to_string().contains("made no progress") => Some(Ok(e)),
                // The controller may be electing a leader (the stopped node led it).
                Err(e) if e.is_retriable() => None,
                Err(e) => Some(Err(e.into())),
            }
        },
    )
    .await?
}

/// A move to a node that does not answer fails once the new replica makes no progress for
/// `raft.learner_stall_ms`, instead of waiting forever; once the node is back, the same move
/// completes with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_to_a_stopped_node_fails_and_can_be_run_again() -> anyhow::Result<()> {
    const TOPIC: &str = "stalled";
    let mut cluster = cluster_with_quick_learner_stall(3, TOPIC).await?;
    let (leader, base) = cluster
        .produce_acked(&cluster.node_ids(), TOPIC, 0, vec![record("kept", 0)])
        .await?;
    assert_eq!(base, 0);
    let replicas = cluster
        .describe(leader, TOPIC)
        .await
        .context("describe")?
        .partitions[0]
        .replicas
        .clone();
    let follower = *replicas.iter().find(|&&r| r != leader).context("RF 2")?;
    let spare = *cluster
        .node_ids()
        .iter()
        .find(|n| !replicas.contains(n))
        .context("a spare node")?;

    // The new replica's node is stopped: its replica can never catch up. (Stopping it rather
    // than cutting its links keeps the controller reachable, whichever node leads it.)
    cluster.pause(spare)?;
    let client = weir_client::Client::connect(cluster.addr(leader).to_string()).await?;
    let stalled = move_until_it_stalls(&client, TOPIC, follower, spare).await?;
    assert_eq!(stalled.reason(), Some("UNAVAILABLE"), "{stalled}");
    // The failed move takes back its first step: the new replica is no longer listed. (Before,
    // every failed move left one listed, until no node was left to move to.)
    let mut original = replicas.clone();
    original.sort_unstable();
    let listed = {
        let cluster = &cluster;
        eventually(GENEROUS, "the failed move's replica to be dropped", || {
            let original = original.clone();
            async move {
                let mut listed = cluster.partition_on(leader, TOPIC, 0).await?.replicas;
                listed.sort_unstable();
                (listed == original).then_some(listed)
            }
        })
        .await
    };
    assert!(listed.is_ok(), "{listed:?}");

    cluster.resume(spare)?;
    // The resumed node catches up on what it missed while stopped, and its replica may disturb
    // the partition's leader once (the move then fails NOT_LEADER, leader unknown): the move is
    // retried while its error is retriable, as a client would.
    let client = &client;
    let moved = eventually(GENEROUS, "the move after healing", || async move {
        let answer = tokio::time::timeout(GENEROUS, client.move_replica(TOPIC, 0, follower, spare));
        match answer.await {
            Ok(Ok(moved)) => Some(Ok(moved)),
            Ok(Err(e)) if e.is_retriable() => None,
            Ok(Err(e)) => Some(Err(anyhow::Error::from(e))),
            Err(_) => Some(Err(anyhow::anyhow!("the move after healing got no answer"))),
        }
    })
    .await??;
    let mut now: Vec<NodeId> = moved.partitions[0].replicas.clone();
    now.sort_unstable();
    let mut expected = vec![leader, spare];
    expected.sort_unstable();
    assert_eq!(now, expected);
    let (_, next) = cluster
        .produce_acked(&cluster.node_ids(), TOPIC, 0, vec![record("after", 1)])
        .await?;
    assert_eq!(next, 1);
    Ok(())
}

/// A move cut short leaves its new replica in the metadata without the raft group having it
/// (a failed move takes it back itself, but not one whose leader went away meanwhile). The next
/// move of the partition, even to another node, must drop any such replica first: before, it
/// stayed listed forever (found by the nemesis, with moves under faults), a replica that never
/// received anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_after_one_cut_short_leaves_no_replica_outside_the_raft_group() -> anyhow::Result<()>
{
    const TOPIC: &str = "recut";
    let mut cluster = cluster_with_quick_learner_stall(4, TOPIC).await?;
    let (leader, _) = cluster
        .produce_acked(&cluster.node_ids(), TOPIC, 0, vec![record("before", 0)])
        .await?;
    let view = cluster
        .partition_on(leader, TOPIC, 0)
        .await
        .context("describe")?;
    let follower = *view
        .replicas
        .iter()
        .find(|&&r| r != leader)
        .context("RF 2")?;
    let spares: Vec<NodeId> = cluster
        .node_ids()
        .into_iter()
        .filter(|n| !view.replicas.contains(n))
        .collect();
    let (stalled, other) = (spares[0], spares[1]);

    // The first move stalls on a stopped node and fails, its new replica already listed.
    cluster.pause(stalled)?;
    let client = weir_client::Client::connect(cluster.addr(leader).to_string()).await?;
    move_until_it_stalls(&client, TOPIC, follower, stalled).await?;
    cluster.resume(stalled)?;

    // Another move of the partition, to another node.
    let moved = tokio::time::timeout(GENEROUS, client.move_replica(TOPIC, 0, follower, other))
        .await
        .context("the second move")??;
    let mut listed = moved.partitions[0].replicas.clone();
    listed.sort_unstable();
    let mut expected = vec![leader, other];
    expected.sort_unstable();
    assert_eq!(
        listed, expected,
        "the replicas listed after the second move"
    );
    let status = cluster
        .partition_on(leader, TOPIC, 0)
        .await
        .context("describe on the leader")?;
    let mut voters: Vec<NodeId> = status.replica_status.iter().map(|r| r.node_id).collect();
    voters.sort_unstable();
    assert_eq!(voters, expected, "the raft group's voters");
    let (_, next) = cluster
        .produce_acked(&cluster.node_ids(), TOPIC, 0, vec![record("after", 1)])
        .await?;
    assert_eq!(next, 1);
    Ok(())
}

/// A leader that dies between a move's two membership entries leaves the partition's raft
/// group in joint consensus: every election then needs a majority of the old voters and one of
/// the new. The next leader must finish the change. Before, nothing did until another move of
/// the partition: the group lost its leader as soon as one node of either half failed, and a
/// node of the new half could be drained and removed (found by the nemesis, rounds 1702 and
/// 1801). Then the metadata must drop the replica moved away, which only the next move did
/// before (a node so orphaned misled clients in a nemesis run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_cut_short_in_joint_consensus_is_finished_by_the_next_leader() -> anyhow::Result<()>
{
    const TOPIC: &str = "joint";
    // Five nodes, so the controller keeps a majority with two of them down.
    let mut cluster = ProcessCluster::new(weir(), 5).await?;
    cluster.build_in(BuiltInFault::CrashInJointConsensus);
    cluster.start_nodes(&cluster.node_ids()).await?;
    cluster
        .client(1)?
        .create_topic(pb::CreateTopicRequest {
            name: TOPIC.into(),
            partitions: 1,
            replication_factor: 3,
            configs: HashMap::new(),
        })
        .await?;
    let (leader, base) = produce_acked(
        &cluster,
        &cluster.node_ids(),
        TOPIC,
        0,
        batch("before", 0, 1),
    )
    .await?;
    assert_eq!(base, 0);
    let replicas = cluster
        .partition_on(leader, TOPIC, 0)
        .await
        .context("describe")?
        .replicas;
    let from = *replicas.iter().find(|&&r| r != leader).context("RF 3")?;
    let to = *cluster
        .node_ids()
        .iter()
        .find(|n| !replicas.contains(n))
        .context("a spare node")?;
    let mut new_voters: Vec<NodeId> = replicas.iter().copied().filter(|&r| r != from).collect();
    new_voters.push(to);
    new_voters.sort_unstable();

    // The leader aborts as it applies the joint configuration: the move is cut short.
    let cut = tokio::time::timeout(
        GENEROUS,
        cluster
            .client(leader)?
            .move_replica(pb::MoveReplicaRequest {
                topic: TOPIC.into(),
                partition: 0,
                from_node: from,
                to_node: to,
            }),
    )
    .await
    .context("the move got no answer")?;
    assert!(cut.is_err(), "the move completed: {cut:?}");
    let status = cluster.wait_for_exit(leader).await?;
    assert!(!status.success(), "node {leader} exited with {status}");

    let survivors: Vec<NodeId> = cluster
        .node_ids()
        .into_iter()
        .filter(|&n| n != leader)
        .collect();
    let finished = {
        let cluster = &cluster;
        eventually(GENEROUS, "the group to leave joint consensus", || {
            let (survivors, new_voters) = (survivors.clone(), new_voters.clone());
            async move {
                for node in survivors {
                    let view = cluster.partition_on(node, TOPIC, 0).await?;
                    let mut voters: Vec<NodeId> =
                        view.replica_status.iter().map(|r| r.node_id).collect();
                    voters.sort_unstable();
                    // The leader's view of the final voters shows only that the leader appended
                    // the final configuration. `from` is killed next, and a voter left in joint
                    // consensus (which needs a majority of the old voters too) could then never
                    // elect a leader: wait until the live new voters, a majority of the final
                    // configuration, hold the whole log.
                    let caught_up = view
                        .replica_status
                        .iter()
                        .filter(|r| r.node_id != leader)
                        .all(|r| r.lag == 0);
                    if voters == new_voters && caught_up {
                        return Some(());
                    }
                }
                None
            }
        })
        .await
    };
    assert!(
        finished.is_ok(),
        "the raft group's voters never became {new_voters:?}: {finished:?}"
    );
    // The metadata still lists `from`, whose move never reached its last step. Its node, no
    // longer a member, would go on describing the partition as its own without a leader, and
    // a request sent there would wait for one in vain. The partition's leader drops it.
    let settled = {
        let cluster = &cluster;
        eventually(GENEROUS, "the metadata to drop the moved replica", || {
            let (survivors, new_voters) = (survivors.clone(), new_voters.clone());
            async move {
                for node in survivors {
                    let mut listed = cluster.partition_on(node, TOPIC, 0).await?.replicas;
                    listed.sort_unstable();
                    if listed != new_voters {
                        return None;
                    }
                }
                Some(())
            }
        })
        .await
    };
    assert!(
        settled.is_ok(),
        "the replicas listed never became {new_voters:?}: {settled:?}"
    );

    // Without `from` and the dead leader, the new voters still have a majority; the old ones,
    // which a group in joint consensus also needs, would not.
    cluster.kill(from)?;
    let alive: Vec<NodeId> = survivors.into_iter().filter(|&n| n != from).collect();
    let (_, next) = produce_acked(&cluster, &alive, TOPIC, 0, batch("after", 1, 1)).await?;
    assert_eq!(next, 1);
    cluster.wait_for_high_watermark(to, TOPIC, 0, 2).await?;
    let stored = cluster.read_partition(to, TOPIC, 0).await?;
    let values: Vec<String> = stored.iter().map(value_of).collect();
    assert_eq!(values, ["before-0", "after-1"], "records on node {to}");
    Ok(())
}

/// `ListOffsets` latest answers only from a replica whose high watermark is the partition's: a
/// follower that lags (here, cut off from the leader's messages) sends the caller to the leader
/// instead of calling a stale offset the latest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_does_not_answer_list_offsets_latest() -> anyhow::Result<()> {
    const TOPIC: &str = "latest";
    let cluster = ProcessCluster::start(weir(), 3).await?;
    cluster
        .client(1)?
        .create_topic(pb::CreateTopicRequest {
            name: TOPIC.into(),
            partitions: 1,
            replication_factor: 3,
            configs: HashMap::new(),
        })
        .await?;
    let leader = cluster.leader_of(TOPIC, 0).await?;
    let follower = *cluster
        .node_ids()
        .iter()
        .find(|&&n| n != leader)
        .context("a follower")?;
    cluster.cut(leader, follower);
    let records = (0..3).map(|i| record("latest", i)).collect();
    let (acked_by, base) = cluster.produce_acked(&[leader], TOPIC, 0, records).await?;
    assert_eq!((acked_by, base), (leader, 0));
    let latest = |node: NodeId| {
        let client = cluster.client(node);
        async move {
            client?
                .list_offsets(pb::ListOffsetsRequest {
                    topic: TOPIC.into(),
                    partition: 0,
                    spec: Some(pb::list_offsets_request::Spec::Latest(true)),
                })
                .await
                .map(|r| r.into_inner().offset)
                .map_err(anyhow::Error::from)
        }
    };
    assert_eq!(latest(leader).await?, Some(3));
    let lagging = latest(follower)
        .await
        .expect_err("the lagging follower answered");
    let status = lagging
        .downcast_ref::<tonic::Status>()
        .context("a gRPC status")?;
    assert_eq!(
        reason_of(status).as_deref(),
        Some("NOT_LEADER"),
        "{status:?}"
    );
    assert_eq!(
        weir_proto::error::metadata_of(status, "leader").as_deref(),
        Some(leader.to_string().as_str())
    );
    cluster.heal_all();
    cluster
        .wait_for_high_watermark(follower, TOPIC, 0, 3)
        .await?;
    Ok(())
}

/// A controller leader that still reaches one follower but not the others must not keep that
/// follower from voting: on four nodes the three connected ones elect a new leader and the
/// metadata changes again. (Before: the follower kept hearing the old leader's heartbeats, so it
/// refused every vote, and neither side had a quorum for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_reaching_only_a_minority_gives_way_to_the_connected_majority()
-> anyhow::Result<()> {
    let cluster = ProcessCluster::start(weir(), 4).await?;
    let leader = cluster
        .client(1)?
        .describe_cluster(pb::DescribeClusterRequest {})
        .await?
        .into_inner()
        .controller
        .context("a controller leader")?;
    let ids = cluster.node_ids();
    let others: Vec<NodeId> = ids.iter().copied().filter(|&n| n != leader).collect();
    // The leader keeps its links with one follower (the first) only.
    let cut_off = &others[1..];
    for &node in cut_off {
        cluster.cut(leader, node);
        cluster.cut(node, leader);
    }
    let asked = cut_off[0];
    let new_leader = eventually(GENEROUS, "a new controller leader", || async {
        let controller = cluster
            .client(asked)
            .ok()?
            .describe_cluster(pb::DescribeClusterRequest {})
            .await
            .ok()?
            .into_inner()
            .controller?;
        (controller != leader).then_some(controller)
    })
    .await?;
    assert!(others.contains(&new_leader), "{new_leader}");
    // And it changes the metadata, with the old leader and its follower's links as they are.
    // Right after the election the majority may still answer NOT_LEADER or UNAVAILABLE (its
    // leader has not committed an entry of its term yet, or two of the cut-off nodes stood at
    // once and the one with the higher id deposes the other in the same term, as openraft's
    // leader ids order them): such answers are tried again, as a client would.
    let created = eventually(GENEROUS, "the majority to create a topic", || async {
        let answer = cluster
            .client(asked)
            .ok()?
            .create_topic(pb::CreateTopicRequest {
                name: "after-the-old-leader".into(),
                partitions: 1,
                replication_factor: 1,
                configs: HashMap::new(),
            })
            .await;
        match answer {
            Ok(created) => Some(Ok(created.into_inner().topic)),
            Err(status)
                if matches!(
                    reason_of(&status).as_deref(),
                    Some("NOT_LEADER" | "UNAVAILABLE")
                ) =>
            {
                None
            }
            Err(status) => Some(Err(status)),
        }
    })
    .await??
    .context("CreateTopic describes the topic")?;
    assert_eq!(created.name, "after-the-old-leader");
    Ok(())
}

/// A client given every node (`a,b,c`, Kafka's `bootstrap.servers`) outlives its bootstrap
/// broker: with the node it bootstrapped from killed, cluster-wide requests move on to the next
/// node after one transport failure, and a producer's records keep being stored, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_given_every_node_outlives_its_bootstrap_broker() -> anyhow::Result<()> {
    const TOPIC: &str = "orders";
    let mut cluster = ProcessCluster::start(weir(), 3).await?;
    create_replicated_topic(&cluster, TOPIC, 1).await?;
    let bootstrap: Vec<String> = cluster
        .node_ids()
        .iter()
        .map(|&id| cluster.addr(id).to_string())
        .collect();
    let client = weir_client::Client::connect(bootstrap.join(",")).await?;
    let producer = weir_client::Producer::new(
        client.clone(),
        weir_client::ProducerConfig {
            retry_backoff: Duration::from_millis(50),
            ..weir_client::ProducerConfig::default()
        },
    );
    let value = |i: usize| format!("order-{i}");
    for i in 0..10 {
        producer
            .send(TOPIC, weir_client::ProducerRecord::new(value(i)))
            .await?;
    }

    // The client bootstrapped from node 1, the first of the list; it dies.
    cluster.kill(1)?;
    let described = eventually(
        GENEROUS,
        "the cluster described through another node",
        || {
            let client = client.clone();
            async move { client.describe_cluster().await.ok() }
        },
    )
    .await?;
    assert_eq!(described.nodes.len(), 3, "{described:?}");
    for i in 10..20 {
        tokio::time::timeout(
            GENEROUS,
            producer.send(TOPIC, weir_client::ProducerRecord::new(value(i))),
        )
        .await
        .context("a record sent after the bootstrap broker died was never stored")??;
    }
    let fetched = client
        .fetch(weir_client::FetchSpec::new(TOPIC, 0, 0))
        .await?;
    let values: Vec<String> = fetched
        .records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    assert_eq!(values, (0..20).map(value).collect::<Vec<_>>());
    Ok(())
}

/// A node's gauge `name`, once it satisfies `reached`.
async fn node_gauge_reaches(
    cluster: &ProcessCluster,
    id: NodeId,
    name: &str,
    reached: impl Fn(u64) -> bool,
) -> anyhow::Result<u64> {
    let addr = cluster.metrics_addr(id);
    eventually(GENEROUS, &format!("{name} of node {id}"), || async {
        let value = weir_tests::scraped_gauge(addr, name).await.ok()?;
        reached(value).then_some(value)
    })
    .await
}

/// Partitions nobody writes to run no raft timers: each node heartbeats its peers once per
/// interval for all of them, and a follower starts its election timer only when its leader's
/// node falls silent. A leader quiet past its lease still takes the next write at once, and a
/// quiet leader's death still ends in a new leader that takes writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_partitions_run_no_raft_timers_yet_take_writes_and_fail_over() -> anyhow::Result<()> {
    const TOPIC: &str = "quiet";
    const PARTITIONS: u32 = 4;
    let mut cluster = ProcessCluster::start(weir(), 3).await?;
    create_replicated_topic(&cluster, TOPIC, PARTITIONS).await?;
    let ids = cluster.node_ids();
    for partition in 0..PARTITIONS {
        let (_, base) =
            produce_acked(&cluster, &ids, TOPIC, partition, batch("before", 0, 2)).await?;
        assert_eq!(base, 0);
    }

    // Every replica of every partition goes quiet, and every leader's lease lapses.
    for &id in &ids {
        node_gauge_reaches(&cluster, id, "weir_raft_partition_timers", |t| t == 0).await?;
    }
    eventually(GENEROUS, "every leader's lease to lapse", || async {
        let mut lapsed = 0;
        for &id in &ids {
            let addr = cluster.metrics_addr(id);
            lapsed += weir_tests::scraped_gauge(addr, "weir_partition_leases_lapsed")
                .await
                .ok()?;
        }
        (lapsed == u64::from(PARTITIONS)).then_some(())
    })
    .await?;

    // The leader takes the next write at once: it renews its lease first.
    for partition in 0..PARTITIONS {
        let leader = cluster.leader_of(TOPIC, partition).await?;
        let answer = cluster
            .client(leader)?
            .produce(produce_request(TOPIC, partition, batch("after", 2, 2)))
            .await?
            .into_inner();
        assert_eq!(answer.base_offset, Some(2), "partition {partition}");
    }
    // Followers learn the commit index without raft heartbeats: every replica serves the
    // records.
    for partition in 0..PARTITIONS {
        let copies = converged_copies(&cluster, &ids, TOPIC, partition).await?;
        assert_eq!(assert_identical(&copies).len(), 4, "partition {partition}");
    }

    // A quiet leader dies: its followers' timers start once its node falls silent, and they
    // elect one of them.
    let dead = cluster.leader_of(TOPIC, 0).await?;
    let survivors: Vec<NodeId> = ids.iter().copied().filter(|&id| id != dead).collect();
    cluster.kill(dead)?;
    let (new_leader, base) =
        produce_acked(&cluster, &survivors, TOPIC, 0, batch("after", 4, 2)).await?;
    assert_ne!(new_leader, dead);
    assert_eq!(base, 4);
    let stored = cluster.read_partition(new_leader, TOPIC, 0).await?;
    let values: Vec<String> = stored.iter().map(value_of).collect();
    assert_eq!(
        values,
        [
            "before-0", "before-1", "after-2", "after-3", "after-4", "after-5"
        ]
    );
    // With a node down the survivors go quiet again: every partition has a leader they hear.
    for &id in &survivors {
        node_gauge_reaches(&cluster, id, "weir_raft_partition_timers", |t| t == 0).await?;
    }
    // The dead node comes back, quiet leaders catch it up, and it goes quiet too.
    cluster.restart(dead).await?;
    let copies = converged_copies(&cluster, &ids, TOPIC, 0).await?;
    assert_eq!(assert_identical(&copies).len(), 6);
    node_gauge_reaches(&cluster, dead, "weir_raft_partition_timers", |t| t == 0).await?;
    Ok(())
}

/// A quiet partition leader that reaches one follower but not the two others (four replicas)
/// must not keep that follower from voting by renewing its lease on every write it is sent: it
/// holds back after a failed renewal, the follower's lease lapses, and the three connected
/// replicas elect one of them and take writes. (openraft issue #2080, for partitions; the
/// controller's case is the test above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_leader_reaching_only_a_minority_gives_way_to_the_connected_majority()
-> anyhow::Result<()> {
    const TOPIC: &str = "four";
    let cluster = ProcessCluster::start(weir(), 4).await?;
    cluster
        .client(1)?
        .create_topic(pb::CreateTopicRequest {
            name: TOPIC.into(),
            partitions: 1,
            replication_factor: 4,
            configs: HashMap::new(),
        })
        .await?;
    let ids = cluster.node_ids();
    let (leader, base) = produce_acked(&cluster, &ids, TOPIC, 0, batch("before", 0, 2)).await?;
    assert_eq!(base, 0);
    let others: Vec<NodeId> = ids.iter().copied().filter(|&n| n != leader).collect();
    for &node in &others[1..] {
        cluster.cut(leader, node);
        cluster.cut(node, leader);
    }

    // Writes keep reaching the old leader, which tries to renew its lease with them.
    let stop = Arc::new(AtomicBool::new(false));
    let mut at_old_leader = cluster.client(leader)?;
    let writing = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let request = produce_request(TOPIC, 0, batch("to-the-old-leader", 0, 1));
                let _ = tokio::time::timeout(GENEROUS, at_old_leader.produce(request)).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let (new_leader, base) =
        produce_acked(&cluster, &others, TOPIC, 0, batch("after", 2, 2)).await?;
    stop.store(true, Ordering::Relaxed);
    writing.await?;
    assert_ne!(new_leader, leader);
    // Whatever the old leader was sent was never acknowledged: it could not commit it.
    let stored = cluster.read_partition(new_leader, TOPIC, 0).await?;
    let values: Vec<String> = stored.iter().map(value_of).collect();
    assert_eq!(values[..2], ["before-0", "before-1"]);
    assert_eq!(values.last().map(String::as_str), Some("after-3"));
    assert_eq!(base as usize, values.len() - 2);
    Ok(())
}
