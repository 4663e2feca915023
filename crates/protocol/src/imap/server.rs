//! The IMAP front end: greeting to login, sans I/O.

use std::collections::VecDeque;

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::auth::AuthMechanism;
use imap_codec::imap_types::command::CommandBody;
use mailfront_model::Secret;

use super::framing::{Frame, FrameError, FrameLimits, Framer};
use crate::sasl::{self, Exchange, Mechanism, Step};
use crate::{Action, AuthFailure, AuthResult, ClientTls, Credentials, FrontEnd, Limits};

/// How an IMAP listener behaves before login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImapSettings {
    /// TLS on this listener.
    pub tls: ClientTls,
    /// Accept LOGIN and AUTHENTICATE on a connection without TLS (off by default: passwords
    /// would cross the network in clear text).
    pub allow_plaintext_auth: bool,
    /// Bounds on pre-login input.
    pub limits: Limits,
    /// Text of the greeting line.
    pub greeting: String,
}

impl Default for ImapSettings {
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
    /// Reading commands.
    Commands,
    /// An AUTHENTICATE exchange is waiting for the client's next response line.
    Sasl { tag: String, exchange: Exchange },
    /// Waiting for the driver's [`AuthResult`] for this command tag.
    Authenticating { tag: String },
    /// Waiting for the TLS handshake.
    StartingTls,
    /// Proxying or closed: nothing more for this machine to do.
    Done,
}

/// The IMAP pre-login state machine. See the [module documentation](super).
#[derive(Debug)]
pub struct ImapFrontEnd {
    settings: ImapSettings,
    tls_active: bool,
    framer: Framer,
    actions: VecDeque<Action>,
    state: State,
    commands: u32,
    failures: u32,
}

/// A tag as it appears before the first space, if it is a valid IMAP tag (RFC 3501 `tag`), so
/// that a BAD reply can name the command even when the rest does not parse.
fn tag_of(message: &[u8]) -> Option<String> {
    let end = message
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
        .unwrap_or(message.len());
    let tag = message.get(..end)?;
    let valid = !tag.is_empty()
        && tag.iter().all(|&b| {
            b.is_ascii_graphic()
                && !matches!(
                    b,
                    b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']' | b'+'
                )
        });
    valid.then(|| String::from_utf8_lossy(tag).into_owned())
}

impl ImapFrontEnd {
    /// A new session on a freshly accepted connection; the greeting is the first action.
    pub fn new(settings: ImapSettings) -> Self {
        let tls_active = settings.tls == ClientTls::Implicit;
        let limits = FrameLimits {
            max_line: settings.limits.max_line_length,
            max_literal: settings.limits.max_literal_size,
            max_message: settings
                .limits
                .max_line_length
                .saturating_add(settings.limits.max_literal_size as usize)
                .saturating_mul(2),
        };
        let mut front = Self {
            settings,
            tls_active,
            framer: Framer::new(limits),
            actions: VecDeque::new(),
            state: State::Commands,
            commands: 0,
            failures: 0,
        };
        let greeting = format!(
            "* OK [CAPABILITY {}] {}\r\n",
            front.capabilities(),
            front.settings.greeting
        );
        front.send(greeting);
        front
    }

    fn may_authenticate(&self) -> bool {
        self.tls_active || self.settings.allow_plaintext_auth
    }

    /// The pre-login capabilities: only what this machine implements.
    fn capabilities(&self) -> String {
        let mut caps = String::from("IMAP4rev1 SASL-IR LITERAL+ ID");
        if self.settings.tls == ClientTls::StartTls && !self.tls_active {
            caps.push_str(" STARTTLS");
        }
        if self.may_authenticate() {
            caps.push_str(" AUTH=PLAIN AUTH=LOGIN");
        } else {
            caps.push_str(" LOGINDISABLED");
        }
        caps
    }

    fn send(&mut self, text: impl Into<Vec<u8>>) {
        self.actions.push_back(Action::Send(text.into()));
    }

    fn reply(&mut self, tag: &str, text: &str) {
        self.send(format!("{tag} {text}\r\n"));
    }

    fn bye(&mut self, text: &str) {
        self.send(format!("* BYE {text}\r\n"));
        self.actions.push_back(Action::Close);
        self.state = State::Done;
        self.framer.clear();
    }

    /// Processes buffered input until an action is queued or more input is needed.
    fn process(&mut self) {
        while self.actions.is_empty() {
            let progressed = match self.state {
                State::Commands => self.process_frame(),
                State::Sasl { .. } => self.process_sasl_line(),
                State::Authenticating { .. } | State::StartingTls | State::Done => false,
            };
            if !progressed {
                break;
            }
        }
    }

    fn process_frame(&mut self) -> bool {
        match self.framer.next_frame() {
            Ok(None) => false,
            Ok(Some(Frame::Literal(literal))) => {
                if self.framer.literal_fits(literal) {
                    // Cannot fail: the literal fits.
                    let _ = self.framer.accept_literal();
                    if literal.sync {
                        self.send("+ OK\r\n");
                    }
                } else if literal.sync {
                    // The client waits for our go-ahead, so refusing keeps the stream in step.
                    let message = self.framer.reject_literal();
                    let tag = tag_of(&message).unwrap_or_else(|| "*".to_owned());
                    self.count_command();
                    if matches!(self.state, State::Commands) {
                        self.reply(&tag, "BAD Literal too large.");
                    }
                } else {
                    // The literal's bytes are already on their way; we cannot skip them safely.
                    self.bye("Literal too large.");
                }
                true
            }
            Ok(Some(Frame::Message(message))) => {
                self.count_command();
                if matches!(self.state, State::Commands) {
                    self.command(&message);
                }
                true
            }
            Err(FrameError::LineTooLong) => {
                self.bye("Line too long.");
                true
            }
            Err(FrameError::MessageTooLarge) => {
                self.bye("Command too large.");
                true
            }
        }
    }

    fn count_command(&mut self) {
        self.commands = self.commands.saturating_add(1);
        if self.commands > self.settings.limits.max_commands_before_auth {
            self.bye("Too many commands before authentication.");
        }
    }

    fn command(&mut self, message: &[u8]) {
        let decoded = CommandCodec::default().decode(message);
        let command = match decoded {
            Ok((b"", command)) => command,
            _ => {
                let tag = tag_of(message).unwrap_or_else(|| "*".to_owned());
                self.reply(&tag, "BAD Error in IMAP command.");
                return;
            }
        };
        let tag = command.tag.inner().to_owned();
        match command.body {
            CommandBody::Capability => {
                let caps = self.capabilities();
                self.send(format!("* CAPABILITY {caps}\r\n"));
                self.reply(&tag, "OK Capability completed.");
            }
            CommandBody::Noop => self.reply(&tag, "OK NOOP completed."),
            CommandBody::Logout => {
                self.send("* BYE Logging out.\r\n");
                self.reply(&tag, "OK Logout completed.");
                self.actions.push_back(Action::Close);
                self.state = State::Done;
            }
            CommandBody::Id { .. } => {
                // We do not tell an unauthenticated client what software or version we run.
                self.send("* ID (\"name\" \"mailfront\")\r\n");
                self.reply(&tag, "OK ID completed.");
            }
            CommandBody::StartTLS => {
                if self.tls_active {
                    self.reply(&tag, "BAD TLS is already active.");
                } else if self.settings.tls != ClientTls::StartTls {
                    self.reply(&tag, "BAD STARTTLS is not available on this port.");
                } else {
                    self.reply(&tag, "OK Begin TLS negotiation now.");
                    // Anything pipelined after STARTTLS was sent in clear text and must never
                    // be processed as if it came over TLS (CVE-2011-0411).
                    self.framer.clear();
                    self.actions.push_back(Action::StartTls);
                    self.state = State::StartingTls;
                }
            }
            CommandBody::Login { username, password } => {
                if !self.may_authenticate() {
                    self.privacy_required(&tag);
                    return;
                }
                let Ok(user) = sasl::user_name(username.as_ref()) else {
                    self.failed(&tag, AuthFailure::BadCredentials);
                    return;
                };
                let password = Secret::new(password.declassify().as_ref().to_vec());
                self.authenticate(tag, user, None, password, "LOGIN");
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } => {
                if !self.may_authenticate() {
                    self.privacy_required(&tag);
                    return;
                }
                let mechanism = match mechanism {
                    AuthMechanism::Plain => Mechanism::Plain,
                    AuthMechanism::Login => Mechanism::Login,
                    _ => {
                        self.reply(&tag, "NO Unsupported authentication mechanism.");
                        return;
                    }
                };
                let initial = initial_response.map(|ir| ir.declassify().to_vec());
                let (exchange, step) = Exchange::start(mechanism, initial);
                self.sasl_step(tag, exchange, step);
            }
            _ => self.reply(&tag, "BAD Command not permitted before authentication."),
        }
    }

    fn privacy_required(&mut self, tag: &str) {
        self.reply(
            tag,
            "NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections.",
        );
    }

    fn process_sasl_line(&mut self) -> bool {
        let line = match self.framer.next_raw_line() {
            Ok(None) => return false,
            Ok(Some(line)) => line,
            Err(_) => {
                self.bye("Line too long.");
                return true;
            }
        };
        let State::Sasl { tag, mut exchange } = std::mem::replace(&mut self.state, State::Commands)
        else {
            return true;
        };
        let step = exchange.respond(&line);
        self.sasl_step(tag, exchange, step);
        true
    }

    fn sasl_step(&mut self, tag: String, exchange: Exchange, step: Step) {
        match step {
            Step::Challenge(challenge) => {
                self.send(format!("+ {challenge}\r\n"));
                self.state = State::Sasl { tag, exchange };
            }
            Step::Done(credentials) => {
                self.actions.push_back(Action::Authenticate(credentials));
                self.state = State::Authenticating { tag };
            }
            Step::Cancelled => self.reply(&tag, "BAD Authentication aborted by client."),
            Step::BadBase64 => self.reply(&tag, "BAD Invalid base64 data in continued response."),
            Step::Malformed => self.failed(&tag, AuthFailure::BadCredentials),
        }
    }

    fn authenticate(
        &mut self,
        tag: String,
        authcid: String,
        authzid: Option<String>,
        password: Secret<Vec<u8>>,
        mechanism: &'static str,
    ) {
        self.actions.push_back(Action::Authenticate(Credentials {
            authcid,
            authzid,
            password,
            mechanism,
        }));
        self.state = State::Authenticating { tag };
    }

    fn failed(&mut self, tag: &str, failure: AuthFailure) {
        let text = match failure {
            AuthFailure::BadCredentials => "NO [AUTHENTICATIONFAILED] Authentication failed.",
            AuthFailure::AuthzidRefused => {
                "NO [AUTHORIZATIONFAILED] Not authorized to act as that user."
            }
            AuthFailure::ProtocolDisabled => {
                "NO [CONTACTADMIN] IMAP access is not enabled for this account."
            }
            AuthFailure::Temporary => {
                "NO [UNAVAILABLE] Service temporarily unavailable, try again later."
            }
        };
        self.reply(tag, text);
        if failure != AuthFailure::Temporary {
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.settings.limits.max_auth_failures {
                self.bye("Too many authentication failures.");
            }
        }
    }
}

impl FrontEnd for ImapFrontEnd {
    fn feed(&mut self, bytes: &[u8]) {
        if !matches!(self.state, State::Done | State::StartingTls) {
            self.framer.push(bytes);
        }
    }

    fn tls_established(&mut self) {
        if matches!(self.state, State::StartingTls) {
            self.tls_active = true;
            self.framer.clear();
            self.state = State::Commands;
        }
    }

    fn auth_result(&mut self, result: AuthResult) {
        let State::Authenticating { tag } = std::mem::replace(&mut self.state, State::Commands)
        else {
            return;
        };
        match result {
            AuthResult::Proxied { capabilities } => {
                match capabilities {
                    Some(caps) => self.reply(&tag, &format!("OK [CAPABILITY {caps}] Logged in")),
                    None => self.reply(&tag, "OK Logged in"),
                }
                let pending = self.framer.take_unframed();
                self.actions.push_back(Action::Proxy { pending });
                self.state = State::Done;
            }
            AuthResult::Failed(failure) => self.failed(&tag, failure),
        }
    }

    fn login_timeout(&mut self) {
        self.actions.clear();
        self.bye("Login took too long.");
    }

    fn idle_timeout(&mut self) {
        self.actions.clear();
        self.bye("Disconnected for inactivity.");
    }

    fn shutdown(&mut self) {
        self.actions.clear();
        self.bye("Server shutting down.");
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
