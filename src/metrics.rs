//! The process's metrics registry (docs/metrics.md): one Prometheus recorder per process,
//! installed by the first [`start`](crate::start) and shared by every role it runs, so each
//! metrics route of the process shows every metric of the process. Also the worker's own
//! metrics server (`--metrics-addr`).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Json;
use axum::Router;
use distriqueue_core::api::ErrorBody;
use distriqueue_util::metrics::{prometheus_response, PrometheusText};
use distriqueue_util::{auth, http};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Upper bounds of the buckets of every `*_seconds` histogram: a millisecond to an hour.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
];

/// Upper bounds of the buckets of the size histograms (commands per log entry, rows per
/// read-model write).
const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
];

/// How often histogram samples are folded into their buckets when nobody scrapes (the
/// exporter keeps them until then).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process's registry, installed on the first call (with every role's metrics described
/// and an upkeep thread started); later calls return the same one.
///
/// Errors: another metrics recorder was installed in this process first.
pub fn registry() -> anyhow::Result<PrometheusText> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    let handle = HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|builder| {
                builder.set_buckets_for_metric(Matcher::Suffix("_batch_size".into()), SIZE_BUCKETS)
            })
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full(distriqueue_orchestrator::metrics::LOG_ENTRY_COMMANDS.into()),
                    SIZE_BUCKETS,
                )
            })
            .and_then(PrometheusBuilder::install_recorder)
            .map_err(|error| error.to_string())?;
        distriqueue_orchestrator::metrics::describe();
        distriqueue_gateway::metrics::describe();
        distriqueue_worker::metrics::describe();
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            })
            .map_err(|error| error.to_string())?;
        Ok(handle)
    });
    match handle {
        Ok(handle) => {
            let handle = handle.clone();
            Ok(PrometheusText::new(move || handle.render()))
        }
        Err(error) => Err(anyhow::anyhow!(
            "cannot install the metrics registry: {error}"
        )),
    }
}

/// Binds the worker's metrics server at `addr` (`GET /metrics`, behind `guard`'s keys; anything
/// else is 404) and serves `prometheus` on it until `shutdown`. Returns the bound address and the server's task.
///
/// Errors: the address cannot be bound.
pub(crate) async fn serve_worker_metrics(
    addr: SocketAddr,
    prometheus: PrometheusText,
    guard: auth::Guard,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, JoinHandle<std::io::Result<()>>)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the worker's metrics"))?;
    let local_addr = listener.local_addr()?;
    let open = guard.keys.is_empty();
    let router = Router::new()
        .route(
            "/metrics",
            get(move || std::future::ready(prometheus_response(&prometheus))),
        )
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(ErrorBody::new("This server has only GET /metrics")),
            )
        })
        .layer(axum::middleware::map_response(http::json_errors_only))
        .layer(axum::middleware::from_fn_with_state(
            guard,
            auth::require_key,
        ));
    let limits = distriqueue_util::serve::ServerLimits {
        check_host_on_loopback: open,
        ..distriqueue_util::serve::ServerLimits::default()
    };
    let served =
        distriqueue_util::serve::serve(listener, router, limits, None, shutdown.cancelled_owned());
    Ok((local_addr, tokio::spawn(served)))
}
