//! Shared by the gateway's integration tests: a fake orchestrator over the real state machine.
// Each test binary uses a different part of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use distriqueue_broker::InProcessBroker;
use distriqueue_core::machine::Applied;
use distriqueue_core::request::JobSpec;
use distriqueue_core::{
    Batch, Command, Effect, JobId, JobResponse, Outcome, Report, ReportKind, RetryPolicy, State,
    WorkerId,
};
use distriqueue_gateway::{Orchestrator, OrchestratorError, Registered, RegisteredBatch};
use distriqueue_util::clock;
use serde_json::Value;

/// An orchestrator in memory: the real state machine, its events published to a broker.
pub struct FakeOrchestrator {
    machine: Mutex<State>,
    pub broker: InProcessBroker,
    pub unavailable: AtomicBool,
}

impl FakeOrchestrator {
    pub fn new() -> FakeOrchestrator {
        FakeOrchestrator {
            machine: Mutex::new(State::default()),
            broker: InProcessBroker::new(),
            unavailable: AtomicBool::new(false),
        }
    }

    fn apply(&self, command: Command) -> Result<Applied, OrchestratorError> {
        let outcome = self
            .apply_all(vec![command])?
            .into_iter()
            .next()
            .expect("one outcome per command");
        Ok(outcome?)
    }

    /// Applies `commands` as one log entry; their events go to the broker.
    fn apply_all(&self, commands: Vec<Command>) -> Result<Vec<Outcome>, OrchestratorError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(OrchestratorError::Unavailable("no leader".into()));
        }
        let mut machine = self.machine.lock().expect("machine lock");
        let (outcomes, effects) = machine.apply(&Batch {
            now: clock::now(),
            seed: 7,
            commands,
        });
        self.broker
            .publish_events(effects.into_iter().filter_map(|effect| match effect {
                Effect::Emit(event) => Some(*event),
                Effect::Dispatch(_) | Effect::StopAttempt(_) | Effect::ArmTimer(_) => None,
            }));
        Ok(outcomes)
    }

    /// A worker runs the job to completion with `result`.
    pub fn complete(&self, id: JobId, result: Value) {
        let lease = {
            let machine = self.machine.lock().expect("machine lock");
            machine.job(id).and_then(|job| job.lease.clone())
        };
        for kind in [ReportKind::Running, ReportKind::Completed { result }] {
            self.apply(Command::Report(Report {
                job_id: id,
                attempt: Some(1),
                worker_id: WorkerId("worker-1".to_string()),
                kind,
                lease: lease.clone(),
            }))
            .expect("report accepted");
        }
    }

    pub fn n_jobs_known(&self) -> usize {
        let machine = self.machine.lock().expect("machine lock");
        machine.jobs().count() + machine.tombstones().count()
    }
}

#[async_trait::async_trait]
impl Orchestrator for FakeOrchestrator {
    async fn register(&self, id: JobId, spec: JobSpec) -> Result<Registered, OrchestratorError> {
        let applied = self.apply(Command::Register {
            id,
            spec: Box::new(spec),
            max_queued: None,
            max_queued_bytes: None,
            policy: RetryPolicy::default(),
        })?;
        Ok(Registered {
            job_id: applied.job_id.unwrap_or(id),
            job: applied.job.map(|job| *job),
            created: applied.created,
        })
    }

    async fn register_batch(
        &self,
        jobs: Vec<(JobId, JobSpec)>,
    ) -> Result<RegisteredBatch, OrchestratorError> {
        let ids: Vec<JobId> = jobs.iter().map(|(id, _)| *id).collect();
        let commands = jobs
            .into_iter()
            .map(|(id, spec)| Command::Register {
                id,
                spec: Box::new(spec),
                max_queued: None,
                max_queued_bytes: None,
                policy: RetryPolicy::default(),
            })
            .collect();
        let outcomes = self.apply_all(commands)?;
        Ok(RegisteredBatch {
            results: ids
                .into_iter()
                .zip(outcomes)
                .map(|(id, outcome)| {
                    outcome.map(|applied| Registered {
                        job_id: applied.job_id.unwrap_or(id),
                        job: applied.job.map(|job| *job),
                        created: applied.created,
                    })
                })
                .collect(),
            log_index: None,
        })
    }

    async fn cancel(&self, id: JobId) -> Result<JobResponse, OrchestratorError> {
        self.apply(Command::Cancel { id })?
            .job
            .map(|job| *job)
            .ok_or_else(|| OrchestratorError::Unavailable("no snapshot".into()))
    }

    async fn live_snapshots(&self) -> Result<Vec<JobResponse>, OrchestratorError> {
        let machine = self.machine.lock().expect("machine lock");
        Ok(machine.jobs().map(|job| job.response()).collect())
    }

    async fn retry(&self, stored: &JobResponse) -> Result<JobResponse, OrchestratorError> {
        self.apply(Command::Retry {
            id: stored.id,
            spec: Box::new(JobSpec::from_response(stored)),
            created_at: clock::now(),
            attempt_floor: stored.attempt,
            version_floor: stored.version,
            previous_attempts: stored.attempts.clone(),
            policy: RetryPolicy::default(),
        })?
        .job
        .map(|job| *job)
        .ok_or_else(|| OrchestratorError::Unavailable("no snapshot".into()))
    }

    async fn cluster_status(&self) -> Vec<distriqueue_gateway::NodeAnswer> {
        Vec::new()
    }
}
