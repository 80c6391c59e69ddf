//! The orchestrator's HTTP API (CONTRACT.md, "Orchestrator"): for people and tools (health, live
//! jobs, raft and cluster status, metrics, cancel), for gateways (register) and the HTTP worker
//! protocol (status reports, heartbeats) that workers in any language speak.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use distriqueue_core::machine::Applied;
use distriqueue_core::protocol::parse_status_report;
use distriqueue_core::request::{parse_job_request, JobSpec};
use distriqueue_core::{
    Command, JobId, JobResponse, JobStatus, Millis, Refusal, Report, ReportKind, WorkerHeartbeat,
};
use openraft::ServerState;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::node::{OrchestratorHandle, SubmitError};

/// The orchestrator's router, without a socket (tests call it directly): the API of
/// CONTRACT.md (writes forwarded to the leader when this node does not lead) and the Raft RPCs
/// between nodes under `/raft/...`.
pub fn router(handle: OrchestratorHandle) -> Router {
    let raft = handle.raft();
    api_router(handle).merge(crate::network::routes(raft))
}

fn api_router(handle: OrchestratorHandle) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/jobs", get(list_jobs))
        .route("/api/jobs/{id}/cancel", post(cancel))
        .route("/api/jobs/{id}/retry", post(retry))
        .route(
            "/api/jobs/status/batch",
            post(report_batch).layer(axum::extract::DefaultBodyLimit::max(BATCH_BODY_LIMIT)),
        )
        .route("/api/jobs/snapshots", get(live_snapshots))
        .route("/api/jobs/register", post(register))
        .route(
            "/api/jobs/register/batch",
            post(register_batch).layer(axum::extract::DefaultBodyLimit::max(BATCH_BODY_LIMIT)),
        )
        .route("/api/jobs/status", post(report_status))
        .route(
            "/api/jobs/{id}/status",
            post(report_status_of).put(report_status_of),
        )
        .route("/api/workers/heartbeat", post(heartbeat))
        .route("/api/raft/status", get(raft_status))
        .route("/api/cluster/status", get(cluster_status))
        .route("/api/cluster/nodes", post(add_node))
        .route(
            "/api/cluster/nodes/{id}",
            axum::routing::delete(remove_node),
        )
        .route("/api/metrics", get(metrics))
        .fallback(
            |method: axum::http::Method, uri: axum::http::Uri| async move {
                error(
                    StatusCode::NOT_FOUND,
                    format!("No route for {method} {}", uri.path()),
                )
            },
        )
        .method_not_allowed_fallback(
            |method: axum::http::Method, uri: axum::http::Uri| async move {
                error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("Method {method} is not allowed on {}", uri.path()),
                )
            },
        )
        .layer(axum::middleware::from_fn_with_state(
            handle.clone(),
            forward_writes,
        ))
        .with_state(handle)
}

/// Largest body of a batch route: a gateway's batch of up to 512 registers may carry 1 MB
/// payloads each.
const BATCH_BODY_LIMIT: usize = 1024 * 1024 * 1024;

/// The header a forwarded answer carries: the leader's base URL.
pub const LEADER_HEADER: &str = "x-distriqueue-leader";

/// Largest request body forwarded to the leader.
const MAX_FORWARDED_BYTES: usize = 16 * 1024 * 1024;

/// A follower answers reads itself and forwards writes (every POST and PUT) to the leader
/// (CONTRACT.md: "Workers may talk to any node"), passing the leader's answer back unchanged.
/// 503 while no leader is known, or while this node was just elected and starts its duties.
async fn forward_writes(
    State(handle): State<OrchestratorHandle>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let is_write = matches!(
        *request.method(),
        axum::http::Method::POST | axum::http::Method::PUT | axum::http::Method::DELETE
    );
    if !is_write || handle.is_live_leader() {
        return next.run(request).await;
    }
    let Some(leader) = handle.leader_url().filter(|_| !handle.is_elected_leader()) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no leader is ready yet (election under way); try again shortly",
        );
    };
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_FORWARDED_BYTES).await {
        Ok(bytes) => bytes,
        Err(problem) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot forward the body: {problem}"),
            )
        }
    };
    let path = parts.uri.path_and_query().map_or("/", |path| path.as_str());
    let mut forwarded = handle
        .http
        .request(parts.method.clone(), format!("{leader}{path}"))
        .timeout(std::time::Duration::from_secs(30))
        .body(bytes);
    if let Some(kind) = parts.headers.get(axum::http::header::CONTENT_TYPE) {
        forwarded = forwarded.header(axum::http::header::CONTENT_TYPE, kind.clone());
    }
    match forwarded.send().await {
        Ok(answer) => {
            let status =
                StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let kind = answer.headers().get(reqwest::header::CONTENT_TYPE).cloned();
            match answer.bytes().await {
                Ok(body) => {
                    let mut response = (status, body).into_response();
                    if let Some(kind) = kind {
                        response
                            .headers_mut()
                            .insert(axum::http::header::CONTENT_TYPE, kind);
                    }
                    // Clients that know the leader's URL go there directly next time.
                    if let Ok(value) = axum::http::HeaderValue::from_str(&leader) {
                        response.headers_mut().insert(LEADER_HEADER, value);
                    }
                    response
                }
                Err(problem) => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("leader {leader} broke off its answer: {problem}"),
                ),
            }
        }
        Err(problem) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot reach the leader {leader}: {problem}"),
        ),
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

async fn health(State(handle): State<OrchestratorHandle>) -> Json<Value> {
    Json(json!({"status": "UP", "timestamp": Millis::now().to_iso(), "node": handle.node_id()}))
}

/// Query of `GET /api/jobs`: `status` (any case), `limit` (default 100, at most 1000), `offset`.
#[derive(Deserialize)]
struct LiveJobsQuery {
    status: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn list_jobs(
    State(handle): State<OrchestratorHandle>,
    query: Result<Query<LiveJobsQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "bad query: {}; limit and offset are non-negative integers",
                    rejection.body_text()
                ),
            )
        }
    };
    let status = match query.status.as_deref().map(JobStatus::parse) {
        Some(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "status must be a job status such as QUEUED",
            )
        }
        Some(Some(status)) => Some(status),
        None => None,
    };
    let limit = query.limit.unwrap_or(100).min(1000);
    let offset = query.offset.unwrap_or(0);
    let jobs: Vec<Value> = handle.read(|state| {
        let live = state.jobs().map(|job| {
            json!({
                "id": job.id, "type": job.spec.job_type, "status": job.status,
                "priority": job.spec.priority.number(),
                "worker_id": job.worker_id, "result": job.result,
                "created_at": job.created_at.to_iso(),
                "started_at": job.started_at.map(Millis::to_iso),
                "completed_at": job.completed_at.map(Millis::to_iso),
                "version": job.version, "attempt": job.attempt,
            })
        });
        let held = state.tombstones().map(|job| {
            json!({
                "id": job.id, "type": job.job_type, "status": job.status,
                "priority": job.priority.number(),
                "worker_id": job.worker_id,
                "created_at": job.created_at.to_iso(),
                "started_at": job.started_at.map(Millis::to_iso),
                "completed_at": job.completed_at.to_iso(),
                "version": job.version, "attempt": job.attempt,
            })
        });
        live.chain(held)
            .filter(|job| status.is_none_or(|wanted| job["status"] == json!(wanted)))
            .skip(offset)
            .take(limit)
            .collect()
    });
    let count = jobs.len();
    Json(json!({"jobs": jobs, "count": count})).into_response()
}

async fn cancel(State(handle): State<OrchestratorHandle>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<JobId>() else {
        return error(StatusCode::NOT_FOUND, format!("Job not found: {id}"));
    };
    match handle.submit(Command::Cancel { id }).await {
        Ok(Ok(Applied { job, .. })) => {
            Json(json!({"status": "cancelled", "job": job})).into_response()
        }
        Ok(Err(refusal)) => refused(&refusal),
        Err(unavailable) => error(StatusCode::SERVICE_UNAVAILABLE, unavailable.to_string()),
    }
}

/// `POST /api/jobs/{id}/retry` (for gateways; not in CONTRACT.md's orchestrator table): the
/// body is the read model's JobResponse of a FAILED, TIMEOUT or CANCELLED job. 200
/// `{status:"queued", job}` with the new attempt's snapshot; 404, 409 as for cancel.
async fn retry(
    State(handle): State<OrchestratorHandle>,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let stored: JobResponse = match typed_body(body, "the body must be the job's JobResponse") {
        Ok(stored) => stored,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    if id.parse::<JobId>().ok() != Some(stored.id) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("the path's id {id} is not the body's id {}", stored.id),
        );
    }
    match handle.retry(&stored).await {
        Ok(Ok(Applied { job, .. })) => {
            Json(json!({"status": "queued", "job": job})).into_response()
        }
        Ok(Err(refusal)) => refused(&refusal),
        Err(unavailable) => error(StatusCode::SERVICE_UNAVAILABLE, unavailable.to_string()),
    }
}

/// `GET /api/jobs/snapshots` (for gateways; not in CONTRACT.md): `{jobs: [JobResponse]}`, the
/// committed snapshot of every live job, to reconcile a read model with.
async fn live_snapshots(State(handle): State<OrchestratorHandle>) -> Json<Value> {
    Json(json!({"jobs": handle.live_snapshots()}))
}

/// Reads a JSON body as `T`; `Err` is the message of the 400 for a malformed or mistyped body
/// (it starts with `what`).
fn typed_body<T: serde::de::DeserializeOwned>(
    body: Result<Json<Value>, JsonRejection>,
    what: &str,
) -> Result<T, String> {
    serde_json::from_value(json_body(body)?).map_err(|problem| format!("{what}: {problem}"))
}

/// Reads a JSON body, answering a contract-shaped 400 for malformed JSON.
fn json_body(body: Result<Json<Value>, JsonRejection>) -> Result<Value, String> {
    body.map(|Json(value)| value)
        .map_err(|rejection| format!("malformed JSON body: {}", rejection.body_text()))
}

/// A refused command: its HTTP status, the contract's `{"error"}` and the refusal itself as
/// `refusal` (so DistriQueue's own clients can tell refusals apart).
fn refused(refusal: &Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.http_status()).unwrap_or(StatusCode::CONFLICT);
    (
        status,
        Json(json!({"error": refusal.to_string(), "refusal": refusal})),
    )
        .into_response()
}

/// `POST /api/jobs/register`: a job request as the original gateway sent it (`id`, `type`,
/// `priority` 1/5/10/15 or a name, `payload`, `timeout` or `executionTimeout`, `maxRetries`, and
/// any other field of a job request). The id is minted when absent; registering an id again is
/// idempotent. 202 `{status:"accepted", job_id, job}`.
async fn register(
    State(handle): State<OrchestratorHandle>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let mut body = match json_body(body) {
        Ok(body) => body,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    if let Some(fields) = body.as_object_mut() {
        if let Some(timeout) = fields.get("timeout").cloned() {
            fields.entry("executionTimeout").or_insert(timeout);
        }
    }
    let id = match body.get("id").and_then(Value::as_str) {
        Some(text) => match text.parse::<JobId>() {
            Ok(id) => id,
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("id {text:?} is not a UUID"),
                )
            }
        },
        None => JobId::new_random(),
    };
    let spec = match parse_job_request(&body, "") {
        Ok(spec) => spec,
        Err(violations) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "Validation failed", "violations": violations})),
            )
                .into_response()
        }
    };
    match handle.register(id, spec).await {
        Ok(Ok(Applied {
            job,
            job_id,
            created,
        })) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "status": "accepted", "job_id": job_id.unwrap_or(id), "job": job,
                "created": created,
            })),
        )
            .into_response(),
        Ok(Err(refusal)) => refused(&refusal),
        Err(unavailable) => error(StatusCode::SERVICE_UNAVAILABLE, unavailable.to_string()),
    }
}

/// `POST /api/jobs/register/batch` (DistriQueue's gateways; not in CONTRACT.md): `{jobs: [{id,
/// spec}]}` with specs the gateway validated, in the orchestrator's own format, committed
/// together (one log entry under load). 200 `{results: [{job_id, job, created} | {error,
/// refusal}]}`, one per job, in order.
async fn register_batch(
    State(handle): State<OrchestratorHandle>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    #[derive(Deserialize)]
    struct Registration {
        id: JobId,
        spec: JobSpec,
    }
    #[derive(Deserialize)]
    struct Batch {
        jobs: Vec<Registration>,
    }
    let Batch { jobs } = match typed_body(body, "bad register batch") {
        Ok(batch) => batch,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let answers = futures::future::join_all(jobs.into_iter().map(|Registration { id, spec }| {
        let handle = handle.clone();
        async move {
            match handle.register(id, spec).await {
                Ok(Ok(Applied {
                    job,
                    job_id,
                    created,
                })) => json!({"job_id": job_id.unwrap_or(id), "job": job, "created": created}),
                Ok(Err(refusal)) => json!({"error": refusal.to_string(), "refusal": refusal}),
                Err(unavailable) => json!({"error": unavailable.to_string()}),
            }
        }
    }))
    .await;
    Json(json!({"results": answers})).into_response()
}

async fn report_status(
    State(handle): State<OrchestratorHandle>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    apply_report(&handle, body, None).await
}

async fn report_status_of(
    State(handle): State<OrchestratorHandle>,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    apply_report(&handle, body, Some(&id)).await
}

/// The worker protocol's status report (CONTRACT.md): 200 `{status:"updated"}`; 404 unknown
/// job; 409 refused transition or superseded attempt; 400 bad body.
async fn apply_report(
    handle: &OrchestratorHandle,
    body: Result<Json<Value>, JsonRejection>,
    path_id: Option<&str>,
) -> Response {
    let body = match json_body(body) {
        Ok(body) => body,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let holds_lease = |job_id: JobId, worker_id: &distriqueue_core::WorkerId| {
        handle.read(|state| {
            state.job(job_id).is_some_and(|job| {
                job.status == JobStatus::Running && job.worker_id.as_ref() == Some(worker_id)
            })
        })
    };
    let report = match parse_status_report(&body, path_id, holds_lease) {
        Ok(report) => report,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match submit_report(handle, report).await {
        Ok(Ok(())) => Json(json!({"status": "updated"})).into_response(),
        Ok(Err(refusal)) => refused(&refusal),
        Err(unavailable) => error(StatusCode::SERVICE_UNAVAILABLE, unavailable.to_string()),
    }
}

/// Commits a worker's report; a worker that took a lease is watched for liveness from then on.
async fn submit_report(
    handle: &OrchestratorHandle,
    report: Report,
) -> Result<Result<(), Refusal>, SubmitError> {
    let lease_taker = (report.kind == ReportKind::Running).then(|| report.worker_id.clone());
    let outcome = handle.submit(Command::Report(report)).await?;
    if outcome.is_ok() {
        if let Some(worker_id) = lease_taker {
            handle.watch_worker(&worker_id);
        }
    }
    Ok(outcome.map(|_| ()))
}

/// `POST /api/jobs/status/batch` (DistriQueue's native workers; not in CONTRACT.md): `{reports:
/// [Report]}` in the orchestrator's own report format, committed together (one log entry under
/// load). 200 `{results: [{status:"updated"} | {error, refusal}]}`, one per report, in order.
async fn report_batch(
    State(handle): State<OrchestratorHandle>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    #[derive(Deserialize)]
    struct Batch {
        reports: Vec<Report>,
    }
    let Batch { reports } = match typed_body(body, "bad report batch") {
        Ok(batch) => batch,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let answers = futures::future::join_all(reports.into_iter().map(|report| {
        let handle = handle.clone();
        async move {
            match submit_report(&handle, report).await {
                Ok(Ok(())) => json!({"status": "updated"}),
                Ok(Err(refusal)) => json!({"error": refusal.to_string(), "refusal": refusal}),
                Err(unavailable) => json!({"error": unavailable.to_string()}),
            }
        }
    }))
    .await;
    Json(json!({"results": answers})).into_response()
}

/// `POST /api/workers/heartbeat` (snake_case or camelCase): 200 `{status:"acknowledged",
/// cancel:[job ids this worker must stop]}`.
async fn heartbeat(
    State(handle): State<OrchestratorHandle>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let body = match json_body(body) {
        Ok(body) => body,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match serde_json::from_value::<WorkerHeartbeat>(body) {
        Ok(heartbeat) if !heartbeat.worker_id.0.trim().is_empty() => {
            match handle.heartbeat(heartbeat).await {
                Ok(cancel) => {
                    Json(json!({"status": "acknowledged", "cancel": cancel})).into_response()
                }
                Err(unavailable) => error(StatusCode::SERVICE_UNAVAILABLE, unavailable.to_string()),
            }
        }
        Ok(_) => error(StatusCode::BAD_REQUEST, "worker_id must not be blank"),
        Err(problem) => error(StatusCode::BAD_REQUEST, format!("bad heartbeat: {problem}")),
    }
}

/// The raft part of the status routes: real values from openraft's metrics.
async fn raft_json(handle: &OrchestratorHandle) -> Value {
    let metrics = handle.metrics();
    let role = match metrics.state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    };
    let last_log = metrics.last_log_index.unwrap_or(0);
    let nodes: Vec<(u64, String)> = metrics
        .membership_config
        .nodes()
        .map(|(id, node)| (*id, node.addr.clone()))
        .collect();
    // Reachability as this node sees it: each other member's health route, probed at once.
    let probes = futures::future::join_all(nodes.iter().map(|(id, addr)| {
        let http = handle.http.clone();
        let url = format!("{addr}/api/health");
        let own = *id == handle.node_id();
        async move {
            own || http
                .get(url)
                .timeout(std::time::Duration::from_millis(300))
                .send()
                .await
                .is_ok_and(|answer| answer.status().is_success())
        }
    }))
    .await;
    let members: Vec<Value> = nodes
        .iter()
        .zip(probes)
        .map(|((id, addr), reachable)| {
            // On the leader: how far each member's log matches, and how far behind it is.
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|replication| replication.get(id))
                .map(|matched| matched.map_or(0, |log_id| log_id.index));
            json!({
                "id": id, "addr": addr,
                "reachable": reachable,
                "matchedIndex": matched,
                "replicationLag": matched.map(|index| last_log.saturating_sub(index)),
            })
        })
        .collect();
    json!({
        "role": role,
        "term": metrics.current_term,
        "leader": metrics.current_leader,
        // openraft 0.9 reports the applied index; on this node every committed entry is applied
        // before it answers a write.
        "commitIndex": metrics.last_applied.map(|log_id| log_id.index),
        "millisSinceQuorumAck": metrics.millis_since_quorum_ack,
        "lastApplied": metrics.last_applied.map(|log_id| log_id.index),
        "lastLogIndex": metrics.last_log_index,
        "snapshot": metrics.snapshot.map(|log_id| log_id.index),
        "purged": metrics.purged.map(|log_id| log_id.index),
        "members": members,
        "node": handle.node_id(),
    })
}

async fn raft_status(State(handle): State<OrchestratorHandle>) -> Json<Value> {
    Json(raft_json(&handle).await)
}

/// `GET /api/cluster/status`: `{node, cluster, raft, timestamp}`, the cluster part listing the
/// workers that heartbeat to this node.
async fn cluster_status(State(handle): State<OrchestratorHandle>) -> Json<Value> {
    let workers = handle.describe_workers();
    Json(json!({
        "node": handle.node_id(),
        "cluster": {"workers": workers, "nWorkers": workers.len()},
        "raft": raft_json(&handle).await,
        "timestamp": Millis::now().to_iso(),
    }))
}

/// `POST /api/cluster/nodes` `{id, url}` (issue 5, item 2; `distriqueue cluster add-node`):
/// adds a node as a learner, waits until it has caught up, then makes it a voter. The node
/// must be running, started with `--node-id` and `--peers` that do not name itself (so it
/// waits to be added instead of initializing a cluster of its own). 200 `{status:"added",
/// members}`; 400 for a bad body; 503 when the change cannot commit.
async fn add_node(
    State(handle): State<OrchestratorHandle>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    #[derive(Deserialize)]
    struct NewNode {
        id: u64,
        url: String,
    }
    let shape = "the body must be {\"id\": <node id>, \"url\": \"http://...\"}";
    let NewNode { id, url } = match typed_body(body, shape) {
        Ok(node) => node,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{url:?} is not an http:// URL"),
        );
    }
    let raft = handle.raft();
    let node = openraft::BasicNode {
        addr: url.trim_end_matches('/').to_string(),
    };
    if let Err(problem) = raft.add_learner(id, node, true).await {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot add node {id} as a learner: {problem}"),
        );
    }
    let voters = std::collections::BTreeSet::from([id]);
    match raft
        .change_membership(openraft::ChangeMembers::AddVoterIds(voters), false)
        .await
    {
        Ok(_) => Json(json!({"status": "added", "members": members_json(&handle)})).into_response(),
        Err(problem) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot make node {id} a voter: {problem}"),
        ),
    }
}

/// `DELETE /api/cluster/nodes/{id}` (`distriqueue cluster remove-node`): removes a node from
/// the membership (it stops taking part; stop its process afterwards). 200 `{status:"removed",
/// members}`; 404 for a node that is not a member; 503 when the change cannot commit.
async fn remove_node(State(handle): State<OrchestratorHandle>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(StatusCode::NOT_FOUND, format!("No node {id}"));
    };
    let is_member = handle
        .metrics()
        .membership_config
        .nodes()
        .any(|(member, _)| *member == id);
    if !is_member {
        return error(StatusCode::NOT_FOUND, format!("No node {id}"));
    }
    let voters = std::collections::BTreeSet::from([id]);
    match handle
        .raft()
        .change_membership(openraft::ChangeMembers::RemoveVoters(voters), false)
        .await
    {
        Ok(_) => {
            Json(json!({"status": "removed", "members": members_json(&handle)})).into_response()
        }
        Err(problem) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot remove node {id}: {problem}"),
        ),
    }
}

/// The membership as `[{id, addr}]`.
fn members_json(handle: &OrchestratorHandle) -> Vec<Value> {
    handle
        .metrics()
        .membership_config
        .nodes()
        .map(|(id, node)| json!({"id": id, "addr": node.addr}))
        .collect()
}

/// `GET /api/metrics`: live jobs by status, the waiting queue, workers, and the event watermark.
async fn metrics(State(handle): State<OrchestratorHandle>) -> Json<Value> {
    let (jobs, waiting, last_seq, published_upto) = handle.read(|state| {
        let mut jobs: std::collections::BTreeMap<&'static str, u64> = JobStatus::ALL
            .iter()
            .map(|status| (status.as_str(), 0))
            .collect();
        for status in state
            .jobs()
            .map(|job| job.status)
            .chain(state.tombstones().map(|job| job.status))
        {
            *jobs.entry(status.as_str()).or_default() += 1;
        }
        (
            jobs,
            state.n_waiting(),
            state.last_seq(),
            state.published_upto(),
        )
    });
    let workers = handle.describe_workers();
    let capacity: u64 = workers
        .iter()
        .filter_map(|worker| worker["capacity"].as_u64())
        .sum();
    let load: u64 = workers
        .iter()
        .filter_map(|worker| worker["currentLoad"].as_u64())
        .sum();
    Json(json!({
        "jobs": jobs,
        "queues": {"waiting": waiting, "maxQueued": handle.max_queued()},
        "workers": {"count": workers.len(), "capacity": capacity, "currentLoad": load, "list": workers},
        "events": {"lastSeq": last_seq, "publishedUpTo": published_upto},
        "timestamp": Millis::now().to_iso(),
    }))
}
