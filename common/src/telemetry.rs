//! `tracing` set-up shared by both binaries.
//!
//! `log.format = "text"` writes human lines; `"json"` writes one object per line with the event's
//! fields (`event`, ids, revision, peer) flattened to the top level, which is what log shippers
//! index. Either way one event is one line: text logs escape control characters in every
//! value ([`crate::log_text`]), JSON escapes them as JSON does. `LICSYNC_LOG` (e.g. `info,licsync_cp=debug`) overrides `log.level`.
//!
//! The filter can be replaced while running ([`reload_level`], on SIGHUP), so an operator can
//! turn on debug logs for a moment without a restart that would drop every stream.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// Replaces the installed subscriber's filter (the handle's type depends on the format, so it
/// is kept behind a closure).
type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

static SET_FILTER: OnceLock<SetFilter> = OnceLock::new();

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The `[log]` table, identical for both components.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A level (`info`) or a filter directive (`info,licsync_cp=debug`).
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// A log filter that cannot be parsed.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid log filter '{filter}' ({source}); use a level such as \"info\" or directives such as \"info,licsync_cp=debug\""
)]
pub struct BadFilter {
    filter: String,
    source: tracing_subscriber::filter::ParseError,
}

/// `LICSYNC_LOG`, when set: it wins over `log.level`, also on reload.
fn env_filter() -> Option<String> {
    std::env::var("LICSYNC_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

fn parse(filter_text: &str) -> Result<EnvFilter, BadFilter> {
    EnvFilter::try_new(filter_text).map_err(|source| BadFilter {
        filter: filter_text.to_owned(),
        source,
    })
}

/// Installs the global subscriber. Logs go to stderr so stdout stays free for command output.
pub fn init(config: &LogConfig) -> Result<(), BadFilter> {
    let filter = parse(&env_filter().unwrap_or_else(|| config.level.clone()))?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second init (tests calling library entry points) keeps the first subscriber.
    match config.format {
        LogFormat::Text => {
            let builder = builder
                .fmt_fields(crate::log_text::EscapingFields::default())
                .with_target(false)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            if builder.try_init().is_ok() {
                let _ = SET_FILTER.set(Box::new(move |f| {
                    handle.reload(f).map_err(|e| e.to_string())
                }));
            }
        }
        LogFormat::Json => {
            let builder = builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            if builder.try_init().is_ok() {
                let _ = SET_FILTER.set(Box::new(move |f| {
                    handle.reload(f).map_err(|e| e.to_string())
                }));
            }
        }
    }
    Ok(())
}

/// What a reload did to the log filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LevelReload {
    /// Now filtering with this `log.level`.
    Applied(String),
    /// `LICSYNC_LOG` is set and keeps precedence; `log.level` was not applied.
    KeptEnvironment,
    /// No subscriber of [`init`]'s is installed (a library embedding); nothing changed.
    NotInstalled,
}

/// Applies `config.level` to the running subscriber (a bad filter changes nothing).
pub fn reload_level(config: &LogConfig) -> Result<LevelReload, BadFilter> {
    if env_filter().is_some() {
        return Ok(LevelReload::KeptEnvironment);
    }
    let filter = parse(&config.level)?;
    match SET_FILTER.get() {
        Some(set) => {
            // Only fails when the subscriber is gone, i.e. the process is exiting.
            let _ = set(filter);
            Ok(LevelReload::Applied(config.level.clone()))
        }
        None => Ok(LevelReload::NotInstalled),
    }
}
