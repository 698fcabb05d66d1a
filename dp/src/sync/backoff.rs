//! Reconnect delays: exponential with full jitter.
//!
//! The ceiling starts at `sync.backoff_initial` and doubles per failed attempt up to
//! `sync.backoff_max`; each delay is drawn uniformly from `[0, ceiling]`, so a fleet that lost
//! its control plane at the same instant does not come back at the same instant. A successful
//! update exchange resets it.

use std::time::Duration;

/// How far apart connection attempts are once the control plane said this data plane is
/// revoked or not registered: retrying sooner cannot help (only registering again can, and a
/// new registration file ends the wait at once), and a fleet of revoked agents retrying every
/// second would load the control plane for nothing.
pub const REFUSED_RETRY: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self::with_rng(initial, max, fastrand::Rng::new())
    }

    /// A reproducible sequence, for tests.
    pub fn with_rng(initial: Duration, max: Duration, rng: fastrand::Rng) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
            rng,
        }
    }

    /// The longest the next delay can be.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// Draws the next delay and raises the ceiling.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = u64::try_from(self.ceiling().as_nanos()).unwrap_or(u64::MAX);
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_nanos(self.rng.u64(0..=ceiling))
    }

    /// Sleeps for the next delay.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Back to `initial` after a connection proved healthy.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn delays_stay_within_doubling_ceilings_up_to_the_max() {
        let mut backoff = Backoff::with_rng(
            Duration::from_secs(1),
            Duration::from_secs(60),
            fastrand::Rng::with_seed(7),
        );
        let expected_ceilings = [1, 2, 4, 8, 16, 32, 60, 60, 60];
        let mut total = Duration::ZERO;
        for ceiling in expected_ceilings {
            assert_eq!(backoff.ceiling(), Duration::from_secs(ceiling));
            let start = Instant::now();
            backoff.wait().await;
            let slept = start.elapsed();
            assert!(
                slept <= Duration::from_secs(ceiling),
                "{slept:?} > {ceiling}s"
            );
            total += slept;
        }
        assert!(
            total > Duration::from_secs(10),
            "jitter is not stuck at zero: {total:?}"
        );
        for _ in 0..100 {
            backoff.next_delay();
        }
        assert_eq!(
            backoff.ceiling(),
            Duration::from_secs(60),
            "no overflow after many attempts"
        );
        backoff.reset();
        assert_eq!(backoff.ceiling(), Duration::from_secs(1));
        let start = Instant::now();
        backoff.wait().await;
        assert!(start.elapsed() <= Duration::from_secs(1));
    }

    #[test]
    fn jitter_spreads_over_the_whole_range() {
        let mut low = 0;
        let mut high = 0;
        for seed in 0..200 {
            let mut backoff = Backoff::with_rng(
                Duration::from_secs(8),
                Duration::from_secs(8),
                fastrand::Rng::with_seed(seed),
            );
            let d = backoff.next_delay();
            if d < Duration::from_secs(2) {
                low += 1;
            }
            if d > Duration::from_secs(6) {
                high += 1;
            }
        }
        assert!(low > 20 && high > 20, "low {low}, high {high}");
    }
}
