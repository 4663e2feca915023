//! The receiver of the front-end transport (the seeds' Front-End Transport service): an SMTP
//! server that accepts mail for the organisation's mailboxes and hands each message to one
//! mailbox server while the client waits. No queue: the client hears `250` for a message only
//! after a backend accepted it.
//!
//! The machine decides nothing about recipients or backends; it asks its driver with
//! [`ReceiverEvent::CheckRecipient`] and [`ReceiverEvent::OpenDelivery`], streams the content
//! with [`ReceiverEvent::Content`], and relays the driver's final verdict.

use super::command::{self, Command, CommandError, MailParams, RcptParams};
use super::data::DataDecoder;
use super::reply::Reply;
use super::submission::syntax_reply;
use crate::ClientTls;
use crate::conversation::{Conversation, Input, Peer};
use crate::line::LineReader;
pub use mailfront_model::DeliveryExtensions;

/// Commands that move no message forward (NOOP, RSET, VRFY, EXPN, HELP, and lines that do not
/// parse) a session may send before a message is accepted, and again after each one: beyond it
/// the session is closed with `421`, so that a client cannot hold a connection busy with junk
/// (Postfix's `smtpd_junk_command_limit` is 100 too).
pub const MAX_JUNK_COMMANDS: u32 = 100;

/// How a transport listener behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiverSettings {
    /// TLS on this listener.
    pub tls: ClientTls,
    /// The name in the greeting and the EHLO reply.
    pub hostname: String,
    /// Largest message accepted, in bytes (announced as SIZE).
    pub max_message_size: u64,
    /// Most recipients per message.
    pub max_recipients: usize,
    /// Longest command line.
    pub max_line_length: usize,
    /// Offer CHUNKING (BDAT, RFC 3030).
    pub chunking: bool,
    /// What the servers behind this listener take and this session may therefore pass on.
    pub passes_on: DeliveryExtensions,
}

impl Default for ReceiverSettings {
    fn default() -> Self {
        Self {
            tls: ClientTls::StartTls,
            hostname: "mailfront".to_owned(),
            max_message_size: 35 * 1024 * 1024,
            max_recipients: 100,
            max_line_length: 2048,
            chunking: true,
            passes_on: DeliveryExtensions::default(),
        }
    }
}

/// A message's envelope, as the backend will be told it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The reverse path (empty for `<>`).
    pub from: String,
    /// MAIL FROM parameters to pass on.
    pub params: MailParams,
    /// The accepted recipients, in order.
    pub recipients: Vec<Recipient>,
}

/// One accepted recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The forward path.
    pub address: String,
    /// Its RCPT parameters, to pass on.
    pub params: RcptParams,
}

/// What the transport machine reports to its driver through [`Step::Event`](crate::Step::Event).
#[derive(Debug, PartialEq, Eq)]
pub enum ReceiverEvent {
    /// Close the connection.
    Close,
    /// May this recipient receive mail here? Answer with [`Receiver::recipient_checked`].
    CheckRecipient(String),
    /// Content is about to arrive for this envelope: choose a backend and replay the envelope
    /// there. Answer with [`Receiver::delivery_opened`].
    OpenDelivery(Envelope),
    /// Canonical content (CRLF line endings, not dot-stuffed) for the open delivery.
    Content(Vec<u8>),
    /// The content is complete: finish the delivery and answer with
    /// [`Receiver::delivery_finished`].
    FinishDelivery,
    /// Drop the open delivery without delivering anything (client gone, message too large).
    AbortDelivery,
}

/// The replies of the transport's driver, for what only it sees: recipient lookups and
/// deliveries. Every failure on our side is temporary (`4xx`): the sender retries, nothing is
/// lost.
impl Reply {
    /// A recipient outside the accepted domains.
    pub fn relaying_denied() -> Reply {
        Reply::new(554, "5.7.1 Relaying denied")
    }

    /// A non-ASCII address in a transaction without `SMTPUTF8` (RFC 6531's enhanced code 5.6.7).
    pub fn needs_smtputf8() -> Reply {
        Reply::new(553, "5.6.7 Non-ASCII address requires SMTPUTF8")
    }

    /// A recipient the directory does not know.
    pub fn user_unknown() -> Reply {
        Reply::new(550, "5.1.1 User unknown")
    }

    /// A recipient whose mailbox may not receive mail.
    pub fn mailbox_disabled() -> Reply {
        Reply::new(550, "5.2.1 Mailbox disabled, not accepting messages")
    }

    /// The directory did not answer.
    pub fn directory_unavailable() -> Reply {
        Reply::new(451, "4.3.0 Directory unavailable, try again later")
    }

    /// Where the recipient's mailbox is could not be found out.
    pub fn location_unavailable() -> Reply {
        Reply::new(451, "4.3.0 Mailbox location unavailable, try again later")
    }

    /// A recipient accepted at RCPT is refused when the message is delivered.
    pub fn recipient_changed() -> Reply {
        Reply::new(451, "4.3.0 Recipient changed, try again later")
    }

    /// No mailbox server took the envelope.
    pub fn no_server() -> Reply {
        Reply::new(451, "4.4.0 No mailbox server available, try again later")
    }

    /// Writing the content to the mailbox server failed.
    pub fn connection_lost() -> Reply {
        Reply::new(
            451,
            "4.4.2 Connection to the mailbox server lost, try again later",
        )
    }

    /// The mailbox server did not take the content in time.
    pub fn server_too_slow() -> Reply {
        Reply::new(451, "4.4.2 Mailbox server too slow, try again later")
    }

    /// The mailbox server's verdict did not arrive (it may or may not have delivered).
    pub fn not_confirmed() -> Reply {
        Reply::new(451, "4.4.2 Delivery not confirmed, try again later")
    }

    /// The mailbox server's verdict did not arrive in time.
    pub fn not_confirmed_in_time() -> Reply {
        Reply::new(451, "4.4.2 Delivery not confirmed in time, try again later")
    }
}

#[derive(Debug, Default)]
struct Transaction {
    from: String,
    params: MailParams,
    recipients: Vec<Recipient>,
    /// Content bytes received (DATA or BDAT), for the size limit.
    size: u64,
    /// The delivery is open at the driver.
    open: bool,
    /// A BDAT transfer failed; the remaining chunks are read and answered with this.
    bdat_failed: Option<Reply>,
}

#[derive(Debug)]
enum Phase {
    Commands,
    /// Waiting for [`Receiver::recipient_checked`].
    CheckingRecipient(Recipient),
    /// Waiting for [`Receiver::delivery_opened`]; `bdat` holds the chunk command.
    Opening {
        bdat: Option<(u64, bool)>,
    },
    /// Reading DATA content; `discard` once the message is too large.
    Data {
        decoder: DataDecoder,
        discard: bool,
    },
    /// Reading a BDAT chunk's bytes.
    Chunk {
        remaining: u64,
        last: bool,
        discard: bool,
    },
    /// Waiting for [`Receiver::delivery_finished`].
    Finishing,
}

/// The front-end transport state machine. See the [module documentation](self).
#[derive(Debug)]
pub struct Receiver {
    settings: ReceiverSettings,
    /// The client, whose bytes are read as command lines or content.
    peer: Peer<ReceiverEvent, LineReader>,
    /// What the session is doing (also once it is over: nothing).
    phase: Phase,
    helo: Option<String>,
    /// The client said EHLO (not HELO): ESMTP, for the trace header.
    esmtp: bool,
    transaction: Option<Transaction>,
    /// Junk commands since the session began or a message was last accepted.
    junk_commands: u32,
}

impl Receiver {
    /// The name the client gave in its last EHLO or HELO, and whether it was EHLO (for the
    /// trace header, [`super::trace`]).
    pub fn greeted_as(&self) -> Option<(&str, bool)> {
        self.helo.as_deref().map(|name| (name, self.esmtp))
    }

    /// A new session; the greeting is the first step.
    pub fn new(settings: ReceiverSettings) -> Self {
        let mut server = Self {
            peer: Peer::new(
                LineReader::new(settings.max_line_length),
                settings.tls == ClientTls::Implicit,
            ),
            phase: Phase::Commands,
            helo: None,
            esmtp: false,
            transaction: None,
            junk_commands: 0,
            settings,
        };
        let greeting = Reply::new(220, format!("{} ESMTP ready", server.settings.hostname));
        server.reply(greeting);
        server
    }

    /// A session refused at connect (for example an unknown source on the outbound listener):
    /// the machine says `554` and closes (RFC 5321 §3.1).
    pub fn refuse(settings: ReceiverSettings, text: &str) -> Self {
        let mut server = Self::new(settings);
        server.peer.steps.clear();
        server.reply(Reply::new(554, format!("5.7.1 {text}")));
        server.peer.finish(ReceiverEvent::Close);
        server
    }

    fn reply(&mut self, reply: Reply) {
        self.peer.send(reply.to_bytes());
    }

    fn close_with(&mut self, reply: Reply) {
        self.reset_transaction();
        self.reply(reply);
        self.peer.steps.event(ReceiverEvent::Close);
        self.hang_up();
    }

    /// The client closed the connection: whatever was in flight is not delivered.
    pub fn client_closed(&mut self) {
        self.reset_transaction();
        self.hang_up();
    }

    /// Ends the session: nothing more is read, and nothing is in progress, so that a late
    /// answer from the driver (a recipient check, a delivery) is ignored.
    fn hang_up(&mut self) {
        self.phase = Phase::Commands;
        self.peer.close();
    }

    /// The client was silent for too long.
    pub fn idle_timeout(&mut self) {
        self.peer.steps.clear();
        self.close_with(Reply::new(421, "4.4.2 Timeout, closing connection"));
    }

    /// The node is shutting down.
    pub fn shutdown(&mut self) {
        self.peer.steps.clear();
        self.close_with(Reply::new(421, "4.3.2 Service shutting down"));
    }

    /// The answer to [`ReceiverEvent::CheckRecipient`]: `Err` carries the refusal to send.
    pub fn recipient_checked(&mut self, verdict: Result<(), Reply>) {
        let Phase::CheckingRecipient(recipient) =
            std::mem::replace(&mut self.phase, Phase::Commands)
        else {
            return;
        };
        match verdict {
            Ok(()) => {
                if let Some(transaction) = &mut self.transaction {
                    transaction.recipients.push(recipient);
                }
                self.reply(Reply::new(250, "2.1.5 OK"));
            }
            Err(reply) => self.reply(reply),
        }
    }

    /// The answer to [`ReceiverEvent::OpenDelivery`].
    pub fn delivery_opened(&mut self, result: Result<(), Reply>) {
        let Phase::Opening { bdat } = std::mem::replace(&mut self.phase, Phase::Commands) else {
            return;
        };
        let Some(transaction) = &mut self.transaction else {
            return;
        };
        match (result, bdat) {
            (Ok(()), None) => {
                transaction.open = true;
                self.reply(Reply::new(354, "Start mail input; end with <CRLF>.<CRLF>"));
                self.phase = Phase::Data {
                    decoder: DataDecoder::new(),
                    discard: false,
                };
            }
            (Err(reply), None) => {
                self.transaction = None;
                self.reply(reply);
            }
            (Ok(()), Some((size, last))) => {
                transaction.open = true;
                self.start_chunk(size, last);
            }
            (Err(reply), Some((size, last))) => {
                transaction.bdat_failed = Some(reply);
                self.phase = Phase::Chunk {
                    remaining: size,
                    last,
                    discard: true,
                };
            }
        }
    }

    /// The answer to [`ReceiverEvent::FinishDelivery`]: the reply for the message.
    pub fn delivery_finished(&mut self, reply: Reply) {
        if matches!(self.phase, Phase::Finishing) {
            if reply.is_positive() {
                self.junk_commands = 0;
            }
            self.transaction = None;
            self.phase = Phase::Commands;
            self.reply(reply);
        }
    }

    /// Forgets the mail transaction (RSET, and the implicit reset of EHLO, HELO and STARTTLS,
    /// RFC 5321 §4.1.4, RFC 3207 §4.2), dropping its delivery if one is open: between BDAT
    /// chunks a delivery is open while commands are read (found by fuzzing: EHLO there left it
    /// open at the driver).
    fn reset_transaction(&mut self) {
        if self.transaction.as_ref().is_some_and(|t| t.open) {
            self.peer.steps.event(ReceiverEvent::AbortDelivery);
        }
        self.transaction = None;
    }

    fn ehlo_reply(&self, client: &str) -> Reply {
        let settings = &self.settings;
        let mut reply = Reply::ehlo(&settings.hostname, client, settings.max_message_size);
        if settings.chunking {
            reply.lines.push("CHUNKING".to_owned());
        }
        if settings.tls.offers_starttls(self.peer.is_secure()) {
            reply.lines.push("STARTTLS".to_owned());
        }
        if settings.passes_on.dsn {
            reply.lines.push("DSN".to_owned());
        }
        if settings.passes_on.smtputf8 {
            reply.lines.push("SMTPUTF8".to_owned());
        }
        reply
    }

    fn command(&mut self, line: &[u8]) {
        let parsed = command::parse(line);
        if matches!(
            parsed,
            Err(_)
                | Ok(Command::Noop | Command::Rset | Command::Vrfy | Command::Expn | Command::Help)
        ) {
            self.junk_commands += 1;
            if self.junk_commands > MAX_JUNK_COMMANDS {
                self.reset_transaction();
                self.close_with(Reply::new(
                    421,
                    "4.7.0 Too many commands without a message, closing connection",
                ));
                return;
            }
        }
        let command = match parsed {
            Ok(command) => command,
            Err(error) => {
                self.reply(syntax_reply(error));
                return;
            }
        };
        match command {
            Command::Ehlo(client) => {
                self.helo = Some(client.clone());
                self.esmtp = true;
                self.reset_transaction();
                let reply = self.ehlo_reply(&client);
                self.reply(reply);
            }
            Command::Helo(client) => {
                self.helo = Some(client);
                self.esmtp = false;
                self.reset_transaction();
                let name = self.settings.hostname.clone();
                self.reply(Reply::new(250, name));
            }
            Command::Lhlo(_) | Command::Auth { .. } => {
                self.reply(Reply::new(502, "5.5.1 Command not implemented"))
            }
            Command::StartTls => match Reply::starttls(self.settings.tls, self.peer.is_secure()) {
                Ok(ready) => {
                    self.reset_transaction();
                    self.reply(ready);
                    self.peer.start_tls();
                }
                Err(refusal) => self.reply(refusal),
            },
            Command::Mail { from, params } => {
                let offered = self.settings.passes_on;
                if self.helo.is_none() {
                    self.reply(Reply::new(503, "5.5.1 Send HELO/EHLO first"));
                } else if self.transaction.is_some() {
                    self.reply(Reply::new(503, "5.5.1 Nested MAIL command"));
                } else if (params.uses_dsn() && !offered.dsn)
                    || (params.smtputf8 && !offered.smtputf8)
                {
                    self.reply(syntax_reply(CommandError::Parameter));
                } else if !params.smtputf8 && !from.is_ascii() {
                    self.reply(Reply::needs_smtputf8());
                } else if params
                    .size
                    .is_some_and(|s| s > self.settings.max_message_size)
                {
                    self.reply(Reply::new(
                        552,
                        "5.3.4 Message size exceeds fixed maximum message size",
                    ));
                } else {
                    self.transaction = Some(Transaction {
                        from,
                        params,
                        ..Transaction::default()
                    });
                    self.reply(Reply::new(250, "2.1.0 OK"));
                }
            }
            Command::Rcpt { to, params } => match &self.transaction {
                None => self.reply(Reply::new(503, "5.5.1 Need MAIL command first")),
                Some(t) if t.recipients.len() >= self.settings.max_recipients => {
                    self.reply(Reply::new(452, "4.5.3 Too many recipients"));
                }
                Some(_) if params.uses_dsn() && !self.settings.passes_on.dsn => {
                    self.reply(syntax_reply(CommandError::Parameter));
                }
                Some(t) if !t.params.smtputf8 && !to.is_ascii() => {
                    self.reply(Reply::needs_smtputf8());
                }
                Some(_) => {
                    self.peer
                        .steps
                        .event(ReceiverEvent::CheckRecipient(to.clone()));
                    self.phase = Phase::CheckingRecipient(Recipient {
                        address: to,
                        params,
                    });
                }
            },
            Command::Data => self.start_content(None),
            Command::Bdat { size, last } if !self.settings.chunking => {
                self.refuse_content(
                    Reply::new(502, "5.5.1 CHUNKING not offered"),
                    Some((size, last)),
                );
            }
            Command::Bdat { size, last } => self.start_content(Some((size, last))),
            Command::Rset => {
                self.reset_transaction();
                self.reply(Reply::new(250, "2.0.0 OK"));
            }
            Command::Noop => self.reply(Reply::new(250, "2.0.0 OK")),
            Command::Quit => self.close_with(Reply::new(221, "2.0.0 Bye")),
            Command::Vrfy => self.reply(Reply::new(252, "2.5.0 Cannot VRFY user")),
            Command::Expn => self.reply(Reply::new(502, "5.5.1 EXPN not available")),
            Command::Help => self.reply(Reply::new(214, "2.0.0 See RFC 5321")),
        }
    }

    /// Refuses DATA or a BDAT chunk (`bdat`: its size and LAST flag) with `reply`. A refused
    /// chunk's bytes are on their way: they are read and dropped, never taken for commands.
    fn refuse_content(&mut self, reply: Reply, bdat: Option<(u64, bool)>) {
        self.reply(reply);
        if let Some((size, _)) = bdat {
            self.phase = Phase::Chunk {
                remaining: size,
                last: false,
                discard: true,
            };
        }
    }

    fn start_content(&mut self, bdat: Option<(u64, bool)>) {
        let Some(transaction) = &mut self.transaction else {
            self.refuse_content(Reply::new(503, "5.5.1 Need MAIL command first"), bdat);
            return;
        };
        if transaction.recipients.is_empty() {
            self.refuse_content(Reply::new(554, "5.5.1 No valid recipients"), bdat);
            return;
        }
        match bdat {
            // A transfer already open (or already failed) continues with this chunk.
            Some((size, last)) if transaction.open || transaction.bdat_failed.is_some() => {
                self.start_chunk(size, last);
            }
            _ => {
                // A BDAT transfer has begun once a chunk was accepted or refused, even an empty
                // one (`BDAT 0` leaves the size at 0 with the delivery open; found by fuzzing).
                let bdat_begun =
                    transaction.size > 0 || transaction.open || transaction.bdat_failed.is_some();
                if bdat.is_none() && bdat_begun {
                    self.reply(Reply::new(503, "5.5.1 DATA after BDAT"));
                    return;
                }
                // A first chunk announced over the size limit is refused from its command
                // line: no mailbox server hears of a transaction that cannot succeed.
                if let Some((size, last)) = bdat
                    && size > self.settings.max_message_size
                {
                    self.start_chunk(size, last);
                    return;
                }
                let envelope = Envelope {
                    from: transaction.from.clone(),
                    params: transaction.params.clone(),
                    recipients: transaction.recipients.clone(),
                };
                self.peer.steps.event(ReceiverEvent::OpenDelivery(envelope));
                self.phase = Phase::Opening { bdat };
            }
        }
    }

    fn start_chunk(&mut self, size: u64, last: bool) {
        let Some(transaction) = &mut self.transaction else {
            return;
        };
        let discard = transaction.bdat_failed.is_some();
        if !discard && transaction.size.saturating_add(size) > self.settings.max_message_size {
            transaction.bdat_failed = Some(Reply::new(
                552,
                "5.3.4 Message size exceeds fixed maximum message size",
            ));
            if transaction.open {
                transaction.open = false;
                self.peer.steps.event(ReceiverEvent::AbortDelivery);
            }
            self.phase = Phase::Chunk {
                remaining: size,
                last,
                discard: true,
            };
            return;
        }
        self.phase = Phase::Chunk {
            remaining: size,
            last,
            discard,
        };
    }

    fn chunk_done(&mut self, last: bool, discard: bool) {
        self.phase = Phase::Commands;
        let Some(transaction) = &mut self.transaction else {
            // A refused BDAT (no transaction): its bytes are read, its reply was sent.
            return;
        };
        if discard && transaction.bdat_failed.is_none() {
            // A chunk refused before a transfer existed.
            return;
        }
        if let Some(reply) = transaction.bdat_failed.clone() {
            if last {
                self.transaction = None;
            }
            self.reply(reply);
            return;
        }
        if last {
            self.peer.steps.event(ReceiverEvent::FinishDelivery);
            self.phase = Phase::Finishing;
        } else {
            let size = transaction.size;
            self.reply(Reply::new(250, format!("2.0.0 {size} octets received")));
        }
    }

    /// Whether the machine is reading message content (DATA or a BDAT chunk) rather than a
    /// command line. The driver times the two differently: content may take as long as it keeps
    /// flowing, a command must arrive whole within the idle timeout (RFC 5321 §4.5.3.2.7 times
    /// the wait for a command, and a client dribbling a line a byte at a time must not hold a
    /// connection for ever).
    pub fn reading_content(&self) -> bool {
        matches!(self.phase, Phase::Data { .. } | Phase::Chunk { .. })
    }
}

impl Conversation for Receiver {
    type Event = ReceiverEvent;

    fn advance(&mut self) -> bool {
        match &mut self.phase {
            Phase::Commands => {
                let line = match self.peer.input.next_line() {
                    Ok(Some(line)) => line,
                    Ok(None) => return false,
                    Err(_) => {
                        self.close_with(Reply::new(500, "5.5.6 Line too long"));
                        return true;
                    }
                };
                self.command(&line);
            }
            Phase::Data { decoder, discard } => {
                if self.peer.input.is_empty() {
                    return false;
                }
                let input = self.peer.input.take_all();
                let mut content = Vec::new();
                let used = decoder.decode(&input, &mut content);
                self.peer
                    .input
                    .unread(input.get(used..).unwrap_or_default());
                let size = decoder.size();
                let done = decoder.is_done();
                let mut now_discarding = false;
                if !*discard && size > self.settings.max_message_size {
                    *discard = true;
                    now_discarding = true;
                }
                let discarding = *discard;
                if now_discarding {
                    if let Some(t) = &mut self.transaction {
                        t.open = false;
                    }
                    self.peer.steps.event(ReceiverEvent::AbortDelivery);
                } else if !discarding && !content.is_empty() {
                    self.peer.steps.event(ReceiverEvent::Content(content));
                }
                if done {
                    if discarding {
                        self.transaction = None;
                        self.phase = Phase::Commands;
                        self.reply(Reply::new(
                            552,
                            "5.3.4 Message size exceeds fixed maximum message size",
                        ));
                    } else {
                        self.peer.steps.event(ReceiverEvent::FinishDelivery);
                        self.phase = Phase::Finishing;
                    }
                }
            }
            Phase::Chunk {
                remaining,
                last,
                discard,
            } => {
                let (last, discard) = (*last, *discard);
                if *remaining > 0 {
                    if self.peer.input.is_empty() {
                        return false;
                    }
                    let taken = self
                        .peer
                        .input
                        .take_bytes(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    *remaining -= taken.len() as u64;
                    if !discard {
                        if let Some(t) = &mut self.transaction {
                            t.size += taken.len() as u64;
                        }
                        self.peer.steps.event(ReceiverEvent::Content(taken));
                    }
                }
                if let Phase::Chunk { remaining: 0, .. } = self.phase {
                    self.chunk_done(last, discard);
                }
            }
            Phase::CheckingRecipient(_) | Phase::Opening { .. } | Phase::Finishing => return false,
        }
        true
    }

    fn secured(&mut self) {
        // RFC 3207 §4.2: the client starts over with EHLO.
        self.helo = None;
        self.transaction = None;
    }

    fn peer(&mut self) -> &mut Peer<ReceiverEvent, impl Input> {
        &mut self.peer
    }
}

#[cfg(test)]
mod tests;
