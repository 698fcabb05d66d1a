//! When a data plane's record is removed: Kong's `cluster_data_plane_purge_delay` (14 days by
//! default). A data plane gone for good (a deleted VM, a scaled-down pod) would otherwise stay
//! in the listing, `UNHEALTHY`, for ever. One that is connected is never purged, and one that
//! never connected is measured from its registration.
//!
//! Silence is only counted while this control plane runs: a data plane cannot reach a control
//! plane that is down, so after two weeks of maintenance the fleet is not wiped on restart.

/// Whether a data plane may be purged at `now` (unix seconds).
///
/// `last_contact` is the newest of what the control plane remembers (live heartbeats) and what
/// it stored; `registered_at` stands in when it never connected; `running_since` is when this
/// control plane started; `delay` is in seconds.
pub fn purge_due(
    last_contact: Option<i64>,
    registered_at: i64,
    connected: bool,
    running_since: i64,
    now: i64,
    delay: i64,
) -> bool {
    if connected {
        return false;
    }
    let since = last_contact.unwrap_or(registered_at).max(running_since);
    now.saturating_sub(since) > delay
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn silent_longer_than_the_delay_and_not_connected() {
        let now = 100 * DAY;
        let delay = 14 * DAY;
        assert!(
            !purge_due(Some(now - delay), 0, false, 0, now, delay),
            "exactly the delay"
        );
        assert!(purge_due(Some(now - delay - 1), 0, false, 0, now, delay));
        assert!(
            !purge_due(Some(now - delay - 1), 0, true, 0, now, delay),
            "connected"
        );
        assert!(!purge_due(Some(now - 60), 0, false, 0, now, delay));
    }

    #[test]
    fn time_the_control_plane_was_down_does_not_count() {
        let now = 100 * DAY;
        let delay = 14 * DAY;
        let started = now - DAY;
        assert!(!purge_due(
            Some(now - 30 * DAY),
            0,
            false,
            started,
            now,
            delay
        ));
        assert!(purge_due(
            Some(now - 30 * DAY),
            0,
            false,
            now - 15 * DAY,
            now,
            delay
        ));
    }

    #[test]
    fn never_connected_counts_from_registration() {
        let now = 100 * DAY;
        let delay = 14 * DAY;
        assert!(!purge_due(None, now - delay, false, 0, now, delay));
        assert!(purge_due(None, now - delay - 1, false, 0, now, delay));
        assert!(!purge_due(None, now, false, 0, now, delay));
    }
}
