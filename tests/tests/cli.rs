//! The command-line conveniences an operator scripts against, on both programs alike:
//! `config check` (same loading and validation as `serve`/`run`, so a pipeline can refuse a bad
//! file before a restart depends on it), `-c` for `--config`, `completions`, the `licsync-xx:`
//! error prefix and the exit status (2 for a bad invocation, 1 for a failed command).

use std::path::Path;
use std::process::{Command, Output};

use licsync_tests::process::binary;

/// What differs between the two programs for these checks.
struct Program {
    name: &'static str,
    /// A line-2 value that does not parse, and its key.
    bad_line: (&'static str, &'static str),
    /// A value that parses but the program refuses, and its key.
    refused: (&'static str, &'static str),
    subcommands: &'static [&'static str],
}

const PROGRAMS: [Program; 2] = [
    Program {
        name: "licsync-cp",
        bad_line: ("[admin]\nlisten = \"not an address\"\n", "admin.listen"),
        refused: ("[cluster]\nack_timeout = \"0s\"\n", "cluster.ack_timeout"),
        subcommands: &["serve", "license", "report", "config"],
    },
    Program {
        name: "licsync-dp",
        bad_line: ("[local]\nlisten = \"not an address\"\n", "local.listen"),
        refused: ("[sync]\nbackoff_initial = \"0s\"\n", "sync.backoff_initial"),
        subcommands: &["run", "registration", "config"],
    },
];

fn exec(name: &str, args: &[&str]) -> Output {
    Command::new(binary(name))
        .args(args)
        .env_remove("LICSYNC_CP_CONFIG")
        .env_remove("LICSYNC_DP_CONFIG")
        .output()
        .unwrap()
}

fn cp(args: &[&str]) -> Output {
    exec("licsync-cp", args)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn config_check_accepts_the_documented_examples_with_short_and_long_flags() {
    for program in &PROGRAMS {
        let example = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../deploy/config/{}.toml", program.name));
        let example = example.to_str().unwrap();
        for flag in ["-c", "--config"] {
            let out = exec(program.name, &["config", "check", flag, example]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            assert_eq!(
                text(&out.stdout),
                format!("{}: configuration OK ({example})\n", program.name)
            );
        }
    }
}

#[test]
fn config_check_names_the_file_line_and_key_and_exits_2() {
    for program in &PROGRAMS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let check = || {
            exec(
                program.name,
                &["config", "check", "-c", path.to_str().unwrap()],
            )
        };

        std::fs::write(&path, program.bad_line.0).unwrap();
        let out = check();
        assert_eq!(out.status.code(), Some(2), "{}", program.name);
        let err = text(&out.stderr);
        assert!(err.starts_with(&format!("{}: ", program.name)), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains(program.bad_line.1), "{err}");

        // A value that parses but the program would refuse at start is refused here too.
        std::fs::write(&path, program.refused.0).unwrap();
        let out = check();
        assert_eq!(out.status.code(), Some(2), "{}", program.name);
        let err = text(&out.stderr);
        assert!(err.contains(program.refused.1), "{err}");

        // A missing file is an error, not the built-in defaults.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(check().status.code(), Some(2), "{}", program.name);
    }
}

#[test]
fn completions_cover_the_subcommands_for_each_shell() {
    for program in &PROGRAMS {
        for shell in ["bash", "zsh", "fish"] {
            let out = exec(program.name, &["completions", shell]);
            assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
            let script = text(&out.stdout);
            for word in program.subcommands {
                assert!(script.contains(word), "{shell} completion lacks {word}");
            }
        }
        let out = exec(program.name, &["completions", "tcsh"]);
        assert_eq!(out.status.code(), Some(2));
    }
}

#[test]
fn exit_status_tells_a_bad_invocation_from_a_failed_command() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.json");
    std::fs::write(&file, "{}").unwrap();
    let file = file.to_str().unwrap();
    let output = dir.path().join("saved.json");
    let output = output.to_str().unwrap();

    // Bad invocations: 2.
    let out = cp(&["report", "verify", "--file", file, "--key", "not-a-key"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--key"), "{}", text(&out.stderr));
    let out = cp(&[
        "report", "--server", "ftp://x", "--token", "t", "--output", output,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // The command ran and failed: 1. Nothing listens on port 1.
    let out = cp(&[
        "report",
        "--server",
        "http://127.0.0.1:1",
        "--token",
        "t",
        "--output",
        output,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).starts_with("licsync-cp: cannot reach"),
        "{}",
        text(&out.stderr)
    );
    assert!(!Path::new(output).exists());
}

#[test]
fn storage_keygen_writes_a_private_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("storage.key");
    let path_text = path.to_str().unwrap();
    let out = cp(&["storage", "keygen", "--output", path_text]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = std::fs::read_to_string(&path).unwrap();
    assert_eq!(key.trim().len(), 44, "32 bytes as base64: {key}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    let out = cp(&["storage", "keygen", "--output", path_text]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.matches("never overwritten").count(), 1, "{err}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        key,
        "the key is kept"
    );
}
