//! [`ClientTls`]: the CA a client trusts and the certificate it presents, applied to every
//! broker it connects to.
//!
//! TLS is a setting of the client, not of an address: brokers advertise leaders and cluster
//! members as `HOST:PORT`, so a client configured for TLS speaks TLS to every broker of the
//! cluster, and one without speaks plaintext to all. Each broker's certificate is checked
//! against the host of its address: an IP address against the certificate's IP SANs, a name
//! against its DNS SANs.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The client's TLS settings: the CA certificates (PEM) that brokers' certificates must chain
/// to, and optionally the client's own certificate and key (PEM) for brokers that ask for one
/// (`--tls-client-auth optional|required`).
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    ca: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// A TLS setting of the client that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The CA given holds no PEM certificate.
    #[error("the TLS CA holds no PEM certificate{}", detail(.0))]
    InvalidCa(String),
    /// The client certificate holds no PEM certificate.
    #[error("the TLS client certificate holds no PEM certificate{}", detail(.0))]
    InvalidCertificate(String),
    /// The client key holds no PEM private key.
    #[error("the TLS client key holds no PEM private key{}", detail(.0))]
    InvalidKey(String),
    /// A client certificate was given without a CA to verify brokers against.
    #[error("a TLS client certificate needs a CA to verify the brokers against")]
    MissingCa,
    /// The transport refused the settings for a broker (for example, its host cannot be a TLS
    /// server name).
    #[error("cannot set up TLS to {addr}")]
    Transport {
        /// The broker's address.
        addr: String,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
}

fn detail(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

impl ClientTls {
    /// No CA and no identity yet; a client given this without [`ClientTls::ca`] is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the CA certificates in `pem` for brokers' certificates.
    pub fn ca(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(pem.into());
        self
    }

    /// Presents `cert_pem` (the chain, leaf first) with its private key `key_pem` to brokers
    /// that ask for a client certificate.
    pub fn identity(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Checks the PEM contents and makes tonic's configuration.
    pub(crate) fn config(&self) -> Result<ClientTlsConfig, TlsError> {
        let ca = self.ca.as_ref().ok_or(TlsError::MissingCa)?;
        check_certificates(ca).map_err(TlsError::InvalidCa)?;
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if let Some((cert, key)) = &self.identity {
            check_certificates(cert).map_err(TlsError::InvalidCertificate)?;
            PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::InvalidKey(e.to_string()))?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        Ok(config)
    }
}

/// `Ok` when `pem` holds at least one well-formed certificate; else why not.
fn check_certificates(pem: &[u8]) -> Result<(), String> {
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| e.to_string())?;
        count += 1;
    }
    if count == 0 {
        return Err(String::new());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_without_a_ca_or_with_garbage_are_refused() {
        assert!(matches!(
            ClientTls::new().config(),
            Err(TlsError::MissingCa)
        ));
        assert!(matches!(
            ClientTls::new().ca("not pem").config(),
            Err(TlsError::InvalidCa(_))
        ));
        let err = ClientTls::new()
            .ca("not pem")
            .config()
            .unwrap_err()
            .to_string();
        assert_eq!(err, "the TLS CA holds no PEM certificate");
    }
}
