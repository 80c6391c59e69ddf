//! The REST routes of CONTRACT.md ("Gateway"), all under `/api`, and [`router`].

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use distriqueue_core::api::Statistics;
use distriqueue_core::request::{
    check_idempotency_key, parse_job_request, JobSpec, Schedule, Violations, MAX_DELAY_S,
};
use distriqueue_core::{JobId, JobResponse, JobStatus, Millis, Refusal};
use serde_json::json;

use crate::body::{check_json_content_type, read_json};
use crate::error::ApiError;
use crate::query::{parse_list_query, parse_stats_query};
use crate::sse;
use crate::state::AppState;
use distriqueue_util::clock;
use distriqueue_util::error_chain;

/// The header of idempotent submission (CONTRACT.md).
const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

/// The gateway's routes over `state`, without a socket (tests call it directly).
///
/// Every answer that is not a success carries the contract's JSON error shape: unknown routes
/// are 404, a known route with another method 405, and any other non-JSON error an axum layer
/// might produce is rewritten into `{"error": ...}` by a last-resort mapper.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/jobs", post(submit_job).get(list_jobs))
        .route("/api/jobs/batch", post(crate::batch::submit_batch))
        .route("/api/jobs/statistics", get(statistics))
        .route("/api/jobs/stream", get(sse::stream))
        .route("/api/jobs/{id}", get(get_job))
        .route("/api/jobs/{id}/cancel", post(cancel_job))
        .route("/api/jobs/{id}/retry", post(retry_job))
        .route("/api/jobs/{id}/attempts", get(list_attempts))
        .route("/api/actuator/health", get(health))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::map_response(json_errors_only))
        .with_state(state)
}

/// `POST /api/jobs`: validate, mint the id, commit through the orchestrator, store the
/// snapshot, answer 202 with `Location`; a repeated idempotency key (body field or
/// `Idempotency-Key` header) answers 200 with the first job and creates nothing.
async fn submit_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_json_content_type(&headers)?;
    let request = read_json(&headers, body, state.config.body_limit_bytes).await?;
    let mut spec = parse_job_request(&request, "").map_err(ApiError::Validation)?;
    check_schedule(&spec, "scheduleAt").map_err(ApiError::Validation)?;
    if let Some(header) = headers.get(IDEMPOTENCY_KEY_HEADER) {
        let key = header
            .to_str()
            .map_err(|_| ApiError::violation(IDEMPOTENCY_KEY_HEADER, "must be visible ASCII text"))
            .and_then(|text| {
                check_idempotency_key(text)
                    .map_err(|message| ApiError::violation(IDEMPOTENCY_KEY_HEADER, message))
            })?;
        match &spec.idempotency_key {
            Some(body_key) if *body_key != key => {
                return Err(ApiError::violation(
                    IDEMPOTENCY_KEY_HEADER,
                    "differs from the body's idempotencyKey",
                ))
            }
            _ => spec.idempotency_key = Some(key),
        }
    }
    let registered = state
        .orchestrator
        .register(clock::new_job_id(), spec)
        .await?;
    let id = registered.job_id;
    let job = match registered.job {
        Some(job) => {
            // The job is committed: answering an error now would make the client submit it
            // again under a new id. If the read model cannot take it yet, the event feed stores
            // it later (it retries until stored).
            if let Err(error) = state.writer.write(vec![job.clone()]).await {
                tracing::warn!(job_id = %id, error = %error_chain(&error), "job committed but not yet in the read model");
            }
            job
        }
        // The job is known and finished: the read model has it.
        None => state
            .store
            .get(id)
            .await?
            .ok_or_else(|| ApiError::Internal {
                context: format!(
                    "job {id} is finished at the orchestrator but absent from the read model"
                ),
                source: None,
            })?,
    };
    if !registered.created {
        tracing::debug!(job_id = %id, "repeated submission answered with the first job");
        return Ok((StatusCode::OK, Json(job)).into_response());
    }
    tracing::debug!(job_id = %id, job_type = %job.job_type, "job accepted");
    let location = HeaderValue::try_from(format!("/api/jobs/{id}"))
        .map_err(|error| ApiError::internal("making the Location header", error))?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(job),
    )
        .into_response())
}

/// A `scheduleAt` at most 366 days ahead (the bound `delaySeconds` has too); `field` names it
/// in the violation.
pub(crate) fn check_schedule(spec: &JobSpec, field: &str) -> Result<(), Violations> {
    if let Some(Schedule::At(at)) = spec.schedule {
        let latest = clock::now()
            .0
            .saturating_add(i64::try_from(MAX_DELAY_S * 1000).unwrap_or(i64::MAX));
        if at.0 > latest {
            return Err(Violations::from([(
                field.to_string(),
                "must be at most 366 days ahead".to_string(),
            )]));
        }
    }
    Ok(())
}

/// `POST /api/jobs/{id}/retry`: a new chain of attempts for a FAILED, TIMEOUT or CANCELLED job
/// (200 with the QUEUED snapshot, stored first); 409 for any other state; 404 unknown.
async fn retry_job(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<JobResponse>, ApiError> {
    let id = job_id_of(path)?;
    let Some(stored) = state.store.get(id).await? else {
        return Err(job_not_found(&id.to_string()));
    };
    if !matches!(
        stored.status,
        JobStatus::Failed | JobStatus::Timeout | JobStatus::Cancelled
    ) {
        // Also for a job the orchestrator no longer holds: a COMPLETED job stays completed.
        return Err(ApiError::Refused(Refusal::NotRetryable {
            id,
            status: stored.status,
        }));
    }
    let job = state.orchestrator.retry(&stored).await?;
    state.writer.write(vec![job.clone()]).await?;
    tracing::debug!(job_id = %id, attempt = job.attempt, "job retried");
    Ok(Json(job))
}

/// `GET /api/jobs/{id}/attempts`: each attempt's number, worker, state, error, start and end.
async fn list_attempts(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = job_id_of(path)?;
    match state.store.get(id).await? {
        Some(job) => Ok(Json(json!({"jobId": id, "attempts": job.attempts}))),
        None => Err(job_not_found(&id.to_string())),
    }
}

/// `GET /api/jobs/{id}`: the read model's record; 404 also for an id that is not a UUID.
async fn get_job(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<JobResponse>, ApiError> {
    let id = job_id_of(path)?;
    match state.store.get(id).await? {
        Some(job) => Ok(Json(job)),
        None => Err(job_not_found(&id.to_string())),
    }
}

/// `POST /api/jobs/{id}/cancel`: 200 with the CANCELLED snapshot, stored first; 404 unknown;
/// 409 terminal.
async fn cancel_job(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<JobResponse>, ApiError> {
    let id = job_id_of(path)?;
    match state.orchestrator.cancel(id).await {
        Ok(job) => {
            state.writer.write(vec![job.clone()]).await?;
            tracing::debug!(job_id = %id, "job cancelled");
            Ok(Json(job))
        }
        Err(crate::OrchestratorError::Refused(Refusal::NotFound(_))) => {
            // The orchestrator forgets a finished job after its retention window; the read
            // model still knows it was terminal, and that is a 409, not a 404.
            match state.store.get(id).await? {
                Some(job) if job.status.is_terminal() => {
                    Err(ApiError::Refused(Refusal::Terminal {
                        id,
                        status: job.status,
                    }))
                }
                _ => Err(job_not_found(&id.to_string())),
            }
        }
        Err(error) => Err(error.into()),
    }
}

/// `GET /api/jobs`: filters, paging and sorting; every bad parameter is named.
async fn list_jobs(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(pairs) =
        query.map_err(|error| ApiError::BadRequest(format!("bad query string: {error}")))?;
    let query = parse_list_query(&pairs).map_err(ApiError::Validation)?;
    let page = state.store.list(&query).await?;
    let size = u64::from(query.size.max(1));
    let total_pages = page.total_elements.div_ceil(size);
    Ok(Json(json!({
        "content": page.content,
        "page": {
            "size": query.size,
            "number": query.page,
            "totalElements": page.total_elements,
            "totalPages": total_pages,
        }
    })))
}

/// `GET /api/jobs/statistics?from&to&type`: counts, rates and breakdowns of the jobs created
/// in `[from, to]` (either open), from SQL aggregates; 400 naming a bad parameter.
async fn statistics(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Statistics>, ApiError> {
    let Query(pairs) =
        query.map_err(|error| ApiError::BadRequest(format!("bad query string: {error}")))?;
    let query = parse_stats_query(&pairs).map_err(ApiError::Validation)?;
    let mut statistics = state.store.statistics(&query).await?;
    statistics.time_range_start = query.from.map(Millis::to_iso);
    statistics.time_range_end = query.to.map(Millis::to_iso);
    Ok(Json(statistics))
}

/// `GET /api/actuator/health`: UP when the read model answers, else 503 DOWN.
async fn health(State(state): State<AppState>) -> Response {
    // A primary-key lookup of an id that is never minted: the cheapest real query.
    let read_model = state.store.get(JobId(uuid::Uuid::nil())).await;
    let (status, read_model_status) = match &read_model {
        Ok(_) => (StatusCode::OK, "UP"),
        Err(error) => {
            tracing::warn!(error = %error_chain(error), "health check: read model unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "DOWN")
        }
    };
    let overall = if status == StatusCode::OK {
        "UP"
    } else {
        "DOWN"
    };
    (
        status,
        Json(json!({
            "status": overall,
            "components": { "readModel": { "status": read_model_status } },
            "timestamp": clock::now().to_iso(),
        })),
    )
        .into_response()
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("No route for {method} {}", uri.path()))
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("Method {method} is not allowed on {}", uri.path()))
}

/// Last resort: an error answer that is not JSON (from an axum layer, never from a handler)
/// becomes `{"error": "<reason>"}` with the same status and headers.
async fn json_errors_only(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|text| text.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let reason = status.canonical_reason().unwrap_or("request failed");
    let body = json!({"error": reason}).to_string();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

fn job_id_of(path: Result<Path<String>, PathRejection>) -> Result<JobId, ApiError> {
    let Path(text) = path.map_err(|error| ApiError::BadRequest(format!("bad path: {error}")))?;
    text.parse::<JobId>().map_err(|_| job_not_found(&text))
}

fn job_not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("Job not found: {id}"))
}
