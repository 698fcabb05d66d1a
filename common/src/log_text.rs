//! Text from outside on its way into a log line or a name: escaped, or refused.
//!
//! A registration-token name, a connected-app name or an agent's `--name` is chosen by whoever
//! holds a token. Written raw into a text log, a newline in it forges a whole line (a fake
//! `dataplane.revoked`, say) and an ANSI escape rewrites the operator's terminal. Two defences,
//! both here so the rule is one:
//! - names are refused at the API when they hold a control character ([`check_name`]), so
//!   nothing stored needs escaping when shown elsewhere;
//! - the text log formatter escapes every control character in every field and message
//!   ([`EscapingFields`]), so a value that slips through any other path (a header, a file
//!   name, an error from a peer) still cannot break a line. JSON logs are safe already:
//!   serde_json escapes control characters in strings.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};

/// Characters that change how text is laid out or shown rather than what it says: C0 and C1
/// controls, DEL, the Unicode line and paragraph separators, and the bidirectional overrides
/// and isolates ("Trojan Source").
pub fn is_layout_control(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every [layout control](is_layout_control) written as an escape (`\n`, `\r`,
/// `\t`, else `\u{1b}`), borrowed when there is nothing to escape. A backslash already in the
/// text stays as it is: the result is for reading, not for decoding.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_layout_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_layout_control(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Why a name is refused, or `Ok`: a name shown in lists and logs holds no control character.
/// `field` is the name of the field in the request, for the message.
pub fn check_name(field: &str, value: &str) -> Result<(), String> {
    match value.chars().find(|c| is_layout_control(*c)) {
        None => Ok(()),
        Some(c) => Err(format!(
            "{field} must not contain control characters (found U+{:04X}); use letters, digits, spaces and punctuation",
            c as u32
        )),
    }
}

/// The text log's field formatter: tracing-subscriber's own layout, with every control
/// character in field values, span fields and the message escaped, so one event is always
/// one line.
#[derive(Debug, Default)]
pub struct EscapingFields {
    inner: DefaultFields,
}

impl<'writer> FormatFields<'writer> for EscapingFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut buffer = String::new();
        self.inner.format_fields(Writer::new(&mut buffer), fields)?;
        writer.write_str(&escape(&buffer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_and_controls_are_escaped() {
        assert!(matches!(escape("edge-1 ü"), Cow::Borrowed(_)));
        assert_eq!(
            escape("a\nb\r\tc\u{1b}[31md\u{7f}\u{85}\u{2028}\u{202e}"),
            "a\\nb\\r\\tc\\u{1b}[31md\\u{7f}\\u{85}\\u{2028}\\u{202e}"
        );
    }

    #[test]
    fn names_with_controls_are_refused_with_the_field_and_character() {
        assert_eq!(check_name("name", "edge 1 (eu-west)"), Ok(()));
        let err = check_name("name", "edge\nINFO forged").unwrap_err();
        assert!(err.starts_with("name must not contain control characters (found U+000A)"));
        assert!(check_name("name", "x\u{1b}[2J").is_err());
        assert!(check_name("name", "\u{202e}gnp.exe").is_err());
    }

    #[test]
    fn the_text_formatter_keeps_every_event_on_one_line() {
        use std::io::Write;
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .fmt_fields(EscapingFields::default())
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("stream", peer = %"p\nq");
            let _entered = span.enter();
            let name = "edge\nINFO licsync_cp: forged event=\"dataplane.revoked\"\u{1b}[2J";
            tracing::info!(event = "dataplane.registered", dataplane.name = %name, debug = ?name, "Registered {name}.");
        });
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(!out.contains('\u{1b}'), "{out}");
        assert!(out.contains("edge\\nINFO"), "{out}");
        assert!(out.contains("p\\nq"), "{out}");
    }
}
