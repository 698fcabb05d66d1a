//! `licsync-cp report` and `licsync-cp report verify`: offline usage reporting, after
//! HashiCorp's manual utilization reports. A site whose control plane cannot reach the vendor
//! saves the signed report to a file and sends it; the vendor (or anyone with the report
//! public key) checks it with `report verify`, which runs the same verification
//! ([`licsync_common::report::verify`]) as the control plane's own seal.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use licsync_common::fsutil;
use licsync_common::report::{self, MAX_REPORT_BYTES};
use reqwest::StatusCode;
use serde_json::Value;

use crate::admin::KONG_ADMIN_TOKEN;
use crate::cli::{FetchReportArgs, ReportCommand, ReportSubcommand, UsageError};

/// How long each Admin API call may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `report` or `report verify`; `Ok(false)` means the report did not verify.
pub fn run(command: ReportCommand) -> anyhow::Result<bool> {
    let ReportCommand { verify, fetch } = command;
    match verify {
        Some(ReportSubcommand::Verify { file, key }) => verify_file(&file, &key),
        None => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(save(fetch)).map(|()| true)
        }
    }
}

/// Fetches the report and its key, checks the one with the other (nothing corrupted on the
/// way, and the report came from the control plane that holds the key), and saves the report
/// exactly as received.
async fn save(args: FetchReportArgs) -> anyhow::Result<()> {
    let FetchReportArgs {
        server,
        token,
        output,
        by_dataplane,
        ca_cert,
    } = args;
    let (Some(token), Some(output)) = (token, output) else {
        return Err(UsageError("--token and --output are required".into()).into());
    };
    let server = server.trim_end_matches('/').to_owned();
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        return Err(UsageError(format!(
            "--server '{server}' must start with http:// or https://"
        ))
        .into());
    }
    let mut builder = reqwest::Client::builder().timeout(HTTP_TIMEOUT);
    if let Some(path) = &ca_cert {
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
        builder = builder.add_root_certificate(cert);
    }
    let client = builder.build().context("cannot build the HTTP client")?;
    let path = if by_dataplane {
        "/license/report?by=dataplane"
    } else {
        "/license/report"
    };
    let body = get(&client, &server, path, &token).await?;
    let key: Value =
        serde_json::from_slice(&get(&client, &server, "/license/report/key", &token).await?)
            .context("GET /license/report/key did not answer JSON")?;
    let Some(public_key) = key["public_key"].as_str() else {
        bail!("GET /license/report/key answered without a public_key: {key}");
    };
    let verified = report::verify(&body, public_key).with_context(|| {
        format!("the report {server} sent does not verify with its own report key")
    })?;
    fsutil::write_atomic(&output, &body, fsutil::PUBLIC_MODE)
        .with_context(|| format!("cannot write {}", output.display()))?;
    println!(
        "Saved the usage report to {} (total_requests {}, checksum {}).",
        output.display(),
        verified.report["total_requests"],
        verified.checksum
    );
    println!(
        "Verify it anywhere with: licsync-cp report verify --file {} --key {public_key}",
        output.display()
    );
    Ok(())
}

/// GET `path` with the admin token; the body of a 200, or an error with the API's message.
async fn get(
    client: &reqwest::Client,
    server: &str,
    path: &str,
    token: &str,
) -> anyhow::Result<Vec<u8>> {
    let url = format!("{server}{path}");
    let mut response = client
        .get(&url)
        .header(KONG_ADMIN_TOKEN, token)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("reading the answer of {url}"))?
    {
        if body.len() + chunk.len() > MAX_REPORT_BYTES {
            bail!("{url} answered more than {MAX_REPORT_BYTES} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    if status != StatusCode::OK {
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(512).collect());
        let hint = if status == StatusCode::UNAUTHORIZED {
            "; check --token (or LICSYNC_CP_ADMIN_TOKEN)"
        } else {
            ""
        };
        bail!("GET {url} answered {status}: {message}{hint}");
    }
    Ok(body)
}

fn verify_file(file: &Path, key: &str) -> anyhow::Result<bool> {
    // A wrong key argument is a usage error (exit 2), not a verdict on the report.
    report::parse_public_key(key).map_err(|e| UsageError(format!("--key: {e:#}")))?;
    let size = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    if size > MAX_REPORT_BYTES as u64 {
        eprintln!(
            "licsync-cp: {} does not verify: malformed report: {size} bytes is larger than the {MAX_REPORT_BYTES}-byte limit",
            file.display()
        );
        return Ok(false);
    }
    let text = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    match report::verify(&text, key) {
        Ok(verified) => {
            println!(
                "{}: verified. The checksum {} matches its content and the report key signed it (timestamp {}, total_requests {}).",
                file.display(),
                verified.checksum,
                verified.report["timestamp"],
                verified.report["total_requests"]
            );
            Ok(true)
        }
        Err(error) => {
            eprintln!("licsync-cp: {} does not verify: {error}", file.display());
            Ok(false)
        }
    }
}
