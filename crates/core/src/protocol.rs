//! The HTTP worker protocol of CONTRACT.md ("Orchestrator"): reading a worker's status report
//! with the field aliases and status spellings workers of the original system send.

use serde_json::Value;

use crate::machine::{Report, ReportKind};
use crate::model::{JobId, WorkerId};

/// Reads a status report (`POST /api/jobs/status`, or `PUT|POST /api/jobs/{id}/status` with
/// `path_id`): `jobId` (accept `id`, `job_id`; the path wins), `status` (running, completed,
/// failed; any case), `workerId` (accept `worker_id`), `result`, `errorMessage` (accept
/// `error_message`), `progress` (0..=100), `attempt`, `lease` (the job message's lease token),
/// `permanent` (a failure never to retry; default false), `timestamp` (ignored: the leader stamps
/// time). The worker id is a name ([`check_name`](crate::model::check_name)); an error message
/// longer than [`MAX_ERROR_BYTES`] is cut there.
///
/// A `running` report with `progress` from a worker that already holds the lease is a progress
/// report (`holds_lease` says whether it does). Errors: the message of a 400.
pub fn parse_status_report(
    body: &Value,
    path_id: Option<&str>,
    holds_lease: impl FnOnce(JobId, &WorkerId) -> bool,
) -> Result<Report, String> {
    let fields = body.as_object().ok_or("the body must be a JSON object")?;
    let text = |names: &[&str]| {
        names
            .iter()
            .find_map(|name| fields.get(*name).and_then(Value::as_str))
    };
    let id_text = path_id
        .or_else(|| text(&["jobId", "id", "job_id"]))
        .ok_or("jobId is required")?;
    let job_id: JobId = id_text
        .parse()
        .map_err(|_| format!("jobId {id_text:?} is not a UUID"))?;
    let worker_id = WorkerId(
        text(&["workerId", "worker_id"])
            .ok_or("workerId is required")?
            .to_string(),
    );
    let lease = match fields.get("lease") {
        None | Some(Value::Null) => None,
        Some(Value::String(token)) => Some(token.clone()),
        Some(_) => return Err("lease must be the job message's lease token (a string)".into()),
    };
    let attempt = match fields.get("attempt") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n >= 1)
                .ok_or("attempt must be an integer >= 1")?,
        ),
    };
    let progress = match fields.get("progress") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_f64()
                .filter(|p| (0.0..=100.0).contains(p))
                .map(|p| p.round() as u8)
                .ok_or("progress must be a number from 0 to 100")?,
        ),
    };
    let status = text(&["status"]).ok_or("status is required (running, completed or failed)")?;
    let kind = match status.trim().to_ascii_lowercase().as_str() {
        "running" => match progress {
            Some(percent) if holds_lease(job_id, &worker_id) => ReportKind::Progress { percent },
            _ => ReportKind::Running,
        },
        "progress" => ReportKind::Progress {
            percent: progress.ok_or("progress is required with status progress")?,
        },
        "completed" => ReportKind::Completed {
            result: fields.get("result").cloned().unwrap_or(Value::Null),
        },
        "failed" => ReportKind::Failed {
            error: text(&["errorMessage", "error_message", "error"])
                .unwrap_or("failed")
                .to_string(),
            permanent: fields
                .get("permanent")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        },
        other => {
            return Err(format!(
                "status {other:?} is not running, completed or failed"
            ))
        }
    };
    let mut report = Report {
        job_id,
        attempt,
        worker_id,
        kind,
        lease,
    };
    check_report(&mut report)?;
    Ok(report)
}

/// Checks a report, in the contract's format ([`parse_status_report`]) or the orchestrator's
/// own (a batch of native workers' reports): the worker id is a name, the lease token is
/// short, a result at most [`MAX_RESULT_BYTES`]; an error message past [`MAX_ERROR_BYTES`] is
/// cut. Errors: the message of a 400.
pub fn check_report(report: &mut Report) -> Result<(), String> {
    report.worker_id.check()?;
    if report
        .lease
        .as_ref()
        .is_some_and(|token| token.len() > MAX_LEASE_BYTES)
    {
        return Err("lease must be the job message's lease token".into());
    }
    match &mut report.kind {
        ReportKind::Failed { error, .. } if error.len() > MAX_ERROR_BYTES => {
            *error = truncate_error(error);
        }
        ReportKind::Completed { result } => check_result(result)?,
        _ => {}
    }
    Ok(())
}

/// Largest result a completed attempt may report, encoded as JSON: 1 MiB. It is kept in the
/// replicated state, its event and the read model; larger outputs belong in object storage,
/// with their address in the result.
pub const MAX_RESULT_BYTES: usize = 1024 * 1024;

/// Checks a reported result's size. Errors: the message of a 400.
pub fn check_result(result: &Value) -> Result<(), String> {
    let size = crate::encoded_len(result);
    if size > MAX_RESULT_BYTES {
        return Err(format!(
            "result is {size} bytes of JSON; at most {MAX_RESULT_BYTES} are kept"
        ));
    }
    Ok(())
}

/// Longest `lease` read from a report, in bytes (tokens are 32 hex digits).
const MAX_LEASE_BYTES: usize = 64;

/// Longest error message kept from a failed attempt, in bytes; longer ones are cut at a character
/// boundary and end with `…`. Bounds the state, its events and the read model's rows.
pub const MAX_ERROR_BYTES: usize = 16 * 1024;

/// An attempt's error message, cut to at most [`MAX_ERROR_BYTES`] bytes.
pub fn truncate_error(message: &str) -> String {
    if message.len() <= MAX_ERROR_BYTES {
        return message.to_string();
    }
    let mut end = MAX_ERROR_BYTES - '…'.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(body: Value, path_id: Option<&str>, holds: bool) -> Result<Report, String> {
        parse_status_report(&body, path_id, |_, _| holds)
    }

    const ID: &str = "6f1c1d3e-0000-4000-8000-000000000001";

    #[test]
    fn aliases_and_status_spellings_are_read() {
        let report = check(
            json!({"job_id": ID, "status": "RUNNING", "worker_id": "w"}),
            None,
            false,
        )
        .expect("valid");
        assert_eq!(
            (report.kind, report.attempt, report.worker_id.0.as_str()),
            (ReportKind::Running, None, "w")
        );
        let report = check(
            json!({"status": "Completed", "workerId": "w", "result": {"a": 1}, "attempt": 2}),
            Some(ID),
            false,
        )
        .expect("valid");
        assert_eq!(
            (report.kind, report.attempt),
            (
                ReportKind::Completed {
                    result: json!({"a": 1})
                },
                Some(2)
            )
        );
        let report = check(
            json!({"id": ID, "status": "failed", "workerId": "w", "error_message": "boom"}),
            None,
            false,
        )
        .expect("valid");
        assert_eq!(
            report.kind,
            ReportKind::Failed {
                error: "boom".into(),
                permanent: false
            }
        );
    }

    #[test]
    fn running_with_progress_from_the_holder_is_progress() {
        let body = json!({"jobId": ID, "status": "running", "workerId": "w", "progress": 40});
        assert_eq!(
            check(body.clone(), None, true).expect("valid").kind,
            ReportKind::Progress { percent: 40 }
        );
        assert_eq!(
            check(body, None, false).expect("valid").kind,
            ReportKind::Running
        );
    }

    #[test]
    fn bad_reports_are_named() {
        for (body, fragment) in [
            (json!([]), "object"),
            (json!({"status": "running", "workerId": "w"}), "jobId"),
            (
                json!({"jobId": "nope", "status": "running", "workerId": "w"}),
                "UUID",
            ),
            (json!({"jobId": ID, "status": "running"}), "workerId"),
            (
                json!({"jobId": ID, "status": "done", "workerId": "w"}),
                "status",
            ),
            (
                json!({"jobId": ID, "status": "running", "workerId": "w", "attempt": 0}),
                "attempt",
            ),
            (
                json!({"jobId": ID, "status": "running", "workerId": "w", "progress": 101}),
                "progress",
            ),
        ] {
            let error = check(body.clone(), None, false).expect_err("invalid");
            assert!(error.contains(fragment), "{body}: {error}");
        }
    }
}
