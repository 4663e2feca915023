//! A test driver for front ends: feeds input in chunks and records what the machine asked for.

use crate::{Action, AuthResult, Credentials, FrontEnd};

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
    let mut fed_all = input.is_empty();
    loop {
        match front.next_action() {
            Action::Send(bytes) => out(&mut seen, bytes),
            Action::Read => match pieces.next() {
                Some(piece) => front.feed(piece),
                None => {
                    fed_all = true;
                    break;
                }
            },
            Action::StartTls => {
                seen.push(Seen::StartTls);
                front.tls_established();
            }
            Action::Authenticate(credentials) => {
                let result = answer(&credentials);
                seen.push(Seen::Auth {
                    authcid: credentials.authcid,
                    authzid: credentials.authzid,
                    password: credentials.password.expose().clone(),
                    mechanism: credentials.mechanism,
                });
                front.auth_result(result);
            }
            Action::Proxy { mut pending } => {
                pending.extend(pieces.by_ref().flatten());
                seen.push(Seen::Proxy(pending));
                break;
            }
            Action::Close => {
                seen.push(Seen::Close);
                break;
            }
        }
    }
    let _ = fed_all;
    seen
}
