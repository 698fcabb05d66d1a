//! The optional statsd listener (`usage.statsd_listen`, off by default): a gateway that already
//! sends statsd metrics — Kong's statsd plugin, Envoy's statsd sink — points them (or a copy)
//! at the agent, and the request counters among them are counted, with no change to the
//! gateway.
//!
//! Each UDP datagram (at most 64 KiB) holds one or more newline-separated lines ([`line`]).
//! Counters whose names pass the [`pattern::MetricFilter`] are counted; other well-formed
//! lines are ignored; malformed ones are counted as rejected and logged at most once per
//! 10 seconds with the number suppressed. Nothing a sender does stops the listener. Requests
//! that would take a month past its bound (10^15) are not counted, counted as
//! `refused_requests` and logged (`usage.month_full`) at most once per 10 seconds.
//!
//! Sample rates make fractional increments (`1|c|@0.3` is 3.33 requests); the fractions are
//! carried over between lines, so many sampled lines add up to the right whole number.

pub mod line;
pub mod pattern;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use self::line::Metric;
use self::pattern::MetricFilter;
use super::{LogThrottle, UsageCounter};

/// Largest datagram read; anything longer is truncated by the kernel and its last line
/// rejected.
pub const MAX_DATAGRAM_BYTES: usize = 64 * 1024;

/// How often at most a rejected line is logged.
const REJECT_LOG_PERIOD: Duration = Duration::from_secs(10);

/// What the listener has seen since start, for `GET /usage` and `GET /status`.
#[derive(Debug, Default)]
pub struct StatsdStats {
    datagrams: AtomicU64,
    counted_lines: AtomicU64,
    ignored_lines: AtomicU64,
    rejected_lines: AtomicU64,
    requests: AtomicU64,
    refused_requests: AtomicU64,
}

/// [`StatsdStats`] as numbers, with the address listened on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatsdView {
    pub listen: SocketAddr,
    pub datagrams: u64,
    /// Request counters counted.
    pub counted_lines: u64,
    /// Well-formed lines that are not request counters (other metrics, other names).
    pub ignored_lines: u64,
    /// Malformed lines.
    pub rejected_lines: u64,
    /// Requests these lines added.
    pub requests: u64,
    /// Requests not counted because the month had reached its bound (10^15).
    pub refused_requests: u64,
}

/// A handle on a running listener's numbers.
#[derive(Debug, Clone)]
pub struct StatsdHandle {
    listen: SocketAddr,
    stats: Arc<StatsdStats>,
}

impl StatsdHandle {
    pub fn view(&self) -> StatsdView {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        StatsdView {
            listen: self.listen,
            datagrams: get(&self.stats.datagrams),
            counted_lines: get(&self.stats.counted_lines),
            ignored_lines: get(&self.stats.ignored_lines),
            rejected_lines: get(&self.stats.rejected_lines),
            requests: get(&self.stats.requests),
            refused_requests: get(&self.stats.refused_requests),
        }
    }
}

/// A bound statsd socket, ready to run.
pub struct StatsdListener {
    socket: UdpSocket,
    filter: MetricFilter,
    counter: UsageCounter,
    handle: StatsdHandle,
    /// Fractions of a request left over from sampled lines.
    carry: f64,
    rejected_log: LogThrottle,
    refused_log: LogThrottle,
}

impl StatsdListener {
    /// Binds `addr` (`127.0.0.1:0` picks a port; [`StatsdHandle::view`] tells which).
    pub async fn bind(
        addr: SocketAddr,
        filter: MetricFilter,
        counter: UsageCounter,
    ) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(addr).await?;
        let handle = StatsdHandle {
            listen: socket.local_addr()?,
            stats: Arc::default(),
        };
        Ok(Self {
            socket,
            filter,
            counter,
            handle,
            carry: 0.0,
            rejected_log: LogThrottle::new(REJECT_LOG_PERIOD),
            refused_log: LogThrottle::new(REJECT_LOG_PERIOD),
        })
    }

    pub fn handle(&self) -> StatsdHandle {
        self.handle.clone()
    }

    /// Receives until `shutdown`. A receive error (an ICMP error reported on the socket, say)
    /// is logged and the loop goes on.
    pub async fn run(mut self, shutdown: CancellationToken) {
        tracing::info!(
            event = "usage.statsd_listening",
            listen = %self.handle.listen,
            "Counting gateway requests from statsd."
        );
        let mut buffer = vec![0u8; MAX_DATAGRAM_BYTES];
        let mut errors = LogThrottle::new(Duration::from_secs(60));
        loop {
            let received = tokio::select! {
                () = shutdown.cancelled() => return,
                received = self.socket.recv_from(&mut buffer) => received,
            };
            match received {
                Ok((len, _peer)) => self.datagram(&buffer[..len]),
                Err(error) => {
                    if let Some(suppressed) = errors.allow() {
                        tracing::warn!(event = "usage.statsd_receive_failed", %error, suppressed, "Cannot receive a statsd datagram.");
                    }
                }
            }
        }
    }

    /// Counts what one datagram holds.
    pub fn datagram(&mut self, bytes: &[u8]) {
        let stats = &self.handle.stats;
        stats.datagrams.fetch_add(1, Ordering::Relaxed);
        let mut requests = 0.0f64;
        for raw in bytes.split(|b| *b == b'\n') {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match line::parse(raw) {
                Ok(Metric::Counter { name, requests: n }) if self.filter.counts(name) => {
                    stats.counted_lines.fetch_add(1, Ordering::Relaxed);
                    requests += n;
                }
                Ok(_) => {
                    stats.ignored_lines.fetch_add(1, Ordering::Relaxed);
                }
                Err(reason) => {
                    stats.rejected_lines.fetch_add(1, Ordering::Relaxed);
                    if let Some(suppressed) = self.rejected_log.allow() {
                        let excerpt: String =
                            String::from_utf8_lossy(&raw[..raw.len().min(120)]).into_owned();
                        tracing::warn!(
                            event = "usage.statsd_rejected",
                            %reason,
                            line = ?excerpt,
                            suppressed,
                            "Rejected a malformed statsd line."
                        );
                    }
                }
            }
        }
        if requests > 0.0 {
            // A tiny allowance so that 1/0.1 summed ten times, say, is not 99.999...
            let total = self.carry + requests;
            let whole = (total + 1e-9).floor();
            self.carry = total - whole;
            // `whole` is at most MAX_REQUESTS_PER_CALL per line times the lines in 64 KiB.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let whole = whole as u64;
            if whole > 0 {
                match self.counter.add(whole) {
                    Ok(_) => {
                        stats.requests.fetch_add(whole, Ordering::Relaxed);
                    }
                    Err(error) => {
                        stats.refused_requests.fetch_add(whole, Ordering::Relaxed);
                        if let Some(suppressed) = self.refused_log.allow() {
                            tracing::warn!(
                                event = "usage.month_full",
                                %error,
                                suppressed,
                                "Statsd requests were not counted."
                            );
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::clock::ManualClock;
    use crate::config::UsageConfig;
    use crate::usage::UsageStore;

    async fn listener(dir: &std::path::Path) -> StatsdListener {
        let clock = ManualClock::new(datetime!(2026-11-10 12:00 UTC));
        let store = UsageStore::new(dir.join("usage.json"));
        let (counter, _) = UsageCounter::open(store, Arc::new(clock)).await.unwrap();
        let defaults = UsageConfig::default();
        let filter =
            MetricFilter::parse(&defaults.statsd_patterns, &defaults.statsd_exclude).unwrap();
        StatsdListener::bind("127.0.0.1:0".parse().unwrap(), filter, counter)
            .await
            .unwrap()
    }

    fn counted(listener: &StatsdListener) -> u64 {
        listener.counter.snapshot().unflushed
    }

    #[tokio::test]
    async fn multi_line_datagrams_count_matching_counters_and_reject_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut listener = listener(dir.path()).await;
        listener.datagram(
            b"kong.service.a.request.count:1|c\n\
              kong.service.a.latency:12|ms\n\
              kong.service.a.user.bob.request.count:1|c\n\
              kong.service.b.request.count:1|c|@0.5\r\n\
              garbage\n\
              \n\
              envoy.http.ingress.downstream_rq_total:5|c\n\
              kong.request.count:-3|c\n",
        );
        assert_eq!(counted(&listener), 1 + 2 + 5);
        let view = listener.handle().view();
        assert_eq!(
            (
                view.datagrams,
                view.counted_lines,
                view.ignored_lines,
                view.rejected_lines,
                view.requests
            ),
            (1, 3, 2, 2, 8)
        );
    }

    #[tokio::test]
    async fn sampled_fractions_add_up_across_lines_and_datagrams() {
        let dir = tempfile::tempdir().unwrap();
        let mut listener = listener(dir.path()).await;
        // 1 at a sample rate of 0.3 stands for 3.33 requests: three of them are 10.
        for _ in 0..3 {
            listener.datagram(b"kong.request.count:1|c|@0.3");
        }
        assert_eq!(counted(&listener), 10);
        // Ten lines sampled at 0.1 are 100, not 99.
        let datagram = "kong.request.count:1|c|@0.1\n".repeat(10);
        listener.datagram(datagram.as_bytes());
        assert_eq!(counted(&listener), 110);
    }

    #[tokio::test]
    async fn a_real_udp_datagram_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let listener = listener(dir.path()).await;
        let handle = listener.handle();
        let counter = listener.counter.clone();
        let stop = CancellationToken::new();
        let task = tokio::spawn(listener.run(stop.clone()));
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sender
            .send_to(
                b"kong.service.orders.request.count:1|c\nkong.service.orders.request.count:1|c",
                handle.view().listen,
            )
            .await
            .unwrap();
        sender
            .send_to(b"\xff\xfe:1|c", handle.view().listen)
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while handle.view().datagrams < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "datagrams not received"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(counter.snapshot().unflushed, 2);
        assert_eq!(handle.view().rejected_lines, 1);
        stop.cancel();
        task.await.unwrap();
    }
}
