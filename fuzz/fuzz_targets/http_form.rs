//! The HTTP helpers a client reaches before logging in (`mailfront_http::form`): percent
//! decoding against a reference written from its documentation (`+` is a space, `%XX` with two
//! hex digits a byte, any other `%` kept) and the encode→decode round trip; form fields; the
//! Cookie header; Basic credentials (round trip from a built header); Bearer tokens; the return
//! path after login; HTML escaping.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use mailfront_fuzz::Input;
use mailfront_http::form;

fn reference_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit() =>
            {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fuzz_target!(|data: &[u8]| {
    let Input { flags, payload, .. } = Input::new(data);
    let text = String::from_utf8_lossy(payload);

    // Percent decoding.
    let decoded = form::decode_component(&text);
    assert_eq!(decoded, reference_decode(&text), "decoding {text:?}");
    assert_eq!(
        form::decode_component(&form::encode_component(&text)).as_deref(),
        Some(&*text)
    );

    // Form fields: the first pair whose decoded name matches.
    let (name, form_text) = text.split_once('\n').unwrap_or(("user", &text));
    let expected = form_text.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (reference_decode(key).as_deref() == Some(name)).then(|| reference_decode(value))?
    });
    assert_eq!(form::field(form_text, name), expected);

    // Headers a client sends.
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(payload) {
        headers.insert(COOKIE, value.clone());
        headers.append(
            COOKIE,
            HeaderValue::from_static("mailfront_session=x; other=y"),
        );
        headers.insert(AUTHORIZATION, value);
    }
    if let Some(value) = form::cookie(&headers, "mailfront_session") {
        assert!(!value.contains(';'));
    }
    if let Some(kept) = form::cookie_without(&headers, &["mailfront_session", "csrf"]) {
        assert!(
            !kept
                .split("; ")
                .any(|p| p.split('=').next() == Some("mailfront_session"))
        );
    }
    if let Some((user, _password)) = form::basic_credentials(&headers) {
        assert!(!user.is_empty() && !user.contains(char::is_control));
    }
    let _ = form::bearer_token(&headers);

    // Basic credentials built from the input read back.
    let (user, password) = text.split_once(':').unwrap_or((&text, ""));
    let scheme = if flags & 1 != 0 { "basic" } else { "Basic" };
    let value = format!("{scheme} {}", STANDARD.encode(format!("{user}:{password}")));
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, HeaderValue::from_str(&value).unwrap());
    let got = form::basic_credentials(&headers);
    if user.is_empty() || user.contains(char::is_control) {
        assert_eq!(got, None);
    } else {
        assert_eq!(got, Some((user.to_owned(), password.as_bytes().to_vec())));
    }

    // The return path after login stays on this site.
    let back = form::safe_return(Some(&text));
    assert!(back.starts_with('/') && !back.starts_with("//") && !back.starts_with("/\\"));
    assert!(!back.contains(['\r', '\n']));

    // HTML escaping leaves no markup.
    let escaped = form::html_escape(&text);
    assert!(!escaped.contains(['<', '>', '"', '\'']));
});
