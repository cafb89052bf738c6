//! What every RPC needs when authorization is on: the permission table of docs/security.md,
//! in code. Lists (topics, modules, groups) need nothing and show only what the caller may
//! describe; `DescribeCluster` needs nothing (clients find brokers with it, as Kafka's
//! metadata request).

use weir_proto::v1 as pb;

use crate::security::{AclOperation, Need, Resource};

/// The permissions a request needs.
pub(super) trait Permissions {
    /// Everything the request needs; each must be allowed.
    fn needs(&self) -> Vec<Need<'_>>;
}

fn on(operation: AclOperation, resource: Resource<'_>) -> Need<'_> {
    Need::On(operation, resource)
}

/// Read on each module a consumer names for its own chain.
fn read_modules(modules: &[pb::ModuleRef]) -> impl Iterator<Item = Need<'_>> {
    modules
        .iter()
        .map(|m| on(AclOperation::Read, Resource::module(&m.name)))
}

macro_rules! needs {
    ($($request:ty => |$r:ident| $needs:expr;)*) => {
        $(
            impl Permissions for $request {
                fn needs(&self) -> Vec<Need<'_>> {
                    let $r = self;
                    $needs
                }
            }
        )*
    };
}

needs! {
    pb::CreateTopicRequest => |r| vec![Need::AnyOf(vec![
        (AclOperation::Create, Resource::cluster()),
        (AclOperation::Create, Resource::topic(&r.name)),
    ])];
    pb::AlterTopicConfigsRequest => |r| vec![on(AclOperation::AlterConfigs, Resource::topic(&r.topic))];
    pb::DeleteTopicRequest => |r| vec![on(AclOperation::Delete, Resource::topic(&r.name))];
    pb::ListTopicsRequest => |_r| Vec::new();
    pb::DescribeTopicRequest => |r| vec![on(AclOperation::Describe, Resource::topic(&r.name))];
    pb::ProduceRequest => |r| vec![on(AclOperation::Write, Resource::topic(&r.topic))];
    pb::InitProducerIdRequest => |_r| vec![Need::AnyTopic(AclOperation::Write)];
    pb::FetchRequest => |r| std::iter::once(on(AclOperation::Read, Resource::topic(&r.topic)))
        .chain(read_modules(&r.modules))
        .collect();
    pb::SubscribeRequest => |r| std::iter::once(on(AclOperation::Read, Resource::topic(&r.topic)))
        .chain(read_modules(&r.modules))
        .collect();
    pb::ListOffsetsRequest => |r| vec![on(AclOperation::Describe, Resource::topic(&r.topic))];
    pb::DescribeClusterRequest => |_r| Vec::new();
    pb::AddNodeRequest => |_r| vec![on(AclOperation::Alter, Resource::cluster())];
    pb::RemoveNodeRequest => |_r| vec![on(AclOperation::Alter, Resource::cluster())];
    pb::MoveReplicaRequest => |_r| vec![on(AclOperation::Alter, Resource::cluster())];
    pb::DeleteRecordsRequest => |r| vec![on(AclOperation::Delete, Resource::topic(&r.topic))];
    pb::RegisterModuleRequest => |r| vec![on(AclOperation::Alter, Resource::module(&r.name))];
    pb::ListModulesRequest => |_r| Vec::new();
    pb::DescribeModuleRequest => |r| vec![on(AclOperation::Describe, Resource::module(&r.name))];
    pb::DeleteModuleRequest => |r| vec![on(AclOperation::Alter, Resource::module(&r.name))];
    pb::AttachModuleRequest => |r| {
        let module = r.module.as_ref().map_or("", |m| m.name.as_str());
        let mut needs = vec![
            on(AclOperation::Alter, Resource::topic(&r.topic)),
            on(AclOperation::Alter, Resource::module(module)),
        ];
        // Rejected records will be written there in the attacher's name.
        if !r.dead_letter_topic.is_empty() {
            needs.push(on(AclOperation::Write, Resource::topic(&r.dead_letter_topic)));
        }
        needs
    };
    pb::DetachModuleRequest => |r| vec![
        on(AclOperation::Alter, Resource::topic(&r.topic)),
        on(AclOperation::Alter, Resource::module(&r.name)),
    ];
    pb::JoinGroupRequest => |r| vec![on(AclOperation::Read, Resource::group(&r.group))];
    pb::GroupHeartbeatRequest => |r| vec![on(AclOperation::Read, Resource::group(&r.group))];
    pb::LeaveGroupRequest => |r| vec![on(AclOperation::Read, Resource::group(&r.group))];
    pb::CommitOffsetsRequest => |r| std::iter::once(on(AclOperation::Read, Resource::group(&r.group)))
        .chain(r.offsets.iter().map(|o| on(AclOperation::Read, Resource::topic(&o.topic))))
        .collect();
    pb::FetchCommittedOffsetsRequest => |r| std::iter::once(on(AclOperation::Describe, Resource::group(&r.group)))
        .chain(r.partitions.iter().map(|p| on(AclOperation::Describe, Resource::topic(&p.topic))))
        .collect();
    pb::ListGroupsRequest => |_r| Vec::new();
    pb::DescribeGroupRequest => |r| vec![on(AclOperation::Describe, Resource::group(&r.group))];
    pb::ResetGroupOffsetsRequest => |r| vec![
        on(AclOperation::Read, Resource::group(&r.group)),
        on(AclOperation::Read, Resource::topic(&r.topic)),
    ];
    pb::DeleteGroupRequest => |r| vec![on(AclOperation::Delete, Resource::group(&r.group))];
    pb::UserCredentialRequest => |_r| vec![on(AclOperation::Alter, Resource::cluster())];
    pb::DeleteUserRequest => |_r| vec![on(AclOperation::Alter, Resource::cluster())];
    pb::ListUsersRequest => |_r| vec![on(AclOperation::Describe, Resource::cluster())];
    pb::CreateAclsRequest => |_r| vec![on(AclOperation::Alter, Resource::cluster())];
    pb::DeleteAclsRequest => |_r| vec![on(AclOperation::Alter, Resource::cluster())];
    pb::ListAclsRequest => |_r| vec![on(AclOperation::Describe, Resource::cluster())];
}
