//! `LicenseSync.ReportUsage`: a data plane's cumulative request counts, stored under the max
//! rule ([`crate::usage`]) and answered with a receipt only once they are durable.
//!
//! The caller is authenticated exactly as a `Sync` stream is (verified client certificate of a
//! registered, unrevoked data plane, its newest or previous serial), so an expired, revoked or
//! superseded certificate stops its reports; the counts are filed under the certificate's
//! data-plane id, never under anything the message says.
//!
//! Bad buckets are refused one by one (named in the receipt's `refused`, logged as
//! `usage.bucket_refused`) and the rest of the report is stored; only a report that cannot be
//! filed at all (bad epoch, too many buckets) is refused whole with `INVALID_ARGUMENT`.

use licsync_common::proto::{UsageCount, UsageReceipt, UsageReport};
use tonic::{Request, Response, Status};

use super::caller::authenticate;
use super::tls::PeerInfo;
use crate::state::ControlPlane;
use crate::usage::submission;

/// Handles one `ReportUsage` call.
pub(super) async fn report_usage(
    cp: &ControlPlane,
    request: Request<UsageReport>,
) -> Result<Response<UsageReceipt>, Status> {
    let peer = request
        .extensions()
        .get::<PeerInfo>()
        .cloned()
        .ok_or_else(|| Status::internal("connection carries no peer information"))?;
    let record = authenticate(cp, &peer).await?.record;
    let checked = submission::check(record.id, request.into_inner()).map_err(|invalid| {
        tracing::warn!(event = "usage.rejected", dataplane.id = %record.id, reason = %invalid, "Refused a usage report.");
        Status::invalid_argument(format!("usage report refused: {invalid}"))
    })?;
    for refused in &checked.refused {
        // `bucket` is escaped by the check; the reason is this control plane's own words.
        tracing::warn!(
            event = "usage.bucket_refused",
            dataplane.id = %record.id,
            epoch = %checked.submission.epoch,
            bucket = %refused.bucket,
            request_count = refused.request_count,
            reason = %refused.reason,
            "Refused one month of a usage report; the rest is stored."
        );
    }
    let buckets = checked.submission.counts.len();
    let recorded = if buckets == 0 {
        Vec::new()
    } else {
        cp.usage()
            .record(checked.submission)
            .await
            .map_err(|error| {
                Status::unavailable(format!(
                    "the control plane could not store the report ({error}); send it again"
                ))
            })?
    };
    tracing::debug!(event = "usage.recorded", dataplane.id = %record.id, buckets, refused = checked.refused.len(), "Recorded a usage report.");
    Ok(Response::new(UsageReceipt {
        recorded: recorded
            .into_iter()
            .map(|(month, request_count)| UsageCount {
                bucket: month.to_string(),
                request_count,
            })
            .collect(),
        refused: checked.refused,
    }))
}
