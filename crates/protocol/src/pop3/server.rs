//! The POP3 front end: greeting to login, sans I/O.

use crate::conversation::{Conversation, Input, Peer};
use crate::front::{Counters, Line, LineState};
use crate::line::LineReader;
use crate::sasl::{self, Exchange, Mechanism};
use crate::{
    AuthFailure, AuthResult, ClientTls, Credentials, FrontEnd, FrontEvent, Limits, OAuthOffer,
};

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
    /// OAuth bearer tokens (AUTH OAUTHBEARER and XOAUTH2), where configured.
    pub oauth: Option<OAuthOffer>,
}

impl Default for Pop3Settings {
    fn default() -> Self {
        Self {
            tls: ClientTls::StartTls,
            allow_plaintext_auth: false,
            limits: Limits::default(),
            greeting: "mailfront ready.".to_owned(),
            oauth: None,
        }
    }
}

/// The POP3 pre-login state machine. See the [module documentation](super).
#[derive(Debug)]
pub struct Pop3FrontEnd {
    settings: Pop3Settings,
    /// The client, whose bytes are read line by line.
    peer: Peer<FrontEvent, LineReader>,
    state: LineState,
    user: Option<String>,
    counters: Counters,
}

impl Pop3FrontEnd {
    /// A new session; the greeting is the first step.
    pub fn new(settings: Pop3Settings) -> Self {
        let mut front = Self {
            peer: Peer::new(
                LineReader::new(settings.limits.max_line_length),
                settings.tls == ClientTls::Implicit,
            ),
            state: LineState::Commands,
            user: None,
            counters: Counters::new(settings.limits),
            settings,
        };
        let greeting = format!("+OK {}\r\n", front.settings.greeting);
        front.peer.send(greeting);
        front
    }

    fn may_authenticate(&self) -> bool {
        self.peer.is_secure() || self.settings.allow_plaintext_auth
    }

    /// Says goodbye in place of whatever was pending (a timeout or shutdown) and closes.
    fn goodbye(&mut self, text: &str) {
        self.peer.steps.clear();
        self.close_with(text);
    }

    fn close_with(&mut self, text: &str) {
        self.peer.send(format!("{text}\r\n"));
        self.peer.finish(FrontEvent::Close);
    }

    fn capabilities(&self) -> String {
        // What the session offers after login too: the backend (Dovecot) implements these.
        let mut caps = String::from(
            "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n",
        );
        if self.may_authenticate() {
            caps.push_str(if self.settings.oauth.is_some() {
                "USER\r\nSASL PLAIN LOGIN OAUTHBEARER XOAUTH2\r\n"
            } else {
                "USER\r\nSASL PLAIN LOGIN\r\n"
            });
        }
        if self.settings.tls.offers_starttls(self.peer.is_secure()) {
            caps.push_str("STLS\r\n");
        }
        caps.push_str(".\r\n");
        caps
    }

    fn command(&mut self, line: &[u8]) {
        let mut parts = line.splitn(2, |&b| b == b' ');
        let verb = parts.next().unwrap_or_default().to_ascii_uppercase();
        let argument = parts.next().unwrap_or_default();
        match verb.as_slice() {
            b"CAPA" => {
                let caps = self.capabilities();
                self.peer.send(caps);
            }
            b"QUIT" => self.close_with("+OK Logging out."),
            b"NOOP" => self.peer.send("-ERR Not logged in.\r\n"),
            b"STLS" => {
                if self.peer.is_secure() {
                    self.peer.send("-ERR TLS is already active.\r\n");
                } else if self.settings.tls != ClientTls::StartTls {
                    self.peer
                        .send("-ERR STLS is not available on this port.\r\n");
                } else {
                    self.peer.send("+OK Begin TLS negotiation now.\r\n");
                    // Pipelined clear-text bytes never count after the handshake.
                    self.peer.start_tls();
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
                        self.peer.send("+OK\r\n");
                    }
                    _ => self.peer.send("-ERR Invalid user name.\r\n"),
                }
            }
            b"PASS" => {
                if !self.may_authenticate() {
                    self.privacy_required();
                    return;
                }
                let Some(user) = self.user.take() else {
                    self.peer.send("-ERR No user name given (USER first).\r\n");
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
            b"APOP" => self.peer.send("-ERR APOP is not supported.\r\n"),
            b"STAT" | b"LIST" | b"RETR" | b"DELE" | b"RSET" | b"TOP" | b"UIDL" | b"LAST" => {
                self.peer.send("-ERR Not logged in.\r\n");
            }
            _ => self.peer.send("-ERR Unknown command.\r\n"),
        }
    }

    fn privacy_required(&mut self) {
        self.failed_reply(
            "-ERR [AUTH] Plaintext authentication disallowed on non-secure connections.",
        );
    }

    fn failed_reply(&mut self, text: &str) {
        self.peer.send(format!("{text}\r\n"));
    }

    fn auth(&mut self, argument: &[u8]) {
        if argument.is_empty() {
            // RFC 5034 §4: AUTH without arguments lists the mechanisms.
            self.peer.send(if self.settings.oauth.is_some() {
                "+OK\r\nPLAIN\r\nLOGIN\r\nOAUTHBEARER\r\nXOAUTH2\r\n.\r\n"
            } else {
                "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n"
            });
            return;
        }
        if !self.may_authenticate() {
            self.privacy_required();
            return;
        }
        let mut parts = argument.splitn(2, |&b| b == b' ');
        let offered = Mechanism::from_name(parts.next().unwrap_or_default())
            .filter(|m| !m.is_token() || self.settings.oauth.is_some());
        let Some(mechanism) = offered else {
            self.peer
                .send("-ERR Unsupported authentication mechanism.\r\n");
            return;
        };
        let initial = match parts.next() {
            None => None,
            Some(text) => match sasl::decode_base64(text) {
                Ok(bytes) => Some(bytes),
                Err(_) => {
                    self.peer
                        .send("-ERR Invalid base64 data in initial response.\r\n");
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
                self.peer.send(format!("+ {challenge}\r\n"));
                self.state = LineState::Sasl(exchange);
            }
            sasl::Step::Done(credentials) => self.authenticate(credentials),
            sasl::Step::Cancelled => self.peer.send("-ERR Authentication cancelled.\r\n"),
            sasl::Step::BadBase64 => self.peer.send("-ERR Invalid base64 data.\r\n"),
            sasl::Step::Malformed => self.failed(AuthFailure::BadCredentials),
        }
    }

    fn authenticate(&mut self, credentials: Credentials) {
        self.state = LineState::authenticating(&credentials);
        self.peer.steps.event(FrontEvent::Authenticate(credentials));
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
        if !self.counters.failure(failure) {
            self.close_with("-ERR Too many authentication failures.");
        }
    }
}

impl Conversation for Pop3FrontEnd {
    type Event = FrontEvent;

    fn advance(&mut self) -> bool {
        let Some(line) = self.state.next(&mut self.peer.input, &mut self.counters) else {
            return false;
        };
        match line {
            Line::TooLong => self.close_with("-ERR Line too long."),
            Line::TooManyCommands => {
                self.close_with("-ERR Too many commands before authentication.")
            }
            Line::Sasl(exchange, step) => self.sasl_step(exchange, step),
            Line::DummyResponse => self.failed(AuthFailure::BadCredentials),
            Line::Command(line) => self.command(&line),
        }
        true
    }

    fn secured(&mut self) {
        self.user = None;
    }

    fn peer(&mut self) -> &mut Peer<FrontEvent, impl Input> {
        &mut self.peer
    }
}

impl FrontEnd for Pop3FrontEnd {
    fn auth_result(&mut self, result: AuthResult) {
        if self.peer.is_over() {
            return;
        }
        let Some(token) = self.state.answered() else {
            return;
        };
        match result {
            AuthResult::Proxied { .. } => {
                self.peer.send("+OK Logged in.\r\n");
                let pending = self.peer.input.take_all();
                self.peer.finish(FrontEvent::Proxy { pending });
            }
            AuthResult::Failed(AuthFailure::BadCredentials) if token => {
                let line = OAuthOffer::refusal_line(self.settings.oauth.as_ref(), "+ ");
                self.peer.send(line);
                self.state = LineState::TokenRefused;
            }
            AuthResult::Failed(failure) => self.failed(failure),
            AuthResult::Referred { .. } => self.failed(AuthFailure::Temporary),
        }
    }

    fn login_timeout(&mut self) {
        self.goodbye("-ERR Login took too long.");
    }

    fn idle_timeout(&mut self) {
        self.goodbye("-ERR Disconnected for inactivity.");
    }

    fn shutdown(&mut self) {
        self.goodbye("-ERR [SYS/TEMP] Server shutting down.");
    }
}

#[cfg(test)]
mod tests;
