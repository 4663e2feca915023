//! Test drivers for the machines: they feed input in chunks and record what the machine asked
//! for; and the fixtures the backend-side tests share.

use std::net::SocketAddr;

use mailfront_model::{SaslMechanism, Secret};

use crate::sasl::{decode_base64, decode_plain};
use crate::{
    AuthFailure, AuthResult, BackendAuth, BackendFailure, BackendLogin, ClientInfo, Credentials,
    FrontEnd, FrontEvent, LoginEvent, Machine, Step,
};

/// What a driver saw, with consecutive sends merged so that chunking does not matter.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    Out(String),
    Auth {
        authcid: String,
        authzid: Option<String>,
        password: Vec<u8>,
        mechanism: &'static str,
    },
    StartTls,
    Proxy(Vec<u8>),
    Close,
}

/// Drives a front end over `input` in `chunk`-sized pieces, answering every authentication
/// with `answer`. Bytes not yet fed when the session turns to proxying count as pending.
pub(crate) fn drive<F: FrontEnd>(
    mut front: F,
    input: &[u8],
    chunk: usize,
    mut answer: impl FnMut(&Credentials) -> AuthResult,
) -> Vec<Seen> {
    let mut seen: Vec<Seen> = Vec::new();
    let out = |seen: &mut Vec<Seen>, bytes: Vec<u8>| {
        let text = String::from_utf8(bytes).unwrap();
        if let Some(Seen::Out(last)) = seen.last_mut() {
            last.push_str(&text);
        } else {
            seen.push(Seen::Out(text));
        }
    };
    let mut pieces = input.chunks(chunk.max(1));
    loop {
        match front.next_step() {
            Step::Send(bytes) => out(&mut seen, bytes),
            Step::Read => match pieces.next() {
                Some(piece) => front.feed(piece),
                None => break,
            },
            Step::StartTls => {
                seen.push(Seen::StartTls);
                front.tls_established();
            }
            Step::Event(FrontEvent::Authenticate(credentials)) => {
                let result = answer(&credentials);
                seen.push(Seen::Auth {
                    authcid: credentials.authcid,
                    authzid: credentials.authzid,
                    password: credentials.password.expose().clone(),
                    mechanism: credentials.mechanism,
                });
                front.auth_result(result);
            }
            Step::Event(FrontEvent::Proxy { mut pending }) => {
                pending.extend(pieces.by_ref().flatten());
                seen.push(Seen::Proxy(pending));
                break;
            }
            Step::Event(FrontEvent::Close) => {
                seen.push(Seen::Close);
                break;
            }
        }
    }
    seen
}

/// What a front end says when `act` (a timeout, a shutdown) happens after its greeting: the
/// goodbye it sends, and then it asks to close.
pub(crate) fn goodbye<F: FrontEnd>(mut front: F, act: impl FnOnce(&mut F)) -> Vec<u8> {
    let _greeting = front.next_step();
    act(&mut front);
    let Step::Send(bye) = front.next_step() else {
        panic!("no goodbye")
    };
    assert!(matches!(front.next_step(), Step::Event(FrontEvent::Close)));
    bye
}

/// Bytes a front end sent, as [`drive`] records them.
pub(crate) fn out(text: &str) -> Seen {
    Seen::Out(text.to_owned())
}

/// Credentials a front end handed over, without an authorization identity.
pub(crate) fn auth(user: &str, password: &[u8], mechanism: &'static str) -> Seen {
    Seen::Auth {
        authcid: user.to_owned(),
        authzid: None,
        password: password.to_vec(),
        mechanism,
    }
}

/// An answer to every authentication: proxied, with no capabilities to pass on.
pub(crate) fn proxied(_: &Credentials) -> AuthResult {
    AuthResult::Proxied { capabilities: None }
}

/// An answer to every authentication: wrong credentials.
pub(crate) fn refused(_: &Credentials) -> AuthResult {
    AuthResult::Failed(AuthFailure::BadCredentials)
}

/// Answers with `right` when the password is `pw`, else refuses.
pub(crate) fn password_pw(
    right: impl Fn(&Credentials) -> AuthResult,
) -> impl FnMut(&Credentials) -> AuthResult {
    move |c| {
        if c.password.expose() == b"pw" {
            right(c)
        } else {
            refused(c)
        }
    }
}

/// The master-user login the backend tests use (`alice@example.com*casmaster`, `masterpw`).
pub(crate) fn master(mechanism: SaslMechanism) -> BackendAuth {
    BackendAuth::Master {
        user: "alice@example.com".into(),
        master: "casmaster".into(),
        password: Secret::new("masterpw".into()),
        separator: "*".into(),
        mechanism,
    }
}

/// The client `client` connected to `local` in session `session_id`.
pub(crate) fn client(client: &str, local: &str, session_id: &str) -> ClientInfo {
    ClientInfo {
        client: client.parse::<SocketAddr>().unwrap(),
        local: local.parse::<SocketAddr>().unwrap(),
        session_id: session_id.into(),
    }
}

/// Runs a client-side machine (a backend login, a delivery) against a peer that answers with
/// `script`, fed in `chunk`-sized pieces each time the machine asks to read, and `eof` once the
/// script is used up. Returns what the machine sent (with `<TLS>` where it started TLS) and the
/// event that ended the conversation: `on_event` answers each event and returns it back when
/// it ends the conversation.
pub(crate) fn converse<M: Machine>(
    mut machine: M,
    script: &[u8],
    chunk: usize,
    eof: impl Fn(&mut M),
    mut on_event: impl FnMut(&mut M, &mut String, M::Event) -> Option<M::Event>,
) -> (String, M::Event) {
    let mut sent = String::new();
    let mut pieces = script.chunks(chunk.max(1));
    loop {
        match machine.next_step() {
            Step::Send(bytes) => sent.push_str(&String::from_utf8(bytes).unwrap()),
            Step::Read => match pieces.next() {
                Some(piece) => machine.feed(piece),
                None => eof(&mut machine),
            },
            Step::StartTls => {
                sent.push_str("<TLS>");
                machine.tls_established();
            }
            Step::Event(event) => {
                if let Some(end) = on_event(&mut machine, &mut sent, event) {
                    return (sent, end);
                }
            }
        }
    }
}

/// What a backend login sent and how it ended, against a backend that answers with `script`
/// (see [`converse`]).
pub(crate) fn log_in<B: BackendLogin>(
    login: B,
    script: &[u8],
    chunk: usize,
) -> (String, LoginEvent) {
    converse(login, script, chunk, B::eof, |_, _, end| Some(end))
}

/// How a backend login against `script` failed; panics if it did not fail.
pub(crate) fn failure<B: BackendLogin>(login: B, script: &[u8], chunk: usize) -> BackendFailure {
    match log_in(login, script, chunk) {
        (_, LoginEvent::Failed(failure)) => failure,
        (sent, end) => panic!("{script:?}: sent {sent:?}, ended with {end:?}"),
    }
}

/// Runs a login made by `login` against `script` fed in pieces of every size from one byte to
/// all of it; returns, for each piece size, what the login sent and how it ended.
pub(crate) fn log_in_at_every_split<B: BackendLogin>(
    script: &[u8],
    login: impl Fn() -> B,
) -> Vec<(usize, String, LoginEvent)> {
    (1..=script.len())
        .map(|chunk| {
            let (sent, end) = log_in(login(), script, chunk);
            (chunk, sent, end)
        })
        .collect()
}

/// Asserts that `b64` is the SASL PLAIN response of the [`master`] login: the master user
/// acting as the user.
pub(crate) fn assert_master_plain(b64: &str) {
    let plain = decode_plain(&decode_base64(b64.as_bytes()).unwrap()).unwrap();
    assert_eq!(plain.authzid.as_deref(), Some("alice@example.com"));
    assert_eq!(plain.authcid, "casmaster");
    assert_eq!(plain.password.expose(), b"masterpw");
}
