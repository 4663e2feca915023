//! What the front ends share before authentication: the limits they count against, and the
//! input loop of the line-based ones (POP3, submission).

use crate::line::LineReader;
use crate::sasl::{self, Exchange};
use crate::{AuthFailure, Credentials, Limits};

/// The counts a front end keeps against its [`Limits`] (house rule 3).
#[derive(Debug)]
pub(crate) struct Counters {
    limits: Limits,
    commands: u32,
    failures: u32,
}

impl Counters {
    /// Nothing counted yet.
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            commands: 0,
            failures: 0,
        }
    }

    /// Counts a command; `false` once there are more than `max_commands_before_auth`.
    pub(crate) fn command(&mut self) -> bool {
        self.commands = self.commands.saturating_add(1);
        self.commands <= self.limits.max_commands_before_auth
    }

    /// Counts a refused authentication; `false` once there are `max_auth_failures`. A
    /// temporary failure is ours, not the client's, and does not count.
    pub(crate) fn failure(&mut self, failure: AuthFailure) -> bool {
        if failure == AuthFailure::Temporary {
            return true;
        }
        self.failures = self.failures.saturating_add(1);
        self.failures < self.limits.max_auth_failures
    }
}

/// Where a line-based front end is.
#[derive(Debug)]
pub(crate) enum LineState {
    /// Reading commands.
    Commands,
    /// An AUTH exchange is waiting for the client's next response line.
    Sasl(Exchange),
    /// Waiting for the driver's answer to the credentials; `token` when they were an OAuth
    /// token (a refusal then goes through the error challenge).
    Authenticating { token: bool },
    /// A token was refused and its error challenge sent: the client's dummy response is
    /// awaited before the command fails (RFC 7628 §3.2.3).
    TokenRefused,
}

/// What the next line of a line-based front end is.
pub(crate) enum Line {
    /// A line over the limit: the connection cannot be kept in step.
    TooLong,
    /// One command more than the limit allows before authentication.
    TooManyCommands,
    /// The client's response in the AUTH exchange under way, and where it leads.
    Sasl(Exchange, sasl::Step),
    /// The client's answer to a refused token's error challenge (whatever it says).
    DummyResponse,
    /// A command (counted).
    Command(Vec<u8>),
}

impl LineState {
    /// Takes the next complete line from `input`, if one is buffered and the front end reads
    /// one now (not while the credentials are being checked). A command is counted; an AUTH
    /// response goes to its exchange, and the front end reads commands again until the
    /// exchange asks for more.
    pub(crate) fn next(&mut self, input: &mut LineReader, counters: &mut Counters) -> Option<Line> {
        if matches!(self, LineState::Authenticating { .. }) {
            return None;
        }
        let line = match input.next_line() {
            Ok(line) => line?,
            Err(_) => return Some(Line::TooLong),
        };
        Some(match std::mem::replace(self, LineState::Commands) {
            LineState::Sasl(mut exchange) => {
                let step = exchange.respond(&line);
                Line::Sasl(exchange, step)
            }
            LineState::TokenRefused => Line::DummyResponse,
            _ if !counters.command() => Line::TooManyCommands,
            _ => Line::Command(line),
        })
    }

    /// Leaves [`LineState::Authenticating`] for the driver's answer: whether the credentials
    /// were a token, or `None` if that is not where the front end was (an answer nobody asked
    /// for).
    pub(crate) fn answered(&mut self) -> Option<bool> {
        let LineState::Authenticating { token } = *self else {
            return None;
        };
        *self = LineState::Commands;
        Some(token)
    }

    /// The credentials are out for checking.
    pub(crate) fn authenticating(credentials: &Credentials) -> LineState {
        LineState::Authenticating {
            token: credentials.is_token(),
        }
    }
}
