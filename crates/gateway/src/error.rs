//! [`ApiError`]: every failure that reaches a client, mapped to an HTTP status and the
//! contract's error body (CONTRACT.md, "Errors and access") in this one place.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use distriqueue_core::api::ErrorBody;
use distriqueue_core::request::Violations;
use distriqueue_core::Refusal;
use distriqueue_store::StoreError;
use distriqueue_util::error_chain;

use crate::OrchestratorError;

/// A failed request. Bad input is always a 4xx; only [`ApiError::Internal`] is a 500, and it
/// never shows its detail to the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `{"error": message}`.
    #[error("{0}")]
    BadRequest(String),
    /// 400 `{"error": "malformed JSON: ..."}`: the body is not JSON at all.
    #[error("malformed JSON")]
    MalformedJson(#[source] serde_json::Error),
    /// 400 `{"error":"Validation failed","violations":{field: message}}`.
    #[error("Validation failed")]
    Validation(Violations),
    /// 404 `{"error": message}`.
    #[error("{0}")]
    NotFound(String),
    /// 405 `{"error": message}`.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 413 `{"error": message}`: the body is larger than the configured limit.
    #[error("request body is larger than the limit of {limit_bytes} bytes")]
    PayloadTooLarge {
        /// The configured limit.
        limit_bytes: usize,
    },
    /// 415 `{"error": message}`: the body is not declared as JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429 `{"error": message}`: a bounded resource is full (SSE streams).
    #[error("{0}")]
    TooMany(String),
    /// The orchestrator refused the command: its own status (404, 409, 429) and message.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// 503 `{"error": message}`: no orchestrator reachable.
    #[error("orchestrator unavailable")]
    Unavailable(#[source] OrchestratorError),
    /// 500 `{"error":"internal error"}`; the detail is logged, never sent.
    #[error("internal error: {context}")]
    Internal {
        /// What the gateway was doing.
        context: String,
        /// What failed, when something did.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl ApiError {
    /// One violation of one field (or query parameter, or header).
    pub fn violation(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        let mut violations = Violations::new();
        violations.insert(field.into(), message.into());
        ApiError::Validation(violations)
    }

    /// A 500 for `context` caused by `source`.
    pub fn internal(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> ApiError {
        ApiError::Internal {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::MalformedJson(_) | ApiError::Validation(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Refused(refusal) => {
                StatusCode::from_u16(refusal.http_status()).unwrap_or(StatusCode::CONFLICT)
            }
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<crate::writer::WriteError> for ApiError {
    fn from(error: crate::writer::WriteError) -> ApiError {
        ApiError::internal("writing the read model", error)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        ApiError::internal("reading the read model", error)
    }
}

impl From<OrchestratorError> for ApiError {
    fn from(error: OrchestratorError) -> ApiError {
        match error {
            OrchestratorError::Refused(refusal) => ApiError::Refused(refusal),
            unavailable @ OrchestratorError::Unavailable(_) => ApiError::Unavailable(unavailable),
        }
    }
}

impl ApiError {
    /// The contract's error body: `{"error": message}` (the message with its causes), or the
    /// validation shape; an internal error says only "internal error".
    pub(crate) fn body(&self) -> ErrorBody {
        match self {
            ApiError::Validation(violations) => ErrorBody {
                violations: Some(violations.clone()),
                ..ErrorBody::new("Validation failed")
            },
            ApiError::Internal { .. } => ErrorBody::new("internal error"),
            other => ErrorBody::new(error_chain(other)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal { .. } = &self {
            // The one place an internal error is logged.
            tracing::error!(error = %error_chain(&self), "internal error");
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
