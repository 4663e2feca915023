//! Logging in to a submission server on the user's behalf, sans I/O.

use std::net::IpAddr;

use mailfront_model::{BackendTls, SaslMechanism};

use super::reply::{Reply, ReplyReader};
use crate::capabilities::Capabilities;
use crate::conversation::{Conversation, Input, Peer};
use crate::sasl::encode_base64;
use crate::{BackendAuth, BackendFailure, ClientInfo, LoginEvent};

const MAX_BACKEND_LINE: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Greeting,
    Ehlo,
    StartTls,
    Xclient,
    /// AUTH sent; `stage` counts the 334 challenges answered (LOGIN has two).
    Auth {
        stage: u8,
    },
}

/// The submission backend-login client. See the [module documentation](super).
#[derive(Debug)]
pub struct SubmissionBackendLogin {
    auth: BackendAuth,
    tls: BackendTls,
    client: Option<ClientInfo>,
    helo: String,
    /// The backend, whose bytes are read as SMTP replies.
    peer: Peer<LoginEvent, ReplyReader>,
    stage: Stage,
    extensions: Capabilities,
    xclient_sent: bool,
}

/// An address as XCLIENT writes it (Postfix's XCLIENT_README: IPv6 gets a prefix).
pub fn xclient_addr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("IPV6:{v6}"),
    }
}

impl SubmissionBackendLogin {
    /// A login as `auth` describes; `helo` is the name we greet with; `client` is passed on
    /// with XCLIENT when the backend offers it.
    pub fn new(
        auth: BackendAuth,
        tls: BackendTls,
        client: Option<ClientInfo>,
        helo: String,
    ) -> Self {
        Self {
            auth,
            tls,
            client,
            helo,
            peer: Peer::backend(ReplyReader::new(MAX_BACKEND_LINE), tls),
            stage: Stage::Greeting,
            extensions: Capabilities::default(),
            xclient_sent: false,
        }
    }

    fn ehlo(&mut self) {
        let line = format!("EHLO {}\r\n", self.helo);
        self.peer.send(line);
        self.stage = Stage::Ehlo;
    }

    fn after_ehlo(&mut self) {
        if self.tls == BackendTls::StartTls && !self.peer.is_secure() {
            if !self.extensions.has("STARTTLS") {
                self.peer.fail(BackendFailure::Unsupported("STARTTLS"));
                return;
            }
            self.peer.send("STARTTLS\r\n");
            self.stage = Stage::StartTls;
            return;
        }
        if !self.xclient_sent
            && self.extensions.has("XCLIENT")
            && let Some(client) = &self.client
        {
            let line = format!(
                "XCLIENT ADDR={} PORT={}\r\n",
                xclient_addr(client.client.ip()),
                client.client.port()
            );
            self.xclient_sent = true;
            self.peer.send(line);
            self.stage = Stage::Xclient;
            return;
        }
        self.login();
    }

    fn login(&mut self) {
        match self.auth.mechanism() {
            SaslMechanism::Plain => {
                if !self.extensions.lists("AUTH", "PLAIN", &[' ', '=']) {
                    self.peer.fail(BackendFailure::Unsupported("AUTH PLAIN"));
                    return;
                }
                let response = self.auth.plain_response();
                self.peer
                    .send(format!("AUTH PLAIN {}\r\n", response.expose()));
            }
            SaslMechanism::Login => {
                if !self.extensions.lists("AUTH", "LOGIN", &[' ', '=']) {
                    self.peer.fail(BackendFailure::Unsupported("AUTH LOGIN"));
                    return;
                }
                if let BackendAuth::Master {
                    user, separator, ..
                } = &self.auth
                    && user.contains(separator.as_str())
                {
                    self.peer.fail(BackendFailure::UnsafeName);
                    return;
                }
                self.peer.send("AUTH LOGIN\r\n");
            }
        }
        self.stage = Stage::Auth { stage: 0 };
    }

    fn login_answer(&self, stage: u8) -> Vec<u8> {
        let (user, password) = match &self.auth {
            BackendAuth::Master {
                user,
                master,
                separator,
                password,
                ..
            } => (
                format!("{user}{separator}{master}").into_bytes(),
                password.expose().as_bytes().to_vec(),
            ),
            BackendAuth::PassThrough { user, password, .. } => {
                (user.clone().into_bytes(), password.expose().clone())
            }
        };
        let field = if stage == 0 { user } else { password };
        format!("{}\r\n", encode_base64(&field)).into_bytes()
    }

    /// Whether `reply` has the `code` that lets the login go on; if not, the login has failed
    /// (the backend refused `what`).
    fn expect(&mut self, reply: &Reply, code: u16, what: &str) -> bool {
        if reply.code != code {
            let why = format!("{what}: {}", reply.summary());
            self.peer.fail(BackendFailure::Refused(why));
        }
        reply.code == code
    }

    fn handle(&mut self, reply: Reply) {
        match self.stage {
            Stage::Greeting => {
                if self.expect(&reply, 220, "greeting") {
                    self.ehlo();
                }
            }
            Stage::Ehlo => {
                if self.expect(&reply, 250, "EHLO") {
                    self.extensions = Capabilities::new(reply.lines.into_iter().skip(1).collect());
                    self.after_ehlo();
                }
            }
            Stage::StartTls => {
                if self.expect(&reply, 220, "STARTTLS") {
                    self.peer.start_tls();
                }
            }
            Stage::Xclient => match reply.code {
                // XCLIENT restarts the session with a new greeting: greet again.
                220 => self.ehlo(),
                250 => self.login(),
                // Not trusted for XCLIENT: log in without it.
                _ => self.login(),
            },
            Stage::Auth { stage } => match reply.code {
                235 => {
                    let leftover = self.peer.input.take_unread();
                    self.peer.finish(LoginEvent::Ready {
                        capabilities: None,
                        leftover,
                    });
                }
                334 if stage < 2 && matches!(self.auth.mechanism(), SaslMechanism::Login) => {
                    let answer = self.login_answer(stage);
                    self.peer.send(answer);
                    self.stage = Stage::Auth { stage: stage + 1 };
                }
                _ => self.peer.fail(BackendFailure::Refused(format!(
                    "AUTH: {}",
                    reply.summary()
                ))),
            },
        }
    }
}

impl Conversation for SubmissionBackendLogin {
    type Event = LoginEvent;

    fn advance(&mut self) -> bool {
        match self.peer.input.next_reply() {
            Ok(None) => return false,
            Ok(Some(reply)) => self.handle(reply),
            Err(e) => self.peer.fail(BackendFailure::Protocol(e.to_string())),
        }
        true
    }

    fn secured(&mut self) {
        // RFC 3207 §4.2: the session starts over; greet again.
        self.ehlo();
    }

    fn peer(&mut self) -> &mut Peer<LoginEvent, impl Input> {
        &mut self.peer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, log_in as run, master};

    fn client() -> ClientInfo {
        testing::client("[2001:db8::7]:50123", "127.0.0.1:1587", "s")
    }

    fn login(mechanism: SaslMechanism, tls: BackendTls, helo: &str) -> SubmissionBackendLogin {
        SubmissionBackendLogin::new(master(mechanism), tls, None, helo.into())
    }

    const EHLO: &[u8] = b"250-mbx1\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n250-XCLIENT ADDR PORT\r\n250 SIZE 40000000\r\n";

    #[test]
    fn master_plain_with_xclient_at_every_split() {
        let mut script = b"220 mbx1 ESMTP Dovecot\r\n".to_vec();
        script.extend_from_slice(EHLO);
        script.extend_from_slice(b"220 mbx1 ESMTP Dovecot\r\n");
        script.extend_from_slice(EHLO);
        script.extend_from_slice(b"235 2.7.0 Logged in.\r\n");
        let login = || {
            SubmissionBackendLogin::new(
                master(SaslMechanism::Plain),
                BackendTls::None,
                Some(client()),
                "cas1".into(),
            )
        };
        for (chunk, sent, end) in testing::log_in_at_every_split(&script, login) {
            let mut lines = sent.split("\r\n");
            assert_eq!(lines.next(), Some("EHLO cas1"));
            assert_eq!(
                lines.next(),
                Some("XCLIENT ADDR=IPV6:2001:db8::7 PORT=50123")
            );
            assert_eq!(lines.next(), Some("EHLO cas1"));
            testing::assert_master_plain(
                lines.next().unwrap().strip_prefix("AUTH PLAIN ").unwrap(),
            );
            assert!(matches!(end, LoginEvent::Ready { .. }), "chunk {chunk}");
        }
    }

    #[test]
    fn auth_login_and_refusals() {
        let script = b"220 hi\r\n250-x\r\n250 AUTH LOGIN\r\n334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 ok\r\n";
        let (sent, end) = run(
            login(SaslMechanism::Login, BackendTls::None, "cas1"),
            script,
            5,
        );
        assert_eq!(
            sent,
            format!(
                "EHLO cas1\r\nAUTH LOGIN\r\n{}\r\n{}\r\n",
                encode_base64(b"alice@example.com*casmaster"),
                encode_base64(b"masterpw")
            )
        );
        assert!(matches!(end, LoginEvent::Ready { .. }));
        let failed = |tls: BackendTls, script: &[u8]| {
            testing::failure(login(SaslMechanism::Plain, tls, "c"), script, 99)
        };
        assert!(matches!(
            failed(BackendTls::None, b"220 hi\r\n250-x\r\n250 AUTH PLAIN\r\n535 5.7.8 no\r\n"),
            BackendFailure::Refused(t) if t.contains("535")
        ));
        assert!(matches!(
            failed(BackendTls::None, b"554 go away\r\n"),
            BackendFailure::Refused(_)
        ));
        assert!(matches!(
            failed(BackendTls::None, b"220 hi\r\n250 x\r\n"),
            BackendFailure::Unsupported("AUTH PLAIN")
        ));
        assert!(matches!(
            failed(BackendTls::StartTls, b"220 hi\r\n250 AUTH PLAIN\r\n"),
            BackendFailure::Unsupported("STARTTLS")
        ));
        assert!(matches!(
            failed(BackendTls::None, b"* OK IMAP\r\n"),
            BackendFailure::Protocol(_)
        ));
    }
}
