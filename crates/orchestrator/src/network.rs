//! Raft RPCs between orchestrator nodes over HTTP (issue 5, item 1; issue 11, item 3), the
//! client side: [`HttpNetwork`] (openraft's `RaftNetworkFactory`) posts each RPC as JSON to the
//! peer port (`peer.rs`) of the target: `/raft/append`, `/raft/vote` or `/raft/snapshot`, each
//! signed with the cluster secret. A peer's address is the `addr` of its `BasicNode` in the
//! membership: its peer URL. A run of entries too long for one request is sent in parts (a
//! partial success tells openraft how far it got).

use std::sync::Arc;
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

use crate::peer::{signed_headers, PeerContact, PeerInfo, PeerKey, APPEND_LIMIT};
use crate::raft::{NodeId, TypeConfig};

/// How long establishing a connection to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The most bytes of entries this node puts in one AppendEntries request: well under the
/// receiver's limit, so the request's framing always fits.
const APPEND_SEND_BYTES: usize = APPEND_LIMIT / 4 * 3;

/// The network of a cluster: one HTTP client shared by every peer connection, the cluster
/// secret that signs each request, and the record of which peers answered.
#[derive(Clone)]
pub struct HttpNetwork {
    http: reqwest::Client,
    key: PeerKey,
    contact: Arc<PeerContact>,
}

impl HttpNetwork {
    /// A network with its own connection pool, signing with `key`. Connections to peers leave
    /// from `local_ip` when given: a node that listens on one address of a multi-homed host (or
    /// on its own loopback address, as the partition tests do) also talks to its peers from it.
    pub(crate) fn new(
        local_ip: Option<std::net::IpAddr>,
        key: PeerKey,
        contact: Arc<PeerContact>,
    ) -> HttpNetwork {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .local_address(local_ip)
            .build()
            .unwrap_or_default();
        HttpNetwork { http, key, contact }
    }

    /// `GET <peer_url>/raft/info`: the peer's id and API URL.
    ///
    /// Errors: the peer did not answer, or not with its info.
    pub(crate) async fn info(&self, peer_url: &str) -> Result<PeerInfo, reqwest::Error> {
        let path = "/raft/info";
        self.http
            .get(format!("{}{path}", peer_url.trim_end_matches('/')))
            .headers(signed_headers(&self.key, "GET", path, b""))
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }
}

/// The connection to one peer.
pub struct Peer {
    network: HttpNetwork,
    target: NodeId,
    base: String,
}

impl RaftNetworkFactory<TypeConfig> for HttpNetwork {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            network: self.clone(),
            target,
            base: node.addr.trim_end_matches('/').to_string(),
        }
    }
}

fn network_error(error: impl std::error::Error + 'static) -> NetworkError {
    NetworkError::new(&error)
}

impl Peer {
    /// Posts `body` (JSON) to `path`, signed, and decodes the peer's `Result`.
    async fn call<Resp, Err>(
        &self,
        path: &str,
        body: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, Err>>
    where
        Resp: DeserializeOwned,
        Err: std::error::Error + DeserializeOwned,
    {
        let network = &self.network;
        let response = network
            .http
            .post(format!("{}{path}", self.base))
            .timeout(option.hard_ttl())
            .headers(signed_headers(&network.key, "POST", path, &body))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|error| RPCError::Network(network_error(error)))?;
        let answer: Result<Resp, Err> = response
            .json()
            .await
            .map_err(|error| RPCError::Network(network_error(error)))?;
        network.contact.touch(self.target);
        answer.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }
}

/// `value` as JSON; a value that cannot be encoded is a network error of that RPC.
fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, NetworkError> {
    serde_json::to_vec(value).map_err(network_error)
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        // Send as many entries as fit (at least one): the rest go in the next request.
        let mut body = encode(&rpc).map_err(RPCError::Network)?;
        let mut truncated = false;
        while body.len() > APPEND_SEND_BYTES && rpc.entries.len() > 1 {
            let keep = rpc.entries.len() / 2;
            rpc.entries.truncate(keep);
            truncated = true;
            body = encode(&rpc).map_err(RPCError::Network)?;
        }
        let last_sent = rpc.entries.last().map(|entry| entry.log_id);
        let answer = self.call("/raft/append", body, &option).await?;
        Ok(match answer {
            AppendEntriesResponse::Success if truncated => {
                AppendEntriesResponse::PartialSuccess(last_sent)
            }
            other => other,
        })
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let body = encode(&rpc).map_err(RPCError::Network)?;
        self.call("/raft/snapshot", body, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let body = encode(&rpc).map_err(RPCError::Network)?;
        self.call("/raft/vote", body, &option).await
    }
}
