//! Bad input gets a clear error with a stable reason, and changes nothing.

use std::collections::HashMap;

use bytes::Bytes;
use tonic::Code;
use weir_proto::v1 as pb;
use weir_tests::{InProcessBroker, RawClient, RawProducer};

fn value(v: &str) -> pb::Record {
    pb::Record {
        value: Bytes::copy_from_slice(v.as_bytes()),
        ..Default::default()
    }
}

fn create(name: &str, partitions: u32) -> pb::CreateTopicRequest {
    pb::CreateTopicRequest {
        name: name.into(),
        partitions,
        replication_factor: 0,
        configs: HashMap::new(),
    }
}

fn produce(topic: &str, partition: Option<u32>, records: Vec<pb::Record>) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: topic.into(),
        partition,
        records,
        acks: pb::Acks::All as i32,
        ..Default::default()
    }
}

fn fetch(topic: &str, partition: u32, offset: i64) -> pb::FetchRequest {
    pb::FetchRequest {
        modules: Vec::new(),
        topic: topic.into(),
        partition,
        offset,
        ..Default::default()
    }
}

/// Asserts the status code and the stable reason of a failed call.
fn assert_reason<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    reason: &str,
) -> String {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(
        weir_proto::error::reason_of(&status).as_deref(),
        Some(reason),
        "{status:?}"
    );
    assert!(!status.message().is_empty());
    status.message().to_owned()
}

async fn topics(client: &mut RawClient) -> Vec<String> {
    let mut names: Vec<String> = client
        .list_topics(pb::ListTopicsRequest {})
        .await
        .expect("list topics")
        .into_inner()
        .topics
        .into_iter()
        .map(|t| t.name)
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_admin_errors_change_nothing() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let mut c = broker.raw_client().await?;
    c.create_topic(create("t", 2)).await?;

    let msg = assert_reason(
        c.create_topic(create("bad/name", 1)).await,
        Code::InvalidArgument,
        "INVALID_TOPIC_NAME",
    );
    assert!(msg.contains("bad/name"), "{msg}");
    assert_reason(
        c.create_topic(create("", 1)).await,
        Code::InvalidArgument,
        "INVALID_TOPIC_NAME",
    );
    assert_reason(
        c.create_topic(create("t", 5)).await,
        Code::AlreadyExists,
        "TOPIC_ALREADY_EXISTS",
    );
    let msg = assert_reason(
        c.create_topic(create("zero", 0)).await,
        Code::InvalidArgument,
        "INVALID_PARTITIONS",
    );
    assert!(msg.contains("1 to 1024"), "{msg}");
    assert_reason(
        c.create_topic(create("huge", 1_000_000)).await,
        Code::InvalidArgument,
        "INVALID_PARTITIONS",
    );
    let mut rf = create("rf", 1);
    rf.replication_factor = 3;
    assert_reason(
        c.create_topic(rf).await,
        Code::InvalidArgument,
        "INVALID_REPLICATION_FACTOR",
    );
    let mut cfg = create("cfg", 1);
    cfg.configs.insert("retention.minutes".into(), "1".into());
    assert_reason(
        c.create_topic(cfg).await,
        Code::InvalidArgument,
        "INVALID_CONFIG",
    );
    assert_reason(
        c.delete_topic(pb::DeleteTopicRequest {
            name: "missing".into(),
        })
        .await,
        Code::NotFound,
        "UNKNOWN_TOPIC",
    );
    assert_reason(
        c.describe_topic(pb::DescribeTopicRequest {
            name: "missing".into(),
        })
        .await,
        Code::NotFound,
        "UNKNOWN_TOPIC",
    );
    assert_eq!(topics(&mut c).await, vec!["t".to_owned()]);
    let t = c
        .describe_topic(pb::DescribeTopicRequest { name: "t".into() })
        .await?
        .into_inner()
        .topic
        .expect("topic");
    assert_eq!(t.partitions.len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_errors_store_nothing() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let mut c = broker.raw_client().await?;
    c.create_topic(create("t", 2)).await?;

    assert_reason(
        c.produce(produce("nope", None, vec![value("x")])).await,
        Code::NotFound,
        "UNKNOWN_TOPIC",
    );
    assert_reason(
        c.produce(produce("t", Some(2), vec![value("x")])).await,
        Code::NotFound,
        "UNKNOWN_PARTITION",
    );
    assert_reason(
        c.produce(produce("t", Some(0), vec![])).await,
        Code::InvalidArgument,
        "EMPTY_BATCH",
    );
    let big = "x".repeat(1024 * 1024 + 1);
    let msg = assert_reason(
        c.produce(produce("t", Some(0), vec![value("ok"), value(&big)]))
            .await,
        Code::InvalidArgument,
        "RECORD_TOO_LARGE",
    );
    assert!(msg.contains("record 1"), "{msg}");
    let mut negative = value("x");
    negative.timestamp_ms = Some(-5);
    assert_reason(
        c.produce(produce("t", Some(0), vec![value("ok"), negative]))
            .await,
        Code::InvalidArgument,
        "INVALID_RECORD",
    );
    let mut acks = produce("t", Some(0), vec![value("x")]);
    acks.acks = 42;
    assert_reason(
        c.produce(acks).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );

    // Nothing above was stored: both partitions are still empty.
    for partition in 0..2 {
        let f = c.fetch(fetch("t", partition, 0)).await?.into_inner();
        assert_eq!(f.high_watermark, 0, "partition {partition}");
        assert!(f.records.is_empty());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_errors_name_the_valid_range() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let mut c = broker.raw_client().await?;
    c.create_topic(create("t", 1)).await?;
    c.produce(produce("t", Some(0), vec![value("a"), value("b")]))
        .await?;

    let msg = assert_reason(
        c.fetch(fetch("t", 0, -1)).await,
        Code::OutOfRange,
        "OFFSET_OUT_OF_RANGE",
    );
    assert!(msg.contains("0 to 2"), "{msg}");
    assert_reason(
        c.fetch(fetch("t", 0, 3)).await,
        Code::OutOfRange,
        "OFFSET_OUT_OF_RANGE",
    );
    assert_reason(
        c.fetch(fetch("t", 1, 0)).await,
        Code::NotFound,
        "UNKNOWN_PARTITION",
    );
    assert_reason(
        c.fetch(fetch("x", 0, 0)).await,
        Code::NotFound,
        "UNKNOWN_TOPIC",
    );
    assert_reason(
        c.fetch(fetch("a b", 0, 0)).await,
        Code::InvalidArgument,
        "INVALID_TOPIC_NAME",
    );
    // The end of the log is a valid position: an empty answer, not an error.
    let at_end = c.fetch(fetch("t", 0, 2)).await?.into_inner();
    assert!(at_end.records.is_empty());
    assert_eq!(at_end.high_watermark, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protobuf_is_rejected_and_the_broker_keeps_serving() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let mut c = broker.raw_client().await?;
    c.create_topic(create("t", 1)).await?;

    // A gRPC frame whose payload is not a valid ProduceRequest.
    let garbage: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0x0f, 0x12];
    let result = RawProducer::connect(&broker.url())
        .await?
        .produce(Bytes::from(garbage.to_vec()))
        .await;
    let status = result.expect_err("garbage must be refused");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(status.message().contains("decode"), "{status:?}");

    // The broker still serves.
    let ok = c
        .produce(produce("t", Some(0), vec![value("after")]))
        .await?
        .into_inner();
    assert_eq!(ok.base_offset, Some(0));
    Ok(())
}
