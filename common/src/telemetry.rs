//! `tracing` set-up shared by both binaries.
//!
//! `log.format = "text"` writes human lines; `"json"` writes one object per line with the event's
//! fields (`event`, ids, revision, peer) flattened to the top level, which is what log shippers
//! index. Either way one event is one line: text logs escape control characters in every
//! value ([`crate::log_text`]), JSON escapes them as JSON does. `LICSYNC_LOG` (e.g. `info,licsync_cp=debug`) overrides `log.level`.

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

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

/// Installs the global subscriber. Logs go to stderr so stdout stays free for command output.
pub fn init(config: &LogConfig) -> Result<(), BadFilter> {
    let filter_text = std::env::var("LICSYNC_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| config.level.clone());
    let filter = EnvFilter::try_new(&filter_text).map_err(|source| BadFilter {
        filter: filter_text.clone(),
        source,
    })?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second init (tests calling library entry points) keeps the first subscriber.
    let _ = match config.format {
        LogFormat::Text => builder
            .fmt_fields(crate::log_text::EscapingFields::default())
            .with_target(false)
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    Ok(())
}
