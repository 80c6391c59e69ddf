//! The orchestrator node: opens the log and state machine, starts openraft, and runs the
//! proposer (commands in, batched log entries out) and the outbox (effects after commit).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use distriqueue_broker::{Broker, BrokerError};
use distriqueue_core::machine::{JobRecord, MachineConfig};
use distriqueue_core::request::JobSpec;
use distriqueue_core::time::parse_client_time;
use distriqueue_core::{
    Batch, Command, ControlMessage, Effect, JobId, JobResponse, JobStatus, Millis, Outcome,
    RetryPolicy, State, Timer, WorkerHeartbeat, WorkerId,
};
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::log_store::LogStore;
use crate::network::HttpNetwork;
use crate::raft::{NodeId, TypeConfig};
use crate::state_machine::StateMachineStore;
use crate::workers::Registry;

/// Settings of one orchestrator node.
#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    /// Where the HTTP API listens; port 0 picks a free port.
    pub addr: SocketAddr,
    /// Holds `raft-log.redb` and `snapshot.json`.
    pub data_dir: PathBuf,
    /// This node's id in the Raft cluster.
    pub node_id: NodeId,
    /// The admission cap on PENDING + QUEUED jobs; `None` for no cap.
    pub max_queued: Option<u64>,
    /// How failed attempts are retried (stamped into each job at registration).
    pub retry_policy: RetryPolicy,
    /// A worker silent for longer than this is declared lost (its running attempts fail and
    /// are retried by policy).
    pub heartbeat_timeout: Duration,
    /// Most commands in one log entry.
    pub max_batch: usize,
    /// Log entries between two snapshots.
    pub snapshot_every: u64,
    /// A QUEUED attempt not started this long after its publish is published again (the
    /// lease fences the copies; DESIGN.md "Delivery", rule 2).
    pub dispatch_timeout: Duration,
    /// The cluster's members, node id to base URL (`http://127.0.0.1:8081`), this node
    /// included. Empty: a one-node cluster at this node's own address.
    pub peers: BTreeMap<NodeId, String>,
}

impl OrchestratorConfig {
    /// Defaults for a node at `addr` keeping its data in `data_dir`.
    pub fn new(addr: SocketAddr, data_dir: PathBuf) -> OrchestratorConfig {
        OrchestratorConfig {
            addr,
            data_dir,
            node_id: 1,
            max_queued: Some(100_000),
            retry_policy: RetryPolicy::default(),
            heartbeat_timeout: Duration::from_secs(30),
            max_batch: 1024,
            snapshot_every: 20_000,
            dispatch_timeout: Duration::from_secs(60),
            peers: BTreeMap::new(),
        }
    }
}

/// Why the orchestrator could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the raft log {path}: {source} (is another distriqueue using this data directory?)")]
    LogStore {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("raft: {0}")]
    Raft(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("http server: {0}")]
    Serve(std::io::Error),
}

/// Why a command got no outcome.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    /// The node is shutting down, is not the leader, or raft failed; the command may or may not
    /// have been committed only in the `Raft` case after a timeout (never here: the proposer
    /// answers after commit or failure).
    #[error("orchestrator unavailable: {0}")]
    Unavailable(String),
}

type Proposal = (Command, oneshot::Sender<Result<Outcome, SubmitError>>);

/// A cheap handle to submit commands to the node and read its state.
#[derive(Clone)]
pub struct OrchestratorHandle {
    proposals: mpsc::Sender<Proposal>,
    state_machine: StateMachineStore,
    raft: Raft<TypeConfig>,
    node_id: NodeId,
    max_queued: Option<u64>,
    retry_policy: RetryPolicy,
    workers: Arc<Registry>,
    /// The term of this node's running leader duties, `None` while it does not lead.
    leading: watch::Receiver<Option<u64>>,
    /// Forwards writes to the leader (see `api.rs`).
    pub(crate) http: reqwest::Client,
}

impl OrchestratorHandle {
    /// True while this node leads and runs the leader's duties (outbox, timers, heartbeat
    /// table): it takes writes itself.
    pub fn is_live_leader(&self) -> bool {
        self.leading.borrow().is_some()
    }

    /// True when a majority of the voters confirms, within the election timeout's upper bound,
    /// that this node still leads (openraft's `ensure_linearizable`: one heartbeat round).
    async fn has_quorum(&self) -> bool {
        let confirmed = tokio::time::timeout(
            Duration::from_millis(QUORUM_CHECK_MS),
            self.raft.ensure_linearizable(),
        )
        .await;
        matches!(confirmed, Ok(Ok(_)))
    }

    /// True when openraft says this node is the leader (its duties may still be starting).
    pub(crate) fn is_elected_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.node_id)
    }

    /// This node's Raft.
    pub(crate) fn raft(&self) -> Raft<TypeConfig> {
        self.raft.clone()
    }

    /// The base URL of the current leader, when one is known (from the membership).
    pub fn leader_url(&self) -> Option<String> {
        let receiver = self.raft.metrics();
        let metrics = receiver.borrow();
        let leader = metrics.current_leader?;
        let url = metrics
            .membership_config
            .nodes()
            .find(|(id, _)| **id == leader)
            .map(|(_, node)| node.addr.clone());
        url
    }

    /// Commits `command` (batched with others into one log entry) and returns its outcome.
    ///
    /// Errors: [`SubmitError::Unavailable`] when the node stops or raft refuses the write.
    pub async fn submit(&self, command: Command) -> Result<Outcome, SubmitError> {
        let (reply, answer) = oneshot::channel();
        self.proposals
            .send((command, reply))
            .await
            .map_err(|_| SubmitError::Unavailable("orchestrator is shutting down".into()))?;
        answer
            .await
            .map_err(|_| SubmitError::Unavailable("orchestrator is shutting down".into()))?
    }

    /// Commits `Register` for `id` with this node's admission cap and retry policy (a repeat
    /// of the id or of the idempotency key answers with the first job).
    pub async fn register(&self, id: JobId, spec: JobSpec) -> Result<Outcome, SubmitError> {
        self.submit(Command::Register {
            id,
            spec: Box::new(spec),
            max_queued: self.max_queued,
            policy: self.retry_policy,
        })
        .await
    }

    /// Commits `Retry` for a FAILED, TIMEOUT or CANCELLED job, given the read model's snapshot
    /// of it (the orchestrator may have forgotten the job: the snapshot carries what a new
    /// chain of attempts needs).
    pub async fn retry(&self, stored: &JobResponse) -> Result<Outcome, SubmitError> {
        self.submit(Command::Retry {
            id: stored.id,
            spec: Box::new(JobSpec::from_response(stored)),
            created_at: parse_client_time(&stored.created_at).unwrap_or_default(),
            attempt_floor: stored.attempt,
            version_floor: stored.version,
            previous_attempts: stored.attempts.clone(),
            policy: self.retry_policy,
        })
        .await
    }

    /// The snapshot of every live (non-terminal) job, as committed.
    pub fn live_snapshots(&self) -> Vec<JobResponse> {
        self.read(|state| state.jobs().map(JobRecord::response).collect())
    }

    /// Reads the state machine's current state (this node's applied state).
    pub fn read<R>(&self, read: impl FnOnce(&State) -> R) -> R {
        self.state_machine.read(read)
    }

    /// The admission cap on PENDING + QUEUED jobs that `Register` commands should carry.
    pub fn max_queued(&self) -> Option<u64> {
        self.max_queued
    }

    /// Records a worker's heartbeat (soft state); returns the jobs it must stop. A stop queued
    /// for an attempt that the worker no longer runs, because it now runs a newer attempt of the
    /// same job, is dropped: the heartbeat protocol names jobs, not attempts. A heartbeat from a
    /// new instance of a known worker (it restarted) first commits `WorkerLost` for the earlier
    /// instance's attempts, so they are retried rather than left RUNNING.
    ///
    /// Errors: the `WorkerLost` of a restarted worker could not be committed.
    pub async fn heartbeat(&self, heartbeat: WorkerHeartbeat) -> Result<Vec<JobId>, SubmitError> {
        if !self.has_quorum().await {
            // A leader cut off from the majority must not keep workers alive: the majority's
            // leader may already have declared them lost and dispatched their attempts again.
            // Refused heartbeats make them fence themselves in time.
            return Err(SubmitError::Unavailable(
                "this node has lost contact with the majority of the cluster".into(),
            ));
        }
        let worker_id = heartbeat.worker_id.clone();
        if self.workers.is_new_instance(&heartbeat)
            && self.read(State::lease_holders).contains(&worker_id)
        {
            tracing::warn!(%worker_id, "worker restarted: its earlier attempts are lost");
            // WorkerLost is never refused. Until it commits, the new instance is not recorded,
            // so a heartbeat retried after a failure still finds the restart.
            let _ = self
                .submit(Command::WorkerLost {
                    worker_id: worker_id.clone(),
                })
                .await?;
        }
        let (cancels, restarted) = self.workers.heartbeat(heartbeat);
        if restarted {
            // What was queued for the earlier instance does not concern this one.
            return Ok(Vec::new());
        }
        Ok(self.read(|state| {
            cancels
                .into_iter()
                .filter(|(job_id, attempt)| {
                    !state.job(*job_id).is_some_and(|job| {
                        job.status == JobStatus::Running
                            && job.attempt > *attempt
                            && job.worker_id.as_ref() == Some(&worker_id)
                    })
                })
                .map(|(job_id, _)| job_id)
                .collect()
        }))
    }

    /// Starts watching a worker's heartbeats if it is not watched yet (a worker that took a
    /// lease without ever heartbeating is then declared lost after the timeout).
    pub fn watch_worker(&self, worker_id: &WorkerId) {
        self.workers.grant_grace(worker_id);
    }

    /// Forgets a worker known to be gone (after its `WorkerLost` is committed).
    pub fn forget_worker(&self, worker_id: &WorkerId) {
        self.workers.forget(worker_id);
    }

    /// The known workers, as the orchestrator API shows them.
    pub(crate) fn describe_workers(&self) -> Vec<serde_json::Value> {
        self.workers.describe()
    }

    /// The retry policy that `Register` and `Retry` commands should carry.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry_policy
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// openraft's current metrics (role, term, leader, log indexes, membership).
    pub fn metrics(&self) -> openraft::RaftMetrics<NodeId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }
}

/// How long a leader may take to confirm its leadership before it answers a heartbeat: the
/// election timeout's upper bound, after which the others may have a new leader.
const QUORUM_CHECK_MS: u64 = 1200;

/// A started orchestrator node: raft is up, this node leads, the outbox runs.
pub struct Orchestrator {
    handle: OrchestratorHandle,
    listener: TcpListener,
    raft: Raft<TypeConfig>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Orchestrator {
    /// Opens the data directory, starts raft (initializing a one-node cluster on first start),
    /// waits until this node leads, then resumes every QUEUED dispatch and every event past the
    /// watermark through `broker`, and binds the HTTP API.
    pub async fn start(
        config: OrchestratorConfig,
        broker: Broker,
    ) -> Result<Orchestrator, OrchestratorError> {
        let data_dir_error = |source| OrchestratorError::DataDir {
            path: config.data_dir.clone(),
            source,
        };
        std::fs::create_dir_all(&config.data_dir).map_err(data_dir_error)?;
        let log_path = config.data_dir.join("raft-log.redb");
        let log_store =
            LogStore::open(&log_path).map_err(|source| OrchestratorError::LogStore {
                path: log_path.clone(),
                source,
            })?;
        let state_machine = StateMachineStore::open(&config.data_dir, MachineConfig::default())
            .map_err(data_dir_error)?;
        let listener =
            TcpListener::bind(config.addr)
                .await
                .map_err(|source| OrchestratorError::Bind {
                    addr: config.addr,
                    source,
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| OrchestratorError::Bind {
                addr: config.addr,
                source,
            })?;

        let raft_config = Config {
            cluster_name: "distriqueue".into(),
            heartbeat_interval: 250,
            election_timeout_min: 600,
            election_timeout_max: 1200,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            // Purge the log up to a snapshot but for a few entries: a follower a little behind
            // catches up from the log, one further behind gets the snapshot.
            max_in_snapshot_log_to_keep: config.snapshot_every.min(500),
            // Snapshot chunks travel as JSON arrays of numbers: keep each request small.
            snapshot_max_chunk_size: 256 * 1024,
            max_payload_entries: 64,
            ..Config::default()
        }
        .validate()
        .map_err(|error| OrchestratorError::Raft(error.to_string()))?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            HttpNetwork::new(Some(local_addr.ip()).filter(|ip| !ip.is_unspecified())),
            log_store,
            state_machine.clone(),
        )
        .await
        .map_err(|error| OrchestratorError::Raft(error.to_string()))?;
        let one_node = config.peers.is_empty();
        let members: BTreeMap<NodeId, BasicNode> = if one_node {
            BTreeMap::from([(
                config.node_id,
                BasicNode {
                    addr: format!("http://{local_addr}"),
                },
            )])
        } else {
            config
                .peers
                .iter()
                .map(|(id, url)| (*id, BasicNode { addr: url.clone() }))
                .collect()
        };
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|error| OrchestratorError::Raft(error.to_string()))?;
        if !initialized && members.contains_key(&config.node_id) {
            // Every node of a new cluster does this with the same members: openraft makes the
            // first one win and the others' calls harmless (NotAllowed once a log exists). A
            // node whose `--peers` leave it out waits to be added (`cluster add-node`).
            match raft.initialize(members).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(error) => return Err(OrchestratorError::Raft(error.to_string())),
            }
        } else if one_node {
            // A one-node cluster restarting need not wait out an election timeout.
            let _ = raft.trigger().elect().await;
        }

        let workers = Arc::new(Registry::new(config.heartbeat_timeout));
        let (proposals_sender, proposals) = mpsc::channel(16 * 1024);
        let (leading_sender, leading) = watch::channel(None);
        let handle = OrchestratorHandle {
            proposals: proposals_sender.clone(),
            state_machine: state_machine.clone(),
            raft: raft.clone(),
            node_id: config.node_id,
            max_queued: config.max_queued,
            retry_policy: config.retry_policy,
            workers: Arc::clone(&workers),
            leading,
            http: reqwest::Client::new(),
        };
        let duties = LeaderDuties {
            raft: raft.clone(),
            state_machine: state_machine.clone(),
            broker,
            workers,
            proposals: proposals_sender,
            handle: handle.clone(),
            heartbeat_timeout: config.heartbeat_timeout,
            dispatch_timeout: config.dispatch_timeout,
            leading: leading_sender,
        };
        let tasks = vec![
            tokio::spawn(run_proposer(
                raft.clone(),
                proposals,
                config.max_batch,
                state_machine.clone(),
            )),
            tokio::spawn(duties.run()),
        ];
        if one_node {
            // `serve` writes (and reads the recovered state) right after start: wait until this
            // node leads and its duties run.
            let mut leading = handle.leading.clone();
            tokio::time::timeout(Duration::from_secs(30), leading.wait_for(Option::is_some))
                .await
                .map_err(|_| OrchestratorError::Raft("did not become leader within 30 s".into()))?
                .map_err(|_| OrchestratorError::Raft("leader duties stopped".into()))?;
        }
        Ok(Orchestrator {
            handle,
            listener,
            raft,
            tasks,
        })
    }

    /// A handle to submit commands and read state.
    pub fn handle(&self) -> OrchestratorHandle {
        self.handle.clone()
    }

    /// The bound address of the HTTP API.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves the HTTP API until `shutdown` is cancelled, then stops raft.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), OrchestratorError> {
        let Orchestrator {
            handle,
            listener,
            raft,
            tasks,
        } = self;
        let served = axum::serve(listener, api::router(handle))
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(OrchestratorError::Serve);
        if let Err(error) = raft.shutdown().await {
            tracing::warn!(%error, "raft did not shut down cleanly");
        }
        for task in tasks {
            task.abort();
        }
        served
    }
}

/// What only the leader runs (issue 5, item 3): the outbox, the timers, the heartbeat table
/// and the watermark. Started when this node becomes leader (after a barrier entry, so the
/// whole log is applied), stopped when it is not leader any more.
struct LeaderDuties {
    raft: Raft<TypeConfig>,
    state_machine: StateMachineStore,
    broker: Broker,
    workers: Arc<Registry>,
    proposals: mpsc::Sender<Proposal>,
    handle: OrchestratorHandle,
    heartbeat_timeout: Duration,
    dispatch_timeout: Duration,
    leading: watch::Sender<Option<u64>>,
}

impl LeaderDuties {
    /// Follows openraft's metrics: starts the duties on becoming leader (in a term), stops them
    /// on losing leadership. Runs until raft stops.
    async fn run(self) {
        let mut metrics = self.raft.metrics();
        let mut session: Option<(u64, Vec<tokio::task::JoinHandle<()>>)> = None;
        loop {
            let (is_leader, term) = {
                let now = metrics.borrow_and_update();
                (now.state == ServerState::Leader, now.current_term)
            };
            let current = session.as_ref().map(|(term, _)| *term);
            if current.is_some() && (!is_leader || current != Some(term)) {
                if let Some((old_term, tasks)) = session.take() {
                    for task in tasks {
                        task.abort();
                    }
                    self.state_machine.go_offline();
                    self.leading.send_replace(None);
                    tracing::info!(
                        term = old_term,
                        "not the leader any more: leader duties stopped"
                    );
                }
            }
            if is_leader && session.is_none() {
                match self.begin(term).await {
                    Ok(tasks) => {
                        session = Some((term, tasks));
                        self.leading.send_replace(Some(term));
                        tracing::info!(term, "leader: duties started");
                    }
                    Err(error) => {
                        tracing::warn!(%error, term, "cannot start the leader's duties yet");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }

    /// Commits a barrier entry (every entry before it is then applied), grants every lease
    /// holder a full heartbeat timeout, then resumes dispatches, events and timers from the
    /// state and starts the outbox, the timers, liveness and (with RabbitMQ) the watermark.
    async fn begin(&self, term: u64) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
        let now = Millis::now().max(self.state_machine.read(State::leader_time));
        self.raft
            .client_write(Batch {
                seed: 0,
                now,
                commands: Vec::new(),
            })
            .await
            .map_err(|error| format!("barrier entry in term {term}: {error}"))?;
        self.workers.reset();
        // A new leader grants every worker holding a lease a full heartbeat timeout.
        for worker_id in self.state_machine.read(State::lease_holders) {
            self.workers.grant_grace(&worker_id);
        }
        let (effects_sender, effects) = mpsc::unbounded_channel();
        let (timer_sender, timer_receiver) = mpsc::unbounded_channel();
        let (published_upto, published) = watch::channel(0);
        let outbox = Outbox {
            broker: self.broker.clone(),
            timers: timer_sender,
            workers: Arc::clone(&self.workers),
            state_machine: self.state_machine.clone(),
            dispatch_timeout: self.dispatch_timeout,
            published_upto,
        };
        let mut tasks = vec![
            tokio::spawn(outbox.run(effects)),
            tokio::spawn(run_liveness(
                Arc::clone(&self.workers),
                self.proposals.clone(),
                self.heartbeat_timeout,
            )),
            tokio::spawn(run_timers(
                timer_receiver,
                self.proposals.clone(),
                self.state_machine.clone(),
            )),
        ];
        if self.broker.confirms_events() {
            // RabbitMQ holds what it confirmed: the watermark follows the confirms.
            tasks.push(tokio::spawn(commit_watermark(
                self.handle.clone(),
                published,
            )));
        }
        self.state_machine.go_live(effects_sender);
        Ok(tasks)
    }
}

/// A leader-drawn random number for a batch (the state machine's source of backoff jitter).
fn random_seed() -> u64 {
    JobId::new_random().0.as_u64_pair().0
}

/// Carries out effects after commit, in commit order: dispatches to the job queues, stops to
/// workers, timers to the timer task, events to the event feed. A publish that fails is retried
/// with backoff until the transport takes it (DESIGN.md "Delivery", rules 2 and 6); a
/// dispatched attempt not started within the dispatch timeout is published again.
struct Outbox {
    broker: Broker,
    timers: mpsc::UnboundedSender<TimerOp>,
    workers: Arc<Registry>,
    state_machine: StateMachineStore,
    dispatch_timeout: Duration,
    /// The highest `seq` the transport confirmed.
    published_upto: watch::Sender<u64>,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs `publish` until it succeeds, backing off between tries.
async fn until_published<F, Fut, T>(what: &str, mut publish: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BrokerError>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut n_failures: u32 = 0;
    loop {
        match publish().await {
            Ok(value) => {
                if n_failures > 0 {
                    tracing::info!(what, n_failures, "publishing again");
                }
                return value;
            }
            Err(error) => {
                n_failures += 1;
                tracing::warn!(what, %error, retry_in_ms = backoff.as_millis() as u64, "cannot publish; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

impl Outbox {
    async fn run(self, mut effects: mpsc::UnboundedReceiver<Vec<Effect>>) {
        // Published attempts not yet started: job -> (attempt, when published).
        let mut unstarted: HashMap<JobId, (u32, tokio::time::Instant)> = HashMap::new();
        let mut sweep =
            tokio::time::interval((self.dispatch_timeout / 4).max(Duration::from_millis(50)));
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                received = effects.recv_many(&mut batch, 256) => {
                    if received == 0 {
                        return;
                    }
                    self.carry_out(batch.drain(..).flatten(), &mut unstarted).await;
                }
                _ = sweep.tick() => self.publish_again(&mut unstarted).await,
            }
        }
    }

    async fn carry_out(
        &self,
        effects: impl Iterator<Item = Effect>,
        unstarted: &mut HashMap<JobId, (u32, tokio::time::Instant)>,
    ) {
        let mut dispatches = Vec::new();
        let mut stops = Vec::new();
        let mut events = Vec::new();
        for effect in effects {
            match effect {
                Effect::Dispatch(message) => dispatches.push(*message),
                Effect::StopAttempt(control) => stops.push(control),
                Effect::ArmTimer(timer) => {
                    let _ = self.timers.send(TimerOp::Arm(timer));
                }
                Effect::Emit(event) => {
                    if event.status.is_terminal() {
                        let _ = self.timers.send(TimerOp::Disarm(event.job_id));
                    }
                    if event.status != JobStatus::Queued {
                        unstarted.remove(&event.job_id);
                    }
                    events.push(*event);
                }
            }
        }
        if !dispatches.is_empty() {
            until_published("job messages", || self.broker.publish_jobs(&dispatches)).await;
            let now = tokio::time::Instant::now();
            for message in &dispatches {
                unstarted.insert(message.id, (message.attempt, now));
            }
        }
        for control in stops {
            let routed =
                until_published("a cancel", || self.broker.publish_control(&control)).await;
            if !routed {
                // Workers without a control queue learn it from their next heartbeat reply.
                let ControlMessage::Cancel {
                    worker_id,
                    job_id,
                    attempt,
                } = control;
                self.workers.queue_cancel(&worker_id, job_id, attempt);
            }
        }
        if let Some(highest) = events.iter().map(|event| event.seq).max() {
            until_published("lifecycle events", || self.broker.publish_events(&events)).await;
            self.published_upto.send_if_modified(|upto| {
                let advanced = highest > *upto;
                *upto = (*upto).max(highest);
                advanced
            });
        }
    }

    /// Publishes again every attempt still QUEUED a dispatch timeout after its last publish.
    async fn publish_again(&self, unstarted: &mut HashMap<JobId, (u32, tokio::time::Instant)>) {
        let now = tokio::time::Instant::now();
        let due: Vec<(JobId, u32)> = unstarted
            .iter()
            .filter(|(_, (_, published))| now.duration_since(*published) >= self.dispatch_timeout)
            .map(|(job_id, (attempt, _))| (*job_id, *attempt))
            .collect();
        if due.is_empty() {
            return;
        }
        let messages: Vec<_> = self.state_machine.read(|state| {
            due.iter()
                .filter_map(|(job_id, attempt)| {
                    state
                        .job(*job_id)
                        .filter(|job| job.status == JobStatus::Queued && job.attempt == *attempt)
                        .map(JobRecord::message)
                })
                .collect()
        });
        for (job_id, _) in &due {
            unstarted.remove(job_id);
        }
        if messages.is_empty() {
            return;
        }
        tracing::info!(
            n_jobs = messages.len(),
            "attempts not started within the dispatch timeout: publishing them again"
        );
        until_published("job messages", || self.broker.publish_jobs(&messages)).await;
        for message in &messages {
            unstarted.insert(message.id, (message.attempt, now));
        }
    }
}

/// Declares lost every worker silent for longer than the heartbeat timeout (checked a few times
/// per timeout): commits `WorkerLost`, which fails and retries its running attempts.
async fn run_liveness(
    workers: Arc<Registry>,
    proposals: mpsc::Sender<Proposal>,
    timeout: Duration,
) {
    let mut tick = tokio::time::interval(
        (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1)),
    );
    loop {
        tick.tick().await;
        for worker_id in workers.take_lost() {
            tracing::warn!(%worker_id, "worker silent past the heartbeat timeout: declared lost");
            let (reply, _ignored) = oneshot::channel();
            if proposals
                .send((Command::WorkerLost { worker_id }, reply))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// What the outbox tells the timer task.
enum TimerOp {
    Arm(Timer),
    /// The job is finished: forget its timers.
    Disarm(JobId),
}

/// Keeps the armed timers and, when one is due, commits `TimerFired` for it if the state still
/// waits on exactly that timer (a stale one would be a no-op command; it is dropped here).
async fn run_timers(
    mut ops: mpsc::UnboundedReceiver<TimerOp>,
    proposals: mpsc::Sender<Proposal>,
    state_machine: StateMachineStore,
) {
    let mut armed: BTreeSet<Timer> = BTreeSet::new();
    let mut by_job: HashMap<JobId, Vec<Timer>> = HashMap::new();
    loop {
        let next_due = armed.first().map(|timer| timer.at);
        let sleep = async {
            match next_due {
                Some(at) => {
                    let wait_ms = u64::try_from(at.0.saturating_sub(Millis::now().0)).unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            op = ops.recv() => match op {
                Some(TimerOp::Arm(timer)) => {
                    armed.insert(timer);
                    by_job.entry(timer.job_id).or_default().push(timer);
                }
                Some(TimerOp::Disarm(job_id)) => {
                    for timer in by_job.remove(&job_id).unwrap_or_default() {
                        armed.remove(&timer);
                    }
                }
                None => return,
            },
            () = sleep => {
                let now = Millis::now();
                while armed.first().is_some_and(|timer| timer.at <= now) {
                    let Some(timer) = armed.pop_first() else { break };
                    if let Some(timers) = by_job.get_mut(&timer.job_id) {
                        timers.retain(|other| *other != timer);
                        if timers.is_empty() {
                            by_job.remove(&timer.job_id);
                        }
                    }
                    let current = state_machine.read(|state| state.job(timer.job_id).and_then(JobRecord::timer));
                    if current != Some(timer) {
                        continue;
                    }
                    let (reply, _ignored) = oneshot::channel();
                    if proposals.send((Command::TimerFired(timer), reply)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Most log entries proposed but not yet committed at once. One: while an entry commits, the
/// next one gathers every command that arrives (group commit), which beats more, smaller entries
/// because the log store writes one entry batch per fsync.
const MAX_IN_FLIGHT: usize = 1;

/// Turns submitted commands into log entries: whatever is waiting (up to `max_batch`) becomes one
/// entry stamped with the leader's time, never earlier than any committed entry's time.
async fn run_proposer(
    raft: Raft<TypeConfig>,
    mut proposals: mpsc::Receiver<Proposal>,
    max_batch: usize,
    state_machine: StateMachineStore,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // Leader time never goes backwards, also across restarts, leader changes and clock steps.
    let mut last_now = state_machine.read(State::leader_time);
    let mut waiting = Vec::with_capacity(max_batch);
    loop {
        // Wait for a free slot first, so everything that arrives meanwhile joins this entry:
        // under load, entries grow instead of queueing (group commit).
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            break;
        };
        if proposals.recv_many(&mut waiting, max_batch).await == 0 {
            break;
        }
        let (commands, replies): (Vec<Command>, Vec<_>) = waiting.drain(..).unzip();
        last_now = last_now
            .max(Millis::now())
            .max(state_machine.read(State::leader_time));
        let batch = Batch {
            seed: random_seed(),
            now: last_now,
            commands,
        };
        let receiver = match raft.client_write_ff(batch).await {
            Ok(receiver) => receiver,
            Err(fatal) => {
                answer_all(replies, &SubmitError::Unavailable(fatal.to_string()));
                continue;
            }
        };
        tokio::spawn(async move {
            let result = receiver.await;
            drop(permit);
            match result {
                Ok(Ok(response)) => {
                    for (reply, outcome) in replies.into_iter().zip(response.data) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Ok(Err(error)) => answer_all(replies, &unavailable(&error)),
                Err(_) => answer_all(replies, &SubmitError::Unavailable("raft stopped".into())),
            }
        });
    }
}

fn unavailable(error: &ClientWriteError<NodeId, BasicNode>) -> SubmitError {
    SubmitError::Unavailable(match error {
        ClientWriteError::ForwardToLeader(forward) => {
            format!("not the leader; leader is {:?}", forward.leader_id)
        }
        other => other.to_string(),
    })
}

fn answer_all(replies: Vec<oneshot::Sender<Result<Outcome, SubmitError>>>, error: &SubmitError) {
    for reply in replies {
        let _ = reply.send(Err(error.clone()));
    }
}

/// Turns "events are safe up to seq N" (confirmed by RabbitMQ, or stored by the read model in
/// `serve`) into committed `AckEvents` commands, at most about ten per second: the "published
/// up to" watermark of DESIGN.md "Delivery", rule 6. Ends when the sender is gone.
pub async fn commit_watermark(handle: OrchestratorHandle, mut safe_upto: watch::Receiver<u64>) {
    let mut acknowledged = 0;
    while safe_upto.changed().await.is_ok() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let upto = *safe_upto.borrow_and_update();
        if upto > acknowledged {
            match handle.submit(Command::AckEvents { upto }).await {
                Ok(_) => acknowledged = upto,
                Err(error) => tracing::debug!(%error, "watermark not committed"),
            }
        }
    }
}
