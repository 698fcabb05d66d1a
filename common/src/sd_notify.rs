//! systemd's readiness protocol, so units can use `Type=notify`.
//!
//! With `Type=simple` systemd considers a service started as soon as the process exists, so a
//! unit ordered after the control plane (or a deployment script waiting on `systemctl start`)
//! races its listeners and, for the agent, its saved state. With `Type=notify` the process
//! says `READY=1` once it actually serves and `STOPPING=1` when it begins to drain. The
//! protocol is one datagram per state change on the Unix socket named by `NOTIFY_SOCKET`
//! (a path, or `@name` for the abstract namespace); without that variable nothing is sent, so
//! the calls cost nothing outside systemd. A failed send is logged and otherwise ignored:
//! systemd then reports the start as timed out, which says more than a process that refused to
//! run.

use std::os::unix::net::UnixDatagram;

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Tells systemd the process serves (`READY=1`), with a one-line status for `systemctl status`.
pub fn ready(status: &str) {
    notify(&format!("READY=1\nSTATUS={}", one_line(status)));
}

/// Tells systemd the process is draining (`STOPPING=1`).
pub fn stopping() {
    notify("STOPPING=1\nSTATUS=stopping");
}

/// Sends `state` to `$NOTIFY_SOCKET`, if set.
fn notify(state: &str) {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    if let Err(e) = send(&socket, state) {
        tracing::warn!(
            event = "systemd.notify_failed",
            socket = %socket.to_string_lossy(),
            "Cannot notify systemd ({e}); with Type=notify the unit will not be seen as started."
        );
    }
}

fn send(socket: &std::ffi::OsStr, state: &str) -> std::io::Result<usize> {
    use std::os::unix::ffi::OsStrExt;
    let sender = UnixDatagram::unbound()?;
    let bytes = socket.as_bytes();
    match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sender.send_to_addr(state.as_bytes(), &address)
        }
        None => sender.send_to(state.as_bytes(), socket),
    }
}

/// A status is one line of the protocol: newlines would start fields of their own.
fn one_line(status: &str) -> String {
    status.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn sends_to_a_path_and_to_an_abstract_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        send(path.as_os_str(), "READY=1\nSTATUS=a").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=a");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("licsync-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&address).unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        send(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn a_status_stays_on_one_line() {
        assert_eq!(one_line("a\nREADY=1\r"), "a READY=1 ");
    }
}
