//! The transport between nodes, as openraft sees it.
//!
//! One node talks to each peer over one pooled connection carrying every group's messages,
//! tagged by group id (DESIGN §4). This build runs single-node clusters, where a group's only
//! voter never sends a message; a request to another node fails as unreachable, which openraft
//! treats as a peer that is down. The multi-node transport replaces [`PeerClient`]'s body.

use std::io;

use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend};

use crate::types::{NodeId, Snapshot, TypeConfig, Vote};
use weir_storage::GroupId;

/// The node's view of its peers, shared by all its groups.
#[derive(Debug, Clone, Default)]
pub struct Peers {}

impl Peers {
    /// Peers of a node that runs alone.
    pub fn single_node() -> Self {
        Self {}
    }

    pub(crate) fn for_group(&self, group: GroupId) -> GroupNetwork {
        GroupNetwork { group }
    }
}

/// openraft's network factory for one group.
pub(crate) struct GroupNetwork {
    group: GroupId,
}

impl RaftNetworkFactory<TypeConfig> for GroupNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerClient {
            group: self.group,
            target,
            addr: node.addr.clone(),
        }
    }
}

/// A group's client for one peer.
pub(crate) struct PeerClient {
    group: GroupId,
    target: NodeId,
    addr: String,
}

impl PeerClient {
    fn unreachable(&self) -> Unreachable<TypeConfig> {
        Unreachable::new(&io::Error::new(
            io::ErrorKind::NotConnected,
            format!(
                "group {}: no transport to node {} at {} (single-node build)",
                self.group, self.target, self.addr
            ),
        ))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = crate::types::SnapshotBytes;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: Snapshot,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        Err(StreamingError::Unreachable(self.unreachable()))
    }
}
