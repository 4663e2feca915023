//! Logging in to a POP3 mailbox server on the user's behalf, sans I/O.

use mailfront_model::{BackendTls, SaslMechanism, Secret};

use crate::capabilities::Capabilities;
use crate::conversation::{Conversation, Input, Peer};
use crate::line::LineReader;
use crate::{BackendAuth, BackendFailure, ClientInfo, LoginEvent};

/// Longest backend line before login; anything longer is not a POP3 server talking.
const MAX_BACKEND_LINE: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Greeting,
    /// Reading the CAPA list (multi-line).
    Capabilities {
        reply_seen: bool,
    },
    StartTls,
    Xclient,
    /// USER sent, waiting for +OK before PASS.
    User,
    /// PASS or AUTH sent, waiting for the verdict.
    Verdict,
}

/// The POP3 backend-login client. See the [module documentation](super).
#[derive(Debug)]
pub struct Pop3BackendLogin {
    auth: BackendAuth,
    tls: BackendTls,
    client: Option<ClientInfo>,
    /// The backend, whose bytes are read line by line.
    peer: Peer<LoginEvent, LineReader>,
    stage: Stage,
    capabilities: Capabilities,
    /// The PASS line, held back until USER is accepted.
    pending_pass: Option<Secret<Vec<u8>>>,
}

impl Pop3BackendLogin {
    /// A login as `auth` describes, over a connection with `tls`; `client` is passed on with
    /// XCLIENT when the backend offers it.
    pub fn new(auth: BackendAuth, tls: BackendTls, client: Option<ClientInfo>) -> Self {
        Self {
            auth,
            tls,
            client,
            peer: Peer::backend(LineReader::new(MAX_BACKEND_LINE), tls),
            stage: Stage::Greeting,
            capabilities: Capabilities::default(),
            pending_pass: None,
        }
    }

    fn ask_capabilities(&mut self) {
        self.capabilities.clear();
        self.peer.send("CAPA\r\n");
        self.stage = Stage::Capabilities { reply_seen: false };
    }

    /// Capabilities known: STLS if configured, then XCLIENT if offered, then the login.
    fn proceed(&mut self) {
        if self.tls == BackendTls::StartTls && !self.peer.is_secure() {
            if !self.capabilities.has("STLS") {
                self.peer.fail(BackendFailure::Unsupported("STLS"));
                return;
            }
            self.peer.send("STLS\r\n");
            self.stage = Stage::StartTls;
            return;
        }
        if let (Some(client), true) = (&self.client, self.capabilities.has("XCLIENT")) {
            let line = format!(
                "XCLIENT ADDR={} PORT={} SESSION={}\r\n",
                client.client.ip(),
                client.client.port(),
                client
                    .session_id
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "")
            );
            self.peer.send(line);
            self.stage = Stage::Xclient;
            return;
        }
        self.login();
    }

    fn login(&mut self) {
        let (user, password, mechanism) = match &self.auth {
            BackendAuth::Master {
                user,
                master,
                separator,
                password,
                mechanism,
            } => {
                if user.contains(separator.as_str()) {
                    self.peer.fail(BackendFailure::UnsafeName);
                    return;
                }
                let login = match mechanism {
                    SaslMechanism::Plain => user.clone(),
                    SaslMechanism::Login => format!("{user}{separator}{master}"),
                };
                (login, password.expose().as_bytes().to_vec(), *mechanism)
            }
            BackendAuth::PassThrough {
                user,
                password,
                mechanism,
            } => (user.clone(), password.expose().clone(), *mechanism),
        };
        match mechanism {
            SaslMechanism::Plain => {
                if !self.capabilities.lists("SASL", "PLAIN", &[' ']) {
                    self.peer.fail(BackendFailure::Unsupported("SASL PLAIN"));
                    return;
                }
                let response = self.auth.plain_response();
                self.peer
                    .send(format!("AUTH PLAIN {}\r\n", response.expose()));
                self.stage = Stage::Verdict;
            }
            SaslMechanism::Login => {
                // POP3 arguments end at the line: no CR, LF or NUL can be carried.
                if [user.as_bytes(), password.as_slice()]
                    .iter()
                    .any(|f| f.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0))
                {
                    self.peer.fail(BackendFailure::UnsafeName);
                    return;
                }
                let mut pass = b"PASS ".to_vec();
                pass.extend_from_slice(&password);
                pass.extend_from_slice(b"\r\n");
                self.peer.send(format!("USER {user}\r\n"));
                self.pending_pass = Some(Secret::new(pass));
                self.stage = Stage::User;
            }
        }
    }

    fn handle(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let ok = line.starts_with(b"+OK");
        let err = line.starts_with(b"-ERR");
        let excerpt = || text.chars().take(200).collect::<String>();
        match self.stage {
            Stage::Greeting => {
                if ok {
                    self.ask_capabilities();
                } else {
                    self.peer
                        .fail(BackendFailure::Protocol(format!("greeting: {}", excerpt())));
                }
            }
            Stage::Capabilities { reply_seen: false } => {
                if ok {
                    self.stage = Stage::Capabilities { reply_seen: true };
                } else {
                    // A server without CAPA: carry on with no capabilities known.
                    self.proceed();
                }
            }
            Stage::Capabilities { reply_seen: true } => {
                if line == b"." {
                    self.proceed();
                } else {
                    self.capabilities.push(text.into_owned());
                }
            }
            Stage::StartTls => {
                if ok {
                    self.peer.start_tls();
                } else {
                    self.peer
                        .fail(BackendFailure::Refused(format!("STLS: {}", excerpt())));
                }
            }
            Stage::Xclient => {
                // Refused means we are not a trusted network for it: log in all the same (the
                // backend then sees mailfront's address instead of the client's).
                self.login();
            }
            Stage::User => {
                if ok {
                    if let Some(pass) = self.pending_pass.take() {
                        self.peer.send(pass.expose().clone());
                    }
                    self.stage = Stage::Verdict;
                } else {
                    self.peer
                        .fail(BackendFailure::Refused(format!("USER: {}", excerpt())));
                }
            }
            Stage::Verdict => {
                if ok {
                    let leftover = self.peer.input.take_all();
                    self.peer.finish(LoginEvent::Ready {
                        capabilities: None,
                        leftover,
                    });
                } else if err {
                    self.peer.fail(BackendFailure::Refused(excerpt()));
                } else {
                    self.peer.fail(BackendFailure::Protocol(excerpt()));
                }
            }
        }
    }
}

impl Conversation for Pop3BackendLogin {
    type Event = LoginEvent;

    fn advance(&mut self) -> bool {
        match self.peer.input.next_line() {
            Ok(None) => return false,
            Ok(Some(line)) => self.handle(&line),
            Err(_) => self
                .peer
                .fail(BackendFailure::Protocol("line too long".into())),
        }
        true
    }

    fn secured(&mut self) {
        self.ask_capabilities();
    }

    fn peer(&mut self) -> &mut Peer<LoginEvent, impl Input> {
        &mut self.peer
    }
}

#[cfg(test)]
mod tests;
