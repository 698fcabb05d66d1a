//! The usage routes of the local API.
//!
//! | route | answer |
//! |---|---|
//! | `POST /usage {"request_count": N}` | `202 {"bucket": "YYYY-MM", "request_count": N}`: counted in memory, durable within `usage.flush_interval`; while the clock is outside 2000-01..2100-12, `202 {"bucket": null, "request_count": N, "held": true}` (counted in the current month once the clock is right); `400 {"message"}` saying what is wrong otherwise, including a month that would pass 10^15 requests; `413` for a body over 4 KiB |
//! | `GET /usage` | epoch, buckets (newest first) with what is counted, unflushed and confirmed by the control plane, reporting status, statsd listener numbers |
//!
//! `N` is an integer from 1 to [`MAX_REQUESTS_PER_CALL`]; the body must be exactly
//! `{"request_count": N}` (an unknown field is refused, so that a client believing it can
//! choose a month or a service learns otherwise). The `Content-Type` is not checked: a
//! gateway's HTTP log plugin or `curl -d` may send any. The route takes a mutex and adds to a
//! map, nothing more, so a gateway can call it once per request.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use licsync_common::duration::HumanDuration;
use licsync_common::strict_json::StrictJsonError;
use serde_json::{Value, json};

use super::statsd::StatsdHandle;
use super::{Counted, MAX_REQUESTS_PER_CALL, UsageCounter};

/// Largest `POST /usage` body accepted.
pub const MAX_BODY_BYTES: usize = 4096;

/// What the usage routes read.
#[derive(Clone)]
pub struct UsageApi {
    pub counter: UsageCounter,
    /// The statsd listener, when `usage.statsd_listen` is set.
    pub statsd: Option<StatsdHandle>,
    pub flush_interval: Duration,
    pub report_interval: Duration,
}

impl UsageApi {
    /// The short form for `GET /status`.
    pub fn status(&self) -> Value {
        let snapshot = self.counter.snapshot();
        json!({
            "epoch": snapshot.epoch,
            "unflushed": snapshot.unflushed,
            "unreported": snapshot.unreported,
            "held": snapshot.held,
            "clock_error": snapshot.clock_error,
            "last_flush_error": snapshot.last_flush_error,
            "last_report_at": snapshot.report.last_report_at,
            "last_report_error": snapshot.report.last_error,
            "statsd_rejected_lines": self.statsd.as_ref().map(|s| s.view().rejected_lines),
        })
    }
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "message": text }))).into_response()
}

/// `POST /usage`.
pub async fn post_usage(State(usage): State<UsageApi>, body: Body) -> Response {
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(error) if too_large(&error) => {
            return message(StatusCode::PAYLOAD_TOO_LARGE, &too_large_message());
        }
        Err(error) => {
            return message(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {error}"),
            );
        }
    };
    match parse_increment(&bytes) {
        Ok(requests) => match usage.counter.add(requests) {
            Ok(Counted::Month(month)) => (
                StatusCode::ACCEPTED,
                Json(json!({ "bucket": month, "request_count": requests })),
            )
                .into_response(),
            Ok(Counted::Held) => (
                StatusCode::ACCEPTED,
                Json(json!({ "bucket": null, "request_count": requests, "held": true })),
            )
                .into_response(),
            Err(refused) => message(StatusCode::BAD_REQUEST, &refused.to_string()),
        },
        Err(reason) => message(StatusCode::BAD_REQUEST, &reason),
    }
}

/// `GET /usage`.
pub async fn get_usage(State(usage): State<UsageApi>) -> Response {
    let snapshot = usage.counter.snapshot();
    let mut body = serde_json::to_value(&snapshot).unwrap_or_default();
    if let Value::Object(map) = &mut body {
        map.insert(
            "flush_interval".into(),
            json!(HumanDuration(usage.flush_interval).to_string()),
        );
        map.insert(
            "report_interval".into(),
            json!(HumanDuration(usage.report_interval).to_string()),
        );
        map.insert(
            "statsd".into(),
            serde_json::to_value(usage.statsd.as_ref().map(StatsdHandle::view)).unwrap_or_default(),
        );
    }
    Json(body).into_response()
}

/// The 413 message, also sent by the serving loop for a declared length over the limit.
pub fn too_large_message() -> String {
    format!("the body is larger than {MAX_BODY_BYTES} bytes; send {{\"request_count\": N}}")
}

fn too_large(error: &axum::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(err) = current {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = err.source();
    }
    false
}

/// The `N` of `{"request_count": N}`, or what is wrong with the body.
pub fn parse_increment(body: &[u8]) -> Result<u64, String> {
    const SHAPE: &str = "send {\"request_count\": N} with N a whole number from 1 to 1000000000";
    let value = licsync_common::strict_json::from_slice(body).map_err(|e| match e {
        StrictJsonError::DuplicateKey(_) => format!("the body has a {e}; {SHAPE}"),
        StrictJsonError::Syntax(e) => format!("the body is not valid JSON ({e}); {SHAPE}"),
    })?;
    let Value::Object(fields) = value else {
        return Err(format!(
            "the body is {}, not a JSON object; {SHAPE}",
            kind(&value)
        ));
    };
    if let Some(unknown) = fields.keys().find(|key| *key != "request_count") {
        let unknown: String = unknown.chars().take(64).collect();
        return Err(format!(
            "unknown field '{unknown}': request_count is the only field; {SHAPE}"
        ));
    }
    let Some(count) = fields.get("request_count") else {
        return Err(format!("request_count is missing; {SHAPE}"));
    };
    let Value::Number(number) = count else {
        return Err(format!(
            "request_count must be a whole number, not {}; {SHAPE}",
            kind(count)
        ));
    };
    let too_large = || {
        format!(
            "request_count {number} is more than {MAX_REQUESTS_PER_CALL}; split it over several calls"
        )
    };
    match (number.as_u64(), number.as_i64(), number.as_f64()) {
        (Some(0), _, _) => Err(format!("request_count must be at least 1, not 0; {SHAPE}")),
        (Some(n), _, _) if n > MAX_REQUESTS_PER_CALL => Err(too_large()),
        (Some(n), _, _) => Ok(n),
        (None, Some(_), _) => Err(format!(
            "request_count must be at least 1, not {number}; {SHAPE}"
        )),
        // Beyond u64, or written with an exponent: as large as that is, it is too large.
        (None, None, Some(f)) if f > MAX_REQUESTS_PER_CALL as f64 => Err(too_large()),
        _ => Err(format!(
            "request_count must be an integer (no decimal point or exponent), not {number}; {SHAPE}"
        )),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_body_says_what_to_fix() {
        assert_eq!(parse_increment(br#"{"request_count": 1}"#), Ok(1));
        assert_eq!(
            parse_increment(br#"{"request_count":1000000000}"#),
            Ok(MAX_REQUESTS_PER_CALL)
        );
        for (body, expected) in [
            (&br#""#[..], "not valid JSON"),
            (br#"{"request_count": 1"#, "not valid JSON"),
            (b"request_count=1", "not valid JSON"),
            (br#"[1]"#, "is an array, not a JSON object"),
            (br#"5"#, "is a number, not a JSON object"),
            (br#"{}"#, "request_count is missing"),
            (br#"{"request_count": 0}"#, "at least 1, not 0"),
            (br#"{"request_count": -5}"#, "at least 1, not -5"),
            (
                br#"{"request_count": 1.5}"#,
                "an integer (no decimal point or exponent), not 1.5",
            ),
            (br#"{"request_count": 2.0}"#, "not 2.0"),
            (br#"{"request_count": 1e3}"#, "not 1000.0"),
            (br#"{"request_count": -0.5}"#, "not -0.5"),
            (br#"{"request_count": "5"}"#, "whole number, not a string"),
            (br#"{"request_count": null}"#, "not null"),
            (br#"{"request_count": true}"#, "not a boolean"),
            (br#"{"request_count": [1]}"#, "not an array"),
            (br#"{"request_count": 1000000001}"#, "more than 1000000000"),
            (br#"{"request_count": 1e30}"#, "more than 1000000000"),
            (
                br#"{"request_count": 99999999999999999999999}"#,
                "more than 1000000000",
            ),
            (
                br#"{"request_count": 1, "bucket": "2020-01"}"#,
                "unknown field 'bucket'",
            ),
            (br#"{"requests": 1}"#, "unknown field 'requests'"),
        ] {
            let err = parse_increment(body).unwrap_err();
            assert!(
                err.contains(expected),
                "{}: {err}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
