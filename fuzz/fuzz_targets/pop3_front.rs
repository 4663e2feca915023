//! The POP3 pre-login front end (`Pop3FrontEnd`) over arbitrary client bytes in arbitrary
//! chunks, with every TLS mode, plaintext authentication on or off, default or small limits,
//! and authentication answers from the input. Invariants: see `mailfront_fuzz::front::drive`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailfront_fuzz::Input;
use mailfront_fuzz::front::{FrontSettings, drive};
use mailfront_protocol::pop3::{Pop3FrontEnd, Pop3Settings};

fuzz_target!(|data: &[u8]| {
    let input = Input::new(data);
    let settings = FrontSettings::from_flags(input.flags);
    let front = Pop3FrontEnd::new(Pop3Settings {
        tls: settings.tls,
        allow_plaintext_auth: settings.allow_plaintext_auth,
        limits: settings.limits,
        greeting: "mailfront ready.".to_owned(),
        oauth: mailfront_fuzz::front::oauth_offer(input.flags),
    });
    let run = drive(front, settings, input);
    assert!(run.output.starts_with(b"+OK mailfront ready.\r\n"));
});
