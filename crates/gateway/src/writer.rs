//! The read model's single writer: snapshots from write replies (submit, cancel) and from the
//! event feed are gathered into one multi-row upsert per batch (DESIGN.md, "Hot paths batch"),
//! instead of one transaction per request.

use distriqueue_core::JobResponse;
use distriqueue_store::Store;
use tokio::sync::{mpsc, oneshot};

/// Most waiting write requests folded into one upsert.
const MAX_REQUESTS_PER_BATCH: usize = 512;

struct WriteRequest {
    /// Snapshots with the `seq` of the event each came with (0 for a write reply).
    jobs: Vec<(JobResponse, u64)>,
    done: oneshot::Sender<Result<(), String>>,
}

/// A handle to the writer task. Cheap to clone.
#[derive(Clone)]
pub(crate) struct StoreWriter {
    requests: mpsc::Sender<WriteRequest>,
}

/// Why snapshots were not stored: the read model's error, or the writer is gone.
#[derive(Debug, thiserror::Error)]
#[error("read model write failed: {0}")]
pub(crate) struct WriteError(String);

impl StoreWriter {
    /// Starts the writer task over `store`; it ends when every handle is dropped. Must be called
    /// inside a tokio runtime.
    pub(crate) fn spawn(store: Store) -> StoreWriter {
        let (requests, mut receiver) = mpsc::channel::<WriteRequest>(4 * MAX_REQUESTS_PER_BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_REQUESTS_PER_BATCH);
            while receiver.recv_many(&mut batch, MAX_REQUESTS_PER_BATCH).await > 0 {
                let jobs: Vec<(JobResponse, u64)> = batch
                    .iter_mut()
                    .flat_map(|request| std::mem::take(&mut request.jobs))
                    .collect();
                let result = store
                    .upsert_events(&jobs)
                    .await
                    .map_err(|error| error.to_string());
                for request in batch.drain(..) {
                    // A requester that stopped waiting does not need the answer.
                    let _ = request.done.send(result.clone());
                }
            }
        });
        StoreWriter { requests }
    }

    /// Stores the snapshots of write replies (each applied only when its version is newer) and
    /// returns once they are committed, together with whatever else was waiting.
    pub(crate) async fn write(&self, jobs: Vec<JobResponse>) -> Result<(), WriteError> {
        self.write_events(jobs.into_iter().map(|job| (job, 0)).collect())
            .await
    }

    /// Stores snapshots that came with lifecycle events, each with its event's `seq`.
    pub(crate) async fn write_events(
        &self,
        jobs: Vec<(JobResponse, u64)>,
    ) -> Result<(), WriteError> {
        let (done, answer) = oneshot::channel();
        self.requests
            .send(WriteRequest { jobs, done })
            .await
            .map_err(|_| WriteError("the writer stopped".into()))?;
        answer
            .await
            .map_err(|_| WriteError("the writer stopped".into()))?
            .map_err(WriteError)
    }
}
