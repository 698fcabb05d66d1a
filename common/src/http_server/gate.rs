//! The connection gate: the socket as hyper sees it, handing over only checked request heads
//! and holding every read and write to a deadline.
//!
//! hyper parses heads itself, but it answers bad ones with an empty body, and its one timer
//! (`header_read_timeout`) cannot tell a connection at rest from one trickling a head. So the
//! gate reads the socket first, checks each head with [`head::check`] and passes it on only
//! when whole and acceptable, then passes on exactly the body its `Content-Length` declares.
//!
//! - **Idle**: no request in progress and no byte of the next one for `idle_timeout`: hyper
//!   reads end-of-file and closes the connection.
//! - **Head**: from its first byte, a head must be complete within `header_read_timeout`
//!   (however slowly it trickles in), else it is answered 408.
//! - **Refused head**: hyper is handed a stand-in head instead, and the exchange layer answers
//!   it with the [`Rejection`] in JSON and closes (see `exchange`); after it, nothing more is
//!   read. The stand-in keeps hyper's order: it is answered after any earlier request.
//! - **Writes**: a client that takes nothing of a response for `idle_timeout` is dropped.
//! - **Chunked bodies** are passed through unparsed and the connection closes after that
//!   exchange (its answer says `Connection: close`); their time is bounded by the body timeout.
//! - **After a refusal**, the close lingers: what the client still sends is read and dropped
//!   for a moment, so its kernel does not reset the connection before it reads the answer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::HttpLimits;
use super::exchange::Connection;
use super::head::{self, Framing, Rejection};

/// What hyper is given in place of a refused head: a request the exchange layer answers
/// from the connection's record, never by routing.
const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n";

/// How long, and how much, a refused connection's further input is read and dropped.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests, or reading a head.
    Head,
    /// Passing on this many more body bytes.
    Body(u64),
    /// After a chunked head: everything is passed on as it comes.
    Through,
    /// A stand-in was handed over: nothing more is read.
    Refused,
    /// End of input for hyper.
    Closed,
}

/// What a connection reads and writes: a TCP socket, or a TLS session over one.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The socket, wrapped.
pub(super) struct Gate {
    io: Box<dyn Io>,
    limits: Arc<HttpLimits>,
    conn: Arc<Connection>,
    phase: Phase,
    /// Read from the socket, not yet checked or handed over.
    input: BytesMut,
    /// Checked, for hyper's next reads.
    ready: Bytes,
    /// When the head being read must be complete, from its first byte.
    head_deadline: Option<Instant>,
    /// When a connection at rest is closed.
    idle_deadline: Option<Instant>,
    read_timer: Pin<Box<Sleep>>,
    write_deadline: Option<Instant>,
    write_timer: Pin<Box<Sleep>>,
    /// Bytes dropped while lingering, and until when.
    lingered: usize,
    linger_until: Option<Instant>,
    /// The socket's write side is shut (hyper may poll `poll_shutdown` again while lingering).
    shut: bool,
}

impl Gate {
    pub(super) fn new(io: Box<dyn Io>, limits: Arc<HttpLimits>, conn: Arc<Connection>) -> Self {
        let now = Instant::now();
        Self {
            io,
            limits,
            conn,
            phase: Phase::Head,
            input: BytesMut::with_capacity(4096),
            ready: Bytes::new(),
            head_deadline: None,
            idle_deadline: None,
            read_timer: Box::pin(tokio::time::sleep_until(now)),
            write_deadline: None,
            write_timer: Box::pin(tokio::time::sleep_until(now)),
            lingered: 0,
            linger_until: None,
            shut: false,
        }
    }

    /// Reads more of the socket into `input`: `Ok(0)` at end of input.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut chunk = [0u8; 8192];
        let mut buf = ReadBuf::new(&mut chunk);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        self.input.extend_from_slice(buf.filled());
        Poll::Ready(Ok(buf.filled().len()))
    }

    /// Hands hyper a stand-in head for `rejection` and stops reading.
    fn refuse(&mut self, rejection: Rejection) {
        tracing::debug!(
            event = "http.rejected",
            status = rejection.status.as_u16(),
            reason = %rejection.message,
            "Refused a request head."
        );
        self.conn.refuse(rejection);
        self.ready = Bytes::from_static(STAND_IN);
        self.input.clear();
        self.phase = Phase::Refused;
    }

    /// Checks the head at the start of `input`; `false` when more bytes are needed.
    fn take_head(&mut self) -> bool {
        match head::check(
            &self.input,
            self.limits.max_body_bytes,
            &self.limits.body_too_large,
        ) {
            Ok(None) => false,
            Err(rejection) => {
                self.refuse(rejection);
                true
            }
            Ok(Some(accepted)) => {
                self.ready = self.input.split_to(accepted.len).freeze();
                self.conn.forwarded();
                self.head_deadline = None;
                self.phase = match accepted.framing {
                    Framing::Length(0) => Phase::Head,
                    Framing::Length(n) => Phase::Body(n),
                    Framing::Chunked => Phase::Through,
                };
                true
            }
        }
    }

    /// The deadline the read side waits on now, if any.
    fn read_deadline(&mut self) -> Option<Instant> {
        if self.phase != Phase::Head {
            return None;
        }
        if !self.input.is_empty() {
            self.idle_deadline = None;
            return Some(
                *self
                    .head_deadline
                    .get_or_insert_with(|| Instant::now() + self.limits.header_read_timeout),
            );
        }
        if self.conn.busy() {
            // A request is being answered: that is not rest.
            self.idle_deadline = None;
            return None;
        }
        Some(
            *self
                .idle_deadline
                .get_or_insert_with(|| Instant::now() + self.limits.idle_timeout),
        )
    }

    /// Waits on the read deadline; `true` once it has passed (and acted on it).
    fn poll_read_deadline(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.read_deadline() else {
            return false;
        };
        if self.read_timer.deadline() != deadline {
            self.read_timer.as_mut().reset(deadline);
        }
        if self.read_timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        if self.input.is_empty() {
            tracing::debug!(event = "http.idle_timeout", "Closed an idle connection.");
            self.phase = Phase::Closed;
        } else {
            let limit = self.limits.header_read_timeout;
            self.refuse(Rejection::new(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request head was not complete within {}; send the request line and headers at once",
                    super::human(limit)
                ),
            ));
        }
        true
    }

    /// Reads and drops what a refused client still sends, for a moment.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let until = *self
            .linger_until
            .get_or_insert_with(|| Instant::now() + LINGER);
        if self.read_timer.deadline() != until {
            self.read_timer.as_mut().reset(until);
        }
        while self.lingered < LINGER_BYTES {
            if self.read_timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            self.input.clear();
            match ready!(self.poll_fill(cx)) {
                Ok(0) | Err(_) => return Poll::Ready(()),
                Ok(n) => self.lingered += n,
            }
        }
        Poll::Ready(())
    }

    fn poll_write_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let deadline = *self
            .write_deadline
            .get_or_insert_with(|| Instant::now() + self.limits.idle_timeout);
        if self.write_timer.deadline() != deadline {
            self.write_timer.as_mut().reset(deadline);
        }
        if self.write_timer.as_mut().poll(cx).is_ready() {
            tracing::debug!(
                event = "http.write_timeout",
                "Dropped a connection whose client took no part of its answer."
            );
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing of the answer in time",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for Gate {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            let phase = this.phase;
            match phase {
                Phase::Closed => return Poll::Ready(Ok(())),
                // hyper closes after answering the stand-in; an end of input now would
                // make it drop that answer as if the client had left.
                Phase::Refused => return Poll::Pending,
                Phase::Through => {
                    if !this.input.is_empty() {
                        this.ready = this.input.split().freeze();
                        continue;
                    }
                    return Pin::new(&mut this.io).poll_read(cx, buf);
                }
                Phase::Body(left) if !this.input.is_empty() => {
                    let n = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(this.input.len());
                    this.ready = this.input.split_to(n).freeze();
                    let left = left - n as u64;
                    this.phase = if left == 0 {
                        Phase::Head
                    } else {
                        Phase::Body(left)
                    };
                    continue;
                }
                Phase::Head if !this.input.is_empty() && this.take_head() => continue,
                Phase::Head | Phase::Body(_) => {}
            }
            match this.poll_fill(cx) {
                Poll::Ready(Ok(0)) => {
                    this.phase = Phase::Closed;
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {
                    if this.poll_read_deadline(cx) {
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl AsyncWrite for Gate {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, data) {
            Poll::Ready(result) => {
                this.write_deadline = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                this.poll_write_deadline(cx)?;
                Poll::Pending
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Ready(result) => {
                this.write_deadline = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                this.poll_write_deadline(cx)?;
                Poll::Pending
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.shut {
            ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            this.shut = true;
        }
        if this.phase == Phase::Refused {
            ready!(this.poll_linger(cx));
        }
        Poll::Ready(Ok(()))
    }
}
