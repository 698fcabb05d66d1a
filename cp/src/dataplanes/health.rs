//! How healthy a data plane is, from its last contact, as Red Hat Advanced Cluster Security
//! grades its secured clusters: an operator reads one word instead of comparing timestamps.
//!
//! Heartbeats refresh `last_seen` every `sync.heartbeat_interval` (30 s by default), so a data
//! plane that is up never ages past [`HEALTHY_WITHIN`]; one that missed a few heartbeats is
//! [`Health::Degraded`]; one silent for longer is [`Health::Unhealthy`]. Computed at request
//! time from the caller's `now`, so tests pin every boundary without waiting.

use serde::Serialize;

/// Last contact at most this many seconds ago: healthy.
pub const HEALTHY_WITHIN: i64 = 60;
/// Last contact at most this many seconds ago (and more than [`HEALTHY_WITHIN`]): degraded.
pub const DEGRADED_WITHIN: i64 = 3 * 60;

/// A data plane's health, serialised in RHACS's upper-case words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Health {
    /// Heard from within the last minute.
    Healthy,
    /// Heard from within the last three minutes, not the last one.
    Degraded,
    /// Silent for more than three minutes.
    Unhealthy,
    /// Registered but never connected.
    Uninitialized,
}

/// The health of a data plane last heard from at `last_seen` (unix seconds), as of `now`.
/// A `last_seen` ahead of `now` (clock steps back) counts as just seen.
pub fn health(last_seen: Option<i64>, now: i64) -> Health {
    let Some(last_seen) = last_seen else {
        return Health::Uninitialized;
    };
    let age = now.saturating_sub(last_seen);
    if age <= HEALTHY_WITHIN {
        Health::Healthy
    } else if age <= DEGRADED_WITHIN {
        Health::Degraded
    } else {
        Health::Unhealthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_boundary_of_the_rhacs_rule() {
        let now = 1_000_000;
        let at = |age: i64| health(Some(now - age), now);
        assert_eq!(health(None, now), Health::Uninitialized);
        assert_eq!(at(0), Health::Healthy);
        assert_eq!(at(60), Health::Healthy);
        assert_eq!(at(61), Health::Degraded);
        assert_eq!(at(180), Health::Degraded);
        assert_eq!(at(181), Health::Unhealthy);
        assert_eq!(at(86_400 * 30), Health::Unhealthy);
        assert_eq!(
            at(-5),
            Health::Healthy,
            "a clock step back is not an outage"
        );
    }

    #[test]
    fn serialised_as_rhacs_words() {
        let words: Vec<String> = [
            Health::Healthy,
            Health::Degraded,
            Health::Unhealthy,
            Health::Uninitialized,
        ]
        .iter()
        .map(|h| serde_json::to_string(h).unwrap())
        .collect();
        assert_eq!(
            words,
            [
                "\"HEALTHY\"",
                "\"DEGRADED\"",
                "\"UNHEALTHY\"",
                "\"UNINITIALIZED\""
            ]
        );
    }
}
