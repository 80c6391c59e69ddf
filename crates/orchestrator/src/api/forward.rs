//! Forwarding: a follower answers reads itself and forwards writes (every POST, PUT and
//! DELETE) to the leader (CONTRACT.md: "Workers may talk to any node"), passing the leader's
//! answer back unchanged with the leader's URL in `x-distriqueue-leader`, so DistriQueue's clients
//! go there directly next time.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use distriqueue_core::api::LEADER_HEADER;
use distriqueue_util::auth::API_KEY_HEADER;

use super::error::ApiError;
use crate::handle::OrchestratorHandle;

/// Largest request body forwarded to the leader.
const MAX_FORWARDED_BYTES: usize = 16 * 1024 * 1024;

/// How long the leader may take to answer a forwarded write.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// The middleware: writes on a node that does not run the leader's duties go to the leader;
/// 503 while no leader is known, or while this node was just elected and starts its duties.
pub(crate) async fn forward_writes(
    State(handle): State<OrchestratorHandle>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let is_write = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::DELETE
    );
    if !is_write || handle.is_live_leader() {
        return next.run(request).await;
    }
    match forward(&handle, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn forward(
    handle: &OrchestratorHandle,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    if handle.is_elected_leader() {
        // Elected, its duties still starting: the write waits for no one else.
        return Err(ApiError::NoLeader);
    }
    let leader = handle.leader_url().await.ok_or(ApiError::NoLeader)?;
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORWARDED_BYTES)
        .await
        .map_err(ApiError::TooLargeToForward)?;
    let path = parts.uri.path_and_query().map_or("/", |path| path.as_str());
    let mut forwarded = handle
        .http
        .request(parts.method.clone(), format!("{leader}{path}"))
        .timeout(FORWARD_TIMEOUT)
        .body(bytes);
    // The body's type and the caller's key: the leader checks the key again.
    for name in [
        header::CONTENT_TYPE,
        header::AUTHORIZATION,
        header::HeaderName::from_static(API_KEY_HEADER),
    ] {
        if let Some(value) = parts.headers.get(&name) {
            forwarded = forwarded.header(name, value.clone());
        }
    }
    let unreachable = |source| {
        handle.forget_api_url(&leader);
        ApiError::LeaderUnreachable {
            leader: leader.clone(),
            source,
        }
    };
    let answer = forwarded.send().await.map_err(unreachable)?;
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let kind = answer.headers().get(header::CONTENT_TYPE).cloned();
    let body = answer.bytes().await.map_err(unreachable)?;
    let mut response = (status, body).into_response();
    if let Some(kind) = kind {
        response.headers_mut().insert(header::CONTENT_TYPE, kind);
    }
    if let Ok(value) = HeaderValue::from_str(&leader) {
        response.headers_mut().insert(LEADER_HEADER, value);
    }
    Ok(response)
}
