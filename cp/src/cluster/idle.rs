//! Closing cluster connections that carry no gRPC call, or only short calls for too long.
//!
//! hyper's HTTP/2 server waits for the client's preface and its next request forever, and its
//! keepalive pings are answered by any HTTP/2 client library, so neither bounds a connection
//! that an anonymous client opens and then leaves alone. Here every connection counts the
//! calls in progress on it ([`Activity`], fed by [`TrackCallsLayer`] around the gRPC
//! services: a call lasts until its response body is dropped, so a `Sync` stream counts for
//! its whole life), and the connection's read half ([`IdleDeadline`], polled from
//! `TlsConnection::poll_read` through [`read_or_expire`]) fails once no call has been in
//! progress for too long: the first-call deadline after the handshake, the idle timeout after
//! that. The same timer fails it when the peer has gone silent past its keepalive
//! ([`liveness`](super::liveness)); the deadline is looked at only after a read found nothing
//! waiting, so bytes that arrived while the node was busy always count.
//!
//! Only a `Sync` stream (which needs a verified data-plane certificate) may last: every other
//! call (registration, which is anonymous, health, reflection, usage reports, rotation) is
//! short by nature, so a connection that has had such calls in progress, and no `Sync`, for
//! longer than [`SHORT_CALL_LIMIT`] is closed. That bounds a registration whose request body
//! trickles in and a reflection stream left open, which would otherwise hold the connection
//! and its descriptor for as long as the peer likes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{Body, Service};

use super::liveness::{Keepalive, Liveness};
use super::tls::PeerInfo;

/// `idle_since` before the first call.
const NEVER: u64 = u64::MAX;

/// How long a connection may have only short calls (anything but `Sync`) in progress: far
/// more than a registration or a health check takes, far less than a held resource matters.
pub const SHORT_CALL_LIMIT: Duration = Duration::from_secs(30);

/// The path of the one call that may last (see the module docs).
const SYNC_PATH: &str = "/licsync.v1.LicenseSync/Sync";

/// Whether a call may last for the life of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// A `Sync` stream.
    Stream,
    /// Any other call: bounded by [`SHORT_CALL_LIMIT`].
    Short,
}

impl CallKind {
    fn of_path(path: &str) -> Self {
        if path == SYNC_PATH {
            Self::Stream
        } else {
            Self::Short
        }
    }
}

/// The calls in progress on one connection.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    streams: AtomicUsize,
    short_calls: AtomicUsize,
    /// Milliseconds after `epoch` since when short calls have been in progress without a pause
    /// (meaningful while `short_calls > 0`).
    busy_since: AtomicU64,
    /// Milliseconds after `epoch` when the last call ended ([`NEVER`] before the first one).
    idle_since: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            streams: AtomicUsize::new(0),
            short_calls: AtomicUsize::new(0),
            busy_since: AtomicU64::new(0),
            idle_since: AtomicU64::new(NEVER),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(NEVER - 1)
    }

    /// Marks a call as started; it ends when the guard is dropped.
    pub fn begin(self: &Arc<Self>, kind: CallKind) -> InProgress {
        match kind {
            CallKind::Stream => {
                self.streams.fetch_add(1, Ordering::AcqRel);
            }
            CallKind::Short => {
                if self.short_calls.fetch_add(1, Ordering::AcqRel) == 0 {
                    self.busy_since.store(self.now_ms(), Ordering::Release);
                }
            }
        }
        InProgress {
            activity: self.clone(),
            kind,
        }
    }

    /// When the connection must close, or `None` while a `Sync` stream is in progress.
    fn deadline(&self, first_call: Duration, idle: Duration) -> Option<Instant> {
        if self.streams.load(Ordering::Acquire) > 0 {
            return None;
        }
        if self.short_calls.load(Ordering::Acquire) > 0 {
            let busy_since = self.busy_since.load(Ordering::Acquire);
            return Some(self.epoch + Duration::from_millis(busy_since) + SHORT_CALL_LIMIT);
        }
        Some(match self.idle_since.load(Ordering::Acquire) {
            NEVER => self.epoch + first_call,
            ms => self.epoch + Duration::from_millis(ms) + idle,
        })
    }
}

/// One call in progress.
pub struct InProgress {
    activity: Arc<Activity>,
    kind: CallKind,
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let activity = &self.activity;
        activity
            .idle_since
            .store(activity.now_ms(), Ordering::Release);
        let counter = match self.kind {
            CallKind::Stream => &activity.streams,
            CallKind::Short => &activity.short_calls,
        };
        counter.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The timer of one connection: its idle deadline and, with keepalive on, whether its peer
/// is still alive ([`Liveness`]). One timer serves both, so a connection pays for one.
pub struct IdleDeadline {
    activity: Arc<Activity>,
    first_call: Duration,
    idle: Duration,
    liveness: Option<Liveness>,
    sleep: Pin<Box<Sleep>>,
}

impl IdleDeadline {
    pub fn new(
        activity: Arc<Activity>,
        first_call: Duration,
        idle: Duration,
        keepalive: Option<Keepalive>,
    ) -> Self {
        let sleep = Box::pin(tokio::time::sleep_until(activity.epoch + first_call));
        let liveness = keepalive.map(|keepalive| Liveness::new(keepalive, activity.epoch));
        Self {
            activity,
            first_call,
            idle,
            liveness,
            sleep,
        }
    }

    /// Bytes arrived from the peer: it is alive.
    pub fn heard(&mut self) {
        if let Some(liveness) = &mut self.liveness {
            liveness.heard(Instant::now());
        }
    }

    /// Bytes went to the peer: it has the keepalive timeout from now to answer.
    pub fn sent(&mut self) {
        if let Some(liveness) = &mut self.liveness {
            liveness.sent(Instant::now());
        }
    }

    /// `Ready` with the error to fail the connection with once it has been idle too long or
    /// its peer silent too long; otherwise `Pending`, with `cx` woken at the next moment that
    /// may be the case. Call it only after a read found nothing waiting (see
    /// [`liveness`](super::liveness)).
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Expired> {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            let idle = match self.activity.deadline(self.first_call, self.idle) {
                Some(deadline) if deadline <= now => return Poll::Ready(Expired::Idle),
                Some(deadline) => deadline,
                // A call is in progress: look again when it could have ended long enough ago.
                None => now + self.idle,
            };
            let next = match &self.liveness {
                Some(liveness) if liveness.deadline() <= now => {
                    return Poll::Ready(Expired::Silent(liveness.silent_for(now)));
                }
                Some(liveness) => idle.min(liveness.deadline()),
                None => idle,
            };
            self.sleep.as_mut().reset(next);
        }
    }
}

/// Reads from `stream` and only when nothing is waiting looks at `deadline`: bytes that
/// arrived while this task was not running are never held against the peer. `expired` hears
/// why the read fails, for the log.
pub fn read_or_expire<S: AsyncRead>(
    stream: Pin<&mut S>,
    deadline: &mut IdleDeadline,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
    expired: impl FnOnce(Expired),
) -> Poll<io::Result<()>> {
    let before = buf.filled().len();
    if let Poll::Ready(result) = stream.poll_read(cx, buf) {
        if result.is_ok() && buf.filled().len() > before {
            deadline.heard();
        }
        return Poll::Ready(result);
    }
    match deadline.poll_expired(cx) {
        Poll::Ready(why) => {
            expired(why);
            Poll::Ready(Err(why.into_error()))
        }
        Poll::Pending => Poll::Pending,
    }
}

/// Why a connection's deadline closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// No gRPC call in time, or only short calls for too long.
    Idle,
    /// Nothing arrived from the peer for this long, pings included.
    Silent(Duration),
}

impl Expired {
    /// The error the connection's read fails with.
    pub fn into_error(self) -> io::Error {
        let message = match self {
            Self::Idle => "no gRPC call on the cluster connection within its deadline, or only \
                           short calls for longer than they may take"
                .to_owned(),
            Self::Silent(for_) => format!(
                "the peer sent nothing for {} s and did not answer the keepalive ping within \
                 cluster.keepalive_timeout",
                for_.as_secs()
            ),
        };
        io::Error::new(io::ErrorKind::TimedOut, message)
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
        let kind = CallKind::of_path(request.uri().path());
        let call = request
            .extensions()
            .get::<PeerInfo>()
            .map(|peer| peer.activity.begin(kind));
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
        let mut deadline = IdleDeadline::new(Activity::new(), FIRST, IDLE, None);
        tokio::time::advance(FIRST - Duration::from_millis(1)).await;
        assert!(!expired(&mut deadline).await);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(expired(&mut deadline).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_in_progress_keeps_the_connection_then_the_idle_timeout_counts_from_its_end() {
        let activity = Activity::new();
        let mut deadline = IdleDeadline::new(activity.clone(), FIRST, IDLE, None);
        let call = activity.begin(CallKind::Stream);
        tokio::time::advance(FIRST + IDLE * 3).await;
        assert!(!expired(&mut deadline).await);
        drop(call);
        tokio::time::advance(IDLE - Duration::from_millis(1)).await;
        assert!(!expired(&mut deadline).await);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(expired(&mut deadline).await);
    }

    #[tokio::test(start_paused = true)]
    async fn short_calls_hold_the_connection_only_for_the_short_call_limit() {
        let activity = Activity::new();
        let mut deadline = IdleDeadline::new(activity.clone(), FIRST, IDLE, None);
        tokio::time::advance(Duration::from_secs(1)).await;
        let first = activity.begin(CallKind::Short);
        tokio::time::advance(SHORT_CALL_LIMIT / 2).await;
        // A second call overlapping the first does not restart the clock.
        let second = activity.begin(CallKind::Short);
        drop(first);
        tokio::time::advance(SHORT_CALL_LIMIT / 2 - Duration::from_millis(1)).await;
        assert!(!expired(&mut deadline).await);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(expired(&mut deadline).await);
        drop(second);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_call_that_ends_in_time_leaves_the_idle_timeout_in_charge() {
        let activity = Activity::new();
        let mut deadline = IdleDeadline::new(activity.clone(), FIRST, IDLE, None);
        let call = activity.begin(CallKind::Short);
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(call);
        tokio::time::advance(IDLE - Duration::from_millis(1)).await;
        assert!(!expired(&mut deadline).await);
        // The next short call starts its own limit.
        let call = activity.begin(CallKind::Short);
        tokio::time::advance(SHORT_CALL_LIMIT - Duration::from_millis(1)).await;
        assert!(!expired(&mut deadline).await);
        // A Sync stream on the same connection keeps it however long the short call takes.
        let stream = activity.begin(CallKind::Stream);
        tokio::time::advance(SHORT_CALL_LIMIT * 4).await;
        assert!(!expired(&mut deadline).await);
        drop((stream, call));
    }

    #[test]
    fn only_sync_is_a_lasting_call() {
        assert_eq!(CallKind::of_path(SYNC_PATH), CallKind::Stream);
        for path in [
            "/licsync.v1.Registration/Register",
            "/licsync.v1.LicenseSync/ReportUsage",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/licsync.v1.LicenseSync/Sync/",
        ] {
            assert_eq!(CallKind::of_path(path), CallKind::Short, "{path}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_wakes_the_connection_task() {
        let mut deadline = IdleDeadline::new(Activity::new(), FIRST, IDLE, None);
        let expired = std::future::poll_fn(|cx| deadline.poll_expired(cx)).await;
        assert_eq!(expired, Expired::Idle);
        assert_eq!(expired.into_error().kind(), io::ErrorKind::TimedOut);
    }

    /// One poll of [`read_or_expire`], as the connection's task makes when it is woken: what
    /// was read, the failure, or `Pending`.
    async fn poll_once(
        near: &mut tokio::io::DuplexStream,
        deadline: &mut IdleDeadline,
    ) -> Poll<io::Result<Vec<u8>>> {
        let mut buf = [0u8; 16];
        let mut read = ReadBuf::new(&mut buf);
        let polled = std::future::poll_fn(|cx| {
            Poll::Ready(read_or_expire(
                Pin::new(&mut *near),
                deadline,
                cx,
                &mut read,
                drop,
            ))
        })
        .await;
        polled.map(|result| result.map(|()| read.filled().to_vec()))
    }

    const KEEPALIVE: Keepalive = Keepalive {
        interval: Duration::from_secs(20),
        timeout: Duration::from_secs(10),
    };

    #[tokio::test(start_paused = true)]
    async fn a_stream_whose_peer_falls_silent_expires_after_the_keepalive_interval_and_timeout() {
        let activity = Activity::new();
        let mut deadline = IdleDeadline::new(activity.clone(), FIRST, IDLE, Some(KEEPALIVE));
        let _stream = activity.begin(CallKind::Stream);
        tokio::time::advance(Duration::from_secs(25)).await;
        deadline.heard();
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(!expired(&mut deadline).await);
        tokio::time::advance(Duration::from_secs(1)).await;
        let expired = std::future::poll_fn(|cx| deadline.poll_expired(cx)).await;
        assert_eq!(expired, Expired::Silent(Duration::from_secs(30)));
        assert!(
            expired.into_error().to_string().contains("keepalive"),
            "{expired:?}"
        );
    }

    /// The flaw this guards against (see [`super::super::liveness`]): the task runs long after
    /// the deadline, with the peer's answer waiting unread. It is read, not held against it.
    #[tokio::test(start_paused = true)]
    async fn bytes_waiting_when_a_late_task_runs_are_read_before_the_deadline_is_looked_at() {
        use tokio::io::AsyncWriteExt;
        let activity = Activity::new();
        let mut deadline = IdleDeadline::new(activity.clone(), FIRST, IDLE, Some(KEEPALIVE));
        let _stream = activity.begin(CallKind::Stream);
        let (mut near, mut far) = tokio::io::duplex(64);
        tokio::time::advance(Duration::from_secs(25)).await;
        far.write_all(b"pong").await.unwrap();
        // Nobody polled the connection for another 40 s: long past the deadline.
        tokio::time::advance(Duration::from_secs(40)).await;

        let first = poll_once(&mut near, &mut deadline).await;
        assert!(
            matches!(first, Poll::Ready(Ok(ref read)) if read == b"pong"),
            "{first:?}"
        );

        // Heard just now: a full interval and timeout to go.
        let next = poll_once(&mut near, &mut deadline).await;
        assert!(next.is_pending(), "{next:?}");
        drop(far);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_fails_the_read_and_an_answered_ping_keeps_it() {
        use tokio::io::AsyncWriteExt;
        let activity = Activity::new();
        let mut deadline = IdleDeadline::new(activity.clone(), FIRST, IDLE, Some(KEEPALIVE));
        let _stream = activity.begin(CallKind::Stream);
        let (mut near, mut far) = tokio::io::duplex(64);
        let mut buf = [0u8; 16];

        // The ping goes out at 20 s and is answered at 27 s.
        tokio::time::advance(Duration::from_secs(20)).await;
        deadline.sent();
        tokio::time::advance(Duration::from_secs(7)).await;
        far.write_all(b"pong").await.unwrap();
        let answered = poll_once(&mut near, &mut deadline).await;
        assert!(
            matches!(answered, Poll::Ready(Ok(ref read)) if read == b"pong"),
            "{answered:?}"
        );

        // The next ping at 47 s is never answered: the read fails at 57 s.
        tokio::time::advance(Duration::from_secs(20)).await;
        deadline.sent();
        let mut read = tokio::io::ReadBuf::new(&mut buf);
        let started = Instant::now();
        let failed = std::future::poll_fn(|cx| {
            read_or_expire(Pin::new(&mut near), &mut deadline, cx, &mut read, drop)
        })
        .await;
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        let error = failed.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        drop(far);
    }
}
