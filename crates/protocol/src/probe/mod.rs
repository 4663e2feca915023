//! Health probes of the mailbox servers, sans I/O: one short conversation per probe that ends in
//! [`ProbeEvent::Healthy`] or [`ProbeEvent::Unhealthy`].
//!
//! In the flow of a session (docs/architecture.md) these sit beside the backend logins: the
//! Active Manager's prober (`mailfront-manager`, `manager::probe`) connects to each endpoint of
//! each mailbox server with `net::connect`, pumps one of these machines with `net::pump` within
//! the probe's timeout, and counts the results by HAProxy's `fall`/`rise`. The machines only
//! judge bytes; time (a greeting that never comes, or comes too late) is the pump's deadline,
//! and a server that closes early is [`Probe::eof`].
//!
//! - [`GreetingProbe`]: the server's greeting (IMAP `* OK`/`* PREAUTH`, POP3 `+OK`, SMTP `220`,
//!   multi-line or not), for LMTP and SMTP delivery also the answer to `LHLO`/`EHLO`, then a
//!   polite goodbye (`LOGOUT`, `QUIT`). A refusal in the greeting (`* BYE`, `-ERR`, `4xx`,
//!   `5xx`) is unhealthy: a server that turns connections away cannot serve a login.
//! - [`LoginProbe`]: a real login with one of the backend-login machines (the same dialogue a
//!   user's session has, STARTTLS included), then the goodbye.
//! - [`HttpProbe`]: `GET <path> HTTP/1.1`, healthy on a `2xx` or `3xx` status line (HAProxy's
//!   `httpchk` rule).
//!
//! Every machine reads a bounded amount: a line over [`MAX_PROBE_LINE`] bytes is unhealthy, never
//! a buffer that grows (house rule 2). The greeting probe does not upgrade a STARTTLS endpoint:
//! it checks that the server greets; the TLS of such an endpoint is checked in login mode. An
//! implicit-TLS endpoint's handshake is made by `net::connect` before any machine runs.

mod greeting;
mod http;
mod login;
#[cfg(test)]
mod tests;

pub use greeting::{Greeting, GreetingProbe};
pub use http::HttpProbe;
pub use login::LoginProbe;

use crate::Machine;
use crate::conversation::{Conversation, Events};
use crate::machine::Step;

/// Longest line a probe reads from a server, in bytes. Greetings, `LHLO` answers and HTTP
/// status lines are far shorter; a port that streams something else is cut off here.
pub const MAX_PROBE_LINE: usize = 4 * 1024;

/// How a probe ended. Either is final.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeEvent {
    /// The server answered as a healthy one does (the goodbye, if any, has been queued before
    /// this event, so the pump sends it before returning).
    Healthy,
    /// It did not; the text says why, for the log (printable, at most a few hundred
    /// characters, never a password).
    Unhealthy(String),
}

/// A probe's driver stopped at its final event; asked again, the probe only waits.
impl Events for ProbeEvent {
    fn after_end() -> Step<Self> {
        Step::Read
    }
}

/// A probe machine: bytes in, [`Step`]s out, ending with a [`ProbeEvent`].
pub trait Probe: Machine<Event = ProbeEvent> {
    /// The server closed the connection (before the probe was over: unhealthy).
    fn eof(&mut self);
}

/// Every probe built on the crate's conversation machinery ends the same way when the server
/// hangs up before the verdict.
impl<C: Conversation<Event = ProbeEvent>> Probe for C {
    fn eof(&mut self) {
        let peer = self.peer();
        if !peer.is_over() {
            peer.finish(ProbeEvent::Unhealthy(
                "the server closed the connection".into(),
            ));
        }
    }
}

/// What a server said, fit for a log line: lossy UTF-8, control characters as spaces (a line
/// split on LF may still hold a CR or a NUL), at most 200 characters.
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
