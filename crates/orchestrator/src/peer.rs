//! The peer port (issue 11, item 3; SECURITY.md): the Raft RPCs between orchestrator nodes
//! (`POST /raft/append`, `/raft/vote`, `/raft/snapshot`) and `GET /raft/info` (a node's API
//! URL, for forwarding), on their own listener (`--peer-addr`), never on the public API.
//!
//! Every request is signed with the cluster secret ([`PeerKey`]): an HMAC-SHA256 over the
//! method, the path, the sender's node id, a timestamp and the body's SHA-256, in the
//! `x-distriqueue-peer` header. A request is accepted only when the signature holds, the
//! timestamp is within 30 s of this node's clock, and the sender is a current member (or one of
//! the configured `--peers`); the header is checked before the body is read. Bodies are bounded
//! per route; snapshot chunks must come in order.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use distriqueue_core::api::ErrorBody;
use distriqueue_util::clock;
use hmac::{Hmac, KeyInit, Mac};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::handle::OrchestratorHandle;
use crate::raft::{NodeId, TypeConfig};

/// The header that carries a peer request's signature.
pub(crate) const PEER_HEADER: &str = "x-distriqueue-peer";

/// How far a signed request's timestamp may be from this node's clock.
const MAX_SKEW_MS: u64 = 30_000;

/// Shortest cluster secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// Largest body of `/raft/append`. The sender splits a longer run of entries across requests
/// (`network.rs`), and the proposer keeps entries far smaller (`proposer.rs`).
pub(crate) const APPEND_LIMIT: usize = 64 * 1024 * 1024;
/// Largest body of `/raft/snapshot`: a chunk (256 KiB, as a JSON array of numbers) and its
/// metadata.
const SNAPSHOT_LIMIT: usize = 8 * 1024 * 1024;
/// Largest body of `/raft/vote`.
const VOTE_LIMIT: usize = 64 * 1024;

/// A peer counts as reachable while it was heard from (or answered) this recently.
const REACHABLE_WITHIN: Duration = Duration::from_secs(3);

/// The cluster secret and this node's id: signs outgoing peer requests and checks incoming ones.
#[derive(Clone)]
pub(crate) struct PeerKey {
    secret: Arc<Vec<u8>>,
    node_id: NodeId,
}

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerKey(node {}, ***)", self.node_id)
    }
}

impl PeerKey {
    /// The key of node `node_id` with the cluster's `secret`.
    pub(crate) fn new(secret: &str, node_id: NodeId) -> PeerKey {
        PeerKey {
            secret: Arc::new(secret.as_bytes().to_vec()),
            node_id,
        }
    }

    fn mac(
        &self,
        method: &str,
        path: &str,
        sender: NodeId,
        at_ms: i64,
        body: &[u8],
    ) -> Hmac<Sha256> {
        let body_digest = Sha256::digest(body);
        // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.secret) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of every length"),
        };
        for part in [
            b"distriqueue-peer-v1".as_slice(),
            method.as_bytes(),
            path.as_bytes(),
            sender.to_string().as_bytes(),
            at_ms.to_string().as_bytes(),
            body_digest.as_slice(),
        ] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// The signature header of a request from this node: `v1 <node id> <unix ms> <hex mac>`.
    pub(crate) fn sign(&self, method: &str, path: &str, body: &[u8]) -> String {
        let at_ms = clock::now().0;
        let tag = self
            .mac(method, path, self.node_id, at_ms, body)
            .finalize()
            .into_bytes();
        format!(
            "v1 {} {at_ms} {}",
            self.node_id,
            distriqueue_core::to_hex(&tag)
        )
    }

    /// The sender of a signed request, when its signature holds and its time is near ours.
    ///
    /// Errors: what is wrong with the signature (no signature, a malformed or wrong one, a
    /// timestamp too far off).
    pub(crate) fn verify(
        &self,
        header: Option<&HeaderValue>,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<NodeId, &'static str> {
        let header = header
            .and_then(|value| value.to_str().ok())
            .ok_or("no peer signature")?;
        let mut parts = header.split(' ');
        let (Some("v1"), Some(sender), Some(at_ms), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err("a malformed peer signature");
        };
        let sender: NodeId = sender.parse().map_err(|_| "a malformed peer signature")?;
        let at_ms: i64 = at_ms.parse().map_err(|_| "a malformed peer signature")?;
        if clock::now().0.abs_diff(at_ms) > MAX_SKEW_MS {
            return Err("a peer signature too old (or clocks more than 30 s apart)");
        }
        let tag = unhex(tag).ok_or("a malformed peer signature")?;
        self.mac(method, path, sender, at_ms, body)
            .verify_slice(&tag)
            .map_err(|_| "a wrong peer signature")?;
        Ok(sender)
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).ok())
        .collect()
}

/// When each peer was last heard from (a signed request came in) or answered (an RPC to it
/// succeeded): the Raft status's `reachable`, without probing anyone.
#[derive(Debug, Default)]
pub(crate) struct PeerContact(Mutex<HashMap<NodeId, Instant>>);

impl PeerContact {
    /// Notes contact with `node` now.
    pub(crate) fn touch(&self, node: NodeId) {
        self.0.lock().insert(node, Instant::now());
    }

    /// True when `node` was in contact within the last few seconds.
    pub(crate) fn reachable(&self, node: NodeId) -> bool {
        self.0
            .lock()
            .get(&node)
            .is_some_and(|at| at.elapsed() <= REACHABLE_WITHIN)
    }
}

/// `GET /raft/info`: what a node tells its peers about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PeerInfo {
    /// Its node id.
    pub(crate) node_id: NodeId,
    /// The base URL of its public API (where followers forward writes).
    pub(crate) api_url: String,
}

/// What the peer server shares.
#[derive(Clone)]
pub(crate) struct PeerServer {
    pub(crate) handle: OrchestratorHandle,
    pub(crate) key: PeerKey,
    /// The configured `--peers`: accepted as senders before they appear in the membership (a
    /// new cluster's first RPCs reach nodes that have no log yet).
    pub(crate) configured: Arc<BTreeSet<NodeId>>,
    /// Per snapshot being received: the offset of the next chunk, and of the last one taken.
    pub(crate) snapshot_offsets: Arc<Mutex<HashMap<String, (u64, u64)>>>,
}

/// The peer server's router.
pub(crate) fn router(server: PeerServer) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/info", get(info))
        .fallback(|| async { refuse(StatusCode::NOT_FOUND, "no such peer route".into()) })
        .layer(axum::middleware::from_fn_with_state(
            server.clone(),
            authenticate,
        ))
        .with_state(server)
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(ErrorBody::new(message))).into_response()
}

/// Middleware: checks the signature header and the sender before anything else, then reads
/// the body (bounded by the route's limit), checks the signature over it, and passes it on.
async fn authenticate(State(server): State<PeerServer>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let limit = match parts.uri.path() {
        "/raft/append" => APPEND_LIMIT,
        "/raft/snapshot" => SNAPSHOT_LIMIT,
        _ => VOTE_LIMIT,
    };
    // Cheap checks first: a stranger's body is never read.
    let signature = parts.headers.get(PEER_HEADER);
    let Some(sender) = signature
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.split(' ').nth(1))
        .and_then(|id| id.parse::<NodeId>().ok())
    else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "a peer signature is required".into(),
        );
    };
    if !server.is_member(sender) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!("node {sender} is not a member of this cluster"),
        );
    }
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a peer request body is at most {limit} bytes here"),
            )
        }
    };
    let path = parts.uri.path().to_string();
    if let Err(why) = server
        .key
        .verify(signature, parts.method.as_str(), &path, &bytes)
    {
        tracing::warn!(%path, sender, why, "peer request refused");
        return refuse(StatusCode::UNAUTHORIZED, format!("refused: {why}"));
    }
    server.handle.peer_contact.touch(sender);
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

impl PeerServer {
    /// True for a node of the membership or of the configured peers.
    fn is_member(&self, node: NodeId) -> bool {
        self.configured.contains(&node)
            || self
                .handle
                .metrics()
                .membership_config
                .nodes()
                .any(|(id, _)| *id == node)
    }
}

/// A JSON body of type `T`; `Err` says what the route takes (a 400).
fn decode<T: serde::de::DeserializeOwned>(bytes: &Bytes, what: &str) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|error| format!("the body must be {what}: {error}"))
}

async fn append(State(server): State<PeerServer>, body: Bytes) -> Response {
    let request: AppendEntriesRequest<TypeConfig> = match decode(&body, "an AppendEntries request")
    {
        Ok(request) => request,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
    };
    Json(server.handle.raft.append_entries(request).await).into_response()
}

async fn vote(State(server): State<PeerServer>, body: Bytes) -> Response {
    let request: VoteRequest<NodeId> = match decode(&body, "a vote request") {
        Ok(request) => request,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
    };
    Json(server.handle.raft.vote(request).await).into_response()
}

/// A chunk is taken only at the offset that follows the last one (or again at the last one's,
/// a retry after a lost answer; or at 0, which starts the snapshot over).
async fn snapshot(State(server): State<PeerServer>, body: Bytes) -> Response {
    let request: InstallSnapshotRequest<TypeConfig> = match decode(&body, "a snapshot chunk") {
        Ok(request) => request,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
    };
    let id = request.meta.snapshot_id.clone();
    let (offset, len) = (request.offset, request.data.len() as u64);
    {
        let mut offsets = server.snapshot_offsets.lock();
        let (next, last) = offsets.get(&id).copied().unwrap_or((0, 0));
        if offset != 0 && offset != next && offset != last {
            return refuse(
                StatusCode::CONFLICT,
                format!("snapshot {id}: chunk at {offset}, expected {next}"),
            );
        }
        if request.done {
            offsets.remove(&id);
        } else {
            // Only the snapshot being received is tracked.
            offsets.retain(|other, _| *other == id);
            offsets.insert(id, (offset.saturating_add(len), offset));
        }
    }
    Json(server.handle.raft.install_snapshot(request).await).into_response()
}

async fn info(State(server): State<PeerServer>) -> Json<PeerInfo> {
    Json(PeerInfo {
        node_id: server.handle.node_id(),
        api_url: server.handle.api_url.clone(),
    })
}

/// Header name and value of a signed request.
pub(crate) fn signed_headers(key: &PeerKey, method: &str, path: &str, body: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&key.sign(method, path, body)) {
        headers.insert(PEER_HEADER, value);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_holds_only_for_its_request_and_secret() {
        let key = PeerKey::new("a-cluster-secret-0123", 2);
        let signature =
            HeaderValue::from_str(&key.sign("POST", "/raft/vote", b"{}")).expect("a header");
        assert_eq!(
            key.verify(Some(&signature), "POST", "/raft/vote", b"{}"),
            Ok(2)
        );
        for (method, path, body) in [
            ("POST", "/raft/vote", b"{ }".as_slice()),
            ("POST", "/raft/append", b"{}".as_slice()),
            ("GET", "/raft/vote", b"{}".as_slice()),
        ] {
            assert!(
                key.verify(Some(&signature), method, path, body).is_err(),
                "{method} {path}"
            );
        }
        let other = PeerKey::new("another-secret-0123456", 2);
        assert!(other
            .verify(Some(&signature), "POST", "/raft/vote", b"{}")
            .is_err());
        assert!(key.verify(None, "POST", "/raft/vote", b"{}").is_err());
        let old = HeaderValue::from_static("v1 2 1000 00");
        assert!(key.verify(Some(&old), "POST", "/raft/vote", b"{}").is_err());
    }
}
