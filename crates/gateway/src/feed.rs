//! The event consumer: lifecycle events in, the read model and SSE subscribers updated, and the
//! highest stored `seq` out (the "published up to" watermark of DESIGN.md, rule 6).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use distriqueue_broker::EventReceiver;
use distriqueue_core::{JobId, JobResponse, StatusEvent};
use distriqueue_util::error_chain;
use distriqueue_util::retry::Backoff;
use tokio::sync::watch;

use crate::sse::SseUpdate;
use crate::state::AppState;

/// Most events taken and stored per batch.
pub const FEED_BATCH: usize = 512;

/// Between two tries of a batch the read model did not take.
const STORE_BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));

/// What a feed does with its events. Both roles send events to SSE subscribers; an event that
/// reaches a gateway through both of its feeds is sent once ([`RecentSeqs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedRole {
    /// Stores them in the read model, acknowledges them to the transport, then sends them to
    /// SSE subscribers (`serve` in process: the one feed; RabbitMQ: the shared `status.queue`,
    /// whose backlog after a gateway restart holds what its live queue never saw).
    Store,
    /// Sends them to SSE subscribers (RabbitMQ: this gateway's own queue of every event).
    Live,
}

/// The `seq`s most recently sent to SSE subscribers, so an event that arrives through both
/// feeds (or again after an orchestrator restart) is sent once.
#[derive(Default)]
pub(crate) struct RecentSeqs {
    seen: HashSet<u64>,
    order: VecDeque<u64>,
}

/// How many recent seqs [`RecentSeqs`] remembers.
const RECENT_SEQS: usize = 65_536;

impl RecentSeqs {
    /// True the first time `seq` is offered (within the window).
    fn first_time(&mut self, seq: u64) -> bool {
        if !self.seen.insert(seq) {
            return false;
        }
        self.order.push_back(seq);
        if self.order.len() > RECENT_SEQS {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        true
    }
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
            if role == FeedRole::Store {
                let snapshots = newest_snapshots(&batch);
                upsert_until_stored(&state, snapshots).await;
                events.acknowledge().await;
            }
            let fresh: Vec<&StatusEvent> = {
                let mut recent = state.recent_seqs.lock();
                batch
                    .iter()
                    .filter(|event| recent.first_time(event.seq))
                    .collect()
            };
            for event in fresh {
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

/// The newest snapshot of each job in the batch with the highest `seq` seen for it, in
/// first-seen order: one row per job keeps a multi-row upsert valid on every backend.
fn newest_snapshots(batch: &[StatusEvent]) -> Vec<(JobResponse, u64)> {
    let mut position: HashMap<JobId, usize> = HashMap::with_capacity(batch.len());
    let mut snapshots: Vec<(JobResponse, u64)> = Vec::with_capacity(batch.len());
    for event in batch {
        match position.get(&event.job_id) {
            Some(&index) => {
                let (kept, seq) = &mut snapshots[index];
                if event.job.version > kept.version {
                    *kept = event.job.clone();
                }
                *seq = (*seq).max(event.seq);
            }
            None => {
                position.insert(event.job_id, snapshots.len());
                snapshots.push((event.job.clone(), event.seq));
            }
        }
    }
    snapshots
}

/// Upserts until the store takes the batch: an event is never dropped because the store is
/// away or busy, since the watermark must not pass an event the read model lacks. A batch the
/// store refuses for its data ([`WriteError::is_unstorable_row`]: NUL in text, a value too
/// long) holds a row it can never store (issue 11, item 7): its rows are then stored one at a
/// time, and each one refused for its data alone is logged as an error and skipped, so the feed
/// moves on. That job's row then lags until a later event stores it.
async fn upsert_until_stored(state: &AppState, snapshots: Vec<(JobResponse, u64)>) {
    let mut pending = snapshots;
    let mut delays = STORE_BACKOFF.delays();
    loop {
        let error = match state.writer.write_events(pending.clone()).await {
            Ok(()) => return,
            Err(error) if error.is_unstorable_row() => {
                pending = store_one_by_one(state, pending).await;
                if pending.is_empty() {
                    return;
                }
                continue;
            }
            Err(error) => error,
        };
        let delay = delays.next().unwrap_or(STORE_BACKOFF.max);
        tracing::warn!(error = %error_chain(&error), ?delay, "storing lifecycle events failed; retrying");
        tokio::time::sleep(delay).await;
    }
}

/// Stores `rows` one at a time through the writer, skipping (and logging) each that the store
/// refuses for its data; returns the rest from the first row that failed otherwise (to retry).
async fn store_one_by_one(
    state: &AppState,
    rows: Vec<(JobResponse, u64)>,
) -> Vec<(JobResponse, u64)> {
    let mut rows = rows.into_iter();
    while let Some(row) = rows.next() {
        match state.writer.write_events(vec![row.clone()]).await {
            Ok(()) => {}
            Err(error) if error.is_unstorable_row() => {
                tracing::error!(
                    job_id = %row.0.id,
                    seq = row.1,
                    error = %error_chain(&error),
                    "the read model cannot store this job's row: skipped"
                );
            }
            Err(_) => return std::iter::once(row).chain(rows).collect(),
        }
    }
    Vec::new()
}

/// Applies the orchestrator's live snapshots to the read model now and every
/// `reconcile_every` (a stored newer version wins, as always). Runs until aborted.
pub(crate) async fn reconcile(state: AppState) {
    let mut tick = tokio::time::interval(state.config.reconcile_every.max(Duration::from_secs(1)));
    loop {
        tick.tick().await;
        match state.orchestrator.live_snapshots().await {
            Ok(snapshots) if snapshots.is_empty() => {}
            Ok(snapshots) => {
                let n_jobs = snapshots.len();
                match state.writer.write(snapshots).await {
                    Ok(()) => {
                        tracing::debug!(n_jobs, "read model reconciled with the orchestrator")
                    }
                    Err(error) => {
                        tracing::warn!(error = %error_chain(&error), "cannot reconcile the read model")
                    }
                }
            }
            Err(error) => {
                tracing::debug!(error = %error_chain(&error), "no live snapshots to reconcile with")
            }
        }
    }
}
