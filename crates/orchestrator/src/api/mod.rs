//! The orchestrator's HTTP API (CONTRACT.md, "Orchestrator"): for people and tools (health, live
//! jobs, raft and cluster status, membership, metrics, cancel), for gateways (register, retry,
//! snapshots) and the HTTP worker protocol (status reports, heartbeats) that workers in any
//! language speak. Bodies are the types of `distriqueue_core::api`; every error is an
//! [`ApiError`](error::ApiError). Writes reaching a follower go to the leader (`forward`).

mod cluster;
mod error;
mod forward;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use distriqueue_core::api::{
    BatchResults, HeartbeatAnswer, ItemResult, JobChanged, LiveJob, LiveJobs, RegisterBatch,
    Registered, Registration, ReportBatch, Snapshots, Updated, ACCEPTED, ACKNOWLEDGED, CANCELLED,
    QUEUED,
};
use distriqueue_core::machine::Applied;
use distriqueue_core::protocol::parse_status_report;
use distriqueue_core::request::parse_job_request;
use distriqueue_core::{
    Command, JobId, JobResponse, JobStatus, Millis, Outcome, Report, ReportKind, WorkerHeartbeat,
    WorkerId,
};
use distriqueue_util::clock;
use serde::Deserialize;
use serde_json::Value;

use self::error::ApiError;
use crate::handle::OrchestratorHandle;
use crate::proposer::{Committed, SubmitError};

/// The orchestrator's router, without a socket (tests call it directly): the API of
/// CONTRACT.md (writes forwarded to the leader when this node does not lead) and the Raft RPCs
/// between nodes under `/raft/...`.
pub fn router(handle: OrchestratorHandle) -> Router {
    let raft = handle.raft.clone();
    api_router(handle).merge(crate::network::routes(raft))
}

/// Largest body of a batch route: a gateway's batch of up to 512 registers may carry 1 MB
/// payloads each.
const BATCH_BODY_LIMIT: usize = 1024 * 1024 * 1024;

fn api_router(handle: OrchestratorHandle) -> Router {
    Router::new()
        .route("/api/health", get(cluster::health))
        .route("/api/jobs", get(list_jobs))
        .route("/api/jobs/{id}/cancel", post(cancel))
        .route("/api/jobs/{id}/retry", post(retry))
        .route(
            "/api/jobs/status/batch",
            post(report_batch).layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT)),
        )
        .route("/api/jobs/snapshots", get(live_snapshots))
        .route("/api/jobs/register", post(register))
        .route(
            "/api/jobs/register/batch",
            post(register_batch).layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT)),
        )
        .route("/api/jobs/status", post(report_status))
        .route(
            "/api/jobs/{id}/status",
            post(report_status_of).put(report_status_of),
        )
        .route("/api/workers/heartbeat", post(heartbeat))
        .route("/api/raft/status", get(cluster::raft))
        .route("/api/cluster/status", get(cluster::cluster))
        .route("/api/cluster/nodes", post(cluster::add_node))
        .route("/api/cluster/nodes/{id}", delete(cluster::remove_node))
        .route("/api/metrics", get(cluster::metrics))
        .fallback(|method: Method, uri: Uri| async move {
            ApiError::NotFound(format!("No route for {method} {}", uri.path()))
        })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            ApiError::MethodNotAllowed(format!("Method {method} is not allowed on {}", uri.path()))
        })
        .layer(axum::middleware::from_fn_with_state(
            handle.clone(),
            forward::forward_writes,
        ))
        .with_state(handle)
}

/// A JSON body of the route's type; a 400 saying `what` the route expects otherwise.
fn read_body<T>(body: Result<Json<T>, JsonRejection>, what: &'static str) -> Result<T, ApiError> {
    body.map(|Json(value)| value)
        .map_err(|source| ApiError::BadBody { what, source })
}

/// The applied command's snapshot, for routes that answer one.
fn applied(outcome: Result<Outcome, SubmitError>) -> Result<Applied, ApiError> {
    Ok(outcome??)
}

/// Query of `GET /api/jobs`: `status` (any case), `limit` (default 100, at most 1000), `offset`.
#[derive(Deserialize)]
struct LiveJobsQuery {
    status: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

/// `GET /api/jobs?status&limit&offset`: the jobs this node holds, live ones first, then the
/// finished ones still held as tombstones.
async fn list_jobs(
    State(handle): State<OrchestratorHandle>,
    query: Result<Query<LiveJobsQuery>, QueryRejection>,
) -> Result<Json<LiveJobs>, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::BadRequest(format!(
            "bad query: {}; limit and offset are non-negative integers",
            rejection.body_text()
        ))
    })?;
    let status = match query.status.as_deref().map(JobStatus::parse) {
        Some(None) => {
            return Err(ApiError::BadRequest(
                "status must be a job status such as QUEUED".into(),
            ))
        }
        Some(Some(status)) => Some(status),
        None => None,
    };
    let limit = query.limit.unwrap_or(100).min(1000);
    let offset = query.offset.unwrap_or(0);
    let jobs: Vec<LiveJob> = handle.read(|state| {
        let live = state.jobs().map(|job| LiveJob {
            id: job.id,
            job_type: job.spec.job_type.clone(),
            status: job.status,
            priority: job.spec.priority.number(),
            worker_id: job.worker_id.clone(),
            result: job.result.clone(),
            created_at: job.created_at.to_iso(),
            started_at: job.started_at.map(Millis::to_iso),
            completed_at: job.completed_at.map(Millis::to_iso),
            version: job.version,
            attempt: job.attempt,
        });
        let held = state.tombstones().map(|job| LiveJob {
            id: job.id,
            job_type: job.job_type.clone(),
            status: job.status,
            priority: job.priority.number(),
            worker_id: job.worker_id.clone(),
            result: None,
            created_at: job.created_at.to_iso(),
            started_at: job.started_at.map(Millis::to_iso),
            completed_at: Some(job.completed_at.to_iso()),
            version: job.version,
            attempt: job.attempt,
        });
        live.chain(held)
            .filter(|job| status.is_none_or(|wanted| job.status == wanted))
            .skip(offset)
            .take(limit)
            .collect()
    });
    Ok(Json(LiveJobs {
        count: jobs.len(),
        jobs,
    }))
}

/// `POST /api/jobs/{id}/cancel`: 200 `{status:"cancelled", job}`; 404 unknown; 409 terminal.
async fn cancel(
    State(handle): State<OrchestratorHandle>,
    Path(id): Path<String>,
) -> Result<Json<JobChanged>, ApiError> {
    let id: JobId = id
        .parse()
        .map_err(|_| ApiError::NotFound(format!("Job not found: {id}")))?;
    let Applied { job, .. } = applied(handle.submit(Command::Cancel { id }).await)?;
    Ok(Json(JobChanged {
        status: CANCELLED.to_string(),
        job: job.map(|job| *job),
    }))
}

/// `POST /api/jobs/{id}/retry` (for gateways; not in CONTRACT.md's orchestrator table): the
/// body is the read model's JobResponse of a FAILED, TIMEOUT or CANCELLED job. 200
/// `{status:"queued", job}` with the new attempt's snapshot; 404, 409 as for cancel.
async fn retry(
    State(handle): State<OrchestratorHandle>,
    Path(id): Path<String>,
    body: Result<Json<JobResponse>, JsonRejection>,
) -> Result<Json<JobChanged>, ApiError> {
    let stored = read_body(body, "the body must be the job's JobResponse")?;
    if id.parse::<JobId>().ok() != Some(stored.id) {
        return Err(ApiError::BadRequest(format!(
            "the path's id {id} is not the body's id {}",
            stored.id
        )));
    }
    let Applied { job, .. } = applied(handle.retry(&stored).await)?;
    Ok(Json(JobChanged {
        status: QUEUED.to_string(),
        job: job.map(|job| *job),
    }))
}

/// `GET /api/jobs/snapshots` (for gateways; not in CONTRACT.md): `{jobs: [JobResponse]}`, the
/// committed snapshot of every live job, to reconcile a read model with.
async fn live_snapshots(State(handle): State<OrchestratorHandle>) -> Json<Snapshots> {
    Json(Snapshots {
        jobs: handle.live_snapshots(),
    })
}

/// The answer to a register of `id`.
fn registered(id: JobId, outcome: Result<Outcome, SubmitError>) -> Result<Registered, ApiError> {
    let Applied {
        job,
        job_id,
        created,
    } = applied(outcome)?;
    Ok(Registered {
        status: ACCEPTED.to_string(),
        job_id: job_id.unwrap_or(id),
        job: job.map(|job| *job),
        created,
    })
}

/// `POST /api/jobs/register`: a job request as the original gateway sent it (`id`, `type`,
/// `priority` 1/5/10/15 or a name, `payload`, `timeout` or `executionTimeout`, `maxRetries`, and
/// any other field of a job request). The id is minted when absent; registering an id again is
/// idempotent. 202 `{status:"accepted", job_id, job, created}`.
async fn register(
    State(handle): State<OrchestratorHandle>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let mut body = read_body(body, "the body must be a job request")?;
    if let Some(fields) = body.as_object_mut() {
        if let Some(timeout) = fields.get("timeout").cloned() {
            fields.entry("executionTimeout").or_insert(timeout);
        }
    }
    let id = match body.get("id").and_then(Value::as_str) {
        Some(text) => text
            .parse::<JobId>()
            .map_err(|_| ApiError::BadRequest(format!("id {text:?} is not a UUID")))?,
        None => clock::new_job_id(),
    };
    let spec = parse_job_request(&body, "").map_err(ApiError::Validation)?;
    let answer = registered(id, handle.register(id, spec).await)?;
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// A batch's answer: each item's own answer or error body, in order, and the entry that
/// committed them all.
fn batch_answer<T>(
    answers: impl Iterator<Item = Result<T, ApiError>>,
    log_index: u64,
) -> Json<BatchResults<T>> {
    Json(BatchResults {
        results: answers
            .map(|answer| match answer {
                Ok(answer) => ItemResult::Done(answer),
                Err(error) => ItemResult::Failed(error.body()),
            })
            .collect(),
        log_index: Some(log_index),
    })
}

/// `POST /api/jobs/register/batch` (DistriQueue's gateways; not in CONTRACT.md): specs the
/// gateway validated, in the orchestrator's own format, committed together in one log entry.
/// 200 `{results: [Registered | ErrorBody], logIndex}`, one per job, in order; 503 when the
/// entry could not be committed (then none was).
async fn register_batch(
    State(handle): State<OrchestratorHandle>,
    body: Result<Json<RegisterBatch>, JsonRejection>,
) -> Result<Json<BatchResults<Registered>>, ApiError> {
    let RegisterBatch { jobs } = read_body(body, "bad register batch")?;
    let ids: Vec<JobId> = jobs.iter().map(|job| job.id).collect();
    let Committed {
        outcomes,
        log_index,
    } = handle
        .register_all(
            jobs.into_iter()
                .map(|Registration { id, spec }| (id, spec))
                .collect(),
        )
        .await?;
    Ok(batch_answer(
        ids.into_iter()
            .zip(outcomes)
            .map(|(id, outcome)| registered(id, Ok(outcome))),
        log_index,
    ))
}

async fn report_status(
    State(handle): State<OrchestratorHandle>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Updated>, ApiError> {
    apply_report(&handle, body, None).await
}

async fn report_status_of(
    State(handle): State<OrchestratorHandle>,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Updated>, ApiError> {
    apply_report(&handle, body, Some(&id)).await
}

/// The worker protocol's status report (CONTRACT.md): 200 `{status:"updated"}`; 404 unknown
/// job; 409 refused transition or superseded attempt; 400 bad body.
async fn apply_report(
    handle: &OrchestratorHandle,
    body: Result<Json<Value>, JsonRejection>,
    path_id: Option<&str>,
) -> Result<Json<Updated>, ApiError> {
    let body = read_body(body, "the body must be a status report")?;
    let holds_lease = |job_id: JobId, worker_id: &WorkerId| {
        handle.read(|state| {
            state.job(job_id).is_some_and(|job| {
                job.status == JobStatus::Running && job.worker_id.as_ref() == Some(worker_id)
            })
        })
    };
    let report = parse_status_report(&body, path_id, holds_lease).map_err(ApiError::BadRequest)?;
    submit_report(handle, report).await.map(Json)
}

/// Commits a worker's report; a worker that took a lease is watched for liveness from then on.
async fn submit_report(handle: &OrchestratorHandle, report: Report) -> Result<Updated, ApiError> {
    let taker = lease_taker(&report);
    let outcome = handle.submit(Command::Report(report)).await?;
    watch_lease_taker(handle, taker, &outcome);
    outcome?;
    Ok(Updated::new())
}

/// The worker a report makes a lease holder, if it is accepted.
fn lease_taker(report: &Report) -> Option<WorkerId> {
    (report.kind == ReportKind::Running).then(|| report.worker_id.clone())
}

/// A worker whose `running` report was accepted is watched for liveness from then on.
fn watch_lease_taker(handle: &OrchestratorHandle, taker: Option<WorkerId>, outcome: &Outcome) {
    if let (Some(worker_id), Ok(_)) = (taker, outcome) {
        handle.watch_worker(&worker_id);
    }
}

/// `POST /api/jobs/status/batch` (DistriQueue's native workers; not in CONTRACT.md): reports
/// in the orchestrator's own format, committed together in one log entry. 200 `{results:
/// [{status:"updated"} | ErrorBody], logIndex}`, one per report, in order; 503 when the entry
/// could not be committed (then none was).
async fn report_batch(
    State(handle): State<OrchestratorHandle>,
    body: Result<Json<ReportBatch>, JsonRejection>,
) -> Result<Json<BatchResults<Updated>>, ApiError> {
    let ReportBatch { reports } = read_body(body, "bad report batch")?;
    let takers: Vec<Option<WorkerId>> = reports.iter().map(lease_taker).collect();
    let Committed {
        outcomes,
        log_index,
    } = handle
        .submit_all(reports.into_iter().map(Command::Report).collect())
        .await?;
    Ok(batch_answer(
        takers.into_iter().zip(outcomes).map(|(taker, outcome)| {
            watch_lease_taker(&handle, taker, &outcome);
            outcome.map(|_| Updated::new()).map_err(ApiError::from)
        }),
        log_index,
    ))
}

/// `POST /api/workers/heartbeat` (snake_case or camelCase): 200 `{status:"acknowledged",
/// cancel:[job ids this worker must stop]}`.
async fn heartbeat(
    State(handle): State<OrchestratorHandle>,
    body: Result<Json<WorkerHeartbeat>, JsonRejection>,
) -> Result<Json<HeartbeatAnswer>, ApiError> {
    let heartbeat = read_body(body, "bad heartbeat")?;
    if heartbeat.worker_id.0.trim().is_empty() {
        return Err(ApiError::BadRequest("worker_id must not be blank".into()));
    }
    let cancel = handle.heartbeat(heartbeat).await?;
    Ok(Json(HeartbeatAnswer {
        status: ACKNOWLEDGED.to_string(),
        cancel,
    }))
}
