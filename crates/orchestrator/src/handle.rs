//! [`OrchestratorHandle`]: the cheap handle other roles and the HTTP API use to submit
//! commands to a node and read its state.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use distriqueue_core::api::WorkerView;
use distriqueue_core::machine::JobRecord;
use distriqueue_core::request::JobSpec;
use distriqueue_core::time::parse_client_time;
use distriqueue_core::{
    Command, JobId, JobResponse, JobStatus, Outcome, RetryPolicy, State, WorkerHeartbeat, WorkerId,
};
use distriqueue_util::auth::ApiKeys;
use distriqueue_util::metrics::PrometheusText;
use openraft::{BasicNode, Raft};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::liveness::Registry;
use crate::network::HttpNetwork;
use crate::peer::PeerContact;
use crate::proposer::{Committed, Proposer, SubmitError};
use crate::raft::{NodeId, TypeConfig};
use crate::state_machine::StateMachineStore;

/// How long a leader may take to confirm its leadership before it answers a heartbeat: the
/// election timeout's upper bound, after which the others may have a new leader.
const QUORUM_CHECK: Duration = Duration::from_millis(1200);

/// A cheap handle to submit commands to the node and read its state.
#[derive(Clone)]
pub struct OrchestratorHandle {
    pub(crate) proposer: Proposer,
    pub(crate) state_machine: StateMachineStore,
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) node_id: NodeId,
    pub(crate) max_queued: Option<u64>,
    pub(crate) max_queued_bytes: Option<u64>,
    pub(crate) retry_policy: RetryPolicy,
    pub(crate) workers: Arc<Registry>,
    /// The term of this node's running leader duties, `None` while it does not lead.
    pub(crate) leading: watch::Receiver<Option<u64>>,
    /// Forwards writes to the leader and probes members (see `api`).
    pub(crate) http: reqwest::Client,
    /// The process's metrics, which `GET /metrics` serves; `None` when none are exported.
    pub(crate) prometheus: Option<PrometheusText>,
    /// The API keys the HTTP API asks for.
    pub(crate) api_keys: ApiKeys,
    /// This node's API URL, as peers and clients reach it.
    pub(crate) api_url: String,
    /// When each peer was last in contact (the Raft status's `reachable`).
    pub(crate) peer_contact: Arc<PeerContact>,
    /// The signed peer network (asks a leader for its API URL).
    pub(crate) network: HttpNetwork,
    /// Each peer's API URL, by node id, as it said (`GET /raft/info`).
    pub(crate) api_urls: Arc<Mutex<HashMap<NodeId, String>>>,
    /// Effect batches the leader's outbox has not carried out yet (0 on other nodes).
    pub(crate) outbox_backlog: Arc<AtomicUsize>,
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
        let confirmed = tokio::time::timeout(QUORUM_CHECK, self.raft.ensure_linearizable()).await;
        matches!(confirmed, Ok(Ok(_)))
    }

    /// True when openraft says this node is the leader (its duties may still be starting).
    pub(crate) fn is_elected_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.node_id)
    }

    /// The API URL of the current leader, when one is known: asked of the leader over the
    /// peer port once (`GET /raft/info`), then remembered.
    pub async fn leader_url(&self) -> Option<String> {
        let (leader, peer_url) = {
            let receiver = self.raft.metrics();
            let metrics = receiver.borrow();
            let leader = metrics.current_leader?;
            let peer_url = metrics
                .membership_config
                .nodes()
                .find(|(id, _)| **id == leader)
                .map(|(_, node)| node.addr.clone())?;
            (leader, peer_url)
        };
        if leader == self.node_id {
            return Some(self.api_url.clone());
        }
        if let Some(url) = self.api_urls.lock().get(&leader) {
            return Some(url.clone());
        }
        match self.network.info(&peer_url).await {
            Ok(info) if info.node_id == leader => {
                let url = info.api_url.trim_end_matches('/').to_string();
                self.api_urls.lock().insert(leader, url.clone());
                Some(url)
            }
            Ok(info) => {
                tracing::warn!(leader, answered = info.node_id, %peer_url, "a peer URL names another node");
                None
            }
            Err(error) => {
                tracing::debug!(leader, %peer_url, %error, "the leader's API URL is not known");
                None
            }
        }
    }

    /// Forgets the API URL `leader` said (it did not answer there).
    pub(crate) fn forget_api_url(&self, leader: &str) {
        self.api_urls.lock().retain(|_, url| url != leader);
    }

    /// Commits `command` (batched with others into one log entry) and returns its outcome.
    ///
    /// Errors: [`SubmitError`] when the node stops, does not lead, or raft refuses the write.
    pub async fn submit(&self, command: Command) -> Result<Outcome, SubmitError> {
        let committed = self.submit_all(vec![command]).await?;
        committed
            .outcomes
            .into_iter()
            .next()
            .ok_or(SubmitError::ShuttingDown)
    }

    /// Commits `commands` together, in one log entry (with whatever else waits, when it fits),
    /// and returns each one's outcome and the entry's index.
    ///
    /// Errors: as [`OrchestratorHandle::submit`]; then none of them was applied.
    pub async fn submit_all(&self, commands: Vec<Command>) -> Result<Committed, SubmitError> {
        self.proposer
            .call(commands)
            .await
            .map_err(|_| SubmitError::ShuttingDown)?
    }

    /// Commits `Register` for every job of `jobs` in one log entry (a batch submission), with
    /// this node's admission cap and retry policy; each is answered as by
    /// [`OrchestratorHandle::register`]. When every job is a repeat (or the queue is full),
    /// nothing is proposed and `log_index` is the last applied entry's.
    pub async fn register_all(
        &self,
        jobs: Vec<(JobId, JobSpec)>,
    ) -> Result<Committed, SubmitError> {
        let early: Vec<Option<Outcome>> = self.read(|state| {
            jobs.iter()
                .map(|(id, spec)| state.register_answer(*id, spec, self.caps()))
                .collect()
        });
        let commands: Vec<Command> = jobs
            .into_iter()
            .zip(&early)
            .filter(|(_, answer)| answer.is_none())
            .map(|((id, spec), _)| self.register_command(id, spec))
            .collect();
        let committed = if commands.is_empty() {
            Committed {
                outcomes: Vec::new(),
                log_index: self.metrics().last_applied.map_or(0, |log_id| log_id.index),
            }
        } else {
            self.submit_all(commands).await?
        };
        let mut proposed = committed.outcomes.into_iter();
        let outcomes = early
            .into_iter()
            .map(|answer| {
                answer
                    .or_else(|| proposed.next())
                    .ok_or(SubmitError::ShuttingDown)
            })
            .collect::<Result<_, _>>()?;
        Ok(Committed {
            outcomes,
            log_index: committed.log_index,
        })
    }

    fn register_command(&self, id: JobId, spec: JobSpec) -> Command {
        Command::Register {
            id,
            spec: Box::new(spec),
            max_queued: self.max_queued,
            max_queued_bytes: self.max_queued_bytes,
            policy: self.retry_policy,
        }
    }

    /// Commits `Register` for `id` with this node's admission cap and retry policy. A repeat
    /// of the id or of the idempotency key answers with the first job, and a full queue with
    /// 429, from the applied state without proposing anything (issue 11).
    pub async fn register(&self, id: JobId, spec: JobSpec) -> Result<Outcome, SubmitError> {
        if let Some(answer) = self.read(|state| state.register_answer(id, &spec, self.caps())) {
            return Ok(answer);
        }
        self.submit(self.register_command(id, spec)).await
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

    /// The admission caps `Register` commands carry: (jobs, bytes of payload).
    fn caps(&self) -> (Option<u64>, Option<u64>) {
        (self.max_queued, self.max_queued_bytes)
    }

    /// Records a worker's heartbeat (soft state); returns the jobs it must stop. A stop queued
    /// for an attempt that the worker no longer runs, because it now runs a newer attempt of the
    /// same job, is dropped: the heartbeat protocol names jobs, not attempts. A heartbeat from a
    /// new instance of a known worker (it restarted) first commits `WorkerLost` for the earlier
    /// instance's attempts, so they are retried rather than left RUNNING.
    ///
    /// Errors: [`SubmitError::NoQuorum`] when this leader cannot confirm it still leads (a
    /// leader cut off from the majority must not keep workers alive: the majority's leader may
    /// already have declared them lost and dispatched their attempts again; refused heartbeats
    /// make them fence themselves in time); the `WorkerLost` of a restarted worker could not be
    /// committed.
    pub async fn heartbeat(&self, heartbeat: WorkerHeartbeat) -> Result<Vec<JobId>, SubmitError> {
        if !self.has_quorum().await {
            return Err(SubmitError::NoQuorum);
        }
        if !self.workers.has_room_for(&heartbeat.worker_id) {
            return Err(SubmitError::TooManyWorkers {
                cap: crate::liveness::MAX_WORKERS,
            });
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
            crate::metrics::worker_lost();
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
    pub(crate) fn describe_workers(&self) -> Vec<WorkerView> {
        self.workers.describe()
    }

    /// The URL this node's API is reached at (advertised to the other nodes).
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// What `GET /api/cluster/status` answers: this node's Raft state and, on the leader, the
    /// workers heartbeating to it.
    pub async fn cluster_status(&self) -> distriqueue_core::api::ClusterStatus {
        crate::api::cluster::cluster_status(self).await
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
