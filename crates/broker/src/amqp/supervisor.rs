//! The consumer supervisor: each consumer (jobs, controls, events) has its own connection and
//! channel, reopened with backoff after a lost connection or channel; messages held from a lost
//! channel are dropped locally (RabbitMQ redelivers them, and the lease fences the copies).

use std::future::Future;

use distriqueue_util::error_chain;
use lapin::Channel;

use super::topology::declare_topology;
use super::{connect, AmqpBroker, RECONNECT_BACKOFF};

impl AmqpBroker {
    /// Runs `session` on a fresh consuming connection and channel (topology declared) until
    /// the broker closes, reconnecting with backoff whenever the session ends with an error.
    pub(crate) fn supervise<S, F>(&self, what: &'static str, mut session: S)
    where
        S: FnMut(Channel) -> F + Send + 'static,
        F: Future<Output = Result<(), lapin::Error>> + Send,
    {
        let broker = self.clone();
        self.supervisors.spawn(async move {
            let mut delays = RECONNECT_BACKOFF.delays();
            while !broker.stopped.is_cancelled() {
                let name = format!("{}-{what}", broker.name);
                let outcome: Result<(), lapin::Error> = async {
                    let connection = connect(&broker.url, &name, &broker.tls).await?;
                    let channel = connection.create_channel().await?;
                    declare_topology(&channel).await?;
                    let result = tokio::select! {
                        result = session(channel) => result,
                        () = broker.stopped.cancelled() => Ok(()),
                    };
                    let _ = connection.close(200, "closing").await;
                    result
                }
                .await;
                match outcome {
                    // A session that ended without error starts the backoff afresh.
                    Ok(()) => delays = RECONNECT_BACKOFF.delays(),
                    Err(error) => {
                        let delay = delays.next().unwrap_or(RECONNECT_BACKOFF.max);
                        tracing::warn!(error = %error_chain(&error), consumer = what, retry_in_ms = delay.as_millis() as u64, "AMQP consumer lost; reconnecting");
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            () = broker.stopped.cancelled() => {}
                        }
                    }
                }
            }
        });
    }
}
