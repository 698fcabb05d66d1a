//! One request and its answer, as hyper hands them over: routing, the body timeout, and the
//! JSON answers for what the gate refused.
//!
//! hyper calls the service once per head the gate handed over, in order, so the n-th call is
//! the n-th head: the gate records a refusal under its head's number and the call with that
//! number answers it, without routing. A client cannot forge one: the record is keyed by
//! position on this connection, not by anything in the request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::header::{CONNECTION, TRANSFER_ENCODING};
use axum::http::{HeaderValue, Request, Response, StatusCode};
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use super::HttpLimits;
use super::head::Rejection;

/// What the gate and the service share about one connection.
#[derive(Debug, Default)]
pub(super) struct Connection {
    /// Heads handed to hyper (stand-ins included).
    forwarded: AtomicU64,
    /// Answers finished (their body sent or dropped).
    answered: AtomicU64,
    /// Service calls so far.
    calls: AtomicU64,
    /// The refused head's number and why.
    refusal: Mutex<Option<(u64, Rejection)>>,
}

impl Connection {
    /// A checked head was handed to hyper.
    pub(super) fn forwarded(&self) {
        self.forwarded.fetch_add(1, Ordering::SeqCst);
    }

    /// A stand-in for `rejection` is being handed to hyper.
    pub(super) fn refuse(&self, rejection: Rejection) {
        let index = self.forwarded.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut slot) = self.refusal.lock() {
            *slot = Some((index, rejection));
        }
    }

    /// Whether a request handed over has not been answered yet.
    pub(super) fn busy(&self) -> bool {
        self.forwarded.load(Ordering::SeqCst) > self.answered.load(Ordering::SeqCst)
    }

    fn refusal_for(&self, index: u64) -> Option<Rejection> {
        let mut slot = self.refusal.lock().ok()?;
        match slot.take() {
            Some((at, rejection)) if at == index => Some(rejection),
            other => {
                *slot = other;
                None
            }
        }
    }
}

/// `{"message": message}` with `status`, as every licsync HTTP error.
pub fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    (
        status,
        axum::Json(serde_json::json!({ "message": message })),
    )
        .into_response()
}

/// Answers one request on `conn`.
pub(super) async fn exchange(
    conn: Arc<Connection>,
    router: Router,
    limits: Arc<HttpLimits>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let index = conn.calls.fetch_add(1, Ordering::SeqCst);
    let done = Answered(conn.clone());
    if let Some(rejection) = conn.refusal_for(index) {
        return Ok(finish(
            json_error(rejection.status, &rejection.message),
            done,
            true,
        ));
    }
    // The gate does not follow chunked framing, so the connection ends with this exchange.
    let chunked = request.headers().contains_key(TRANSFER_ENCODING);
    let expired = Arc::new(AtomicBool::new(false));
    let limit = limits.body_read_timeout;
    let request = request.map(|body| {
        Body::new(TimedBody {
            inner: body,
            deadline: Instant::now() + limit,
            limit,
            timer: None,
            expired: expired.clone(),
        })
    });
    let response = match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if expired.load(Ordering::SeqCst) {
        let message = format!(
            "the request body was not complete within {}; send the whole body at once",
            super::human(limit)
        );
        return Ok(finish(
            json_error(StatusCode::REQUEST_TIMEOUT, &message),
            done,
            true,
        ));
    }
    Ok(finish(response, done, chunked))
}

fn finish(mut response: Response<Body>, done: Answered, close: bool) -> Response<Body> {
    if close {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response.map(|body| Body::new(Tracked { body, _done: done }))
}

/// Counts an answer as finished when hyper drops its body.
struct Answered(Arc<Connection>);

impl Drop for Answered {
    fn drop(&mut self) {
        self.0.answered.fetch_add(1, Ordering::SeqCst);
    }
}

/// An answer's body, carrying its [`Answered`].
struct Tracked {
    body: Body,
    _done: Answered,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The body did not arrive within `body_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not complete within {0:?}")]
pub struct BodyTimeout(Duration);

/// A request body that fails once its deadline has passed while a handler waits for it.
struct TimedBody {
    inner: Incoming,
    deadline: Instant,
    limit: Duration,
    /// Made the first time the handler has to wait, so a request without a body costs none.
    timer: Option<Pin<Box<Sleep>>>,
    expired: Arc<AtomicBool>,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.expired.store(true, Ordering::SeqCst);
        Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
