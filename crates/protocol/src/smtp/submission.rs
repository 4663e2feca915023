//! The submission front end (RFC 6409): greeting to AUTH, sans I/O.

use super::command::{self, Command, CommandError};
use super::reply::Reply;
use crate::conversation::{Conversation, Input, Peer};
use crate::front::{Counters, Line, LineState};
use crate::line::LineReader;
use crate::sasl::{self, Exchange, Mechanism};
use crate::{
    AuthFailure, AuthResult, ClientTls, Credentials, FrontEnd, FrontEvent, Limits, OAuthOffer,
};

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
    /// OAuth bearer tokens (AUTH OAUTHBEARER and XOAUTH2), where configured.
    pub oauth: Option<OAuthOffer>,
}

impl Default for SubmissionSettings {
    fn default() -> Self {
        Self {
            tls: ClientTls::StartTls,
            allow_plaintext_auth: false,
            limits: Limits::default(),
            hostname: "mailfront".to_owned(),
            max_message_size: 35 * 1024 * 1024,
            oauth: None,
        }
    }
}

/// The submission pre-AUTH state machine. See the [module documentation](super).
#[derive(Debug)]
pub struct SubmissionFrontEnd {
    settings: SubmissionSettings,
    greeted: bool,
    /// The client, whose bytes are read line by line.
    peer: Peer<FrontEvent, LineReader>,
    state: LineState,
    counters: Counters,
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
    /// A new session; the greeting is the first step.
    pub fn new(settings: SubmissionSettings) -> Self {
        let mut front = Self {
            greeted: false,
            peer: Peer::new(
                LineReader::new(settings.limits.max_line_length),
                settings.tls == ClientTls::Implicit,
            ),
            state: LineState::Commands,
            counters: Counters::new(settings.limits),
            settings,
        };
        let greeting = Reply::new(220, format!("{} ESMTP ready", front.settings.hostname));
        front.reply(greeting);
        front
    }

    fn may_authenticate(&self) -> bool {
        self.peer.is_secure() || self.settings.allow_plaintext_auth
    }

    fn reply(&mut self, reply: Reply) {
        self.peer.send(reply.to_bytes());
    }

    /// Says goodbye in place of whatever was pending (a timeout or shutdown) and closes.
    fn goodbye(&mut self, reply: Reply) {
        self.peer.steps.clear();
        self.close_with(reply);
    }

    fn close_with(&mut self, reply: Reply) {
        self.reply(reply);
        self.peer.finish(FrontEvent::Close);
    }

    fn ehlo_reply(&self, client: &str) -> Reply {
        let settings = &self.settings;
        let mut reply = Reply::ehlo(&settings.hostname, client, settings.max_message_size);
        if settings.tls.offers_starttls(self.peer.is_secure()) {
            reply.lines.push("STARTTLS".to_owned());
        }
        if self.may_authenticate() {
            reply.lines.push(if self.settings.oauth.is_some() {
                "AUTH PLAIN LOGIN OAUTHBEARER XOAUTH2".to_owned()
            } else {
                "AUTH PLAIN LOGIN".to_owned()
            });
        }
        reply
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
            Command::StartTls => match Reply::starttls(self.settings.tls, self.peer.is_secure()) {
                Ok(ready) => {
                    self.reply(ready);
                    self.peer.start_tls();
                }
                Err(refusal) => self.reply(refusal),
            },
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
        let offered = Mechanism::from_name(mechanism)
            .filter(|m| !m.is_token() || self.settings.oauth.is_some());
        let Some(mechanism) = offered else {
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

    fn sasl_step(&mut self, exchange: Exchange, step: sasl::Step) {
        match step {
            sasl::Step::Challenge(challenge) => {
                self.peer.send(format!("334 {challenge}\r\n"));
                self.state = LineState::Sasl(exchange);
            }
            sasl::Step::Done(credentials) => self.authenticate(credentials),
            sasl::Step::Cancelled => self.reply(Reply::new(501, "5.7.0 Authentication aborted")),
            sasl::Step::BadBase64 => self.reply(Reply::new(501, "5.5.2 Invalid base64 data")),
            sasl::Step::Malformed => self.failed(AuthFailure::BadCredentials),
        }
    }

    fn authenticate(&mut self, credentials: Credentials) {
        self.state = LineState::authenticating(&credentials);
        self.peer.steps.event(FrontEvent::Authenticate(credentials));
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
        if !self.counters.failure(failure) {
            self.close_with(Reply::new(421, "4.7.0 Too many authentication failures"));
        }
    }
}

impl Conversation for SubmissionFrontEnd {
    type Event = FrontEvent;

    fn advance(&mut self) -> bool {
        let Some(line) = self.state.next(&mut self.peer.input, &mut self.counters) else {
            return false;
        };
        match line {
            Line::TooLong => self.close_with(Reply::new(500, "5.5.6 Line too long")),
            Line::TooManyCommands => self.close_with(Reply::new(
                421,
                "4.7.0 Too many commands before authentication",
            )),
            Line::Sasl(exchange, step) => self.sasl_step(exchange, step),
            Line::DummyResponse => self.failed(AuthFailure::BadCredentials),
            Line::Command(line) => self.command(&line),
        }
        true
    }

    fn secured(&mut self) {
        // RFC 3207 §4.2: forget everything, the client starts over with EHLO.
        self.greeted = false;
    }

    fn peer(&mut self) -> &mut Peer<FrontEvent, impl Input> {
        &mut self.peer
    }
}

impl FrontEnd for SubmissionFrontEnd {
    fn auth_result(&mut self, result: AuthResult) {
        if self.peer.is_over() {
            return;
        }
        let Some(token) = self.state.answered() else {
            return;
        };
        match result {
            AuthResult::Proxied { .. } => {
                self.reply(Reply::new(235, "2.7.0 Authentication successful"));
                let pending = self.peer.input.take_all();
                self.peer.finish(FrontEvent::Proxy { pending });
            }
            AuthResult::Failed(AuthFailure::BadCredentials) if token => {
                let line = OAuthOffer::refusal_line(self.settings.oauth.as_ref(), "334 ");
                self.peer.send(line);
                self.state = LineState::TokenRefused;
            }
            AuthResult::Failed(failure) => self.failed(failure),
            AuthResult::Referred { .. } => self.failed(AuthFailure::Temporary),
        }
    }

    fn idle_timeout(&mut self) {
        self.goodbye(Reply::new(421, "4.4.2 Timeout, closing connection"));
    }

    fn shutdown(&mut self) {
        self.goodbye(Reply::new(421, "4.3.2 Service shutting down"));
    }
}

#[cfg(test)]
mod tests;
