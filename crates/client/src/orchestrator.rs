//! [`OrchestratorClient`]: the orchestrator's HTTP API as gateways and native workers use it,
//! over a list of orchestrator URLs with failover.
//!
//! A call goes to the URL that answered last; when it cannot connect, times out or gets 503, it
//! tries the next, round the list, until its patience runs out. Every call is safe to repeat:
//! register is idempotent by id, a repeated report from the lease holder is answered as the
//! first, and a repeated cancel or retry is refused with 409 rather than applied twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::sync::Arc;

use distriqueue_core::api::{
    ClusterStatus, ErrorBody, HeartbeatAnswer, ItemResult, JobChanged, MembershipChanged, NewNode,
    RegisterBatch, Registered, ReportBatch, Snapshots, Updated, LEADER_HEADER,
};
use distriqueue_core::{JobId, JobResponse, Refusal, WorkerHeartbeat};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::{ClientError, GatewayClient};

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
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The orchestrator's `error` message.
        message: String,
    },
    /// No orchestrator answered within the client's patience; the source is the last failure
    /// (a connection error, a timeout, a 503, or an undecodable answer).
    #[error("no orchestrator answered")]
    Unavailable(#[source] Arc<ClientError>),
    /// The orchestrator answered but could not commit this item of a batch (a leader change
    /// mid-batch); the message is its. Sending the item again is safe.
    #[error("not committed: {0}")]
    NotCommitted(String),
    /// The answer does not fit the request (another number of results, a missing snapshot).
    #[error("the orchestrator's answer does not fit the request: {0}")]
    BadAnswer(String),
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

    /// The same client, sending `Authorization: Bearer <key>` to every orchestrator (a gateway's
    /// `client` key, a worker's `worker` key, an operator's `admin` key).
    pub fn with_api_key(self, key: &str) -> OrchestratorClient {
        OrchestratorClient {
            endpoints: self
                .endpoints
                .into_iter()
                .map(|endpoint| endpoint.with_api_key(key))
                .collect(),
            ..self
        }
    }

    /// The same client, trusting `root` (besides the public roots) for `https://`
    /// orchestrators: the certificate authority of `--ca-cert`.
    ///
    /// # Errors
    /// [`ClientError::Transport`] when the HTTP client cannot be built with it.
    pub fn with_root_certificate(
        self,
        root: &reqwest::Certificate,
    ) -> Result<OrchestratorClient, ClientError> {
        Ok(OrchestratorClient {
            endpoints: self
                .endpoints
                .into_iter()
                .map(|endpoint| endpoint.with_root_certificate(root))
                .collect::<Result<_, _>>()?,
            ..self
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

    /// Sends one request (with `body` as JSON, when given), failing over between URLs;
    /// decodes a 2xx body as `T`.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&B>,
    ) -> Result<T, CallError> {
        let deadline = tokio::time::Instant::now() + self.patience;
        let n = self.endpoints.len();
        loop {
            let mut last_failure = None;
            let first = self.current.load(Ordering::Relaxed);
            for offset in 0..n {
                let index = (first + offset) % n;
                let endpoint = &self.endpoints[index];
                let url = endpoint
                    .url(segments)
                    .map_err(|error| CallError::Unavailable(Arc::new(error)))?;
                // A hung node costs at most what is left of the patience, not the 30 s a
                // request may otherwise take.
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let mut request = endpoint
                    .request(method.clone(), url)
                    .timeout(left.clamp(MIN_TRY, crate::REQUEST_TIMEOUT));
                if let Some(body) = body {
                    request = request.json(body);
                }
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
                        return crate::decode(response)
                            .await
                            .map_err(|error| CallError::Unavailable(Arc::new(error)));
                    }
                    Err(ClientError::Status { status, body }) if status != 503 => {
                        self.current.store(index, Ordering::Relaxed);
                        return Err(refusal_or_rejection(status, &body));
                    }
                    Err(error) => {
                        last_failure = Some(error);
                        self.move_on_from(index);
                    }
                }
            }
            if tokio::time::Instant::now() + ROUND_PAUSE > deadline {
                return Err(match last_failure {
                    Some(error) => CallError::Unavailable(Arc::new(error)),
                    None => CallError::BadAnswer("no orchestrator to call".into()),
                });
            }
            tokio::time::sleep(ROUND_PAUSE).await;
        }
    }

    /// `POST /api/jobs/register/batch`: many gateway-minted registrations committed together;
    /// one answer each, in order: the registration, its refusal, or
    /// [`CallError::NotCommitted`] for one the orchestrator could not commit (a leader change
    /// mid-batch; the caller may send it again with the same id, as register is idempotent).
    /// The request itself is retried with the same ids until an orchestrator answers.
    ///
    /// Errors: [`CallError::Unavailable`] when no orchestrator answered in time;
    /// [`CallError::BadAnswer`] when the answer holds another number of results.
    pub async fn register_batch(
        &self,
        batch: &RegisterBatch,
    ) -> Result<RegisteredBatch, CallError> {
        let answers: RawResults = self
            .call(
                Method::POST,
                &["api", "jobs", "register", "batch"],
                Some(batch),
            )
            .await?;
        let log_index = answers.log_index;
        let results = one_per_item::<Registered>(answers, batch.jobs.len(), "registrations")?;
        Ok(RegisteredBatch {
            results: results
                .into_iter()
                .map(|answer| match answer {
                    ItemResult::Done(registered) => Ok(registered),
                    ItemResult::Failed(error) => Err(item_error(error)),
                })
                .collect(),
            log_index,
        })
    }

    /// `POST /api/jobs/{id}/cancel`: the CANCELLED snapshot.
    ///
    /// Errors: [`CallError::Refused`] for an unknown or finished job; as for every call.
    pub async fn cancel(&self, id: JobId) -> Result<JobResponse, CallError> {
        let id = id.to_string();
        let answer: JobChanged = self
            .call(Method::POST, &["api", "jobs", &id, "cancel"], NO_BODY)
            .await?;
        answer
            .job
            .ok_or_else(|| CallError::BadAnswer("a cancel answered without the job".into()))
    }

    /// `POST /api/jobs/{id}/retry` with the read model's snapshot of a FAILED, TIMEOUT or
    /// CANCELLED job: the QUEUED snapshot of its new attempt.
    ///
    /// Errors: [`CallError::Refused`] for a job that is not retryable; as for every call.
    pub async fn retry(&self, stored: &JobResponse) -> Result<JobResponse, CallError> {
        let id = stored.id.to_string();
        let answer: JobChanged = self
            .call(Method::POST, &["api", "jobs", &id, "retry"], Some(stored))
            .await?;
        answer
            .job
            .ok_or_else(|| CallError::BadAnswer("a retry answered without the job".into()))
    }

    /// `GET /api/jobs/snapshots`: the committed snapshot of every live job.
    pub async fn live_snapshots(&self) -> Result<Vec<JobResponse>, CallError> {
        let answer: Snapshots = self
            .call(Method::GET, &["api", "jobs", "snapshots"], NO_BODY)
            .await?;
        Ok(answer.jobs)
    }

    /// `POST /api/cluster/nodes`: adds node `id` at `url` to the orchestrator cluster (as a
    /// learner until it caught up, then a voter); the answer names the new members.
    pub async fn add_node(&self, id: u64, url: &str) -> Result<MembershipChanged, CallError> {
        let node = NewNode {
            id,
            url: url.to_string(),
        };
        self.call(Method::POST, &["api", "cluster", "nodes"], Some(&node))
            .await
    }

    /// `DELETE /api/cluster/nodes/{id}`: removes node `id` from the orchestrator cluster.
    pub async fn remove_node(&self, id: u64) -> Result<MembershipChanged, CallError> {
        let id = id.to_string();
        self.call(Method::DELETE, &["api", "cluster", "nodes", &id], NO_BODY)
            .await
    }

    /// `GET /api/cluster/status` of the first node that answers.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, CallError> {
        self.call(Method::GET, &["api", "cluster", "status"], NO_BODY)
            .await
    }

    /// `GET /api/cluster/status` of every node, each asked once within `timeout`, in the order
    /// of the URLs, with the URL it was asked at (the dashboard's cluster view: a node that
    /// does not answer is shown unreachable).
    pub async fn cluster_status_of_each(
        &self,
        timeout: Duration,
    ) -> Vec<(String, Result<ClusterStatus, ClientError>)> {
        futures::future::join_all(self.endpoints.iter().map(|endpoint| async move {
            let status = async {
                let url = endpoint.url(&["api", "cluster", "status"])?;
                let request = endpoint.request(Method::GET, url).timeout(timeout);
                crate::decode(endpoint.send(request).await?).await
            }
            .await;
            (endpoint.base_url().to_string(), status)
        }))
        .await
    }

    /// `POST /api/jobs/status/batch`: many reports, committed together; one answer each, in
    /// order (`Ok` = applied, `Err` = refused).
    ///
    /// Errors: [`CallError::NotCommitted`] when a report could not be committed (send the batch
    /// again: a repeated report from the lease holder is answered as the first); as for every
    /// call.
    pub async fn report_batch(
        &self,
        batch: &ReportBatch,
    ) -> Result<Vec<Result<(), Refusal>>, CallError> {
        let answers: RawResults = self
            .call(
                Method::POST,
                &["api", "jobs", "status", "batch"],
                Some(batch),
            )
            .await?;
        one_per_item::<Updated>(answers, batch.reports.len(), "reports")?
            .into_iter()
            .map(|answer| match answer {
                ItemResult::Done(_) => Ok(Ok(())),
                ItemResult::Failed(error) => match item_error(error) {
                    CallError::Refused(refusal) => Ok(Err(refusal)),
                    other => Err(other),
                },
            })
            .collect()
    }

    /// `POST /api/workers/heartbeat`: the ids of the jobs this worker must stop.
    pub async fn heartbeat(&self, heartbeat: &WorkerHeartbeat) -> Result<Vec<JobId>, CallError> {
        let answer: HeartbeatAnswer = self
            .call(
                Method::POST,
                &["api", "workers", "heartbeat"],
                Some(heartbeat),
            )
            .await?;
        Ok(answer.cancel)
    }
}

/// The body of a call without one.
const NO_BODY: Option<&()> = None;

/// A batch answer ([`distriqueue_core::api::BatchResults`]) read item by item, so one item this
/// client cannot decode (from a newer orchestrator, say) fails alone.
#[derive(serde::Deserialize)]
struct RawResults {
    results: Vec<Value>,
    #[serde(rename = "logIndex", default)]
    log_index: Option<u64>,
}

/// The answer to [`OrchestratorClient::register_batch`].
#[derive(Debug, Clone)]
pub struct RegisteredBatch {
    /// Each registration's answer, in order: the registration, its refusal, or
    /// [`CallError::NotCommitted`].
    pub results: Vec<Result<Registered, CallError>>,
    /// The Raft log index of the entry that committed the batch.
    pub log_index: Option<u64>,
}

/// The results of a batch answer, checked to be one per item, each decoded on its own: an
/// undecodable one reads as not committed (sent again, it is answered again).
fn one_per_item<T: DeserializeOwned>(
    answers: RawResults,
    n_items: usize,
    what: &str,
) -> Result<Vec<ItemResult<T>>, CallError> {
    if answers.results.len() != n_items {
        return Err(CallError::BadAnswer(format!(
            "{} answers to {n_items} {what}",
            answers.results.len()
        )));
    }
    Ok(answers
        .results
        .into_iter()
        .map(|answer| {
            serde_json::from_value(answer).unwrap_or_else(|error| {
                ItemResult::Failed(ErrorBody::new(format!("undecodable answer: {error}")))
            })
        })
        .collect())
}

/// A batch item's error body: its refusal, or "not committed" with the server's message.
fn item_error(error: ErrorBody) -> CallError {
    match error.refusal {
        Some(refusal) => CallError::Refused(refusal),
        None => CallError::NotCommitted(error.error),
    }
}

/// A refusal when the error body carries one (`refusal`), else a rejection with its message.
fn refusal_or_rejection(status: u16, body: &Value) -> CallError {
    match serde_json::from_value::<ErrorBody>(body.clone()) {
        Ok(ErrorBody {
            refusal: Some(refusal),
            ..
        }) => CallError::Refused(refusal),
        Ok(ErrorBody { error, .. }) => CallError::Rejected {
            status,
            message: error,
        },
        Err(_) => CallError::Rejected {
            status,
            message: body.to_string(),
        },
    }
}
