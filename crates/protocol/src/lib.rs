//! Sans-I/O front ends and backend-login clients for mailfront's line protocols.
//!
//! In the flow of a session (DESIGN.md) this crate is the *protocol front end*: it speaks the
//! client's protocol until the client has authenticated, and then the *backend login*: it logs
//! in to the chosen mailbox server on the user's behalf. Neither touches a socket. Every machine
//! here is a [`Machine`]: bytes go in through [`Machine::feed`], and the machine answers with
//! [`Step`]s (send, read, start TLS, or an event in its own vocabulary: [`FrontEvent`] for the
//! client side, [`LoginEvent`] for the backend side) that one generic driver carries out — the
//! same driver for every protocol (house rule 1).
//!
//! A front end never decides who the user is or where they go: it hands [`Credentials`] to the
//! driver in [`FrontEvent::Authenticate`] and is told the outcome with [`FrontEnd::auth_result`],
//! which it turns into the protocol's own reply. That is the one place per protocol where
//! outcomes become reply text.

pub mod bearer;
mod capabilities;
mod conversation;
mod front;
pub mod imap;
pub mod line;
pub mod machine;
pub mod pop3;
pub mod probe;
mod quoted;
pub mod sasl;
pub mod sip;
pub mod smtp;
#[cfg(test)]
mod testing;

use std::net::SocketAddr;

use mailfront_model::{SaslMechanism, Secret};

pub use machine::{Machine, Step, Steps};

/// How a listener offers TLS to clients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientTls {
    /// No TLS at all (only sensible on trusted networks or behind a TLS-terminating balancer).
    None,
    /// Plain connection that can be upgraded with the protocol's STARTTLS command.
    #[default]
    StartTls,
    /// TLS from the first byte (IMAPS, POP3S, submissions).
    Implicit,
}

impl ClientTls {
    /// Whether STARTTLS is on offer on a connection that is (`secure`) or is not encrypted yet.
    pub(crate) fn offers_starttls(self, secure: bool) -> bool {
        self == ClientTls::StartTls && !secure
    }
}

/// Bounds on what a client may send before it has authenticated (house rule 3: each has a
/// default, a configuration key and a test).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest command line, in bytes (`limits.max_line_length`). The default, 64 KiB (Dovecot's
    /// `imap_max_line_length`), admits every command a conforming client may send before login:
    /// an RFC 2971 `ID` of 30 fields with 1024-octet values is about 32 KiB on one line, and
    /// twice that with every character of its quoted strings escaped.
    pub max_line_length: usize,
    /// Largest literal or SASL response, in bytes (`limits.max_literal_size`).
    pub max_literal_size: u32,
    /// Commands accepted before authentication succeeds (`limits.max_commands_before_auth`).
    pub max_commands_before_auth: u32,
    /// Failed authentications before the connection is closed (`limits.max_auth_failures`).
    pub max_auth_failures: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line_length: 64 * 1024,
            max_literal_size: 16 * 1024,
            max_commands_before_auth: 50,
            max_auth_failures: 3,
        }
    }
}

/// Credentials a client presented.
#[derive(Debug)]
pub struct Credentials {
    /// The name the client logged in with (address or alias), as typed.
    pub authcid: String,
    /// The SASL authorization identity, if the client asked to act as someone.
    pub authzid: Option<String>,
    /// The password.
    pub password: Secret<Vec<u8>>,
    /// How the credentials arrived, for the log (`LOGIN`, `PLAIN`, …).
    pub mechanism: &'static str,
}

/// What a front end offers of OAuth, where `[oauth]` is configured: the bearer-token mechanisms,
/// and on a refused token the error challenge that tells the client where to get a new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthOffer {
    /// The provider's discovery document (`openid-configuration` in the challenge).
    pub configuration: String,
    /// The scope this protocol requires, if any (`scope` in the challenge).
    pub scope: Option<String>,
}

impl OAuthOffer {
    /// The continuation that answers a refused token (RFC 7628 §3.2.2: why, and where to get a
    /// token), `prefix` being the protocol's (`+ `, `334 `); the command fails after the client's
    /// dummy response. Empty challenge without an offer (no token can have been taken then).
    pub fn refusal_line(offer: Option<&OAuthOffer>, prefix: &str) -> String {
        let challenge = offer.map(OAuthOffer::challenge).unwrap_or_default();
        format!("{prefix}{challenge}\r\n")
    }

    /// The error challenge for a refused token, base64-encoded for the wire (RFC 7628 §3.2.2).
    pub fn challenge(&self) -> String {
        sasl::encode_base64(
            bearer::error_challenge(
                "invalid_token",
                self.scope.as_deref(),
                Some(&self.configuration),
            )
            .as_bytes(),
        )
    }
}

impl Credentials {
    /// Whether `password` is an OAuth access token (OAUTHBEARER, XOAUTH2) and `authcid` only
    /// the name the client claims (possibly empty): the token decides who it is.
    pub fn is_token(&self) -> bool {
        crate::sasl::Mechanism::from_name(self.mechanism.as_bytes()).is_some_and(|m| m.is_token())
    }
}

/// Why authentication or the login behind it did not succeed, as far as the client needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// Unknown user or wrong password (one case on purpose: replies must not tell them apart).
    BadCredentials,
    /// The credentials are right but the requested authorization identity is someone else.
    AuthzidRefused,
    /// The credentials are right but the user may not use this protocol.
    ProtocolDisabled,
    /// Directory, location store or backend unavailable: the client should retry later.
    Temporary,
}

/// The outcome of a [`FrontEvent::Authenticate`], reported back to the front end.
#[derive(Debug)]
pub enum AuthResult {
    /// The backend session is logged in and ready to relay.
    Proxied {
        /// The capabilities the backend announced after login, when the protocol has them
        /// (IMAP), to pass on to the client in the login reply.
        capabilities: Option<String>,
    },
    /// Refused.
    Failed(AuthFailure),
    /// The user's mailbox is served elsewhere and the client should log in there: an IMAP
    /// login referral (RFC 2221) to `url`. Front ends without referrals treat it as a temporary
    /// failure.
    Referred {
        /// Where (`imap://user;AUTH=*@host/`).
        url: String,
    },
}

/// What a front end reports to its driver through [`Step::Event`].
#[derive(Debug)]
pub enum FrontEvent {
    /// Check these credentials, find the user's server and log in there; then call
    /// [`FrontEnd::auth_result`].
    Authenticate(Credentials),
    /// Authentication is complete and its reply sent: relay bytes from now on. `pending` holds
    /// what the client sent after its login command; it goes to the backend first.
    Proxy {
        /// Client bytes received after the login command.
        pending: Vec<u8>,
    },
    /// Close the connection (everything queued has been sent).
    Close,
}

/// A client-side protocol machine, from the greeting until the session is proxied or closed.
pub trait FrontEnd: Machine<Event = FrontEvent> {
    /// The outcome of the last [`FrontEvent::Authenticate`].
    fn auth_result(&mut self, result: AuthResult);
    /// The client was silent for too long; the machine says goodbye and asks to close.
    fn idle_timeout(&mut self);
    /// The client has not logged in within the time allowed for it (however busy it was);
    /// the machine says goodbye and asks to close. By default, as for silence.
    fn login_timeout(&mut self) {
        self.idle_timeout();
    }
    /// The node is shutting down; the machine says goodbye and asks to close.
    fn shutdown(&mut self);
}

/// Who the client is, to pass on to a backend that trusts us (IMAP `ID`, SMTP `XCLIENT`), so its
/// logs and its own limits see the real client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's address.
    pub client: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    /// mailfront's session id.
    pub session_id: String,
}

/// How to log in to the backend on the user's behalf.
#[derive(Debug)]
pub enum BackendAuth {
    /// As the user, with a master user's password.
    Master {
        /// The user to log in as (the principal's address).
        user: String,
        /// The master user's name.
        master: String,
        /// The master user's password.
        password: Secret<String>,
        /// The separator for `LOGIN "user<sep>master"`.
        separator: String,
        /// The mechanism.
        mechanism: SaslMechanism,
    },
    /// As the user, with the user's own password.
    PassThrough {
        /// The user to log in as (the principal's address).
        user: String,
        /// The user's password, as the client gave it.
        password: Secret<Vec<u8>>,
        /// The mechanism.
        mechanism: SaslMechanism,
    },
}

impl BackendAuth {
    /// The user the backend session will belong to.
    pub fn user(&self) -> &str {
        match self {
            BackendAuth::Master { user, .. } | BackendAuth::PassThrough { user, .. } => user,
        }
    }

    /// The mechanism to log in with.
    pub(crate) fn mechanism(&self) -> SaslMechanism {
        match self {
            BackendAuth::Master { mechanism, .. } | BackendAuth::PassThrough { mechanism, .. } => {
                *mechanism
            }
        }
    }

    /// The base64 SASL PLAIN response (RFC 4616) of this login: the master user as
    /// authentication identity acting as the user, or the user's own credentials.
    pub(crate) fn plain_response(&self) -> Secret<String> {
        match self {
            BackendAuth::Master {
                user,
                master,
                password,
                ..
            } => sasl::encode_plain(user, master, password.expose().as_bytes()),
            BackendAuth::PassThrough { user, password, .. } => {
                sasl::encode_plain("", user, password.expose())
            }
        }
    }
}

/// Why a backend login failed. Every case is a temporary failure for the client: the user's
/// credentials were already accepted, so the fault is on our side of the front door.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackendFailure {
    /// The backend refused the login (for example a wrong master password); its text is kept for
    /// the log only.
    #[error("backend refused the login: {0}")]
    Refused(String),
    /// The backend said something that does not fit the protocol at this point.
    #[error("unexpected backend response: {0}")]
    Protocol(String),
    /// The backend does not offer what the configuration requires (e.g. STARTTLS).
    #[error("backend lacks a required capability: {0}")]
    Unsupported(&'static str),
    /// The backend closed the connection during login.
    #[error("backend closed the connection during login")]
    Closed,
    /// A user name that cannot be sent safely in this protocol.
    #[error("user name cannot be sent to the backend safely")]
    UnsafeName,
}

/// What a backend-login machine reports to its driver through [`Step::Event`]. Either is final.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginEvent {
    /// Logged in. `leftover` holds backend bytes received after the login reply, to pass to the
    /// client after the front end's own reply.
    Ready {
        /// Post-login capabilities (IMAP), if the backend sent them.
        capabilities: Option<String>,
        /// Backend bytes received after the login reply.
        leftover: Vec<u8>,
    },
    /// The login failed.
    Failed(BackendFailure),
}

/// A backend-side protocol machine that logs in on the user's behalf.
pub trait BackendLogin: Machine<Event = LoginEvent> {
    /// The backend closed the connection.
    fn eof(&mut self);
}
