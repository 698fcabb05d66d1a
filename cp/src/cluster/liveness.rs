//! Dead-peer detection that a busy control plane cannot mistake for a dead peer.
//!
//! `cluster.keepalive_interval` and `cluster.keepalive_timeout` mean what operators know from
//! HTTP/2 keepalive: a data plane silent for the interval is pinged, and one that has not
//! answered within the timeout is dropped. hyper implements that itself, but it checks its
//! ping timer *before* it reads the socket: when the connection's task runs late (a node
//! taking over a dead node's data planes spends seconds of CPU on TLS handshakes) the pong
//! may be waiting unread in the socket, yet hyper sees the timer expired and drops a healthy
//! stream. Each dropped data plane reconnects and adds a handshake, so one node's failure
//! cascaded into the survivors dropping their own fleets (the 45,000 storm in
//! `BENCHMARKS.md`).
//!
//! So hyper still sends the pings (an idle peer that is alive then answers), but with a
//! timeout long enough never to fire ([`HYPER_PING_TIMEOUT`]), and the connection's read
//! half decides instead, only after a read found nothing waiting: a peer counts as dead when
//! nothing has arrived for the interval plus the timeout, *and* for the timeout since this
//! side last sent something (a ping sent late gets its full timeout to be answered). Bytes
//! that arrived while this process was busy are read first, so lateness here never counts
//! against the peer.

use std::time::Duration;

use tokio::time::Instant;

/// What hyper is told as its ping timeout: pings go out as configured, but deciding that the
/// peer is dead is left to [`Liveness`].
pub const HYPER_PING_TIMEOUT: Duration = Duration::from_secs(7 * 86_400);

/// `cluster.keepalive_interval` and `cluster.keepalive_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Silence before the peer is pinged.
    pub interval: Duration,
    /// How long the peer has to answer.
    pub timeout: Duration,
}

/// When the peer of one connection was last heard from, and last sent something.
#[derive(Debug, Clone)]
pub struct Liveness {
    keepalive: Keepalive,
    heard: Instant,
    sent: Instant,
}

impl Liveness {
    pub fn new(keepalive: Keepalive, now: Instant) -> Self {
        Self {
            keepalive,
            heard: now,
            sent: now,
        }
    }

    /// Bytes arrived from the peer.
    pub fn heard(&mut self, now: Instant) {
        self.heard = now;
    }

    /// Bytes went to the peer (a ping among them, possibly late).
    pub fn sent(&mut self, now: Instant) {
        self.sent = now;
    }

    /// The moment the peer counts as dead if nothing arrives before it.
    pub fn deadline(&self) -> Instant {
        (self.heard + self.keepalive.interval).max(self.sent) + self.keepalive.timeout
    }

    /// How long the peer had been silent when found dead at `now`, for the log.
    pub fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.heard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEPALIVE: Keepalive = Keepalive {
        interval: Duration::from_secs(20),
        timeout: Duration::from_secs(10),
    };

    #[test]
    fn a_silent_peer_is_dead_after_the_interval_and_the_timeout() {
        let start = Instant::now();
        let liveness = Liveness::new(KEEPALIVE, start);
        assert_eq!(liveness.deadline(), start + Duration::from_secs(30));
    }

    #[test]
    fn anything_heard_starts_the_count_again() {
        let start = Instant::now();
        let mut liveness = Liveness::new(KEEPALIVE, start);
        liveness.heard(start + Duration::from_secs(25));
        assert_eq!(liveness.deadline(), start + Duration::from_secs(55));
        assert_eq!(
            liveness.silent_for(start + Duration::from_secs(40)),
            Duration::from_secs(15)
        );
    }

    #[test]
    fn a_ping_sent_late_gets_its_whole_timeout() {
        let start = Instant::now();
        let mut liveness = Liveness::new(KEEPALIVE, start);
        // The ping was due at 20 s; this process was busy and sent it at 28 s.
        liveness.sent(start + Duration::from_secs(28));
        assert_eq!(liveness.deadline(), start + Duration::from_secs(38));
    }

    #[test]
    fn sending_early_in_the_silence_does_not_shorten_the_interval() {
        let start = Instant::now();
        let mut liveness = Liveness::new(KEEPALIVE, start);
        liveness.sent(start + Duration::from_secs(5));
        assert_eq!(liveness.deadline(), start + Duration::from_secs(30));
    }
}
