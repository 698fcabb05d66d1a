//! `GET /ui/licenses`: every stored license on a timeline (creation to expiry, today marked)
//! and in a table with the data planes that hold each.

use maud::{Markup, html};

use super::urgent;
use crate::ui::charts::{self, Span};
use crate::ui::model::{Snapshot, Urgency, days_left, mask_key};

/// Data planes named per license before the rest are only counted.
const NAMED_HOLDERS: usize = 10;

/// The licenses' live content.
pub fn licenses(snapshot: &Snapshot) -> Markup {
    let today = snapshot.today();
    let holders = snapshot.holders();
    let spans: Vec<Span> = snapshot
        .licenses
        .iter()
        .map(|l| Span {
            label: format!("{} {}", l.customer, mask_key(&l.license_key)),
            start: l.created,
            end: l.expires,
            class: Urgency::of_license(l.expires, today).class(),
        })
        .collect();
    html! {
        @if snapshot.licenses.is_empty() {
            p data-testid="no-licenses" { "No license is stored. Add one with POST /licenses." }
        } @else {
            section.panel aria-labelledby="timeline-heading" {
                h2 #timeline-heading { "Validity" }
                (charts::timeline("License validity from creation to expiry", "license-timeline", &spans, today))
            }
            section.panel aria-labelledby="table-heading" {
                h2 #table-heading { "Stored licenses" }
                div.scroll {
                    table data-testid="licenses-table" {
                        caption.visually-hidden { "Stored licenses and the data planes holding them" }
                        thead {
                            tr {
                                th scope="col" { "Customer" }
                                th scope="col" { "Key" }
                                th scope="col" { "Subscription" }
                                th scope="col" { "Created" }
                                th scope="col" { "Expires" }
                                th scope="col" { "Entitles" }
                                th scope="col" { "Held by" }
                            }
                        }
                        tbody {
                            @for license in &snapshot.licenses {
                                @let days = days_left(license.expires, today);
                                @let held = holders.get(&license.id).map(Vec::as_slice).unwrap_or(&[]);
                                tr data-testid="license-row" data-license-id=(license.id) data-active=(if license.active { "yes" } else { "no" }) {
                                    td data-label="Customer" {
                                        (license.customer)
                                        @if license.active { " " (urgent(Urgency::Ok, "active")) }
                                    }
                                    td data-label="Key" { code { (mask_key(&license.license_key)) } }
                                    td data-label="Subscription" { (license.product.as_deref().unwrap_or("–")) }
                                    td data-label="Created" { (license.created) }
                                    td data-label="Expires" {
                                        (license.expires) " "
                                        (urgent(Urgency::of_license(license.expires, today),
                                            &if days < 0 { format!("expired {} days ago", -days) } else { format!("{days} days left") }))
                                    }
                                    td data-label="Entitles" {
                                        @match license.entitled { Some(n) => { (n) " data planes" } None => { "no limit" } }
                                    }
                                    td data-label="Held by" data-holders=(held.len()) {
                                        @if held.is_empty() {
                                            "no data plane"
                                        } @else {
                                            (held.len()) ": "
                                            @for (i, dp) in held.iter().take(NAMED_HOLDERS).enumerate() {
                                                @if i > 0 { ", " }
                                                a href={ "/ui/data-planes/" (dp.id) } { (dp.name) }
                                            }
                                            @if held.len() > NAMED_HOLDERS { ", …" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
