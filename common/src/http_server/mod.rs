//! The one HTTP/1.1 serving loop of both binaries: the control plane's Admin API and the
//! agent's local API (feature `http-server`).
//!
//! [`serve`] takes an already-bound listener, an axum [`Router`], the [`HttpLimits`] and a
//! shutdown token, and bounds every connection in number, size and time:
//!
//! - at most `max_connections` at once; one more is answered `503 {"message"}` and closed;
//! - a connection at rest (before its first request or between keep-alive requests) is
//!   closed after `idle_timeout`;
//! - each request head must arrive within `header_read_timeout` of its first byte, however
//!   slowly it trickles (`408`), and within 16 KiB and 100 fields (`431`);
//! - each request body must arrive within `body_read_timeout` of its head (`408`);
//! - a declared `Content-Length` over `max_body_bytes` is answered `413` at once, before any
//!   of the body is read, with the server's own message;
//! - every error of the protocol itself (`400`, `408`, `413`, `431`, `505`) is
//!   `{"message": "..."}`, like the routes' own errors;
//! - with [`HttpLimits::tls`], the TLS handshake must complete within `header_read_timeout`
//!   of the connection's accept, on the connection's own task (a slow handshake holds one
//!   connection slot, never the accept loop).
//!
//! # Layout
//! - [`head`]: the pure check of a request head (what hyper would refuse, and why).
//! - `gate`: the socket as hyper sees it: only checked heads, and the read deadlines.
//! - `exchange`: the service per request: refusals, the body deadline, routing.
//!
//! hyper's own `header_read_timeout` (with a Tokio timer) stays on as a backstop: it restarts
//! for every request on a keep-alive connection, but it starts when hyper begins to wait (so
//! it also counts rest) and closes without an answer; the gate's deadlines come first.
//! HTTP/2 is not served: neither API needs it, and its errors are not HTTP answers.
//! SIGTERM: on `shutdown` the listener is closed, idle connections close, requests in flight
//! are answered, and [`serve`] returns once every connection has ended.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::duration::HumanDuration;

mod exchange;
mod gate;
pub mod head;

pub use exchange::{BodyTimeout, json_error};

/// Default `header_read_timeout`: 10 s.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `idle_timeout`: 60 s (nginx keeps 75 s; gateways reuse well within it).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `body_read_timeout`: 30 s (a 1 MiB body at 35 KiB/s).
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `max_connections`: 512, well inside the usual 1024 open files.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// The bounds of one server.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_read_timeout: Duration,
    /// Connections served at once (at least 1).
    pub max_connections: usize,
    /// Largest declared `Content-Length`, answered `413` above.
    pub max_body_bytes: u64,
    /// The `413` message (each API words its body limit its own way).
    pub body_too_large: String,
    /// Serve HTTPS with this configuration; `None`: plain HTTP.
    pub tls: Option<ServerTls>,
}

/// A TLS server configuration for [`serve`].
#[derive(Clone)]
pub struct ServerTls(tokio_rustls::TlsAcceptor);

impl ServerTls {
    /// Serves with `config` (its ALPN list is set to `http/1.1`, the only protocol served).
    pub fn new(mut config: rustls::ServerConfig) -> Self {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

impl HttpLimits {
    /// The default timeouts and connection cap, with this body limit and message.
    pub fn new(max_body_bytes: u64, body_too_large: impl Into<String>) -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_body_bytes,
            body_too_large: body_too_large.into(),
            tls: None,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets every connection
/// finish (see the module documentation). Fails only if no connection can ever be accepted.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let capacity = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS) as u32;
    let limits = Arc::new(limits);
    let slots = Arc::new(Semaphore::new(capacity as usize));
    let mut full = false;
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error, &shutdown).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if !full {
                tracing::warn!(
                    event = "http.connection_limit",
                    limit = capacity,
                    peer.addr = %peer,
                    "Connection limit reached; refusing new connections until some close."
                );
            }
            full = true;
            // A TLS client cannot read a plain answer: closing says enough.
            if limits.tls.is_none() {
                refuse(&stream, capacity);
            }
            continue;
        };
        full = false;
        let span = tracing::debug_span!("http_connection", peer.addr = %peer);
        let served = connection(
            stream,
            peer,
            router.clone(),
            limits.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            served.instrument(span).await;
            drop(slot);
        });
    }
    drop(listener);
    // Every connection holds a slot until it ends: having them all back means all ended.
    let _all = slots.acquire_many(capacity).await;
    Ok(())
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Arc<HttpLimits>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let io: Box<dyn gate::Io> = match &limits.tls {
        None => Box::new(stream),
        Some(ServerTls(acceptor)) => {
            match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
                Ok(Ok(session)) => Box::new(session),
                Ok(Err(error)) => {
                    tracing::debug!(event = "http.tls_handshake_failed", peer.addr = %peer, %error, "TLS handshake failed.");
                    return;
                }
                Err(_) => {
                    tracing::debug!(event = "http.tls_handshake_failed", peer.addr = %peer, error = "timed out", "TLS handshake did not complete within header_read_timeout.");
                    return;
                }
            }
        }
    };
    let conn = Arc::new(exchange::Connection::default());
    let io = gate::Gate::new(io, limits.clone(), conn.clone());
    let backstop = limits.idle_timeout + limits.header_read_timeout + Duration::from_secs(1);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
        // Handlers and middleware see the client's address as axum's `ConnectInfo`
        // (refusals are logged with it).
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        exchange::exchange(conn.clone(), router.clone(), limits.clone(), request)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(backstop)
        .keep_alive(true);
    let served = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(served);
    let result = tokio::select! {
        result = served.as_mut() => result,
        () = shutdown.cancelled() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(peer.addr = %peer, %error, "HTTP connection ended with an error.");
    }
}

/// Answers a connection over the limit `503` and closes it, without waiting on it.
fn refuse(stream: &TcpStream, limit: u32) {
    let body = serde_json::json!({
        "message": format!("the server already has {limit} connections open, its limit; retry later or reuse a connection")
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // A fresh socket's send buffer is empty; if even this does not fit, closing says enough.
    let _ = stream.try_write(answer.as_bytes());
}

/// After a failed `accept`: per-connection errors are skipped; others (out of file
/// descriptors) are logged and retried after a pause, as axum does.
async fn accept_failed(error: &io::Error, shutdown: &CancellationToken) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "Cannot accept a connection; retrying in 1s.");
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
}

/// A duration as configured (`10s`, `1m`).
fn human(duration: Duration) -> String {
    HumanDuration(duration).to_string()
}

#[cfg(test)]
mod tests;
