//! Reading a JSON request body by hand, so every failure (wrong content type, too large,
//! malformed) answers in the contract's shape instead of axum's default rejection text.

use axum::body::Body;
use axum::http::{header, HeaderMap};
use futures::StreamExt;
use serde_json::Value;

use crate::error::ApiError;

/// Beyond the limit, a body is read and thrown away up to this many bytes before the 413 goes
/// out: a client still sending when the server closes a connection with unread data gets a
/// TCP reset instead of the answer. Past this, the connection is closed unread.
const MAX_DRAIN_BYTES: u64 = 64 * 1024 * 1024;

/// Checks that the request declares JSON. A missing `Content-Type` is read as JSON (lenient,
/// like most JSON APIs); `application/json` and `application/*+json` are JSON; anything else
/// is a 415.
pub(crate) fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("<not text>");
    let mime = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let is_json =
        mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "unsupported content type '{text}': send application/json"
        )))
    }
}

/// Reads the whole body, at most `limit_bytes`, and parses it as JSON.
pub(crate) async fn read_json(
    headers: &HeaderMap,
    body: Body,
    limit_bytes: usize,
) -> Result<Value, ApiError> {
    let bytes = read_limited(headers, body, limit_bytes).await?;
    serde_json::from_slice(&bytes).map_err(ApiError::MalformedJson)
}

async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit_bytes: usize,
) -> Result<Vec<u8>, ApiError> {
    let too_large = ApiError::PayloadTooLarge { limit_bytes };
    let declared_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok());
    if let Some(length) = declared_length {
        if length > limit_bytes as u64 {
            let expects_continue = headers
                .get(header::EXPECT)
                .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            // A client waiting for `100 Continue` has sent nothing yet: answer right away.
            if !expects_continue && length <= MAX_DRAIN_BYTES {
                drain(body.into_data_stream(), 0).await;
            }
            return Err(too_large);
        }
    }
    let mut collected = Vec::with_capacity(declared_length.unwrap_or(0) as usize);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| {
            ApiError::BadRequest(format!("could not read the request body: {error}"))
        })?;
        if collected.len() + chunk.len() > limit_bytes {
            let seen = (collected.len() + chunk.len()) as u64;
            drop(collected);
            drain(stream, seen).await;
            return Err(too_large);
        }
        collected.extend_from_slice(&chunk);
    }
    Ok(collected)
}

/// Reads and discards the rest of a body, up to [`MAX_DRAIN_BYTES`] in all.
async fn drain<S, E>(mut stream: S, mut seen: u64)
where
    S: futures::Stream<Item = Result<axum::body::Bytes, E>> + Unpin,
{
    while seen <= MAX_DRAIN_BYTES {
        match stream.next().await {
            Some(Ok(chunk)) => seen += chunk.len() as u64,
            Some(Err(_)) | None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(content_type: Option<&'static str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(content_type) = content_type {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        headers
    }

    #[test]
    fn json_content_types_are_accepted_others_refused() {
        for accepted in [
            None,
            Some("application/json"),
            Some("application/json; charset=utf-8"),
            Some("Application/JSON"),
            Some("application/merge-patch+json"),
        ] {
            assert!(
                check_json_content_type(&headers(accepted)).is_ok(),
                "{accepted:?}"
            );
        }
        for refused in ["text/plain", "application/x-www-form-urlencoded"] {
            assert!(matches!(
                check_json_content_type(&headers(Some(refused))),
                Err(ApiError::UnsupportedMediaType(_))
            ));
        }
    }

    #[tokio::test]
    async fn chunked_body_over_the_limit_is_refused() {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            (0..3).map(|_| Ok(vec![b' '; 600])).collect();
        let body = Body::from_stream(futures::stream::iter(chunks));
        let outcome = read_limited(&HeaderMap::new(), body, 1000).await;
        assert!(matches!(
            outcome,
            Err(ApiError::PayloadTooLarge { limit_bytes: 1000 })
        ));
    }
}
