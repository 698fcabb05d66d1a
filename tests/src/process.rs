//! A child process under test: its JSON log lines are collected as they arrive, into the test
//! kit's [`Events`], so a test can wait for an event ("the logs say why") instead of sleeping.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use licsync_testkit::Event;
pub use licsync_testkit::Events;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Path of a workspace binary built next to the running test executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("test executable directory").to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` (cargo test --workspace builds it)",
        path.display()
    );
    path
}

/// A running child process whose stderr is collected into [`Events`].
pub struct Process {
    child: Child,
    pub logs: Events,
}

impl Process {
    /// Starts `binary args...` in `cwd` with the given environment.
    pub fn spawn(binary: &Path, args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(binary);
        command
            .args(args)
            .current_dir(cwd)
            .env_remove("LICSYNC_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let logs = Events::default();
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.record_line(&line);
            }
        });
        Self { child, logs }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Sends `signal` and waits up to `timeout` for the exit.
    pub fn stop(&mut self, signal: Signal, timeout: Duration) -> Option<ExitStatus> {
        let _ = kill(self.pid(), signal);
        self.wait(timeout)
    }

    /// Waits for the process to exit on its own.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Writes `config` to `dir/<file_name>`, starts `binary <args...> --config <that file>` in `dir`
/// and waits for its `started_event`; returns the process and that event.
pub async fn launch(
    binary: &Path,
    args: &[&str],
    dir: &Path,
    file_name: &str,
    config: &toml::Table,
    started_event: &str,
) -> (Process, Event) {
    launch_with_env(binary, args, dir, file_name, config, started_event, &[]).await
}

/// [`launch`] with extra environment variables (e.g. `LICSYNC_LOG`).
pub async fn launch_with_env(
    binary: &Path,
    args: &[&str],
    dir: &Path,
    file_name: &str,
    config: &toml::Table,
    started_event: &str,
    env: &[(&str, &str)],
) -> (Process, Event) {
    let path = dir.join(file_name);
    std::fs::write(&path, toml::to_string(config).expect("config TOML")).expect("write config");
    let path = path.to_str().expect("utf-8 path").to_owned();
    let mut full: Vec<&str> = args.to_vec();
    full.extend(["--config", &path]);
    let process = Process::spawn(binary, &full, dir, env);
    let started = process
        .logs
        .wait_for_event(started_event, crate::cp::START_TIMEOUT, |_| true)
        .await;
    (process, started)
}

/// Runs a command to completion and returns (exit code, stdout, stderr).
pub fn run(binary: &Path, args: &[&str], cwd: &Path) -> (i32, String, String) {
    let output = Command::new(binary)
        .args(args)
        .current_dir(cwd)
        .env_remove("LICSYNC_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
