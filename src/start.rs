//! The composition root: [`start`] starts the roles a [`Config`] enables (any set of gateway,
//! orchestrator and worker) in this process, and for a role that runs elsewhere builds its
//! client. Roles in one process meet in process (an [`OrchestratorHandle`] behind the traits the
//! gateway and the worker define); across processes they meet at RabbitMQ and the
//! orchestrator's HTTP API (`adapters`). `serve` enables all three, `gateway`, `orchestrator`
//! and `worker` one each, `run --roles` any set; tests start any set through here on port 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use distriqueue_broker::{AmqpBroker, Broker, EventQueue, InProcessBroker};
use distriqueue_client::OrchestratorClient;
use distriqueue_core::{Command, WorkerId};
use distriqueue_gateway::{FeedRole, Gateway, GatewayConfig};
use distriqueue_orchestrator::{Orchestrator, OrchestratorHandle};
use distriqueue_store::Store;
use distriqueue_util::auth::{self, Access, ApiKeys};
use distriqueue_util::clock;
use distriqueue_worker::{Handlers, Reporter, Worker, WorkerConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::adapters::{Local, Remote, GATEWAY_PATIENCE, WORKER_PATIENCE};
use crate::config::{redact_url, Config, Role};

/// Roles started by [`start`]: where they listen, and a task that ends when all have stopped.
#[derive(Debug)]
pub struct Started {
    /// The gateway's bound address, when this process runs the gateway.
    pub gateway_addr: Option<SocketAddr>,
    /// The orchestrator's bound address, when this process runs the orchestrator.
    pub orchestrator_addr: Option<SocketAddr>,
    /// The worker's id, when this process runs a worker.
    pub worker_id: Option<WorkerId>,
    /// The worker's metrics server's bound address, when it serves one (`worker.metrics_addr`).
    pub metrics_addr: Option<SocketAddr>,
    /// The gateway and the orchestrator API serve over TLS (`https://`).
    pub tls: bool,
    /// Ends once every role stopped (after the `shutdown` given to [`start`]); `Err` carries
    /// the first role's failure.
    pub stopped: JoinHandle<anyhow::Result<()>>,
}

impl Started {
    /// The line a process prints once it serves (`gateway=http://ADDR
    /// orchestrator=http://ADDR worker=ID metrics=http://ADDR`, for what it runs; `https://`
    /// with TLS): tests and scripts wait for
    /// it and read the addresses from it.
    pub fn ready_line(&self) -> String {
        let mut parts = Vec::new();
        let scheme = if self.tls { "https" } else { "http" };
        if let Some(addr) = self.gateway_addr {
            parts.push(format!("gateway={scheme}://{addr}"));
        }
        if let Some(addr) = self.orchestrator_addr {
            parts.push(format!("orchestrator={scheme}://{addr}"));
        }
        if let Some(worker_id) = &self.worker_id {
            parts.push(format!("worker={worker_id}"));
        }
        if let Some(addr) = self.metrics_addr {
            parts.push(format!("metrics=http://{addr}"));
        }
        parts.join(" ")
    }
}

/// Starts every role `config` enables, with `handlers` for the worker; returns once the HTTP
/// APIs listen. Cancelling `shutdown` stops them in order: the gateway stops accepting and the
/// worker finishes its running jobs within the grace (it still reports them), then the
/// orchestrator stops, then the broker closes. When one role cannot start, those already
/// started are stopped before the error returns.
///
/// Errors: the data directory, the read model, RabbitMQ or a listener cannot be opened, or a
/// URL of the configuration is unusable.
pub async fn start(
    config: &Config,
    handlers: Handlers,
    shutdown: CancellationToken,
) -> anyhow::Result<Started> {
    let api_keys = config.api_keys()?;
    check_exposure(config, &api_keys, &shutdown)?;
    let connection_name = config
        .roles
        .iter()
        .map(|role| role.name())
        .collect::<Vec<_>>()
        .join("+");
    let broker = match config.amqp_url() {
        Some(url) => Broker::Amqp(
            AmqpBroker::connect(&url, &connection_name, &config.client.ca_certificates()?)
                .await
                .with_context(|| format!("cannot connect to RabbitMQ at {}", redact_url(&url)))?,
        ),
        None => Broker::InProcess(InProcessBroker::new()),
    };
    let mut tasks = RoleTasks::default();
    match start_roles(config, &api_keys, handlers, &shutdown, &broker, &mut tasks).await {
        Ok(addresses) => Ok(Started {
            gateway_addr: addresses.gateway,
            orchestrator_addr: addresses.orchestrator,
            worker_id: addresses.worker_id,
            metrics_addr: addresses.metrics,
            tls: config.security.tls_cert.is_some(),
            stopped: tokio::spawn(tasks.wait(broker, shutdown)),
        }),
        Err(error) => {
            tasks.abandon().await;
            broker.close().await;
            Err(error)
        }
    }
}

/// What [`start_roles`] started.
struct Addresses {
    gateway: Option<SocketAddr>,
    orchestrator: Option<SocketAddr>,
    worker_id: Option<WorkerId>,
    /// The worker's metrics server.
    metrics: Option<SocketAddr>,
}

/// Starts the roles into `tasks`: the orchestrator first (its API and the Raft RPCs serve at
/// once), then the gateway and the worker, which are built before either runs.
async fn start_roles(
    config: &Config,
    api_keys: &ApiKeys,
    handlers: Handlers,
    shutdown: &CancellationToken,
    broker: &Broker,
    tasks: &mut RoleTasks,
) -> anyhow::Result<Addresses> {
    let prometheus = crate::metrics::registry()?;
    let mut orchestrator_addr = None;
    let mut handle = None;
    if config.runs(Role::Orchestrator) {
        let mut orchestrator_config = config.orchestrator_config();
        orchestrator_config.prometheus = Some(prometheus.clone());
        orchestrator_config.api_keys = api_keys.clone();
        orchestrator_config.tls = config.server_tls()?;
        orchestrator_config.tls_roots = config.client.root_certificate()?.into_iter().collect();
        if config.data_dir.join("raft-log.redb").exists() {
            // `orchestrator --data-dir DIR` used to keep its log in DIR itself.
            tracing::warn!(
                data_dir = %config.data_dir.display(),
                "the Raft log is in the data directory itself (the layout of earlier versions): \
                 using it there; move it into <data_dir>/orchestrator to silence this"
            );
            orchestrator_config.data_dir = config.data_dir.clone();
        }
        let orchestrator = Orchestrator::start(orchestrator_config, broker.clone())
            .await
            .context("cannot start the orchestrator")?;
        orchestrator_addr = Some(orchestrator.local_addr());
        let local = orchestrator.handle();
        let orchestrator_shutdown = CancellationToken::new();
        tasks.orchestrator = Some((
            tokio::spawn(orchestrator.run(orchestrator_shutdown.clone())),
            orchestrator_shutdown,
        ));
        if config.runs(Role::Worker) && config.orchestrator.peers.is_empty() {
            release_previous_leases(&local).await?;
        }
        handle = Some(local);
    }
    let gateway = match config.runs(Role::Gateway) {
        true => {
            let mut gateway_config = config.gateway_config();
            gateway_config.prometheus = Some(prometheus.clone());
            gateway_config.api_keys = api_keys.clone();
            gateway_config.tls = config.server_tls()?;
            Some(start_gateway(config, gateway_config, broker, handle.clone()).await?)
        }
        false => None,
    };
    let worker = match config.runs(Role::Worker) {
        true => {
            let reporter: Arc<dyn Reporter> = match &handle {
                Some(handle) => Arc::new(Local(handle.clone())),
                None => Arc::new(Remote::new(orchestrator_client(config, WORKER_PATIENCE)?)),
            };
            let worker_config = worker_config(config, handle.is_some());
            Some(Worker::new(worker_config, handlers, broker, reporter)?)
        }
        false => None,
    };
    let gateway_addr = gateway.map(|gateway| {
        let addr = gateway.local_addr();
        tasks.gateway = Some(tokio::spawn(gateway.run(shutdown.clone())));
        addr
    });
    let metrics = match (&worker, config.worker.metrics_addr) {
        (Some(_), Some(addr)) => {
            let guard = auth::Guard {
                keys: api_keys.clone(),
                access: |_, _| Access::Read,
            };
            let (bound, task) =
                crate::metrics::serve_worker_metrics(addr, prometheus, guard, shutdown.clone())
                    .await?;
            tasks.metrics = Some(task);
            Some(bound)
        }
        _ => None,
    };
    let worker_id = worker.map(|worker| {
        let worker_id = worker.id().clone();
        tasks.worker = Some(tokio::spawn(worker.run(shutdown.clone())));
        worker_id
    });
    Ok(Addresses {
        gateway: gateway_addr,
        orchestrator: orchestrator_addr,
        worker_id,
        metrics,
    })
}

/// The running roles' tasks.
#[derive(Default)]
struct RoleTasks {
    gateway: Option<JoinHandle<Result<(), distriqueue_gateway::GatewayError>>>,
    worker: Option<JoinHandle<()>>,
    /// The worker's metrics server.
    metrics: Option<JoinHandle<std::io::Result<()>>>,
    orchestrator: Option<(
        JoinHandle<Result<(), distriqueue_orchestrator::OrchestratorError>>,
        CancellationToken,
    )>,
}

impl RoleTasks {
    /// Waits for the worker and the gateway (the worker still needs the orchestrator to report
    /// its last jobs), then stops the orchestrator (alone, once `shutdown` is cancelled or its
    /// server fails), then closes the broker.
    async fn wait(self, broker: Broker, shutdown: CancellationToken) -> anyhow::Result<()> {
        let orchestrator_alone = self.worker.is_none() && self.gateway.is_none();
        let worker = match self.worker {
            Some(task) => task.await.context("worker task"),
            None => Ok(()),
        };
        let metrics = match self.metrics {
            Some(task) => task
                .await
                .context("worker metrics task")
                .and_then(|served| served.context("worker metrics server")),
            None => Ok(()),
        };
        let gateway = match self.gateway {
            Some(task) => task
                .await
                .context("gateway task")
                .and_then(|served| served.context("gateway")),
            None => Ok(()),
        };
        let orchestrator = match self.orchestrator {
            Some((mut task, orchestrator_shutdown)) => {
                let ended_early = match orchestrator_alone {
                    true => tokio::select! {
                        joined = &mut task => Some(joined),
                        () = shutdown.cancelled() => None,
                    },
                    false => None,
                };
                orchestrator_shutdown.cancel();
                let joined = match ended_early {
                    Some(joined) => joined,
                    None => task.await,
                };
                joined
                    .context("orchestrator task")
                    .and_then(|served| served.context("orchestrator"))
            }
            None => Ok(()),
        };
        broker.close().await;
        worker.and(metrics).and(gateway).and(orchestrator)
    }

    /// Stops whatever started when a later role could not.
    async fn abandon(self) {
        if let Some(task) = self.gateway {
            task.abort();
        }
        if let Some(task) = self.worker {
            task.abort();
        }
        if let Some(task) = self.metrics {
            task.abort();
        }
        if let Some((task, orchestrator_shutdown)) = self.orchestrator {
            orchestrator_shutdown.cancel();
            let _ = task.await;
        }
    }
}

/// Opens the read model and binds the gateway over the local orchestrator (`handle`) or the
/// remote ones, and starts its event feeds: in process, one that stores and turns what it
/// stored into the orchestrator's watermark; with RabbitMQ, the shared `status.queue` for the
/// read model and a private queue for SSE.
async fn start_gateway(
    config: &Config,
    gateway_config: GatewayConfig,
    broker: &Broker,
    handle: Option<OrchestratorHandle>,
) -> anyhow::Result<Gateway> {
    let database = config.database_url();
    tracing::info!(database = %redact_url(&database), "opening the read model");
    if let Some(parent) = database
        .strip_prefix("sqlite://")
        .and_then(|path| std::path::Path::new(path).parent())
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create data directory {}", parent.display()))?;
    }
    let store = Store::open(&database)
        .await
        .with_context(|| format!("cannot open the read model {}", redact_url(&database)))?;
    let orchestrator: Arc<dyn distriqueue_gateway::Orchestrator> = match &handle {
        Some(handle) => Arc::new(Local(handle.clone())),
        None => Arc::new(Remote::new(orchestrator_client(config, GATEWAY_PATIENCE)?)),
    };
    let gateway = Gateway::bind(gateway_config, store, orchestrator).await?;
    match (broker.confirms_events(), handle) {
        (false, Some(handle)) => {
            let events = broker
                .consume_events(EventQueue::ReadModel)
                .context("the event feed was already taken")?;
            let stored_upto = gateway.consume_events(events, FeedRole::Store);
            tokio::spawn(distriqueue_orchestrator::commit_watermark(
                handle,
                stored_upto,
            ));
        }
        _ => {
            // RabbitMQ: the shared queue feeds the read model, a private one feeds SSE; the
            // orchestrator moves its watermark on RabbitMQ's confirms.
            for (queue, feed) in [
                (EventQueue::ReadModel, FeedRole::Store),
                (EventQueue::Live, FeedRole::Live),
            ] {
                let events = broker.consume_events(queue).context("no event feed")?;
                gateway.consume_events(events, feed);
            }
        }
    }
    Ok(gateway)
}

/// Refuses a server of this process on an address other than loopback when no API key is
/// configured (SECURITY.md: safe by default), unless `security.allow_unauthenticated`, which
/// is then logged as a warning every minute until `shutdown`.
///
/// Errors: a non-loopback address without keys, said with how to add keys.
fn check_exposure(
    config: &Config,
    api_keys: &ApiKeys,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    if !api_keys.is_empty() {
        return Ok(());
    }
    let mut servers = Vec::new();
    if config.runs(Role::Gateway) {
        servers.push(("gateway", config.gateway.addr));
    }
    if config.runs(Role::Orchestrator) {
        servers.push(("orchestrator", config.orchestrator.addr));
    }
    if let (true, Some(addr)) = (config.runs(Role::Worker), config.worker.metrics_addr) {
        servers.push(("worker metrics", addr));
    }
    let exposed: Vec<String> = servers
        .into_iter()
        .filter(|(_, addr)| !addr.ip().is_loopback())
        .map(|(name, addr)| format!("the {name} on {addr}"))
        .collect();
    if exposed.is_empty() {
        return Ok(());
    }
    let exposed = exposed.join(" and ");
    anyhow::ensure!(
        config.security.allow_unauthenticated,
        "refusing to serve {exposed} without API keys: anyone who reaches it could submit, \
         cancel and forge jobs. Add keys (--api-keys KEY:client,KEY:worker,KEY:admin or \
         DQ_API_KEYS; see SECURITY.md), listen on 127.0.0.1, or pass --allow-unauthenticated"
    );
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut every_minute = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = every_minute.tick() => tracing::warn!(
                    "serving {exposed} without API keys (--allow-unauthenticated): anyone who \
                     reaches it may do anything"
                ),
                () = shutdown.cancelled() => return,
            }
        }
    });
    Ok(())
}

/// A client of `client.orchestrator` trying each URL for up to `patience` per call, with
/// `client.api_key` and `client.ca_cert`.
fn orchestrator_client(config: &Config, patience: Duration) -> anyhow::Result<OrchestratorClient> {
    let mut client = OrchestratorClient::new(&config.client.orchestrator, patience)
        .context("bad client.orchestrator URL")?;
    if let Some(root) = config.client.root_certificate()? {
        client = client.with_root_certificate(&root)?;
    }
    Ok(match &config.client.api_key {
        Some(key) => client.with_api_key(key),
        None => client,
    })
}

/// The worker's settings. Its id is `worker.worker_id`, else, beside an orchestrator in this
/// process, a fresh one per start (`serve-<pid>-<random>`: the leases of an earlier run are
/// released at start), else `worker-<host>-<pid>` (a restart under the same id is recognized by
/// its new instance).
fn worker_config(config: &Config, orchestrator_here: bool) -> WorkerConfig {
    let worker_id = config.worker.worker_id.clone().unwrap_or_else(|| {
        if orchestrator_here {
            format!("serve-{}-{}", std::process::id(), clock::random_suffix())
        } else {
            let host = std::env::var("HOSTNAME")
                .ok()
                .filter(|host| !host.trim().is_empty())
                .unwrap_or_else(|| "local".into());
            format!("worker-{host}-{}", std::process::id())
        }
    });
    WorkerConfig {
        worker_id: WorkerId(worker_id),
        concurrency: config.concurrency(),
        ledger: config.worker.ledger.clone(),
        shutdown_grace: Duration::from_secs(config.worker.shutdown_grace),
        heartbeat_timeout: config.heartbeat_timeout(),
    }
}

/// With its only workers in this process (a one-node orchestrator and a worker here), a lease
/// held by a worker of an earlier run belongs to a worker that is gone: its attempt is
/// dispatched again as a new attempt.
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
        distriqueue_orchestrator::metrics::worker_lost();
        handle.forget_worker(&worker_id);
    }
    Ok(())
}
