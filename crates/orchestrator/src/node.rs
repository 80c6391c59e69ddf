//! The orchestrator node: opens the log and state machine, starts openraft, and runs the
//! proposer (commands in, batched log entries out) and the outbox (effects after commit).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use distriqueue_broker::InProcessBroker;
use distriqueue_core::machine::{JobRecord, MachineConfig};
use distriqueue_core::{
    Batch, Command, ControlMessage, Effect, JobId, JobStatus, Millis, Outcome, RetryPolicy, State,
    Timer, WorkerHeartbeat, WorkerId,
};
use openraft::error::ClientWriteError;
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::log_store::LogStore;
use crate::raft::{NoPeers, NodeId, TypeConfig};
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
}

impl OrchestratorHandle {
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
    /// same job, is dropped: the heartbeat protocol names jobs, not attempts.
    pub fn heartbeat(&self, heartbeat: WorkerHeartbeat) -> Vec<JobId> {
        let worker_id = heartbeat.worker_id.clone();
        let cancels = self.workers.heartbeat(heartbeat);
        self.read(|state| {
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
        })
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
        broker: InProcessBroker,
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
            max_in_snapshot_log_to_keep: 500,
            ..Config::default()
        }
        .validate()
        .map_err(|error| OrchestratorError::Raft(error.to_string()))?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            NoPeers,
            log_store,
            state_machine.clone(),
        )
        .await
        .map_err(|error| OrchestratorError::Raft(error.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|error| OrchestratorError::Raft(error.to_string()))?;
        if !initialized {
            let members = BTreeMap::from([(
                config.node_id,
                BasicNode {
                    addr: local_addr.to_string(),
                },
            )]);
            raft.initialize(members)
                .await
                .map_err(|error| OrchestratorError::Raft(error.to_string()))?;
        } else {
            // A one-node cluster restarting need not wait out an election timeout.
            let _ = raft.trigger().elect().await;
        }
        raft.wait(Some(Duration::from_secs(30)))
            .state(ServerState::Leader, "become leader")
            .await
            .map_err(|error| OrchestratorError::Raft(error.to_string()))?;

        // A barrier entry: once it is applied, so is every entry of the log found at start
        // (openraft re-applies only up to the saved commit point; the rest is applied once this
        // leader commits in its term). The lease scan of `serve` and `go_live` need that state.
        raft.client_write(Batch {
            seed: 0,
            now: Millis::now(),
            commands: Vec::new(),
        })
        .await
        .map_err(|error| OrchestratorError::Raft(format!("barrier entry: {error}")))?;
        let workers = Arc::new(Registry::new(config.heartbeat_timeout));
        // A new leader grants every worker holding a lease a full heartbeat timeout.
        for worker_id in state_machine.read(State::lease_holders) {
            workers.grant_grace(&worker_id);
        }
        let (effects_sender, effects) = mpsc::unbounded_channel();
        let (timer_sender, timer_receiver) = mpsc::unbounded_channel();
        state_machine.go_live(effects_sender);
        let (proposals_sender, proposals) = mpsc::channel(16 * 1024);
        let tasks = vec![
            tokio::spawn(run_outbox(
                effects,
                broker,
                timer_sender,
                Arc::clone(&workers),
            )),
            tokio::spawn(run_liveness(
                Arc::clone(&workers),
                proposals_sender.clone(),
                config.heartbeat_timeout,
            )),
            tokio::spawn(run_timers(
                timer_receiver,
                proposals_sender.clone(),
                state_machine.clone(),
            )),
            tokio::spawn(run_proposer(
                raft.clone(),
                proposals,
                config.max_batch,
                state_machine.read(State::leader_time),
            )),
        ];
        let handle = OrchestratorHandle {
            proposals: proposals_sender,
            state_machine,
            raft: raft.clone(),
            node_id: config.node_id,
            max_queued: config.max_queued,
            retry_policy: config.retry_policy,
            workers: Arc::clone(&workers),
        };
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

/// A leader-drawn random number for a batch (the state machine's source of backoff jitter).
fn random_seed() -> u64 {
    JobId::new_random().0.as_u64_pair().0
}

/// Carries out effects after commit, in commit order: dispatches to the job queues, stops to
/// workers, timers to the timer task, events to the event feed. In-process publishing cannot
/// fail; the RabbitMQ outbox retries until confirmed.
async fn run_outbox(
    mut effects: mpsc::UnboundedReceiver<Vec<Effect>>,
    broker: InProcessBroker,
    timers: mpsc::UnboundedSender<TimerOp>,
    workers: Arc<Registry>,
) {
    let mut batch = Vec::new();
    while effects.recv_many(&mut batch, 256).await > 0 {
        let mut events = Vec::new();
        for effect in batch.drain(..).flatten() {
            match effect {
                Effect::Dispatch(message) => broker.publish_job(*message),
                Effect::StopAttempt(control) => {
                    let ControlMessage::Cancel {
                        worker_id,
                        job_id,
                        attempt,
                    } = control.clone();
                    // Workers without a control queue learn it from their next heartbeat reply.
                    if !broker.publish_control(control) {
                        workers.queue_cancel(&worker_id, job_id, attempt);
                    }
                }
                Effect::ArmTimer(timer) => {
                    let _ = timers.send(TimerOp::Arm(timer));
                }
                Effect::Emit(event) => {
                    if event.status.is_terminal() {
                        let _ = timers.send(TimerOp::Disarm(event.job_id));
                    }
                    events.push(*event);
                }
            }
        }
        broker.publish_events(events);
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
    committed_time: Millis,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // Leader time never goes backwards, also across restarts and clock steps.
    let mut last_now = committed_time;
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
        last_now = last_now.max(Millis::now());
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
