//! `GET /ui/data-planes`: the fleet as a table, sorted and filtered by query parameters
//! ([`crate::ui::table`]), and the filter form (outside the live region, so a refresh never
//! eats what is being typed).

use maud::{Markup, html};

use super::{health_badge, sync_badge, urgent};
use crate::ui::model::{Snapshot, Urgency, ago, health_word, sync_word, timestamp};
use crate::ui::table::{SortKey, TableQuery, healths, syncs};

/// The filter form.
pub fn controls(query: &TableQuery) -> Markup {
    html! {
        form.filters method="get" action="/ui/data-planes" role="search" data-testid="dataplane-filters" {
            div {
                label for="q" { "Name, host, IP or id" }
                input #q type="search" name="q" value=(query.q) maxlength="100";
            }
            div {
                label for="health" { "Health" }
                select #health name="health" {
                    option value="" selected[query.health.is_none()] { "any" }
                    @for health in healths() {
                        option value=(health_word(health)) selected[query.health == Some(health)] { (health_word(health)) }
                    }
                }
            }
            div {
                label for="sync" { "Sync status" }
                select #sync name="sync" {
                    option value="" selected[query.sync.is_none()] { "any" }
                    @for status in syncs() {
                        option value=(sync_word(status)) selected[query.sync == Some(status)] { (sync_word(status)) }
                    }
                }
            }
            div {
                label for="current" { "Current license" }
                select #current name="current" {
                    option value="" selected[query.current.is_none()] { "any" }
                    option value="yes" selected[query.current == Some(true)] { "yes" }
                    option value="no" selected[query.current == Some(false)] { "no" }
                }
            }
            input type="hidden" name="sort" value=(query.sort.param());
            @if query.descending {
                input type="hidden" name="order" value="desc";
            }
            button type="submit" { "Filter" }
            a href="/ui/data-planes" { "Clear" }
        }
    }
}

/// The table's live content.
pub fn table(snapshot: &Snapshot, query: &TableQuery) -> Markup {
    let rows = query.apply(snapshot);
    let names = snapshot.node_names();
    let header = |key: SortKey, label: &str| {
        let sorted = query.sort == key;
        let aria = match (sorted, query.descending) {
            (false, _) => "none",
            (true, false) => "ascending",
            (true, true) => "descending",
        };
        html! {
            th scope="col" aria-sort=(aria) {
                a href=(query.sort_link(key)) { (label) @if sorted { @if query.descending { " ▼" } @else { " ▲" } } }
            }
        }
    };
    html! {
        p #dataplane-count data-testid="dataplane-count" data-shown=(rows.len()) data-total=(snapshot.dataplanes.len()) {
            "Showing " (rows.len()) " of " (snapshot.dataplanes.len()) " data planes."
        }
        @if snapshot.dataplanes.is_empty() {
            p data-testid="no-dataplanes" {
                "No data plane is registered yet. Create a registration token (POST /registration-tokens) and run licsync-dp registration create."
            }
        } @else {
            div.scroll {
                table #dataplanes.fleet data-testid="dataplanes-table" {
                    caption.visually-hidden { "Registered data planes" }
                    thead {
                        tr {
                            (header(SortKey::Name, "Name"))
                            (header(SortKey::Host, "Host"))
                            (header(SortKey::Version, "Version"))
                            (header(SortKey::Health, "Health"))
                            (header(SortKey::Sync, "Sync"))
                            (header(SortKey::License, "License"))
                            (header(SortKey::Cert, "Certificate expires"))
                            (header(SortKey::Seen, "Last seen"))
                            (header(SortKey::Node, "CP node"))
                        }
                    }
                    tbody {
                        @for dp in rows {
                            @let current = snapshot.holds_current(dp);
                            @let cert = Urgency::of_certificate(dp.cert_expires_at, snapshot.now);
                            tr data-testid="dataplane-row" data-dataplane-id=(dp.id) {
                                td data-label="Name" { a href={ "/ui/data-planes/" (dp.id) } { (dp.name) } }
                                td data-label="Host" { (dp.hostname) br; small { (dp.ip) } }
                                td data-label="Version" { (dp.version) }
                                td data-label="Health" { (health_badge(dp.health)) }
                                td data-label="Sync" { (sync_badge(dp.sync_status)) }
                                td data-label="License" data-current=(if current { "yes" } else { "no" }) {
                                    @match dp.license_id {
                                        Some(id) => {
                                            code title=(id) { (short_id(&id)) } " "
                                            @if current { (urgent(Urgency::Ok, "current")) } @else { (urgent(Urgency::Warning, "old")) }
                                        }
                                        None => { (urgent(if current { Urgency::Ok } else { Urgency::Warning }, "none")) }
                                    }
                                }
                                td data-label="Certificate expires" { (urgent(cert, &timestamp(dp.cert_expires_at))) }
                                td data-label="Last seen" {
                                    @match dp.last_seen {
                                        Some(at) => { span title=(timestamp(at)) { (ago(at, snapshot.now)) } }
                                        None => { "never" }
                                    }
                                }
                                td data-label="CP node" {
                                    @match dp.control_plane {
                                        Some(node) => { span title=(node) { (names.get(&node).copied().unwrap_or("?")) } }
                                        None => { "–" }
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

/// The first 8 characters of an id: enough to tell ids apart on one page.
pub fn short_id(id: &uuid::Uuid) -> String {
    id.to_string()[..8].to_owned()
}
