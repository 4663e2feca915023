//! The line protocols the driver serves: how each starts its front end and its backend login.

use mailfront_model::{BackendTls, Protocol};
use mailfront_protocol::imap::{ImapBackendLogin, ImapFrontEnd, ImapSettings};
use mailfront_protocol::pop3::{Pop3BackendLogin, Pop3FrontEnd, Pop3Settings};
use mailfront_protocol::smtp::login::SubmissionBackendLogin;
use mailfront_protocol::smtp::submission::{SubmissionFrontEnd, SubmissionSettings};
use mailfront_protocol::{BackendAuth, ClientInfo, ClientTls};

use crate::LineProtocol;
use crate::registry::StopReason;

/// IMAP, with the settings of one listener.
#[derive(Debug, Clone)]
pub struct Imap {
    settings: ImapSettings,
}

impl Imap {
    /// IMAP as a listener with these settings serves it.
    pub fn new(settings: ImapSettings) -> Self {
        Self { settings }
    }
}

impl LineProtocol for Imap {
    const PROTOCOL: Protocol = Protocol::Imap;
    type FrontEnd = ImapFrontEnd;
    type Login = ImapBackendLogin;

    fn front_end(&self, tls_active: bool) -> ImapFrontEnd {
        let mut settings = self.settings.clone();
        if tls_active {
            settings.tls = ClientTls::Implicit;
        }
        ImapFrontEnd::new(settings)
    }

    fn backend_login(
        &self,
        auth: BackendAuth,
        tls: BackendTls,
        client: ClientInfo,
    ) -> ImapBackendLogin {
        ImapBackendLogin::new(auth, tls, Some(client))
    }

    fn stop_notice(&self, reason: &StopReason) -> Option<&'static [u8]> {
        Some(match reason {
            StopReason::Failover { .. } => mailfront_protocol::imap::FAILOVER_NOTICE,
            StopReason::Kicked => mailfront_protocol::imap::KICKED_NOTICE,
            StopReason::Shutdown => mailfront_protocol::imap::SHUTDOWN_NOTICE,
            StopReason::TokenRevoked | StopReason::TokenExpired => {
                mailfront_protocol::imap::TOKEN_ENDED_NOTICE
            }
        })
    }

    fn busy_notice(&self) -> &'static [u8] {
        mailfront_protocol::imap::BUSY_NOTICE
    }
}

/// POP3, with the settings of one listener.
#[derive(Debug, Clone)]
pub struct Pop3 {
    settings: Pop3Settings,
}

impl Pop3 {
    /// POP3 as a listener with these settings serves it.
    pub fn new(settings: Pop3Settings) -> Self {
        Self { settings }
    }
}

impl LineProtocol for Pop3 {
    const PROTOCOL: Protocol = Protocol::Pop3;
    type FrontEnd = Pop3FrontEnd;
    type Login = Pop3BackendLogin;

    fn front_end(&self, tls_active: bool) -> Pop3FrontEnd {
        let mut settings = self.settings.clone();
        if tls_active {
            settings.tls = ClientTls::Implicit;
        }
        Pop3FrontEnd::new(settings)
    }

    fn backend_login(
        &self,
        auth: BackendAuth,
        tls: BackendTls,
        client: ClientInfo,
    ) -> Pop3BackendLogin {
        Pop3BackendLogin::new(auth, tls, Some(client))
    }

    /// POP3 has no way to announce it: the session is closed (RFC 1939 clients reconnect).
    fn stop_notice(&self, _reason: &StopReason) -> Option<&'static [u8]> {
        None
    }

    fn busy_notice(&self) -> &'static [u8] {
        mailfront_protocol::pop3::BUSY_NOTICE
    }
}

/// Message submission, with the settings of one listener.
#[derive(Debug, Clone)]
pub struct Submission {
    settings: SubmissionSettings,
}

impl Submission {
    /// Submission as a listener with these settings serves it.
    pub fn new(settings: SubmissionSettings) -> Self {
        Self { settings }
    }
}

impl LineProtocol for Submission {
    const PROTOCOL: Protocol = Protocol::Submission;
    type FrontEnd = SubmissionFrontEnd;
    type Login = SubmissionBackendLogin;

    fn front_end(&self, tls_active: bool) -> SubmissionFrontEnd {
        let mut settings = self.settings.clone();
        if tls_active {
            settings.tls = ClientTls::Implicit;
        }
        SubmissionFrontEnd::new(settings)
    }

    fn backend_login(
        &self,
        auth: BackendAuth,
        tls: BackendTls,
        client: ClientInfo,
    ) -> SubmissionBackendLogin {
        SubmissionBackendLogin::new(auth, tls, Some(client), self.settings.hostname.clone())
    }

    /// A submission client mid-transaction is closed: it retries the message (no 250 yet).
    fn stop_notice(&self, _reason: &StopReason) -> Option<&'static [u8]> {
        None
    }

    fn busy_notice(&self) -> &'static [u8] {
        mailfront_protocol::smtp::BUSY_NOTICE
    }
}
