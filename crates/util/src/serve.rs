//! Serving an axum router with every input bounded (issue 11, item 6): what each HTTP server of
//! DistriQueue (gateway, orchestrator API and peer port, worker metrics) listens with.
//!
//! hyper serves each connection (HTTP/1.1); this module only bounds it: at most
//! [`ServerLimits::max_connections`] open connections (the next waits in the kernel's backlog),
//! request headers within [`ServerLimits::header_timeout`] (a slow-loris client is cut off),
//! at most [`ServerLimits::max_in_flight`] requests being answered at once (more get 503 at
//! once) and each answered within [`ServerLimits::request_timeout`] (504 after it, reading a
//! slow body included). A streaming answer (SSE) counts only until its headers are sent. A
//! server without API keys bound to a loopback address answers only requests whose `Host`
//! names this machine (`localhost`, `*.localhost` or a loopback address; 421 otherwise), so a
//! web page cannot reach it by DNS rebinding ([`ServerLimits::check_host_on_loopback`]).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use distriqueue_core::api::ErrorBody;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// A server's TLS set-up (rustls, TLS 1.2 and 1.3): its certificate chain and private key, read
/// from PEM files (`--tls-cert`, `--tls-key`; SECURITY.md, "TLS"). Equal when read from the
/// same files.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    files: (std::path::PathBuf, std::path::PathBuf),
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.files.0)
            .field("key", &self.files.1)
            .finish()
    }
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &ServerTls) -> bool {
        self.files == other.files
    }
}

impl Eq for ServerTls {}

/// Why a TLS set-up could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {problem}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// rustls refused the certificate and key (a key that does not match, say).
    #[error("the certificate and key do not make a TLS server")]
    Config(#[source] rustls::Error),
}

impl ServerTls {
    /// Reads the certificate chain (server certificate first) from `cert` and its private key
    /// (PKCS#8, PKCS#1 or SEC1) from `key`, both PEM.
    ///
    /// Errors: [`TlsError::File`] for a file that cannot be read or holds no certificate or
    /// key; [`TlsError::Config`] when rustls refuses them.
    pub fn from_pem_files(
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<ServerTls, TlsError> {
        let chain = certificates_from_pem_file(cert)?;
        let private_key = PrivateKeyDer::from_pem_file(key).map_err(|error| TlsError::File {
            path: key.to_path_buf(),
            problem: format!("no PEM private key: {error}"),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_single_cert(chain, private_key)
            .map_err(TlsError::Config)?;
        Ok(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            files: (cert.to_path_buf(), key.to_path_buf()),
        })
    }
}

impl ServerTls {
    /// Runs the TLS handshake of an accepted connection (no time limit: the caller bounds it).
    ///
    /// Errors: the handshake failed (a client that does not trust the certificate, say).
    pub async fn accept<IO>(
        &self,
        stream: IO,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.acceptor.accept(stream).await
    }
}

/// The certificates of a PEM file, in order (a server's chain, or the certificate authorities
/// a client trusts: `--ca-cert`).
///
/// Errors: [`TlsError::File`] when the file cannot be read or holds no certificate.
pub fn certificates_from_pem_file(
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |problem: String| TlsError::File {
        path: path.to_path_buf(),
        problem,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| file_error(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(error.to_string()))?;
    if certificates.is_empty() {
        return Err(file_error("holds no PEM certificate".into()));
    }
    Ok(certificates)
}

/// Longest wait at shutdown for the open connections to finish their requests.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Bounds on what one server takes from its clients. The defaults suit every role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Most connections open at once (SSE streams included); default 1024.
    pub max_connections: usize,
    /// Most requests being answered at once; more are answered 503 at once. Default 256.
    pub max_in_flight: usize,
    /// Longest wait for a request's headers, from the connection's start or the previous
    /// answer; the connection is closed after it. Default 10 s.
    pub header_timeout: Duration,
    /// Longest time to answer a request, reading its body included (a stream's body is not
    /// counted); 504 after it. Default 30 s.
    pub request_timeout: Duration,
    /// Bound to a loopback address, answer only a `Host` naming this machine (421 otherwise).
    /// Default true; servers with API keys turn it off (a page that rebinds a name has no key,
    /// and a TLS proxy on the same machine forwards its public name).
    pub check_host_on_loopback: bool,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            max_connections: 1024,
            max_in_flight: 256,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            check_host_on_loopback: true,
        }
    }
}

/// Serves `router` on `listener` within `limits` (over TLS with `tls`; a client that does not
/// finish its handshake within the header timeout is cut off) until `shutdown` completes,
/// then stops accepting, lets each connection finish its request in progress and returns once all have
/// closed (streams end when their handlers see the shutdown).
///
/// Errors: none today (accept errors are logged and retried after a pause, as a full file
/// table is not fatal); the `Result` keeps the shape of `axum::serve`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    tls: Option<ServerTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let bounds = Arc::new(RequestBounds {
        in_flight: Semaphore::new(limits.max_in_flight),
        timeout: limits.request_timeout,
        loopback: limits.check_host_on_loopback && listener.local_addr()?.ip().is_loopback(),
    });
    let router = router.layer(axum::middleware::from_fn_with_state(bounds, bound_request));
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    // Each connection holds a receiver; dropping the sender tells them to finish, and
    // `closed()` says when the last one has.
    let (close, closing) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(router.clone());
        let closing = closing.clone();
        let header_timeout = limits.header_timeout;
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let Some(tls) = tls else {
                return serve_connection(stream, service, header_timeout, closing).await;
            };
            match tokio::time::timeout(header_timeout, tls.accept(stream)).await {
                Ok(Ok(stream)) => serve_connection(stream, service, header_timeout, closing).await,
                Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake not finished in time"),
            }
        });
    }
    drop(listener);
    drop(closing);
    // With no connection left there is nobody to tell: nothing to do then.
    let _ = close.send(());
    // A client that stops reading must not hold shutdown: connections still open after the
    // drain time are left to end with the process.
    if tokio::time::timeout(DRAIN_TIME, close.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            n_connections = close.receiver_count(),
            "connections still open after the drain time: not waiting for them"
        );
    }
    Ok(())
}

/// Serves one connection (plain or TLS) with hyper until it ends, or until `closing` asks it
/// to finish its request in progress.
async fn serve_connection<I>(
    io: I,
    service: TowerToHyperService<Router>,
    header_timeout: Duration,
    mut closing: watch::Receiver<()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => {
            if let Err(error) = served {
                tracing::debug!(%error, "connection ended with an error");
            }
            return;
        }
        _ = closing.changed() => connection.as_mut().graceful_shutdown(),
    }
    if let Err(error) = connection.await {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// The per-request bounds, shared by every connection of one server.
struct RequestBounds {
    in_flight: Semaphore,
    timeout: Duration,
    /// Bound to a loopback address without API keys: the `Host` must name this machine.
    loopback: bool,
}

/// True when a `Host` header names this machine: `localhost`, a name under `.localhost`
/// (RFC 6761) or a loopback address, with or without a port.
fn names_this_machine(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Answers 503 when `max_in_flight` requests are being answered, or when this one takes longer
/// than the request timeout (the contract's error shape, with `Retry-After: 1`).
async fn bound_request(
    State(bounds): State<Arc<RequestBounds>>,
    request: Request,
    next: Next,
) -> Result<Response, Infallible> {
    if bounds.loopback {
        let host = request
            .headers()
            .get(axum::http::header::HOST)
            .map(|value| value.to_str().unwrap_or_default());
        if host.is_some_and(|host| !names_this_machine(host)) {
            return Ok((
                StatusCode::MISDIRECTED_REQUEST,
                Json(ErrorBody::new(
                    "this server listens on a loopback address: the Host must be localhost or a \
                     loopback address (bind another address, with API keys, to serve other names)",
                )),
            )
                .into_response());
        }
    }
    let Ok(_permit) = bounds.in_flight.try_acquire() else {
        return Ok(busy(
            "the server is answering as many requests as it takes; try again",
        ));
    };
    match tokio::time::timeout(bounds.timeout, next.run(request)).await {
        Ok(response) => Ok(response),
        // Not "try again": a write may have taken effect (repeat it with its idempotency key).
        Err(_) => Ok((
            StatusCode::GATEWAY_TIMEOUT,
            Json(ErrorBody::new(format!(
                "the request was not answered within {} s; a write may still have taken effect",
                bounds.timeout.as_secs()
            ))),
        )
            .into_response()),
    }
}

fn busy(message: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::RETRY_AFTER, "1")],
        Json(ErrorBody::new(message)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::names_this_machine;

    #[test]
    fn loopback_hosts_are_told_from_other_names() {
        for host in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:80",
            "127.8.0.1",
            "[::1]:9",
            "api.localhost",
            "LOCALHOST.",
        ] {
            assert!(names_this_machine(host), "{host}");
        }
        for host in [
            "example.com",
            "evil.example:8080",
            "10.0.0.1",
            "[2001:db8::1]:80",
            "localhost.evil.com",
            "",
        ] {
            assert!(!names_this_machine(host), "{host}");
        }
    }
}
