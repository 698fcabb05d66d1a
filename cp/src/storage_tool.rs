//! `licsync-cp storage migrate [status|up]`: shows or applies the PostgreSQL schema migrations
//! of the database the configuration names, without starting the control plane. `serve` also
//! migrates at start; this lets an operator look first, or migrate before rolling nodes.
//! `licsync-cp storage keygen --output FILE` writes a new storage key
//! ([`crate::store::storage_key`]); `licsync-cp storage copy` moves an embedded control plane
//! into PostgreSQL ([`crate::storage_copy`]).

use anyhow::Context;

use crate::cli::{CopyArgs, MigrateAction, StorageCommand, UsageError};
use crate::config::StorageBackend;

/// Runs a `storage` command; `Ok(false)` when the schema is newer than this binary.
pub fn run(command: StorageCommand) -> anyhow::Result<bool> {
    let args = match command {
        StorageCommand::Migrate(args) => args,
        StorageCommand::Keygen { output } => {
            crate::store::storage_key::StorageKey::generate_file(&output)?;
            println!(
                "Wrote a new storage key to {} (mode 0600). Keep a copy with your backups: the \
                 secrets in the database cannot be read without it.",
                output.display()
            );
            return Ok(true);
        }
        StorageCommand::Copy(args) => return copy(args),
    };
    let (config, _) = crate::cli::load_config(args.config)?;
    if config.storage.backend != StorageBackend::Postgres {
        return Err(UsageError(format!(
            "storage migrate applies to storage.backend = \"postgres\"; this configuration uses \
             {:?}, whose storage needs no migration",
            config.storage.backend
        ))
        .into());
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let store = crate::server::connect_postgres(&config).await?;
        match args.action {
            MigrateAction::Status => {
                let status = store.schema_status().await?;
                if status.current > status.known {
                    println!(
                        "schema version {}, newer than this licsync-cp knows (version {}): run \
                         the newer licsync-cp, or restore the backup taken before the upgrade",
                        status.current, status.known
                    );
                    return Ok(false);
                }
                println!(
                    "schema version {}; this licsync-cp knows version {}; {} migration(s) pending",
                    status.current,
                    status.known,
                    status.pending()
                );
                Ok(true)
            }
            MigrateAction::Up => {
                // As a node starting would: an older schema is backed up first.
                let applied = crate::server::upgrade_postgres(
                    &store,
                    &config,
                    config.storage.storage_key().ok().as_ref(),
                )
                .await?;
                let status = store.schema_status().await?;
                if applied.is_empty() {
                    println!("schema version {}: up to date", status.current);
                } else {
                    let list: Vec<String> = applied.iter().map(i32::to_string).collect();
                    println!(
                        "applied migration(s) {}; schema version {}",
                        list.join(", "),
                        status.current
                    );
                }
                Ok(true)
            }
        }
    })
}

/// `storage copy`: prints what was copied.
fn copy(args: CopyArgs) -> anyhow::Result<bool> {
    let options = crate::storage_copy::CopyOptions {
        from: args.from,
        to: args.to,
        encryption_key_file: args.encryption_key_file,
        password_file: args.password_file,
        ca_file: args.ca_file,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let summary = runtime.block_on(crate::storage_copy::copy(&options))?;
    println!(
        "Copied {summary} from {} into the PostgreSQL database. Start the nodes with \
         storage.backend = \"postgres\", this storage.postgres.url and \
         storage.encryption_key_file = \"{}\"; the admin tokens of the old control plane work \
         there.",
        options.from.display(),
        options.encryption_key_file.display()
    );
    Ok(true)
}
