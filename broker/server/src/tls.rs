//! TLS for the client listener and between nodes (docs/security.md): the `[tls]` settings, and
//! the node's identity and trusted CA read from PEM files and checked before anything starts.
//!
//! One port serves clients and peers, so the listener has one client-authentication mode for
//! both. Between nodes, verification is always mutual when the node has TLS: a node dialling a
//! peer verifies the peer's certificate against `tls.ca` (the server name is the host of the
//! peer's `HOST:PORT`, so an IP address must be among the certificate's IP SANs and a name among
//! its DNS SANs) and presents its own certificate, which the peer's listener verifies against
//! its `tls.ca` unless `client_auth` is `none`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// How long a connection may take to complete its TLS handshake before it is dropped, so that
/// connections that never finish one do not pile up.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The `[tls]` section: the node's identity and the CA it trusts, as PEM files.
///
/// Without `cert` and `key` the node speaks plaintext to clients and peers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// The node's certificate chain (PEM, leaf first): shown to clients and to peers.
    pub cert: Option<PathBuf>,
    /// The private key of `cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// The CA certificates (PEM) this node trusts for its peers' certificates, and for clients'
    /// certificates when `client_auth` asks for them. Required in a cluster.
    pub ca: Option<PathBuf>,
    /// Whether the listener asks clients for a certificate. Unset: `optional` with a `ca`
    /// (peers always present theirs, and any certificate presented must chain to `ca`), `none`
    /// without.
    pub client_auth: Option<ClientAuth>,
}

/// Whether the listener asks connecting clients (and peers) for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No certificate is asked for.
    None,
    /// A certificate is asked for; a connection without one is served, one with a certificate
    /// that does not chain to `tls.ca` is refused.
    Optional,
    /// A certificate chaining to `tls.ca` is required (mutual TLS).
    Required,
}

impl FromStr for ClientAuth {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Self::None),
            "optional" => Ok(Self::Optional),
            "required" => Ok(Self::Required),
            _ => Err(format!(
                "invalid client auth {s:?}: expected none, optional or required"
            )),
        }
    }
}

impl fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Optional => "optional",
            Self::Required => "required",
        })
    }
}

impl TlsSettings {
    /// Whether TLS is on.
    pub fn enabled(&self) -> bool {
        self.cert.is_some() || self.key.is_some()
    }

    /// The client authentication the listener applies.
    pub fn effective_client_auth(&self) -> ClientAuth {
        self.client_auth.unwrap_or(if self.ca.is_some() {
            ClientAuth::Optional
        } else {
            ClientAuth::None
        })
    }

    /// Checks that the keys given make sense together (no file is read); `clustered` is whether
    /// the node has peers.
    pub(crate) fn validate(&self, clustered: bool) -> Result<(), String> {
        match (&self.cert, &self.key) {
            (Some(_), Some(_)) => {}
            (Some(_), None) => return Err("tls.cert is set but tls.key is not".into()),
            (None, Some(_)) => return Err("tls.key is set but tls.cert is not".into()),
            (None, None) => {
                if self.ca.is_some() || self.client_auth.is_some() {
                    return Err(
                        "tls.ca and tls.client_auth need tls.cert and tls.key (the node's own certificate)"
                            .into(),
                    );
                }
                return Ok(());
            }
        }
        if self.ca.is_none() {
            if self
                .client_auth
                .is_some_and(|auth| auth != ClientAuth::None)
            {
                return Err(format!(
                    "tls.client_auth = {} needs tls.ca, the CA client certificates must chain to",
                    self.effective_client_auth()
                ));
            }
            if clustered {
                return Err(
                    "tls.ca is required in a cluster (peers or join): nodes verify each other's certificates against it"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// Reads and checks the files: `None` when TLS is off.
    pub(crate) fn load(&self) -> Result<Option<TlsMaterial>, TlsError> {
        let (Some(cert_path), Some(key_path)) = (&self.cert, &self.key) else {
            return Ok(None);
        };
        // tonic builds rustls configs from the process's default provider when there is one;
        // make it ring, whatever else the binary links. An error means one is installed already.
        let _ = ring_provider().install_default();
        let cert_pem = read(cert_path)?;
        let chain = certificates(cert_path, &cert_pem)?;
        let key_pem = read(key_path)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NoKey {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        rustls::sign::CertifiedKey::from_der(chain, key, &ring_provider()).map_err(|source| {
            TlsError::KeyMismatch {
                cert: cert_path.clone(),
                key: key_path.clone(),
                source,
            }
        })?;
        let ca_pem = match &self.ca {
            Some(path) => {
                let pem = read(path)?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in certificates(path, &pem)? {
                    roots.add(cert).map_err(|source| TlsError::BadCa {
                        path: path.clone(),
                        source,
                    })?;
                }
                Some(pem)
            }
            None => None,
        };
        Ok(Some(TlsMaterial {
            identity: Identity::from_pem(cert_pem, key_pem),
            ca: ca_pem.map(Certificate::from_pem),
            client_auth: self.effective_client_auth(),
        }))
    }
}

/// rustls' ring provider. rustls 0.23.48 deprecates it for lacking post-quantum key exchange
/// (aws-lc-rs has it); Weir stays on ring, which needs no C toolchain beyond cc (DESIGN §12).
#[allow(deprecated)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The certificates of a PEM file: at least one, all well-formed.
fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NoCertificate {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

/// A node's TLS identity and trusted CA, read and checked.
#[derive(Debug, Clone)]
pub(crate) struct TlsMaterial {
    identity: Identity,
    ca: Option<Certificate>,
    client_auth: ClientAuth,
}

impl TlsMaterial {
    /// The listener's configuration.
    pub(crate) fn server(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new()
            .identity(self.identity.clone())
            .timeout(HANDSHAKE_TIMEOUT);
        match (&self.ca, self.client_auth) {
            (Some(ca), ClientAuth::Optional | ClientAuth::Required) => config
                .client_ca_root(ca.clone())
                .client_auth_optional(self.client_auth == ClientAuth::Optional),
            _ => config,
        }
    }

    /// How this node dials its peers: it verifies them against the CA and presents its own
    /// certificate. `None` without a CA (a single node, which dials no peer).
    pub(crate) fn peers(&self) -> Option<ClientTlsConfig> {
        let ca = self.ca.clone()?;
        Some(
            ClientTlsConfig::new()
                .ca_certificate(ca)
                .identity(self.identity.clone()),
        )
    }
}

/// A TLS file could not be used; nothing started.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read TLS file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A certificate file holds no PEM certificate.
    #[error("{path} holds no PEM certificate: {reason}")]
    NoCertificate {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A key file holds no PEM private key.
    #[error("{path} holds no PEM private key: {reason}")]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The key is unusable or is not the key of the certificate.
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// The cause.
        #[source]
        source: rustls::Error,
    },
    /// A CA file holds a certificate that cannot be a trust anchor.
    #[error("{path} holds a certificate that cannot be used as a CA")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rustls::Error,
    },
    /// tonic refused the configuration.
    #[error("cannot configure TLS")]
    Config(#[source] tonic::transport::Error),
}

/// Whether the listener at `addr` can be reached from other machines.
pub(crate) fn is_exposed(addr: std::net::SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(cert: bool, key: bool, ca: bool, auth: Option<ClientAuth>) -> TlsSettings {
        TlsSettings {
            cert: cert.then(|| "node.pem".into()),
            key: key.then(|| "node-key.pem".into()),
            ca: ca.then(|| "ca.pem".into()),
            client_auth: auth,
        }
    }

    #[test]
    fn client_auth_defaults_to_optional_with_a_ca_and_none_without() {
        assert_eq!(
            settings(true, true, true, None).effective_client_auth(),
            ClientAuth::Optional
        );
        assert_eq!(
            settings(true, true, false, None).effective_client_auth(),
            ClientAuth::None
        );
        assert_eq!(
            settings(true, true, true, Some(ClientAuth::Required)).effective_client_auth(),
            ClientAuth::Required
        );
    }

    #[test]
    fn incomplete_settings_are_refused_naming_the_key() {
        let err = |s: TlsSettings, clustered| s.validate(clustered).unwrap_err();
        assert!(err(settings(true, false, false, None), false).contains("tls.key"));
        assert!(err(settings(false, true, false, None), false).contains("tls.cert"));
        assert!(err(settings(false, false, true, None), false).contains("tls.ca"));
        assert!(
            err(
                settings(true, true, false, Some(ClientAuth::Required)),
                false
            )
            .contains("needs tls.ca")
        );
        assert!(err(settings(true, true, false, None), true).contains("required in a cluster"));
        assert!(settings(true, true, true, None).validate(true).is_ok());
        assert!(settings(false, false, false, None).validate(true).is_ok());
    }

    #[test]
    fn client_auth_parses_its_three_names() {
        assert_eq!("Required".parse::<ClientAuth>(), Ok(ClientAuth::Required));
        assert_eq!("none".parse::<ClientAuth>(), Ok(ClientAuth::None));
        assert!(
            "yes"
                .parse::<ClientAuth>()
                .unwrap_err()
                .contains("optional")
        );
    }

    #[test]
    fn files_that_are_not_pem_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let settings = TlsSettings {
            cert: Some(garbage.clone()),
            key: Some(garbage.clone()),
            ..TlsSettings::default()
        };
        let err = settings.load().unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        assert!(err.to_string().contains("garbage.pem"), "{err}");
        let missing = TlsSettings {
            cert: Some(dir.path().join("missing.pem")),
            key: Some(garbage),
            ..TlsSettings::default()
        };
        let err = missing.load().unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }
}
