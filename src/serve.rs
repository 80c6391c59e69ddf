//! `distriqueue serve`: gateway, a one-node orchestrator, in-process workers, the SQLite read
//! model and the in-process broker, in one process with no external service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use distriqueue_broker::{AmqpBroker, Broker, EventQueue, InProcessBroker};
use distriqueue_core::machine::Applied;
use distriqueue_core::request::JobSpec;
use distriqueue_core::{
    Command, JobId, JobResponse, Report, RetryPolicy, WorkerHeartbeat, WorkerId,
};
use distriqueue_gateway::{FeedRole, Gateway, GatewayConfig, OrchestratorError, Registered};
use distriqueue_orchestrator::{Orchestrator, OrchestratorConfig, OrchestratorHandle, SubmitError};
use distriqueue_store::Store;
use distriqueue_worker::{Handlers, ReportError, Reporter, Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

/// Settings of `distriqueue serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub gateway_addr: SocketAddr,
    pub orchestrator_addr: SocketAddr,
    /// In-process job slots.
    pub concurrency: usize,
    /// Holds `orchestrator/` (raft log, snapshots) and `readmodel.db`.
    pub data_dir: PathBuf,
    /// How long running jobs may finish after Ctrl-C or SIGTERM.
    pub shutdown_grace: Duration,
    /// `--ledger FILE` (testing aid).
    pub ledger: Option<PathBuf>,
    /// Largest accepted request body, in bytes (413 past it).
    pub max_body_bytes: usize,
    /// Most PENDING + QUEUED jobs (429 past it).
    pub max_queued_jobs: u64,
    /// How failed attempts are retried.
    pub retry_policy: RetryPolicy,
    /// A worker silent for longer than this is declared lost.
    pub heartbeat_timeout: Duration,
    /// `--amqp URL`: carry jobs, cancels and events over RabbitMQ instead of in process, so
    /// outside workers can join.
    pub amqp: Option<String>,
}

impl ServeConfig {
    /// The defaults of `distriqueue serve` (gateway 127.0.0.1:8082, orchestrator 127.0.0.1:8081,
    /// 4 job slots per CPU, 30 s grace, 1 MiB bodies, 100,000 waiting jobs, default retries),
    /// keeping data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> ServeConfig {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        ServeConfig {
            gateway_addr: SocketAddr::from(([127, 0, 0, 1], 8082)),
            orchestrator_addr: SocketAddr::from(([127, 0, 0, 1], 8081)),
            concurrency: 4 * cpus,
            data_dir: data_dir.into(),
            shutdown_grace: Duration::from_secs(30),
            ledger: None,
            max_body_bytes: 1024 * 1024,
            max_queued_jobs: 100_000,
            retry_policy: RetryPolicy::default(),
            heartbeat_timeout: Duration::from_secs(30),
            amqp: None,
        }
    }
}

/// The gateway's view of the in-process orchestrator.
struct LocalOrchestrator(OrchestratorHandle);

fn unavailable(error: SubmitError) -> OrchestratorError {
    OrchestratorError::Unavailable(error.to_string())
}

#[async_trait]
impl distriqueue_gateway::Orchestrator for LocalOrchestrator {
    async fn register(&self, id: JobId, spec: JobSpec) -> Result<Registered, OrchestratorError> {
        let Applied {
            job,
            created,
            job_id,
        } = self.0.register(id, spec).await.map_err(unavailable)??;
        Ok(Registered {
            job_id: job_id.unwrap_or(id),
            job: job.map(|job| *job),
            created,
        })
    }

    async fn cancel(&self, id: JobId) -> Result<JobResponse, OrchestratorError> {
        let Applied { job, .. } = self
            .0
            .submit(Command::Cancel { id })
            .await
            .map_err(unavailable)??;
        job.map(|job| *job)
            .ok_or_else(|| OrchestratorError::Unavailable("cancel answered no snapshot".into()))
    }

    async fn live_snapshots(&self) -> Result<Vec<JobResponse>, OrchestratorError> {
        Ok(self.0.live_snapshots())
    }

    async fn retry(&self, stored: &JobResponse) -> Result<JobResponse, OrchestratorError> {
        let Applied { job, .. } = self.0.retry(stored).await.map_err(unavailable)??;
        job.map(|job| *job)
            .ok_or_else(|| OrchestratorError::Unavailable("retry answered no snapshot".into()))
    }
}

/// The worker's view of the in-process orchestrator.
struct LocalReporter(OrchestratorHandle);

#[async_trait]
impl Reporter for LocalReporter {
    async fn report(&self, report: Report) -> Result<(), ReportError> {
        match self.0.submit(Command::Report(report)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(refusal)) => Err(ReportError::Refused(refusal)),
            Err(error) => Err(ReportError::Unavailable(error.to_string())),
        }
    }

    async fn heartbeat(&self, heartbeat: WorkerHeartbeat) -> Result<Vec<JobId>, ReportError> {
        self.0
            .heartbeat(heartbeat)
            .await
            .map_err(|error| ReportError::Unavailable(error.to_string()))
    }
}

/// A started `serve`: its bound addresses, and a task that ends when it has stopped.
pub struct Served {
    pub gateway_addr: SocketAddr,
    pub orchestrator_addr: SocketAddr,
    pub stopped: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Starts every role; returns once both HTTP APIs listen. Cancelling `shutdown` stops accepting,
/// lets running jobs finish within the grace, then stops the orchestrator.
///
/// Errors: the data directory, the read model or a listener cannot be opened.
pub async fn start(
    config: ServeConfig,
    handlers: Handlers,
    shutdown: CancellationToken,
) -> anyhow::Result<Served> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let broker = match &config.amqp {
        Some(url) => Broker::Amqp(
            AmqpBroker::connect(url, "serve")
                .await
                .with_context(|| format!("cannot connect to RabbitMQ at {url}"))?,
        ),
        None => Broker::InProcess(InProcessBroker::new()),
    };
    let orchestrator_config = OrchestratorConfig {
        max_queued: Some(config.max_queued_jobs),
        retry_policy: config.retry_policy,
        heartbeat_timeout: config.heartbeat_timeout,
        ..OrchestratorConfig::new(
            config.orchestrator_addr,
            config.data_dir.join("orchestrator"),
        )
    };
    let orchestrator = Orchestrator::start(orchestrator_config, broker.clone()).await?;
    let handle = orchestrator.handle();
    release_previous_leases(&handle).await?;

    let database = format!(
        "sqlite://{}",
        config.data_dir.join("readmodel.db").display()
    );
    let store = Store::open(&database)
        .await
        .context("cannot open the read model")?;
    let gateway_config = GatewayConfig {
        addr: config.gateway_addr,
        body_limit_bytes: config.max_body_bytes,
        ..GatewayConfig::default()
    };
    let gateway = Gateway::bind(
        gateway_config,
        store,
        Arc::new(LocalOrchestrator(handle.clone())),
    )
    .await?;
    if broker.confirms_events() {
        // RabbitMQ: the shared queue feeds the read model, a private one feeds SSE; the
        // orchestrator moves its watermark on RabbitMQ's confirms.
        for (queue, role) in [
            (EventQueue::ReadModel, FeedRole::Store),
            (EventQueue::Live, FeedRole::Live),
        ] {
            let events = broker.consume_events(queue).context("no event feed")?;
            gateway.consume_events(events, role);
        }
    } else {
        let events = broker
            .consume_events(EventQueue::ReadModel)
            .context("the event feed was already taken")?;
        let stored_upto = gateway.consume_events(events, FeedRole::Store);
        tokio::spawn(distriqueue_orchestrator::commit_watermark(
            handle.clone(),
            stored_upto,
        ));
    }

    let worker_id = WorkerId(format!(
        "serve-{}-{}",
        std::process::id(),
        &JobId::new_random().to_string()[..8]
    ));
    let worker_config = WorkerConfig {
        worker_id,
        concurrency: config.concurrency,
        ledger: config.ledger.clone(),
        shutdown_grace: config.shutdown_grace,
        heartbeat_timeout: config.heartbeat_timeout,
    };
    let worker = Worker::new(
        worker_config,
        handlers,
        &broker,
        Arc::new(LocalReporter(handle)),
    )?;

    let gateway_addr = gateway.local_addr();
    let orchestrator_addr = orchestrator.local_addr();
    let orchestrator_shutdown = CancellationToken::new();
    let orchestrator_task = tokio::spawn(orchestrator.run(orchestrator_shutdown.clone()));
    let gateway_task = tokio::spawn(gateway.run(shutdown.clone()));
    let worker_task = tokio::spawn(worker.run(shutdown.clone()));
    let stopped = tokio::spawn(async move {
        // Workers first (they still need the orchestrator to report), then the orchestrator.
        let worker_result = worker_task.await;
        let gateway_result = gateway_task.await;
        orchestrator_shutdown.cancel();
        let orchestrator_result = orchestrator_task.await;
        broker.close().await;
        worker_result.context("worker task")?;
        gateway_result.context("gateway task")??;
        orchestrator_result.context("orchestrator task")??;
        Ok(())
    });
    Ok(Served {
        gateway_addr,
        orchestrator_addr,
        stopped,
    })
}

/// In `serve` every worker lives in this process, so a lease held by a worker of an earlier run
/// belongs to a worker that is gone: its attempt is dispatched again as a new attempt.
async fn release_previous_leases(handle: &OrchestratorHandle) -> anyhow::Result<()> {
    let holders = handle.read(|state| state.lease_holders());
    for worker_id in holders {
        tracing::info!(%worker_id, "worker of an earlier run is gone; dispatching its jobs again");
        handle
            .submit(Command::WorkerLost {
                worker_id: worker_id.clone(),
            })
            .await?
            .map_err(anyhow::Error::from)?;
        handle.forget_worker(&worker_id);
    }
    Ok(())
}
