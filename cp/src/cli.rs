//! The `licsync-cp` command line: `serve` runs the control plane; `license keygen | sign | verify`
//! are the offline tools a license issuer uses (no server needed).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
