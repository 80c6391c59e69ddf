//! CLI verbs that talk to a gateway: submit, get, list, cancel, watch.
//!
//! Each verb takes the client settings (the gateway's base URL `--server`, the `--api-key` it
//! sends) and its parsed arguments, prints JSON on
//! stdout, and returns an error whose message carries the server's error body
//! (`400 Bad Request: {"error":"Validation failed",...}`).

use std::io::{ErrorKind, Write};
use std::time::Duration;

use anyhow::{bail, Context};
use distriqueue::config::ClientSettings;
use distriqueue_client::{ClientError, GatewayClient};
use distriqueue_core::{JobStatus, Priority};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Map, Value};

/// How often `submit --wait` polls the job.
const WAIT_POLL: Duration = Duration::from_millis(100);

/// Arguments of `distriqueue submit`.
#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    /// The job type, which picks the handler (e.g. calculate, transform, validate, sleep, echo)
    #[arg(long = "type", short = 't', required_unless_present = "file")]
    pub job_type: Option<String>,
    /// Submit every job of this file instead: one JobRequest (JSON) a line, blank lines
    /// skipped, sent in batches (`POST /api/jobs/batch`) with a progress bar on stderr
    #[arg(long, value_name = "FILE.jsonl", conflicts_with_all = ["job_type", "wait"])]
    pub file: Option<std::path::PathBuf>,
    /// With --file: jobs per request (at most the gateway's batch limit, 1000 by default)
    #[arg(long, default_value_t = 500, requires = "file", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
    /// LOW, MEDIUM, HIGH or CRITICAL (any case), or 1, 5, 10, 15
    #[arg(long, short = 'p', default_value = "MEDIUM")]
    pub priority: String,
    /// The job's payload, a JSON object (e.g. '{"operation":"sum","numbers":[1,2,3]}')
    #[arg(long, default_value = "{}")]
    pub payload: String,
    /// How many times a failed job is retried (server default 3)
    #[arg(long)]
    pub max_retries: Option<u32>,
    /// Execution timeout in seconds (server default 300)
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Run no earlier than this many seconds from now (the job is PENDING until then)
    #[arg(long, conflicts_with = "schedule_at")]
    pub delay_seconds: Option<u64>,
    /// Run no earlier than this time (RFC 3339, or an ISO local date-time read as UTC)
    #[arg(long)]
    pub schedule_at: Option<String>,
    /// Make the submission idempotent: a repeat within 24 h answers with the first job
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Backoff before the first retry, in ms (server default 1000; doubles with each retry)
    #[arg(long)]
    pub retry_backoff_ms: Option<u64>,
    /// Wait until the job is terminal and print its final state instead of the submitted one
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds (the command then fails)
    #[arg(long, default_value = "300", value_name = "SECONDS")]
    pub wait_timeout: u64,
}

/// Arguments of `distriqueue stats`.
#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// Jobs created at or after this time (RFC 3339, or an ISO local date-time read as UTC)
    #[arg(long)]
    pub from: Option<String>,
    /// Jobs created at or before this time
    #[arg(long)]
    pub to: Option<String>,
    /// Jobs of this type only
    #[arg(long = "type", short = 't')]
    pub job_type: Option<String>,
}

/// Arguments of `distriqueue get`.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// The job's id
    pub id: String,
}

/// Arguments of `distriqueue list`: filters, paging and sorting of `GET /api/jobs`.
#[derive(clap::Args, Debug, Default)]
pub struct ListArgs {
    /// Only jobs of this type
    #[arg(long = "type", short = 't')]
    pub job_type: Option<String>,
    /// Only jobs in this state (PENDING, QUEUED, RUNNING, COMPLETED, FAILED, TIMEOUT, CANCELLED)
    #[arg(long, short = 's')]
    pub status: Option<String>,
    /// Only jobs of this priority (LOW, MEDIUM, HIGH, CRITICAL)
    #[arg(long, short = 'p')]
    pub priority: Option<String>,
    /// Only jobs run by this worker
    #[arg(long)]
    pub worker_id: Option<String>,
    /// Only jobs created at or after this time (RFC 3339, or ISO local date-time read as UTC)
    #[arg(long, value_name = "TIME")]
    pub created_from: Option<String>,
    /// Only jobs created at or before this time (RFC 3339, or ISO local date-time read as UTC)
    #[arg(long, value_name = "TIME")]
    pub created_to: Option<String>,
    /// Page number, from 0
    #[arg(long)]
    pub page: Option<u32>,
    /// Page size, 1 to 100 (server default 20)
    #[arg(long)]
    pub size: Option<u32>,
    /// Sort key: createdAt, priority, status, type, startedAt or completedAt
    #[arg(long)]
    pub sort_by: Option<String>,
    /// asc or desc (server default desc)
    #[arg(long)]
    pub sort_direction: Option<String>,
}

impl ListArgs {
    /// The query pairs of `GET /api/jobs`, with the contract's names, in a fixed order.
    fn query(&self) -> Vec<(String, String)> {
        let page = self.page.map(|page| page.to_string());
        let size = self.size.map(|size| size.to_string());
        [
            ("type", &self.job_type),
            ("jobStatus", &self.status),
            ("jobPriority", &self.priority),
            ("workerId", &self.worker_id),
            ("createdFrom", &self.created_from),
            ("createdTo", &self.created_to),
            ("page", &page),
            ("size", &size),
            ("sortBy", &self.sort_by),
            ("sortDirection", &self.sort_direction),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_owned(), value.clone()?)))
        .collect()
    }
}

/// Arguments of `distriqueue cancel`.
#[derive(clap::Args, Debug)]
pub struct CancelArgs {
    /// The job's id
    pub id: String,
}

/// Arguments of `distriqueue watch`.
#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// Only this job: print its current state, then its updates, and stop once it is terminal
    /// (all jobs, until Ctrl-C, when absent)
    pub id: Option<String>,
}

/// `submit`: `POST /api/jobs`, then prints the JobResponse as pretty JSON; with `--wait`, polls
/// until the job is terminal and prints its final JobResponse instead. A job that ends FAILED,
/// TIMEOUT or CANCELLED is printed and returns an error (exit code 1), as does a job still not
/// terminal after `--wait-timeout`.
pub async fn submit(target: &ClientSettings, args: SubmitArgs) -> anyhow::Result<()> {
    let server = target.server.as_str();
    if let Some(file) = &args.file {
        return submit_file(target, file, args.batch_size as usize).await;
    }
    let request = submit_request(&args)?;
    let client = client(target)?;
    let job = client
        .submit(&request)
        .await
        .map_err(|err| explain(err, server))?;
    if !args.wait {
        return print_json(&job);
    }
    let id = job.id.to_string();
    let wait_timeout = Duration::from_secs(args.wait_timeout);
    let last = client
        .wait_terminal(&id, WAIT_POLL, wait_timeout)
        .await
        .map_err(|err| explain(err, server))
        .with_context(|| format!("waiting for job {id}"))?;
    print_json(&last)?;
    if !last.status.is_terminal() {
        bail!(
            "job {id} is still {} after {} s (--wait-timeout)",
            last.status,
            args.wait_timeout
        );
    }
    if last.status != JobStatus::Completed {
        // Scripts can tell success from failure by the exit code.
        bail!("job {id} ended {}", last.status);
    }
    Ok(())
}

/// `submit --file`: every line of `file` (a JobRequest as JSON; blank lines skipped) through
/// `POST /api/jobs/batch`, `batch_size` lines a request, with a progress bar on stderr. Prints
/// `{totalJobs, successful, failed, jobIds, errors}` as pretty JSON, where `jobIds` has the id
/// of each non-blank line in order (`null` when refused) and `errors` each refused line's error
/// body keyed by its line number in the file (from 1), its violations naming the job's own
/// fields (`type`, not the batch request's `jobs[3].type`). Returns an error (exit code 1) when any line was refused, or when
/// a request failed (then the summary says how far it got).
async fn submit_file(
    target: &ClientSettings,
    file: &std::path::Path,
    batch_size: usize,
) -> anyhow::Result<()> {
    let server = target.server.as_str();
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty())
        .collect();
    let client = client(target)?;
    let progress = indicatif::ProgressBar::new(lines.len() as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} jobs ({per_sec}, {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut job_ids: Vec<Value> = Vec::with_capacity(lines.len());
    let mut errors = Map::new();
    let mut failure = None;
    for chunk in lines.chunks(batch_size) {
        // Each line's id, in order (null until accepted); which slot each sent job fills.
        let mut ids = vec![Value::Null; chunk.len()];
        let mut jobs = Vec::with_capacity(chunk.len());
        let mut sent: Vec<(usize, usize)> = Vec::with_capacity(chunk.len());
        for (slot, (number, line)) in chunk.iter().enumerate() {
            match serde_json::from_str::<Value>(line) {
                Ok(job) => {
                    jobs.push(job);
                    sent.push((slot, *number));
                }
                Err(error) => {
                    let body = serde_json::json!({"error": format!("not JSON: {error}")});
                    errors.insert(number.to_string(), body);
                }
            }
        }
        if !jobs.is_empty() {
            match client.submit_batch(&jobs).await {
                Ok(answer) => {
                    for (position, (slot, number)) in sent.iter().enumerate() {
                        if let Some(Some(id)) = answer.job_ids.get(position) {
                            ids[*slot] = Value::from(id.to_string());
                        }
                        if let Some(error) = answer.errors.get(&position) {
                            let body = serde_json::to_value(error)?;
                            errors.insert(number.to_string(), own_violations(&body, position));
                        }
                    }
                }
                Err(ClientError::Status { status: 400, body }) => {
                    // No line of this request was valid: one body names every `jobs[i].field`.
                    for (position, (_, number)) in sent.iter().enumerate() {
                        errors.insert(number.to_string(), own_violations(&body, position));
                    }
                }
                Err(error) => {
                    failure = Some(explain(error, server));
                    break;
                }
            }
        }
        job_ids.extend(ids);
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    let successful = job_ids.iter().filter(|id| !id.is_null()).count();
    let summary = serde_json::json!({
        "totalJobs": lines.len(),
        "successful": successful,
        "failed": errors.len(),
        "jobIds": job_ids,
        "errors": errors,
    });
    print_json(&summary)?;
    if let Some(failure) = failure {
        return Err(failure.context(format!(
            "stopped after {} of {} lines",
            job_ids.len(),
            lines.len()
        )));
    }
    if !errors.is_empty() {
        bail!("{} of {} lines were refused", errors.len(), lines.len());
    }
    Ok(())
}

/// The error body of the job at `position` of a batch request: `body` with only the violations
/// of that job (`jobs[position].field`), each named by its field alone.
fn own_violations(body: &Value, position: usize) -> Value {
    let prefix = format!("jobs[{position}].");
    let mut own = body.clone();
    if let Some(violations) = body.get("violations").and_then(Value::as_object) {
        let fields: Map<String, Value> = violations
            .iter()
            .filter_map(|(field, message)| {
                field
                    .strip_prefix(&prefix)
                    .map(|field| (field.to_string(), message.clone()))
            })
            .collect();
        own["violations"] = Value::Object(fields);
    }
    own
}

/// `stats`: `GET /api/jobs/statistics`, printed as pretty JSON.
pub async fn stats(target: &ClientSettings, args: StatsArgs) -> anyhow::Result<()> {
    let server = target.server.as_str();
    let query: Vec<(String, String)> = [
        ("from", args.from),
        ("to", args.to),
        ("type", args.job_type),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|value| (name.to_string(), value)))
    .collect();
    print_answer(server, client(target)?.statistics(&query).await)
}

/// `get`: `GET /api/jobs/{id}`, printed as pretty JSON.
pub async fn get(target: &ClientSettings, args: GetArgs) -> anyhow::Result<()> {
    let server = target.server.as_str();
    print_answer(server, client(target)?.get(&args.id).await)
}

/// `list`: `GET /api/jobs` with the given filters; prints the page
/// `{"content":[...],"page":{...}}` as pretty JSON.
pub async fn list(target: &ClientSettings, args: ListArgs) -> anyhow::Result<()> {
    let server = target.server.as_str();
    print_answer(server, client(target)?.list(&args.query()).await)
}

/// `cancel`: `POST /api/jobs/{id}/cancel`; prints the CANCELLED JobResponse as pretty JSON
/// (a job already terminal is an error: `409 Conflict: {...}`).
pub async fn cancel(target: &ClientSettings, args: CancelArgs) -> anyhow::Result<()> {
    let server = target.server.as_str();
    print_answer(server, client(target)?.cancel(&args.id).await)
}

/// `retry`: `POST /api/jobs/{id}/retry`; prints the job's new QUEUED state.
pub async fn retry(target: &ClientSettings, args: GetArgs) -> anyhow::Result<()> {
    let server = target.server.as_str();
    print_answer(server, client(target)?.retry(&args.id).await)
}

/// `attempts`: `GET /api/jobs/{id}/attempts`; prints each attempt's worker, state, error and
/// times.
pub async fn attempts(target: &ClientSettings, args: GetArgs) -> anyhow::Result<()> {
    let server = target.server.as_str();
    print_answer(server, client(target)?.attempts(&args.id).await)
}

/// `watch`: `GET /api/jobs/stream` (`?jobId=` with an id); prints each event's `data` JSON on
/// its own line as received (the `connected` event first), until the server closes the stream
/// (`Ok`), the connection breaks (error) or Ctrl-C (`Ok`). With an id it first prints the job's
/// current state and stops once the job is terminal.
pub async fn watch(target: &ClientSettings, args: WatchArgs) -> anyhow::Result<()> {
    let server = target.server.as_str();
    let client = client(target)?;
    let stream = client
        .watch(args.id.as_deref())
        .await
        .map_err(|err| explain(err, server))?;
    if let Some(id) = &args.id {
        // The job's current state first: updates before the stream opened are not replayed.
        let job = client.get(id).await.map_err(|err| explain(err, server))?;
        // One line, like the updates that follow.
        print_line(&serde_json::to_string(&job).context("cannot render the job as JSON")?)?;
        if job.status.is_terminal() {
            return Ok(());
        }
    }
    let mut stream = std::pin::pin!(stream);
    let interrupted = tokio::signal::ctrl_c();
    let mut interrupted = std::pin::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => return Ok(()),
            next = stream.next() => match next {
                None => return Ok(()),
                Some(Ok(event)) => {
                    if !print_line(&event.data)? {
                        return Ok(());
                    }
                    if args.id.is_some() && is_terminal_update(&event.data) {
                        return Ok(());
                    }
                }
                Some(Err(err)) => {
                    return Err(explain(err, server).context("the event stream broke"));
                }
            },
        }
    }
}

/// True for a `job-update` whose `status` is terminal (watching one job ends there).
fn is_terminal_update(data: &str) -> bool {
    serde_json::from_str::<Value>(data)
        .ok()
        .and_then(|update| {
            update
                .get("status")
                .and_then(Value::as_str)
                .and_then(JobStatus::parse)
        })
        .is_some_and(JobStatus::is_terminal)
}

/// The JSON body of `POST /api/jobs` for `args`, checked locally: the priority must be one of
/// the contract's and the payload a JSON object.
fn submit_request(args: &SubmitArgs) -> anyhow::Result<Value> {
    let Some(priority) = Priority::parse(&args.priority) else {
        bail!(
            "invalid --priority {:?}: expected LOW, MEDIUM, HIGH or CRITICAL (any case), or 1, 5, 10, 15",
            args.priority
        );
    };
    let payload: Value = serde_json::from_str(&args.payload)
        .with_context(|| format!("invalid --payload {:?}: not JSON", args.payload))?;
    if !payload.is_object() {
        bail!(
            "invalid --payload {:?}: must be a JSON object, e.g. '{{\"numbers\":[1,2,3]}}'",
            args.payload
        );
    }
    let mut request = Map::new();
    request.insert(
        "type".to_owned(),
        Value::from(args.job_type.clone().unwrap_or_default()),
    );
    request.insert("jobPriority".to_owned(), Value::from(priority.as_str()));
    request.insert("payload".to_owned(), payload);
    if let Some(max_retries) = args.max_retries {
        request.insert("maxRetries".to_owned(), Value::from(max_retries));
    }
    if let Some(timeout) = args.timeout {
        request.insert("executionTimeout".to_owned(), Value::from(timeout));
    }
    if let Some(delay) = args.delay_seconds {
        request.insert("delaySeconds".to_owned(), Value::from(delay));
    }
    if let Some(at) = &args.schedule_at {
        request.insert("scheduleAt".to_owned(), Value::from(at.clone()));
    }
    if let Some(key) = &args.idempotency_key {
        request.insert("idempotencyKey".to_owned(), Value::from(key.clone()));
    }
    if let Some(backoff) = args.retry_backoff_ms {
        request.insert("retryBackoffMs".to_owned(), Value::from(backoff));
    }
    Ok(Value::Object(request))
}

/// The client of the gateway at `--server`, sending `--api-key` when given and trusting
/// `--ca-cert`.
pub fn client(target: &ClientSettings) -> anyhow::Result<GatewayClient> {
    let mut client = GatewayClient::new(&target.server).context("invalid --server")?;
    if let Some(root) = target.root_certificate()? {
        client = client.with_root_certificate(&root)?;
    }
    Ok(match &target.api_key {
        Some(key) => client.with_api_key(key.as_str()),
        None => client,
    })
}

/// A client error as the user should read it: the server's own answer for a status
/// (`404 Not Found: {"error":"Job not found: ..."}`), where it went for a transport failure.
fn explain(err: ClientError, server: &str) -> anyhow::Error {
    match err {
        ClientError::Status { .. } => anyhow::Error::new(err),
        ClientError::Transport(_) => {
            anyhow::Error::new(err).context(format!("cannot reach the gateway at {server}"))
        }
        ClientError::Decode { .. } => {
            anyhow::Error::new(err).context(format!("unexpected answer from {server}"))
        }
        ClientError::InvalidUrl { .. } => anyhow::Error::new(err).context("invalid --server"),
    }
}

/// Prints a successful answer as pretty JSON, or explains the error.
fn print_answer(server: &str, answer: Result<impl Serialize, ClientError>) -> anyhow::Result<()> {
    print_json(&answer.map_err(|err| explain(err, server))?)
}

/// Prints `value` as pretty JSON on stdout.
fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot render the answer as JSON")?;
    print_line(&text)?;
    Ok(())
}

/// Writes `text` and a newline to stdout and flushes it; `Ok(false)` when the reader has gone
/// (a closed pipe, as with `| head`), which ends the command quietly instead of a panic.
fn print_line(text: &str) -> anyhow::Result<bool> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == ErrorKind::BrokenPipe => Ok(false),
        Err(err) => Err(anyhow::Error::new(err).context("cannot write to stdout")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn submit_args(priority: &str, payload: &str) -> SubmitArgs {
        SubmitArgs {
            job_type: Some("calculate".to_owned()),
            file: None,
            batch_size: 500,
            priority: priority.to_owned(),
            payload: payload.to_owned(),
            max_retries: None,
            timeout: None,
            delay_seconds: None,
            schedule_at: None,
            idempotency_key: None,
            retry_backoff_ms: None,
            wait: false,
            wait_timeout: 300,
        }
    }

    #[test]
    fn submit_builds_the_contract_body() {
        let mut args = submit_args("high", r#"{"operation":"sum","numbers":[1,2]}"#);
        args.max_retries = Some(0);
        args.timeout = Some(5);
        assert_eq!(
            submit_request(&args).expect("request"),
            json!({
                "type": "calculate",
                "jobPriority": "HIGH",
                "payload": {"operation": "sum", "numbers": [1, 2]},
                "maxRetries": 0,
                "executionTimeout": 5
            })
        );
        let numbered = submit_request(&submit_args("15", "{}")).expect("request");
        assert_eq!(numbered["jobPriority"], "CRITICAL");
    }

    #[test]
    fn submit_refuses_bad_payloads_and_priorities_locally() {
        for (priority, payload, expected) in [
            ("HIGH", "[1,2]", "must be a JSON object"),
            ("HIGH", "42", "must be a JSON object"),
            ("HIGH", "{oops", "not JSON"),
            ("urgent", "{}", "invalid --priority"),
        ] {
            let err = submit_request(&submit_args(priority, payload)).expect_err(payload);
            assert!(format!("{err:#}").contains(expected), "{err:#}");
        }
    }

    #[test]
    fn list_maps_flags_to_contract_query_names() {
        let args = ListArgs {
            job_type: Some("echo".to_owned()),
            status: Some("completed".to_owned()),
            page: Some(2),
            size: Some(50),
            sort_direction: Some("asc".to_owned()),
            ..ListArgs::default()
        };
        let query = args.query();
        let pairs: Vec<(&str, &str)> = query
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("type", "echo"),
                ("jobStatus", "completed"),
                ("page", "2"),
                ("size", "50"),
                ("sortDirection", "asc")
            ]
        );
        assert!(ListArgs::default().query().is_empty());
    }

    #[test]
    fn status_errors_read_as_the_server_answer() {
        let err = explain(
            ClientError::Status {
                status: 404,
                body: json!({"error": "Job not found: x"}),
            },
            "http://127.0.0.1:8082",
        );
        assert_eq!(
            format!("{err:#}"),
            r#"404 Not Found: {"error":"Job not found: x"}"#
        );
    }

    #[tokio::test]
    async fn transport_errors_say_where_they_went() {
        let client = GatewayClient::new("http://127.0.0.1:1").expect("client");
        let err = client
            .get("x")
            .await
            .expect_err("nothing listens on port 1");
        let text = format!("{:#}", explain(err, "http://127.0.0.1:1"));
        assert!(
            text.starts_with("cannot reach the gateway at http://127.0.0.1:1: transport error: "),
            "{text}"
        );
        assert!(text.to_lowercase().contains("connection refused"), "{text}");
    }
}
