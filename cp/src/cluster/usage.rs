//! `LicenseSync.ReportUsage`: a data plane's cumulative request counts, stored under the max
//! rule ([`crate::usage`]) and answered with a receipt only once they are durable.
//!
//! The caller is authenticated exactly as a `Sync` stream is (verified client certificate of a
//! registered, unrevoked data plane, its newest or previous serial), so an expired, revoked or
//! superseded certificate stops its reports; the counts are filed under the certificate's
//! data-plane id, never under anything the message says.

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
    let submission = submission::check(record.id, request.into_inner()).map_err(|invalid| {
        tracing::warn!(event = "usage.rejected", dataplane.id = %record.id, reason = %invalid, "Refused a usage report.");
        Status::invalid_argument(format!("usage report refused: {invalid}"))
    })?;
    let buckets = submission.counts.len();
    let recorded = cp.usage.record(submission).await.map_err(|error| {
        Status::unavailable(format!(
            "the control plane could not store the report ({error}); send it again"
        ))
    })?;
    tracing::debug!(event = "usage.recorded", dataplane.id = %record.id, buckets, "Recorded a usage report.");
    Ok(Response::new(UsageReceipt {
        recorded: recorded
            .into_iter()
            .map(|(month, request_count)| UsageCount {
                bucket: month.to_string(),
                request_count,
            })
            .collect(),
    }))
}
