//! A short history of each data plane's sync events, for the status page's data-plane page.
//!
//! The log has every event (`dataplane.connected`, `sync.acked`, ...), but nothing stores them
//! per data plane, so this keeps the last [`KEPT`] of each in memory: on the node holding the
//! data plane's stream, from when this process started. It is lost on restart and a node shows
//! only what happened on its own streams; the page says so. Texts from the data plane are
//! already bounded and escaped ([`super::answer`]) and are clipped again here, so the history
//! of a fleet stays small.

use std::collections::VecDeque;

use serde::Serialize;
use uuid::Uuid;

use crate::model::Revision;

/// Events kept per data plane; older ones are dropped.
pub const KEPT: usize = 20;
/// Longest reason kept in an event, in characters.
const MAX_REASON_CHARS: usize = 200;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SyncEventKind {
    /// A stream opened.
    Connected,
    /// A stream closed (the data plane may still have another open).
    Disconnected,
    /// The data plane acknowledged the update at `revision`; it now serves `license`.
    Acked {
        revision: Revision,
        license: Option<Uuid>,
    },
    /// It refused `count` licenses of the update at `revision`.
    Rejected {
        revision: Revision,
        count: usize,
        reason: String,
    },
    /// It could not apply the update at all.
    ApplyFailed { reason: String },
}

/// One event and when it happened (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncEvent {
    pub at: i64,
    #[serde(flatten)]
    pub kind: SyncEventKind,
}

impl SyncEventKind {
    /// The event's stable name, as the log's `event` field says it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Connected => "dataplane.connected",
            Self::Disconnected => "dataplane.disconnected",
            Self::Acked { .. } => "sync.acked",
            Self::Rejected { .. } => "sync.rejected",
            Self::ApplyFailed { .. } => "sync.apply_failed",
        }
    }
}

/// The last [`KEPT`] events of one data plane, oldest first.
#[derive(Debug, Clone, Default)]
pub struct EventRing(VecDeque<SyncEvent>);

impl EventRing {
    /// Adds `kind` at `at`, dropping the oldest event when full. An acknowledgement repeating
    /// the previous one (same revision and license: a heartbeat-paced resend) is not added
    /// again, so acks cannot push the rarer events out.
    pub fn push(&mut self, at: i64, kind: SyncEventKind) {
        if matches!(kind, SyncEventKind::Acked { .. })
            && self.0.back().is_some_and(|last| last.kind == kind)
        {
            return;
        }
        let kind = match kind {
            SyncEventKind::Rejected {
                revision,
                count,
                reason,
            } => SyncEventKind::Rejected {
                revision,
                count,
                reason: clip(reason),
            },
            SyncEventKind::ApplyFailed { reason } => SyncEventKind::ApplyFailed {
                reason: clip(reason),
            },
            other => other,
        };
        if self.0.len() == KEPT {
            self.0.pop_front();
        }
        self.0.push_back(SyncEvent { at, kind });
    }

    /// The events, newest first.
    pub fn newest_first(&self) -> Vec<SyncEvent> {
        self.0.iter().rev().cloned().collect()
    }
}

fn clip(text: String) -> String {
    if text.chars().count() <= MAX_REASON_CHARS {
        return text;
    }
    let mut clipped: String = text.chars().take(MAX_REASON_CHARS).collect();
    clipped.push('…');
    clipped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_events_and_skips_repeated_acks() {
        let mut ring = EventRing::default();
        ring.push(1, SyncEventKind::Connected);
        let ack = SyncEventKind::Acked {
            revision: 3,
            license: None,
        };
        ring.push(2, ack.clone());
        ring.push(3, ack);
        assert_eq!(ring.newest_first().len(), 2);
        for at in 10..10 + KEPT as i64 {
            ring.push(
                at,
                SyncEventKind::ApplyFailed {
                    reason: "x".repeat(500),
                },
            );
        }
        let events = ring.newest_first();
        assert_eq!(events.len(), KEPT);
        assert_eq!(events[0].at, 10 + KEPT as i64 - 1);
        match &events[0].kind {
            SyncEventKind::ApplyFailed { reason } => {
                assert_eq!(reason.chars().count(), MAX_REASON_CHARS + 1)
            }
            other => panic!("{other:?}"),
        }
    }
}
