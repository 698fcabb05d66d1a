//! One statsd line: `name:value|type[|@rate][|#tags]`.
//!
//! What is accepted, so that what Kong's statsd plugin and Envoy's statsd sinks send parses:
//! - `name` may carry tags the way Kong's `tag_type` styles put them there (InfluxDB
//!   `name,k=v`, Librato `name#k=v`, SignalFx `name[k=v]`); they are stripped, leaving the
//!   metric name the patterns match.
//! - `value` is a non-negative decimal number; DogStatsD packs several as `v1:v2:v3`.
//! - `type` is `c` (counter), or a non-counter type (`g`, `ms`, `h`, `s`, `d`, `m`), which is
//!   valid but never counted.
//! - `@rate` (0 < rate <= 1) scales a counter up: `1|c|@0.1` stands for 10 requests.
//! - `#tags` and any other DogStatsD section (`c:`, `T`, `e:`) are ignored.
//!
//! Anything else is an error with a reason, which the listener counts as rejected.

use super::super::MAX_REQUESTS_PER_CALL;

/// A well-formed line.
#[derive(Debug, Clone, PartialEq)]
pub enum Metric<'a> {
    /// A counter: its name without tags and its increments, sample rate applied.
    Counter { name: &'a str, requests: f64 },
    /// A gauge, timer, histogram, set, distribution or meter: not counted.
    Other,
}

/// Why a line is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("not UTF-8")]
    NotUtf8,
    #[error("no ':' between the metric name and its value")]
    NoValue,
    #[error("empty metric name")]
    EmptyName,
    #[error("no '|type' after the value")]
    NoType,
    #[error("unknown metric type '{0}'")]
    BadType(String),
    #[error("value '{0}' is not a non-negative number")]
    BadValue(String),
    #[error("sample rate '{0}' is not a number in (0, 1]")]
    BadRate(String),
    #[error("the counter adds more than {MAX_REQUESTS_PER_CALL} in one line")]
    TooLarge,
}

/// Parses one line (without its newline).
pub fn parse(line: &[u8]) -> Result<Metric<'_>, LineError> {
    let line = std::str::from_utf8(line).map_err(|_| LineError::NotUtf8)?;
    let (name, rest) = line.split_once(':').ok_or(LineError::NoValue)?;
    // Tags a gateway put into the name (InfluxDB, Librato, SignalFx styles).
    let name = name
        .find([',', '#', '['])
        .map_or(name, |end| &name[..end])
        .trim();
    if name.is_empty() {
        return Err(LineError::EmptyName);
    }
    let mut sections = rest.split('|');
    let values = sections.next().unwrap_or_default();
    let kind = sections.next().ok_or(LineError::NoType)?;
    match kind {
        "c" => {}
        "g" | "ms" | "h" | "s" | "d" | "m" => return Ok(Metric::Other),
        other => return Err(LineError::BadType(excerpt(other))),
    }
    let mut rate = 1.0f64;
    for section in sections {
        if let Some(text) = section.strip_prefix('@') {
            rate = text
                .parse::<f64>()
                .ok()
                .filter(|r| *r > 0.0 && *r <= 1.0)
                .ok_or_else(|| LineError::BadRate(excerpt(text)))?;
        }
    }
    let mut requests = 0.0f64;
    for value in values.split(':') {
        let value = value
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| LineError::BadValue(excerpt(value)))?;
        requests += value / rate;
    }
    // `u64 -> f64` is exact for this bound.
    if requests > MAX_REQUESTS_PER_CALL as f64 {
        return Err(LineError::TooLarge);
    }
    Ok(Metric::Counter { name, requests })
}

/// A short, printable piece of untrusted input for an error message.
fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().take(32).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(line: &str) -> (String, f64) {
        match parse(line.as_bytes()) {
            Ok(Metric::Counter { name, requests }) => (name.to_owned(), requests),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn what_kong_and_envoy_send_parses() {
        for (line, name, requests) in [
            // Kong, default and hostname_in_prefix.
            (
                "kong.service.orders.request.count:1|c",
                "kong.service.orders.request.count",
                1.0,
            ),
            (
                "kong.node.gw-1.service.orders.request.count:1|c|@0.5",
                "kong.node.gw-1.service.orders.request.count",
                2.0,
            ),
            // Kong tag_type styles.
            (
                "kong.request.count:1|c|#service:orders,route:r1,status:200",
                "kong.request.count",
                1.0,
            ),
            (
                "kong.request.count,service=orders,status=200:1|c",
                "kong.request.count",
                1.0,
            ),
            (
                "kong.request.count#service=orders:1|c",
                "kong.request.count",
                1.0,
            ),
            (
                "kong.request.count[service=orders]:1|c",
                "kong.request.count",
                1.0,
            ),
            // Envoy statsd sink: counter deltas.
            (
                "envoy.http.ingress_http.downstream_rq_total:17|c",
                "envoy.http.ingress_http.downstream_rq_total",
                17.0,
            ),
            (
                "envoy.cluster.web.upstream_rq_total:0|c",
                "envoy.cluster.web.upstream_rq_total",
                0.0,
            ),
            // DogStatsD: several values, extra sections.
            ("a.b:1:2:3|c|#t:v|c:abc|T1700000000", "a.b", 6.0),
            ("a.b:1.5|c", "a.b", 1.5),
            ("a.b:1|c|@0.1", "a.b", 10.0),
        ] {
            let (got_name, got) = counter(line);
            assert_eq!(got_name, name, "{line}");
            assert!((got - requests).abs() < 1e-9, "{line}: {got}");
        }
        for other in [
            "kong.latency:12|ms",
            "a:1|g",
            "a:1|h|@0.5",
            "a:x|s",
            "a:1|d",
            "a:1|m",
        ] {
            assert_eq!(parse(other.as_bytes()), Ok(Metric::Other), "{other}");
        }
    }

    #[test]
    fn malformed_lines_say_why() {
        for (line, expected) in [
            (&b"kong.request.count"[..], LineError::NoValue),
            (b":1|c", LineError::EmptyName),
            (b",tag=1:1|c", LineError::EmptyName),
            (b"a:1", LineError::NoType),
            (b"a:1|x", LineError::BadType("x".into())),
            (b"a:1|", LineError::BadType(String::new())),
            (b"a:-1|c", LineError::BadValue("-1".into())),
            (b"a:|c", LineError::BadValue(String::new())),
            (b"a:one|c", LineError::BadValue("one".into())),
            (b"a:NaN|c", LineError::BadValue("NaN".into())),
            (b"a:inf|c", LineError::BadValue("inf".into())),
            (b"a:1|c|@0", LineError::BadRate("0".into())),
            (b"a:1|c|@1.5", LineError::BadRate("1.5".into())),
            (b"a:1|c|@-0.5", LineError::BadRate("-0.5".into())),
            (b"a:1|c|@", LineError::BadRate(String::new())),
            (b"a:1000000001|c", LineError::TooLarge),
            (b"a:1001|c|@0.000001", LineError::TooLarge),
            (b"a:\xff|c", LineError::NotUtf8),
        ] {
            assert_eq!(
                parse(line),
                Err(expected),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        let long = format!("a:1|{}", "z".repeat(100));
        let err = parse(long.as_bytes()).unwrap_err().to_string();
        assert!(err.len() < 80, "{err}");
    }
}
