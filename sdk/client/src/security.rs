//! Authentication and the administration of users and ACLs (docs/security.md).
//!
//! A client built with [`ClientBuilder::credentials`](crate::ClientBuilder::credentials) sends
//! `authorization: Basic base64(user:password)` with every request to every broker; give it
//! TLS too, or the password travels in clear. Creating a user or changing a password derives
//! the SCRAM-SHA-256 credential here, so the password never reaches the broker then.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SecureRandom;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use weir_proto::v1;
use weir_types::scram::{DEFAULT_ITERATIONS, SALT_LEN, ScramCredential};

use crate::{Client, ClientError};

/// The name of the cluster resource in ACL bindings.
pub const CLUSTER_RESOURCE: &str = "weir-cluster";

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

/// What an ACL binding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceType {
    /// Topics.
    Topic,
    /// Consumer groups.
    Group,
    /// WebAssembly modules.
    Module,
    /// The cluster (its name is [`CLUSTER_RESOURCE`]).
    Cluster,
}

/// How a binding's resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PatternType {
    /// The exact name; `*` matches every name.
    #[default]
    Literal,
    /// Every name starting with it.
    Prefixed,
}

/// An operation in an ACL binding (Kafka's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AclOperation {
    /// Every operation.
    All,
    /// Read records; join a group.
    Read,
    /// Produce.
    Write,
    /// Create topics.
    Create,
    /// Delete topics, records, groups.
    Delete,
    /// Change modules, chains, replicas, users, ACLs.
    Alter,
    /// See a resource.
    Describe,
    /// See configs.
    DescribeConfigs,
    /// Change configs.
    AlterConfigs,
}

const OPERATIONS: [(AclOperation, &str, v1::AclOperation); 9] = [
    (AclOperation::All, "all", v1::AclOperation::All),
    (AclOperation::Read, "read", v1::AclOperation::Read),
    (AclOperation::Write, "write", v1::AclOperation::Write),
    (AclOperation::Create, "create", v1::AclOperation::Create),
    (AclOperation::Delete, "delete", v1::AclOperation::Delete),
    (AclOperation::Alter, "alter", v1::AclOperation::Alter),
    (
        AclOperation::Describe,
        "describe",
        v1::AclOperation::Describe,
    ),
    (
        AclOperation::DescribeConfigs,
        "describe-configs",
        v1::AclOperation::DescribeConfigs,
    ),
    (
        AclOperation::AlterConfigs,
        "alter-configs",
        v1::AclOperation::AlterConfigs,
    ),
];

impl fmt::Display for AclOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = OPERATIONS
            .iter()
            .find(|(op, _, _)| op == self)
            .map_or("?", |(_, name, _)| name);
        f.write_str(name)
    }
}

impl FromStr for AclOperation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.to_ascii_lowercase().replace('_', "-");
        OPERATIONS
            .iter()
            .find(|(_, name, _)| *name == wanted)
            .map(|(op, _, _)| *op)
            .ok_or_else(|| {
                let names: Vec<&str> = OPERATIONS.iter().map(|(_, name, _)| *name).collect();
                format!("unknown operation {s:?}: one of {}", names.join(", "))
            })
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceType::Topic => "topic",
            ResourceType::Group => "group",
            ResourceType::Module => "module",
            ResourceType::Cluster => "cluster",
        })
    }
}

/// Allow or deny. A deny binding wins over every allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AclPermission {
    /// Allows.
    Allow,
    /// Denies.
    Deny,
}

/// One ACL binding: `principal` may (or may not) do `operation` on the resources of
/// `resource_type` that `resource_name` matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AclBinding {
    /// `User:NAME`, or `User:*` for every authenticated user.
    pub principal: String,
    /// The resource type.
    pub resource_type: ResourceType,
    /// The name or prefix; [`CLUSTER_RESOURCE`] for the cluster.
    pub resource_name: String,
    /// How the name matches.
    pub pattern_type: PatternType,
    /// The operation.
    pub operation: AclOperation,
    /// Allow or deny.
    pub permission: AclPermission,
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

fn resource_type_to_pb(kind: ResourceType) -> v1::ResourceType {
    match kind {
        ResourceType::Topic => v1::ResourceType::Topic,
        ResourceType::Group => v1::ResourceType::Group,
        ResourceType::Module => v1::ResourceType::Module,
        ResourceType::Cluster => v1::ResourceType::Cluster,
    }
}

impl From<&AclBinding> for v1::AclBinding {
    fn from(b: &AclBinding) -> Self {
        let operation = OPERATIONS
            .iter()
            .find(|(op, _, _)| *op == b.operation)
            .map_or(v1::AclOperation::Unspecified, |(_, _, pb)| *pb);
        v1::AclBinding {
            principal: b.principal.clone(),
            resource_type: resource_type_to_pb(b.resource_type).into(),
            resource_name: b.resource_name.clone(),
            pattern_type: match b.pattern_type {
                PatternType::Literal => v1::PatternType::Literal,
                PatternType::Prefixed => v1::PatternType::Prefixed,
            }
            .into(),
            operation: operation.into(),
            permission: match b.permission {
                AclPermission::Allow => v1::AclPermission::Allow,
                AclPermission::Deny => v1::AclPermission::Deny,
            }
            .into(),
        }
    }
}

impl TryFrom<v1::AclBinding> for AclBinding {
    type Error = ClientError;

    fn try_from(b: v1::AclBinding) -> Result<Self, ClientError> {
        let resource_type = match b.resource_type() {
            v1::ResourceType::Topic => ResourceType::Topic,
            v1::ResourceType::Group => ResourceType::Group,
            v1::ResourceType::Module => ResourceType::Module,
            v1::ResourceType::Cluster => ResourceType::Cluster,
            v1::ResourceType::Unspecified => {
                return Err(ClientError::UnexpectedResponse(
                    "an ACL binding without a resource type",
                ));
            }
        };
        let operation = OPERATIONS
            .iter()
            .find(|(_, _, pb)| *pb == b.operation())
            .map(|(op, _, _)| *op)
            .ok_or(ClientError::UnexpectedResponse(
                "an ACL binding without an operation",
            ))?;
        Ok(AclBinding {
            resource_type,
            operation,
            pattern_type: match b.pattern_type() {
                v1::PatternType::Prefixed => PatternType::Prefixed,
                _ => PatternType::Literal,
            },
            permission: match b.permission() {
                v1::AclPermission::Deny => AclPermission::Deny,
                _ => AclPermission::Allow,
            },
            principal: b.principal,
            resource_name: b.resource_name,
        })
    }
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
                    .map_or(v1::ResourceType::Unspecified, resource_type_to_pb)
                    .into(),
                resource_name: filter.resource_name.clone(),
            })
            .await?
            .into_inner()
            .bindings;
        bindings.into_iter().map(AclBinding::try_from).collect()
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

    #[test]
    fn operations_parse_kafka_names() {
        assert_eq!(
            "describe-configs".parse(),
            Ok(AclOperation::DescribeConfigs)
        );
        assert_eq!("ALTER_CONFIGS".parse(), Ok(AclOperation::AlterConfigs));
        assert!("fly".parse::<AclOperation>().unwrap_err().contains("read"));
        assert_eq!(AclOperation::Write.to_string(), "write");
    }
}
