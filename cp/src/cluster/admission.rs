//! Which new cluster connections are let in, before any TLS work is spent on them.
//!
//! Registration needs no client certificate, so anyone who reaches the cluster port can open
//! connections. Two bounds keep that from hurting the data planes and the Admin API:
//! - at most `cluster.max_connections_per_ip` open connections per source (an IPv6 source is
//!   its /64, which one host usually owns whole), each source also limited to a quarter of
//!   the handshake slots, so one address cannot occupy all of them;
//! - never more cluster connections than the open-file limit minus [`FD_RESERVE`], so the
//!   Admin API, the health checks, storage and logging always find a file descriptor.
//!
//! A connection counts from accept until it is closed: [`Admitted`] gives its place back on drop.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Semaphore;

/// File descriptors kept for everything but cluster connections (Admin API connections, sled's
/// files, the log, the listeners).
pub const FD_RESERVE: u64 = 256;

/// Why a new connection was closed without a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its source already has `max_connections_per_ip` connections open.
    PerSource { limit: usize },
    /// Cluster connections already use every file descriptor outside the reserve.
    FileDescriptors { limit: usize },
}

impl Refused {
    /// What the operator reads (`reason`) and can change.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::PerSource { .. } => {
                "too many connections from this address; raise cluster.max_connections_per_ip if a NAT hides many data planes behind it"
            }
            Self::FileDescriptors { .. } => {
                "file descriptors: the open-file limit minus the reserve is used up by cluster connections; raise LimitNOFILE (ulimit -n)"
            }
        }
    }

    pub fn limit(&self) -> usize {
        match self {
            Self::PerSource { limit } | Self::FileDescriptors { limit } => *limit,
        }
    }
}

/// The admission bookkeeping of one cluster listener.
pub struct Admission {
    /// 0: no per-source limit (and no per-source share of the handshake slots).
    max_per_source: usize,
    handshakes_per_source: usize,
    max_open: usize,
    open: AtomicUsize,
    sources: Mutex<HashMap<IpAddr, Source>>,
}

struct Source {
    open: usize,
    handshakes: Arc<Semaphore>,
}

/// A connection's place; dropping it gives the place back.
pub struct Admitted {
    admission: Arc<Admission>,
    source: IpAddr,
    /// The source's share of the handshake slots (`None` without a per-source limit).
    pub handshakes: Option<Arc<Semaphore>>,
}

impl Admission {
    /// `max_per_source` 0 turns the per-source limit off; `handshake_slots` is the listener's
    /// total, of which one source may hold a quarter.
    pub fn new(max_per_source: usize, max_open: usize, handshake_slots: usize) -> Arc<Self> {
        Arc::new(Self {
            max_per_source,
            handshakes_per_source: (handshake_slots / 4).max(1),
            max_open,
            open: AtomicUsize::new(0),
            sources: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a place for a connection from `ip`, or says why there is none.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refused> {
        let source = source_of(ip);
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        if self.open.load(Ordering::Relaxed) >= self.max_open {
            return Err(Refused::FileDescriptors {
                limit: self.max_open,
            });
        }
        let mut handshakes = None;
        if self.max_per_source > 0 {
            let entry = sources.entry(source).or_insert_with(|| Source {
                open: 0,
                handshakes: Arc::new(Semaphore::new(self.handshakes_per_source)),
            });
            if entry.open >= self.max_per_source {
                return Err(Refused::PerSource {
                    limit: self.max_per_source,
                });
            }
            entry.open += 1;
            handshakes = Some(entry.handshakes.clone());
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(Admitted {
            admission: self.clone(),
            source,
            handshakes,
        })
    }

    /// Cluster connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let admission = &self.admission;
        let mut sources = admission
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = sources.get_mut(&self.source) {
            entry.open = entry.open.saturating_sub(1);
            if entry.open == 0 {
                sources.remove(&self.source);
            }
        }
        admission.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The unit a per-source limit counts: the IPv4 address (also when mapped into IPv6), or the
/// /64 of an IPv6 address.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

/// How many cluster connections the open-file limit leaves room for. The soft limit is first
/// raised to the hard one (as Go programs do at start): systemd's default soft limit of 1,024
/// is far below what a fleet of thousands of data planes needs, the hard limit rarely is.
pub fn connection_budget() -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((mut soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return usize::MAX;
    };
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => soft = hard,
            Err(error) => {
                tracing::warn!(%error, soft, hard, "Cannot raise the open-file limit to its hard limit.")
            }
        }
    }
    budget(soft)
}

/// Cluster connections allowed under an open-file limit of `limit`: all but [`FD_RESERVE`],
/// and at least half of the limit when that is small.
fn budget(limit: u64) -> usize {
    let allowed = limit.saturating_sub(FD_RESERVE).max(limit / 2);
    usize::try_from(allowed).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn one_source_gets_at_most_its_limit_and_the_place_comes_back_on_close() {
        let admission = Admission::new(2, 100, 512);
        let first = admission.admit(ip("10.0.0.1")).unwrap();
        let _second = admission.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(
            admission.admit(ip("10.0.0.1")).err(),
            Some(Refused::PerSource { limit: 2 })
        );
        // Another source is not affected.
        let _other = admission.admit(ip("10.0.0.2")).unwrap();
        drop(first);
        assert!(admission.admit(ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn the_file_descriptor_budget_holds_across_sources_even_without_a_per_source_limit() {
        let admission = Admission::new(0, 2, 512);
        let first = admission.admit(ip("10.0.0.1")).unwrap();
        let _second = admission.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(
            admission.admit(ip("10.0.0.3")).err(),
            Some(Refused::FileDescriptors { limit: 2 })
        );
        assert!(first.handshakes.is_none());
        drop(first);
        assert_eq!(admission.open(), 1);
        assert!(admission.admit(ip("10.0.0.3")).is_ok());
    }

    #[test]
    fn a_source_shares_one_quarter_of_the_handshake_slots() {
        let admission = Admission::new(10, 100, 512);
        let a = admission.admit(ip("10.0.0.1")).unwrap();
        let b = admission.admit(ip("10.0.0.1")).unwrap();
        let (a, b) = (a.handshakes.clone().unwrap(), b.handshakes.clone().unwrap());
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.available_permits(), 128);
    }

    #[test]
    fn ipv6_sources_count_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            source_of(ip("2001:db8:1:2:aaaa::1")),
            source_of(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            source_of(ip("2001:db8:1:2::1")),
            source_of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(source_of(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn the_budget_keeps_the_reserve_and_never_less_than_half() {
        assert_eq!(budget(20_000), 19_744);
        assert_eq!(budget(1_024), 768);
        assert_eq!(budget(300), 150);
    }
}
