//! Loading a component's TOML configuration with errors an operator can act on.
//!
//! Both binaries look for their file in the same order: `--config FILE`, then the environment
//! variable (clap fills both into one option), then `./licsync-cp.toml` / `./licsync-dp.toml`
//! when present, then built-in defaults. Config structs use `deny_unknown_fields`, so a typo
//! stops the program with the file, the key and the reason instead of being silently ignored.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config file {path}: key '{key}': {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

/// Picks the file to load: the explicit one (flag or environment), else `default_name` in the
/// working directory when it exists, else none (built-in defaults).
pub fn locate(explicit: Option<PathBuf>, default_name: &str) -> Option<PathBuf> {
    explicit.or_else(|| {
        let candidate = PathBuf::from(default_name);
        candidate.is_file().then_some(candidate)
    })
}

/// Parses `path` into `T`; `T::default()` when `path` is `None`.
pub fn load<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, ConfigError> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Parses TOML text; `path` only names the source in errors.
pub fn parse<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: describe(&e, text),
    })
}

/// toml's message, with the line and the dotted key it concerns when toml knows the span.
fn describe(error: &toml::de::Error, text: &str) -> String {
    let reason = error.message().trim().to_owned();
    let Some(span) = error.span() else {
        return reason;
    };
    let start = span.start.min(text.len());
    let line = text[..quoted_value_in(text, &span, &reason).unwrap_or(start)]
        .matches('\n')
        .count()
        + 1;
    match key_at(text, start) {
        Some(key) => format!("line {line}, key '{key}': {reason}"),
        None => {
            let snippet = text.get(span).unwrap_or("").trim();
            format!("line {line}, at `{snippet}`: {reason}")
        }
    }
}

/// Where, inside a list spanning several lines, the entry the reason quotes (`'...'`) is, so
/// that the reported line is the bad entry's and not the list's first.
fn quoted_value_in(text: &str, span: &std::ops::Range<usize>, reason: &str) -> Option<usize> {
    let quoted = reason.split('\'').nth(1).filter(|q| !q.is_empty())?;
    let within = text.get(span.clone())?;
    within
        .find(&format!("\"{quoted}\""))
        .map(|offset| span.start + offset)
}

/// The dotted key (`table.key`) assigned on the line containing byte `offset`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?;
    let key = line.split_once('=')?.0.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('#') {
        return None;
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    Some(match table {
        Some(table) if !table.is_empty() => format!("{table}.{key}"),
        _ => key.to_owned(),
    })
}

/// `deserialize_with` for a `trusted_keys` list: checks each key while parsing, so that a bad
/// one is reported like any other bad value, with its file, line and key, not only after
/// loading with no place to look.
pub fn trusted_keys<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    /// One key, checked as it is read (so the error carries that entry's position).
    struct Checked(String);

    impl<'de> serde::Deserialize<'de> for Checked {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let text = String::deserialize(deserializer)?;
            crate::license::TrustedKeys::parse(&[text.as_str()])
                .map_err(serde::de::Error::custom)?;
            Ok(Self(text))
        }
    }

    let keys = <Vec<Checked> as serde::Deserialize>::deserialize(deserializer)?;
    Ok(keys.into_iter().map(|Checked(text)| text).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        listen: String,
        nested: Nested,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Nested {
        ttl: Option<crate::duration::HumanDuration>,
    }

    #[test]
    fn unknown_keys_and_bad_values_name_file_line_and_key() {
        let path = Path::new("/etc/licsync/x.toml");
        let err = parse::<Sample>("listen = \"a\"\n[nested]\nttll = \"4h\"\n", path).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/etc/licsync/x.toml"), "{text}");
        assert!(text.contains("line 3"), "{text}");
        assert!(text.contains("ttll"), "{text}");

        let err = parse::<Sample>("[nested]\nttl = \"4 hours\"\n", path).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("invalid duration '4 hours'"), "{text}");
        assert!(text.contains("key 'nested.ttl'"), "{text}");
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct WithKeys {
        licenses: Keys,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Keys {
        #[serde(deserialize_with = "trusted_keys")]
        trusted_keys: Vec<String>,
    }

    #[test]
    fn a_bad_trusted_key_is_reported_with_its_line() {
        let path = Path::new("/etc/licsync/licsync-cp.toml");
        let good = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
        let text = format!("[licenses]\ntrusted_keys = [\"{good}\", \"bm9wZQ==\"]\n");
        let err = parse::<WithKeys>(&text, path).unwrap_err().to_string();
        assert!(err.contains("/etc/licsync/licsync-cp.toml"), "{err}");
        assert!(err.contains("line 2, key 'licenses.trusted_keys'"), "{err}");
        assert!(
            err.contains("'bm9wZQ==' is not an Ed25519 public key"),
            "{err}"
        );

        let text = format!("[licenses]\ntrusted_keys = [\n  \"{good}\",\n  \"nope\",\n]\n");
        let err = parse::<WithKeys>(&text, path).unwrap_err().to_string();
        assert!(err.contains("line 4"), "{err}");
        let keys =
            parse::<WithKeys>(&format!("[licenses]\ntrusted_keys = [\"{good}\"]\n"), path).unwrap();
        assert_eq!(keys.licenses.trusted_keys, [good]);
    }

    #[test]
    fn no_file_means_defaults() {
        let sample: Sample = load(None).unwrap();
        assert_eq!(sample.listen, "");
    }
}
