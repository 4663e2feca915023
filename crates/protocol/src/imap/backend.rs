//! Logging in to an IMAP mailbox server on the user's behalf, sans I/O.

use mailfront_model::{BackendTls, SaslMechanism};

use super::framing::{Frame, FrameLimits, Framer};
use super::response::{ResponseLine, capability_code, has_capability, parse_line};
use crate::conversation::{Conversation, Input, Peer};
use crate::{BackendAuth, BackendFailure, ClientInfo, LoginEvent};

/// Bounds on what we buffer from a backend before login completes. The backend is ours, but a
/// misconfigured port (pointing at something that is not IMAP) must not exhaust memory.
const BACKEND_LIMITS: FrameLimits = FrameLimits {
    max_line: 64 * 1024,
    max_literal: 64 * 1024,
    max_message: 256 * 1024,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Greeting,
    /// Waiting for the answer to a CAPABILITY command (`then` says what comes after).
    Capability {
        tag: u32,
        then: AfterCaps,
    },
    StartTls {
        tag: u32,
    },
    /// ID (if sent) and the login command are in flight.
    Login {
        id_tag: Option<u32>,
        tag: u32,
    },
    /// AUTHENTICATE PLAIN without SASL-IR: waiting for the continuation request.
    PlainContinuation {
        id_tag: Option<u32>,
        tag: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterCaps {
    Login,
    Ready,
}

/// The IMAP backend-login client. See the [module documentation](super).
#[derive(Debug)]
pub struct ImapBackendLogin {
    auth: BackendAuth,
    tls: BackendTls,
    client: Option<ClientInfo>,
    /// The backend, whose bytes are framed into IMAP responses.
    peer: Peer<LoginEvent, Framer>,
    stage: Stage,
    next_tag: u32,
    capabilities: Option<String>,
}

/// Quotes an IMAP string if it can be quoted (printable ASCII only); `None` otherwise.
fn quoted(text: &[u8]) -> Option<String> {
    if !text.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for &b in text {
        if b == b'"' || b == b'\\' {
            out.push('\\');
        }
        out.push(char::from(b));
    }
    out.push('"');
    Some(out)
}

impl ImapBackendLogin {
    /// A login as `auth` describes, over a connection with `tls`; `client` is passed on with
    /// `ID` when the backend supports it.
    pub fn new(auth: BackendAuth, tls: BackendTls, client: Option<ClientInfo>) -> Self {
        Self {
            auth,
            tls,
            client,
            peer: Peer::backend(Framer::new(BACKEND_LIMITS), tls),
            stage: Stage::Greeting,
            next_tag: 1,
            capabilities: None,
        }
    }

    fn tag(&mut self) -> u32 {
        let tag = self.next_tag;
        self.next_tag += 1;
        tag
    }

    fn caps(&self) -> &str {
        self.capabilities.as_deref().unwrap_or("")
    }

    fn ask_capabilities(&mut self, then: AfterCaps) {
        let tag = self.tag();
        self.peer.send(format!("mf{tag} CAPABILITY\r\n"));
        self.stage = Stage::Capability { tag, then };
    }

    /// Called once the capabilities of the (possibly TLS) connection are known.
    fn proceed(&mut self) {
        if self.tls == BackendTls::StartTls && !self.peer.is_secure() {
            if !has_capability(self.caps(), "STARTTLS") {
                self.peer.fail(BackendFailure::Unsupported("STARTTLS"));
                return;
            }
            let tag = self.tag();
            self.peer.send(format!("mf{tag} STARTTLS\r\n"));
            self.stage = Stage::StartTls { tag };
            return;
        }
        self.login();
    }

    fn login(&mut self) {
        let client = self.client.clone();
        let id_tag = match (client, has_capability(self.caps(), "ID")) {
            (Some(client), true) => {
                let tag = self.tag();
                // Dovecot honours these from `login_trusted_networks`, so its logs, limits and
                // authentication see the real client, not mailfront.
                let id = format!(
                    "mf{tag} ID (\"x-originating-ip\" \"{}\" \"x-originating-port\" \"{}\" \"x-connected-ip\" \"{}\" \"x-connected-port\" \"{}\" \"x-session-ext-id\" \"{}\")\r\n",
                    client.client.ip(),
                    client.client.port(),
                    client.local.ip(),
                    client.local.port(),
                    client.session_id.replace(['"', '\\'], ""),
                );
                self.peer.send(id);
                Some(tag)
            }
            _ => None,
        };
        let tag = self.tag();
        let sasl_ir = has_capability(self.caps(), "SASL-IR");
        let literal_plus = has_capability(self.caps(), "LITERAL+");
        let command = match &self.auth {
            BackendAuth::Master {
                user,
                master,
                password,
                separator,
                mechanism,
            } => {
                // The user name must not be able to name a different master or user.
                if user.contains(separator.as_str()) || user.contains('\0') {
                    self.peer.fail(BackendFailure::UnsafeName);
                    return;
                }
                match mechanism {
                    SaslMechanism::Plain => None,
                    SaslMechanism::Login => {
                        let login = format!("{user}{separator}{master}");
                        Some(login_command(
                            tag,
                            login.as_bytes(),
                            password.expose().as_bytes(),
                            literal_plus,
                        ))
                    }
                }
            }
            BackendAuth::PassThrough {
                user,
                password,
                mechanism,
            } => match mechanism {
                SaslMechanism::Plain => None,
                SaslMechanism::Login => Some(login_command(
                    tag,
                    user.as_bytes(),
                    password.expose(),
                    literal_plus,
                )),
            },
        };
        match command {
            Some(Some(line)) => {
                self.peer.send(line);
                self.stage = Stage::Login { id_tag, tag };
            }
            Some(None) => self.peer.fail(BackendFailure::UnsafeName),
            None if sasl_ir => {
                let response = self.plain_response();
                self.peer
                    .send(format!("mf{tag} AUTHENTICATE PLAIN {response}"));
                self.stage = Stage::Login { id_tag, tag };
            }
            None => {
                self.peer.send(format!("mf{tag} AUTHENTICATE PLAIN\r\n"));
                self.stage = Stage::PlainContinuation { id_tag, tag };
            }
        }
    }

    /// The base64 PLAIN response plus CRLF.
    fn plain_response(&self) -> String {
        format!("{}\r\n", self.auth.plain_response().expose())
    }

    fn ready(&mut self) {
        let leftover = self.peer.input.take_unframed();
        // The list goes into the client's login reply: one with a control character in it (a
        // bare CR survives line splitting; found by fuzzing) could break that reply, so it is
        // dropped and the client asks for the capabilities itself.
        let capabilities = self
            .capabilities
            .take()
            .filter(|caps| !caps.contains(char::is_control));
        self.peer.finish(LoginEvent::Ready {
            capabilities,
            leftover,
        });
    }

    fn handle(&mut self, message: &[u8]) {
        let Some(line) = parse_line(message) else {
            let text = String::from_utf8_lossy(message)
                .trim_end()
                .chars()
                .take(200)
                .collect();
            self.peer.fail(BackendFailure::Protocol(text));
            return;
        };
        let tagged = |line: &ResponseLine<'_>, want: u32| match line {
            ResponseLine::Tagged { tag, status, rest } if *tag == format!("mf{want}") => {
                Some((status.to_ascii_uppercase(), rest.to_string()))
            }
            _ => None,
        };
        // Untagged responses that matter in any step.
        if let ResponseLine::Untagged { keyword, rest } = &line {
            if keyword.eq_ignore_ascii_case("CAPABILITY") {
                self.capabilities = Some((*rest).to_owned());
            } else if keyword.eq_ignore_ascii_case("BYE") {
                self.peer
                    .fail(BackendFailure::Refused(format!("BYE {rest}")));
                return;
            }
        }
        match self.stage {
            Stage::Greeting => match line {
                ResponseLine::Untagged { keyword, rest } if keyword.eq_ignore_ascii_case("OK") => {
                    match capability_code(rest) {
                        Some(caps) => {
                            self.capabilities = Some(caps.to_owned());
                            self.proceed();
                        }
                        None => self.ask_capabilities(AfterCaps::Login),
                    }
                }
                _ => self
                    .peer
                    .fail(BackendFailure::Protocol("unexpected greeting".into())),
            },
            Stage::Capability { tag, then } => {
                if let Some((status, rest)) = tagged(&line, tag) {
                    if status != "OK" {
                        self.peer.fail(BackendFailure::Protocol(format!(
                            "CAPABILITY: {status} {rest}"
                        )));
                    } else if then == AfterCaps::Ready {
                        self.ready();
                    } else {
                        self.proceed();
                    }
                }
            }
            Stage::StartTls { tag } => {
                if let Some((status, rest)) = tagged(&line, tag) {
                    if status == "OK" {
                        self.capabilities = None;
                        self.peer.start_tls();
                    } else {
                        self.peer.fail(BackendFailure::Refused(format!(
                            "STARTTLS: {status} {rest}"
                        )));
                    }
                }
            }
            Stage::PlainContinuation { id_tag, tag } => {
                if line == ResponseLine::Continuation {
                    let response = self.plain_response();
                    self.peer.send(response);
                    self.stage = Stage::Login { id_tag, tag };
                } else if let Some((status, rest)) = tagged(&line, tag) {
                    self.peer
                        .fail(BackendFailure::Refused(format!("{status} {rest}")));
                }
            }
            Stage::Login { id_tag, tag } => {
                if id_tag.is_some_and(|id| tagged(&line, id).is_some()) {
                    // The ID answer; its result does not matter.
                    return;
                }
                if line == ResponseLine::Continuation {
                    self.peer.fail(BackendFailure::Protocol(
                        "unexpected continuation request".into(),
                    ));
                    return;
                }
                if let Some((status, rest)) = tagged(&line, tag) {
                    if status == "OK" {
                        match capability_code(&rest) {
                            Some(caps) => {
                                self.capabilities = Some(caps.to_owned());
                                self.ready();
                            }
                            None => {
                                self.capabilities = None;
                                self.ask_capabilities(AfterCaps::Ready);
                            }
                        }
                    } else {
                        self.peer
                            .fail(BackendFailure::Refused(format!("{status} {rest}")));
                    }
                }
            }
        }
    }
}

/// `mfN LOGIN user password`, each quoted, or sent as a non-synchronising literal when it
/// cannot be quoted and the server offers LITERAL+; `None` if it cannot be sent at all.
fn login_command(tag: u32, user: &[u8], password: &[u8], literal_plus: bool) -> Option<Vec<u8>> {
    let mut line = format!("mf{tag} LOGIN ").into_bytes();
    for (i, field) in [user, password].into_iter().enumerate() {
        if i == 1 {
            line.push(b' ');
        }
        match quoted(field) {
            Some(q) => line.extend_from_slice(q.as_bytes()),
            None if literal_plus && !field.contains(&0) => {
                line.extend_from_slice(format!("{{{}+}}\r\n", field.len()).as_bytes());
                line.extend_from_slice(field);
            }
            None => return None,
        }
    }
    line.extend_from_slice(b"\r\n");
    Some(line)
}

impl Conversation for ImapBackendLogin {
    type Event = LoginEvent;

    fn advance(&mut self) -> bool {
        match self.peer.input.next_frame() {
            Ok(None) => return false,
            Ok(Some(Frame::Literal(_))) => {
                // Backend literals (e.g. in an ID answer) are read through, never answered.
                if self.peer.input.accept_literal().is_err() {
                    self.peer
                        .fail(BackendFailure::Protocol("literal too large".into()));
                }
            }
            Ok(Some(Frame::Message(message))) => self.handle(&message),
            Err(error) => self.peer.fail(BackendFailure::Protocol(error.to_string())),
        }
        true
    }

    fn secured(&mut self) {
        // Capabilities may differ over TLS (RFC 3501 §6.2.1: forget them).
        self.ask_capabilities(AfterCaps::Login);
    }

    fn peer(&mut self) -> &mut Peer<LoginEvent, impl Input> {
        &mut self.peer
    }
}

#[cfg(test)]
mod tests;
