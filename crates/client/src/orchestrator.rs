//! [`OrchestratorClient`]: the orchestrator's HTTP API as gateways and native workers use it,
//! over a list of orchestrator URLs with failover.
//!
//! A call goes to the URL that answered last; when it cannot connect, times out or gets 503, it
//! tries the next, round the list, until its patience runs out. Every call is safe to repeat:
//! register is idempotent by id, a repeated report from the lease holder is answered as the
//! first, and a repeated cancel or retry is refused with 409 rather than applied twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use distriqueue_core::request::JobSpec;
use distriqueue_core::{JobId, JobResponse, Refusal, Report, WorkerHeartbeat};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{ClientError, GatewayClient};

/// The header of an answer that a follower forwarded: the leader's base URL (the orchestrator
/// API's `LEADER_HEADER`).
const LEADER_HEADER: &str = "x-distriqueue-leader";

/// The shortest time one try may take.
const MIN_TRY: Duration = Duration::from_millis(500);

/// Pause between two rounds over every URL.
const ROUND_PAUSE: Duration = Duration::from_millis(200);

/// Why an orchestrator call got no answer it could use.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The state machine refused the command (its HTTP status is [`Refusal::http_status`]).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The orchestrator rejected the request itself (400: a bad body); the message is its.
    #[error("orchestrator rejected the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// No orchestrator answered within the client's patience.
    #[error("no orchestrator answered: {0}")]
    Unavailable(String),
}

/// The answer to `POST /api/jobs/register`.
#[derive(Debug, Clone, Deserialize)]
pub struct RegisterAnswer {
    pub job_id: JobId,
    /// The committed snapshot; `null` when the id (or idempotency key) names a job the
    /// orchestrator holds only as a tombstone.
    pub job: Option<JobResponse>,
    /// False when the register was a repeat (of the id or of the idempotency key).
    #[serde(default = "yes")]
    pub created: bool,
}

fn yes() -> bool {
    true
}

/// A client of one orchestrator cluster. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct OrchestratorClient {
    endpoints: Vec<GatewayClient>,
    /// The endpoint that answered last.
    current: AtomicUsize,
    /// How long a call keeps trying when no orchestrator answers.
    patience: Duration,
}

impl OrchestratorClient {
    /// A client of the orchestrators at `urls` (`http://127.0.0.1:8081`, ...), trying each in
    /// turn for up to `patience` per call.
    ///
    /// # Errors
    /// [`ClientError::InvalidUrl`] for a URL that is not absolute http(s), or an empty list.
    pub fn new(urls: &[String], patience: Duration) -> Result<OrchestratorClient, ClientError> {
        if urls.is_empty() {
            return Err(ClientError::InvalidUrl {
                url: String::new(),
                reason: "no orchestrator URL given".into(),
            });
        }
        let endpoints = urls
            .iter()
            .map(|url| GatewayClient::new(url))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(OrchestratorClient {
            endpoints,
            current: AtomicUsize::new(0),
            patience,
        })
    }

    /// After a failure of the endpoint at `index`, the next call starts at the one after it
    /// (unless another call moved on already).
    fn move_on_from(&self, index: usize) {
        let next = (index + 1) % self.endpoints.len();
        let _ = self
            .current
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Sends one request, failing over between URLs; decodes a 2xx body as `T`.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: &Value,
    ) -> Result<T, CallError> {
        let deadline = tokio::time::Instant::now() + self.patience;
        let n = self.endpoints.len();
        let mut last_problem = String::new();
        loop {
            let first = self.current.load(Ordering::Relaxed);
            for offset in 0..n {
                let index = (first + offset) % n;
                let endpoint = &self.endpoints[index];
                let url = endpoint
                    .url(segments)
                    .map_err(|error| CallError::Rejected {
                        status: 0,
                        message: error.to_string(),
                    })?;
                // A hung node costs at most what is left of the patience, not the 30 s a
                // request may otherwise take.
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let request = endpoint
                    .request(method.clone(), url)
                    .timeout(left.clamp(MIN_TRY, crate::REQUEST_TIMEOUT))
                    .json(body);
                match endpoint.send(request).await {
                    Ok(response) => {
                        // A follower forwarded the call: talk to the leader directly next time.
                        let leader = response
                            .headers()
                            .get(LEADER_HEADER)
                            .and_then(|value| value.to_str().ok())
                            .and_then(|url| {
                                let url = url.trim_end_matches('/');
                                self.endpoints
                                    .iter()
                                    .position(|other| other.base_url() == url)
                            });
                        self.current
                            .store(leader.unwrap_or(index), Ordering::Relaxed);
                        return crate::decode(response).await.map_err(|error| {
                            CallError::Unavailable(format!("undecodable answer: {error}"))
                        });
                    }
                    Err(ClientError::Status { status: 503, body }) => {
                        last_problem = format!("{}: 503 {body}", endpoint.base_url());
                        self.move_on_from(index);
                    }
                    Err(ClientError::Status { status, body }) => {
                        self.current.store(index, Ordering::Relaxed);
                        return Err(refusal_or_rejection(status, &body));
                    }
                    Err(error) => {
                        last_problem = format!("{}: {error}", endpoint.base_url());
                        self.move_on_from(index);
                    }
                }
            }
            if tokio::time::Instant::now() + ROUND_PAUSE > deadline {
                return Err(CallError::Unavailable(last_problem));
            }
            tokio::time::sleep(ROUND_PAUSE).await;
        }
    }

    /// `POST /api/jobs/register/batch`: many gateway-minted registrations committed together;
    /// one answer each, in order: the registration, its refusal, or
    /// [`CallError::Unavailable`] for one the orchestrator could not commit (a leader change
    /// mid-batch; the caller may send it again with the same id, as register is idempotent).
    /// The request itself is retried with the same ids until an orchestrator answers.
    pub async fn register_batch(
        &self,
        jobs: &[(JobId, JobSpec)],
    ) -> Result<Vec<Result<RegisterAnswer, CallError>>, CallError> {
        #[derive(Deserialize)]
        struct Answers {
            results: Vec<Value>,
        }
        let body = json!({
            "jobs": jobs
                .iter()
                .map(|(id, spec)| json!({"id": id, "spec": spec}))
                .collect::<Vec<_>>(),
        });
        let answers: Answers = self
            .call(Method::POST, &["api", "jobs", "register", "batch"], &body)
            .await?;
        if answers.results.len() != jobs.len() {
            return Err(CallError::Unavailable(format!(
                "{} answers to {} registrations",
                answers.results.len(),
                jobs.len()
            )));
        }
        Ok(answers
            .results
            .into_iter()
            .map(|answer| {
                if let Some(refusal) = answer.get("refusal") {
                    return Err(serde_json::from_value(refusal.clone()).map_or_else(
                        |error| CallError::Unavailable(format!("undecodable refusal: {error}")),
                        CallError::Refused,
                    ));
                }
                if let Some(error) = answer.get("error").and_then(Value::as_str) {
                    return Err(CallError::Unavailable(error.to_string()));
                }
                serde_json::from_value(answer)
                    .map_err(|error| CallError::Unavailable(format!("undecodable answer: {error}")))
            })
            .collect())
    }

    /// `POST /api/jobs/{id}/cancel`: the CANCELLED snapshot.
    pub async fn cancel(&self, id: JobId) -> Result<JobResponse, CallError> {
        #[derive(Deserialize)]
        struct Cancelled {
            job: JobResponse,
        }
        let id = id.to_string();
        let answer: Cancelled = self
            .call(Method::POST, &["api", "jobs", &id, "cancel"], &Value::Null)
            .await?;
        Ok(answer.job)
    }

    /// `POST /api/jobs/{id}/retry` with the read model's snapshot of a FAILED, TIMEOUT or
    /// CANCELLED job: the QUEUED snapshot of its new attempt.
    pub async fn retry(&self, stored: &JobResponse) -> Result<JobResponse, CallError> {
        #[derive(Deserialize)]
        struct Retried {
            job: JobResponse,
        }
        let id = stored.id.to_string();
        let body = serde_json::to_value(stored).map_err(|error| CallError::Rejected {
            status: 0,
            message: error.to_string(),
        })?;
        let answer: Retried = self
            .call(Method::POST, &["api", "jobs", &id, "retry"], &body)
            .await?;
        Ok(answer.job)
    }

    /// `GET /api/jobs/snapshots`: the committed snapshot of every live job.
    pub async fn live_snapshots(&self) -> Result<Vec<JobResponse>, CallError> {
        #[derive(Deserialize)]
        struct Snapshots {
            jobs: Vec<JobResponse>,
        }
        let answer: Snapshots = self
            .call(Method::GET, &["api", "jobs", "snapshots"], &Value::Null)
            .await?;
        Ok(answer.jobs)
    }

    /// `POST /api/cluster/nodes`: adds node `id` at `url` to the orchestrator cluster (as a
    /// learner until it caught up, then a voter); the answer names the new members.
    pub async fn add_node(&self, id: u64, url: &str) -> Result<Value, CallError> {
        self.call(
            Method::POST,
            &["api", "cluster", "nodes"],
            &json!({"id": id, "url": url}),
        )
        .await
    }

    /// `DELETE /api/cluster/nodes/{id}`: removes node `id` from the orchestrator cluster.
    pub async fn remove_node(&self, id: u64) -> Result<Value, CallError> {
        let id = id.to_string();
        self.call(
            Method::DELETE,
            &["api", "cluster", "nodes", &id],
            &Value::Null,
        )
        .await
    }

    /// `GET /api/cluster/status` of the first node that answers.
    pub async fn cluster_status(&self) -> Result<Value, CallError> {
        self.call(Method::GET, &["api", "cluster", "status"], &Value::Null)
            .await
    }

    /// `POST /api/jobs/status/batch`: many reports, committed together; one answer each, in
    /// order (`Ok` = applied, `Err` = refused).
    pub async fn report_batch(
        &self,
        reports: &[Report],
    ) -> Result<Vec<Result<(), Refusal>>, CallError> {
        #[derive(Deserialize)]
        struct Answers {
            results: Vec<Answer>,
        }
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            refusal: Option<Refusal>,
            #[serde(default)]
            error: Option<String>,
        }
        let answers: Answers = self
            .call(
                Method::POST,
                &["api", "jobs", "status", "batch"],
                &json!({ "reports": reports }),
            )
            .await?;
        if answers.results.len() != reports.len() {
            return Err(CallError::Unavailable(format!(
                "{} answers to {} reports",
                answers.results.len(),
                reports.len()
            )));
        }
        answers
            .results
            .into_iter()
            .map(|answer| match (answer.refusal, answer.error) {
                (Some(refusal), _) => Ok(Err(refusal)),
                (None, Some(error)) => Err(CallError::Unavailable(error)),
                (None, None) => Ok(Ok(())),
            })
            .collect()
    }

    /// `POST /api/workers/heartbeat`: the ids of the jobs this worker must stop.
    pub async fn heartbeat(&self, heartbeat: &WorkerHeartbeat) -> Result<Vec<JobId>, CallError> {
        #[derive(Deserialize)]
        struct Acknowledged {
            #[serde(default)]
            cancel: Vec<JobId>,
        }
        let body = serde_json::to_value(heartbeat).map_err(|error| CallError::Rejected {
            status: 0,
            message: error.to_string(),
        })?;
        let answer: Acknowledged = self
            .call(Method::POST, &["api", "workers", "heartbeat"], &body)
            .await?;
        Ok(answer.cancel)
    }
}

/// A refusal when the error body carries one (`refusal`), else a rejection with its message.
fn refusal_or_rejection(status: u16, body: &Value) -> CallError {
    if let Some(refusal) = body
        .get("refusal")
        .and_then(|refusal| serde_json::from_value::<Refusal>(refusal.clone()).ok())
    {
        return CallError::Refused(refusal);
    }
    CallError::Rejected {
        status,
        message: body
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| body.to_string(), str::to_string),
    }
}
