//! How a `Sync` stream ended, and what the data plane is told about it.
//!
//! When the control plane ends a stream (revocation, a newer stream of the same data plane,
//! an unanswered update, an expired certificate, shutdown) it ends it with a gRPC status whose
//! code and message say why and whose `licsync-end-reason` trailer
//! ([`licsync_common::stream_end`]) lets the agent act on it; never with `OK`, which would
//! leave the agent guessing. When the data plane ends it there is no one to tell. Either way
//! the control plane logs `dataplane.disconnected` with the short [`Ended::reason`] and, for
//! its own ends, the `cause`.

use std::time::Duration;

use licsync_common::stream_end::EndReason;
use tonic::Status;
use uuid::Uuid;

/// Why a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ended {
    /// The control plane ended it: `cause` goes in the trailer, `message` to the data plane.
    ByControlPlane {
        cause: EndReason,
        /// Short, for the control plane's log (`reason`).
        reason: &'static str,
        /// What the data plane is told, in words it can act on.
        message: String,
    },
    /// The data plane, its connection or the control plane's own plumbing ended it; nothing is
    /// sent.
    Other(String),
}

impl Ended {
    pub fn revoked(id: Uuid) -> Self {
        Self::ByControlPlane {
            cause: EndReason::Revoked,
            reason: "data plane revoked",
            message: format!(
                "revoked: data plane {id} was revoked at the control plane; register it again with a new registration token (`licsync-dp registration create`)"
            ),
        }
    }

    pub fn replaced(id: Uuid) -> Self {
        Self::ByControlPlane {
            cause: EndReason::Replaced,
            reason: "replaced by a newer stream",
            message: format!(
                "replaced by a newer stream of data plane {id}; if this repeats, another agent with the same registration file is running"
            ),
        }
    }

    pub fn ack_timeout(nonce: &str, timeout: Duration) -> Self {
        Self::ByControlPlane {
            cause: EndReason::AckTimeout,
            reason: "update not acknowledged in time",
            message: format!(
                "no answer to update {nonce} in {} s; reconnect and resynchronise",
                timeout.as_secs_f64()
            ),
        }
    }

    pub fn certificate_expired(id: Uuid) -> Self {
        Self::ByControlPlane {
            cause: EndReason::CertificateExpired,
            reason: "client certificate expired",
            message: format!(
                "the client certificate of data plane {id} expired; renew it with `licsync-dp registration renew`"
            ),
        }
    }

    pub fn shutdown() -> Self {
        Self::ByControlPlane {
            cause: EndReason::Shutdown,
            reason: "control plane shutting down",
            message: "control plane shutting down; reconnect with backoff".into(),
        }
    }

    /// Short, for the control plane's `dataplane.disconnected` line.
    pub fn reason(&self) -> &str {
        match self {
            Self::ByControlPlane { reason, .. } => reason,
            Self::Other(reason) => reason,
        }
    }

    /// The `cause` field: the trailer's value, or `None` when the data plane ended it.
    pub fn cause(&self) -> Option<&'static str> {
        match self {
            Self::ByControlPlane { cause, .. } => Some(cause.as_str()),
            Self::Other(_) => None,
        }
    }

    /// What ends the response stream, `None` when nobody is listening.
    pub fn status(&self) -> Option<Status> {
        match self {
            Self::ByControlPlane { cause, message, .. } => Some(cause.status(message.clone())),
            Self::Other(_) => None,
        }
    }
}

impl From<String> for Ended {
    fn from(reason: String) -> Self {
        Self::Other(reason)
    }
}

impl From<&str> for Ended {
    fn from(reason: &str) -> Self {
        Self::Other(reason.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn every_end_by_the_control_plane_has_its_own_code_message_and_trailer() {
        let id = Uuid::nil();
        let cases = [
            (Ended::revoked(id), Code::PermissionDenied, "revoked"),
            (
                Ended::replaced(id),
                Code::Aborted,
                "replaced by a newer stream",
            ),
            (
                Ended::ack_timeout("7-1", Duration::from_secs(60)),
                Code::DeadlineExceeded,
                "no answer to update 7-1 in 60 s",
            ),
            (
                Ended::certificate_expired(id),
                Code::Unauthenticated,
                "expired",
            ),
            (
                Ended::shutdown(),
                Code::Unavailable,
                "control plane shutting down",
            ),
        ];
        let mut causes = Vec::new();
        for (ended, code, words) in cases {
            let status = ended.status().unwrap();
            assert_eq!(status.code(), code, "{ended:?}");
            assert!(status.message().contains(words), "{status:?}");
            assert_eq!(EndReason::of(&status).map(EndReason::as_str), ended.cause());
            causes.push(ended.cause().unwrap());
        }
        causes.sort_unstable();
        causes.dedup();
        assert_eq!(causes.len(), 5, "distinct causes");
        let gone = Ended::from("data plane closed the stream");
        assert!(gone.status().is_none());
        assert_eq!(gone.cause(), None);
        assert_eq!(gone.reason(), "data plane closed the stream");
    }

    #[test]
    fn sub_second_timeouts_are_not_rounded_to_zero() {
        let status = Ended::ack_timeout("1-1", Duration::from_millis(1500))
            .status()
            .unwrap();
        assert!(status.message().contains("in 1.5 s"), "{status:?}");
    }
}
