//! ListOffsets, fetch limits, long-polling and the Subscribe stream.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use weir_proto::v1 as pb;
use weir_proto::v1::list_offsets_request::Spec;
use weir_tests::{InProcessBroker, RawClient};

async fn setup(partitions: u32) -> anyhow::Result<(InProcessBroker, RawClient)> {
    let broker = InProcessBroker::start().await?;
    let mut c = broker.raw_client().await?;
    c.create_topic(pb::CreateTopicRequest {
        name: "t".into(),
        partitions,
        replication_factor: 1,
        configs: HashMap::new(),
    })
    .await?;
    Ok((broker, c))
}

fn records(values: &[(&str, i64)]) -> Vec<pb::Record> {
    values
        .iter()
        .map(|(v, ts)| pb::Record {
            value: Bytes::copy_from_slice(v.as_bytes()),
            timestamp_ms: Some(*ts),
            ..Default::default()
        })
        .collect()
}

async fn produce(c: &mut RawClient, partition: u32, values: &[(&str, i64)]) -> anyhow::Result<u64> {
    let resp = c
        .produce(pb::ProduceRequest {
            topic: "t".into(),
            partition: Some(partition),
            records: records(values),
            acks: pb::Acks::All as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    resp.base_offset.ok_or_else(|| anyhow::anyhow!("no offset"))
}

async fn list(c: &mut RawClient, spec: Spec) -> anyhow::Result<pb::ListOffsetsResponse> {
    Ok(c.list_offsets(pb::ListOffsetsRequest {
        topic: "t".into(),
        partition: 0,
        spec: Some(spec),
    })
    .await?
    .into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_earliest_latest_and_by_timestamp() -> anyhow::Result<()> {
    let (_broker, mut c) = setup(1).await?;
    assert_eq!(list(&mut c, Spec::Earliest(true)).await?.offset, Some(0));
    assert_eq!(list(&mut c, Spec::Latest(true)).await?.offset, Some(0));

    produce(&mut c, 0, &[("a", 100), ("b", 300), ("c", 200)]).await?;
    produce(&mut c, 0, &[("d", 500), ("e", 400)]).await?;
    assert_eq!(list(&mut c, Spec::Earliest(true)).await?.offset, Some(0));
    assert_eq!(list(&mut c, Spec::Latest(true)).await?.offset, Some(5));
    // The first record whose timestamp is at or after the one asked for.
    let at = list(&mut c, Spec::TimestampMs(150)).await?;
    assert_eq!((at.offset, at.timestamp_ms), (Some(1), Some(300)));
    let at = list(&mut c, Spec::TimestampMs(350)).await?;
    assert_eq!((at.offset, at.timestamp_ms), (Some(3), Some(500)));
    assert_eq!(list(&mut c, Spec::TimestampMs(0)).await?.offset, Some(0));
    assert_eq!(list(&mut c, Spec::TimestampMs(501)).await?.offset, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_honours_max_records_and_max_bytes() -> anyhow::Result<()> {
    let (_broker, mut c) = setup(1).await?;
    let hundred = "x".repeat(100);
    let values: Vec<(&str, i64)> = (0..20).map(|_| (hundred.as_str(), 1)).collect();
    produce(&mut c, 0, &values).await?;
    let limited = c
        .fetch(pb::FetchRequest {
            modules: Vec::new(),
            topic: "t".into(),
            offset: 3,
            max_records: 4,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        limited.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![3, 4, 5, 6]
    );
    let by_bytes = c
        .fetch(pb::FetchRequest {
            modules: Vec::new(),
            topic: "t".into(),
            offset: 0,
            max_bytes: 250,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        by_bytes.records.len(),
        3,
        "stops once 250 bytes are gathered"
    );
    let tiny = c
        .fetch(pb::FetchRequest {
            modules: Vec::new(),
            topic: "t".into(),
            offset: 19,
            max_bytes: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        tiny.records.len(),
        1,
        "at least one record is always returned"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_fetch_returns_when_a_record_arrives() -> anyhow::Result<()> {
    let (_broker, mut c) = setup(1).await?;
    let mut waiter = c.clone();
    let poll = tokio::spawn(async move {
        waiter
            .fetch(pb::FetchRequest {
                modules: Vec::new(),
                topic: "t".into(),
                offset: 0,
                max_wait_ms: 30_000,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    });
    produce(&mut c, 0, &[("late", 7)]).await?;
    let fetched = tokio::time::timeout(Duration::from_secs(20), poll).await???;
    assert_eq!(fetched.records.len(), 1);
    assert_eq!(fetched.records[0].value, "late".as_bytes());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_tails_the_log_from_the_requested_position() -> anyhow::Result<()> {
    let (_broker, mut c) = setup(1).await?;
    produce(&mut c, 0, &[("a", 1), ("b", 2)]).await?;
    let start = |position| pb::SubscribeRequest {
        modules: Vec::new(),
        topic: "t".into(),
        partition: 0,
        start: Some(pb::StartPosition {
            position: Some(position),
        }),
        max_bytes: 0,
        ..Default::default()
    };
    use pb::start_position::Position;
    let from_beginning = c
        .subscribe(start(Position::Earliest(true)))
        .await?
        .into_inner();
    let from_one = c.subscribe(start(Position::Offset(1))).await?.into_inner();
    let tail = c
        .subscribe(start(Position::Latest(true)))
        .await?
        .into_inner();
    produce(&mut c, 0, &[("c", 3)]).await?;

    let collect = |n: usize, stream: tonic::Streaming<pb::SubscribeResponse>| async move {
        let mut stream = stream;
        let mut got = Vec::new();
        while got.len() < n {
            let message = tokio::time::timeout(Duration::from_secs(20), stream.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("stream ended"))??;
            got.extend(
                message
                    .records
                    .into_iter()
                    .map(|r| (r.offset, String::from_utf8_lossy(&r.value).into_owned())),
            );
        }
        anyhow::Ok(got)
    };
    assert_eq!(
        collect(3, from_beginning).await?,
        vec![(0, "a".into()), (1, "b".into()), (2, "c".into())]
    );
    assert_eq!(
        collect(2, from_one).await?,
        vec![(1, "b".into()), (2, "c".into())]
    );
    assert_eq!(collect(1, tail).await?, vec![(2, "c".into())]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_share_a_partition_and_acks_none_is_stored() -> anyhow::Result<()> {
    let (_broker, mut c) = setup(4).await?;
    let mut partitions = Vec::new();
    for _ in 0..3 {
        let resp = c
            .produce(pb::ProduceRequest {
                topic: "t".into(),
                partition: None,
                records: vec![pb::Record {
                    key: Some(Bytes::from_static(b"customer-42")),
                    value: Bytes::from_static(b"v"),
                    ..Default::default()
                }],
                acks: pb::Acks::All as i32,
                ..Default::default()
            })
            .await?
            .into_inner();
        partitions.push((resp.partition, resp.base_offset));
    }
    let p = weir_types::partition_for_key(b"customer-42", 4).0;
    assert_eq!(partitions, vec![(p, Some(0)), (p, Some(1)), (p, Some(2))]);

    let none = c
        .produce(pb::ProduceRequest {
            topic: "t".into(),
            partition: Some(p),
            records: records(&[("fire-and-forget", 9)]),
            acks: pb::Acks::None as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(none.base_offset, None);
    let fetched = c
        .fetch(pb::FetchRequest {
            modules: Vec::new(),
            topic: "t".into(),
            partition: p,
            offset: 3,
            max_wait_ms: 10_000,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(fetched.records.len(), 1);
    assert_eq!(fetched.records[0].value, "fire-and-forget".as_bytes());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_topic_ends_a_tailing_subscription_with_a_reason() -> anyhow::Result<()> {
    let (_broker, mut c) = setup(1).await?;
    let mut tail = c
        .subscribe(pb::SubscribeRequest {
            modules: Vec::new(),
            topic: "t".into(),
            partition: 0,
            start: Some(pb::StartPosition {
                position: Some(pb::start_position::Position::Latest(true)),
            }),
            max_bytes: 0,
            ..Default::default()
        })
        .await?
        .into_inner();
    c.delete_topic(pb::DeleteTopicRequest { name: "t".into() })
        .await?;
    let end = tokio::time::timeout(Duration::from_secs(20), tail.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the stream ended without saying why"))?;
    let status = end.expect_err("no record can arrive from a deleted topic");
    assert_eq!(
        weir_proto::error::reason_of(&status).as_deref(),
        Some("UNAVAILABLE"),
        "{status:?}"
    );
    assert!(status.message().contains("stopped"), "{status:?}");
    Ok(())
}
