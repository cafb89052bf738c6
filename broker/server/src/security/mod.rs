//! Who is calling and what they may do (DESIGN §12, docs/security.md).
//!
//! One place decides who calls ([`authenticate`]: a password against the users' SCRAM
//! credentials, a client certificate's subject, a node's certificate or the cluster secret)
//! and one decides what they may do ([`authorize`]: the ACL bindings). The permission each RPC
//! needs is listed in `service/permissions.rs`.
//!
//! One job per file:
//! - `principal`: the identities and user names;
//! - `acl`: the resources requests touch and which principals a binding names (the bindings
//!   themselves, their validation and matching are `weir_types::acl`);
//! - `authenticate`: credentials and certificates to a principal;
//! - `authorize`: a principal and the bindings to allowed or the missing permission;
//! - `audit`: refusals logged (rate-limited) and counted;
//! - `settings`: the `[security]` section and the cluster secret file.

mod acl;
mod audit;
mod authenticate;
mod authorize;
mod principal;
mod settings;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use tonic::Request;
use tonic::service::Interceptor;
use weir_types::scram::ScramCredential;

pub(crate) use acl::{AclBinding, AclOperation, Resource};
pub(crate) use audit::Audit;
pub(crate) use authorize::Need;
pub(crate) use principal::{Principal, check_user_name};
pub(crate) use settings::read_cluster_secret;
pub use settings::{BootstrapUser, SecuritySettings};

use authenticate::{AuthFailure, Authenticator, Presented};
use authorize::Authorizer;

use crate::error::BrokerError;
use crate::tls::{ClientAuth, TlsSettings};

/// The node's security: its authenticator, its authorizer and the audit of refusals.
pub(crate) struct Security {
    authenticator: Authenticator,
    authorizer: Authorizer,
    audit: Arc<Audit>,
    /// Whether the peer service answers anyone: no certificates are verified and there is no
    /// cluster secret (the development broker).
    peers_open: bool,
}

impl Security {
    /// The security of a node with these settings, its TLS and the cluster secret read from
    /// `security.cluster_secret_file`. Fails only if the system's random source does.
    pub(crate) fn new(
        settings: &SecuritySettings,
        tls: &TlsSettings,
        cluster_secret: Option<String>,
    ) -> Result<Self, String> {
        let certificates_verified =
            tls.enabled() && tls.effective_client_auth() != ClientAuth::None;
        Ok(Self {
            peers_open: !certificates_verified && cluster_secret.is_none(),
            authenticator: Authenticator::new(cluster_secret)?,
            authorizer: Authorizer {
                enabled: settings.authorization,
                super_users: settings.super_users.iter().cloned().collect(),
            },
            audit: Arc::new(Audit::default()),
        })
    }

    /// The audit counters, for the metrics endpoint.
    pub(crate) fn audit(&self) -> &Arc<Audit> {
        &self.audit
    }

    /// Whether ACLs are enforced.
    pub(crate) fn authorization(&self) -> bool {
        self.authorizer.enabled
    }

    /// Who sent `request`. Credentials that do not check out are `UNAUTHENTICATED`, whatever
    /// the ACLs.
    pub(crate) async fn authenticate<T>(
        &self,
        rpc: &str,
        request: &Request<T>,
        users: &BTreeMap<String, ScramCredential>,
    ) -> Result<Principal, BrokerError> {
        let presented = Presented {
            metadata: request.metadata(),
            certificates: request.peer_certs(),
        };
        self.authenticator
            .principal(presented, users)
            .await
            .map_err(|failure| {
                let user = match &failure {
                    AuthFailure::UnknownUser(user) | AuthFailure::WrongPassword(user) => {
                        Some(user.as_str())
                    }
                    _ => None,
                };
                self.audit
                    .authentication_failed(rpc, failure.label(), user, &client_of(request));
                match failure {
                    AuthFailure::Overloaded => BrokerError::Overloaded(failure.to_string()),
                    failure => BrokerError::Unauthenticated(failure.to_string()),
                }
            })
    }

    /// Refuses with `PERMISSION_DENIED`, naming the missing permission, unless `principal`
    /// has everything in `needs`.
    pub(crate) fn authorize(
        &self,
        rpc: &str,
        client: Option<SocketAddr>,
        principal: &Principal,
        acls: &BTreeSet<AclBinding>,
        needs: &[Need<'_>],
    ) -> Result<(), BrokerError> {
        let Some(missing) = self.authorizer.missing(principal, acls, needs) else {
            return Ok(());
        };
        let (operation, resource_type, resource) = missing.labels();
        self.audit.denied(
            rpc,
            &principal.to_string(),
            &operation,
            resource_type,
            &resource,
            &client_label(client),
        );
        Err(BrokerError::PermissionDenied(format!(
            "{principal} lacks {missing}"
        )))
    }

    /// Whether `principal` may do `operation` on `resource`: for lists, which show only what
    /// the caller may describe.
    pub(crate) fn allows(
        &self,
        principal: &Principal,
        acls: &BTreeSet<AclBinding>,
        operation: AclOperation,
        resource: Resource<'_>,
    ) -> bool {
        self.authorizer.allows(principal, acls, operation, resource)
    }

    /// The guard of the peer (raft and controller forwarding) service: only nodes pass.
    pub(crate) fn peer_guard(self: &Arc<Self>) -> PeerGuard {
        PeerGuard {
            security: self.clone(),
        }
    }
}

/// The SCRAM-SHA-256 credential of `password` with a fresh random salt.
pub(crate) fn derive_credential(password: &str) -> Result<ScramCredential, String> {
    use ring::rand::SecureRandom;
    let mut salt = [0u8; weir_types::scram::SALT_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| "the system's random source failed".to_owned())?;
    ScramCredential::derive(
        password.as_bytes(),
        &salt,
        weir_types::scram::DEFAULT_ITERATIONS,
    )
    .map_err(|e| e.to_string())
}

/// What leaves a node listening on `local_addr` open, for its start-up log and `weir cluster
/// status`.
pub(crate) fn exposure_warnings(
    local_addr: std::net::SocketAddr,
    tls: bool,
    authorization: bool,
) -> Vec<String> {
    if !crate::tls::is_exposed(local_addr) {
        return Vec::new();
    }
    let mut warnings = Vec::new();
    if !tls {
        warnings.push(format!(
            "listening on {local_addr} beyond loopback without TLS: traffic, passwords included, travels in clear"
        ));
    }
    if !authorization {
        warnings.push(format!(
            "listening on {local_addr} beyond loopback without authorization: any client may read, write and administer everything"
        ));
    }
    warnings
}

/// Where a request came from, for the audit log.
fn client_of<T>(request: &Request<T>) -> String {
    client_label(request.remote_addr())
}

fn client_label(client: Option<SocketAddr>) -> String {
    client.map_or_else(|| "unknown".to_owned(), |a| a.to_string())
}

/// Lets through the peer service only requests from nodes: a certificate named `node` or the
/// cluster secret. Refusals are `PERMISSION_DENIED`, audited.
#[derive(Clone)]
pub(crate) struct PeerGuard {
    security: Arc<Security>,
}

impl Interceptor for PeerGuard {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, tonic::Status> {
        let security = &self.security;
        let presented = Presented {
            metadata: request.metadata(),
            certificates: request.peer_certs(),
        };
        if security.peers_open || security.authenticator.is_node(&presented) {
            return Ok(request);
        }
        let who = if presented.certificates.is_some() {
            "a client certificate"
        } else {
            "no node certificate"
        };
        security
            .audit
            .peer_refused("weir.internal.v1.Raft", who, &client_of(&request));
        Err(tonic::Status::permission_denied(
            "the peer service answers only nodes of the cluster (a certificate whose subject CN is 'node', or the cluster secret)",
        ))
    }
}
