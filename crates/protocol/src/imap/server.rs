//! The IMAP front end: greeting to login, sans I/O.

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::auth::AuthMechanism;
use imap_codec::imap_types::command::CommandBody;
use mailfront_model::Secret;

use super::framing::{Frame, FrameError, FrameLimits, Framer};
use crate::conversation::{Conversation, Input, Peer};
use crate::front::Counters;
use crate::sasl::{self, Exchange, Mechanism};
use crate::{
    AuthFailure, AuthResult, ClientTls, Credentials, FrontEnd, FrontEvent, Limits, OAuthOffer,
};

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
    /// OAuth bearer tokens (AUTHENTICATE OAUTHBEARER and XOAUTH2), where configured.
    pub oauth: Option<OAuthOffer>,
}

impl Default for ImapSettings {
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

#[derive(Debug)]
enum State {
    /// Reading commands.
    Commands,
    /// An AUTHENTICATE exchange is waiting for the client's next response line.
    Sasl { tag: String, exchange: Exchange },
    /// Waiting for the driver's [`AuthResult`] for this command tag; `token` when the
    /// credentials were an OAuth token (a refusal then goes through the error challenge).
    Authenticating { tag: String, token: bool },
    /// A token was refused: the error challenge was sent, and the client's dummy response is
    /// awaited before the command fails (RFC 7628 §3.2.3).
    TokenRefused { tag: String },
}

/// The IMAP pre-login state machine. See the [module documentation](super).
#[derive(Debug)]
pub struct ImapFrontEnd {
    settings: ImapSettings,
    /// The client, whose bytes are framed into IMAP messages.
    peer: Peer<FrontEvent, Framer>,
    state: State,
    counters: Counters,
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
    /// A new session on a freshly accepted connection; the greeting is the first step.
    pub fn new(settings: ImapSettings) -> Self {
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
            peer: Peer::new(Framer::new(limits), settings.tls == ClientTls::Implicit),
            counters: Counters::new(settings.limits),
            settings,
            state: State::Commands,
        };
        let greeting = format!(
            "* OK [CAPABILITY {}] {}\r\n",
            front.capabilities(),
            front.settings.greeting
        );
        front.peer.send(greeting);
        front
    }

    fn may_authenticate(&self) -> bool {
        self.peer.is_secure() || self.settings.allow_plaintext_auth
    }

    /// The pre-login capabilities: only what this machine implements.
    fn capabilities(&self) -> String {
        let mut caps = String::from("IMAP4rev1 SASL-IR LITERAL+ ID LOGIN-REFERRALS");
        if self.settings.tls.offers_starttls(self.peer.is_secure()) {
            caps.push_str(" STARTTLS");
        }
        if self.may_authenticate() {
            caps.push_str(" AUTH=PLAIN AUTH=LOGIN");
            if self.settings.oauth.is_some() {
                caps.push_str(" AUTH=OAUTHBEARER AUTH=XOAUTH2");
            }
        } else {
            caps.push_str(" LOGINDISABLED");
        }
        caps
    }

    fn reply(&mut self, tag: &str, text: &str) {
        self.peer.send(format!("{tag} {text}\r\n"));
    }

    /// Says goodbye in place of whatever was pending (a timeout or shutdown) and closes.
    fn goodbye(&mut self, text: &str) {
        self.peer.steps.clear();
        self.bye(text);
    }

    fn bye(&mut self, text: &str) {
        self.peer.send(format!("* BYE {text}\r\n"));
        self.peer.finish(FrontEvent::Close);
    }

    fn process_frame(&mut self) -> bool {
        match self.peer.input.next_frame() {
            Ok(None) => false,
            Ok(Some(Frame::Literal(literal))) => {
                if self.peer.input.literal_fits(literal) {
                    // Cannot fail: the literal fits.
                    let _ = self.peer.input.accept_literal();
                    if literal.sync {
                        self.peer.send("+ OK\r\n");
                    }
                } else if literal.sync {
                    // The client waits for our go-ahead, so refusing keeps the stream in step.
                    let message = self.peer.input.reject_literal();
                    let tag = tag_of(&message).unwrap_or_else(|| "*".to_owned());
                    self.count_command();
                    if !self.peer.is_over() {
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
                if !self.peer.is_over() {
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
        if !self.counters.command() {
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
                self.peer.send(format!("* CAPABILITY {caps}\r\n"));
                self.reply(&tag, "OK Capability completed.");
            }
            CommandBody::Noop => self.reply(&tag, "OK NOOP completed."),
            CommandBody::Logout => {
                self.peer.send("* BYE Logging out.\r\n");
                self.reply(&tag, "OK Logout completed.");
                self.peer.finish(FrontEvent::Close);
            }
            CommandBody::Id { .. } => {
                // We do not tell an unauthenticated client what software or version we run.
                self.peer.send("* ID (\"name\" \"mailfront\")\r\n");
                self.reply(&tag, "OK ID completed.");
            }
            CommandBody::StartTLS => {
                if self.peer.is_secure() {
                    self.reply(&tag, "BAD TLS is already active.");
                } else if self.settings.tls != ClientTls::StartTls {
                    self.reply(&tag, "BAD STARTTLS is not available on this port.");
                } else {
                    self.reply(&tag, "OK Begin TLS negotiation now.");
                    // Anything pipelined after STARTTLS was sent in clear text and must never
                    // be processed as if it came over TLS (CVE-2011-0411).
                    self.peer.start_tls();
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
                let oauth = self.settings.oauth.is_some();
                let mechanism = match mechanism {
                    AuthMechanism::Plain => Mechanism::Plain,
                    AuthMechanism::Login => Mechanism::Login,
                    AuthMechanism::OAuthBearer if oauth => Mechanism::OAuthBearer,
                    AuthMechanism::XOAuth2 if oauth => Mechanism::XOAuth2,
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
        let line = match self.peer.input.next_raw_line() {
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

    /// The client's answer to a token's error challenge: whatever it is, the command fails.
    fn process_dummy_response(&mut self) -> bool {
        match self.peer.input.next_raw_line() {
            Ok(None) => false,
            Ok(Some(_)) => {
                if let State::TokenRefused { tag } =
                    std::mem::replace(&mut self.state, State::Commands)
                {
                    self.failed(&tag, AuthFailure::BadCredentials);
                }
                true
            }
            Err(_) => {
                self.bye("Line too long.");
                true
            }
        }
    }

    fn sasl_step(&mut self, tag: String, exchange: Exchange, step: sasl::Step) {
        match step {
            sasl::Step::Challenge(challenge) => {
                self.peer.send(format!("+ {challenge}\r\n"));
                self.state = State::Sasl { tag, exchange };
            }
            sasl::Step::Done(credentials) => {
                let token = credentials.is_token();
                self.peer.steps.event(FrontEvent::Authenticate(credentials));
                self.state = State::Authenticating { tag, token };
            }
            sasl::Step::Cancelled => self.reply(&tag, "BAD Authentication aborted by client."),
            sasl::Step::BadBase64 => {
                self.reply(&tag, "BAD Invalid base64 data in continued response.")
            }
            sasl::Step::Malformed => self.failed(&tag, AuthFailure::BadCredentials),
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
        self.peer.steps.event(FrontEvent::Authenticate(Credentials {
            authcid,
            authzid,
            password,
            mechanism,
        }));
        self.state = State::Authenticating { tag, token: false };
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
        if !self.counters.failure(failure) {
            self.bye("Too many authentication failures.");
        }
    }
}

impl Conversation for ImapFrontEnd {
    type Event = FrontEvent;

    fn advance(&mut self) -> bool {
        match self.state {
            State::Commands => self.process_frame(),
            State::Sasl { .. } => self.process_sasl_line(),
            State::TokenRefused { .. } => self.process_dummy_response(),
            State::Authenticating { .. } => false,
        }
    }

    fn peer(&mut self) -> &mut Peer<FrontEvent, impl Input> {
        &mut self.peer
    }
}

impl FrontEnd for ImapFrontEnd {
    fn auth_result(&mut self, result: AuthResult) {
        if self.peer.is_over() {
            return;
        }
        let State::Authenticating { tag, token } =
            std::mem::replace(&mut self.state, State::Commands)
        else {
            return;
        };
        match result {
            AuthResult::Proxied { capabilities } => {
                match capabilities {
                    Some(caps) => self.reply(&tag, &format!("OK [CAPABILITY {caps}] Logged in")),
                    None => self.reply(&tag, "OK Logged in"),
                }
                let pending = self.peer.input.take_unframed();
                self.peer.finish(FrontEvent::Proxy { pending });
            }
            AuthResult::Failed(AuthFailure::BadCredentials) if token => {
                let line = OAuthOffer::refusal_line(self.settings.oauth.as_ref(), "+ ");
                self.peer.send(line);
                self.state = State::TokenRefused { tag };
            }
            AuthResult::Failed(failure) => self.failed(&tag, failure),
            // Not a failure: the client is told where to log in instead (RFC 2221).
            AuthResult::Referred { url } => self.reply(
                &tag,
                &format!("NO [REFERRAL {url}] Your mailbox is served at another site."),
            ),
        }
    }

    fn login_timeout(&mut self) {
        self.goodbye("Login took too long.");
    }

    fn idle_timeout(&mut self) {
        self.goodbye("Disconnected for inactivity.");
    }

    fn shutdown(&mut self) {
        self.goodbye("Server shutting down.");
    }
}

#[cfg(test)]
mod tests;
