//! The backend-login machines (`ImapBackendLogin`, `Pop3BackendLogin`,
//! `SubmissionBackendLogin`) fed arbitrary backend bytes in arbitrary chunks, with every TLS
//! mode, master-user or pass-through login, PLAIN or LOGIN, with or without the client's
//! address. Flag bits 5–6 choose the protocol. Invariants: see
//! `mailfront_fuzz::front::drive_backend` (no password before STARTTLS where it is required,
//! `Ready`/`Failed` final, whole CRLF lines sent, bounded output).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailfront_fuzz::Input;
use mailfront_fuzz::front::{backend_settings, drive_backend};
use mailfront_protocol::imap::ImapBackendLogin;
use mailfront_protocol::pop3::Pop3BackendLogin;
use mailfront_protocol::smtp::login::SubmissionBackendLogin;

fuzz_target!(|data: &[u8]| {
    let input = Input::new(data);
    let (auth, tls, client) = backend_settings(input.flags);
    match (input.flags >> 5) & 3 {
        0 | 3 => drive_backend(ImapBackendLogin::new(auth, tls, client), tls, input),
        1 => drive_backend(Pop3BackendLogin::new(auth, tls, client), tls, input),
        _ => drive_backend(
            SubmissionBackendLogin::new(auth, tls, client, "mx.fuzz".to_owned()),
            tls,
            input,
        ),
    }
});
