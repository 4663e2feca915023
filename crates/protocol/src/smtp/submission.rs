//! The submission front end (RFC 6409): greeting to AUTH, sans I/O.

use std::collections::VecDeque;

use super::command::{self, Command, CommandError};
use super::reply::Reply;
use crate::line::LineReader;
use crate::sasl::{self, Exchange, Mechanism, Step};
use crate::{Action, AuthFailure, AuthResult, ClientTls, Credentials, FrontEnd, Limits};

/// How a submission listener behaves before AUTH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmissionSettings {
    /// TLS on this listener.
    pub tls: ClientTls,
    /// Accept AUTH on a connection without TLS.
    pub allow_plaintext_auth: bool,
    /// Bounds on pre-login input.
    pub limits: Limits,
    /// The name in the greeting and the EHLO reply.
    pub hostname: String,
    /// The SIZE announced in EHLO (RFC 1870).
    pub max_message_size: u64,
}

impl Default for SubmissionSettings {
    fn default() -> Self {
        Self {
            tls: ClientTls::StartTls,
            allow_plaintext_auth: false,
            limits: Limits::default(),
            hostname: "mailfront".to_owned(),
            max_message_size: 35 * 1024 * 1024,
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

/// The submission pre-AUTH state machine. See the [module documentation](super).
#[derive(Debug)]
pub struct SubmissionFrontEnd {
    settings: SubmissionSettings,
    tls_active: bool,
    greeted: bool,
    lines: LineReader,
    actions: VecDeque<Action>,
    state: State,
    commands: u32,
    failures: u32,
}

/// The reply for a command that does not parse.
pub(crate) fn syntax_reply(error: CommandError) -> Reply {
    match error {
        CommandError::Unrecognized => Reply::new(500, "5.5.2 Unrecognized command"),
        CommandError::Syntax => Reply::new(501, "5.5.4 Syntax error in parameters or arguments"),
        CommandError::Address => Reply::new(501, "5.1.3 Bad address syntax"),
        CommandError::Parameter => Reply::new(555, "5.5.4 Unsupported parameter"),
    }
}

impl SubmissionFrontEnd {
    /// A new session; the greeting is the first action.
    pub fn new(settings: SubmissionSettings) -> Self {
        let mut front = Self {
            tls_active: settings.tls == ClientTls::Implicit,
            greeted: false,
            lines: LineReader::new(settings.limits.max_line_length),
            actions: VecDeque::new(),
            state: State::Commands,
            commands: 0,
            failures: 0,
            settings,
        };
        let greeting = Reply::new(220, format!("{} ESMTP ready", front.settings.hostname));
        front.reply(greeting);
        front
    }

    fn may_authenticate(&self) -> bool {
        self.tls_active || self.settings.allow_plaintext_auth
    }

    fn reply(&mut self, reply: Reply) {
        self.actions.push_back(Action::Send(reply.to_bytes()));
    }

    fn close_with(&mut self, reply: Reply) {
        self.reply(reply);
        self.actions.push_back(Action::Close);
        self.state = State::Done;
        self.lines.clear();
    }

    fn ehlo_reply(&self, client: &str) -> Reply {
        let mut lines = vec![
            format!("{} greets {client}", self.settings.hostname),
            "PIPELINING".to_owned(),
            format!("SIZE {}", self.settings.max_message_size),
            "8BITMIME".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
        ];
        if self.settings.tls == ClientTls::StartTls && !self.tls_active {
            lines.push("STARTTLS".to_owned());
        }
        if self.may_authenticate() {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        Reply { code: 250, lines }
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
                    self.close_with(Reply::new(500, "5.5.6 Line too long"));
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
                        self.close_with(Reply::new(
                            421,
                            "4.7.0 Too many commands before authentication",
                        ));
                        return;
                    }
                    self.command(&line);
                }
            }
        }
    }

    fn command(&mut self, line: &[u8]) {
        let command = match command::parse(line) {
            Ok(command) => command,
            Err(error) => {
                self.reply(syntax_reply(error));
                return;
            }
        };
        match command {
            Command::Ehlo(client) => {
                self.greeted = true;
                let reply = self.ehlo_reply(&client);
                self.reply(reply);
            }
            Command::Helo(_) => {
                self.greeted = true;
                let name = self.settings.hostname.clone();
                self.reply(Reply::new(250, name));
            }
            Command::Lhlo(_) => self.reply(Reply::new(500, "5.5.2 Unrecognized command")),
            Command::StartTls => {
                if self.tls_active {
                    self.reply(Reply::new(503, "5.5.1 TLS already active"));
                } else if self.settings.tls != ClientTls::StartTls {
                    self.reply(Reply::new(502, "5.5.1 STARTTLS not available on this port"));
                } else {
                    self.reply(Reply::new(220, "2.0.0 Ready to start TLS"));
                    self.lines.clear();
                    self.actions.push_back(Action::StartTls);
                    self.state = State::StartingTls;
                }
            }
            Command::Auth { mechanism, initial } => self.auth(&mechanism, initial.as_deref()),
            Command::Mail { .. } | Command::Rcpt { .. } | Command::Data | Command::Bdat { .. } => {
                self.reply(Reply::new(530, "5.7.0 Authentication required"));
            }
            Command::Rset | Command::Noop => self.reply(Reply::new(250, "2.0.0 OK")),
            Command::Quit => self.close_with(Reply::new(221, "2.0.0 Bye")),
            Command::Vrfy => self.reply(Reply::new(252, "2.5.0 Cannot VRFY user")),
            Command::Expn => self.reply(Reply::new(502, "5.5.1 EXPN not available")),
            Command::Help => self.reply(Reply::new(214, "2.0.0 See RFC 5321 and RFC 6409")),
        }
    }

    fn auth(&mut self, mechanism: &[u8], initial: Option<&[u8]>) {
        if !self.greeted {
            self.reply(Reply::new(503, "5.5.1 Send EHLO first"));
            return;
        }
        if !self.may_authenticate() {
            self.reply(Reply::new(
                538,
                "5.7.11 Encryption required for requested authentication mechanism",
            ));
            return;
        }
        let Some(mechanism) = Mechanism::from_name(mechanism) else {
            self.reply(Reply::new(504, "5.5.4 Unrecognized authentication type"));
            return;
        };
        let initial = match initial {
            None => None,
            Some(text) => match sasl::decode_base64(text) {
                Ok(bytes) => Some(bytes),
                Err(_) => {
                    self.reply(Reply::new(501, "5.5.2 Invalid base64 data"));
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
                self.actions
                    .push_back(Action::Send(format!("334 {challenge}\r\n").into_bytes()));
                self.state = State::Sasl(exchange);
            }
            Step::Done(credentials) => self.authenticate(credentials),
            Step::Cancelled => self.reply(Reply::new(501, "5.7.0 Authentication aborted")),
            Step::BadBase64 => self.reply(Reply::new(501, "5.5.2 Invalid base64 data")),
            Step::Malformed => self.failed(AuthFailure::BadCredentials),
        }
    }

    fn authenticate(&mut self, credentials: Credentials) {
        self.actions.push_back(Action::Authenticate(credentials));
        self.state = State::Authenticating;
    }

    fn failed(&mut self, failure: AuthFailure) {
        let reply = match failure {
            AuthFailure::BadCredentials => {
                Reply::new(535, "5.7.8 Authentication credentials invalid")
            }
            AuthFailure::AuthzidRefused => {
                Reply::new(535, "5.7.8 Not authorized to act as that user")
            }
            AuthFailure::ProtocolDisabled => {
                Reply::new(535, "5.7.8 Submission is not enabled for this account")
            }
            AuthFailure::Temporary => Reply::new(454, "4.7.0 Temporary authentication failure"),
        };
        self.reply(reply);
        if failure != AuthFailure::Temporary {
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.settings.limits.max_auth_failures {
                self.close_with(Reply::new(421, "4.7.0 Too many authentication failures"));
            }
        }
    }
}

impl FrontEnd for SubmissionFrontEnd {
    fn feed(&mut self, bytes: &[u8]) {
        if !matches!(self.state, State::Done | State::StartingTls) {
            self.lines.push(bytes);
        }
    }

    fn tls_established(&mut self) {
        if matches!(self.state, State::StartingTls) {
            // RFC 3207 §4.2: forget everything, the client starts over with EHLO.
            self.tls_active = true;
            self.greeted = false;
            self.lines.clear();
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
                self.reply(Reply::new(235, "2.7.0 Authentication successful"));
                let pending = self.lines.take_all();
                self.actions.push_back(Action::Proxy { pending });
                self.state = State::Done;
            }
            AuthResult::Failed(failure) => self.failed(failure),
        }
    }

    fn idle_timeout(&mut self) {
        self.actions.clear();
        self.close_with(Reply::new(421, "4.4.2 Timeout, closing connection"));
    }

    fn shutdown(&mut self) {
        self.actions.clear();
        self.close_with(Reply::new(421, "4.3.2 Service shutting down"));
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
