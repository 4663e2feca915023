//! Handing one message to a mailbox server (LMTP, RFC 2033) or a relay (SMTP), sans I/O.
//!
//! The envelope is replayed (LHLO/EHLO, MAIL, RCPT for each recipient, DATA); the driver then
//! streams the content through a [`super::data::DotStuffer`] and calls
//! [`DeliveryClient::finish`]. LMTP answers once per recipient; SMTP once for all.
//!
//! With an [`Origin`], a server that announces `XCLIENT` (Postfix's extension; Dovecot's LMTP
//! offers it to `login_trusted_networks`) is told the real client first — its address, port and
//! EHLO name — so that its logs, its `Received:` line, Sieve and spam filters see the sender's
//! side instead of mailfront.

use std::net::IpAddr;

use mailfront_model::BackendTls;
pub use mailfront_model::DeliveryProtocol;

use super::command::{Body, Ret};
use super::receiver::{DeliveryExtensions, Envelope};
use super::reply::{Reply, ReplyReader};
use super::trace::is_clean_name;
use crate::capabilities::Capabilities;
use crate::conversation::{Conversation, Input, Peer};

const MAX_BACKEND_LINE: usize = 8 * 1024;

/// What the delivery client reports to its driver through [`Step::Event`](crate::Step::Event).
#[derive(Debug, PartialEq, Eq)]
pub enum DeliveryEvent {
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

/// Where a message came from, for a server that takes `XCLIENT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The client's address.
    pub addr: IpAddr,
    /// The client's port.
    pub port: u16,
    /// The name the client gave in EHLO/HELO, if any.
    pub helo: Option<String>,
    /// Whether it said EHLO (ESMTP) rather than HELO.
    pub esmtp: bool,
}

impl Origin {
    /// The client's EHLO name, if it is a clean domain or address literal.
    fn clean_helo(&self) -> Option<&str> {
        self.helo.as_deref().filter(|h| is_clean_name(h))
    }

    /// The `XCLIENT` command line (values as xtext, RFC 3461; an EHLO name that is not a clean
    /// domain or address literal is `[UNAVAILABLE]`).
    fn xclient(&self) -> String {
        let addr = match self.addr {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("IPV6:{v6}"),
        };
        let helo = self.clean_helo().unwrap_or("[UNAVAILABLE]");
        let proto = if self.esmtp { "ESMTP" } else { "SMTP" };
        format!(
            "XCLIENT ADDR={addr} PORT={} HELO={helo} PROTO={proto}\r\n",
            self.port
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Greeting,
    Hello,
    StartTls,
    Xclient,
    Mail,
    Rcpt(usize),
    Data,
    Content,
    Replies,
}

/// The delivery client. See the [module documentation](self).
#[derive(Debug)]
pub struct DeliveryClient {
    protocol: DeliveryProtocol,
    tls: BackendTls,
    helo: String,
    envelope: Envelope,
    /// The backend, whose bytes are read as SMTP replies.
    peer: Peer<DeliveryEvent, ReplyReader>,
    stage: Stage,
    extensions: Capabilities,
    results: Vec<(String, Reply)>,
    /// The client to tell the server about.
    origin: Option<Origin>,
    /// `XCLIENT` was sent (once per session).
    told: bool,
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
            peer: Peer::backend(ReplyReader::new(MAX_BACKEND_LINE), tls),
            stage: Stage::Greeting,
            extensions: Capabilities::default(),
            results: Vec::new(),
            origin: None,
            told: false,
        }
    }

    /// Which of the extensions a listener passes on the server announced in its answer to
    /// `LHLO`/`EHLO` (none before it).
    pub fn offers(&self) -> DeliveryExtensions {
        DeliveryExtensions {
            dsn: self.extensions.has("DSN"),
            smtputf8: self.extensions.has("SMTPUTF8"),
        }
    }

    /// Tells a server that announces `XCLIENT` where the message came from.
    pub fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = Some(origin);
        self
    }

    fn refuse(&mut self, reply: Reply) {
        self.peer.finish(DeliveryEvent::Refused(reply));
    }

    fn fail(&mut self, why: String) {
        self.peer.finish(DeliveryEvent::Failed(why));
    }

    fn hello(&mut self) {
        let name = self.helo.clone();
        self.greet(&name);
    }

    /// After `XCLIENT`: greets again in the client's name (a server takes the name of the
    /// greeting that follows as the session's, as Postfix and Dovecot do), or ours.
    fn hello_as_client(&mut self, origin: &Origin) {
        let name = origin.clean_helo().unwrap_or(&self.helo).to_owned();
        self.greet(&name);
    }

    fn greet(&mut self, name: &str) {
        let verb = match self.protocol {
            DeliveryProtocol::Lmtp => "LHLO",
            DeliveryProtocol::Smtp => "EHLO",
        };
        self.peer.send(format!("{verb} {name}\r\n"));
        self.stage = Stage::Hello;
    }

    /// What the envelope needs that the server does not offer, if anything: then the server
    /// cannot take the message as the client sent it.
    fn missing_extension(&self) -> Option<&'static str> {
        let needs_dsn = self.envelope.params.uses_dsn()
            || self.envelope.recipients.iter().any(|r| r.params.uses_dsn());
        if needs_dsn && !self.extensions.has("DSN") {
            Some("DSN")
        } else if self.envelope.params.smtputf8 && !self.extensions.has("SMTPUTF8") {
            Some("SMTPUTF8")
        } else {
            None
        }
    }

    fn mail(&mut self) {
        if let Some(extension) = self.missing_extension() {
            // Temporary: another server (or this one, upgraded) may take it.
            self.refuse(Reply::new(
                451,
                format!("4.3.3 The mailbox server does not offer {extension}"),
            ));
            return;
        }
        let mut line = format!("MAIL FROM:<{}>", self.envelope.from);
        match self.envelope.params.body {
            Some(Body::EightBitMime) if self.extensions.has("8BITMIME") => {
                line.push_str(" BODY=8BITMIME")
            }
            Some(Body::SevenBit) if self.extensions.has("8BITMIME") => line.push_str(" BODY=7BIT"),
            _ => {}
        }
        if let (Some(size), true) = (self.envelope.params.size, self.extensions.has("SIZE")) {
            line.push_str(&format!(" SIZE={size}"));
        }
        // Only a server that offers them hears these (checked above when the client used them).
        let params = &self.envelope.params;
        if self.extensions.has("DSN") {
            match params.ret {
                Some(Ret::Full) => line.push_str(" RET=FULL"),
                Some(Ret::Hdrs) => line.push_str(" RET=HDRS"),
                None => {}
            }
            if let Some(envid) = &params.envid {
                line.push_str(&format!(" ENVID={envid}"));
            }
        }
        if params.smtputf8 {
            line.push_str(" SMTPUTF8");
        }
        line.push_str("\r\n");
        self.peer.send(line);
        self.stage = Stage::Mail;
    }

    fn rcpt(&mut self, index: usize) {
        match self.envelope.recipients.get(index) {
            Some(to) => {
                let mut line = format!("RCPT TO:<{}>", to.address);
                if self.extensions.has("DSN") {
                    line.push_str(&to.params.to_string());
                }
                line.push_str("\r\n");
                self.peer.send(line);
                self.stage = Stage::Rcpt(index);
            }
            None => {
                self.peer.send("DATA\r\n");
                self.stage = Stage::Data;
            }
        }
    }

    /// The content has been sent (with its end-of-data line): read the verdicts.
    pub fn finish(&mut self) {
        if self.stage == Stage::Content {
            self.stage = Stage::Replies;
        }
    }

    /// The backend closed the connection.
    pub fn eof(&mut self) {
        if !self.peer.is_over() {
            self.fail("backend closed the connection".into());
        }
    }

    /// Ends the session politely (after success or refusal); nothing is left in flight.
    pub fn quit(&mut self) -> Vec<u8> {
        self.peer.close();
        b"QUIT\r\n".to_vec()
    }

    fn handle(&mut self, reply: Reply) {
        match self.stage {
            Stage::Greeting => {
                if reply.code == 220 {
                    self.hello();
                } else {
                    self.refuse(reply);
                }
            }
            Stage::Hello => {
                if reply.code != 250 {
                    self.refuse(reply);
                    return;
                }
                self.extensions = Capabilities::new(reply.lines.into_iter().skip(1).collect());
                if self.tls == BackendTls::StartTls && !self.peer.is_secure() {
                    if !self.extensions.has("STARTTLS") {
                        self.fail("backend does not offer STARTTLS".into());
                        return;
                    }
                    self.peer.send("STARTTLS\r\n");
                    self.stage = Stage::StartTls;
                    return;
                }
                if self.extensions.has("XCLIENT")
                    && let Some(origin) = &self.origin
                    && !self.told
                {
                    self.told = true;
                    self.peer.send(origin.xclient());
                    self.stage = Stage::Xclient;
                    return;
                }
                self.mail();
            }
            // Accepted: the server greets anew and is greeted again (its state was reset).
            // Refused: the message goes on without it (the server's own view of the sender).
            Stage::Xclient => {
                if reply.code == 220
                    && let Some(origin) = self.origin.take()
                {
                    self.hello_as_client(&origin);
                } else {
                    self.mail();
                }
            }
            Stage::StartTls => {
                if reply.code == 220 {
                    self.peer.start_tls();
                } else {
                    self.refuse(reply);
                }
            }
            Stage::Mail => {
                if reply.is_positive() {
                    self.rcpt(0);
                } else {
                    self.refuse(reply);
                }
            }
            Stage::Rcpt(index) => {
                if reply.is_positive() {
                    self.rcpt(index + 1);
                } else {
                    // All or nothing: a recipient this backend will not take means this backend
                    // cannot take the message as the client was promised it.
                    self.refuse(reply);
                }
            }
            Stage::Data => {
                if reply.is_intermediate() {
                    self.peer.steps.event(DeliveryEvent::ReadyForContent);
                    self.stage = Stage::Content;
                } else {
                    self.refuse(reply);
                }
            }
            Stage::Replies => {
                match self.protocol {
                    DeliveryProtocol::Smtp => {
                        self.results = self
                            .envelope
                            .recipients
                            .iter()
                            .map(|r| (r.address.clone(), reply.clone()))
                            .collect();
                    }
                    DeliveryProtocol::Lmtp => {
                        let index = self.results.len();
                        let to = self
                            .envelope
                            .recipients
                            .get(index)
                            .map(|r| r.address.clone())
                            .unwrap_or_default();
                        self.results.push((to, reply));
                    }
                }
                if self.results.len() >= self.envelope.recipients.len() {
                    let results = std::mem::take(&mut self.results);
                    self.peer.finish(DeliveryEvent::Finished(results));
                }
            }
            Stage::Content => self.fail(format!(
                "unexpected reply during content: {}",
                reply.summary()
            )),
        }
    }
}

impl Conversation for DeliveryClient {
    type Event = DeliveryEvent;

    fn advance(&mut self) -> bool {
        // While the driver streams the content, the backend has nothing to say.
        if self.stage == Stage::Content {
            return false;
        }
        match self.peer.input.next_reply() {
            Ok(None) => return false,
            Ok(Some(reply)) => self.handle(reply),
            Err(e) => self.fail(e.to_string()),
        }
        true
    }

    fn secured(&mut self) {
        self.hello();
    }

    fn peer(&mut self) -> &mut Peer<DeliveryEvent, impl Input> {
        &mut self.peer
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
    use crate::smtp::command::{MailParams, RcptParams};
    use crate::smtp::receiver::Recipient;
    use crate::testing::converse;

    fn envelope(recipients: &[&str]) -> Envelope {
        Envelope {
            from: "s@x.org".into(),
            params: MailParams {
                size: Some(42),
                body: Some(Body::EightBitMime),
                ..MailParams::default()
            },
            recipients: recipients
                .iter()
                .map(|r| Recipient {
                    address: (*r).to_owned(),
                    params: RcptParams::default(),
                })
                .collect(),
        }
    }

    /// Runs the client against `script`, finishing the content as soon as it is asked for;
    /// returns what was sent (with `<CONTENT>` where the content went) and the final event.
    fn run(client: DeliveryClient, script: &[u8], chunk: usize) -> (String, DeliveryEvent) {
        converse(
            client,
            script,
            chunk,
            DeliveryClient::eof,
            |client, sent, event| {
                if event != DeliveryEvent::ReadyForContent {
                    return Some(event);
                }
                sent.push_str("<CONTENT>");
                client.finish();
                None
            },
        )
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
            let DeliveryEvent::Finished(results) = end else {
                panic!("{end:?}")
            };
            assert_eq!(results.len(), 2);
            assert!(results[0].1.is_positive() && results[1].1.is_transient());
        }
    }

    #[test]
    fn dsn_and_smtputf8_go_only_to_a_server_that_offers_them() {
        let mut env = envelope(&["a@example.com"]);
        env.params.ret = Some(Ret::Full);
        env.params.envid = Some("e+2B1".into());
        env.params.smtputf8 = true;
        env.recipients[0].params = RcptParams {
            notify: Some("SUCCESS,FAILURE".into()),
            orcpt: Some("rfc822;a+40example.com".into()),
        };
        let client = |env: &Envelope| {
            DeliveryClient::new(
                DeliveryProtocol::Smtp,
                BackendTls::None,
                "cas1".into(),
                env.clone(),
            )
        };
        let offers = b"220 mx\r\n250-mx\r\n250-8BITMIME\r\n250-DSN\r\n250 SMTPUTF8\r\n250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n";
        let (sent, end) = run(client(&env), offers, offers.len());
        assert_eq!(
            sent,
            "EHLO cas1\r\nMAIL FROM:<s@x.org> BODY=8BITMIME RET=FULL ENVID=e+2B1 SMTPUTF8\r\nRCPT TO:<a@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+40example.com\r\nDATA\r\n<CONTENT>"
        );
        assert!(matches!(end, DeliveryEvent::Finished(_)));
        // A server without DSN cannot take a message that asks for notifications: it is
        // refused temporarily before MAIL, so the next candidate is tried.
        let plain = b"220 mx\r\n250-mx\r\n250 SMTPUTF8\r\n";
        let (sent, end) = run(client(&env), plain, 1);
        assert_eq!(sent, "EHLO cas1\r\n", "no MAIL (the driver says QUIT)");
        assert_eq!(
            end,
            DeliveryEvent::Refused(Reply::new(
                451,
                "4.3.3 The mailbox server does not offer DSN"
            ))
        );
        let mut utf8_only = env.clone();
        utf8_only.params = MailParams {
            smtputf8: true,
            ..MailParams::default()
        };
        utf8_only.recipients[0].params = RcptParams::default();
        let no_utf8 = b"220 mx\r\n250-mx\r\n250 DSN\r\n";
        let (_, end) = run(client(&utf8_only), no_utf8, 3);
        assert_eq!(
            end,
            DeliveryEvent::Refused(Reply::new(
                451,
                "4.3.3 The mailbox server does not offer SMTPUTF8"
            ))
        );
        // Nothing asked: nothing passed, whatever the server offers.
        let (sent, _) = run(client(&envelope(&["a@example.com"])), offers, 5);
        assert!(
            sent.starts_with(
                "EHLO cas1\r\nMAIL FROM:<s@x.org> BODY=8BITMIME\r\nRCPT TO:<a@example.com>\r\n"
            ),
            "{sent}"
        );
    }

    #[test]
    fn the_client_is_told_with_xclient_where_offered_and_only_once() {
        let origin = Origin {
            addr: "2001:db8::7".parse().unwrap(),
            port: 40123,
            helo: Some("client.example.org".into()),
            esmtp: true,
        };
        let client = || {
            DeliveryClient::new(
                DeliveryProtocol::Lmtp,
                BackendTls::None,
                "cas1".into(),
                envelope(&["a@example.com"]),
            )
            .with_origin(origin.clone())
        };
        let offered = b"220 mbx1\r\n250-mbx1\r\n250 XCLIENT ADDR PORT HELO\r\n220 mbx1 again\r\n250-mbx1\r\n250 XCLIENT ADDR\r\n250 ok\r\n250 ok\r\n354 go\r\n250 saved\r\n";
        for chunk in [1, 7, offered.len()] {
            let (sent, end) = run(client(), offered, chunk);
            assert_eq!(
                sent,
                "LHLO cas1\r\nXCLIENT ADDR=IPV6:2001:db8::7 PORT=40123 HELO=client.example.org PROTO=ESMTP\r\n\
                 LHLO client.example.org\r\nMAIL FROM:<s@x.org>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n<CONTENT>"
            );
            assert!(matches!(end, DeliveryEvent::Finished(_)), "{end:?}");
        }
        // Refused (not a trusted network): the message goes on regardless.
        let refused = b"220 mbx1\r\n250-mbx1\r\n250 XCLIENT ADDR\r\n550 5.7.14 not trusted\r\n250 ok\r\n250 ok\r\n354 go\r\n250 saved\r\n";
        let (sent, end) = run(client(), refused, 5);
        assert!(
            sent.contains("XCLIENT ")
                && sent.ends_with(
                    "MAIL FROM:<s@x.org>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n<CONTENT>"
                ),
            "{sent}"
        );
        assert!(matches!(end, DeliveryEvent::Finished(_)));
        // Not offered: never sent; a HELO name that is not a domain is not passed on.
        let plain = b"220 mbx1\r\n250 mbx1\r\n250 ok\r\n250 ok\r\n354 go\r\n250 saved\r\n";
        assert!(!run(client(), plain, 3).0.contains("XCLIENT"));
        let odd = Origin {
            helo: Some("bad name(".into()),
            esmtp: false,
            addr: "192.0.2.1".parse().unwrap(),
            ..origin.clone()
        };
        assert_eq!(
            odd.xclient(),
            "XCLIENT ADDR=192.0.2.1 PORT=40123 HELO=[UNAVAILABLE] PROTO=SMTP\r\n"
        );
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
        assert!(matches!(end, DeliveryEvent::Finished(r) if r.len() == 1 && r[0].1.code == 250));
    }

    #[test]
    fn refusals_before_content() {
        let client = || {
            DeliveryClient::new(
                DeliveryProtocol::Lmtp,
                BackendTls::None,
                "c".into(),
                envelope(&["a@example.com"]),
            )
        };
        for (script, code) in [
            (&b"554 no\r\n"[..], 554),
            (b"220 hi\r\n250 x\r\n451 busy\r\n", 451),
            (b"220 hi\r\n250 x\r\n250 ok\r\n550 5.1.1 unknown\r\n", 550),
            (
                b"220 hi\r\n250 x\r\n250 ok\r\n250 ok\r\n554 no data\r\n",
                554,
            ),
        ] {
            let (_, end) = run(client(), script, 3);
            assert!(
                matches!(end, DeliveryEvent::Refused(r) if r.code == code),
                "{script:?}"
            );
        }
        for script in [&b"220 hi\r\n"[..], b"HTTP/1.1 400\r\n"] {
            assert!(matches!(
                run(client(), script, 9).1,
                DeliveryEvent::Failed(_)
            ));
        }
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
