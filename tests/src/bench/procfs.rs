//! What the kernel says about a process: resident memory (`/proc/<pid>/status` `VmRSS`), CPU
//! time (`/proc/<pid>/stat` `utime + stime`, in clock ticks of `sysconf(_SC_CLK_TCK)`), and
//! this process's open-file limit.

use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::unistd::{SysconfVar, sysconf};

/// A process's resident memory and CPU time at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub rss_kib: u64,
    /// User plus system CPU time since the process started.
    pub cpu: Duration,
}

/// Reads [`Usage`] of `pid` (`"self"` works too).
pub fn usage(pid: &str) -> anyhow::Result<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    Ok(Usage {
        rss_kib: rss_kib(&status).with_context(|| format!("no VmRSS in /proc/{pid}/status"))?,
        cpu: cpu_time(&stat, clock_ticks())
            .with_context(|| format!("cannot parse /proc/{pid}/stat"))?,
    })
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`), as printed there: how busy the
/// shared machine was when a run started.
pub fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    (fields.len() == 3).then(|| fields.join(" "))
}

/// `VmRSS:  1234 kB` in a `/proc/<pid>/status` text.
fn rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` text. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
fn cpu_time(stat: &str, ticks_per_second: u64) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field N is at index N - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_secs_f64(
        ticks as f64 / ticks_per_second as f64,
    ))
}

/// Clock ticks per second; Linux has used 100 everywhere for decades, which is the fallback.
fn clock_ticks() -> u64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as u64,
        _ => 100,
    }
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (children inherit it) and fails
/// when that is below `needed`. Returns the new soft limit.
pub fn raise_open_file_limit(needed: u64) -> anyhow::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            .with_context(|| format!("setrlimit(RLIMIT_NOFILE, {hard})"))?;
    }
    if hard < needed {
        bail!(
            "the open-file limit is {hard} (hard), this run needs about {needed}; raise it (`ulimit -Hn`, or LimitNOFILE= in systemd) or use fewer data planes"
        );
    }
    Ok(hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        let status = "Name:\tlicsync-cp\nVmPeak:\t  9000 kB\nVmRSS:\t   1234 kB\nThreads:\t3\n";
        assert_eq!(rss_kib(status), Some(1234));
        assert_eq!(rss_kib("Name: x\n"), None);
        // Field 2 holds a space and a parenthesis; utime = 250, stime = 50 ticks.
        let stat =
            "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 2 3";
        assert_eq!(cpu_time(stat, 100), Some(Duration::from_secs(3)));
        assert_eq!(cpu_time("garbage", 100), None);
    }

    #[test]
    fn reads_this_process() {
        let me = usage("self").unwrap();
        assert!(me.rss_kib > 0);
    }
}
