//! At most one log line per source per minute for what an outside client can trigger at will
//! (refused handshakes, refused connections): an operator needs to learn that a data plane
//! fails and why, not read one line per attempt of a reconnect loop or a flood.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::admission::source_of;

/// One line per source per this long.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Sources remembered at most; beyond it, sources quiet for a full interval are forgotten, and
/// if none is, new sources are not logged until one is (a flood from many addresses cannot
/// grow the table or the log without bound).
const MAX_SOURCES: usize = 4096;

/// Per-source log budget of one kind of line.
#[derive(Debug, Default)]
pub struct PerSource {
    sources: Mutex<HashMap<IpAddr, Entry>>,
}

#[derive(Debug)]
struct Entry {
    logged_at: Instant,
    suppressed: u64,
}

impl PerSource {
    /// `Some(n)` when a line for `ip` may be logged now, `n` being how many were left out for
    /// its source since the last one; `None` when this one is to be left out.
    pub fn admit(&self, ip: IpAddr) -> Option<u64> {
        let source = source_of(ip);
        let now = Instant::now();
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = sources.get_mut(&source) {
            if now.duration_since(entry.logged_at) < LOG_INTERVAL {
                entry.suppressed += 1;
                return None;
            }
            let suppressed = std::mem::take(&mut entry.suppressed);
            entry.logged_at = now;
            return Some(suppressed);
        }
        if sources.len() >= MAX_SOURCES {
            sources.retain(|_, entry| now.duration_since(entry.logged_at) < LOG_INTERVAL);
            if sources.len() >= MAX_SOURCES {
                return None;
            }
        }
        sources.insert(
            source,
            Entry {
                logged_at: now,
                suppressed: 0,
            },
        );
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_source_per_minute_with_the_count_left_out() {
        let limit = PerSource::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(limit.admit(a), Some(0));
        assert_eq!(limit.admit(a), None);
        assert_eq!(limit.admit(a), None);
        assert_eq!(limit.admit(b), Some(0));
        tokio::time::advance(LOG_INTERVAL - Duration::from_millis(1)).await;
        assert_eq!(limit.admit(a), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(limit.admit(a), Some(3));
        assert_eq!(limit.admit(a), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_stays_bounded_and_forgets_quiet_sources() {
        let limit = PerSource::default();
        for i in 0..MAX_SOURCES as u32 {
            assert!(limit.admit(IpAddr::from((i + 1).to_be_bytes())).is_some());
        }
        let newcomer: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(limit.admit(newcomer), None);
        tokio::time::advance(LOG_INTERVAL).await;
        assert_eq!(limit.admit(newcomer), Some(0));
        assert_eq!(limit.sources.lock().unwrap().len(), 1);
    }
}
