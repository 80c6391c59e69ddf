//! [`ApiError`]: every failure of the orchestrator API, mapped to an HTTP status and the one
//! error body ([`ErrorBody`], CONTRACT.md "Errors and access") in this one place.

use axum::extract::rejection::JsonRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use distriqueue_core::api::ErrorBody;
use distriqueue_core::request::Violations;
use distriqueue_core::Refusal;
use distriqueue_util::error_chain;

use crate::proposer::SubmitError;

/// A failed request. Bad input is a 4xx, an orchestrator that cannot commit a 503; nothing a
/// client sends is a 500.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// 400: a body or parameter the route cannot use; the message says what it needs.
    #[error("{0}")]
    BadRequest(String),
    /// 400: the body is not JSON, or not of the route's shape; 413 when it is larger than the
    /// route's limit, 415 when it is not declared `application/json`.
    #[error("{what}")]
    BadBody {
        /// What the route expects.
        what: &'static str,
        /// Why the body did not fit.
        #[source]
        source: JsonRejection,
    },
    /// 400 `{"error":"Validation failed","violations":{...}}`: a job request breaks the
    /// contract's rules.
    #[error("Validation failed")]
    Validation(Violations),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 405.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: the change would break the cluster.
    #[error("{0}")]
    Conflict(String),
    /// The state machine refused the command: its own status (404, 409, 429) and message.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// 503: the command could not be committed (no leader, no quorum, shutting down).
    #[error("orchestrator unavailable")]
    Unavailable(#[from] SubmitError),
    /// 503: this node does not lead and knows no leader to forward to yet.
    #[error("no leader is ready yet (election under way); try again shortly")]
    NoLeader,
    /// 503: the leader did not answer a forwarded write.
    #[error("cannot reach the leader {leader}")]
    LeaderUnreachable {
        /// The leader's base URL.
        leader: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// 413: a write to forward is larger than the forwarding limit.
    #[error("the body is too large to forward to the leader")]
    TooLargeToForward(#[source] axum::Error),
    /// 500: the orchestrator failed to render an answer of its own (never for input).
    #[error("internal error")]
    Internal(#[source] serde_json::Error),
    /// 503: a membership change could not commit.
    #[error("cannot {what}")]
    Membership {
        /// The change, such as "add node 4 as a learner".
        what: String,
        /// openraft's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ApiError {
    /// The HTTP status this error answers with.
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadBody { source, .. }
                if matches!(
                    source.status(),
                    StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE
                ) =>
            {
                source.status()
            }
            ApiError::BadRequest(_) | ApiError::BadBody { .. } | ApiError::Validation(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Refused(refusal) => {
                StatusCode::from_u16(refusal.http_status()).unwrap_or(StatusCode::CONFLICT)
            }
            ApiError::TooLargeToForward(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(SubmitError::TooManyWorkers { .. }) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_)
            | ApiError::NoLeader
            | ApiError::LeaderUnreachable { .. }
            | ApiError::Membership { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The error body: the message with its causes, the violations or the refusal.
    pub(crate) fn body(&self) -> ErrorBody {
        match self {
            ApiError::Validation(violations) => ErrorBody {
                violations: Some(violations.clone()),
                ..ErrorBody::new(self.to_string())
            },
            ApiError::Refused(refusal) => ErrorBody {
                refusal: Some(refusal.clone()),
                ..ErrorBody::new(refusal.to_string())
            },
            other => ErrorBody::new(error_chain(other)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::debug!(error = %error_chain(&self), "answered 503");
        }
        let mut response = (status, Json(self.body())).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
