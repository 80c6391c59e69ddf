//! The orchestrator's metrics (docs/metrics.md): lifecycle counters and job histograms counted
//! by the leader as it publishes each event, and gauges (jobs waiting and running, workers, Raft,
//! the watermark) refreshed every second from the node's state by [`run_gauges`].

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;

use distriqueue_core::api::RaftRole;
use distriqueue_core::{JobStatus, Priority, StatusEvent};

use crate::handle::OrchestratorHandle;
use crate::raft::NodeId;
use crate::raft_view::RaftView;

/// Jobs registered (first version only).
pub const JOBS_SUBMITTED: &str = "distriqueue_jobs_submitted_total";
/// Jobs that reached COMPLETED.
pub const JOBS_COMPLETED: &str = "distriqueue_jobs_completed_total";
/// Jobs that reached FAILED.
pub const JOBS_FAILED: &str = "distriqueue_jobs_failed_total";
/// Attempts that failed with retries left.
pub const JOBS_RETRIED: &str = "distriqueue_jobs_retried_total";
/// Jobs that reached TIMEOUT.
pub const JOBS_TIMED_OUT: &str = "distriqueue_jobs_timed_out_total";
/// Jobs that reached CANCELLED.
pub const JOBS_CANCELLED: &str = "distriqueue_jobs_cancelled_total";
/// Jobs PENDING, QUEUED or RETRYING, by priority.
pub const JOBS_WAITING: &str = "distriqueue_jobs_waiting";
/// Jobs RUNNING.
pub const JOBS_RUNNING: &str = "distriqueue_jobs_running";
/// Creation to start, seconds.
pub const JOB_QUEUE_SECONDS: &str = "distriqueue_job_queue_seconds";
/// Last start to end, seconds.
pub const JOB_EXECUTION_SECONDS: &str = "distriqueue_job_execution_seconds";
/// Creation to end, seconds.
pub const JOB_END_TO_END_SECONDS: &str = "distriqueue_job_end_to_end_seconds";
/// Workers heard from within the heartbeat timeout.
pub const WORKERS_ALIVE: &str = "distriqueue_workers_alive";
/// Their job slots.
pub const WORKERS_SLOTS: &str = "distriqueue_workers_slots";
/// Jobs they run.
pub const WORKERS_SLOTS_BUSY: &str = "distriqueue_workers_slots_busy";
/// Workers declared lost.
pub const WORKERS_LOST: &str = "distriqueue_workers_lost_total";
/// This node's term.
pub const RAFT_TERM: &str = "distriqueue_orchestrator_raft_term";
/// 1 for this node's role.
pub const RAFT_ROLE: &str = "distriqueue_orchestrator_raft_role";
/// 1 while a leader is known.
pub const RAFT_HAS_LEADER: &str = "distriqueue_orchestrator_raft_has_leader";
/// The highest index known committed.
pub const RAFT_COMMIT_INDEX: &str = "distriqueue_orchestrator_raft_commit_index";
/// The highest index applied.
pub const RAFT_APPLIED_INDEX: &str = "distriqueue_orchestrator_raft_applied_index";
/// On the leader, entries each member is behind.
pub const RAFT_REPLICATION_LAG: &str = "distriqueue_orchestrator_raft_replication_lag";
/// Commands per committed entry.
pub const LOG_ENTRY_COMMANDS: &str = "distriqueue_orchestrator_log_entry_commands";
/// Effect batches not yet carried out.
pub const OUTBOX_BACKLOG: &str = "distriqueue_orchestrator_outbox_backlog";
/// Messages the broker refused for good, by kind (job, event, control).
pub const OUTBOX_REFUSED: &str = "distriqueue_orchestrator_outbox_refused_total";
/// Job messages published (confirmed), by `reason`: `dispatch` (an attempt queued, or resumed
/// by a new leader) or `passed_over` (published again: it left its queue unstarted).
pub const JOB_MESSAGES_PUBLISHED: &str = "distriqueue_orchestrator_job_messages_published_total";
/// Events past the committed watermark.
pub const EVENTS_UNACKNOWLEDGED: &str = "distriqueue_orchestrator_events_unacknowledged";
/// Requests answered, by route, method and status.
pub const HTTP_REQUESTS: &str = "distriqueue_orchestrator_http_requests_total";
/// Answer time, seconds, by route and method.
pub const HTTP_DURATION: &str = "distriqueue_orchestrator_http_request_duration_seconds";

/// Describes every metric of the orchestrator (the `# HELP` lines), once per process, and
/// registers the counters that have no per-type labels at 0 (so their first increase shows).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    metrics::counter!(WORKERS_LOST).increment(0);
    for kind in REFUSED_KINDS {
        metrics::counter!(OUTBOX_REFUSED, "kind" => kind).increment(0);
    }
    for reason in PUBLISH_REASONS {
        metrics::counter!(JOB_MESSAGES_PUBLISHED, "reason" => reason).increment(0);
    }
    zero_counters("other");
    describe_counter!(
        JOBS_SUBMITTED,
        "Jobs registered (a repeated id or idempotency key is not counted)."
    );
    describe_counter!(JOBS_COMPLETED, "Jobs that reached COMPLETED.");
    describe_counter!(JOBS_FAILED, "Jobs that reached FAILED.");
    describe_counter!(
        JOBS_RETRIED,
        "Attempts that failed with retries left (the job went RETRYING)."
    );
    describe_counter!(JOBS_TIMED_OUT, "Jobs that reached TIMEOUT.");
    describe_counter!(JOBS_CANCELLED, "Jobs that reached CANCELLED.");
    describe_gauge!(
        JOBS_WAITING,
        "Jobs PENDING, QUEUED or RETRYING now, by priority."
    );
    describe_gauge!(JOBS_RUNNING, "Jobs RUNNING now.");
    describe_histogram!(
        JOB_QUEUE_SECONDS,
        Unit::Seconds,
        "From a job's creation to the start of the attempt that started."
    );
    describe_histogram!(
        JOB_EXECUTION_SECONDS,
        Unit::Seconds,
        "From the last attempt's start to the job's end (COMPLETED, FAILED, TIMEOUT)."
    );
    describe_histogram!(
        JOB_END_TO_END_SECONDS,
        Unit::Seconds,
        "From a job's creation to its end (any terminal state)."
    );
    describe_gauge!(
        WORKERS_ALIVE,
        "Workers heard from within the heartbeat timeout (on the leader)."
    );
    describe_gauge!(WORKERS_SLOTS, "The job slots of the workers alive.");
    describe_gauge!(WORKERS_SLOTS_BUSY, "Jobs the workers alive run now.");
    describe_counter!(
        WORKERS_LOST,
        "Workers declared lost (silent past the heartbeat timeout, or restarted)."
    );
    describe_gauge!(RAFT_TERM, "This node's current Raft term.");
    describe_gauge!(RAFT_ROLE, "1 for this node's Raft role, 0 for the others.");
    describe_gauge!(RAFT_HAS_LEADER, "1 while this node knows a leader.");
    describe_gauge!(RAFT_COMMIT_INDEX, "The highest log index known committed.");
    describe_gauge!(
        RAFT_APPLIED_INDEX,
        "The highest log index applied to the state machine."
    );
    describe_gauge!(
        RAFT_REPLICATION_LAG,
        "On the leader: log entries each member is behind."
    );
    describe_histogram!(
        LOG_ENTRY_COMMANDS,
        "Commands per committed log entry (group commit)."
    );
    describe_gauge!(
        OUTBOX_BACKLOG,
        "Committed effect batches not yet carried out."
    );
    describe_counter!(
        OUTBOX_REFUSED,
        "Messages the broker refused for good (too large for it), set aside by the outbox, by kind: a job's (the job fails), an event or a control message."
    );
    describe_counter!(
        JOB_MESSAGES_PUBLISHED,
        "Job messages the transport took, by reason: dispatch (an attempt queued, or resumed by a new leader) or passed_over (published again: it left its queue and was not started within the dispatch timeout)."
    );
    describe_gauge!(
        EVENTS_UNACKNOWLEDGED,
        "Lifecycle events past the committed watermark."
    );
    describe_counter!(
        HTTP_REQUESTS,
        "Orchestrator API requests answered, by route, method and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time to answer an orchestrator API request, by route and method."
    );
}

/// The `kind` labels of [`OUTBOX_REFUSED`].
const REFUSED_KINDS: [&str; 3] = ["job", "event", "control"];

/// Counts a message the broker refused for good (`kind`: one of [`REFUSED_KINDS`]).
pub(crate) fn record_refused(kind: &'static str) {
    metrics::counter!(OUTBOX_REFUSED, "kind" => kind).increment(1);
}

/// The `reason` labels of [`JOB_MESSAGES_PUBLISHED`].
pub(crate) const PUBLISH_REASONS: [&str; 2] = ["dispatch", "passed_over"];

/// Counts `n` job messages the transport took (`reason`: one of [`PUBLISH_REASONS`]).
pub(crate) fn record_published(reason: &'static str, n: usize) {
    metrics::counter!(JOB_MESSAGES_PUBLISHED, "reason" => reason).increment(n as u64);
}

/// Most distinct job types that get their own `type` label; the types seen after them count
/// under `type="other"`. Job types come from clients: without a cap, a client inventing types
/// would grow the registry (and every scrape) without bound.
pub const MAX_TYPE_LABELS: usize = 100;

/// Longest job type that gets its own label, in bytes; longer ones count as `other`.
pub const MAX_TYPE_LABEL_BYTES: usize = 128;

/// The job types labelled so far (first come, kept for the process's life).
struct TypeLabels(BTreeSet<String>);

impl TypeLabels {
    /// The `type` label of `job_type`: itself when it is one of the labelled types, or short,
    /// printable and fewer than [`MAX_TYPE_LABELS`] are labelled; `other` otherwise.
    fn label(&mut self, job_type: &str) -> String {
        if self.0.contains(job_type) {
            return job_type.to_string();
        }
        let fits = job_type.len() <= MAX_TYPE_LABEL_BYTES
            && !job_type.chars().any(char::is_control)
            && self.0.len() < MAX_TYPE_LABELS;
        if fits {
            self.0.insert(job_type.to_string());
            return job_type.to_string();
        }
        "other".to_string()
    }
}

/// The process's [`TypeLabels`]: the label of `job_type`. A type labelled for the first time
/// gets its lifecycle counters at 0 for every priority, so that its first failure is an
/// increase (`increase()` sees nothing in a series that appears at 1).
fn type_label(job_type: &str) -> String {
    static LABELLED: Mutex<TypeLabels> = Mutex::new(TypeLabels(BTreeSet::new()));
    let mut labelled = LABELLED.lock();
    let known = labelled.0.len();
    let label = labelled.label(job_type);
    if labelled.0.len() > known {
        zero_counters(&label);
    }
    label
}

/// Registers the lifecycle counters of job type label `job_type` at 0, for every priority.
fn zero_counters(job_type: &str) {
    for priority in Priority::HIGHEST_FIRST {
        let labels = [
            ("type", job_type.to_string()),
            ("priority", priority.as_str().to_string()),
        ];
        for name in [
            JOBS_SUBMITTED,
            JOBS_COMPLETED,
            JOBS_FAILED,
            JOBS_RETRIED,
            JOBS_TIMED_OUT,
            JOBS_CANCELLED,
        ] {
            metrics::counter!(name, &labels).increment(0);
        }
    }
}

/// Counts a worker declared lost ([`WORKERS_LOST`]).
pub fn worker_lost() {
    metrics::counter!(WORKERS_LOST).increment(1);
}

/// Counts what published events say: submissions, outcomes and retries by type and priority,
/// and the job's times by type. A leader publishing again the events past the watermark (after
/// a change of leader) counts them again: the counters are at-least-once, like the events.
pub(crate) fn record_events(events: &[StatusEvent]) {
    let seconds = |ms: i64| ms.max(0) as f64 / 1000.0;
    for event in events {
        let job = &event.job;
        let job_type = type_label(&job.job_type);
        let labels = [
            ("type", job_type.clone()),
            ("priority", job.priority.as_str().to_string()),
        ];
        if event.version == 1 {
            metrics::counter!(JOBS_SUBMITTED, &labels).increment(1);
        }
        let counter = match event.status {
            JobStatus::Completed => Some(JOBS_COMPLETED),
            JobStatus::Failed => Some(JOBS_FAILED),
            JobStatus::Retrying => Some(JOBS_RETRIED),
            JobStatus::Timeout => Some(JOBS_TIMED_OUT),
            JobStatus::Cancelled => Some(JOBS_CANCELLED),
            _ => None,
        };
        if let Some(name) = counter {
            metrics::counter!(name, &labels).increment(1);
        }
        let by_type = [("type", job_type)];
        // An attempt's start is its first RUNNING event; progress reports follow it.
        if event.status == JobStatus::Running && event.progress.is_none() {
            metrics::histogram!(JOB_QUEUE_SECONDS, &by_type).record(seconds(job.queue_time_ms));
        }
        if matches!(
            event.status,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Timeout
        ) {
            metrics::histogram!(JOB_EXECUTION_SECONDS, &by_type)
                .record(seconds(job.execution_time_ms));
        }
        if let Some(total) = job.total_duration_ms {
            metrics::histogram!(JOB_END_TO_END_SECONDS, &by_type).record(seconds(total));
        }
    }
}

/// How often the gauges are refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// Refreshes the gauges from the node's state every second, until aborted.
pub(crate) async fn run_gauges(handle: OrchestratorHandle) {
    let mut tick = tokio::time::interval(GAUGE_INTERVAL);
    let mut reported_followers = BTreeSet::new();
    loop {
        tick.tick().await;
        refresh(&handle, &mut reported_followers);
    }
}

/// Sets every gauge from the node's state now.
fn refresh(handle: &OrchestratorHandle, reported_followers: &mut BTreeSet<NodeId>) {
    let (waiting, running, unacknowledged) = handle.read(|state| {
        let mut waiting = [0u64; 4];
        let mut running = 0u64;
        for job in state.jobs() {
            match job.status {
                JobStatus::Pending | JobStatus::Queued | JobStatus::Retrying => {
                    waiting[priority_index(job.spec.priority)] += 1;
                }
                JobStatus::Running => running += 1,
                _ => {}
            }
        }
        (
            waiting,
            running,
            state.last_seq().saturating_sub(state.published_upto()),
        )
    });
    for priority in Priority::HIGHEST_FIRST {
        metrics::gauge!(JOBS_WAITING, "priority" => priority.as_str())
            .set(waiting[priority_index(priority)] as f64);
    }
    metrics::gauge!(JOBS_RUNNING).set(running as f64);
    metrics::gauge!(EVENTS_UNACKNOWLEDGED).set(unacknowledged as f64);

    let workers = if handle.is_live_leader() {
        handle.describe_workers()
    } else {
        Vec::new()
    };
    let alive = workers
        .iter()
        .filter(|worker| worker.status == "alive")
        .count();
    metrics::gauge!(WORKERS_ALIVE).set(alive as f64);
    metrics::gauge!(WORKERS_SLOTS).set(workers.iter().map(|w| f64::from(w.capacity)).sum::<f64>());
    metrics::gauge!(WORKERS_SLOTS_BUSY).set(
        workers
            .iter()
            .map(|w| f64::from(w.current_load))
            .sum::<f64>(),
    );

    metrics::gauge!(OUTBOX_BACKLOG).set(handle.outbox_backlog.load(Ordering::Acquire) as f64);

    let raft = RaftView::new(handle.metrics());
    metrics::gauge!(RAFT_TERM).set(raft.metrics.current_term as f64);
    let role = raft.role();
    for each in RaftRole::ALL {
        let value = if each == role { 1.0 } else { 0.0 };
        metrics::gauge!(RAFT_ROLE, "role" => each.as_str()).set(value);
    }
    let has_leader = raft.metrics.current_leader.is_some();
    metrics::gauge!(RAFT_HAS_LEADER).set(if has_leader { 1.0 } else { 0.0 });
    metrics::gauge!(RAFT_COMMIT_INDEX).set(raft.commit_index().unwrap_or(0) as f64);
    metrics::gauge!(RAFT_APPLIED_INDEX).set(raft.applied_index().unwrap_or(0) as f64);
    // A member no longer replicated to (this node stopped leading, or it left) reads 0.
    let followers = raft.followers();
    for gone in reported_followers.difference(&followers.iter().map(|(id, _)| *id).collect()) {
        metrics::gauge!(RAFT_REPLICATION_LAG, "follower" => gone.to_string()).set(0.0);
    }
    reported_followers.clear();
    for (member, matched) in followers {
        metrics::gauge!(RAFT_REPLICATION_LAG, "follower" => member.to_string())
            .set(raft.lag(matched) as f64);
        reported_followers.insert(member);
    }
}

/// `priority`'s place in [`Priority::HIGHEST_FIRST`].
fn priority_index(priority: Priority) -> usize {
    match priority {
        Priority::Critical => 0,
        Priority::High => 1,
        Priority::Medium => 2,
        Priority::Low => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_types_past_the_cap_or_too_long_count_as_other() {
        let mut labels = TypeLabels(BTreeSet::new());
        for n in 0..MAX_TYPE_LABELS {
            assert_eq!(labels.label(&format!("type-{n}")), format!("type-{n}"));
        }
        assert_eq!(labels.label("one-too-many"), "other");
        // A labelled type keeps its label.
        assert_eq!(labels.label("type-7"), "type-7");

        let mut labels = TypeLabels(BTreeSet::new());
        assert_eq!(labels.label(&"x".repeat(MAX_TYPE_LABEL_BYTES + 1)), "other");
        assert_eq!(labels.label("bad\u{0}type"), "other");
        assert_eq!(labels.label("fine"), "fine");
    }

    #[test]
    fn priorities_have_their_place_highest_first() {
        for (place, priority) in Priority::HIGHEST_FIRST.into_iter().enumerate() {
            assert_eq!(priority_index(priority), place);
        }
    }
}
