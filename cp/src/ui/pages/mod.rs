//! The page templates (maud): pure functions from a [`super::model::Snapshot`] (and what a
//! page adds) to HTML, so each is unit-tested with sample fleets and timed by the benchmark.
//! maud escapes every spliced value; nothing here writes outside text unescaped.

pub mod dataplane;
pub mod dataplanes;
pub mod layout;
pub mod licenses;
pub mod login;
pub mod overview;
pub mod usage;

use maud::{Markup, html};

use super::model::{Urgency, health_word, sync_word};
use crate::dataplanes::{Health, SyncStatus};

/// A health word in its colour.
pub fn health_badge(health: Health) -> Markup {
    let class = match health {
        Health::Healthy => "ok",
        Health::Degraded => "warning",
        Health::Unhealthy => "expired",
        Health::Uninitialized => "muted",
    };
    html! { span class={ "badge " (class) } data-health=(health_word(health)) { (health_word(health)) } }
}

/// A sync status in its colour.
pub fn sync_badge(status: SyncStatus) -> Markup {
    let class = match status {
        SyncStatus::Normal => "ok",
        SyncStatus::Unknown => "muted",
        SyncStatus::VersionIncompatible => "warning",
        SyncStatus::LicenseRejected | SyncStatus::ApplyFailed => "expired",
    };
    html! { span class={ "badge " (class) } data-sync=(sync_word(status)) { (sync_word(status)) } }
}

/// `text` in the colour of `urgency`.
pub fn urgent(urgency: Urgency, text: &str) -> Markup {
    html! { span class={ "badge " (urgency.class()) } data-urgency=(urgency.class()) { (text) } }
}
