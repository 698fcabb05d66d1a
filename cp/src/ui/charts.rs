//! The status page's charts, drawn as SVG on the server: a bar chart (requests per month) and
//! a timeline (each license from creation to expiry, with today marked).
//!
//! Hand-written SVG inside the page: no script, no request for an image, no inline style (the
//! Content-Security-Policy forbids it; SVG presentation attributes and CSS classes do the
//! styling). Every label is outside text escaped by maud; each chart carries a `<title>` and
//! `role="img"` with an `aria-label`, and the same numbers are in a table beside it for screen
//! readers and for copying.

use maud::{Markup, html};
use time::Date;

/// Width of the drawing area in SVG units (the chart scales to its container).
const WIDTH: f64 = 720.0;
/// Height of a bar chart in SVG units.
const BAR_HEIGHT: f64 = 240.0;
/// Room for the axis labels.
const LEFT: f64 = 64.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 12.0;

/// A vertical bar chart of `bars` (label, value), in the given order.
pub fn bars(title: &str, test_id: &str, bars: &[(String, u64)]) -> Markup {
    let max = bars.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1);
    let scale_max = nice_ceiling(max);
    let plot_height = BAR_HEIGHT - TOP - BOTTOM;
    let slot = (WIDTH - LEFT) / bars.len().max(1) as f64;
    let bar_width = (slot * 0.7).max(1.0);
    let view_box = format!("0 0 {WIDTH} {BAR_HEIGHT}");
    html! {
        svg.chart.bars viewBox=(view_box) role="img" aria-label=(title) data-testid=(test_id)
            preserveAspectRatio="xMidYMid meet" {
            title { (title) }
            @for step in 0..=4u64 {
                @let value = scale_max / 4 * step;
                @let y = TOP + plot_height - plot_height * value as f64 / scale_max as f64;
                line.grid x1=(LEFT) x2=(WIDTH) y1=(fmt(y)) y2=(fmt(y)) {}
                text.axis x=(LEFT - 6.0) y=(fmt(y + 4.0)) text-anchor="end" { (compact(value)) }
            }
            @for (i, (label, value)) in bars.iter().enumerate() {
                @let height = plot_height * *value as f64 / scale_max as f64;
                @let x = LEFT + slot * i as f64 + (slot - bar_width) / 2.0;
                @let y = TOP + plot_height - height;
                rect.bar x=(fmt(x)) y=(fmt(y)) width=(fmt(bar_width)) height=(fmt(height))
                    data-label=(label) data-value=(value) {
                    title { (label) ": " (value) " requests" }
                }
                text.axis x=(fmt(x + bar_width / 2.0)) y=(fmt(BAR_HEIGHT - 8.0)) text-anchor="middle" {
                    (short_month(label))
                }
            }
        }
    }
}

/// One bar of a timeline.
#[derive(Debug, Clone)]
pub struct Span {
    pub label: String,
    pub start: Date,
    pub end: Date,
    /// CSS class of the bar (its urgency).
    pub class: &'static str,
}

/// Each span on one line over a shared time axis, with `today` marked.
pub fn timeline(title: &str, test_id: &str, spans: &[Span], today: Date) -> Markup {
    let row = 28.0;
    let label_width = 220.0;
    // Room above the rows for the "today" label, below them for the axis dates.
    let top = 26.0;
    let height = top + row * spans.len().max(1) as f64 + BOTTOM;
    let first = spans
        .iter()
        .map(|s| s.start)
        .min()
        .unwrap_or(today)
        .min(today);
    let last = spans
        .iter()
        .map(|s| s.end)
        .max()
        .unwrap_or(today)
        .max(today);
    let total_days = ((last - first).whole_days()).max(1) as f64;
    let plot_width = WIDTH - label_width - 8.0;
    let x_of = |d: Date| label_width + plot_width * (d - first).whole_days() as f64 / total_days;
    let view_box = format!("0 0 {WIDTH} {}", fmt(height));
    let today_x = x_of(today);
    // Keep the label inside the drawing when today is near either end.
    let today_anchor = if today_x > WIDTH - 90.0 {
        "end"
    } else if today_x < label_width + 90.0 {
        "start"
    } else {
        "middle"
    };
    html! {
        svg.chart.timeline viewBox=(view_box) role="img" aria-label=(title) data-testid=(test_id)
            preserveAspectRatio="xMidYMid meet" {
            title { (title) }
            @for (i, span) in spans.iter().enumerate() {
                @let y = top + row * i as f64;
                @let x = x_of(span.start);
                @let width = (x_of(span.end) - x).max(2.0);
                text.label x="4" y=(fmt(y + row * 0.6)) { (clip(&span.label, 28)) }
                rect class={ "span " (span.class) } x=(fmt(x)) y=(fmt(y + 4.0)) width=(fmt(width)) height=(fmt(row - 10.0)) {
                    title { (span.label) ": " (span.start) " to " (span.end) }
                }
            }
            line.today x1=(fmt(today_x)) x2=(fmt(today_x)) y1=(fmt(top - 6.0)) y2=(fmt(height - BOTTOM)) {}
            text.axis x=(fmt(today_x)) y=(fmt(top - 10.0)) text-anchor=(today_anchor) { "today " (today) }
            text.axis x=(fmt(label_width)) y=(fmt(height - 8.0)) text-anchor="start" { (first) }
            text.axis x=(fmt(WIDTH - 8.0)) y=(fmt(height - 8.0)) text-anchor="end" { (last) }
        }
    }
}

/// A round number at least `max`, for the top of the axis (1, 2, 2.5 or 5 times a power of
/// ten, made divisible by 4 for the grid lines).
fn nice_ceiling(max: u64) -> u64 {
    let mut magnitude = 1u64;
    while let Some(next) = magnitude.checked_mul(10).filter(|next| *next <= max) {
        magnitude = next;
    }
    for factor in [1u64, 2, 4, 5, 8, 10] {
        let candidate = magnitude.saturating_mul(factor);
        if candidate >= max && candidate % 4 == 0 {
            return candidate;
        }
    }
    max.div_ceil(4).saturating_mul(4).max(4)
}

/// `1.2k`, `3.4M`: an axis label.
fn compact(value: u64) -> String {
    match value {
        0..1_000 => value.to_string(),
        1_000..1_000_000 => trim(value as f64 / 1e3, "k"),
        1_000_000..1_000_000_000 => trim(value as f64 / 1e6, "M"),
        _ => trim(value as f64 / 1e9, "G"),
    }
}

fn trim(value: f64, unit: &str) -> String {
    let text = format!("{value:.1}");
    format!("{}{unit}", text.trim_end_matches(".0"))
}

/// `2026-11` as `Nov 26`; other labels as they are.
fn short_month(label: &str) -> String {
    const NAMES: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parsed = label
        .split_once('-')
        .and_then(|(y, m)| Some((y.get(2..)?, m.parse::<usize>().ok()?)));
    match parsed {
        Some((year, month @ 1..=12)) => format!("{} {year}", NAMES[month - 1]),
        _ => label.to_owned(),
    }
}

/// At most `max` characters of `text`, with an ellipsis when cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// A coordinate with one decimal.
fn fmt(value: f64) -> String {
    format!("{value:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn axis_tops_are_round_and_labels_compact() {
        assert_eq!(nice_ceiling(1), 4);
        assert_eq!(nice_ceiling(7), 8);
        assert_eq!(nice_ceiling(35), 40);
        assert_eq!(nice_ceiling(120), 200);
        assert_eq!(nice_ceiling(1_000_000), 1_000_000 * 4 / 4);
        assert!(nice_ceiling(u64::MAX) >= 4);
        assert_eq!(compact(950), "950");
        assert_eq!(compact(1_500), "1.5k");
        assert_eq!(compact(2_000_000), "2M");
        assert_eq!(short_month("2026-11"), "Nov 26");
        assert_eq!(short_month("other"), "other");
    }

    #[test]
    fn charts_escape_labels_and_draw_one_shape_per_item() {
        let chart = bars(
            "Requests",
            "usage-chart",
            &[("2026-10".into(), 5), ("<b>".into(), 0)],
        )
        .into_string();
        assert_eq!(chart.matches("<rect").count(), 2);
        assert!(
            chart.contains("&lt;b&gt;") && !chart.contains("<b>"),
            "{chart}"
        );
        let spans = [Span {
            label: "A & B <i>".into(),
            start: date!(2026 - 01 - 01),
            end: date!(2027 - 01 - 01),
            class: "ok",
        }];
        let line = timeline(
            "Licenses",
            "license-timeline",
            &spans,
            date!(2026 - 06 - 01),
        )
        .into_string();
        assert!(line.contains("A &amp; B &lt;i&gt;"), "{line}");
        assert!(line.contains("today 2026-06-01"));
        // Nothing to draw is still a chart.
        assert!(bars("Empty", "x", &[]).into_string().contains("<svg"));
        assert!(
            timeline("Empty", "y", &[], date!(2026 - 06 - 01))
                .into_string()
                .contains("<svg")
        );
    }
}
