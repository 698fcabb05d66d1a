//! `GET /ui/usage[?dataplane=ID]`: requests per month over the last twelve months as a bar
//! chart with `/license/report`'s monthly totals beside it, and on demand the same for one
//! data plane.

use maud::{Markup, html};

use crate::ui::charts;
use crate::usage::UsageMonth;
use crate::usage::report::{Counter, DataPlaneUsage, MONTHS, UsageTotals};

/// What the usage page shows.
#[derive(Debug, Clone)]
pub struct UsageView {
    /// The report's numbers, with the per-data-plane breakdown.
    pub totals: UsageTotals,
    /// The first month shown.
    pub since: UsageMonth,
    /// The data plane asked for, when one was.
    pub selected: Option<uuid::Uuid>,
}

/// Data planes listed by their totals.
const LISTED: usize = 50;

/// Every month from `since` on ([`MONTHS`] of them), oldest first, with its count (0 where
/// nothing was reported), so the chart has no gaps.
fn months(since: UsageMonth, counters: &[Counter]) -> Vec<(String, u64)> {
    let mut month = since;
    let mut shown = Vec::with_capacity(MONTHS as usize);
    for _ in 0..MONTHS {
        let label = month.to_string();
        let count = counters
            .iter()
            .find(|c| c.bucket == label)
            .map_or(0, |c| c.request_count);
        shown.push((label, count));
        month = forward(month);
    }
    shown
}

/// The month after `month` (itself at the end of the calendar).
fn forward(month: UsageMonth) -> UsageMonth {
    let (year, number) = (month.year(), u8::from(month.month()));
    let (year, number) = if number == 12 {
        (year + 1, 1)
    } else {
        (year, number + 1)
    };
    UsageMonth::new(year, number).unwrap_or(month)
}

/// The usage page's live content.
pub fn usage(view: &UsageView) -> Markup {
    let all = months(view.since, &view.totals.counters);
    let per_dp: &[DataPlaneUsage] = view.totals.dataplanes.as_deref().unwrap_or(&[]);
    let selected = view
        .selected
        .and_then(|id| per_dp.iter().find(|d| d.id == id));
    let mut top: Vec<&DataPlaneUsage> = per_dp.iter().collect();
    top.sort_by(|a, b| {
        b.total_requests
            .cmp(&a.total_requests)
            .then(a.name.cmp(&b.name))
    });
    html! {
        section.panel aria-labelledby="all-heading" {
            h2 #all-heading { "All data planes" }
            p data-testid="usage-total" data-total=(view.totals.total_requests) {
                (view.totals.total_requests) " requests in the last " (MONTHS) " months (as GET /license/report counts them)."
            }
            div.chart-and-table {
                (charts::bars("Requests per month, all data planes", "usage-chart", &all))
                (month_table("usage-totals", "Requests per month, all data planes", &view.totals.counters))
            }
        }
        @if let Some(id) = view.selected {
            section.panel data-testid="dataplane-usage" aria-labelledby="one-heading" {
                @match selected {
                    Some(dp) => {
                        h2 #one-heading { "Data plane " (dp.name) }
                        p { (dp.total_requests) " requests. " a href="/ui/usage" { "All data planes" } }
                        @let one = months(view.since, &dp.counters);
                        div.chart-and-table {
                            (charts::bars(&format!("Requests per month, data plane {}", dp.name), "dataplane-usage-chart", &one))
                            (month_table("dataplane-usage-totals", "Requests per month, this data plane", &dp.counters))
                        }
                    }
                    None => {
                        h2 #one-heading { "Unknown data plane" }
                        p.alert.warning { "No registered data plane has the id " code { (id) } "." }
                    }
                }
            }
        }
        section.panel aria-labelledby="per-heading" {
            h2 #per-heading { "Per data plane" }
            @if top.is_empty() {
                p { "No data plane is registered." }
            } @else {
                div.scroll {
                    table data-testid="usage-per-dataplane" {
                        caption.visually-hidden { "Requests per data plane over the last twelve months" }
                        thead { tr { th scope="col" { "Data plane" } th.num scope="col" { "Requests" } } }
                        tbody {
                            @for dp in top.iter().take(LISTED) {
                                tr data-dataplane-id=(dp.id) {
                                    td { a href={ "/ui/usage?dataplane=" (dp.id) } { (dp.name) } }
                                    td.num { (dp.total_requests) }
                                }
                            }
                        }
                    }
                }
                @if top.len() > LISTED {
                    p.help { "The " (LISTED) " busiest of " (top.len()) " data planes; GET /license/report?by=dataplane lists them all." }
                }
            }
        }
    }
}

fn month_table(test_id: &str, caption: &str, counters: &[Counter]) -> Markup {
    html! {
        table.months data-testid=(test_id) {
            caption.visually-hidden { (caption) }
            thead { tr { th scope="col" { "Month" } th.num scope="col" { "Requests" } } }
            tbody {
                @if counters.is_empty() {
                    tr { td colspan="2" { "No usage reported yet." } }
                }
                @for counter in counters {
                    tr data-month=(counter.bucket) {
                        td { (counter.bucket) }
                        td.num { (counter.request_count) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_fill_every_gap_oldest_first() {
        let since = UsageMonth::new(2025, 12).unwrap();
        let counters = vec![Counter {
            bucket: "2026-11".into(),
            request_count: 7,
        }];
        let all = months(since, &counters);
        assert_eq!(all.len(), MONTHS as usize);
        assert_eq!(all[0], ("2025-12".into(), 0));
        assert_eq!(all[11], ("2026-11".into(), 7));
    }
}
