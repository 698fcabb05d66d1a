//! Usage metering at the data plane: count the gateway's requests, keep the counts durable per
//! UTC month, and report them to the control plane so that each request is counted exactly
//! once, even across crashes, retries and an unreachable control plane.
//!
//! # How a request travels
//! 1. The gateway reports it: `POST /usage {"request_count": N}` on the local API ([`http`]),
//!    or a statsd counter it already emits, received by the optional UDP listener
//!    ([`statsd`]).
//! 2. [`UsageCounter::add`] adds it to the current month in memory (no disk I/O per request),
//!    within the bound of [`MAX_MONTH_REQUESTS`] a month; while the clock reads a time outside
//!    the usage months ([`UsageMonth`], the control plane's range too) it holds the requests
//!    until the clock is right instead ([`counter`]).
//! 3. Every `usage.flush_interval` the flusher ([`run_flusher`]) makes the counts durable in
//!    `<data_dir>/usage.json` ([`store`]); a clean shutdown flushes once more.
//! 4. The reporter ([`reporter`]) sends the *durable* cumulative counts, tagged with the
//!    file's epoch, over the agent's mTLS connection (`LicenseSync.ReportUsage`) soon after
//!    each flush and every `usage.report_interval`, and records the control plane's receipt.
//!    The control plane keeps the maximum per (data plane, epoch, bucket), so a retry, a
//!    duplicate or a reordered report never counts twice. It refuses a bad bucket alone and
//!    stores the rest; the reporter logs the refusal and stops sending that bucket.
//!
//! What a power loss can cost: the requests counted in the last `usage.flush_interval` (1 s by
//! default). Nothing else: what is durable is reported until the control plane confirms it.

pub mod counter;
pub mod http;
pub mod reporter;
pub mod statsd;
pub mod store;
mod throttle;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use counter::{CountError, Counted, ReportStatus, UsageCounter, UsageSnapshot};
pub use licsync_common::usage_month::{MAX_MONTH_REQUESTS, UsageMonth};
pub use store::{UsageStore, UsageStoreError};
pub use throttle::LogThrottle;

/// Largest `request_count` accepted in one `POST /usage`, and the largest value one statsd
/// line may add (after its sample rate is applied).
pub const MAX_REQUESTS_PER_CALL: u64 = 1_000_000_000;

/// Months kept at least, the current one included: Kong's report shows the last 12 complete
/// months. Older buckets are dropped only once the control plane has confirmed them.
pub const RETAINED_MONTHS: i64 = 13;

/// Flushes the counters every `interval` until `shutdown`; failures are logged (at most once
/// a minute) and retried on the next tick. The final flush on shutdown is the caller's, once
/// nothing counts any more.
pub async fn run_flusher(counter: UsageCounter, interval: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut errors = LogThrottle::new(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match counter.flush().await {
            Ok(written) => {
                if written > 0 {
                    tracing::trace!(written, "Usage counters flushed.");
                }
            }
            Err(error) => {
                if let Some(suppressed) = errors.allow() {
                    tracing::error!(
                        event = "usage.flush_failed",
                        %error,
                        suppressed,
                        unflushed = counter.snapshot().unflushed,
                        "Cannot save the usage counters; they are kept in memory and saved as soon as the disk allows."
                    );
                }
            }
        }
    }
}
