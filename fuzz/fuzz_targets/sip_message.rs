//! SIP message parsing (`sip::message::parse`) on arbitrary bytes. Invariants: no panic; at most
//! `max_headers` header fields, names tokens, values free of CR, LF and NUL; the body length
//! within the input. Round trip: the parsed message written back (start line, each header
//! through `Display`, an empty line) parses to the same start line and header fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailfront_fuzz::Input;
use mailfront_protocol::sip::message::{self, SipLimits};

fuzz_target!(|data: &[u8]| {
    let Input { flags, payload, .. } = Input::new(data);
    let limits = if flags & 1 != 0 {
        SipLimits {
            max_message_size: 600,
            max_headers: 12,
            max_line_length: 120,
        }
    } else {
        SipLimits::default()
    };
    let Ok(parsed) = message::parse(payload, &limits) else {
        return;
    };
    assert!(message::is_token(&parsed.method));
    assert!(!parsed.request_uri.is_empty() && !parsed.request_uri.contains(' '));
    assert!(parsed.headers.len() <= limits.max_headers);
    assert!(parsed.body_len <= payload.len());
    for header in &parsed.headers {
        assert!(message::is_token(&header.name), "{:?}", header.name);
        assert!(
            !header.value.contains(['\r', '\n', '\0']),
            "{:?}",
            header.value
        );
        assert_eq!(message::canonical_name(&header.name), header.name);
    }
    let mut text = format!(
        "{} {} {}\r\n",
        parsed.method, parsed.request_uri, parsed.version
    );
    for header in &parsed.headers {
        text.push_str(&format!("{header}\r\n"));
    }
    text.push_str("\r\n");
    let wide = SipLimits {
        max_message_size: text.len(),
        max_headers: parsed.headers.len(),
        max_line_length: text.len(),
    };
    let again = message::parse(text.as_bytes(), &wide).expect("written back, it parses");
    assert_eq!(again.method, parsed.method);
    assert_eq!(again.request_uri, parsed.request_uri);
    assert_eq!(again.version, parsed.version);
    // A folded continuation of only whitespace leaves a trailing space in the value (which
    // the written-back line then loses): compare values without surrounding whitespace.
    let trimmed = |headers: &[message::Header]| -> Vec<(String, String)> {
        headers
            .iter()
            .map(|h| (h.name.clone(), h.value.trim_matches([' ', '\t']).to_owned()))
            .collect()
    };
    assert_eq!(
        trimmed(&again.headers),
        trimmed(&parsed.headers),
        "{text:?}"
    );
});
