//! The `[security]` settings: authorization, super users, the cluster secret, and the user a
//! first start creates.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::principal::check_user_name;
use crate::tls::{ClientAuth, TlsSettings};

/// Shortest cluster secret accepted, in bytes.
const MIN_SECRET_LEN: usize = 16;
/// Longest cluster secret accepted, in bytes.
const MAX_SECRET_LEN: usize = 1024;

/// The `[security]` section (docs/security.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecuritySettings {
    /// Enforce ACLs: a request is served only when the bindings allow everything it needs.
    pub authorization: bool,
    /// Principals (`User:NAME`) allowed everything, ACLs or not.
    pub super_users: Vec<String>,
    /// A file holding the secret nodes show each other on every peer request (printable
    /// ASCII, at least 16 bytes; surrounding whitespace ignored). Needed in a cluster whose
    /// nodes do not verify each other's certificates.
    pub cluster_secret_file: Option<PathBuf>,
    /// A user to create at start-up if it does not exist (`WEIR_BOOTSTRAP_USER=NAME:PASSWORD`
    /// on `weir broker`): the way to a first administrator without client certificates.
    /// Never read from or written to a file.
    #[serde(skip)]
    pub bootstrap_user: Option<BootstrapUser>,
}

/// A user created at start-up.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapUser {
    /// The name.
    pub name: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for BootstrapUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapUser")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl std::str::FromStr for BootstrapUser {
    type Err = String;

    /// `NAME:PASSWORD`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, password) = s
            .split_once(':')
            .ok_or("expected NAME:PASSWORD (the password itself may hold ':')")?;
        check_user_name(name)?;
        if password.is_empty() {
            return Err(format!("the password of user {name:?} is empty"));
        }
        Ok(Self {
            name: name.to_owned(),
            password: password.to_owned(),
        })
    }
}

impl SecuritySettings {
    /// Checks the settings against the node's TLS and whether it has peers; no file is read.
    pub(crate) fn validate(&self, tls: &TlsSettings, clustered: bool) -> Result<(), String> {
        for principal in &self.super_users {
            let name = principal.strip_prefix("User:").ok_or_else(|| {
                format!("security.super_users: {principal:?} is not a principal User:NAME")
            })?;
            check_user_name(name).map_err(|e| format!("security.super_users: {e}"))?;
        }
        if clustered
            && self.cluster_secret_file.is_none()
            && tls.enabled()
            && tls.effective_client_auth() == ClientAuth::None
        {
            return Err(
                "tls.client_auth = none in a cluster leaves nodes unable to tell each other from clients: keep tls.client_auth optional or required (nodes present their certificates), or set security.cluster_secret_file"
                    .into(),
            );
        }
        if clustered && self.authorization && !tls.enabled() && self.cluster_secret_file.is_none() {
            return Err(
                "security.authorization in a cluster needs nodes to authenticate each other: TLS with tls.ca (node certificates), or security.cluster_secret_file"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Reads the cluster secret from `path`.
pub(crate) fn read_cluster_secret(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read the cluster secret {}: {e}", path.display()))?;
    let secret = std::str::from_utf8(&bytes)
        .ok()
        .map(str::trim)
        .filter(|s| s.chars().all(|c| c.is_ascii_graphic()))
        .ok_or_else(|| {
            format!(
                "the cluster secret {} must be printable ASCII without spaces (for example `openssl rand -hex 32`)",
                path.display()
            )
        })?;
    if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&secret.len()) {
        return Err(format!(
            "the cluster secret {} holds {} bytes: it must hold {MIN_SECRET_LEN} to {MAX_SECRET_LEN}",
            path.display(),
            secret.len()
        ));
    }
    Ok(secret.to_owned())
}
