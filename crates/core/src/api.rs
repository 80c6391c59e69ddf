//! Bodies of the HTTP APIs defined once, for the servers that answer with them and the clients
//! that read them: the orchestrator's (CONTRACT.md "Orchestrator", and the routes DistriQueue's
//! own gateways and workers use) and the gateway's beyond the job itself (batch submission).
//!
//! Field names are the contract's (snake_case where the original used it, camelCase in the
//! status routes); every body is JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::machine::{Refusal, Report};
use crate::model::{JobId, JobStatus, Priority, WorkerId};
use crate::request::{JobSpec, Violations};
use crate::wire::{AttemptView, JobResponse};

/// The header of an answer that a follower forwarded from the leader: the leader's base URL,
/// so DistriQueue's clients go there directly next time.
pub const LEADER_HEADER: &str = "x-distriqueue-leader";

/// The `status` of a `202` register answer.
pub const ACCEPTED: &str = "accepted";
/// The `status` of an applied status report.
pub const UPDATED: &str = "updated";
/// The `status` of a cancel answer.
pub const CANCELLED: &str = "cancelled";
/// The `status` of a retry answer.
pub const QUEUED: &str = "queued";
/// The `status` of a heartbeat answer.
pub const ACKNOWLEDGED: &str = "acknowledged";
/// The `status` of a membership change that added a node.
pub const ADDED: &str = "added";
/// The `status` of a membership change that removed a node.
pub const REMOVED: &str = "removed";

/// Every error answer of both HTTP servers (CONTRACT.md "Errors and access"): `{"error":
/// message}`; for invalid input `{"error": "Validation failed", "violations": {field:
/// message}}`; and, on the orchestrator, the state machine's [`Refusal`] when a command was
/// refused, so DistriQueue's own clients tell a refusal (404, 409, 429) from a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// Each invalid field (a path such as `jobs[3].type`) with what is wrong with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub violations: Option<Violations>,
    /// The refusal, for programs; absent for other errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
}

impl ErrorBody {
    /// `{"error": message}`.
    pub fn new(error: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: error.into(),
            violations: None,
            refusal: None,
        }
    }
}

/// `GET /api/health`: `{status: "UP", timestamp, node}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `UP` when the node answers.
    pub status: String,
    /// The node's clock, ISO-8601 UTC.
    pub timestamp: String,
    /// This node's id in the orchestrator cluster.
    pub node: u64,
}

/// The answer to a register (`POST /api/jobs/register`, 202), and one item of a register
/// batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Registered {
    /// [`ACCEPTED`].
    #[serde(default = "accepted")]
    pub status: String,
    /// The job's id: the registered one, or the first job's for a repeated idempotency key.
    pub job_id: JobId,
    /// The committed snapshot; `null` when the id (or idempotency key) names a job the
    /// orchestrator holds only as a tombstone.
    pub job: Option<JobResponse>,
    /// False when the register was a repeat (of the id or of the idempotency key).
    #[serde(default = "yes")]
    pub created: bool,
}

fn accepted() -> String {
    ACCEPTED.to_string()
}

fn yes() -> bool {
    true
}

/// One job of a register batch: a gateway-minted id and the spec the gateway validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Registration {
    /// The job's id (register is idempotent by id).
    pub id: JobId,
    /// The validated job request.
    pub spec: JobSpec,
}

/// `POST /api/jobs/batch`'s answer (CONTRACT.md "Gateway"): `{batchId, totalJobs, successful,
/// failed, jobIds, errors, submittedAt}`, plus `batchName` and `logIndex`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchSubmitted {
    /// A fresh id naming this submission.
    pub batch_id: String,
    /// The request's `batchName`, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_name: Option<String>,
    /// Jobs in the request.
    pub total_jobs: usize,
    /// Jobs accepted (a repeated idempotency key counts, answered with the first job's id).
    pub successful: usize,
    /// Jobs refused.
    pub failed: usize,
    /// Each job's id in request order; `null` for a refused item.
    pub job_ids: Vec<Option<JobId>>,
    /// Each refused item's error body, keyed by its index in the request (`"3"`); violations
    /// name the item's fields (`jobs[3].type`).
    #[schema(value_type = BTreeMap<String, ErrorBody>)]
    pub errors: BTreeMap<usize, ErrorBody>,
    /// When the gateway answered, ISO-8601 UTC.
    pub submitted_at: String,
    /// The Raft log index of the one entry that committed the accepted jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_index: Option<u64>,
}

/// `GET /api/jobs/statistics?from&to&type`'s answer (CONTRACT.md "Gateway"): the jobs created
/// in the range, counted in SQL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Statistics {
    /// Jobs in the range.
    pub total_jobs: u64,
    /// PENDING jobs (scheduled for later).
    pub pending_jobs: u64,
    /// QUEUED jobs.
    pub queued_jobs: u64,
    /// RUNNING jobs.
    pub running_jobs: u64,
    /// RETRYING jobs (waiting out a backoff).
    pub retrying_jobs: u64,
    /// COMPLETED jobs.
    pub completed_jobs: u64,
    /// FAILED jobs.
    pub failed_jobs: u64,
    /// TIMEOUT jobs.
    pub timeout_jobs: u64,
    /// CANCELLED jobs.
    pub cancelled_jobs: u64,
    /// COMPLETED among the finished jobs (COMPLETED, FAILED, TIMEOUT, CANCELLED), in percent
    /// (0 when none finished).
    pub success_rate: f64,
    /// Mean of `started_at - created_at` over the jobs that started, in ms.
    pub average_queue_time_ms: f64,
    /// Mean of `completed_at - started_at` over the jobs that finished after starting, in ms.
    pub average_execution_time_ms: f64,
    /// Jobs by type.
    pub jobs_by_type: BTreeMap<String, u64>,
    /// Jobs by priority (`LOW`, `MEDIUM`, `HIGH`, `CRITICAL`).
    pub jobs_by_priority: BTreeMap<String, u64>,
    /// Jobs by the worker that holds or last held them (jobs never started are not counted).
    pub jobs_by_worker: BTreeMap<String, u64>,
    /// The range's start as asked (`from`), ISO-8601 UTC; `null` for none.
    pub time_range_start: Option<String>,
    /// The range's end as asked (`to`), ISO-8601 UTC; `null` for none.
    pub time_range_end: Option<String>,
}

/// `POST /api/jobs/register/batch` (DistriQueue's gateways): jobs committed together, one log
/// entry under load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RegisterBatch {
    /// The registrations, answered in this order.
    pub jobs: Vec<Registration>,
}

/// `POST /api/jobs/status/batch` (DistriQueue's native workers): reports committed together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReportBatch {
    /// The reports, answered in this order.
    pub reports: Vec<Report>,
}

/// The answer to a batch route: one result per item, in the request's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchResults<T> {
    /// Each item's answer or error.
    pub results: Vec<ItemResult<T>>,
    /// The Raft log index of the one entry that committed the batch.
    #[serde(rename = "logIndex", default, skip_serializing_if = "Option::is_none")]
    pub log_index: Option<u64>,
}

/// One item's answer in a batch: its error body (refused, or not committed) or its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ItemResult<T> {
    /// The item was refused (`refusal` set) or could not be committed (sent again, it may be).
    Failed(ErrorBody),
    /// The item's answer.
    Done(T),
}

/// `{"status": "updated"}`: a status report was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Updated {
    /// [`UPDATED`].
    pub status: String,
}

impl Updated {
    /// The one answer to an applied report.
    pub fn new() -> Updated {
        Updated {
            status: UPDATED.to_string(),
        }
    }
}

impl Default for Updated {
    fn default() -> Updated {
        Updated::new()
    }
}

/// The answer to a cancel (`status` [`CANCELLED`]) or a retry (`status` [`QUEUED`]): the job's
/// committed snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobChanged {
    /// [`CANCELLED`] or [`QUEUED`].
    pub status: String,
    /// The snapshot after the change.
    pub job: Option<JobResponse>,
}

/// `GET /api/jobs/snapshots` (gateways reconcile with it): every live job's snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Snapshots {
    /// The committed snapshot of each live (non-terminal) job.
    pub jobs: Vec<JobResponse>,
}

/// `GET /api/jobs` on the orchestrator: the jobs it holds (live, and finished ones still held
/// as tombstones).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LiveJobs {
    /// The page of jobs.
    pub jobs: Vec<LiveJob>,
    /// How many jobs this page holds.
    pub count: usize,
}

/// One job of [`LiveJobs`] (CONTRACT.md: `{id,type,status,priority,worker_id,result,
/// created_at,started_at,completed_at,version}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LiveJob {
    /// The job's id.
    pub id: JobId,
    /// The job type.
    #[serde(rename = "type")]
    pub job_type: String,
    /// Its lifecycle state.
    pub status: JobStatus,
    /// Its priority as the original's number: 1, 5, 10 or 15.
    pub priority: u8,
    /// The worker holding (or that last held) its lease.
    pub worker_id: Option<WorkerId>,
    /// The result of a COMPLETED job (`null` for a job held as a tombstone).
    pub result: Option<Value>,
    /// When it was registered, ISO-8601 UTC.
    pub created_at: String,
    /// When its current attempt started.
    pub started_at: Option<String>,
    /// When it finished.
    pub completed_at: Option<String>,
    /// The job's version (grows with every change).
    pub version: u64,
    /// Its current attempt number (0 before the first dispatch).
    pub attempt: u32,
}

/// `POST /api/workers/heartbeat`'s answer: `{status: "acknowledged", cancel: [job ids]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatAnswer {
    /// [`ACKNOWLEDGED`].
    pub status: String,
    /// The jobs this worker must stop (cancelled, or past their execution timeout).
    #[serde(default)]
    pub cancel: Vec<JobId>,
}

/// `POST /api/cluster/nodes`: the node to add.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NewNode {
    /// The new node's id.
    pub id: u64,
    /// Its peer URL as the other members reach it (`http://10.0.0.3:8091`: its `--peer-addr`).
    pub url: String,
}

/// A member of the orchestrator cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Member {
    /// The node's id.
    pub id: u64,
    /// Its peer URL.
    pub addr: String,
}

/// The answer to a membership change: `status` [`ADDED`] or [`REMOVED`] and the members now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MembershipChanged {
    /// [`ADDED`] or [`REMOVED`].
    pub status: String,
    /// The members after the change.
    pub members: Vec<Member>,
}

/// A node's Raft role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RaftRole {
    /// It leads: it takes writes and runs the leader's duties.
    Leader,
    /// It follows a leader (and forwards writes to it).
    Follower,
    /// It is running for election.
    Candidate,
    /// It replicates the log without a vote (a node being added).
    Learner,
    /// It is shutting down.
    Shutdown,
}

impl RaftRole {
    /// Every role.
    pub const ALL: [RaftRole; 5] = [
        RaftRole::Leader,
        RaftRole::Follower,
        RaftRole::Candidate,
        RaftRole::Learner,
        RaftRole::Shutdown,
    ];

    /// The role's name as on the wire (`leader`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RaftRole::Leader => "leader",
            RaftRole::Follower => "follower",
            RaftRole::Candidate => "candidate",
            RaftRole::Learner => "learner",
            RaftRole::Shutdown => "shutdown",
        }
    }
}

/// `GET /api/raft/status`: this node's Raft state, from openraft's metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RaftStatus {
    /// This node's role.
    pub role: RaftRole,
    /// The current term.
    pub term: u64,
    /// The leader's node id, when one is known.
    pub leader: Option<u64>,
    /// The highest log index known committed (openraft 0.9 reports the applied index; every
    /// committed entry is applied before a write is answered).
    pub commit_index: Option<u64>,
    /// On the leader: milliseconds since a quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
    /// The highest log index applied to the state machine.
    pub last_applied: Option<u64>,
    /// The highest log index stored.
    pub last_log_index: Option<u64>,
    /// The log index of the newest snapshot.
    pub snapshot: Option<u64>,
    /// The log index up to which the log is purged.
    pub purged: Option<u64>,
    /// Every member, with its reachability and, on the leader, its replication.
    pub members: Vec<MemberStatus>,
    /// This node's id.
    pub node: u64,
}

/// One member in [`RaftStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// The node's id.
    pub id: u64,
    /// Its peer URL (where its Raft traffic goes).
    pub addr: String,
    /// Whether this node heard from it, or was answered by it, over the peer port in the last
    /// few seconds (this node itself always is). Nothing is probed to tell.
    pub reachable: bool,
    /// On the leader: the highest log index known replicated on it.
    pub matched_index: Option<u64>,
    /// On the leader: how many log entries it is behind.
    pub replication_lag: Option<u64>,
}

/// `GET /api/cluster/status`: `{node, cluster, raft, timestamp}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClusterStatus {
    /// This node's id.
    pub node: u64,
    /// The workers heartbeating to this node.
    pub cluster: WorkersSeen,
    /// This node's Raft state.
    pub raft: RaftStatus,
    /// The node's clock, ISO-8601 UTC.
    pub timestamp: String,
}

/// The workers a node knows from their heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkersSeen {
    /// Each worker, by id.
    pub workers: Vec<WorkerView>,
    /// How many.
    pub n_workers: usize,
}

/// A worker as the leader knows it from its heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerView {
    /// Its id.
    pub worker_id: String,
    /// What it says it is (`distriqueue`, `python`, ...).
    pub worker_type: String,
    /// Its job slots.
    pub capacity: u32,
    /// Jobs it runs now.
    pub current_load: u32,
    /// Outcomes it reported since it started.
    pub total_jobs_processed: u64,
    /// Completed jobs since it started.
    pub successful_jobs: u64,
    /// Failed jobs since it started.
    pub failed_jobs: u64,
    /// When its last heartbeat arrived, ISO-8601 UTC.
    pub last_heartbeat: String,
    /// Milliseconds since then.
    pub silent_for_ms: u64,
    /// `alive`, or `awaiting first heartbeat` (a lease holder a new leader granted a grace).
    pub status: String,
}

/// `GET /api/metrics`: live jobs by status, the waiting queue, workers and the event watermark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Metrics {
    /// Jobs the orchestrator holds, by status (every status, 0 included).
    pub jobs: BTreeMap<String, u64>,
    /// The waiting queue.
    pub queues: QueueMetrics,
    /// The workers.
    pub workers: WorkerMetrics,
    /// The event log.
    pub events: EventMetrics,
    /// The node's clock, ISO-8601 UTC.
    pub timestamp: String,
}

/// The waiting queue in [`Metrics`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueMetrics {
    /// PENDING + QUEUED jobs.
    pub waiting: u64,
    /// The admission cap on them (429 past it); `null` for none.
    pub max_queued: Option<u64>,
}

/// The workers in [`Metrics`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerMetrics {
    /// Workers known.
    pub count: usize,
    /// Their job slots in all.
    pub capacity: u64,
    /// Jobs they run now.
    pub current_load: u64,
    /// Each worker.
    pub list: Vec<WorkerView>,
}

/// The event log in [`Metrics`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventMetrics {
    /// The `seq` of the newest event.
    pub last_seq: u64,
    /// The committed watermark: events up to it are safe (stored or confirmed).
    pub published_up_to: u64,
}

/// A job request (CONTRACT.md `POST /api/jobs`), as the OpenAPI document describes it. The
/// gateway reads requests by hand ([`crate::request::parse_job_request`]) so that every
/// violation is named; this type only documents the shape. Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "type": "calculate",
    "jobPriority": "HIGH",
    "payload": {"operation": "sum", "numbers": [1, 2, 3, 4, 5]}
}))]
pub struct JobRequest {
    /// The job type, which picks the handler: 1 to 255 characters, not blank.
    #[serde(rename = "type")]
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    pub job_type: String,
    /// The priority (`priority` is read too): a name in any case, or 1, 5, 10, 15.
    pub job_priority: PriorityInput,
    /// The handler's input, a JSON object (default `{}`).
    #[serde(default)]
    pub payload: Option<serde_json::Map<String, Value>>,
    /// Retries after the first attempt (default 3).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000)]
    pub max_retries: Option<u32>,
    /// Seconds an attempt may run (default 300).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 604800)]
    pub execution_timeout: Option<u64>,
    /// Free string-to-string pairs, kept as given.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// A parent job's id: free text, a plain reference.
    #[serde(default)]
    #[schema(max_length = 255)]
    pub parent_job_id: Option<String>,
    /// Run no earlier than this time: RFC 3339, or an ISO local date-time read as UTC; at most
    /// 366 days ahead.
    #[serde(default)]
    pub schedule_at: Option<String>,
    /// Run no earlier than this many seconds from now (at most 366 days).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 31622400)]
    pub delay_seconds: Option<u64>,
    /// Free labels, kept in order.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// A repeat of this key within 24 h answers 200 with the first job and creates nothing
    /// (the `Idempotency-Key` header is read too). 1 to 255 characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 255)]
    pub idempotency_key: Option<String>,
    /// This job's backoff before its first retry, in ms (default: the server's), at most
    /// 86,400,000 and never above the server's maximum backoff.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 86400000)]
    pub retry_backoff_ms: Option<u64>,
}

/// A priority as a request may give it: a name (any case accepted; the names listed are the
/// canonical ones) or the original system's number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PriorityInput {
    /// `LOW`, `MEDIUM`, `HIGH` or `CRITICAL`.
    Name(Priority),
    /// 1 (LOW), 5 (MEDIUM), 10 (HIGH) or 15 (CRITICAL).
    #[schema(value_type = u8, example = 10)]
    Number(u8),
}

/// `POST /api/jobs/batch`'s body: `{"jobs": [...], "batchName"?}` or a bare array of job
/// requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum BatchRequest {
    /// The jobs with an optional name.
    Named {
        /// The job requests, at most the gateway's limit (1000 by default).
        jobs: Vec<JobRequest>,
        /// A name for the batch, echoed in the answer (at most 255 characters).
        #[serde(rename = "batchName", default)]
        batch_name: Option<String>,
    },
    /// Just the job requests.
    Bare(Vec<JobRequest>),
}

/// `GET /api/jobs`'s answer: `{"content": [JobResponse...], "page": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobPage {
    /// The jobs of this page, in the requested order.
    pub content: Vec<JobResponse>,
    /// Where this page sits in the whole result.
    pub page: PageInfo,
}

/// The `page` object of a [`JobPage`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageInfo {
    /// The page size asked for (1..=100).
    pub size: u32,
    /// This page's number, from 0.
    pub number: u32,
    /// How many jobs match the filters in all.
    pub total_elements: u64,
    /// How many pages of `size` the matching jobs fill.
    pub total_pages: u64,
}

/// `GET /api/jobs/{id}/attempts`'s answer: the job's attempts, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempts {
    /// The job.
    pub job_id: JobId,
    /// Each attempt: its number, worker, state, error, start and end.
    pub attempts: Vec<AttemptView>,
}

/// `GET /api/actuator/health`: `UP` when the read model answers (200), else `DOWN` (503).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GatewayHealth {
    /// `UP` or `DOWN`.
    pub status: String,
    /// Each dependency's status.
    pub components: HealthComponents,
    /// The gateway's clock, ISO-8601 UTC.
    pub timestamp: String,
}

/// The parts of [`GatewayHealth`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthComponents {
    /// The read model.
    pub read_model: ComponentHealth,
}

/// One dependency's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ComponentHealth {
    /// `UP` or `DOWN`.
    pub status: String,
}

/// The original gateway's register (`POST /api/jobs/register` on the orchestrator): a job
/// request with the job's `id` (minted when absent), `timeout` for `executionTimeout` and
/// `priority` for `jobPriority`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RegisterRequest {
    /// The job's id; registering an id again is idempotent.
    #[serde(default)]
    pub id: Option<JobId>,
    /// Seconds an attempt may run (`executionTimeout` is read too).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 604800)]
    pub timeout: Option<u64>,
    /// Every field of a job request.
    #[serde(flatten)]
    pub request: JobRequest,
}

/// A worker's status report (CONTRACT.md `POST /api/jobs/status`), as the OpenAPI document
/// describes it; read by hand so that every spelling of the original workers is accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// The job (`id` and `job_id` are read too; the path's id wins).
    #[serde(default)]
    pub job_id: Option<JobId>,
    /// `running`, `completed` or `failed`, in any case.
    pub status: ReportedStatus,
    /// The reporting worker (`worker_id` is read too).
    pub worker_id: String,
    /// The result of a completed job: a JSON object.
    #[serde(default)]
    pub result: Option<Value>,
    /// Why the attempt failed (`error_message` is read too).
    #[serde(default)]
    pub error_message: Option<String>,
    /// How far the handler got, 0 to 100.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100)]
    pub progress: Option<u8>,
    /// The attempt the report is about (from the job message); without it the report counts for
    /// the current attempt and is fenced by the lease holder's worker id.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub attempt: Option<u32>,
    /// The attempt's lease token from its job message (`lease`, 32 hex digits): required with
    /// `attempt` when the message carried one, and on every report once the attempt was taken
    /// with it; a wrong or missing token is 409.
    #[serde(default)]
    pub lease: Option<String>,
    /// A failure never to retry (bad input).
    #[serde(default)]
    pub permanent: Option<bool>,
    /// The worker's clock (ignored: the leader stamps time).
    #[serde(default)]
    pub timestamp: Option<Value>,
}

/// What a status report says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportedStatus {
    /// The worker takes the attempt's lease and starts it.
    Running,
    /// The attempt succeeded.
    Completed,
    /// The attempt failed.
    Failed,
}
