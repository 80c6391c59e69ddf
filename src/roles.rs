//! The distributed roles, each its own process over RabbitMQ (DESIGN.md "Roles"):
//! `distriqueue orchestrator`, `gateway` and `worker`. Each talks to the others only through
//! RabbitMQ and the orchestrator's HTTP API (CONTRACT.md), so any of them can be replaced by a
//! process in another language that keeps the contract.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use distriqueue_broker::{AmqpBroker, Broker, EventQueue};
use distriqueue_client::{CallError, OrchestratorClient, RegisterAnswer};
use distriqueue_core::request::JobSpec;
use distriqueue_core::{JobId, JobResponse, Report, RetryPolicy, WorkerHeartbeat, WorkerId};
use distriqueue_gateway::{FeedRole, Gateway, GatewayConfig, OrchestratorError, Registered};
use distriqueue_orchestrator::{Orchestrator, OrchestratorConfig};
use distriqueue_store::Store;
use distriqueue_worker::{Handlers, ReportError, Reporter, Worker, WorkerConfig};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How long the gateway keeps trying to reach an orchestrator for one request before it
/// answers 503 (a register is retried with the same id all along: it is idempotent by id).
const GATEWAY_PATIENCE: Duration = Duration::from_secs(10);

/// How long one worker call tries the orchestrators before the worker's own retry loop takes
/// over.
const WORKER_PATIENCE: Duration = Duration::from_secs(2);

/// Most reports a worker sends in one request.
const REPORT_BATCH: usize = 512;

/// Most registers a gateway sends in one request.
const REGISTER_BATCH: usize = 512;

async fn connect_amqp(url: &str, role: &str) -> anyhow::Result<Broker> {
    let broker = AmqpBroker::connect(url, role)
        .await
        .with_context(|| format!("cannot connect to RabbitMQ at {}", redact(url)))?;
    Ok(Broker::Amqp(broker))
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, rest)), Some((_, host))) => {
            let user = rest.split([':', '@']).next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_string(),
    }
}

/// Gathers concurrent calls into batches: whatever waits (up to `max`) goes to `send` at once,
/// which answers each item, in order. Used for the gateway's registers and a worker's reports,
/// so that a burst costs one HTTP request (and one log entry) instead of one per job.
struct Batcher<T, R> {
    sender: mpsc::Sender<(T, oneshot::Sender<R>)>,
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    fn start<F, Fut>(max: usize, send: F) -> Batcher<T, R>
    where
        F: Fn(Vec<T>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Vec<R>> + Send,
    {
        let (sender, mut incoming) = mpsc::channel::<(T, oneshot::Sender<R>)>(16 * 1024);
        tokio::spawn(async move {
            let mut waiting = Vec::with_capacity(max);
            while incoming.recv_many(&mut waiting, max).await > 0 {
                let (items, replies): (Vec<T>, Vec<oneshot::Sender<R>>) = waiting.drain(..).unzip();
                for (reply, answer) in replies.into_iter().zip(send(items).await) {
                    // A caller that stopped waiting does not need the answer.
                    let _ = reply.send(answer);
                }
            }
        });
        Batcher { sender }
    }

    /// Sends `item` with the next batch; `None` when the batcher stopped.
    async fn call(&self, item: T) -> Option<R> {
        let (reply, answer) = oneshot::channel();
        self.sender.send((item, reply)).await.ok()?;
        answer.await.ok()
    }
}

/// One answer per item: each item's own, or the batch's error for all of them.
fn per_item<A, E: Clone>(answers: Result<Vec<A>, E>, n: usize) -> Vec<Result<A, E>> {
    match answers {
        Ok(answers) => answers.into_iter().map(Ok).collect(),
        Err(error) => (0..n).map(|_| Err(error.clone())).collect(),
    }
}

/// Settings of `distriqueue orchestrator`.
#[derive(Debug, Clone)]
pub struct OrchestratorRole {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub amqp: String,
    pub max_queued_jobs: u64,
    pub retry_policy: RetryPolicy,
    pub heartbeat_timeout: Duration,
    pub dispatch_timeout: Duration,
    /// This node's id in the cluster.
    pub node_id: u64,
    /// The cluster's members (id to base URL), this node included; empty for one node.
    pub peers: std::collections::BTreeMap<u64, String>,
    /// Log entries between two snapshots.
    pub snapshot_every: u64,
}

/// Runs an orchestrator node until `shutdown`; prints `distriqueue orchestrator:
/// orchestrator=http://ADDR` once it serves.
pub async fn run_orchestrator(
    role: OrchestratorRole,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let broker = connect_amqp(&role.amqp, "orchestrator").await?;
    let config = OrchestratorConfig {
        max_queued: Some(role.max_queued_jobs),
        retry_policy: role.retry_policy,
        heartbeat_timeout: role.heartbeat_timeout,
        dispatch_timeout: role.dispatch_timeout,
        node_id: role.node_id,
        peers: role.peers.clone(),
        snapshot_every: role.snapshot_every,
        ..OrchestratorConfig::new(role.addr, role.data_dir.clone())
    };
    let orchestrator = Orchestrator::start(config, broker.clone()).await?;
    println!(
        "distriqueue orchestrator: orchestrator=http://{}",
        orchestrator.local_addr()
    );
    let served = orchestrator.run(shutdown).await;
    broker.close().await;
    Ok(served?)
}

/// The gateway's view of a remote orchestrator cluster; registers travel in batches.
struct RemoteOrchestrator {
    client: Arc<OrchestratorClient>,
    registers: Batcher<(JobId, JobSpec), Result<RegisterAnswer, CallError>>,
}

impl RemoteOrchestrator {
    fn new(client: OrchestratorClient) -> RemoteOrchestrator {
        let client = Arc::new(client);
        let batch_client = Arc::clone(&client);
        let registers = Batcher::start(REGISTER_BATCH, move |jobs: Vec<(JobId, JobSpec)>| {
            let client = Arc::clone(&batch_client);
            async move {
                let n = jobs.len();
                per_item(client.register_batch(&jobs).await, n)
                    .into_iter()
                    .map(|answer| answer.and_then(|answer| answer))
                    .collect()
            }
        });
        RemoteOrchestrator { client, registers }
    }
}

fn orchestrator_error(error: CallError) -> OrchestratorError {
    match error {
        CallError::Refused(refusal) => OrchestratorError::Refused(refusal),
        other => OrchestratorError::Unavailable(other.to_string()),
    }
}

#[async_trait]
impl distriqueue_gateway::Orchestrator for RemoteOrchestrator {
    async fn register(&self, id: JobId, spec: JobSpec) -> Result<Registered, OrchestratorError> {
        // Register is idempotent by id: one that could not commit (a leader change mid-batch)
        // goes again with the same id until the gateway's patience runs out, never as a new job.
        let deadline = tokio::time::Instant::now() + GATEWAY_PATIENCE;
        let answer = loop {
            let answer = self
                .registers
                .call((id, spec.clone()))
                .await
                .ok_or_else(|| OrchestratorError::Unavailable("register batcher stopped".into()))?;
            match answer {
                Err(CallError::Unavailable(reason)) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(%id, %reason, "register not committed; sending it again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => break other.map_err(orchestrator_error)?,
            }
        };
        Ok(Registered {
            job_id: answer.job_id,
            job: answer.job,
            created: answer.created,
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
}

/// Settings of `distriqueue gateway`.
#[derive(Debug, Clone)]
pub struct GatewayRole {
    pub addr: SocketAddr,
    /// `postgres://...` or `sqlite://...`.
    pub database: String,
    pub amqp: String,
    pub orchestrators: Vec<String>,
    pub max_body_bytes: usize,
}

/// Runs a gateway until `shutdown`: the read model fed by the shared `status.queue`, SSE by
/// this gateway's own queue; writes go to the orchestrators. Prints `distriqueue gateway:
/// gateway=http://ADDR` once it serves.
pub async fn run_gateway(role: GatewayRole, shutdown: CancellationToken) -> anyhow::Result<()> {
    let known = ["postgres://", "postgresql://", "sqlite:"];
    anyhow::ensure!(
        known.iter().any(|scheme| role.database.starts_with(scheme)),
        "--database {} is neither postgres://... nor sqlite://...",
        redact(&role.database)
    );
    tracing::info!(database = %redact(&role.database), "opening the read model");
    let store = Store::open(&role.database)
        .await
        .with_context(|| format!("cannot open the read model {}", redact(&role.database)))?;
    let client = OrchestratorClient::new(&role.orchestrators, GATEWAY_PATIENCE)
        .context("bad --orchestrator URL")?;
    let broker = connect_amqp(&role.amqp, "gateway").await?;
    let config = GatewayConfig {
        addr: role.addr,
        body_limit_bytes: role.max_body_bytes,
        ..GatewayConfig::default()
    };
    let gateway = Gateway::bind(config, store, Arc::new(RemoteOrchestrator::new(client))).await?;
    for (queue, feed) in [
        (EventQueue::ReadModel, FeedRole::Store),
        (EventQueue::Live, FeedRole::Live),
    ] {
        let events = broker.consume_events(queue).context("no event feed")?;
        gateway.consume_events(events, feed);
    }
    println!(
        "distriqueue gateway: gateway=http://{}",
        gateway.local_addr()
    );
    let served = gateway.run(shutdown).await;
    broker.close().await;
    Ok(served?)
}

/// A native worker's reporter: reports in batches over `POST /api/jobs/status/batch`,
/// heartbeats over `POST /api/workers/heartbeat`.
struct RemoteReporter {
    client: Arc<OrchestratorClient>,
    reports: Batcher<Report, Result<(), ReportError>>,
}

impl RemoteReporter {
    fn start(client: OrchestratorClient) -> RemoteReporter {
        let client = Arc::new(client);
        let batch_client = Arc::clone(&client);
        let reports = Batcher::start(REPORT_BATCH, move |batch: Vec<Report>| {
            let client = Arc::clone(&batch_client);
            async move {
                let n = batch.len();
                let answers = client
                    .report_batch(&batch)
                    .await
                    .map_err(|error| ReportError::Unavailable(error.to_string()));
                per_item(answers, n)
                    .into_iter()
                    .map(|answer| answer.and_then(|answer| answer.map_err(ReportError::Refused)))
                    .collect()
            }
        });
        RemoteReporter { client, reports }
    }
}

#[async_trait]
impl Reporter for RemoteReporter {
    async fn report(&self, report: Report) -> Result<(), ReportError> {
        self.reports
            .call(report)
            .await
            .unwrap_or_else(|| Err(ReportError::Unavailable("reporter stopped".into())))
    }

    async fn heartbeat(&self, heartbeat: WorkerHeartbeat) -> Result<Vec<JobId>, ReportError> {
        self.client
            .heartbeat(&heartbeat)
            .await
            .map_err(|error| match error {
                CallError::Refused(refusal) => ReportError::Refused(refusal),
                other => ReportError::Unavailable(other.to_string()),
            })
    }
}

/// Settings of `distriqueue worker`.
#[derive(Debug, Clone)]
pub struct WorkerRole {
    pub amqp: String,
    pub orchestrators: Vec<String>,
    pub worker_id: WorkerId,
    pub concurrency: usize,
    pub ledger: Option<PathBuf>,
    pub shutdown_grace: Duration,
    pub heartbeat_timeout: Duration,
}

/// Runs a native worker until `shutdown`, then stops gracefully (DESIGN.md; issue 4 item 8):
/// no new jobs, running ones finished within the grace and reported, a last heartbeat with
/// load 0; what was not started goes back to its queue. Prints `distriqueue worker:
/// worker=ID` once it consumes.
pub async fn run_worker(
    role: WorkerRole,
    handlers: Handlers,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let client = OrchestratorClient::new(&role.orchestrators, WORKER_PATIENCE)
        .context("bad --orchestrator URL")?;
    let broker = connect_amqp(&role.amqp, "worker").await?;
    let config = WorkerConfig {
        worker_id: role.worker_id.clone(),
        concurrency: role.concurrency,
        ledger: role.ledger,
        shutdown_grace: role.shutdown_grace,
        heartbeat_timeout: role.heartbeat_timeout,
    };
    let worker = Worker::new(
        config,
        handlers,
        &broker,
        Arc::new(RemoteReporter::start(client)),
    )?;
    println!("distriqueue worker: worker={}", role.worker_id);
    worker.run(shutdown).await;
    broker.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact("sqlite://./data/readmodel.db"),
            "sqlite://./data/readmodel.db"
        );
    }
}
