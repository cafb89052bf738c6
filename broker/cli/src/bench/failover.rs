//! `weir bench failover`: how long writes stop when a partition's leader dies (issue #15's P7).
//!
//! Starts a cluster of `weir broker` processes (this executable) on loopback, each with its own
//! data directory under a temporary directory in the current one, and writes to a topic of one
//! partition replicated on every node through weir-client's idempotent `Producer`, at a steady
//! rate, with a client given every node. Then, `--kills` times: waits until every replica is in
//! sync, lets writes run `--settle-secs`, SIGKILLs the partition's leader, and measures from the
//! kill to the acknowledgement of the first record enqueued after it; then starts the killed node
//! again. At the end every record must have been acknowledged, and stored once.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use tokio::sync::mpsc;
use weir_client::{Client, Delivery, Producer, ProducerConfig, ProducerRecord, TopicSpec};

use super::cluster::{Cluster, PATIENCE, RaftTimingArgs, create_topic};
use super::stats::LatencyRecorder;

/// The topic written to.
const TOPIC: &str = "failover";

/// Options of `weir bench failover`.
#[derive(Debug, Clone, Args)]
pub struct FailoverBenchArgs {
    /// Nodes of the cluster, each a `weir broker` process; the topic has a replica on each.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(3..=7))]
    nodes: u32,

    /// Leader kills (SIGKILL), one after the other.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    kills: u32,

    /// Records per second written throughout.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(100..))]
    rate: u32,

    /// Value size of each record, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1024)]
    record_size: usize,

    /// The Producer's first retry backoff (doubling up to 1 s), in milliseconds; its default
    /// (100) if not given. A short one shows what the cluster takes apart from the client.
    #[arg(long, value_name = "MS")]
    retry_backoff_ms: Option<u64>,

    /// Seconds of writes with every replica in sync before each kill.
    #[arg(long, default_value_t = 2)]
    settle_secs: u64,

    #[command(flatten)]
    raft: RaftTimingArgs,
}

/// Runs the benchmark and prints its report.
pub async fn run(args: FailoverBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("weir-failover-")
        .tempdir_in(".")
        .context("cannot make the nodes' directory under the current one")?;
    let mut cluster = Cluster::start(dir.path(), args.nodes, &args.raft).await?;
    println!(
        "failover: {} nodes, 1 partition with {} replicas, {} records/s of {} B through an \
         idempotent Producer, {} leader kills (SIGKILL); node logs in {}",
        args.nodes,
        args.nodes,
        args.rate,
        args.record_size,
        args.kills,
        dir.path().display()
    );
    let client = Client::connect(cluster.bootstrap()).await?;
    create_topic(
        &client,
        TopicSpec::new(TOPIC, 1).with_replication_factor(args.nodes),
    )
    .await?;

    let defaults = ProducerConfig::default();
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            // A failover must never fail a record: the figure is how long it takes.
            delivery_timeout: PATIENCE,
            retry_backoff: args
                .retry_backoff_ms
                .map_or(defaults.retry_backoff, Duration::from_millis),
            ..defaults
        },
    );
    let armed = Arc::new(Mutex::new(None));
    let (resumed, mut resumes) = mpsc::unbounded_channel();
    let (deliveries, pending) = mpsc::unbounded_channel();
    let collector = tokio::spawn(collect(pending, armed.clone(), resumed));
    let writer = tokio::spawn(write(
        producer.clone(),
        deliveries,
        args.rate,
        Bytes::from(vec![b'x'; args.record_size]),
    ));

    let mut resume_times = LatencyRecorder::default();
    for kill in 1..=args.kills {
        let leader = in_sync_leader(&client, &cluster).await?;
        tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
        let killed_at = Instant::now();
        *armed.lock().unwrap_or_else(|e| e.into_inner()) = Some(killed_at);
        cluster.kill(leader).await?;
        let resume = match tokio::time::timeout(PATIENCE, resumes.recv()).await {
            Ok(Some(resume)) => resume,
            // The collector ended: the writer stopped, and says why.
            Ok(None) => {
                return Err(match writer.await {
                    Ok(Err(e)) => e.context("the writer stopped"),
                    Ok(Ok(())) => anyhow::anyhow!("the writer stopped"),
                    Err(e) => anyhow::anyhow!("the writer failed: {e}"),
                });
            }
            Err(_) => bail!("writes did not resume within {PATIENCE:?} of kill {kill}"),
        };
        resume_times.record(resume);
        println!(
            "  kill {kill}: node {leader} led; writes resumed after {:.0} ms",
            resume.as_secs_f64() * 1000.0
        );
        cluster.restart(leader).await?;
    }

    writer.abort();
    let _ = writer.await;
    tokio::time::timeout(PATIENCE, producer.flush())
        .await
        .context("the last records were never answered")?;
    drop(producer);
    let collected = collector.await.context("the delivery collector failed")?;
    // Counted by the leader: a follower learns the last commit a moment after the leader.
    let leader = in_sync_leader(&client, &cluster).await?;
    let leader_addr = cluster
        .addr(leader)
        .with_context(|| format!("node {leader} is not one of the cluster's"))?;
    let stored = client
        .connect_to(leader_addr.to_string())
        .await?
        .describe_topic(TOPIC)
        .await?
        .partitions
        .first()
        .context("the topic was described without its partition")?
        .high_watermark;

    if let Some(summary) = resume_times.summary() {
        println!(
            "  writes resume after a leader SIGKILL: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms \
             ({} kills)",
            summary.p50.as_secs_f64() * 1000.0,
            summary.p99.as_secs_f64() * 1000.0,
            summary.max.as_secs_f64() * 1000.0,
            summary.count
        );
    }
    println!(
        "  records: {} acknowledged, {} failed, {stored} stored",
        collected.acknowledged, collected.failed
    );
    cluster.stop().await;
    if collected.failed > 0 {
        bail!(
            "{} records were not delivered; the last error: {}",
            collected.failed,
            collected.last_error.unwrap_or_default()
        );
    }
    if stored != collected.acknowledged {
        bail!(
            "{stored} records stored for {} acknowledged: each should be stored once",
            collected.acknowledged
        );
    }
    Ok(())
}

/// The partition's leader, once it reports every replica in sync.
async fn in_sync_leader(client: &Client, cluster: &Cluster) -> anyhow::Result<u64> {
    let deadline = Instant::now() + PATIENCE;
    // A connection to each node asked, kept across the polls.
    let mut at_node = HashMap::new();
    loop {
        if let Some(leader) = in_sync_leader_now(client, cluster, &mut at_node).await {
            return Ok(leader);
        }
        if Instant::now() >= deadline {
            bail!("the partition's replicas were not all in sync within {PATIENCE:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn in_sync_leader_now(
    client: &Client,
    cluster: &Cluster,
    at_node: &mut HashMap<u64, Client>,
) -> Option<u64> {
    let leader = client
        .describe_topic(TOPIC)
        .await
        .ok()?
        .partitions
        .first()?
        .leader?;
    // Only the leader reports its replicas' state.
    let at_leader = match at_node.entry(leader) {
        Entry::Occupied(known) => known.into_mut(),
        Entry::Vacant(new) => {
            let addr = cluster.addr(leader)?.to_string();
            new.insert(client.connect_to(addr).await.ok()?)
        }
    };
    let described = at_leader.describe_topic(TOPIC).await.ok()?;
    let partition = described.partitions.first()?;
    let all_in_sync = partition.leader == Some(leader)
        && partition.replica_status.len() == cluster.len()
        && partition.replica_status.iter().all(|r| r.in_sync);
    all_in_sync.then_some(leader)
}

/// Enqueues `rate` records a second, in steps of 10 ms, until aborted.
async fn write(
    producer: Producer,
    deliveries: mpsc::UnboundedSender<(Instant, Delivery)>,
    rate: u32,
    value: Bytes,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let per_tick = rate.div_ceil(100);
    loop {
        tick.tick().await;
        for _ in 0..per_tick {
            let enqueued_at = Instant::now();
            let delivery = producer
                .enqueue(TOPIC, ProducerRecord::new(value.clone()))
                .await
                .context("cannot enqueue a record")?;
            if deliveries.send((enqueued_at, delivery)).is_err() {
                return Ok(());
            }
        }
    }
}

/// What the deliveries said.
#[derive(Debug, Default)]
struct Collected {
    acknowledged: u64,
    failed: u64,
    last_error: Option<String>,
}

/// Awaits the deliveries in order (one partition: they resolve in order). When a kill is armed,
/// the first record enqueued after it that is acknowledged gives the time writes took to resume.
async fn collect(
    mut pending: mpsc::UnboundedReceiver<(Instant, Delivery)>,
    armed: Arc<Mutex<Option<Instant>>>,
    resumed: mpsc::UnboundedSender<Duration>,
) -> Collected {
    let mut collected = Collected::default();
    while let Some((enqueued_at, delivery)) = pending.recv().await {
        match delivery.await {
            Ok(_) => collected.acknowledged += 1,
            Err(e) => {
                collected.failed += 1;
                collected.last_error = Some(e.to_string());
                continue;
            }
        }
        let mut armed = armed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(killed_at) = *armed
            && enqueued_at >= killed_at
        {
            *armed = None;
            let _ = resumed.send(killed_at.elapsed());
        }
    }
    collected
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: FailoverBenchArgs,
    }

    #[test]
    fn a_cluster_needs_three_nodes_and_takes_the_raft_timings() {
        let args = Cli::parse_from(["bench", "--nodes", "5", "--heartbeat-ms", "100"]).args;
        assert_eq!(args.nodes, 5);
        assert!(Cli::try_parse_from(["bench", "--nodes", "2"]).is_err());
        assert!(Cli::try_parse_from(["bench", "--heartbeat-ms", "soon"]).is_err());
    }
}
