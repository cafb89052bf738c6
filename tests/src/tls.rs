//! [`TestPki`]: certificates generated for a test with rcgen, written as PEM files: a CA, a
//! node certificate and a client certificate it signed, and a second, unrelated CA with a node
//! certificate of its own.
//!
//! Node certificates carry the SANs `IP:127.0.0.1` and `DNS:localhost`, where every test node
//! listens, so one certificate serves every node of a [`crate::cluster::ProcessCluster`], and
//! the subject CN `node` that marks a node (docs/security.md). A client certificate's CN names
//! its user.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The subject CN of a node's certificate.
pub const NODE_CN: &str = "node";

/// A certificate with its key, as PEM text and as the files holding them.
#[derive(Debug, Clone)]
pub struct Pem {
    /// The certificate (PEM).
    pub cert: String,
    /// The private key (PEM, PKCS#8).
    pub key: String,
    /// The file holding `cert`.
    pub cert_file: PathBuf,
    /// The file holding `key`.
    pub key_file: PathBuf,
}

/// The certificates of one test, in a temporary directory.
pub struct TestPki {
    /// The CA the cluster trusts.
    pub ca: Pem,
    /// A node certificate signed by `ca` for 127.0.0.1 and localhost (server and client use).
    pub node: Pem,
    /// A client certificate signed by `ca`, for the user `weir-client`.
    pub client: Pem,
    /// A CA unrelated to `ca`.
    pub other_ca: Pem,
    /// A node certificate for 127.0.0.1 and localhost signed by `other_ca`.
    pub other_node: Pem,
    /// A client certificate signed by `other_ca`.
    pub other_client: Pem,
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

impl TestPki {
    /// Generates every certificate and writes them under a new temporary directory.
    pub fn generate() -> anyhow::Result<TestPki> {
        let dir = tempfile::tempdir()?;
        let (ca, ca_issuer) = new_ca(dir.path(), "ca", "Weir test CA")?;
        let (other_ca, other_issuer) = new_ca(dir.path(), "other-ca", "Unrelated test CA")?;
        let node = leaf(dir.path(), "node", NODE_CN, true, &ca_issuer)?;
        let client = leaf(dir.path(), "client", "weir-client", false, &ca_issuer)?;
        let other_node = leaf(dir.path(), "other-node", NODE_CN, true, &other_issuer)?;
        let other_client = leaf(dir.path(), "other-client", "intruder", false, &other_issuer)?;
        Ok(TestPki {
            ca,
            node,
            client,
            other_ca,
            other_node,
            other_client,
            issuer: ca_issuer,
            dir,
        })
    }

    /// A client certificate signed by `ca` whose subject CN is `common_name`: the user
    /// `User:{common_name}`, or a node with [`NODE_CN`].
    pub fn client_named(&self, common_name: &str) -> anyhow::Result<Pem> {
        leaf(
            self.dir.path(),
            &format!("client-{common_name}"),
            common_name,
            false,
            &self.issuer,
        )
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `[tls]` config section: the node identity `node`, trusting `ca`, with `client_auth`
    /// (`None`: the broker's default).
    pub fn tls_toml(node: &Pem, ca: &Pem, client_auth: Option<&str>) -> String {
        let mut toml = format!(
            "[tls]\ncert = {:?}\nkey = {:?}\nca = {:?}\n",
            node.cert_file, node.key_file, ca.cert_file
        );
        if let Some(auth) = client_auth {
            toml.push_str(&format!("client_auth = {auth:?}\n"));
        }
        toml
    }

    /// What a raw tonic client trusting `ca` uses, presenting `identity` if given.
    pub fn client_config(ca: &Pem, identity: Option<&Pem>) -> ClientTlsConfig {
        let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca.cert));
        match identity {
            Some(pem) => config.identity(Identity::from_pem(&pem.cert, &pem.key)),
            None => config,
        }
    }
}

fn write(dir: &Path, name: &str, cert: String, key: String) -> anyhow::Result<Pem> {
    let cert_file = dir.join(format!("{name}.pem"));
    let key_file = dir.join(format!("{name}-key.pem"));
    std::fs::write(&cert_file, &cert)?;
    std::fs::write(&key_file, &key)?;
    Ok(Pem {
        cert,
        key,
        cert_file,
        key_file,
    })
}

fn new_ca(
    dir: &Path,
    name: &str,
    common_name: &str,
) -> anyhow::Result<(Pem, CertifiedIssuer<'static, KeyPair>)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate()?;
    let key_pem = key.serialize_pem();
    let issuer = CertifiedIssuer::self_signed(params, key)?;
    let pem = write(dir, name, issuer.pem(), key_pem)?;
    Ok((pem, issuer))
}

/// A certificate signed by `issuer`: a node's (SANs 127.0.0.1 and localhost; server and client
/// authentication) or a client's (client authentication).
fn leaf(
    dir: &Path,
    name: &str,
    common_name: &str,
    node: bool,
    issuer: &CertifiedIssuer<'static, KeyPair>,
) -> anyhow::Result<Pem> {
    let sans: Vec<String> = if node {
        vec!["127.0.0.1".into(), "localhost".into()]
    } else {
        Vec::new()
    };
    let mut params = CertificateParams::new(sans)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = if node {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    write(dir, name, cert.pem(), key.serialize_pem())
}
