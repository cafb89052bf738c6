//! Test harness for Weir's integration tests: real brokers, in-process or as child processes,
//! on loopback ports with data in temporary directories.
//!
//! - [`InProcessBroker`]: a single node inside the test process.
//! - [`BrokerProcess`]: a single `weir broker` child process, for SIGKILL and restart tests.
//! - [`RawProducer`]: produce requests sent as encoded bytes, malformed or oversized.
//! - [`nemesis`]: faults injected into a [`ProcessCluster`] under a workload, and a checker.
//! - [`ProcessCluster`]: N `weir broker` processes forming a replicated cluster, every peer link
//!   through a [`LinkProxy`] the test can cut, with kill / restart / pause / isolate and
//!   helpers to find leaders ([`ProcessCluster::leader_of`]), follow `NOT_LEADER` hints
//!   ([`LeaderRoute`]) and read whole partitions ([`fetch_all`]).
//!
//! Tests synchronise by polling with a deadline ([`eventually`]), never by sleeping.

mod cluster;
pub mod disk;
pub mod modules;
pub mod nemesis;
mod proxy;
mod raw_grpc;
pub mod test_broker;
pub mod tls;
pub mod tmpfs;

pub use cluster::{
    Launch, LeaderRoute, NodeDidNotStart, NodeId, ProcessCluster, RaftTimings, fetch_all,
    free_port, lazy_channel, lazy_channel_with, run_to_exit,
};
pub use proxy::LinkProxy;
pub use raw_grpc::{RawGrpc, RawProducer, UNARY_RPCS};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use weir_proto::v1::broker_client::BrokerClient;
use weir_server::{Broker, BrokerConfig};

/// Raw gRPC client type used by tests that check wire-level behaviour.
pub type RawClient = BrokerClient<Channel>;

/// A broker running inside the test process, with its own data directory.
pub struct InProcessBroker {
    broker: Option<Broker>,
    /// Where the broker keeps its databases.
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl InProcessBroker {
    /// Starts a broker on `127.0.0.1:0` with a fresh temporary data directory.
    pub async fn start() -> anyhow::Result<Self> {
        let temp = tempfile::tempdir()?;
        let data_dir = temp.path().join("data");
        let mut broker = Self::start_in(&data_dir).await?;
        broker._temp = Some(temp);
        Ok(broker)
    }

    /// Starts a broker on `127.0.0.1:0` over an existing data directory.
    pub async fn start_in(data_dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(test_config(data_dir)).await
    }

    /// Starts a broker with `config` (whose data directory the caller owns).
    pub async fn start_with(config: BrokerConfig) -> anyhow::Result<Self> {
        let data_dir = config.data_dir.clone();
        let broker = Broker::start(config).await?;
        Ok(Self {
            broker: Some(broker),
            data_dir,
            _temp: None,
        })
    }

    /// Starts a broker with a fresh temporary data directory and the test configuration as
    /// changed by `adjust`.
    pub async fn start_adjusted(adjust: impl FnOnce(&mut BrokerConfig)) -> anyhow::Result<Self> {
        let temp = tempfile::tempdir()?;
        let mut config = test_config(&temp.path().join("data"));
        adjust(&mut config);
        let mut broker = Self::start_with(config).await?;
        broker._temp = Some(temp);
        Ok(broker)
    }

    /// The broker's address.
    pub fn addr(&self) -> SocketAddr {
        self.broker
            .as_ref()
            .map(Broker::local_addr)
            .expect("broker is running")
    }

    /// The metrics endpoint's address.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.broker.as_ref().and_then(Broker::metrics_addr)
    }

    /// `http://` URL of the broker.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// A raw gRPC client connected to the broker.
    pub async fn raw_client(&self) -> anyhow::Result<RawClient> {
        Ok(BrokerClient::connect(self.url())
            .await?
            .max_decoding_message_size(64 * 1024 * 1024))
    }

    /// Waits until one of the broker's databases failed to commit; says which and why.
    pub async fn storage_failed(&self) -> String {
        match &self.broker {
            Some(broker) => broker.storage_failed().await,
            None => std::future::pending().await,
        }
    }

    /// Shuts the broker down gracefully and keeps the data directory for a restart.
    pub async fn stop(mut self) -> (PathBuf, Option<tempfile::TempDir>) {
        if let Some(broker) = self.broker.take() {
            broker.shutdown().await;
        }
        (self.data_dir.clone(), self._temp.take())
    }
}

/// The configuration tests use: loopback, ephemeral port, short raft timings.
pub fn test_config(data_dir: &Path) -> BrokerConfig {
    let mut config = BrokerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        data_dir: data_dir.to_path_buf(),
        ..BrokerConfig::default()
    };
    config.raft.heartbeat_ms = 100;
    config.raft.election_min_ms = 400;
    config.raft.election_max_ms = 800;
    // Hostile-module tests hit this limit; keep them short.
    config.modules.call_timeout_ms = 500;
    config
}

/// Polls `check` until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates topic `name` through the broker behind `client`: `partitions` partitions of
/// `replication_factor` replicas (0: the broker's default), with topic `configs` (Kafka's names).
pub async fn create_topic(
    client: &RawClient,
    name: &str,
    partitions: u32,
    replication_factor: u32,
    configs: &[(&str, &str)],
) -> anyhow::Result<()> {
    client
        .clone()
        .create_topic(weir_proto::v1::CreateTopicRequest {
            name: name.into(),
            partitions,
            replication_factor,
            configs: configs
                .iter()
                .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        })
        .await?;
    Ok(())
}

/// The text a broker's metrics endpoint at `addr` serves (`GET /metrics`, the whole response).
pub async fn scrape_metrics(addr: SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// The value of the unlabelled gauge or counter `name` that the metrics endpoint at `addr`
/// serves now.
pub async fn scraped_gauge(addr: SocketAddr, name: &str) -> anyhow::Result<u64> {
    let metrics = scrape_metrics(addr).await?;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {name} in\n{metrics}"))
}

/// Installs a tracing subscriber for test output, once (RUST_LOG controls it).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A `weir broker` child process.
pub struct BrokerProcess {
    child: std::process::Child,
    addr: SocketAddr,
    /// The broker's data directory.
    pub data_dir: PathBuf,
    /// Where its log (standard error) goes, when not to the test's.
    log: Option<PathBuf>,
}

impl BrokerProcess {
    /// Starts `weir broker` (the binary at `weir`) on `127.0.0.1:0` over `data_dir` and waits
    /// until it reports its address.
    pub fn start(weir: &Path, data_dir: &Path) -> anyhow::Result<Self> {
        Self::spawn(weir, data_dir, "", None)
    }

    /// As [`BrokerProcess::start`], with `config` (TOML sections) added to the configuration,
    /// and the broker's log kept in a file of its own, appended to across restarts
    /// ([`BrokerProcess::log`]).
    pub fn start_logged(weir: &Path, data_dir: &Path, config: &str) -> anyhow::Result<Self> {
        Self::spawn(weir, data_dir, config, Some(data_dir.with_extension("log")))
    }

    /// What the broker has logged so far; an error unless it was started with
    /// [`BrokerProcess::start_logged`] (its log went to the test's standard error).
    pub fn log(&self) -> anyhow::Result<String> {
        let path = self.log.as_ref().ok_or_else(|| {
            anyhow::anyhow!("the broker's log is not kept: start it with start_logged")
        })?;
        Ok(std::fs::read_to_string(path)?)
    }

    fn spawn(
        weir: &Path,
        data_dir: &Path,
        config: &str,
        log: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        use std::io::BufRead;
        let config_path = data_dir.with_extension("toml");
        std::fs::write(
            &config_path,
            format!(
                "[raft]\nheartbeat_ms = 100\nelection_min_ms = 400\nelection_max_ms = 800\n{config}"
            ),
        )?;
        let stderr = match &log {
            Some(path) => std::process::Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            None => std::process::Stdio::inherit(),
        };
        let mut child = std::process::Command::new(weir)
            .args([
                "broker",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "none",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let addr = match line.trim().strip_prefix("weir broker listening on ") {
            Some(addr) => addr.parse()?,
            None => {
                let _ = child.kill();
                anyhow::bail!("broker did not start; it printed {line:?}");
            }
        };
        Ok(Self {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
            log,
        })
    }

    /// `http://` URL of the broker.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL: no shutdown code runs.
    pub fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Sends SIGTERM and waits for a graceful exit; returns whether it exited successfully.
    pub fn terminate(mut self) -> anyhow::Result<bool> {
        self.signal("TERM")?;
        Ok(self.child.wait()?.success())
    }

    /// Freezes the process with SIGSTOP: its connections stay open, it answers nothing.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("STOP")
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("CONT")
    }

    fn signal(&self, name: &str) -> anyhow::Result<()> {
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -{name} {} failed", self.child.id());
        Ok(())
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies directory `from` with its subdirectories to `to` (created if missing): a stopped
/// broker's data directory, or one copied while it was paused (what a crash then leaves).
pub fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
