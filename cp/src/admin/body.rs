//! Reading a request body into a JSON object, bounded and with JSON errors.
//!
//! axum's `Json` extractor insists on `Content-Type: application/json` and answers its
//! rejections (and its body limit) in plain text. Kong accepts a JSON body whatever the
//! content type claims (plain `curl -d '{...}'` sends a form content type) and also real form
//! bodies (`curl -d payload=...`), and every answer here must be JSON; so this extractor reads
//! the body itself, stops at [`MAX_BODY_BYTES`], and hands handlers the fields as a JSON object.

use axum::extract::{FromRequest, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use futures::StreamExt;
use licsync_common::strict_json::{self, StrictJsonError};
use serde_json::{Map, Value};

use super::error::ApiError;
use super::form;

/// Largest request body accepted: 1 MiB (a license document is a few KiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The request body's fields. An empty body is an empty object.
#[derive(Debug, Default)]
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        if declared_length(&parts.headers).is_some_and(|len| len > MAX_BODY_BYTES as u64) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        let mut chunks = body.into_data_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|error| {
                ApiError::bad_request(format!("Cannot read request body: {error}"))
            })?;
            if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        parse(&parts.headers, &bytes).map(Self)
    }
}

/// `n` as a whole non-negative number: JSON Schema counts `3.0` as the integer 3, so a client
/// generated from the OpenAPI description may send a count or a lifetime that way.
pub fn whole_number(n: &serde_json::Number) -> Option<u64> {
    // Below 2^53 every whole f64 is exact.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..EXACT).contains(f))
            .map(|f| f as u64)
    })
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn too_large() -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, too_large_message())
}

/// The 413 message, also sent by the serving loop for a declared length over the limit.
pub fn too_large_message() -> String {
    format!("Request body is larger than the limit of {MAX_BODY_BYTES} bytes (1 MiB)")
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

fn parse(headers: &HeaderMap, bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let trimmed = bytes.trim_ascii();
    if trimmed.is_empty() {
        return Ok(Map::new());
    }
    let looks_like_json = matches!(trimmed.first(), Some(b'{' | b'['));
    if is_form(headers) && !looks_like_json {
        let text = String::from_utf8_lossy(trimmed);
        let mut fields = Map::new();
        for (name, value) in form::decode(&text) {
            // As in JSON bodies: a field sent twice has no one meaning.
            if fields.contains_key(&name) {
                return Err(ApiError::bad_request(format!(
                    "Cannot parse form body: duplicate key '{}'; send each field once",
                    licsync_common::log_text::escape(&name)
                )));
            }
            fields.insert(name, Value::String(value));
        }
        return Ok(fields);
    }
    // One reading only: a repeated key (`{"payload": A, "payload": B}`) is refused, never
    // resolved to whichever occurrence this parser happens to keep.
    match strict_json::from_slice(trimmed) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(ApiError::bad_request(
            "JSON body must be an object, e.g. {\"name\": \"value\"}",
        )),
        Err(error @ StrictJsonError::DuplicateKey(_)) => Err(ApiError::bad_request(format!(
            "Cannot parse JSON body: {error}; send each field once"
        ))),
        Err(StrictJsonError::Syntax(_)) => Err(ApiError::bad_request("Cannot parse JSON body")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(content_type: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        h
    }

    #[test]
    fn json_is_read_whatever_the_content_type() {
        let form = headers("application/x-www-form-urlencoded");
        let fields = parse(&form, br#" {"payload": "x"} "#).unwrap();
        assert_eq!(fields["payload"], "x");
        let fields = parse(&HeaderMap::new(), br#"{"a":1}"#).unwrap();
        assert_eq!(fields["a"], 1);
        assert!(parse(&headers("text/plain"), b"").unwrap().is_empty());
    }

    #[test]
    fn form_bodies_become_string_fields() {
        let form = headers("application/x-www-form-urlencoded; charset=utf-8");
        let fields = parse(&form, b"name=edge+1&max_uses=3").unwrap();
        assert_eq!(fields["name"], "edge 1");
        assert_eq!(fields["max_uses"], "3");
        let err = parse(&form, b"name=a&name=b").unwrap_err();
        assert_eq!(
            err.message(),
            "Cannot parse form body: duplicate key 'name'; send each field once"
        );
    }

    #[test]
    fn malformed_or_non_object_json_is_refused() {
        let err = parse(&HeaderMap::new(), b"{\"payload\": ").unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        let err = parse(&headers("application/x-www-form-urlencoded"), b"[1]").unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        let err = parse(&HeaderMap::new(), br#"{"payload":"a","payload":"b"}"#).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            err.message(),
            "Cannot parse JSON body: duplicate key 'payload'; send each field once"
        );
    }
}
