//! Logging in to a POP3 mailbox server on the user's behalf, sans I/O.

use std::collections::VecDeque;

use mailfront_model::{BackendTls, SaslMechanism, Secret};

use crate::line::LineReader;
use crate::sasl::encode_plain;
use crate::{BackendAction, BackendAuth, BackendFailure, BackendLogin, ClientInfo};

/// Longest backend line before login; anything longer is not a POP3 server talking.
const MAX_BACKEND_LINE: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Greeting,
    /// Reading the CAPA list (multi-line).
    Capabilities {
        reply_seen: bool,
    },
    StartTls,
    Handshake,
    Xclient,
    /// USER sent, waiting for +OK before PASS.
    User,
    /// PASS or AUTH sent, waiting for the verdict.
    Verdict,
    Done,
}

/// The POP3 backend-login client. See the [module documentation](super).
#[derive(Debug)]
pub struct Pop3BackendLogin {
    auth: BackendAuth,
    tls: BackendTls,
    client: Option<ClientInfo>,
    lines: LineReader,
    actions: VecDeque<BackendAction>,
    step: Step,
    capabilities: Vec<String>,
    tls_started: bool,
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
            lines: LineReader::new(MAX_BACKEND_LINE),
            actions: VecDeque::new(),
            step: Step::Greeting,
            capabilities: Vec::new(),
            tls_started: false,
            pending_pass: None,
        }
    }

    fn send(&mut self, text: impl Into<Vec<u8>>) {
        self.actions.push_back(BackendAction::Send(text.into()));
    }

    fn fail(&mut self, failure: BackendFailure) {
        self.actions.push_back(BackendAction::Failed(failure));
        self.step = Step::Done;
    }

    fn has(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| {
            c.split(' ')
                .next()
                .is_some_and(|name| name.eq_ignore_ascii_case(capability))
        })
    }

    fn has_sasl(&self, mechanism: &str) -> bool {
        self.capabilities.iter().any(|c| {
            let mut words = c.split(' ');
            words.next().is_some_and(|w| w.eq_ignore_ascii_case("SASL"))
                && words.any(|m| m.eq_ignore_ascii_case(mechanism))
        })
    }

    fn ask_capabilities(&mut self) {
        self.capabilities.clear();
        self.send("CAPA\r\n");
        self.step = Step::Capabilities { reply_seen: false };
    }

    /// Capabilities known: STLS if configured, then XCLIENT if offered, then the login.
    fn proceed(&mut self) {
        if self.tls == BackendTls::StartTls && !self.tls_started {
            if !self.has("STLS") {
                self.fail(BackendFailure::Unsupported("STLS"));
                return;
            }
            self.send("STLS\r\n");
            self.step = Step::StartTls;
            return;
        }
        if let (Some(client), true) = (&self.client, self.has("XCLIENT")) {
            let line = format!(
                "XCLIENT ADDR={} PORT={} SESSION={}\r\n",
                client.client.ip(),
                client.client.port(),
                client
                    .session_id
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "")
            );
            self.send(line);
            self.step = Step::Xclient;
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
                    self.fail(BackendFailure::UnsafeName);
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
                if !self.has_sasl("PLAIN") {
                    self.fail(BackendFailure::Unsupported("SASL PLAIN"));
                    return;
                }
                let response = self.plain_response();
                self.send(format!("AUTH PLAIN {response}\r\n"));
                self.step = Step::Verdict;
            }
            SaslMechanism::Login => {
                // POP3 arguments end at the line: no CR, LF or NUL can be carried.
                if [user.as_bytes(), password.as_slice()]
                    .iter()
                    .any(|f| f.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0))
                {
                    self.fail(BackendFailure::UnsafeName);
                    return;
                }
                let mut pass = b"PASS ".to_vec();
                pass.extend_from_slice(&password);
                pass.extend_from_slice(b"\r\n");
                self.send(format!("USER {user}\r\n"));
                self.pending_pass = Some(Secret::new(pass));
                self.step = Step::User;
            }
        }
    }

    fn plain_response(&self) -> String {
        let encoded = match &self.auth {
            BackendAuth::Master {
                user,
                master,
                password,
                ..
            } => encode_plain(user, master, password.expose().as_bytes()),
            BackendAuth::PassThrough { user, password, .. } => {
                encode_plain("", user, password.expose())
            }
        };
        encoded.expose().clone()
    }

    fn handle(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let ok = line.starts_with(b"+OK");
        let err = line.starts_with(b"-ERR");
        let excerpt = || text.chars().take(200).collect::<String>();
        match self.step {
            Step::Greeting => {
                if ok {
                    self.ask_capabilities();
                } else {
                    self.fail(BackendFailure::Protocol(format!("greeting: {}", excerpt())));
                }
            }
            Step::Capabilities { reply_seen: false } => {
                if ok {
                    self.step = Step::Capabilities { reply_seen: true };
                } else {
                    // A server without CAPA: carry on with no capabilities known.
                    self.proceed();
                }
            }
            Step::Capabilities { reply_seen: true } => {
                if line == b"." {
                    self.proceed();
                } else {
                    self.capabilities.push(text.into_owned());
                }
            }
            Step::StartTls => {
                if ok {
                    self.lines.clear();
                    self.actions.push_back(BackendAction::StartTls);
                    self.step = Step::Handshake;
                } else {
                    self.fail(BackendFailure::Refused(format!("STLS: {}", excerpt())));
                }
            }
            Step::Handshake | Step::Done => {}
            Step::Xclient => {
                // Refused means we are not a trusted network for it: log in all the same (the
                // backend then sees mailfront's address instead of the client's).
                self.login();
            }
            Step::User => {
                if ok {
                    if let Some(pass) = self.pending_pass.take() {
                        self.send(pass.expose().clone());
                    }
                    self.step = Step::Verdict;
                } else {
                    self.fail(BackendFailure::Refused(format!("USER: {}", excerpt())));
                }
            }
            Step::Verdict => {
                if ok {
                    let leftover = self.lines.take_all();
                    self.actions.push_back(BackendAction::Ready {
                        capabilities: None,
                        leftover,
                    });
                    self.step = Step::Done;
                } else if err {
                    self.fail(BackendFailure::Refused(excerpt()));
                } else {
                    self.fail(BackendFailure::Protocol(excerpt()));
                }
            }
        }
    }
}

impl BackendLogin for Pop3BackendLogin {
    fn feed(&mut self, bytes: &[u8]) {
        if !matches!(self.step, Step::Done | Step::Handshake) {
            self.lines.push(bytes);
        }
    }

    fn eof(&mut self) {
        if self.step != Step::Done {
            self.fail(BackendFailure::Closed);
        }
    }

    fn tls_established(&mut self) {
        if self.step == Step::Handshake {
            self.tls_started = true;
            self.lines.clear();
            self.ask_capabilities();
        }
    }

    fn next_action(&mut self) -> BackendAction {
        loop {
            if let Some(action) = self.actions.pop_front() {
                return action;
            }
            if matches!(self.step, Step::Done | Step::Handshake) {
                return BackendAction::Read;
            }
            match self.lines.next_line() {
                Ok(None) => return BackendAction::Read,
                Ok(Some(line)) => self.handle(&line),
                Err(_) => self.fail(BackendFailure::Protocol("line too long".into())),
            }
        }
    }
}

#[cfg(test)]
mod tests;
