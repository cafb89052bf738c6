//! A broker killed with SIGKILL while producers are being acknowledged loses nothing it
//! acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use weir_proto::v1 as pb;
use weir_proto::v1::broker_client::BrokerClient;
use weir_tests::BrokerProcess;

const PARTITIONS: u32 = 3;
const PRODUCERS: usize = 6;

type Acknowledged = Arc<Mutex<BTreeMap<(u32, u64), String>>>;

/// Produces batches of 3 records to its partition until the broker goes away, recording every
/// acknowledged record at its acknowledged offset.
async fn producer(url: String, id: usize, acked: Acknowledged) {
    let Ok(mut client) = BrokerClient::connect(url).await else {
        return;
    };
    let partition = (id as u32) % PARTITIONS;
    for batch in 0.. {
        let values: Vec<String> = (0..3).map(|i| format!("p{id}-b{batch}-r{i}")).collect();
        let request = pb::ProduceRequest {
            topic: "crash".into(),
            partition: Some(partition),
            records: values
                .iter()
                .map(|v| pb::Record {
                    value: Bytes::copy_from_slice(v.as_bytes()),
                    ..Default::default()
                })
                .collect(),
            acks: pb::Acks::All as i32,
            ..Default::default()
        };
        match client.produce(request).await {
            Ok(response) => {
                let Some(base) = response.into_inner().base_offset else {
                    return;
                };
                let mut acked = acked.lock().expect("lock");
                for (i, value) in values.into_iter().enumerate() {
                    acked.insert((partition, base + i as u64), value);
                }
            }
            Err(_) => return,
        }
    }
}

/// Whether the broker's log shows a repair that walked the partition log database.
fn walked_the_partition_log(log: &str) -> bool {
    log.lines().any(|line| {
        line.contains("repairing log database after an unclean shutdown")
            && line.contains("partitions.redb")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_produce_loses_no_acknowledged_record() -> anyhow::Result<()> {
    let log = sigkill_during_produce_and_check("").await?;
    assert!(
        !walked_the_partition_log(&log),
        "quick-repair commits: the restart loads the allocator state, no walk: {log}"
    );
    Ok(())
}

/// Without quick-repair (docs/operations.md, "Crash recovery") the restart walks the whole
/// file, and still finds every acknowledged record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_without_quick_repair_loses_no_acknowledged_record() -> anyhow::Result<()> {
    let log = sigkill_during_produce_and_check("[storage]\nquick_repair = false\n").await?;
    assert!(walked_the_partition_log(&log), "{log}");
    Ok(())
}

/// Kills a broker started with `config` while producers are acknowledged, restarts it, checks
/// that every acknowledged record is stored and that it appends after them; returns its log.
async fn sigkill_during_produce_and_check(config: &str) -> anyhow::Result<String> {
    let temp = tempfile::tempdir()?;
    let data_dir = temp.path().join("data");
    let weir = std::path::Path::new(crate::WEIR);
    let broker = BrokerProcess::start_logged(weir, &data_dir, config)?;
    let mut admin = BrokerClient::connect(broker.url()).await?;
    admin
        .create_topic(pb::CreateTopicRequest {
            name: "crash".into(),
            partitions: PARTITIONS,
            replication_factor: 1,
            configs: HashMap::new(),
        })
        .await?;

    let acked: Acknowledged = Arc::default();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|id| tokio::spawn(producer(broker.url(), id, acked.clone())))
        .collect();
    // Kill at a moment that differs from run to run, with producers in full flight.
    let kill_after = 200 + (std::process::id() as usize % 300);
    weir_tests::eventually(
        std::time::Duration::from_secs(60),
        "acknowledged records",
        || {
            let count = acked.lock().expect("lock").len();
            async move { (count >= kill_after).then_some(()) }
        },
    )
    .await?;
    broker.kill()?;
    for p in producers {
        p.await?;
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= kill_after);

    let broker = BrokerProcess::start_logged(weir, &data_dir, config)?;
    let mut client = BrokerClient::connect(broker.url()).await?;
    let mut stored: BTreeMap<(u32, u64), String> = BTreeMap::new();
    for partition in 0..PARTITIONS {
        let mut offset = 0u64;
        loop {
            let fetched = client
                .fetch(pb::FetchRequest {
                    modules: Vec::new(),
                    topic: "crash".into(),
                    partition,
                    offset: offset as i64,
                    ..Default::default()
                })
                .await?
                .into_inner();
            for r in &fetched.records {
                assert_eq!(r.offset, offset, "offsets are dense");
                stored.insert(
                    (partition, r.offset),
                    String::from_utf8_lossy(&r.value).into_owned(),
                );
                offset += 1;
            }
            if offset >= fetched.high_watermark {
                break;
            }
        }
    }
    for (position, value) in &acked {
        assert_eq!(
            stored.get(position),
            Some(value),
            "acknowledged record at {position:?}"
        );
    }
    // The restarted broker keeps appending after what survived.
    let next = client
        .produce(pb::ProduceRequest {
            topic: "crash".into(),
            partition: Some(0),
            records: vec![pb::Record {
                value: Bytes::from_static(b"after"),
                ..Default::default()
            }],
            acks: pb::Acks::All as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    let stored_in_0 = stored.keys().filter(|(p, _)| *p == 0).count() as u64;
    assert_eq!(next.base_offset, Some(stored_in_0));
    let log = broker.log()?;
    assert!(broker.terminate()?, "graceful shutdown on SIGTERM exits 0");
    Ok(log)
}
