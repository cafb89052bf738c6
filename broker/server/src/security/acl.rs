//! ACL bindings in Kafka's model: a principal may (or may not) do an operation on the resources
//! a pattern matches. Bindings live in the replicated metadata; this file holds their shape,
//! their validation and how one matches a request.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use weir_proto::v1 as pb;

use super::principal::Principal;

/// The name of the one cluster resource, as Kafka's `kafka-cluster`.
pub const CLUSTER_NAME: &str = "weir-cluster";
/// The principal that stands for every authenticated user in a binding.
pub const EVERY_USER: &str = "User:*";
/// Longest resource name or prefix a binding takes.
const MAX_RESOURCE_NAME: usize = 255;

/// What a binding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceType {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// A WebAssembly module.
    Module,
    /// The cluster (users, ACLs, nodes, creating topics).
    Cluster,
}

/// How a binding's name matches a resource's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PatternType {
    /// Equal names; `*` matches every name.
    Literal,
    /// Names starting with the binding's.
    Prefixed,
}

/// What may be done. `All` stands for every operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operation {
    /// Every operation.
    All,
    /// Read records, join a group.
    Read,
    /// Produce.
    Write,
    /// Create a topic.
    Create,
    /// Delete a topic, records, a group.
    Delete,
    /// Change modules, chains, replicas, users, ACLs.
    Alter,
    /// See that it exists and how it is.
    Describe,
    /// See configs.
    DescribeConfigs,
    /// Change configs.
    AlterConfigs,
}

/// Allow or deny; deny wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Allows the operation.
    Allow,
    /// Denies it, whatever allows it.
    Deny,
}

/// One ACL binding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    /// `User:NAME` or `User:*`.
    pub principal: String,
    /// The resource type.
    pub resource_type: ResourceType,
    /// The name or prefix (`weir-cluster` for the cluster).
    pub resource_name: String,
    /// How `resource_name` matches.
    pub pattern_type: PatternType,
    /// The operation.
    pub operation: Operation,
    /// Allow or deny.
    pub permission: Permission,
}

/// A resource a request touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource<'a> {
    /// Its type.
    pub kind: ResourceType,
    /// Its name.
    pub name: &'a str,
}

impl<'a> Resource<'a> {
    /// The topic `name`.
    pub fn topic(name: &'a str) -> Self {
        Self {
            kind: ResourceType::Topic,
            name,
        }
    }

    /// The consumer group `name`.
    pub fn group(name: &'a str) -> Self {
        Self {
            kind: ResourceType::Group,
            name,
        }
    }

    /// The module `name`.
    pub fn module(name: &'a str) -> Self {
        Self {
            kind: ResourceType::Module,
            name,
        }
    }

    /// The cluster.
    pub fn cluster() -> Self {
        Self {
            kind: ResourceType::Cluster,
            name: CLUSTER_NAME,
        }
    }
}

impl fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ResourceType::Cluster => f.write_str("the cluster"),
            kind => write!(f, "{kind} '{}'", self.name),
        }
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

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::All => "ALL",
            Operation::Read => "READ",
            Operation::Write => "WRITE",
            Operation::Create => "CREATE",
            Operation::Delete => "DELETE",
            Operation::Alter => "ALTER",
            Operation::Describe => "DESCRIBE",
            Operation::DescribeConfigs => "DESCRIBE_CONFIGS",
            Operation::AlterConfigs => "ALTER_CONFIGS",
        })
    }
}

impl FromStr for Operation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "all" => Operation::All,
            "read" => Operation::Read,
            "write" => Operation::Write,
            "create" => Operation::Create,
            "delete" => Operation::Delete,
            "alter" => Operation::Alter,
            "describe" => Operation::Describe,
            "describe-configs" => Operation::DescribeConfigs,
            "alter-configs" => Operation::AlterConfigs,
            _ => return Err(format!("unknown operation {s:?}")),
        })
    }
}

impl Operation {
    /// Whether a binding for `self` covers a request for `wanted`. An allowed read, write,
    /// delete or alter implies describe, and allowed alter-configs implies describe-configs
    /// (Kafka's rules); `implied` is false for deny bindings, which cover only what they name.
    fn covers(self, wanted: Operation, implied: bool) -> bool {
        self == Operation::All
            || self == wanted
            || (implied
                && match wanted {
                    Operation::Describe => matches!(
                        self,
                        Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
                    ),
                    Operation::DescribeConfigs => self == Operation::AlterConfigs,
                    _ => false,
                })
    }
}

impl AclBinding {
    /// Whether this binding speaks of `principal`: its own name, or `User:*` for any
    /// authenticated user (never the anonymous caller, unlike Kafka: granting `User:*` does not
    /// open a resource to callers who did not authenticate).
    pub fn names(&self, principal: &Principal) -> bool {
        match principal {
            Principal::User(name) => {
                self.principal == EVERY_USER
                    || self.principal.strip_prefix("User:") == Some(name.as_str())
            }
            Principal::Anonymous => self.principal == Principal::ANONYMOUS,
            Principal::Node => false,
        }
    }

    /// Whether this binding's pattern matches `resource`.
    pub fn matches(&self, resource: Resource<'_>) -> bool {
        self.resource_type == resource.kind
            && match self.pattern_type {
                PatternType::Literal => {
                    self.resource_name == "*" || self.resource_name == resource.name
                }
                PatternType::Prefixed => resource.name.starts_with(&self.resource_name),
            }
    }

    /// Whether this binding decides `operation`: deny bindings only for what they name.
    pub fn covers(&self, operation: Operation) -> bool {
        self.operation
            .covers(operation, self.permission == Permission::Allow)
    }

    /// Checks a binding from a request: a principal `User:NAME` or `User:*`, a resource name,
    /// the cluster's name for the cluster.
    pub fn check(&self) -> Result<(), String> {
        let Some(name) = self.principal.strip_prefix("User:") else {
            return Err(format!(
                "invalid principal {:?}: expected User:NAME or User:*",
                self.principal
            ));
        };
        if name.is_empty() {
            return Err("invalid principal \"User:\": the name is empty".into());
        }
        if self.resource_name.is_empty() || self.resource_name.len() > MAX_RESOURCE_NAME {
            return Err(format!(
                "invalid resource name {:?}: must be 1 to {MAX_RESOURCE_NAME} bytes",
                self.resource_name
            ));
        }
        if self.resource_type == ResourceType::Cluster
            && (self.resource_name != CLUSTER_NAME || self.pattern_type != PatternType::Literal)
        {
            return Err(format!(
                "a cluster binding names the literal resource {CLUSTER_NAME:?}"
            ));
        }
        Ok(())
    }

    /// The binding a request carries.
    pub fn from_pb(binding: pb::AclBinding) -> Result<Self, String> {
        let resource_type = match binding.resource_type() {
            pb::ResourceType::Topic => ResourceType::Topic,
            pb::ResourceType::Group => ResourceType::Group,
            pb::ResourceType::Module => ResourceType::Module,
            pb::ResourceType::Cluster => ResourceType::Cluster,
            pb::ResourceType::Unspecified => {
                return Err("an ACL binding needs a resource type".into());
            }
        };
        let pattern_type = match binding.pattern_type() {
            pb::PatternType::Unspecified | pb::PatternType::Literal => PatternType::Literal,
            pb::PatternType::Prefixed => PatternType::Prefixed,
        };
        let operation = match binding.operation() {
            pb::AclOperation::All => Operation::All,
            pb::AclOperation::Read => Operation::Read,
            pb::AclOperation::Write => Operation::Write,
            pb::AclOperation::Create => Operation::Create,
            pb::AclOperation::Delete => Operation::Delete,
            pb::AclOperation::Alter => Operation::Alter,
            pb::AclOperation::Describe => Operation::Describe,
            pb::AclOperation::DescribeConfigs => Operation::DescribeConfigs,
            pb::AclOperation::AlterConfigs => Operation::AlterConfigs,
            pb::AclOperation::Unspecified => {
                return Err("an ACL binding needs an operation".into());
            }
        };
        let permission = match binding.permission() {
            pb::AclPermission::Allow => Permission::Allow,
            pb::AclPermission::Deny => Permission::Deny,
            pb::AclPermission::Unspecified => {
                return Err("an ACL binding needs a permission: allow or deny".into());
            }
        };
        let binding = Self {
            principal: binding.principal,
            resource_type,
            resource_name: binding.resource_name,
            pattern_type,
            operation,
            permission,
        };
        binding.check()?;
        Ok(binding)
    }

    /// The binding as the API shows it.
    pub fn to_pb(&self) -> pb::AclBinding {
        pb::AclBinding {
            principal: self.principal.clone(),
            resource_type: resource_type_to_pb(self.resource_type).into(),
            resource_name: self.resource_name.clone(),
            pattern_type: match self.pattern_type {
                PatternType::Literal => pb::PatternType::Literal,
                PatternType::Prefixed => pb::PatternType::Prefixed,
            }
            .into(),
            operation: match self.operation {
                Operation::All => pb::AclOperation::All,
                Operation::Read => pb::AclOperation::Read,
                Operation::Write => pb::AclOperation::Write,
                Operation::Create => pb::AclOperation::Create,
                Operation::Delete => pb::AclOperation::Delete,
                Operation::Alter => pb::AclOperation::Alter,
                Operation::Describe => pb::AclOperation::Describe,
                Operation::DescribeConfigs => pb::AclOperation::DescribeConfigs,
                Operation::AlterConfigs => pb::AclOperation::AlterConfigs,
            }
            .into(),
            permission: match self.permission {
                Permission::Allow => pb::AclPermission::Allow,
                Permission::Deny => pb::AclPermission::Deny,
            }
            .into(),
        }
    }
}

/// The API's resource type of `kind`.
pub fn resource_type_to_pb(kind: ResourceType) -> pb::ResourceType {
    match kind {
        ResourceType::Topic => pb::ResourceType::Topic,
        ResourceType::Group => pb::ResourceType::Group,
        ResourceType::Module => pb::ResourceType::Module,
        ResourceType::Cluster => pb::ResourceType::Cluster,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(principal: &str, name: &str, pattern: PatternType, op: Operation) -> AclBinding {
        AclBinding {
            principal: principal.into(),
            resource_type: ResourceType::Topic,
            resource_name: name.into(),
            pattern_type: pattern,
            operation: op,
            permission: Permission::Allow,
        }
    }

    #[test]
    fn patterns_match_literal_wildcard_and_prefixed_names() {
        let literal = binding("User:a", "orders", PatternType::Literal, Operation::Read);
        assert!(literal.matches(Resource::topic("orders")));
        assert!(!literal.matches(Resource::topic("orders-eu")));
        assert!(!literal.matches(Resource::group("orders")));
        let any = binding("User:a", "*", PatternType::Literal, Operation::Read);
        assert!(any.matches(Resource::topic("whatever")));
        let prefixed = binding("User:a", "orders-", PatternType::Prefixed, Operation::Read);
        assert!(prefixed.matches(Resource::topic("orders-eu")));
        assert!(!prefixed.matches(Resource::topic("orders")));
    }

    #[test]
    fn every_user_excludes_the_anonymous_caller() {
        let every = binding(EVERY_USER, "t", PatternType::Literal, Operation::Read);
        assert!(every.names(&Principal::User("bob".into())));
        assert!(!every.names(&Principal::Anonymous));
        let alice = binding("User:alice", "t", PatternType::Literal, Operation::Read);
        assert!(alice.names(&Principal::User("alice".into())));
        assert!(!alice.names(&Principal::User("alicea".into())));
    }

    #[test]
    fn allowed_operations_imply_describe_but_denied_ones_do_not() {
        let mut read = binding("User:a", "t", PatternType::Literal, Operation::Read);
        assert!(read.covers(Operation::Describe));
        assert!(!read.covers(Operation::Write));
        read.permission = Permission::Deny;
        assert!(!read.covers(Operation::Describe));
        let alter_configs = binding("User:a", "t", PatternType::Literal, Operation::AlterConfigs);
        assert!(alter_configs.covers(Operation::DescribeConfigs));
        let all = binding("User:a", "t", PatternType::Literal, Operation::All);
        assert!(all.covers(Operation::Delete));
    }

    #[test]
    fn bindings_with_bad_principals_or_cluster_names_are_refused() {
        let mut bad = binding("alice", "t", PatternType::Literal, Operation::Read);
        assert!(bad.check().unwrap_err().contains("User:NAME"));
        bad.principal = "User:alice".into();
        bad.resource_type = ResourceType::Cluster;
        assert!(bad.check().unwrap_err().contains(CLUSTER_NAME));
        bad.resource_name = CLUSTER_NAME.into();
        assert_eq!(bad.check(), Ok(()));
    }
}
