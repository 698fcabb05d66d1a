//! The cluster port against clients that open connections and then do nothing, or give up
//! half-way: the control plane closes them after its timeouts, refuses more than
//! `cluster.max_connections_per_ip` from one source, still serves a real data plane and the
//! Admin API while a flood is held open, and logs refused handshakes once per source.
//!
//! Floods come from 127.0.0.2 (any 127/8 address is loopback on Linux) so that the data plane
//! the test then registers, from 127.0.0.1, is another source. Counts stay in the hundreds.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use licsync_common::duration::HumanDuration;
use licsync_testkit::{ControlPlane, Events, GUARD, eventually};
use reqwest::{Method, StatusCode};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

const FLOOD_SOURCE: [u8; 4] = [127, 0, 0, 2];

/// A TCP connection to the cluster port from `source`.
async fn open_from(cp: &ControlPlane, source: [u8; 4]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((IpAddr::from(source), 0)))
        .unwrap();
    socket.connect(cp.config().cluster.listen).await.unwrap()
}

/// `n` connections from `source` that send nothing.
async fn silent(cp: &ControlPlane, source: [u8; 4], n: usize) -> Vec<TcpStream> {
    let mut flood = Vec::with_capacity(n);
    for _ in 0..n {
        flood.push(open_from(cp, source).await);
    }
    flood
}

/// `n` connections from `source` that send the first byte of a TLS record and stall.
async fn stalled(cp: &ControlPlane, source: [u8; 4], n: usize) -> Vec<TcpStream> {
    let mut flood = silent(cp, source, n).await;
    for tcp in &mut flood {
        tcp.write_all(&[0x16]).await.unwrap();
    }
    flood
}

/// Reads until the server closes the connection (EOF or an error); panics after [`GUARD`].
async fn closed_by_server(stream: &mut (impl AsyncRead + Unpin)) {
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(GUARD, read_all)
        .await
        .expect("the server did not close the connection");
}

/// Whether the server has not closed `tcp` (nothing to read, no EOF, no reset).
fn still_open(tcp: &TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(tcp.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// A TLS client offering h2; it trusts the cluster CA when `ca_pem` is given, nothing otherwise.
fn client_config(ca_pem: Option<&str>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    if let Some(pem) = ca_pem {
        let der = licsync_common::pki::first_certificate(pem, "the cluster CA").unwrap();
        roots.add(der).unwrap();
    }
    let mut config = ClientConfig::builder_with_provider(licsync_cp::cluster::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

fn seconds(s: u64) -> HumanDuration {
    HumanDuration(Duration::from_secs(s))
}

#[tokio::test]
async fn a_flood_of_silent_and_stalled_connections_delays_neither_a_registration_nor_the_admin_api()
{
    // Long enough that nothing of the flood times out while the test runs: a registration
    // that had to wait for handshake slots to free up would find the flood closed.
    let cp = ControlPlane::builder()
        .config(|c| c.cluster.handshake_timeout = seconds(120))
        .start()
        .await;
    let mut flood = silent(&cp, FLOOD_SOURCE, 400).await;
    flood.extend(stalled(&cp, FLOOD_SOURCE, 200).await);

    let registered = tokio::time::timeout(GUARD, cp.register_dataplane(licsync_common::VERSION))
        .await
        .expect("registration while the flood is held open");
    let (status, body) = cp.call(Method::GET, "/clustering/data-planes", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.to_string().contains(&registered.id), "{body}");

    let closed = flood.iter().filter(|tcp| !still_open(tcp)).count();
    assert_eq!(
        closed, 0,
        "flood connections were closed before the registration got through"
    );
}

#[tokio::test]
async fn connections_that_stop_after_the_handshake_or_the_preface_are_closed() {
    let cp = ControlPlane::builder()
        .config(|c| {
            c.cluster.handshake_timeout = HumanDuration(Duration::from_millis(300));
        })
        .start()
        .await;
    let connector = TlsConnector::from(client_config(Some(&cp.ca_pem())));
    let mut no_preface = Vec::new();
    for _ in 0..20 {
        let tcp = open_from(&cp, FLOOD_SOURCE).await;
        let tls = connector.connect(localhost(), tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        no_preface.push(tls);
    }
    let mut no_request = Vec::new();
    for _ in 0..20 {
        let tcp = open_from(&cp, FLOOD_SOURCE).await;
        let mut tls = connector.connect(localhost(), tcp).await.unwrap();
        // The HTTP/2 preface and an empty SETTINGS frame, then no request.
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        no_request.push(tls);
    }
    let mut never_spoke = silent(&cp, FLOOD_SOURCE, 20).await;

    for tls in no_preface.iter_mut().chain(no_request.iter_mut()) {
        closed_by_server(tls).await;
    }
    for tcp in &mut never_spoke {
        closed_by_server(tcp).await;
    }
    // Closing them did not take the listener down.
    cp.register_dataplane(licsync_common::VERSION).await;
}

#[tokio::test]
async fn one_source_gets_at_most_its_connection_limit_and_others_still_get_in() {
    let (events, _guard) = Events::capture();
    let cp = ControlPlane::builder()
        .config(|c| {
            c.cluster.handshake_timeout = seconds(120);
            c.cluster.max_connections_per_ip = 20;
        })
        .start()
        .await;
    let held = silent(&cp, FLOOD_SOURCE, 20).await;
    for _ in 0..3 {
        let mut excess = open_from(&cp, FLOOD_SOURCE).await;
        closed_by_server(&mut excess).await;
    }
    assert!(held.iter().all(still_open), "the first 20 stay open");

    // Another source is not affected, nor is the Admin API.
    cp.register_dataplane(licsync_common::VERSION).await;
    let (status, _) = cp.call(Method::GET, "/clustering/data-planes", None).await;
    assert_eq!(status, StatusCode::OK);

    let refused = events.named("cluster.connection_refused");
    assert_eq!(refused.len(), 1, "once per source per minute: {refused:?}");
    assert!(
        refused[0]
            .field("peer.addr")
            .unwrap()
            .starts_with("127.0.0.2:")
    );
    assert!(
        refused[0]
            .field("reason")
            .unwrap()
            .contains("cluster.max_connections_per_ip")
    );
}

#[tokio::test]
async fn handshakes_given_up_or_refused_by_the_client_are_logged_once_per_source_with_a_hint() {
    let (events, _guard) = Events::capture();
    let cp = ControlPlane::start().await;

    // A client that does not trust the control plane's CA and says so (a TLS alert).
    let untrusting = TlsConnector::from(client_config(None));
    for _ in 0..3 {
        let tcp = open_from(&cp, [127, 0, 0, 1]).await;
        assert!(untrusting.connect(localhost(), tcp).await.is_err());
    }
    // A client that sends its ClientHello, reads the answer and hangs up without a word.
    for source in [
        [127, 0, 0, 1],
        [127, 0, 0, 1],
        [127, 0, 0, 1],
        [127, 0, 0, 3],
    ] {
        let mut hello = Vec::new();
        ClientConnection::new(client_config(None), localhost())
            .unwrap()
            .write_tls(&mut hello)
            .unwrap();
        let mut tcp = open_from(&cp, source).await;
        tcp.write_all(&hello).await.unwrap();
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.unwrap();
    }
    // The last one comes from another source, so it is logged too; by then the others are.
    eventually("the aborted handshake from 127.0.0.3 is logged", || async {
        events
            .named("tls.handshake_aborted")
            .iter()
            .any(|e| e.field("peer.addr").unwrap().starts_with("127.0.0.3:"))
            .then_some(())
    })
    .await;

    let failed = events.named("tls.handshake_failed");
    assert_eq!(failed.len(), 1, "once per source per minute: {failed:?}");
    assert!(
        failed[0]
            .field("reason")
            .unwrap()
            .contains("does not trust this control plane's certificate")
    );
    let aborted: Vec<_> = events
        .named("tls.handshake_aborted")
        .into_iter()
        .filter(|e| e.field("peer.addr").unwrap().starts_with("127.0.0.1:"))
        .collect();
    assert_eq!(aborted.len(), 1, "once per source per minute: {aborted:?}");
    assert_eq!(aborted[0].level, tracing::Level::INFO);
    assert!(aborted[0].field("reason").unwrap().contains("--ca-cert"));
}
