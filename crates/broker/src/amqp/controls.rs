//! The control consumer: a worker's own exclusive queue on `control.exchange`, bound under
//! its worker id, delivering cancels.

use distriqueue_core::{ControlMessage, WorkerId};
use futures::StreamExt;
use lapin::options::QueueBindOptions;
use lapin::types::FieldTable;
use tokio::sync::mpsc;

use super::topology::{declare_private_queue, CONTROL_EXCHANGE};
use super::{auto_ack, AmqpBroker};

impl AmqpBroker {
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
}
