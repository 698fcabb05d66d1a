//! The `licsync-dp` command line: `run` (the agent) and `registration create | renew | inspect`.
//!
//! Every flag's doc comment is its `--help` text. Exit status: 0 on success (and after a clean
//! SIGTERM/SIGINT shutdown), 1 when the command failed, 2 for a bad command line or
//! configuration.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use licsync_common::duration::HumanDuration;
use licsync_common::telemetry::{self, LogConfig};
use tokio_util::sync::CancellationToken;

use crate::config::{self, DpConfig};
use crate::registration::{self, CaSource, CreateOptions, RegistrationFile, RenewOptions};

/// licsync data-plane agent: keeps the license a gateway reads in sync with the control plane.
#[derive(Debug, Parser)]
#[command(name = "licsync-dp", version, about)]
pub struct Cli {
    /// Configuration file (TOML). Without it, ./licsync-dp.toml is used when present, else
    /// built-in defaults.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "LICSYNC_DP_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: sync licenses from the control plane and serve the local API.
    Run,
    /// Register this data plane with a control plane, or inspect its registration.
    #[command(subcommand)]
    Registration(RegistrationCommand),
    /// Check the configuration file without starting anything: exits 0, or prints the file,
    /// line and key at fault and exits 2.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a completion script for a shell, e.g. `licsync-dp completions bash >
    /// /etc/bash_completion.d/licsync-dp`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate the configuration exactly as `run` would, then stop.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum RegistrationCommand {
    /// Exchange a registration token for a certificate and write DIR/registration.yaml.
    Create(CreateArgs),
    /// Get a fresh key and certificate for this data plane (also after it expired) with an
    /// admin user's or a connected app's credential, into DIR/registration.yaml.
    Renew(RenewArgs),
    /// Print the registration file's identity and certificate expiry as one JSON object.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Registration token from `POST /registration-tokens` on the control plane's Admin API.
    #[arg(long, env = "LICSYNC_REGISTRATION_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The control plane's cluster listener, e.g. `https://cp.example.com:8005`.
    #[arg(long, env = "LICSYNC_SERVER", value_name = "URL")]
    pub server: String,
    #[command(flatten)]
    pub ca: CaArgs,
    /// Name for this data plane at the control plane (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Directory for registration.yaml; created (mode 0700) when missing.
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub output_directory: PathBuf,
    /// Limit on connecting to the control plane and on each call.
    #[arg(long, default_value = "30s")]
    pub timeout: HumanDuration,
}

/// How the cluster CA is trusted: exactly one of the two.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct CaArgs {
    /// The cluster CA certificate (PEM file) copied from the control plane.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// The cluster CA certificate's fingerprint, `sha256:HEX` (ca_cert_sha256 from
    /// `POST /registration-tokens`); the CA is then fetched from the control plane and checked.
    #[arg(long, value_name = "sha256:HEX")]
    pub ca_cert_hash: Option<String>,
}

/// `registration renew`. The credential flags are checked together by
/// [`credential_from_flags`](crate::registration::renew::credential_from_flags), which names the missing or extra flag.
#[derive(Debug, Args)]
pub struct RenewArgs {
    /// An admin user of the control plane (with --password).
    #[arg(long, value_name = "U")]
    pub username: Option<String>,
    /// The user's password (or set LICSYNC_PASSWORD, which keeps it out of the process list).
    #[arg(long, value_name = "P")]
    pub password: Option<String>,
    /// A connected app with the manage:servers scope (with --client-secret).
    #[arg(long, value_name = "I")]
    pub client_id: Option<String>,
    /// The app's secret (or set LICSYNC_CLIENT_SECRET).
    #[arg(long, value_name = "S")]
    pub client_secret: Option<String>,
    /// Directory for the new registration.yaml; it must not hold one already (the file in
    /// use is never overwritten). Created (mode 0700) when missing.
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub output_directory: PathBuf,
    /// `--update-urls=true` takes the cluster URL the control plane advertises now;
    /// otherwise the registration file's is kept.
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value_t = false,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub update_urls: bool,
    /// Limit on connecting to the control plane and on the call.
    #[arg(long, default_value = "30s")]
    pub timeout: HumanDuration,
    /// The registration file to renew (it may hold an expired certificate).
    #[arg(value_name = "path-to-registration-file")]
    pub registration_file: PathBuf,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Registration file to inspect (default: registration_file from the configuration).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let Cli { config, command } = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("licsync-dp: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match command {
        Command::Run => match load_config(config.clone()) {
            Ok(loaded) => runtime.block_on(run(loaded, config)),
            Err(code) => code,
        },
        Command::Registration(RegistrationCommand::Create(args)) => {
            init_quiet_logs();
            runtime.block_on(create(args))
        }
        Command::Registration(RegistrationCommand::Renew(args)) => {
            init_quiet_logs();
            let servers = match renew_servers(config) {
                Ok(servers) => servers,
                Err(code) => return code,
            };
            runtime.block_on(renew(args, servers))
        }
        Command::Registration(RegistrationCommand::Inspect(args)) => inspect(config, args),
        Command::Config(ConfigCommand::Check) => match load_config(config.clone()) {
            Ok(_) => {
                let path = licsync_common::config::locate(config, config::DEFAULT_FILE_NAME);
                let source = path.map_or_else(
                    || "built-in defaults".to_owned(),
                    |p| p.display().to_string(),
                );
                println!("licsync-dp: configuration OK ({source})");
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "licsync-dp",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
    };
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

fn load_config(explicit: Option<PathBuf>) -> Result<DpConfig, ExitCode> {
    let path = licsync_common::config::locate(explicit, config::DEFAULT_FILE_NAME);
    DpConfig::load(path.as_deref()).map_err(|e| {
        eprintln!("licsync-dp: {e}");
        ExitCode::from(2)
    })
}

/// Logs of the one-shot commands go to stderr at `warn` unless `LICSYNC_LOG` says otherwise.
fn init_quiet_logs() {
    let _ = telemetry::init(&LogConfig {
        level: "warn".into(),
        ..LogConfig::default()
    });
}

/// Runs the agent; `explicit` is `--config`, read again on SIGHUP.
async fn run(config: DpConfig, explicit: Option<PathBuf>) -> ExitCode {
    if let Err(e) = telemetry::init(&config.log) {
        eprintln!("licsync-dp: {e}");
        return ExitCode::from(2);
    }
    let listener = match tokio::net::TcpListener::bind(config.local.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(
                event = "local.listen_failed",
                "Cannot listen on local.listen {}: {e}; choose another address or stop what uses it.",
                config.local.listen
            );
            return ExitCode::FAILURE;
        }
    };
    let token = CancellationToken::new();
    tokio::spawn(licsync_common::shutdown::cancel_on_signal(
        "dp",
        token.clone(),
    ));
    let (reload_tx, reloads) = tokio::sync::mpsc::channel(1);
    tokio::spawn(crate::reload::on_sighup(explicit, reload_tx));
    let agent =
        crate::agent::run_reloadable(config, listener, token.clone().cancelled_owned(), reloads);
    let deadline = async {
        token.cancelled().await;
        tokio::time::sleep(licsync_common::shutdown::DRAIN_DEADLINE).await;
    };
    tokio::select! {
        result = agent => match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(event = "dp.failed", "{e:#}");
                ExitCode::FAILURE
            }
        },
        () = deadline => {
            tracing::warn!(event = "dp.drain_timeout", deadline = ?licsync_common::shutdown::DRAIN_DEADLINE, "Shutdown took too long; exiting anyway.");
            ExitCode::SUCCESS
        }
    }
}

async fn create(args: CreateArgs) -> ExitCode {
    let CreateArgs {
        token,
        server,
        ca: CaArgs {
            ca_cert,
            ca_cert_hash,
        },
        name,
        output_directory,
        timeout,
    } = args;
    let ca = match (ca_cert, ca_cert_hash) {
        (Some(file), _) => CaSource::File(file),
        (None, Some(hash)) => CaSource::Hash(hash),
        // clap's group makes one of them required.
        (None, None) => {
            eprintln!("licsync-dp: pass --ca-cert FILE or --ca-cert-hash sha256:HEX");
            return ExitCode::from(2);
        }
    };
    let options = CreateOptions {
        token,
        server,
        ca,
        name,
        output_directory,
        timeout: timeout.0,
    };
    match registration::create::create(options).await {
        Ok(_) => {
            println!("Registration completed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("licsync-dp: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The servers `registration renew` asks in turn: `sync.servers` from the configuration when
/// there is one (so a renewal works while the node in the registration file is down), else
/// none (the file's URL).
fn renew_servers(config: Option<PathBuf>) -> Result<Vec<crate::cluster::ClusterUrl>, ExitCode> {
    if licsync_common::config::locate(config.clone(), config::DEFAULT_FILE_NAME).is_none() {
        return Ok(Vec::new());
    }
    Ok(load_config(config)?.sync.server_urls())
}

async fn renew(args: RenewArgs, servers: Vec<crate::cluster::ClusterUrl>) -> ExitCode {
    let RenewArgs {
        username,
        password,
        client_id,
        client_secret,
        output_directory,
        update_urls,
        timeout,
        registration_file,
    } = args;
    let credential = match crate::registration::renew::credential_from_flags(
        username,
        password,
        client_id,
        client_secret,
        |name| std::env::var(name).ok(),
    ) {
        Ok(credential) => credential,
        Err(mistake) => usage_error(&mistake),
    };
    let options = RenewOptions {
        credential,
        registration_file,
        output_directory,
        update_urls,
        timeout: timeout.0,
        servers,
    };
    match registration::renew::renew(options).await {
        Ok(_) => {
            println!("Registration renewal completed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("licsync-dp: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reports a command-line mistake the way clap does (message, usage, exit status 2).
fn usage_error(message: &str) -> ! {
    use clap::CommandFactory;
    let mut command = Cli::command();
    command.build();
    let usage = command
        .find_subcommand_mut("registration")
        .and_then(|c| c.find_subcommand_mut("renew"))
        .map(|c| c.render_usage().to_string())
        .unwrap_or_default();
    clap::Error::raw(
        clap::error::ErrorKind::ArgumentConflict,
        format!("{message}\n\n{usage}\n\nFor more information, try 'licsync-dp registration renew --help'.\n"),
    )
    .exit()
}

fn inspect(config: Option<PathBuf>, args: InspectArgs) -> ExitCode {
    let InspectArgs { file } = args;
    let path = match file {
        Some(path) => path,
        None => match load_config(config) {
            Ok(config) => config.registration_file,
            Err(code) => return code,
        },
    };
    let now = time::OffsetDateTime::now_utc();
    let report = RegistrationFile::load(&path).and_then(|file| {
        file.inspect(now)
            .map_err(|e| registration::RegistrationError::Invalid {
                path: path.clone(),
                reason: e.to_string(),
            })
    });
    match report.map(|json| serde_json::to_string_pretty(&json)) {
        Ok(Ok(json)) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!(
                "licsync-dp: cannot print the registration of {}: {e}",
                path.display()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("licsync-dp: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_is_consistent_and_documented() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "licsync-dp",
            "registration",
            "create",
            "--token",
            "t",
            "--server",
            "https://cp:8005",
            "--ca-cert-hash",
            "sha256:00",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Registration(RegistrationCommand::Create(_))
        ));
        let both = Cli::try_parse_from([
            "licsync-dp",
            "registration",
            "create",
            "--token",
            "t",
            "--server",
            "https://cp:8005",
            "--ca-cert",
            "ca.crt",
            "--ca-cert-hash",
            "sha256:00",
        ]);
        assert!(
            both.is_err(),
            "--ca-cert and --ca-cert-hash exclude each other"
        );
        let cli = Cli::try_parse_from(["licsync-dp", "run", "--config", "/etc/dp.toml"]).unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("/etc/dp.toml")));
    }
}
