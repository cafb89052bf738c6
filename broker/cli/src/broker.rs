//! `weir broker`: run a broker node in the foreground until SIGINT or SIGTERM.
//!
//! Settings come from the defaults, then the config file (`--config`), then the flags, each
//! overriding the one before. Once the broker serves requests it prints one line to stdout,
//! `weir broker listening on ADDR`, so scripts and tests can find a port chosen with `:0`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use weir_server::{BootstrapUser, Broker, BrokerConfig, ClientAuth, Peer};

/// The environment variable naming a user to create at start-up if missing, as
/// `NAME:PASSWORD` (Redpanda's `RP_BOOTSTRAP_USER`): the first administrator.
const BOOTSTRAP_USER_ENV: &str = "WEIR_BOOTSTRAP_USER";

/// Flags of `weir broker`.
#[derive(Debug, clap::Args)]
pub struct BrokerArgs {
    /// Directory for the node's data [default: ./weir-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to serve gRPC on [default: 127.0.0.1:7070]; port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Address of the Prometheus metrics endpoint [default: 127.0.0.1:7071], or `none`.
    #[arg(long, value_name = "ADDR|none")]
    metrics_listen: Option<MetricsListen>,
    /// This node's id [default: 1].
    #[arg(long, value_name = "N")]
    node_id: Option<u64>,
    /// Every node of the cluster, this one included: `1=HOST:PORT,2=HOST:PORT,3=HOST:PORT`.
    /// Give every node the same list. Without it the node is a cluster of one.
    #[arg(long, value_name = "ID=ADDR,...", value_delimiter = ',')]
    peers: Vec<Peer>,
    /// Join a running cluster instead of forming one: wait until a member adds this node
    /// (`weir cluster add-node ID ADDR`).
    #[arg(long)]
    join: bool,
    /// This node's certificate chain (PEM), shown to clients and peers; turns TLS on, with
    /// --tls-key. With --tls-ca (a global flag), the CA that peers' certificates, and clients'
    /// when asked for, must chain to. See docs/security.md.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Whether clients must present a certificate from --tls-ca: none, optional (one presented
    /// must chain to the CA) or required [default: optional with --tls-ca, else none].
    #[arg(long, value_name = "none|optional|required")]
    tls_client_auth: Option<ClientAuth>,
    /// Enforce ACLs: once on, a request is served only when ACL bindings allow everything it
    /// needs (super users and nodes excepted). See docs/security.md.
    #[arg(long)]
    authorization: bool,
    /// A principal allowed everything, as User:NAME; repeat or separate with commas.
    #[arg(long = "super-user", value_name = "User:NAME", value_delimiter = ',')]
    super_users: Vec<String>,
    /// A file holding the secret nodes show each other on every peer request (for clusters
    /// whose nodes do not verify each other's certificates).
    #[arg(long, value_name = "FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// TOML config file; flags override what it sets.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// `--metrics-listen`: an address, or `none` to disable the endpoint.
#[derive(Debug, Clone, Copy)]
struct MetricsListen(Option<SocketAddr>);

impl std::str::FromStr for MetricsListen {
    type Err = std::net::AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("none") {
            Ok(Self(None))
        } else {
            s.parse().map(|addr| Self(Some(addr)))
        }
    }
}

impl BrokerArgs {
    fn config(self, tls_ca: Option<PathBuf>) -> anyhow::Result<BrokerConfig> {
        let mut config = match &self.config {
            Some(path) => BrokerConfig::from_file(path)?,
            None => BrokerConfig::default(),
        };
        if let Some(dir) = self.data_dir {
            config.data_dir = dir;
        }
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(MetricsListen(metrics)) = self.metrics_listen {
            config.metrics_listen = metrics;
        }
        if let Some(id) = self.node_id {
            config.node_id = id;
        }
        if !self.peers.is_empty() {
            config.peers = self.peers;
        }
        if self.join {
            config.join = true;
        }
        if let Some(cert) = self.tls_cert {
            config.tls.cert = Some(cert);
        }
        if let Some(key) = self.tls_key {
            config.tls.key = Some(key);
        }
        if let Some(ca) = tls_ca {
            config.tls.ca = Some(ca);
        }
        if let Some(auth) = self.tls_client_auth {
            config.tls.client_auth = Some(auth);
        }
        if self.authorization {
            config.security.authorization = true;
        }
        if !self.super_users.is_empty() {
            config.security.super_users = self.super_users;
        }
        if let Some(secret) = self.cluster_secret_file {
            config.security.cluster_secret_file = Some(secret);
        }
        // Only from the environment: a password has no place in a flag or a file.
        if let Ok(user) = std::env::var(BOOTSTRAP_USER_ENV) {
            config.security.bootstrap_user = Some(
                user.parse::<BootstrapUser>()
                    .map_err(|e| anyhow::anyhow!("{BOOTSTRAP_USER_ENV}: {e}"))?,
            );
        }
        config.validate()?;
        Ok(config)
    }
}

/// Runs the broker until SIGINT or SIGTERM, then shuts it down gracefully; or until one of its
/// log databases fails, then stops it and returns the error (the process exits with status 1).
pub async fn run(args: BrokerArgs, tls_ca: Option<PathBuf>) -> anyhow::Result<()> {
    let config = args.config(tls_ca)?;
    let data_dir = config.data_dir.clone();
    let broker = Broker::start(config)
        .await
        .with_context(|| format!("cannot start the broker on {}", data_dir.display()))?;
    println!("weir broker listening on {}", broker.local_addr());
    if let Some(metrics) = broker.metrics_addr() {
        tracing::info!(%metrics, "metrics at http://{metrics}/metrics");
    }
    tokio::select! {
        signal = wait_for_signal() => {
            signal?;
            broker.shutdown().await;
            Ok(())
        }
        reason = broker.storage_failed() => {
            tracing::error!(%reason, "stopping: a log database failed, so nothing more can be acknowledged; restart the broker to recover from what is durable");
            // Shutting down only closes connections and stops the groups (the database refuses
            // writes); bounded, so a stuck disk cannot keep a failed broker up.
            let _ = tokio::time::timeout(STOP_AFTER_FAILURE, broker.shutdown()).await;
            anyhow::bail!("a log database failed: {reason}")
        }
    }
}

/// How long a broker whose storage failed may take to shut down before it exits anyway.
const STOP_AFTER_FAILURE: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(unix)]
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for SIGINT")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: BrokerArgs,
    }

    #[test]
    fn flags_override_the_file_and_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weir.toml");
        std::fs::write(&file, "node_id = 4\ndata_dir = \"from-file\"\n").unwrap();
        let args = Wrapper::parse_from([
            "weir",
            "--config",
            file.to_str().unwrap(),
            "--data-dir",
            "from-flag",
            "--metrics-listen",
            "none",
        ])
        .args;
        let config = args.config(None).unwrap();
        assert_eq!(config.node_id, 4);
        assert!(config.peers.is_empty());
        assert_eq!(config.data_dir, PathBuf::from("from-flag"));
        assert_eq!(config.metrics_listen, None);
        assert_eq!(config.listen.to_string(), "127.0.0.1:7070");
    }

    #[test]
    fn peers_come_from_one_comma_separated_flag_and_bad_ones_are_refused() {
        let args = Wrapper::parse_from([
            "weir",
            "--node-id",
            "2",
            "--peers",
            "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003",
        ])
        .args;
        let config = args.config(None).unwrap();
        assert_eq!(config.peers.len(), 3);
        assert_eq!(config.peers[1].address, "127.0.0.1:7002");
        let bad = Wrapper::try_parse_from(["weir", "--peers", "1=127.0.0.1:7001,two=x:1"]);
        assert!(bad.unwrap_err().to_string().contains("two"));
        let missing_self =
            Wrapper::parse_from(["weir", "--node-id", "9", "--peers", "1=a:1,2=b:2"]).args;
        assert!(
            format!("{:#}", missing_self.config(None).unwrap_err()).contains("not among the peers")
        );
    }

    #[test]
    fn a_bad_config_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weir.toml");
        std::fs::write(&file, "listen = \"not an address\"\n").unwrap();
        let args = Wrapper::parse_from(["weir", "--config", file.to_str().unwrap()]).args;
        let err = format!("{:#}", args.config(None).unwrap_err());
        assert!(err.contains("weir.toml"), "{err}");
        assert!(err.contains("listen"), "{err}");
    }

    #[test]
    fn tls_flags_fill_the_tls_section_and_incomplete_ones_are_refused() {
        const REQUIRED: [&str; 7] = [
            "weir",
            "--tls-cert",
            "node.pem",
            "--tls-key",
            "node-key.pem",
            "--tls-client-auth",
            "required",
        ];
        let args = Wrapper::parse_from(REQUIRED).args;
        let config = args.config(Some(PathBuf::from("ca.pem"))).unwrap();
        assert_eq!(config.tls.cert, Some(PathBuf::from("node.pem")));
        assert_eq!(config.tls.key, Some(PathBuf::from("node-key.pem")));
        assert_eq!(config.tls.ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(config.tls.client_auth, Some(ClientAuth::Required));
        let without_key = Wrapper::try_parse_from(["weir", "--tls-cert", "node.pem"]);
        assert!(without_key.unwrap_err().to_string().contains("--tls-key"));
        let bad_auth = Wrapper::try_parse_from(["weir", "--tls-client-auth", "always"]);
        assert!(
            bad_auth
                .unwrap_err()
                .to_string()
                .contains("none, optional or required")
        );
        let required_without_ca = Wrapper::parse_from(REQUIRED).args;
        let err = format!("{:#}", required_without_ca.config(None).unwrap_err());
        assert!(err.contains("needs tls.ca"), "{err}");
    }
}
