//! [`ProcessCluster`]: N `weir broker` processes on loopback forming one cluster, with every
//! node-to-node link going through a [`LinkProxy`] the test controls, plus helpers to find
//! leaders, follow `NOT_LEADER` hints and read whole partitions.
//!
//! Nodes are named by their node id, `1..=N`, the ids `DescribeTopic` reports as leaders and
//! replicas, so a test can pass a leader it read straight to [`ProcessCluster::kill`].
//!
//! Clients (the test) talk to each node's real address; only peer traffic is proxied, so an
//! isolated node still answers the test, as a partitioned leader would answer the clients on
//! its side of the partition.
//!
//! The children inherit `RUST_LOG` from `WEIR_CHILD_LOG` (default `warn`); each line they print
//! on stderr is re-printed prefixed with `[node N]`, so it is captured with the test's output
//! and shown when the test fails (or live with `--nocapture`).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use weir_proto::v1 as pb;
use weir_proto::v1::broker_client::BrokerClient;

use crate::RawClient;
use crate::disk::DiskMode;
use crate::proxy::LinkProxy;
use crate::test_broker::BuiltInFault;

/// A node's id, as in `--node-id` and in `DescribeTopic`.
pub type NodeId = u64;

/// How long a node may take to print its listening line: it does so only once the controller
/// has a leader, i.e. once a quorum of nodes runs.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one status request to a node may take before the node counts as unresponsive.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// Raft timings for test clusters: fast elections, so failover tests stay short.
const RAFT_TIMINGS: RaftTimings = RaftTimings {
    heartbeat_ms: 100,
    election_min_ms: 400,
    election_max_ms: 800,
};

/// The `[raft]` timings a node of a [`ProcessCluster`] runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTimings {
    /// `raft.heartbeat_ms`.
    pub heartbeat_ms: u64,
    /// `raft.election_min_ms`.
    pub election_min_ms: u64,
    /// `raft.election_max_ms`.
    pub election_max_ms: u64,
}

impl RaftTimings {
    fn toml(self) -> String {
        format!(
            "[raft]\nheartbeat_ms = {}\nelection_min_ms = {}\nelection_max_ms = {}\n",
            self.heartbeat_ms, self.election_min_ms, self.election_max_ms
        )
    }
}

/// One node of a [`ProcessCluster`].
struct NodeSlot {
    id: NodeId,
    /// The node's real listen address, fixed for its lifetime so restarts keep it.
    addr: SocketAddr,
    /// Where the node serves its metrics (`GET /metrics`), fixed likewise.
    metrics_addr: SocketAddr,
    data_dir: PathBuf,
    config: PathBuf,
    /// What the config file holds after the raft timings.
    extra_config: String,
    /// Where the node stands in the cluster's membership.
    membership: Membership,
    /// Started with `--join`: a node added after the cluster formed.
    joins: bool,
    process: Option<Child>,
    paused: bool,
    /// A lazily connecting channel to `addr`; it reconnects by itself after a restart.
    channel: Mutex<Option<Channel>>,
}

/// Where a node of a [`ProcessCluster`] stands in the cluster's membership, as the test has
/// made it: what [`ProcessCluster::node_ids`] lists and `--peers` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Membership {
    /// Added by [`ProcessCluster::add_joiner`], not yet [admitted](ProcessCluster::admit).
    Joining,
    /// A member: one of the cluster's nodes.
    Member,
    /// [Retired](ProcessCluster::retire): removed from the cluster, its process stopped.
    Retired,
}

/// A node's process exited before it reported that it serves requests (for example because it
/// refused its data or its configuration).
#[derive(Debug)]
pub struct NodeDidNotStart {
    /// The node.
    pub id: NodeId,
    /// What it printed instead of reporting where it listens.
    pub printed: String,
    /// How it exited.
    pub status: String,
}

impl std::fmt::Display for NodeDidNotStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node {} did not start: it printed {:?} and exited {}",
            self.id, self.printed, self.status
        )
    }
}

impl std::error::Error for NodeDidNotStart {}

/// A node process started by [`ProcessCluster::launch`] that has not reported ready yet.
#[must_use = "pass it to ProcessCluster::await_started"]
pub struct Launch {
    id: NodeId,
    listening: tokio::sync::oneshot::Receiver<Result<SocketAddr, String>>,
}

impl Launch {
    /// The launched node.
    pub fn node(&self) -> NodeId {
        self.id
    }
}

/// A cluster of `weir broker` child processes on 127.0.0.1 with data in a temporary
/// directory, every peer link proxied.
///
/// Node `i` is started as `weir broker --node-id i --listen ADDR_i --peers ...` where its own
/// entry is `ADDR_i` and the entry for each other node `j` is the address of `proxy(i→j)`. The
/// test can then [`kill`](Self::kill) / [`restart`](Self::restart) nodes (same data, ports and
/// peers), [`pause`](Self::pause) / [`resume`](Self::resume) them (SIGSTOP / SIGCONT), and
/// [`isolate`](Self::isolate) or [`cut`](Self::cut) links. Dropping the cluster kills every
/// process and removes the data.
///
/// Membership changes: [`add_joiner`](Self::add_joiner) sets up a new node (the next unused
/// id, its links proxied like the others) that starts with `--join`; once the cluster has added
/// it, [`admit`](Self::admit) makes it a member, which every node's `--peers` names from its
/// next start on. [`retire`](Self::retire) stops a node the cluster removed. Ids are never
/// reused.
pub struct ProcessCluster {
    weir: PathBuf,
    nodes: Vec<NodeSlot>,
    /// What every node's config file holds after the raft timings.
    extra_config: String,
    /// `(from, to)` → the proxy `from` reaches `to` through.
    links: BTreeMap<(NodeId, NodeId), LinkProxy>,
    /// The proxies run on their own runtime, so they keep forwarding whatever the test's
    /// runtime is busy with (or blocked on).
    proxy_runtime: Option<tokio::runtime::Runtime>,
    /// The simulated disk the nodes' databases live on, if any (`crate::disk`).
    disk: Option<DiskMode>,
    /// The faults the nodes build in (`crate::test_broker`).
    built_in_faults: Vec<BuiltInFault>,
    /// How the test's clients reach the nodes when they serve TLS.
    client_tls: Option<ClientTlsConfig>,
    /// Environment variables every node's process gets.
    env: Vec<(String, String)>,
    temp: tempfile::TempDir,
}

impl ProcessCluster {
    /// Starts `nodes` brokers (ids `1..=nodes`) from the `weir` binary and waits until each
    /// one serves requests.
    pub async fn start(weir: &Path, nodes: usize) -> anyhow::Result<ProcessCluster> {
        let mut cluster = Self::new(weir, nodes).await?;
        cluster.start_nodes(&cluster.node_ids()).await?;
        Ok(cluster)
    }

    /// Sets up a cluster of `nodes` brokers (ids `1..=nodes`): ports, proxies, data and config
    /// paths, but starts no process. Start them with [`ProcessCluster::start_nodes`] or
    /// [`ProcessCluster::launch`], for example after cutting links, to test how a cluster forms.
    pub async fn new(weir: &Path, nodes: usize) -> anyhow::Result<ProcessCluster> {
        Self::new_with_config(weir, nodes, "").await
    }

    /// [`ProcessCluster::new`], with `extra_config` appended to every node's TOML config file
    /// after the test raft timings (for example `"[limits]\nproduce_timeout_ms = 2000\n"`).
    pub async fn new_with_config(
        weir: &Path,
        nodes: usize,
        extra_config: &str,
    ) -> anyhow::Result<ProcessCluster> {
        anyhow::ensure!(nodes >= 1, "a cluster needs at least one node");
        let temp = tempfile::tempdir()?;
        let proxy_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("link-proxy")
            .enable_all()
            .build()?;
        let ids: Vec<NodeId> = (1..=nodes as NodeId).collect();
        let mut addrs = BTreeMap::new();
        for &id in &ids {
            addrs.insert(id, free_port()?);
        }
        let mut links = BTreeMap::new();
        for &from in &ids {
            for &to in ids.iter().filter(|&&to| to != from) {
                let proxy = proxy_runtime.spawn(LinkProxy::start(addrs[&to])).await??;
                links.insert((from, to), proxy);
            }
        }
        let mut slots = Vec::with_capacity(nodes);
        for &id in &ids {
            slots.push(NodeSlot::new(
                temp.path(),
                id,
                addrs[&id],
                extra_config,
                Membership::Member,
            )?);
        }
        Ok(ProcessCluster {
            weir: weir.to_path_buf(),
            nodes: slots,
            extra_config: extra_config.to_owned(),
            links,
            proxy_runtime: Some(proxy_runtime),
            disk: None,
            built_in_faults: Vec::new(),
            client_tls: None,
            env: Vec::new(),
            temp,
        })
    }

    /// Gives every node process started from now on the environment variable `key` (which
    /// may be `RUST_LOG`).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Everything node `id` has written to stderr so far, over all its runs.
    pub fn log(&self, id: NodeId) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    fn log_path(&self, id: NodeId) -> PathBuf {
        self.temp.path().join(format!("node-{id}.log"))
    }

    /// Starts the processes of `ids` (none may be running) and waits until each one serves
    /// requests. All are started before any is waited for: a node reports ready only once a
    /// quorum of the cluster runs.
    pub async fn start_nodes(&mut self, ids: &[NodeId]) -> anyhow::Result<()> {
        let mut launches = Vec::with_capacity(ids.len());
        for &id in ids {
            launches.push(self.launch(id)?);
        }
        for launch in launches {
            self.await_started(launch).await?;
        }
        Ok(())
    }

    /// Starts node `id`'s process without waiting for it; pass the result to
    /// [`ProcessCluster::await_started`].
    pub fn launch(&mut self, id: NodeId) -> anyhow::Result<Launch> {
        anyhow::ensure!(!self.is_running(id), "node {id} is already running");
        let listening = self.spawn(id)?;
        Ok(Launch { id, listening })
    }

    /// Waits until a launched node reports that it serves requests (for up to 60 s). Fails if
    /// it exits first, with what it printed; its stderr is in the test output.
    pub async fn await_started(&mut self, launch: Launch) -> anyhow::Result<()> {
        self.await_listening(launch.id, launch.listening).await
    }

    /// [`ProcessCluster::await_started`] for at most `within`: gives the launch back when the
    /// node has not reported by then (it may wait for a link a fault cut).
    pub async fn await_started_within(
        &mut self,
        mut launch: Launch,
        within: Duration,
    ) -> anyhow::Result<Option<Launch>> {
        match tokio::time::timeout(within, &mut launch.listening).await {
            Err(_) => Ok(Some(launch)),
            Ok(reported) => {
                let reported =
                    reported.with_context(|| format!("node {}'s output ended", launch.id))?;
                self.listening_reported(launch.id, reported)?;
                Ok(None)
            }
        }
    }

    /// The members' ids: `1..=N` at first, then as [`ProcessCluster::admit`] and
    /// [`ProcessCluster::retire`] change them.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.ids_where(|m| m == Membership::Member)
    }

    /// The ids of every node that is a member or joining: the nodes link faults apply to.
    pub fn linked_ids(&self) -> Vec<NodeId> {
        self.ids_where(|m| m != Membership::Retired)
    }

    fn ids_where(&self, keep: impl Fn(Membership) -> bool) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| keep(n.membership))
            .map(|n| n.id)
            .collect()
    }

    /// Node `id`'s real address (what it listens on and advertises to clients).
    pub fn addr(&self, id: NodeId) -> SocketAddr {
        self.slot(id).addr
    }

    /// Every member's id and real address, for clients that pick nodes themselves.
    pub fn addrs(&self) -> Vec<(NodeId, SocketAddr)> {
        self.node_ids()
            .into_iter()
            .map(|id| (id, self.addr(id)))
            .collect()
    }

    /// Sets up a node to join the cluster, with the next unused id: its port, data and config,
    /// and proxied links to and from every member. It starts (with [`ProcessCluster::launch`])
    /// as `weir broker --join` with every member and itself as `--peers`, and reports ready once
    /// the cluster has added it (`AddNode`); then [`ProcessCluster::admit`] it.
    pub async fn add_joiner(&mut self) -> anyhow::Result<NodeId> {
        let id = self.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        let addr = free_port()?;
        let runtime = self
            .proxy_runtime
            .as_ref()
            .context("the proxy runtime is gone")?;
        for member in self.node_ids() {
            let to_member = runtime.spawn(LinkProxy::start(self.addr(member))).await??;
            self.links.insert((id, member), to_member);
            let to_joiner = runtime.spawn(LinkProxy::start(addr)).await??;
            self.links.insert((member, id), to_joiner);
        }
        let mut slot = NodeSlot::new(
            self.temp.path(),
            id,
            addr,
            &self.extra_config,
            Membership::Joining,
        )?;
        slot.joins = true;
        self.nodes.push(slot);
        Ok(id)
    }

    /// Makes joining node `id` a member, once the cluster has added it: it is among
    /// [`ProcessCluster::node_ids`], and every node's `--peers` names it from its next start.
    pub fn admit(&mut self, id: NodeId) {
        self.slot_mut(id).membership = Membership::Member;
    }

    /// Stops node `id` (SIGKILL) for good, once the cluster has removed it: it leaves
    /// [`ProcessCluster::node_ids`] and every node's `--peers`. Its id is never used again.
    pub fn retire(&mut self, id: NodeId) -> anyhow::Result<()> {
        if self.is_running(id) {
            self.kill(id)?;
        }
        self.slot_mut(id).membership = Membership::Retired;
        Ok(())
    }

    /// `--peers` for node `id`: every member and `id` itself, itself at its real address and
    /// every other node at the proxy of the link to it.
    fn peers_of(&self, id: NodeId) -> String {
        let mut ids = self.node_ids();
        if !ids.contains(&id) {
            ids.push(id);
            ids.sort_unstable();
        }
        ids.iter()
            .map(|&j| {
                let addr = if j == id {
                    self.addr(id)
                } else {
                    self.link(id, j).addr()
                };
                format!("{j}={addr}")
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Where node `id` serves its metrics (read them with `crate::scrape_metrics`).
    pub fn metrics_addr(&self, id: NodeId) -> SocketAddr {
        self.slot(id).metrics_addr
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: NodeId) -> &Path {
        &self.slot(id).data_dir
    }

    /// The arguments of `weir` that node `id` runs with: `broker --node-id ... --listen ...
    /// --peers ... --data-dir ... --config ...` (and `--join` for a node added later). A test
    /// can change them to start the node by hand (see [`run_to_exit`]) with a bad
    /// configuration.
    pub fn broker_args(&self, id: NodeId) -> Vec<String> {
        let slot = self.slot(id);
        let mut args: Vec<String> = [
            "broker",
            "--metrics-listen",
            &slot.metrics_addr.to_string(),
            "--node-id",
            &id.to_string(),
            "--listen",
            &slot.addr.to_string(),
            "--peers",
            &self.peers_of(id),
            "--data-dir",
            &slot.data_dir.to_string_lossy(),
            "--config",
            &slot.config.to_string_lossy(),
        ]
        .map(str::to_owned)
        .to_vec();
        if slot.joins {
            args.push("--join".to_owned());
        }
        args
    }

    /// Makes [`ProcessCluster::client`] (and every helper built on it) speak TLS with `tls`,
    /// for nodes started with a `[tls]` section (see `crate::tls::TestPki`). Call it before the
    /// first client is made: channels already made keep their transport.
    pub fn use_client_tls(&mut self, tls: ClientTlsConfig) {
        self.client_tls = Some(tls);
    }

    /// Replaces what node `id`'s config file holds after the raft timings (the cluster's
    /// `extra_config`) from its next start on: for example another `[tls]` section.
    pub fn set_extra_config(&mut self, id: NodeId, extra_config: &str) -> anyhow::Result<()> {
        let slot = self.slot_mut(id);
        slot.extra_config = extra_config.to_owned();
        std::fs::write(
            &slot.config,
            format!("{}{}", RAFT_TIMINGS.toml(), slot.extra_config),
        )
        .with_context(|| format!("writing node {id}'s config"))
    }

    /// Gives node `id` other raft timings from its next start on (the others keep the fast
    /// test timings), for example so that only one node times out and elects itself.
    pub fn set_raft_timings(&mut self, id: NodeId, timings: RaftTimings) -> anyhow::Result<()> {
        let slot = self.slot(id);
        std::fs::write(
            &slot.config,
            format!("{}{}", timings.toml(), slot.extra_config),
        )
        .with_context(|| format!("writing node {id}'s config"))
    }

    /// Puts the databases of every node started from now on on a simulated disk of `mode`
    /// (`crate::disk`), so that [`ProcessCluster::lose_power`] and
    /// [`ProcessCluster::set_fsync_failing`] work. The binary must be a test broker that reads
    /// [`crate::disk::ENV`] (`weir-e2e`, `nemesis`).
    pub fn simulate_disks(&mut self, mode: DiskMode) {
        self.disk = Some(mode);
    }

    /// Makes every node started from now on build in `fault`. The binary must be a test
    /// broker (`weir-e2e`, `nemesis`).
    pub fn build_in(&mut self, fault: BuiltInFault) {
        if !self.built_in_faults.contains(&fault) {
            self.built_in_faults.push(fault);
        }
    }

    /// Nodes started (or restarted) from now on run without `fault`.
    pub fn take_out(&mut self, fault: BuiltInFault) {
        self.built_in_faults.retain(|f| *f != fault);
    }

    /// Cuts the power of nodes `ids` at once: SIGKILL, and each loses a random part of what it
    /// wrote but did not sync (chosen from `seed`) when it starts again. Needs simulated disks.
    pub fn lose_power(&mut self, ids: &[NodeId], seed: u64) -> anyhow::Result<()> {
        anyhow::ensure!(self.disk.is_some(), "a power loss needs simulated disks");
        for &id in ids {
            if self.is_running(id) {
                self.kill(id)?;
            }
        }
        for (i, &id) in ids.iter().enumerate() {
            let seed = seed.wrapping_add(1000 * i as u64);
            crate::disk::mark_power_loss_in(self.data_dir(id), seed)
                .with_context(|| format!("marking node {id}'s power loss"))?;
        }
        Ok(())
    }

    /// Makes every fsync of node `id`'s databases fail (`true`), or work again (`false`).
    /// Needs simulated disks.
    pub fn set_fsync_failing(&self, id: NodeId, failing: bool) -> anyhow::Result<()> {
        anyhow::ensure!(self.disk.is_some(), "a failing fsync needs simulated disks");
        crate::disk::set_fsync_failing(self.data_dir(id), failing)
            .with_context(|| format!("setting node {id}'s fsync to fail: {failing}"))
    }

    /// The stack of every thread of node `id`'s process, as gdb prints them, to show where a
    /// node that answers nothing is stuck; `None` if it does not run or gdb is not installed
    /// (or takes more than a minute).
    pub async fn thread_stacks(&self, id: NodeId) -> Option<String> {
        let pid = self.slot(id).process.as_ref()?.id();
        let gdb = tokio::process::Command::new("gdb")
            .args([
                "-p",
                &pid.to_string(),
                "-batch",
                "-ex",
                "thread apply all bt 25",
            ])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(60), gdb)
            .await
            .ok()?
            .ok()?;
        Some(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Whether node `id`'s process runs (it may be paused).
    pub fn is_running(&self, id: NodeId) -> bool {
        self.slot(id).process.is_some()
    }

    /// Whether node `id` runs, is not paused and has at least one link to another node open:
    /// the nodes [`ProcessCluster::leader_of`] consults.
    pub fn is_reachable(&self, id: NodeId) -> bool {
        let slot = self.slot(id);
        let linked = self.node_ids().len() == 1
            || self
                .links
                .iter()
                .any(|(&(from, to), link)| (from == id || to == id) && !link.is_cut());
        slot.process.is_some() && !slot.paused && linked
    }

    /// A raw gRPC client to node `id`'s real address. The connection is made lazily and
    /// re-made after a restart, so a client may outlive a kill of its node. Call it inside a
    /// tokio runtime (the channel's worker task is spawned on it).
    pub fn client(&self, id: NodeId) -> anyhow::Result<RawClient> {
        let slot = self.slot(id);
        let mut channel = slot.channel.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match &*channel {
            Some(c) => c.clone(),
            None => channel
                .insert(lazy_channel_with(slot.addr, self.client_tls.as_ref())?)
                .clone(),
        };
        Ok(BrokerClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
    }

    /// Kills node `id` with SIGKILL (no shutdown code runs) and waits for it to be gone.
    pub fn kill(&mut self, id: NodeId) -> anyhow::Result<()> {
        let slot = self.slot_mut(id);
        let mut child = slot
            .process
            .take()
            .with_context(|| format!("node {id} is not running"))?;
        child.kill()?;
        child.wait()?;
        slot.paused = false;
        Ok(())
    }

    /// Waits (up to 30 s) for node `id`'s process to end by itself; returns its exit status.
    /// The node then counts as stopped: [`ProcessCluster::restart`] starts it again.
    pub async fn wait_for_exit(&mut self, id: NodeId) -> anyhow::Result<std::process::ExitStatus> {
        let what = format!("node {id} to exit");
        let status = {
            let slot = self.slot_mut(id);
            let child = slot
                .process
                .as_mut()
                .with_context(|| format!("node {id} is not running"))?;
            crate::eventually(Duration::from_secs(30), &what, || {
                let exited = child.try_wait();
                async move { exited.ok().flatten() }
            })
            .await?
        };
        let slot = self.slot_mut(id);
        slot.process = None;
        slot.paused = false;
        Ok(status)
    }

    /// Stops node `id` gracefully with SIGTERM; returns whether it exited successfully.
    pub fn terminate(&mut self, id: NodeId) -> anyhow::Result<bool> {
        self.resume(id)?;
        let slot = self.slot_mut(id);
        let mut child = slot
            .process
            .take()
            .with_context(|| format!("node {id} is not running"))?;
        signal(&child, "TERM")?;
        Ok(child.wait()?.success())
    }

    /// Starts node `id` again over the same data directory, port and peers, and waits until it
    /// serves requests (which needs a quorum of the cluster to be up).
    pub async fn restart(&mut self, id: NodeId) -> anyhow::Result<()> {
        anyhow::ensure!(!self.is_running(id), "node {id} is still running");
        self.start_nodes(&[id]).await
    }

    /// Freezes node `id` with SIGSTOP: it keeps its connections but answers nothing.
    pub fn pause(&mut self, id: NodeId) -> anyhow::Result<()> {
        let slot = self.slot_mut(id);
        let child = slot
            .process
            .as_ref()
            .with_context(|| format!("node {id} is not running"))?;
        signal(child, "STOP")?;
        slot.paused = true;
        Ok(())
    }

    /// Lets a paused node `id` run again (SIGCONT); a no-op on a node that is not paused.
    pub fn resume(&mut self, id: NodeId) -> anyhow::Result<()> {
        let slot = self.slot_mut(id);
        if let (Some(child), true) = (&slot.process, slot.paused) {
            signal(child, "CONT")?;
        }
        slot.paused = false;
        Ok(())
    }

    /// The proxy that node `from` reaches node `to` through.
    pub fn link(&self, from: NodeId, to: NodeId) -> &LinkProxy {
        self.links
            .get(&(from, to))
            .unwrap_or_else(|| panic!("no link from node {from} to node {to}"))
    }

    /// Cuts the link from `from` to `to` only: `from`'s messages no longer reach `to`, but
    /// `to` still reaches `from` over its own link.
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.link(from, to).cut();
    }

    /// Heals the link from `from` to `to`.
    pub fn heal(&self, from: NodeId, to: NodeId) {
        self.link(from, to).heal();
    }

    /// Cuts every link to and from node `id`: it is alone in its own partition (clients still
    /// reach it).
    pub fn isolate(&self, id: NodeId) {
        for (&(from, to), link) in &self.links {
            if from == id || to == id {
                link.cut();
            }
        }
    }

    /// Heals every link.
    pub fn heal_all(&self) {
        for link in self.links.values() {
            link.heal();
        }
    }

    /// Creates `topic` through node 1: `partitions` partitions of `replication_factor`
    /// replicas, with topic `configs` (Kafka's names).
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
        replication_factor: u32,
        configs: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        crate::create_topic(
            &self.client(1)?,
            topic,
            partitions,
            replication_factor,
            configs,
        )
        .await
    }

    /// Describes `topic` as node `id` sees it; `None` if the node does not answer in time.
    pub async fn describe(&self, id: NodeId, topic: &str) -> Option<pb::TopicDescription> {
        let mut client = self.client(id).ok()?;
        let request = pb::DescribeTopicRequest { name: topic.into() };
        tokio::time::timeout(STATUS_TIMEOUT, client.describe_topic(request))
            .await
            .ok()?
            .ok()?
            .into_inner()
            .topic
    }

    /// Node `id`'s view of one partition: its leader, replicas and high watermark.
    pub async fn partition_on(
        &self,
        id: NodeId,
        topic: &str,
        partition: u32,
    ) -> Option<pb::PartitionDescription> {
        self.describe(id, topic)
            .await?
            .partitions
            .into_iter()
            .find(|p| p.partition == partition)
    }

    /// The leader of `topic`/`partition` once every reachable replica agrees on it (see
    /// [`ProcessCluster::is_reachable`]), the leader being one of them. Polls for up to 30 s.
    pub async fn leader_of(&self, topic: &str, partition: u32) -> anyhow::Result<NodeId> {
        let asked: Vec<NodeId> = self
            .node_ids()
            .into_iter()
            .filter(|&id| self.is_reachable(id))
            .collect();
        self.leader_among(&asked, topic, partition).await
    }

    /// The leader of `topic`/`partition` once the replicas among `nodes` agree on one of them.
    /// Polls for up to 30 s.
    pub async fn leader_among(
        &self,
        nodes: &[NodeId],
        topic: &str,
        partition: u32,
    ) -> anyhow::Result<NodeId> {
        let what = format!("nodes {nodes:?} to agree on a leader of {topic}/{partition}");
        crate::eventually(Duration::from_secs(30), &what, || async {
            let mut views = Vec::new();
            for &id in nodes {
                let view = self.partition_on(id, topic, partition).await?;
                if view.replicas.contains(&id) {
                    views.push(view.leader);
                }
            }
            let leader = (*views.first()?)?;
            let agreed = views.iter().all(|&l| l == Some(leader));
            (agreed && nodes.contains(&leader)).then_some(leader)
        })
        .await
    }

    /// Waits until node `id` has committed (and so serves) `topic`/`partition` up to at least
    /// `high_watermark`; returns its high watermark then.
    pub async fn wait_for_high_watermark(
        &self,
        id: NodeId,
        topic: &str,
        partition: u32,
        high_watermark: u64,
    ) -> anyhow::Result<u64> {
        let what =
            format!("node {id} to reach high watermark {high_watermark} on {topic}/{partition}");
        crate::eventually(Duration::from_secs(30), &what, || async {
            let view = self.partition_on(id, topic, partition).await?;
            (view.high_watermark >= high_watermark).then_some(view.high_watermark)
        })
        .await
    }

    /// Produces `records` to `topic`/`partition` (acks=all) through whichever of `nodes` leads,
    /// following `NOT_LEADER` hints, until acknowledged; returns the acknowledging node and the
    /// base offset. Retries only answers that say nothing was written (`NOT_LEADER`,
    /// `UNAVAILABLE`, a node that cannot be reached); any other error, such as
    /// `OUTCOME_UNKNOWN`, fails, so the records are stored at most once. Each attempt may take
    /// 5 s, all of them 30 s.
    pub async fn produce_acked(
        &self,
        nodes: &[NodeId],
        topic: &str,
        partition: u32,
        records: Vec<pb::Record>,
    ) -> anyhow::Result<(NodeId, u64)> {
        const ATTEMPT: Duration = Duration::from_secs(5);
        const ALL_ATTEMPTS: Duration = Duration::from_secs(30);
        let mut route = LeaderRoute::new(nodes.iter().map(|&id| (id, self.addr(id))).collect());
        let deadline = tokio::time::Instant::now() + ALL_ATTEMPTS;
        loop {
            let (node, _) = route.target();
            let request = pb::ProduceRequest {
                topic: topic.into(),
                partition: Some(partition),
                records: records.clone(),
                acks: pb::Acks::All as i32,
                ..Default::default()
            };
            let mut client = self.client(node)?;
            let status = match tokio::time::timeout(ATTEMPT, client.produce(request)).await {
                Ok(Ok(response)) => {
                    let base = response.into_inner().base_offset;
                    return Ok((node, base.context("acks=all returns a base offset")?));
                }
                Ok(Err(status)) => status,
                Err(_) => anyhow::bail!("produce to node {node} got no answer in {ATTEMPT:?}"),
            };
            let reason = weir_proto::error::reason_of(&status);
            let retriable = matches!(reason.as_deref(), Some("NOT_LEADER" | "UNAVAILABLE"))
                || (reason.is_none() && status.code() == tonic::Code::Unavailable);
            anyhow::ensure!(retriable, "produce to node {node} failed: {status:?}");
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no node accepted the write within {ALL_ATTEMPTS:?}; last error from node {node}: {status:?}"
            );
            route.failed(&status);
            // Back off a little, so an election in progress is not flooded with requests.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every committed record of `topic`/`partition` that node `id` serves, from its log start.
    pub async fn read_partition(
        &self,
        id: NodeId,
        topic: &str,
        partition: u32,
    ) -> anyhow::Result<Vec<pb::ConsumedRecord>> {
        let mut client = self.client(id)?;
        fetch_all(&mut client, topic, partition)
            .await
            .with_context(|| format!("reading {topic}/{partition} from node {id}"))
    }

    fn slot(&self, id: NodeId) -> &NodeSlot {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    fn slot_mut(&mut self, id: NodeId) -> &mut NodeSlot {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    /// Spawns node `id`'s process; the receiver yields its listening line (or what it printed
    /// instead before exiting).
    fn spawn(
        &mut self,
        id: NodeId,
    ) -> anyhow::Result<tokio::sync::oneshot::Receiver<Result<SocketAddr, String>>> {
        let weir = self.weir.clone();
        let args = self.broker_args(id);
        let log = std::env::var("WEIR_CHILD_LOG").unwrap_or_else(|_| "warn".to_owned());
        let disk = self.disk;
        let built_in_faults = self.built_in_faults.clone();
        let env = self.env.clone();
        let log_path = self.log_path(id);
        let slot = self.slot_mut(id);
        let mut command = Command::new(&weir);
        if let Some(mode) = disk {
            command.env(crate::disk::ENV, mode.as_env());
        }
        for fault in built_in_faults {
            command.env(fault.env(), "1");
        }
        let mut child = command
            .args(&args)
            .env("RUST_LOG", log)
            // The test's own variables last: they may set RUST_LOG.
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", weir.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[node {id}] {line}");
                let _ = writeln!(log, "{line}");
            }
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok).unwrap_or_default();
            let parsed = first
                .trim()
                .strip_prefix("weir broker listening on ")
                .and_then(|a| a.parse().ok())
                .ok_or(first);
            let _ = tx.send(parsed);
            // Keep draining, so the node never blocks on a full pipe.
            for _ in lines {}
        });
        slot.process = Some(child);
        slot.paused = false;
        Ok(rx)
    }

    async fn await_listening(
        &mut self,
        id: NodeId,
        listening: tokio::sync::oneshot::Receiver<Result<SocketAddr, String>>,
    ) -> anyhow::Result<()> {
        let line = tokio::time::timeout(START_TIMEOUT, listening)
            .await
            .with_context(|| {
                format!("node {id} did not report listening within {START_TIMEOUT:?}")
            })?
            .with_context(|| format!("node {id}'s output ended"))?;
        self.listening_reported(id, line)
    }

    /// Checks what node `id` reported instead of or as its listening address.
    fn listening_reported(
        &mut self,
        id: NodeId,
        line: Result<SocketAddr, String>,
    ) -> anyhow::Result<()> {
        let expected = self.addr(id);
        match line {
            Ok(addr) if addr == expected => Ok(()),
            Ok(addr) => anyhow::bail!("node {id} listens on {addr}, expected {expected}"),
            Err(printed) => {
                let status = self.slot_mut(id).process.take().map(|mut c| {
                    let _ = c.kill();
                    c.wait()
                });
                Err(NodeDidNotStart {
                    id,
                    printed,
                    status: format!("{status:?}"),
                }
                .into())
            }
        }
    }
}

impl NodeSlot {
    /// Node `id`'s slot, its data and config under `dir`; its config file is written.
    fn new(
        dir: &Path,
        id: NodeId,
        addr: SocketAddr,
        extra_config: &str,
        membership: Membership,
    ) -> anyhow::Result<NodeSlot> {
        let config = dir.join(format!("node-{id}.toml"));
        std::fs::write(&config, format!("{}{extra_config}", RAFT_TIMINGS.toml()))?;
        Ok(NodeSlot {
            id,
            addr,
            metrics_addr: free_port()?,
            data_dir: dir.join(format!("node-{id}")),
            config,
            extra_config: extra_config.to_owned(),
            membership,
            joins: false,
            process: None,
            paused: false,
            channel: Mutex::new(None),
        })
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for slot in &mut self.nodes {
            if let Some(mut child) = slot.process.take() {
                // SIGKILL ends stopped processes too.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.links.clear();
        if let Some(runtime) = self.proxy_runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Reads every committed record of `topic`/`partition` that the node behind `client` serves,
/// from its log start up to the high watermark it reports, checking that offsets are dense.
pub async fn fetch_all(
    client: &mut RawClient,
    topic: &str,
    partition: u32,
) -> anyhow::Result<Vec<pb::ConsumedRecord>> {
    let start = client
        .list_offsets(pb::ListOffsetsRequest {
            topic: topic.into(),
            partition,
            spec: Some(pb::list_offsets_request::Spec::Earliest(true)),
        })
        .await?
        .into_inner()
        .offset
        .context("ListOffsets earliest answers an offset")?;
    let mut records: Vec<pb::ConsumedRecord> = Vec::new();
    loop {
        let offset = start + records.len() as u64;
        let fetched = client
            .fetch(pb::FetchRequest {
                modules: Vec::new(),
                topic: topic.into(),
                partition,
                offset: offset as i64,
                ..Default::default()
            })
            .await?
            .into_inner();
        for (i, record) in fetched.records.iter().enumerate() {
            anyhow::ensure!(
                record.offset == offset + i as u64,
                "offsets are not dense: expected {}, got {}",
                offset + i as u64,
                record.offset
            );
        }
        let got = fetched.records.len();
        records.extend(fetched.records);
        if start + records.len() as u64 >= fetched.high_watermark {
            return Ok(records);
        }
        anyhow::ensure!(
            got > 0,
            "fetch at {offset} returned nothing below the high watermark {}",
            fetched.high_watermark
        );
    }
}

/// Where to send a partition's writes next, learned from the errors the previous attempts got:
/// a `NOT_LEADER` with a leader address moves to that node, any other failure to the next
/// node in turn.
#[derive(Debug, Clone)]
pub struct LeaderRoute {
    nodes: Vec<(NodeId, SocketAddr)>,
    current: usize,
}

impl LeaderRoute {
    /// Starts at the first of `nodes`.
    pub fn new(nodes: Vec<(NodeId, SocketAddr)>) -> Self {
        assert!(!nodes.is_empty(), "a route needs at least one node");
        Self { nodes, current: 0 }
    }

    /// The node to send to now.
    pub fn target(&self) -> (NodeId, SocketAddr) {
        self.nodes[self.current]
    }

    /// Sends the next attempts to node `id`, if it is one of the route's nodes.
    pub fn go_to(&mut self, id: NodeId) {
        if let Some(index) = self.nodes.iter().position(|(n, _)| *n == id) {
            self.current = index;
        }
    }

    /// Learns from a failed attempt: follows a leader hint to a known node other than the
    /// current one, else moves on to the next node.
    pub fn failed(&mut self, status: &tonic::Status) {
        let hinted = weir_proto::error::metadata_of(status, "leader_address")
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .and_then(|a| self.nodes.iter().position(|(_, addr)| *addr == a))
            .filter(|&index| index != self.current);
        self.current = hinted.unwrap_or((self.current + 1) % self.nodes.len());
    }
}

/// A channel to `addr` that connects on first use and reconnects after failures.
pub fn lazy_channel(addr: SocketAddr) -> anyhow::Result<Channel> {
    lazy_channel_with(addr, None)
}

/// [`lazy_channel`], over TLS with `tls` (the node's certificate checked for `addr`'s IP).
pub fn lazy_channel_with(
    addr: SocketAddr,
    tls: Option<&ClientTlsConfig>,
) -> anyhow::Result<Channel> {
    let mut endpoint = match tls {
        None => Endpoint::from_shared(format!("http://{addr}"))?,
        Some(tls) => Endpoint::from_shared(format!("https://{addr}"))?
            .tls_config(tls.clone().domain_name(addr.ip().to_string()))?,
    };
    endpoint = endpoint
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

/// A port on 127.0.0.1 for a node to listen on, free when chosen and never handed out twice by
/// this process.
///
/// Nodes need their port before they start (it is in every `--peers` list) and keep it across
/// restarts, so it must stay free while its node is down. Ports from `bind(:0)` do not: the
/// kernel hands them out again, to the next `bind(:0)` (a proxy, another test's node) or as
/// the local port of an outgoing connection. Ports below the kernel's ephemeral range are
/// handed out by neither, so they are taken from there, starting at a point that depends on
/// the process id so that concurrent test processes rarely meet.
pub fn free_port() -> std::io::Result<SocketAddr> {
    static NEXT: Mutex<Option<u16>> = Mutex::new(None);
    const LOWEST: u16 = 10_000;
    let ephemeral = ephemeral_range_start();
    let span = ephemeral.saturating_sub(LOWEST).max(1);
    let mut next = NEXT.lock().unwrap_or_else(|p| p.into_inner());
    let mut port = next.unwrap_or(LOWEST + (std::process::id() % u32::from(span)) as u16);
    for _ in 0..span {
        let candidate = port;
        port = if port + 1 >= ephemeral {
            LOWEST
        } else {
            port + 1
        };
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", candidate)) {
            *next = Some(port);
            return listener.local_addr();
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free port below the ephemeral range",
    ))
}

/// The first port of the kernel's ephemeral range (Linux: `ip_local_port_range`); 32768 where
/// it cannot be read.
fn ephemeral_range_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

fn signal(child: &Child, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()?;
    anyhow::ensure!(status.success(), "kill -{name} {} failed", child.id());
    Ok(())
}

/// Runs `weir` with `args` until it exits, for at most `timeout` (then kills it); returns its
/// exit status, stdout and stderr.
pub async fn run_to_exit<S: AsRef<std::ffi::OsStr>>(
    weir: &Path,
    args: impl IntoIterator<Item = S>,
    timeout: Duration,
) -> anyhow::Result<std::process::Output> {
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let child = tokio::process::Command::new(weir)
        .args(&args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let started = Instant::now();
    tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .with_context(|| format!("weir {args:?} still ran after {:?}", started.elapsed()))?
        .map_err(Into::into)
}
