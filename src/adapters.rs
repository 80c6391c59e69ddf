//! The traits the roles define, implemented for a role in this process or elsewhere: the
//! gateway's [`distriqueue_gateway::Orchestrator`] and the worker's [`Reporter`], each over the
//! in-process [`OrchestratorHandle`] or over HTTP ([`OrchestratorClient`], with registers and
//! reports gathered into batches).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distriqueue_client::{CallError, OrchestratorClient};
use distriqueue_core::api::{
    RegisterBatch, Registered as RegisterAnswer, Registration, ReportBatch,
};
use distriqueue_core::machine::Applied;
use distriqueue_core::request::JobSpec;
use distriqueue_core::{Command, JobId, JobResponse, Report, WorkerHeartbeat};
use distriqueue_gateway::{NodeAnswer, OrchestratorError, Registered, RegisteredBatch};
use distriqueue_orchestrator::{OrchestratorHandle, SubmitError};
use distriqueue_util::Batcher;
use distriqueue_worker::{ReportError, Reporter};

/// How long the gateway keeps trying to reach an orchestrator for one request before it
/// answers 503 (a register is retried with the same id all along: it is idempotent by id).
pub const GATEWAY_PATIENCE: Duration = Duration::from_secs(10);

/// How long one worker call tries the orchestrators before the worker's own retry loop takes
/// over.
pub const WORKER_PATIENCE: Duration = Duration::from_secs(2);

/// Most registers or reports in one request.
const BATCH: usize = 512;

/// Encoded bytes that weigh as much as one register or report: a request carries at most
/// [`BATCH`] of them and at most 8 MiB of them (unless one alone is larger), well within the
/// orchestrator's batch routes' limit.
const BYTES_PER_ITEM: usize = 8 * 1024 * 1024 / BATCH;

/// An item's weight in a batch: 1, plus 1 per [`BYTES_PER_ITEM`] of its JSON.
fn weight<T: serde::Serialize>(item: &T) -> usize {
    1 + distriqueue_util::encoded_len(item) / BYTES_PER_ITEM
}

/// Registers or reports waiting for a request at most.
const WAITING: usize = 16 * 1024;

/// Pause before a register that could not commit is sent again.
const REGISTER_AGAIN: Duration = Duration::from_millis(100);

/// The in-process orchestrator, for a gateway or a worker in the same process.
pub struct Local(pub OrchestratorHandle);

fn unavailable(error: SubmitError) -> OrchestratorError {
    OrchestratorError::Unavailable(Box::new(error))
}

/// The snapshot a cancel or retry answers with.
fn snapshot(applied: Applied, what: &str) -> Result<JobResponse, OrchestratorError> {
    applied.job.map(|job| *job).ok_or_else(|| {
        OrchestratorError::Unavailable(format!("{what} answered no snapshot").into())
    })
}

/// The gateway's answer to a register of `id` that was applied.
fn registered(id: JobId, applied: Applied) -> Registered {
    Registered {
        job_id: applied.job_id.unwrap_or(id),
        job: applied.job.map(|job| *job),
        created: applied.created,
    }
}

#[async_trait]
impl distriqueue_gateway::Orchestrator for Local {
    async fn register(&self, id: JobId, spec: JobSpec) -> Result<Registered, OrchestratorError> {
        let applied = self.0.register(id, spec).await.map_err(unavailable)??;
        Ok(registered(id, applied))
    }

    async fn register_batch(
        &self,
        jobs: Vec<(JobId, JobSpec)>,
    ) -> Result<RegisteredBatch, OrchestratorError> {
        let ids: Vec<JobId> = jobs.iter().map(|(id, _)| *id).collect();
        let committed = self.0.register_all(jobs).await.map_err(unavailable)?;
        Ok(RegisteredBatch {
            results: ids
                .into_iter()
                .zip(committed.outcomes)
                .map(|(id, outcome)| outcome.map(|applied| registered(id, applied)))
                .collect(),
            log_index: Some(committed.log_index),
        })
    }

    async fn cancel(&self, id: JobId) -> Result<JobResponse, OrchestratorError> {
        let applied = self
            .0
            .submit(Command::Cancel { id })
            .await
            .map_err(unavailable)??;
        snapshot(applied, "cancel")
    }

    async fn retry(&self, stored: &JobResponse) -> Result<JobResponse, OrchestratorError> {
        let applied = self.0.retry(stored).await.map_err(unavailable)??;
        snapshot(applied, "retry")
    }

    async fn live_snapshots(&self) -> Result<Vec<JobResponse>, OrchestratorError> {
        Ok(self.0.live_snapshots())
    }

    async fn cluster_status(&self) -> Vec<NodeAnswer> {
        vec![NodeAnswer {
            url: self.0.api_url().to_string(),
            status: Ok(self.0.cluster_status().await),
        }]
    }
}

#[async_trait]
impl Reporter for Local {
    async fn report(&self, report: Report) -> Result<(), ReportError> {
        match self.0.submit(Command::Report(report)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(refusal)) => Err(ReportError::Refused(refusal)),
            Err(error) => Err(ReportError::Unavailable(Arc::new(error))),
        }
    }

    async fn heartbeat(&self, heartbeat: WorkerHeartbeat) -> Result<Vec<JobId>, ReportError> {
        self.0
            .heartbeat(heartbeat)
            .await
            .map_err(|error| ReportError::Unavailable(Arc::new(error)))
    }
}

/// One answer per item: each item's own, or the batch's error for all of them.
fn per_item<A, E: Clone>(answers: Result<Vec<A>, E>, n: usize) -> Vec<Result<A, E>> {
    match answers {
        Ok(answers) => answers.into_iter().map(Ok).collect(),
        Err(error) => (0..n).map(|_| Err(error.clone())).collect(),
    }
}

/// How long the dashboard's cluster view waits for each node's status.
const NODE_STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// Orchestrators elsewhere, over HTTP: the gateway's registers and the worker's reports travel
/// in batches (one request, and one log entry, for whatever waits).
pub struct Remote {
    client: Arc<OrchestratorClient>,
    registers: Batcher<Registration, Result<RegisterAnswer, CallError>>,
    reports: Batcher<Report, Result<(), ReportError>>,
}

impl Remote {
    /// Batches over `client`. Must be called within a Tokio runtime.
    pub fn new(client: OrchestratorClient) -> Remote {
        let client = Arc::new(client);
        let register_client = Arc::clone(&client);
        let registers =
            Batcher::start_weighted(BATCH, WAITING, weight, move |jobs: Vec<Registration>| {
                let client = Arc::clone(&register_client);
                async move {
                    let n = jobs.len();
                    let answers = client
                        .register_batch(&RegisterBatch { jobs })
                        .await
                        .map(|batch| batch.results);
                    per_item(answers, n)
                        .into_iter()
                        .map(|answer| answer.and_then(|answer| answer))
                        .collect()
                }
            });
        let report_client = Arc::clone(&client);
        let reports =
            Batcher::start_weighted(BATCH, WAITING, weight, move |reports: Vec<Report>| {
                let client = Arc::clone(&report_client);
                async move {
                    let n = reports.len();
                    let answers = client
                        .report_batch(&ReportBatch { reports })
                        .await
                        .map_err(|error| ReportError::Unavailable(Arc::new(error)));
                    per_item(answers, n)
                        .into_iter()
                        .map(|answer| {
                            answer.and_then(|answer| answer.map_err(ReportError::Refused))
                        })
                        .collect()
                }
            });
        Remote {
            client,
            registers,
            reports,
        }
    }
}

/// The gateway's view of the orchestrator's register answer.
fn gateway_answer(answer: RegisterAnswer) -> Registered {
    Registered {
        job_id: answer.job_id,
        job: answer.job,
        created: answer.created,
    }
}

fn orchestrator_error(error: CallError) -> OrchestratorError {
    match error {
        CallError::Refused(refusal) => OrchestratorError::Refused(refusal),
        other => OrchestratorError::Unavailable(Box::new(other)),
    }
}

#[async_trait]
impl distriqueue_gateway::Orchestrator for Remote {
    async fn register(&self, id: JobId, spec: JobSpec) -> Result<Registered, OrchestratorError> {
        // Register is idempotent by id: one that could not commit (a leader change mid-batch)
        // goes again with the same id until the gateway's patience runs out, never as a new job.
        let deadline = tokio::time::Instant::now() + GATEWAY_PATIENCE;
        let answer = loop {
            let registration = Registration {
                id,
                spec: spec.clone(),
            };
            let answer = self
                .registers
                .call(registration)
                .await
                .map_err(|stopped| OrchestratorError::Unavailable(Box::new(stopped)))?;
            match answer {
                Err(CallError::NotCommitted(reason)) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(%id, %reason, "register not committed; sending it again");
                    tokio::time::sleep(REGISTER_AGAIN).await;
                }
                other => break other.map_err(orchestrator_error)?,
            }
        };
        Ok(gateway_answer(answer))
    }

    async fn register_batch(
        &self,
        jobs: Vec<(JobId, JobSpec)>,
    ) -> Result<RegisteredBatch, OrchestratorError> {
        let jobs = jobs
            .into_iter()
            .map(|(id, spec)| Registration { id, spec })
            .collect();
        let answer = self
            .client
            .register_batch(&RegisterBatch { jobs })
            .await
            .map_err(orchestrator_error)?;
        let results = answer
            .results
            .into_iter()
            .map(|result| match result {
                Ok(registered) => Ok(Ok(gateway_answer(registered))),
                Err(CallError::Refused(refusal)) => Ok(Err(refusal)),
                Err(other) => Err(orchestrator_error(other)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RegisteredBatch {
            results,
            log_index: answer.log_index,
        })
    }

    async fn cancel(&self, id: JobId) -> Result<JobResponse, OrchestratorError> {
        self.client.cancel(id).await.map_err(orchestrator_error)
    }

    async fn retry(&self, stored: &JobResponse) -> Result<JobResponse, OrchestratorError> {
        self.client.retry(stored).await.map_err(orchestrator_error)
    }

    async fn live_snapshots(&self) -> Result<Vec<JobResponse>, OrchestratorError> {
        self.client
            .live_snapshots()
            .await
            .map_err(orchestrator_error)
    }

    async fn cluster_status(&self) -> Vec<NodeAnswer> {
        self.client
            .cluster_status_of_each(NODE_STATUS_TIMEOUT)
            .await
            .into_iter()
            .map(|(url, status)| NodeAnswer {
                url,
                status: status.map_err(|error| distriqueue_util::error_chain(&error)),
            })
            .collect()
    }
}

#[async_trait]
impl Reporter for Remote {
    async fn report(&self, report: Report) -> Result<(), ReportError> {
        self.reports
            .call(report)
            .await
            .unwrap_or_else(|stopped| Err(ReportError::Unavailable(Arc::new(stopped))))
    }

    async fn heartbeat(&self, heartbeat: WorkerHeartbeat) -> Result<Vec<JobId>, ReportError> {
        self.client
            .heartbeat(&heartbeat)
            .await
            .map_err(|error| match error {
                CallError::Refused(refusal) => ReportError::Refused(refusal),
                other => ReportError::Unavailable(Arc::new(other)),
            })
    }
}
