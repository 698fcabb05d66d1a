//! A TCP relay in front of a listener that can be cut without closing anything: what a
//! control plane sees of a data plane whose host lost power or whose network was partitioned
//! (no FIN, no RST, just silence), which no well-behaved client library can be made to do.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Forwards every connection made to [`Relay::addr`] to the target until [`Relay::cut`].
pub struct Relay {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Relay {
    /// Listens on a free 127.0.0.1 port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, cut_rx) = watch::channel(false);
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let (in_read, in_write) = inbound.into_split();
                let (out_read, out_write) = outbound.into_split();
                tokio::spawn(pipe(in_read, out_write, cut_rx.clone()));
                tokio::spawn(pipe(out_read, in_write, cut_rx.clone()));
            }
        });
        Self { addr, cut, accept }
    }

    /// Where clients connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on nothing passes either way, and every connection stays open.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies `from` to `to` until either closes or the relay is cut; once cut, holds both halves
/// open (and unread) for as long as the runtime lives.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut cut: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            biased;
            _ = async { cut.wait_for(|cut| *cut).await.map(|_| ()) } => None,
            read = from.read(&mut buf) => Some(read),
        };
        match read {
            None => break,
            Some(Ok(0) | Err(_)) => return,
            Some(Ok(n)) => {
                if *cut.borrow() || to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _held = (from, to);
    std::future::pending::<()>().await;
}
