//! The job consumer of a worker: `job.high`, `job.medium` and `job.low` on one channel with
//! a global prefetch of the worker's free slots, the highest priority held handed out first.

use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use distriqueue_core::{JobMessage, WorkerId};
use distriqueue_util::retry::until_ok;
use futures::StreamExt;
use lapin::acker::Acker;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::Channel;
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::topology::JOB_QUEUES;
use super::{AmqpBroker, RECONNECT_BACKOFF};

impl AmqpBroker {
    /// Starts consuming `job.high`, `job.medium` and `job.low` on one channel for a worker with
    /// `slots` job slots: a global prefetch of the free slots (see [`AmqpJobs::slot_taken`]),
    /// the highest priority held handed out first. A message that is not a job message goes to
    /// `job.dead` with a log line and is acked.
    pub fn consume_jobs(&self, worker_id: &WorkerId, slots: usize) -> AmqpJobs {
        let jobs = AmqpJobs {
            shared: Arc::new(JobsShared {
                held: Mutex::default(),
                ready: Notify::new(),
                slots,
                busy: AtomicUsize::new(0),
                applied_prefetch: tokio::sync::Mutex::new(0),
                closed: AtomicBool::new(false),
                stop_consuming: CancellationToken::new(),
                generation: AtomicU64::new(0),
                channel: Mutex::default(),
                next_seq: AtomicU64::new(0),
            }),
            broker: self.clone(),
        };
        let shared = Arc::clone(&jobs.shared);
        let broker = self.clone();
        let tag_prefix = worker_id.0.clone();
        self.supervise("jobs", move |channel| {
            let shared = Arc::clone(&shared);
            let broker = broker.clone();
            let tag_prefix = tag_prefix.clone();
            async move { consume_jobs_session(channel, shared, broker, tag_prefix).await }
        });
        jobs
    }
}

/// A job message waiting in a worker, ordered by AMQP priority, then arrival.
struct Held {
    /// The job queue it came from.
    queue: &'static str,
    priority: u8,
    /// Arrival order (smaller = earlier).
    seq: u64,
    generation: u64,
    message: JobMessage,
    acker: Acker,
}

impl PartialEq for Held {
    fn eq(&self, other: &Held) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Held) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    /// Greatest = highest priority, then earliest arrival (a max-heap pops it first).
    fn cmp(&self, other: &Held) -> std::cmp::Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

struct JobsShared {
    held: Mutex<BinaryHeap<Held>>,
    ready: Notify,
    /// The worker's job slots.
    slots: usize,
    /// Slots whose job started (its message acked); the rest are free.
    busy: AtomicUsize,
    /// The global prefetch set on the current channel (0: none yet). Its lock orders the
    /// `basic.qos` calls.
    applied_prefetch: tokio::sync::Mutex<u16>,
    closed: AtomicBool,
    /// Cancelled by [`AmqpJobs::close`]: the session cancels its consumers.
    stop_consuming: CancellationToken,
    /// The current consuming session; held messages of older ones are stale.
    generation: AtomicU64,
    /// The current session's channel, for `basic.get` from higher queues.
    channel: Mutex<Option<Channel>>,
    next_seq: AtomicU64,
}

impl JobsShared {
    /// The current session's channel, if one is open.
    fn current_channel(&self) -> Option<Channel> {
        self.channel.lock().clone()
    }

    fn lock_held(&self) -> MutexGuard<'_, BinaryHeap<Held>> {
        self.held.lock()
    }
}

/// A worker's job consumer on RabbitMQ. Cheap to clone.
#[derive(Clone)]
pub struct AmqpJobs {
    shared: Arc<JobsShared>,
    /// Publishes undecodable messages to `job.dead`.
    broker: AmqpBroker,
}

impl AmqpJobs {
    /// Waits for a job message and returns the one of the highest priority: the best held
    /// one, unless a higher queue has a message ready, which is taken instead (`basic.get`)
    /// while the held one goes back to its queue. A worker holds few messages (its free
    /// slots), so this check is what makes it start HIGH work before LOW work it already
    /// holds. `None` once closed.
    pub(crate) async fn next(&self) -> Option<(JobMessage, Acker)> {
        let best = self.next_held().await?;
        let higher = JOB_QUEUES
            .iter()
            .map(|(queue, _)| *queue)
            .take_while(|queue| *queue != best.queue);
        let channel = self.shared.current_channel();
        let Some(channel) = channel else {
            return Some((best.message, best.acker));
        };
        for queue in higher {
            match channel
                .basic_get(queue, BasicGetOptions { no_ack: false })
                .await
            {
                Ok(Some(got)) => {
                    let delivery = got.delivery;
                    match serde_json::from_slice::<JobMessage>(&delivery.data) {
                        Ok(message) => {
                            settle(&best.acker, false).await;
                            return Some((message, delivery.acker));
                        }
                        Err(error) => {
                            dead_letter(&self.broker, delivery, &error).await;
                        }
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::debug!(%error, queue, "basic.get failed; starting the held message");
                    break;
                }
            }
        }
        Some((best.message, best.acker))
    }

    /// Waits for the best held message of the current session; `None` once closed.
    async fn next_held(&self) -> Option<Held> {
        loop {
            let notified = self.shared.ready.notified();
            if self.shared.closed.load(Ordering::Acquire) {
                return None;
            }
            {
                let current = self.shared.generation.load(Ordering::Acquire);
                let mut held = self.shared.lock_held();
                while let Some(next) = held.pop() {
                    if next.generation == current {
                        if !held.is_empty() {
                            self.shared.ready.notify_one();
                        }
                        return Some(next);
                    }
                }
            }
            notified.await;
        }
    }

    /// Messages received and not yet handed out (for tests and metrics).
    pub fn n_held(&self) -> usize {
        let current = self.shared.generation.load(Ordering::Acquire);
        self.shared
            .lock_held()
            .iter()
            .filter(|held| held.generation == current)
            .count()
    }

    /// Counts one more slot busy and lowers the global prefetch to the free slots (at least
    /// 1: RabbitMQ reads 0 as "unlimited", so a full worker may hold one message it has not
    /// started). Returns once RabbitMQ applied it: call it before acking the message whose
    /// job starts, so the ack cannot let a message too many in.
    pub async fn slot_taken(&self) {
        self.shared.busy.fetch_add(1, Ordering::AcqRel);
        apply_current_prefetch(Arc::clone(&self.shared)).await;
    }

    /// Counts one slot free again and raises the prefetch (in the background: it only lets
    /// more in).
    pub fn slot_freed(&self) {
        let _ = self
            .shared
            .busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |busy| {
                busy.checked_sub(1)
            });
        tokio::spawn(apply_current_prefetch(Arc::clone(&self.shared)));
    }

    /// Stops consuming: waiting `next` calls return `None`, held messages go back to their
    /// queues, and nothing new is delivered. Acks of messages already handed out still work.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.stop_consuming.cancel();
        self.shared.ready.notify_waiters();
    }
}

/// [`apply_prefetch`] on the current channel, if one is open (a new session applies it
/// anyway).
async fn apply_current_prefetch(shared: Arc<JobsShared>) {
    if let Some(channel) = shared.current_channel() {
        if let Err(error) = apply_prefetch(&shared, &channel).await {
            tracing::debug!(%error, "prefetch not applied");
        }
    }
}

/// Sets the channel's global prefetch to the free slots counted now (at least 1) unless it is
/// already set so. The count is read under the lock that orders the `basic.qos` calls, so the
/// last one applied is always the newest count.
async fn apply_prefetch(shared: &JobsShared, channel: &Channel) -> Result<(), lapin::Error> {
    let mut applied = shared.applied_prefetch.lock().await;
    let free = shared
        .slots
        .saturating_sub(shared.busy.load(Ordering::Acquire));
    let wanted = u16::try_from(free.max(1)).unwrap_or(u16::MAX);
    if *applied != wanted {
        channel
            .basic_qos(wanted, BasicQosOptions { global: true })
            .await?;
        *applied = wanted;
    }
    Ok(())
}

async fn consume_jobs_session(
    channel: Channel,
    shared: Arc<JobsShared>,
    broker: AmqpBroker,
    tag_prefix: String,
) -> Result<(), lapin::Error> {
    let generation = shared.generation.fetch_add(1, Ordering::AcqRel) + 1;
    *shared.channel.lock() = Some(channel.clone());
    *shared.applied_prefetch.lock().await = 0;
    apply_prefetch(&shared, &channel).await?;
    let mut streams = Vec::new();
    let mut tags = Vec::new();
    for (queue, _) in JOB_QUEUES {
        let tag = format!("{tag_prefix}-{queue}");
        let consumer = channel
            .basic_consume(
                queue,
                &tag,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        streams.push(consumer.map(move |delivery| (queue, delivery)));
        tags.push(tag);
    }
    let mut deliveries = futures::stream::select_all(streams);
    loop {
        tokio::select! {
            delivery = deliveries.next() => {
                let Some((queue, delivery)) = delivery else {
                    return Err(lapin::Error::InvalidChannelState(channel.status().state()));
                };
                let delivery = delivery?;
                match serde_json::from_slice::<JobMessage>(&delivery.data) {
                    Ok(message) => {
                        let priority = delivery
                            .properties
                            .priority()
                            .unwrap_or_else(|| message.priority().amqp_priority());
                        let held = Held {
                            queue,
                            priority,
                            seq: shared.next_seq.fetch_add(1, Ordering::Relaxed),
                            generation,
                            message,
                            acker: delivery.acker,
                        };
                        shared.lock_held().push(held);
                        shared.ready.notify_one();
                    }
                    Err(error) => dead_letter(&broker, delivery, &error).await,
                }
            }
            () = shared.stop_consuming.cancelled() => {
                for tag in &tags {
                    channel.basic_cancel(tag, BasicCancelOptions::default()).await?;
                }
                // What this worker holds but never started goes back for another worker.
                let held: Vec<Held> = shared.lock_held().drain().collect();
                for message in held {
                    let _ = message.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await;
                }
                // Keep the channel open for the acks of messages already handed out.
                broker.stopped.cancelled().await;
                return Ok(());
            }
        }
    }
}

/// Moves an undecodable job message to `job.dead` (retrying until RabbitMQ confirms it), then
/// acks the original, with a log line (CONTRACT.md `job.dead`).
async fn dead_letter(
    broker: &AmqpBroker,
    delivery: lapin::message::Delivery,
    error: &serde_json::Error,
) {
    tracing::warn!(%error, routing_key = %delivery.routing_key, bytes = delivery.data.len(), "undecodable job message moved to job.dead");
    until_ok("move a message to job.dead", RECONNECT_BACKOFF, || {
        broker.publish_dead(delivery.data.clone())
    })
    .await;
    settle(&delivery.acker, true).await;
}

/// Settles a job message that came from RabbitMQ.
pub(crate) async fn settle(acker: &Acker, ack: bool) {
    let result = if ack {
        acker.ack(BasicAckOptions::default()).await
    } else {
        acker
            .nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await
    };
    if let Err(error) = result {
        // The channel is gone: RabbitMQ redelivers the message, and the lease fences the copy.
        tracing::debug!(%error, "job message settle lost with its channel");
    }
}
