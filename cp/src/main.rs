//! `licsync-cp`: parse the command line, load the configuration, run until SIGTERM or SIGINT.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use licsync_common::{config, telemetry};
use licsync_cp::cli::{Cli, Command};
use licsync_cp::config::CpConfig;
use licsync_cp::server::{self, Listeners};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let Cli { command } = Cli::parse();
    let result = match command {
        Command::License(command) => licsync_cp::license_tool::run(command),
        Command::Report(command) => licsync_cp::report_tool::run(command),
        Command::Storage(command) => licsync_cp::storage_tool::run(command),
        Command::Serve(args) => serve(args.config).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("licsync-cp: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn serve(config_path: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let path = config::locate(config_path, "licsync-cp.toml");
    let config: CpConfig = config::load(path.as_deref())?;
    if let Err(invalid) = config.validate() {
        let source = path.map_or_else(
            || "built-in defaults".to_owned(),
            |p| p.display().to_string(),
        );
        anyhow::bail!("invalid config file {source}: {invalid}");
    }
    telemetry::init(&config.log)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listeners = Listeners::bind(&config).await?;
        let shutdown = CancellationToken::new();
        tokio::spawn(licsync_common::shutdown::cancel_on_signal(
            "cp",
            shutdown.clone(),
        ));
        server::run(config, listeners, shutdown).await?;
        Ok(())
    })
}
