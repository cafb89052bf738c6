//! Where the examples find a broker: the one `WEIR_BROKER=HOST:PORT` names, or else a
//! single-node broker of their own in a temporary directory.

// Each example uses its part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;

/// A broker the example started itself, and its data directory (removed when dropped).
pub struct Embedded {
    pub broker: weir_server::Broker,
    pub dir: tempfile::TempDir,
}

impl Embedded {
    /// Stops the broker cleanly; the data directory goes with `self`.
    pub async fn shutdown(self) {
        self.broker.shutdown().await;
    }
}

/// The address of the broker to use, and the embedded broker when the example started one
/// (keep it until the end of the example).
pub async fn from_env() -> anyhow::Result<(String, Option<Embedded>)> {
    if let Ok(address) = std::env::var("WEIR_BROKER") {
        return Ok((address, None));
    }
    let dir = tempfile::tempdir()?;
    let broker = start(dir.path(), "127.0.0.1:0".parse()?).await?;
    Ok((
        broker.local_addr().to_string(),
        Some(Embedded { broker, dir }),
    ))
}

/// Starts a single-node broker with the default configuration on `data_dir`, listening on
/// `listen`, without a metrics endpoint.
pub async fn start(data_dir: &Path, listen: SocketAddr) -> anyhow::Result<weir_server::Broker> {
    let config = weir_server::BrokerConfig {
        listen,
        metrics_listen: None,
        data_dir: data_dir.to_path_buf(),
        ..Default::default()
    };
    Ok(weir_server::Broker::start(config).await?)
}
