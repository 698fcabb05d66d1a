//! Closing cluster connections that carry no gRPC call.
//!
//! hyper's HTTP/2 server waits for the client's preface and its next request forever, and its
//! keepalive pings are answered by any HTTP/2 client library, so neither bounds a connection
//! that an anonymous client opens and then leaves alone. Here every connection counts the
//! calls in progress on it ([`Activity`], fed by [`TrackCallsLayer`] around the gRPC
//! services: a call lasts until its response body is dropped, so a `Sync` stream counts for
//! its whole life), and the connection's read half ([`IdleDeadline`], polled from
//! `TlsConnection::poll_read`) fails once no call has been in progress for too long: the
//! first-call deadline after the handshake, the idle timeout after that.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{Body, Service};

use super::tls::PeerInfo;

/// `idle_since` before the first call.
const NEVER: u64 = u64::MAX;

/// The calls in progress on one connection.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    in_progress: AtomicUsize,
    /// Milliseconds after `epoch` when the last call ended ([`NEVER`] before the first one).
    idle_since: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            in_progress: AtomicUsize::new(0),
            idle_since: AtomicU64::new(NEVER),
        })
    }

    /// Marks a call as started; it ends when the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InProgress {
        self.in_progress.fetch_add(1, Ordering::AcqRel);
        InProgress(self.clone())
    }

    /// When the connection becomes idle for good, or `None` while a call is in progress.
    fn deadline(&self, first_call: Duration, idle: Duration) -> Option<Instant> {
        if self.in_progress.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(match self.idle_since.load(Ordering::Acquire) {
            NEVER => self.epoch + first_call,
            ms => self.epoch + Duration::from_millis(ms) + idle,
        })
    }
}

/// One call in progress.
pub struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        let activity = &self.0;
        let since = u64::try_from(activity.epoch.elapsed().as_millis()).unwrap_or(NEVER - 1);
        activity.idle_since.store(since, Ordering::Release);
        activity.in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The timer of one connection.
pub struct IdleDeadline {
    activity: Arc<Activity>,
    first_call: Duration,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl IdleDeadline {
    pub fn new(activity: Arc<Activity>, first_call: Duration, idle: Duration) -> Self {
        let sleep = Box::pin(tokio::time::sleep_until(activity.epoch + first_call));
        Self {
            activity,
            first_call,
            idle,
            sleep,
        }
    }

    /// `Ready` with the error to fail the connection with once it has been idle too long;
    /// otherwise `Pending`, with `cx` woken at the next moment that may be the case.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            let next = match self.activity.deadline(self.first_call, self.idle) {
                Some(deadline) if deadline <= now => {
                    return Poll::Ready(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no gRPC call on the cluster connection within its deadline",
                    ));
                }
                Some(deadline) => deadline,
                // A call is in progress: look again when it could have ended long enough ago.
                None => now + self.idle,
            };
            self.sleep.as_mut().reset(next);
        }
    }
}

/// Counts the calls on each connection (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackCallsLayer;

impl<S> tower::Layer<S> for TrackCallsLayer {
    type Service = TrackCalls<S>;

    fn layer(&self, inner: S) -> TrackCalls<S> {
        TrackCalls { inner }
    }
}

#[derive(Debug, Clone)]
pub struct TrackCalls<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TrackCalls<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<Tracked<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let call = request
            .extensions()
            .get::<PeerInfo>()
            .map(|peer| peer.activity.begin());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Tracked { body, _call: call }))
        })
    }
}

/// A response body that keeps its call counted until it is dropped.
pub struct Tracked<B> {
    body: B,
    _call: Option<InProgress>,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    async fn expired(deadline: &mut IdleDeadline) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(deadline.poll_expired(cx).is_ready())).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_first_call_expires_after_the_first_call_deadline() {
        let mut deadline = IdleDeadline::new(Activity::new(), FIRST, IDLE);
        tokio::time::advance(FIRST - Duration::from_millis(1)).await;
        assert!(!expired(&mut deadline).await);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(expired(&mut deadline).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_in_progress_keeps_the_connection_then_the_idle_timeout_counts_from_its_end() {
        let activity = Activity::new();
        let mut deadline = IdleDeadline::new(activity.clone(), FIRST, IDLE);
        let call = activity.begin();
        tokio::time::advance(FIRST + IDLE * 3).await;
        assert!(!expired(&mut deadline).await);
        drop(call);
        tokio::time::advance(IDLE - Duration::from_millis(1)).await;
        assert!(!expired(&mut deadline).await);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(expired(&mut deadline).await);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_wakes_the_connection_task() {
        let mut deadline = IdleDeadline::new(Activity::new(), FIRST, IDLE);
        let error = std::future::poll_fn(|cx| deadline.poll_expired(cx)).await;
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
