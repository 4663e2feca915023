//! Mail transfer: the SMTP listeners — inbound mail for the organisation's mailboxes (the seeds'
//! front-end transport), and outbound mail from the mailbox servers to the relay host. No queue: a message is streamed to one
//! backend while the client waits, and the client hears `250` only after that backend accepted
//! it for every recipient.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mailfront_metrics::ListenerLabels;
use mailfront_model::{Cidr, Protocol};
use mailfront_net::Stream;
use mailfront_net::conn::{Conn, TlsRole};
use mailfront_net::gate::Connection;
use mailfront_net::pump::{Interrupt, Pace, pump};
use mailfront_net::tls::SharedAcceptor;
use mailfront_protocol::smtp::delivery::Origin;
use mailfront_protocol::smtp::receiver::{Envelope, Receiver, ReceiverEvent, ReceiverSettings};
use mailfront_protocol::smtp::reply::Reply;
use mailfront_protocol::smtp::trace::{self, Trace};
use mailfront_routing::Endpoint;
use tokio::time::Instant;
use tracing::Instrument;

use crate::NodeServices;

mod delivery;
mod recipients;

use delivery::OpenDelivery;
pub use recipients::NonMailboxRecipients;

/// What a transport listener is for.
#[derive(Clone, Debug)]
pub enum TransferMode {
    /// Mail for the organisation's mailboxes (port 25).
    Inbound {
        /// Domains whose recipients are looked up; any other domain is relaying (refused).
        accepted_domains: Vec<String>,
        /// Addresses in those domains taken though they are not mailboxes.
        non_mailbox: NonMailboxRecipients,
    },
    /// Mail leaving the organisation, accepted only from the mailbox servers (like port 717).
    Outbound {
        /// Where it goes.
        relay: Endpoint,
        /// Who may connect.
        allowed_sources: Vec<Cidr>,
    },
}

/// Per-listener settings of a mail-transfer (SMTP) listener.
#[derive(Clone)]
pub struct MailTransferContext {
    /// The listener's name.
    pub name: String,
    /// The SMTP machine's settings.
    pub settings: ReceiverSettings,
    /// TLS for STARTTLS or implicit TLS.
    pub acceptor: Arc<SharedAcceptor>,
    /// Inbound or outbound.
    pub mode: TransferMode,
    /// Longest client silence (`timeouts.smtp_idle`).
    pub idle: Duration,
    /// Longest wait for a backend reply or write during delivery (`timeouts.delivery`).
    pub delivery: Duration,
}

impl std::fmt::Debug for MailTransferContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailTransferContext")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Serves one SMTP connection on a transport listener.
pub async fn serve(
    context: Arc<MailTransferContext>,
    services: Arc<NodeServices>,
    connection: Connection,
) {
    let Connection {
        tcp,
        client: client_addr,
        slots: _slots,
    } = connection;
    let started = Instant::now();
    let id = format!("{:016x}", rand::random::<u64>());
    let span = tracing::info_span!("session", id = %id);
    async move {
        let refused = match &context.mode {
            TransferMode::Outbound { allowed_sources, .. } => {
                !allowed_sources.iter().any(|c| c.contains(client_addr.ip()))
            }
            TransferMode::Inbound { .. } => false,
        };
        let mut machine = if refused {
            tracing::warn!(session = %id, client = %client_addr, listener = %context.name, "connection refused: not a mailbox server");
            Receiver::refuse(context.settings.clone(), "Not a mailbox server of this organisation")
        } else {
            Receiver::new(session_settings(&context, &services))
        };
        let mut client = Conn::new(Stream::Plain(tcp));
        let result = run(&context, &services, &mut machine, &mut client, &id, client_addr).await;
        client.close().await;
        tracing::info!(
            session = %id,
            client = %client_addr,
            protocol = %Protocol::Smtp,
            listener = %context.name,
            duration_ms = started.elapsed().as_millis() as u64,
            result = %result,
            "session ended"
        );
    }
    .instrument(span)
    .await;
}

/// The listener's settings for a new session: an inbound listener offers DSN and SMTPUTF8
/// while every delivery server is known to announce them (they are passed on, never handled
/// here); an outbound one offers neither.
fn session_settings(context: &MailTransferContext, services: &NodeServices) -> ReceiverSettings {
    let mut settings = context.settings.clone();
    if let TransferMode::Inbound { .. } = context.mode {
        let topology = services.resolver.topology();
        let delivery_servers = topology
            .servers
            .values()
            .filter(|s| s.endpoints.delivery.is_some())
            .map(|s| &s.name);
        settings.passes_on = services.resolver.health().delivery_offers(delivery_servers);
    }
    settings
}

/// The pace of an SMTP session: a command must arrive whole within `smtp_idle` of the reply
/// before it (bytes dribbled in do not move that deadline), and message content may pause for
/// up to `smtp_idle` between reads (RFC 5321 §4.5.3.2).
struct CommandPace {
    idle: Duration,
    command_deadline: Instant,
}

impl Pace<Receiver> for CommandPace {
    fn read_deadline(&mut self, machine: &Receiver) -> Instant {
        if machine.reading_content() {
            Instant::now() + self.idle
        } else {
            self.command_deadline
        }
    }

    fn write_timeout(&self) -> Duration {
        self.idle
    }

    fn turned(&mut self) {
        // A reply went out, or a lookup, a delivery or a handshake was made (each with its own
        // time limit): the client's turn begins now.
        self.command_deadline = Instant::now() + self.idle;
    }
}

/// One SMTP session's state beside its machine: the delivery under way and its envelope.
struct Transfer<'a> {
    context: &'a MailTransferContext,
    services: &'a NodeServices,
    id: &'a str,
    client_addr: SocketAddr,
    /// The client connection's TLS version and cipher, as of the message being opened.
    tls: Option<(String, String)>,
    open: Option<OpenDelivery>,
    envelope: Option<Envelope>,
}

async fn run(
    context: &MailTransferContext,
    services: &NodeServices,
    machine: &mut Receiver,
    client: &mut Conn,
    id: &str,
    client_addr: SocketAddr,
) -> &'static str {
    let acceptor = context.acceptor.get();
    if context.settings.tls == mailfront_protocol::ClientTls::Implicit
        && let Err(end) = client.accept_tls(acceptor.as_ref(), context.idle).await
    {
        return end.as_str();
    }
    let mut pace = CommandPace {
        idle: context.idle,
        command_deadline: Instant::now() + context.idle,
    };
    let role = TlsRole::Server(acceptor.as_ref());
    let mut transfer = Transfer {
        context,
        services,
        id,
        client_addr,
        tls: None,
        open: None,
        envelope: None,
    };
    let mut timed_out = false;
    loop {
        match pump(machine, client, role, &mut pace).await {
            Ok(ReceiverEvent::Close) => {
                transfer.abort();
                return if timed_out { "timeout" } else { "closed" };
            }
            Ok(event) => {
                if matches!(event, ReceiverEvent::OpenDelivery(_)) {
                    transfer.tls = client.stream.tls_parameters();
                }
                transfer.handle(machine, event).await;
            }
            Err(Interrupt::TimedOut) => {
                timed_out = true;
                machine.idle_timeout();
            }
            Err(interrupt) => {
                machine.client_closed();
                transfer.abort();
                return interrupt.into_end().map_or("client-error", |e| e.as_str());
            }
        }
    }
}

impl Transfer<'_> {
    /// Acts on one event of the SMTP machine and tells it the outcome.
    async fn handle(&mut self, machine: &mut Receiver, event: ReceiverEvent) {
        let (context, services) = (self.context, self.services);
        match event {
            ReceiverEvent::Close => {}
            ReceiverEvent::CheckRecipient(address) => {
                let verdict = match &context.mode {
                    TransferMode::Inbound {
                        accepted_domains,
                        non_mailbox,
                    } => recipients::resolve(services, accepted_domains, non_mailbox, &address)
                        .await
                        .map(|_| ()),
                    TransferMode::Outbound { .. } => Ok(()),
                };
                if let Err(reply) = &verdict {
                    tracing::info!(session = %self.id, recipient = %address, reply = %reply.summary(), "recipient refused");
                }
                machine.recipient_checked(verdict);
            }
            ReceiverEvent::OpenDelivery(env) => {
                let (helo, esmtp) = machine.greeted_as().unwrap_or(("", false));
                let origin = Origin {
                    addr: self.client_addr.ip(),
                    port: self.client_addr.port(),
                    helo: Some(helo.to_owned()).filter(|h| !h.is_empty()),
                    esmtp,
                };
                match delivery::open(context, services, &env, &origin).await {
                    Ok(mut delivery) => {
                        // RFC 5321 §4.4: trace information first, then the client's content.
                        let header = self.received(&origin, &env);
                        delivery.write(header.as_bytes(), context.delivery).await;
                        self.open = Some(delivery);
                        self.envelope = Some(env);
                        machine.delivery_opened(Ok(()));
                    }
                    Err(reply) => {
                        tracing::warn!(session = %self.id, client = %self.client_addr, from = %env.from, recipients = env.recipients.len(), reply = %reply.summary(), "message refused");
                        machine.delivery_opened(Err(reply));
                    }
                }
            }
            ReceiverEvent::Content(bytes) => {
                if let Some(delivery) = &mut self.open {
                    delivery.write(&bytes, context.delivery).await;
                }
            }
            ReceiverEvent::FinishDelivery => {
                let reply = self.finish().await;
                machine.delivery_finished(reply);
            }
            ReceiverEvent::AbortDelivery => {
                self.abort();
                self.envelope = None;
            }
        }
    }

    /// The `Received:` header of the message `env` opens, from `origin`.
    fn received(&self, origin: &Origin, env: &Envelope) -> String {
        let node = self.services.resolver.topology().node.name.clone();
        trace::received(&Trace {
            helo: origin.helo.as_deref().unwrap_or(""),
            client: origin.addr,
            by: &node,
            esmtp: origin.esmtp,
            tls: self.tls.clone(),
            id: self.id,
            recipient: match env.recipients.as_slice() {
                [one] => Some(one.address.as_str()),
                _ => None,
            },
            at: std::time::SystemTime::now(),
        })
    }

    /// Ends the message at its server, and logs and counts the outcome.
    async fn finish(&mut self) -> Reply {
        let (reply, server, size) = match self.open.take() {
            Some(delivery) => {
                let server = delivery.server.clone();
                let size = delivery.size;
                (delivery.finish(self.context.delivery).await, server, size)
            }
            None => (Reply::no_server(), "-".to_owned(), 0),
        };
        let env = self.envelope.take();
        tracing::info!(
            session = %self.id,
            client = %self.client_addr,
            from = %env.as_ref().map_or("", |e| e.from.as_str()),
            recipients = env.as_ref().map_or(0, |e| e.recipients.len()),
            backend = %server,
            size,
            reply = %reply.summary(),
            "message {}",
            if reply.is_positive() { "delivered" } else { "not delivered" }
        );
        self.services
            .metrics
            .messages
            .get_or_create(&ListenerLabels {
                listener: self.context.name.clone(),
                reason: if reply.is_positive() {
                    "delivered".to_owned()
                } else {
                    format!("{}xx", reply.code / 100)
                },
            })
            .inc();
        reply
    }

    /// Drops the delivery under way, if any (the server delivers nothing).
    fn abort(&mut self) {
        if let Some(delivery) = self.open.take() {
            delivery.abort();
        }
    }
}
