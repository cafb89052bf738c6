//! Overload: no client can make the broker hold unbounded request memory, overload is a
//! retriable `OVERLOADED`, and other clients keep being served.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;
use weir_proto::error::reason_of;
use weir_proto::v1 as pb;
use weir_tests::{BrokerProcess, InProcessBroker, ProcessCluster, RawClient, RawProducer};

/// A produce request with `records` empty records, encoded by hand: field 3, length 0, each.
fn empty_records(topic: &str, records: usize) -> Bytes {
    let head = pb::ProduceRequest {
        topic: topic.into(),
        partition: Some(0),
        acks: pb::Acks::All as i32,
        ..Default::default()
    }
    .encode_to_vec();
    let mut bytes = Vec::with_capacity(head.len() + 2 * records);
    bytes.extend_from_slice(&head);
    for _ in 0..records {
        bytes.extend_from_slice(&[0x1a, 0x00]);
    }
    Bytes::from(bytes)
}

fn values_request(topic: &str, value_bytes: usize, count: usize) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: topic.into(),
        partition: Some(0),
        acks: pb::Acks::All as i32,
        records: (0..count)
            .map(|i| pb::Record {
                value: Bytes::from(vec![b'a' + (i % 26) as u8; value_bytes]),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn assert_refused(status: &tonic::Status, code: Code, reason: &str, words: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(
        weir_proto::error::reason_of(status).as_deref(),
        Some(reason),
        "{status:?}"
    );
    assert!(status.message().contains(words), "{status:?}");
}

async fn create_topic(raw: &RawClient, name: &str) -> anyhow::Result<()> {
    raw.clone()
        .create_topic(pb::CreateTopicRequest {
            name: name.into(),
            partitions: 1,
            ..Default::default()
        })
        .await?;
    Ok(())
}

async fn high_watermark(raw: &RawClient, topic: &str) -> anyhow::Result<i64> {
    let listed = raw
        .clone()
        .list_offsets(pb::ListOffsetsRequest {
            topic: topic.into(),
            partition: 0,
            spec: Some(pb::list_offsets_request::Spec::Latest(true)),
        })
        .await?
        .into_inner();
    Ok(listed.high_watermark as i64)
}

/// The broker's peak resident memory, from `/proc`.
fn peak_rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/{pid}/status"))?;
    Ok(kib * 1024)
}

/// A request of eight million empty records is 16 MB on the wire and decoded would take over
/// a gigabyte; no batch of `max_batch_bytes` could hold them. It is refused unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_of_millions_of_empty_records_is_refused_before_it_is_decoded()
-> anyhow::Result<()> {
    weir_tests::init_tracing();
    let temp = tempfile::tempdir()?;
    let broker = BrokerProcess::start(Path::new(crate::WEIR), &temp.path().join("data"))?;
    let raw = RawClient::connect(broker.url()).await?;
    create_topic(&raw, "empty").await?;
    let mut grpc = RawProducer::connect(&broker.url()).await?;
    let status = grpc
        .produce(empty_records("empty", 8_000_000))
        .await
        .expect_err("millions of records cannot fit in one batch");
    assert_refused(
        &status,
        Code::ResourceExhausted,
        "REQUEST_TOO_LARGE",
        "8000000 records",
    );
    let peak = peak_rss_bytes(broker.pid())?;
    assert!(
        peak < 256 * 1024 * 1024,
        "the broker's resident memory peaked at {} MiB",
        peak >> 20
    );
    // Within the bound, the same shape of request is served.
    let ok = grpc.produce(empty_records("empty", 1000)).await?;
    assert_eq!(ok.record_count, 1000);
    assert_eq!(high_watermark(&raw, "empty").await?, 1000);
    broker.kill()?;
    Ok(())
}

/// Budgets small enough to fill: the largest request is 2 MiB (1 MiB batches and modules,
/// plus 1 MiB), a connection may hold 2 MiB and the node 2.5 MiB.
async fn small_budget_broker() -> anyhow::Result<InProcessBroker> {
    InProcessBroker::start_adjusted(|config| {
        config.limits.max_batch_bytes = 1 << 20;
        config.limits.max_record_bytes = 1 << 20;
        config.modules.max_module_bytes = 1 << 20;
        config.limits.max_connection_bytes_in_flight = 2 << 20;
        config.limits.max_request_bytes_in_flight = 5 << 19;
        config.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bytes_in_flight_are_bounded_per_connection_and_per_node() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let broker = small_budget_broker().await?;
    let raw = broker.raw_client().await?;
    create_topic(&raw, "budget").await?;

    // Over the largest request: refused before it is buffered.
    let mut grpc = RawProducer::connect(&broker.url()).await?;
    let huge = values_request("budget", 512 * 1024, 5).encode_to_vec();
    let status = grpc.produce(huge.into()).await.unwrap_err();
    assert_refused(
        &status,
        Code::ResourceExhausted,
        "REQUEST_TOO_LARGE",
        "the most this node accepts",
    );

    // A request whose body never ends holds 1.9 MiB of connection A's and the node's budget.
    let held_request = Bytes::from(values_request("budget", 950 * 1024, 2).encode_to_vec());
    let held_len = held_request.len() as u64;
    let mut holder = RawProducer::connect(&broker.url()).await?;
    let held = tokio::spawn(async move { holder.produce_unfinished(held_request).await });
    gauge_reaches(
        &broker,
        "weir_request_bytes_in_flight",
        "the held request's bytes",
        |v| v >= held_len,
    )
    .await?;

    // Connection B: 1 MiB more would pass the node's 2.5 MiB.
    let mut b = RawProducer::connect(&broker.url()).await?;
    let large = Bytes::from(values_request("budget", 1024 * 1024 - 8192, 1).encode_to_vec());
    let status = b.produce(large.clone()).await.unwrap_err();
    assert_refused(&status, Code::ResourceExhausted, "OVERLOADED", "this node");
    // Small requests still fit, on B and on a third connection: others keep being served.
    let small = Bytes::from(values_request("budget", 100, 3).encode_to_vec());
    assert_eq!(b.produce(small.clone()).await?.base_offset, Some(0));
    let mut c = RawProducer::connect(&broker.url()).await?;
    assert_eq!(c.produce(small.clone()).await?.base_offset, Some(3));

    // The held request ends (its client goes away): its budget is back, and B's retry fits.
    held.abort();
    let _ = held.await;
    gauge_reaches(
        &broker,
        "weir_request_bytes_in_flight",
        "the held bytes released",
        |v| v == 0,
    )
    .await?;
    assert_eq!(b.produce(large).await?.base_offset, Some(6));
    assert_eq!(high_watermark(&raw, "budget").await?, 7);
    let metrics = weir_tests::scrape_metrics(broker.metrics_addr().expect("metrics")).await?;
    for line in [
        "weir_requests_refused_total{reason=\"OVERLOADED\"} 1",
        "weir_requests_refused_total{reason=\"REQUEST_TOO_LARGE\"} 1",
    ] {
        assert!(metrics.contains(line), "no {line:?} in\n{metrics}");
    }
    broker.stop().await;
    Ok(())
}

/// One connection cannot take the whole node's budget: past its own, it is refused while
/// another connection is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_cannot_take_the_whole_node_budget() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let broker = small_budget_broker().await?;
    let raw = broker.raw_client().await?;
    create_topic(&raw, "fair").await?;
    // Two requests whose bodies never end, on one HTTP/2 connection: 1.5 MiB, then 1 MiB more
    // would pass the connection's 2 MiB (while the node, at 2.5 MiB, has room for it).
    let channel = Channel::from_shared(broker.url())?.connect().await?;
    let first = Bytes::from(values_request("fair", 768 * 1024, 2).encode_to_vec());
    let first_len = first.len() as u64;
    let hold = |request: Bytes| {
        let mut producer = RawProducer::over(channel.clone());
        tokio::spawn(async move { producer.produce_unfinished(request).await })
    };
    let held = hold(first);
    gauge_reaches(
        &broker,
        "weir_request_bytes_in_flight",
        "the held request's bytes",
        |v| v >= first_len,
    )
    .await?;
    let second = Bytes::from(values_request("fair", 1024 * 1024 - 8192, 1).encode_to_vec());
    let refused = hold(second).await?.unwrap_err();
    assert_refused(
        &refused,
        Code::ResourceExhausted,
        "OVERLOADED",
        "this connection",
    );
    let mut other = RawProducer::connect(&broker.url()).await?;
    let served = values_request("fair", 1024 * 1024 - 8192, 1).encode_to_vec();
    assert_eq!(other.produce(served.into()).await?.base_offset, Some(0));
    held.abort();
    broker.stop().await;
    Ok(())
}

/// Waits (up to 30 s) until gauge `name` of `broker`'s metrics satisfies `reached`.
async fn gauge_reaches(
    broker: &InProcessBroker,
    name: &str,
    what: &str,
    reached: impl Fn(u64) -> bool,
) -> anyhow::Result<()> {
    weir_tests::eventually(Duration::from_secs(30), what, || async {
        reached(scraped_gauge(broker, name).await.ok()?).then_some(())
    })
    .await
}

async fn scraped_gauge(broker: &InProcessBroker, name: &str) -> anyhow::Result<u64> {
    let addr = broker.metrics_addr().context("the broker serves metrics")?;
    weir_tests::scraped_gauge(addr, name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_bounded_per_node() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let broker = InProcessBroker::start_adjusted(|config| {
        config.limits.max_subscriptions = 2;
        config.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await?;
    let raw = broker.raw_client().await?;
    create_topic(&raw, "watched").await?;
    let subscribe = || {
        let mut raw = raw.clone();
        async move {
            raw.subscribe(pb::SubscribeRequest {
                topic: "watched".into(),
                partition: 0,
                ..Default::default()
            })
            .await
        }
    };
    let first = subscribe().await?;
    let second = subscribe().await?;
    let refused = subscribe().await.expect_err("a third subscription");
    assert_refused(
        &refused,
        Code::ResourceExhausted,
        "OVERLOADED",
        "2 open subscriptions",
    );
    // Fetches are not subscriptions: still served.
    raw.clone()
        .fetch(pb::FetchRequest {
            topic: "watched".into(),
            ..Default::default()
        })
        .await?;

    // A subscriber that goes away frees its place.
    drop(first);
    gauge_reaches(&broker, "weir_subscriptions", "the place freed", |v| v == 1).await?;
    let mut third = subscribe().await?.into_inner();
    raw.clone()
        .produce(pb::ProduceRequest {
            topic: "watched".into(),
            partition: Some(0),
            records: vec![pb::Record {
                value: Bytes::from_static(b"seen"),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await?;
    let message = third.message().await?.expect("a message");
    assert_eq!(message.records[0].value, Bytes::from_static(b"seen"));
    drop(second);
    broker.stop().await;
    Ok(())
}

/// acks=none batches a partition cannot commit (its followers are stopped) wait in raft; past
/// `limits.max_unacknowledged_bytes` of them, more are refused with the retriable `OVERLOADED`
/// instead of piling up. Once the partition commits, the budget is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_none_batches_waiting_in_raft_are_bounded() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let config = "[limits]\nmax_unacknowledged_bytes = 1048576\nmax_batch_bytes = 524288\n\
                  max_record_bytes = 524288\nproduce_timeout_ms = 2000\n";
    let mut cluster = ProcessCluster::new_with_config(Path::new(crate::WEIR), 3, config).await?;
    cluster.start_nodes(&cluster.node_ids()).await?;
    cluster
        .client(1)?
        .create_topic(pb::CreateTopicRequest {
            name: "fire".into(),
            partitions: 1,
            replication_factor: 3,
            ..Default::default()
        })
        .await?;
    let (leader, _) = cluster
        .produce_acked(
            &cluster.node_ids(),
            "fire",
            0,
            values_request("fire", 10, 1).records,
        )
        .await?;
    for follower in cluster.node_ids().into_iter().filter(|&n| n != leader) {
        cluster.pause(follower)?;
    }
    let mut raw = cluster.client(leader)?;
    let none = |value: usize| pb::ProduceRequest {
        acks: pb::Acks::None as i32,
        ..values_request("fire", value, 1)
    };
    for _ in 0..3 {
        let answer = raw.produce(none(300 * 1024)).await?.into_inner();
        assert_eq!(answer.base_offset, None);
    }
    let refused = raw.produce(none(300 * 1024)).await.unwrap_err();
    assert_refused(
        &refused,
        Code::ResourceExhausted,
        "OVERLOADED",
        "max_unacknowledged_bytes",
    );

    for follower in cluster.node_ids().into_iter().filter(|&n| n != leader) {
        cluster.resume(follower)?;
    }
    // Once the batches leave raft (applied, or dropped when the resumed followers elect
    // another leader, as acks=none allows) the budget is back: the node takes such a batch
    // again, or, no longer leading, names the leader. The budget is checked first, so a
    // budget never given back stays OVERLOADED.
    weir_tests::eventually(Duration::from_secs(30), "the budget back", || {
        let mut raw = raw.clone();
        async move {
            match raw.produce(none(300 * 1024)).await {
                Ok(answer) => answer.into_inner().base_offset.is_none().then_some(()),
                Err(status) => (reason_of(&status).as_deref() == Some("NOT_LEADER")).then_some(()),
            }
            // Anything else: OVERLOADED while the batches are in raft, UNAVAILABLE while
            // leadership settles; asked again.
        }
    })
    .await?;
    Ok(())
}

/// A broker that stalls (stopped here; a slow disk or a starved host alike) finds, when it
/// resumes, many requests their clients gave up on and reset before it accepted them. That is
/// no "rapid reset" attack: the connection stays open, and the request still waiting on it is
/// answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reset_while_a_broker_stalls_do_not_close_its_connection() -> anyhow::Result<()> {
    const GIVEN_UP: usize = 100;
    let temp = tempfile::tempdir()?;
    let broker = BrokerProcess::start(Path::new(crate::WEIR), &temp.path().join("data"))?;
    let raw = RawClient::new(Channel::from_shared(broker.url())?.connect().await?);
    create_topic(&raw, "stall").await?;

    broker.pause()?;
    let waiting = tokio::spawn({
        let mut client = raw.clone();
        async move { client.produce(values_request("stall", 10, 3)).await }
    });
    let mut given_up = tokio::task::JoinSet::new();
    for _ in 0..GIVEN_UP {
        let mut client = raw.clone();
        given_up.spawn(async move {
            let request = pb::DescribeTopicRequest {
                name: "stall".into(),
            };
            // Sent on the same connection, then abandoned: its stream is reset.
            tokio::time::timeout(Duration::from_millis(200), client.describe_topic(request))
                .await
                .is_err()
        });
    }
    let mut abandoned = 0;
    while let Some(timed_out) = given_up.join_next().await {
        abandoned += usize::from(timed_out?);
    }
    assert_eq!(abandoned, GIVEN_UP, "a stopped broker answers nothing");
    broker.resume()?;

    let answer = waiting.await?.map_err(|status| {
        anyhow::anyhow!("the waiting produce failed after the broker resumed: {status:?}")
    })?;
    assert_eq!(answer.into_inner().base_offset, Some(0));
    Ok(())
}
