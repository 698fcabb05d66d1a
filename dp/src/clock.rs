//! Wall-clock time, injectable: usage counters are bucketed by UTC month and license expiry is
//! judged by UTC day, and both must be testable across a midnight or a month end without
//! waiting for one.
//!
//! Timers and intervals still use `tokio::time` (which tests pause and advance); only the
//! calendar questions ("which month is it?", "how many days until expiry?") go through a
//! [`Clock`].

use std::sync::{Arc, Mutex, PoisonError};

use time::OffsetDateTime;

/// Where the agent reads the calendar time from.
pub trait Clock: Send + Sync + 'static {
    /// The current time, UTC.
    fn now(&self) -> OffsetDateTime;
}

/// A shareable clock.
pub type SharedClock = Arc<dyn Clock>;

/// The system's clock: what the agent uses outside tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// The system clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that shows what it was last set to, for tests and simulations that need a month
/// rollover or an expiry date on demand. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<OffsetDateTime>>);

impl ManualClock {
    pub fn new(at: OffsetDateTime) -> Self {
        Self(Arc::new(Mutex::new(at)))
    }

    /// Moves the clock to `at` (backwards too, as a corrected system clock may).
    pub fn set(&self, at: OffsetDateTime) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = at;
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: time::Duration) {
        let mut now = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn manual_clock_is_shared_by_its_clones() {
        let clock = ManualClock::new(datetime!(2026-01-31 23:59:59 UTC));
        let shared: SharedClock = Arc::new(clock.clone());
        clock.advance(time::Duration::seconds(1));
        assert_eq!(shared.now(), datetime!(2026-02-01 00:00:00 UTC));
        clock.set(datetime!(2025-12-31 00:00:00 UTC));
        assert_eq!(shared.now(), datetime!(2025-12-31 00:00:00 UTC));
    }
}
