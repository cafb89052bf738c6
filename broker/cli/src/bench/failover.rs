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
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc;
use weir_client::{Client, Delivery, Producer, ProducerConfig, ProducerRecord, TopicSpec};

use super::stats::LatencyRecorder;

/// The topic written to.
const TOPIC: &str = "failover";

/// How long a node may take to report that it listens, the cluster to take a topic, the
/// replicas to get in sync, or writes to resume, before the benchmark gives up.
const PATIENCE: Duration = Duration::from_secs(120);

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

    /// The nodes' raft heartbeat interval (`[raft] heartbeat_ms`); the broker's default if not
    /// given.
    #[arg(long, value_name = "MS")]
    heartbeat_ms: Option<u64>,

    /// The nodes' shortest election timeout (`[raft] election_min_ms`).
    #[arg(long, value_name = "MS")]
    election_min_ms: Option<u64>,

    /// The nodes' longest election timeout (`[raft] election_max_ms`).
    #[arg(long, value_name = "MS")]
    election_max_ms: Option<u64>,
}

impl FailoverBenchArgs {
    /// The `[raft]` section of the nodes' config file, with the timings given.
    fn raft_config(&self) -> String {
        let mut config = String::from("[raft]\n");
        for (key, value) in [
            ("heartbeat_ms", self.heartbeat_ms),
            ("election_min_ms", self.election_min_ms),
            ("election_max_ms", self.election_max_ms),
        ] {
            if let Some(value) = value {
                config.push_str(&format!("{key} = {value}\n"));
            }
        }
        config
    }
}

/// Runs the benchmark and prints its report.
pub async fn run(args: FailoverBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("weir-failover-")
        .tempdir_in(".")
        .context("cannot make the nodes' directory under the current one")?;
    let mut cluster = Cluster::start(dir.path(), &args).await?;
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
    create_topic(&client, args.nodes).await?;

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

/// Creates the topic, retrying while the cluster forms (no controller leader yet).
async fn create_topic(client: &Client, replicas: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let spec = TopicSpec::new(TOPIC, 1).with_replication_factor(replicas);
        match client.create_topic(spec).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_retriable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context("cannot create the topic"),
        }
    }
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
        && partition.replica_status.len() == cluster.nodes.len()
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

/// One `weir broker` process of the cluster.
struct Node {
    id: u64,
    addr: SocketAddr,
    args: Vec<String>,
    log: PathBuf,
    process: Option<Child>,
}

/// The cluster's processes.
struct Cluster {
    exe: PathBuf,
    nodes: Vec<Node>,
}

impl Cluster {
    /// Starts `args.nodes` nodes under `dir` and waits until each listens.
    async fn start(dir: &Path, args: &FailoverBenchArgs) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let config = dir.join("weir.toml");
        std::fs::write(&config, args.raft_config())
            .with_context(|| format!("cannot write {}", config.display()))?;
        // Ports chosen by the system, held until all are chosen so they differ.
        let listeners = (0..args.nodes)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()
            .context("cannot find free ports on 127.0.0.1")?;
        let addrs = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<Result<Vec<_>, _>>()?;
        drop(listeners);
        let peers = (1..)
            .zip(&addrs)
            .map(|(id, addr)| format!("{id}={addr}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = (1..)
            .zip(addrs)
            .map(|(id, addr)| {
                let data_dir = dir.join(format!("node-{id}"));
                let args = [
                    "broker",
                    "--node-id",
                    &id.to_string(),
                    "--listen",
                    &addr.to_string(),
                    "--peers",
                    &peers,
                    "--data-dir",
                    &data_dir.to_string_lossy(),
                    "--metrics-listen",
                    "none",
                    "--config",
                    &config.to_string_lossy(),
                ]
                .map(str::to_owned)
                .to_vec();
                Node {
                    id,
                    addr,
                    args,
                    log: dir.join(format!("node-{id}.log")),
                    process: None,
                }
            })
            .collect();
        let mut cluster = Self { exe, nodes };
        // All at once: a node of a forming cluster listens only once it has heard its peers.
        let mut launched = Vec::new();
        for id in 1..=u64::from(args.nodes) {
            launched.push((id, cluster.launch(id)?));
        }
        for (id, stdout) in launched {
            cluster.await_listening(id, stdout).await?;
        }
        Ok(cluster)
    }

    /// Every node's address, comma-separated: what the client bootstraps from.
    fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.addr.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn addr(&self, id: u64) -> Option<SocketAddr> {
        self.nodes.iter().find(|n| n.id == id).map(|n| n.addr)
    }

    fn node(&mut self, id: u64) -> anyhow::Result<&mut Node> {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .with_context(|| format!("no node {id} in the cluster"))
    }

    /// Starts node `id` again and waits until it reports that it listens.
    async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        let stdout = self.launch(id)?;
        self.await_listening(id, stdout).await
    }

    /// Starts node `id`'s process; returns its stdout.
    fn launch(&mut self, id: u64) -> anyhow::Result<ChildStdout> {
        let exe = self.exe.clone();
        let node = self.node(id)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("cannot open {}", node.log.display()))?;
        let mut child = Command::new(exe)
            .args(&node.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a node")?;
        let stdout = child.stdout.take().context("the node's stdout")?;
        node.process = Some(child);
        Ok(stdout)
    }

    /// Waits until node `id` prints that it listens.
    async fn await_listening(&mut self, id: u64, stdout: ChildStdout) -> anyhow::Result<()> {
        let log = self.node(id)?.log.clone();
        let mut lines = BufReader::new(stdout).lines();
        let listening = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await? {
                if line.contains("listening on") {
                    return Ok(true);
                }
            }
            Ok::<_, std::io::Error>(false)
        })
        .await;
        if !matches!(listening, Ok(Ok(true))) {
            bail!(
                "node {id} did not report listening within {PATIENCE:?}; see {}",
                log.display()
            );
        }
        // Whatever else it prints is read and dropped, so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(())
    }

    /// SIGKILLs node `id` and waits until it is gone.
    async fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        if let Some(mut process) = self.node(id)?.process.take() {
            process
                .kill()
                .await
                .with_context(|| format!("cannot kill node {id}"))?;
        }
        Ok(())
    }

    /// Stops every node.
    async fn stop(mut self) {
        for node in &mut self.nodes {
            if let Some(mut process) = node.process.take() {
                let _ = process.kill().await;
            }
        }
    }
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
    fn only_the_raft_timings_given_reach_the_nodes_config() {
        let defaults = Cli::parse_from(["bench"]).args;
        assert_eq!(defaults.raft_config(), "[raft]\n");
        let some =
            Cli::parse_from(["bench", "--heartbeat-ms", "100", "--election-max-ms", "900"]).args;
        assert_eq!(
            some.raft_config(),
            "[raft]\nheartbeat_ms = 100\nelection_max_ms = 900\n"
        );
        assert!(Cli::try_parse_from(["bench", "--nodes", "2"]).is_err());
    }
}
