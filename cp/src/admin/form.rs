//! `application/x-www-form-urlencoded` decoding, for query strings and for form bodies.
//!
//! Kong's own documentation posts licenses with `curl -d payload='{...}'`, which sends a form
//! body; decoding it here keeps those commands working. Decoding is lenient the way browsers
//! and Kong are: `+` is a space, a malformed `%` escape is kept literally, and bytes that are
//! not UTF-8 become U+FFFD.

/// The `name=value` pairs of `input`, in order; a pair without `=` has an empty value.
pub fn decode(input: &str) -> Vec<(String, String)> {
    input
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (unescape(name), unescape(value))
        })
        .collect()
}

/// The value of the last pair named `name`.
pub fn value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let escaped = bytes
                    .get(i + 1..i + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    // Strictly two hex digits: `%+f` is not an escape.
                    .and_then(licsync_common::unhex)
                    .map(|byte| byte[0]);
                match escaped {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_a_browser() {
        let pairs = decode("size=10&offset=a%2Bb&name=two+words&flag&&bad=%zz%4");
        assert_eq!(value(&pairs, "size"), Some("10"));
        assert_eq!(value(&pairs, "offset"), Some("a+b"));
        assert_eq!(value(&pairs, "name"), Some("two words"));
        assert_eq!(value(&pairs, "flag"), Some(""));
        assert_eq!(value(&pairs, "bad"), Some("%zz%4"));
        // Not the byte 0x0f: the `%` stays, and `+` is a space as everywhere in a form.
        assert_eq!(value(&decode("sign=%+f"), "sign"), Some("% f"));
        assert_eq!(value(&pairs, "missing"), None);
        assert_eq!(value(&decode("a=1&a=2"), "a"), Some("2"));
        assert_eq!(
            value(&decode("payload=%7B%22license%22%3A%7B%7D%7D"), "payload"),
            Some(r#"{"license":{}}"#)
        );
    }
}
