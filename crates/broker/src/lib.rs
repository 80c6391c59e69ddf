//! Message transport between roles: job dispatch by priority, control messages to workers, and
//! the lifecycle event feed.
//!
//! Two transports sit behind [`Broker`]: the in-process one ([`InProcessBroker`]) of
//! `distriqueue serve`, and RabbitMQ ([`AmqpBroker`], lapin) with the topology of CONTRACT.md
//! "RabbitMQ". Both pass one conformance suite (`tests/conformance.rs`). The broker only
//! carries messages: it never decides anything about a job (DESIGN.md, "Who owns what").

mod amqp;
mod memory;

use std::sync::Arc;

use distriqueue_core::{ControlMessage, JobMessage, StatusEvent, WorkerId};
use tokio::sync::mpsc;

pub use amqp::{
    AmqpBroker, AmqpJobs, EventQueue, CONTROL_EXCHANGE, DEAD_QUEUE, JOBS_EXCHANGE, STATUS_DLQ,
    STATUS_EXCHANGE, STATUS_QUEUE, STATUS_ROUTING_KEY,
};
pub use memory::InProcessBroker;
/// A certificate (DER) for [`AmqpBroker::connect`]'s `extra_roots`.
pub use rustls::pki_types::CertificateDer;

/// Why a publish or a consumer set-up failed. Every variant but a refusal
/// ([`BrokerError::is_refusal`]) and [`BrokerError::Tls`] is worth retrying: the callers (the
/// outbox, a worker) retry with backoff.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// RabbitMQ unreachable, or a channel or connection error.
    #[error("AMQP failed")]
    Amqp(#[from] lapin::Error),
    /// RabbitMQ refused a message (a nack).
    #[error("RabbitMQ refused a message (nack)")]
    Nacked,
    /// The publishing channel closed under the publisher.
    #[error("no publishing channel")]
    NoChannel,
    /// Mandatory messages came back unrouted: the queue they need does not exist (yet).
    #[error("{n_messages} {what} came back unroutable")]
    Unroutable {
        /// How many.
        n_messages: usize,
        /// What they were (`job messages`, `lifecycle events`, ...).
        what: &'static str,
    },
    /// A message could not be serialized.
    #[error("cannot encode a message")]
    Encode(#[source] Arc<serde_json::Error>),
    /// The TLS set-up of `amqps://` is unusable (a certificate authority rustls refuses); only
    /// from [`AmqpBroker::connect`], not worth retrying.
    #[error("unusable TLS set-up for amqps://")]
    Tls(#[source] Arc<rustls::Error>),
}

impl BrokerError {
    /// Whether the broker refused a message for what it is, so that every copy would be refused
    /// alike: RabbitMQ closed the channel with PRECONDITION_FAILED (406, its answer to a message
    /// over `max_message_size`) or CONTENT_TOO_LARGE (311), or the message cannot be encoded
    /// (a routing key over 255 bytes, a body JSON cannot write). Lost connections, nacks (a full
    /// queue with `reject-publish`: that passes) and unroutable messages are not refusals.
    ///
    /// The outbox sets a refused message aside instead of retrying it forever (issue 11: a
    /// message the broker can never take fails that one job; the outbox moves on).
    pub fn is_refusal(&self) -> bool {
        use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
        match self {
            BrokerError::Amqp(lapin::Error::ProtocolError(error)) => matches!(
                error.kind(),
                AMQPErrorKind::Soft(
                    AMQPSoftError::PRECONDITIONFAILED | AMQPSoftError::CONTENTTOOLARGE
                )
            ),
            BrokerError::Amqp(lapin::Error::SerialisationError(_)) | BrokerError::Encode(_) => true,
            _ => false,
        }
    }
}

impl From<serde_json::Error> for BrokerError {
    fn from(error: serde_json::Error) -> BrokerError {
        BrokerError::Encode(Arc::new(error))
    }
}

/// A transport: in-process or RabbitMQ. Cheap to clone.
#[derive(Clone)]
pub enum Broker {
    /// Everything in this process (`serve` without `--amqp`).
    InProcess(InProcessBroker),
    /// RabbitMQ.
    Amqp(AmqpBroker),
}

impl Broker {
    /// Publishes job messages on their priority's queue; `Ok` once the transport holds them
    /// (RabbitMQ: confirmed).
    pub async fn publish_jobs(&self, messages: &[JobMessage]) -> Result<(), BrokerError> {
        match self {
            Broker::InProcess(broker) => {
                for message in messages {
                    broker.publish_job(message.clone());
                }
                Ok(())
            }
            Broker::Amqp(broker) => broker.publish_jobs(messages).await,
        }
    }

    /// Routes a control message to its worker; `Ok(false)` when the worker has no control
    /// queue (it learns its cancels from heartbeat replies instead).
    pub async fn publish_control(&self, message: &ControlMessage) -> Result<bool, BrokerError> {
        match self {
            Broker::InProcess(broker) => Ok(broker.publish_control(message.clone())),
            Broker::Amqp(broker) => broker.publish_control(message).await,
        }
    }

    /// Publishes lifecycle events, in order.
    pub async fn publish_events(&self, events: &[StatusEvent]) -> Result<(), BrokerError> {
        match self {
            Broker::InProcess(broker) => {
                broker.publish_events(events.iter().cloned());
                Ok(())
            }
            Broker::Amqp(broker) => broker.publish_events(events).await,
        }
    }

    /// True when a successful [`Broker::publish_events`] means the events are durable, so the
    /// orchestrator may move its "published up to" watermark itself (RabbitMQ). In process,
    /// the read model acknowledges what it stored instead.
    pub fn confirms_events(&self) -> bool {
        matches!(self, Broker::Amqp(_))
    }

    /// Starts taking job messages for a worker with `slots` job slots.
    pub fn consume_jobs(&self, worker_id: &WorkerId, slots: usize) -> JobConsumer {
        match self {
            Broker::InProcess(broker) => JobConsumer::InProcess(broker.clone()),
            Broker::Amqp(broker) => JobConsumer::Amqp(broker.consume_jobs(worker_id, slots)),
        }
    }

    /// The control messages addressed to `worker_id`.
    pub fn consume_controls(
        &self,
        worker_id: &WorkerId,
    ) -> mpsc::UnboundedReceiver<ControlMessage> {
        match self {
            Broker::InProcess(broker) => broker.control_receiver(worker_id),
            Broker::Amqp(broker) => broker.consume_controls(worker_id),
        }
    }

    /// Lifecycle events for a read model or for live streams. In process there is one feed,
    /// taken once; `None` when it was already taken.
    pub fn consume_events(&self, queue: EventQueue) -> Option<EventReceiver> {
        match self {
            Broker::InProcess(broker) => broker.take_event_receiver(),
            Broker::Amqp(broker) => Some(broker.consume_events(queue)),
        }
    }

    /// Stops handing out jobs and stops every consumer.
    pub async fn close(&self) {
        match self {
            Broker::InProcess(broker) => broker.close(),
            Broker::Amqp(broker) => broker.close().await,
        }
    }
}

/// A worker's source of job messages.
#[derive(Clone)]
pub enum JobConsumer {
    /// The in-process queues of `serve`.
    InProcess(InProcessBroker),
    /// RabbitMQ's job queues, on one channel with a global prefetch.
    Amqp(AmqpJobs),
}

impl JobConsumer {
    /// Waits for the next job message, highest priority held first; `None` once closed.
    pub async fn next(&self) -> Option<Delivery> {
        match self {
            JobConsumer::InProcess(broker) => broker.next_job().await.map(|message| Delivery {
                message,
                origin: Origin::InProcess(broker.clone()),
            }),
            JobConsumer::Amqp(jobs) => jobs.next().await.map(|(message, acker)| Delivery {
                message,
                origin: Origin::Amqp(acker),
            }),
        }
    }

    /// Counts a slot busy (its job starts), so the transport holds no more unstarted messages
    /// than the free slots (RabbitMQ: the channel's global prefetch, at least 1, applied before
    /// this returns). Call it before acking the message.
    pub async fn slot_taken(&self) {
        if let JobConsumer::Amqp(jobs) = self {
            jobs.slot_taken().await;
        }
    }

    /// Counts a slot free again (its job ended).
    pub fn slot_freed(&self) {
        if let JobConsumer::Amqp(jobs) = self {
            jobs.slot_freed();
        }
    }

    /// Stops taking jobs; messages held but not handed out go back to their queues.
    pub fn close(&self) {
        match self {
            JobConsumer::InProcess(broker) => broker.close(),
            JobConsumer::Amqp(jobs) => jobs.close(),
        }
    }
}

/// One job message handed to a worker slot, with the means to settle it.
pub struct Delivery {
    /// The job message (one attempt of a job).
    pub message: JobMessage,
    origin: Origin,
}

enum Origin {
    InProcess(InProcessBroker),
    Amqp(lapin::acker::Acker),
}

impl Delivery {
    /// Acknowledges the message: it is started (lease granted) or dropped (refused).
    pub async fn ack(&self) {
        if let Origin::Amqp(acker) = &self.origin {
            amqp::settle(acker, true).await;
        }
    }

    /// Hands the message back unstarted, for this or another worker.
    pub async fn requeue(self) {
        match self.origin {
            Origin::InProcess(broker) => broker.publish_job(self.message),
            Origin::Amqp(acker) => amqp::settle(&acker, false).await,
        }
    }
}

/// Receives lifecycle events in publish order.
pub struct EventReceiver {
    source: EventSource,
    /// Acks owed for events returned so far (RabbitMQ read-model queue only).
    unacknowledged: Vec<amqp::EventAcker>,
}

enum EventSource {
    InProcess(mpsc::UnboundedReceiver<StatusEvent>),
    Amqp(mpsc::Receiver<(StatusEvent, Option<amqp::EventAcker>)>),
}

impl EventReceiver {
    fn in_process(receiver: mpsc::UnboundedReceiver<StatusEvent>) -> EventReceiver {
        EventReceiver {
            source: EventSource::InProcess(receiver),
            unacknowledged: Vec::new(),
        }
    }

    fn amqp(receiver: mpsc::Receiver<(StatusEvent, Option<amqp::EventAcker>)>) -> EventReceiver {
        EventReceiver {
            source: EventSource::Amqp(receiver),
            unacknowledged: Vec::new(),
        }
    }

    /// Waits for at least one event and returns it with up to `max - 1` more that are already
    /// waiting. `None` when the feed ended.
    pub async fn recv_batch(&mut self, max: usize) -> Option<Vec<StatusEvent>> {
        let max = max.max(1);
        match &mut self.source {
            EventSource::InProcess(receiver) => {
                let mut batch = Vec::new();
                let received = receiver.recv_many(&mut batch, max).await;
                (received > 0).then_some(batch)
            }
            EventSource::Amqp(receiver) => {
                let mut received = Vec::new();
                if receiver.recv_many(&mut received, max).await == 0 {
                    return None;
                }
                let mut batch = Vec::with_capacity(received.len());
                for (event, acker) in received {
                    self.unacknowledged.extend(acker);
                    batch.push(event);
                }
                Some(batch)
            }
        }
    }

    /// Acknowledges every event returned so far: call it once they are stored. Until then
    /// RabbitMQ keeps them, and redelivers them after a crash.
    pub async fn acknowledge(&mut self) {
        if !self.unacknowledged.is_empty() {
            amqp::acknowledge(std::mem::take(&mut self.unacknowledged)).await;
        }
    }
}
