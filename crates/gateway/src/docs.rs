//! The gateway's OpenAPI 3.1 document and Swagger UI (CONTRACT.md "Docs and operations"): the
//! document is generated from the routes' own annotations (utoipa), served at
//! `/api/v3/api-docs`, and Swagger UI, from assets vendored in the binary, at
//! `/api/swagger-ui.html` (and `/api/swagger-ui/`). Nothing is fetched from elsewhere.

use std::sync::{Arc, OnceLock};

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};

use crate::error::ApiError;

/// The document's frame: title, version, tags. The paths come from the routes
/// ([`crate::api::routes`]).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "DistriQueue gateway",
        description = "Submit jobs, follow them (REST and Server-Sent Events), and read their \
                       history and statistics. Errors are `{\"error\": message}`, or for invalid \
                       input `{\"error\": \"Validation failed\", \"violations\": {field: message}}`.",
        license(name = "MIT")
    ),
    tags(
        (name = "jobs", description = "Job submission, queries and lifecycle"),
        (name = "operations", description = "Health, documentation and metrics"),
        (name = "dashboard", description = "The web dashboard at /dashboard and what it reads")
    ),
    components(schemas(SortKey, Direction))
)]
pub(crate) struct GatewayApi;

/// The gateway's OpenAPI document, made once.
pub fn openapi() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut document = crate::api::routes().split_for_parts().1;
        distriqueue_util::http::document_common_errors(&mut document);
        distriqueue_util::http::document_security(&mut document, crate::api::access);
        document
    })
}

/// The query parameters of `GET /api/jobs` (CONTRACT.md), for the document; the route reads
/// them by hand so that each bad one is named.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // read by the document only
pub(crate) struct ListParams {
    /// Only jobs of this type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    job_type: Option<String>,
    /// Only jobs of this priority: a name in any case, or 1, 5, 10, 15 (`priority` is read too).
    #[serde(rename = "jobPriority")]
    #[param(rename = "jobPriority", value_type = Option<distriqueue_core::Priority>)]
    job_priority: Option<String>,
    /// Only jobs in this state, in any case (`status` is read too).
    #[serde(rename = "jobStatus")]
    #[param(rename = "jobStatus", value_type = Option<distriqueue_core::JobStatus>)]
    job_status: Option<String>,
    /// Only jobs held (or last held) by this worker.
    #[serde(rename = "workerId")]
    #[param(rename = "workerId")]
    worker_id: Option<String>,
    /// Only jobs carrying this tag (1 to 255 characters, no control characters).
    tag: Option<String>,
    /// Jobs created at or after this time (RFC 3339, or an ISO local date-time read as UTC).
    #[serde(rename = "createdFrom")]
    #[param(rename = "createdFrom", format = DateTime)]
    created_from: Option<String>,
    /// Jobs created at or before this time.
    #[serde(rename = "createdTo")]
    #[param(rename = "createdTo", format = DateTime)]
    created_to: Option<String>,
    /// The page, from 0.
    #[param(minimum = 0)]
    page: Option<u32>,
    /// Jobs per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    size: Option<u32>,
    /// The sort key (default createdAt).
    #[serde(rename = "sortBy")]
    #[param(rename = "sortBy", value_type = Option<SortKey>)]
    sort_by: Option<String>,
    /// The sort direction (default desc).
    #[serde(rename = "sortDirection")]
    #[param(rename = "sortDirection", value_type = Option<Direction>)]
    sort_direction: Option<String>,
}

/// A sort key of `GET /api/jobs`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // a schema only
pub(crate) enum SortKey {
    /// Creation time.
    #[schema(rename = "createdAt")]
    CreatedAt,
    /// Priority by weight.
    #[schema(rename = "priority")]
    Priority,
    /// Lifecycle order.
    #[schema(rename = "status")]
    Status,
    /// Job type.
    #[schema(rename = "type")]
    Type,
    /// Start of the current attempt.
    #[schema(rename = "startedAt")]
    StartedAt,
    /// Completion time.
    #[schema(rename = "completedAt")]
    CompletedAt,
}

/// A sort direction.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // a schema only
pub(crate) enum Direction {
    /// Ascending.
    #[schema(rename = "asc")]
    Asc,
    /// Descending.
    #[schema(rename = "desc")]
    Desc,
}

/// The query parameters of `GET /api/jobs/statistics`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // read by the document only
pub(crate) struct StatsParams {
    /// Jobs created at or after this time (RFC 3339, or an ISO local date-time read as UTC).
    #[param(format = DateTime)]
    from: Option<String>,
    /// Jobs created at or before this time (not before `from`).
    #[param(format = DateTime)]
    to: Option<String>,
    /// Only jobs of this type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    job_type: Option<String>,
}

/// `GET /api/v3/api-docs`: this document, as JSON.
#[utoipa::path(
    get,
    path = "/api/v3/api-docs",
    tag = "operations",
    responses((status = 200, description = "The gateway's OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub(crate) async fn api_docs() -> Response {
    match openapi().to_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(error) => ApiError::internal("rendering the OpenAPI document", error).into_response(),
    }
}

/// `GET /api/swagger-ui.html` (the original system's address): to Swagger UI.
#[utoipa::path(
    get,
    path = "/api/swagger-ui.html",
    tag = "operations",
    responses((status = 303, description = "To /api/swagger-ui/"))
)]
pub(crate) async fn swagger_ui_html() -> Redirect {
    Redirect::to("/api/swagger-ui/")
}

/// `GET /api/swagger-ui/`: Swagger UI over this document.
#[utoipa::path(
    get,
    path = "/api/swagger-ui/",
    tag = "operations",
    responses((status = 200, description = "Swagger UI", content_type = "text/html"))
)]
pub(crate) async fn swagger_ui_index() -> Response {
    swagger_file("")
}

/// `GET /api/swagger-ui/{file}`: Swagger UI's scripts and styles.
#[utoipa::path(
    get,
    path = "/api/swagger-ui/{file}",
    tag = "operations",
    params(("file" = String, Path, description = "A file of Swagger UI", example = "swagger-ui.css")),
    responses(
        (status = 200, description = "The file"),
        (status = 404, description = "No such file", body = distriqueue_core::api::ErrorBody),
    )
)]
pub(crate) async fn swagger_ui_file(Path(file): Path<String>) -> Response {
    swagger_file(&file)
}

/// A file of the vendored Swagger UI, set to show `/api/v3/api-docs` and to validate nothing
/// remotely.
fn swagger_file(file: &str) -> Response {
    static CONFIG: OnceLock<Arc<utoipa_swagger_ui::Config<'static>>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        Arc::new(utoipa_swagger_ui::Config::from("/api/v3/api-docs").validator_url("none"))
    });
    match utoipa_swagger_ui::serve(file, Arc::clone(config)) {
        Ok(Some(file)) => {
            let mut response = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, file.content_type)],
                file.bytes.into_owned(),
            )
                .into_response();
            if file.gzpipped {
                response.headers_mut().insert(
                    header::CONTENT_ENCODING,
                    axum::http::HeaderValue::from_static("gzip"),
                );
            }
            response
        }
        Ok(None) => ApiError::NotFound(format!("No Swagger UI file {file}")).into_response(),
        Err(error) => ApiError::internal("serving Swagger UI", error.to_string()).into_response(),
    }
}
