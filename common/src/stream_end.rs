//! Why the control plane ended or refused a `LicenseSync` call, in a form both sides read the
//! same way.
//!
//! The gRPC status code and message say it to a person; the status also carries the reason
//! as the trailer `licsync-end-reason` (one of [`EndReason::as_str`]), so an agent acts on
//! what happened (a revoked agent stops retrying every second, a replaced one warns that its
//! identity may be in use twice) without parsing the words, which may change. A control plane
//! that does not send the trailer leaves the agent on its generic path.

use tonic::Status;
use tonic::metadata::MetadataValue;

/// The trailer (gRPC metadata key) that carries the reason.
pub const TRAILER: &str = "licsync-end-reason";

/// Why the control plane ended a stream or refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// The data plane was revoked (`DELETE /clustering/data-planes/{id}`): `PERMISSION_DENIED`.
    Revoked,
    /// The data plane is not (or no longer) registered: `PERMISSION_DENIED`.
    NotRegistered,
    /// The certificate is one this data plane held before a newer one was used:
    /// `PERMISSION_DENIED`.
    CertificateSuperseded,
    /// The certificate is from the cluster CA but its serial was never issued to this data
    /// plane by this control plane: `PERMISSION_DENIED`.
    CertificateNotIssued,
    /// The client certificate expired while the stream was open: `UNAUTHENTICATED`.
    CertificateExpired,
    /// A newer stream of the same data plane took over: `ABORTED`.
    Replaced,
    /// An update stayed unanswered for `cluster.ack_timeout`: `DEADLINE_EXCEEDED`.
    AckTimeout,
    /// The control plane is shutting down: `UNAVAILABLE`.
    Shutdown,
}

impl EndReason {
    /// Every reason.
    pub const ALL: [EndReason; 8] = [
        Self::Revoked,
        Self::NotRegistered,
        Self::CertificateSuperseded,
        Self::CertificateNotIssued,
        Self::CertificateExpired,
        Self::Replaced,
        Self::AckTimeout,
        Self::Shutdown,
    ];

    /// The trailer's value, also logged as `cause`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::NotRegistered => "not_registered",
            Self::CertificateSuperseded => "certificate_superseded",
            Self::CertificateNotIssued => "certificate_not_issued",
            Self::CertificateExpired => "certificate_expired",
            Self::Replaced => "replaced",
            Self::AckTimeout => "ack_timeout",
            Self::Shutdown => "shutdown",
        }
    }

    /// The reason spelled `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// The status a data plane receives for this reason: `message` with this reason's code and
    /// trailer.
    pub fn status(self, message: impl Into<String>) -> Status {
        let code = match self {
            Self::Revoked
            | Self::NotRegistered
            | Self::CertificateSuperseded
            | Self::CertificateNotIssued => tonic::Code::PermissionDenied,
            Self::CertificateExpired => tonic::Code::Unauthenticated,
            Self::Replaced => tonic::Code::Aborted,
            Self::AckTimeout => tonic::Code::DeadlineExceeded,
            Self::Shutdown => tonic::Code::Unavailable,
        };
        let mut status = Status::new(code, message);
        status
            .metadata_mut()
            .insert(TRAILER, MetadataValue::from_static(self.as_str()));
        status
    }

    /// The reason a status carries, if it carries a known one.
    pub fn of(status: &Status) -> Option<Self> {
        let value = status.metadata().get(TRAILER)?.to_str().ok()?;
        Self::parse(value)
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_survives_the_trailer_with_its_code() {
        for reason in EndReason::ALL {
            let status = reason.status("words");
            assert_eq!(EndReason::of(&status), Some(reason));
            assert_eq!(status.message(), "words");
            // Through the wire form tonic writes into the trailers and reads back.
            let response = status.clone().into_http::<()>();
            let back = Status::from_header_map(response.headers()).unwrap();
            assert_eq!(EndReason::of(&back), Some(reason), "{back:?}");
            assert_eq!(back.code(), status.code());
        }
        assert_eq!(
            EndReason::Revoked.status("x").code(),
            tonic::Code::PermissionDenied
        );
        assert_eq!(EndReason::Replaced.status("x").code(), tonic::Code::Aborted);
        assert_eq!(
            EndReason::AckTimeout.status("x").code(),
            tonic::Code::DeadlineExceeded
        );
        assert_eq!(
            EndReason::Shutdown.status("x").code(),
            tonic::Code::Unavailable
        );
    }

    #[test]
    fn unknown_or_missing_trailers_carry_no_reason() {
        assert_eq!(EndReason::of(&Status::permission_denied("x")), None);
        let mut status = Status::aborted("x");
        status
            .metadata_mut()
            .insert(TRAILER, MetadataValue::from_static("something_new"));
        assert_eq!(EndReason::of(&status), None);
    }
}
