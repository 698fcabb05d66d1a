//! The agent's local API connections, bounded: raw sockets against a whole in-process agent
//! (offline registration) with `[local]` timeouts under a second. Tests assert what a client
//! sees (an answer, a close), never how long it took; the guard only stops a hung agent.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use licsync_common::duration::HumanDuration;
use licsync_dp::config::DpConfig;
use serde_json::{Value, json};
use support::agent::Agent;
use support::usage_agent::offline_registration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GUARD: Duration = Duration::from_secs(20);

async fn agent(dir: &std::path::Path, max_connections: usize, body_timeout: Duration) -> Agent {
    offline_registration(&dir.join("registration.yaml"));
    let mut config = DpConfig {
        data_dir: dir.join("data"),
        registration_file: dir.join("registration.yaml"),
        ..DpConfig::default()
    };
    config.license.output_path = Some(dir.join("license.json"));
    config.local.header_read_timeout = HumanDuration(Duration::from_millis(700));
    config.local.idle_timeout = HumanDuration(Duration::from_millis(700));
    config.local.body_read_timeout = HumanDuration(body_timeout);
    config.local.max_connections = max_connections;
    Agent::start(config).await
}

fn addr(agent: &Agent) -> SocketAddr {
    agent.local
}

/// Everything the agent sends until it closes: the first answer's status and JSON body.
async fn until_closed(stream: &mut TcpStream) -> (u16, Value) {
    let mut all = Vec::new();
    tokio::time::timeout(GUARD, stream.read_to_end(&mut all))
        .await
        .expect("the agent never closed the connection")
        .unwrap();
    let text = String::from_utf8_lossy(&all).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an answer");
    let status = head[9..12].parse().unwrap();
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, json)
}

async fn send(agent: &Agent, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr(agent)).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

#[tokio::test]
async fn post_usage_with_a_declared_body_over_4_kib_is_answered_413_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // Far beyond the guard: the answer can only come from the head.
    let agent = agent(dir.path(), 64, Duration::from_secs(3600)).await;
    let mut stream = send(
        &agent,
        b"POST /usage HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n",
    )
    .await;
    let (status, body) = until_closed(&mut stream).await;
    assert_eq!(status, 413);
    assert_eq!(
        body,
        json!({"message": "the body is larger than 4096 bytes; send {\"request_count\": N}"})
    );
    agent.stop().await;
}

#[tokio::test]
async fn slow_heads_slow_bodies_idle_connections_and_bad_heads_are_cut_off_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path(), 64, Duration::from_millis(700)).await;
    for (request, expected) in [
        (&b"GET /status HTTP/1.1\r\nHost: x\r\n"[..], 408),
        (
            b"POST /usage HTTP/1.1\r\nContent-Length: 30\r\n\r\n{\"request_count\"",
            408,
        ),
        (b"GET /status HTTP/1.1\r\nX-A: a\0b\r\n\r\n", 400),
        (b"POST /usage HTTP/1.1\r\nContent-Length: +5\r\n\r\n", 400),
    ] {
        let mut stream = send(&agent, request).await;
        let (status, body) = until_closed(&mut stream).await;
        assert_eq!(status, expected, "{body}");
        assert!(body["message"].is_string());
    }
    let mut stream = send(&agent, b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(until_closed(&mut stream).await.0, 200);
    agent.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_and_counting_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path(), 2, Duration::from_millis(700)).await;
    let held = vec![
        TcpStream::connect(addr(&agent)).await.unwrap(),
        TcpStream::connect(addr(&agent)).await.unwrap(),
    ];
    let mut extra = TcpStream::connect(addr(&agent)).await.unwrap();
    let (status, body) = until_closed(&mut extra).await;
    assert_eq!(status, 503, "{body}");
    drop(held);
    // Raw, so that a refusal racing the closes is an answer to retry, not a client error.
    let body = r#"{"request_count": 1}"#;
    let request = format!(
        "POST /usage HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    licsync_testkit::eventually_within("the local API to count again", GUARD, || async {
        let mut stream = TcpStream::connect(addr(&agent)).await.unwrap();
        let mut answer = Vec::new();
        if stream.write_all(request.as_bytes()).await.is_ok() {
            let _ = tokio::time::timeout(GUARD, stream.read_to_end(&mut answer)).await;
        }
        answer.starts_with(b"HTTP/1.1 202").then_some(())
    })
    .await;
    agent.stop().await;
}
