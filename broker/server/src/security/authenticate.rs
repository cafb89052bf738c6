//! Authentication: who a request comes from, from its `authorization` metadata (a user's
//! password), its client certificate, or the cluster secret.
//!
//! A password is checked against the user's SCRAM-SHA-256 credential, which costs PBKDF2's
//! rounds; a password once verified is remembered per user as a keyed hash (the key is random
//! per process), so later requests cost one HMAC. At most [`KDF_PERMITS`] derivations run at
//! once and at most [`KDF_WAITERS`] wait: beyond that a request is refused as overloaded,
//! retriable, so a flood of wrong passwords cannot take every core.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;
use rustls::pki_types::CertificateDer;
use tokio::sync::Semaphore;
use tonic::metadata::MetadataMap;
use weir_types::scram::{ScramCredential, constant_time_eq};

use super::principal::Principal;

/// The metadata key of a user's credentials: `Basic base64(user:password)`, as HTTP's.
pub const AUTHORIZATION: &str = "authorization";
/// The metadata key of the cluster secret, on requests between nodes.
pub const CLUSTER_SECRET: &str = weir_raft::CLUSTER_SECRET_METADATA;
/// Password derivations running at once.
const KDF_PERMITS: usize = 2;
/// Password derivations waiting at most, beyond those running.
const KDF_WAITERS: usize = 64;
/// Client certificates whose names are remembered; the memory is cleared when it is full.
const NAMED_CERTIFICATES: usize = 1024;

/// Why a request's credentials were refused. The text a client sees does not tell an unknown
/// user from a wrong password; the audit log does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// No such user.
    #[error("authentication failed for user '{0}': unknown user or wrong password")]
    UnknownUser(String),
    /// The password does not match.
    #[error("authentication failed for user '{0}': unknown user or wrong password")]
    WrongPassword(String),
    /// The metadata is not `Basic base64(user:password)`.
    #[error("malformed authorization metadata: expected 'Basic ' and base64 of USER:PASSWORD")]
    Malformed,
    /// A client certificate without a subject common name to take a principal from.
    #[error("the client certificate has no subject common name (CN) to name a user")]
    NamelessCertificate,
    /// Too many password checks are running; retry.
    #[error("too many password checks at once; retry")]
    Overloaded,
}

impl AuthFailure {
    /// A stable label for metrics and the audit log.
    pub fn label(&self) -> &'static str {
        match self {
            AuthFailure::UnknownUser(_) => "unknown_user",
            AuthFailure::WrongPassword(_) => "wrong_password",
            AuthFailure::Malformed => "malformed",
            AuthFailure::NamelessCertificate => "nameless_certificate",
            AuthFailure::Overloaded => "overloaded",
        }
    }
}

/// What a request presents.
pub struct Presented<'a> {
    /// Its metadata.
    pub metadata: &'a MetadataMap,
    /// The client certificate chain the TLS handshake verified, if any.
    pub certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// Decides who calls.
pub struct Authenticator {
    /// The cluster secret, when nodes show one.
    cluster_secret: Option<String>,
    /// Per user, the stored key of the credential a password was verified against and that
    /// password's keyed hash.
    verified: Mutex<HashMap<String, (Vec<u8>, hmac::Tag)>>,
    /// Key of those hashes; random per process, never stored.
    tag_key: hmac::Key,
    kdf: Semaphore,
    /// Password checks running or waiting for a derivation slot.
    waiting: AtomicUsize,
    /// A credential of no user, checked against when a login names a user that does not exist.
    unknown_user: ScramCredential,
    /// Subject CNs of the client certificates seen, by their DER bytes: a connection shows the
    /// same certificate on every request (every raft message of a peer), and parsing one costs
    /// more than looking it up.
    names: Mutex<HashMap<Vec<u8>, Option<String>>>,
}

impl Authenticator {
    /// An authenticator that recognises nodes by `cluster_secret` (besides their certificates).
    /// Fails only if the system's random source does.
    pub fn new(cluster_secret: Option<String>) -> Result<Self, String> {
        let rng = ring::rand::SystemRandom::new();
        let random = |what: &str| format!("the system's random source failed ({what})");
        let mut nonsense = [0u8; 32];
        ring::rand::SecureRandom::fill(&rng, &mut nonsense).map_err(|_| random("a password"))?;
        let mut salt = [0u8; weir_types::scram::SALT_LEN];
        ring::rand::SecureRandom::fill(&rng, &mut salt).map_err(|_| random("a salt"))?;
        Ok(Self {
            cluster_secret,
            verified: Mutex::new(HashMap::new()),
            tag_key: hmac::Key::generate(hmac::HMAC_SHA256, &rng).map_err(|_| random("a key"))?,
            kdf: Semaphore::new(KDF_PERMITS),
            waiting: AtomicUsize::new(0),
            unknown_user: ScramCredential::derive(
                &nonsense,
                &salt,
                weir_types::scram::DEFAULT_ITERATIONS,
            )
            .map_err(|e| e.to_string())?,
            names: Mutex::new(HashMap::new()),
        })
    }

    /// Whether the request comes from a node: the cluster secret, or a certificate named
    /// `node`.
    pub fn is_node(&self, presented: &Presented<'_>) -> bool {
        self.node_by(presented, self.certificate_name(presented).as_deref())
    }

    /// [`Self::is_node`], given the name of the request's certificate: a secret shown decides
    /// (a node shows the right one), else the name.
    fn node_by(&self, presented: &Presented<'_>, certificate_name: Option<&str>) -> bool {
        match (&self.cluster_secret, presented.metadata.get(CLUSTER_SECRET)) {
            (Some(secret), Some(shown)) => constant_time_eq(secret.as_bytes(), shown.as_bytes()),
            _ => certificate_name == Some(Principal::NODE_CN),
        }
    }

    /// The principal of a request: a user by password when it carries `authorization`
    /// metadata, else a node, else the user its client certificate names, else anonymous.
    pub async fn principal(
        &self,
        presented: Presented<'_>,
        users: &BTreeMap<String, ScramCredential>,
    ) -> Result<Principal, AuthFailure> {
        if let Some(value) = presented.metadata.get(AUTHORIZATION) {
            let (user, password) = basic_credentials(value.as_bytes())?;
            self.verify(&user, password, users).await?;
            return Ok(Principal::User(user));
        }
        // Looked up once: it decides both whether this is a node and which user it names.
        let name = self.certificate_name(&presented);
        if self.node_by(&presented, name.as_deref()) {
            return Ok(Principal::Node);
        }
        match presented.certificates {
            Some(_) => name
                .map(Principal::User)
                .ok_or(AuthFailure::NamelessCertificate),
            None => Ok(Principal::Anonymous),
        }
    }

    async fn verify(
        &self,
        user: &str,
        password: Vec<u8>,
        users: &BTreeMap<String, ScramCredential>,
    ) -> Result<(), AuthFailure> {
        let Some(credential) = users.get(user) else {
            // The same work as for a wrong password, so the time taken does not tell whether
            // a user exists.
            self.derive_and_compare(&self.unknown_user, password)
                .await?;
            return Err(AuthFailure::UnknownUser(user.to_owned()));
        };
        let tag = hmac::sign(&self.tag_key, &password);
        if let Some((stored_key, known)) = self.lock().get(user)
            && *stored_key == credential.stored_key
            && constant_time_eq(known.as_ref(), tag.as_ref())
        {
            return Ok(());
        }
        if !self.derive_and_compare(credential, password).await? {
            return Err(AuthFailure::WrongPassword(user.to_owned()));
        }
        // One entry per user, and users are bounded by the metadata's limit.
        self.lock()
            .insert(user.to_owned(), (credential.stored_key.clone(), tag));
        Ok(())
    }

    /// Whether `password` is `credential`'s, derived on a blocking thread once a derivation
    /// slot is free; `Overloaded` when too many checks wait already.
    async fn derive_and_compare(
        &self,
        credential: &ScramCredential,
        password: Vec<u8>,
    ) -> Result<bool, AuthFailure> {
        let _waiting = Waiting::enter(&self.waiting).ok_or(AuthFailure::Overloaded)?;
        let _permit = self.kdf.acquire().await;
        let checked = credential.clone();
        Ok(
            tokio::task::spawn_blocking(move || checked.verify(&password))
                .await
                .unwrap_or(false),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Vec<u8>, hmac::Tag)>> {
        self.verified.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The subject common name of the verified client certificate (the leaf, first in the
    /// chain), if it has one.
    fn certificate_name(&self, presented: &Presented<'_>) -> Option<String> {
        let leaf = presented.certificates.as_ref()?.first()?;
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(name) = names.get(leaf.as_ref()) {
            return name.clone();
        }
        let name = common_name(leaf);
        if names.len() >= NAMED_CERTIFICATES {
            names.clear();
        }
        names.insert(leaf.to_vec(), name.clone());
        name
    }
}

/// A password check counted among those running or waiting for as long as it lives, also
/// when its request is dropped midway (the client went away).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    /// Counts one more check, unless as many as may run and wait are counted already.
    fn enter(count: &'a AtomicUsize) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < KDF_PERMITS + KDF_WAITERS).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(count))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// User and password from `Basic base64(user:password)`.
fn basic_credentials(value: &[u8]) -> Result<(String, Vec<u8>), AuthFailure> {
    let encoded = value
        .strip_prefix(b"Basic ")
        .ok_or(AuthFailure::Malformed)?;
    let decoded = STANDARD
        .decode(encoded.trim_ascii())
        .map_err(|_| AuthFailure::Malformed)?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or(AuthFailure::Malformed)?;
    let user = std::str::from_utf8(&decoded[..colon]).map_err(|_| AuthFailure::Malformed)?;
    if user.is_empty() {
        return Err(AuthFailure::Malformed);
    }
    Ok((user.to_owned(), decoded[colon + 1..].to_vec()))
}

/// The first subject common name of `certificate`.
fn common_name(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let name = certificate
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_split_at_the_first_colon() {
        let value = format!("Basic {}", STANDARD.encode("alice:pa:ss"));
        assert_eq!(
            basic_credentials(value.as_bytes()),
            Ok(("alice".to_owned(), b"pa:ss".to_vec()))
        );
        assert_eq!(
            basic_credentials(b"Bearer abc"),
            Err(AuthFailure::Malformed)
        );
        let nameless = format!("Basic {}", STANDARD.encode(":pw"));
        assert_eq!(
            basic_credentials(nameless.as_bytes()),
            Err(AuthFailure::Malformed)
        );
    }

    #[tokio::test]
    async fn checks_wait_for_a_derivation_and_leave_no_waiter_behind_when_given_up() {
        use futures::FutureExt;
        let authenticator = Authenticator::new(None).unwrap();
        let mut users = BTreeMap::new();
        users.insert(
            "alice".to_owned(),
            ScramCredential::derive(b"right", &[3u8; 16], 4096).unwrap(),
        );
        // Every derivation slot taken: the check waits, and its client goes away meanwhile.
        let busy = authenticator
            .kdf
            .acquire_many(KDF_PERMITS as u32)
            .await
            .unwrap();
        let given_up = authenticator
            .verify("alice", b"right".to_vec(), &users)
            .now_or_never();
        assert!(given_up.is_none(), "the check did not wait");
        assert_eq!(authenticator.waiting.load(Ordering::Acquire), 0);
        // A user that does not exist waits for a derivation too: answering at once would tell
        // that the user does not exist.
        let unknown = authenticator
            .verify("mallory", b"right".to_vec(), &users)
            .now_or_never();
        assert!(
            unknown.is_none(),
            "an unknown user was answered without a derivation"
        );
        assert_eq!(authenticator.waiting.load(Ordering::Acquire), 0);
        drop(busy);
    }

    #[tokio::test]
    async fn a_verified_password_is_remembered_until_the_credential_changes() {
        let authenticator = Authenticator::new(None).unwrap();
        let salt = [3u8; 16];
        let mut users = BTreeMap::new();
        users.insert(
            "alice".to_owned(),
            ScramCredential::derive(b"right", &salt, 4096).unwrap(),
        );
        authenticator
            .verify("alice", b"right".to_vec(), &users)
            .await
            .unwrap();
        assert_eq!(
            authenticator
                .verify("alice", b"wrong".to_vec(), &users)
                .await,
            Err(AuthFailure::WrongPassword("alice".into()))
        );
        assert_eq!(
            authenticator.verify("bob", b"right".to_vec(), &users).await,
            Err(AuthFailure::UnknownUser("bob".into()))
        );
        // A new password: the remembered one no longer passes.
        users.insert(
            "alice".to_owned(),
            ScramCredential::derive(b"new", &salt, 4096).unwrap(),
        );
        assert_eq!(
            authenticator
                .verify("alice", b"right".to_vec(), &users)
                .await,
            Err(AuthFailure::WrongPassword("alice".into()))
        );
        authenticator
            .verify("alice", b"new".to_vec(), &users)
            .await
            .unwrap();
    }
}
