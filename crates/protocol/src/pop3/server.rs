//! The POP3 front end: greeting to login, sans I/O.

use std::collections::VecDeque;

use crate::line::LineReader;
use crate::sasl::{self, Exchange, Mechanism, Step};
use crate::{Action, AuthFailure, AuthResult, ClientTls, Credentials, FrontEnd, Limits};

/// How a POP3 listener behaves before login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pop3Settings {
    /// TLS on this listener.
    pub tls: ClientTls,
    /// Accept passwords on a connection without TLS.
    pub allow_plaintext_auth: bool,
    /// Bounds on pre-login input.
    pub limits: Limits,
    /// Text of the greeting.
    pub greeting: String,
}

impl Default for Pop3Settings {
    fn default() -> Self {
        Self {
            tls: ClientTls::StartTls,
            allow_plaintext_auth: false,
            limits: Limits::default(),
            greeting: "mailfront ready.".to_owned(),
        }
    }
}

#[derive(Debug)]
enum State {
    Commands,
    Sasl(Exchange),
    Authenticating,
    StartingTls,
    Done,
}

/// The POP3 pre-login state machine. See the [module documentation](super).
#[derive(Debug)]
pub struct Pop3FrontEnd {
    settings: Pop3Settings,
    tls_active: bool,
    lines: LineReader,
    actions: VecDeque<Action>,
    state: State,
    user: Option<String>,
    commands: u32,
    failures: u32,
}

impl Pop3FrontEnd {
    /// A new session; the greeting is the first action.
    pub fn new(settings: Pop3Settings) -> Self {
        let mut front = Self {
            tls_active: settings.tls == ClientTls::Implicit,
            lines: LineReader::new(settings.limits.max_line_length),
            actions: VecDeque::new(),
            state: State::Commands,
            user: None,
            commands: 0,
            failures: 0,
            settings,
        };
        let greeting = format!("+OK {}\r\n", front.settings.greeting);
        front.send(greeting);
        front
    }

    fn may_authenticate(&self) -> bool {
        self.tls_active || self.settings.allow_plaintext_auth
    }

    fn send(&mut self, text: impl Into<Vec<u8>>) {
        self.actions.push_back(Action::Send(text.into()));
    }

    fn close_with(&mut self, text: &str) {
        self.send(format!("{text}\r\n"));
        self.actions.push_back(Action::Close);
        self.state = State::Done;
        self.lines.clear();
    }

    fn capabilities(&self) -> String {
        // What the session offers after login too: the backend (Dovecot) implements these.
        let mut caps = String::from(
            "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n",
        );
        if self.may_authenticate() {
            caps.push_str("USER\r\nSASL PLAIN LOGIN\r\n");
        }
        if self.settings.tls == ClientTls::StartTls && !self.tls_active {
            caps.push_str("STLS\r\n");
        }
        caps.push_str(".\r\n");
        caps
    }

    fn process(&mut self) {
        while self.actions.is_empty() {
            if !matches!(self.state, State::Commands | State::Sasl(_)) {
                return;
            }
            let line = match self.lines.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => return,
                Err(_) => {
                    self.close_with("-ERR Line too long.");
                    return;
                }
            };
            match std::mem::replace(&mut self.state, State::Commands) {
                State::Sasl(mut exchange) => {
                    let step = exchange.respond(&line);
                    self.sasl_step(exchange, step);
                }
                _ => {
                    self.commands = self.commands.saturating_add(1);
                    if self.commands > self.settings.limits.max_commands_before_auth {
                        self.close_with("-ERR Too many commands before authentication.");
                        return;
                    }
                    self.command(&line);
                }
            }
        }
    }

    fn command(&mut self, line: &[u8]) {
        let mut parts = line.splitn(2, |&b| b == b' ');
        let verb = parts.next().unwrap_or_default().to_ascii_uppercase();
        let argument = parts.next().unwrap_or_default();
        match verb.as_slice() {
            b"CAPA" => {
                let caps = self.capabilities();
                self.send(caps);
            }
            b"QUIT" => self.close_with("+OK Logging out."),
            b"NOOP" => self.send("-ERR Not logged in.\r\n"),
            b"STLS" => {
                if self.tls_active {
                    self.send("-ERR TLS is already active.\r\n");
                } else if self.settings.tls != ClientTls::StartTls {
                    self.send("-ERR STLS is not available on this port.\r\n");
                } else {
                    self.send("+OK Begin TLS negotiation now.\r\n");
                    // Pipelined clear-text bytes never count after the handshake.
                    self.lines.clear();
                    self.actions.push_back(Action::StartTls);
                    self.state = State::StartingTls;
                }
            }
            b"USER" => {
                if !self.may_authenticate() {
                    self.privacy_required();
                    return;
                }
                match sasl::user_name(argument) {
                    Ok(user) if !user.is_empty() => {
                        self.user = Some(user);
                        self.send("+OK\r\n");
                    }
                    _ => self.send("-ERR Invalid user name.\r\n"),
                }
            }
            b"PASS" => {
                if !self.may_authenticate() {
                    self.privacy_required();
                    return;
                }
                let Some(user) = self.user.take() else {
                    self.send("-ERR No user name given (USER first).\r\n");
                    return;
                };
                self.authenticate(Credentials {
                    authcid: user,
                    authzid: None,
                    password: mailfront_model::Secret::new(argument.to_vec()),
                    mechanism: "USER",
                });
            }
            b"AUTH" => self.auth(argument),
            b"APOP" => self.send("-ERR APOP is not supported.\r\n"),
            b"STAT" | b"LIST" | b"RETR" | b"DELE" | b"RSET" | b"TOP" | b"UIDL" | b"LAST" => {
                self.send("-ERR Not logged in.\r\n");
            }
            _ => self.send("-ERR Unknown command.\r\n"),
        }
    }

    fn privacy_required(&mut self) {
        self.failed_reply(
            "-ERR [AUTH] Plaintext authentication disallowed on non-secure connections.",
        );
    }

    fn failed_reply(&mut self, text: &str) {
        self.send(format!("{text}\r\n"));
    }

    fn auth(&mut self, argument: &[u8]) {
        if argument.is_empty() {
            // RFC 5034 §4: AUTH without arguments lists the mechanisms.
            self.send("+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n");
            return;
        }
        if !self.may_authenticate() {
            self.privacy_required();
            return;
        }
        let mut parts = argument.splitn(2, |&b| b == b' ');
        let Some(mechanism) = Mechanism::from_name(parts.next().unwrap_or_default()) else {
            self.send("-ERR Unsupported authentication mechanism.\r\n");
            return;
        };
        let initial = match parts.next() {
            None => None,
            Some(text) => match sasl::decode_base64(text) {
                Ok(bytes) => Some(bytes),
                Err(_) => {
                    self.send("-ERR Invalid base64 data in initial response.\r\n");
                    return;
                }
            },
        };
        let (exchange, step) = Exchange::start(mechanism, initial);
        self.sasl_step(exchange, step);
    }

    fn sasl_step(&mut self, exchange: Exchange, step: Step) {
        match step {
            Step::Challenge(challenge) => {
                self.send(format!("+ {challenge}\r\n"));
                self.state = State::Sasl(exchange);
            }
            Step::Done(credentials) => self.authenticate(credentials),
            Step::Cancelled => self.send("-ERR Authentication cancelled.\r\n"),
            Step::BadBase64 => self.send("-ERR Invalid base64 data.\r\n"),
            Step::Malformed => self.failed(AuthFailure::BadCredentials),
        }
    }

    fn authenticate(&mut self, credentials: Credentials) {
        self.actions.push_back(Action::Authenticate(credentials));
        self.state = State::Authenticating;
    }

    fn failed(&mut self, failure: AuthFailure) {
        let text = match failure {
            AuthFailure::BadCredentials => "-ERR [AUTH] Authentication failed.",
            AuthFailure::AuthzidRefused => "-ERR [AUTH] Not authorized to act as that user.",
            AuthFailure::ProtocolDisabled => {
                "-ERR [AUTH] POP3 access is not enabled for this account."
            }
            AuthFailure::Temporary => {
                "-ERR [SYS/TEMP] Service temporarily unavailable, try again later."
            }
        };
        self.failed_reply(text);
        if failure != AuthFailure::Temporary {
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.settings.limits.max_auth_failures {
                self.close_with("-ERR Too many authentication failures.");
            }
        }
    }
}

impl FrontEnd for Pop3FrontEnd {
    fn feed(&mut self, bytes: &[u8]) {
        if !matches!(self.state, State::Done | State::StartingTls) {
            self.lines.push(bytes);
        }
    }

    fn tls_established(&mut self) {
        if matches!(self.state, State::StartingTls) {
            self.tls_active = true;
            self.lines.clear();
            self.user = None;
            self.state = State::Commands;
        }
    }

    fn auth_result(&mut self, result: AuthResult) {
        if !matches!(self.state, State::Authenticating) {
            return;
        }
        self.state = State::Commands;
        match result {
            AuthResult::Proxied { .. } => {
                self.send("+OK Logged in.\r\n");
                let pending = self.lines.take_all();
                self.actions.push_back(Action::Proxy { pending });
                self.state = State::Done;
            }
            AuthResult::Failed(failure) => self.failed(failure),
        }
    }

    fn login_timeout(&mut self) {
        self.actions.clear();
        self.close_with("-ERR Login took too long.");
    }

    fn idle_timeout(&mut self) {
        self.actions.clear();
        self.close_with("-ERR Disconnected for inactivity.");
    }

    fn shutdown(&mut self) {
        self.actions.clear();
        self.close_with("-ERR [SYS/TEMP] Server shutting down.");
    }

    fn next_action(&mut self) -> Action {
        if self.actions.is_empty() {
            self.process();
        }
        match self.actions.pop_front() {
            Some(action) => action,
            None if matches!(self.state, State::Done) => Action::Close,
            None => Action::Read,
        }
    }
}

#[cfg(test)]
mod tests;
