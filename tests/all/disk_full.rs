//! A broker whose disk fills up, on a size-limited tmpfs the test mounts: produce is refused
//! with a retriable `DISK_FULL` before the free-space reserve is used up, nothing acknowledged
//! is lost, reads go on, and produce resumes by itself once space is freed; a follower below
//! its reserve holds back replicated entries and catches up later (docs/operations.md, "Disk
//! space").

use std::time::Duration;

use anyhow::Context;
use weir_client::{Acks, Client, ClientError, ProducerRecord, TopicSpec};
use weir_proto::v1 as pb;
use weir_tests::tmpfs::Tmpfs;
use weir_tests::{
    InProcessBroker, ProcessCluster, RaftTimings, eventually, fetch_all, scrape_metrics,
    test_config,
};

const GENEROUS: Duration = Duration::from_secs(30);
const MIB: u64 = 1 << 20;
/// Records of 1 KiB, 64 to a produce request.
const RECORD: usize = 1024;
const PER_REQUEST: usize = 64;

fn request(first: usize) -> Vec<ProducerRecord> {
    (first..first + PER_REQUEST)
        .map(|i| ProducerRecord::new(format!("{i:08}-{}", "v".repeat(RECORD - 9))))
        .collect()
}

/// Produces requests of [`request`] to `filling`/0 (acks=all) until one fails; returns the
/// records acknowledged before it and its error. 4 MiB hold about 60 requests, so more than
/// 500 acknowledged means the disk never filled.
async fn produce_until_refused(client: &Client) -> anyhow::Result<(usize, ClientError)> {
    let mut acknowledged = 0usize;
    loop {
        anyhow::ensure!(
            acknowledged < 500 * PER_REQUEST,
            "500 requests of 64 KiB were all stored on a disk with 4 MiB to spare"
        );
        match client
            .produce("filling", Some(0), request(acknowledged), Acks::All)
            .await
        {
            Ok(outcome) => {
                assert_eq!(outcome.base_offset, Some(acknowledged as u64));
                acknowledged += PER_REQUEST;
            }
            Err(e) => return Ok((acknowledged, e)),
        }
    }
}

/// The values of `records`, as text.
fn values(records: Vec<pb::ConsumedRecord>) -> Vec<String> {
    records
        .into_iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect()
}

/// The values of the first `requests` requests' records.
fn requested_values(requests: usize) -> Vec<String> {
    (0..requests)
        .flat_map(|r| request(r * PER_REQUEST))
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_produce_keeps_what_was_acknowledged_and_recovers() -> anyhow::Result<()>
{
    const RESERVE: u64 = 8 * MIB;
    let disk = Tmpfs::mount(64 * MIB)?;
    let mut config = test_config(&disk.path().join("data"));
    config.disk.min_free_bytes = RESERVE;
    config.disk.check_interval_ms = 10;
    let broker = InProcessBroker::start_with(config).await?;
    let client = Client::connect(broker.addr().to_string()).await?;
    client.create_topic(TopicSpec::new("filling", 1)).await?;
    // Leave 4 MiB above the reserve.
    let filler = disk.fill_leaving("filler", RESERVE + 4 * MIB)?;

    let (acknowledged, refusal) = produce_until_refused(&client).await?;
    assert_eq!(refusal.reason(), Some("DISK_FULL"), "{refusal}");
    assert_eq!(refusal.code(), Some(tonic::Code::ResourceExhausted));
    assert!(refusal.is_retriable(), "{refusal}");
    assert!(
        refusal.to_string().contains("disk.min_free_bytes"),
        "{refusal}"
    );
    assert!(acknowledged > 0, "the first request was refused");
    assert!(
        disk.free_bytes()? > RESERVE / 2,
        "the reserve was used up: {} bytes free",
        disk.free_bytes()?
    );

    // Reads go on, and hold every acknowledged record and nothing else.
    let mut raw = broker.raw_client().await?;
    let expected = requested_values(acknowledged / PER_REQUEST);
    assert_eq!(values(fetch_all(&mut raw, "filling", 0).await?), expected);
    let metrics = scrape_metrics(broker.metrics_addr().expect("metrics")).await?;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("weir_disk_full_refusals_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );

    // Space comes back: produce resumes without a restart.
    std::fs::remove_file(filler)?;
    let resumed = eventually(GENEROUS, "produce to resume", || {
        let client = client.clone();
        async move {
            client
                .produce("filling", Some(0), request(acknowledged), Acks::All)
                .await
                .ok()
        }
    })
    .await?;
    assert_eq!(resumed.base_offset, Some(acknowledged as u64));
    let all = values(fetch_all(&mut raw, "filling", 0).await?);
    assert_eq!(all.len(), acknowledged + PER_REQUEST);
    assert_eq!(all[..acknowledged], expected[..]);
    broker.stop().await;
    Ok(())
}

/// Without a reserve the disk really fills: the commit that finds no space fails its database,
/// which stops the broker as a failed fsync does (a supervisor restarts it); every record it
/// acknowledged before survives, and once space is freed it starts and takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_finds_the_disk_full_stops_the_broker_and_loses_nothing_acknowledged()
-> anyhow::Result<()> {
    let disk = Tmpfs::mount(64 * MIB)?;
    let mut config = test_config(&disk.path().join("data"));
    config.disk.min_free_bytes = 0;
    let broker = InProcessBroker::start_with(config.clone()).await?;
    let client = Client::connect(broker.addr().to_string()).await?;
    client.create_topic(TopicSpec::new("filling", 1)).await?;
    let filler = disk.fill_leaving("filler", 4 * MIB)?;

    let (acknowledged, failure) = produce_until_refused(&client).await?;
    // The write that found no space may have reached the disk or not (and, in a cluster, the
    // followers): its outcome is unknown, which a producer may retry elsewhere.
    assert_eq!(failure.reason(), Some("OUTCOME_UNKNOWN"), "{failure}");
    assert!(failure.is_retriable(), "{failure}");
    assert!(
        failure.to_string().contains("No space left on device"),
        "{failure}"
    );
    let why = broker.storage_failed().await;
    assert!(why.contains("No space left on device"), "{why}");
    broker.stop().await;

    std::fs::remove_file(filler)?;
    let broker = InProcessBroker::start_with(config).await?;
    let client = Client::connect(broker.addr().to_string()).await?;
    let mut raw = broker.raw_client().await?;
    let stored = values(fetch_all(&mut raw, "filling", 0).await?);
    let expected = requested_values(acknowledged / PER_REQUEST + 1);
    // Every acknowledged record, and perhaps the request that failed (its outcome was unknown).
    assert!(
        stored.len() == acknowledged || stored.len() == acknowledged + PER_REQUEST,
        "{} records stored after {acknowledged} were acknowledged",
        stored.len()
    );
    assert_eq!(stored[..], expected[..stored.len()]);
    let next = client
        .produce("filling", Some(0), request(stored.len()), Acks::All)
        .await?;
    assert_eq!(next.base_offset, Some(stored.len() as u64));
    broker.stop().await;
    Ok(())
}

/// A follower whose disk falls below its reserve holds back the entries its leader replicates
/// instead of failing a commit: the other two replicas go on acknowledging, the node stays up,
/// and once space is freed it catches up with the same records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_below_its_reserve_holds_back_entries_and_catches_up_later() -> anyhow::Result<()>
{
    const RESERVE: u64 = 32 * MIB;
    const TOPIC: &str = "replicated";
    let mut cluster = ProcessCluster::new_with_config(
        std::path::Path::new(crate::WEIR),
        3,
        &format!("[disk]\nmin_free_bytes = {RESERVE}\ncheck_interval_ms = 10\n"),
    )
    .await?;
    let mut disks = Vec::new();
    for id in [1, 2, 3] {
        disks.push(Tmpfs::mount_at(cluster.data_dir(id), 128 * MIB)?);
    }
    cluster.start_nodes(&[1, 2, 3]).await?;
    cluster.create_topic(TOPIC, 1, 3, &[]).await?;
    let partition = 0;
    let leader = cluster.leader_of(TOPIC, partition).await?;
    let full = if leader == 1 { 2 } else { 1 };
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|&id| id != full).collect();
    // The follower to fill restarts with long election timeouts, so it never calls an
    // election while the others run: it stays a follower.
    cluster.set_raft_timings(
        full,
        RaftTimings {
            heartbeat_ms: 100,
            election_min_ms: 10_000,
            election_max_ms: 20_000,
        },
    )?;
    cluster.kill(full)?;
    cluster.restart(full).await?;
    cluster.leader_among(&others, TOPIC, partition).await?;
    let disk = &disks[full as usize - 1];
    let filler = disk.fill_leaving("filler", RESERVE + 2 * MIB)?;

    // 16 MiB, eight times what the full node has above its reserve: the other two acknowledge
    // it all.
    let mut produced = 0u64;
    for r in 0..256 {
        let records = request(r * PER_REQUEST)
            .into_iter()
            .map(pb::Record::from)
            .collect();
        let (_, base) = cluster
            .produce_acked(&others, TOPIC, partition, records)
            .await?;
        assert_eq!(base, produced);
        produced += PER_REQUEST as u64;
    }
    assert!(cluster.is_running(full), "node {full} stopped");
    assert!(
        disk.free_bytes()? > RESERVE / 2,
        "node {full} used up its reserve: {} bytes free",
        disk.free_bytes()?
    );
    let behind = cluster
        .partition_on(full, TOPIC, partition)
        .await
        .context("the full node answers")?;
    assert!(
        behind.high_watermark < produced,
        "node {full} stored all {produced} records on a disk that had room for an eighth"
    );

    std::fs::remove_file(filler)?;
    // Generous: the node fetches 16 MiB while the machine may be busy with other tests.
    eventually(
        Duration::from_secs(120),
        "the full node to catch up",
        || async {
            let view = cluster.partition_on(full, TOPIC, partition).await?;
            (view.high_watermark >= produced).then_some(())
        },
    )
    .await?;
    let on_leader = cluster.read_partition(leader, TOPIC, partition).await?;
    assert_eq!(on_leader.len() as u64, produced);
    assert_eq!(
        cluster.read_partition(full, TOPIC, partition).await?,
        on_leader
    );
    drop(cluster);
    Ok(())
}
