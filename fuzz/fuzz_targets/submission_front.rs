//! The submission pre-AUTH front end (`SubmissionFrontEnd`) over arbitrary client bytes in
//! arbitrary chunks, with every TLS mode, plaintext authentication on or off, default or small
//! limits, and authentication answers from the input. Invariants: see
//! `mailfront_fuzz::front::drive`; besides, every reply is an SMTP reply (three digits, then a
//! space or a hyphen).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailfront_fuzz::Input;
use mailfront_fuzz::front::{FrontSettings, drive};
use mailfront_protocol::smtp::submission::{SubmissionFrontEnd, SubmissionSettings};

fuzz_target!(|data: &[u8]| {
    let input = Input::new(data);
    let settings = FrontSettings::from_flags(input.flags);
    let front = SubmissionFrontEnd::new(SubmissionSettings {
        tls: settings.tls,
        allow_plaintext_auth: settings.allow_plaintext_auth,
        limits: settings.limits,
        hostname: "mx.fuzz".to_owned(),
        max_message_size: 1024,
        oauth: mailfront_fuzz::front::oauth_offer(input.flags),
    });
    let run = drive(front, settings, input);
    assert!(run.output.starts_with(b"220 mx.fuzz ESMTP ready\r\n"));
    for line in run.output.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let ok = line.len() >= 4
            && line[..3].iter().all(u8::is_ascii_digit)
            && matches!(line[3], b' ' | b'-' | b'\r');
        assert!(ok, "not an SMTP reply line: {line:?}");
    }
});
