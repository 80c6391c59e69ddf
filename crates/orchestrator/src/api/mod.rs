//! The orchestrator's HTTP API (CONTRACT.md, "Orchestrator"): for people and tools (health, live
//! jobs, raft and cluster status, membership, metrics, cancel), for gateways (register, retry,
//! snapshots) and the HTTP worker protocol (status reports, heartbeats) that workers in any
//! language speak. Bodies are the types of `distriqueue_core::api`; every error is an
//! [`ApiError`](error::ApiError). Writes reaching a follower go to the leader (`forward`).

pub(crate) mod cluster;
mod error;
mod forward;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use distriqueue_core::api::{
    BatchResults, ErrorBody, HeartbeatAnswer, ItemResult, JobChanged, LiveJob, LiveJobs,
    RegisterBatch, RegisterRequest, Registered, Registration, ReportBatch, Snapshots, StatusReport,
    Updated, ACCEPTED, ACKNOWLEDGED, CANCELLED, QUEUED,
};
use distriqueue_core::machine::Applied;
use distriqueue_core::protocol::{check_report, parse_status_report};
use distriqueue_core::request::parse_job_request;
use distriqueue_core::{
    Command, JobId, JobResponse, JobStatus, Millis, Outcome, Report, ReportKind, WorkerHeartbeat,
    WorkerId,
};
use distriqueue_util::auth::{self, Access};
use distriqueue_util::metrics::{prometheus_response, track_http, HttpMetricNames};
use distriqueue_util::{clock, http};
use serde::Deserialize;
use serde_json::Value;
use std::sync::OnceLock;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::error::ApiError;
use crate::handle::OrchestratorHandle;
use crate::metrics;
use crate::proposer::{Committed, SubmitError};

/// The orchestrator's router, without a socket (tests call it directly): the API of
/// CONTRACT.md (writes forwarded to the leader when this node does not lead), each route behind
/// its API key ([`access`]). Answers that are not routes are 404 or 405 in the contract's error
/// shape. The Raft RPCs are on the peer port (`peer.rs`), never here.
pub fn router(handle: OrchestratorHandle) -> Router {
    let (routes, _) = routes().split_for_parts();
    routes
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
        .layer(axum::middleware::map_response(http::json_errors_only))
        .layer(axum::middleware::from_fn_with_state(
            auth::Guard {
                keys: handle.api_keys.clone(),
                access,
            },
            auth::require_key,
        ))
        .layer(axum::middleware::from_fn_with_state(
            HttpMetricNames {
                requests: metrics::HTTP_REQUESTS,
                duration: metrics::HTTP_DURATION,
            },
            track_http,
        ))
        .with_state(handle)
}

/// What each route asks of the caller's API key (SECURITY.md): health nothing; reads `Read`;
/// what gateways call to change jobs `Client`; the worker protocol `Worker`; membership and
/// anything else `Admin`. The Raft RPCs are not here: they are on the peer port (`peer.rs`).
pub fn access(method: &Method, route: Option<&str>) -> Access {
    let reads = *method == Method::GET || *method == Method::HEAD;
    match (route, reads) {
        (Some("/api/health"), _) => Access::Public,
        (
            Some(
                "/api/jobs"
                | "/api/jobs/snapshots"
                | "/api/raft/status"
                | "/api/cluster/status"
                | "/api/metrics"
                | "/metrics"
                | "/api/v3/api-docs",
            ),
            true,
        ) => Access::Read,
        (
            Some(
                "/api/jobs/register"
                | "/api/jobs/register/batch"
                | "/api/jobs/{id}/cancel"
                | "/api/jobs/{id}/retry",
            ),
            false,
        ) => Access::Client,
        (
            Some(
                "/api/jobs/status"
                | "/api/jobs/status/batch"
                | "/api/jobs/{id}/status"
                | "/api/workers/heartbeat",
            ),
            false,
        ) => Access::Worker,
        _ => Access::Admin,
    }
}

/// Largest body of a batch route: a gateway's batch (at most 32 MiB, the bound of its
/// `max_batch_body_bytes`) and its own batches of registers (8 MiB) fit, and so does the log
/// entry each becomes in a peer request (`peer::APPEND_LIMIT`).
const BATCH_BODY_LIMIT: usize = 40 * 1024 * 1024;

/// The document's frame: title, version, tags. The paths come from [`routes`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "DistriQueue orchestrator",
        description = "The lifecycle owner's API: for people and tools (health, jobs, Raft and \
                       cluster status, membership, metrics, cancel), for gateways (register, \
                       retry, snapshots), for workers in any language (status reports, \
                       heartbeats). A follower forwards every write to the leader. The Raft \
                       RPCs between nodes are on the peer port, not here. Errors are `{\"error\": message}`, with the state \
                       machine's `refusal` when a command was refused.",
        license(name = "MIT")
    ),
    tags(
        (name = "jobs", description = "The jobs this node holds"),
        (name = "gateways", description = "What DistriQueue's gateways call"),
        (name = "workers", description = "The worker protocol (docs/protocol.md)"),
        (name = "cluster", description = "Raft status and membership"),
        (name = "operations", description = "Health, documentation and metrics")
    )
)]
struct OrchestratorApi;

/// Every route of the orchestrator, each with its OpenAPI operation: the router serves exactly
/// what the document ([`openapi`]) lists.
fn routes() -> OpenApiRouter<OrchestratorHandle> {
    let batches = OpenApiRouter::new()
        .routes(routes!(report_batch))
        .routes(routes!(register_batch))
        .layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT));
    OpenApiRouter::with_openapi(OrchestratorApi::openapi())
        .routes(routes!(cluster::health))
        .routes(routes!(list_jobs))
        .routes(routes!(cancel))
        .routes(routes!(retry))
        .routes(routes!(live_snapshots))
        .routes(routes!(register))
        .routes(routes!(report_status))
        .routes(routes!(post_status_of, put_status_of))
        .routes(routes!(heartbeat))
        .routes(routes!(cluster::raft))
        .routes(routes!(cluster::cluster))
        .routes(routes!(cluster::add_node))
        .routes(routes!(cluster::remove_node))
        .routes(routes!(cluster::metrics))
        .routes(routes!(api_docs))
        .routes(routes!(prometheus))
        .merge(batches)
}

/// The orchestrator's OpenAPI document, made once.
pub fn openapi() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut document = routes().split_for_parts().1;
        http::document_common_errors(&mut document);
        http::document_security(&mut document, access);
        document
    })
}

/// `GET /api/v3/api-docs`: this document, as JSON.
#[utoipa::path(
    get,
    path = "/api/v3/api-docs",
    tag = "operations",
    responses((status = 200, description = "The orchestrator's OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
async fn api_docs() -> Response {
    match openapi().to_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(error) => ApiError::Internal(error).into_response(),
    }
}

/// `GET /metrics`: the process's metrics in the Prometheus text format (docs/metrics.md).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The process's metrics (docs/metrics.md)", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        (status = 404, description = "This process exports no metrics", body = ErrorBody),
    )
)]
async fn prometheus(State(handle): State<OrchestratorHandle>) -> Response {
    match &handle.prometheus {
        Some(text) => prometheus_response(text),
        None => ApiError::NotFound("this process exports no metrics".into()).into_response(),
    }
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
#[utoipa::path(
    get,
    path = "/api/jobs",
    tag = "jobs",
    params(
        ("status" = Option<JobStatus>, Query, description = "Only jobs in this state (any case)"),
        ("limit" = Option<usize>, Query, minimum = 0, description = "At most this many (default 100, at most 1000)"),
        ("offset" = Option<usize>, Query, minimum = 0, description = "Skip this many first"),
    ),
    responses(
        (status = 200, description = "The jobs this node holds: live ones, then finished ones still held", body = LiveJobs),
        (status = 400, description = "A bad parameter", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    post,
    path = "/api/jobs/{id}/cancel",
    tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "Committed: the job, CANCELLED", body = JobChanged),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is already finished", body = ErrorBody),
        (status = 503, description = "No leader could commit it (or none is ready): try again", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    post,
    path = "/api/jobs/{id}/retry",
    tag = "gateways",
    params(("id" = String, Path, description = "The job's id")),
    request_body(content = JobResponse, description = "The read model's snapshot of the FAILED, TIMEOUT or CANCELLED job"),
    responses(
        (status = 200, description = "Committed: the new attempt's snapshot, QUEUED", body = JobChanged),
        (status = 400, description = "A bad body, or the path's id is not the body's", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is not FAILED, TIMEOUT or CANCELLED", body = ErrorBody),
        (status = 429, description = "The queue of waiting jobs is full", body = ErrorBody),
        (status = 503, description = "No leader could commit it (or none is ready): try again", body = ErrorBody),
    )
)]
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
    check_retry_snapshot(&stored)?;
    let Applied { job, .. } = applied(handle.retry(&stored).await)?;
    Ok(Json(JobChanged {
        status: QUEUED.to_string(),
        job: job.map(|job| *job),
    }))
}

/// Most attempts a retry's snapshot may carry: the history of about ten chains at the largest
/// `maxRetries`.
const MAX_PREVIOUS_ATTEMPTS: usize = 10_000;

/// Checks what a retry takes from the caller's snapshot (issue 11): its spec within the bounds
/// of a job request, the attempt and version under the machine's floors (so no number can
/// overflow), a bounded history. What the orchestrator holds itself (a tombstone's attempt and
/// version) wins over the snapshot's in the state machine. Errors: 400 naming the field.
fn check_retry_snapshot(stored: &JobResponse) -> Result<(), ApiError> {
    use distriqueue_core::machine::{MAX_ATTEMPT_FLOOR, MAX_VERSION_FLOOR};
    distriqueue_core::request::JobSpec::from_response(stored)
        .check("")
        .map_err(ApiError::Validation)?;
    if stored.attempt > MAX_ATTEMPT_FLOOR || stored.version > MAX_VERSION_FLOOR {
        return Err(ApiError::BadRequest(format!(
            "attempt must be at most {MAX_ATTEMPT_FLOOR} and version at most {MAX_VERSION_FLOOR}"
        )));
    }
    if stored.attempts.len() > MAX_PREVIOUS_ATTEMPTS {
        return Err(ApiError::BadRequest(format!(
            "attempts must list at most {MAX_PREVIOUS_ATTEMPTS} attempts"
        )));
    }
    Ok(())
}

/// `GET /api/jobs/snapshots` (for gateways; not in CONTRACT.md): `{jobs: [JobResponse]}`, the
/// committed snapshot of every live job, to reconcile a read model with.
#[utoipa::path(
    get,
    path = "/api/jobs/snapshots",
    tag = "gateways",
    responses((status = 200, description = "The committed snapshot of every live job", body = Snapshots))
)]
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
#[utoipa::path(
    post,
    path = "/api/jobs/register",
    tag = "gateways",
    request_body(content = RegisterRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Committed (or a repeat of the id or idempotency key: created false)", body = Registered),
        (status = 400, description = "A bad body, or the validation shape naming each bad field", body = ErrorBody),
        (status = 429, description = "The queue of waiting jobs is full", body = ErrorBody),
        (status = 503, description = "No leader could commit it (or none is ready): try again", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    post,
    path = "/api/jobs/register/batch",
    tag = "gateways",
    request_body(content = RegisterBatch),
    responses(
        (status = 200, description = "Committed in one log entry: one answer per job, in order", body = BatchResults<Registered>),
        (status = 400, description = "A bad body", body = ErrorBody),
        (status = 503, description = "No leader could commit it (or none is ready): try again", body = ErrorBody),
    )
)]
async fn register_batch(
    State(handle): State<OrchestratorHandle>,
    body: Result<Json<RegisterBatch>, JsonRejection>,
) -> Result<Json<BatchResults<Registered>>, ApiError> {
    let RegisterBatch { jobs } = read_body(body, "bad register batch")?;
    let mut violations = distriqueue_core::request::Violations::new();
    for (index, job) in jobs.iter().enumerate() {
        if let Err(bad) = job.spec.check(&format!("jobs[{index}].")) {
            violations.extend(bad);
        }
    }
    if !violations.is_empty() {
        return Err(ApiError::Validation(violations));
    }
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

#[utoipa::path(
    post,
    path = "/api/jobs/status",
    tag = "workers",
    request_body(content = StatusReport, content_type = "application/json"),
    responses(
        (status = 200, description = "Committed", body = Updated),
        (status = 400, description = "A bad body", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "Refused: the lease is another worker's, the attempt is superseded, or the job is finished", body = ErrorBody),
        (status = 503, description = "No leader could commit it (or none is ready): try again", body = ErrorBody),
    )
)]
async fn report_status(
    State(handle): State<OrchestratorHandle>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Updated>, ApiError> {
    apply_report(&handle, body, None).await
}

/// `POST /api/jobs/{id}/status`: a report about the path's job.
#[utoipa::path(
    post,
    path = "/api/jobs/{id}/status",
    tag = "workers",
    params(("id" = String, Path, description = "The job's id (wins over the body's)")),
    request_body(content = StatusReport, content_type = "application/json"),
    responses(
        (status = 200, description = "Committed", body = Updated),
        (status = 400, description = "A bad body", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "Refused: the lease is another worker's, the attempt is superseded, or the job is finished", body = ErrorBody),
        (status = 503, description = "No leader could commit it (or none is ready): try again", body = ErrorBody),
    )
)]
async fn post_status_of(
    State(handle): State<OrchestratorHandle>,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Updated>, ApiError> {
    apply_report(&handle, body, Some(&id)).await
}

/// `PUT /api/jobs/{id}/status`: as `POST` (the original workers used either).
#[utoipa::path(
    put,
    path = "/api/jobs/{id}/status",
    tag = "workers",
    params(("id" = String, Path, description = "The job's id (wins over the body's)")),
    request_body(content = StatusReport, content_type = "application/json"),
    responses(
        (status = 200, description = "Committed", body = Updated),
        (status = 400, description = "A bad body", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "Refused: the lease is another worker's, the attempt is superseded, or the job is finished", body = ErrorBody),
        (status = 503, description = "No leader could commit it (or none is ready): try again", body = ErrorBody),
    )
)]
async fn put_status_of(
    state: State<OrchestratorHandle>,
    path: Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Updated>, ApiError> {
    post_status_of(state, path, body).await
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
#[utoipa::path(
    post,
    path = "/api/jobs/status/batch",
    tag = "workers",
    request_body(content = ReportBatch),
    responses(
        (status = 200, description = "Committed in one log entry: one answer per report, in order", body = BatchResults<Updated>),
        (status = 400, description = "A bad body", body = ErrorBody),
        (status = 503, description = "No leader could commit it (or none is ready): try again", body = ErrorBody),
    )
)]
async fn report_batch(
    State(handle): State<OrchestratorHandle>,
    body: Result<Json<ReportBatch>, JsonRejection>,
) -> Result<Json<BatchResults<Updated>>, ApiError> {
    let ReportBatch { mut reports } = read_body(body, "bad report batch")?;
    for (index, report) in reports.iter_mut().enumerate() {
        check_report(report)
            .map_err(|message| ApiError::BadRequest(format!("reports[{index}]: {message}")))?;
    }
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
#[utoipa::path(
    post,
    path = "/api/workers/heartbeat",
    tag = "workers",
    request_body(content = WorkerHeartbeat),
    responses(
        (status = 200, description = "Recorded: the jobs this worker must stop", body = HeartbeatAnswer),
        (status = 400, description = "A bad body", body = ErrorBody),
        (status = 429, description = "A new worker id while the leader knows as many workers as it keeps (4096)", body = ErrorBody),
        (status = 503, description = "This node cannot confirm it leads (or no leader is ready)", body = ErrorBody),
    )
)]
async fn heartbeat(
    State(handle): State<OrchestratorHandle>,
    body: Result<Json<WorkerHeartbeat>, JsonRejection>,
) -> Result<Json<HeartbeatAnswer>, ApiError> {
    let heartbeat = read_body(body, "bad heartbeat")?;
    heartbeat.worker_id.check().map_err(ApiError::BadRequest)?;
    // The leader keeps each heartbeat: its free texts are bounded like names (blank allowed).
    for (field, text) in [
        ("worker_type", Some(heartbeat.worker_type.as_str())),
        ("instance", heartbeat.instance.as_deref()),
    ] {
        if let Some(message) = text
            .filter(|text| !text.is_empty())
            .and_then(|text| distriqueue_core::model::check_label(text).err())
        {
            return Err(ApiError::BadRequest(format!("{field} {message}")));
        }
    }
    let cancel = handle.heartbeat(heartbeat).await?;
    Ok(Json(HeartbeatAnswer {
        status: ACKNOWLEDGED.to_string(),
        cancel,
    }))
}
