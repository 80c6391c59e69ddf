//! The gateway's metrics (docs/metrics.md): its HTTP requests, its SSE clients and its
//! read-model writes. The lifecycle metrics are the orchestrator's.

use std::time::Instant;

/// Requests answered, by route, method and status.
pub const HTTP_REQUESTS: &str = "distriqueue_gateway_http_requests_total";
/// Answer time, seconds, by route and method.
pub const HTTP_DURATION: &str = "distriqueue_gateway_http_request_duration_seconds";
/// Open SSE streams.
pub const SSE_CLIENTS: &str = "distriqueue_gateway_sse_clients";
/// Job rows per read-model write.
pub const READMODEL_WRITE_BATCH_SIZE: &str = "distriqueue_gateway_readmodel_write_batch_size";
/// Time of one read-model write, seconds.
pub const READMODEL_WRITE_SECONDS: &str = "distriqueue_gateway_readmodel_write_seconds";

/// Finished jobs removed from the read model by retention (`--retention`).
pub const READMODEL_JOBS_REMOVED: &str = "distriqueue_gateway_readmodel_jobs_removed_total";

/// Describes every metric of the gateway (the `# HELP` lines).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        HTTP_REQUESTS,
        "Gateway API requests answered, by route, method and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time to answer a gateway API request, by route and method."
    );
    describe_gauge!(SSE_CLIENTS, "Open SSE streams (GET /api/jobs/stream).");
    describe_histogram!(
        READMODEL_WRITE_BATCH_SIZE,
        "Job rows per read-model write (concurrent writes are gathered into one)."
    );
    describe_histogram!(
        READMODEL_WRITE_SECONDS,
        Unit::Seconds,
        "Time of one read-model write."
    );
    metrics::counter!(READMODEL_JOBS_REMOVED).increment(0);
    describe_counter!(
        READMODEL_JOBS_REMOVED,
        "Finished jobs that left the read model because they ended longer ago than the retention window."
    );
}

/// Counts `n` finished jobs retention removed ([`READMODEL_JOBS_REMOVED`]).
pub(crate) fn record_removed(n: u64) {
    metrics::counter!(READMODEL_JOBS_REMOVED).increment(n);
}

/// Counts one open SSE stream while it lives ([`SSE_CLIENTS`]).
pub(crate) struct SseClient(());

impl SseClient {
    pub(crate) fn open() -> SseClient {
        metrics::gauge!(SSE_CLIENTS).increment(1.0);
        SseClient(())
    }
}

impl Drop for SseClient {
    fn drop(&mut self) {
        metrics::gauge!(SSE_CLIENTS).decrement(1.0);
    }
}

/// Records one read-model write of `rows` rows that started at `started`.
pub(crate) fn record_write(rows: usize, started: Instant) {
    metrics::histogram!(READMODEL_WRITE_BATCH_SIZE).record(rows as f64);
    metrics::histogram!(READMODEL_WRITE_SECONDS).record(started.elapsed().as_secs_f64());
}
