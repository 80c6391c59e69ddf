//! The web dashboard (issue 12): its files, embedded in the binary and served at `/dashboard`
//! (`/` redirects there), and the routes it reads beyond the contract's: what the caller's key
//! allows (`/api/auth`), the dead letters grouped by type and error and the retry of a group,
//! a timeline of the last minutes, the workers and the orchestrator cluster. The page loads
//! nothing from elsewhere: a Content-Security-Policy keeps it to this origin.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use distriqueue_core::api::{ClusterStatus, ErrorBody, RaftRole, WorkerView};
use distriqueue_core::{JobStatus, Millis};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::body::{check_json_content_type, read_json};
use crate::error::ApiError;
use crate::state::AppState;
use crate::NodeAnswer;
use distriqueue_store::GroupKey;
use distriqueue_util::clock;

/// The dashboard's files: (name, content type, bytes).
const FILES: [(&str, &str, &[u8]); 3] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../assets/dashboard/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/dashboard/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/dashboard/style.css"),
    ),
];

/// The page may load and call only this origin; no frame may embed it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

fn file(name: &str) -> Response {
    let Some((_, content_type, bytes)) = FILES.iter().find(|(file, _, _)| *file == name) else {
        return ApiError::NotFound(format!("no dashboard file {name:?}")).into_response();
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        *bytes,
    )
        .into_response()
}

/// `GET /`: to the dashboard.
#[utoipa::path(
    get,
    path = "/",
    tag = "dashboard",
    responses((status = 303, description = "To /dashboard"))
)]
pub(crate) async fn root() -> Redirect {
    Redirect::to("/dashboard")
}

/// `GET /dashboard`: the dashboard's page (it asks for an API key when the gateway has keys).
#[utoipa::path(
    get,
    path = "/dashboard",
    tag = "dashboard",
    responses((status = 200, description = "The dashboard", content_type = "text/html"))
)]
pub(crate) async fn page() -> Response {
    file("index.html")
}

/// `GET /dashboard/{file}`: the dashboard's script and styles.
#[utoipa::path(
    get,
    path = "/dashboard/{file}",
    tag = "dashboard",
    params(("file" = String, Path, description = "A file of the dashboard", example = "app.js")),
    responses(
        (status = 200, description = "The file"),
        (status = 404, description = "No such file", body = ErrorBody),
    )
)]
pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    file(&name)
}

/// What the caller's API key allows (`GET /api/auth`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuthInfo {
    /// Whether this gateway has API keys (without, everything is open).
    key_required: bool,
    /// The roles of the key sent (`client`, `worker`, `admin`); empty without a key or with
    /// one this gateway does not know.
    roles: Vec<&'static str>,
    /// Whether reads are open to anyone (`--public-reads`).
    public_reads: bool,
}

/// `GET /api/auth`: what the key sent allows, so the dashboard shows only the actions it may
/// take. Open to anyone (it tells nothing about other keys).
#[utoipa::path(
    get,
    path = "/api/auth",
    tag = "dashboard",
    responses((status = 200, description = "The key's roles", body = AuthInfo))
)]
pub(crate) async fn auth(State(state): State<AppState>, headers: HeaderMap) -> Json<AuthInfo> {
    let keys = &state.config.api_keys;
    Json(AuthInfo {
        key_required: !keys.is_empty(),
        roles: keys.role_names_of(&headers),
        public_reads: keys.public_reads(),
    })
}

/// Most groups `GET /api/dead-letters` lists.
const MAX_GROUPS: usize = 200;

/// Most jobs one `POST /api/dead-letters/retry` retries (the dashboard calls again for more).
pub const GROUP_RETRY_BATCH: usize = 100;

/// One group of dead letters.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeadLetterGroup {
    /// The jobs' type.
    #[serde(rename = "type")]
    job_type: String,
    /// FAILED or TIMEOUT.
    status: JobStatus,
    /// The error they ended with (`null`: none recorded).
    error_message: Option<String>,
    /// How many jobs.
    count: u64,
    /// The latest end among them, ISO-8601 UTC.
    last_at: String,
}

/// `GET /api/dead-letters`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeadLetters {
    /// The largest groups first, at most 200.
    groups: Vec<DeadLetterGroup>,
}

/// `GET /api/dead-letters`: the FAILED and TIMEOUT jobs grouped by type, status and error
/// message, the largest groups first.
#[utoipa::path(
    get,
    path = "/api/dead-letters",
    tag = "dashboard",
    responses((status = 200, description = "The groups, largest first (at most 200)", body = DeadLetters))
)]
pub(crate) async fn dead_letters(
    State(state): State<AppState>,
) -> Result<Json<DeadLetters>, ApiError> {
    let groups = state.store.dead_letter_groups(MAX_GROUPS).await?;
    Ok(Json(DeadLetters {
        groups: groups
            .into_iter()
            .map(|group| DeadLetterGroup {
                job_type: group.job_type,
                status: group.status,
                error_message: group.error_message,
                count: group.count,
                last_at: group.last_at.to_iso(),
            })
            .collect(),
    }))
}

/// `POST /api/dead-letters/retry`'s body: the group, as `GET /api/dead-letters` names it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct GroupRetry {
    /// The jobs' type.
    #[serde(rename = "type")]
    job_type: String,
    /// FAILED or TIMEOUT.
    status: JobStatus,
    /// The error they ended with (`null` or absent: none recorded).
    #[serde(default)]
    error_message: Option<String>,
    /// Only jobs after this id (the previous answer's `last`): the group a page at a time.
    #[serde(default)]
    after: Option<distriqueue_core::JobId>,
}

/// `POST /api/dead-letters/retry`'s answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GroupRetried {
    /// Jobs retried by this call (each QUEUED again).
    retried: usize,
    /// Jobs of the group whose retry was refused (each error by job id).
    refused: BTreeMap<String, String>,
    /// Whether the group may hold more jobs than this call took: call again with `after`.
    remaining: bool,
    /// The last job id this call took (the next call's `after`).
    last: Option<String>,
}

/// `POST /api/dead-letters/retry` `{type, status, errorMessage, after}`: retries up to 100 jobs
/// of the group in id order after `after`, each as `POST /api/jobs/{id}/retry` would; call
/// again with `after` = `last` while `remaining`. 503 (and nothing more tried) when no
/// orchestrator can commit.
#[utoipa::path(
    post,
    path = "/api/dead-letters/retry",
    tag = "dashboard",
    request_body(content = GroupRetry, content_type = "application/json"),
    responses(
        (status = 200, description = "What this call retried", body = GroupRetried),
        (status = 400, description = "A bad body (status must be FAILED or TIMEOUT)", body = ErrorBody),
        (status = 413, description = "The body is larger than the limit", body = ErrorBody),
        (status = 415, description = "The body is not declared as JSON", body = ErrorBody),
        (status = 503, description = "No orchestrator could commit a retry", body = ErrorBody),
    )
)]
pub(crate) async fn retry_group(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<GroupRetried>, ApiError> {
    check_json_content_type(&headers)?;
    let request = read_json(&headers, body, state.config.body_limit_bytes).await?;
    let group: GroupRetry = serde_json::from_value(request).map_err(|error| {
        ApiError::BadRequest(format!(
            "the body must be {{\"type\": ..., \"status\": \"FAILED\" or \"TIMEOUT\", \"errorMessage\": ... or null}}: {error}"
        ))
    })?;
    if !matches!(group.status, JobStatus::Failed | JobStatus::Timeout) {
        return Err(ApiError::violation("status", "must be FAILED or TIMEOUT"));
    }
    distriqueue_core::model::check_label(&group.job_type)
        .map_err(|problem| ApiError::violation("type", problem))?;
    if group
        .error_message
        .as_deref()
        .is_some_and(|message| message.contains('\0'))
    {
        return Err(ApiError::violation("errorMessage", "must not contain NUL"));
    }
    let key = GroupKey {
        job_type: &group.job_type,
        status: group.status,
        error_message: group.error_message.as_deref(),
    };
    let ids = state
        .store
        .dead_letter_ids(&key, group.after, GROUP_RETRY_BATCH + 1)
        .await?;
    let remaining = ids.len() > GROUP_RETRY_BATCH;
    let mut retried = 0;
    let mut refused = BTreeMap::new();
    let mut last = None;
    for id in ids.into_iter().take(GROUP_RETRY_BATCH) {
        match crate::api::retry_stored(&state, id).await {
            Ok(_) => retried += 1,
            // No orchestrator: the rest would fail alike; the client tries again later.
            Err(error @ ApiError::Unavailable(_)) => return Err(error),
            Err(error) => {
                refused.insert(id.to_string(), error.to_string());
            }
        }
        last = Some(id.to_string());
    }
    Ok(Json(GroupRetried {
        retried,
        refused,
        remaining,
        last,
    }))
}

/// `GET /api/jobs/timeline`'s parameters.
#[derive(Debug, Deserialize)]
pub(crate) struct TimelineParams {
    /// The window, in minutes back from now: 1 to 1440 (default 60).
    minutes: Option<u32>,
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Percentiles {
    p50: i64,
    p90: i64,
    p99: i64,
    max: i64,
}

/// One bucket of the timeline.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Bucket {
    /// The bucket's start, ISO-8601 UTC.
    at: String,
    /// Jobs created in it.
    submitted: u64,
    /// Jobs that reached COMPLETED in it.
    completed: u64,
    /// Jobs that reached FAILED or TIMEOUT in it.
    failed: u64,
}

/// `GET /api/jobs/timeline`'s answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TimelineAnswer {
    /// Seconds per bucket (60 for an hour; more for longer windows, at most 60 buckets).
    bucket_seconds: i64,
    /// The buckets with something in them, oldest first.
    buckets: Vec<Bucket>,
    /// How many finished jobs the percentiles are of (the latest 10,000 of the window at most).
    finished_jobs: usize,
    /// Creation to start; `null` when no job finished in the window.
    queue_time_ms: Option<Percentiles>,
    /// Start to end; `null` when no job finished in the window.
    execution_time_ms: Option<Percentiles>,
    /// The jobs waiting to run now (PENDING, QUEUED, RETRYING), by priority: the queues.
    waiting_by_priority: BTreeMap<String, u64>,
}

/// Jobs the latency percentiles are taken over, the latest that finished.
const LATENCY_SAMPLE: usize = 10_000;

fn percentiles(sorted: &[i64]) -> Option<Percentiles> {
    let at = |q: f64| {
        // Nearest rank: the smallest value with at least q of the values at or below it.
        let rank = (q * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    };
    let max = *sorted.last()?;
    Some(Percentiles {
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max,
    })
}

/// `GET /api/jobs/timeline?minutes=60`: jobs submitted, completed and failed per bucket over
/// the last minutes, the queue and execution time percentiles of the jobs that finished in
/// them, and the jobs waiting now by priority (the dashboard's overview).
#[utoipa::path(
    get,
    path = "/api/jobs/timeline",
    tag = "dashboard",
    params(("minutes" = Option<u32>, Query, minimum = 1, maximum = 1440, description = "The window, in minutes back from now: 1 to 1440 (default 60)")),
    responses(
        (status = 200, description = "Per-bucket counts and latency percentiles", body = TimelineAnswer),
        (status = 400, description = "A bad parameter", body = ErrorBody),
    )
)]
pub(crate) async fn timeline(
    State(state): State<AppState>,
    query: Result<Query<TimelineParams>, QueryRejection>,
) -> Result<Json<TimelineAnswer>, ApiError> {
    let Query(params) = query.map_err(|rejection| {
        ApiError::violation(
            "minutes",
            format!("must be a whole number: {}", rejection.body_text()),
        )
    })?;
    let minutes = i64::from(params.minutes.unwrap_or(60));
    if !(1..=1440).contains(&minutes) {
        return Err(ApiError::violation("minutes", "must be 1 to 1440"));
    }
    // At most 60 buckets, of a minute at least.
    let bucket_seconds = minutes.max(60);
    let from = Millis(clock::now().0 - minutes * 60_000);
    let timeline = state
        .store
        .timeline(from, bucket_seconds * 1000, LATENCY_SAMPLE)
        .await?;
    let waiting = state.store.waiting_by_priority().await?;
    Ok(Json(TimelineAnswer {
        bucket_seconds,
        buckets: timeline
            .buckets
            .iter()
            .map(|bucket| Bucket {
                at: bucket.at.to_iso(),
                submitted: bucket.submitted,
                completed: bucket.completed,
                failed: bucket.failed,
            })
            .collect(),
        finished_jobs: timeline.execution_ms.len(),
        queue_time_ms: percentiles(&timeline.queue_ms),
        execution_time_ms: percentiles(&timeline.execution_ms),
        waiting_by_priority: waiting
            .into_iter()
            .map(|(priority, n)| (priority.as_str().to_string(), n))
            .collect(),
    }))
}

/// How long the orchestrators' answers serve `GET /api/cluster` and `/api/workers` (the views
/// poll them, and a node that does not answer costs up to 2 s).
const CLUSTER_ANSWER_TTL: Duration = Duration::from_secs(1);

/// The orchestrators' answers, asked at most once per [`CLUSTER_ANSWER_TTL`] however many
/// dashboards poll (one call at a time; the others wait for its answer).
async fn cluster_answers(state: &AppState) -> Arc<Vec<NodeAnswer>> {
    let mut cache = state.cluster_answers.lock().await;
    if let Some((at, answers)) = cache.as_ref() {
        if at.elapsed() < CLUSTER_ANSWER_TTL {
            return Arc::clone(answers);
        }
    }
    let answers = Arc::new(state.orchestrator.cluster_status().await);
    *cache = Some((Instant::now(), Arc::clone(&answers)));
    answers
}

/// The leader: of the nodes that say they lead, the one of the highest term (a deposed
/// leader cut off from the others may not know it yet).
fn leader_of(answers: &[NodeAnswer]) -> Option<&ClusterStatus> {
    answers
        .iter()
        .filter_map(|answer| answer.status.as_ref().ok())
        .filter(|status| status.raft.role == RaftRole::Leader)
        .max_by_key(|status| status.raft.term)
}

/// A worker in `GET /api/workers`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WorkerRow {
    worker_id: String,
    worker_type: String,
    /// Job slots.
    slots: u32,
    /// Jobs it runs now.
    busy: u32,
    /// Jobs it completed, as it counts them.
    completed: u64,
    /// Jobs it failed, as it counts them.
    failed: u64,
    /// Its last heartbeat at the leader, ISO-8601 UTC.
    last_heartbeat_at: String,
    /// False for a worker the leader declared lost (or forgot) since this gateway saw it.
    alive: bool,
}

/// `GET /api/workers`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Workers {
    /// Alive ones first, by id.
    workers: Vec<WorkerRow>,
}

/// How long a lost worker stays listed.
const LOST_WORKER_SHOWN_MS: i64 = 3_600_000;

/// Most workers the gateway remembers (the leader tracks at most 4096).
const MAX_WORKERS_SHOWN: usize = 4096;

fn worker_row(view: &WorkerView, alive: bool) -> WorkerRow {
    WorkerRow {
        worker_id: view.worker_id.clone(),
        worker_type: view.worker_type.clone(),
        slots: view.capacity,
        busy: view.current_load,
        completed: view.successful_jobs,
        failed: view.failed_jobs,
        last_heartbeat_at: view.last_heartbeat.clone(),
        alive,
    }
}

/// `GET /api/workers`: the workers heartbeating to the leader, and those it lost in the last
/// hour (as this gateway saw them).
#[utoipa::path(
    get,
    path = "/api/workers",
    tag = "dashboard",
    responses(
        (status = 200, description = "The workers", body = Workers),
        (status = 503, description = "No orchestrator leads", body = ErrorBody),
    )
)]
pub(crate) async fn workers(State(state): State<AppState>) -> Result<Json<Workers>, ApiError> {
    let answers = cluster_answers(&state).await;
    let leader = leader_of(&answers).ok_or_else(|| {
        ApiError::Unavailable(crate::OrchestratorError::Unavailable(
            "no orchestrator leads now".into(),
        ))
    })?;
    let now = clock::now();
    let mut seen = state.workers_seen.lock();
    for view in &leader.cluster.workers {
        seen.insert(view.worker_id.clone(), (view.clone(), now));
    }
    let alive: std::collections::BTreeSet<&str> = leader
        .cluster
        .workers
        .iter()
        .map(|view| view.worker_id.as_str())
        .collect();
    seen.retain(|_, (_, at)| now.0 - at.0 <= LOST_WORKER_SHOWN_MS);
    if seen.len() > MAX_WORKERS_SHOWN {
        // Past the cap, the workers seen longest ago go first.
        let mut by_age: Vec<i64> = seen.values().map(|(_, at)| at.0).collect();
        by_age.sort_unstable();
        let cutoff = by_age[by_age.len() - MAX_WORKERS_SHOWN];
        seen.retain(|_, (_, at)| at.0 >= cutoff);
    }
    let mut rows: Vec<WorkerRow> = seen
        .values()
        .map(|(view, _)| worker_row(view, alive.contains(view.worker_id.as_str())))
        .collect();
    rows.sort_by(|a, b| {
        b.alive
            .cmp(&a.alive)
            .then_with(|| a.worker_id.cmp(&b.worker_id))
    });
    Ok(Json(Workers { workers: rows }))
}

/// A node in `GET /api/cluster`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NodeRow {
    /// The URL the gateway reaches it at (not shown to a reader without a key).
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    /// Whether it answered.
    reachable: bool,
    /// Why it did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Its Raft node id.
    node_id: Option<u64>,
    /// Leader, Follower, Candidate, Learner or Shutdown.
    role: Option<RaftRole>,
    /// Its term.
    term: Option<u64>,
    /// The highest index it knows committed.
    commit_index: Option<u64>,
    /// The highest index it applied.
    applied_index: Option<u64>,
    /// Entries behind the leader, as the leader reports it.
    lag: Option<u64>,
    /// Whether it is the leader.
    leader: bool,
}

/// `GET /api/cluster`'s answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClusterView {
    /// Each orchestrator the gateway knows, in its configured order.
    nodes: Vec<NodeRow>,
    /// The leader's node id, when a node answering says it leads.
    leader_id: Option<u64>,
}

/// `GET /api/cluster`: each orchestrator node's role, term, commit and applied index, its lag
/// behind the leader and whether it answered (each asked once, within 2 s).
#[utoipa::path(
    get,
    path = "/api/cluster",
    tag = "dashboard",
    responses((status = 200, description = "The nodes", body = ClusterView))
)]
pub(crate) async fn cluster(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Json<ClusterView> {
    // Readers without a key (`--public-reads`) see no internal URL nor error detail.
    let keys = &state.config.api_keys;
    let detail = keys.is_empty() || !keys.role_names_of(&headers).is_empty();
    let answers = cluster_answers(&state).await;
    let leader = leader_of(&answers);
    let leader_id = leader.map(|status| status.node);
    // Each member's lag as the leader reports it.
    let lags: BTreeMap<u64, u64> = leader
        .map(|status| {
            status
                .raft
                .members
                .iter()
                .filter_map(|member| Some((member.id, member.replication_lag?)))
                .collect()
        })
        .unwrap_or_default();
    let lag_of = |node: u64| lags.get(&node).copied();
    let nodes = answers
        .iter()
        .map(|answer| match &answer.status {
            Ok(status) => NodeRow {
                url: detail.then(|| answer.url.clone()),
                reachable: true,
                error: None,
                node_id: Some(status.node),
                role: Some(status.raft.role),
                term: Some(status.raft.term),
                commit_index: status.raft.commit_index,
                applied_index: status.raft.last_applied,
                lag: lag_of(status.node),
                leader: leader.is_some_and(|leader| std::ptr::eq(leader, status)),
            },
            Err(error) => NodeRow {
                url: detail.then(|| answer.url.clone()),
                reachable: false,
                error: Some(if detail {
                    error.clone()
                } else {
                    "no answer".to_string()
                }),
                node_id: None,
                role: None,
                term: None,
                commit_index: None,
                applied_index: None,
                lag: None,
                leader: false,
            },
        })
        .collect();
    Json(ClusterView { nodes, leader_id })
}
