//! Small, bounded helpers for the parts of HTTP mailfront reads itself: cookies, URL-encoded
//! forms and query strings, Basic credentials.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE};

/// Percent-decodes a URL-encoded component (`+` is a space in forms). Invalid escapes are kept
/// as they are; the result must be UTF-8.
pub fn decode_component(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                // Two hex digits exactly: `from_str_radix` alone would also take a sign (`%+A`).
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes a value for a query string or form.
pub fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The value of `name` in a URL-encoded form or query string (the first occurrence).
pub fn field(form: &str, name: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode_component(key).as_deref() == Some(name)).then(|| decode_component(value))?
    })
}

/// The value of cookie `name` among the request's Cookie headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then(|| value.trim_matches('"').to_owned())
        })
}

/// The Cookie header without the named cookies (so mailfront's own cookies never reach a
/// backend); `None` if nothing is left.
pub fn cookie_without(headers: &HeaderMap, names: &[&str]) -> Option<String> {
    let kept: Vec<&str> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            !names.contains(&key)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// Credentials from an `Authorization: Basic` header.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("Basic") {
        return None;
    }
    let decoded = STANDARD.decode(token.trim()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let (user, password) = decoded.split_at(colon);
    let user = String::from_utf8(user.to_vec()).ok()?;
    if user.is_empty() || user.chars().any(char::is_control) {
        return None;
    }
    Some((user, password.get(1..).unwrap_or_default().to_vec()))
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("Bearer")
        .then(|| token.trim().to_owned())
}

/// Escapes text for HTML.
pub fn html_escape(text: &str) -> String {
    crate::autodiscover::xml_escape(text)
}

/// A return path after login: only a local absolute path (not `//host`, not a URL). Browsers
/// drop tabs and newlines from URLs and read `\\` as `/`, so `/\t/evil.example` would become
/// `//evil.example`: any control character, space or backslash makes the path unsafe.
pub fn safe_return(path: Option<&str>) -> String {
    match path {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.chars().any(|c| c.is_control() || c == ' ' || c == '\\') =>
        {
            p.to_owned()
        }
        _ => "/".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn forms_and_components() {
        assert_eq!(decode_component("a+b%20c%2Fd"), Some("a b c/d".into()));
        assert_eq!(decode_component("100%"), Some("100%".into()));
        assert_eq!(decode_component("%ff"), None);
        // Not an escape: a sign is not a hex digit (found by fuzzing).
        assert_eq!(decode_component("%+A%-1%+"), Some("% A%-1% ".into()));
        assert_eq!(
            field("user=alice%40example.com&password=p%26w&x", "password"),
            Some("p&w".into())
        );
        assert_eq!(field("a=1", "b"), None);
        assert_eq!(
            encode_component("/calendar/?a=b c"),
            "/calendar/%3Fa%3Db%20c"
        );
    }

    #[test]
    fn cookies() {
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            HeaderValue::from_static("a=1; mailfront_session=abc"),
        );
        headers.append(COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&headers, "mailfront_session"), Some("abc".into()));
        assert_eq!(cookie(&headers, "c"), None);
        assert_eq!(
            cookie_without(&headers, &["mailfront_session"]),
            Some("a=1; b=2".into())
        );
        assert_eq!(
            cookie_without(&headers, &["a", "b", "mailfront_session"]),
            None
        );
    }

    #[test]
    fn basic_and_bearer() {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic YWxpY2VAZXhhbXBsZS5jb206cDp3"),
        );
        assert_eq!(
            basic_credentials(&headers),
            Some(("alice@example.com".into(), b"p:w".to_vec()))
        );
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic !!"));
        assert_eq!(basic_credentials(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer tok"));
        assert_eq!(bearer_token(&headers), Some("tok".into()));
        assert_eq!(basic_credentials(&headers), None);
    }

    #[test]
    fn return_paths() {
        assert_eq!(safe_return(Some("/calendar/")), "/calendar/");
        for bad in [
            "//evil.example",
            "https://evil",
            "/\\evil",
            "x",
            "/a\r\nSet-Cookie: x",
            "/\t/evil.example",
            "/\u{b}/x",
            "/a\\b",
            "/ /evil",
        ] {
            assert_eq!(safe_return(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_return(None), "/");
    }
}
