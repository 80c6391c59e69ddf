//! The gateway role: the public REST API, SSE, and the read model fed by lifecycle events.
//!
//! The gateway validates requests, mints job ids, asks the orchestrator (through the
//! [`Orchestrator`] trait, never its crate) to commit each write, and applies the snapshot of
//! every reply to the read model before it answers, so a client reads its own writes. Lifecycle
//! events feed the read model and SSE subscribers ([`Gateway::consume_events`]).
//!
//! Modules: `api` (routes), `batch` (batch submission), `docs` (OpenAPI and Swagger UI),
//! `error` ([`ApiError`]), `body` (JSON bodies), `query` (list
//! parameters), `metrics` (its Prometheus metrics), `sse` (the event stream), `feed` (the event consumer), `state` ([`AppState`]).

mod api;
mod batch;
mod body;
mod dashboard;
mod docs;
mod error;
mod feed;
pub mod metrics;
mod query;
mod retention;
mod sse;
mod state;
mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use distriqueue_broker::EventReceiver;
use distriqueue_core::request::JobSpec;
use distriqueue_core::{JobId, JobResponse, Refusal};
use distriqueue_store::Store;
use distriqueue_util::auth::ApiKeys;
use distriqueue_util::metrics::PrometheusText;
use distriqueue_util::serve::{ServerLimits, ServerTls};
use distriqueue_util::AbortOnDrop;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use api::{access, router};
pub use docs::openapi;
pub use error::ApiError;
pub use feed::{FeedRole, FEED_BATCH};
pub use query::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
pub use sse::SSE_BUFFER;
pub use state::AppState;

/// The orchestrator as the gateway needs it; the composition root plugs in an in-process or
/// HTTP implementation (the gateway never depends on the orchestrator crate).
#[async_trait::async_trait]
pub trait Orchestrator: Send + Sync + 'static {
    /// Commits `Register` for a gateway-minted id (answers for a repeated idempotency key too).
    async fn register(&self, id: JobId, spec: JobSpec) -> Result<Registered, OrchestratorError>;

    /// Commits `Register` for every job of a batch together, in one log entry; one answer per
    /// job, in order (a job past the admission cap is refused alone).
    async fn register_batch(
        &self,
        jobs: Vec<(JobId, JobSpec)>,
    ) -> Result<RegisteredBatch, OrchestratorError>;

    /// Commits `Cancel`; `Ok` = the CANCELLED snapshot.
    async fn cancel(&self, id: JobId) -> Result<JobResponse, OrchestratorError>;

    /// Commits `Retry` for a FAILED, TIMEOUT or CANCELLED job, given what the read model holds of
    /// it; `Ok` = the snapshot of its new attempt (QUEUED).
    async fn retry(&self, stored: &JobResponse) -> Result<JobResponse, OrchestratorError>;

    /// The committed snapshot of every live (non-terminal) job, for reconciling the read model
    /// (DESIGN.md "Delivery", rule 6).
    async fn live_snapshots(&self) -> Result<Vec<JobResponse>, OrchestratorError>;

    /// Each orchestrator node's `GET /api/cluster/status` (its Raft state and, on the leader,
    /// the workers heartbeating to it), or why it did not answer within a few seconds, in the
    /// order of the configured URLs (one node in process): the dashboard's cluster and workers
    /// views (issue 12).
    async fn cluster_status(&self) -> Vec<NodeAnswer>;
}

/// One orchestrator node's answer to [`Orchestrator::cluster_status`].
#[derive(Debug, Clone)]
pub struct NodeAnswer {
    /// The URL the gateway reaches the node at.
    pub url: String,
    /// The node's status, or why it did not answer.
    pub status: Result<distriqueue_core::api::ClusterStatus, String>,
}

/// The answer to a register.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    /// The job's id: the minted one, or the first job's for a repeated idempotency key.
    pub job_id: JobId,
    /// The committed snapshot, when the orchestrator still holds the job in full; `None` for a
    /// finished job (answer from the read model).
    pub job: Option<JobResponse>,
    /// False when nothing was created (a repeat).
    pub created: bool,
}

/// The answer to a batch register.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredBatch {
    /// Each job's answer, in the batch's order.
    pub results: Vec<Result<Registered, Refusal>>,
    /// The Raft log index of the entry that committed them.
    pub log_index: Option<u64>,
}

/// Why the orchestrator did not commit a command.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// The state machine refused the command (unknown job, terminal job, full queue, ...).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// No orchestrator answered (no leader, connection refused, timeout): 503.
    #[error("no orchestrator could commit the command")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The gateway's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Where to listen; port 0 picks a free port.
    pub addr: SocketAddr,
    /// Largest accepted request body; larger ones get 413. Default 1 MiB.
    pub body_limit_bytes: usize,
    /// Most jobs in one `POST /api/jobs/batch` (CONTRACT.md: 1000). Default 1000.
    pub max_batch_jobs: usize,
    /// Largest accepted body of `POST /api/jobs/batch`. Default 16 MiB.
    pub batch_body_limit_bytes: usize,
    /// Interval of SSE keep-alive comments. Default 15 s.
    pub sse_keep_alive: Duration,
    /// How often the read model is reconciled with the orchestrator's live snapshots (also
    /// once at start). Default 60 s.
    pub reconcile_every: Duration,
    /// How long finished jobs stay in the read model after they ended (`--retention`); older
    /// ones leave it in batches ([`retention::run`]). `None`: kept for ever. Default 30 days.
    pub retention: Option<Duration>,
    /// The process's Prometheus registry, served at `GET /api/actuator/prometheus`
    /// (docs/metrics.md). `None` (the default): no metrics, and that route answers 404.
    pub prometheus: Option<PrometheusText>,
    /// The API keys every route but health asks for (SECURITY.md); none (the default): every
    /// request is let through.
    pub api_keys: ApiKeys,
    /// Serve over TLS (`--tls-cert`, `--tls-key`); `None` (the default): plain HTTP.
    pub tls: Option<ServerTls>,
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        GatewayConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8082)),
            body_limit_bytes: 1024 * 1024,
            max_batch_jobs: 1000,
            batch_body_limit_bytes: 16 * 1024 * 1024,
            sse_keep_alive: Duration::from_secs(15),
            reconcile_every: Duration::from_secs(60),
            retention: Some(Duration::from_secs(30 * 86_400)),
            prometheus: None,
            api_keys: ApiKeys::default(),
            tls: None,
        }
    }
}

/// Why the gateway could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("gateway server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// The gateway role, bound and ready to serve.
pub struct Gateway {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: AppState,
}

impl Gateway {
    /// Binds the listener (port 0 picks a free port).
    pub async fn bind(
        config: GatewayConfig,
        store: Store,
        orchestrator: Arc<dyn Orchestrator>,
    ) -> Result<Gateway, GatewayError> {
        let addr = config.addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| GatewayError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| GatewayError::Bind { addr, source })?;
        Ok(Gateway {
            listener,
            local_addr,
            state: AppState::new(store, orchestrator, config),
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The shared state the routes use (a cheap clone).
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Spawns the task that feeds the read model and SSE from lifecycle events: it takes
    /// batches of up to [`FEED_BATCH`] events and, by `role`, upserts their snapshots in one
    /// store call (retrying with backoff on a store error, never dropping a batch) and then
    /// acknowledges them to the transport, and sends each event to SSE subscribers. It
    /// publishes the highest `seq` handled on the returned watch (in `serve`, the composition
    /// root turns it into the orchestrator's "published up to" watermark). The task ends when
    /// the receiver ends. Must be called within a Tokio runtime.
    pub fn consume_events(
        &self,
        events: EventReceiver,
        role: FeedRole,
    ) -> tokio::sync::watch::Receiver<u64> {
        self.state.consume_events(events, role)
    }

    /// Serves until `shutdown` is cancelled (axum graceful shutdown: the listener stops
    /// accepting, open SSE streams end, in-flight requests finish). Meanwhile it reconciles the
    /// read model with the orchestrator's live snapshots at start and every
    /// `reconcile_every`: a snapshot newer than the stored one is applied, so a lost event
    /// (a purged queue, say) cannot leave a live job behind for good. (Finished jobs are held
    /// by the orchestrator only as tombstones without a snapshot: a lost terminal event is not
    /// repaired this way.)
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), GatewayError> {
        let reconciler = tokio::spawn(feed::reconcile(self.state.clone()));
        let _stop_reconciling = AbortOnDrop(reconciler);
        let _stop_retention = self.state.config.retention.map(|window| {
            AbortOnDrop(tokio::spawn(retention::run(
                self.state.store.clone(),
                window,
            )))
        });
        let streams_closed = self.state.streams_closed();
        let limits = ServerLimits {
            check_host_on_loopback: self.state.config.api_keys.is_empty(),
            ..ServerLimits::default()
        };
        let tls = self.state.config.tls.clone();
        let app = router(self.state);
        tracing::info!(addr = %self.local_addr, "gateway listening");
        let stop = async move {
            shutdown.cancelled().await;
            streams_closed.cancel();
        };
        distriqueue_util::serve::serve(self.listener, app, limits, tls, stop)
            .await
            .map_err(GatewayError::Serve)
    }
}
