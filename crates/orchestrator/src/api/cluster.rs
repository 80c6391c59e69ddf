//! The operator's routes: health, Raft and cluster status, membership changes and metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::Json;
use distriqueue_core::api::{
    ClusterStatus, ErrorBody, EventMetrics, Health, Member, MemberStatus, MembershipChanged,
    Metrics, NewNode, QueueMetrics, RaftStatus, WorkerMetrics, WorkersSeen, ADDED, REMOVED,
};
use distriqueue_core::JobStatus;
use distriqueue_util::clock;
use openraft::{BasicNode, ChangeMembers};

use super::error::ApiError;
use super::read_body;
use crate::handle::OrchestratorHandle;
use crate::raft_view::RaftView;

/// `GET /api/health`: `{status: "UP", timestamp, node}`.
#[utoipa::path(
    get,
    path = "/api/health",
    tag = "operations",
    responses((status = 200, description = "The node answers", body = Health))
)]
pub(crate) async fn health(State(handle): State<OrchestratorHandle>) -> Json<Health> {
    Json(Health {
        status: "UP".to_string(),
        timestamp: clock::now().to_iso(),
        node: handle.node_id(),
    })
}

/// This node's Raft state: real values from openraft's metrics; each member's reachability is
/// what the peer port saw of it lately.
async fn raft_status(handle: &OrchestratorHandle) -> RaftStatus {
    let view = RaftView::new(handle.metrics());
    let nodes: Vec<(u64, String)> = view
        .metrics
        .membership_config
        .nodes()
        .map(|(id, node)| (*id, node.addr.clone()))
        .collect();
    // No member is probed from here (a public route): reachable means heard from, or
    // answered, over the peer port in the last few seconds.
    let reachable: Vec<bool> = nodes
        .iter()
        .map(|(id, _)| *id == handle.node_id() || handle.peer_contact.reachable(*id))
        .collect();
    let followers = view.followers();
    let members = nodes
        .into_iter()
        .zip(reachable)
        .map(|((id, addr), reachable)| {
            // On the leader: how far each member's log matches, and how far behind it is.
            let matched = if id == handle.node_id() && view.metrics.replication.is_some() {
                Some(view.metrics.last_log_index)
            } else {
                followers
                    .iter()
                    .find(|(member, _)| *member == id)
                    .map(|(_, matched)| *matched)
            };
            MemberStatus {
                id,
                addr,
                reachable,
                matched_index: matched.map(|matched| matched.unwrap_or(0)),
                replication_lag: matched.map(|matched| view.lag(matched)),
            }
        })
        .collect();
    let metrics = &view.metrics;
    RaftStatus {
        role: view.role(),
        term: metrics.current_term,
        leader: metrics.current_leader,
        commit_index: view.commit_index(),
        millis_since_quorum_ack: metrics.millis_since_quorum_ack,
        last_applied: view.applied_index(),
        last_log_index: metrics.last_log_index,
        snapshot: metrics.snapshot.map(|log_id| log_id.index),
        purged: metrics.purged.map(|log_id| log_id.index),
        members,
        node: handle.node_id(),
    }
}

/// `GET /api/raft/status`.
#[utoipa::path(
    get,
    path = "/api/raft/status",
    tag = "cluster",
    responses((status = 200, description = "This node's Raft state, each member's reachability as the peer port saw it", body = RaftStatus))
)]
pub(crate) async fn raft(State(handle): State<OrchestratorHandle>) -> Json<RaftStatus> {
    Json(raft_status(&handle).await)
}

/// `GET /api/cluster/status`: `{node, cluster, raft, timestamp}`, the cluster part listing the
/// workers that heartbeat to this node.
#[utoipa::path(
    get,
    path = "/api/cluster/status",
    tag = "cluster",
    responses((status = 200, description = "This node, its workers and its Raft state", body = ClusterStatus))
)]
pub(crate) async fn cluster(State(handle): State<OrchestratorHandle>) -> Json<ClusterStatus> {
    Json(cluster_status(&handle).await)
}

/// This node's part of the cluster's status: its Raft state and the workers heartbeating to it.
pub(crate) async fn cluster_status(handle: &OrchestratorHandle) -> ClusterStatus {
    let workers = handle.describe_workers();
    ClusterStatus {
        node: handle.node_id(),
        cluster: WorkersSeen {
            n_workers: workers.len(),
            workers,
        },
        raft: raft_status(handle).await,
        timestamp: clock::now().to_iso(),
    }
}

/// `POST /api/cluster/nodes` `{id, url}` (issue 5, item 2; `distriqueue cluster add-node`):
/// adds a node as a learner, waits until it has caught up, then makes it a voter. The node
/// must be running, started with `--node-id` and `--peers` that do not name itself (so it
/// waits to be added instead of initializing a cluster of its own). 200 `{status:"added",
/// members}`; 400 for a bad body; 503 when the change cannot commit.
#[utoipa::path(
    post,
    path = "/api/cluster/nodes",
    tag = "cluster",
    request_body(content = NewNode),
    responses(
        (status = 200, description = "The node is a voter", body = MembershipChanged),
        (status = 400, description = "A bad body", body = ErrorBody),
        (status = 503, description = "The change could not commit (or took over a minute)", body = ErrorBody),
    )
)]
pub(crate) async fn add_node(
    State(handle): State<OrchestratorHandle>,
    body: Result<Json<NewNode>, JsonRejection>,
) -> Result<Json<MembershipChanged>, ApiError> {
    let NewNode { id, url } = read_body(
        body,
        "the body must be {\"id\": <node id>, \"url\": \"http://...\"}",
    )?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ApiError::BadRequest(format!(
            "{url:?} is not an http:// URL"
        )));
    }
    let node = BasicNode {
        addr: url.trim_end_matches('/').to_string(),
    };
    within_membership_timeout(
        format!("add node {id} as a learner"),
        handle.raft.add_learner(id, node, true),
    )
    .await?;
    within_membership_timeout(
        format!("make node {id} a voter"),
        handle
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false),
    )
    .await?;
    Ok(Json(MembershipChanged {
        status: ADDED.to_string(),
        members: members(&handle),
    }))
}

/// `DELETE /api/cluster/nodes/{id}` (`distriqueue cluster remove-node`): removes a node from
/// the membership (it stops taking part; stop its process afterwards). 200 `{status:"removed",
/// members}`; 404 for a node that is not a member; 503 when the change cannot commit.
#[utoipa::path(
    delete,
    path = "/api/cluster/nodes/{id}",
    tag = "cluster",
    params(("id" = String, Path, description = "The node's id")),
    responses(
        (status = 200, description = "The node left the membership", body = MembershipChanged),
        (status = 404, description = "No such member", body = ErrorBody),
        (status = 409, description = "The node is the only voter", body = ErrorBody),
        (status = 503, description = "The change could not commit", body = ErrorBody),
    )
)]
pub(crate) async fn remove_node(
    State(handle): State<OrchestratorHandle>,
    Path(id): Path<String>,
) -> Result<Json<MembershipChanged>, ApiError> {
    let not_found = || ApiError::NotFound(format!("No node {id}"));
    let node_id: u64 = id.parse().map_err(|_| not_found())?;
    if !members(&handle).iter().any(|member| member.id == node_id) {
        return Err(not_found());
    }
    let voters: BTreeSet<u64> = handle.metrics().membership_config.voter_ids().collect();
    if voters.len() == 1 && voters.contains(&node_id) {
        return Err(ApiError::Conflict(format!(
            "node {node_id} is the cluster's only voter: removing it would leave no cluster"
        )));
    }
    within_membership_timeout(
        format!("remove node {node_id}"),
        handle.raft.change_membership(
            ChangeMembers::RemoveVoters(BTreeSet::from([node_id])),
            false,
        ),
    )
    .await?;
    Ok(Json(MembershipChanged {
        status: REMOVED.to_string(),
        members: members(&handle),
    }))
}

/// How long a membership change may take (a learner that never catches up is not waited for
/// without bound).
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a membership change (`what`) for at most [`MEMBERSHIP_TIMEOUT`]; 503 when it fails or
/// takes longer.
async fn within_membership_timeout<T, E>(
    what: String,
    change: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ApiError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(MEMBERSHIP_TIMEOUT, change).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(ApiError::Membership {
            what,
            source: Box::new(source),
        }),
        Err(elapsed) => Err(ApiError::Membership {
            what,
            source: Box::new(elapsed),
        }),
    }
}

/// The membership.
fn members(handle: &OrchestratorHandle) -> Vec<Member> {
    handle
        .metrics()
        .membership_config
        .nodes()
        .map(|(id, node)| Member {
            id: *id,
            addr: node.addr.clone(),
        })
        .collect()
}

/// `GET /api/metrics`: live jobs by status, the waiting queue, workers, and the event watermark.
#[utoipa::path(
    get,
    path = "/api/metrics",
    tag = "operations",
    responses((status = 200, description = "Jobs by status, the waiting queue, workers, the event watermark", body = Metrics))
)]
pub(crate) async fn metrics(State(handle): State<OrchestratorHandle>) -> Json<Metrics> {
    let (jobs, waiting, last_seq, published_up_to) = handle.read(|state| {
        let mut jobs: BTreeMap<String, u64> = JobStatus::ALL
            .iter()
            .map(|status| (status.as_str().to_string(), 0))
            .collect();
        for status in state
            .jobs()
            .map(|job| job.status)
            .chain(state.tombstones().map(|job| job.status))
        {
            *jobs.entry(status.as_str().to_string()).or_default() += 1;
        }
        (
            jobs,
            state.n_waiting(),
            state.last_seq(),
            state.published_upto(),
        )
    });
    let list = handle.describe_workers();
    Json(Metrics {
        jobs,
        queues: QueueMetrics {
            waiting,
            max_queued: handle.max_queued(),
        },
        workers: WorkerMetrics {
            count: list.len(),
            capacity: list.iter().map(|worker| u64::from(worker.capacity)).sum(),
            current_load: list
                .iter()
                .map(|worker| u64::from(worker.current_load))
                .sum(),
            list,
        },
        events: EventMetrics {
            last_seq,
            published_up_to,
        },
        timestamp: clock::now().to_iso(),
    })
}
