//! The RabbitMQ transport (lapin): the topology of CONTRACT.md "RabbitMQ", a confirming
//! publisher, and the consumers of job messages, control messages and lifecycle events.
//!
//! Publishing and consuming use separate connections (DESIGN.md, "Data flow"). Every
//! publish is persistent, mandatory and confirmed: a message RabbitMQ could not route comes back
//! as [`BrokerError::Unroutable`], never silence. Consumers run under a supervisor that
//! reconnects with backoff after a lost connection or channel; messages held on a lost channel
//! are dropped locally (RabbitMQ redelivers them, and the lease fences the copies).

use std::collections::BinaryHeap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distriqueue_core::{ControlMessage, JobMessage, StatusEvent, WorkerId};
use futures::StreamExt;
use lapin::acker::Acker;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::BrokerError;

/// `jobs.exchange`: direct, durable; routes to `job.high|medium|low`.
pub const JOBS_EXCHANGE: &str = "jobs.exchange";
/// Undecodable job messages end here (durable, no arguments).
pub const DEAD_QUEUE: &str = "job.dead";
/// `control.exchange`: direct, durable; routing key = worker id.
pub const CONTROL_EXCHANGE: &str = "control.exchange";
/// `status.exchange`: topic, durable; lifecycle events under [`STATUS_ROUTING_KEY`].
pub const STATUS_EXCHANGE: &str = "status.exchange";
/// The routing key of every lifecycle event.
pub const STATUS_ROUTING_KEY: &str = "status.update";
/// The read model's shared event queue (bound with `#`), dead-lettering to [`STATUS_DLQ`].
pub const STATUS_QUEUE: &str = "status.queue";
/// Where `status.queue` dead-letters events a gateway could not decode.
pub const STATUS_DLQ: &str = "status.dlq";

/// The job queues with their `x-max-priority`, highest first (CONTRACT.md).
const JOB_QUEUES: [(&str, i32); 3] = [("job.high", 10), ("job.medium", 5), ("job.low", 1)];

/// Unacknowledged events a read-model consumer holds at once.
const EVENT_PREFETCH: u16 = 2048;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

fn amqp(error: lapin::Error) -> BrokerError {
    BrokerError::Amqp(error.to_string())
}

/// Opens a connection on the current Tokio runtime.
async fn connect(url: &str, name: &str) -> Result<Connection, BrokerError> {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio)
        .with_connection_name(name.into());
    Connection::connect(url, properties).await.map_err(amqp)
}

/// Declares the whole topology of CONTRACT.md "RabbitMQ" with the contract's arguments, so
/// whichever role connects first creates it and every later declaration is a no-op.
async fn declare_topology(channel: &Channel) -> Result<(), lapin::Error> {
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let none = FieldTable::default();
    channel
        .exchange_declare(
            JOBS_EXCHANGE,
            ExchangeKind::Direct,
            durable_exchange,
            none.clone(),
        )
        .await?;
    for (queue, max_priority) in JOB_QUEUES {
        let mut arguments = FieldTable::default();
        arguments.insert("x-max-priority".into(), AMQPValue::LongInt(max_priority));
        channel
            .queue_declare(queue, durable_queue, arguments)
            .await?;
        channel
            .queue_bind(
                queue,
                JOBS_EXCHANGE,
                queue,
                QueueBindOptions::default(),
                none.clone(),
            )
            .await?;
    }
    channel
        .queue_declare(DEAD_QUEUE, durable_queue, none.clone())
        .await?;
    channel
        .exchange_declare(
            CONTROL_EXCHANGE,
            ExchangeKind::Direct,
            durable_exchange,
            none.clone(),
        )
        .await?;
    channel
        .exchange_declare(
            STATUS_EXCHANGE,
            ExchangeKind::Topic,
            durable_exchange,
            none.clone(),
        )
        .await?;
    channel
        .queue_declare(STATUS_DLQ, durable_queue, none.clone())
        .await?;
    let mut dead_letter = FieldTable::default();
    dead_letter.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from("")),
    );
    dead_letter.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(LongString::from(STATUS_DLQ)),
    );
    channel
        .queue_declare(STATUS_QUEUE, durable_queue, dead_letter)
        .await?;
    channel
        .queue_bind(
            STATUS_QUEUE,
            STATUS_EXCHANGE,
            "#",
            QueueBindOptions::default(),
            none,
        )
        .await?;
    Ok(())
}

/// One message to publish.
struct Outgoing<'a> {
    exchange: &'a str,
    routing_key: &'a str,
    body: Vec<u8>,
    priority: Option<u8>,
}

/// The publishing connection and its confirming channel, opened on first use and again after
/// any failure.
struct Publisher {
    connection: Connection,
    channel: Channel,
}

/// The RabbitMQ transport. Cheap to clone; clones share the publishing connection.
#[derive(Clone)]
pub struct AmqpBroker {
    url: Arc<str>,
    /// Names connections in the RabbitMQ management UI (`distriqueue-<role>`).
    name: Arc<str>,
    publisher: Arc<tokio::sync::Mutex<Option<Publisher>>>,
    /// Ends every consumer's supervisor.
    stopped: CancellationToken,
    /// The supervisors, so closing waits for their connections to close.
    supervisors: TaskTracker,
}

impl AmqpBroker {
    /// Connects the publisher and declares the topology. `url` is an AMQP URI
    /// (`amqp://guest:guest@127.0.0.1:5672/%2f`); `role` names the connections.
    ///
    /// Errors: RabbitMQ unreachable, bad credentials or vhost, or a topology that exists with
    /// other arguments.
    pub async fn connect(url: &str, role: &str) -> Result<AmqpBroker, BrokerError> {
        let broker = AmqpBroker {
            url: url.into(),
            name: format!("distriqueue-{role}").into(),
            publisher: Arc::default(),
            stopped: CancellationToken::new(),
            supervisors: TaskTracker::new(),
        };
        let mut publisher = broker.publisher.lock().await;
        *publisher = Some(broker.open_publisher().await?);
        drop(publisher);
        Ok(broker)
    }

    async fn open_publisher(&self) -> Result<Publisher, BrokerError> {
        let connection = connect(&self.url, &format!("{}-publish", self.name)).await?;
        let channel = connection.create_channel().await.map_err(amqp)?;
        declare_topology(&channel).await.map_err(amqp)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(amqp)?;
        Ok(Publisher {
            connection,
            channel,
        })
    }

    /// Publishes `messages` (persistent, mandatory) and waits for every confirm. Any failure
    /// drops the connection so the next call opens a new one; the caller retries the whole
    /// batch (duplicates are harmless: the lease fences job copies, versions order events).
    /// Returns how many messages came back unroutable.
    ///
    /// A returned message means a queue is missing, unless `routing_may_fail` (a control
    /// message for a worker with no control queue): then the connection is dropped too, so the
    /// next call declares the topology again.
    async fn publish(
        &self,
        messages: Vec<Outgoing<'_>>,
        routing_may_fail: bool,
    ) -> Result<usize, BrokerError> {
        let mut slot = self.publisher.lock().await;
        if slot
            .as_ref()
            .is_none_or(|publisher| !publisher.channel.status().connected())
        {
            *slot = None;
            *slot = Some(self.open_publisher().await?);
        }
        let Some(publisher) = slot.as_ref() else {
            return Err(BrokerError::Amqp("no publishing channel".into()));
        };
        let result = publish_on(&publisher.channel, messages).await;
        let missing_queue = matches!(result, Ok(n) if n > 0 && !routing_may_fail);
        if result.is_err() || missing_queue {
            if let Some(publisher) = slot.take() {
                let _ = publisher.connection.close(0, "publish failed").await;
            }
        }
        result
    }

    /// Publishes job messages to `jobs.exchange` under their priority's queue, with the AMQP
    /// priority of CONTRACT.md. Errors: RabbitMQ unreachable, a nack, or an unroutable message
    /// (a job queue is missing).
    pub async fn publish_jobs(&self, messages: &[JobMessage]) -> Result<(), BrokerError> {
        let mut outgoing = Vec::with_capacity(messages.len());
        for message in messages {
            let priority = message.priority();
            outgoing.push(Outgoing {
                exchange: JOBS_EXCHANGE,
                routing_key: priority.queue_name(),
                body: serde_json::to_vec(message).map_err(BrokerError::encode)?,
                priority: Some(priority.amqp_priority()),
            });
        }
        match self.publish(outgoing, false).await? {
            0 => Ok(()),
            n => Err(BrokerError::Unroutable(format!("{n} job messages"))),
        }
    }

    /// Publishes a control message to its worker's queue; `Ok(false)` when no queue is bound
    /// for that worker (it is gone, or it learns its cancels from heartbeat replies).
    pub async fn publish_control(&self, message: &ControlMessage) -> Result<bool, BrokerError> {
        let outgoing = Outgoing {
            exchange: CONTROL_EXCHANGE,
            routing_key: &message.worker_id().0,
            body: serde_json::to_vec(message).map_err(BrokerError::encode)?,
            priority: None,
        };
        Ok(self.publish(vec![outgoing], true).await? == 0)
    }

    /// Publishes lifecycle events to `status.exchange`. `Ok` means RabbitMQ holds every one in
    /// `status.queue` (mandatory + confirm): the orchestrator may move its watermark past them.
    pub async fn publish_events(&self, events: &[StatusEvent]) -> Result<(), BrokerError> {
        let mut outgoing = Vec::with_capacity(events.len());
        for event in events {
            outgoing.push(Outgoing {
                exchange: STATUS_EXCHANGE,
                routing_key: STATUS_ROUTING_KEY,
                body: serde_json::to_vec(event).map_err(BrokerError::encode)?,
                priority: None,
            });
        }
        match self.publish(outgoing, false).await? {
            0 => Ok(()),
            n => Err(BrokerError::Unroutable(format!("{n} lifecycle events"))),
        }
    }

    /// Publishes an undecodable job message's body to `job.dead` unchanged.
    async fn publish_dead(&self, body: Vec<u8>) -> Result<(), BrokerError> {
        let outgoing = Outgoing {
            exchange: "",
            routing_key: DEAD_QUEUE,
            body,
            priority: None,
        };
        match self.publish(vec![outgoing], false).await? {
            0 => Ok(()),
            _ => Err(BrokerError::Unroutable(DEAD_QUEUE.into())),
        }
    }

    /// Stops every consumer of this broker (waiting up to 2 s for their connections to close)
    /// and closes the publishing connection.
    pub async fn close(&self) {
        self.stopped.cancel();
        self.supervisors.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.supervisors.wait()).await;
        if let Some(publisher) = self.publisher.lock().await.take() {
            let _ = publisher.connection.close(200, "closing").await;
        }
    }

    /// Runs `session` on a fresh consuming connection and channel (topology declared) until
    /// the broker closes, reconnecting with backoff whenever the session ends with an error.
    fn supervise<S, F>(&self, what: &'static str, mut session: S)
    where
        S: FnMut(Channel) -> F + Send + 'static,
        F: Future<Output = Result<(), lapin::Error>> + Send,
    {
        let broker = self.clone();
        self.supervisors.spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            while !broker.stopped.is_cancelled() {
                let name = format!("{}-{what}", broker.name);
                let outcome = async {
                    let connection = connect(&broker.url, &name).await?;
                    let channel = connection.create_channel().await.map_err(amqp)?;
                    declare_topology(&channel).await.map_err(amqp)?;
                    let result = tokio::select! {
                        result = session(channel) => result.map_err(amqp),
                        () = broker.stopped.cancelled() => Ok(()),
                    };
                    let _ = connection.close(200, "closing").await;
                    result
                }
                .await;
                match outcome {
                    Ok(()) => backoff = FIRST_BACKOFF,
                    Err(error) => {
                        tracing::warn!(%error, consumer = what, retry_in_ms = backoff.as_millis() as u64, "AMQP consumer lost; reconnecting");
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = broker.stopped.cancelled() => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        });
    }

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

    /// Binds an exclusive, server-named queue to `control.exchange` under `worker_id` and
    /// forwards its control messages (re-bound after a reconnect; cancels missed meanwhile
    /// reach the worker through its heartbeat replies).
    pub fn consume_controls(
        &self,
        worker_id: &WorkerId,
    ) -> mpsc::UnboundedReceiver<ControlMessage> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let worker_id = worker_id.clone();
        self.supervise("control", move |channel| {
            let sender = sender.clone();
            let worker_id = worker_id.clone();
            async move {
                let queue = declare_private_queue(&channel).await?;
                channel
                    .queue_bind(
                        &queue,
                        CONTROL_EXCHANGE,
                        &worker_id.0,
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                let mut consumer = channel
                    .basic_consume(&queue, "", auto_ack(), FieldTable::default())
                    .await?;
                while let Some(delivery) = consumer.next().await {
                    let delivery = delivery?;
                    match serde_json::from_slice::<ControlMessage>(&delivery.data) {
                        Ok(message) => {
                            if sender.send(message).is_err() {
                                return Ok(());
                            }
                        }
                        Err(error) => tracing::warn!(%error, "undecodable control message dropped"),
                    }
                }
                Err(lapin::Error::InvalidChannelState(channel.status().state()))
            }
        });
        receiver
    }

    /// Consumes lifecycle events: the shared `status.queue` for a read model (acknowledged by
    /// [`crate::EventReceiver::acknowledge`]; an undecodable event is dead-lettered to
    /// `status.dlq`), or this process's own exclusive queue for live streams.
    pub fn consume_events(&self, queue: EventQueue) -> crate::EventReceiver {
        let (sender, receiver) = mpsc::channel(usize::from(EVENT_PREFETCH));
        let generation = Arc::new(AtomicU64::new(0));
        let session_generation = Arc::clone(&generation);
        self.supervise("events", move |channel| {
            let sender = sender.clone();
            let generation = session_generation.fetch_add(1, Ordering::AcqRel) + 1;
            async move {
                let (queue_name, options) = match queue {
                    EventQueue::ReadModel => {
                        channel
                            .basic_qos(EVENT_PREFETCH, BasicQosOptions::default())
                            .await?;
                        (STATUS_QUEUE.to_string(), BasicConsumeOptions::default())
                    }
                    EventQueue::Live => {
                        let queue = declare_private_queue(&channel).await?;
                        channel
                            .queue_bind(
                                &queue,
                                STATUS_EXCHANGE,
                                "#",
                                QueueBindOptions::default(),
                                FieldTable::default(),
                            )
                            .await?;
                        (queue, auto_ack())
                    }
                };
                let mut consumer = channel
                    .basic_consume(&queue_name, "", options, FieldTable::default())
                    .await?;
                while let Some(delivery) = consumer.next().await {
                    let delivery = delivery?;
                    match serde_json::from_slice::<StatusEvent>(&delivery.data) {
                        Ok(event) => {
                            let acker = (!options.no_ack).then(|| EventAcker {
                                acker: delivery.acker,
                                generation,
                            });
                            if sender.send((event, acker)).await.is_err() {
                                return Ok(());
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "undecodable lifecycle event dead-lettered");
                            if !options.no_ack {
                                delivery
                                    .acker
                                    .nack(BasicNackOptions {
                                        requeue: false,
                                        multiple: false,
                                    })
                                    .await?;
                            }
                        }
                    }
                }
                Err(lapin::Error::InvalidChannelState(channel.status().state()))
            }
        });
        crate::EventReceiver::amqp(receiver)
    }
}

fn auto_ack() -> BasicConsumeOptions {
    BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    }
}

/// An exclusive, auto-delete, server-named queue; returns its name.
async fn declare_private_queue(channel: &Channel) -> Result<String, lapin::Error> {
    let queue = channel
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(queue.name().as_str().to_string())
}

/// Publishes every message, then waits for every confirm; counts the returned ones.
async fn publish_on(channel: &Channel, messages: Vec<Outgoing<'_>>) -> Result<usize, BrokerError> {
    let mut confirms = Vec::with_capacity(messages.len());
    for message in messages {
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from("application/json"));
        if let Some(priority) = message.priority {
            properties = properties.with_priority(priority);
        }
        let confirm = channel
            .basic_publish(
                message.exchange,
                message.routing_key,
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &message.body,
                properties,
            )
            .await
            .map_err(amqp)?;
        confirms.push(confirm);
    }
    let mut n_returned = 0;
    for confirm in confirms {
        match confirm.await.map_err(amqp)? {
            Confirmation::Ack(None) | Confirmation::NotRequested => {}
            Confirmation::Ack(Some(_)) => n_returned += 1,
            Confirmation::Nack(_) => {
                return Err(BrokerError::Amqp(
                    "RabbitMQ refused a message (nack)".into(),
                ))
            }
        }
    }
    Ok(n_returned)
}

/// Which event queue a consumer reads (CONTRACT.md `status.exchange`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventQueue {
    /// The shared, durable `status.queue`: each event reaches one of the gateways sharing a
    /// read model, and is acknowledged once stored.
    ReadModel,
    /// An exclusive, auto-delete queue of this process: every event, for live streams (SSE).
    Live,
}

/// Acknowledges one lifecycle event of `status.queue`.
pub(crate) struct EventAcker {
    acker: Acker,
    /// The consuming session it came from: only the newest one of a session needs acking
    /// (`multiple`).
    generation: u64,
}

/// Acknowledges everything up to the newest delivery of each session in `ackers`.
pub(crate) async fn acknowledge(ackers: Vec<EventAcker>) {
    let mut last: Option<EventAcker> = None;
    for acker in ackers {
        if let Some(previous) = last.take() {
            if previous.generation != acker.generation {
                ack_multiple(&previous.acker).await;
            }
        }
        last = Some(acker);
    }
    if let Some(last) = last {
        ack_multiple(&last.acker).await;
    }
}

async fn ack_multiple(acker: &Acker) {
    if let Err(error) = acker.ack(BasicAckOptions { multiple: true }).await {
        // The channel is gone: RabbitMQ redelivers, and versions make the repeat harmless.
        tracing::debug!(%error, "event ack lost with its channel");
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
        self.channel
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, BinaryHeap<Held>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
    *shared
        .channel
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(channel.clone());
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
    let mut backoff = FIRST_BACKOFF;
    while let Err(publish_error) = broker.publish_dead(delivery.data.clone()).await {
        tracing::warn!(error = %publish_error, "cannot move a message to job.dead; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
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
