//! Autodiscover request parsing and the documents built from it (`mailfront_http::autodiscover`):
//! the address in an Outlook POX request body, `plain_address`, the JSON answer, and the
//! Thunderbird, Outlook and Apple documents for addresses and domains from the input.
//! Invariants: no panic; an address taken from a request is plain; the documents carry the
//! client's text only escaped (the same markup as for a benign address); JSON is valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailfront_http::autodiscover::{
    self, json, mobileconfig, outlook, plain_address, pox_request_address, thunderbird,
};
use mailfront_http::config::{AutodiscoverConfig, ClientEndpoint, SocketType};

fn markup(text: &str) -> usize {
    text.matches(['<', '>']).count()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let config = AutodiscoverConfig {
        domains: vec!["example.com".to_owned()],
        display_name: "Example Mail".to_owned(),
        imap: Some(ClientEndpoint {
            host: "mail.example.com".to_owned(),
            port: 993,
            socket: SocketType::Ssl,
        }),
        pop3: Some(ClientEndpoint {
            host: "mail.example.com".to_owned(),
            port: 995,
            socket: SocketType::Ssl,
        }),
        smtp: Some(ClientEndpoint {
            host: "mail.example.com".to_owned(),
            port: 587,
            socket: SocketType::Starttls,
        }),
    };
    if let Some(address) = pox_request_address(&text) {
        assert!(plain_address(&address).is_some());
    }
    if let Some((local, domain)) = plain_address(&text) {
        assert!(!local.is_empty() && !domain.is_empty());
        assert!(!text.contains(char::is_whitespace));
        let _ = config.serves(domain);
        let benign = outlook(&config, "a@example.com", None);
        assert_eq!(markup(&outlook(&config, &text, None)), markup(&benign));
        let benign = thunderbird(&config, "example.com", None);
        assert_eq!(markup(&thunderbird(&config, domain, None)), markup(&benign));
        let uuids = || [autodiscover::uuid_v4(), autodiscover::uuid_v4()];
        let benign = mobileconfig(&config, "a@example.com", "A", uuids()).unwrap();
        let doc = mobileconfig(&config, &text, &text, uuids()).unwrap();
        assert_eq!(markup(&doc), markup(&benign));
    }
    // Any display name is escaped.
    let benign = outlook(&config, "a@example.com", Some("A"));
    assert_eq!(
        markup(&outlook(&config, "a@example.com", Some(&text))),
        markup(&benign)
    );
    let (protocol, base) = text
        .split_once('\n')
        .unwrap_or((&text, "https://mail.example.com"));
    let answer = match json(protocol, base) {
        Ok(answer) | Err(answer) => answer,
    };
    assert!(answer.starts_with('{') && answer.ends_with('}'));
});
