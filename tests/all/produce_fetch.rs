//! Produce and fetch through a real in-process broker over gRPC.

use std::collections::HashMap;

use bytes::Bytes;
use weir_proto::v1 as pb;
use weir_tests::InProcessBroker;

fn record(key: Option<&str>, value: &str, ts: Option<i64>) -> pb::Record {
    pb::Record {
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        value: Bytes::copy_from_slice(value.as_bytes()),
        headers: vec![pb::Header {
            key: "h".into(),
            value: Bytes::from_static(b"hv"),
        }],
        timestamp_ms: ts,
        tombstone: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_preserves_everything_across_partitions() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let broker = InProcessBroker::start().await?;
    let mut client = broker.raw_client().await?;
    client
        .create_topic(pb::CreateTopicRequest {
            name: "orders".into(),
            partitions: 3,
            replication_factor: 0,
            configs: HashMap::new(),
        })
        .await?;
    for partition in 0..3u32 {
        for batch in 0..2 {
            let records: Vec<_> = (0..5)
                .map(|i| {
                    record(
                        Some(&format!("k{partition}-{batch}-{i}")),
                        &format!("v{partition}-{batch}-{i}"),
                        Some(1_000 + i),
                    )
                })
                .collect();
            let resp = client
                .produce(pb::ProduceRequest {
                    topic: "orders".into(),
                    partition: Some(partition),
                    records,
                    acks: pb::Acks::All as i32,
                    ..Default::default()
                })
                .await?
                .into_inner();
            assert_eq!(resp.partition, partition);
            assert_eq!(resp.base_offset, Some(batch * 5));
        }
    }
    for partition in 0..3u32 {
        let fetched = client
            .fetch(pb::FetchRequest {
                modules: Vec::new(),
                topic: "orders".into(),
                partition,
                offset: 0,
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(fetched.high_watermark, 10);
        let offsets: Vec<u64> = fetched.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (0..10).collect::<Vec<_>>());
        let third = &fetched.records[7];
        assert_eq!(
            third.key.as_deref(),
            Some(format!("k{partition}-1-2").as_bytes())
        );
        assert_eq!(third.value, format!("v{partition}-1-2").as_bytes());
        assert_eq!(third.timestamp_ms, 1_002);
        assert_eq!(
            third.headers,
            vec![pb::Header {
                key: "h".into(),
                value: Bytes::from_static(b"hv")
            }]
        );
    }
    broker.stop().await;
    Ok(())
}
