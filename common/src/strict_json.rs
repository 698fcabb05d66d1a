//! JSON parsing with one interpretation only: a repeated object key is an error, not "last wins".
//!
//! serde_json, like most parsers, keeps the last occurrence of a repeated key; others (many Lua,
//! Go and JavaScript tools among them) keep the first. For a signed document that disagreement
//! is a forgery: the signature is checked against one reading while a gateway acts on the other.
//! So every document that is signed (licenses, usage reports) or that an outside client sends
//! is read here, and a duplicate anywhere — at any depth, including keys that only become equal
//! once their escapes are decoded (`"a"` and `"\u0061"`) — is refused with the key named.

use std::cell::RefCell;
use std::fmt;

use serde::Deserializer;
use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a text is not one unambiguous JSON value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrictJsonError {
    /// An object repeats a key; the key is given exactly as decoded.
    #[error("duplicate key '{}'", crate::log_text::escape(.0))]
    DuplicateKey(String),
    /// Not JSON at all; serde_json's description (with line and column).
    #[error("{0}")]
    Syntax(String),
}

/// Parses `text` as one JSON value, refusing any repeated object key.
pub fn from_str(text: &str) -> Result<Value, StrictJsonError> {
    from_slice(text.as_bytes())
}

/// [`from_str`] for bytes (which must be UTF-8 JSON).
pub fn from_slice(bytes: &[u8]) -> Result<Value, StrictJsonError> {
    let duplicate = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = StrictSeed {
        duplicate: &duplicate,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    match parsed {
        Ok(value) => Ok(value),
        Err(error) => Err(match duplicate.into_inner() {
            Some(key) => StrictJsonError::DuplicateKey(key),
            None => StrictJsonError::Syntax(error.to_string()),
        }),
    }
}

/// Builds a `serde_json::Value` like its own `Deserialize` does, but remembers the first
/// repeated key it meets (in `duplicate`) and fails there.
#[derive(Clone, Copy)]
struct StrictSeed<'a> {
    duplicate: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                let message = format!("duplicate key '{key}'");
                *self.duplicate.borrow_mut() = Some(key);
                return Err(A::Error::custom(message));
            }
            let value = map.next_value_seed(self)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dup(text: &str) -> Option<String> {
        match from_str(text) {
            Err(StrictJsonError::DuplicateKey(key)) => Some(key),
            _ => None,
        }
    }

    #[test]
    fn parses_what_serde_json_parses_when_keys_are_unique() {
        let text = r#"{"a":[1,-2,3.5,{"b":null,"c":true}],"d":"\u00e9","e":{}}"#;
        assert_eq!(
            from_str(text).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        // The same key in sibling objects is not a duplicate.
        from_str(r#"[{"a":1},{"a":2}]"#).unwrap();
        from_str(r#"{"a":{"a":{"a":1}}}"#).unwrap();
    }

    #[test]
    fn a_repeated_key_at_any_depth_is_named() {
        assert_eq!(dup(r#"{"a":1,"a":2}"#).as_deref(), Some("a"));
        assert_eq!(
            dup(r#"{"x":{"y":[{"customer":"a","customer":"b"}]}}"#).as_deref(),
            Some("customer")
        );
        // Equal once decoded: a parser comparing raw bytes would miss it.
        assert_eq!(dup(r#"{"a":1,"\u0061":2}"#).as_deref(), Some("a"));
    }

    #[test]
    fn syntax_errors_and_trailing_text_are_refused() {
        assert!(matches!(from_str("{"), Err(StrictJsonError::Syntax(_))));
        assert!(matches!(from_str("{} {}"), Err(StrictJsonError::Syntax(_))));
        assert!(matches!(
            from_str(r#""\ud800""#),
            Err(StrictJsonError::Syntax(_))
        ));
    }

    #[test]
    fn a_duplicate_key_with_control_characters_is_escaped_in_the_message() {
        let err = from_str("{\"a\\nb\":1,\"a\\nb\":2}").unwrap_err();
        assert_eq!(err.to_string(), "duplicate key 'a\\nb'");
    }
}
