//! The publishing side: one connection and a confirming channel per broker, opened on first
//! use and again after any failure. Every publish is persistent and mandatory, and waits for
//! RabbitMQ's confirms: a message RabbitMQ could not route comes back as
//! [`BrokerError::Unroutable`], never silence.

use distriqueue_core::{ControlMessage, JobMessage, StatusEvent};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Connection};

use super::topology::{
    declare_topology, CONTROL_EXCHANGE, DEAD_QUEUE, JOBS_EXCHANGE, STATUS_EXCHANGE,
    STATUS_ROUTING_KEY,
};
use super::{connect, AmqpBroker};
use crate::BrokerError;

/// One message to publish.
pub(crate) struct Outgoing<'a> {
    exchange: &'a str,
    routing_key: &'a str,
    body: Vec<u8>,
    priority: Option<u8>,
}

/// The publishing connection and its confirming channel, opened on first use and again after
/// any failure.
pub(crate) struct Publisher {
    pub(crate) connection: Connection,
    channel: Channel,
}

impl AmqpBroker {
    pub(crate) async fn open_publisher(&self) -> Result<Publisher, BrokerError> {
        let connection = connect(&self.url, &format!("{}-publish", self.name), &self.tls).await?;
        let channel = connection.create_channel().await?;
        declare_topology(&channel).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
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
            return Err(BrokerError::NoChannel);
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
                body: serde_json::to_vec(message).map_err(BrokerError::from)?,
                priority: Some(priority.amqp_priority()),
            });
        }
        match self.publish(outgoing, false).await? {
            0 => Ok(()),
            n_messages => Err(BrokerError::Unroutable {
                n_messages,
                what: "job messages",
            }),
        }
    }

    /// Publishes a control message to its worker's queue; `Ok(false)` when no queue is bound
    /// for that worker (it is gone, or it learns its cancels from heartbeat replies).
    pub async fn publish_control(&self, message: &ControlMessage) -> Result<bool, BrokerError> {
        let outgoing = Outgoing {
            exchange: CONTROL_EXCHANGE,
            routing_key: &message.worker_id().0,
            body: serde_json::to_vec(message).map_err(BrokerError::from)?,
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
                body: serde_json::to_vec(event).map_err(BrokerError::from)?,
                priority: None,
            });
        }
        match self.publish(outgoing, false).await? {
            0 => Ok(()),
            n_messages => Err(BrokerError::Unroutable {
                n_messages,
                what: "lifecycle events",
            }),
        }
    }

    /// Publishes an undecodable job message's body to `job.dead` unchanged.
    pub(crate) async fn publish_dead(&self, body: Vec<u8>) -> Result<(), BrokerError> {
        let outgoing = Outgoing {
            exchange: "",
            routing_key: DEAD_QUEUE,
            body,
            priority: None,
        };
        match self.publish(vec![outgoing], false).await? {
            0 => Ok(()),
            n_messages => Err(BrokerError::Unroutable {
                n_messages,
                what: "dead messages",
            }),
        }
    }
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
            .await?;
        confirms.push(confirm);
    }
    let mut n_returned = 0;
    for confirm in confirms {
        match confirm.await? {
            Confirmation::Ack(None) | Confirmation::NotRequested => {}
            Confirmation::Ack(Some(_)) => n_returned += 1,
            Confirmation::Nack(_) => return Err(BrokerError::Nacked),
        }
    }
    Ok(n_returned)
}
