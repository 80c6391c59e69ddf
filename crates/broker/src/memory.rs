//! The in-process broker: four FIFO queues consumed highest priority first, a control queue per
//! worker, and a lossless event channel.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use distriqueue_core::{ControlMessage, JobMessage, Priority, StatusEvent, WorkerId};

use crate::EventReceiver;
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::{mpsc, Notify};

/// Jobs by priority, highest first within `Priority::HIGHEST_FIRST` order; FIFO within one.
#[derive(Default)]
struct JobQueues {
    /// Index = position in `Priority::HIGHEST_FIRST`.
    queues: [VecDeque<JobMessage>; 4],
    closed: bool,
}

fn queue_index(priority: Priority) -> usize {
    Priority::HIGHEST_FIRST
        .iter()
        .position(|candidate| *candidate == priority)
        .expect("HIGHEST_FIRST lists every priority")
}

/// The in-process broker. Cheap to clone; all clones share the queues.
#[derive(Clone)]
pub struct InProcessBroker {
    jobs: Arc<Mutex<JobQueues>>,
    job_ready: Arc<Notify>,
    events: mpsc::UnboundedSender<StatusEvent>,
    event_receiver: Arc<Mutex<Option<mpsc::UnboundedReceiver<StatusEvent>>>>,
    /// Each worker's control queue, by worker id (CONTRACT.md `control.exchange`).
    controls: Arc<Mutex<HashMap<WorkerId, mpsc::UnboundedSender<ControlMessage>>>>,
}

impl Default for InProcessBroker {
    fn default() -> InProcessBroker {
        InProcessBroker::new()
    }
}

impl InProcessBroker {
    /// An empty broker.
    pub fn new() -> InProcessBroker {
        let (events, event_receiver) = mpsc::unbounded_channel();
        InProcessBroker {
            jobs: Arc::default(),
            job_ready: Arc::new(Notify::new()),
            events,
            event_receiver: Arc::new(Mutex::new(Some(event_receiver))),
            controls: Arc::default(),
        }
    }

    fn lock_jobs(&self) -> MutexGuard<'_, JobQueues> {
        self.jobs.lock()
    }

    /// Enqueues a job message on the queue of its priority.
    pub fn publish_job(&self, message: JobMessage) {
        let index = queue_index(message.priority());
        self.lock_jobs().queues[index].push_back(message);
        self.job_ready.notify_one();
    }

    /// Takes the oldest message of the highest priority held, without waiting.
    pub fn try_next_job(&self) -> Option<JobMessage> {
        let mut jobs = self.lock_jobs();
        jobs.queues.iter_mut().find_map(VecDeque::pop_front)
    }

    /// Waits for the next job message (highest priority first, FIFO within one). Returns `None`
    /// once [`InProcessBroker::close`] was called. Cancel-safe: a message is removed only when
    /// this future returns it.
    pub async fn next_job(&self) -> Option<JobMessage> {
        loop {
            let notified = self.job_ready.notified();
            {
                let mut jobs = self.lock_jobs();
                if jobs.closed {
                    return None;
                }
                if let Some(message) = jobs.queues.iter_mut().find_map(VecDeque::pop_front) {
                    if jobs.queues.iter().any(|queue| !queue.is_empty()) {
                        // Pass the wake-up on: more work is waiting for another consumer.
                        self.job_ready.notify_one();
                    }
                    return Some(message);
                }
            }
            notified.await;
        }
    }

    /// Messages waiting, per priority (highest first).
    pub fn depths(&self) -> [(Priority, usize); 4] {
        let jobs = self.lock_jobs();
        let mut depths = [(Priority::Critical, 0); 4];
        for (slot, (priority, queue)) in depths
            .iter_mut()
            .zip(Priority::HIGHEST_FIRST.iter().zip(&jobs.queues))
        {
            *slot = (*priority, queue.len());
        }
        depths
    }

    /// Stops handing out jobs: every waiting and later `next_job` returns `None`.
    pub fn close(&self) {
        self.lock_jobs().closed = true;
        self.job_ready.notify_waiters();
    }

    /// Publishes lifecycle events, in order. Never drops one: the channel is unbounded and the
    /// orchestrator keeps unacknowledged events in its state anyway.
    pub fn publish_events(&self, events: impl IntoIterator<Item = StatusEvent>) {
        for event in events {
            // The receiver lives as long as the gateway; after it is gone nobody needs events.
            let _ = self.events.send(event);
        }
    }

    /// Routes a control message to its worker's queue; false when the worker has no control
    /// queue here (it is gone, or it learns its cancels from heartbeat replies).
    pub fn publish_control(&self, message: ControlMessage) -> bool {
        let controls = self.controls.lock();
        match controls.get(message.worker_id()) {
            Some(queue) => queue.send(message).is_ok(),
            None => false,
        }
    }

    /// The control queue of `worker_id` (one per worker; a second call replaces the first).
    pub fn control_receiver(
        &self,
        worker_id: &WorkerId,
    ) -> mpsc::UnboundedReceiver<ControlMessage> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut controls = self.controls.lock();
        controls.insert(worker_id.clone(), sender);
        receiver
    }

    /// The single consumer of lifecycle events (the read model's feed). `None` when it was
    /// already taken.
    pub fn take_event_receiver(&self) -> Option<EventReceiver> {
        let mut slot = self.event_receiver.lock();
        slot.take().map(EventReceiver::in_process)
    }
}
