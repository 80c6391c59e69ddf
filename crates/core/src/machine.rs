//! The lifecycle state machine: `State::apply(batch)` takes commands stamped with the leader's
//! time and returns one [`Outcome`] per command plus the [`Effect`]s to carry out after commit.
//!
//! It is deterministic and does no I/O: the same log gives the same state and effects on every
//! node (DESIGN.md, "Who owns what"). Maps are `BTreeMap`s so iteration order is fixed; time and
//! randomness (backoff jitter) come in the [`Batch`], stamped by the leader.

use std::collections::BTreeSet;
use std::sync::Arc;

use imbl::{OrdMap, Vector};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::model::{JobId, JobStatus, Priority, WorkerId};
use crate::request::{JobSpec, Schedule};
use crate::time::Millis;
use crate::wire::{AttemptView, ControlMessage, JobMessage, JobResponse, StatusEvent, WIRE_FORMAT};

/// One log entry's worth of commands, stamped by the leader when it was proposed: its time and
/// a random seed (the source of backoff jitter, so every node draws the same numbers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// The leader's time when it proposed the batch; every command in it applies at this time.
    pub now: Millis,
    /// Random seed drawn by the leader, the source of backoff jitter (0 when absent).
    #[serde(default)]
    pub seed: u64,
    /// The commands, applied in order.
    pub commands: Vec<Command>,
}

/// Largest attempt floor a `Retry` takes from its caller (about a billion): the attempt number
/// can then never overflow. The route refuses more with 400; the machine clamps to it.
pub const MAX_ATTEMPT_FLOOR: u32 = 1 << 30;
/// Largest version floor a `Retry` takes from its caller: 2^53, the largest integer a JSON
/// reader in JavaScript holds exactly. The route refuses more with 400; the machine clamps to it.
pub const MAX_VERSION_FLOOR: u64 = 1 << 53;

/// A request to change the lifecycle. Every change goes through one of these, in log order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Accept a new job: QUEUED (attempt 1), or PENDING until its schedule is due. Registering an
    /// id again, or an idempotency key within its retention window, creates nothing.
    /// `max_queued` is the admission cap on PENDING + QUEUED jobs; `policy` the server's retry
    /// policy, both filled in by the leader.
    Register {
        /// The job's id, minted by the gateway.
        id: JobId,
        /// The validated request.
        spec: Box<JobSpec>,
        /// Most PENDING + QUEUED jobs allowed; `None`: no cap. A full queue refuses with 429.
        max_queued: Option<u64>,
        /// Most bytes of payload (encoded as JSON) the PENDING + QUEUED jobs may hold together;
        /// `None`: no cap. Past it, 429 (issue 11: admission bounded in bytes as well as jobs).
        #[serde(default)]
        max_queued_bytes: Option<u64>,
        /// The server's retry policy, kept with the job ([`RetryPolicy::default`] when absent).
        #[serde(default)]
        policy: RetryPolicy,
    },
    /// A worker's report for an attempt (the lease rule of DESIGN.md).
    Report(Report),
    /// Cancel a non-terminal job; a RUNNING one's worker is told to stop.
    Cancel {
        /// The job to cancel.
        id: JobId,
    },
    /// Start a new chain of attempts for a FAILED, TIMEOUT or CANCELLED job (`POST /retry`).
    /// The gateway sends what its read model holds, for a job the orchestrator no longer holds:
    /// the spec, and floors for the attempt number and the version.
    Retry {
        /// The job to retry.
        id: JobId,
        /// The job's spec as the read model holds it ([`JobSpec::from_response`]).
        spec: Box<JobSpec>,
        /// The job's original creation time, kept as its `created_at`.
        created_at: Millis,
        /// The read model's attempt number, used only for a job the orchestrator holds no
        /// tombstone of (its own numbers win): the new attempt is numbered above it. With 0,
        /// such a job is refused as not found. Clamped to [`MAX_ATTEMPT_FLOOR`].
        attempt_floor: u32,
        /// The read model's version of the job, used as `attempt_floor` is: the new versions
        /// continue above it. Clamped to [`MAX_VERSION_FLOOR`].
        version_floor: u64,
        /// The attempt history the read model holds, kept ahead of the new chain's attempts.
        previous_attempts: Vec<AttemptView>,
        /// The server's retry policy for the new chain.
        policy: RetryPolicy,
    },
    /// A timer the state machine armed is due (the host fires it; stale ones change nothing).
    TimerFired(Timer),
    /// The worker is gone: its running attempts fail ("worker lost") and are retried by policy.
    WorkerLost {
        /// The worker declared lost (its heartbeats stopped, or it restarted).
        worker_id: WorkerId,
    },
    /// The broker refused the job message of a QUEUED attempt for good (too large for it, for
    /// example): the job ends FAILED with `error`, never retried, since every copy would be
    /// refused alike (issue 11: a message the broker can never take fails that one job, and the
    /// outbox moves on). Changes nothing unless the job is still QUEUED on `attempt`.
    Undeliverable {
        /// The job whose message was refused.
        id: JobId,
        /// The attempt the refused message carried.
        attempt: u32,
        /// Why, as the broker said it (the job's `errorMessage`).
        error: String,
    },
    /// Every event up to and including `upto` reached the read model: the "published up to"
    /// watermark of DESIGN.md, rule 6.
    AckEvents {
        /// The `seq` of the last event published.
        upto: u64,
    },
}

/// What a worker says about an attempt (CONTRACT.md, `POST /api/jobs/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Report {
    /// The job the report is about.
    pub job_id: JobId,
    /// `None` for workers of the original system: the report counts for the current attempt
    /// and is fenced by the lease holder's worker id.
    pub attempt: Option<u32>,
    /// The reporting worker (`workerId`): the lease holder, or the worker asking for the lease.
    pub worker_id: WorkerId,
    /// What happened.
    pub kind: ReportKind,
    /// The attempt's lease token from its job message (`lease`): required when the report names
    /// its `attempt` and the attempt has a token, and for every report once the attempt was
    /// taken with it. `None` from workers of the original system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
}

/// The reported event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub enum ReportKind {
    /// The worker wants to start the attempt: the first such report takes the lease.
    Running,
    /// 0..=100.
    Progress {
        /// Percent done; more than 100 is read as 100.
        percent: u8,
    },
    /// The handler succeeded: the job becomes COMPLETED.
    Completed {
        /// The handler's result, the job's `result`.
        result: Value,
    },
    /// `permanent` failures (bad input) are never retried.
    Failed {
        /// The handler's message, the job's `errorMessage`.
        error: String,
        /// True for a failure no retry can fix.
        permanent: bool,
    },
}

/// How failed attempts are retried: exponential backoff from `base_ms`, capped at `max_ms`,
/// with full jitter (a uniform draw from 0 to the delay) or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Upper bound of the first retry's delay, in ms; a job's `retryBackoffMs` overrides it.
    pub base_ms: u64,
    /// Cap on any retry delay, in ms.
    pub max_ms: u64,
    /// Whether the delay is drawn below its bound or waited in full.
    pub jitter: Jitter,
}

/// Backoff jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Jitter {
    /// Wait a uniform draw from 0 to the delay's bound.
    Full,
    /// Wait the delay's bound exactly.
    None,
}

impl Default for RetryPolicy {
    /// 1 s base, 300 s cap, full jitter (issue 3).
    fn default() -> RetryPolicy {
        RetryPolicy {
            base_ms: 1_000,
            max_ms: 300_000,
            jitter: Jitter::Full,
        }
    }
}

impl RetryPolicy {
    /// The upper bound of the delay before retry number `retry` (1 for the first retry):
    /// `min(max, base * 2^(retry - 1))`, in milliseconds.
    pub fn ceiling_ms(&self, retry: u32) -> u64 {
        let factor = 1u64
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u64::MAX);
        self.base_ms.saturating_mul(factor).min(self.max_ms)
    }

    /// The delay before retry number `retry`, drawing jitter from `random`: the ceiling itself
    /// without jitter, else uniform in `0..=ceiling`.
    pub fn delay_ms(&self, retry: u32, random: u64) -> u64 {
        let ceiling = self.ceiling_ms(retry);
        match self.jitter {
            Jitter::None => ceiling,
            Jitter::Full => random % ceiling.saturating_add(1),
        }
    }
}

/// A timer the state machine asks the host to arm; when due, the host commits
/// [`Command::TimerFired`] with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timer {
    /// When the timer is due, leader time in epoch ms.
    pub at: Millis,
    /// The job it was armed for.
    pub job_id: JobId,
    /// The attempt it was armed for; it changes nothing once the job is on another attempt.
    pub attempt: u32,
    /// What happens when it fires.
    pub kind: TimerKind,
}

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TimerKind {
    /// A PENDING job's schedule is due.
    Due,
    /// A RETRYING job's backoff is over.
    Retry,
    /// A RUNNING attempt's `executionTimeout` is over.
    ExecutionTimeout,
}

/// Why a command changed nothing. Each maps to one HTTP status (see [`Refusal::http_status`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error, ToSchema)]
pub enum Refusal {
    /// The job is neither live nor held as a tombstone: unknown, or forgotten after the retention
    /// window (404).
    #[error("Job not found: {0}")]
    NotFound(JobId),
    /// The job is already terminal: a late report, or a repeated cancel (409).
    #[error("job {id} is already {status}")]
    Terminal {
        /// The job.
        id: JobId,
        /// Its terminal state.
        status: JobStatus,
    },
    /// A report names an attempt other than the job's current one (409).
    #[error("attempt {reported} of job {id} is superseded by attempt {current}")]
    StaleAttempt {
        /// The job.
        id: JobId,
        /// The attempt the report named.
        reported: u32,
        /// The job's current attempt.
        current: u32,
    },
    /// Another worker holds the attempt's lease (409; DESIGN.md, rule 3).
    #[error("attempt {attempt} of job {id} is leased to worker {holder}")]
    LeaseHeld {
        /// The job.
        id: JobId,
        /// The leased attempt.
        attempt: u32,
        /// The worker holding the lease.
        holder: WorkerId,
    },
    /// The report does not carry the attempt's lease token (409; issue 11).
    #[error("attempt {attempt} of job {id} is leased under another token")]
    WrongLease {
        /// The job.
        id: JobId,
        /// The leased attempt.
        attempt: u32,
    },
    /// The report does not fit the job's state: `running` for a PENDING or RETRYING job, or
    /// `progress`, `completed` or `failed` for a job that is not RUNNING (409).
    #[error("job {id} is {status}, not RUNNING")]
    NotRunning {
        /// The job.
        id: JobId,
        /// Its state.
        status: JobStatus,
    },
    /// `Register` past the admission cap (429).
    #[error("queue full: {cap} jobs are waiting to run")]
    QueueFull {
        /// The cap: most PENDING + QUEUED jobs allowed.
        cap: u64,
    },
    /// `Register` past the admission cap in bytes (429).
    #[error("queue full: the waiting jobs' payloads would pass {cap_bytes} bytes")]
    QueueFullBytes {
        /// The cap: most bytes of payload the PENDING + QUEUED jobs may hold.
        cap_bytes: u64,
    },
    /// `Retry` of a job that is live or COMPLETED (409).
    #[error("job {id} is {status}; only FAILED, TIMEOUT or CANCELLED jobs can be retried")]
    NotRetryable {
        /// The job.
        id: JobId,
        /// Its state.
        status: JobStatus,
    },
}

impl Refusal {
    /// 404 for an unknown job, 429 for a full queue, 409 for every refused transition.
    pub fn http_status(&self) -> u16 {
        match self {
            Refusal::NotFound(_) => 404,
            Refusal::QueueFull { .. } | Refusal::QueueFullBytes { .. } => 429,
            _ => 409,
        }
    }
}

/// The answer to one command.
pub type Outcome = Result<Applied, Refusal>;

/// A command that was applied (or was a harmless repeat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Applied {
    /// The job's snapshot after the command, when the job is still held in full.
    pub job: Option<Box<JobResponse>>,
    /// False when a `Register` found the id (or its idempotency key) already known.
    pub created: bool,
    /// The job the command concerned: for a repeated idempotency key, the first job's id.
    pub job_id: Option<JobId>,
}

/// What the host must do after the commit, in this order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Effect {
    /// Publish the attempt to the job queue of its priority.
    Dispatch(Box<JobMessage>),
    /// Tell the worker holding the attempt's lease to stop its handler (CONTRACT.md
    /// `control.exchange`, routing key = worker id).
    StopAttempt(ControlMessage),
    /// Arm a timer; the host commits [`Command::TimerFired`] when it is due.
    ArmTimer(Timer),
    /// Publish the lifecycle event (read model, SSE).
    Emit(Box<StatusEvent>),
}

/// Settings that are part of the replicated state, so every node applies them alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineConfig {
    /// How long a terminal job's tombstone is kept, in milliseconds (default 15 minutes). Late
    /// reports for a job past it get 404 instead of 409 (both refuse); the gateway answers a
    /// cancel of such a job with 409 from its read model.
    pub tombstone_retention_ms: i64,
    /// How long an idempotency key answers with its first job, in milliseconds (default 24 h).
    #[serde(default = "default_idempotency_retention_ms")]
    pub idempotency_retention_ms: i64,
    /// Most tombstones kept (default 200,000), whatever their age: past it the oldest go first,
    /// so finished jobs cost a bounded number of bytes (issue 13, item 4; about 200 bytes each,
    /// at most about 700 with a 255-byte type and worker id). At 3,000 jobs/s the window is
    /// then about a minute rather than 15: still far past the gateway's 10 s of register
    /// retries, and a late report refused with 404 instead of 409 is refused all the same.
    #[serde(default = "default_max_tombstones")]
    pub max_tombstones: usize,
    /// Most idempotency keys kept (default 1,000,000), whatever their age: past it the oldest
    /// go first (about 100 bytes each with a 20-byte key, at most about 350).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn default_idempotency_retention_ms() -> i64 {
    24 * 3600 * 1000
}

fn default_max_tombstones() -> usize {
    200_000
}

fn default_max_keys() -> usize {
    1_000_000
}

impl Default for MachineConfig {
    fn default() -> MachineConfig {
        MachineConfig {
            tombstone_retention_ms: 15 * 60 * 1000,
            idempotency_retention_ms: default_idempotency_retention_ms(),
            max_tombstones: default_max_tombstones(),
            max_keys: default_max_keys(),
        }
    }
}

/// One attempt of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The attempt's number, from 1; never repeats for the job.
    pub number: u32,
    /// The worker that took the lease; `None` until the attempt starts.
    pub worker_id: Option<WorkerId>,
    /// Where the attempt stands.
    pub state: AttemptState,
    /// Why the attempt failed: the handler's message, "worker lost" or the timeout message.
    pub error: Option<String>,
    /// When the worker's `running` report was accepted, leader time.
    pub started_at: Option<Millis>,
    /// When the attempt ended, leader time; `None` while it is queued or running.
    pub ended_at: Option<Millis>,
}

/// Where an attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptState {
    /// Dispatched, waiting for a worker (`QUEUED`).
    Queued,
    /// A worker holds its lease (`RUNNING`).
    Running,
    /// The handler succeeded (`COMPLETED`).
    Completed,
    /// The handler failed (`FAILED`).
    Failed,
    /// It ran past `executionTimeout` (`TIMEOUT`).
    TimedOut,
    /// The job was cancelled while the attempt was queued or running (`CANCELLED`).
    Cancelled,
    /// Its worker was declared lost.
    Lost,
}

impl AttemptState {
    fn as_str(self) -> &'static str {
        match self {
            AttemptState::Queued => "QUEUED",
            AttemptState::Running => "RUNNING",
            AttemptState::Completed => "COMPLETED",
            AttemptState::Failed => "FAILED",
            AttemptState::TimedOut => "TIMEOUT",
            AttemptState::Cancelled => "CANCELLED",
            AttemptState::Lost => "LOST",
        }
    }
}

impl AttemptRecord {
    /// The attempt as clients see it.
    pub fn view(&self) -> AttemptView {
        AttemptView {
            attempt: self.number,
            worker_id: self.worker_id.as_ref().map(|worker| worker.0.clone()),
            state: self.state.as_str().to_string(),
            error_message: self.error.clone(),
            started_at: self.started_at.map(Millis::to_iso),
            ended_at: self.ended_at.map(Millis::to_iso),
        }
    }
}

/// A non-terminal job as the state machine holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job's id.
    pub id: JobId,
    /// What the client asked to run.
    pub spec: JobSpec,
    /// The job's lifecycle state; a job that turns terminal leaves for a [`Tombstone`].
    pub status: JobStatus,
    /// Grows by one with every change of this job.
    pub version: u64,
    /// The current attempt's number, from 1; never repeats for the job.
    pub attempt: u32,
    /// While RUNNING, the lease holder; afterwards, the last worker that ran it.
    pub worker_id: Option<WorkerId>,
    /// The handler's result, set when the job completes.
    pub result: Option<Value>,
    /// The last failed attempt's error; cleared when the next attempt starts.
    pub error_message: Option<String>,
    /// Retries so far in the current chain of attempts (`retryCount`).
    pub retry_count: u32,
    /// 0..=100 as last reported for the current attempt; `None` before any report.
    pub progress: Option<u8>,
    /// When the job was registered, leader time.
    pub created_at: Millis,
    /// When the current attempt started; `None` until it does.
    pub started_at: Option<Millis>,
    /// When the job became terminal, leader time; `None` until then.
    pub completed_at: Option<Millis>,
    /// Sequence number of the event that queued the current attempt: FIFO order within a priority.
    pub queued_seq: u64,
    /// The retry policy stamped at registration.
    #[serde(default)]
    pub policy: RetryPolicy,
    /// When a PENDING job's schedule or a RETRYING job's backoff is due.
    #[serde(default)]
    pub due_at: Option<Millis>,
    /// Every attempt so far, oldest first.
    #[serde(default)]
    pub attempts: Vec<AttemptRecord>,
    /// The payload's size encoded as JSON, in bytes: what it counts against the admission cap
    /// in bytes while it waits.
    #[serde(default)]
    pub payload_bytes: u64,
    /// The current attempt's lease token ([`lease_token`]), sent in its job message: a report
    /// naming the attempt must carry it (issue 11). `None` in states written before tokens.
    #[serde(default)]
    pub lease: Option<String>,
    /// The running attempt was taken with its token: every report for it must then carry the
    /// token, with or without `attempt` (a report of the original format cannot bypass it).
    #[serde(default)]
    pub fenced: bool,
}

impl JobRecord {
    /// A new job's record before its first change: QUEUED, attempt 1, version 0 (the register
    /// change makes it 1).
    pub fn queued(id: JobId, spec: JobSpec, created_at: Millis) -> JobRecord {
        let payload_bytes = payload_bytes(&spec);
        JobRecord {
            id,
            spec,
            status: JobStatus::Queued,
            version: 0,
            attempt: 1,
            worker_id: None,
            result: None,
            error_message: None,
            retry_count: 0,
            progress: None,
            created_at,
            started_at: None,
            completed_at: None,
            queued_seq: 0,
            policy: RetryPolicy::default(),
            due_at: None,
            attempts: Vec::new(),
            payload_bytes,
            lease: None,
            fenced: false,
        }
    }

    /// The current attempt's record (pushed when the attempt is dispatched).
    fn current_attempt(&mut self) -> Option<&mut AttemptRecord> {
        self.attempts
            .last_mut()
            .filter(|attempt| attempt.number == self.attempt)
    }

    /// The timer this job waits on, if any: its schedule, its backoff or its execution timeout.
    pub fn timer(&self) -> Option<Timer> {
        let (kind, at) = match self.status {
            JobStatus::Pending => (TimerKind::Due, self.due_at?),
            JobStatus::Retrying => (TimerKind::Retry, self.due_at?),
            JobStatus::Running => {
                let timeout_ms = i64::try_from(self.spec.execution_timeout_s.saturating_mul(1000))
                    .unwrap_or(i64::MAX);
                (
                    TimerKind::ExecutionTimeout,
                    Millis(self.started_at?.0.saturating_add(timeout_ms)),
                )
            }
            _ => return None,
        };
        Some(Timer {
            at,
            job_id: self.id,
            attempt: self.attempt,
            kind,
        })
    }

    /// The job's snapshot as clients see it.
    pub fn response(&self) -> JobResponse {
        let queue_time_ms = self
            .started_at
            .map_or(0, |started| started.since(self.created_at));
        let execution_time_ms = match (self.started_at, self.completed_at) {
            (Some(started), Some(completed)) => completed.since(started),
            _ => 0,
        };
        JobResponse {
            id: self.id,
            job_type: self.spec.job_type.clone(),
            priority: self.spec.priority,
            status: self.status,
            worker_id: self.worker_id.as_ref().map(|worker| worker.0.clone()),
            payload: self.spec.payload.clone(),
            result: self.result.clone(),
            error_message: self.error_message.clone(),
            retry_count: self.retry_count,
            max_retries: self.spec.max_retries,
            execution_timeout: self.spec.execution_timeout_s,
            created_at: self.created_at.to_iso(),
            started_at: self.started_at.map(Millis::to_iso),
            completed_at: self.completed_at.map(Millis::to_iso),
            metadata: self.spec.metadata.clone(),
            parent_job_id: self.spec.parent_job_id.clone(),
            callback_sent: false,
            queue_time_ms,
            execution_time_ms,
            total_duration_ms: self.status.is_terminal().then(|| {
                self.completed_at
                    .unwrap_or(self.created_at)
                    .since(self.created_at)
            }),
            tags: self.spec.tags.clone(),
            progress: self.progress,
            attempt: self.attempt,
            version: self.version,
            attempts: self.attempts.iter().map(AttemptRecord::view).collect(),
        }
    }

    /// The message that dispatches the current attempt.
    pub fn message(&self) -> JobMessage {
        JobMessage {
            id: self.id,
            job_type: self.spec.job_type.clone(),
            priority: self.spec.priority.number(),
            status: self.status,
            worker_id: None,
            payload: self.spec.payload.clone(),
            result: None,
            error_message: None,
            retry_count: self.retry_count,
            max_retries: self.spec.max_retries,
            execution_timeout: self.spec.execution_timeout_s,
            created_at: self.created_at.to_iso(),
            started_at: None,
            completed_at: None,
            metadata: self.spec.metadata.clone(),
            attempt: self.attempt,
            lease: self.lease.clone(),
            format: WIRE_FORMAT,
        }
    }
}

/// What is kept of a terminal job for the retention window: enough to refuse late reports and
/// repeated cancels (DESIGN.md, "Live state stays small").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The job's id.
    pub id: JobId,
    /// The handler's name (`type`).
    pub job_type: String,
    /// The job's priority.
    pub priority: Priority,
    /// The terminal state: COMPLETED, FAILED, TIMEOUT or CANCELLED.
    pub status: JobStatus,
    /// The last attempt's number; a retry numbers its attempts above it.
    pub attempt: u32,
    /// The last version; a retry's versions continue above it.
    pub version: u64,
    /// The worker that ran the last attempt, if any.
    pub worker_id: Option<WorkerId>,
    /// When the job was registered, leader time.
    pub created_at: Millis,
    /// When the last attempt started, if it did.
    pub started_at: Option<Millis>,
    /// When the job became terminal, leader time; the retention window counts from here.
    pub completed_at: Millis,
}

/// The replicated lifecycle state. Its collections are persistent (imbl: structure shared
/// between clones), so a snapshot clones it in O(1) under the state lock instead of copying a
/// million jobs (issue 13, item 4); serialized they are plain maps and lists, as before. Large
/// values sit behind an `Arc` (copied on write), so a tree node stays small.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct State {
    config: MachineConfig,
    /// Non-terminal jobs.
    jobs: OrdMap<JobId, Arc<JobRecord>>,
    /// Terminal jobs within the retention window.
    tombstones: OrdMap<JobId, Arc<Tombstone>>,
    /// Tombstones by completion time, oldest first, for pruning.
    tombstone_order: Vector<(Millis, JobId)>,
    /// Number of PENDING + QUEUED jobs: the admission cap's measure.
    n_waiting: u64,
    /// Bytes of payload the PENDING + QUEUED jobs hold: the admission cap in bytes' measure.
    #[serde(default)]
    bytes_waiting: u64,
    /// The last sequence number handed out (0: none yet).
    last_seq: u64,
    /// Every event up to here reached the read model.
    published_upto: u64,
    /// Events past `published_upto`, oldest first, kept to publish again after a restart.
    unpublished: Vector<Arc<StatusEvent>>,
    /// The latest leader time applied: a new leader never stamps an earlier one.
    #[serde(default)]
    leader_time: Millis,
    /// Idempotency keys within their retention window: the first job's id and when the key
    /// expires.
    #[serde(default)]
    keys: OrdMap<String, (JobId, Millis)>,
    /// Keys by expiry, oldest first, for pruning.
    #[serde(default)]
    key_order: Vector<(Millis, String)>,
}

/// A job's place in the machine: live, finished (tombstone) or unknown.
enum Found<'a> {
    Live(&'a mut JobRecord),
    Finished(&'a Tombstone),
    Unknown,
}

/// Mixes the batch seed with a job and attempt into one pseudo-random number (splitmix64), so
/// each retry draws its own jitter and every node draws the same.
fn draw(seed: u64, id: JobId, attempt: u32) -> u64 {
    let (high, low) = id.0.as_u64_pair();
    let mut z =
        seed ^ high.rotate_left(17) ^ low ^ u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The lease token of attempt `attempt` of job `id` dispatched in a batch with `seed`: 32 hex
/// digits, the first 128 bits of SHA-256 over a domain tag, the seed, the id and the attempt.
/// Every node derives the same token from the log. Guessing a token online takes about 2^63
/// reports (the leader's seed is 64 random bits); a worker knowing one token could learn the
/// other tokens of its batch only by searching the seed offline, about 2^64 SHA-256 runs.
pub fn lease_token(seed: u64, id: JobId, attempt: u32) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"distriqueue lease v1\0")
        .chain_update(seed.to_be_bytes())
        .chain_update(id.0.as_bytes())
        .chain_update(attempt.to_be_bytes())
        .finalize();
    crate::to_hex(&digest[..16])
}

/// A spec's payload size encoded as JSON, in bytes.
fn payload_bytes(spec: &JobSpec) -> u64 {
    u64::try_from(crate::encoded_len(&spec.payload)).unwrap_or(u64::MAX)
}

/// Compares a presented lease token with the attempt's in time independent of where they first
/// differ.
fn same_token(presented: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

/// Why an attempt ended without success.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The handler failed; `permanent` failures are never retried.
    Handler { permanent: bool },
    /// The attempt ran past `executionTimeout`.
    TimedOut,
    /// Its worker was declared lost.
    WorkerLost,
}

impl State {
    /// An empty state with these settings.
    pub fn new(config: MachineConfig) -> State {
        State {
            config,
            ..State::default()
        }
    }

    /// Applies a batch in order: one outcome per command, effects in the order to carry out.
    pub fn apply(&mut self, batch: &Batch) -> (Vec<Outcome>, Vec<Effect>) {
        let mut effects = Vec::new();
        self.leader_time = self.leader_time.max(batch.now);
        self.prune(batch.now);
        let outcomes = batch
            .commands
            .iter()
            .map(|command| self.apply_command(batch, command, &mut effects))
            .collect();
        (outcomes, effects)
    }

    fn apply_command(
        &mut self,
        batch: &Batch,
        command: &Command,
        effects: &mut Vec<Effect>,
    ) -> Outcome {
        let now = batch.now;
        match command {
            Command::Register {
                id,
                spec,
                max_queued,
                max_queued_bytes,
                policy,
            } => self.register(
                batch,
                *id,
                spec,
                (*max_queued, *max_queued_bytes),
                *policy,
                effects,
            ),
            Command::Report(report) => self.report(batch, report, effects),
            Command::Cancel { id } => self.cancel(now, *id, effects),
            Command::Retry {
                id,
                spec,
                created_at,
                attempt_floor,
                version_floor,
                previous_attempts,
                policy,
            } => self.retry(
                batch,
                *id,
                spec,
                *created_at,
                (*attempt_floor, *version_floor),
                previous_attempts,
                *policy,
                effects,
            ),
            Command::TimerFired(timer) => self.timer_fired(batch, *timer, effects),
            Command::WorkerLost { worker_id } => {
                self.worker_lost(batch, worker_id, effects);
                Ok(Applied::default())
            }
            Command::Undeliverable { id, attempt, error } => {
                self.undeliverable(batch, *id, *attempt, error, effects)
            }
            Command::AckEvents { upto } => {
                self.ack_events(*upto);
                Ok(Applied::default())
            }
        }
    }

    fn find(&mut self, id: JobId) -> Found<'_> {
        if let Some(record) = self.jobs.get_mut(&id) {
            return Found::Live(Arc::make_mut(record));
        }
        match self.tombstones.get(&id) {
            Some(tombstone) => Found::Finished(tombstone.as_ref()),
            None => Found::Unknown,
        }
    }

    fn register(
        &mut self,
        batch: &Batch,
        id: JobId,
        spec: &JobSpec,
        caps: (Option<u64>, Option<u64>),
        policy: RetryPolicy,
        effects: &mut Vec<Effect>,
    ) -> Outcome {
        let now = batch.now;
        if let Some(answer) = self.register_answer(id, spec, caps) {
            return answer;
        }
        let mut record = JobRecord::queued(id, spec.clone(), now);
        record.policy = policy;
        let due = match spec.schedule {
            Some(Schedule::At(at)) => Some(at),
            Some(Schedule::Delay(delay_ms)) => Some(Millis(
                now.0
                    .saturating_add(i64::try_from(delay_ms).unwrap_or(i64::MAX)),
            )),
            None => None,
        }
        .filter(|due| *due > now);
        if let Some(due) = due {
            record.status = JobStatus::Pending;
            record.due_at = Some(due);
        }
        if let Some(key) = &spec.idempotency_key {
            let expires = Millis(now.0.saturating_add(self.config.idempotency_retention_ms));
            self.keys.insert(key.clone(), (id, expires));
            self.key_order.push_back((expires, key.clone()));
        }
        if let Some(timer) = record.timer() {
            effects.push(Effect::ArmTimer(timer));
        }
        self.start_waiting(record.payload_bytes);
        self.jobs.insert(id, Arc::new(record));
        let dispatch = due.is_none().then_some(batch.seed);
        let job = self.changed(now, id, dispatch, effects);
        Ok(Applied {
            job,
            created: true,
            job_id: Some(id),
        })
    }

    /// What a `Register` of `id` with `spec` answers without creating a job: the first job for
    /// a repeat of the id or of the idempotency key (`created: false`), or
    /// [`Refusal::QueueFull`] when `max_queued` jobs already wait, or
    /// [`Refusal::QueueFullBytes`] when the job's payload would take the waiting jobs past
    /// `max_queued_bytes`; `None` when it would create the job. `caps` is `(max_queued,
    /// max_queued_bytes)`. Hosts answer these before proposing (issue 11: repeats never grow
    /// the log); `apply` decides again, in log order.
    pub fn register_answer(
        &self,
        id: JobId,
        spec: &JobSpec,
        (max_queued, max_queued_bytes): (Option<u64>, Option<u64>),
    ) -> Option<Outcome> {
        let known = spec
            .idempotency_key
            .as_ref()
            .and_then(|key| self.keys.get(key))
            .map(|(first, _)| *first);
        let existing = known.unwrap_or(id);
        let repeat = |job: Option<Box<JobResponse>>| {
            Some(Ok(Applied {
                job,
                created: false,
                job_id: Some(existing),
            }))
        };
        if let Some(record) = self.jobs.get(&existing) {
            return repeat(Some(Box::new(record.response())));
        }
        // A finished job, or one finished and forgotten that the key still names.
        if known.is_some() || self.tombstones.contains_key(&existing) {
            return repeat(None);
        }
        if let Some(cap) = max_queued.filter(|cap| self.n_waiting >= *cap) {
            return Some(Err(Refusal::QueueFull { cap }));
        }
        let bytes = self.bytes_waiting.saturating_add(payload_bytes(spec));
        match max_queued_bytes {
            Some(cap_bytes) if bytes > cap_bytes => {
                Some(Err(Refusal::QueueFullBytes { cap_bytes }))
            }
            _ => None,
        }
    }

    fn report(&mut self, batch: &Batch, report: &Report, effects: &mut Vec<Effect>) -> Outcome {
        let now = batch.now;
        let id = report.job_id;
        let record = match self.find(id) {
            Found::Live(record) => record,
            Found::Finished(tombstone) => {
                return Err(Refusal::Terminal {
                    id,
                    status: tombstone.status,
                })
            }
            Found::Unknown => return Err(Refusal::NotFound(id)),
        };
        if let Some(reported) = report.attempt {
            if reported != record.attempt {
                return Err(Refusal::StaleAttempt {
                    id,
                    reported,
                    current: record.attempt,
                });
            }
        }
        if let Some(expected) = &record.lease {
            let needs_token = report.attempt.is_some() || record.fenced;
            let carried = report.lease.as_deref();
            if (needs_token || carried.is_some())
                && !carried.is_some_and(|token| same_token(token, expected))
            {
                return Err(Refusal::WrongLease {
                    id,
                    attempt: record.attempt,
                });
            }
        }
        let lease_refusal = |record: &JobRecord| match (&record.status, &record.worker_id) {
            (JobStatus::Running, Some(holder)) => Refusal::LeaseHeld {
                id,
                attempt: record.attempt,
                holder: holder.clone(),
            },
            (status, _) => Refusal::NotRunning {
                id,
                status: *status,
            },
        };
        let holds_lease = record.status == JobStatus::Running
            && record.worker_id.as_ref() == Some(&report.worker_id);
        match &report.kind {
            ReportKind::Running => {
                if holds_lease {
                    // A repeat from the holder (its first answer was lost): answered as the
                    // first, changing nothing.
                    return Ok(Applied::default());
                }
                if record.status != JobStatus::Queued {
                    return Err(lease_refusal(record));
                }
                record.status = JobStatus::Running;
                record.fenced = report.lease.is_some();
                record.worker_id = Some(report.worker_id.clone());
                record.started_at = Some(now);
                record.progress = None;
                // The previous attempt's error stays in its attempt record.
                record.error_message = None;
                if let Some(attempt) = record.current_attempt() {
                    attempt.state = AttemptState::Running;
                    attempt.worker_id = Some(report.worker_id.clone());
                    attempt.started_at = Some(now);
                }
                if let Some(timer) = record.timer() {
                    effects.push(Effect::ArmTimer(timer));
                }
                let bytes = record.payload_bytes;
                self.stop_waiting(bytes);
            }
            ReportKind::Progress { percent } => {
                if !holds_lease {
                    return Err(lease_refusal(record));
                }
                record.progress = Some((*percent).min(100));
            }
            ReportKind::Completed { result } => {
                if !holds_lease {
                    return Err(lease_refusal(record));
                }
                record.status = JobStatus::Completed;
                record.result = Some(result.clone());
                record.error_message = None;
                record.progress = Some(100);
                record.completed_at = Some(now);
                if let Some(attempt) = record.current_attempt() {
                    attempt.state = AttemptState::Completed;
                    attempt.ended_at = Some(now);
                }
            }
            ReportKind::Failed { error, permanent } => {
                if !holds_lease {
                    return Err(lease_refusal(record));
                }
                Self::fail_attempt(
                    batch,
                    record,
                    error,
                    Failure::Handler {
                        permanent: *permanent,
                    },
                    effects,
                );
            }
        }
        let job = self.changed(now, id, None, effects);
        Ok(Applied {
            job,
            created: false,
            job_id: Some(id),
        })
    }

    /// Ends the current (running) attempt without success: RETRYING with a backoff timer when
    /// retries are left and the failure is not permanent, else FAILED (TIMEOUT for a timeout).
    fn fail_attempt(
        batch: &Batch,
        record: &mut JobRecord,
        error: &str,
        failure: Failure,
        effects: &mut Vec<Effect>,
    ) {
        let now = batch.now;
        let attempt_state = match failure {
            Failure::Handler { .. } => AttemptState::Failed,
            Failure::TimedOut => AttemptState::TimedOut,
            Failure::WorkerLost => AttemptState::Lost,
        };
        if let Some(attempt) = record.current_attempt() {
            attempt.state = attempt_state;
            attempt.error = Some(error.to_string());
            attempt.ended_at = Some(now);
        }
        record.error_message = Some(error.to_string());
        let permanent = matches!(failure, Failure::Handler { permanent: true });
        if permanent || record.retry_count >= record.spec.max_retries {
            record.status = if failure == Failure::TimedOut {
                JobStatus::Timeout
            } else {
                JobStatus::Failed
            };
            record.completed_at = Some(now);
            return;
        }
        record.retry_count += 1;
        // The failed attempt's times stay in its record; the job's times are the next attempt's.
        record.started_at = None;
        let policy = RetryPolicy {
            base_ms: record
                .spec
                .retry_backoff_ms
                .unwrap_or(record.policy.base_ms),
            ..record.policy
        };
        let delay_ms = policy.delay_ms(
            record.retry_count,
            draw(batch.seed, record.id, record.attempt),
        );
        record.status = JobStatus::Retrying;
        record.due_at = Some(Millis(
            now.0
                .saturating_add(i64::try_from(delay_ms).unwrap_or(i64::MAX)),
        ));
        if let Some(timer) = record.timer() {
            effects.push(Effect::ArmTimer(timer));
        }
    }

    fn timer_fired(&mut self, batch: &Batch, timer: Timer, effects: &mut Vec<Effect>) -> Outcome {
        let now = batch.now;
        let id = timer.job_id;
        let Found::Live(record) = self.find(id) else {
            return Ok(Applied::default());
        };
        // A timer counts only for the attempt and state it was armed for, once due.
        if record.attempt != timer.attempt
            || record
                .timer()
                .is_none_or(|armed| armed.kind != timer.kind || armed.at > now)
        {
            return Ok(Applied::default());
        }
        let dispatch = match timer.kind {
            TimerKind::Due => {
                record.status = JobStatus::Queued;
                record.due_at = None;
                true
            }
            TimerKind::Retry => {
                record.status = JobStatus::Queued;
                record.due_at = None;
                record.attempt = record.attempt.saturating_add(1);
                record.worker_id = None;
                record.started_at = None;
                record.progress = None;
                let bytes = record.payload_bytes;
                self.start_waiting(bytes);
                true
            }
            TimerKind::ExecutionTimeout => {
                if let Some(holder) = &record.worker_id {
                    effects.push(Effect::StopAttempt(ControlMessage::Cancel {
                        worker_id: holder.clone(),
                        job_id: id,
                        attempt: record.attempt,
                    }));
                }
                let error = format!(
                    "execution timed out after {} s",
                    record.spec.execution_timeout_s
                );
                Self::fail_attempt(batch, record, &error, Failure::TimedOut, effects);
                false
            }
        };
        let job = self.changed(now, id, dispatch.then_some(batch.seed), effects);
        Ok(Applied {
            job,
            created: false,
            job_id: Some(id),
        })
    }

    fn cancel(&mut self, now: Millis, id: JobId, effects: &mut Vec<Effect>) -> Outcome {
        let record = match self.find(id) {
            Found::Live(record) => record,
            Found::Finished(tombstone) => {
                return Err(Refusal::Terminal {
                    id,
                    status: tombstone.status,
                })
            }
            Found::Unknown => return Err(Refusal::NotFound(id)),
        };
        let was_waiting = matches!(record.status, JobStatus::Pending | JobStatus::Queued);
        if let (JobStatus::Running, Some(worker_id)) = (record.status, &record.worker_id) {
            effects.push(Effect::StopAttempt(ControlMessage::Cancel {
                worker_id: worker_id.clone(),
                job_id: id,
                attempt: record.attempt,
            }));
        }
        if matches!(record.status, JobStatus::Queued | JobStatus::Running) {
            if let Some(attempt) = record.current_attempt() {
                attempt.state = AttemptState::Cancelled;
                attempt.ended_at = Some(now);
            }
        }
        record.status = JobStatus::Cancelled;
        record.due_at = None;
        record.completed_at = Some(now);
        if was_waiting {
            let bytes = record.payload_bytes;
            self.stop_waiting(bytes);
        }
        let job = self.changed(now, id, None, effects);
        Ok(Applied {
            job,
            created: false,
            job_id: Some(id),
        })
    }

    #[allow(clippy::too_many_arguments)] // one per field of `Command::Retry`
    fn retry(
        &mut self,
        batch: &Batch,
        id: JobId,
        spec: &JobSpec,
        created_at: Millis,
        (attempt_floor, version_floor): (u32, u64),
        previous_attempts: &[AttemptView],
        policy: RetryPolicy,
        effects: &mut Vec<Effect>,
    ) -> Outcome {
        let (last_attempt, last_version) = match self.find(id) {
            Found::Live(record) => {
                return Err(Refusal::NotRetryable {
                    id,
                    status: record.status,
                })
            }
            Found::Finished(tombstone) if tombstone.status == JobStatus::Completed => {
                return Err(Refusal::NotRetryable {
                    id,
                    status: tombstone.status,
                })
            }
            // What the orchestrator holds itself wins over what the caller says.
            Found::Finished(tombstone) => (tombstone.attempt, tombstone.version),
            Found::Unknown if attempt_floor == 0 => return Err(Refusal::NotFound(id)),
            Found::Unknown => (
                attempt_floor.min(MAX_ATTEMPT_FLOOR),
                version_floor.min(MAX_VERSION_FLOOR),
            ),
        };
        self.tombstones.remove(&id);
        let mut record = JobRecord::queued(id, spec.clone(), created_at);
        record.policy = policy;
        record.attempt = last_attempt.saturating_add(1);
        record.version = last_version;
        record.attempts = previous_attempts
            .iter()
            .map(|view| AttemptRecord {
                number: view.attempt,
                worker_id: view.worker_id.clone().map(WorkerId),
                state: match view.state.as_str() {
                    "COMPLETED" => AttemptState::Completed,
                    "TIMEOUT" => AttemptState::TimedOut,
                    "CANCELLED" => AttemptState::Cancelled,
                    "LOST" => AttemptState::Lost,
                    _ => AttemptState::Failed,
                },
                error: view.error_message.clone(),
                started_at: view
                    .started_at
                    .as_deref()
                    .and_then(crate::time::parse_client_time),
                ended_at: view
                    .ended_at
                    .as_deref()
                    .and_then(crate::time::parse_client_time),
            })
            .collect();
        self.start_waiting(record.payload_bytes);
        self.jobs.insert(id, Arc::new(record));
        let job = self.changed(batch.now, id, Some(batch.seed), effects);
        Ok(Applied {
            job,
            created: false,
            job_id: Some(id),
        })
    }

    fn undeliverable(
        &mut self,
        batch: &Batch,
        id: JobId,
        attempt: u32,
        error: &str,
        effects: &mut Vec<Effect>,
    ) -> Outcome {
        let Found::Live(record) = self.find(id) else {
            return Ok(Applied::default());
        };
        if record.status != JobStatus::Queued || record.attempt != attempt {
            return Ok(Applied::default());
        }
        let error = crate::protocol::truncate_error(error);
        Self::fail_attempt(
            batch,
            record,
            &error,
            Failure::Handler { permanent: true },
            effects,
        );
        let bytes = record.payload_bytes;
        self.stop_waiting(bytes);
        let job = self.changed(batch.now, id, None, effects);
        Ok(Applied {
            job,
            created: false,
            job_id: Some(id),
        })
    }

    fn worker_lost(&mut self, batch: &Batch, worker_id: &WorkerId, effects: &mut Vec<Effect>) {
        let lost: Vec<JobId> = self
            .jobs
            .values()
            .filter(|record| {
                record.status == JobStatus::Running && record.worker_id.as_ref() == Some(worker_id)
            })
            .map(|record| record.id)
            .collect();
        for id in lost {
            if let Some(record) = self.jobs.get_mut(&id).map(Arc::make_mut) {
                // Should the worker come back, it must not go on with an attempt retried elsewhere.
                effects.push(Effect::StopAttempt(ControlMessage::Cancel {
                    worker_id: worker_id.clone(),
                    job_id: id,
                    attempt: record.attempt,
                }));
                Self::fail_attempt(batch, record, "worker lost", Failure::WorkerLost, effects);
            }
            self.changed(batch.now, id, None, effects);
        }
    }

    fn ack_events(&mut self, upto: u64) {
        let upto = upto.min(self.last_seq);
        if upto <= self.published_upto {
            return;
        }
        self.published_upto = upto;
        while self
            .unpublished
            .front()
            .is_some_and(|event| event.seq <= upto)
        {
            self.unpublished.pop_front();
        }
    }

    /// Drops tombstones and idempotency keys past their window, and the oldest beyond the
    /// caps of [`MachineConfig`] (counted by their order queues, which bound both).
    fn prune(&mut self, now: Millis) {
        while let Some(&(completed_at, id)) = self.tombstone_order.front() {
            let expired = now.since(completed_at) > self.config.tombstone_retention_ms;
            if !expired && self.tombstone_order.len() <= self.config.max_tombstones {
                break;
            }
            self.tombstone_order.pop_front();
            // A retried job left its tombstone early; a later one may be newer than this entry.
            if self
                .tombstones
                .get(&id)
                .is_some_and(|tombstone| tombstone.completed_at == completed_at)
            {
                self.tombstones.remove(&id);
            }
        }
        while let Some((expires, _)) = self.key_order.front() {
            if *expires > now && self.key_order.len() <= self.config.max_keys {
                break;
            }
            if let Some((expires, key)) = self.key_order.pop_front() {
                if self
                    .keys
                    .get(&key)
                    .is_some_and(|(_, current)| *current == expires)
                {
                    self.keys.remove(&key);
                }
            }
        }
    }

    /// The live (non-terminal) job, if held.
    pub fn job(&self, id: JobId) -> Option<&JobRecord> {
        self.jobs.get(&id).map(Arc::as_ref)
    }

    /// The tombstone of a terminal job still within the retention window.
    pub fn tombstone(&self, id: JobId) -> Option<&Tombstone> {
        self.tombstones.get(&id).map(Arc::as_ref)
    }

    /// Non-terminal jobs, by id.
    pub fn jobs(&self) -> impl Iterator<Item = &JobRecord> {
        self.jobs.values().map(Arc::as_ref)
    }

    /// Terminal jobs still held, by id.
    pub fn tombstones(&self) -> impl Iterator<Item = &Tombstone> {
        self.tombstones.values().map(Arc::as_ref)
    }

    /// PENDING + QUEUED jobs: what the admission cap counts.
    pub fn n_waiting(&self) -> u64 {
        self.n_waiting
    }

    /// Bytes of payload the PENDING + QUEUED jobs hold: what the admission cap in bytes counts.
    pub fn bytes_waiting(&self) -> u64 {
        self.bytes_waiting
    }

    /// A job of `bytes` of payload starts waiting (PENDING or QUEUED).
    fn start_waiting(&mut self, bytes: u64) {
        self.n_waiting += 1;
        self.bytes_waiting = self.bytes_waiting.saturating_add(bytes);
    }

    /// A waiting job of `bytes` of payload starts running or is cancelled.
    fn stop_waiting(&mut self, bytes: u64) {
        self.n_waiting -= 1;
        self.bytes_waiting = self.bytes_waiting.saturating_sub(bytes);
    }

    /// The last event sequence number handed out (0 when none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The committed "published up to" watermark.
    pub fn published_upto(&self) -> u64 {
        self.published_upto
    }

    /// The latest leader time applied (epoch ms); proposers stamp no earlier time.
    pub fn leader_time(&self) -> Millis {
        self.leader_time
    }

    /// Events past the watermark, oldest first: what a restarted host publishes again.
    pub fn unpublished(&self) -> impl Iterator<Item = &StatusEvent> {
        self.unpublished.iter().map(Arc::as_ref)
    }

    /// Every QUEUED attempt, in the order they were queued (`queued_seq`): what a new leader
    /// publishes again (those past the watermark, or all of them when the transport kept
    /// nothing) or watches for (the rest: RabbitMQ holds their confirmed messages).
    pub fn queued(&self) -> Vec<&JobRecord> {
        let mut queued: Vec<&JobRecord> = self
            .jobs
            .values()
            .map(Arc::as_ref)
            .filter(|record| record.status == JobStatus::Queued)
            .collect();
        queued.sort_by_key(|record| record.queued_seq);
        queued
    }

    /// Every timer the live jobs wait on: what a restarted host (or a new leader) arms again.
    pub fn timers(&self) -> Vec<Timer> {
        self.jobs
            .values()
            .filter_map(|record| record.timer())
            .collect()
    }

    /// Workers holding a lease on a RUNNING attempt.
    pub fn lease_holders(&self) -> BTreeSet<WorkerId> {
        self.jobs
            .values()
            .filter(|record| record.status == JobStatus::Running)
            .filter_map(|record| record.worker_id.clone())
            .collect()
    }

    /// Records a change of job `id`: bumps its version, emits its event (and, with
    /// `dispatch_seed`, the dispatch of its current attempt under a lease token drawn from that
    /// batch seed), and turns it into a tombstone when it became terminal.
    fn changed(
        &mut self,
        now: Millis,
        id: JobId,
        dispatch_seed: Option<u64>,
        effects: &mut Vec<Effect>,
    ) -> Option<Box<JobResponse>> {
        let record = Arc::make_mut(self.jobs.get_mut(&id)?);
        record.version = record.version.saturating_add(1);
        self.last_seq += 1;
        let seq = self.last_seq;
        if let Some(seed) = dispatch_seed {
            record.queued_seq = seq;
            record.lease = Some(lease_token(seed, id, record.attempt));
            record.fenced = false;
            record.attempts.push(AttemptRecord {
                number: record.attempt,
                worker_id: None,
                state: AttemptState::Queued,
                error: None,
                started_at: None,
                ended_at: None,
            });
        }
        let job = record.response();
        let event = StatusEvent {
            seq,
            job_id: id,
            status: record.status,
            worker_id: job.worker_id.clone(),
            result: if record.status == JobStatus::Completed {
                record.result.clone()
            } else {
                None
            },
            error_message: record.error_message.clone(),
            progress: record.progress,
            attempt: record.attempt,
            version: record.version,
            occurred_at: now.to_iso(),
            job: job.clone(),
            format: WIRE_FORMAT,
        };
        if dispatch_seed.is_some() {
            effects.push(Effect::Dispatch(Box::new(record.message())));
        }
        self.unpublished.push_back(Arc::new(event.clone()));
        effects.push(Effect::Emit(Box::new(event)));
        if record.status.is_terminal() {
            let completed_at = record.completed_at.unwrap_or(now);
            let tombstone = Tombstone {
                id,
                job_type: record.spec.job_type.clone(),
                priority: record.spec.priority,
                status: record.status,
                attempt: record.attempt,
                version: record.version,
                worker_id: record.worker_id.clone(),
                created_at: record.created_at,
                started_at: record.started_at,
                completed_at,
            };
            self.jobs.remove(&id);
            self.tombstones.insert(id, Arc::new(tombstone));
            self.tombstone_order.push_back((completed_at, id));
        }
        Some(Box::new(job))
    }
}
