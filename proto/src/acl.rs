//! ACL bindings between the wire and [`weir_types::acl`], one conversion for the broker and the
//! client alike.

use weir_types::acl::{AclBinding, AclOperation, AclPermission, PatternType, ResourceType};

use crate::v1;

/// The wire's resource type of `kind`.
pub fn resource_type_to_pb(kind: ResourceType) -> v1::ResourceType {
    match kind {
        ResourceType::Topic => v1::ResourceType::Topic,
        ResourceType::Group => v1::ResourceType::Group,
        ResourceType::Module => v1::ResourceType::Module,
        ResourceType::Cluster => v1::ResourceType::Cluster,
    }
}

/// The resource type the wire's `kind` names; `None` for unspecified.
pub fn resource_type_from_pb(kind: v1::ResourceType) -> Option<ResourceType> {
    match kind {
        v1::ResourceType::Unspecified => None,
        v1::ResourceType::Topic => Some(ResourceType::Topic),
        v1::ResourceType::Group => Some(ResourceType::Group),
        v1::ResourceType::Module => Some(ResourceType::Module),
        v1::ResourceType::Cluster => Some(ResourceType::Cluster),
    }
}

const OPERATIONS: [(AclOperation, v1::AclOperation); 9] = [
    (AclOperation::All, v1::AclOperation::All),
    (AclOperation::Read, v1::AclOperation::Read),
    (AclOperation::Write, v1::AclOperation::Write),
    (AclOperation::Create, v1::AclOperation::Create),
    (AclOperation::Delete, v1::AclOperation::Delete),
    (AclOperation::Alter, v1::AclOperation::Alter),
    (AclOperation::Describe, v1::AclOperation::Describe),
    (
        AclOperation::DescribeConfigs,
        v1::AclOperation::DescribeConfigs,
    ),
    (AclOperation::AlterConfigs, v1::AclOperation::AlterConfigs),
];

impl From<&AclBinding> for v1::AclBinding {
    fn from(b: &AclBinding) -> Self {
        let operation = OPERATIONS
            .iter()
            .find(|(op, _)| *op == b.operation)
            .map_or(v1::AclOperation::Unspecified, |(_, pb)| *pb);
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
    type Error = String;

    /// A binding from the wire; unspecified fields other than the pattern type (literal) are
    /// refused, naming the field. The binding is not [`AclBinding::check`]ed here.
    fn try_from(b: v1::AclBinding) -> Result<Self, String> {
        let resource_type = resource_type_from_pb(b.resource_type())
            .ok_or("an ACL binding needs a resource type")?;
        let operation = OPERATIONS
            .iter()
            .find(|(_, pb)| *pb == b.operation())
            .map(|(op, _)| *op)
            .ok_or("an ACL binding needs an operation")?;
        let permission = match b.permission() {
            v1::AclPermission::Allow => AclPermission::Allow,
            v1::AclPermission::Deny => AclPermission::Deny,
            v1::AclPermission::Unspecified => {
                return Err("an ACL binding needs a permission: allow or deny".into());
            }
        };
        Ok(AclBinding {
            resource_type,
            operation,
            permission,
            pattern_type: match b.pattern_type() {
                v1::PatternType::Prefixed => PatternType::Prefixed,
                v1::PatternType::Unspecified | v1::PatternType::Literal => PatternType::Literal,
            },
            principal: b.principal,
            resource_name: b.resource_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_binding_survives_the_wire() {
        for (operation, _) in OPERATIONS {
            let binding = AclBinding {
                principal: "User:a".into(),
                resource_type: ResourceType::Module,
                resource_name: "m-".into(),
                pattern_type: PatternType::Prefixed,
                operation,
                permission: AclPermission::Deny,
            };
            assert_eq!(
                AclBinding::try_from(v1::AclBinding::from(&binding)),
                Ok(binding)
            );
        }
        let unspecified = v1::AclBinding {
            resource_type: v1::ResourceType::Topic.into(),
            ..Default::default()
        };
        assert!(
            AclBinding::try_from(unspecified)
                .unwrap_err()
                .contains("operation")
        );
    }
}
