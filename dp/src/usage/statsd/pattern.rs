//! Which statsd counters are gateway requests: metric-name patterns.
//!
//! A pattern is a dot-separated metric name in which a segment may be `*`, matching exactly
//! one segment of any content. `kong.service.*.request.count` matches
//! `kong.service.orders.request.count` but not `kong.service.orders.user.bob.request.count`
//! (Kong's per-consumer counter for the same request, which would count it twice). Globs per
//! segment rather than regular expressions: statsd names are dot-structured, a segment count
//! is what tells a request counter from its per-consumer or per-status siblings, and an
//! operator can read at a glance what a pattern takes.
//!
//! A counter is counted when it matches an entry of `usage.statsd_patterns` and none of
//! `usage.statsd_exclude`.

use std::fmt;
use std::str::FromStr;

/// Longest pattern accepted, in bytes.
const MAX_PATTERN_BYTES: usize = 256;

/// One metric-name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricPattern {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Any,
    Literal(String),
}

/// A pattern that cannot be used, and how to write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{pattern}' {reason}")]
pub struct BadPattern {
    pub pattern: String,
    pub reason: &'static str,
}

impl FromStr for MetricPattern {
    type Err = BadPattern;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |reason| BadPattern {
            pattern: text.chars().take(64).collect(),
            reason,
        };
        if text.is_empty() {
            return Err(bad(
                "is empty; write a metric name such as kong.service.*.request.count",
            ));
        }
        if text.len() > MAX_PATTERN_BYTES {
            return Err(bad("is longer than 256 bytes"));
        }
        if text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ':' | '|' | '@'))
        {
            return Err(bad(
                "contains whitespace or one of ':', '|', '@', which statsd names never hold; write the name only",
            ));
        }
        let segments = text
            .split('.')
            .map(|segment| match segment {
                "" => Err(bad("has an empty segment (two dots in a row, or a dot at an end)")),
                "*" => Ok(Segment::Any),
                "**" => Err(bad(
                    "uses '**'; a '*' stands for exactly one segment, so list one pattern per depth",
                )),
                s if s.contains('*') => Err(bad(
                    "has a '*' inside a segment; a '*' must stand for a whole dot-separated segment",
                )),
                s => Ok(Segment::Literal(s.to_owned())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }
}

impl fmt::Display for MetricPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl MetricPattern {
    /// Whether `name` (tags already stripped) matches, segment by segment.
    pub fn matches(&self, name: &str) -> bool {
        let mut parts = name.split('.');
        for segment in &self.segments {
            match (segment, parts.next()) {
                (_, None | Some("")) => return false,
                (Segment::Any, Some(_)) => {}
                (Segment::Literal(literal), Some(part)) if literal == part => {}
                (Segment::Literal(_), Some(_)) => return false,
            }
        }
        parts.next().is_none()
    }
}

/// The include and exclude patterns together.
#[derive(Debug, Clone, Default)]
pub struct MetricFilter {
    include: Vec<MetricPattern>,
    exclude: Vec<MetricPattern>,
}

impl MetricFilter {
    /// Parses both lists; the error names the first bad pattern.
    pub fn parse<S: AsRef<str>>(include: &[S], exclude: &[S]) -> Result<Self, BadPattern> {
        let parse = |list: &[S]| {
            list.iter()
                .map(|p| p.as_ref().parse())
                .collect::<Result<Vec<MetricPattern>, _>>()
        };
        Ok(Self {
            include: parse(include)?,
            exclude: parse(exclude)?,
        })
    }

    /// A counter with this name counts requests.
    pub fn counts(&self, name: &str) -> bool {
        self.include.iter().any(|p| p.matches(name))
            && !self.exclude.iter().any(|p| p.matches(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UsageConfig;

    #[test]
    fn a_star_is_one_whole_segment() {
        let pattern: MetricPattern = "kong.service.*.request.count".parse().unwrap();
        assert!(pattern.matches("kong.service.orders.request.count"));
        assert!(!pattern.matches("kong.service.request.count"));
        assert!(!pattern.matches("kong.service.orders.user.bob.request.count"));
        assert!(!pattern.matches("kong.service.orders.request.count.extra"));
        assert!(!pattern.matches("kong.service..request.count"));
        assert!(!pattern.matches("xkong.service.orders.request.count"));
        assert_eq!(pattern.to_string(), "kong.service.*.request.count");
    }

    #[test]
    fn bad_patterns_say_how_to_write_them() {
        for (text, expected) in [
            ("", "is empty"),
            ("kong..count", "empty segment"),
            (".kong", "empty segment"),
            ("kong.**.count", "exactly one segment"),
            (
                "envoy.http.*.downstream_rq_*",
                "whole dot-separated segment",
            ),
            ("kong.request.count:1|c", "write the name only"),
            ("kong request", "whitespace"),
        ] {
            let err = text.parse::<MetricPattern>().unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        assert!("a".repeat(300).parse::<MetricPattern>().is_err());
    }

    #[test]
    fn the_defaults_count_each_gateway_request_once() {
        let defaults = UsageConfig::default();
        let filter =
            MetricFilter::parse(&defaults.statsd_patterns, &defaults.statsd_exclude).unwrap();
        for counted in [
            "kong.service.orders.request.count",
            "kong.global.unmatched.request.count",
            "kong.node.gw-1.service.orders.request.count",
            "kong.node.gw-1.global.unmatched.request.count",
            "kong.request.count",
            "envoy.http.ingress_http.downstream_rq_total",
        ] {
            assert!(filter.counts(counted), "{counted}");
        }
        for not_counted in [
            // Kong's per-consumer and per-status siblings of the same request.
            "kong.service.orders.user.bob.request.count",
            "kong.service.orders.status.200",
            "kong.service.orders.request.size",
            // Envoy: upstream requests (retries, mirrors) and its own admin interface.
            "envoy.cluster.orders.upstream_rq_total",
            "envoy.http.admin.downstream_rq_total",
            "envoy.http.ingress_http.downstream_rq_2xx",
        ] {
            assert!(!filter.counts(not_counted), "{not_counted}");
        }
    }
}
