//! Raft RPCs between orchestrator nodes over HTTP (issue 5, item 1), the client side:
//! [`HttpNetwork`] (openraft's `RaftNetworkFactory`) posts each RPC as JSON to the peer's
//! `/raft/append`, `/raft/vote` or `/raft/snapshot` (served by `api/raft.rs`). A peer's
//! address is the `addr` of its `BasicNode` in the membership: its orchestrator base URL.

use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::raft::{NodeId, TypeConfig};

/// How long establishing a connection to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The network of a cluster: one HTTP client shared by every peer connection.
#[derive(Clone)]
pub struct HttpNetwork {
    http: reqwest::Client,
}

impl HttpNetwork {
    /// A network with its own connection pool. Connections to peers leave from `local_ip`
    /// when given: a node that listens on one address of a multi-homed host (or on its own
    /// loopback address, as the partition tests do) also talks to its peers from it.
    pub fn new(local_ip: Option<std::net::IpAddr>) -> HttpNetwork {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .local_address(local_ip)
            .build()
            .unwrap_or_default();
        HttpNetwork { http }
    }
}

/// The connection to one peer.
pub struct Peer {
    http: reqwest::Client,
    target: NodeId,
    base: String,
}

impl RaftNetworkFactory<TypeConfig> for HttpNetwork {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            http: self.http.clone(),
            target,
            base: node.addr.trim_end_matches('/').to_string(),
        }
    }
}

fn network_error(error: impl std::error::Error + 'static) -> NetworkError {
    NetworkError::new(&error)
}

impl Peer {
    /// Posts `request` to `path` and decodes the peer's `Result`.
    async fn call<Req, Resp, Err>(
        &self,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, Err>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        Err: std::error::Error + DeserializeOwned,
    {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .timeout(option.hard_ttl())
            .json(request)
            .send()
            .await
            .map_err(|error| RPCError::Network(network_error(error)))?;
        let answer: Result<Resp, Err> = response
            .json()
            .await
            .map_err(|error| RPCError::Network(network_error(error)))?;
        answer.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("/raft/vote", &rpc, &option).await
    }
}
