//! `weir bench produce | consume`: Weir's own benchmark (DESIGN §8). It prints records/s, MB/s
//! and latency percentiles, and, for produce, a physical-limit probe of the disk in the same run
//! so that durable throughput reads as a fraction of what the disk can do. Variants of one
//! benchmark (how records are sent, what a fetch asks for) can run in turn in one process, so
//! they compare as ratios within one run ([`compare`]). `weir bench failover | idle` start a
//! cluster of `weir broker` processes of their own ([`cluster`]) to measure what a cluster does
//! when a leader dies (issue #15's P7) and what it costs when nothing happens (P8).
//!
//! Each benchmark against a broker is a function of a [`Client`] and its options that prints its
//! reports; how the client is obtained is decided in one place, [`BenchCommand::run`].

mod cluster;
mod compare;
mod consume;
mod consumer;
mod cpu;
mod failover;
mod fetch;
mod idle;
mod pace;
mod probe;
mod produce;
mod producer;
mod requests;
mod stats;
mod topic;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use weir_client::Client;

/// A benchmark.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce fixed-size records (closed-loop, or open-loop at --rate) and probe the disk;
    /// compare ways of sending (--encoding, --producer) in one run.
    Produce(produce::ProduceBenchArgs),
    /// Read a topic from the beginning with large fetches; compare answer formats (--format).
    Consume(consume::ConsumeBenchArgs),
    /// Start a cluster of this executable's brokers, write steadily, SIGKILL the partition
    /// leader again and again, and report how long writes take to resume (--broker and
    /// --embedded do not apply: the benchmark runs its own nodes).
    Failover(failover::FailoverBenchArgs),
    /// Start a cluster of this executable's brokers with a topic of many partitions, report
    /// each node's CPU while nothing happens, then restart every node (SIGTERM) and report how
    /// long until all listen and every partition has a leader (--broker and --embedded do not
    /// apply: the benchmark runs its own nodes).
    Idle(idle::IdleBenchArgs),
}

impl BenchCommand {
    /// Runs the benchmark and prints its report to stdout: against the broker at `broker`, or,
    /// with `embedded`, against a broker started in this process on a temporary directory under
    /// the current one (so the disk probe and the broker share a file system). `failover` and
    /// `idle` run their own cluster.
    pub async fn run(self, broker: &crate::Connection, embedded: bool) -> anyhow::Result<()> {
        match self {
            Self::Produce(args) => {
                let target = Target::open(broker, embedded).await?;
                let produced = produce::run(&target.client, &args).await?;
                if let Some(consume_args) = args.consume_after(produced.last_topic) {
                    let probe = produced.probe_mb_per_sec;
                    consume::run(&target.client, &target.address, consume_args, probe).await?;
                }
                target.close().await;
            }
            Self::Consume(args) => {
                let target = Target::open(broker, embedded).await?;
                consume::run(&target.client, &target.address, args, None).await?;
                target.close().await;
            }
            Self::Failover(args) => failover::run(args).await?,
            Self::Idle(args) => idle::run(args).await?,
        }
        Ok(())
    }
}

/// The broker a benchmark runs against, and a client of it.
struct Target {
    client: Client,
    address: String,
    embedded: Option<Embedded>,
}

impl Target {
    async fn open(broker: &crate::Connection, embedded: bool) -> anyhow::Result<Self> {
        let embedded = match embedded {
            true => Some(Embedded::start().await?),
            false => None,
        };
        let address = embedded.as_ref().map_or_else(
            || broker.broker.clone(),
            |e| e.broker.local_addr().to_string(),
        );
        let client: Client = match embedded {
            // The embedded broker is plaintext on loopback.
            Some(_) => Client::connect(address.as_str()).await?,
            None => broker.connect().await?,
        };
        Ok(Self {
            client,
            address,
            embedded,
        })
    }

    async fn close(self) {
        if let Some(embedded) = self.embedded {
            embedded.broker.shutdown().await;
        }
    }
}

/// A broker running inside the benchmark process.
struct Embedded {
    broker: weir_server::Broker,
    _dir: tempfile::TempDir,
}

impl Embedded {
    async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("weir-bench-")
            .tempdir_in(".")?;
        let config = weir_server::BrokerConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: None,
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let broker = weir_server::Broker::start(config).await?;
        Ok(Self { broker, _dir: dir })
    }
}

/// A progress bar over `total` units on stderr; indicatif draws nothing when stderr is not a
/// terminal, so redirected runs stay clean.
fn progress_bar(total: u64, unit: &str) -> ProgressBar {
    let template = format!("{{bar:40}} {{human_pos}}/{{human_len}} {unit} {{per_sec}} eta {{eta}}");
    let style =
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(total).with_style(style)
}
