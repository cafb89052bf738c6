//! Retention and trimming (docs/operations.md, "Retention"): the log start moves on every
//! replica alike, records below it are out of range for readers and groups, and a replica that
//! falls behind it receives a snapshot and the retained entries only.

use std::time::Duration;

use crate::{now_ms, weir};
use anyhow::Context;
use bytes::Bytes;
use tonic::Code;
use weir_client::{
    Client, Consumer, ConsumerConfig, FetchSpec, OffsetReset, OffsetSpec, ProducerRecord,
    TopicPartition, TopicSpec,
};
use weir_proto::v1 as pb;
use weir_tests::{InProcessBroker, NodeId, ProcessCluster, eventually};

/// Bounds a wait for replication, an election or a retention pass; never a timing assertion.
const GENEROUS: Duration = Duration::from_secs(30);

fn record(value: String, timestamp_ms: i64) -> pb::Record {
    pb::Record {
        key: None,
        value: Bytes::from(value),
        headers: Vec::new(),
        timestamp_ms: Some(timestamp_ms),
        tombstone: false,
    }
}

fn values(records: &[pb::ConsumedRecord]) -> Vec<(u64, String)> {
    records
        .iter()
        .map(|r| (r.offset, String::from_utf8_lossy(&r.value).into_owned()))
        .collect()
}

/// A single broker with `topic` (one partition) holding `v0`..`v9` at offsets 0 to 9.
async fn broker_with_ten_records(topic: &str) -> anyhow::Result<(InProcessBroker, Client)> {
    let broker = InProcessBroker::start().await?;
    let client = Client::connect(broker.addr().to_string()).await?;
    client.create_topic(TopicSpec::new(topic, 1)).await?;
    let records = (0..10)
        .map(|i| ProducerRecord::new(format!("v{i}")))
        .collect();
    client
        .produce(topic, Some(0), records, weir_client::Acks::All)
        .await?;
    Ok((broker, client))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_records_are_out_of_range_and_a_group_behind_them_resets() -> anyhow::Result<()> {
    let (broker, client) = broker_with_ten_records("trimmed").await?;
    let tp = TopicPartition::new("trimmed", 0);
    let mut config = ConsumerConfig::with_group("readers");
    config.auto_commit = false;
    config.offset_reset = OffsetReset::Earliest;
    config.fetch_max_wait = Duration::from_millis(100);
    let mut first = Consumer::new(client.clone(), config.clone());
    first.commit_offsets(&[(tp.clone(), 2)]).await?;
    first.close().await?;

    assert_eq!(client.delete_records("trimmed", 0, 6).await?, 6);
    // The log start never moves back.
    assert_eq!(client.delete_records("trimmed", 0, 4).await?, 6);
    let past_the_end = client
        .delete_records("trimmed", 0, 11)
        .await
        .expect_err("past the high watermark");
    assert_eq!(
        past_the_end.reason(),
        Some("OFFSET_OUT_OF_RANGE"),
        "{past_the_end}"
    );

    let below = client
        .fetch(FetchSpec::new("trimmed", 0, 0))
        .await
        .expect_err("a trimmed offset");
    assert_eq!(below.reason(), Some("OFFSET_OUT_OF_RANGE"), "{below}");
    let fetched = client.fetch(FetchSpec::new("trimmed", 0, 6)).await?;
    let got: Vec<(u64, Bytes)> = fetched
        .records
        .iter()
        .map(|r| (r.offset, r.value.clone()))
        .collect();
    let want: Vec<(u64, Bytes)> = (6..10).map(|i| (i, Bytes::from(format!("v{i}")))).collect();
    assert_eq!(got, want);
    let earliest = client
        .list_offsets("trimmed", 0, OffsetSpec::Earliest)
        .await?;
    assert_eq!(earliest.offset, Some(6));
    let described = client.describe_topic("trimmed").await?;
    assert_eq!(described.partitions[0].log_start_offset, 6);

    // The group's committed offset (2) was trimmed: its next member resets per its policy,
    // and resumes from what is left, not from 2 (out of range) nor from the end.
    let committed = client.committed_offsets("readers", &[]).await?;
    assert_eq!(
        committed.iter().map(|c| c.offset).collect::<Vec<_>>(),
        vec![2]
    );
    let mut second = Consumer::new(client.clone(), config);
    second.subscribe(&["trimmed"]).await?;
    let deadline = tokio::time::Instant::now() + GENEROUS;
    let mut offsets = Vec::new();
    while offsets.len() < 4 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "got only {offsets:?}"
        );
        offsets.extend(second.poll().await?.into_iter().map(|r| r.record.offset));
    }
    assert_eq!(offsets, vec![6, 7, 8, 9]);
    second.close().await?;

    // The log start is replicated state: it survives a restart.
    let (data_dir, _temp) = broker.stop().await;
    let broker = InProcessBroker::start_in(&data_dir).await?;
    let client = Client::connect(broker.addr().to_string()).await?;
    let earliest = client
        .list_offsets("trimmed", 0, OffsetSpec::Earliest)
        .await?;
    assert_eq!(earliest.offset, Some(6));
    Ok(())
}

/// A topic keeping an hour: batches whose newest record is two hours old go, on every replica
/// at the same offset; the young ones stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_ms_moves_the_log_start_on_every_replica_alike() -> anyhow::Result<()> {
    const TOPIC: &str = "hourly";
    let cluster =
        ProcessCluster::new_with_config(weir(), 3, "[retention]\ncheck_interval_ms = 100\n")
            .await?;
    let mut cluster = cluster;
    cluster.start_nodes(&cluster.node_ids()).await?;
    let nodes = cluster.node_ids();
    cluster
        .create_topic(TOPIC, 1, 3, &[("retention.ms", "3600000")])
        .await?;
    let old = now_ms() - 2 * 3_600_000;
    for batch in 0..4 {
        let records = (0..2)
            .map(|i| record(format!("old-{}", batch * 2 + i), old))
            .collect();
        cluster.produce_acked(&nodes, TOPIC, 0, records).await?;
    }
    for i in 0..3 {
        cluster
            .produce_acked(
                &nodes,
                TOPIC,
                0,
                vec![record(format!("young-{i}"), now_ms())],
            )
            .await?;
    }

    let cluster = &cluster;
    for &node in &nodes {
        eventually(GENEROUS, "the log start to reach 8", || async move {
            let view = cluster.partition_on(node, TOPIC, 0).await?;
            (view.log_start_offset == 8).then_some(())
        })
        .await
        .with_context(|| format!("node {node}"))?;
    }
    let want: Vec<(u64, String)> = (0..3).map(|i| (8 + i, format!("young-{i}"))).collect();
    for &node in &nodes {
        let stored = cluster.read_partition(node, TOPIC, 0).await?;
        assert_eq!(values(&stored), want, "node {node}");
    }
    let leader = cluster.leader_of(TOPIC, 0).await?;
    let below = cluster
        .client(leader)?
        .fetch(pb::FetchRequest {
            topic: TOPIC.into(),
            partition: 0,
            offset: 7,
            ..Default::default()
        })
        .await
        .expect_err("a record retention deleted");
    assert_eq!(below.code(), Code::OutOfRange, "{below:?}");
    Ok(())
}

/// After a trim, every replica purges the entries below the log start; a replica moved onto a
/// new node then installs a snapshot cut at the log start and receives only the entries after
/// it: it never stores a trimmed batch, and serves the same records as the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_moved_after_a_trim_receives_only_the_retained_entries() -> anyhow::Result<()> {
    const TOPIC: &str = "moved";
    const TRIMMED: u64 = 250;
    let mut cluster = ProcessCluster::new(weir(), 4).await?;
    cluster.start_nodes(&cluster.node_ids()).await?;
    cluster.create_topic(TOPIC, 1, 3, &[]).await?;
    let all = cluster.node_ids();
    // The records to be trimmed are large (4 MiB in all), the ones kept small, so the bytes
    // the new replica receives tell which it got.
    const LARGE: usize = 16 * 1024;
    for i in 0..300 {
        let value = if i < TRIMMED {
            format!("r{i}-{}", "x".repeat(LARGE))
        } else {
            format!("r{i}")
        };
        cluster
            .produce_acked(&all, TOPIC, 0, vec![record(value, now_ms())])
            .await?;
    }
    let leader = cluster.leader_of(TOPIC, 0).await?;
    let client = Client::connect(cluster.addr(leader).to_string()).await?;
    assert_eq!(client.delete_records(TOPIC, 0, TRIMMED).await?, TRIMMED);
    for i in 300..320 {
        cluster
            .produce_acked(&all, TOPIC, 0, vec![record(format!("r{i}"), now_ms())])
            .await?;
    }
    let view = cluster
        .partition_on(leader, TOPIC, 0)
        .await
        .context("describe on the leader")?;
    let replicas = view.replicas.clone();
    {
        let cluster = &cluster;
        for &node in &replicas {
            // Purged, but for the last hundred or so entries below the log start.
            eventually(GENEROUS, "the replica to purge its log", || async move {
                let view = cluster.partition_on(node, TOPIC, 0).await?;
                view.first_stored_offset
                    .is_some_and(|first| first > 0 && first <= TRIMMED)
                    .then_some(())
            })
            .await
            .with_context(|| format!("node {node}"))?;
        }
    }
    let from = *replicas
        .iter()
        .find(|&&r| r != leader)
        .context("RF 3 has followers")?;
    let to: NodeId = *all
        .iter()
        .find(|n| !replicas.contains(n))
        .context("a spare node")?;
    let sent_before = cluster.link(leader, to).bytes_sent();
    tokio::time::timeout(GENEROUS, client.move_replica(TOPIC, 0, from, to))
        .await
        .context("the move")??;

    let on_leader = cluster.read_partition(leader, TOPIC, 0).await?;
    assert_eq!(on_leader.first().map(|r| r.offset), Some(TRIMMED));
    assert_eq!(on_leader.len(), 70);
    let cluster = &cluster;
    let view = eventually(GENEROUS, "the moved replica to catch up", || async move {
        let view = cluster.partition_on(to, TOPIC, 0).await?;
        (view.high_watermark == 320).then_some(view)
    })
    .await?;
    assert_eq!(view.log_start_offset, TRIMMED);
    assert_eq!(
        view.first_stored_offset,
        Some(TRIMMED),
        "the moved replica stores only what follows the log start"
    );
    let on_new = cluster.read_partition(to, TOPIC, 0).await?;
    assert_eq!(values(&on_new), values(&on_leader));
    // What the leader sent the new node while it caught up: the snapshot, the 70 small
    // retained entries, heartbeats and the controller's traffic; not the trimmed 4 MiB.
    let sent = cluster.link(leader, to).bytes_sent() - sent_before;
    println!("the leader sent the moved replica {sent} bytes to catch up");
    assert!(
        sent < TRIMMED * LARGE as u64 / 4,
        "the leader sent {sent} bytes to the moved replica"
    );
    Ok(())
}

/// The controller's log stays bounded however many group commits it takes (it snapshots every
/// 1 000 entries and purges to 100 behind), and a restarted node restores the groups' offsets
/// from its snapshot and the entries after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_log_stays_bounded_and_restores_from_its_snapshot() -> anyhow::Result<()> {
    const COMMITS: u64 = 2_500;
    let (broker, client) = broker_with_ten_records("committed").await?;
    let tp = TopicPartition::new("committed", 0);
    let mut config = ConsumerConfig::with_group("many-commits");
    config.auto_commit = false;
    let mut consumer = Consumer::new(client.clone(), config);
    for i in 0..COMMITS {
        consumer.commit_offsets(&[(tp.clone(), i % 10)]).await?;
    }
    consumer.close().await?;
    let last = (COMMITS - 1) % 10;

    let (data_dir, temp) = broker.stop().await;
    {
        let db = weir_storage::LogDb::open(
            data_dir.join("controller.redb"),
            weir_storage::LogDbOptions::default(),
        )?;
        let bounds = db.bounds(0)?;
        let (first, last_index) = (
            bounds
                .first_index
                .context("the controller log keeps entries")?,
            bounds
                .last_index
                .context("the controller log keeps entries")?,
        );
        assert!(
            first > 1_000 && last_index - first < 1_200,
            "the controller log holds entries {first} to {last_index} after {COMMITS} commits"
        );
    }
    let broker = InProcessBroker::start_in(&data_dir).await?;
    let client = Client::connect(broker.addr().to_string()).await?;
    let committed = client.committed_offsets("many-commits", &[]).await?;
    assert_eq!(
        committed.iter().map(|c| c.offset).collect::<Vec<_>>(),
        vec![last]
    );
    drop(temp);
    Ok(())
}

/// Twenty times `retention.bytes` produced into one partition: the log start follows, every
/// batch below it is purged, and redb reuses the freed pages, so the data file ends at a small
/// multiple of the bound (docs/operations.md, "Retention"), not twenty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_bytes_bounds_the_partition_and_the_data_file() -> anyhow::Result<()> {
    const BOUND: u64 = 1 << 20;
    const RECORD: usize = 1024;
    const PER_BATCH: u64 = 16;
    let broker = InProcessBroker::start_adjusted(|c| c.retention.check_interval_ms = 20).await?;
    let client = Client::connect(broker.addr().to_string()).await?;
    client
        .create_topic(
            TopicSpec::new("bounded", 1).with_config("retention.bytes", BOUND.to_string()),
        )
        .await?;
    let value = "x".repeat(RECORD);
    let mut produced = 0u64;
    let data_file = broker.data_dir.join("partitions.redb");
    let mut file_sizes = Vec::new();
    // Twenty bounds, one bound at a time, each time until retention has caught up.
    for _ in 0..20 {
        for _ in 0..(BOUND / RECORD as u64 / PER_BATCH) {
            let records = (0..PER_BATCH)
                .map(|_| ProducerRecord::new(value.clone()))
                .collect();
            client
                .produce("bounded", Some(0), records, weir_client::Acks::All)
                .await?;
            produced += PER_BATCH;
        }
        let client = &client;
        eventually(GENEROUS, "retention to catch up", || async move {
            let p = client.describe_topic("bounded").await.ok()?.partitions[0].clone();
            // At most the bound above the log start (records are a little smaller than
            // their stored batches), and the batches below it purged but for the last 100.
            let kept = p.high_watermark - p.log_start_offset;
            let stored = p.high_watermark - p.first_stored_offset.unwrap_or(0);
            (kept <= BOUND / RECORD as u64 && stored <= kept + 100 * PER_BATCH).then_some(())
        })
        .await?;
        file_sizes.push(std::fs::metadata(&data_file)?.len() >> 10);
    }
    println!("partitions.redb after each MiB, in KiB: {file_sizes:?}");
    let p = client.describe_topic("bounded").await?.partitions[0].clone();
    assert_eq!(p.high_watermark, produced);
    let kept_bytes = (p.high_watermark - p.log_start_offset) * RECORD as u64;
    assert!(
        kept_bytes > BOUND * 3 / 4,
        "retention kept only {kept_bytes} bytes of a {BOUND}-byte bound"
    );
    // What describe and the metrics say the replica stores is what it holds: its batches from
    // the first stored offset on, each a little larger than its records.
    let stored_records = p.high_watermark - p.first_stored_offset.unwrap_or(0);
    let stored_bytes = p.stored_bytes.context("describe gives the stored bytes")?;
    let payload = stored_records * RECORD as u64;
    assert!(
        payload < stored_bytes && stored_bytes < payload + payload / 10,
        "{stored_bytes} bytes stored for {stored_records} records of {RECORD} bytes"
    );
    // The metric says the same, once the purge after the last trim (which runs on its own
    // after the snapshot) has landed: compare readings taken back to back until they agree.
    let metrics_addr = broker.metrics_addr().context("metrics")?;
    let client_ref = &client;
    eventually(GENEROUS, "the metric to match describe", || async move {
        let described =
            client_ref.describe_topic("bounded").await.ok()?.partitions[0].stored_bytes?;
        let metrics = weir_tests::scrape_metrics(metrics_addr).await.ok()?;
        let line =
            format!("weir_partition_stored_bytes{{topic=\"bounded\",partition=\"0\"}} {described}");
        metrics.lines().any(|l| l == line).then_some(())
    })
    .await?;
    // A fetch from the log start serves the record at it. Retention counts stored bytes, a
    // little more than the records' (the wait above counts records), so it may still move the
    // log start by a batch or two after that wait: a fetch the log start overtook is retried
    // from the new one.
    let (log_start, first_served) = eventually(GENEROUS, "a fetch from the log start", || {
        let client = client_ref;
        async move {
            let p = client.describe_topic("bounded").await.ok()?.partitions[0].clone();
            let fetched = client
                .fetch(FetchSpec::new("bounded", 0, p.log_start_offset))
                .await
                .ok()?;
            Some((
                p.log_start_offset,
                fetched.records.first().map(|r| r.offset),
            ))
        }
    })
    .await?;
    assert_eq!(first_served, Some(log_start));

    let (data_dir, _temp) = broker.stop().await;
    let file = std::fs::metadata(data_dir.join("partitions.redb"))?.len();
    println!(
        "produced {} MiB with retention.bytes {} MiB: partitions.redb is {:.1} MiB",
        (produced * RECORD as u64) >> 20,
        BOUND >> 20,
        file as f64 / (1 << 20) as f64
    );
    // redb grows its file by doubling; here 2, 4, then 8 MiB after the third MiB, and flat for
    // the other seventeen. Without retention it would hold all twenty.
    assert!(
        file < 12 * BOUND,
        "partitions.redb is {file} bytes after {} bytes produced with retention.bytes {BOUND}",
        produced * RECORD as u64
    );
    Ok(())
}
