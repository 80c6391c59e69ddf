//! What the HTTP roles share about their answers: every error in the contract's JSON shape
//! ([`json_errors_only`]), the responses every operation of their OpenAPI documents may give
//! besides its own ([`document_common_errors`]), and their API keys in those documents
//! ([`document_security`]).

use axum::body::Body;
use axum::http::Method;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use distriqueue_core::api::ErrorBody;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};

use crate::auth::Access;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};

/// Last resort (`axum::middleware::map_response`): an error answer that is not JSON (from an
/// axum extractor or layer, never from a handler) becomes `{"error": "<reason>"}` with the same
/// status and headers (CONTRACT.md: every error has that shape).
pub async fn json_errors_only(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|text| text.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let reason = status.canonical_reason().unwrap_or("request failed");
    let body = serde_json::to_string(&ErrorBody::new(reason)).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// Adds to every operation of `document` the error answers any route may give that its own
/// annotation does not list: 413 and 415 on every operation that takes a body (the body limits,
/// JSON only), 400 on every operation with a path parameter (a path that does not decode), 421
/// 503 and 504 everywhere (the bounds of [`crate::serve`]). Each is the contract's `ErrorBody`.
pub fn document_common_errors(document: &mut OpenApi) {
    for item in document.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            if operation.request_body.is_some() {
                add_error(operation, "413", "The body is larger than this route takes");
                add_error(
                    operation,
                    "415",
                    "The body is not declared application/json",
                );
            }
            // What `serve::serve` answers on any route (SECURITY.md, "Bounded inputs").
            add_error(
                operation,
                "421",
                "A Host that does not name this machine, on a loopback address",
            );
            add_error(
                operation,
                "503",
                "The server answers as many requests as it takes: try again",
            );
            add_error(
                operation,
                "504",
                "Not answered within the request timeout; a write may still have taken effect",
            );
            let has_path_parameter = operation.parameters.iter().flatten().any(|parameter| {
                matches!(parameter, RefOr::T(parameter) if matches!(parameter.parameter_in, ParameterIn::Path))
            });
            if has_path_parameter {
                add_error(operation, "400", "A path that does not decode");
            }
        }
    }
}

/// Declares the API keys in `document` (SECURITY.md): the `bearer` and `apiKey` schemes, and
/// on every operation whose route asks for a key (`access`, the role's own map) the
/// requirement of either, with its 401 and 403 answers.
pub fn document_security(document: &mut OpenApi, access: fn(&Method, Option<&str>) -> Access) {
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("An API key: Authorization: Bearer <key>"))
                .build(),
        ),
    );
    components.add_security_scheme(
        "apiKey",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-API-Key",
            "An API key: X-API-Key: <key>",
        ))),
    );
    for (path, item) in document.paths.paths.iter_mut() {
        let operations = [
            (Method::GET, &mut item.get),
            (Method::PUT, &mut item.put),
            (Method::POST, &mut item.post),
            (Method::DELETE, &mut item.delete),
            (Method::PATCH, &mut item.patch),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation else { continue };
            let needs = access(&method, Some(path));
            if needs == Access::Public {
                continue;
            }
            operation.security = Some(vec![
                SecurityRequirement::new("bearer", Vec::<String>::new()),
                SecurityRequirement::new("apiKey", Vec::<String>::new()),
            ]);
            add_error(operation, "401", "No API key, or one nobody configured");
            add_error(
                operation,
                "403",
                "An API key without the role this route asks for",
            );
        }
    }
}

/// Adds an `ErrorBody` answer for `status` to `operation` unless it lists one.
fn add_error(operation: &mut Operation, status: &str, description: &str) {
    operation
        .responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
                .into()
        });
}
