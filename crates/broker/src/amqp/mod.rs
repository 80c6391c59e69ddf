//! The RabbitMQ transport (lapin): the topology of CONTRACT.md "RabbitMQ", a confirming
//! publisher, and the consumers of job messages, control messages and lifecycle events.
//!
//! Publishing and consuming use separate connections (DESIGN.md, "Data flow"). Every
//! publish is persistent, mandatory and confirmed: a message RabbitMQ could not route comes back
//! as [`BrokerError::Unroutable`], never silence. Consumers run under a supervisor that
//! reconnects with backoff after a lost connection or channel; messages held on a lost channel
//! are dropped locally (RabbitMQ redelivers them, and the lease fences the copies).
//!
//! Modules: `topology` (names and declarations), `publisher`, `supervisor` (reconnecting
//! consumers), `jobs`, `controls` and `events` (the consumers).

mod controls;
mod events;
mod jobs;
mod publisher;
mod supervisor;
mod topology;

use std::sync::Arc;
use std::time::Duration;

use distriqueue_util::retry::Backoff;
use lapin::options::BasicConsumeOptions;
use lapin::{Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::events::EventQueue;
pub(crate) use self::events::{acknowledge, EventAcker};
pub(crate) use self::jobs::settle;
pub use self::jobs::AmqpJobs;
use self::publisher::Publisher;
pub use self::topology::{
    CONTROL_EXCHANGE, DEAD_QUEUE, JOBS_EXCHANGE, STATUS_DLQ, STATUS_EXCHANGE, STATUS_QUEUE,
    STATUS_ROUTING_KEY,
};
use crate::BrokerError;

/// Between two tries to reconnect a consumer, or to move a message to `job.dead`.
const RECONNECT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// Opens a connection on the current Tokio runtime.
async fn connect(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio)
        .with_connection_name(name.into());
    Connection::connect(url, properties).await
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
}

/// Consume options without acknowledgements (what the broker sends counts as delivered).
pub(crate) fn auto_ack() -> BasicConsumeOptions {
    BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    }
}
