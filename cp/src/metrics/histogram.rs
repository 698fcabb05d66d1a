//! A histogram of durations whose every observation is a few relaxed atomic additions.
//!
//! `prometheus-client`'s own `Histogram` takes a mutex per observation. That is fine for a
//! request handler, but `licsync_cp_sync_propagation_seconds` is observed on every data plane's
//! acknowledgement, thousands at once after a license write, from every runtime thread: a
//! shared mutex there would serialise the fleet's acks on one cache line. Here each bucket,
//! the count and the sum are separate atomics, so an observation never waits.
//!
//! A scrape reads the atomics one by one while observations go on, so it may see an
//! observation in its bucket but not yet in the sum (off by one observation at most per
//! concurrent writer); the count is the sum of the buckets it read, so buckets and count always
//! agree, as Prometheus requires.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds (seconds) for the time from a license write to a data plane's
/// acknowledgement: milliseconds on a healthy fleet, up to `cluster.ack_timeout` (60 s) when
/// a data plane is slow, longer when one was disconnected at the time.
pub const PROPAGATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];

/// Upper bounds (seconds) for an Admin API request: storage reads and group-committed writes.
pub const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A cumulative histogram of durations, shared by cloning.
#[derive(Debug, Clone)]
pub struct DurationHistogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: Box<[AtomicU64]>,
    /// The sum of every observation, in nanoseconds (584 years of total before it wraps).
    sum_nanos: AtomicU64,
}

impl DurationHistogram {
    /// An empty histogram over `bounds` (ascending, seconds).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            inner: Arc::new(Inner {
                bounds,
                buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                sum_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// Counts one duration.
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let bucket = self.inner.bounds.partition_point(|&bound| bound < seconds);
        self.inner.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// How many durations were observed.
    pub fn count(&self) -> u64 {
        self.inner
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }

    /// The sum (seconds), the count and the `(upper bound, count)` of each bucket, the last
    /// one `+Inf`. Counts are per bucket, not cumulative: the encoder accumulates them.
    fn read(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut total = 0u64;
        let mut buckets = Vec::with_capacity(self.inner.buckets.len());
        let bounds = self.inner.bounds.iter().copied().chain([f64::INFINITY]);
        for (bound, bucket) in bounds.zip(self.inner.buckets.iter()) {
            let count = bucket.load(Ordering::Relaxed);
            total = total.saturating_add(count);
            buckets.push((bound, count));
        }
        let sum = self.inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, total, buckets)
    }
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.read();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_lands_in_the_first_bucket_that_holds_it() {
        let histogram = DurationHistogram::new(&[0.1, 1.0]);
        histogram.observe(Duration::from_millis(100));
        histogram.observe(Duration::from_millis(500));
        histogram.observe(Duration::from_secs(5));
        let (sum, count, buckets) = histogram.read();
        assert_eq!(count, 3);
        assert_eq!(histogram.count(), 3);
        assert!((sum - 5.6).abs() < 1e-9, "{sum}");
        // A bound is inclusive (`le`): 0.1 s is in the 0.1 bucket.
        assert_eq!(buckets, vec![(0.1, 1), (1.0, 1), (f64::INFINITY, 1)]);
    }

    /// As Prometheus reads it: cumulative `le` buckets ending with `+Inf` = the count.
    #[test]
    fn the_encoded_buckets_are_cumulative() {
        use prometheus_client::registry::Registry;
        let histogram = DurationHistogram::new(&[0.1, 1.0]);
        histogram.observe(Duration::from_millis(50));
        histogram.observe(Duration::from_millis(500));
        histogram.observe(Duration::from_secs(5));
        let mut registry = Registry::default();
        registry.register("latency", "Latency.", histogram);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "latency_count 3\n",
            "latency_bucket{le=\"0.1\"} 1\n",
            "latency_bucket{le=\"1.0\"} 2\n",
            "latency_bucket{le=\"+Inf\"} 3\n",
        ] {
            assert!(text.contains(line), "{line}in\n{text}");
        }
    }

    #[test]
    fn clones_share_their_counts() {
        let histogram = DurationHistogram::new(PROPAGATION_BUCKETS);
        histogram.clone().observe(Duration::from_secs(1));
        assert_eq!(histogram.count(), 1);
    }
}
