//! A worker's metrics (docs/metrics.md): its job slots, the busy ones, and how long handlers
//! run. Served by the composition root at `--metrics-addr`.

use std::time::Instant;

/// This worker's job slots.
pub const SLOTS: &str = "distriqueue_worker_slots";
/// Its slots running a job now.
pub const SLOTS_BUSY: &str = "distriqueue_worker_slots_busy";
/// Time a handler ran, seconds, by `type` and `outcome`.
pub const HANDLER_SECONDS: &str = "distriqueue_worker_handler_seconds";

/// Describes every metric of the worker (the `# HELP` lines).
pub fn describe() {
    use metrics::{describe_gauge, describe_histogram, Unit};
    describe_gauge!(SLOTS, "This worker's job slots.");
    describe_gauge!(SLOTS_BUSY, "This worker's slots running a job now.");
    describe_histogram!(
        HANDLER_SECONDS,
        Unit::Seconds,
        "Time a handler ran, by job type (a type this worker has no handler for counts as \
         `unhandled`) and outcome (completed, failed, stopped)."
    );
}

/// How a handler run ended, the `outcome` label.
#[derive(Debug, Clone, Copy)]
pub(crate) enum HandlerOutcome {
    Completed,
    Failed,
    Stopped,
}

/// Records one handler run of `job_type` (a label the handlers bound) that began at `started`.
pub(crate) fn record_handler(job_type: String, outcome: HandlerOutcome, started: Instant) {
    let outcome = match outcome {
        HandlerOutcome::Completed => "completed",
        HandlerOutcome::Failed => "failed",
        HandlerOutcome::Stopped => "stopped",
    };
    metrics::histogram!(HANDLER_SECONDS, "type" => job_type, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
}
