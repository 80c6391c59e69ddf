//! Wire formats of CONTRACT.md: the JobResponse snapshot, the broker's job message and the
//! lifecycle event. Every format that is persisted or crosses a process carries `format`
//! (DESIGN.md), distinct from a job's `version`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::model::{JobId, JobStatus, Priority, WorkerId};

/// Current format tag of [`JobMessage`] and [`StatusEvent`].
pub const WIRE_FORMAT: u32 = 1;

/// A job as clients see it (CONTRACT.md "JobResponse"; nulls omitted; the mixed naming is the
/// contract). Events carry it as the job's snapshot and the read model stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobResponse {
    /// The job's UUID.
    pub id: JobId,
    /// The handler to run; `type` on the wire.
    #[serde(rename = "type")]
    pub job_type: String,
    /// `jobPriority` on the wire, as the upper-case name.
    #[serde(rename = "jobPriority")]
    pub priority: Priority,
    /// `jobStatus` on the wire.
    #[serde(rename = "jobStatus")]
    pub status: JobStatus,
    /// `workerId` on the wire: the current attempt's worker (the lease holder while RUNNING);
    /// omitted before the attempt starts.
    #[serde(rename = "workerId", default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// The handler's input, a JSON object.
    pub payload: Map<String, Value>,
    /// The handler's result; present once COMPLETED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// `errorMessage` on the wire: the last failed attempt's error (also while RETRYING).
    #[serde(
        rename = "errorMessage",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub error_message: Option<String>,
    /// `retryCount` on the wire: retries so far in the current chain of attempts.
    #[serde(rename = "retryCount")]
    pub retry_count: u32,
    /// `maxRetries` on the wire: retries allowed after the first attempt.
    #[serde(rename = "maxRetries")]
    pub max_retries: u32,
    /// Seconds.
    #[serde(rename = "executionTimeout")]
    pub execution_timeout: u64,
    /// ISO-8601 UTC with `Z`.
    pub created_at: String,
    /// When the current attempt started, ISO-8601 UTC with `Z`; omitted while the job waits to
    /// run (PENDING, QUEUED, RETRYING).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the job became terminal, ISO-8601 UTC with `Z`; omitted until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// The client's string pairs; omitted when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// `parentJobId` on the wire, as the client gave it.
    #[serde(
        rename = "parentJobId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub parent_job_id: Option<String>,
    /// False until a webhook was delivered (webhooks come with a later issue).
    pub callback_sent: bool,
    /// From creation to the start of the current attempt; 0 before it starts.
    pub queue_time_ms: i64,
    /// From start to end of the current attempt; 0 unless both happened.
    pub execution_time_ms: i64,
    /// From creation to the terminal state; present once the job is terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_duration_ms: Option<i64>,
    /// The client's labels; omitted when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// 0..=100 as last reported by the handler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    /// The current attempt's number, from 1.
    pub attempt: u32,
    /// Grows with every change of the job; the read model keeps the highest it has seen.
    pub version: u64,
    /// Every attempt so far, oldest first (also `GET /api/jobs/{id}/attempts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptView>,
}

/// The job message a worker consumes from `job.<priority>` (CONTRACT.md "RabbitMQ": body
/// snake_case, `priority` as 1/5/10/15, JSON null for absent values) plus `attempt` and `format`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMessage {
    /// The job's UUID.
    pub id: JobId,
    /// The handler to run; `type` on the wire.
    #[serde(rename = "type")]
    pub job_type: String,
    /// 1, 5, 10 or 15.
    pub priority: u8,
    /// The job's state at dispatch: QUEUED.
    pub status: JobStatus,
    /// Null in a dispatch (kept from the original format).
    pub worker_id: Option<String>,
    /// The handler's input, a JSON object.
    pub payload: Map<String, Value>,
    /// Null in a dispatch.
    pub result: Option<Value>,
    /// Null in a dispatch.
    pub error_message: Option<String>,
    /// Retries so far in the current chain of attempts; 0 for the first attempt.
    pub retry_count: u32,
    /// Retries allowed after the first attempt.
    pub max_retries: u32,
    /// Seconds.
    pub execution_timeout: u64,
    /// When the job was registered, ISO-8601 UTC with `Z`.
    pub created_at: String,
    /// Null in a dispatch.
    pub started_at: Option<String>,
    /// Null in a dispatch.
    pub completed_at: Option<String>,
    /// The client's string pairs.
    pub metadata: BTreeMap<String, String>,
    /// The dispatch's attempt number; reports for it must name it.
    pub attempt: u32,
    /// The attempt's lease token (32 hex digits): reports naming the attempt carry it back as
    /// `lease` (issue 11). Absent in messages of states written before tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    /// Format tag, [`WIRE_FORMAT`] (read as that when absent).
    #[serde(default = "default_format")]
    pub format: u32,
}

impl JobMessage {
    /// The priority as a [`Priority`]; unknown numbers read as MEDIUM.
    pub fn priority(&self) -> Priority {
        Priority::from_number(i64::from(self.priority)).unwrap_or(Priority::Medium)
    }
}

/// A lifecycle event (CONTRACT.md `status.exchange` body): one per committed change.
///
/// `seq` orders all events (the SSE id and the watermark's unit); `version` orders one job's
/// snapshots, so the read model applies `job` only when `version` is newer than what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusEvent {
    /// The event's place in the order of all events, from 1: the SSE id and the watermark's unit.
    pub seq: u64,
    /// `jobId` on the wire.
    #[serde(rename = "jobId")]
    pub job_id: JobId,
    /// `jobStatus` on the wire: the job's state after the change.
    #[serde(rename = "jobStatus")]
    pub status: JobStatus,
    /// `workerId` on the wire, as in the snapshot.
    #[serde(rename = "workerId", default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// The handler's result; present only when the job is COMPLETED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// `errorMessage` on the wire: the last failed attempt's error.
    #[serde(
        rename = "errorMessage",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub error_message: Option<String>,
    /// 0..=100 as last reported for the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    /// The job's current attempt number.
    pub attempt: u32,
    /// The job's version after the change; orders this job's snapshots.
    pub version: u64,
    /// The leader's time of the change, ISO-8601 UTC.
    #[serde(rename = "occurredAt")]
    pub occurred_at: String,
    /// The job's full snapshot after the change.
    pub job: JobResponse,
    /// Format tag, [`WIRE_FORMAT`] (read as that when absent).
    #[serde(default = "default_format")]
    pub format: u32,
}

/// One attempt as clients see it (`GET /api/jobs/{id}/attempts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    /// The attempt's number, from 1.
    pub attempt: u32,
    /// `workerId` on the wire: the worker that took the lease; omitted if it never started.
    #[serde(rename = "workerId", default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// QUEUED, RUNNING, COMPLETED, FAILED, TIMEOUT, CANCELLED or LOST.
    pub state: String,
    /// `errorMessage` on the wire: why the attempt failed.
    #[serde(
        rename = "errorMessage",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub error_message: Option<String>,
    /// `startedAt` on the wire: when the attempt started, ISO-8601 UTC.
    #[serde(rename = "startedAt", default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// `endedAt` on the wire: when the attempt ended, ISO-8601 UTC.
    #[serde(rename = "endedAt", default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
}

/// A worker's heartbeat (CONTRACT.md `POST /api/workers/heartbeat`: snake_case, camelCase
/// accepted). Heartbeats are soft state on the leader: only "worker lost" is committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkerHeartbeat {
    /// `worker_id` on the wire (`workerId` accepted).
    #[serde(alias = "workerId")]
    pub worker_id: WorkerId,
    /// The kind of worker (`worker_type`, `workerType` accepted); empty when absent.
    #[serde(alias = "workerType", default)]
    pub worker_type: String,
    /// Job slots.
    #[serde(default)]
    pub capacity: u32,
    /// Jobs running now.
    #[serde(alias = "currentLoad", default)]
    pub current_load: u32,
    /// Jobs the worker has finished (`total_jobs_processed`, `totalJobsProcessed` accepted).
    #[serde(alias = "totalJobsProcessed", default)]
    pub total_jobs_processed: u64,
    /// Of those, reported completed (`successful_jobs`, `successfulJobs` accepted).
    #[serde(alias = "successfulJobs", default)]
    pub successful_jobs: u64,
    /// Of those, reported failed (`failed_jobs`, `failedJobs` accepted).
    #[serde(alias = "failedJobs", default)]
    pub failed_jobs: u64,
    /// The worker's clock, epoch milliseconds.
    #[serde(default)]
    pub timestamp: i64,
    /// Which process this is (DistriQueue's workers send a random id per start; optional): a
    /// heartbeat under a known worker id with another instance means the worker restarted, so
    /// the attempts of its earlier incarnation are lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// A control message for one worker (CONTRACT.md `control.exchange`: routing key = worker id,
/// body `{"type":"cancel","jobId","attempt"}`, plus `workerId`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ControlMessage {
    /// Stop the handler of this attempt: the job was cancelled.
    Cancel {
        /// `workerId` on the wire: the lease holder (also the routing key).
        #[serde(rename = "workerId")]
        worker_id: WorkerId,
        /// `jobId` on the wire: the job to stop.
        #[serde(rename = "jobId")]
        job_id: JobId,
        /// The attempt to stop; a later attempt of the job keeps running.
        attempt: u32,
    },
}

impl ControlMessage {
    /// The worker the message is for.
    pub fn worker_id(&self) -> &WorkerId {
        match self {
            ControlMessage::Cancel { worker_id, .. } => worker_id,
        }
    }
}

fn default_format() -> u32 {
    WIRE_FORMAT
}
