//! `POST /api/jobs/batch` (CONTRACT.md "Gateway"): many job requests in one body, the valid
//! ones committed together in one log entry and published together.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use distriqueue_core::api::{BatchSubmitted, ErrorBody};
use distriqueue_core::request::{parse_job_request, JobSpec, Violations};
use distriqueue_core::{JobId, JobResponse, Refusal};
use distriqueue_util::{clock, error_chain};
use serde_json::Value;

use crate::api::check_schedule;
use crate::body::{check_json_content_type, read_json};
use crate::error::ApiError;
use crate::state::AppState;

/// Longest `batchName`, in characters.
const MAX_BATCH_NAME_CHARS: usize = 255;

/// `POST /api/jobs/batch`: the body is `{"jobs": [JobRequest...], "batchName"?}` or a bare
/// array of JobRequest, at most `max_batch_jobs` of them. Every item is validated as a single
/// submission would be, with paths `jobs[<index>].<field>`; the valid ones are committed
/// together and stored before the answer leaves. 202 with [`BatchSubmitted`] when at least
/// one job was accepted; 400 with every item's violations when none was valid; the refusal's
/// status (429 for a full queue) when the valid ones were all refused.
#[utoipa::path(
    post,
    path = "/api/jobs/batch",
    tag = "jobs",
    request_body(content = distriqueue_core::api::BatchRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "At least one job was committed; each refused item's error by its index", body = BatchSubmitted),
        (status = 400, description = "Malformed JSON, a bad body, or no valid item (the validation shape naming jobs[i].field)", body = ErrorBody),
        (status = 413, description = "The body is larger than the batch limit", body = ErrorBody),
        (status = 415, description = "The body is not declared as JSON", body = ErrorBody),
        (status = 429, description = "The queue of waiting jobs is full (no job was accepted)", body = ErrorBody),
        (status = 503, description = "No orchestrator could commit the batch (nothing was recorded)", body = ErrorBody),
    )
)]
pub(crate) async fn submit_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_json_content_type(&headers)?;
    let request = read_json(&headers, body, state.config.batch_body_limit_bytes).await?;
    let (items, batch_name) = batch_items(request, state.config.max_batch_jobs)?;
    let total_jobs = items.len();
    let mut errors: BTreeMap<usize, ErrorBody> = BTreeMap::new();
    let mut valid: Vec<(usize, JobId, JobSpec)> = Vec::with_capacity(total_jobs);
    for (index, item) in items.iter().enumerate() {
        let prefix = format!("jobs[{index}].");
        let spec = parse_job_request(item, &prefix)
            .and_then(|spec| check_schedule(&spec, &format!("{prefix}scheduleAt")).map(|()| spec));
        match spec {
            Ok(spec) => valid.push((index, clock::new_job_id(), spec)),
            Err(violations) => {
                errors.insert(index, validation_body(violations));
            }
        }
    }
    if valid.is_empty() {
        let all = errors
            .into_values()
            .flat_map(|body| body.violations.unwrap_or_default())
            .collect();
        return Err(ApiError::Validation(all));
    }
    let indexes: Vec<usize> = valid.iter().map(|(index, _, _)| *index).collect();
    let answer = state
        .orchestrator
        .register_batch(valid.into_iter().map(|(_, id, spec)| (id, spec)).collect())
        .await?;
    let mut job_ids: Vec<Option<JobId>> = vec![None; total_jobs];
    let mut snapshots: Vec<JobResponse> = Vec::new();
    let mut first_refusal: Option<Refusal> = None;
    for (index, result) in indexes.into_iter().zip(answer.results) {
        match result {
            Ok(registered) => {
                job_ids[index] = Some(registered.job_id);
                snapshots.extend(registered.job);
            }
            Err(refusal) => {
                errors.insert(index, ApiError::Refused(refusal.clone()).body());
                first_refusal.get_or_insert(refusal);
            }
        }
    }
    let successful = job_ids.iter().flatten().count();
    if successful == 0 {
        if let Some(refusal) = first_refusal {
            return Err(ApiError::Refused(refusal));
        }
    }
    // The jobs are committed: an error now would make the client submit them again under new
    // ids. If the read model cannot take them yet, the event feed stores them later.
    if let Err(error) = state.writer.write(snapshots).await {
        tracing::warn!(error = %error_chain(&error), "batch committed but not yet in the read model");
    }
    tracing::debug!(
        successful,
        failed = total_jobs - successful,
        "batch accepted"
    );
    let answer = BatchSubmitted {
        batch_id: clock::new_job_id().to_string(),
        batch_name,
        total_jobs,
        successful,
        failed: total_jobs - successful,
        job_ids,
        errors,
        submitted_at: clock::now().to_iso(),
        log_index: answer.log_index,
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// The items and the `batchName` of a batch body (either form of the contract).
fn batch_items(request: Value, max_jobs: usize) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let (items, batch_name) = match request {
        Value::Array(items) => (items, None),
        Value::Object(mut fields) => {
            let batch_name = match fields.remove("batchName") {
                None | Some(Value::Null) => None,
                Some(Value::String(name)) if name.chars().count() <= MAX_BATCH_NAME_CHARS => {
                    Some(name)
                }
                Some(_) => {
                    return Err(ApiError::violation(
                        "batchName",
                        "must be text of at most 255 characters",
                    ))
                }
            };
            match fields.remove("jobs") {
                Some(Value::Array(items)) => (items, batch_name),
                _ => {
                    return Err(ApiError::violation(
                        "jobs",
                        "must be an array of job requests",
                    ))
                }
            }
        }
        _ => {
            return Err(ApiError::BadRequest(
                "the body must be {\"jobs\": [...]} or an array of job requests".into(),
            ))
        }
    };
    if items.is_empty() {
        return Err(ApiError::violation("jobs", "must hold at least one job"));
    }
    if items.len() > max_jobs {
        return Err(ApiError::violation(
            "jobs",
            format!(
                "holds {} jobs; a batch takes at most {max_jobs}",
                items.len()
            ),
        ));
    }
    Ok((items, batch_name))
}

/// The contract's validation shape for one item.
fn validation_body(violations: Violations) -> ErrorBody {
    ErrorBody {
        violations: Some(violations),
        ..ErrorBody::new("Validation failed")
    }
}
