//! A child process under test: its JSON log lines are collected as they arrive so a test can
//! wait for an event ("the logs say why") instead of sleeping.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

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

/// Log lines of a process: parsed JSON objects, or `{"raw": line}` for anything else.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<Value>>>);

impl Logs {
    pub fn lines(&self) -> Vec<Value> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Every line whose `event` field equals `event`.
    pub fn events(&self, event: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| l.get("event").and_then(Value::as_str) == Some(event))
            .collect()
    }

    /// The whole log as text, for assertion messages.
    pub fn dump(&self) -> String {
        self.lines()
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until a line satisfies `pred`; panics with the log after `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| pred(l)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; log:\n{}",
                self.dump()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits for a line with `event` whose fields satisfy `pred`.
    pub async fn wait_for_event(
        &self,
        event: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_for(event, timeout, |l| {
            l.get("event").and_then(Value::as_str) == Some(event) && pred(l)
        })
        .await
    }
}

/// A running child process whose stderr is collected into [`Logs`].
pub struct Process {
    child: Child,
    pub logs: Logs,
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
        let logs = Logs::default();
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "raw": line }));
                if let Ok(mut lines) = sink.0.lock() {
                    lines.push(value);
                }
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
/// and waits for its `started_event`; returns the process and that log line.
pub async fn launch(
    binary: &Path,
    args: &[&str],
    dir: &Path,
    file_name: &str,
    config: &toml::Table,
    started_event: &str,
) -> (Process, Value) {
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
) -> (Process, Value) {
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
