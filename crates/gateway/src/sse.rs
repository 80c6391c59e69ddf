//! `GET /api/jobs/stream`: Server-Sent Events of job lifecycle changes (CONTRACT.md).
//!
//! Each stream starts with a `connected` event, then one `job-update` event per committed
//! change this gateway receives (in process: once stored; with RabbitMQ: from its own queue of
//! every event, or from the shared read-model queue, whichever brings it first), its `id:` the
//! event's global `seq` and its `data:` one line of JSON. `?jobId=` and `?type=` filter. A subscriber that falls more than
//! [`SSE_BUFFER`] events behind has its stream ended: the client reconnects with the
//! `Last-Event-ID` header (browsers' EventSource does so by itself) and first gets the current
//! state of every job that changed after that event, from the read model, each as a
//! `job-update` with the id of its newest event; then live events go on. Streams end at
//! shutdown too.

use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use distriqueue_core::{JobId, JobResponse, JobStatus, StatusEvent};
use futures::stream::{self, Stream, StreamExt};
use serde::Serialize;
use serde_json::Value;
use tokio_stream::wrappers::BroadcastStream;

use crate::error::ApiError;
use crate::metrics::SseClient;
use crate::state::AppState;
use distriqueue_util::clock;
use distriqueue_util::error_chain;

/// Events held for slow SSE subscribers; one that falls further behind is disconnected.
pub const SSE_BUFFER: usize = 4096;

/// An event as SSE subscribers get it, serialized once for all of them.
#[derive(Debug)]
pub(crate) struct SseUpdate {
    seq: u64,
    job_id: JobId,
    job_type: String,
    /// The `job-update` data: one line of JSON.
    data: String,
}

/// The `job-update` data of CONTRACT.md.
#[derive(Serialize)]
struct JobUpdateData<'a> {
    #[serde(rename = "jobId")]
    job_id: JobId,
    status: JobStatus,
    /// The leader's time of the change.
    timestamp: &'a str,
    #[serde(rename = "workerId")]
    worker_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a Value>,
    #[serde(rename = "errorMessage", skip_serializing_if = "Option::is_none")]
    error_message: Option<&'a str>,
}

impl SseUpdate {
    /// The update that replays a job's stored state (its newest event had `seq`).
    pub(crate) fn from_snapshot(job: &JobResponse, seq: u64) -> SseUpdate {
        let timestamp = job
            .completed_at
            .as_deref()
            .or(job.started_at.as_deref())
            .unwrap_or(&job.created_at);
        let data = JobUpdateData {
            job_id: job.id,
            status: job.status,
            timestamp,
            worker_id: job.worker_id.as_deref(),
            progress: job.progress,
            result: job
                .result
                .as_ref()
                .filter(|_| job.status == JobStatus::Completed),
            error_message: job.error_message.as_deref(),
        };
        SseUpdate::with_data(seq, job.id, &job.job_type, &data)
    }

    /// Builds the update of one lifecycle event.
    pub(crate) fn new(event: &StatusEvent) -> SseUpdate {
        let data = JobUpdateData {
            job_id: event.job_id,
            status: event.status,
            timestamp: &event.occurred_at,
            worker_id: event.worker_id.as_deref(),
            progress: event.progress,
            result: event
                .result
                .as_ref()
                .filter(|_| event.status == JobStatus::Completed),
            error_message: event.error_message.as_deref(),
        };
        SseUpdate::with_data(event.seq, event.job_id, &event.job.job_type, &data)
    }

    fn with_data(seq: u64, job_id: JobId, job_type: &str, data: &JobUpdateData<'_>) -> SseUpdate {
        SseUpdate {
            seq,
            job_id,
            job_type: job_type.to_string(),
            // serde_json::to_string never writes a newline, so `data:` stays one line.
            data: serde_json::to_string(data).unwrap_or_else(|error| {
                tracing::error!(seq, %error, "cannot serialize an SSE update");
                String::from("{}")
            }),
        }
    }

    fn event(&self) -> Event {
        Event::default()
            .event("job-update")
            .id(self.seq.to_string())
            .data(self.data.as_str())
    }

    /// The `seq` of the event.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }
}

/// The filters of the stream.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StreamFilter {
    /// Only this job's updates (a UUID).
    #[serde(rename = "jobId")]
    #[param(rename = "jobId", format = Uuid)]
    job_id: Option<String>,
    /// Only updates of jobs of this type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    job_type: Option<String>,
}

/// Jobs read from the read model per replay query.
const REPLAY_PAGE: usize = 1000;

/// `GET /api/jobs/stream`.
#[utoipa::path(
    get,
    path = "/api/jobs/stream",
    tag = "jobs",
    params(
        StreamFilter,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event: first the current state of every job changed since")
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `connected` {clientId, message, timestamp}, then `job-update` {jobId, status, timestamp, workerId, progress?, result?, errorMessage?} per change, each with an `id:` (the event's seq); keep-alive comments", content_type = "text/event-stream", body = String),
        (status = 400, description = "A bad filter or Last-Event-ID", body = distriqueue_core::api::ErrorBody),
        (status = 429, description = "The gateway serves as many streams as it takes (512)", body = distriqueue_core::api::ErrorBody),
    )
)]
pub(crate) async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    filter: Result<Query<StreamFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(filter) =
        filter.map_err(|error| ApiError::BadRequest(format!("bad query string: {error}")))?;
    let job_id = match filter.job_id.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(
            text.parse::<JobId>()
                .map_err(|_| ApiError::violation("jobId", "must be a UUID"))?,
        ),
    };
    let job_type = filter
        .job_type
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty());

    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "Last-Event-ID must be the id of an earlier job-update event".into(),
                    )
                })?,
        ),
    };
    let wanted = move |update: &SseUpdate| {
        job_id.is_none_or(|id| update.job_id == id)
            && job_type.as_ref().is_none_or(|t| &update.job_type == t)
    };

    let slot = std::sync::Arc::clone(&state.sse_slots)
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::TooMany(format!(
                "this gateway serves {} streams already; try again later",
                crate::state::MAX_SSE_CLIENTS
            ))
        })?;
    // Subscribe before reading the position (and the read model), so the `connected` id
    // never claims an event this stream will not see, and no change falls between the replay
    // and the live events.
    let receiver = state.updates.subscribe();
    let position = state.last_broadcast_seq();
    let client_id = uuid::Uuid::new_v4().to_string();
    tracing::debug!(client_id = %client_id, "SSE client connected");
    let connected = Event::default()
        .event("connected")
        .id(position.to_string())
        .json_data(serde_json::json!({
            "clientId": client_id,
            "message": "Connected to job updates stream",
            "timestamp": clock::now().to_iso(),
        }))
        .map_err(|error| ApiError::internal("encoding the SSE connected event", error))?;

    let replayed = match last_event_id {
        Some(since) => replay(state.clone(), since, wanted.clone()).boxed(),
        None => stream::empty().boxed(),
    };
    let since = last_event_id.unwrap_or(0);
    let updates = BroadcastStream::new(receiver).map(move |item| {
        // A lagging subscriber (`Err(Lagged)`) has lost events: its stream ends.
        let update = item.map_err(|_| ())?;
        Ok((update.seq > since && wanted(&update)).then(|| update.event()))
    });
    let events = stream::once(std::future::ready(Ok(Some(connected))))
        .chain(replayed.map(|event| event.map(Some)))
        .chain(updates)
        // A failed replay page or a lag ends the stream: the client resumes with its last id.
        .take_while(|item| std::future::ready(item.is_ok()))
        .filter_map(|item| std::future::ready(item.ok().flatten().map(Ok::<Event, Infallible>)))
        .take_until(state.streams_closed().cancelled_owned());
    // Counted while the stream lives: axum drops it when the client goes away.
    let client = (SseClient::open(), slot);
    let events = events.inspect(move |_| {
        let _ = &client;
    });
    Ok(sse_response(events, &state))
}

/// The current state of every wanted job whose newest stored event came after `since`, in
/// event order, read from the read model a page at a time as the client takes them. `Err`
/// when a page cannot be read.
fn replay(
    state: AppState,
    since: u64,
    wanted: impl Fn(&SseUpdate) -> bool + Send + 'static,
) -> impl Stream<Item = Result<Event, ()>> + Send {
    stream::unfold(Some(since), move |cursor| {
        let state = state.clone();
        async move {
            let cursor = cursor?;
            match state.store.changed_since(cursor, REPLAY_PAGE).await {
                Ok(page) => {
                    let next = (page.len() == REPLAY_PAGE)
                        .then(|| page.iter().map(|(_, seq)| *seq).max().unwrap_or(cursor));
                    let updates: Vec<SseUpdate> = page
                        .iter()
                        .map(|(job, seq)| SseUpdate::from_snapshot(job, *seq))
                        .collect();
                    Some((Ok(updates), next))
                }
                Err(error) => {
                    tracing::warn!(error = %error_chain(&error), "SSE replay cannot read the read model");
                    Some((Err(()), None))
                }
            }
        }
    })
    .flat_map(move |page| {
        let events: Vec<Result<Event, ()>> = match page {
            Ok(updates) => updates
                .iter()
                .filter(|update| wanted(update))
                .map(|update| Ok(update.event()))
                .collect(),
            Err(()) => vec![Err(())],
        };
        stream::iter(events)
    })
}

fn sse_response(
    events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static,
    state: &AppState,
) -> Response {
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(state.config.sse_keep_alive))
        .into_response()
}
