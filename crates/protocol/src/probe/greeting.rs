//! The greeting probe: does the server greet as its protocol says a ready server does?

use super::{MAX_PROBE_LINE, ProbeEvent, excerpt};
use mailfront_model::DeliveryExtensions;

use crate::capabilities::Capabilities;
use crate::conversation::{Conversation, Input, Peer};
use crate::line::LineReader;
use crate::smtp::reply::{Reply, ReplyReader};

/// The tag of the probe's IMAP `LOGOUT` (any tag will do; this one names us in the server's
/// log).
const IMAP_LOGOUT: &[u8] = b"mfprobe LOGOUT\r\n";
/// POP3's and SMTP's goodbye (RFC 1939, RFC 5321 §4.1.1.10).
const QUIT: &[u8] = b"QUIT\r\n";

/// Which protocol's greeting to expect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Greeting {
    /// `* OK` or `* PREAUTH` (RFC 9051 §7.1), then `LOGOUT`.
    Imap,
    /// `+OK` (RFC 1939 §4), then `QUIT`.
    Pop3,
    /// `220` (RFC 5321 §4.2), then `QUIT`.
    Submission,
    /// `220`, `LHLO` answered by `250` (RFC 2033 §4.1), then `QUIT`.
    Lmtp,
    /// `220`, `EHLO` answered by `250`, then `QUIT`.
    Smtp,
}

impl Greeting {
    /// IMAP and POP3 greet in lines of their own; the SMTP family in SMTP replies.
    fn reader(self) -> Reader {
        match self {
            Greeting::Imap | Greeting::Pop3 => Reader::Lines(LineReader::new(MAX_PROBE_LINE)),
            Greeting::Submission | Greeting::Lmtp | Greeting::Smtp => {
                Reader::Replies(ReplyReader::new(MAX_PROBE_LINE))
            }
        }
    }

    /// The hello verb after the greeting, for the protocols whose health includes it: an LMTP
    /// server greets before it has checked that it can deliver, and the `LHLO` answer is the
    /// first reply that comes from the delivery side.
    fn hello(self) -> Option<&'static str> {
        match self {
            Greeting::Lmtp => Some("LHLO"),
            Greeting::Smtp => Some("EHLO"),
            Greeting::Imap | Greeting::Pop3 | Greeting::Submission => None,
        }
    }
}

/// The server's bytes: lines (IMAP, POP3) or SMTP replies.
#[derive(Debug)]
enum Reader {
    Lines(LineReader),
    Replies(ReplyReader),
}

impl Input for Reader {
    fn push(&mut self, bytes: &[u8]) {
        match self {
            Reader::Lines(lines) => lines.push(bytes),
            Reader::Replies(replies) => replies.push(bytes),
        }
    }

    fn clear(&mut self) {
        match self {
            Reader::Lines(lines) => lines.clear(),
            Reader::Replies(replies) => replies.clear(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Greeting,
    Hello,
}

/// The greeting probe. See the [module documentation](super).
#[derive(Debug)]
pub struct GreetingProbe {
    kind: Greeting,
    helo: String,
    peer: Peer<ProbeEvent, Reader>,
    stage: Stage,
    /// What an LMTP or SMTP server announced in its answer to `LHLO`/`EHLO`.
    offers: Option<DeliveryExtensions>,
}

/// A name that is safe to send after `LHLO`/`EHLO`: the characters of a domain or an address
/// literal only (a node name from the configuration must not be able to add a command).
fn hello_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '[' | ']' | ':'))
        .collect();
    if safe.is_empty() {
        "localhost".to_owned()
    } else {
        safe
    }
}

impl GreetingProbe {
    /// A probe of `kind`; `helo` is the name we greet with (LMTP, SMTP).
    pub fn new(kind: Greeting, helo: &str) -> Self {
        Self {
            kind,
            helo: hello_name(helo),
            // Nothing here upgrades to TLS, so whether the connection is encrypted is of no
            // consequence to the machine.
            peer: Peer::new(kind.reader(), false),
            stage: Stage::Greeting,
            offers: None,
        }
    }

    /// For a delivery server that answered `LHLO`/`EHLO`: which of the extensions an inbound
    /// listener passes on it announced.
    pub fn offers(&self) -> Option<DeliveryExtensions> {
        self.offers
    }

    fn healthy(&mut self, goodbye: &[u8]) {
        self.peer.send(goodbye);
        self.peer.finish(ProbeEvent::Healthy);
    }

    fn unhealthy(&mut self, why: String) {
        self.peer.finish(ProbeEvent::Unhealthy(why));
    }

    /// An IMAP or POP3 greeting line.
    fn on_line(&mut self, line: &[u8]) {
        let word = |prefix: &[u8], word: &[u8]| {
            line.strip_prefix(prefix).is_some_and(|rest| {
                rest.get(..word.len())
                    .is_some_and(|w| w.eq_ignore_ascii_case(word))
                    && matches!(rest.get(word.len()), None | Some(b' '))
            })
        };
        match self.kind {
            Greeting::Imap if word(b"* ", b"OK") || word(b"* ", b"PREAUTH") => {
                self.healthy(IMAP_LOGOUT);
            }
            Greeting::Pop3 if word(b"", b"+OK") => self.healthy(QUIT),
            _ => self.unhealthy(format!("greeting: {}", excerpt(line))),
        }
    }

    /// An SMTP-family reply.
    fn on_reply(&mut self, reply: &Reply) {
        match (self.stage, self.kind.hello()) {
            (Stage::Greeting, _) if reply.code != 220 => {
                self.unhealthy(format!("greeting: {}", reply_excerpt(reply)));
            }
            (Stage::Greeting, None) => self.healthy(QUIT),
            (Stage::Greeting, Some(verb)) => {
                let line = format!("{verb} {}\r\n", self.helo);
                self.peer.send(line);
                self.stage = Stage::Hello;
            }
            (Stage::Hello, _) if reply.code == 250 => {
                let announced = Capabilities::new(reply.lines.iter().skip(1).cloned().collect());
                self.offers = Some(DeliveryExtensions {
                    dsn: announced.has("DSN"),
                    smtputf8: announced.has("SMTPUTF8"),
                });
                self.healthy(QUIT)
            }
            (Stage::Hello, verb) => {
                let verb = verb.unwrap_or("hello");
                self.unhealthy(format!("{verb}: {}", reply_excerpt(reply)));
            }
        }
    }
}

/// A reply, fit for a log line.
fn reply_excerpt(reply: &Reply) -> String {
    excerpt(reply.summary().as_bytes())
}

impl Conversation for GreetingProbe {
    type Event = ProbeEvent;

    fn advance(&mut self) -> bool {
        match &mut self.peer.input {
            Reader::Lines(lines) => match lines.next_line() {
                Ok(None) => return false,
                Ok(Some(line)) => self.on_line(&line),
                Err(_) => self.unhealthy("greeting: line too long".into()),
            },
            Reader::Replies(replies) => match replies.next_reply() {
                Ok(None) => return false,
                Ok(Some(reply)) => self.on_reply(&reply),
                Err(error) => self.unhealthy(excerpt(error.to_string().as_bytes())),
            },
        }
        true
    }

    fn peer(&mut self) -> &mut Peer<ProbeEvent, impl Input> {
        &mut self.peer
    }
}
