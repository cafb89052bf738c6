//! ACL bindings in Kafka's model, the vocabulary the broker stores and enforces and clients
//! create and list: a principal may (or may not) do an operation on the resources of one type
//! whose name a pattern matches. How a request's principal is found, and what each request
//! needs, are the broker's.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The name of the one cluster resource, as Kafka's `kafka-cluster`.
pub const CLUSTER_RESOURCE: &str = "weir-cluster";
/// The principal that stands in a binding for every authenticated user.
pub const EVERY_USER: &str = "User:*";
/// The longest resource name or prefix a binding takes, in bytes.
pub const MAX_RESOURCE_NAME: usize = 255;

/// What a binding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceType {
    /// Topics.
    Topic,
    /// Consumer groups.
    Group,
    /// WebAssembly modules.
    Module,
    /// The cluster (users, ACLs, nodes, creating topics); its name is [`CLUSTER_RESOURCE`].
    Cluster,
}

/// How a binding's resource name matches.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum PatternType {
    /// The exact name; `*` matches every name.
    #[default]
    Literal,
    /// Every name starting with it.
    Prefixed,
}

/// An operation (Kafka's names). `All` stands for every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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

/// Allow or deny. A deny binding wins over every allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AclPermission {
    /// Allows.
    Allow,
    /// Denies.
    Deny,
}

/// One ACL binding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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

/// The operations with their command-line names.
const OPERATION_NAMES: [(AclOperation, &str); 9] = [
    (AclOperation::All, "all"),
    (AclOperation::Read, "read"),
    (AclOperation::Write, "write"),
    (AclOperation::Create, "create"),
    (AclOperation::Delete, "delete"),
    (AclOperation::Alter, "alter"),
    (AclOperation::Describe, "describe"),
    (AclOperation::DescribeConfigs, "describe-configs"),
    (AclOperation::AlterConfigs, "alter-configs"),
];

impl AclOperation {
    /// The command-line name: `read`, `describe-configs`, ...
    pub fn name(self) -> &'static str {
        OPERATION_NAMES
            .iter()
            .find(|(op, _)| *op == self)
            .map_or("?", |(_, name)| name)
    }

    /// Kafka's upper-case name, as denials say it: `READ`, `DESCRIBE_CONFIGS`, ...
    pub fn kafka_name(self) -> String {
        self.name().to_ascii_uppercase().replace('-', "_")
    }

    /// Whether a binding for `self` decides a request for `wanted`. An allowed read, write,
    /// delete or alter implies describe, and allowed alter-configs implies describe-configs
    /// (Kafka's rules); a deny binding (`implied` false) covers only what it names.
    pub fn covers(self, wanted: AclOperation, implied: bool) -> bool {
        self == AclOperation::All
            || self == wanted
            || (implied
                && match wanted {
                    AclOperation::Describe => matches!(
                        self,
                        AclOperation::Read
                            | AclOperation::Write
                            | AclOperation::Delete
                            | AclOperation::Alter
                    ),
                    AclOperation::DescribeConfigs => self == AclOperation::AlterConfigs,
                    _ => false,
                })
    }
}

impl fmt::Display for AclOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AclOperation {
    type Err = String;

    /// A command-line or Kafka name, in any case: `describe-configs`, `DESCRIBE_CONFIGS`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.to_ascii_lowercase().replace('_', "-");
        OPERATION_NAMES
            .iter()
            .find(|(_, name)| *name == wanted)
            .map(|(op, _)| *op)
            .ok_or_else(|| {
                let names: Vec<&str> = OPERATION_NAMES.iter().map(|(_, name)| *name).collect();
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

impl fmt::Display for PatternType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PatternType::Literal => "literal",
            PatternType::Prefixed => "prefixed",
        })
    }
}

impl fmt::Display for AclPermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AclPermission::Allow => "allow",
            AclPermission::Deny => "deny",
        })
    }
}

impl AclBinding {
    /// Whether this binding's pattern matches the resource `name` of type `kind`.
    pub fn matches(&self, kind: ResourceType, name: &str) -> bool {
        self.resource_type == kind
            && match self.pattern_type {
                PatternType::Literal => self.resource_name == "*" || self.resource_name == name,
                PatternType::Prefixed => name.starts_with(&self.resource_name),
            }
    }

    /// Whether this binding decides `operation`: a deny binding only what it names.
    pub fn covers(&self, operation: AclOperation) -> bool {
        self.operation
            .covers(operation, self.permission == AclPermission::Allow)
    }

    /// Checks a binding: a principal `User:NAME` or `User:*`, a resource name of 1 to 255
    /// bytes, the cluster's own name (literal) for the cluster.
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
            && (self.resource_name != CLUSTER_RESOURCE || self.pattern_type != PatternType::Literal)
        {
            return Err(format!(
                "a cluster binding names the literal resource {CLUSTER_RESOURCE:?}"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(name: &str, pattern: PatternType, op: AclOperation) -> AclBinding {
        AclBinding {
            principal: "User:a".into(),
            resource_type: ResourceType::Topic,
            resource_name: name.into(),
            pattern_type: pattern,
            operation: op,
            permission: AclPermission::Allow,
        }
    }

    #[test]
    fn patterns_match_literal_wildcard_and_prefixed_names() {
        let literal = binding("orders", PatternType::Literal, AclOperation::Read);
        assert!(literal.matches(ResourceType::Topic, "orders"));
        assert!(!literal.matches(ResourceType::Topic, "orders-eu"));
        assert!(!literal.matches(ResourceType::Group, "orders"));
        let any = binding("*", PatternType::Literal, AclOperation::Read);
        assert!(any.matches(ResourceType::Topic, "whatever"));
        let prefixed = binding("orders-", PatternType::Prefixed, AclOperation::Read);
        assert!(prefixed.matches(ResourceType::Topic, "orders-eu"));
        assert!(!prefixed.matches(ResourceType::Topic, "orders"));
    }

    #[test]
    fn allowed_operations_imply_describe_but_denied_ones_do_not() {
        let mut read = binding("t", PatternType::Literal, AclOperation::Read);
        assert!(read.covers(AclOperation::Describe));
        assert!(!read.covers(AclOperation::Write));
        read.permission = AclPermission::Deny;
        assert!(!read.covers(AclOperation::Describe));
        let alter_configs = binding("t", PatternType::Literal, AclOperation::AlterConfigs);
        assert!(alter_configs.covers(AclOperation::DescribeConfigs));
        let all = binding("t", PatternType::Literal, AclOperation::All);
        assert!(all.covers(AclOperation::Delete));
    }

    #[test]
    fn bindings_with_bad_principals_or_cluster_names_are_refused() {
        let mut bad = binding("t", PatternType::Literal, AclOperation::Read);
        bad.principal = "alice".into();
        assert!(bad.check().unwrap_err().contains("User:NAME"));
        bad.principal = "User:alice".into();
        bad.resource_type = ResourceType::Cluster;
        assert!(bad.check().unwrap_err().contains(CLUSTER_RESOURCE));
        bad.resource_name = CLUSTER_RESOURCE.into();
        assert_eq!(bad.check(), Ok(()));
    }

    #[test]
    fn operations_parse_command_line_and_kafka_names() {
        assert_eq!(
            "describe-configs".parse(),
            Ok(AclOperation::DescribeConfigs)
        );
        assert_eq!("ALTER_CONFIGS".parse(), Ok(AclOperation::AlterConfigs));
        assert!("fly".parse::<AclOperation>().unwrap_err().contains("read"));
        assert_eq!(AclOperation::Write.to_string(), "write");
        assert_eq!(
            AclOperation::DescribeConfigs.kafka_name(),
            "DESCRIBE_CONFIGS"
        );
    }
}
