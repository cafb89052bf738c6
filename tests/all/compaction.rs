//! Compaction (docs/operations.md, "Compaction"): a compacted topic keeps the latest record of
//! each key at its offset, identical on every replica (a follower that was down catches up to
//! the same records), never touches the tail newer than `min.compaction.lag.ms`, and drops
//! tombstones once they are older than `delete.retention.ms`.

use std::collections::BTreeMap;
use std::sync::PoisonError;
use std::time::Duration;

use crate::{now_ms, weir};
use anyhow::Context;
use bytes::Bytes;
use weir_proto::v1 as pb;
use weir_tests::test_broker::BuiltInFault;
use weir_tests::{InProcessBroker, NodeId, ProcessCluster, RawClient, eventually, scrape_metrics};

/// Bounds a wait for replication, an election or a compaction pass; never a timing assertion.
const GENEROUS: Duration = Duration::from_secs(30);

/// Retention and compaction checks every 100 ms, so a test waits for passes, not for a timer.
const FAST_CHECKS: &str = "[retention]\ncheck_interval_ms = 100\n";

/// How [`read_log`] shows a tombstone's value.
const TOMBSTONE: &str = "<tombstone>";

fn tombstone(key: &str, timestamp_ms: i64) -> pb::Record {
    pb::Record {
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        tombstone: true,
        timestamp_ms: Some(timestamp_ms),
        ..Default::default()
    }
}

fn keyed(key: &str, value: &str, timestamp_ms: i64) -> pb::Record {
    pb::Record {
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value: Bytes::copy_from_slice(value.as_bytes()),
        timestamp_ms: Some(timestamp_ms),
        ..Default::default()
    }
}

/// Offset → (key, value) of every record the node behind `client` serves, read from the log start by
/// following the broker's next offset (compacted logs have gaps) up to the high watermark.
async fn read_log(
    mut client: RawClient,
    topic: &str,
) -> anyhow::Result<BTreeMap<u64, (String, String)>> {
    let mut offset = client
        .list_offsets(pb::ListOffsetsRequest {
            topic: topic.into(),
            partition: 0,
            spec: Some(pb::list_offsets_request::Spec::Earliest(true)),
        })
        .await?
        .into_inner()
        .offset
        .context("ListOffsets earliest answers an offset")?;
    let mut records = BTreeMap::new();
    loop {
        let fetched = client
            .fetch(pb::FetchRequest {
                topic: topic.into(),
                partition: 0,
                offset: offset as i64,
                max_records: 7,
                ..Default::default()
            })
            .await?
            .into_inner();
        for r in &fetched.records {
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            let value = if r.tombstone {
                TOMBSTONE.to_owned()
            } else {
                text(&r.value)
            };
            records.insert(
                r.offset,
                (text(r.key.as_deref().unwrap_or_default()), value),
            );
        }
        anyhow::ensure!(
            fetched.next_offset > offset || fetched.next_offset >= fetched.high_watermark,
            "the fetch at {offset} did not move on (next offset {}, high watermark {})",
            fetched.next_offset,
            fetched.high_watermark
        );
        offset = fetched.next_offset;
        if offset >= fetched.high_watermark {
            return Ok(records);
        }
    }
}

/// The latest record of each key of `produced` (offset → key, value), at its offset.
fn latest_per_key(produced: &BTreeMap<u64, (String, String)>) -> BTreeMap<u64, (String, String)> {
    let mut latest: BTreeMap<&str, u64> = BTreeMap::new();
    for (offset, (key, _)) in produced {
        latest.insert(key, *offset);
    }
    latest
        .values()
        .map(|offset| (*offset, produced[offset].clone()))
        .collect()
}

/// Produces `records` as one batch through the live `nodes`; records them in `produced` at
/// the offsets they got.
async fn produce(
    cluster: &ProcessCluster,
    nodes: &[NodeId],
    topic: &str,
    records: Vec<pb::Record>,
    produced: &mut BTreeMap<u64, (String, String)>,
) -> anyhow::Result<()> {
    let kv: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (text(r.key.as_deref().unwrap_or_default()), text(&r.value))
        })
        .collect();
    let (_, base) = cluster.produce_acked(nodes, topic, 0, records).await?;
    for (i, kv) in kv.into_iter().enumerate() {
        produced.insert(base + i as u64, kv);
    }
    Ok(())
}

/// Waits until every node in `nodes` serves exactly `want`.
async fn every_replica_serves(
    cluster: &ProcessCluster,
    nodes: &[NodeId],
    topic: &str,
    want: &BTreeMap<u64, (String, String)>,
) -> anyhow::Result<()> {
    for &node in nodes {
        wait_for_log(&cluster.client(node)?, topic, want)
            .await
            .with_context(|| format!("node {node}"))?;
    }
    Ok(())
}

/// A three-node cluster checking every 100 ms, with `topic` (one partition on every node,
/// topic `configs`), once one of the partition's followers is killed.
struct FollowerDown {
    cluster: ProcessCluster,
    /// Every node.
    all: Vec<NodeId>,
    /// The partition's leader.
    leader: NodeId,
    /// The follower killed.
    down: NodeId,
    /// The nodes still up.
    live: Vec<NodeId>,
}

async fn with_a_follower_down(
    topic: &str,
    configs: &[(&str, &str)],
) -> anyhow::Result<FollowerDown> {
    let mut cluster = ProcessCluster::new_with_config(weir(), 3, FAST_CHECKS).await?;
    let all = cluster.node_ids();
    cluster.start_nodes(&all).await?;
    cluster.create_topic(topic, 1, 3, configs).await?;
    let leader = cluster.leader_of(topic, 0).await?;
    let down = *all.iter().find(|&&n| n != leader).context("a follower")?;
    cluster.kill(down)?;
    let live = all.iter().copied().filter(|&n| n != down).collect();
    Ok(FollowerDown {
        cluster,
        all,
        leader,
        down,
        live,
    })
}

/// A keyed workload on a compacted topic: every replica ends with the latest value of each
/// key at its original offset, including a follower that was down while the records were
/// produced and compacted, and again after more updates (a second pass over the first's
/// result). A record without a key is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_keeps_the_latest_value_of_each_key_at_its_offset() -> anyhow::Result<()> {
    const TOPIC: &str = "table";
    let FollowerDown {
        mut cluster,
        all,
        leader,
        down,
        live,
    } = with_a_follower_down(
        TOPIC,
        &[
            ("cleanup.policy", "compact"),
            // Compact whatever was written since the last pass, at the next check.
            ("min.cleanable.dirty.ratio", "0"),
        ],
    )
    .await?;

    let mut produced = BTreeMap::new();
    for batch in 0..20u64 {
        let records = (0..10u64)
            .map(|i| {
                let n = batch * 10 + i;
                keyed(&format!("k{}", n % 13), &format!("v{n}"), now_ms())
            })
            .collect();
        produce(&cluster, &live, TOPIC, records, &mut produced).await?;
    }
    let keyless = cluster
        .client(leader)?
        .produce(pb::ProduceRequest {
            topic: TOPIC.into(),
            partition: Some(0),
            records: vec![pb::Record {
                value: Bytes::from_static(b"no key"),
                ..Default::default()
            }],
            acks: pb::Acks::All as i32,
            ..Default::default()
        })
        .await
        .expect_err("a keyless record on a compacted topic");
    assert_eq!(
        weir_proto::error::reason_of(&keyless).as_deref(),
        Some("INVALID_RECORD"),
        "{keyless:?}"
    );
    assert!(keyless.message().contains("no key"), "{keyless:?}");

    let want = latest_per_key(&produced);
    assert_eq!(want.len(), 13);
    every_replica_serves(&cluster, &live, TOPIC, &want).await?;

    // The follower that missed it all receives the leader's compacted batches and the request
    // to compact, and ends with the same records.
    cluster.restart(down).await?;
    every_replica_serves(&cluster, &all, TOPIC, &want).await?;

    // More updates to three keys: the next pass maps only them, and leaves the others be.
    let updates = ["k1", "k5", "k12"]
        .iter()
        .map(|k| keyed(k, &format!("{k}-updated"), now_ms()))
        .collect();
    produce(&cluster, &all, TOPIC, updates, &mut produced).await?;
    let want = latest_per_key(&produced);
    assert_eq!(want.len(), 13);
    every_replica_serves(&cluster, &all, TOPIC, &want).await?;
    Ok(())
}

/// `min.compaction.lag.ms` keeps the young tail as it is: batches older than the lag are
/// compacted, the ones written within it keep every record, whatever their keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_within_the_compaction_lag_is_left_alone() -> anyhow::Result<()> {
    const TOPIC: &str = "lagged";
    let broker = InProcessBroker::start_adjusted(|c| c.retention.check_interval_ms = 100).await?;
    let mut client = broker.raw_client().await?;
    weir_tests::create_topic(
        &client,
        TOPIC,
        1,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("min.cleanable.dirty.ratio", "0"),
            ("min.compaction.lag.ms", "3600000"),
        ],
    )
    .await?;
    let two_hours_ago = now_ms() - 2 * 3_600_000;
    let mut produced = BTreeMap::new();
    let mut offset = 0;
    for (timestamp_ms, prefix) in [(two_hours_ago, "old"), (now_ms(), "young")] {
        for batch in 0..3 {
            let records: Vec<pb::Record> = (0..4)
                .map(|k| {
                    keyed(
                        &format!("k{k}"),
                        &format!("{prefix}-{batch}-{k}"),
                        timestamp_ms,
                    )
                })
                .collect();
            for r in &records {
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                produced.insert(
                    offset,
                    (text(r.key.as_deref().unwrap_or_default()), text(&r.value)),
                );
                offset += 1;
            }
            client
                .produce(pb::ProduceRequest {
                    topic: TOPIC.into(),
                    partition: Some(0),
                    records,
                    acks: pb::Acks::All as i32,
                    ..Default::default()
                })
                .await?;
        }
    }
    // The old half (offsets 0..12) keeps its last batch; the young half all of its records.
    let want: BTreeMap<u64, (String, String)> = produced
        .iter()
        .filter(|(offset, _)| **offset >= 8)
        .map(|(o, kv)| (*o, kv.clone()))
        .collect();
    wait_for_log(&client, TOPIC, &want).await
}

/// A tombstone removes its key's older records at the next pass, and goes itself once older
/// than `delete.retention.ms`: at once for one stamped two hours ago on a topic keeping them an
/// hour; for a fresh one, when the topic's `delete.retention.ms` drops to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_delete_their_key_and_vanish_after_their_delay() -> anyhow::Result<()> {
    const TOPIC: &str = "deletes";
    let broker = InProcessBroker::start_adjusted(|c| c.retention.check_interval_ms = 100).await?;
    let mut client = broker.raw_client().await?;
    weir_tests::create_topic(
        &client,
        TOPIC,
        1,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("min.cleanable.dirty.ratio", "0"),
            ("delete.retention.ms", "3600000"),
        ],
    )
    .await?;
    let now = now_ms();
    client
        .produce(pb::ProduceRequest {
            topic: TOPIC.into(),
            partition: Some(0),
            records: vec![
                keyed("a", "a1", now),
                keyed("b", "b1", now),
                tombstone("a", now - 2 * 3_600_000),
                keyed("c", "c1", now),
                tombstone("c", now),
            ],
            acks: pb::Acks::All as i32,
            ..Default::default()
        })
        .await?;
    let entry = |key: &str, value: &str| (key.to_owned(), value.to_owned());
    let want: BTreeMap<u64, (String, String)> =
        [(1, entry("b", "b1")), (4, entry("c", TOMBSTONE))].into();
    wait_for_log(&client, TOPIC, &want).await?;

    client
        .alter_topic_configs(pb::AlterTopicConfigsRequest {
            topic: TOPIC.into(),
            set: [("delete.retention.ms".to_owned(), "0".to_owned())].into(),
            delete: Vec::new(),
        })
        .await?;
    let want: BTreeMap<u64, (String, String)> = [(1, entry("b", "b1"))].into();
    wait_for_log(&client, TOPIC, &want).await?;

    // A pass is counted once its rewrite is stored, a moment after reads see it.
    let addr = broker.metrics_addr().context("metrics")?;
    let removed = eventually(GENEROUS, "4 records counted as removed", || async {
        let metrics = scrape_metrics(addr).await.ok()?;
        let removed: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("weir_compaction_removed_records_total "))?
            .trim()
            .parse()
            .ok()?;
        (removed == 4.0).then_some(removed)
    })
    .await?;
    assert_eq!(removed, 4.0);
    Ok(())
}

/// Waits until the broker behind `client` serves exactly `want` of `topic`.
async fn wait_for_log(
    client: &RawClient,
    topic: &str,
    want: &BTreeMap<u64, (String, String)>,
) -> anyhow::Result<()> {
    // The last read, for the error: what the log held instead.
    let last = std::sync::Mutex::new(None);
    let waited = eventually(GENEROUS, "the log to be compacted", || async {
        let got = read_log(client.clone(), topic).await;
        let done = matches!(&got, Ok(got) if got == want);
        *last.lock().unwrap_or_else(PoisonError::into_inner) = Some(got);
        done.then_some(())
    })
    .await;
    if let Err(e) = waited {
        let last = last.lock().unwrap_or_else(PoisonError::into_inner).take();
        anyhow::bail!("{e:#}; want {want:?}, last read {last:?}");
    }
    Ok(())
}

/// `compact,delete`: a follower that was down while its partition was compacted and trimmed
/// past its log installs the leader's snapshot (which carries the compaction asked for) and
/// receives the retained, compacted entries; it runs the pass only once it holds them, and
/// ends with the same records as the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_restored_from_a_snapshot_ends_with_the_same_compacted_log() -> anyhow::Result<()>
{
    const TOPIC: &str = "restored";
    const TRIMMED: u64 = 250;
    let FollowerDown {
        mut cluster,
        all,
        leader,
        down,
        live,
    } = with_a_follower_down(
        TOPIC,
        &[
            ("cleanup.policy", "compact,delete"),
            ("min.cleanable.dirty.ratio", "0"),
        ],
    )
    .await?;

    // One record per batch, so the trim below leaves entries to purge.
    let mut produced = BTreeMap::new();
    for n in 0..300u64 {
        let record = keyed(&format!("k{}", n % 13), &format!("v{n}"), now_ms());
        produce(&cluster, &live, TOPIC, vec![record], &mut produced).await?;
    }
    let want = latest_per_key(&produced);
    assert!(want.keys().all(|offset| *offset >= TRIMMED), "{want:?}");
    every_replica_serves(&cluster, &live, TOPIC, &want).await?;

    let client = weir_client::Client::connect(cluster.addr(leader).to_string()).await?;
    assert_eq!(client.delete_records(TOPIC, 0, TRIMMED).await?, TRIMMED);
    {
        let cluster = &cluster;
        for &node in &live {
            eventually(GENEROUS, "the replica to purge its log", || async move {
                let view = cluster.partition_on(node, TOPIC, 0).await?;
                view.first_stored_offset
                    .is_some_and(|first| first > 0)
                    .then_some(())
            })
            .await
            .with_context(|| format!("node {node}"))?;
        }
    }

    cluster.restart(down).await?;
    every_replica_serves(&cluster, &all, TOPIC, &want).await?;
    let restored = cluster
        .partition_on(down, TOPIC, 0)
        .await
        .context("describe on the restored follower")?;
    assert_eq!(restored.log_start_offset, TRIMMED);
    Ok(())
}

/// The replicas crash in the middle of their first pass (its first rewrites durable, its state
/// not recorded; at least two of them, see below); started again, each runs the pass again
/// from the log and the request it applied, and they end with the same compacted log, nothing
/// acknowledged lost. (Failed once when a follower never learned the ask was committed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_crash_in_the_middle_of_a_pass_finish_it_after_a_restart()
-> anyhow::Result<()> {
    const TOPIC: &str = "crashed";
    let mut cluster = ProcessCluster::new_with_config(weir(), 3, FAST_CHECKS).await?;
    cluster.build_in(BuiltInFault::CrashMidCompaction);
    let all = cluster.node_ids();
    cluster.start_nodes(&all).await?;
    // Not compacted while the records go in: the pass starts once they are all acknowledged.
    cluster.create_topic(TOPIC, 1, 3, &[]).await?;
    // 12 MiB in batches of 1 MiB: a pass writes its rewrites every 4 MiB it reads, so the
    // crash after the first write leaves most of the log uncompacted.
    let padding = "x".repeat(64 * 1024);
    let mut produced = BTreeMap::new();
    for batch in 0..12u64 {
        let records = (0..16u64)
            .map(|i| {
                let n = batch * 16 + i;
                keyed(
                    &format!("k{}", n % 13),
                    &format!("v{n}-{padding}"),
                    now_ms(),
                )
            })
            .collect();
        produce(&cluster, &all, TOPIC, records, &mut produced).await?;
    }
    let leader = cluster.leader_of(TOPIC, 0).await?;
    cluster
        .client(leader)?
        .alter_topic_configs(pb::AlterTopicConfigsRequest {
            topic: TOPIC.into(),
            set: [
                ("cleanup.policy".to_owned(), "compact".to_owned()),
                ("min.cleanable.dirty.ratio".to_owned(), "0".to_owned()),
            ]
            .into(),
            delete: Vec::new(),
        })
        .await?;
    // Every replica that applies the ask crashes in the middle of its pass. A follower that
    // had not learned the ask was committed when the others crashed never will (no quorum is
    // left to tell it; a quiet leader sends the commit index with its next message): it is
    // killed. The leader applies it, and the remaining two, if the leader was first, elect a
    // new leader that commits it: at least two crash.
    let mut crashed = Vec::new();
    for &node in &all {
        match cluster.wait_for_exit(node).await {
            Ok(status) => {
                assert!(!status.success(), "node {node} exited {status}");
                crashed.push(node);
            }
            Err(_) => cluster.kill(node)?,
        }
    }
    assert!(
        crashed.len() >= 2,
        "crashed in the middle of a pass: {crashed:?}"
    );

    cluster.take_out(BuiltInFault::CrashMidCompaction);
    cluster.start_nodes(&all).await?;
    every_replica_serves(&cluster, &all, TOPIC, &latest_per_key(&produced)).await
}
