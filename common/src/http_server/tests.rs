//! The serving loop against raw sockets on `127.0.0.1:0`, with timeouts of a second or less:
//! each test asserts what the client sees (an answer, a close), never how long it took; the
//! guard only keeps a broken server from hanging the test run.

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::{get, post};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::*;

/// Longer than any timeout here; reaching it fails the test.
const GUARD: Duration = Duration::from_secs(20);

fn limits() -> HttpLimits {
    let mut limits = HttpLimits::new(64, "the body is larger than 64 bytes");
    limits.header_read_timeout = Duration::from_millis(600);
    limits.idle_timeout = Duration::from_millis(600);
    limits.body_read_timeout = Duration::from_millis(600);
    limits.max_connections = 3;
    limits
}

struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<io::Result<()>>,
}

async fn start(limits: HttpLimits) -> Server {
    let router = Router::new()
        .route(
            "/",
            get(|| async { axum::Json(serde_json::json!({"ok": true})) }),
        )
        .route(
            "/echo",
            post(|body: axum::body::Body| async move {
                match axum::body::to_bytes(body, 1024).await {
                    Ok(bytes) => (StatusCode::OK, bytes).into_response(),
                    Err(error) => (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
                }
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve(listener, router, limits, stop.clone()));
    Server { addr, stop, task }
}

use axum::http::StatusCode;
use axum::response::IntoResponse;

/// One connection's read side, keeping what was read past an answer (pipelined answers may
/// arrive together).
struct Client<R> {
    io: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Client<R> {
    fn new(io: R) -> Self {
        Self {
            io,
            buf: Vec::new(),
        }
    }

    async fn fill(&mut self) -> Option<usize> {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(GUARD, self.io.read(&mut chunk))
            .await
            .expect("the server neither answered nor closed")
            .ok()?;
        self.buf.extend_from_slice(&chunk[..n]);
        Some(n)
    }

    /// Reads one answer: its status and body (by `content-length`); `None` on a close.
    async fn answer(&mut self) -> Option<(u16, Vec<u8>)> {
        let head_end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if self.fill().await? == 0 {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_lowercase();
        let status = head[9..12].parse().unwrap();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        while self.buf.len() < head_end + length {
            assert!(self.fill().await.unwrap() > 0, "the answer was cut short");
        }
        let rest = self.buf.split_off(head_end + length);
        let body = self.buf[head_end..].to_vec();
        self.buf = rest;
        Some((status, body))
    }

    /// Whether the server closes the connection (end of input or a reset) before the guard.
    async fn closed(&mut self) -> bool {
        loop {
            let mut chunk = [0u8; 1024];
            match tokio::time::timeout(GUARD, self.io.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }
}

fn message(body: &[u8]) -> String {
    let value: Value = serde_json::from_slice(body).unwrap_or_else(|_| {
        panic!("not JSON: {}", String::from_utf8_lossy(body));
    });
    value["message"].as_str().expect("a message").to_owned()
}

async fn send(addr: SocketAddr, bytes: &[u8]) -> Client<TcpStream> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    Client::new(stream)
}

#[tokio::test]
async fn an_unfinished_head_is_answered_408_and_closed() {
    let server = start(limits()).await;
    let mut stream = send(server.addr, b"GET / HTTP/1.1\r\nHost: x\r\n").await;
    let (status, body) = stream.answer().await.expect("an answer");
    assert_eq!(status, 408);
    assert!(message(&body).contains("request head was not complete"));
    assert!(stream.closed().await);
}

#[tokio::test]
async fn a_head_trickled_one_line_at_a_time_is_still_cut_off() {
    let server = start(limits()).await;
    let stream = send(server.addr, b"GET / HTTP/1.1\r\n").await;
    let (reader, mut writer) = stream.io.into_split();
    let mut reader = Client::new(reader);
    // Each line comes well within the timeout; the head as a whole never does.
    let trickle = tokio::spawn(async move {
        for i in 0..100 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            if writer
                .write_all(format!("X-{i}: a\r\n").as_bytes())
                .await
                .is_err()
            {
                return true;
            }
        }
        false
    });
    let (status, _) = reader.answer().await.expect("an answer");
    assert_eq!(status, 408);
    assert!(reader.closed().await);
    trickle.abort();
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_between_requests() {
    let server = start(limits()).await;
    let mut stream = send(server.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(stream.answer().await.unwrap().0, 200);
    stream
        .io
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(stream.answer().await.unwrap().0, 200, "keep-alive works");
    assert!(stream.closed().await);
    // A connection that never sends anything is closed too.
    let mut silent = Client::new(TcpStream::connect(server.addr).await.unwrap());
    assert!(silent.closed().await);
}

#[tokio::test]
async fn bodies_are_framed_by_content_length_across_pipelined_requests() {
    let server = start(limits()).await;
    let mut stream = send(
        server.addr,
        b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloPOST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n",
    )
    .await;
    assert_eq!(stream.answer().await.unwrap(), (200, b"hello".to_vec()));
    assert_eq!(stream.answer().await.unwrap(), (200, b"abc".to_vec()));
    assert_eq!(stream.answer().await.unwrap().0, 200);
    // A chunked body is read, answered, and the connection closes after it.
    stream
        .io
        .write_all(
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    assert_eq!(stream.answer().await.unwrap(), (200, b"abc".to_vec()));
    assert!(stream.closed().await);
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_answered_413_before_it_is_sent() {
    let mut limits = limits();
    // Far beyond the guard: an answer can only come from the head.
    limits.body_read_timeout = Duration::from_secs(3600);
    let server = start(limits).await;
    let mut stream = send(
        server.addr,
        b"POST /echo HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
    )
    .await;
    let (status, body) = stream.answer().await.unwrap();
    assert_eq!(status, 413);
    assert_eq!(message(&body), "the body is larger than 64 bytes");
    assert!(stream.closed().await);
}

#[tokio::test]
async fn a_body_that_never_completes_is_answered_408() {
    let server = start(limits()).await;
    let mut stream = send(
        server.addr,
        b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
    )
    .await;
    let (status, body) = stream.answer().await.unwrap();
    assert_eq!(status, 408);
    assert!(message(&body).contains("request body was not complete"));
    assert!(stream.closed().await);
}

#[tokio::test]
async fn protocol_errors_are_json_with_hyper_s_status() {
    let server = start(limits()).await;
    let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
    for (request, expected) in [
        (big.as_bytes(), 431),
        (
            b"POST /echo HTTP/1.1\r\nContent-Length: abc\r\n\r\n".as_slice(),
            400,
        ),
        (b"GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n".as_slice(), 400),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".as_slice(), 505),
    ] {
        let mut stream = send(server.addr, request).await;
        let (status, body) = stream.answer().await.expect("an answer");
        assert_eq!(status, expected);
        assert!(!message(&body).is_empty());
        assert!(stream.closed().await);
    }
    // An error after a good request on the same connection comes after its answer.
    let mut stream = send(
        server.addr,
        b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
    )
    .await;
    assert_eq!(stream.answer().await.unwrap().0, 200);
    assert_eq!(stream.answer().await.unwrap().0, 400);
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_and_the_server_recovers() {
    let mut limits = limits();
    limits.idle_timeout = Duration::from_secs(3600);
    limits.header_read_timeout = Duration::from_secs(3600);
    let server = start(limits).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = send(server.addr, b"GET / HTTP/1.1\r\n\r\n").await;
        assert_eq!(stream.answer().await.unwrap().0, 200);
        held.push(stream);
    }
    let mut extra = Client::new(TcpStream::connect(server.addr).await.unwrap());
    let (status, body) = extra.answer().await.expect("a 503");
    assert_eq!(status, 503);
    assert!(message(&body).contains("3 connections"));
    assert!(extra.closed().await);
    drop(held);
    // The slots come back as the server notices the closes.
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let mut stream = send(server.addr, b"GET / HTTP/1.1\r\n\r\n").await;
        if stream.answer().await.map(|a| a.0) == Some(200) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_returns() {
    let mut limits = limits();
    limits.idle_timeout = Duration::from_secs(3600);
    let server = start(limits).await;
    let mut stream = send(server.addr, b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(stream.answer().await.unwrap().0, 200);
    server.stop.cancel();
    assert!(stream.closed().await);
    tokio::time::timeout(GUARD, server.task)
        .await
        .expect("serve returned")
        .unwrap()
        .unwrap();
}
