//! Which control-plane node the sync client talks to: `sync.servers` (or the registration
//! file's URL), each name's addresses, and the order they are tried in.
//!
//! The pure half is [`Rotation`]: a *round* tries every [`Target`] once, starting with the one
//! the last working stream used (sticky), and moves to the next target at once when an attempt
//! fails before its stream is up. Only when the whole round failed does the client wait for
//! its backoff delay (exponential, full jitter). So a dead node costs one failed attempt, not a
//! backoff delay, and each node sees at most one attempt per round: a fleet retries every node
//! no faster than it retried its single control plane before.
//!
//! A round begins by resolving the names again ([`resolve`]): a name with several addresses
//! becomes one target per address, each connected to by address while the TLS server name
//! stays the name, so the server certificate is still checked against it. A name with one
//! address (or an IP address) is connected to by name, exactly as without failover.

use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::cluster::ClusterUrl;

/// At most this many entries in `sync.servers`, and addresses used per name.
pub const MAX_SERVERS: usize = 16;

/// One place to connect to: a cluster URL and, when its name has several addresses, the one
/// address this attempt uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: ClusterUrl,
    /// `None`: connect by name.
    pub addr: Option<SocketAddr>,
}

impl Target {
    /// The URL, connected to by name.
    pub fn named(url: ClusterUrl) -> Self {
        Self { url, addr: None }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.addr {
            Some(addr) => write!(f, "{} ({addr})", self.url),
            None => write!(f, "{}", self.url),
        }
    }
}

/// Checks `sync.servers` and returns its URLs: each `https://HOST:PORT` with an explicit port,
/// no entry twice, at most [`MAX_SERVERS`]. The error names the bad entry and what to write.
pub fn parse_servers(list: &[String]) -> Result<Vec<ClusterUrl>, String> {
    if list.len() > MAX_SERVERS {
        return Err(format!(
            "lists {} servers; at most {MAX_SERVERS} are allowed (list the nodes of one cluster, or put them behind one DNS name)",
            list.len()
        ));
    }
    let mut seen = HashSet::new();
    let mut urls = Vec::with_capacity(list.len());
    for (index, text) in list.iter().enumerate() {
        let url = parse_server(text).map_err(|reason| format!("entry {}: {reason}", index + 1))?;
        if !seen.insert(url.to_string().to_ascii_lowercase()) {
            return Err(format!(
                "entry {}: '{url}' is listed twice; list each server once",
                index + 1
            ));
        }
        urls.push(url);
    }
    Ok(urls)
}

/// One `sync.servers` entry.
pub fn parse_server(text: &str) -> Result<ClusterUrl, String> {
    let shown = licsync_common::printable(text, 200);
    if text.trim().is_empty() {
        return Err(
            "is empty; write https://HOST:PORT, e.g. \"https://cp1.example.com:8005\"".into(),
        );
    }
    let url = ClusterUrl::parse(text).map_err(|e| {
        format!(
            "'{shown}' {}; write https://HOST:PORT, e.g. \"https://cp1.example.com:8005\"",
            e.reason
        )
    })?;
    // The port is required: the cluster listener's default (8005) is not HTTPS's (443), and a
    // missing one is almost always a mistake.
    let has_port = text
        .trim()
        .parse::<tonic::transport::Uri>()
        .is_ok_and(|uri| uri.port().is_some());
    if !has_port {
        return Err(format!(
            "'{shown}' has no port; write the cluster listener's port, e.g. \"{}:8005\"",
            url.to_string().trim_end_matches(":443")
        ));
    }
    Ok(url)
}

/// `deserialize_with` for `sync.servers`: each entry is checked as it is read, so a bad one is
/// reported with the file, line and key; then the list as a whole (duplicates, length).
pub fn deserialize<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    /// One entry, checked as it is read.
    struct Checked(String);

    impl<'de> serde::Deserialize<'de> for Checked {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let text = <String as serde::Deserialize>::deserialize(deserializer)?;
            parse_server(&text).map_err(serde::de::Error::custom)?;
            Ok(Self(text))
        }
    }

    let list: Vec<String> = <Vec<Checked> as serde::Deserialize>::deserialize(deserializer)?
        .into_iter()
        .map(|Checked(text)| text)
        .collect();
    parse_servers(&list).map_err(serde::de::Error::custom)?;
    Ok(list)
}

/// Looks up a `HOST:PORT`; replaceable in tests, where no name has several addresses.
pub type Lookup = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>
        + Send
        + Sync,
>;

/// The system resolver (`getaddrinfo`, through tokio).
pub fn system_lookup() -> Lookup {
    Arc::new(|authority: String| {
        Box::pin(async move { Ok(tokio::net::lookup_host(authority).await?.collect()) })
    })
}

/// The targets of one round: each URL in order, a name with several addresses expanded into
/// one target per address (in the resolver's order, at most [`MAX_SERVERS`]). A name that
/// cannot be resolved within `timeout` stays one target by name, whose attempt then reports
/// the DNS failure as usual.
pub async fn resolve(urls: &[ClusterUrl], lookup: &Lookup, timeout: Duration) -> Vec<Target> {
    let mut targets = Vec::with_capacity(urls.len());
    for url in urls {
        if url.host().parse::<IpAddr>().is_ok() {
            targets.push(Target::named(url.clone()));
            continue;
        }
        let found = tokio::time::timeout(timeout, lookup(url.authority())).await;
        let mut addrs: Vec<SocketAddr> = Vec::new();
        if let Ok(Ok(found)) = found {
            for addr in found {
                if !addrs.contains(&addr) && addrs.len() < MAX_SERVERS {
                    addrs.push(addr);
                }
            }
        }
        if addrs.len() > 1 {
            targets.extend(addrs.into_iter().map(|addr| Target {
                url: url.clone(),
                addr: Some(addr),
            }));
        } else {
            targets.push(Target::named(url.clone()));
        }
    }
    targets
}

/// The servers to use: `configured` when not empty, else the registration file's URL.
pub fn urls(configured: &[ClusterUrl], registration: &ClusterUrl) -> Vec<ClusterUrl> {
    if configured.is_empty() {
        vec![registration.clone()]
    } else {
        configured.to_vec()
    }
}

/// Resolves when the configured servers change so that `url` is no longer one of them (a
/// stream to a server still listed is kept); never, once nothing can change them.
pub(super) async fn dropped(
    servers: &mut watch::Receiver<Arc<[ClusterUrl]>>,
    url: &ClusterUrl,
    registration: &ClusterUrl,
) {
    loop {
        if servers.changed().await.is_err() {
            return std::future::pending().await;
        }
        if !urls(&servers.borrow_and_update(), registration).contains(url) {
            return;
        }
    }
}

/// Where the next round starts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Start {
    target: Target,
    /// Start with the target after this one.
    after: bool,
}

/// The order targets are tried in; see the module documentation.
#[derive(Debug, Default)]
pub struct Rotation {
    targets: Vec<Target>,
    current: usize,
    /// Attempts made in this round.
    tried: usize,
    start: Option<Start>,
}

impl Rotation {
    /// Begins a round over `targets` (never empty: at least the registration file's URL). It
    /// starts at the sticky target, or the one after it, when that is still listed (by address,
    /// else by URL); otherwise at the first.
    pub fn begin_round(&mut self, targets: Vec<Target>) {
        let n = targets.len().max(1);
        let index = self.start.as_ref().and_then(|start| {
            let found = targets
                .iter()
                .position(|t| *t == start.target)
                .or_else(|| targets.iter().position(|t| t.url == start.target.url))?;
            Some((found + usize::from(start.after)) % n)
        });
        self.targets = targets;
        self.current = index.unwrap_or(0);
        self.tried = 0;
        // A round that fails everywhere is followed by one that starts at the same place.
        self.start = self.targets.get(self.current).map(|target| Start {
            target: target.clone(),
            after: false,
        });
    }

    /// The target to try now; `None` only before the first round.
    pub fn current(&self) -> Option<&Target> {
        self.targets.get(self.current)
    }

    /// The attempt at the current target failed before its stream was up: moves to the next
    /// target and returns it, or `None` when every target of this round has been tried.
    pub fn failed(&mut self) -> Option<&Target> {
        self.tried += 1;
        if self.tried >= self.targets.len() {
            return None;
        }
        self.current = (self.current + 1) % self.targets.len();
        self.targets.get(self.current)
    }

    /// The next round starts with the current target: its stream worked (sticky), or the
    /// attempt was interrupted (a new certificate, new servers).
    pub fn stay(&mut self) {
        if let Some(target) = self.current().cloned() {
            self.start = Some(Start {
                target,
                after: false,
            });
        }
    }

    /// The next round starts with the target after the current one: its stream ended before it
    /// did anything, or its node said it is shutting down.
    pub fn move_on(&mut self) {
        if let Some(target) = self.current().cloned() {
            self.start = Some(Start {
                target,
                after: true,
            });
        }
    }
}

#[cfg(test)]
mod tests;
