//! What the [`SyncMachine`](super::SyncMachine) tells its transport to do. Each action names
//! the log event the transport writes for it, so the events stay where they always were while
//! the rule that decides them is tested without a stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::dataplanes::SyncStatus;
use crate::model::{Revision, StoredLicense};

/// One update to send: `upserted` and `removed` are the delta to revision `revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub nonce: String,
    pub revision: Revision,
    pub upserted: Vec<Arc<StoredLicense>>,
    pub removed: Vec<Uuid>,
    /// When revision `revision` was committed by this process, if it was (for
    /// `licsync_cp_sync_propagation_seconds`).
    pub committed_at: Option<Instant>,
}

/// What an answered update leaves the data plane at, for the fleet's live state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    pub revision: Revision,
    pub status: SyncStatus,
    /// The license it serves: id and `updated_at`.
    pub active: Option<(Uuid, i64)>,
}

/// What the transport does next, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this update (`sync.sent`).
    Send(Update),
    /// The data plane applied update `nonce` (`sync.acked`).
    Acked { nonce: String, synced: Synced },
    /// The data plane refused some licenses of update `nonce` and kept the rest
    /// (`sync.rejected`).
    Rejected { nonce: String, synced: Synced },
    /// The data plane applied nothing of update `nonce`; it is sent again in `retry_in`
    /// (`sync.failed`).
    ApplyFailed {
        nonce: String,
        revision: Revision,
        retry_in: Duration,
    },
    /// Refresh the data plane's `last_seen` and answer its heartbeat.
    AnswerHeartbeat,
    /// An answer to an update that is not in flight (already answered, timed out, or never
    /// sent): nothing changes.
    Ignored { nonce: String },
    /// End the stream; nothing follows.
    End(End),
}

/// Why the machine ended the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// No Hello within [`super::HELLO_TIMEOUT`].
    HelloTimeout,
    /// Update `nonce` was not answered within `timeout` (`cluster.ack_timeout`).
    AckTimeout { nonce: String, timeout: Duration },
}
