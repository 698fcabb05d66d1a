//! `Type=notify` units: both programs say `READY=1` on `$NOTIFY_SOCKET` once they serve, and
//! `STOPPING=1` when SIGTERM starts the drain, as systemd expects of a notify service.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use licsync_tests::cp::Cp;
use licsync_tests::dp::Dp;
use licsync_tests::process::{binary, launch_with_env};
use nix::sys::signal::Signal;

/// A socket standing in for systemd's, and the next datagram it receives.
fn notify_socket(dir: &Path) -> (UnixDatagram, String) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    (socket, path.to_str().unwrap().to_owned())
}

fn next(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a notification within 30 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn both_programs_notify_ready_then_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    let (cp_socket, cp_path) = notify_socket(tmp.path());
    let mut cp = Cp::start_with(
        &tmp.path().join("cp"),
        &[],
        "",
        &binary("licsync-cp"),
        &[("NOTIFY_SOCKET", &cp_path)],
    )
    .await;
    let ready = next(&cp_socket);
    assert!(
        ready.starts_with("READY=1\nSTATUS=serving: admin 127.0.0.1:"),
        "{ready}"
    );

    let dp_dir = tmp.path().join("dp");
    Dp::register_ok(&cp, &dp_dir, "edge").await;
    let dp_socket = UnixDatagram::bind(dp_dir.join("notify.sock")).unwrap();
    dp_socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let config: toml::Table = format!(
        "data_dir = \"{}\"\nregistration_file = \"{}\"\n[local]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n",
        dp_dir.join("data").display(),
        dp_dir.join("registration.yaml").display()
    )
    .parse()
    .unwrap();
    let notify = dp_dir.join("notify.sock");
    let (mut dp, _) = launch_with_env(
        &binary("licsync-dp"),
        &["run"],
        &dp_dir,
        "licsync-dp.toml",
        &config,
        "dp.started",
        &[("NOTIFY_SOCKET", notify.to_str().unwrap())],
    )
    .await;
    let ready = next(&dp_socket);
    assert!(
        ready.starts_with("READY=1\nSTATUS=started; local API 127.0.0.1:"),
        "{ready}"
    );

    for (process, socket) in [(&mut dp, &dp_socket), (&mut cp.process, &cp_socket)] {
        let status = process.stop(Signal::SIGTERM, Duration::from_secs(15));
        assert!(status.is_some_and(|s| s.success()), "{status:?}");
        assert_eq!(next(socket), "STOPPING=1\nSTATUS=stopping");
    }
}
