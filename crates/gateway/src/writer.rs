//! The read model's single writer: snapshots from write replies (submit, cancel) and from the
//! event feed are gathered into one multi-row upsert per batch (DESIGN.md, "Hot paths batch"),
//! instead of one transaction per request.

use std::sync::Arc;
use std::time::Instant;

use distriqueue_core::JobResponse;
use distriqueue_store::{Store, StoreError};
use distriqueue_util::Batcher;

/// Most waiting write requests folded into one upsert.
const MAX_REQUESTS_PER_BATCH: usize = 512;

/// Snapshots with the `seq` of the event each came with (0 for a write reply).
type Snapshots = Vec<(JobResponse, u64)>;

/// A handle to the writer task. Cheap to clone.
#[derive(Clone)]
pub(crate) struct StoreWriter {
    batcher: Batcher<Snapshots, Result<(), WriteError>>,
}

impl WriteError {
    /// True when the store refused the rows themselves ([`StoreError::is_unstorable_row`]).
    pub(crate) fn is_unstorable_row(&self) -> bool {
        matches!(self, WriteError::Store(error) if error.is_unstorable_row())
    }
}

/// Why snapshots were not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum WriteError {
    /// The read model refused or failed the upsert.
    #[error("the read model write failed")]
    Store(#[source] Arc<StoreError>),
    /// The writer task is gone.
    #[error("the read-model writer stopped")]
    Stopped,
}

impl StoreWriter {
    /// Starts the writer task over `store`; it ends when every handle is dropped. Must be called
    /// inside a tokio runtime.
    pub(crate) fn spawn(store: Store) -> StoreWriter {
        let batcher = Batcher::start(
            MAX_REQUESTS_PER_BATCH,
            4 * MAX_REQUESTS_PER_BATCH,
            move |requests: Vec<Snapshots>| {
                let store = store.clone();
                async move {
                    let n_requests = requests.len();
                    let jobs: Snapshots = requests.into_iter().flatten().collect();
                    let started = Instant::now();
                    let result = store
                        .upsert_events(&jobs)
                        .await
                        .map_err(|error| WriteError::Store(Arc::new(error)));
                    crate::metrics::record_write(jobs.len(), started);
                    vec![result; n_requests]
                }
            },
        );
        StoreWriter { batcher }
    }

    /// Stores the snapshots of write replies (each applied only when its version is newer) and
    /// returns once they are committed, together with whatever else was waiting.
    pub(crate) async fn write(&self, jobs: Vec<JobResponse>) -> Result<(), WriteError> {
        self.write_events(jobs.into_iter().map(|job| (job, 0)).collect())
            .await
    }

    /// Stores snapshots that came with lifecycle events, each with its event's `seq`.
    pub(crate) async fn write_events(&self, jobs: Snapshots) -> Result<(), WriteError> {
        self.batcher
            .call(jobs)
            .await
            .map_err(|_| WriteError::Stopped)?
    }
}
