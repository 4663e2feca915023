//! Logging in to a submission server on the user's behalf, sans I/O.

use std::collections::VecDeque;
use std::net::IpAddr;

use mailfront_model::{BackendTls, SaslMechanism};

use super::reply::{Reply, ReplyReader};
use crate::sasl::{encode_base64, encode_plain};
use crate::{BackendAction, BackendAuth, BackendFailure, BackendLogin, ClientInfo};

const MAX_BACKEND_LINE: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Greeting,
    Ehlo,
    StartTls,
    Handshake,
    Xclient,
    /// AUTH sent; `stage` counts the 334 challenges answered (LOGIN has two).
    Auth {
        stage: u8,
    },
    Done,
}

/// The submission backend-login client. See the [module documentation](super).
#[derive(Debug)]
pub struct SubmissionBackendLogin {
    auth: BackendAuth,
    tls: BackendTls,
    client: Option<ClientInfo>,
    helo: String,
    replies: ReplyReader,
    actions: VecDeque<BackendAction>,
    step: Step,
    extensions: Vec<String>,
    tls_started: bool,
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
            replies: ReplyReader::new(MAX_BACKEND_LINE),
            actions: VecDeque::new(),
            step: Step::Greeting,
            extensions: Vec::new(),
            tls_started: false,
            xclient_sent: false,
        }
    }

    fn send(&mut self, text: impl Into<Vec<u8>>) {
        self.actions.push_back(BackendAction::Send(text.into()));
    }

    fn fail(&mut self, failure: BackendFailure) {
        self.actions.push_back(BackendAction::Failed(failure));
        self.step = Step::Done;
    }

    fn has(&self, extension: &str) -> bool {
        self.extensions.iter().any(|e| {
            e.split(' ')
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case(extension))
        })
    }

    fn has_auth(&self, mechanism: &str) -> bool {
        self.extensions.iter().any(|e| {
            let mut words = e.split([' ', '=']);
            words.next().is_some_and(|w| w.eq_ignore_ascii_case("AUTH"))
                && words.any(|m| m.eq_ignore_ascii_case(mechanism))
        })
    }

    fn ehlo(&mut self) {
        let line = format!("EHLO {}\r\n", self.helo);
        self.send(line);
        self.step = Step::Ehlo;
    }

    fn after_ehlo(&mut self) {
        if self.tls == BackendTls::StartTls && !self.tls_started {
            if !self.has("STARTTLS") {
                self.fail(BackendFailure::Unsupported("STARTTLS"));
                return;
            }
            self.send("STARTTLS\r\n");
            self.step = Step::StartTls;
            return;
        }
        if !self.xclient_sent
            && self.has("XCLIENT")
            && let Some(client) = &self.client
        {
            let line = format!(
                "XCLIENT ADDR={} PORT={}\r\n",
                xclient_addr(client.client.ip()),
                client.client.port()
            );
            self.xclient_sent = true;
            self.send(line);
            self.step = Step::Xclient;
            return;
        }
        self.login();
    }

    fn login(&mut self) {
        let mechanism = match &self.auth {
            BackendAuth::Master { mechanism, .. } | BackendAuth::PassThrough { mechanism, .. } => {
                *mechanism
            }
        };
        match mechanism {
            SaslMechanism::Plain => {
                if !self.has_auth("PLAIN") {
                    self.fail(BackendFailure::Unsupported("AUTH PLAIN"));
                    return;
                }
                let response = match &self.auth {
                    BackendAuth::Master {
                        user,
                        master,
                        password,
                        ..
                    } => encode_plain(user, master, password.expose().as_bytes()),
                    BackendAuth::PassThrough { user, password, .. } => {
                        encode_plain("", user, password.expose())
                    }
                };
                self.send(format!("AUTH PLAIN {}\r\n", response.expose()));
            }
            SaslMechanism::Login => {
                if !self.has_auth("LOGIN") {
                    self.fail(BackendFailure::Unsupported("AUTH LOGIN"));
                    return;
                }
                if let BackendAuth::Master {
                    user, separator, ..
                } = &self.auth
                    && user.contains(separator.as_str())
                {
                    self.fail(BackendFailure::UnsafeName);
                    return;
                }
                self.send("AUTH LOGIN\r\n");
            }
        }
        self.step = Step::Auth { stage: 0 };
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

    fn handle(&mut self, reply: Reply) {
        match self.step {
            Step::Greeting => {
                if reply.code == 220 {
                    self.ehlo();
                } else {
                    self.fail(BackendFailure::Refused(format!(
                        "greeting: {}",
                        reply.summary()
                    )));
                }
            }
            Step::Ehlo => {
                if reply.code == 250 {
                    self.extensions = reply.lines.into_iter().skip(1).collect();
                    self.after_ehlo();
                } else {
                    self.fail(BackendFailure::Refused(format!(
                        "EHLO: {}",
                        reply.summary()
                    )));
                }
            }
            Step::StartTls => {
                if reply.code == 220 {
                    self.replies.clear();
                    self.actions.push_back(BackendAction::StartTls);
                    self.step = Step::Handshake;
                } else {
                    self.fail(BackendFailure::Refused(format!(
                        "STARTTLS: {}",
                        reply.summary()
                    )));
                }
            }
            Step::Handshake | Step::Done => {}
            Step::Xclient => match reply.code {
                // XCLIENT restarts the session with a new greeting: greet again.
                220 => self.ehlo(),
                250 => self.login(),
                // Not trusted for XCLIENT: log in without it.
                _ => self.login(),
            },
            Step::Auth { stage } => match reply.code {
                235 => {
                    let leftover = self.replies.take_unread();
                    self.actions.push_back(BackendAction::Ready {
                        capabilities: None,
                        leftover,
                    });
                    self.step = Step::Done;
                }
                334 if stage < 2 && matches!(self.mechanism(), SaslMechanism::Login) => {
                    let answer = self.login_answer(stage);
                    self.send(answer);
                    self.step = Step::Auth { stage: stage + 1 };
                }
                _ => self.fail(BackendFailure::Refused(format!(
                    "AUTH: {}",
                    reply.summary()
                ))),
            },
        }
    }

    fn mechanism(&self) -> SaslMechanism {
        match &self.auth {
            BackendAuth::Master { mechanism, .. } | BackendAuth::PassThrough { mechanism, .. } => {
                *mechanism
            }
        }
    }
}

impl BackendLogin for SubmissionBackendLogin {
    fn feed(&mut self, bytes: &[u8]) {
        if !matches!(self.step, Step::Done | Step::Handshake) {
            self.replies.push(bytes);
        }
    }

    fn eof(&mut self) {
        if self.step != Step::Done {
            self.fail(BackendFailure::Closed);
        }
    }

    fn tls_established(&mut self) {
        if self.step == Step::Handshake {
            self.tls_started = true;
            self.replies.clear();
            // RFC 3207 §4.2: the session starts over; greet again.
            self.ehlo();
        }
    }

    fn next_action(&mut self) -> BackendAction {
        loop {
            if let Some(action) = self.actions.pop_front() {
                return action;
            }
            if matches!(self.step, Step::Done | Step::Handshake) {
                return BackendAction::Read;
            }
            match self.replies.next_reply() {
                Ok(None) => return BackendAction::Read,
                Ok(Some(reply)) => self.handle(reply),
                Err(e) => self.fail(BackendFailure::Protocol(e.to_string())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use mailfront_model::Secret;

    use super::*;
    use crate::sasl::{decode_base64, decode_plain};

    fn master(mechanism: SaslMechanism) -> BackendAuth {
        BackendAuth::Master {
            user: "alice@example.com".into(),
            master: "casmaster".into(),
            password: Secret::new("masterpw".into()),
            separator: "*".into(),
            mechanism,
        }
    }

    fn client() -> ClientInfo {
        ClientInfo {
            client: "[2001:db8::7]:50123".parse::<SocketAddr>().unwrap(),
            local: "127.0.0.1:1587".parse::<SocketAddr>().unwrap(),
            session_id: "s".into(),
        }
    }

    fn run(
        mut login: SubmissionBackendLogin,
        script: &[u8],
        chunk: usize,
    ) -> (String, BackendAction) {
        let mut sent = String::new();
        let mut pieces = script.chunks(chunk.max(1));
        loop {
            match login.next_action() {
                BackendAction::Send(bytes) => sent.push_str(&String::from_utf8(bytes).unwrap()),
                BackendAction::Read => match pieces.next() {
                    Some(piece) => login.feed(piece),
                    None => login.eof(),
                },
                BackendAction::StartTls => {
                    sent.push_str("<TLS>");
                    login.tls_established();
                }
                end => return (sent, end),
            }
        }
    }

    const EHLO: &[u8] = b"250-mbx1\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n250-XCLIENT ADDR PORT\r\n250 SIZE 40000000\r\n";

    #[test]
    fn master_plain_with_xclient_at_every_split() {
        let mut script = b"220 mbx1 ESMTP Dovecot\r\n".to_vec();
        script.extend_from_slice(EHLO);
        script.extend_from_slice(b"220 mbx1 ESMTP Dovecot\r\n");
        script.extend_from_slice(EHLO);
        script.extend_from_slice(b"235 2.7.0 Logged in.\r\n");
        for chunk in 1..=script.len() {
            let login = SubmissionBackendLogin::new(
                master(SaslMechanism::Plain),
                BackendTls::None,
                Some(client()),
                "cas1".into(),
            );
            let (sent, end) = run(login, &script, chunk);
            let mut lines = sent.split("\r\n");
            assert_eq!(lines.next(), Some("EHLO cas1"));
            assert_eq!(
                lines.next(),
                Some("XCLIENT ADDR=IPV6:2001:db8::7 PORT=50123")
            );
            assert_eq!(lines.next(), Some("EHLO cas1"));
            let b64 = lines.next().unwrap().strip_prefix("AUTH PLAIN ").unwrap();
            let plain = decode_plain(&decode_base64(b64.as_bytes()).unwrap()).unwrap();
            assert_eq!(
                (plain.authzid.as_deref(), plain.authcid.as_str()),
                (Some("alice@example.com"), "casmaster")
            );
            assert!(matches!(end, BackendAction::Ready { .. }), "chunk {chunk}");
        }
    }

    #[test]
    fn auth_login_and_refusals() {
        let mut script = b"220 hi\r\n250-x\r\n250 AUTH LOGIN\r\n334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 ok\r\n".to_vec();
        let (sent, end) = run(
            SubmissionBackendLogin::new(
                master(SaslMechanism::Login),
                BackendTls::None,
                None,
                "cas1".into(),
            ),
            &script,
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
        assert!(matches!(end, BackendAction::Ready { .. }));
        script = b"220 hi\r\n250-x\r\n250 AUTH PLAIN\r\n535 5.7.8 no\r\n".to_vec();
        let (_, end) = run(
            SubmissionBackendLogin::new(
                master(SaslMechanism::Plain),
                BackendTls::None,
                None,
                "c".into(),
            ),
            &script,
            99,
        );
        assert!(
            matches!(end, BackendAction::Failed(BackendFailure::Refused(t)) if t.contains("535"))
        );
        let (_, end) = run(
            SubmissionBackendLogin::new(
                master(SaslMechanism::Plain),
                BackendTls::None,
                None,
                "c".into(),
            ),
            b"554 go away\r\n",
            99,
        );
        assert!(matches!(
            end,
            BackendAction::Failed(BackendFailure::Refused(_))
        ));
        let (_, end) = run(
            SubmissionBackendLogin::new(
                master(SaslMechanism::Plain),
                BackendTls::None,
                None,
                "c".into(),
            ),
            b"220 hi\r\n250 x\r\n",
            99,
        );
        assert!(matches!(
            end,
            BackendAction::Failed(BackendFailure::Unsupported("AUTH PLAIN"))
        ));
        let (_, end) = run(
            SubmissionBackendLogin::new(
                master(SaslMechanism::Plain),
                BackendTls::StartTls,
                None,
                "c".into(),
            ),
            b"220 hi\r\n250 AUTH PLAIN\r\n",
            99,
        );
        assert!(matches!(
            end,
            BackendAction::Failed(BackendFailure::Unsupported("STARTTLS"))
        ));
        let (_, end) = run(
            SubmissionBackendLogin::new(
                master(SaslMechanism::Plain),
                BackendTls::None,
                None,
                "c".into(),
            ),
            b"* OK IMAP\r\n",
            99,
        );
        assert!(matches!(
            end,
            BackendAction::Failed(BackendFailure::Protocol(_))
        ));
    }
}
