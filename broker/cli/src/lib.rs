//! `weir`, the Weir command line: topic and module administration, a console producer and
//! consumer, and a benchmark, following the conventions of kcat, rpk and the Kafka console tools
//! (DESIGN §7).
//!
//! Every command talks to the broker given by `--broker HOST:PORT` (env `WEIR_BROKER`, default
//! `127.0.0.1:7070`; a comma-separated list outlives any one of them), over TLS when `--tls-ca FILE` is given, as the user `--user NAME` (env
//! `WEIR_USER`; the password from `WEIR_PASSWORD` or a prompt) when given (docs/security.md). Results go to
//! stdout; diagnostics go to stderr; a failure prints one line `error: ...` with the broker's
//! reason and exits with status 1.

mod acl;
mod bench;
mod broker;
mod cluster;
mod consume;
mod format;
mod group;
mod key_value;
mod log_limit;
mod module;
mod module_new;
pub mod module_test;
mod password;
mod pipeline;
mod produce;
mod retry;
mod table;
mod topic;
mod user;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use clap::{Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};
use weir_client::{Client, ClientTls};

/// The Weir command line.
#[derive(Debug, Parser)]
#[command(
    name = "weir",
    version,
    about = "Weir streaming platform: admin, produce, consume, bench"
)]
struct Cli {
    /// Broker to talk to, as HOST:PORT or http://HOST:PORT, or a comma-separated list of them
    /// (the first that answers is used, the next after it fails).
    #[arg(
        long,
        global = true,
        env = "WEIR_BROKER",
        default_value = "127.0.0.1:7070",
        value_name = "HOST:PORT"
    )]
    broker: String,

    /// CA certificate (PEM) to verify brokers against; turns TLS on for every connection. For
    /// `weir broker`, the CA its peers' (and clients') certificates must chain to.
    #[arg(long, global = true, env = "WEIR_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) to present to brokers that ask for one (mutual TLS); needs
    /// --tls-ca and --tls-client-key.
    #[arg(
        long,
        global = true,
        env = "WEIR_TLS_CLIENT_CERT",
        value_name = "FILE",
        requires_all = ["tls_ca", "tls_client_key"]
    )]
    tls_client_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-client-cert.
    #[arg(
        long,
        global = true,
        env = "WEIR_TLS_CLIENT_KEY",
        value_name = "FILE",
        requires = "tls_client_cert"
    )]
    tls_client_key: Option<PathBuf>,

    /// Authenticate as this user; the password comes from WEIR_PASSWORD or a prompt on the
    /// terminal, never from a flag. Use with --tls-ca: over plaintext it travels in clear.
    #[arg(long, global = true, env = "WEIR_USER", value_name = "NAME")]
    user: Option<String>,

    #[command(subcommand)]
    command: Command,
}

/// How client commands reach the cluster: the broker given by `--broker` and the TLS files.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    /// `--broker`.
    pub(crate) broker: String,
    /// `--tls-ca`: TLS to every broker, trusting this CA.
    tls_ca: Option<PathBuf>,
    /// `--tls-client-cert` and `--tls-client-key`.
    identity: Option<(PathBuf, PathBuf)>,
    /// `--user`.
    user: Option<String>,
}

impl Connection {
    /// The TLS settings from the files named by the flags (`None`: plaintext); an unreadable
    /// file is an error naming its flag and path.
    fn tls(&self) -> anyhow::Result<Option<ClientTls>> {
        let read = |path: &PathBuf, flag: &str| {
            std::fs::read(path).with_context(|| format!("cannot read {flag} {}", path.display()))
        };
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let mut tls = ClientTls::new().ca(read(ca, "--tls-ca")?);
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(
                read(cert, "--tls-client-cert")?,
                read(key, "--tls-client-key")?,
            );
        }
        Ok(Some(tls))
    }

    /// Connects to the broker named by `--broker`.
    pub(crate) async fn connect(&self) -> anyhow::Result<Client> {
        let mut builder = Client::builder(self.broker.as_str()).tls(self.tls()?);
        if let Some(user) = &self.user {
            builder = builder.credentials(user, password::for_login(user)?);
        }
        Ok(builder.connect().await?)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker node in the foreground until SIGINT or SIGTERM.
    Broker(broker::BrokerArgs),
    /// Create, list, describe and delete topics.
    Topic {
        #[command(subcommand)]
        command: topic::TopicCommand,
    },
    /// Write stdin to a topic, one record per line.
    Produce(produce::ProduceArgs),
    /// Print the records of a topic (every partition, or one), one per line.
    Consume(consume::ConsumeArgs),
    /// List, describe, reset and delete consumer groups.
    Group {
        #[command(subcommand)]
        command: group::GroupCommand,
    },
    /// Register WebAssembly modules and attach them to topics' produce and consume chains.
    Module {
        #[command(subcommand)]
        command: module::ModuleCommand,
    },
    /// Show the cluster.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Create, list and delete users, and change their passwords.
    User {
        #[command(subcommand)]
        command: user::UserCommand,
    },
    /// Create, list and delete ACL bindings.
    Acl {
        #[command(subcommand)]
        command: acl::AclCommand,
    },
    /// Measure produce and consume throughput and latency against the disk's limits, and, on
    /// clusters of their own, writes resuming after leader kills and the idle cost of many
    /// partitions.
    Bench {
        /// Measure a broker started inside this process, with its data in a temporary
        /// directory under the current one, instead of the one at --broker.
        #[arg(long, global = true)]
        embedded: bool,
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

impl Command {
    /// The log filter when `RUST_LOG` is unset: client commands stay quiet unless something is
    /// wrong, so their stdout and stderr are theirs alone.
    fn default_log_filter(&self) -> &'static str {
        match self {
            // openraft narrates every group start at info; its warnings still show.
            Self::Broker(_) => "info,openraft=warn",
            Self::Topic { .. }
            | Self::Produce(_)
            | Self::Consume(_)
            | Self::Module { .. }
            | Self::Group { .. }
            | Self::Cluster { .. }
            | Self::User { .. }
            | Self::Acl { .. }
            | Self::Bench { .. } => "warn",
        }
    }

    async fn run(self, broker: &Connection) -> anyhow::Result<()> {
        match self {
            Self::Broker(args) => broker::run(args, broker.tls_ca.clone()).await,
            Self::Topic { command } => command.run(&broker.connect().await?).await,
            Self::Produce(args) => produce::run(&broker.connect().await?, args).await,
            Self::Consume(args) => consume::run(&broker.connect().await?, args).await,
            Self::Module { command } => command.run(broker).await,
            Self::Group { command } => command.run(&broker.connect().await?).await,
            Self::Cluster { command } => command.run(&broker.connect().await?).await,
            Self::User { command } => command.run(&broker.connect().await?).await,
            Self::Acl { command } => command.run(&broker.connect().await?).await,
            Self::Bench { embedded, command } => command.run(broker, embedded).await,
        }
    }
}

/// Runs the `weir` command line with the process's arguments and returns its exit status.
///
/// The `weir` binary is this function; the integration tests build it into a binary of their
/// own to drive it as a real process.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(cli.command.default_log_filter()));
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(log_limit::with_levels(filter));
    tracing_subscriber::registry().with(output).init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let connection = Connection {
        broker: cli.broker,
        tls_ca: cli.tls_ca,
        identity: cli.tls_client_cert.zip(cli.tls_client_key),
        user: cli.user,
    };
    let plaintext = connection.tls_ca.is_none();
    let result = runtime.block_on(cli.command.run(&connection));
    // Exit without waiting for a blocked read of stdin or write to stdout that may never finish.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let line = one_line(&err);
            eprintln!("error: {line}{}", tls_hint(&line, plaintext));
            ExitCode::FAILURE
        }
    }
}

/// A hint for an error that a plaintext client gets from a TLS listener: the listener's TLS
/// alert, read as HTTP/2, is a frame of an invalid size.
fn tls_hint(line: &str, plaintext: bool) -> &'static str {
    if plaintext && line.contains("frame with invalid size") {
        " (the broker may require TLS: pass --tls-ca FILE)"
    } else {
        ""
    }
}

/// The error and its causes joined into one line, like anyhow's `{:#}`, but naming each cause
/// once (tonic's transport errors nest causes whose messages repeat).
fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn error_line_joins_causes_without_repeats() {
        let err = anyhow::Error::new(std::io::Error::other("refused"))
            .context("tcp connect error")
            .context("transport error")
            .context("tcp connect error")
            .context("cannot connect");
        assert_eq!(
            one_line(&err),
            "cannot connect: tcp connect error: transport error: refused"
        );
    }

    #[test]
    fn broker_flag_is_global_and_defaults_to_the_local_broker() {
        let cli = Cli::try_parse_from(["weir", "topic", "list"]).expect("valid command line");
        assert!(
            cli.broker == "127.0.0.1:7070" || std::env::var_os("WEIR_BROKER").is_some(),
            "{}",
            cli.broker
        );
        let cli = Cli::try_parse_from(["weir", "topic", "list", "--broker", "b:1"])
            .expect("--broker after the subcommand");
        assert_eq!(cli.broker, "b:1");
    }
}
