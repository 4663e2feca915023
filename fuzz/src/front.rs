//! Drivers for the pre-authentication front ends ([`FrontEnd`]) and the backend-login machines
//! ([`BackendLogin`]), with the invariants their documentation promises.

use mailfront_model::{BackendTls, SaslMechanism, Secret};
use mailfront_protocol::{
    AuthFailure, AuthResult, BackendAuth, BackendLogin, ClientInfo, ClientTls, FrontEnd,
    FrontEvent, Limits, LoginEvent, Step,
};

use crate::{Input, Rng, assert_clean_name, assert_crlf_lines, find};

/// The settings every front end has, chosen from the flag bits: bits 0–1 the TLS mode, bit 2
/// plaintext authentication, bit 3 small limits.
#[derive(Clone, Copy, Debug)]
pub struct FrontSettings {
    /// TLS on the listener.
    pub tls: ClientTls,
    /// Passwords without TLS.
    pub allow_plaintext_auth: bool,
    /// Pre-login bounds.
    pub limits: Limits,
}

impl FrontSettings {
    /// From the flag bits.
    pub fn from_flags(flags: u8) -> Self {
        let tls = match flags & 3 {
            0 | 3 => ClientTls::StartTls,
            1 => ClientTls::None,
            _ => ClientTls::Implicit,
        };
        let limits = if flags & 8 != 0 {
            Limits {
                max_line_length: 64,
                max_literal_size: 48,
                max_commands_before_auth: 8,
                max_auth_failures: 2,
            }
        } else {
            Limits::default()
        };
        FrontSettings {
            tls,
            allow_plaintext_auth: flags & 4 != 0,
            limits,
        }
    }
}

/// OAuth offered (bit 4 of the flags): the token mechanisms and their error challenge.
pub fn oauth_offer(flags: u8) -> Option<mailfront_protocol::OAuthOffer> {
    (flags & 16 != 0).then(|| mailfront_protocol::OAuthOffer {
        configuration: "https://id.fuzz/.well-known/openid-configuration".to_owned(),
        scope: Some("imap".to_owned()),
    })
}

/// What a front-end run saw, for target-specific checks.
#[derive(Debug, Default)]
pub struct FrontRun {
    /// Every byte sent to the client.
    pub output: Vec<u8>,
    /// Authentications asked for.
    pub authentications: u32,
    /// Whether the session ended in proxying.
    pub proxied: bool,
}

fn answer(rng: &mut Rng) -> AuthResult {
    match rng.below(8) {
        0 => AuthResult::Proxied {
            capabilities: Some("IMAP4rev1 IDLE LITERAL+".to_owned()),
        },
        1 => AuthResult::Proxied { capabilities: None },
        2 | 3 => AuthResult::Failed(AuthFailure::BadCredentials),
        4 => AuthResult::Failed(AuthFailure::AuthzidRefused),
        5 => AuthResult::Failed(AuthFailure::ProtocolDisabled),
        _ => AuthResult::Failed(AuthFailure::Temporary),
    }
}

/// Runs `front` over the input's payload as the session driver would, answering each
/// authentication from the PRNG, and asserts:
///
/// - no panic, and no endless stream of steps;
/// - every send is whole CRLF lines (no bare CR/LF or NUL from the client's bytes);
/// - output bounded: at most 64 bytes per input byte, plus a fixed amount per event;
/// - STARTTLS only on a STARTTLS listener and only once; after the handshake nothing received
///   before it is processed (CVE-2011-0411): the machine asks to read first;
/// - `Authenticate` never without TLS when plaintext authentication is refused, never after
///   `max_auth_failures` refusals, at most `max_commands_before_auth` times, and only with
///   names free of control characters;
/// - `Proxy` hands over exactly what the client sent after the login command (a suffix of the
///   bytes received since the last TLS handshake);
/// - after `Close` (or `Proxy`) the machine stays closed whatever arrives;
/// - at the end of input, `shutdown` or `idle_timeout` says goodbye and closes.
pub fn drive<F: FrontEnd>(mut front: F, settings: FrontSettings, input: Input<'_>) -> FrontRun {
    let Input {
        mut rng, payload, ..
    } = input;
    let mut run = FrontRun::default();
    let mut fed = 0usize;
    // Start of the bytes that count (after the last TLS handshake).
    let mut epoch = 0usize;
    let mut tls_done = settings.tls == ClientTls::Implicit;
    let mut starttls_seen = false;
    let mut must_read = false;
    let mut hard_failures = 0u32;
    let mut events = 0usize;
    let mut steps = 0usize;
    loop {
        steps += 1;
        assert!(steps < 1_000_000, "endless steps");
        let step = front.next_step();
        if must_read {
            assert!(
                matches!(step, Step::Read),
                "bytes from before the TLS handshake were processed after it: {step:?}"
            );
            must_read = false;
        }
        match step {
            Step::Send(bytes) => {
                assert_crlf_lines(&bytes);
                run.output.extend_from_slice(&bytes);
                let bound = 4096 + 64 * fed + 512 * events;
                assert!(
                    run.output.len() <= bound,
                    "output {} bytes for {fed} input bytes",
                    run.output.len()
                );
            }
            Step::Read => {
                if fed < payload.len() {
                    let n = rng.chunk(payload.len() - fed);
                    front.feed(&payload[fed..fed + n]);
                    fed += n;
                } else {
                    if rng.one_in(2) {
                        front.shutdown();
                    } else {
                        front.idle_timeout();
                    }
                    let mut sends = 0;
                    loop {
                        match front.next_step() {
                            Step::Send(bytes) => {
                                assert_crlf_lines(&bytes);
                                sends += 1;
                                assert!(sends <= 4, "goodbye without end");
                            }
                            Step::Event(FrontEvent::Close) => break,
                            other => panic!("after shutdown or timeout: {other:?}"),
                        }
                    }
                    assert!(sends >= 1, "no goodbye");
                    assert_stays_closed(&mut front, b"a1 NOOP\r\n");
                    return run;
                }
            }
            Step::StartTls => {
                assert_eq!(
                    settings.tls,
                    ClientTls::StartTls,
                    "STARTTLS on a non-STARTTLS port"
                );
                assert!(!tls_done && !starttls_seen, "STARTTLS twice");
                starttls_seen = true;
                events += 1;
                front.tls_established();
                tls_done = true;
                epoch = fed;
                must_read = true;
            }
            Step::Event(FrontEvent::Authenticate(credentials)) => {
                assert!(
                    tls_done || settings.allow_plaintext_auth,
                    "a password accepted without TLS where plaintext authentication is refused"
                );
                assert!(
                    hard_failures < settings.limits.max_auth_failures,
                    "authentication after {hard_failures} failures"
                );
                run.authentications += 1;
                assert!(
                    run.authentications <= settings.limits.max_commands_before_auth,
                    "more authentications than commands allowed"
                );
                assert_clean_name(&credentials.authcid);
                if let Some(authzid) = &credentials.authzid {
                    assert_clean_name(authzid);
                }
                events += 1;
                let result = answer(&mut rng);
                if matches!(result, AuthResult::Failed(f) if f != AuthFailure::Temporary) {
                    hard_failures += 1;
                }
                front.auth_result(result);
            }
            Step::Event(FrontEvent::Proxy { pending }) => {
                let since = &payload[epoch..fed];
                assert!(
                    since.ends_with(&pending),
                    "pending bytes {pending:?} are not what the client sent last ({since:?})"
                );
                run.proxied = true;
                assert_stays_closed(&mut front, &payload[fed..]);
                return run;
            }
            Step::Event(FrontEvent::Close) => {
                assert_stays_closed(&mut front, &payload[fed..]);
                return run;
            }
        }
    }
}

fn assert_stays_closed<F: FrontEnd>(front: &mut F, more: &[u8]) {
    for _ in 0..2 {
        front.feed(more);
        front.feed(b"a2 LOGIN x y\r\nUSER x\r\nPASS y\r\n");
        let step = front.next_step();
        assert!(
            matches!(step, Step::Event(FrontEvent::Close)),
            "a closed machine acted: {step:?}"
        );
    }
}

/// Settings of a backend login, from flag bits: bits 0–1 TLS, bit 2 master user or
/// pass-through, bit 3 PLAIN or LOGIN, bit 4 client info.
pub fn backend_settings(flags: u8) -> (BackendAuth, BackendTls, Option<ClientInfo>) {
    let tls = match flags & 3 {
        0 | 3 => BackendTls::None,
        1 => BackendTls::StartTls,
        _ => BackendTls::Implicit,
    };
    let mechanism = if flags & 8 != 0 {
        SaslMechanism::Login
    } else {
        SaslMechanism::Plain
    };
    let auth = if flags & 4 != 0 {
        BackendAuth::Master {
            user: "alice@example.com".to_owned(),
            master: "casmaster".to_owned(),
            password: Secret::new(PASSWORD.to_owned()),
            separator: "*".to_owned(),
            mechanism,
        }
    } else {
        BackendAuth::PassThrough {
            user: "alice@example.com".to_owned(),
            password: Secret::new(PASSWORD.as_bytes().to_vec()),
            mechanism,
        }
    };
    let client = (flags & 16 != 0).then(|| ClientInfo {
        client: "192.0.2.7:50123".parse().unwrap(),
        local: "127.0.0.1:143".parse().unwrap(),
        session_id: "s1".to_owned(),
    });
    (auth, tls, client)
}

/// The password the backend logins use: it must never cross before TLS where TLS is required.
pub const PASSWORD: &str = "s3cr3t-pw";

/// Whether `bytes` carry the password, in clear or in any base64 form a login would use.
fn carries_password(bytes: &[u8]) -> bool {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let forms = [
        PASSWORD.as_bytes().to_vec(),
        STANDARD.encode(PASSWORD).into_bytes(),
        STANDARD
            .encode(format!("alice@example.com\0casmaster\0{PASSWORD}"))
            .into_bytes(),
        STANDARD
            .encode(format!("\0alice@example.com\0{PASSWORD}"))
            .into_bytes(),
    ];
    forms.iter().any(|form| find(bytes, form).is_some())
}

/// Runs a backend login over the payload as backend bytes, and asserts:
///
/// - no panic, no endless steps, every send whole CRLF lines;
/// - STARTTLS only when configured, once; with STARTTLS configured, the password never crosses
///   (in clear or base64) before the handshake, and `Ready` never comes before it;
/// - `Ready` and `Failed` are final: afterwards the machine only asks to read;
/// - post-login capabilities hold no line break;
/// - end of input then `eof` ends the login (`Failed(Closed)` or it was already over).
pub fn drive_backend<B: BackendLogin>(mut login: B, tls: BackendTls, input: Input<'_>) {
    let Input {
        mut rng, payload, ..
    } = input;
    let mut fed = 0usize;
    let mut tls_done = tls == BackendTls::Implicit;
    let mut sent = 0usize;
    let mut steps = 0usize;
    let mut eof = false;
    loop {
        steps += 1;
        assert!(steps < 1_000_000, "endless steps");
        match login.next_step() {
            Step::Send(bytes) => {
                assert_crlf_lines(&bytes);
                if tls == BackendTls::StartTls && !tls_done {
                    assert!(
                        !carries_password(&bytes),
                        "password before STARTTLS: {bytes:?}"
                    );
                }
                sent += bytes.len();
                assert!(sent <= 64 * 1024 + 16 * fed, "too much sent");
            }
            Step::Read => {
                if fed < payload.len() {
                    let n = rng.chunk(payload.len() - fed);
                    login.feed(&payload[fed..fed + n]);
                    fed += n;
                } else if !eof {
                    eof = true;
                    login.eof();
                } else {
                    panic!("still reading after eof");
                }
            }
            Step::StartTls => {
                assert_eq!(tls, BackendTls::StartTls, "STARTTLS when not configured");
                assert!(!tls_done, "STARTTLS twice");
                tls_done = true;
                login.tls_established();
            }
            Step::Event(LoginEvent::Ready {
                capabilities,
                leftover,
            }) => {
                assert!(tls_done || tls == BackendTls::None, "logged in before TLS");
                if let Some(caps) = &capabilities {
                    assert!(
                        !caps.contains(['\r', '\n']),
                        "line break in capabilities {caps:?}"
                    );
                }
                assert!(leftover.len() <= fed, "leftover larger than the input");
                assert_final(&mut login, &payload[fed..]);
                return;
            }
            Step::Event(LoginEvent::Failed(_)) => {
                assert_final(&mut login, &payload[fed..]);
                return;
            }
        }
    }
}

fn assert_final<B: BackendLogin>(login: &mut B, more: &[u8]) {
    login.feed(more);
    login.feed(b"* OK\r\n+OK\r\n250 OK\r\n");
    for _ in 0..2 {
        let step = login.next_step();
        assert!(
            matches!(step, Step::Read),
            "a finished login acted: {step:?}"
        );
    }
}
