//! Authentication and the administration of users and ACLs (docs/security.md).
//!
//! A client built with [`ClientBuilder::credentials`](crate::ClientBuilder::credentials) sends
//! `authorization: Basic base64(user:password)` with every request to every broker; give it
//! TLS too, or the password travels in clear. Creating a user or changing a password derives
//! the SCRAM-SHA-256 credential here, so the password never reaches the broker then.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SecureRandom;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use weir_proto::v1;
pub use weir_types::acl::{
    AclBinding, AclOperation, AclPermission, CLUSTER_RESOURCE, PatternType, ResourceType,
};
use weir_types::scram::{DEFAULT_ITERATIONS, SALT_LEN, ScramCredential};

use crate::{Client, ClientError};

/// A user's name and password, added to every request. Its `Debug` never shows the password.
#[derive(Clone, Default)]
pub struct Credentials {
    user: Option<String>,
    header: Option<MetadataValue<Ascii>>,
}

impl Credentials {
    /// The credentials of `user` with `password`.
    pub fn new(user: &str, password: &str) -> Result<Self, ClientError> {
        if user.is_empty() || user.contains(':') {
            return Err(ClientError::InvalidArgument(format!(
                "invalid user name {user:?}: it must be non-empty, without ':'"
            )));
        }
        let encoded = STANDARD.encode(format!("{user}:{password}"));
        let mut header: MetadataValue<Ascii> = format!("Basic {encoded}")
            .parse()
            .map_err(|_| ClientError::InvalidArgument("unencodable credentials".into()))?;
        // Never indexed by HTTP/2 header compression.
        header.set_sensitive(true);
        Ok(Self {
            user: Some(user.to_owned()),
            header: Some(header),
        })
    }

    /// The user's name, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// Narrows [`Client::list_acls`]; the default lists every binding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclFilter {
    /// Only bindings of this principal.
    pub principal: Option<String>,
    /// Only bindings of this resource type.
    pub resource_type: Option<ResourceType>,
    /// Only bindings with this exact resource name (or prefix).
    pub resource_name: Option<String>,
}

/// A user as the broker lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The name.
    pub name: String,
    /// `SCRAM-SHA-256`.
    pub mechanism: String,
    /// PBKDF2 rounds of the credential.
    pub iterations: u32,
}

/// The request carrying `name`'s credential derived from `password` with a fresh salt.
fn credential_request(
    name: &str,
    password: &str,
) -> Result<v1::UserCredentialRequest, ClientError> {
    let mut salt = [0u8; SALT_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| ClientError::InvalidArgument("the system's random source failed".into()))?;
    let credential = ScramCredential::derive(password.as_bytes(), &salt, DEFAULT_ITERATIONS)
        .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
    Ok(v1::UserCredentialRequest {
        name: name.to_owned(),
        credential: Some(v1::ScramCredential {
            salt: credential.salt.into(),
            iterations: credential.iterations,
            stored_key: credential.stored_key.into(),
            server_key: credential.server_key.into(),
        }),
    })
}

fn user_info(user: v1::UserDescription) -> UserInfo {
    UserInfo {
        name: user.name,
        mechanism: user.mechanism,
        iterations: user.iterations,
    }
}

impl Client {
    /// Creates user `name` with `password` (its SCRAM-SHA-256 credential, derived here).
    ///
    /// Broker reasons: `USER_EXISTS`, `INVALID_ARGUMENT`, `PERMISSION_DENIED`.
    pub async fn create_user(&self, name: &str, password: &str) -> Result<UserInfo, ClientError> {
        let request = credential_request(name, password)?;
        let user = self.admin().create_user(request).await?.into_inner();
        Ok(user_info(user))
    }

    /// Changes the password of user `name`.
    ///
    /// Broker reasons: `UNKNOWN_USER`, `INVALID_ARGUMENT`, `PERMISSION_DENIED`.
    pub async fn set_user_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<UserInfo, ClientError> {
        let request = credential_request(name, password)?;
        let user = self.admin().set_user_password(request).await?.into_inner();
        Ok(user_info(user))
    }

    /// Deletes user `name`; its ACL bindings stay.
    ///
    /// Broker reasons: `UNKNOWN_USER`, `PERMISSION_DENIED`.
    pub async fn delete_user(&self, name: &str) -> Result<(), ClientError> {
        self.admin()
            .delete_user(v1::DeleteUserRequest {
                name: name.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// The users, by name.
    pub async fn list_users(&self) -> Result<Vec<UserInfo>, ClientError> {
        let users = self
            .admin()
            .list_users(v1::ListUsersRequest {})
            .await?
            .into_inner()
            .users;
        Ok(users.into_iter().map(user_info).collect())
    }

    /// Adds ACL bindings (those that exist change nothing).
    ///
    /// Broker reasons: `INVALID_ARGUMENT`, `PERMISSION_DENIED`.
    pub async fn create_acls(&self, bindings: &[AclBinding]) -> Result<(), ClientError> {
        self.admin()
            .create_acls(v1::CreateAclsRequest {
                bindings: bindings.iter().map(v1::AclBinding::from).collect(),
            })
            .await?;
        Ok(())
    }

    /// Removes the ACL bindings equal to `bindings`; returns how many there were.
    pub async fn delete_acls(&self, bindings: &[AclBinding]) -> Result<u32, ClientError> {
        let response = self
            .admin()
            .delete_acls(v1::DeleteAclsRequest {
                bindings: bindings.iter().map(v1::AclBinding::from).collect(),
            })
            .await?
            .into_inner();
        Ok(response.deleted)
    }

    /// The ACL bindings `filter` matches.
    pub async fn list_acls(&self, filter: &AclFilter) -> Result<Vec<AclBinding>, ClientError> {
        let bindings = self
            .admin()
            .list_acls(v1::ListAclsRequest {
                principal: filter.principal.clone(),
                resource_type: filter
                    .resource_type
                    .map_or(
                        v1::ResourceType::Unspecified,
                        weir_proto::acl::resource_type_to_pb,
                    )
                    .into(),
                resource_name: filter.resource_name.clone(),
            })
            .await?
            .into_inner()
            .bindings;
        bindings
            .into_iter()
            .map(|b| {
                AclBinding::try_from(b).map_err(|_| {
                    ClientError::UnexpectedResponse("an ACL binding with unset fields")
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show_the_password() {
        let credentials = Credentials::new("alice", "s3cret-pw").unwrap();
        let shown = format!("{credentials:?}");
        assert!(shown.contains("alice"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(Credentials::new("a:b", "pw").is_err());
    }
}
