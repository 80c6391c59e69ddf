//! The REST routes of CONTRACT.md ("Gateway"), all under `/api`, and [`router`].

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{middleware, Json, Router};
use distriqueue_core::api::{
    Attempts, ComponentHealth, ErrorBody, GatewayHealth, HealthComponents, JobPage, JobRequest,
    PageInfo, Statistics,
};
use distriqueue_core::request::{
    check_idempotency_key, parse_job_request, JobSpec, Schedule, Violations, MAX_DELAY_S,
};
use distriqueue_core::{JobId, JobResponse, JobStatus, Millis, Refusal};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::body::{check_json_content_type, read_json};
use crate::error::ApiError;
use crate::query::{parse_list_query, parse_stats_query};
use crate::sse;
use crate::state::AppState;
use distriqueue_util::auth::{self, Access};
use distriqueue_util::error_chain;
use distriqueue_util::metrics::{prometheus_response, track_http, HttpMetricNames};
use distriqueue_util::{clock, http};

/// The header of idempotent submission (CONTRACT.md).
const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

/// The gateway's routes over `state`, without a socket (tests call it directly).
///
/// Every answer that is not a success carries the contract's JSON error shape: unknown routes
/// are 404, a known route with another method 405, and any other non-JSON error an axum layer
/// might produce is rewritten into `{"error": ...}` by a last-resort mapper.
pub fn router(state: AppState) -> Router {
    let (routes, _) = routes().split_for_parts();
    let guard = auth::Guard {
        keys: state.config.api_keys.clone(),
        access,
    };
    routes
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::map_response(http::json_errors_only))
        .layer(middleware::from_fn_with_state(guard, auth::require_key))
        .layer(middleware::from_fn_with_state(
            HttpMetricNames {
                requests: crate::metrics::HTTP_REQUESTS,
                duration: crate::metrics::HTTP_DURATION,
            },
            track_http,
        ))
        .with_state(state)
}

/// What each route asks of the caller's API key (SECURITY.md): health, `/api/auth` and the
/// dashboard's files nothing, every read `Read`, submit, batch, cancel, retry and a dead-letter
/// group's retry `Client`; anything else (no route) `Admin`.
pub fn access(method: &Method, route: Option<&str>) -> Access {
    let reads = *method == Method::GET || *method == Method::HEAD;
    match (route, reads) {
        // The dashboard's files hold no data; it asks for a key before reading any.
        (
            Some("/api/actuator/health" | "/api/auth" | "/" | "/dashboard" | "/dashboard/{file}"),
            _,
        ) => Access::Public,
        (Some(_), true) => Access::Read,
        (
            Some(
                "/api/jobs"
                | "/api/jobs/batch"
                | "/api/jobs/{id}/cancel"
                | "/api/jobs/{id}/retry"
                | "/api/dead-letters/retry",
            ),
            false,
        ) if *method == Method::POST => Access::Client,
        _ => Access::Admin,
    }
}

/// Every route of the gateway, each with its OpenAPI operation: the router serves exactly what
/// the document ([`crate::openapi`]) lists.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::docs::GatewayApi::openapi())
        .routes(routes!(submit_job, list_jobs))
        .routes(routes!(crate::batch::submit_batch))
        .routes(routes!(statistics))
        .routes(routes!(sse::stream))
        .routes(routes!(get_job))
        .routes(routes!(cancel_job))
        .routes(routes!(retry_job))
        .routes(routes!(list_attempts))
        .routes(routes!(health))
        .routes(routes!(prometheus))
        .routes(routes!(crate::docs::api_docs))
        .routes(routes!(crate::docs::swagger_ui_html))
        .routes(routes!(crate::docs::swagger_ui_index))
        .routes(routes!(crate::docs::swagger_ui_file))
        .routes(routes!(crate::dashboard::root))
        .routes(routes!(crate::dashboard::page))
        .routes(routes!(crate::dashboard::asset))
        .routes(routes!(crate::dashboard::auth))
        .routes(routes!(crate::dashboard::dead_letters))
        .routes(routes!(crate::dashboard::retry_group))
        .routes(routes!(crate::dashboard::timeline))
        .routes(routes!(crate::dashboard::workers))
        .routes(routes!(crate::dashboard::cluster))
}

/// `POST /api/jobs`: validate, mint the id, commit through the orchestrator, store the
/// snapshot, answer 202 with `Location`; a repeated idempotency key (body field or
/// `Idempotency-Key` header) answers 200 with the first job and creates nothing.
#[utoipa::path(
    post,
    path = "/api/jobs",
    tag = "jobs",
    request_body(content = JobRequest, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes the submission idempotent, as the body's idempotencyKey (1 to 255 visible ASCII characters)")),
    responses(
        (status = 202, description = "Committed: QUEUED, or PENDING when scheduled", body = JobResponse,
            headers(("Location" = String, description = "/api/jobs/{id}"))),
        (status = 200, description = "A repeated idempotency key: the first job", body = JobResponse),
        (status = 400, description = "Malformed JSON, or the validation shape naming each bad field", body = ErrorBody),
        (status = 413, description = "The body is larger than the limit", body = ErrorBody),
        (status = 415, description = "The body is not declared as JSON", body = ErrorBody),
        (status = 429, description = "The queue of waiting jobs is full", body = ErrorBody),
        (status = 503, description = "No orchestrator could commit the job (nothing was recorded)", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    post,
    path = "/api/jobs/{id}/retry",
    tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "A new chain of attempts: the job, QUEUED", body = JobResponse),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is not FAILED, TIMEOUT or CANCELLED", body = ErrorBody),
        (status = 429, description = "The queue of waiting jobs is full", body = ErrorBody),
        (status = 503, description = "No orchestrator could commit the retry", body = ErrorBody),
    )
)]
async fn retry_job(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<JobResponse>, ApiError> {
    let id = job_id_of(path)?;
    retry_stored(&state, id).await.map(Json)
}

/// Retries the job `id` the read model holds (FAILED, TIMEOUT or CANCELLED) and stores its new
/// snapshot: `POST /api/jobs/{id}/retry`, and each job of a dead-letter group's retry.
///
/// Errors: 404 unknown; 409 for another state; the orchestrator's refusal or unavailability.
pub(crate) async fn retry_stored(state: &AppState, id: JobId) -> Result<JobResponse, ApiError> {
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
    Ok(job)
}

/// `GET /api/jobs/{id}/attempts`: each attempt's number, worker, state, error, start and end.
#[utoipa::path(
    get,
    path = "/api/jobs/{id}/attempts",
    tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "Each attempt: number, worker, state, error, start and end", body = Attempts),
        (status = 404, description = "No such job", body = ErrorBody),
    )
)]
async fn list_attempts(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Attempts>, ApiError> {
    let id = job_id_of(path)?;
    match state.store.get(id).await? {
        Some(job) => Ok(Json(Attempts {
            job_id: id,
            attempts: job.attempts,
        })),
        None => Err(job_not_found(&id.to_string())),
    }
}

/// `GET /api/jobs/{id}`: the read model's record; 404 also for an id that is not a UUID.
#[utoipa::path(
    get,
    path = "/api/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job as the read model holds it", body = JobResponse),
        (status = 404, description = "No such job (also for an id that is not a UUID)", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    post,
    path = "/api/jobs/{id}/cancel",
    tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job, CANCELLED (a running one's handler is told to stop)", body = JobResponse),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is already finished", body = ErrorBody),
        (status = 503, description = "No orchestrator could commit the cancel", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    get,
    path = "/api/jobs",
    tag = "jobs",
    params(crate::docs::ListParams),
    responses(
        (status = 200, description = "One page of the matching jobs", body = JobPage),
        (status = 400, description = "The validation shape naming each bad parameter", body = ErrorBody),
    )
)]
async fn list_jobs(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    let Query(pairs) =
        query.map_err(|error| ApiError::BadRequest(format!("bad query string: {error}")))?;
    let query = parse_list_query(&pairs).map_err(ApiError::Validation)?;
    let page = state.store.list(&query).await?;
    let size = u64::from(query.size.max(1));
    let total_pages = page.total_elements.div_ceil(size);
    Ok(Json(JobPage {
        content: page.content,
        page: PageInfo {
            size: query.size,
            number: query.page,
            total_elements: page.total_elements,
            total_pages,
        },
    }))
}

/// `GET /api/jobs/statistics?from&to&type`: counts, rates and breakdowns of the jobs created
/// in `[from, to]` (either open), from SQL aggregates; 400 naming a bad parameter.
#[utoipa::path(
    get,
    path = "/api/jobs/statistics",
    tag = "jobs",
    params(crate::docs::StatsParams),
    responses(
        (status = 200, description = "Counts, rates and breakdowns of the jobs created in the range", body = Statistics),
        (status = 400, description = "The validation shape naming each bad parameter", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    get,
    path = "/api/actuator/health",
    tag = "operations",
    responses(
        (status = 200, description = "UP: the read model answers", body = GatewayHealth),
        (status = 503, description = "DOWN: the read model does not answer", body = GatewayHealth),
    )
)]
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
        Json(GatewayHealth {
            status: overall.to_string(),
            components: HealthComponents {
                read_model: ComponentHealth {
                    status: read_model_status.to_string(),
                },
            },
            timestamp: clock::now().to_iso(),
        }),
    )
        .into_response()
}

/// `GET /api/actuator/prometheus`: the process's metrics in the Prometheus text format
/// (docs/metrics.md; the original's Spring actuator path).
#[utoipa::path(
    get,
    path = "/api/actuator/prometheus",
    tag = "operations",
    responses(
        (status = 200, description = "The process's metrics (docs/metrics.md)", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        (status = 404, description = "This process exports no metrics", body = ErrorBody),
    )
)]
async fn prometheus(State(state): State<AppState>) -> Response {
    match &state.config.prometheus {
        Some(text) => prometheus_response(text),
        None => ApiError::NotFound("this process exports no metrics".into()).into_response(),
    }
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("No route for {method} {}", uri.path()))
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("Method {method} is not allowed on {}", uri.path()))
}

fn job_id_of(path: Result<Path<String>, PathRejection>) -> Result<JobId, ApiError> {
    let Path(text) = path.map_err(|error| ApiError::BadRequest(format!("bad path: {error}")))?;
    text.parse::<JobId>().map_err(|_| job_not_found(&text))
}

fn job_not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("Job not found: {id}"))
}
