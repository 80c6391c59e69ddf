//! The RabbitMQ transport (lapin): the topology of CONTRACT.md "RabbitMQ", a confirming
//! publisher, and the consumers of job messages, control messages and lifecycle events.
//!
//! Publishing and consuming use separate connections (DESIGN.md, "Data flow"). Every
//! publish is persistent, mandatory and confirmed: a message RabbitMQ could not route comes back
//! as [`BrokerError::Unroutable`], never silence. Consumers run under a supervisor that
//! reconnects with backoff after a lost connection or channel; messages held on a lost channel
//! are dropped locally (RabbitMQ redelivers them, and the lease fences the copies).
//!
//! `amqps://` URLs connect with TLS (rustls with ring), trusting the public web roots
//! (webpki-roots) and the certificate authorities given to [`AmqpBroker::connect`]
//! (`--ca-cert`).
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

use amq_protocol_tcp::{HandshakeResult, RustlsConnector, TcpStream};
use distriqueue_util::retry::Backoff;
use lapin::options::BasicConsumeOptions;
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};
use rustls::pki_types::CertificateDer;
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

/// The AMQP heartbeat asked for, in seconds, unless the URL asks for another
/// (`?heartbeat=N`; the lower of the client's and the server's wins). RabbitMQ closes a
/// connection that stayed silent for about two heartbeats: the messages a frozen worker
/// (SIGSTOP, a long pause) holds unacknowledged go back to their queues within about 20 s
/// rather than RabbitMQ's default 60 s heartbeat's minutes. The orchestrator does not publish
/// them again (issue 13: no amplification), so this is how they come back.
const AMQP_HEARTBEAT_S: u16 = 10;

/// Opens a connection to `url` on the current Tokio runtime, with TLS for `amqps://`; the
/// heartbeat is [`AMQP_HEARTBEAT_S`] unless the URL says otherwise.
#[allow(clippy::result_large_err)] // lapin's connector returns tcp-stream's `HandshakeResult`
async fn connect(url: &str, name: &str, tls: &RustlsConnector) -> Result<Connection, lapin::Error> {
    let mut uri: AMQPUri = url.parse().map_err(|problem: String| {
        lapin::Error::IOError(Arc::new(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            problem,
        )))
    })?;
    uri.query.heartbeat.get_or_insert(AMQP_HEARTBEAT_S);
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio)
        .with_connection_name(name.into());
    let tls = tls.clone();
    Connection::connector(uri, Box::new(move |uri| open_stream(uri, &tls)), properties).await
}

/// The socket of a connection: TCP to the URI's host and port (within its `connection_timeout`,
/// if any), wrapped in TLS for `amqps://` with the server name checked against its certificate.
#[allow(clippy::result_large_err)] // the signature lapin's connector takes
fn open_stream(uri: &AMQPUri, tls: &RustlsConnector) -> HandshakeResult {
    let address = format!("{}:{}", uri.authority.host, uri.authority.port);
    let stream = match uri.query.connection_timeout {
        Some(ms) => TcpStream::connect_timeout(address, Duration::from_millis(ms)),
        None => TcpStream::connect(address),
    }?;
    let stream = match uri.scheme {
        AMQPScheme::AMQP => stream,
        AMQPScheme::AMQPS => stream.into_rustls(tls, &uri.authority.host)?,
    };
    stream.set_nonblocking(true)?;
    Ok(stream)
}

/// The TLS set-up of `amqps://` connections: TLS 1.2 or 1.3 (ring), trusting the public web
/// roots and `extra_roots`.
///
/// Errors: [`BrokerError::Tls`] when rustls refuses a certificate of `extra_roots`.
fn tls_connector(extra_roots: &[CertificateDer<'static>]) -> Result<RustlsConnector, BrokerError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for root in extra_roots {
        roots
            .add(root.clone())
            .map_err(|error| BrokerError::Tls(Arc::new(error)))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| BrokerError::Tls(Arc::new(error)))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(RustlsConnector::from(config))
}

/// The RabbitMQ transport. Cheap to clone; clones share the publishing connection.
#[derive(Clone)]
pub struct AmqpBroker {
    url: Arc<str>,
    /// Names connections in the RabbitMQ management UI (`distriqueue-<role>`).
    name: Arc<str>,
    /// TLS for `amqps://` URLs.
    tls: RustlsConnector,
    publisher: Arc<tokio::sync::Mutex<Option<Publisher>>>,
    /// Ends every consumer's supervisor.
    stopped: CancellationToken,
    /// The supervisors, so closing waits for their connections to close.
    supervisors: TaskTracker,
}

impl AmqpBroker {
    /// Connects the publisher and declares the topology. `url` is an AMQP URI
    /// (`amqp://guest:guest@127.0.0.1:5672/%2f`, or `amqps://...:5671/...` for TLS); `role`
    /// names the connections; `extra_roots` are certificate authorities `amqps://` trusts
    /// besides the public web roots (`--ca-cert`, for a private CA).
    ///
    /// Errors: RabbitMQ unreachable, a TLS handshake refused (a certificate no root vouches
    /// for, or for another name), bad credentials or vhost, a topology that exists with other
    /// arguments, or an unusable certificate in `extra_roots` ([`BrokerError::Tls`]).
    pub async fn connect(
        url: &str,
        role: &str,
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<AmqpBroker, BrokerError> {
        let broker = AmqpBroker {
            url: url.into(),
            name: format!("distriqueue-{role}").into(),
            tls: tls_connector(extra_roots)?,
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
