//! The control plane's Prometheus metrics, served as OpenMetrics text by `GET /metrics` on the
//! status listener ([`crate::status`]).
//!
//! Two kinds, kept apart so the hot paths pay nothing for the scrape:
//! - **Events** ([`CpMetrics`]): counters and histograms the sync streams and the Admin API
//!   bump as things happen. Each is a relaxed atomic addition ([`histogram`] explains why the
//!   histograms are not `prometheus-client`'s); the Admin API's per-route families take a
//!   shared read lock to find their label set, which only the first request of a new
//!   (method, route, status) ever upgrades.
//! - **State** ([`scrape`]): gauges read at scrape time from what the control plane already
//!   keeps (the fleet, the published license set, the usage ledger, the certificates), so
//!   nothing is book-kept for them and they always agree with `/status` and
//!   `/clustering/data-planes`.
//!
//! Every label value is bounded: a route is the matched template (`/licenses/{id}`) or
//! `unmatched`, a method one of the standard ones or `other`, a license id one of the stored
//! licenses, a month one of the [`scrape::USAGE_MONTHS`] newest reported.
//!
//! | metric | type | labels | value |
//! |---|---|---|---|
//! | `licsync_cp_build_info` | info | `version` | 1 |
//! | `licsync_cp_ready` | gauge | | 1 while `/health/ready` answers 200 |
//! | `licsync_cp_revision` | gauge | | revision of the published license set |
//! | `licsync_cp_dataplanes` | gauge | `state` = `connected`, `registered` | registered (unrevoked) data planes, and those with a stream open |
//! | `licsync_cp_dataplanes_by_sync_status` | gauge | `status` | registered data planes per `sync_status` |
//! | `licsync_cp_license_expiry_timestamp_seconds` | gauge | `license_id` | when each stored license stops being in force |
//! | `licsync_cp_license_entitled_dataplanes` | gauge | | the active license's `dataplanes`; absent without one |
//! | `licsync_cp_sync_updates_total` | counter | `result` = `acked`, `rejected`, `timed_out` | answers to updates sent to data planes |
//! | `licsync_cp_sync_propagation_seconds` | histogram | | license write committed → acknowledged by a data plane |
//! | `licsync_cp_admin_requests_total` | counter | `method`, `route`, `status` | Admin API requests answered |
//! | `licsync_cp_admin_request_duration_seconds` | histogram | `method`, `route` | Admin API request latency |
//! | `licsync_cp_usage_requests_total` | counter | `month` | gateway requests reported by data planes, per UTC month |
//! | `licsync_cp_certificate_expiry_timestamp_seconds` | gauge | `role` = `ca`, `server` | expiry of the cluster CA and server certificate |
//! | `licsync_cp_dataplane_certificate_expiry_earliest_timestamp_seconds` | gauge | | the soonest data-plane certificate expiry; absent with no data plane |

use std::time::{Duration, Instant};

use axum::http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

pub mod histogram;
pub mod scrape;

pub use histogram::DurationHistogram;
pub use scrape::{CONTENT_TYPE, Certificates, Snapshot};

/// The route label of a request no route matched (or refused before routing: no or an
/// unknown token), so scanners cannot add label values.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// An Admin API request's counter labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    pub route: String,
    pub status: u16,
}

/// An Admin API request's latency labels (the status is left out to keep the buckets few).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: &'static str,
    pub route: String,
}

type RequestDurations = Family<RouteLabels, DurationHistogram, fn() -> DurationHistogram>;

/// The event metrics; cloning shares them.
#[derive(Debug, Clone)]
pub struct CpMetrics {
    pub(crate) sync_acked: Counter,
    pub(crate) sync_rejected: Counter,
    pub(crate) sync_timed_out: Counter,
    pub(crate) propagation: DurationHistogram,
    pub(crate) admin_requests: Family<RequestLabels, Counter>,
    pub(crate) admin_durations: RequestDurations,
}

impl Default for CpMetrics {
    fn default() -> Self {
        Self {
            sync_acked: Counter::default(),
            sync_rejected: Counter::default(),
            sync_timed_out: Counter::default(),
            propagation: DurationHistogram::new(histogram::PROPAGATION_BUCKETS),
            admin_requests: Family::default(),
            admin_durations: Family::new_with_constructor(|| {
                DurationHistogram::new(histogram::REQUEST_BUCKETS)
            }),
        }
    }
}

impl CpMetrics {
    /// A data plane acknowledged an update. `committed_at`: when the newest license change it
    /// carried was committed, if it carried one committed by this process (an update that
    /// only confirms a data plane is up to date, or brings it a change made before this
    /// process started, measures no propagation).
    pub fn sync_acked(&self, committed_at: Option<Instant>) {
        self.sync_acked.inc();
        if let Some(committed_at) = committed_at {
            self.propagation.observe(committed_at.elapsed());
        }
    }

    /// A data plane refused some licenses of an update.
    pub fn sync_rejected(&self) {
        self.sync_rejected.inc();
    }

    /// A data plane did not answer an update within `cluster.ack_timeout`.
    pub fn sync_timed_out(&self) {
        self.sync_timed_out.inc();
    }

    /// The Admin API answered `status` to a `method` request for `route` (a template, or
    /// [`UNMATCHED_ROUTE`]) after `elapsed`.
    pub fn admin_request(&self, method: &Method, route: &str, status: u16, elapsed: Duration) {
        let method = method_label(method);
        self.admin_requests
            .get_or_create(&RequestLabels {
                method,
                route: route.to_owned(),
                status,
            })
            .inc();
        self.admin_durations
            .get_or_create(&RouteLabels {
                method,
                route: route.to_owned(),
            })
            .observe(elapsed);
    }
}

/// The method as a label: the standard ones by name, any other (`FOO`) as `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_methods_share_one_label() {
        let foo = Method::from_bytes(b"FOO").unwrap();
        let bar = Method::from_bytes(b"BAR").unwrap();
        assert_eq!(method_label(&foo), "other");
        assert_eq!(method_label(&bar), "other");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
    }

    #[test]
    fn an_ack_without_a_commit_instant_counts_but_measures_nothing() {
        let metrics = CpMetrics::default();
        metrics.sync_acked(None);
        metrics.sync_acked(Some(Instant::now()));
        assert_eq!(metrics.sync_acked.get(), 2);
        assert_eq!(metrics.propagation.count(), 1);
    }
}
