//! Worker liveness, one of the leader's duties: the worker registry keeps heartbeats as soft
//! state on the leader (DESIGN.md, "Live state stays small"), and [`run_liveness`] declares
//! lost a worker silent for longer than the heartbeat timeout, which is the only part that is
//! committed (`Command::WorkerLost`). Cancels for a worker wait in the registry too, for workers
//! that learn them from their heartbeat reply.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use distriqueue_core::api::WorkerView;
use distriqueue_core::{Command, JobId, Millis, WorkerHeartbeat, WorkerId};
use distriqueue_util::clock;
use parking_lot::{Mutex, MutexGuard};

use crate::proposer::Proposer;

struct Entry {
    heartbeat: WorkerHeartbeat,
    last_seen: Instant,
    last_seen_at: Millis,
    /// Attempts this worker must stop, until its next heartbeat takes them.
    cancels: Vec<(JobId, u32)>,
    /// False for a lease holder granted a grace period that has not heartbeat yet.
    heard_from: bool,
}

/// Most workers the leader keeps heartbeats of (issue 11): a heartbeat under a new worker id
/// past it is refused with 429 until silent workers are declared lost and forgotten.
pub const MAX_WORKERS: usize = 4096;

/// The leader's view of its workers.
pub(crate) struct Registry {
    timeout: Duration,
    workers: Mutex<HashMap<WorkerId, Entry>>,
}

impl Registry {
    pub(crate) fn new(timeout: Duration) -> Registry {
        Registry {
            timeout,
            workers: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<WorkerId, Entry>> {
        self.workers.lock()
    }

    /// True when `heartbeat` comes from another instance than the last one heard under its
    /// worker id (the worker restarted). Records nothing.
    pub(crate) fn is_new_instance(&self, heartbeat: &WorkerHeartbeat) -> bool {
        self.lock().get(&heartbeat.worker_id).is_some_and(|known| {
            matches!(
                (&known.heartbeat.instance, &heartbeat.instance),
                (Some(before), Some(now)) if before != now
            )
        })
    }

    /// Records a heartbeat; returns (and forgets) the attempts the worker must stop, and
    /// whether it comes from another instance than the last one heard under this worker id (the
    /// worker restarted).
    pub(crate) fn heartbeat(&self, heartbeat: WorkerHeartbeat) -> (Vec<(JobId, u32)>, bool) {
        let restarted = self.is_new_instance(&heartbeat);
        let mut workers = self.lock();
        let entry = workers
            .entry(heartbeat.worker_id.clone())
            .or_insert_with(|| Entry {
                heartbeat: heartbeat.clone(),
                last_seen: Instant::now(),
                last_seen_at: clock::now(),
                cancels: Vec::new(),
                heard_from: true,
            });
        entry.heard_from = true;
        entry.heartbeat = heartbeat;
        entry.last_seen = Instant::now();
        entry.last_seen_at = clock::now();
        (std::mem::take(&mut entry.cancels), restarted)
    }

    /// Grants `worker_id` a full heartbeat timeout from now, if it is not known yet: what a new
    /// leader does for every worker holding a lease.
    pub(crate) fn grant_grace(&self, worker_id: &WorkerId) {
        let mut workers = self.lock();
        workers.entry(worker_id.clone()).or_insert_with(|| Entry {
            heartbeat: WorkerHeartbeat {
                worker_id: worker_id.clone(),
                worker_type: String::new(),
                capacity: 0,
                current_load: 0,
                total_jobs_processed: 0,
                successful_jobs: 0,
                failed_jobs: 0,
                timestamp: 0,
                instance: None,
            },
            last_seen: Instant::now(),
            last_seen_at: clock::now(),
            cancels: Vec::new(),
            heard_from: false,
        });
    }

    /// Forgets every worker (a node starting to lead knows nothing from an earlier term of its
    /// own: it grants the lease holders a fresh grace and learns the rest from heartbeats).
    pub(crate) fn reset(&self) {
        self.lock().clear();
    }

    /// Forgets a worker that is known to be gone (its leases were released by `WorkerLost`).
    pub(crate) fn forget(&self, worker_id: &WorkerId) {
        self.lock().remove(worker_id);
    }

    /// Queues a cancel for the worker's next heartbeat reply (when the worker is known).
    pub(crate) fn queue_cancel(&self, worker_id: &WorkerId, job_id: JobId, attempt: u32) {
        if let Some(entry) = self.lock().get_mut(worker_id) {
            entry.cancels.push((job_id, attempt));
        }
    }

    /// False when `worker_id` is not known and [`MAX_WORKERS`] are.
    pub(crate) fn has_room_for(&self, worker_id: &WorkerId) -> bool {
        let workers = self.lock();
        workers.len() < MAX_WORKERS || workers.contains_key(worker_id)
    }

    /// Removes and returns every worker silent for longer than the timeout.
    pub(crate) fn take_lost(&self) -> Vec<WorkerId> {
        let mut workers = self.lock();
        let lost: Vec<WorkerId> = workers
            .iter()
            .filter(|(_, entry)| entry.last_seen.elapsed() > self.timeout)
            .map(|(worker_id, _)| worker_id.clone())
            .collect();
        for worker_id in &lost {
            workers.remove(worker_id);
        }
        lost
    }

    /// The workers as `GET /api/cluster/status` and `GET /api/metrics` show them, by id.
    pub(crate) fn describe(&self) -> Vec<WorkerView> {
        let workers = self.lock();
        let sorted: BTreeMap<&WorkerId, &Entry> = workers.iter().collect();
        sorted
            .into_iter()
            .map(|(worker_id, entry)| {
                let beat = &entry.heartbeat;
                WorkerView {
                    worker_id: worker_id.0.clone(),
                    worker_type: beat.worker_type.clone(),
                    capacity: beat.capacity,
                    current_load: beat.current_load,
                    total_jobs_processed: beat.total_jobs_processed,
                    successful_jobs: beat.successful_jobs,
                    failed_jobs: beat.failed_jobs,
                    last_heartbeat: entry.last_seen_at.to_iso(),
                    silent_for_ms: u64::try_from(entry.last_seen.elapsed().as_millis())
                        .unwrap_or(u64::MAX),
                    status: if entry.heard_from {
                        "alive"
                    } else {
                        "awaiting first heartbeat"
                    }
                    .to_string(),
                }
            })
            .collect()
    }
}

/// Declares lost every worker silent for longer than the heartbeat timeout (checked a few times
/// per timeout): commits `WorkerLost`, which fails and retries its running attempts. Runs until
/// the proposer stops.
pub(crate) async fn run_liveness(workers: Arc<Registry>, proposer: Proposer, timeout: Duration) {
    let mut tick = tokio::time::interval(
        (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1)),
    );
    loop {
        tick.tick().await;
        for worker_id in workers.take_lost() {
            tracing::warn!(%worker_id, "worker silent past the heartbeat timeout: declared lost");
            if proposer
                .submit(vec![Command::WorkerLost { worker_id }])
                .await
                .is_err()
            {
                return;
            }
            crate::metrics::worker_lost();
        }
    }
}
