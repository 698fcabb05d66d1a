//! `licsync-cp backup --server URL --output FILE`: saves a running control plane's backup
//! (`GET /backup`, an admin token) to a file only its owner can read.
//!
//! The answer is streamed into a temporary file beside FILE (mode 0600 from its creation),
//! made durable, read back and checked as a restore would check it, and only then linked to
//! FILE, which must not exist: a backup is never half-written, never replaces another, and is
//! never readable by anyone else, not even for an instant.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use licsync_common::fsutil::SECRET_MODE;
use reqwest::StatusCode;

use super::document::{Counts, Document};
use crate::admin::KONG_ADMIN_TOKEN;
use crate::cli::{BackupArgs, UsageError};

/// How long connecting to the Admin API may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the whole backup may take to arrive.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
/// Most bytes of an error answer shown.
const MAX_ERROR_BYTES: usize = 4096;

/// Runs `licsync-cp backup`.
pub fn run(args: BackupArgs) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(save(args)).map(|()| true)
}

async fn save(args: BackupArgs) -> anyhow::Result<()> {
    let BackupArgs {
        server,
        token,
        token_file,
        output,
        ca_file,
    } = args;
    let token = match (token, token_file) {
        (Some(token), None) => token,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map(|t| t.trim().to_owned())
            .map_err(|e| UsageError(format!("--token-file {}: {e}", path.display())))?,
        _ => {
            return Err(UsageError(
                "give an admin token with --token, --token-file or LICSYNC_CP_ADMIN_TOKEN".into(),
            )
            .into());
        }
    };
    if output.exists() {
        return Err(UsageError(format!(
            "{} already exists; a backup never replaces a file: choose another --output",
            output.display()
        ))
        .into());
    }
    let server = server.trim_end_matches('/').to_owned();
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        return Err(UsageError(format!(
            "--server '{server}' must start with http:// or https://"
        ))
        .into());
    }
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(TRANSFER_TIMEOUT);
    if let Some(path) = &ca_file {
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
        builder = builder.add_root_certificate(cert);
    }
    let client = builder.build().context("cannot build the HTTP client")?;
    let url = format!("{server}/backup");
    let response = client
        .get(&url)
        .header(KONG_ADMIN_TOKEN, token)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    if response.status() != StatusCode::OK {
        bail!("{}", refusal(&url, response).await);
    }
    let staging = staging_path(&output)?;
    let saved = async {
        let counts = stream_to(&staging, response, &url).await?;
        publish(&staging, &output)?;
        Ok::<_, anyhow::Error>(counts)
    }
    .await;
    let _ = std::fs::remove_file(&staging);
    let counts = saved?;
    println!(
        "Saved the backup of {server} to {} (mode 0600; it holds secret keys): {counts}.",
        output.display()
    );
    Ok(())
}

/// What a refused request says, with a hint for the usual causes.
async fn refusal(url: &str, response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    let body = &body[..body.len().min(MAX_ERROR_BYTES)];
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let hint = match status {
        StatusCode::UNAUTHORIZED => "; check --token (or --token-file, LICSYNC_CP_ADMIN_TOKEN)",
        StatusCode::FORBIDDEN => "; a backup needs an admin token",
        _ => "",
    };
    format!("GET {url} answered {status}: {message}{hint}")
}

/// `.<name>.backup-<pid>` beside `output`.
fn staging_path(output: &Path) -> anyhow::Result<PathBuf> {
    let name = output
        .file_name()
        .with_context(|| format!("--output {} names no file", output.display()))?;
    Ok(output.with_file_name(format!(
        ".{}.backup-{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// Writes the answer's body to `path` (created 0600), durably, and checks it reads back as a
/// backup.
async fn stream_to(
    path: &Path,
    mut response: reqwest::Response,
    url: &str,
) -> anyhow::Result<Counts> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(SECRET_MODE)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("reading the answer of {url}"))?
    {
        file.write_all(&chunk)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    file.sync_all()
        .with_context(|| format!("cannot write {}", path.display()))?;
    drop(file);
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let document = Document::parse(&bytes)
        .with_context(|| format!("{url} answered something that is not a usable backup"))?;
    Ok(document.counts())
}

/// Links `staging` to `output` (failing when `output` exists) and makes the name durable.
fn publish(staging: &Path, output: &Path) -> anyhow::Result<()> {
    std::fs::hard_link(staging, output).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} appeared while the backup was taken; it was left alone: choose another --output",
                output.display()
            )
        } else {
            anyhow::Error::new(e).context(format!("cannot create {}", output.display()))
        }
    })?;
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}
