//! openraft's type configuration for DistriQueue: a log entry is a [`Batch`] of lifecycle
//! commands and its response the [`Outcome`] of each.

use std::io::Cursor;

use distriqueue_core::{Batch, Outcome};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};

/// A node's id in the orchestrator cluster.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// DistriQueue's Raft types: entries carry command batches, responses one outcome per command.
    pub TypeConfig:
        D = Batch,
        R = Vec<Outcome>,
        NodeId = NodeId,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The one-node cluster's network: there are no peers to reach, so every RPC reports the target
/// unreachable. The cluster issue replaces it with RPCs over HTTP under `/raft/...`.
#[derive(Clone, Default)]
pub struct NoPeers;

fn unreachable(target: NodeId) -> NetworkError {
    NetworkError::new(&std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        format!("node {target}: this orchestrator runs as a one-node cluster"),
    ))
}

/// The client for one (absent) peer.
pub struct NoPeer {
    target: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeer;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> NoPeer {
        NoPeer { target }
    }
}

impl RaftNetwork<TypeConfig> for NoPeer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(RPCError::Network(unreachable(self.target)))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(RPCError::Network(unreachable(self.target)))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(RPCError::Network(unreachable(self.target)))
    }
}
