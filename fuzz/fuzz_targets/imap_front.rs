//! The IMAP pre-login front end (`ImapFrontEnd`) over arbitrary client bytes in arbitrary
//! chunks, with every TLS mode, plaintext authentication on or off, default or small limits,
//! and authentication answers from the input. Invariants: see `mailfront_fuzz::front::drive`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailfront_fuzz::Input;
use mailfront_fuzz::front::{FrontSettings, drive};
use mailfront_protocol::imap::{ImapFrontEnd, ImapSettings};

fuzz_target!(|data: &[u8]| {
    let input = Input::new(data);
    let settings = FrontSettings::from_flags(input.flags);
    let front = ImapFrontEnd::new(ImapSettings {
        tls: settings.tls,
        allow_plaintext_auth: settings.allow_plaintext_auth,
        limits: settings.limits,
        greeting: "mailfront ready.".to_owned(),
        oauth: mailfront_fuzz::front::oauth_offer(input.flags),
    });
    let run = drive(front, settings, input);
    // The greeting is the first line and advertises exactly what may be used.
    let greeting = run.output.split(|&b| b == b'\n').next().unwrap_or_default();
    assert!(greeting.starts_with(b"* OK [CAPABILITY IMAP4rev1"));
});
