//! The lifecycle state machine: `State::apply(batch)` takes commands stamped with the leader's
//! time and returns one [`Outcome`] per command plus the [`Effect`]s to carry out after commit.
//!
//! It is deterministic and does no I/O: the same log gives the same state and effects on every
//! node (DESIGN.md, "Who owns what"). Maps are `BTreeMap`s so iteration order is fixed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{JobId, JobStatus, Priority, WorkerId};
use crate::request::JobSpec;
use crate::time::Millis;
use crate::wire::{ControlMessage, JobMessage, JobResponse, StatusEvent, WIRE_FORMAT};

/// One log entry's worth of commands, stamped with the leader's time when it was proposed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub now: Millis,
    pub commands: Vec<Command>,
}

/// A request to change the lifecycle. Every change goes through one of these, in log order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Accept a new job as QUEUED (attempt 1). Registering an id again changes nothing.
    /// `max_queued` is the admission cap on PENDING + QUEUED jobs the leader enforces.
    Register {
        id: JobId,
        spec: Box<JobSpec>,
        max_queued: Option<u64>,
    },
    /// A worker's report for an attempt (the lease rule of DESIGN.md).
    Report(Report),
    /// Cancel a non-terminal job.
    Cancel { id: JobId },
    /// The worker is gone: its running attempts are dispatched again as new attempts.
    WorkerLost { worker_id: WorkerId },
    /// Every event up to and including `upto` reached the read model: the "published up to"
    /// watermark of DESIGN.md, rule 6.
    AckEvents { upto: u64 },
}

/// What a worker says about an attempt (CONTRACT.md, `POST /api/jobs/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub job_id: JobId,
    /// `None` for workers of the original system: the report counts for the current attempt
    /// and is fenced by the lease holder's worker id.
    pub attempt: Option<u32>,
    pub worker_id: WorkerId,
    pub kind: ReportKind,
}

/// The reported event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReportKind {
    /// The worker wants to start the attempt: the first such report takes the lease.
    Running,
    /// 0..=100.
    Progress {
        percent: u8,
    },
    Completed {
        result: Value,
    },
    /// `permanent` failures (bad input) are never retried.
    Failed {
        error: String,
        permanent: bool,
    },
}

/// Why a command changed nothing. Each maps to one HTTP status (see [`Refusal::http_status`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("Job not found: {0}")]
    NotFound(JobId),
    #[error("job {id} is already {status}")]
    Terminal { id: JobId, status: JobStatus },
    #[error("attempt {reported} of job {id} is superseded by attempt {current}")]
    StaleAttempt {
        id: JobId,
        reported: u32,
        current: u32,
    },
    #[error("attempt {attempt} of job {id} is leased to worker {holder}")]
    LeaseHeld {
        id: JobId,
        attempt: u32,
        holder: WorkerId,
    },
    #[error("job {id} is {status}, not RUNNING")]
    NotRunning { id: JobId, status: JobStatus },
    #[error("queue full: {cap} jobs are waiting to run")]
    QueueFull { cap: u64 },
}

impl Refusal {
    /// 404 for an unknown job, 429 for a full queue, 409 for every refused transition.
    pub fn http_status(&self) -> u16 {
        match self {
            Refusal::NotFound(_) => 404,
            Refusal::QueueFull { .. } => 429,
            _ => 409,
        }
    }
}

/// The answer to one command.
pub type Outcome = Result<Applied, Refusal>;

/// A command that was applied (or was a harmless repeat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// The job's snapshot after the command, when the job is still held in full.
    pub job: Option<Box<JobResponse>>,
    /// False when a `Register` found the id already known.
    pub created: bool,
}

/// What the host must do after the commit, in this order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Effect {
    /// Publish the attempt to the job queue of its priority.
    Dispatch(Box<JobMessage>),
    /// Tell the worker holding the attempt's lease to stop its handler (CONTRACT.md
    /// `control.exchange`, routing key = worker id).
    StopAttempt(ControlMessage),
    /// Publish the lifecycle event (read model, SSE).
    Emit(Box<StatusEvent>),
}

/// Settings that are part of the replicated state, so every node applies them alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineConfig {
    /// How long a terminal job's tombstone is kept, in milliseconds (default 15 minutes). Late
    /// reports for a job past it get 404 instead of 409 (both refuse); the gateway answers a
    /// cancel of such a job with 409 from its read model. The idempotency issue ties this to the
    /// key retention window.
    pub tombstone_retention_ms: i64,
}

impl Default for MachineConfig {
    fn default() -> MachineConfig {
        MachineConfig {
            tombstone_retention_ms: 15 * 60 * 1000,
        }
    }
}

/// A non-terminal job as the state machine holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub spec: JobSpec,
    pub status: JobStatus,
    /// Grows by one with every change of this job.
    pub version: u64,
    /// The current attempt's number, from 1; never repeats for the job.
    pub attempt: u32,
    /// While RUNNING, the lease holder; afterwards, the last worker that ran it.
    pub worker_id: Option<WorkerId>,
    pub result: Option<Value>,
    pub error_message: Option<String>,
    pub retry_count: u32,
    pub progress: Option<u8>,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub completed_at: Option<Millis>,
    /// Sequence number of the event that queued the current attempt: FIFO order within a priority.
    pub queued_seq: u64,
}

impl JobRecord {
    /// A new job's record before its first change: QUEUED, attempt 1, version 0 (the register
    /// change makes it 1).
    pub fn queued(id: JobId, spec: JobSpec, created_at: Millis) -> JobRecord {
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
        }
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
            format: WIRE_FORMAT,
        }
    }
}

/// What is kept of a terminal job for the retention window: enough to refuse late reports and
/// repeated cancels (DESIGN.md, "Live state stays small").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tombstone {
    pub id: JobId,
    pub job_type: String,
    pub priority: Priority,
    pub status: JobStatus,
    pub attempt: u32,
    pub version: u64,
    pub worker_id: Option<WorkerId>,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub completed_at: Millis,
}

/// The replicated lifecycle state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct State {
    config: MachineConfig,
    /// Non-terminal jobs.
    jobs: BTreeMap<JobId, JobRecord>,
    /// Terminal jobs within the retention window.
    tombstones: BTreeMap<JobId, Tombstone>,
    /// Tombstones by completion time, oldest first, for pruning.
    tombstone_order: VecDeque<(Millis, JobId)>,
    /// Number of PENDING + QUEUED jobs: the admission cap's measure.
    n_waiting: u64,
    /// The last sequence number handed out (0: none yet).
    last_seq: u64,
    /// Every event up to here reached the read model.
    published_upto: u64,
    /// Events past `published_upto`, oldest first, kept to publish again after a restart.
    unpublished: VecDeque<StatusEvent>,
    /// The latest leader time applied: a new leader never stamps an earlier one.
    #[serde(default)]
    leader_time: Millis,
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
        self.prune_tombstones(batch.now);
        let outcomes = batch
            .commands
            .iter()
            .map(|command| self.apply_command(batch.now, command, &mut effects))
            .collect();
        (outcomes, effects)
    }

    fn apply_command(
        &mut self,
        now: Millis,
        command: &Command,
        effects: &mut Vec<Effect>,
    ) -> Outcome {
        match command {
            Command::Register {
                id,
                spec,
                max_queued,
            } => self.register(now, *id, spec, *max_queued, effects),
            Command::Report(report) => self.report(now, report, effects),
            Command::Cancel { id } => self.cancel(now, *id, effects),
            Command::WorkerLost { worker_id } => {
                self.worker_lost(now, worker_id, effects);
                Ok(Applied {
                    job: None,
                    created: false,
                })
            }
            Command::AckEvents { upto } => {
                self.ack_events(*upto);
                Ok(Applied {
                    job: None,
                    created: false,
                })
            }
        }
    }

    fn register(
        &mut self,
        now: Millis,
        id: JobId,
        spec: &JobSpec,
        max_queued: Option<u64>,
        effects: &mut Vec<Effect>,
    ) -> Outcome {
        if let Some(record) = self.jobs.get(&id) {
            return Ok(Applied {
                job: Some(Box::new(record.response())),
                created: false,
            });
        }
        if self.tombstones.contains_key(&id) {
            return Ok(Applied {
                job: None,
                created: false,
            });
        }
        if let Some(cap) = max_queued {
            if self.n_waiting >= cap {
                return Err(Refusal::QueueFull { cap });
            }
        }
        let record = JobRecord::queued(id, spec.clone(), now);
        self.n_waiting += 1;
        self.jobs.insert(id, record);
        let job = self.changed(now, id, true, effects);
        Ok(Applied { job, created: true })
    }

    fn report(&mut self, now: Millis, report: &Report, effects: &mut Vec<Effect>) -> Outcome {
        let id = report.job_id;
        let Some(record) = self.jobs.get_mut(&id) else {
            return Err(match self.tombstones.get(&id) {
                Some(tombstone) => Refusal::Terminal {
                    id,
                    status: tombstone.status,
                },
                None => Refusal::NotFound(id),
            });
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
        let holder_check = |record: &JobRecord| match (&record.status, &record.worker_id) {
            (JobStatus::Running, Some(holder)) if *holder == report.worker_id => Ok(()),
            (JobStatus::Running, Some(holder)) => Err(Refusal::LeaseHeld {
                id,
                attempt: record.attempt,
                holder: holder.clone(),
            }),
            (status, _) => Err(Refusal::NotRunning {
                id,
                status: *status,
            }),
        };
        match &report.kind {
            ReportKind::Running => {
                if record.status != JobStatus::Queued {
                    return Err(match (&record.status, &record.worker_id) {
                        (JobStatus::Running, Some(holder)) => Refusal::LeaseHeld {
                            id,
                            attempt: record.attempt,
                            holder: holder.clone(),
                        },
                        (status, _) => Refusal::NotRunning {
                            id,
                            status: *status,
                        },
                    });
                }
                record.status = JobStatus::Running;
                record.worker_id = Some(report.worker_id.clone());
                record.started_at = Some(now);
                record.progress = None;
                self.n_waiting -= 1;
            }
            ReportKind::Progress { percent } => {
                holder_check(record)?;
                record.progress = Some((*percent).min(100));
            }
            ReportKind::Completed { result } => {
                holder_check(record)?;
                record.status = JobStatus::Completed;
                record.result = Some(result.clone());
                record.error_message = None;
                record.progress = Some(100);
                record.completed_at = Some(now);
            }
            ReportKind::Failed { error, .. } => {
                holder_check(record)?;
                record.status = JobStatus::Failed;
                record.error_message = Some(error.clone());
                record.completed_at = Some(now);
            }
        }
        let job = self.changed(now, id, false, effects);
        Ok(Applied {
            job,
            created: false,
        })
    }

    fn cancel(&mut self, now: Millis, id: JobId, effects: &mut Vec<Effect>) -> Outcome {
        let Some(record) = self.jobs.get_mut(&id) else {
            return Err(match self.tombstones.get(&id) {
                Some(tombstone) => Refusal::Terminal {
                    id,
                    status: tombstone.status,
                },
                None => Refusal::NotFound(id),
            });
        };
        if matches!(record.status, JobStatus::Pending | JobStatus::Queued) {
            self.n_waiting -= 1;
        }
        if let (JobStatus::Running, Some(worker_id)) = (record.status, &record.worker_id) {
            effects.push(Effect::StopAttempt(ControlMessage::Cancel {
                worker_id: worker_id.clone(),
                job_id: id,
                attempt: record.attempt,
            }));
        }
        record.status = JobStatus::Cancelled;
        record.completed_at = Some(now);
        let job = self.changed(now, id, false, effects);
        Ok(Applied {
            job,
            created: false,
        })
    }

    fn worker_lost(&mut self, now: Millis, worker_id: &WorkerId, effects: &mut Vec<Effect>) {
        let lost: Vec<JobId> = self
            .jobs
            .values()
            .filter(|record| {
                record.status == JobStatus::Running && record.worker_id.as_ref() == Some(worker_id)
            })
            .map(|record| record.id)
            .collect();
        for id in lost {
            if let Some(record) = self.jobs.get_mut(&id) {
                record.status = JobStatus::Queued;
                record.attempt += 1;
                record.worker_id = None;
                record.started_at = None;
                record.progress = None;
                self.n_waiting += 1;
            }
            self.changed(now, id, true, effects);
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

    fn prune_tombstones(&mut self, now: Millis) {
        while let Some(&(completed_at, id)) = self.tombstone_order.front() {
            if now.since(completed_at) <= self.config.tombstone_retention_ms {
                break;
            }
            self.tombstone_order.pop_front();
            self.tombstones.remove(&id);
        }
    }

    /// The latest leader time applied (epoch ms); proposers stamp no earlier time.
    pub fn leader_time(&self) -> Millis {
        self.leader_time
    }

    /// The live (non-terminal) job, if held.
    pub fn job(&self, id: JobId) -> Option<&JobRecord> {
        self.jobs.get(&id)
    }

    /// The tombstone of a terminal job still within the retention window.
    pub fn tombstone(&self, id: JobId) -> Option<&Tombstone> {
        self.tombstones.get(&id)
    }

    /// Non-terminal jobs, by id.
    pub fn jobs(&self) -> impl Iterator<Item = &JobRecord> {
        self.jobs.values()
    }

    /// Terminal jobs still held, by id.
    pub fn tombstones(&self) -> impl Iterator<Item = &Tombstone> {
        self.tombstones.values()
    }

    /// PENDING + QUEUED jobs: what the admission cap counts.
    pub fn n_waiting(&self) -> u64 {
        self.n_waiting
    }

    /// The last event sequence number handed out (0 when none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The committed "published up to" watermark.
    pub fn published_upto(&self) -> u64 {
        self.published_upto
    }

    /// Events past the watermark, oldest first: what a restarted host publishes again.
    pub fn unpublished(&self) -> impl Iterator<Item = &StatusEvent> {
        self.unpublished.iter()
    }

    /// The dispatches a restarted host must publish again: every QUEUED attempt, in the order
    /// they were queued (the broker then orders them by priority).
    pub fn pending_dispatches(&self) -> Vec<JobMessage> {
        let mut queued: Vec<&JobRecord> = self
            .jobs
            .values()
            .filter(|record| record.status == JobStatus::Queued)
            .collect();
        queued.sort_by_key(|record| record.queued_seq);
        queued.into_iter().map(JobRecord::message).collect()
    }

    /// Workers holding a lease on a RUNNING attempt.
    pub fn lease_holders(&self) -> BTreeSet<WorkerId> {
        self.jobs
            .values()
            .filter(|record| record.status == JobStatus::Running)
            .filter_map(|record| record.worker_id.clone())
            .collect()
    }

    /// Records a change of job `id`: bumps its version, emits its event (and, with `dispatch`, the
    /// dispatch of its current attempt), and turns it into a tombstone when it became terminal.
    fn changed(
        &mut self,
        now: Millis,
        id: JobId,
        dispatch: bool,
        effects: &mut Vec<Effect>,
    ) -> Option<Box<JobResponse>> {
        let record = self.jobs.get_mut(&id)?;
        record.version += 1;
        self.last_seq += 1;
        let seq = self.last_seq;
        if dispatch {
            record.queued_seq = seq;
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
        if dispatch {
            effects.push(Effect::Dispatch(Box::new(record.message())));
        }
        self.unpublished.push_back(event.clone());
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
            self.tombstones.insert(id, tombstone);
            self.tombstone_order.push_back((completed_at, id));
        }
        Some(Box::new(job))
    }
}
