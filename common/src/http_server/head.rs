//! Checking a request head before hyper sees it.
//!
//! hyper answers a head it cannot accept (too large, a bad `Content-Length`, a NUL in a header)
//! by itself, with an empty body. So every head is first parsed here with the same parser
//! (`httparse`) and at least hyper's rules, and a head hyper would refuse gets a
//! [`Rejection`] whose message says what to fix; the connection gate turns it into a JSON
//! answer. A head that passes also tells how its body is framed, so the gate knows where the
//! next head starts.
//!
//! | what is wrong | status |
//! |---|---|
//! | head over [`MAX_HEAD_BYTES`], or over [`MAX_HEADERS`] fields | 431 |
//! | malformed request line, method, target or header; a control byte (NUL...) in a header | 400 |
//! | a version other than HTTP/1.0 and HTTP/1.1 (h2c included) | 505 |
//! | `Content-Length` not one whole number; both it and `Transfer-Encoding`; `Transfer-Encoding` not ending in `chunked` or on HTTP/1.0 | 400 |
//! | a declared `Content-Length` over the server's body limit | 413, the server's own message |

use axum::http::{StatusCode, Uri};

/// Largest request head (request line and header fields) accepted: 16 KiB. An Admin API
/// token, a cookie and the usual headers take well under 2 KiB.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Most header fields accepted in one request (hyper's own limit).
pub const MAX_HEADERS: usize = 100;

/// Why a head is refused: the status and the `message` of the JSON answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub message: String,
}

impl Rejection {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

/// How the body after an accepted head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: n` (0 when neither length header is sent).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// An accepted head: its length in bytes and its body's framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub len: usize,
    pub framing: Framing,
}

/// Checks the head at the start of `buf`: `Ok(None)` while it is incomplete (and still
/// within [`MAX_HEAD_BYTES`]), the accepted head, or why it is refused. `max_body` and
/// `too_large` are the server's body limit and its 413 message.
pub fn check(buf: &[u8], max_body: u64, too_large: &str) -> Result<Option<Accepted>, Rejection> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(head_too_large());
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::Version) if names_another_version(buf) => {
            return Err(Rejection::new(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "only HTTP/1.1 and HTTP/1.0 are served here (not HTTP/2 without TLS)",
            ));
        }
        Err(error) => return Err(parse_error(error, request.method.is_some())),
    };
    if len > MAX_HEAD_BYTES {
        return Err(head_too_large());
    }
    let target = request.path.unwrap_or_default();
    if Uri::try_from(target).is_err() {
        return Err(Rejection::bad(
            "the request target is not a valid URI; send a path such as /licenses?size=10",
        ));
    }
    let http_11 = request.version == Some(1);
    let mut length: Option<u64> = None;
    let mut transfer_encoding: Option<&[u8]> = None;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            for value in header.value.split(|b| *b == b',') {
                let Some(n) = digits(value.trim_ascii()) else {
                    return Err(Rejection::bad(format!(
                        "Content-Length must be the body's size as a whole number of bytes, not '{}'",
                        shown(header.value)
                    )));
                };
                if length.is_some_and(|seen| seen != n) {
                    return Err(Rejection::bad(
                        "Content-Length is sent with different values; send it once",
                    ));
                }
                length = Some(n);
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = Some(header.value);
        }
    }
    let framing = match (transfer_encoding, length) {
        (Some(_), _) if !http_11 => {
            return Err(Rejection::bad(
                "Transfer-Encoding needs HTTP/1.1; send Content-Length instead",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(Rejection::bad(
                "send either Content-Length or Transfer-Encoding: chunked, not both",
            ));
        }
        // Only the last Transfer-Encoding line counts, as in hyper.
        (Some(value), None) => {
            let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
            if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(Rejection::bad(format!(
                    "Transfer-Encoding must end with chunked, not '{}'",
                    shown(value)
                )));
            }
            Framing::Chunked
        }
        (None, Some(n)) if n > max_body => {
            return Err(Rejection::new(StatusCode::PAYLOAD_TOO_LARGE, too_large));
        }
        (None, n) => Framing::Length(n.unwrap_or(0)),
    };
    Ok(Some(Accepted { len, framing }))
}

fn head_too_large() -> Rejection {
    Rejection::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        format!(
            "the request head (request line and headers) is larger than {MAX_HEAD_BYTES} bytes; send shorter headers"
        ),
    )
}

fn parse_error(error: httparse::Error, method_seen: bool) -> Rejection {
    use httparse::Error;
    match error {
        Error::TooManyHeaders => Rejection::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request has more than {MAX_HEADERS} header fields; send fewer"),
        ),
        Error::HeaderName => Rejection::bad(
            "a request header name is not a valid HTTP token (letters, digits and !#$%&'*+-.^_`|~)",
        ),
        Error::HeaderValue => Rejection::bad(
            "a request header value holds a byte HTTP does not allow (NUL or another control character)",
        ),
        Error::Token if !method_seen => {
            Rejection::bad("the request method is not a valid HTTP token; send e.g. GET or POST")
        }
        Error::Token => Rejection::bad(
            "the request target is not a valid URI; send a path such as /licenses?size=10",
        ),
        _ => Rejection::bad("the request line is malformed; send 'METHOD /path HTTP/1.1' and CRLF"),
    }
}

/// Whether the request line is well formed but for its version (`PRI * HTTP/2.0`).
fn names_another_version(buf: &[u8]) -> bool {
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    let parts: Vec<&[u8]> = line.trim_ascii().split(|b| *b == b' ').collect();
    matches!(parts.as_slice(), [_, _, version] if version.starts_with(b"HTTP/"))
}

/// A whole number of ASCII digits (no sign, no spaces), as hyper reads `Content-Length`.
fn digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, b| match b {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
}

/// At most 40 bytes of a client's header value, escaped, to quote back in a message.
fn shown(value: &[u8]) -> String {
    let head = &value[..value.len().min(40)];
    String::from_utf8_lossy(head).escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u64 = 4096;

    fn run(head: &str) -> Result<Option<Accepted>, Rejection> {
        check(head.as_bytes(), LIMIT, "too large")
    }

    fn refused(head: &str) -> Rejection {
        run(head).expect_err(head)
    }

    #[test]
    fn accepted_heads_tell_their_framing() {
        let head = "POST /usage HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n{...";
        let accepted = run(head).unwrap().unwrap();
        assert_eq!(accepted.len, head.len() - 4);
        assert_eq!(accepted.framing, Framing::Length(20));
        let get = run("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert_eq!(get.framing, Framing::Length(0));
        let chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n";
        assert_eq!(run(chunked).unwrap().unwrap().framing, Framing::Chunked);
        let same_twice = "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3, 3\r\n\r\n";
        assert_eq!(
            run(same_twice).unwrap().unwrap().framing,
            Framing::Length(3)
        );
        assert_eq!(run("GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
    }

    #[test]
    fn every_refusal_has_the_status_hyper_would_send_and_says_what_to_fix() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(
            refused(&big).status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let complete_big = format!("{big}\r\n");
        assert_eq!(
            refused(&complete_big).status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(101));
        assert!(
            refused(&many)
                .message
                .contains("more than 100 header fields")
        );
        let nul = refused("GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n");
        assert_eq!(nul.status, StatusCode::BAD_REQUEST);
        assert!(nul.message.contains("NUL"), "{}", nul.message);
        for (head, expected) in [
            ("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "not '-1'"),
            ("POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", "not '1x'"),
            (
                "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
                "whole number",
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                "whole number",
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n",
                "different values",
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "not both",
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                "end with chunked",
            ),
            (
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                "needs HTTP/1.1",
            ),
            ("GET /a b HTTP/1.1\r\n\r\n", "request line"),
            ("G(T / HTTP/1.1\r\n\r\n", "method"),
            ("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", "header name"),
        ] {
            let rejection = refused(head);
            assert_eq!(rejection.status, StatusCode::BAD_REQUEST, "{head:?}");
            assert!(
                rejection.message.contains(expected),
                "{head:?}: {}",
                rejection.message
            );
        }
        let h2c = refused("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert_eq!(h2c.status, StatusCode::HTTP_VERSION_NOT_SUPPORTED);
    }

    #[test]
    fn a_declared_body_over_the_limit_is_refused_from_the_head_alone() {
        let over = format!(
            "POST /usage HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            LIMIT + 1
        );
        assert_eq!(
            refused(&over),
            Rejection::new(StatusCode::PAYLOAD_TOO_LARGE, "too large")
        );
        let at = format!("POST /usage HTTP/1.1\r\nContent-Length: {LIMIT}\r\n\r\n");
        assert_eq!(run(&at).unwrap().unwrap().framing, Framing::Length(LIMIT));
    }
}
