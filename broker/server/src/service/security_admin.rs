//! User and ACL administration RPCs. A user's credential arrives derived (SCRAM-SHA-256 by the
//! client), so no password passes through here.
//!
//! Each change is answered once the node that took it has applied it, so a client's next
//! request to that node sees it; other nodes apply it within about a heartbeat (as Kafka's
//! brokers apply ACL changes from the metadata log).

use tonic::Request;
use weir_proto::v1 as pb;
use weir_types::scram::ScramCredential;

use super::BrokerService;
use crate::error::BrokerError;
use crate::metadata::Command;
use crate::security::{AclBinding, check_user_name};

/// The one mechanism users have.
const MECHANISM: &str = "SCRAM-SHA-256";

fn user_description(name: &str, credential: &ScramCredential) -> pb::UserDescription {
    pb::UserDescription {
        name: name.to_owned(),
        mechanism: MECHANISM.to_owned(),
        iterations: credential.iterations,
    }
}

impl BrokerService {
    /// Creates a user (`replace` false) or changes its credential.
    pub(super) async fn handle_put_user(
        &self,
        request: Request<pb::UserCredentialRequest>,
        replace: bool,
    ) -> Result<pb::UserDescription, BrokerError> {
        let req = request.into_inner();
        check_user_name(&req.name).map_err(BrokerError::InvalidArgument)?;
        let credential = req
            .credential
            .ok_or_else(|| BrokerError::InvalidArgument("a user needs a credential".into()))?;
        let credential = ScramCredential {
            salt: credential.salt.to_vec(),
            iterations: credential.iterations,
            stored_key: credential.stored_key.to_vec(),
            server_key: credential.server_key.to_vec(),
        };
        credential
            .check()
            .map_err(|e| BrokerError::InvalidArgument(e.to_string()))?;
        let description = user_description(&req.name, &credential);
        let node = self.node()?;
        node.propose(Command::PutUser {
            name: req.name.clone(),
            credential: credential.clone(),
            replace,
        })
        .await?;
        node.wait_for_metadata(|m| m.users.get(&req.name) == Some(&credential))
            .await;
        tracing::info!(user = %req.name, replace, "user credential stored");
        Ok(description)
    }

    pub(super) async fn handle_delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<pb::DeleteUserResponse, BrokerError> {
        let name = request.into_inner().name;
        let node = self.node()?;
        node.propose(Command::DeleteUser { name: name.clone() })
            .await?;
        node.wait_for_metadata(|m| !m.users.contains_key(&name))
            .await;
        tracing::info!(user = %name, "user deleted");
        Ok(pb::DeleteUserResponse {})
    }

    pub(super) async fn handle_list_users(
        &self,
        _request: Request<pb::ListUsersRequest>,
    ) -> Result<pb::ListUsersResponse, BrokerError> {
        let metadata = self.node()?.metadata();
        Ok(pb::ListUsersResponse {
            users: metadata
                .users
                .iter()
                .map(|(name, credential)| user_description(name, credential))
                .collect(),
        })
    }

    pub(super) async fn handle_create_acls(
        &self,
        request: Request<pb::CreateAclsRequest>,
    ) -> Result<pb::CreateAclsResponse, BrokerError> {
        let bindings = bindings_of(request.into_inner().bindings)?;
        let count = bindings.len();
        let node = self.node()?;
        node.propose(Command::CreateAcls {
            bindings: bindings.clone(),
        })
        .await?;
        node.wait_for_metadata(|m| bindings.iter().all(|b| m.acls.contains(b)))
            .await;
        tracing::info!(bindings = count, "ACL bindings created");
        Ok(pb::CreateAclsResponse {})
    }

    pub(super) async fn handle_delete_acls(
        &self,
        request: Request<pb::DeleteAclsRequest>,
    ) -> Result<pb::DeleteAclsResponse, BrokerError> {
        let bindings = bindings_of(request.into_inner().bindings)?;
        let node = self.node()?;
        let deleted = match node
            .propose(Command::DeleteAcls {
                bindings: bindings.clone(),
            })
            .await?
        {
            crate::metadata::Applied::Removed(n) => n,
            _ => 0,
        };
        node.wait_for_metadata(|m| bindings.iter().all(|b| !m.acls.contains(b)))
            .await;
        tracing::info!(deleted, "ACL bindings deleted");
        Ok(pb::DeleteAclsResponse { deleted })
    }

    pub(super) async fn handle_list_acls(
        &self,
        request: Request<pb::ListAclsRequest>,
    ) -> Result<pb::ListAclsResponse, BrokerError> {
        let filter = request.into_inner();
        let resource_type = weir_proto::acl::resource_type_from_pb(filter.resource_type());
        let metadata = self.node()?.metadata();
        let bindings = metadata
            .acls
            .iter()
            .filter(|b| filter.principal.as_ref().is_none_or(|p| *p == b.principal))
            .filter(|b| resource_type.is_none_or(|t| t == b.resource_type))
            .filter(|b| {
                filter
                    .resource_name
                    .as_ref()
                    .is_none_or(|n| *n == b.resource_name)
            })
            .map(pb::AclBinding::from)
            .collect();
        Ok(pb::ListAclsResponse { bindings })
    }
}

fn bindings_of(bindings: Vec<pb::AclBinding>) -> Result<Vec<AclBinding>, BrokerError> {
    if bindings.is_empty() {
        return Err(BrokerError::InvalidArgument(
            "the request names no ACL binding".into(),
        ));
    }
    bindings
        .into_iter()
        .map(|b| {
            let binding = AclBinding::try_from(b).map_err(BrokerError::InvalidArgument)?;
            binding.check().map_err(BrokerError::InvalidArgument)?;
            Ok(binding)
        })
        .collect()
}
