//! `weir bench idle`: what a cluster with many partitions costs while nothing happens, and how
//! long it takes to serve again after a restart (issue #15's P8: for 1,000 partitions, idle CPU
//! under 5% of a core, restart to serving under 5 s).
//!
//! Starts a cluster of `weir broker` processes (this executable) on loopback, each with its own
//! data directory under a temporary directory in the current one, and creates a topic of
//! `--partitions` partitions with `--replication-factor` replicas. Once every partition has a
//! leader and `--settle-secs` have passed, it samples each node's CPU time (user and system,
//! from Linux's `/proc`) over `--sample-secs`, nothing being produced or read. Then it sends
//! every node SIGTERM, waits until all have exited, starts them all again, and measures from
//! that start to every node listening and to every partition having a leader again.
//!
//! Leaders are found by asking every node to describe the topic every 100 ms; those requests
//! are the only load the benchmark puts on the cluster, and none are made while sampling.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use weir_client::{Client, PartitionInfo, TopicSpec};

use super::cluster::{Cluster, PATIENCE, RaftTimingArgs, create_topic};
use super::cpu;

/// The topic created.
const TOPIC: &str = "idle";

/// How often the nodes are asked whether every partition has a leader.
const LEADER_POLL: Duration = Duration::from_millis(100);

/// How often a long wait for leaders reports how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Options of `weir bench idle`.
#[derive(Debug, Clone, Args)]
pub struct IdleBenchArgs {
    /// Nodes, each a `weir broker` process; 1 runs a plain broker (a cluster of one).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=7))]
    nodes: u32,

    /// Partitions of the topic.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    partitions: u32,

    /// Replicas of each partition [default: one per node, at most 3].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=7))]
    replication_factor: Option<u32>,

    /// Seconds to wait, once every partition has a leader, before sampling.
    #[arg(long, default_value_t = 20)]
    settle_secs: u64,

    /// Seconds over which the nodes' CPU time is sampled.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    sample_secs: u64,

    #[command(flatten)]
    raft: RaftTimingArgs,
}

impl IdleBenchArgs {
    /// The replicas of each partition: as given, or one per node up to three; never more than
    /// there are nodes.
    fn replication_factor(&self) -> anyhow::Result<u32> {
        let replicas = self.replication_factor.unwrap_or(self.nodes.min(3));
        if replicas > self.nodes {
            bail!(
                "--replication-factor {replicas} needs at least {replicas} nodes (--nodes {})",
                self.nodes
            );
        }
        Ok(replicas)
    }
}

/// Runs the benchmark and prints its report.
pub async fn run(args: IdleBenchArgs) -> anyhow::Result<()> {
    if !cfg!(target_os = "linux") {
        bail!("weir bench idle reads the nodes' CPU time from /proc, which only Linux has");
    }
    let replicas = args.replication_factor()?;
    let dir = tempfile::Builder::new()
        .prefix("weir-idle-")
        .tempdir_in(".")
        .context("cannot make the nodes' directory under the current one")?;
    let mut cluster = Cluster::start(dir.path(), args.nodes, &args.raft).await?;
    println!(
        "idle: {}, {} × {}, {}; node logs in {}",
        counted(args.nodes, "node"),
        counted(args.partitions, "partition"),
        counted(replicas, "replica"),
        args.raft,
        dir.path().display()
    );
    let client = Client::connect(cluster.bootstrap()).await?;
    create_topic(
        &client,
        TopicSpec::new(TOPIC, args.partitions).with_replication_factor(replicas),
    )
    .await?;
    drop(client);
    await_leaders(&cluster, args.partitions).await?;

    eprintln!(
        "every partition has a leader; settling {} s",
        args.settle_secs
    );
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    eprintln!("sampling the nodes' CPU time over {} s", args.sample_secs);
    let usage = sample_cpu(&cluster, Duration::from_secs(args.sample_secs)).await?;
    println!("{usage}");

    eprintln!("restarting every node: SIGTERM, then start again");
    let terminated = Instant::now();
    cluster.terminate_all().await?;
    let stopped = terminated.elapsed();
    let started = Instant::now();
    cluster.start_all().await?;
    let listening = started.elapsed();
    await_leaders(&cluster, args.partitions).await?;
    let led = started.elapsed();
    println!(
        "stop on SIGTERM: every node exited after {:.2} s",
        stopped.as_secs_f64()
    );
    println!(
        "restart to serving: listening after {:.2} s, every partition led after {:.2} s",
        listening.as_secs_f64(),
        led.as_secs_f64()
    );
    cluster.stop().await;
    Ok(())
}

/// `n` and the noun for `n` of them: "1 node", "3 nodes".
fn counted(n: u32, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

/// Waits until every one of the topic's `partitions` has a leader (see [`led_partitions`]).
async fn await_leaders(cluster: &Cluster, partitions: u32) -> anyhow::Result<()> {
    eprintln!(
        "waiting for {} to have a leader",
        counted(partitions, "partition")
    );
    let mut at_node = Vec::new();
    for id in cluster.ids() {
        let addr = cluster.addr(id).context("a node without an address")?;
        let client = Client::connect(addr.to_string())
            .await
            .with_context(|| format!("cannot connect to node {id}"))?;
        at_node.push((id, client));
    }
    let deadline = Instant::now() + PATIENCE;
    let mut reported = Instant::now();
    loop {
        let described = futures::future::join_all(
            at_node
                .iter()
                .map(|(id, client)| async move { (*id, client.describe_topic(TOPIC).await) }),
        )
        .await;
        let led = led_partitions(described.iter().filter_map(|(id, described)| {
            Some((*id, described.as_ref().ok()?.partitions.as_slice()))
        }));
        if led >= partitions as usize {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{led} of {partitions} partitions had a leader after {PATIENCE:?}");
        }
        if reported.elapsed() >= PROGRESS_EVERY {
            eprintln!("  {led} of {partitions} partitions have a leader");
            reported = Instant::now();
        }
        tokio::time::sleep(LEADER_POLL).await;
    }
}

/// How many partitions have a leader, from each node's description of the topic's partitions.
/// A partition counts once the node it names as leader is the node describing it, reporting
/// its replicas' state, which only a leader has: a follower's idea of the leader may be out of
/// date, and a node only describes leaders of the partitions it holds a replica of.
fn led_partitions<'a>(described: impl IntoIterator<Item = (u64, &'a [PartitionInfo])>) -> usize {
    described
        .into_iter()
        .flat_map(|(node, partitions)| {
            partitions
                .iter()
                .filter(move |p| p.leader == Some(node) && !p.replica_status.is_empty())
                .map(|p| p.partition)
        })
        .collect::<BTreeSet<_>>()
        .len()
}

/// Each node's CPU time over `window`.
async fn sample_cpu(cluster: &Cluster, window: Duration) -> anyhow::Result<CpuUsage> {
    let pids = cluster.pids();
    let mut before = Vec::with_capacity(pids.len());
    for &(id, pid) in &pids {
        before.push(cpu::used(pid).await.with_context(|| format!("node {id}"))?);
    }
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let mut nodes = Vec::with_capacity(pids.len());
    for (&(id, pid), before) in pids.iter().zip(before) {
        let after = cpu::used(pid).await.with_context(|| format!("node {id}"))?;
        nodes.push((id, after.saturating_sub(before)));
    }
    Ok(CpuUsage {
        elapsed: start.elapsed(),
        nodes,
    })
}

/// The CPU time each node used over a stretch of wall-clock time.
#[derive(Debug)]
struct CpuUsage {
    elapsed: Duration,
    /// Node id and the CPU time it used.
    nodes: Vec<(u64, Duration)>,
}

impl CpuUsage {
    /// `used` as a share of one core over the stretch, in percent.
    fn percent(&self, used: Duration) -> f64 {
        100.0 * used.as_secs_f64() / self.elapsed.as_secs_f64()
    }
}

impl std::fmt::Display for CpuUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "idle CPU over {:.1} s:", self.elapsed.as_secs_f64())?;
        for &(id, used) in &self.nodes {
            write!(f, " node {id} {:.1}%,", self.percent(used))?;
        }
        let total = self.nodes.iter().map(|&(_, used)| used).sum();
        write!(f, " total {:.1}% of a core", self.percent(total))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use weir_client::ReplicaStatus;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: IdleBenchArgs,
    }

    #[test]
    fn replicas_default_to_one_per_node_up_to_three_and_never_outnumber_the_nodes() {
        let defaults = Cli::parse_from(["bench"]).args;
        assert_eq!((defaults.nodes, defaults.partitions), (3, 1000));
        assert_eq!((defaults.settle_secs, defaults.sample_secs), (20, 10));
        assert_eq!(defaults.replication_factor().unwrap(), 3);
        let alone = Cli::parse_from(["bench", "--nodes", "1"]).args;
        assert_eq!(alone.replication_factor().unwrap(), 1);
        let five = Cli::parse_from(["bench", "--nodes", "5", "--heartbeat-ms", "100"]).args;
        assert_eq!(five.replication_factor().unwrap(), 3);
        assert!(five.raft.to_string().starts_with("heartbeat 100 ms"));
        let too_many = Cli::parse_from(["bench", "--nodes", "2", "--replication-factor", "3"]);
        let err = too_many.args.replication_factor().unwrap_err().to_string();
        assert!(err.contains("at least 3 nodes"), "{err}");
        for refused in [["--nodes", "0"], ["--nodes", "8"], ["--sample-secs", "0"]] {
            assert!(Cli::try_parse_from(["bench", refused[0], refused[1]]).is_err());
        }
    }

    #[test]
    fn one_of_a_thing_is_singular() {
        assert_eq!(counted(1, "node"), "1 node");
        assert_eq!(counted(3, "replica"), "3 replicas");
    }

    fn partition(index: u32, leader: Option<u64>, replicas_known: bool) -> PartitionInfo {
        PartitionInfo {
            partition: index,
            leader,
            replicas: vec![1, 2, 3],
            high_watermark: 0,
            log_start_offset: 0,
            first_stored_offset: None,
            stored_bytes: Some(0),
            replica_status: match replicas_known {
                true => vec![ReplicaStatus {
                    node_id: 1,
                    in_sync: true,
                    lag: 0,
                }],
                false => Vec::new(),
            },
            failure: None,
        }
    }

    #[test]
    fn a_partition_is_led_once_its_leader_says_so_itself() {
        // Node 1 leads partition 0; node 2 believes node 1 leads partition 1, which node 1
        // does not confirm; node 2 leads partition 2; nobody leads partition 3.
        let at_1 = [
            partition(0, Some(1), true),
            partition(1, None, false),
            partition(2, Some(2), false),
            partition(3, None, false),
        ];
        let at_2 = [
            partition(0, Some(1), false),
            partition(1, Some(1), false),
            partition(2, Some(2), true),
            partition(3, None, false),
        ];
        assert_eq!(led_partitions([(1, &at_1[..]), (2, &at_2[..])]), 2);
        assert_eq!(led_partitions([(2, &at_2[..])]), 1);
        // A node naming itself without its replicas' state is not yet a leader.
        assert_eq!(
            led_partitions([(1, &[partition(0, Some(1), false)][..])]),
            0
        );
    }

    #[test]
    fn the_report_gives_each_node_and_the_total_as_shares_of_one_core() {
        let usage = CpuUsage {
            elapsed: Duration::from_secs(10),
            nodes: vec![
                (1, Duration::from_millis(2710)),
                (2, Duration::from_millis(2600)),
                (3, Duration::from_millis(2740)),
            ],
        };
        assert_eq!(
            usage.to_string(),
            "idle CPU over 10.0 s: node 1 27.1%, node 2 26.0%, node 3 27.4%, total 80.5% of a core"
        );
    }
}
