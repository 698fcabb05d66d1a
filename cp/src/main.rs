//! `licsync-cp`: parse the command line, load the configuration, run until SIGTERM or SIGINT.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use licsync_common::telemetry;
use licsync_cp::cli::{Cli, Command, ConfigCommand, UsageError};
use licsync_cp::server::{self, Listeners};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let Cli { command } = Cli::parse();
    let result = match command {
        Command::License(command) => licsync_cp::license_tool::run(command),
        Command::Report(command) => licsync_cp::report_tool::run(command),
        Command::Storage(command) => licsync_cp::storage_tool::run(command),
        Command::Backup(args) => licsync_cp::backup::client::run(args),
        Command::Restore(args) => licsync_cp::backup::run_restore(args),
        Command::Serve(args) => serve(args.config).map(|()| true),
        Command::Config(ConfigCommand::Check(args)) => check(args.config).map(|()| true),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "licsync-cp",
                &mut std::io::stdout(),
            );
            Ok(true)
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("licsync-cp: {error:#}");
            if error.is::<UsageError>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn check(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let (_, source) = licsync_cp::cli::load_config(config_path)?;
    println!("licsync-cp: configuration OK ({source})");
    Ok(())
}

fn serve(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let (config, _) = licsync_cp::cli::load_config(config_path.clone())?;
    telemetry::init(&config.log)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listeners = Listeners::bind(&config).await?;
        let shutdown = CancellationToken::new();
        tokio::spawn(licsync_common::shutdown::cancel_on_signal(
            "cp",
            shutdown.clone(),
        ));
        let (reload_tx, reloads) = tokio::sync::mpsc::channel(1);
        tokio::spawn(licsync_cp::reload::on_sighup(config_path, reload_tx));
        server::run_reloadable(config, listeners, shutdown, reloads).await?;
        Ok(())
    })
}
