//! The event consumers: the shared, durable `status.queue` that feeds a read model (each event
//! acknowledged once stored), or a private queue of every event for live streams (SSE).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use distriqueue_core::StatusEvent;
use futures::StreamExt;
use lapin::acker::Acker;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueBindOptions,
};
use lapin::types::FieldTable;
use tokio::sync::mpsc;

use super::topology::{declare_private_queue, STATUS_EXCHANGE, STATUS_QUEUE};
use super::{auto_ack, AmqpBroker};

/// Unacknowledged events a read-model consumer holds at once.
const EVENT_PREFETCH: u16 = 2048;

impl AmqpBroker {
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
