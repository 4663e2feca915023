//! The login probe: a backend-login machine, run to its end, then a goodbye.

use mailfront_model::BackendTls;

use super::{Probe, ProbeEvent, excerpt};
use crate::imap::ImapBackendLogin;
use crate::machine::{Machine, Step, Steps};
use crate::pop3::Pop3BackendLogin;
use crate::smtp::login::SubmissionBackendLogin;
use crate::{BackendAuth, BackendLogin, LoginEvent};

/// A real login, the way a user's session logs in (greeting, capabilities, STARTTLS where the
/// endpoint has it, the master user or the probe account's password), ended with the
/// protocol's goodbye once logged in. A refused login is unhealthy: such a server greets but
/// cannot serve a user (a broken authentication back end, a full disk on some servers).
#[derive(Debug)]
pub struct LoginProbe<L> {
    login: L,
    goodbye: &'static [u8],
    /// Steps after the login machine's end: the goodbye and the verdict.
    steps: Steps<ProbeEvent>,
    done: bool,
}

impl<L: BackendLogin> LoginProbe<L> {
    /// Runs `login`, and sends `goodbye` once it is logged in.
    pub fn new(login: L, goodbye: &'static [u8]) -> Self {
        Self {
            login,
            goodbye,
            steps: Steps::new(),
            done: false,
        }
    }
}

impl LoginProbe<ImapBackendLogin> {
    /// An IMAP login as `auth` says, over an endpoint with `tls`, then `LOGOUT`.
    pub fn imap(auth: BackendAuth, tls: BackendTls) -> Self {
        Self::new(
            ImapBackendLogin::new(auth, tls, None),
            b"mfprobe LOGOUT\r\n",
        )
    }
}

impl LoginProbe<Pop3BackendLogin> {
    /// A POP3 login as `auth` says, over an endpoint with `tls`, then `QUIT`.
    pub fn pop3(auth: BackendAuth, tls: BackendTls) -> Self {
        Self::new(Pop3BackendLogin::new(auth, tls, None), b"QUIT\r\n")
    }
}

impl LoginProbe<SubmissionBackendLogin> {
    /// A submission login as `auth` says, over an endpoint with `tls`, greeting with `helo`,
    /// then `QUIT`.
    pub fn submission(auth: BackendAuth, tls: BackendTls, helo: String) -> Self {
        Self::new(
            SubmissionBackendLogin::new(auth, tls, None, helo),
            b"QUIT\r\n",
        )
    }
}

impl<L: BackendLogin> Machine for LoginProbe<L> {
    type Event = ProbeEvent;

    fn feed(&mut self, bytes: &[u8]) {
        if !self.done {
            self.login.feed(bytes);
        }
    }

    fn tls_established(&mut self) {
        self.login.tls_established();
    }

    fn next_step(&mut self) -> Step<ProbeEvent> {
        if let Some(step) = self.steps.pop() {
            return step;
        }
        if self.done {
            return Step::Read;
        }
        match self.login.next_step() {
            Step::Send(bytes) => Step::Send(bytes),
            Step::Read => Step::Read,
            Step::StartTls => Step::StartTls,
            Step::Event(LoginEvent::Ready { .. }) => {
                self.done = true;
                self.steps.push_send(self.goodbye);
                self.steps.event(ProbeEvent::Healthy);
                self.steps.pop().unwrap_or(Step::Event(ProbeEvent::Healthy))
            }
            Step::Event(LoginEvent::Failed(failure)) => {
                self.done = true;
                Step::Event(ProbeEvent::Unhealthy(excerpt(
                    format!("login: {failure}").as_bytes(),
                )))
            }
        }
    }
}

impl<L: BackendLogin> Probe for LoginProbe<L> {
    fn eof(&mut self) {
        if !self.done {
            self.login.eof();
        }
    }
}
