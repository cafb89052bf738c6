//! Restarts and corruption: what was acknowledged comes back, what is damaged is never served.

use std::collections::HashMap;

use bytes::Bytes;
use tonic::Code;
use weir_proto::v1 as pb;
use weir_tests::{InProcessBroker, RawClient};

async fn create(c: &mut RawClient, partitions: u32) -> anyhow::Result<()> {
    c.create_topic(pb::CreateTopicRequest {
        name: "t".into(),
        partitions,
        replication_factor: 1,
        configs: HashMap::new(),
    })
    .await?;
    Ok(())
}

async fn produce(c: &mut RawClient, partition: u32, value: &str) -> anyhow::Result<u64> {
    c.produce(pb::ProduceRequest {
        topic: "t".into(),
        partition: Some(partition),
        records: vec![pb::Record {
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..Default::default()
        }],
        acks: pb::Acks::All as i32,
        ..Default::default()
    })
    .await?
    .into_inner()
    .base_offset
    .ok_or_else(|| anyhow::anyhow!("no offset"))
}

async fn values(c: &mut RawClient, partition: u32) -> anyhow::Result<Vec<(u64, String)>> {
    let fetched = c
        .fetch(pb::FetchRequest {
            modules: Vec::new(),
            topic: "t".into(),
            partition,
            offset: 0,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(fetched
        .records
        .into_iter()
        .map(|r| (r.offset, String::from_utf8_lossy(&r.value).into_owned()))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_serves_everything_and_continues_the_offsets() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let mut c = broker.raw_client().await?;
    create(&mut c, 2).await?;
    for i in 0..5 {
        assert_eq!(
            produce(&mut c, (i % 2) as u32, &format!("v{i}")).await?,
            i / 2
        );
    }
    c.create_topic(pb::CreateTopicRequest {
        name: "gone".into(),
        partitions: 1,
        replication_factor: 1,
        configs: HashMap::new(),
    })
    .await?;
    c.delete_topic(pb::DeleteTopicRequest {
        name: "gone".into(),
    })
    .await?;
    let (dir, temp) = broker.stop().await;

    let broker = InProcessBroker::start_in(&dir).await?;
    let mut c = broker.raw_client().await?;
    assert_eq!(
        values(&mut c, 0).await?,
        vec![(0, "v0".into()), (1, "v2".into()), (2, "v4".into())]
    );
    assert_eq!(
        values(&mut c, 1).await?,
        vec![(0, "v1".into()), (1, "v3".into())]
    );
    assert_eq!(produce(&mut c, 1, "after").await?, 2);
    let topics = c
        .list_topics(pb::ListTopicsRequest {})
        .await?
        .into_inner()
        .topics;
    assert_eq!(
        topics.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        vec!["t"]
    );
    broker.stop().await;
    drop(temp);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_batch_is_reported_not_served() -> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let mut c = broker.raw_client().await?;
    create(&mut c, 1).await?;
    produce(&mut c, 0, "intact").await?;
    produce(&mut c, 0, "to-be-damaged").await?;
    let (dir, temp) = broker.stop().await;

    let db_path = dir.join("partitions.redb");
    // The topic's only partition is raft group 1; its data entries are the batches.
    let indexes = weir_storage::fault::batch_indexes(&db_path, 1)?;
    assert_eq!(indexes.len(), 2);
    assert!(weir_storage::fault::flip_last_byte(
        &db_path, 1, indexes[1]
    )?);

    let broker = InProcessBroker::start_in(&dir).await?;
    let mut c = broker.raw_client().await?;
    // The intact prefix is served; the damaged batch is an error at its exact offset.
    assert_eq!(values(&mut c, 0).await?, vec![(0, "intact".into())]);
    let status = c
        .fetch(pb::FetchRequest {
            modules: Vec::new(),
            topic: "t".into(),
            partition: 0,
            offset: 1,
            ..Default::default()
        })
        .await
        .expect_err("a corrupt batch must not be served");
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    assert_eq!(
        weir_proto::error::reason_of(&status).as_deref(),
        Some("CORRUPT_DATA")
    );
    assert!(
        status.message().contains("checksum"),
        "{}",
        status.message()
    );
    broker.stop().await;
    drop(temp);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_with_unreadable_state_is_reported_and_the_rest_keeps_serving()
-> anyhow::Result<()> {
    let broker = InProcessBroker::start().await?;
    let mut c = broker.raw_client().await?;
    create(&mut c, 1).await?;
    produce(&mut c, 0, "doomed").await?;
    c.create_topic(pb::CreateTopicRequest {
        name: "healthy".into(),
        partitions: 1,
        replication_factor: 1,
        configs: HashMap::new(),
    })
    .await?;
    let (dir, temp) = broker.stop().await;

    // The last entry of topic t's group (1) no longer has a readable envelope.
    let db_path = dir.join("partitions.redb");
    let last = *weir_storage::fault::batch_indexes(&db_path, 1)?
        .last()
        .ok_or_else(|| anyhow::anyhow!("no batch stored"))?;
    assert!(weir_storage::fault::overwrite_entry(
        &db_path,
        1,
        last,
        &[0xff]
    )?);

    let broker = InProcessBroker::start_in(&dir).await?;
    let mut c = broker.raw_client().await?;
    let status = c
        .produce(pb::ProduceRequest {
            topic: "t".into(),
            partition: Some(0),
            records: vec![pb::Record {
                value: Bytes::from_static(b"x"),
                ..Default::default()
            }],
            acks: pb::Acks::All as i32,
            ..Default::default()
        })
        .await
        .expect_err("the damaged partition cannot take writes");
    assert_eq!(
        weir_proto::error::reason_of(&status).as_deref(),
        Some("UNAVAILABLE")
    );
    assert!(status.message().contains("failed to start"), "{status:?}");
    let described = c
        .describe_topic(pb::DescribeTopicRequest { name: "t".into() })
        .await?
        .into_inner()
        .topic
        .ok_or_else(|| anyhow::anyhow!("no topic"))?;
    let failure = described.partitions[0].failure.clone().unwrap_or_default();
    assert!(failure.contains("group 1"), "{failure:?}");

    // Everything else is served as before.
    c.produce(pb::ProduceRequest {
        topic: "healthy".into(),
        partition: Some(0),
        records: vec![pb::Record {
            value: Bytes::from_static(b"fine"),
            ..Default::default()
        }],
        acks: pb::Acks::All as i32,
        ..Default::default()
    })
    .await?;
    broker.stop().await;
    drop(temp);
    Ok(())
}

/// When `Broker::shutdown` returns, the node's database files are closed: they open again at
/// once, in this process or another. (Tasks that held a database, such as openraft's state
/// machine workers, used to end a moment after shutdown returned, and an open at once failed
/// now and then with "Database already open".) Several rounds, each with its partitions and
/// controller busy up to the shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shut_down_broker_has_closed_its_database_files() -> anyhow::Result<()> {
    const PARTITIONS: u32 = 16;
    const ROUNDS: u64 = 10;
    let broker = InProcessBroker::start().await?;
    let mut c = broker.raw_client().await?;
    create(&mut c, PARTITIONS).await?;
    let (mut dir, mut temp) = (broker.data_dir.clone(), None);
    let mut broker = Some(broker);
    for round in 0..ROUNDS {
        let running = match broker.take() {
            Some(running) => running,
            None => InProcessBroker::start_in(&dir).await?,
        };
        let mut c = running.raw_client().await?;
        for partition in 0..PARTITIONS {
            assert_eq!(
                produce(&mut c, partition, &format!("r{round}")).await?,
                round
            );
        }
        let stopped = running.stop().await;
        dir = stopped.0;
        temp = temp.or(stopped.1);
        for file in ["partitions.redb", "controller.redb"] {
            let db =
                weir_storage::LogDb::open(dir.join(file), weir_storage::LogDbOptions::default())
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "round {round}: {file}: {e}: {:?}",
                            std::error::Error::source(&e)
                        )
                    })?;
            db.shutdown();
        }
    }
    let broker = InProcessBroker::start_in(&dir).await?;
    let mut c = broker.raw_client().await?;
    for partition in 0..PARTITIONS {
        let read: Vec<u64> = values(&mut c, partition)
            .await?
            .iter()
            .map(|v| v.0)
            .collect();
        assert_eq!(
            read,
            (0..ROUNDS).collect::<Vec<_>>(),
            "partition {partition}"
        );
    }
    broker.stop().await;
    drop(temp);
    Ok(())
}
