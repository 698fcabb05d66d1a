//! The `licsync-cp` command line: `serve` runs the control plane; `license keygen | sign | verify`
//! are the offline tools a license issuer uses (no server needed); `report` saves a running
//! control plane's signed usage report and `report verify` checks a saved one offline;
//! `storage migrate [status|up]` shows or applies the PostgreSQL schema migrations and
//! `storage keygen` writes a storage key;
//! `backup` saves a running control plane's backup and `restore` turns one into a data_dir;
//! `config check` lets an operator (or a deployment pipeline) try a configuration before a
//! restart depends on it, and `completions` prints a shell completion script.
//!
//! Exit codes, the same for `licsync-dp`: 0 success; 1 the command ran and failed, or its
//! answer is "no" (a license or report that does not verify); 2 a bad command line or a bad
//! configuration ([`UsageError`]), so that scripts can tell "fix the invocation" from "retry".

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// licsync control plane: stores signed licenses behind a Kong-compatible Admin API and streams
/// them to registered data planes over mutually authenticated gRPC.
#[derive(Debug, Parser)]
#[command(name = "licsync-cp", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane (Admin API and cluster listener).
    Serve(ServeArgs),
    /// Create signing keys, sign and verify license documents offline.
    #[command(subcommand)]
    License(LicenseCommand),
    /// Save the signed usage report of a running control plane (`report --server URL --token T
    /// --output FILE`), or check a saved one offline (`report verify --file FILE --key B64`).
    Report(ReportCommand),
    /// Check a configuration file without starting anything: exits 0, or prints the file, line
    /// and key at fault and exits 2.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a completion script for a shell, e.g. `licsync-cp completions bash >
    /// /etc/bash_completion.d/licsync-cp`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Storage maintenance: `storage migrate [status|up]` shows or applies the PostgreSQL
    /// schema migrations.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Save a consistent backup of a running control plane (GET /backup, an admin token) to a
    /// new file, mode 0600: licenses, data planes, tokens, principals, usage, audit and the
    /// PKI. It holds secret keys.
    Backup(BackupArgs),
    /// Turn a backup into the data_dir of an embedded control plane (DIR must be empty or
    /// absent); start licsync-cp on it, or `storage copy` it into PostgreSQL.
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The control plane's Admin API.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8001")]
    pub server: String,
    /// An admin token (the first one is in <data_dir>/admin-token), sent as Kong-Admin-Token.
    /// Prefer --token-file or the environment variable: arguments are visible to other users.
    #[arg(
        long,
        env = "LICSYNC_CP_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// A file holding the admin token.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The new backup file (never replaced; written 0600).
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// CA certificate (PEM) to trust when --server is https.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A backup written by `licsync-cp backup` (or into <data_dir>/backups/ before an upgrade).
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// The data_dir to create: absent or empty.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
}

/// A bad command line or configuration: exit 2 rather than 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The configuration `serve` would run with (`--config`, else `./licsync-cp.toml` when
/// present, else the built-in defaults), checked, and where it came from.
pub fn load_config(
    explicit: Option<PathBuf>,
) -> Result<(crate::config::CpConfig, String), UsageError> {
    let path = licsync_common::config::locate(explicit, "licsync-cp.toml");
    let source = path.as_deref().map_or_else(
        || "built-in defaults".to_owned(),
        |p| p.display().to_string(),
    );
    let config: crate::config::CpConfig =
        licsync_common::config::load(path.as_deref()).map_err(|e| UsageError(format!("{e:#}")))?;
    config
        .validate()
        .map_err(|invalid| UsageError(format!("invalid config file {source}: {invalid}")))?;
    Ok((config, source))
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate the configuration exactly as `serve` would, then stop.
    Check(ServeArgs),
}

#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Show (`status`, the default) or apply (`up`) the PostgreSQL schema migrations of the
    /// database in the configuration (storage.backend = "postgres").
    Migrate(MigrateArgs),
    /// Write a new storage key (32 random bytes, base64, mode 0600) for
    /// storage.encryption_key_file; never overwrites a file.
    Keygen {
        /// Where to write the key.
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Copy a stopped control plane with embedded storage (licenses, data planes, tokens,
    /// principals, usage, the CA and the report key) into an empty PostgreSQL database, in one
    /// transaction; its data planes then reconnect to nodes on that database unchanged.
    Copy(CopyArgs),
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The data_dir of the control plane to copy (storage.backend = "sled"); stop it first.
    #[arg(long, value_name = "DATA_DIR")]
    pub from: PathBuf,
    /// The empty target database: postgres://USER@HOST:PORT/DB (the password from
    /// LICSYNC_CP_POSTGRES_PASSWORD or --password-file when the URL has none).
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// The storage key the nodes on the database will use (storage.encryption_key_file);
    /// `storage keygen` writes one.
    #[arg(long, value_name = "FILE")]
    pub encryption_key_file: PathBuf,
    /// A file holding the database password.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// The PEM CA of the database server's certificate: connect with verified TLS.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[arg(value_enum, default_value = "status")]
    pub action: MigrateAction,
    /// TOML configuration file, as for `serve`.
    #[arg(long, short = 'c', env = "LICSYNC_CP_CONFIG", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MigrateAction {
    /// Print the schema version and how many migrations are pending; exit 1 when the schema
    /// is newer than this binary.
    Status,
    /// Apply the pending migrations (under the migration lock, so nodes may be starting).
    Up,
}

/// `report`: fetch and save, unless the `verify` subcommand is given.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ReportCommand {
    #[command(subcommand)]
    pub verify: Option<ReportSubcommand>,
    #[command(flatten)]
    pub fetch: FetchReportArgs,
}

/// Saving a report from the Admin API (HashiCorp-style manual utilization reporting: the file
/// goes to the vendor by whatever means the site allows).
#[derive(Debug, Args)]
pub struct FetchReportArgs {
    /// The control plane's Admin API.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8001")]
    pub server: String,
    /// An Admin API token (the first one is in <data_dir>/admin-token); sent as
    /// Kong-Admin-Token. Prefer the environment variable: arguments are visible to other users.
    #[arg(
        long,
        env = "LICSYNC_CP_ADMIN_TOKEN",
        value_name = "TOKEN",
        required = true,
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Where to save the report (replaced atomically).
    #[arg(long, value_name = "FILE", required = true)]
    pub output: Option<PathBuf>,
    /// Include the per-data-plane breakdown (`?by=dataplane`).
    #[arg(long)]
    pub by_dataplane: bool,
    /// CA certificate (PEM) to trust when --server is https.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ReportSubcommand {
    /// Check a saved report: exits 0 only when its checksum matches its content and the report
    /// key signed it; otherwise says what does not match.
    Verify {
        /// The saved report.
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        /// The report public key (standard base64), from GET /license/report/key or
        /// <data_dir>/pki/report.pub of the control plane that signed it.
        #[arg(long, value_name = "B64")]
        key: String,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file; without it ./licsync-cp.toml is used when present, else built-in
    /// defaults (embedded sled under ./licsync-data).
    #[arg(long, short = 'c', env = "LICSYNC_CP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum LicenseCommand {
    /// Generate an Ed25519 license-signing key pair.
    Keygen {
        /// Directory for license-signing.key (PKCS#8 PEM, mode 0600) and license-signing.pub
        /// (base64 public key, the form licenses.trusted_keys takes).
        #[arg(long, value_name = "DIR")]
        output_dir: PathBuf,
    },
    /// Sign a payload (a JSON object of strings) and print the license document.
    Sign {
        /// PKCS#8 PEM signing key written by `license keygen`.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// JSON file holding the payload object.
        #[arg(long, value_name = "FILE")]
        payload: PathBuf,
    },
    /// Check a license document; exits 0 when a trusted key verifies it and says why not otherwise.
    Verify {
        /// The license document (what KONG_LICENSE_PATH points at).
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        /// A trusted public key (standard base64); repeat for several.
        #[arg(long = "trusted-key", value_name = "B64", required = true, num_args = 1..)]
        trusted_keys: Vec<String>,
    },
}
