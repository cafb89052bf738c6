//! Consumer groups, committed offsets and the batching producer, through weir-client against a
//! real broker, and against a three-node cluster through controller and partition leader
//! failovers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::weir;
use anyhow::Context;
use weir_client::{
    Client, ClientError, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, ResetTo, TopicPartition, TopicSpec, partition_for_key,
};
use weir_proto::v1 as pb;
use weir_tests::{InProcessBroker, NodeId, ProcessCluster, eventually};

/// Generous bound for things that take a few heartbeats; never a timing assertion.
const SETTLE: Duration = Duration::from_secs(30);

fn config(group: &str) -> ConsumerConfig {
    let mut config = ConsumerConfig::with_group(group);
    config.auto_commit = false;
    config.offset_reset = OffsetReset::Earliest;
    config.fetch_max_wait = Duration::from_millis(100);
    config.session_timeout = Duration::from_millis(1500);
    config
}

async fn produce_values(client: &Client, topic: &str, partition: u32, values: &[String]) {
    let records = values
        .iter()
        .map(|v| ProducerRecord::new(v.clone()))
        .collect();
    client
        .produce(topic, Some(partition), records, weir_client::Acks::All)
        .await
        .expect("produce");
}

/// Polls until `n` records arrived (or fails after SETTLE).
async fn poll_n(consumer: &mut Consumer, n: usize) -> Vec<ConsumerRecord> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + SETTLE;
    while got.len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} records arrived",
            got.len()
        );
        got.extend(consumer.poll().await.expect("poll"));
    }
    got
}

fn offsets(records: &[ConsumerRecord]) -> Vec<u64> {
    records.iter().map(|r| r.record.offset).collect()
}

fn reason(e: &ClientError) -> &str {
    e.reason().unwrap_or("no reason")
}

#[tokio::test]
async fn a_restarted_member_continues_exactly_after_its_last_commit_even_across_a_broker_restart() {
    let broker = InProcessBroker::start().await.unwrap();
    let client = Client::connect(broker.url()).await.unwrap();
    client
        .create_topic(TopicSpec::new("orders", 1))
        .await
        .unwrap();
    let values: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    produce_values(&client, "orders", 0, &values[..6]).await;

    let mut first = Consumer::new(client.clone(), config("billing"));
    first.subscribe(&["orders"]).await.unwrap();
    assert_eq!(
        offsets(&poll_n(&mut first, 6).await),
        (0..6).collect::<Vec<_>>()
    );
    first.commit().await.unwrap();
    // Read the next four without committing them, then stop without a goodbye.
    produce_values(&client, "orders", 0, &values[6..]).await;
    assert_eq!(
        offsets(&poll_n(&mut first, 4).await),
        (6..10).collect::<Vec<_>>()
    );
    drop(first);

    // The whole broker restarts; the committed offset is replicated state and survives.
    let (data_dir, temp) = broker.stop().await;
    let broker = InProcessBroker::start_in(&data_dir).await.unwrap();
    let client = Client::connect(broker.url()).await.unwrap();
    let committed = client.committed_offsets("billing", &[]).await.unwrap();
    assert_eq!(committed.len(), 1);
    assert_eq!(committed[0].offset, 6);

    let mut second = Consumer::new(client.clone(), config("billing"));
    second.subscribe(&["orders"]).await.unwrap();
    let again = poll_n(&mut second, 4).await;
    // Only the uncommitted tail comes again, nothing before it.
    assert_eq!(offsets(&again), vec![6, 7, 8, 9]);
    assert_eq!(again[0].record.value, "v6".as_bytes());
    second.close().await.unwrap();
    drop(temp);
}

#[tokio::test]
async fn committing_chosen_offsets_resumes_after_the_last_processed_record() {
    let broker = InProcessBroker::start().await.unwrap();
    let client = Client::connect(broker.url()).await.unwrap();
    client
        .create_topic(TopicSpec::new("jobs", 2))
        .await
        .unwrap();
    let values: Vec<String> = (0..10).map(|i| format!("job-{i}")).collect();
    produce_values(&client, "jobs", 0, &values).await;

    let mut worker = Consumer::new(client.clone(), config("workers"));
    worker.subscribe(&["jobs"]).await.unwrap();
    let polled = poll_n(&mut worker, 10).await;
    assert_eq!(offsets(&polled), (0..10).collect::<Vec<_>>());
    // Only the first four were processed: commit up to there, not the position (10).
    let jobs0 = TopicPartition::new("jobs", 0);
    worker.commit_offsets(&[(jobs0.clone(), 4)]).await.unwrap();
    // Refused as a whole: one offset past its partition's end (jobs/1 is empty) fails the
    // commit, and a partition the member is not assigned too.
    let err = worker
        .commit_offsets(&[(jobs0.clone(), 5), (TopicPartition::new("jobs", 1), 1)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "OFFSET_OUT_OF_RANGE", "{err}");
    client
        .create_topic(TopicSpec::new("other", 1))
        .await
        .unwrap();
    let err = worker
        .commit_offsets(&[(TopicPartition::new("other", 0), 0)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "NOT_ASSIGNED", "{err}");
    worker.close().await.unwrap();

    let mut successor = Consumer::new(client.clone(), config("workers"));
    successor.subscribe(&["jobs"]).await.unwrap();
    let resumed = poll_n(&mut successor, 6).await;
    assert_eq!(offsets(&resumed), (4..10).collect::<Vec<_>>());
    successor.close().await.unwrap();
}

/// As in Kafka's consumer, `poll` sends each partition's next fetch before it returns the
/// records it took: the broker reads on while the application works on them, and records
/// produced meanwhile are on their way before the next poll asks.
#[tokio::test]
async fn poll_fetches_ahead_while_the_application_works() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let metrics = broker
        .metrics_addr()
        .context("the test broker serves metrics")?;
    let client = Client::connect(broker.url()).await?;
    client.create_topic(TopicSpec::new("work", 1)).await?;
    let values: Vec<String> = (0..5).map(|i| format!("w{i}")).collect();
    produce_values(&client, "work", 0, &values[..3]).await;
    let config = ConsumerConfig {
        offset_reset: OffsetReset::Earliest,
        // A fetch at the end of the log waits this long for records (longer than the test needs).
        fetch_max_wait: SETTLE,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client.clone(), config);
    consumer.assign(&[TopicPartition::new("work", 0)]).await?;
    let first = poll_n(&mut consumer, 3).await;
    assert_eq!(offsets(&first), [0, 1, 2]);

    // The application is busy with the first three; two more records arrive.
    produce_values(&client, "work", 0, &values[3..]).await;
    let fetched = r#"weir_fetched_records_total{topic="work"}"#;
    eventually(
        SETTLE,
        "the fetch sent ahead to take the new records",
        || async {
            let served = weir_tests::scraped_gauge(metrics, fetched).await.ok()?;
            (served == 5).then_some(())
        },
    )
    .await?;
    let second = consumer.poll().await?;
    assert_eq!(offsets(&second), [3, 4]);
    assert_eq!(second[1].record.value, "w4".as_bytes());
    consumer.close().await?;
    Ok(())
}

/// `fetch_max_bytes` bounds each answer: asking for one byte, every fetch brings one stored
/// batch (at least one always comes), so each `poll` of a single partition returns one.
#[tokio::test]
async fn fetch_max_bytes_bounds_each_answer_to_at_least_one_batch() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let client = Client::connect(broker.url()).await?;
    client.create_topic(TopicSpec::new("small", 1)).await?;
    // A batch per record.
    let total = 4;
    for i in 0..total {
        produce_values(&client, "small", 0, &[format!("s{i}")]).await;
    }
    let config = ConsumerConfig {
        offset_reset: OffsetReset::Earliest,
        fetch_max_bytes: 1,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client.clone(), config);
    consumer.assign(&[TopicPartition::new("small", 0)]).await?;
    for offset in 0..total {
        let polled = poll_n(&mut consumer, 1).await;
        assert_eq!(offsets(&polled), [offset]);
        assert_eq!(polled[0].record.value, format!("s{offset}").as_bytes());
    }
    consumer.close().await?;
    Ok(())
}

/// Polls every consumer once (each applies its assignment changes in `poll`), collecting
/// the records each got, and commits after "processing" them.
/// Polls until `done` holds for the consumer's assignment (or fails after SETTLE); poll errors
/// are expected while the broker is away and ignored.
async fn poll_until_assignment(
    consumer: &mut Consumer,
    what: &str,
    done: impl Fn(&[TopicPartition]) -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + SETTLE;
    while !done(&consumer.assignment()) {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; the consumer holds {:?}",
            consumer.assignment()
        );
        let _ = consumer.poll().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_unheard_for_a_whole_session_gives_up_its_partitions() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let client = Client::connect(broker.url()).await?;
    client.create_topic(TopicSpec::new("jobs", 2)).await?;
    let mut consumer = Consumer::new(client, config("workers"));
    consumer.subscribe(&["jobs"]).await?;
    poll_until_assignment(&mut consumer, "both partitions", |a| a.len() == 2).await?;

    // The coordinator goes away: after its session the member must assume it was removed and
    // its partitions given to others, and stop consuming them.
    let _kept = broker.stop().await;
    poll_until_assignment(&mut consumer, "the partitions to be given up", |a| {
        a.is_empty()
    })
    .await?;
    Ok(())
}

async fn poll_all(consumers: &mut [Consumer], seen: &mut Vec<(usize, ConsumerRecord)>) {
    for (i, consumer) in consumers.iter_mut().enumerate() {
        for record in consumer.poll().await.expect("poll") {
            seen.push((i, record));
        }
        consumer.commit().await.expect("commit");
    }
}

fn assignments(consumers: &[Consumer]) -> Vec<usize> {
    consumers.iter().map(|c| c.assignment().len()).collect()
}

#[tokio::test]
async fn three_members_share_six_partitions_and_a_dead_members_partitions_move_without_redelivering_commits()
 {
    let broker = InProcessBroker::start().await.unwrap();
    let client = Client::connect(broker.url()).await.unwrap();
    client
        .create_topic(TopicSpec::new("clicks", 6))
        .await
        .unwrap();
    let mut consumers: Vec<Consumer> = (0..3)
        .map(|_| Consumer::new(client.clone(), config("analytics")))
        .collect();
    for consumer in &mut consumers {
        consumer.subscribe(&["clicks"]).await.unwrap();
    }
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + SETTLE;
    while assignments(&consumers) != vec![2, 2, 2] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "assignment stuck at {:?}",
            assignments(&consumers)
        );
        poll_all(&mut consumers, &mut seen).await;
    }
    let owned: BTreeSet<TopicPartition> = consumers.iter().flat_map(|c| c.assignment()).collect();
    assert_eq!(owned.len(), 6, "every partition has exactly one owner");

    // Ten records per partition; every one reaches the group once, and is committed.
    for p in 0..6 {
        let values: Vec<String> = (0..10).map(|i| format!("p{p}-{i}")).collect();
        produce_values(&client, "clicks", p, &values).await;
    }
    while seen.len() < 60 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of 60 records arrived",
            seen.len()
        );
        poll_all(&mut consumers, &mut seen).await;
    }
    for consumer in &mut consumers {
        consumer.commit().await.unwrap();
    }
    let delivered: BTreeSet<(u32, u64)> = seen
        .iter()
        .map(|(_, r)| (r.partition, r.record.offset))
        .collect();
    assert_eq!(delivered.len(), 60);
    assert_eq!(seen.len(), 60, "no record was delivered twice");
    for (i, record) in &seen {
        let owner = consumers[*i].assignment();
        assert!(owner.contains(&TopicPartition::new("clicks", record.partition)));
    }

    // One member dies: no leave, no more heartbeats. After its session its partitions go to
    // the two others, which start from its committed offsets.
    let dead = consumers.pop().unwrap();
    let orphaned = dead.assignment();
    drop(dead);
    for p in 0..6 {
        let values: Vec<String> = (10..15).map(|i| format!("p{p}-{i}")).collect();
        produce_values(&client, "clicks", p, &values).await;
    }
    let mut after = Vec::new();
    let deadline = tokio::time::Instant::now() + SETTLE;
    while assignments(&consumers) != vec![3, 3] || after.len() < 30 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "after the death: assignment {:?}, {} of 30 records",
            assignments(&consumers),
            after.len()
        );
        poll_all(&mut consumers, &mut after).await;
    }
    let owned: BTreeSet<TopicPartition> = consumers.iter().flat_map(|c| c.assignment()).collect();
    assert_eq!(owned.len(), 6);
    assert!(orphaned.iter().all(|tp| owned.contains(tp)));
    // Exactly the new records: nothing committed before the death came again.
    let mut by_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (_, r) in &after {
        by_partition
            .entry(r.partition)
            .or_default()
            .push(r.record.offset);
    }
    for p in 0..6 {
        assert_eq!(
            by_partition.get(&p),
            Some(&(10..15).collect::<Vec<_>>()),
            "partition {p}"
        );
    }

    // A member that leaves hands its partitions over at once.
    let leaving = consumers.pop().unwrap();
    leaving.close().await.unwrap();
    let deadline = tokio::time::Instant::now() + SETTLE;
    while assignments(&consumers) != vec![6] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "assignment stuck at {:?}",
            assignments(&consumers)
        );
        poll_all(&mut consumers, &mut after).await;
    }
    let described = client.describe_group("analytics").await.unwrap();
    assert_eq!(described.members.len(), 1);
    assert_eq!(described.state, "stable");
}

#[tokio::test]
async fn bad_group_requests_get_clear_errors_and_change_nothing() {
    let broker = InProcessBroker::start().await.unwrap();
    let client = Client::connect(broker.url()).await.unwrap();
    client.create_topic(TopicSpec::new("t", 2)).await.unwrap();
    produce_values(&client, "t", 0, &["a".into(), "b".into()]).await;
    let tp = TopicPartition::new("t", 0);
    client
        .commit_offsets("g", "", &[(tp.clone(), 1)])
        .await
        .unwrap();

    // Past the high watermark (2).
    let err = client
        .commit_offsets("g", "", &[(tp.clone(), 3)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "OFFSET_OUT_OF_RANGE", "{err}");
    // Unknown group.
    let err = client.describe_group("nobody").await.unwrap_err();
    assert_eq!(reason(&err), "UNKNOWN_GROUP", "{err}");
    let err = client.delete_group("nobody").await.unwrap_err();
    assert_eq!(reason(&err), "UNKNOWN_GROUP", "{err}");
    // Unknown topic in a subscription: nothing joined.
    let mut consumer = Consumer::new(client.clone(), config("g"));
    let err = consumer.subscribe(&["t", "missing"]).await.unwrap_err();
    assert_eq!(reason(&err), "UNKNOWN_TOPIC", "{err}");
    assert!(client.describe_group("g").await.unwrap().members.is_empty());
    // A bad name.
    let err = client.committed_offsets("no/slash", &[]).await.unwrap_err();
    assert_eq!(reason(&err), "INVALID_GROUP_NAME", "{err}");
    // A partition that does not exist.
    let err = client
        .commit_offsets("g", "", &[(TopicPartition::new("t", 9), 0)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "UNKNOWN_PARTITION", "{err}");

    // A member with another assignor than the group's.
    let joined = client
        .join_group("g", &["t".into()], "range", 10_000, "a")
        .await
        .unwrap();
    let err = client
        .join_group("g", &["t".into()], "round-robin", 10_000, "b")
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INCONSISTENT_GROUP_PROTOCOL", "{err}");
    let err = client
        .join_group("g", &["t".into()], "sticky", 10_000, "b")
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INVALID_ARGUMENT", "{err}");
    assert_eq!(client.describe_group("g").await.unwrap().members.len(), 1);
    // With a member, commits from outside are refused, and so is a commit of a partition
    // the member does not own yet (it has not heartbeat).
    let err = client
        .commit_offsets("g", "", &[(tp.clone(), 2)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "GROUP_NOT_EMPTY", "{err}");
    let err = client
        .commit_offsets("g", &joined.member_id, &[(tp.clone(), 2)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "NOT_ASSIGNED", "{err}");
    let err = client
        .reset_group_offsets("g", "t", &[], ResetTo::Earliest, false)
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "GROUP_NOT_EMPTY", "{err}");
    let err = client.group_heartbeat("g", "ghost", &[]).await.unwrap_err();
    assert_eq!(reason(&err), "UNKNOWN_MEMBER", "{err}");

    // After all that, the committed offset is still the first one.
    let committed = client
        .committed_offsets("g", std::slice::from_ref(&tp))
        .await
        .unwrap();
    assert_eq!(committed.len(), 1);
    assert_eq!(committed[0].offset, 1);

    // Once the member leaves, offsets can be reset: a dry run changes nothing.
    client.leave_group("g", &joined.member_id).await.unwrap();
    let planned = client
        .reset_group_offsets("g", "t", &[0], ResetTo::Latest, true)
        .await
        .unwrap();
    assert_eq!(planned[0].offset, 2);
    assert_eq!(
        client
            .committed_offsets("g", std::slice::from_ref(&tp))
            .await
            .unwrap()[0]
            .offset,
        1
    );
    let err = client
        .reset_group_offsets("g", "t", &[0], ResetTo::Offset(7), false)
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "OFFSET_OUT_OF_RANGE", "{err}");
    client
        .reset_group_offsets("g", "t", &[0], ResetTo::ShiftBy(-5), false)
        .await
        .unwrap();
    assert_eq!(
        client.committed_offsets("g", &[tp]).await.unwrap()[0].offset,
        0
    );
    client.delete_group("g").await.unwrap();
    assert!(client.list_groups().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_producer_batches_keeps_keys_together_and_reports_every_offset() {
    let broker = InProcessBroker::start().await.unwrap();
    let client = Client::connect(broker.url()).await.unwrap();
    client
        .create_topic(TopicSpec::new("keyed", 4))
        .await
        .unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut deliveries = Vec::new();
    for i in 0..400 {
        let key = format!("customer-{}", i % 10);
        let record = ProducerRecord::new(format!("{i}")).with_key(key.clone());
        deliveries.push((key, producer.enqueue("keyed", record).await.unwrap()));
    }
    producer.flush().await;
    let mut partition_of_key: BTreeMap<String, u32> = BTreeMap::new();
    let mut offsets_per_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (key, delivery) in deliveries {
        let stored = delivery.await.unwrap();
        assert_eq!(stored.partition, partition_for_key(key.as_bytes(), 4));
        let first = *partition_of_key.entry(key).or_insert(stored.partition);
        assert_eq!(first, stored.partition, "equal keys share a partition");
        offsets_per_partition
            .entry(stored.partition)
            .or_default()
            .push(stored.offset.unwrap());
    }
    // Each partition's offsets are exactly 0..n, in the order the records were sent.
    for (partition, offsets) in &offsets_per_partition {
        assert_eq!(
            offsets,
            &(0..offsets.len() as u64).collect::<Vec<_>>(),
            "partition {partition}"
        );
        let hwm = client
            .list_offsets("keyed", *partition, weir_client::OffsetSpec::Latest)
            .await
            .unwrap()
            .high_watermark;
        assert_eq!(hwm, offsets.len() as u64);
    }
    // An unknown topic fails at once.
    let err = producer
        .enqueue("missing", ProducerRecord::new("x"))
        .await
        .err()
        .unwrap();
    assert_eq!(reason(&err), "UNKNOWN_TOPIC");
}

// ---- On a three-node cluster of real `weir broker` processes --------------------------------

/// The controller leader, as node `via` reports it, once it is not `not`.
async fn controller_leader(
    cluster: &ProcessCluster,
    via: NodeId,
    not: Option<NodeId>,
) -> anyhow::Result<NodeId> {
    eventually(SETTLE, "a controller leader", || async {
        let mut client = cluster.client(via).ok()?;
        let controller = client
            .describe_cluster(pb::DescribeClusterRequest {})
            .await
            .ok()?
            .into_inner()
            .controller?;
        (Some(controller) != not).then_some(controller)
    })
    .await
}

/// The controller leader, the other nodes, and a client of the first of them.
async fn controller_leader_and_the_others(
    cluster: &ProcessCluster,
) -> anyhow::Result<(NodeId, Vec<NodeId>, Client)> {
    let leader = controller_leader(cluster, 1, None).await?;
    let others: Vec<NodeId> = cluster
        .node_ids()
        .into_iter()
        .filter(|&n| n != leader)
        .collect();
    let via_other = Client::connect(cluster.addr(others[0]).to_string()).await?;
    Ok((leader, others, via_other))
}

/// Committed offsets of `group` as the node behind `client` serves them (forwarded to the
/// controller leader), once that works, keyed by partition.
async fn committed_by_partition(
    client: &Client,
    group: &str,
) -> anyhow::Result<BTreeMap<u32, u64>> {
    eventually(SETTLE, "the committed offsets", || async {
        let committed = client.committed_offsets(group, &[]).await.ok()?;
        Some(
            committed
                .into_iter()
                .map(|c| (c.partition.partition, c.offset))
                .collect(),
        )
    })
    .await
}

/// Produces `values` to `topic`/`partition` (acks=all) while leadership may be moving: retries
/// only answers that mean nothing was written (no leader yet, `NOT_LEADER`, a refused
/// connection to a killed node), so each value is stored once.
async fn produce_after_failover(client: &Client, topic: &str, partition: u32, values: &[String]) {
    let records: Vec<ProducerRecord> = values
        .iter()
        .map(|v| ProducerRecord::new(v.clone()))
        .collect();
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        match client
            .produce(
                topic,
                Some(partition),
                records.clone(),
                weir_client::Acks::All,
            )
            .await
        {
            Ok(_) => return,
            Err(e)
                if matches!(e.reason(), Some("NOT_LEADER" | "UNAVAILABLE"))
                    || (e.reason().is_none() && e.code() == Some(tonic::Code::Unavailable)) =>
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "producing to {topic}/{partition}: still {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("producing to {topic}/{partition}: {e}"),
        }
    }
}

fn offsets_by_partition(records: &[ConsumerRecord]) -> BTreeMap<u32, Vec<u64>> {
    let mut by_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for r in records {
        by_partition
            .entry(r.partition)
            .or_default()
            .push(r.record.offset);
    }
    by_partition
}

/// Committed offsets are replicated controller state: when the controller leader (the group
/// coordinator) is killed, the new one has them, the member rejoins on its own and continues
/// exactly after its commits, and the killed node serves the same offsets once back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_and_members_survive_a_controller_leader_failover() -> anyhow::Result<()>
{
    let mut cluster = ProcessCluster::start(weir(), 3).await?;
    let old_controller = controller_leader(&cluster, 1, None).await?;
    let survivors: Vec<NodeId> = cluster
        .node_ids()
        .into_iter()
        .filter(|&n| n != old_controller)
        .collect();
    // The member talks to a node that survives; its group requests are forwarded from there.
    let client = Client::connect(cluster.addr(survivors[0]).to_string()).await?;
    client
        .create_topic(TopicSpec::new("ledger", 2).with_replication_factor(3))
        .await?;
    for p in 0..2 {
        cluster.leader_of("ledger", p).await?;
        let values: Vec<String> = (0..10).map(|i| format!("p{p}-{i}")).collect();
        produce_values(&client, "ledger", p, &values).await;
    }

    let mut member = Consumer::new(client.clone(), config("auditors"));
    member.subscribe(&["ledger"]).await?;
    let first = poll_n(&mut member, 20).await;
    assert_eq!(
        offsets_by_partition(&first),
        BTreeMap::from([(0, (0..10).collect()), (1, (0..10).collect())])
    );
    member.commit().await?;
    assert_eq!(
        committed_by_partition(&client, "auditors").await?,
        BTreeMap::from([(0, 10), (1, 10)])
    );

    cluster.kill(old_controller)?;
    let new_controller = controller_leader(&cluster, survivors[0], Some(old_controller)).await?;
    assert_ne!(new_controller, old_controller);
    assert_eq!(
        committed_by_partition(&client, "auditors").await?,
        BTreeMap::from([(0, 10), (1, 10)]),
        "the new controller leader {new_controller} has the commits made through {old_controller}"
    );

    // The member is unknown to the new coordinator; it joins again by itself (dropping its
    // partitions first, inside poll) and is given both partitions again.
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        assert!(member.poll().await?.is_empty(), "nothing new was produced");
        let rejoined = client
            .describe_group("auditors")
            .await
            .ok()
            .filter(|g| g.members.len() == 1 && g.members[0].assignment.len() == 2);
        if rejoined.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the member did not rejoin the new coordinator"
        );
    }
    // It starts from its committed offsets: exactly the new records, nothing committed comes
    // again.
    for p in 0..2 {
        let values: Vec<String> = (10..15).map(|i| format!("p{p}-{i}")).collect();
        produce_after_failover(&client, "ledger", p, &values).await;
    }
    let second = poll_n(&mut member, 10).await;
    assert_eq!(
        offsets_by_partition(&second),
        BTreeMap::from([(0, (10..15).collect()), (1, (10..15).collect())])
    );
    member.commit().await?;
    member.close().await?;

    // The killed node comes back, catches up on the controller log and serves the same
    // offsets; a new member reading through it starts after them.
    cluster.restart(old_controller).await?;
    let via_restarted = Client::connect(cluster.addr(old_controller).to_string()).await?;
    eventually(
        SETTLE,
        "the restarted node's view of the offsets",
        || async {
            let committed = committed_by_partition(&via_restarted, "auditors")
                .await
                .ok()?;
            (committed == BTreeMap::from([(0, 15), (1, 15)])).then_some(())
        },
    )
    .await?;
    for p in 0..2 {
        produce_after_failover(&client, "ledger", p, &[format!("p{p}-15")]).await;
    }
    let mut successor = Consumer::new(via_restarted, config("auditors"));
    successor.subscribe(&["ledger"]).await?;
    let third = poll_n(&mut successor, 2).await;
    assert_eq!(
        offsets_by_partition(&third),
        BTreeMap::from([(0, vec![15]), (1, vec![15])])
    );
    successor.close().await?;
    Ok(())
}

/// The idempotent producer retries batches whose leader is killed under them and follows the
/// new leader: every record it reports delivered is stored exactly once, at the offset it
/// reported, in the order sent (a batch whose acknowledgement was lost is sent again and
/// recognised as a retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_retries_across_a_leader_kill_store_every_record_once_in_order()
-> anyhow::Result<()> {
    const TOPIC: &str = "payments";
    let mut cluster = ProcessCluster::start(weir(), 3).await?;
    let client = Client::connect(cluster.addr(1).to_string()).await?;
    client
        .create_topic(TopicSpec::new(TOPIC, 1).with_replication_factor(3))
        .await?;
    let leader = cluster.leader_of(TOPIC, 0).await?;
    // Bootstrap through a node that stays up, so only the partition's leader goes away.
    let survivor = cluster
        .node_ids()
        .into_iter()
        .find(|&n| n != leader)
        .context("a 3-node cluster has a non-leader")?;
    let client = Client::connect(cluster.addr(survivor).to_string()).await?;
    let config = ProducerConfig {
        linger: Duration::from_millis(2),
        batch_max_bytes: 2 * 1024,
        delivery_timeout: Duration::from_secs(60),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), config);

    let value = |i: usize| format!("payment-{i:04}");
    let mut deliveries = Vec::new();
    for i in 0..100 {
        deliveries.push(
            producer
                .enqueue(TOPIC, ProducerRecord::new(value(i)))
                .await?,
        );
    }
    let mut reported = Vec::new();
    for delivery in deliveries.drain(..) {
        reported.push(delivery.await?);
    }
    // The rest is queued and in flight when the leader dies.
    for i in 100..400 {
        deliveries.push(
            producer
                .enqueue(TOPIC, ProducerRecord::new(value(i)))
                .await?,
        );
    }
    cluster.kill(leader)?;
    for delivery in deliveries {
        reported.push(delivery.await?);
    }

    let new_leader = cluster.leader_of(TOPIC, 0).await?;
    assert_ne!(new_leader, leader);
    let last = reported
        .iter()
        .filter_map(|r| r.offset)
        .max()
        .context("offsets reported")?;
    cluster
        .wait_for_high_watermark(new_leader, TOPIC, 0, last + 1)
        .await?;
    let stored: Vec<String> = cluster
        .read_partition(new_leader, TOPIC, 0)
        .await?
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    for (i, metadata) in reported.iter().enumerate() {
        let offset = metadata.offset.context("a plain batch reports offsets")?;
        assert_eq!(
            stored.get(offset as usize),
            Some(&value(i)),
            "record {i} was reported at offset {offset}"
        );
    }
    assert_eq!(
        stored,
        (0..400).map(value).collect::<Vec<_>>(),
        "every record is stored once, in the order sent"
    );
    Ok(())
}

/// The committed offsets of a group that stays empty past `groups.offsets_retention_ms` are
/// forgotten (Kafka's `offsets.retention.minutes`); a group with a live member keeps its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_of_a_group_that_stays_empty_expire_and_a_live_groups_do_not() -> anyhow::Result<()>
{
    let broker = InProcessBroker::start_adjusted(|config| {
        config.groups.min_session_timeout_ms = 100;
        config.groups.default_session_timeout_ms = 1000;
        config.groups.max_session_timeout_ms = 1000;
        config.groups.offsets_retention_ms = 300;
    })
    .await?;
    let raw = broker.raw_client().await?;
    raw.clone()
        .create_topic(pb::CreateTopicRequest {
            name: "kept".into(),
            partitions: 1,
            ..Default::default()
        })
        .await?;
    let commit = |group: &'static str, member_id: String| {
        let mut raw = raw.clone();
        async move {
            raw.commit_offsets(pb::CommitOffsetsRequest {
                group: group.into(),
                member_id,
                offsets: vec![pb::OffsetCommit {
                    topic: "kept".into(),
                    partition: 0,
                    offset: 0,
                    metadata: String::new(),
                }],
            })
            .await
        }
    };
    let committed = |group: &'static str| {
        let mut raw = raw.clone();
        async move {
            raw.fetch_committed_offsets(pb::FetchCommittedOffsetsRequest {
                group: group.into(),
                partitions: Vec::new(),
            })
            .await
            .map(|r| r.into_inner().offsets.len())
        }
    };

    // A live member, heartbeating as a consumer does, owns the partition and commits.
    let joined = raw
        .clone()
        .join_group(pb::JoinGroupRequest {
            group: "live".into(),
            topics: vec!["kept".into()],
            ..Default::default()
        })
        .await?
        .into_inner();
    let member = joined.member_id.clone();
    let interval = Duration::from_millis(u64::from(joined.heartbeat_interval_ms));
    let heartbeat = move |mut raw: weir_tests::RawClient, owned: Vec<pb::TopicPartitions>| {
        let member = member.clone();
        async move {
            raw.group_heartbeat(pb::GroupHeartbeatRequest {
                group: "live".into(),
                member_id: member,
                owned,
            })
            .await
            .map(|r| r.into_inner().assignment)
        }
    };
    let assignment = eventually(
        Duration::from_secs(30),
        "the live member's assignment",
        || {
            let beat = heartbeat(raw.clone(), Vec::new());
            async move { beat.await.ok().filter(|a| !a.is_empty()) }
        },
    )
    .await?;
    let beating = tokio::spawn({
        let (raw, beat) = (raw.clone(), heartbeat);
        async move {
            loop {
                // A member's own pace, as the client's consumer keeps it.
                tokio::time::sleep(interval).await;
                if beat(raw.clone(), assignment.clone()).await.is_err() {
                    return;
                }
            }
        }
    });
    commit("live", joined.member_id.clone()).await?;
    // An empty group commits without a member id.
    commit("idle", String::new()).await?;
    assert_eq!(committed("idle").await?, 1);

    eventually(
        Duration::from_secs(30),
        "the idle group's offsets to expire",
        || async { (committed("idle").await.ok()? == 0).then_some(()) },
    )
    .await?;
    assert_eq!(
        committed("live").await?,
        1,
        "a live group's offsets expired"
    );
    assert!(
        !beating.is_finished(),
        "the live member stopped heartbeating"
    );
    beating.abort();
    broker.stop().await;
    Ok(())
}

/// A controller leader cut off from the others keeps believing it leads until it hears of a
/// newer leader. Meanwhile the others elect one and a commit goes through it; the old leader
/// must not answer the committed offsets from its stale state (a consumer resuming from there
/// would go back to offsets already processed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_controller_leader_does_not_answer_stale_committed_offsets()
-> anyhow::Result<()> {
    let cluster = ProcessCluster::start(weir(), 3).await?;
    let (old, others, via_other) = controller_leader_and_the_others(&cluster).await?;
    via_other
        .create_topic(TopicSpec::new("audit", 1).with_replication_factor(3))
        .await?;
    cluster.leader_of("audit", 0).await?;
    let values: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    produce_values(&via_other, "audit", 0, &values).await;
    let tp = TopicPartition::new("audit", 0);
    via_other
        .commit_offsets("g", "", &[(tp.clone(), 3)])
        .await?;

    cluster.isolate(old);
    controller_leader(&cluster, others[0], Some(old)).await?;
    eventually(
        SETTLE,
        "a commit through the new controller leader",
        || async {
            via_other
                .commit_offsets("g", "", &[(tp.clone(), 7)])
                .await
                .ok()
        },
    )
    .await?;

    let at_old = Client::connect(cluster.addr(old).to_string()).await?;
    match at_old
        .committed_offsets("g", std::slice::from_ref(&tp))
        .await
    {
        Ok(committed) => {
            let offsets: Vec<u64> = committed.iter().map(|c| c.offset).collect();
            assert_eq!(
                offsets,
                [7],
                "the isolated old leader answered {committed:?}"
            );
        }
        Err(e) => assert!(e.is_retriable(), "a refusal must be retriable: {e}"),
    }
    cluster.heal_all();
    assert_eq!(
        committed_by_partition(&at_old, "g").await?,
        BTreeMap::from([(0, 7)])
    );
    Ok(())
}

/// Group membership lives only in the coordinator's memory (the controller leader's). A
/// controller leader cut off from the other voters believes it leads until it hears of a newer
/// term; once its lease is over (no quorum acknowledged it within the longest election
/// timeout) it must stop coordinating: the others elect a leader whose coordinator may give
/// the same partitions to other members. Before, the isolated node kept answering heartbeats
/// with its stale assignment and took new members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_controller_leader_stops_coordinating_once_its_lease_is_over()
-> anyhow::Result<()> {
    let cluster = ProcessCluster::start(weir(), 3).await?;
    let (old, others, via_other) = controller_leader_and_the_others(&cluster).await?;
    via_other
        .create_topic(TopicSpec::new("shared", 2).with_replication_factor(3))
        .await?;
    let mut at_old = cluster.client(old)?;
    let join = |client_id: &str| pb::JoinGroupRequest {
        group: "g".into(),
        topics: vec!["shared".into()],
        client_id: client_id.into(),
        ..Default::default()
    };
    let member = at_old.join_group(join("a")).await?.into_inner().member_id;
    let heartbeat = pb::GroupHeartbeatRequest {
        group: "g".into(),
        member_id: member,
        owned: Vec::new(),
    };
    let assignment = eventually(SETTLE, "the member's assignment", || {
        let mut at_old = at_old.clone();
        let heartbeat = heartbeat.clone();
        async move {
            let assignment = at_old.group_heartbeat(heartbeat).await.ok()?;
            Some(assignment.into_inner().assignment).filter(|a| !a.is_empty())
        }
    })
    .await?;
    assert_eq!(assignment.len(), 1, "{assignment:?}");

    cluster.isolate(old);
    controller_leader(&cluster, others[0], Some(old)).await?;
    // The others elected a leader only after the old one's lease was over.
    let refused = at_old
        .group_heartbeat(heartbeat.clone())
        .await
        .expect_err("a heartbeat answered by a leader without a lease");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("lease"), "{refused:?}");
    let refused = at_old
        .join_group(join("b"))
        .await
        .expect_err("a join answered by a leader without a lease");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");

    // Healed, the old leader learns of the new term and forwards to the new coordinator.
    cluster.heal_all();
    let joined = eventually(SETTLE, "a join through the old leader", || {
        let mut at_old = at_old.clone();
        async move { at_old.join_group(join("c")).await.ok() }
    })
    .await?;
    assert!(
        joined.into_inner().member_id.starts_with("c-"),
        "a member id made from the client id"
    );
    Ok(())
}

/// Members cost the coordinator memory until they leave or expire, so a group and the node
/// have a most: a join beyond the group's is refused for good (`GROUP_MAX_SIZE_REACHED`), one
/// beyond the node's is overload, retriable once members leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_beyond_the_member_limits_are_refused_until_members_leave() -> anyhow::Result<()> {
    let broker = InProcessBroker::start_adjusted(|config| {
        config.groups.max_members_per_group = 2;
        config.groups.max_members = 3;
    })
    .await?;
    let mut raw = broker.raw_client().await?;
    raw.create_topic(pb::CreateTopicRequest {
        name: "t".into(),
        partitions: 1,
        ..Default::default()
    })
    .await?;
    let join = |group: &str| pb::JoinGroupRequest {
        group: group.into(),
        topics: vec!["t".into()],
        ..Default::default()
    };
    let first = raw.join_group(join("a")).await?.into_inner().member_id;
    raw.join_group(join("a")).await?;
    let full = raw
        .join_group(join("a"))
        .await
        .expect_err("a third member of a group of at most two");
    assert_eq!(
        weir_proto::error::reason_of(&full).as_deref(),
        Some("GROUP_MAX_SIZE_REACHED"),
        "{full:?}"
    );
    raw.join_group(join("b")).await?;
    let overloaded = raw
        .join_group(join("c"))
        .await
        .expect_err("a fourth member on a node of at most three");
    assert_eq!(
        overloaded.code(),
        tonic::Code::ResourceExhausted,
        "{overloaded:?}"
    );
    assert!(
        overloaded.message().contains("groups.max_members"),
        "{overloaded:?}"
    );

    raw.leave_group(pb::LeaveGroupRequest {
        group: "a".into(),
        member_id: first,
    })
    .await?;
    let joined = raw.join_group(join("c")).await?.into_inner();
    assert!(!joined.member_id.is_empty());
    let described = raw
        .describe_group(pb::DescribeGroupRequest { group: "a".into() })
        .await?
        .into_inner();
    assert_eq!(described.members.len(), 1);
    Ok(())
}
