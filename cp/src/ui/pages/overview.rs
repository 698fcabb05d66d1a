//! `GET /ui`: the active license, the fleet's health and sync counts, and what needs action.

use maud::{Markup, html};

use super::{health_badge, sync_badge, urgent};
use crate::ui::model::{Snapshot, Urgency, days_left, mask_key};

/// The overview's live content.
pub fn overview(snapshot: &Snapshot) -> Markup {
    let today = snapshot.today();
    let registered = snapshot.dataplanes.len();
    let connected = snapshot.dataplanes.iter().filter(|d| d.connected).count();
    let warnings = snapshot.warnings();
    html! {
        section #license-panel.panel data-testid="license-panel" aria-labelledby="license-heading" {
            h2 #license-heading { "Active license" }
            @match snapshot.active() {
                None => {
                    p data-testid="no-license" {
                        (urgent(Urgency::Error, "UNLICENSED"))
                        " No license is stored; add one with POST /licenses."
                    }
                }
                Some(active) => {
                    @let days = days_left(active.expires, today);
                    @let urgency = Urgency::of_license(active.expires, today);
                    dl.facts {
                        dt { "Customer" }
                        dd data-testid="license-customer" { (active.customer) }
                        dt { "License key" }
                        dd data-testid="license-key" { code { (mask_key(&active.license_key)) } }
                        @if let Some(product) = &active.product {
                            dt { "Subscription" }
                            dd { (product) }
                        }
                        dt { "Expires" }
                        dd data-testid="license-expiry" data-days-left=(days) {
                            (active.expires) " "
                            @if days < 0 {
                                (urgent(urgency, &format!("expired {} days ago", -days)))
                            } @else if days == 0 {
                                (urgent(urgency, "expires today"))
                            } @else {
                                (urgent(urgency, &format!("{days} days left")))
                            }
                        }
                        dt { "Data planes" }
                        dd data-testid="entitlement" {
                            (registered) " registered"
                            @match active.entitled {
                                Some(entitled) => {
                                    " of " (entitled) " entitled"
                                    @if registered as u64 > entitled {
                                        " " (urgent(Urgency::Error, "exceeded"))
                                    }
                                }
                                None => { " (the license sets no limit)" }
                            }
                        }
                    }
                }
            }
        }
        section.panel data-testid="warnings" aria-labelledby="warnings-heading" {
            h2 #warnings-heading { "Needs action" }
            @if warnings.is_empty() {
                p data-testid="no-warnings" { "Nothing needs action." }
            } @else {
                ul.warnings {
                    @for warning in &warnings {
                        li class=(warning.urgency.class()) data-warning=(warning.kind) {
                            (urgent(warning.urgency, warning.urgency.class())) " " (warning.text)
                        }
                    }
                }
            }
        }
        div.columns {
            section.panel data-testid="health-counts" aria-labelledby="health-heading" {
                h2 #health-heading { "Health" }
                p { (connected) " of " (registered) " data planes connected." }
                table {
                    caption.visually-hidden { "Data planes by health" }
                    thead { tr { th scope="col" { "Health" } th.num scope="col" { "Data planes" } } }
                    tbody {
                        @for (health, count) in snapshot.health_counts() {
                            tr {
                                td { (health_badge(health)) }
                                td.num data-count=(count) {
                                    a href={ "/ui/data-planes?health=" (crate::ui::model::health_word(health)) } { (count) }
                                }
                            }
                        }
                    }
                }
            }
            section.panel data-testid="sync-counts" aria-labelledby="sync-heading" {
                h2 #sync-heading { "Sync status" }
                table {
                    caption.visually-hidden { "Data planes by sync status" }
                    thead { tr { th scope="col" { "Sync status" } th.num scope="col" { "Data planes" } } }
                    tbody {
                        @for (status, count) in snapshot.sync_counts() {
                            tr {
                                td { (sync_badge(status)) }
                                td.num data-count=(count) {
                                    a href={ "/ui/data-planes?sync=" (crate::ui::model::sync_word(status)) } { (count) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
