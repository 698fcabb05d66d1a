//! `GET /ui/data-planes/{id}`: one data plane's facts and its recent sync events.

use maud::{Markup, html};

use super::dataplanes::short_id;
use super::{health_badge, sync_badge, urgent};
use crate::dataplanes::{DataPlaneView, SyncEvent, SyncEventKind, events};
use crate::ui::model::{Snapshot, Urgency, ago, timestamp};

/// The data plane's live content.
pub fn dataplane(snapshot: &Snapshot, dp: &DataPlaneView, events: &[SyncEvent]) -> Markup {
    let current = snapshot.holds_current(dp);
    let names = snapshot.node_names();
    let cert = Urgency::of_certificate(dp.cert_expires_at, snapshot.now);
    html! {
        section.panel data-testid="dataplane-facts" data-dataplane-id=(dp.id) aria-labelledby="facts-heading" {
            h2 #facts-heading { "Facts" }
            dl.facts {
                dt { "Id" } dd { code { (dp.id) } }
                dt { "Host" } dd { (dp.hostname) " (" (dp.ip) ")" }
                dt { "Version" } dd { (dp.version) }
                dt { "Health" } dd { (health_badge(dp.health)) }
                dt { "Connected" } dd data-testid="dataplane-connected" { @if dp.connected { "yes" } @else { "no" } }
                dt { "Sync status" } dd { (sync_badge(dp.sync_status)) }
                @if let Some(error) = &dp.sync_error {
                    dt { "Sync error" } dd { (error) }
                }
                dt { "Revision acknowledged" } dd { (dp.revision) }
                dt { "License held" }
                dd data-testid="dataplane-license" data-current=(if current { "yes" } else { "no" }) {
                    @match dp.license_id {
                        Some(id) => {
                            code { (id) } " "
                            @if current { (urgent(Urgency::Ok, "current")) } @else { (urgent(Urgency::Warning, "not the current license")) }
                        }
                        None => { "none" }
                    }
                }
                dt { "Certificate expires" } dd { (urgent(cert, &timestamp(dp.cert_expires_at))) }
                dt { "Registered" } dd { (timestamp(dp.registered_at)) }
                dt { "Last seen" }
                dd {
                    @match dp.last_seen {
                        Some(at) => { (timestamp(at)) " (" (ago(at, snapshot.now)) ")" }
                        None => { "never" }
                    }
                }
                dt { "CP node" }
                dd {
                    @match dp.control_plane {
                        Some(node) => { (names.get(&node).copied().unwrap_or("?")) " (" code { (short_id(&node)) } ")" }
                        None => { "none (not connected)" }
                    }
                }
            }
        }
        @if let Some(rejection) = &dp.last_rejection {
            section.panel data-testid="last-rejection" aria-labelledby="rejection-heading" {
                h2 #rejection-heading { "Last refused update" }
                p { (timestamp(rejection.at)) ", revision " (rejection.revision) ": " (rejection.reason) }
                ul {
                    @for license in &rejection.rejected {
                        li { code { (license.id) } ": " (license.reason) }
                    }
                }
                @if rejection.rejected_total > rejection.rejected.len() {
                    p { "… and " (rejection.rejected_total - rejection.rejected.len()) " more." }
                }
            }
        }
        section.panel data-testid="sync-events" aria-labelledby="events-heading" {
            h2 #events-heading { "Recent sync events" }
            p.help {
                "The last " (events::KEPT) " events seen by this control-plane node since it started (kept in memory; the log has them all)."
            }
            @if events.is_empty() {
                p data-testid="no-events" { "None on this node." }
            } @else {
                table {
                    caption.visually-hidden { "Recent sync events, newest first" }
                    thead { tr { th scope="col" { "When" } th scope="col" { "Event" } th scope="col" { "Details" } } }
                    tbody {
                        @for event in events {
                            tr data-event=(event.kind.name()) {
                                td { (timestamp(event.at)) }
                                td { code { (event.kind.name()) } }
                                td { (details(&event.kind)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn details(kind: &SyncEventKind) -> Markup {
    html! {
        @match kind {
            SyncEventKind::Connected => { "stream opened" }
            SyncEventKind::Disconnected => { "stream closed" }
            SyncEventKind::Acked { revision, license } => {
                "revision " (revision) ", serving "
                @match license { Some(id) => { code { (short_id(id)) } } None => { "no license" } }
            }
            SyncEventKind::Rejected { revision, count, reason } => {
                "revision " (revision) ": refused " (count) " license(s): " (reason)
            }
            SyncEventKind::ApplyFailed { reason } => { (reason) }
        }
    }
}

/// The page for an id no registered data plane has.
pub fn unknown(id: &str) -> Markup {
    html! {
        p.alert.warning data-testid="not-found" {
            "No registered data plane has the id " code { (id) } "; it may have been revoked or purged. "
            a href="/ui/data-planes" { "All data planes" }
        }
    }
}
