//! The broker's side of ACL bindings (their vocabulary is `weir_types::acl`): the resource a
//! request touches, and which principals a binding speaks of.

use std::fmt;

pub use weir_types::acl::{
    AclBinding, AclOperation, AclPermission, CLUSTER_RESOURCE, EVERY_USER, PatternType,
    ResourceType,
};

use super::principal::Principal;

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
            name: CLUSTER_RESOURCE,
        }
    }

    /// Whether `binding`'s pattern matches this resource.
    pub fn matched_by(&self, binding: &AclBinding) -> bool {
        binding.matches(self.kind, self.name)
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

/// Whether `binding` speaks of `principal`: its own name, or `User:*` for any authenticated
/// user (never the anonymous caller, unlike Kafka: granting `User:*` does not open a resource
/// to callers who did not authenticate). Nodes need no bindings.
pub fn names(binding: &AclBinding, principal: &Principal) -> bool {
    match principal {
        Principal::User(name) => {
            binding.principal == EVERY_USER
                || binding.principal.strip_prefix("User:") == Some(name.as_str())
        }
        Principal::Anonymous => binding.principal == Principal::ANONYMOUS,
        Principal::Node => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_user_excludes_the_anonymous_caller() {
        let binding = |principal: &str| AclBinding {
            principal: principal.into(),
            resource_type: ResourceType::Topic,
            resource_name: "t".into(),
            pattern_type: PatternType::Literal,
            operation: AclOperation::Read,
            permission: AclPermission::Allow,
        };
        let every = binding(EVERY_USER);
        assert!(names(&every, &Principal::User("bob".into())));
        assert!(!names(&every, &Principal::Anonymous));
        let alice = binding("User:alice");
        assert!(names(&alice, &Principal::User("alice".into())));
        assert!(!names(&alice, &Principal::User("alicea".into())));
        assert!(names(&binding("User:ANONYMOUS"), &Principal::Anonymous));
    }
}
