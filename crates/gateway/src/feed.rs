//! The event consumer: lifecycle events in, the read model and SSE subscribers updated, and the
//! highest stored `seq` out (the "published up to" watermark of DESIGN.md, rule 6).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use distriqueue_broker::EventReceiver;
use distriqueue_core::{JobId, JobResponse, StatusEvent};
use tokio::sync::watch;

use crate::sse::SseUpdate;
use crate::state::AppState;
use crate::writer::StoreWriter;

/// Most events taken and stored per batch.
pub const FEED_BATCH: usize = 512;

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What an event feed does with its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedRole {
    /// Stores them in the read model and sends them to SSE subscribers (one feed carries
    /// every event: `serve` in process).
    Both,
    /// Stores them, then acknowledges them (RabbitMQ `status.queue`, shared by gateways).
    ReadModel,
    /// Sends them to SSE subscribers (this gateway's own queue of every event).
    Live,
}

/// Spawns the consumer; see [`crate::Gateway::consume_events`].
pub(crate) fn spawn(
    state: AppState,
    mut events: EventReceiver,
    role: FeedRole,
) -> watch::Receiver<u64> {
    let (stored_upto, receiver) = watch::channel(0u64);
    tokio::spawn(async move {
        while let Some(batch) = events.recv_batch(FEED_BATCH).await {
            if role != FeedRole::Live {
                let snapshots = newest_snapshots(&batch);
                upsert_until_stored(&state.writer, snapshots).await;
                events.acknowledge().await;
            }
            if role == FeedRole::ReadModel {
                continue;
            }
            for event in &batch {
                let update = Arc::new(SseUpdate::new(event));
                state
                    .last_broadcast_seq
                    .fetch_max(update.seq(), Ordering::AcqRel);
                // No subscriber is not an error: nobody is watching.
                let _ = state.updates.send(update);
            }
            if let Some(highest) = batch.iter().map(|event| event.seq).max() {
                stored_upto.send_if_modified(|current| {
                    let advanced = highest > *current;
                    *current = (*current).max(highest);
                    advanced
                });
            }
        }
        tracing::debug!("lifecycle event feed ended");
    });
    receiver
}

/// The newest snapshot of each job in the batch, in first-seen order: one row per job keeps
/// a multi-row upsert valid on every backend.
fn newest_snapshots(batch: &[StatusEvent]) -> Vec<JobResponse> {
    let mut position: HashMap<JobId, usize> = HashMap::with_capacity(batch.len());
    let mut snapshots: Vec<JobResponse> = Vec::with_capacity(batch.len());
    for event in batch {
        match position.get(&event.job_id) {
            Some(&index) => {
                if event.job.version > snapshots[index].version {
                    snapshots[index] = event.job.clone();
                }
            }
            None => {
                position.insert(event.job_id, snapshots.len());
                snapshots.push(event.job.clone());
            }
        }
    }
    snapshots
}

/// Upserts until the store takes the batch: an event is never dropped, since the watermark
/// must not pass an event the read model lacks.
async fn upsert_until_stored(writer: &StoreWriter, snapshots: Vec<JobResponse>) {
    let mut backoff = FIRST_BACKOFF;
    let mut n_failures: u32 = 0;
    loop {
        match writer.write(snapshots.clone()).await {
            Ok(()) => {
                if n_failures > 0 {
                    tracing::info!(n_failures, "read model accepts events again");
                }
                return;
            }
            Err(error) => {
                n_failures += 1;
                tracing::warn!(
                    %error,
                    n_failures,
                    n_jobs = snapshots.len(),
                    retry_in_ms = backoff.as_millis() as u64,
                    "cannot store lifecycle events; retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
