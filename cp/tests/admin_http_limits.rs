//! The Admin API's connections, bounded: over raw sockets against the whole control plane
//! (the test kit's, `server::run` on `127.0.0.1:0`) with `[admin]` timeouts under a second. Tests assert what a client sees (an
//! answer, a close), never how long it took; the guard only stops a hung server.

use std::net::SocketAddr;
use std::time::Duration;

use licsync_common::duration::HumanDuration;
use licsync_cp::config::AdminConfig;
use licsync_testkit::{ControlPlane, eventually_within};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GUARD: Duration = Duration::from_secs(20);

fn quick(max_connections: usize) -> AdminConfig {
    AdminConfig {
        header_read_timeout: HumanDuration(Duration::from_millis(700)),
        idle_timeout: HumanDuration(Duration::from_millis(700)),
        body_read_timeout: HumanDuration(Duration::from_millis(700)),
        max_connections,
        ..AdminConfig::default()
    }
}

/// The control plane with these `[admin]` settings.
async fn start(admin: AdminConfig) -> ControlPlane {
    ControlPlane::builder()
        .config(|c| {
            c.admin = AdminConfig {
                listen: c.admin.listen,
                ..admin
            }
        })
        .start()
        .await
}

fn addr(api: &ControlPlane) -> SocketAddr {
    api.config().admin.listen
}

/// Everything the server sends until it closes: the first answer's status and JSON body.
async fn until_closed(stream: &mut TcpStream) -> (u16, Value) {
    let mut all = Vec::new();
    tokio::time::timeout(GUARD, stream.read_to_end(&mut all))
        .await
        .expect("the server never closed the connection")
        .unwrap();
    let text = String::from_utf8_lossy(&all).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an answer");
    let status = head[9..12].parse().unwrap();
    let body = body.rsplit("\r\n\r\n").next().unwrap_or(body);
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, json)
}

async fn send(api: &ControlPlane, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr(api)).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

#[tokio::test]
async fn slow_or_unfinished_heads_and_idle_connections_are_closed() {
    let api = start(quick(64)).await;
    // Half a head.
    let mut stream = send(&api, b"GET /licenses HTTP/1.1\r\nHost: x\r\n").await;
    let (status, body) = until_closed(&mut stream).await;
    assert_eq!(status, 408);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("head was not complete")
    );

    // A header line every 150 ms: each in time, the head as a whole never.
    let stream = send(&api, b"GET /licenses HTTP/1.1\r\n").await;
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for i in 0..100 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            if writer
                .write_all(format!("X-{i}: a\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut all = Vec::new();
    tokio::time::timeout(GUARD, reader.read_to_end(&mut all))
        .await
        .expect("a trickled head was never cut off")
        .ok();
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 408"));
    trickle.abort();

    // Keep-alive: answered, then closed once idle.
    let mut stream = send(&api, b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (status, _) = until_closed(&mut stream).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_answered_413_at_once() {
    let mut admin = quick(64);
    // Far beyond the guard: the answer can only come from the head.
    admin.body_read_timeout = HumanDuration(Duration::from_secs(3600));
    let api = start(admin).await;
    let head = format!(
        "POST /licenses HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 99999999\r\n\r\n",
        api.admin_token()
    );
    let mut stream = send(&api, head.as_bytes()).await;
    let (status, body) = until_closed(&mut stream).await;
    assert_eq!(status, 413);
    assert_eq!(
        body,
        json!({"message": "Request body is larger than the limit of 1048576 bytes (1 MiB)"})
    );
}

#[tokio::test]
async fn protocol_errors_are_answered_in_json() {
    let api = start(quick(64)).await;
    let big = format!(
        "GET /licenses HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    for (request, expected, says) in [
        (big.as_bytes(), 431, "larger than 16384 bytes"),
        (
            b"POST /licenses HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n".as_slice(),
            400,
            "Content-Length",
        ),
        (
            b"GET /licenses HTTP/1.1\r\nX-A: a\0b\r\n\r\n".as_slice(),
            400,
            "NUL",
        ),
    ] {
        let mut stream = send(&api, request).await;
        let (status, body) = until_closed(&mut stream).await;
        assert_eq!(status, expected, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_and_service_resumes() {
    let mut admin = quick(3);
    admin.idle_timeout = HumanDuration(Duration::from_secs(3600));
    let api = start(admin).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(addr(&api)).await.unwrap());
    }
    for _ in 0..5 {
        let mut extra = TcpStream::connect(addr(&api)).await.unwrap();
        let (status, body) = until_closed(&mut extra).await;
        assert_eq!(status, 503);
        assert!(body["message"].as_str().unwrap().contains("3 connections"));
    }
    drop(held);
    // The slots come back as the server notices the closes.
    let http = reqwest::Client::new();
    let url = format!("{}/licenses", api.admin_url());
    eventually_within("the Admin API to serve again", GUARD, || async {
        let answer = http.get(&url).bearer_auth(api.admin_token()).send().await;
        answer
            .is_ok_and(|r| r.status() == StatusCode::OK)
            .then_some(())
    })
    .await;
}

/// The status listener (`/metrics`, no token) is served with the same `[admin]` limits: a
/// scraper is a client like any other.
#[tokio::test]
async fn the_status_listener_has_the_admin_limits() {
    let api = start(quick(64)).await;
    let mut stream = TcpStream::connect(api.config().status.listen)
        .await
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (status, body) = until_closed(&mut stream).await;
    assert_eq!(status, 408);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("head was not complete"),
        "{body}"
    );
}
