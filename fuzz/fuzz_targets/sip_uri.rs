//! SIP URI and header-value parsing: `parse_request_uri` and `RequestUri::target`,
//! `contact_uri` (round trip: the dialed user part written into a Contact parses back to the
//! same user), `Via::parse` (round trip: the stamped Via of a response parses again, with the
//! same host and a `received`), `via::first_value` and `response::tag_of`.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use mailfront_fuzz::assert_clean_name;
use mailfront_protocol::sip::response::tag_of;
use mailfront_protocol::sip::uri::{Scheme, parse_request_uri};
use mailfront_protocol::sip::via::{Via, first_value};
use mailfront_protocol::sip::{Target, contact_uri};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(uri) = parse_request_uri(text) {
        if let Some(user) = &uri.user {
            assert!(!user.is_empty());
            assert_clean_name(user);
            let contact = contact_uri("sip:{user}@mbx1.example.com:5070", user, None);
            let back = parse_request_uri(&contact).expect("a contact parses");
            assert_eq!(back.scheme, Scheme::Sip);
            assert_eq!(back.user.as_deref(), Some(user.as_str()), "{contact}");
            assert_eq!(back.host.as_deref(), Some("mbx1.example.com"));
        }
        if let Some(host) = &uri.host {
            assert_eq!(host, &host.to_ascii_lowercase());
        }
        match uri.target() {
            Some(Target::Extension(number)) => {
                let digits = number.strip_prefix('+').unwrap_or(&number);
                assert!(!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
            }
            Some(Target::Address(address)) => {
                assert_clean_name(&address);
                assert!(address.len() <= 256 + 1 + text.len());
            }
            None => {}
        }
    }
    let (first, rest) = first_value(text);
    assert!(first.len() + rest.len() <= text.len());
    if let Some(via) = Via::parse(first) {
        assert!(!via.host.is_empty());
        // A quote in the sent-by part (unbalanced, or escaped) can hide the parameters the
        // response appends from a second parse (garbage in, garbage out): round trip only
        // values without quotes.
        let balanced = !first.contains('"');
        for source in ["192.0.2.7:5071", "[2001:db8::7]:5071"] {
            let source: SocketAddr = source.parse().unwrap();
            let stamped = via.stamped(source);
            if !balanced {
                continue;
            }
            let again = Via::parse(&stamped).expect("a stamped Via parses");
            assert_eq!(again.host, via.host);
            assert_eq!(again.port, via.port);
            if via.wants_rport() {
                assert_eq!(again.param("rport"), Some(Some("5071")), "{stamped}");
            }
            let _ = via.udp_destination(source);
        }
    }
    if let Some(tag) = tag_of(text) {
        assert!(tag.len() <= text.len());
    }
});
