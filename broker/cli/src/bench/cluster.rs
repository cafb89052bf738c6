//! A cluster of `weir broker` processes of this executable on loopback, for the benchmarks that
//! run their own nodes (`failover`, `idle`).
//!
//! Each node has its data directory and its log (stderr) under a directory the caller owns, and
//! a port of its own on 127.0.0.1; every node shares one config file that carries the raft
//! timings given on the command line. Nodes are started all at once (a node of a forming cluster
//! listens only once it has heard its peers), and killed, stopped gracefully and started again
//! by id. A node's process is killed when the cluster is dropped, so an error leaves none behind.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use weir_client::{Client, TopicSpec};

/// How long a node may take to report that it listens or to exit, the cluster to take a topic,
/// or the benchmark's own waits (replicas in sync, leaders elected, writes resumed) to end,
/// before the benchmark gives up.
pub(super) const PATIENCE: Duration = Duration::from_secs(120);

/// The nodes' raft timings (`[raft]` in their config file), each the broker's default if not
/// given.
#[derive(Debug, Clone, Args)]
pub struct RaftTimingArgs {
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

impl RaftTimingArgs {
    /// The `[raft]` section of the nodes' config file, with the timings given.
    fn config(&self) -> String {
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

/// The timings the nodes run with: those given, the broker's defaults for the others.
impl std::fmt::Display for RaftTimingArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let defaults = weir_server::RaftTimings::default();
        write!(
            f,
            "heartbeat {} ms, elections {}–{} ms",
            self.heartbeat_ms.unwrap_or(defaults.heartbeat_ms),
            self.election_min_ms.unwrap_or(defaults.election_min_ms),
            self.election_max_ms.unwrap_or(defaults.election_max_ms),
        )
    }
}

/// Creates a topic, retrying while the cluster forms (no controller leader yet).
pub(super) async fn create_topic(client: &Client, spec: TopicSpec) -> anyhow::Result<()> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match client.create_topic(spec.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_retriable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context("cannot create the topic"),
        }
    }
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
pub(super) struct Cluster {
    exe: PathBuf,
    nodes: Vec<Node>,
}

impl Cluster {
    /// Starts `nodes` nodes (ids 1 to `nodes`) under `dir` and waits until each listens. A
    /// cluster of one is a plain broker, without `--peers`.
    pub(super) async fn start(
        dir: &Path,
        nodes: u32,
        raft: &RaftTimingArgs,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let config = dir.join("weir.toml");
        std::fs::write(&config, raft.config())
            .with_context(|| format!("cannot write {}", config.display()))?;
        // Ports chosen by the system, held until all are chosen so they differ.
        let listeners = (0..nodes)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()
            .context("cannot find free ports on 127.0.0.1")?;
        let addrs = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<Result<Vec<_>, _>>()?;
        drop(listeners);
        let peers = (addrs.len() > 1).then(|| {
            (1..)
                .zip(&addrs)
                .map(|(id, addr)| format!("{id}={addr}"))
                .collect::<Vec<_>>()
                .join(",")
        });
        let nodes = (1..)
            .zip(addrs)
            .map(|(id, addr)| Node {
                id,
                addr,
                args: node_args(
                    id,
                    addr,
                    peers.as_deref(),
                    &dir.join(format!("node-{id}")),
                    &config,
                ),
                log: dir.join(format!("node-{id}.log")),
                process: None,
            })
            .collect();
        let mut cluster = Self { exe, nodes };
        cluster.start_all().await?;
        Ok(cluster)
    }

    /// Starts every node's process at once and waits until each listens.
    pub(super) async fn start_all(&mut self) -> anyhow::Result<()> {
        let mut launched = Vec::new();
        for id in self.ids() {
            launched.push((id, self.launch(id)?));
        }
        for (id, stdout) in launched {
            self.await_listening(id, stdout).await?;
        }
        Ok(())
    }

    /// The nodes' ids, in order.
    pub(super) fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// How many nodes the cluster has.
    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Every node's address, comma-separated: what the client bootstraps from.
    pub(super) fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.addr.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `id`'s address.
    pub(super) fn addr(&self, id: u64) -> Option<SocketAddr> {
        self.nodes.iter().find(|n| n.id == id).map(|n| n.addr)
    }

    /// The process id of each running node, by node id.
    pub(super) fn pids(&self) -> Vec<(u64, u32)> {
        self.nodes
            .iter()
            .filter_map(|n| Some((n.id, n.process.as_ref()?.id()?)))
            .collect()
    }

    fn node(&mut self, id: u64) -> anyhow::Result<&mut Node> {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .with_context(|| format!("no node {id} in the cluster"))
    }

    /// Starts node `id` again and waits until it reports that it listens.
    pub(super) async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
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
    pub(super) async fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        if let Some(mut process) = self.node(id)?.process.take() {
            process
                .kill()
                .await
                .with_context(|| format!("cannot kill node {id}"))?;
        }
        Ok(())
    }

    /// Sends every node SIGTERM (a graceful shutdown) and waits until each has exited, which it
    /// must do successfully. A node that does not exit within [`PATIENCE`] is killed.
    pub(super) async fn terminate_all(&mut self) -> anyhow::Result<()> {
        for node in &self.nodes {
            let Some(pid) = node.process.as_ref().and_then(Child::id) else {
                continue;
            };
            let pid = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
                .with_context(|| format!("node {} has an invalid process id {pid}", node.id))?;
            rustix::process::kill_process(pid, rustix::process::Signal::TERM)
                .with_context(|| format!("cannot send SIGTERM to node {}", node.id))?;
        }
        for node in &mut self.nodes {
            let Some(mut process) = node.process.take() else {
                continue;
            };
            let status = match tokio::time::timeout(PATIENCE, process.wait()).await {
                Ok(status) => {
                    status.with_context(|| format!("cannot wait for node {}", node.id))?
                }
                Err(_) => {
                    let _ = process.kill().await;
                    bail!(
                        "node {} did not exit within {PATIENCE:?} of SIGTERM; see {}",
                        node.id,
                        node.log.display()
                    );
                }
            };
            if !status.success() {
                bail!(
                    "node {} exited with {status} after SIGTERM; see {}",
                    node.id,
                    node.log.display()
                );
            }
        }
        Ok(())
    }

    /// Stops every node.
    pub(super) async fn stop(mut self) {
        for node in &mut self.nodes {
            if let Some(mut process) = node.process.take() {
                let _ = process.kill().await;
            }
        }
    }
}

/// The `weir broker` arguments of node `id`: a member of the cluster of `peers`, or, without
/// peers, a plain broker (node 1, a cluster of one).
fn node_args(
    id: u64,
    addr: SocketAddr,
    peers: Option<&str>,
    data_dir: &Path,
    config: &Path,
) -> Vec<String> {
    let mut args = vec!["broker".to_owned()];
    if let Some(peers) = peers {
        args.extend(["--node-id".to_owned(), id.to_string()]);
        args.extend(["--peers".to_owned(), peers.to_owned()]);
    }
    args.extend(
        [
            "--listen",
            &addr.to_string(),
            "--data-dir",
            &data_dir.to_string_lossy(),
            "--metrics-listen",
            "none",
            "--config",
            &config.to_string_lossy(),
        ]
        .map(str::to_owned),
    );
    args
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        raft: RaftTimingArgs,
    }

    #[test]
    fn only_the_raft_timings_given_reach_the_config_and_the_others_show_their_defaults() {
        let defaults = Cli::parse_from(["bench"]).raft;
        assert_eq!(defaults.config(), "[raft]\n");
        let broker = weir_server::RaftTimings::default();
        assert_eq!(
            defaults.to_string(),
            format!(
                "heartbeat {} ms, elections {}–{} ms",
                broker.heartbeat_ms, broker.election_min_ms, broker.election_max_ms
            )
        );
        let some =
            Cli::parse_from(["bench", "--heartbeat-ms", "100", "--election-max-ms", "900"]).raft;
        assert_eq!(
            some.config(),
            "[raft]\nheartbeat_ms = 100\nelection_max_ms = 900\n"
        );
        assert!(some.to_string().starts_with("heartbeat 100 ms, elections "));
        assert!(some.to_string().ends_with("–900 ms"));
    }

    #[test]
    fn a_node_of_a_cluster_names_its_peers_and_a_cluster_of_one_is_a_plain_broker() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 7001));
        let (data, config) = (Path::new("d/node-2"), Path::new("d/weir.toml"));
        let member = node_args(2, addr, Some("1=a:1,2=a:2"), data, config);
        assert_eq!(
            member,
            [
                "broker",
                "--node-id",
                "2",
                "--peers",
                "1=a:1,2=a:2",
                "--listen",
                "127.0.0.1:7001",
                "--data-dir",
                "d/node-2",
                "--metrics-listen",
                "none",
                "--config",
                "d/weir.toml"
            ]
        );
        let alone = node_args(1, addr, None, data, config);
        assert_eq!(alone[..3], ["broker", "--listen", "127.0.0.1:7001"]);
        assert!(!alone.iter().any(|a| a == "--peers" || a == "--node-id"));
    }
}
