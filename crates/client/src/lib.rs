//! Typed HTTP clients for DistriQueue's gateway and orchestrator APIs.
//!
//! [`GatewayClient`] speaks the gateway routes of CONTRACT.md ("Gateway: port 8082"): submit,
//! get, list, cancel, the SSE stream, and a polling helper that waits for a terminal state. Every
//! failure is a [`ClientError`]: the server's error answer ([`ClientError::Status`], carrying
//! the contract's `{"error": ...}` body), a connection problem ([`ClientError::Transport`]) or
//! an answer that is not the expected JSON ([`ClientError::Decode`]).

mod orchestrator;

use std::fmt;
use std::time::Duration;

use distriqueue_core::api::{BatchSubmitted, Statistics};
pub use distriqueue_core::api::{JobPage, PageInfo};
use distriqueue_core::JobResponse;
use distriqueue_util::error_chain;
use eventsource_stream::{EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::{header, Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use orchestrator::{CallError, OrchestratorClient, RegisteredBatch};
/// A certificate to trust for TLS ([`root_certificate`]).
pub use reqwest::Certificate;

/// How long establishing a TCP (and TLS) connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one request-response exchange may take (not applied to the SSE stream).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How much of an undecodable body an error message quotes.
const SNIPPET_CHARS: usize = 200;

/// Errors of every [`GatewayClient`] call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status (4xx or 5xx, or any other non-2xx).
    ///
    /// `body` is its JSON body when it parses (the contract's `{"error": "<message>"}`, or
    /// `{"error": "Validation failed", "violations": {"<field>": "<message>"}}`), otherwise the
    /// body as a JSON string, or `null` when the body was empty. Displays as
    /// `400 Bad Request: {"error":"Validation failed",...}`.
    #[error("{}: {}", status_line(*.status), render_body(.body))]
    Status {
        /// The HTTP status code, e.g. 404.
        status: u16,
        /// The decoded error body (see the variant's documentation).
        body: Value,
    },
    /// The request did not get an answer: connection refused, DNS failure, timeout, or the
    /// connection broke while reading the answer or the event stream.
    #[error("transport error")]
    Transport(#[source] reqwest::Error),
    /// The server answered 2xx but the body is not the expected JSON (or the event stream is
    /// malformed).
    #[error("cannot decode the server's answer ({what})")]
    Decode {
        /// What was being read: the first characters of the body, or the event stream.
        what: String,
        /// Why it did not decode.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The base URL given to [`GatewayClient::new`] is not an absolute http(s) URL.
    #[error("invalid server url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
}

impl ClientError {
    /// The HTTP status code of a [`ClientError::Status`], `None` for the other variants.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The `error` message of the server's JSON error body, when there is one.
    pub fn server_message(&self) -> Option<&str> {
        match self {
            ClientError::Status { body, .. } => body.get("error").and_then(Value::as_str),
            _ => None,
        }
    }
}

/// `404 Not Found`, or the bare number for codes without a canonical reason.
fn status_line(status: u16) -> String {
    match StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
    {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

/// A body for an error message: JSON compact, text as is.
fn render_body(body: &Value) -> String {
    match body {
        Value::Null => "(empty body)".to_owned(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The first [`SNIPPET_CHARS`] characters of a body, for error messages.
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut cut: String = text.chars().take(SNIPPET_CHARS).collect();
    if text.chars().count() > SNIPPET_CHARS {
        cut.push_str("...");
    }
    cut
}

/// The JSON value of an error body: parsed JSON, else the text, else `null` when empty.
fn error_body(bytes: &[u8]) -> Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).trim().to_owned()))
}

/// One server-sent event of `GET /api/jobs/stream`.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// The event name: `connected`, `job-update`, or `message` when the server named none.
    pub event: String,
    /// The last event id the server set (SSE semantics: it carries over to events without an
    /// `id:` line); `None` until the server sent one.
    pub id: Option<String>,
    /// The `data:` text (JSON per CONTRACT.md), lines joined with `\n`.
    pub data: String,
}

/// A client of one gateway (CONTRACT.md "Gateway"). Cheap to clone: clones share one
/// connection pool.
#[derive(Clone)]
pub struct GatewayClient {
    /// The base URL without trailing slash, e.g. `http://127.0.0.1:8082`; routes append
    /// `/api/...` to its path.
    base: Url,
    http: reqwest::Client,
    /// Sent as `Authorization: Bearer <key>` when set.
    api_key: Option<String>,
}

impl fmt::Debug for GatewayClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayClient")
            .field("base", &self.base.as_str())
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The HTTP client every DistriQueue client uses: a 5 s connect timeout, its user agent, the
/// public roots and `root` for TLS.
fn http_client(root: Option<&Certificate>) -> Result<reqwest::Client, ClientError> {
    let builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("distriqueue-client/", env!("CARGO_PKG_VERSION")));
    match root {
        Some(root) => builder.add_root_certificate(root.clone()),
        None => builder,
    }
    .build()
    .map_err(ClientError::Transport)
}

impl GatewayClient {
    /// A client of the gateway at `base_url` (e.g. `http://127.0.0.1:8082`; a trailing `/` is
    /// ignored, a missing scheme means `http://`, a path prefix is kept).
    ///
    /// Connections time out after 5 s, request-response exchanges after 30 s; the SSE stream
    /// has no overall timeout.
    ///
    /// # Errors
    /// [`ClientError::InvalidUrl`] when `base_url` is not an absolute http(s) URL;
    /// [`ClientError::Transport`] when the HTTP client cannot be built (TLS set-up).
    pub fn new(base_url: &str) -> Result<GatewayClient, ClientError> {
        Ok(GatewayClient {
            base: parse_base(base_url)?,
            http: http_client(None)?,
            api_key: None,
        })
    }

    /// The same client, trusting `root` (besides the public roots) for `https://` servers: the
    /// certificate authority of `--ca-cert`.
    ///
    /// # Errors
    /// [`ClientError::Transport`] when the HTTP client cannot be built with it.
    pub fn with_root_certificate(
        mut self,
        root: &Certificate,
    ) -> Result<GatewayClient, ClientError> {
        self.http = http_client(Some(root))?;
        Ok(self)
    }

    /// The same client, sending `Authorization: Bearer <key>` with every request (needed for
    /// write routes when the gateway has API keys configured).
    pub fn with_api_key(mut self, key: impl Into<String>) -> GatewayClient {
        self.api_key = Some(key.into());
        self
    }

    /// The base URL, without trailing slash.
    pub fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `POST /api/jobs` with `request` as the JSON body (a JobRequest of CONTRACT.md, built by
    /// the caller); returns the JobResponse of the 202 answer (`QUEUED`, or `PENDING` when
    /// scheduled), or of the 200 answer to a repeated `idempotencyKey`.
    ///
    /// # Errors
    /// [`ClientError::Status`] for 400 (validation; `violations` names the fields), 401/403,
    /// 413 (body too large), 429 (queue full), 503 (no orchestrator); [`ClientError::Transport`]
    /// and [`ClientError::Decode`] as for every call.
    pub async fn submit(&self, request: &Value) -> Result<JobResponse, ClientError> {
        let url = self.url(&["api", "jobs"])?;
        let response = self
            .send(self.request(Method::POST, url).json(request))
            .await?;
        decode(response).await
    }

    /// `POST /api/jobs/batch` with `jobs` (JobRequests) as `{"jobs": [...]}`: the batch answer
    /// (202: some or all accepted, each refused item's error by index).
    ///
    /// # Errors
    /// [`ClientError::Status`] 400 when no item is valid (`violations` name `jobs[i].field`),
    /// 413, 429 (queue full), 503; [`ClientError::Transport`], [`ClientError::Decode`].
    pub async fn submit_batch(&self, jobs: &[Value]) -> Result<BatchSubmitted, ClientError> {
        let url = self.url(&["api", "jobs", "batch"])?;
        let body = serde_json::json!({ "jobs": jobs });
        let response = self
            .send(self.request(Method::POST, url).json(&body))
            .await?;
        decode(response).await
    }

    /// `GET /api/jobs/statistics` with `query` (`from`, `to`, `type`) as the query string.
    ///
    /// # Errors
    /// [`ClientError::Status`] 400 naming a bad parameter; [`ClientError::Transport`],
    /// [`ClientError::Decode`].
    pub async fn statistics(&self, query: &[(String, String)]) -> Result<Statistics, ClientError> {
        let url = self.url(&["api", "jobs", "statistics"])?;
        decode(
            self.send(self.request(Method::GET, url).query(query))
                .await?,
        )
        .await
    }

    /// `GET /api/jobs/{id}`: the job's current JobResponse.
    ///
    /// # Errors
    /// [`ClientError::Status`] 404 `{"error":"Job not found: <id>"}` for an unknown id (also
    /// one that is not a UUID); [`ClientError::Transport`], [`ClientError::Decode`].
    pub async fn get(&self, id: &str) -> Result<JobResponse, ClientError> {
        let url = self.url(&["api", "jobs", id])?;
        decode(self.send(self.request(Method::GET, url)).await?).await
    }

    /// `GET /api/jobs` with `query` as the query string, pairs in order (contract names:
    /// `type`, `jobPriority`, `jobStatus`, `workerId`, `createdFrom`, `createdTo`, `page`,
    /// `size`, `sortBy`, `sortDirection`); returns the decoded page.
    ///
    /// # Errors
    /// [`ClientError::Status`] 400 for a bad filter, `sortBy` or `size`;
    /// [`ClientError::Transport`], [`ClientError::Decode`].
    pub async fn list(&self, query: &[(String, String)]) -> Result<JobPage, ClientError> {
        let url = self.url(&["api", "jobs"])?;
        decode(
            self.send(self.request(Method::GET, url).query(query))
                .await?,
        )
        .await
    }

    /// `POST /api/jobs/{id}/cancel`: the job's JobResponse, now `CANCELLED`.
    ///
    /// # Errors
    /// [`ClientError::Status`] 404 for an unknown job, 409 when it is already terminal;
    /// [`ClientError::Transport`], [`ClientError::Decode`].
    pub async fn cancel(&self, id: &str) -> Result<JobResponse, ClientError> {
        let url = self.url(&["api", "jobs", id, "cancel"])?;
        decode(self.send(self.request(Method::POST, url)).await?).await
    }

    /// `POST /api/jobs/{id}/retry`: a new chain of attempts for a FAILED, TIMEOUT or CANCELLED
    /// job; returns its QUEUED snapshot.
    ///
    /// # Errors
    /// [`ClientError::Status`] 404 for an unknown job, 409 for any other state;
    /// [`ClientError::Transport`], [`ClientError::Decode`].
    pub async fn retry(&self, id: &str) -> Result<JobResponse, ClientError> {
        let url = self.url(&["api", "jobs", id, "retry"])?;
        decode(self.send(self.request(Method::POST, url)).await?).await
    }

    /// `GET /api/jobs/{id}/attempts`: `{"jobId", "attempts": [{attempt, workerId, state,
    /// errorMessage, startedAt, endedAt}]}`.
    ///
    /// # Errors
    /// [`ClientError::Status`] 404 for an unknown job; [`ClientError::Transport`],
    /// [`ClientError::Decode`].
    pub async fn attempts(&self, id: &str) -> Result<Value, ClientError> {
        let url = self.url(&["api", "jobs", id, "attempts"])?;
        decode(self.send(self.request(Method::GET, url)).await?).await
    }

    /// `GET /api/jobs/stream` (with `?jobId=` when `job_id` is given): the server-sent events
    /// as they come, first `connected` `{clientId, message, timestamp}`, then `job-update`
    /// `{jobId, status, timestamp, workerId, ...}` per transition. Keep-alive comments are
    /// skipped. The stream ends when the server closes the connection.
    ///
    /// # Errors
    /// Opening: [`ClientError::Status`] when the server refuses the stream,
    /// [`ClientError::Transport`]. Items: [`ClientError::Transport`] when the connection
    /// breaks, [`ClientError::Decode`] for text that is not UTF-8 or not SSE.
    pub async fn watch(
        &self,
        job_id: Option<&str>,
    ) -> Result<impl Stream<Item = Result<SseEvent, ClientError>> + Send + 'static, ClientError>
    {
        self.watch_since(job_id, None).await
    }

    /// [`GatewayClient::watch`], sending `Last-Event-ID: <last_event_id>` when given so the
    /// server replays what came after that event.
    ///
    /// # Errors
    /// As [`GatewayClient::watch`].
    pub async fn watch_since(
        &self,
        job_id: Option<&str>,
        last_event_id: Option<&str>,
    ) -> Result<impl Stream<Item = Result<SseEvent, ClientError>> + Send + 'static, ClientError>
    {
        let url = self.url(&["api", "jobs", "stream"])?;
        let mut request = self
            .authorize(self.http.get(url))
            .header(header::ACCEPT, "text/event-stream");
        if let Some(job_id) = job_id {
            request = request.query(&[("jobId", job_id)]);
        }
        if let Some(last_event_id) = last_event_id {
            request = request.header("Last-Event-ID", last_event_id);
        }
        let response = self.send(request).await?;
        Ok(response
            .bytes_stream()
            .eventsource()
            .map(|item| match item {
                Ok(event) => Ok(SseEvent {
                    event: event.event,
                    id: (!event.id.is_empty()).then_some(event.id),
                    data: event.data,
                }),
                Err(EventStreamError::Transport(err)) => Err(ClientError::Transport(err)),
                Err(EventStreamError::Utf8(err)) => Err(ClientError::Decode {
                    what: "the event stream (not UTF-8)".to_owned(),
                    source: Box::new(err),
                }),
                Err(EventStreamError::Parser(err)) => Err(ClientError::Decode {
                    what: "the event stream".to_owned(),
                    source: err.to_string().into(),
                }),
            }))
    }

    /// Polls `GET /api/jobs/{id}` every `poll` until the job is terminal (COMPLETED, FAILED,
    /// TIMEOUT, CANCELLED) or `deadline` (counted from the call) has passed, and returns the
    /// last JobResponse read: the caller checks `status.is_terminal()` to tell a finished job
    /// from a deadline that passed.
    ///
    /// # Errors
    /// The first error of a [`GatewayClient::get`] (e.g. 404), which ends the wait.
    pub async fn wait_terminal(
        &self,
        id: &str,
        poll: Duration,
        deadline: Duration,
    ) -> Result<JobResponse, ClientError> {
        let started = tokio::time::Instant::now();
        loop {
            let job = self.get(id).await?;
            let elapsed = started.elapsed();
            if job.status.is_terminal() || elapsed >= deadline {
                return Ok(job);
            }
            tokio::time::sleep(poll.min(deadline - elapsed)).await;
        }
    }

    /// The URL of the route made of `segments` (each percent-encoded as one path segment).
    pub(crate) fn url(&self, segments: &[&str]) -> Result<Url, ClientError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ClientError::InvalidUrl {
                url: self.base.to_string(),
                reason: "it cannot take a path".to_owned(),
            })?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// A request-response request: authorized, with the exchange timeout.
    pub(crate) fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.authorize(self.http.request(method, url))
            .timeout(REQUEST_TIMEOUT)
    }

    fn authorize(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Sends `request`; a non-2xx answer becomes [`ClientError::Status`].
    pub(crate) async fn send(&self, request: RequestBuilder) -> Result<Response, ClientError> {
        let response = request.send().await.map_err(ClientError::Transport)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = match response.bytes().await {
            Ok(bytes) => error_body(&bytes),
            Err(err) => Value::String(format!("(body unreadable: {})", error_chain(&err))),
        };
        Err(ClientError::Status {
            status: status.as_u16(),
            body,
        })
    }
}

/// Parses and checks a base URL: absolute http(s), no query or fragment.
fn parse_base(base_url: &str) -> Result<Url, ClientError> {
    let invalid = |reason: String| ClientError::InvalidUrl {
        url: base_url.to_owned(),
        reason,
    };
    let trimmed = base_url.trim();
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    let mut url = Url::parse(&with_scheme).map_err(|err| invalid(err.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme {:?} is not http or https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) || url.cannot_be_a_base() {
        return Err(invalid("no host".to_owned()));
    }
    url.set_query(None);
    url.set_fragment(None);
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Ok(url)
}

/// Reads a 2xx body as `T`.
async fn decode<T: DeserializeOwned>(response: Response) -> Result<T, ClientError> {
    let bytes = response.bytes().await.map_err(ClientError::Transport)?;
    serde_json::from_slice(&bytes).map_err(|err| ClientError::Decode {
        what: snippet(&bytes),
        source: Box::new(err),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use distriqueue_core::JobStatus;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    const JOB_ID: &str = "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b";

    fn job_json(status: &str) -> Value {
        json!({
            "id": JOB_ID,
            "type": "calculate",
            "jobPriority": "HIGH",
            "jobStatus": status,
            "payload": {"operation": "sum", "numbers": [1, 2, 3]},
            "retryCount": 0,
            "maxRetries": 3,
            "executionTimeout": 300,
            "created_at": "2024-01-01T00:00:00Z",
            "callback_sent": false,
            "queue_time_ms": 0,
            "execution_time_ms": 0,
            "attempt": 1,
            "version": 1
        })
    }

    fn http_response(status: &str, content_type: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn json_response(status: &str, body: &Value) -> String {
        http_response(status, "application/json", &body.to_string())
    }

    /// A one-off HTTP server answering each connection with the next of `responses`; the
    /// handle yields the request heads (and bodies) it read, in order.
    async fn fake_server(responses: Vec<String>) -> (String, JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        let handle = tokio::spawn(async move {
            let mut requests = Vec::new();
            for response in responses {
                let (mut socket, _) = listener.accept().await.expect("accept");
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n_read = socket.read(&mut chunk).await.expect("read");
                    buffer.extend_from_slice(&chunk[..n_read]);
                    let text = String::from_utf8_lossy(&buffer).to_string();
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let content_length = text[..head_end]
                            .lines()
                            .find_map(|line| {
                                let (name, value) = line.split_once(':')?;
                                name.eq_ignore_ascii_case("content-length")
                                    .then(|| value.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buffer.len() >= head_end + 4 + content_length {
                            requests.push(text);
                            break;
                        }
                    }
                    if n_read == 0 {
                        requests.push(text);
                        break;
                    }
                }
                socket.write_all(response.as_bytes()).await.expect("write");
                socket.shutdown().await.expect("shutdown");
            }
            requests
        });
        (base, handle)
    }

    #[test]
    fn base_url_is_normalized() {
        for (given, expected) in [
            ("http://127.0.0.1:8082", "http://127.0.0.1:8082"),
            ("http://127.0.0.1:8082/", "http://127.0.0.1:8082"),
            ("127.0.0.1:8082", "http://127.0.0.1:8082"),
            ("localhost:8082/", "http://localhost:8082"),
            (
                "https://queue.example/prefix/",
                "https://queue.example/prefix",
            ),
            (" http://h:1/?x=1#frag ", "http://h:1"),
        ] {
            let client = GatewayClient::new(given).expect(given);
            assert_eq!(client.base_url(), expected, "{given}");
        }
    }

    #[test]
    fn bad_base_urls_are_refused() {
        for given in ["ftp://host", "http://", "", "http://exa mple"] {
            let err = GatewayClient::new(given).expect_err(given);
            assert!(
                matches!(err, ClientError::InvalidUrl { .. }),
                "{given}: {err}"
            );
        }
    }

    #[test]
    fn route_urls_encode_each_segment() {
        let client = GatewayClient::new("http://h:1/prefix/").expect("client");
        let check = |segments: &[&str], expected: &str| {
            assert_eq!(client.url(segments).expect("url").as_str(), expected);
        };
        check(&["api", "jobs"], "http://h:1/prefix/api/jobs");
        check(
            &["api", "jobs", "a b/c?d", "cancel"],
            "http://h:1/prefix/api/jobs/a%20b%2Fc%3Fd/cancel",
        );
        let root = GatewayClient::new("http://h:1").expect("client");
        assert_eq!(
            root.url(&["api", "jobs", JOB_ID]).expect("url").as_str(),
            format!("http://h:1/api/jobs/{JOB_ID}")
        );
    }

    #[test]
    fn status_errors_display_the_server_body() {
        let check = |status: u16, body: Value, expected: &str| {
            assert_eq!(ClientError::Status { status, body }.to_string(), expected);
        };
        check(
            400,
            json!({"error": "Validation failed", "violations": {"type": "must not be blank"}}),
            r#"400 Bad Request: {"error":"Validation failed","violations":{"type":"must not be blank"}}"#,
        );
        check(
            502,
            json!("upstream down"),
            "502 Bad Gateway: upstream down",
        );
        check(404, Value::Null, "404 Not Found: (empty body)");
        check(599, json!({"error": "odd"}), r#"599: {"error":"odd"}"#);
    }

    #[test]
    fn error_bodies_decode_as_json_or_text() {
        assert_eq!(
            error_body(br#"{"error":"Job not found: x"}"#),
            json!({"error": "Job not found: x"})
        );
        assert_eq!(
            error_body(b"Payload Too Large\n"),
            json!("Payload Too Large")
        );
        assert_eq!(error_body(b"  "), Value::Null);
        let err = ClientError::Status {
            status: 404,
            body: error_body(br#"{"error":"Job not found: x"}"#),
        };
        assert_eq!(err.status(), Some(404));
        assert_eq!(err.server_message(), Some("Job not found: x"));
    }

    #[tokio::test]
    async fn submit_posts_the_body_and_decodes_the_job() {
        let (base, server) =
            fake_server(vec![json_response("202 Accepted", &job_json("QUEUED"))]).await;
        let client = GatewayClient::new(&base)
            .expect("client")
            .with_api_key("secret");
        let request = json!({"type": "calculate", "jobPriority": "HIGH"});
        let job = client.submit(&request).await.expect("submit");
        assert_eq!(job.id.to_string(), JOB_ID);
        assert_eq!(job.status, JobStatus::Queued);
        let requests = server.await.expect("server");
        assert!(requests[0].starts_with("POST /api/jobs HTTP/1.1\r\n"));
        assert!(requests[0].contains("authorization: Bearer secret"));
        assert!(requests[0].ends_with(&request.to_string()));
    }

    #[tokio::test]
    async fn validation_errors_come_back_as_status_with_the_body() {
        let body = json!({"error": "Validation failed", "violations": {"type": "required"}});
        let (base, server) = fake_server(vec![json_response("400 Bad Request", &body)]).await;
        let client = GatewayClient::new(&base).expect("client");
        let err = client.submit(&json!({})).await.expect_err("400");
        match err {
            ClientError::Status { status, body: got } => {
                assert_eq!(status, 400);
                assert_eq!(got, body);
            }
            other => panic!("expected Status, got {other:?}"),
        }
        server.await.expect("server");
    }

    #[tokio::test]
    async fn list_sends_query_pairs_and_decodes_the_page() {
        let page = json!({
            "content": [job_json("COMPLETED")],
            "page": {"size": 20, "number": 0, "totalElements": 1, "totalPages": 1}
        });
        let (base, server) = fake_server(vec![json_response("200 OK", &page)]).await;
        let client = GatewayClient::new(&base).expect("client");
        let query = vec![
            ("jobStatus".to_owned(), "COMPLETED".to_owned()),
            ("createdFrom".to_owned(), "2024-01-01T00:00:00Z".to_owned()),
        ];
        let got = client.list(&query).await.expect("list");
        assert_eq!(got.content.len(), 1);
        assert_eq!(got.page.total_elements, 1);
        let requests = server.await.expect("server");
        assert!(requests[0].starts_with(
            "GET /api/jobs?jobStatus=COMPLETED&createdFrom=2024-01-01T00%3A00%3A00Z HTTP/1.1"
        ));
    }

    #[tokio::test]
    async fn a_2xx_body_that_is_not_a_job_is_a_decode_error() {
        let (base, server) =
            fake_server(vec![http_response("200 OK", "text/html", "<html>")]).await;
        let client = GatewayClient::new(&base).expect("client");
        let err = client.get(JOB_ID).await.expect_err("decode");
        assert!(
            matches!(err, ClientError::Decode { ref what, .. } if what.contains("<html>")),
            "{err}"
        );
        server.await.expect("server");
    }

    #[tokio::test]
    async fn cancel_posts_to_the_cancel_route() {
        let (base, server) = fake_server(vec![json_response(
            "409 Conflict",
            &json!({"error": "Job already terminal"}),
        )])
        .await;
        let client = GatewayClient::new(&base).expect("client");
        let err = client.cancel(JOB_ID).await.expect_err("409");
        assert_eq!(err.status(), Some(409));
        let requests = server.await.expect("server");
        assert!(requests[0].starts_with(&format!("POST /api/jobs/{JOB_ID}/cancel HTTP/1.1")));
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_transport_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local addr");
        drop(listener);
        let client = GatewayClient::new(&format!("http://{address}")).expect("client");
        let err = client.get(JOB_ID).await.expect_err("refused");
        assert!(matches!(err, ClientError::Transport(_)), "{err}");
    }

    #[tokio::test]
    async fn watch_yields_parsed_events_until_the_stream_ends() {
        let body = concat!(
            "event: connected\nid: 0\ndata: {\"clientId\":\"c1\"}\n\n",
            ": keep-alive\n\n",
            "event: job-update\nid: 7\ndata: {\"jobId\":\"j\",\"status\":\"QUEUED\"}\n\n",
            "event: job-update\nid: 8\ndata: {\"jobId\":\"j\",\"status\":\"RUNNING\"}\n\n",
        );
        let (base, server) =
            fake_server(vec![http_response("200 OK", "text/event-stream", body)]).await;
        let client = GatewayClient::new(&base).expect("client");
        let stream = client
            .watch_since(Some(JOB_ID), Some("6"))
            .await
            .expect("watch");
        let events: Vec<SseEvent> = stream
            .map(|item| item.expect("event"))
            .collect::<Vec<_>>()
            .await;
        let event = |name: &str, id: &str, data: &str| SseEvent {
            event: name.to_owned(),
            id: Some(id.to_owned()),
            data: data.to_owned(),
        };
        assert_eq!(
            events,
            [
                event("connected", "0", r#"{"clientId":"c1"}"#),
                event("job-update", "7", r#"{"jobId":"j","status":"QUEUED"}"#),
                event("job-update", "8", r#"{"jobId":"j","status":"RUNNING"}"#),
            ]
        );
        let requests = server.await.expect("server");
        assert!(requests[0].starts_with(&format!("GET /api/jobs/stream?jobId={JOB_ID} HTTP/1.1")));
        assert!(requests[0].contains("accept: text/event-stream"));
        assert!(requests[0].contains("last-event-id: 6"));
    }

    #[tokio::test]
    async fn wait_terminal_polls_until_the_job_is_terminal() {
        let (base, server) = fake_server(vec![
            json_response("200 OK", &job_json("QUEUED")),
            json_response("200 OK", &job_json("RUNNING")),
            json_response("200 OK", &job_json("COMPLETED")),
        ])
        .await;
        let client = GatewayClient::new(&base).expect("client");
        let job = client
            .wait_terminal(JOB_ID, Duration::from_millis(1), Duration::from_secs(10))
            .await
            .expect("wait");
        assert_eq!(job.status, JobStatus::Completed);
        assert_eq!(server.await.expect("server").len(), 3);
    }

    #[tokio::test]
    async fn wait_terminal_returns_the_last_state_at_the_deadline() {
        let (base, server) = fake_server(vec![json_response("200 OK", &job_json("RUNNING"))]).await;
        let client = GatewayClient::new(&base).expect("client");
        let job = client
            .wait_terminal(JOB_ID, Duration::from_millis(1), Duration::ZERO)
            .await
            .expect("wait");
        assert_eq!(job.status, JobStatus::Running);
        server.await.expect("server");
    }
}
