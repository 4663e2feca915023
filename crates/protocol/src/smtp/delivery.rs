//! Handing one message to a mailbox server (LMTP, RFC 2033) or a relay (SMTP), sans I/O.
//!
//! The envelope is replayed (LHLO/EHLO, MAIL, RCPT for each recipient, DATA); the driver then
//! streams the content through a [`super::data::DotStuffer`] and calls
//! [`DeliveryClient::finish`]. LMTP answers once per recipient; SMTP once for all.

use std::collections::VecDeque;

use mailfront_model::BackendTls;
pub use mailfront_model::DeliveryProtocol;

use super::command::Body;
use super::reply::{Reply, ReplyReader};
use super::transport::Envelope;

const MAX_BACKEND_LINE: usize = 8 * 1024;

/// What the delivery client asks its driver to do.
#[derive(Debug, PartialEq, Eq)]
pub enum DeliveryAction {
    /// Send these bytes to the backend.
    Send(Vec<u8>),
    /// Wait for bytes from the backend.
    Read,
    /// Upgrade to TLS now.
    StartTls,
    /// The backend accepted the envelope and asked for the content (354).
    ReadyForContent,
    /// The outcome per recipient (LMTP), or one outcome for all (SMTP, listed per recipient).
    Finished(Vec<(String, Reply)>),
    /// The backend refused the transaction before the content; nothing was delivered.
    Refused(Reply),
    /// The backend broke the protocol or went away; nothing was delivered unless the content
    /// had been completed.
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Greeting,
    Hello,
    StartTls,
    Handshake,
    Mail,
    Rcpt(usize),
    Data,
    Content,
    Replies,
    Done,
}

/// The delivery client. See the [module documentation](self).
#[derive(Debug)]
pub struct DeliveryClient {
    protocol: DeliveryProtocol,
    tls: BackendTls,
    helo: String,
    envelope: Envelope,
    replies: ReplyReader,
    actions: VecDeque<DeliveryAction>,
    step: Step,
    extensions: Vec<String>,
    tls_started: bool,
    results: Vec<(String, Reply)>,
}

impl DeliveryClient {
    /// A delivery of `envelope`; `helo` is our name.
    pub fn new(
        protocol: DeliveryProtocol,
        tls: BackendTls,
        helo: String,
        envelope: Envelope,
    ) -> Self {
        Self {
            protocol,
            tls,
            helo,
            envelope,
            replies: ReplyReader::new(MAX_BACKEND_LINE),
            actions: VecDeque::new(),
            step: Step::Greeting,
            extensions: Vec::new(),
            tls_started: false,
            results: Vec::new(),
        }
    }

    fn send(&mut self, text: impl Into<Vec<u8>>) {
        self.actions.push_back(DeliveryAction::Send(text.into()));
    }

    fn refuse(&mut self, reply: Reply) {
        self.actions.push_back(DeliveryAction::Refused(reply));
        self.step = Step::Done;
    }

    fn fail(&mut self, why: String) {
        self.actions.push_back(DeliveryAction::Failed(why));
        self.step = Step::Done;
    }

    fn has(&self, extension: &str) -> bool {
        self.extensions.iter().any(|e| {
            e.split(' ')
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case(extension))
        })
    }

    fn hello(&mut self) {
        let verb = match self.protocol {
            DeliveryProtocol::Lmtp => "LHLO",
            DeliveryProtocol::Smtp => "EHLO",
        };
        let line = format!("{verb} {}\r\n", self.helo);
        self.send(line);
        self.step = Step::Hello;
    }

    fn mail(&mut self) {
        let mut line = format!("MAIL FROM:<{}>", self.envelope.from);
        match self.envelope.params.body {
            Some(Body::EightBitMime) if self.has("8BITMIME") => line.push_str(" BODY=8BITMIME"),
            Some(Body::SevenBit) if self.has("8BITMIME") => line.push_str(" BODY=7BIT"),
            _ => {}
        }
        if let (Some(size), true) = (self.envelope.params.size, self.has("SIZE")) {
            line.push_str(&format!(" SIZE={size}"));
        }
        line.push_str("\r\n");
        self.send(line);
        self.step = Step::Mail;
    }

    fn rcpt(&mut self, index: usize) {
        match self.envelope.recipients.get(index) {
            Some(to) => {
                let line = format!("RCPT TO:<{to}>\r\n");
                self.send(line);
                self.step = Step::Rcpt(index);
            }
            None => {
                self.send("DATA\r\n");
                self.step = Step::Data;
            }
        }
    }

    /// The content has been sent (with its end-of-data line): read the verdicts.
    pub fn finish(&mut self) {
        if self.step == Step::Content {
            self.step = Step::Replies;
        }
    }

    /// Ends the session politely (after success or refusal); nothing is left in flight.
    pub fn quit(&mut self) -> Vec<u8> {
        self.step = Step::Done;
        b"QUIT\r\n".to_vec()
    }

    fn handle(&mut self, reply: Reply) {
        match self.step {
            Step::Greeting => {
                if reply.code == 220 {
                    self.hello();
                } else {
                    self.refuse(reply);
                }
            }
            Step::Hello => {
                if reply.code != 250 {
                    self.refuse(reply);
                    return;
                }
                self.extensions = reply.lines.into_iter().skip(1).collect();
                if self.tls == BackendTls::StartTls && !self.tls_started {
                    if !self.has("STARTTLS") {
                        self.fail("backend does not offer STARTTLS".into());
                        return;
                    }
                    self.send("STARTTLS\r\n");
                    self.step = Step::StartTls;
                    return;
                }
                self.mail();
            }
            Step::StartTls => {
                if reply.code == 220 {
                    self.replies.clear();
                    self.actions.push_back(DeliveryAction::StartTls);
                    self.step = Step::Handshake;
                } else {
                    self.refuse(reply);
                }
            }
            Step::Mail => {
                if reply.is_positive() {
                    self.rcpt(0);
                } else {
                    self.refuse(reply);
                }
            }
            Step::Rcpt(index) => {
                if reply.is_positive() {
                    self.rcpt(index + 1);
                } else {
                    // All or nothing: a recipient this backend will not take means this backend
                    // cannot take the message as the client was promised it.
                    self.refuse(reply);
                }
            }
            Step::Data => {
                if reply.is_intermediate() {
                    self.actions.push_back(DeliveryAction::ReadyForContent);
                    self.step = Step::Content;
                } else {
                    self.refuse(reply);
                }
            }
            Step::Replies => {
                match self.protocol {
                    DeliveryProtocol::Smtp => {
                        self.results = self
                            .envelope
                            .recipients
                            .iter()
                            .map(|r| (r.clone(), reply.clone()))
                            .collect();
                    }
                    DeliveryProtocol::Lmtp => {
                        let index = self.results.len();
                        let to = self
                            .envelope
                            .recipients
                            .get(index)
                            .cloned()
                            .unwrap_or_default();
                        self.results.push((to, reply));
                    }
                }
                if self.results.len() >= self.envelope.recipients.len() {
                    let results = std::mem::take(&mut self.results);
                    self.actions.push_back(DeliveryAction::Finished(results));
                    self.step = Step::Done;
                }
            }
            Step::Content => self.fail(format!(
                "unexpected reply during content: {}",
                reply.summary()
            )),
            Step::Handshake | Step::Done => {}
        }
    }

    /// Bytes received from the backend.
    pub fn feed(&mut self, bytes: &[u8]) {
        if !matches!(self.step, Step::Done | Step::Handshake) {
            self.replies.push(bytes);
        }
    }

    /// The backend closed the connection.
    pub fn eof(&mut self) {
        if self.step != Step::Done {
            self.fail("backend closed the connection".into());
        }
    }

    /// The TLS handshake completed.
    pub fn tls_established(&mut self) {
        if self.step == Step::Handshake {
            self.tls_started = true;
            self.replies.clear();
            self.hello();
        }
    }

    /// The next thing to do.
    pub fn next_action(&mut self) -> DeliveryAction {
        loop {
            if let Some(action) = self.actions.pop_front() {
                return action;
            }
            if matches!(self.step, Step::Done | Step::Handshake | Step::Content) {
                return DeliveryAction::Read;
            }
            match self.replies.next_reply() {
                Ok(None) => return DeliveryAction::Read,
                Ok(Some(reply)) => self.handle(reply),
                Err(e) => self.fail(e.to_string()),
            }
        }
    }
}

/// The reply a client gets for a message, from the backend's per-recipient outcomes.
///
/// Policy (no queue, nothing lost): `250` only if every recipient was accepted. If none was,
/// the backend's own reply is passed on — a temporary one if any was temporary, so the sender
/// retries. If some were delivered and some not, the sender is told to retry (`451`): it will
/// send again, and the recipients who already have the message may get it twice. A duplicate
/// is preferred to a loss, and a permanent refusal of one recipient must not bounce a message
/// the others already received.
pub fn verdict(results: &[(String, Reply)]) -> Reply {
    let delivered = results.iter().filter(|(_, r)| r.is_positive()).count();
    if delivered == results.len() && !results.is_empty() {
        return Reply::new(
            250,
            format!("2.0.0 Message accepted for delivery to {delivered} recipient(s)"),
        );
    }
    if delivered == 0 {
        let failure = results
            .iter()
            .find(|(_, r)| r.is_transient())
            .or_else(|| results.first())
            .map(|(_, r)| r.clone());
        return failure.unwrap_or_else(|| Reply::new(451, "4.3.0 No delivery outcome"));
    }
    Reply::new(
        451,
        format!(
            "4.3.0 Delivered to {delivered} of {} recipients; try again later for the rest",
            results.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::command::MailParams;

    fn envelope(recipients: &[&str]) -> Envelope {
        Envelope {
            from: "s@x.org".into(),
            params: MailParams {
                size: Some(42),
                body: Some(Body::EightBitMime),
            },
            recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    /// Runs the client against `script`, sending `content` when asked; returns what was sent
    /// and the final action.
    fn run(mut client: DeliveryClient, script: &[u8], chunk: usize) -> (String, DeliveryAction) {
        let mut sent = String::new();
        let mut pieces = script.chunks(chunk.max(1));
        loop {
            match client.next_action() {
                DeliveryAction::Send(bytes) => sent.push_str(&String::from_utf8(bytes).unwrap()),
                DeliveryAction::Read => match pieces.next() {
                    Some(piece) => client.feed(piece),
                    None => client.eof(),
                },
                DeliveryAction::StartTls => {
                    sent.push_str("<TLS>");
                    client.tls_established();
                }
                DeliveryAction::ReadyForContent => {
                    sent.push_str("<CONTENT>");
                    client.finish();
                }
                end => return (sent, end),
            }
        }
    }

    #[test]
    fn lmtp_delivery_at_every_split() {
        let script = b"220 mbx1 LMTP ready\r\n250-mbx1\r\n250-8BITMIME\r\n250-SIZE\r\n250 PIPELINING\r\n250 2.1.0 OK\r\n250 2.1.5 OK\r\n250 2.1.5 OK\r\n354 go\r\n250 2.0.0 <a> Saved\r\n452 4.2.2 Quota\r\n";
        for chunk in 1..=script.len() {
            let client = DeliveryClient::new(
                DeliveryProtocol::Lmtp,
                BackendTls::None,
                "cas1".into(),
                envelope(&["a@example.com", "b@example.com"]),
            );
            let (sent, end) = run(client, script, chunk);
            assert_eq!(
                sent,
                "LHLO cas1\r\nMAIL FROM:<s@x.org> BODY=8BITMIME SIZE=42\r\nRCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n<CONTENT>"
            );
            let DeliveryAction::Finished(results) = end else {
                panic!("{end:?}")
            };
            assert_eq!(results.len(), 2);
            assert!(results[0].1.is_positive() && results[1].1.is_transient());
        }
    }

    #[test]
    fn smtp_delivery_has_one_reply() {
        let script = b"220 relay\r\n250 relay\r\n250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n";
        let client = DeliveryClient::new(
            DeliveryProtocol::Smtp,
            BackendTls::None,
            "cas1".into(),
            envelope(&["x@other.org"]),
        );
        let (sent, end) = run(client, script, 4);
        assert!(
            sent.starts_with("EHLO cas1\r\nMAIL FROM:<s@x.org>\r\n"),
            "{sent}"
        );
        assert!(matches!(end, DeliveryAction::Finished(r) if r.len() == 1 && r[0].1.code == 250));
    }

    #[test]
    fn refusals_before_content() {
        for (script, code) in [
            (&b"554 no\r\n"[..], 554),
            (b"220 hi\r\n250 x\r\n451 busy\r\n", 451),
            (b"220 hi\r\n250 x\r\n250 ok\r\n550 5.1.1 unknown\r\n", 550),
            (
                b"220 hi\r\n250 x\r\n250 ok\r\n250 ok\r\n554 no data\r\n",
                554,
            ),
        ] {
            let client = DeliveryClient::new(
                DeliveryProtocol::Lmtp,
                BackendTls::None,
                "c".into(),
                envelope(&["a@example.com"]),
            );
            let (_, end) = run(client, script, 3);
            assert!(
                matches!(end, DeliveryAction::Refused(r) if r.code == code),
                "{script:?}"
            );
        }
        let client = DeliveryClient::new(
            DeliveryProtocol::Lmtp,
            BackendTls::None,
            "c".into(),
            envelope(&["a@example.com"]),
        );
        assert!(matches!(
            run(client, b"220 hi\r\n", 9).1,
            DeliveryAction::Failed(_)
        ));
        let client = DeliveryClient::new(
            DeliveryProtocol::Lmtp,
            BackendTls::None,
            "c".into(),
            envelope(&["a@example.com"]),
        );
        assert!(matches!(
            run(client, b"HTTP/1.1 400\r\n", 9).1,
            DeliveryAction::Failed(_)
        ));
    }

    #[test]
    fn verdict_policy() {
        let ok = Reply::new(250, "2.0.0 ok");
        let temp = Reply::new(452, "4.2.2 quota");
        let perm = Reply::new(550, "5.1.1 gone");
        let r = |list: &[&Reply]| -> Vec<(String, Reply)> {
            list.iter()
                .enumerate()
                .map(|(i, r)| (format!("r{i}"), (*r).clone()))
                .collect()
        };
        assert_eq!(verdict(&r(&[&ok, &ok])).code, 250);
        assert_eq!(verdict(&r(&[&temp, &perm])).code, 452);
        assert_eq!(verdict(&r(&[&perm, &perm])).code, 550);
        assert_eq!(verdict(&r(&[&ok, &perm])).code, 451);
        assert_eq!(verdict(&r(&[&ok, &temp])).code, 451);
        assert_eq!(verdict(&[]).code, 451);
    }
}
