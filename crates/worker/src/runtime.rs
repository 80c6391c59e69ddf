//! The worker runtime: job slots that take messages highest priority first, take the lease with
//! a `running` report, run the handler only once that report is accepted, and report the outcome.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use distriqueue_broker::{Broker, Delivery, JobConsumer};
use distriqueue_core::protocol::{check_result, truncate_error};
use distriqueue_core::{
    ControlMessage, JobId, JobMessage, Refusal, Report, ReportKind, WorkerHeartbeat, WorkerId,
};
use distriqueue_util::retry::{retry_while, until_ok, Backoff};
use distriqueue_util::{error_chain, AbortOnDrop};
use parking_lot::{Mutex, MutexGuard};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::builtin::HandlerError;
use crate::handler::{Handlers, JobContext, Progress};
use crate::ledger::Ledger;
use crate::metrics::{self as worker_metrics, HandlerOutcome};
use distriqueue_util::clock;

/// Why a report got no `accepted`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReportError {
    /// The orchestrator refused it (lease held elsewhere, superseded attempt, terminal job).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The orchestrator could not be reached or could not commit; the report may be sent again.
    #[error("orchestrator unavailable")]
    Unavailable(#[source] Arc<dyn std::error::Error + Send + Sync>),
}

impl ReportError {
    /// [`ReportError::Unavailable`] for any error (or message).
    pub fn unavailable(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> ReportError {
        ReportError::Unavailable(Arc::from(error.into()))
    }
}

/// Where a worker sends its reports. The composition root plugs in the in-process orchestrator
/// handle; the distributed issue adds HTTP and AMQP.
#[async_trait]
pub trait Reporter: Send + Sync + 'static {
    /// Returns once the report is committed (or refused).
    async fn report(&self, report: Report) -> Result<(), ReportError>;

    /// Sends a heartbeat; returns the jobs this worker must stop.
    async fn heartbeat(&self, heartbeat: WorkerHeartbeat) -> Result<Vec<JobId>, ReportError>;
}

/// Settings of one worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This worker's id: the routing key of its control queue and the name its leases carry.
    pub worker_id: WorkerId,
    /// Job slots: how many handlers run at once.
    pub concurrency: usize,
    /// `--ledger FILE`: append a line per handler start and finish.
    pub ledger: Option<PathBuf>,
    /// How long running jobs may go on after shutdown begins before they are aborted.
    pub shutdown_grace: Duration,
    /// The orchestrator's heartbeat timeout: the worker heartbeats six times per timeout, and
    /// stops its own handlers (self-fencing) when it has not reached the orchestrator for
    /// longer than the timeout minus a margin of a fifth.
    pub heartbeat_timeout: Duration,
}

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The `--ledger` file cannot be opened for appending.
    #[error("cannot open ledger {path}")]
    Ledger {
        /// The ledger's path.
        path: PathBuf,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },
    /// A worker needs at least one job slot.
    #[error("concurrency must be at least 1")]
    NoSlots,
}

/// A worker: `concurrency` slots consuming from the broker.
pub struct Worker {
    config: WorkerConfig,
    handlers: Handlers,
    broker: Broker,
    reporter: Arc<dyn Reporter>,
    ledger: Option<Ledger>,
    /// This process's instance id, sent with every heartbeat.
    instance: String,
}

struct Shared {
    worker_id: WorkerId,
    instance: String,
    handlers: Handlers,
    jobs: JobConsumer,
    reporter: Arc<dyn Reporter>,
    ledger: Option<Ledger>,
    /// Cancelled when the shutdown grace runs out: handlers must stop.
    abort: CancellationToken,
    /// Outcome reports still being committed.
    outcomes: TaskTracker,
    /// Every attempt this worker holds, from its `running` report on.
    running: Mutex<HashMap<(JobId, u32), HeldAttempt>>,
    /// Outcomes reported so far: all, completed, failed.
    n_finished: [AtomicU64; 3],
    capacity: u32,
}

/// How long a handler told to stop (cancel, shutdown) may take before it is aborted.
const HANDLER_STOP_GRACE: Duration = Duration::from_millis(500);

/// Between two tries of a report the orchestrator could not take: short, so a slot waiting for
/// its lease goes on soon after a leader change and notices a shutdown quickly.
const REPORT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(1));

/// Tries of a `running` report before its message goes back to its queue: about 10 s with
/// [`REPORT_BACKOFF`], longer than a leader election.
const RUNNING_REPORT_TRIES: u32 = 12;

/// Between two tries of the first heartbeat (no job is taken before it is answered).
const FIRST_HEARTBEAT_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(200), Duration::from_secs(5));

impl Worker {
    /// Builds a worker; opens the ledger when configured.
    pub fn new(
        config: WorkerConfig,
        handlers: Handlers,
        broker: &Broker,
        reporter: Arc<dyn Reporter>,
    ) -> Result<Worker, WorkerError> {
        if config.concurrency == 0 {
            return Err(WorkerError::NoSlots);
        }
        let ledger = match &config.ledger {
            Some(path) => Some(Ledger::open(path).map_err(|source| WorkerError::Ledger {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        Ok(Worker {
            config,
            handlers,
            broker: broker.clone(),
            reporter,
            ledger,
            instance: clock::new_job_id().to_string(),
        })
    }

    /// This worker's id.
    pub fn id(&self) -> &WorkerId {
        &self.config.worker_id
    }

    /// Waits until the orchestrator answers a first heartbeat (a worker that cannot report
    /// must not hold jobs; a restarted worker's earlier attempts are released by it), then runs
    /// the slots until `shutdown` is cancelled; then takes no new job, lets running ones finish
    /// and report within the shutdown grace, and aborts what is left after it.
    pub async fn run(self, shutdown: CancellationToken) {
        let Worker {
            config,
            handlers,
            broker,
            reporter,
            ledger,
            instance,
        } = self;
        let capacity = u32::try_from(config.concurrency).unwrap_or(u32::MAX);
        let first = heartbeat_of(&config.worker_id, &instance, capacity, 0, [0; 3]);
        let first_heartbeat = until_ok(
            "first heartbeat (no job is taken until the orchestrator answers one)",
            FIRST_HEARTBEAT_BACKOFF,
            || reporter.heartbeat(first.clone()),
        );
        tokio::select! {
            _ = first_heartbeat => {}
            () = shutdown.cancelled() => return,
        }
        let mut controls = broker.consume_controls(&config.worker_id);
        let jobs = broker.consume_jobs(&config.worker_id, config.concurrency);
        let shared = Arc::new(Shared {
            worker_id: config.worker_id,
            instance,
            handlers,
            jobs,
            reporter,
            ledger,
            abort: CancellationToken::new(),
            outcomes: TaskTracker::new(),
            running: Mutex::default(),
            n_finished: Default::default(),
            capacity: u32::try_from(config.concurrency).unwrap_or(u32::MAX),
        });
        let (concurrency, shutdown_grace, heartbeat_timeout) = (
            config.concurrency,
            config.shutdown_grace,
            config.heartbeat_timeout,
        );
        let heartbeats = tokio::spawn(Arc::clone(&shared).run_heartbeats(heartbeat_timeout));
        let control_loop = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move {
                while let Some(control) = controls.recv().await {
                    shared.stop(&control);
                }
            }
        });
        metrics::gauge!(worker_metrics::SLOTS).set(concurrency as f64);
        let mut slots = JoinSet::new();
        for _ in 0..concurrency {
            let slot = Arc::clone(&shared);
            let shutdown = shutdown.clone();
            slots.spawn(async move { slot.run_slot(shutdown).await });
        }
        shutdown.cancelled().await;
        // No new job: what this worker holds but has not started goes back to the queues.
        shared.jobs.close();
        let drained = tokio::time::timeout(shutdown_grace, async {
            while slots.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                n_running = slots.len(),
                "shutdown grace over: stopping running handlers"
            );
            shared.abort.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while slots.join_next().await.is_some() {}
            })
            .await;
            slots.abort_all();
        }
        // Every finished job's outcome is reported before the worker stops.
        shared.outcomes.close();
        if tokio::time::timeout(shutdown_grace, shared.outcomes.wait())
            .await
            .is_err()
        {
            shared.abort.cancel();
            tracing::warn!("outcome reports still pending at shutdown");
        }
        control_loop.abort();
        heartbeats.abort();
        // A last heartbeat says nothing runs here any more.
        if let Err(error) = shared.reporter.heartbeat(shared.heartbeat()).await {
            tracing::debug!(error = %error_chain(&error), "last heartbeat not delivered");
        }
    }
}

/// A heartbeat body: `finished` counts all, completed and failed outcomes reported so far.
fn heartbeat_of(
    worker_id: &WorkerId,
    instance: &str,
    capacity: u32,
    current_load: u32,
    finished: [u64; 3],
) -> WorkerHeartbeat {
    let [total_jobs_processed, successful_jobs, failed_jobs] = finished;
    WorkerHeartbeat {
        worker_id: worker_id.clone(),
        worker_type: "distriqueue".to_string(),
        capacity,
        current_load,
        total_jobs_processed,
        successful_jobs,
        failed_jobs,
        timestamp: clock::now().0,
        instance: Some(instance.to_string()),
    }
}

/// Sends an outcome until it is committed or refused; gives up only once the worker aborts.
/// Holds the attempt's registration until then, so a second copy of the attempt delivered
/// meanwhile is dropped as a duplicate rather than started again.
async fn report_outcome(
    reporter: Arc<dyn Reporter>,
    abort: CancellationToken,
    report: Report,
    _running: Option<RunningGuard>,
) {
    let retryable =
        |error: &ReportError| matches!(error, ReportError::Unavailable(_)) && !abort.is_cancelled();
    let reported = retry_while("report an outcome", REPORT_BACKOFF, retryable, || {
        reporter.report(report.clone())
    })
    .await;
    match reported {
        Ok(()) => {}
        Err(ReportError::Refused(refusal)) => {
            tracing::info!(job_id = %report.job_id, attempt = ?report.attempt, %refusal, "outcome refused");
        }
        Err(error @ ReportError::Unavailable(_)) => {
            tracing::warn!(job_id = %report.job_id, error = %error_chain(&error), "outcome not reported before shutdown");
        }
    }
}

/// Frees a busy slot when dropped.
struct BusySlot<'a> {
    shared: &'a Shared,
}

impl Drop for BusySlot<'_> {
    fn drop(&mut self) {
        self.shared.jobs.slot_freed();
        metrics::gauge!(worker_metrics::SLOTS_BUSY).decrement(1.0);
    }
}

/// An attempt this worker holds: what stops its handler, and the lease token its reports carry.
struct HeldAttempt {
    stop: CancellationToken,
    lease: Option<String>,
}

/// Removes an attempt's stop token when its processing ends, however it ends.
struct RunningGuard {
    shared: Arc<Shared>,
    key: (JobId, u32),
    token: CancellationToken,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.shared.lock_running().remove(&self.key);
    }
}

impl Shared {
    fn lock_running(&self) -> MutexGuard<'_, HashMap<(JobId, u32), HeldAttempt>> {
        self.running.lock()
    }

    /// Registers the attempt's stop token (a child of the shutdown abort) before its lease is
    /// asked for, so a cancel that follows the lease always finds it.
    fn register_running(self: &Arc<Self>, message: &JobMessage) -> Option<RunningGuard> {
        let key = (message.id, message.attempt);
        let token = self.abort.child_token();
        let mut running = self.lock_running();
        if running.contains_key(&key) {
            return None;
        }
        running.insert(
            key,
            HeldAttempt {
                stop: token.clone(),
                lease: message.lease.clone(),
            },
        );
        Some(RunningGuard {
            shared: Arc::clone(self),
            key,
            token,
        })
    }

    /// This worker's heartbeat now.
    fn heartbeat(&self) -> WorkerHeartbeat {
        let finished = self
            .n_finished
            .each_ref()
            .map(|count| count.load(Ordering::Relaxed));
        let load = u32::try_from(self.lock_running().len()).unwrap_or(u32::MAX);
        heartbeat_of(
            &self.worker_id,
            &self.instance,
            self.capacity,
            load,
            finished,
        )
    }

    /// Heartbeats six times per timeout; stops the handlers the replies name; and stops every
    /// handler when the orchestrator was out of reach for longer than the timeout minus a margin
    /// (self-fencing: by then the orchestrator may have declared this worker lost and started
    /// its attempts elsewhere).
    async fn run_heartbeats(self: Arc<Self>, timeout: Duration) {
        let fence_after = timeout - timeout / 5;
        let period = (timeout / 6).max(Duration::from_millis(50));
        let mut tick = tokio::time::interval(period);
        let mut last_reached = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            let answer =
                tokio::time::timeout(period, self.reporter.heartbeat(self.heartbeat())).await;
            // Checked before a success resets the clock: a worker back from a long pause may
            // have been declared lost meanwhile, and its attempts run elsewhere.
            if last_reached.elapsed() > fence_after {
                self.fence();
            }
            match answer {
                Ok(Ok(cancels)) => {
                    last_reached = tokio::time::Instant::now();
                    for job_id in cancels {
                        self.stop_job(job_id);
                    }
                }
                Ok(Err(error)) => {
                    tracing::warn!(error = %error_chain(&error), "heartbeat not delivered")
                }
                Err(_) => tracing::warn!("heartbeat not answered in time"),
            }
        }
    }

    /// Stops every running handler (self-fencing).
    /// Each stopped attempt is then reported failed (retryable), so that the orchestrator,
    /// when it is reachable again and has not declared this worker lost, retries it rather
    /// than leaving it RUNNING until its execution timeout.
    fn fence(&self) {
        let running: Vec<((JobId, u32), CancellationToken, Option<String>)> = self
            .lock_running()
            .iter()
            .filter(|(_, held)| !held.stop.is_cancelled())
            .map(|(key, held)| (*key, held.stop.clone(), held.lease.clone()))
            .collect();
        if !running.is_empty() {
            tracing::error!(
                n_running = running.len(),
                "orchestrator out of reach: stopping every handler"
            );
        }
        for ((job_id, attempt), token, lease) in running {
            token.cancel();
            let report = Report {
                job_id,
                attempt: Some(attempt),
                worker_id: self.worker_id.clone(),
                kind: ReportKind::Failed {
                    error: "worker lost contact with the orchestrator".to_string(),
                    permanent: false,
                },
                lease,
            };
            self.outcomes.spawn(report_outcome(
                Arc::clone(&self.reporter),
                self.abort.clone(),
                report,
                None,
            ));
        }
    }

    /// Stops every attempt of `job_id` this worker runs.
    fn stop_job(&self, job_id: JobId) {
        for ((running_job, _), held) in self.lock_running().iter() {
            if *running_job == job_id {
                held.stop.cancel();
            }
        }
    }

    /// Stops the handler a control message names, if this worker runs it.
    fn stop(&self, control: &ControlMessage) {
        match control {
            ControlMessage::Cancel {
                job_id, attempt, ..
            } => {
                if let Some(held) = self.lock_running().get(&(*job_id, *attempt)) {
                    tracing::info!(job_id = %job_id, attempt, "job cancelled: stopping its handler");
                    held.stop.cancel();
                }
            }
        }
    }

    /// Counts a slot busy until the guard drops, keeping the transport's prefetch at the free
    /// slots.
    async fn occupy_slot(&self) -> BusySlot<'_> {
        self.jobs.slot_taken().await;
        metrics::gauge!(worker_metrics::SLOTS_BUSY).increment(1.0);
        BusySlot { shared: self }
    }

    async fn run_slot(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let delivery = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                delivery = self.jobs.next() => match delivery {
                    Some(delivery) => delivery,
                    None => return,
                },
            };
            self.process(delivery, &shutdown).await;
        }
    }

    /// One job message: take the lease (acking the message once it is granted, or when it is
    /// refused), run, report (DESIGN.md "Delivery", rule 3).
    async fn process(self: &Arc<Self>, delivery: Delivery, shutdown: &CancellationToken) {
        let message = &delivery.message;
        let report = |kind| Report {
            job_id: message.id,
            attempt: Some(message.attempt),
            worker_id: self.worker_id.clone(),
            kind,
            lease: message.lease.clone(),
        };
        let Some(running) = self.register_running(message) else {
            // A second copy of an attempt this worker already runs: drop it.
            tracing::debug!(job_id = %message.id, attempt = message.attempt, "duplicate delivery dropped");
            delivery.ack().await;
            return;
        };
        // The lease rule: start only after `running` is accepted; drop the message on refusal.
        // An orchestrator out of reach for RUNNING_REPORT_TRIES tries: the message goes back to
        // its queue (docs/protocol.md), for this or another worker, rather than wait here.
        let mut n_tries = 0;
        let retryable = |error: &ReportError| {
            n_tries += 1;
            matches!(error, ReportError::Unavailable(_))
                && !shutdown.is_cancelled()
                && n_tries < RUNNING_REPORT_TRIES
        };
        // Retried also when an earlier try landed with its answer lost: a repeat from the
        // holder is answered as the first.
        let leased = retry_while("report running", REPORT_BACKOFF, retryable, || {
            self.reporter.report(report(ReportKind::Running))
        })
        .await;
        match leased {
            Ok(()) => {}
            Err(ReportError::Refused(refusal)) => {
                tracing::debug!(job_id = %message.id, attempt = message.attempt, %refusal, "not starting");
                delivery.ack().await;
                return;
            }
            Err(ReportError::Unavailable(_)) => {
                // Shutting down or out of tries, not started: hand it back.
                drop(running);
                delivery.requeue().await;
                return;
            }
        }
        // The lease is ours: from here the lease, not the broker, recovers the job. The slot
        // counts busy before the ack, so the transport never holds more than the free slots.
        let _busy = self.occupy_slot().await;
        delivery.ack().await;
        if running.token.is_cancelled() {
            // Stopped while asking for the lease (self-fencing, a cancel, or shutdown): nothing
            // runs. Unless shutting down, give the attempt back rather than hold it idle: the
            // fence's own report may have reached the orchestrator before this lease did, and
            // was refused then (a refusal now is harmless: a cancelled job is terminal).
            if !self.abort.is_cancelled() {
                let kind = ReportKind::Failed {
                    error: "worker lost contact with the orchestrator".to_string(),
                    permanent: false,
                };
                let report = report(kind);
                self.outcomes.spawn(report_outcome(
                    Arc::clone(&self.reporter),
                    self.abort.clone(),
                    report,
                    Some(running),
                ));
            }
            return;
        }
        if let Some(ledger) = &self.ledger {
            ledger.record("start", message.id, message.attempt, &self.worker_id);
        }
        let Some(outcome) = self.run_handler(message, &running.token).await else {
            // Stopped: by a cancel or a timeout (the orchestrator decided already), by
            // self-fencing, or by shutdown. No outcome is reported: the attempt stays leased to
            // this worker until it is declared lost (in `serve`, at the next start), and is
            // then retried by policy.
            tracing::info!(job_id = %message.id, attempt = message.attempt, "handler stopped");
            return;
        };
        if let Some(ledger) = &self.ledger {
            ledger.record("finish", message.id, message.attempt, &self.worker_id);
        }
        // A result the orchestrator would refuse fails the attempt for good (it would be too
        // large again); an error message is cut to what is kept.
        let kind = match outcome {
            Ok(result) => match check_result(&result) {
                Ok(()) => ReportKind::Completed { result },
                Err(error) => ReportKind::Failed {
                    error,
                    permanent: true,
                },
            },
            Err(HandlerError::Permanent(error)) => ReportKind::Failed {
                error: truncate_error(&error),
                permanent: true,
            },
            Err(HandlerError::Retryable(error)) => ReportKind::Failed {
                error: truncate_error(&error),
                permanent: false,
            },
        };
        let counter = if matches!(kind, ReportKind::Completed { .. }) {
            1
        } else {
            2
        };
        for index in [0, counter] {
            self.n_finished[index].fetch_add(1, Ordering::Relaxed);
        }
        // The slot is free once the handler is done; the outcome is committed in the background
        // (retried until accepted or refused) and shutdown waits for it.
        let report = report(kind);
        let reporter = Arc::clone(&self.reporter);
        let abort = self.abort.clone();
        self.outcomes
            .spawn(report_outcome(reporter, abort, report, Some(running)));
    }

    /// Runs the handler for `message` within its execution timeout; `None` when it was stopped
    /// first: `job_token` fired (the job was cancelled, or the worker is shutting down) or the
    /// timeout passed. A stopped handler's outcome is not reported.
    async fn run_handler(
        &self,
        message: &JobMessage,
        job_token: &CancellationToken,
    ) -> Option<Result<serde_json::Value, HandlerError>> {
        let Some(handler) = self.handlers.find(&message.job_type) else {
            worker_metrics::record_handler(
                "unhandled".to_string(),
                HandlerOutcome::Failed,
                Instant::now(),
            );
            return Some(Err(HandlerError::Permanent(format!(
                "No handler for job type '{}'",
                message.job_type
            ))));
        };
        // A type with a handler: the label stays bounded by the handlers.
        let type_label = message.job_type.trim().to_lowercase();
        let started = Instant::now();
        let (progress, mut progress_updates) = Progress::channel();
        let context = JobContext {
            id: message.id,
            job_type: message.job_type.clone(),
            payload: message.payload.clone(),
            attempt: message.attempt,
            cancel: job_token.clone(),
            progress,
        };
        // Forwards the latest progress while the handler runs (values in between may be skipped).
        let forwarder = {
            let reporter = Arc::clone(&self.reporter);
            let (job_id, attempt, worker_id, lease) = (
                message.id,
                message.attempt,
                self.worker_id.clone(),
                message.lease.clone(),
            );
            tokio::spawn(async move {
                while progress_updates.changed().await.is_ok() {
                    let Some(percent) = *progress_updates.borrow_and_update() else {
                        continue;
                    };
                    let kind = ReportKind::Progress { percent };
                    let report = Report {
                        job_id,
                        attempt: Some(attempt),
                        worker_id: worker_id.clone(),
                        kind,
                        lease: lease.clone(),
                    };
                    if let Err(error) = reporter.report(report).await {
                        tracing::debug!(%job_id, error = %error_chain(&error), "progress not recorded");
                    }
                }
            })
        };
        let _stop_forwarding = AbortOnDrop(forwarder);
        let timeout = Duration::from_secs(message.execution_timeout.max(1));
        // The handler runs in its own task so a panic in user code fails the job, not the slot.
        let mut task = tokio::spawn(async move { handler.handle(context).await });
        let finished = tokio::select! {
            joined = tokio::time::timeout(timeout, &mut task) => Some(joined),
            () = job_token.cancelled() => None,
        };
        let outcome = match &finished {
            Some(Ok(Ok(Ok(_)))) if !job_token.is_cancelled() => HandlerOutcome::Completed,
            Some(Ok(_)) if !job_token.is_cancelled() => HandlerOutcome::Failed,
            _ => HandlerOutcome::Stopped,
        };
        worker_metrics::record_handler(type_label, outcome, started);
        match finished {
            // Cancelled (or shut down) while the handler was finishing: its outcome is moot.
            Some(_) if job_token.is_cancelled() => None,
            Some(Ok(Ok(outcome))) => Some(outcome),
            Some(Ok(Err(join_error))) => Some(Err(HandlerError::Retryable(format!(
                "handler panicked: {join_error}"
            )))),
            Some(Err(_)) => {
                // The orchestrator times the attempt out on its own timer (TIMEOUT or a retry);
                // the worker only stops the handler and frees the slot.
                task.abort();
                tracing::info!(job_id = %message.id, attempt = message.attempt, "execution timeout: handler stopped");
                None
            }
            None => {
                // Give the handler a moment to see its token, then stop it.
                let _ = tokio::time::timeout(HANDLER_STOP_GRACE, &mut task).await;
                task.abort();
                None
            }
        }
    }
}
