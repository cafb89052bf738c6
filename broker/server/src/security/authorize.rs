//! Authorization: whether a principal may do what a request needs, by the ACL bindings of the
//! replicated metadata (Kafka's rules: deny wins, super users and nodes may do anything, and
//! once authorization is on, anything no binding allows is denied).

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use super::acl::{
    AclBinding, AclOperation, AclPermission, PatternType, Resource, ResourceType, names,
};
use super::principal::Principal;

/// One thing a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need<'a> {
    /// An operation on a resource.
    On(AclOperation, Resource<'a>),
    /// Any one of these (creating a topic: create on the cluster or on the topic).
    AnyOf(Vec<(AclOperation, Resource<'a>)>),
    /// An operation on at least one topic (Kafka's rule for an idempotent producer's id).
    AnyTopic(AclOperation),
}

impl fmt::Display for Need<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Need::On(operation, resource) => {
                write!(f, "{} on {resource}", operation.kafka_name())
            }
            Need::AnyOf(alternatives) => {
                for (i, (operation, resource)) in alternatives.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" or ")?;
                    }
                    write!(f, "{} on {resource}", operation.kafka_name())?;
                }
                Ok(())
            }
            Need::AnyTopic(operation) => write!(f, "{} on any topic", operation.kafka_name()),
        }
    }
}

impl Need<'_> {
    /// The operation and resource type the audit counts a denial under.
    pub fn labels(&self) -> (String, &'static str, String) {
        let (operation, resource) = match self {
            Need::On(operation, resource) => (*operation, Some(*resource)),
            Need::AnyOf(alternatives) => match alternatives.last() {
                Some((operation, resource)) => (*operation, Some(*resource)),
                None => (AclOperation::All, None),
            },
            Need::AnyTopic(operation) => (*operation, None),
        };
        let kind = match resource.map_or(ResourceType::Topic, |r| r.kind) {
            ResourceType::Topic => "topic",
            ResourceType::Group => "group",
            ResourceType::Module => "module",
            ResourceType::Cluster => "cluster",
        };
        let name = resource.map_or_else(|| "*".to_owned(), |r| r.name.to_owned());
        (operation.kafka_name(), kind, name)
    }
}

/// Decides requests against the ACL bindings.
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    /// Whether ACLs are enforced; when not, everything is allowed.
    pub enabled: bool,
    /// Principals (`User:NAME`) allowed everything.
    pub super_users: HashSet<String>,
}

impl Authorizer {
    /// Whether `principal` may do `operation` on `resource`.
    pub fn allows(
        &self,
        principal: &Principal,
        acls: &BTreeSet<AclBinding>,
        operation: AclOperation,
        resource: Resource<'_>,
    ) -> bool {
        if self.unrestricted(principal) {
            return true;
        }
        let mut allowed = false;
        for binding in acls
            .iter()
            .filter(|b| names(b, principal) && resource.matched_by(b) && b.covers(operation))
        {
            match binding.permission {
                AclPermission::Deny => return false,
                AclPermission::Allow => allowed = true,
            }
        }
        allowed
    }

    /// Whether `principal` is allowed everything: authorization off, a node, a super user.
    pub fn unrestricted(&self, principal: &Principal) -> bool {
        !self.enabled
            || *principal == Principal::Node
            || self.super_users.contains(&principal.to_string())
    }

    /// The first of `needs` that `principal` lacks, if any.
    pub fn missing<'a>(
        &self,
        principal: &Principal,
        acls: &BTreeSet<AclBinding>,
        needs: &'a [Need<'a>],
    ) -> Option<&'a Need<'a>> {
        if self.unrestricted(principal) {
            return None;
        }
        needs.iter().find(|need| match need {
            Need::On(operation, resource) => !self.allows(principal, acls, *operation, *resource),
            Need::AnyOf(alternatives) => !alternatives
                .iter()
                .any(|(operation, resource)| self.allows(principal, acls, *operation, *resource)),
            Need::AnyTopic(operation) => !acls.iter().any(|b| {
                b.resource_type == ResourceType::Topic
                    && b.permission == AclPermission::Allow
                    && names(b, principal)
                    && b.covers(*operation)
                    && (b.pattern_type != PatternType::Literal
                        || self.allows(
                            principal,
                            acls,
                            *operation,
                            Resource::topic(&b.resource_name),
                        ))
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(principal: &str, name: &str, op: AclOperation, permission: AclPermission) -> AclBinding {
        AclBinding {
            principal: principal.into(),
            resource_type: ResourceType::Topic,
            resource_name: name.into(),
            pattern_type: PatternType::Literal,
            operation: op,
            permission,
        }
    }

    fn alice() -> Principal {
        Principal::User("alice".into())
    }

    #[test]
    fn deny_wins_and_nothing_is_allowed_by_default() {
        let authorizer = Authorizer {
            enabled: true,
            super_users: HashSet::from(["User:root".to_owned()]),
        };
        let mut acls = BTreeSet::new();
        let orders = Resource::topic("orders");
        assert!(!authorizer.allows(&alice(), &acls, AclOperation::Read, orders));
        acls.insert(acl(
            "User:*",
            "orders",
            AclOperation::Read,
            AclPermission::Allow,
        ));
        assert!(authorizer.allows(&alice(), &acls, AclOperation::Read, orders));
        assert!(!authorizer.allows(&Principal::Anonymous, &acls, AclOperation::Read, orders));
        acls.insert(acl(
            "User:alice",
            "*",
            AclOperation::All,
            AclPermission::Deny,
        ));
        assert!(!authorizer.allows(&alice(), &acls, AclOperation::Read, orders));
        let root = Principal::User("root".into());
        assert!(authorizer.allows(&root, &acls, AclOperation::Delete, orders));
        assert!(authorizer.allows(&Principal::Node, &acls, AclOperation::Delete, orders));
    }

    #[test]
    fn needs_name_what_is_missing() {
        let authorizer = Authorizer {
            enabled: true,
            ..Default::default()
        };
        let acls = BTreeSet::from([acl(
            "User:alice",
            "t",
            AclOperation::Write,
            AclPermission::Allow,
        )]);
        let needs = [
            Need::AnyTopic(AclOperation::Write),
            Need::AnyOf(vec![
                (AclOperation::Create, Resource::cluster()),
                (AclOperation::Create, Resource::topic("t")),
            ]),
        ];
        let missing = authorizer.missing(&alice(), &acls, &needs).unwrap();
        assert_eq!(
            missing.to_string(),
            "CREATE on the cluster or CREATE on topic 't'"
        );
        let off = Authorizer::default();
        assert_eq!(off.missing(&alice(), &acls, &needs), None);
    }
}
