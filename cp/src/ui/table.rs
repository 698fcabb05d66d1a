//! The data-plane table's sorting and filtering, from query parameters, so it works without
//! JavaScript and every view has a URL that can be shared:
//! `/ui/data-planes?q=edge&health=HEALTHY&sync=normal&current=no&sort=cert&order=desc`.
//!
//! Every parameter is optional; an unknown parameter or value is refused with a message that
//! lists what is understood, rather than silently showing another view than the one asked for.

use std::cmp::Ordering;

use crate::dataplanes::{DataPlaneView, Health, SyncStatus};
use crate::ui::model::{Snapshot, health_word, sync_word};

/// Longest `q` accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 100;

/// A column to sort by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    #[default]
    Name,
    Host,
    Version,
    Health,
    Sync,
    License,
    Cert,
    Seen,
    Node,
}

impl SortKey {
    /// Every key with its parameter value.
    pub const ALL: [(SortKey, &'static str); 9] = [
        (SortKey::Name, "name"),
        (SortKey::Host, "host"),
        (SortKey::Version, "version"),
        (SortKey::Health, "health"),
        (SortKey::Sync, "sync"),
        (SortKey::License, "license"),
        (SortKey::Cert, "cert"),
        (SortKey::Seen, "seen"),
        (SortKey::Node, "node"),
    ];

    /// The parameter value naming this key.
    pub fn param(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("name", |(_, p)| p)
    }
}

/// What the table shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableQuery {
    /// Case-insensitive text the name, hostname, IP or id must contain.
    pub q: String,
    pub health: Option<Health>,
    pub sync: Option<SyncStatus>,
    /// Whether the data plane holds the current license (`yes` / `no`).
    pub current: Option<bool>,
    pub sort: SortKey,
    pub descending: bool,
}

const HEALTHS: [Health; 4] = [
    Health::Healthy,
    Health::Degraded,
    Health::Unhealthy,
    Health::Uninitialized,
];
const SYNCS: [SyncStatus; 5] = [
    SyncStatus::Normal,
    SyncStatus::Unknown,
    SyncStatus::LicenseRejected,
    SyncStatus::ApplyFailed,
    SyncStatus::VersionIncompatible,
];

/// Every health word, for the filter's choices.
pub fn healths() -> [Health; 4] {
    HEALTHS
}

/// Every sync status, for the filter's choices.
pub fn syncs() -> [SyncStatus; 5] {
    SYNCS
}

impl TableQuery {
    /// The query `pairs` (decoded `name=value`) ask for, or what is wrong with them. Empty
    /// values mean "any", as an untouched form field sends them.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, String> {
        let mut query = Self::default();
        for (name, value) in pairs {
            let value = value.trim();
            match name.as_str() {
                "q" => {
                    if value.chars().count() > MAX_QUERY_CHARS {
                        return Err(format!("q is at most {MAX_QUERY_CHARS} characters long"));
                    }
                    query.q = value.to_owned();
                }
                "health" if value.is_empty() => query.health = None,
                "health" => {
                    query.health = Some(
                        HEALTHS
                            .into_iter()
                            .find(|h| health_word(*h).eq_ignore_ascii_case(value))
                            .ok_or_else(|| {
                                format!(
                                    "health must be one of {}; got '{}'",
                                    HEALTHS.map(health_word).join(", "),
                                    clip(value)
                                )
                            })?,
                    )
                }
                "sync" if value.is_empty() => query.sync = None,
                "sync" => {
                    query.sync = Some(
                        SYNCS
                            .into_iter()
                            .find(|s| sync_word(*s) == value)
                            .ok_or_else(|| {
                                format!(
                                    "sync must be one of {}; got '{}'",
                                    SYNCS.map(sync_word).join(", "),
                                    clip(value)
                                )
                            })?,
                    )
                }
                "current" => {
                    query.current = match value {
                        "" => None,
                        "yes" => Some(true),
                        "no" => Some(false),
                        other => {
                            return Err(format!(
                                "current must be 'yes' or 'no'; got '{}'",
                                clip(other)
                            ));
                        }
                    }
                }
                "sort" => {
                    query.sort = SortKey::ALL
                        .iter()
                        .find(|(_, p)| *p == value || value.is_empty() && *p == "name")
                        .map(|(k, _)| *k)
                        .ok_or_else(|| {
                            format!(
                                "sort must be one of {}; got '{}'",
                                SortKey::ALL.map(|(_, p)| p).join(", "),
                                clip(value)
                            )
                        })?
                }
                "order" => {
                    query.descending = match value {
                        "" | "asc" => false,
                        "desc" => true,
                        other => {
                            return Err(format!(
                                "order must be 'asc' or 'desc'; got '{}'",
                                clip(other)
                            ));
                        }
                    }
                }
                other => {
                    return Err(format!(
                        "unknown query parameter '{}'; the table takes q, health, sync, current, sort and order",
                        clip(other)
                    ));
                }
            }
        }
        Ok(query)
    }

    /// The data planes of `snapshot` this query shows, in its order.
    pub fn apply<'a>(&self, snapshot: &'a Snapshot) -> Vec<&'a DataPlaneView> {
        let needle = self.q.to_lowercase();
        let names = snapshot.node_names();
        let mut rows: Vec<&DataPlaneView> = snapshot
            .dataplanes
            .iter()
            .filter(|dp| self.health.is_none_or(|h| dp.health == h))
            .filter(|dp| self.sync.is_none_or(|s| dp.sync_status == s))
            .filter(|dp| {
                self.current
                    .is_none_or(|want| snapshot.holds_current(dp) == want)
            })
            .filter(|dp| {
                needle.is_empty()
                    || [&dp.name, &dp.hostname, &dp.ip]
                        .iter()
                        .any(|field| field.to_lowercase().contains(&needle))
                    || dp.id.to_string().contains(&needle)
            })
            .collect();
        let node = |dp: &DataPlaneView| dp.control_plane.and_then(|id| names.get(&id).copied());
        let compare = |a: &&DataPlaneView, b: &&DataPlaneView| -> Ordering {
            let primary = match self.sort {
                SortKey::Name => a.name.cmp(&b.name),
                SortKey::Host => a.hostname.cmp(&b.hostname),
                SortKey::Version => a.version.cmp(&b.version),
                SortKey::Health => health_rank(a.health).cmp(&health_rank(b.health)),
                SortKey::Sync => sync_word(a.sync_status).cmp(sync_word(b.sync_status)),
                SortKey::License => a.license_id.cmp(&b.license_id),
                SortKey::Cert => a.cert_expires_at.cmp(&b.cert_expires_at),
                SortKey::Seen => a.last_seen.cmp(&b.last_seen),
                SortKey::Node => node(a).cmp(&node(b)),
            };
            primary.then_with(|| a.id.cmp(&b.id))
        };
        rows.sort_by(compare);
        if self.descending {
            rows.reverse();
        }
        rows
    }

    /// This query's URL with `sort` by `key`: the same order reversed when already sorted by
    /// it, ascending otherwise.
    pub fn sort_link(&self, key: SortKey) -> String {
        let descending = self.sort == key && !self.descending;
        let mut link = Self {
            sort: key,
            descending,
            ..self.clone()
        }
        .to_query();
        link.insert_str(0, "/ui/data-planes?");
        link
    }

    /// The query string of this query (only what differs from the defaults).
    pub fn to_query(&self) -> String {
        let mut pairs: Vec<(String, String)> = Vec::new();
        if !self.q.is_empty() {
            pairs.push(("q".into(), self.q.clone()));
        }
        if let Some(h) = self.health {
            pairs.push(("health".into(), health_word(h).into()));
        }
        if let Some(s) = self.sync {
            pairs.push(("sync".into(), sync_word(s).into()));
        }
        if let Some(c) = self.current {
            pairs.push(("current".into(), if c { "yes" } else { "no" }.into()));
        }
        pairs.push(("sort".into(), self.sort.param().into()));
        if self.descending {
            pairs.push(("order".into(), "desc".into()));
        }
        pairs
            .iter()
            .map(|(n, v)| format!("{n}={}", encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// Worst first, so an ascending sort by health puts the problems on top.
fn health_rank(health: Health) -> u8 {
    match health {
        Health::Unhealthy => 0,
        Health::Degraded => 1,
        Health::Uninitialized => 2,
        Health::Healthy => 3,
    }
}

/// Percent-encodes everything but unreserved characters.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// At most 64 characters of a caller's text, for an error message.
fn clip(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::form::decode as form_decode;

    fn parse(query: &str) -> Result<TableQuery, String> {
        TableQuery::parse(&form_decode(query))
    }

    #[test]
    fn parameters_parse_and_round_trip() {
        assert_eq!(parse("").unwrap(), TableQuery::default());
        let query =
            parse("q=edge+1&health=healthy&sync=license_rejected&current=no&sort=cert&order=desc")
                .unwrap();
        assert_eq!(query.q, "edge 1");
        assert_eq!(query.health, Some(Health::Healthy));
        assert_eq!(query.sync, Some(SyncStatus::LicenseRejected));
        assert_eq!(query.current, Some(false));
        assert_eq!((query.sort, query.descending), (SortKey::Cert, true));
        assert_eq!(parse(&query.to_query()).unwrap(), query);
        // An untouched form sends empty values: any.
        assert_eq!(
            parse("q=&health=&sync=&current=&sort=&order=").unwrap(),
            TableQuery::default()
        );
    }

    #[test]
    fn bad_parameters_say_what_is_understood() {
        for (query, says) in [
            ("health=green", "health must be one of HEALTHY, DEGRADED"),
            ("sync=ok", "sync must be one of normal"),
            ("sort=colour", "sort must be one of name, host"),
            ("order=up", "order must be 'asc' or 'desc'"),
            ("current=maybe", "current must be 'yes' or 'no'"),
            ("page=2", "unknown query parameter 'page'"),
        ] {
            let error = parse(query).unwrap_err();
            assert!(error.contains(says), "{query}: {error}");
        }
        assert!(parse(&format!("q={}", "x".repeat(MAX_QUERY_CHARS + 1))).is_err());
    }

    #[test]
    fn sort_links_toggle_the_order_of_the_current_column() {
        let query = parse("sort=name").unwrap();
        assert_eq!(
            query.sort_link(SortKey::Name),
            "/ui/data-planes?sort=name&order=desc"
        );
        assert_eq!(query.sort_link(SortKey::Host), "/ui/data-planes?sort=host");
        let search = parse("q=a&b").unwrap_err();
        assert!(search.contains("unknown query parameter 'b'"));
        assert_eq!(encode("a b&<"), "a%20b%26%3C");
    }
}
