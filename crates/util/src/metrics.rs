//! Metrics helpers the HTTP roles share (docs/metrics.md): [`PrometheusText`], the renderer of
//! the process's Prometheus registry that their metrics routes serve, and [`track_http`], the
//! middleware that counts and times every request by route pattern, method and status.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Renders the process's metrics as Prometheus text. The composition root makes it from the
/// exporter it installed; the roles only call it. Cheap to clone.
#[derive(Clone)]
pub struct PrometheusText(Arc<dyn Fn() -> String + Send + Sync>);

impl PrometheusText {
    /// A renderer calling `render`.
    pub fn new(render: impl Fn() -> String + Send + Sync + 'static) -> PrometheusText {
        PrometheusText(Arc::new(render))
    }

    /// The metrics now, in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        (self.0)()
    }
}

/// Two renderers are equal when they are clones of one.
impl PartialEq for PrometheusText {
    fn eq(&self, other: &PrometheusText) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for PrometheusText {}

impl fmt::Debug for PrometheusText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrometheusText")
    }
}

/// The names of one HTTP role's request metrics.
#[derive(Debug, Clone, Copy)]
pub struct HttpMetricNames {
    /// The counter of answered requests (`route`, `method`, `status`).
    pub requests: &'static str,
    /// The histogram of answer times in seconds (`route`, `method`).
    pub duration: &'static str,
}

/// The `method` label: the method's name for the methods HTTP defines, `other` for any other
/// token a client sends (the label stays bounded).
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("other", Method::as_str)
}

/// The answer of a metrics route: the registry's text, with the Prometheus text format's
/// content type.
pub fn prometheus_response(text: &PrometheusText) -> Response {
    (
        [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
        text.render(),
    )
        .into_response()
}

/// The content type of the Prometheus text format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Middleware (`axum::middleware::from_fn_with_state(names, track_http)`, layered on the
/// router so that the matched route is known): counts the request and times its answer. The
/// `route` label is the route's pattern (`/api/jobs/{id}`), or `unmatched`, so the number of
/// series stays bounded whatever clients send.
pub async fn track_http(
    State(names): State<HttpMetricNames>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!(names.duration, "route" => route.clone(), "method" => method)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(names.requests, "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}
