//! The host facts a usage report carries, as Kong's report does: CPU cores, the host name as a
//! SHA-256 digest (a vendor can tell installations apart without learning host names), and the
//! kernel (`Linux x86_64 6.18.44`).
//!
//! Read from `/proc/sys/kernel/` (what `uname` and `hostname` read), so no system call wrapper
//! is needed; on a system without it the values say `unknown` rather than failing the report.

use licsync_common::pki::sha256_hex;
use serde::Serialize;

/// `system_info` of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SystemInfo {
    pub cores: usize,
    /// SHA-256 (lowercase hex) of the host name.
    pub hostname: String,
    /// Kernel name, machine architecture and kernel release.
    pub uname: String,
}

impl SystemInfo {
    /// This host, now.
    pub fn current() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let hostname = kernel_value("hostname");
        let uname = format!(
            "{} {} {}",
            kernel_value("ostype"),
            std::env::consts::ARCH,
            kernel_value("osrelease")
        );
        Self {
            cores,
            hostname: sha256_hex(hostname.as_bytes()),
            uname,
        }
    }
}

/// `/proc/sys/kernel/<name>`, trimmed; `unknown` when it cannot be read.
fn kernel_value(name: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
        .map(|v| v.trim().chars().take(256).collect::<String>())
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_is_a_digest_and_uname_names_the_kernel() {
        let info = SystemInfo::current();
        assert!(info.cores >= 1);
        assert_eq!(info.hostname.len(), 64);
        assert!(info.hostname.bytes().all(|b| b.is_ascii_hexdigit()));
        let real = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(info.hostname, sha256_hex(real.trim().as_bytes()));
        assert!(
            info.uname
                .starts_with(&format!("Linux {} ", std::env::consts::ARCH)),
            "{}",
            info.uname
        );
    }
}
