//! The front-end transport driver: inbound mail for the organisation's mailboxes, and outbound
//! mail from the mailbox servers to the relay host. No queue: a message is streamed to one
//! backend while the client waits, and the client hears `250` only after that backend accepted
//! it for every recipient.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::tls::SharedAcceptor;
use mailfront_location::LocateError;
use mailfront_model::{DeliveryProtocol, Protocol, ServerName};
use mailfront_protocol::smtp::data::DotStuffer;
use mailfront_protocol::smtp::delivery::{DeliveryAction, DeliveryClient, verdict};
use mailfront_protocol::smtp::reply::Reply;
use mailfront_protocol::smtp::transport::{
    Envelope, TransportAction, TransportServer, TransportSettings,
};
use mailfront_routing::Endpoint;
use mailfront_routing::transport::{MailboxRecipient, delivery_candidates};
use rustls_pki_types::ServerName as TlsName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::Instrument;

use crate::Stream;
use crate::admission::Gateway;
use crate::client::{ClientIo, Received};
use crate::gate::Admitted;
use crate::metrics::ListenerLabels;

/// An address range (`10.0.0.0/8`, `::1/128`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            // An IPv4 client may appear as a v4-mapped IPv6 address on a dual-stack socket.
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let bits = u32::from(self.prefix.min(32));
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let bits = u32::from(self.prefix.min(128));
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - bits)
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an address or address/prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: bad prefix length"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

/// What a transport listener is for.
#[derive(Clone, Debug)]
pub enum TransportMode {
    /// Mail for the organisation's mailboxes (port 25).
    Inbound {
        /// Domains whose recipients are looked up; any other domain is relaying (refused).
        accepted_domains: Vec<String>,
    },
    /// Mail leaving the organisation, accepted only from the mailbox servers (like port 717).
    Outbound {
        /// Where it goes.
        relay: Endpoint,
        /// Who may connect.
        allowed_sources: Vec<Cidr>,
    },
}

/// Per-listener settings of the transport driver.
#[derive(Clone)]
pub struct TransportContext {
    /// The listener's name.
    pub name: String,
    /// The SMTP machine's settings.
    pub settings: TransportSettings,
    /// TLS for STARTTLS or implicit TLS.
    pub acceptor: Arc<SharedAcceptor>,
    /// Inbound or outbound.
    pub mode: TransportMode,
    /// Longest client silence (`timeouts.smtp_idle`).
    pub idle: Duration,
    /// Longest wait for a backend reply or write during delivery (`timeouts.delivery`).
    pub delivery: Duration,
}

impl std::fmt::Debug for TransportContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportContext")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A delivery in progress at one backend.
struct OpenDelivery {
    server: String,
    stream: Stream,
    client: DeliveryClient,
    stuffer: DotStuffer,
    buf: Vec<u8>,
    /// Set when writing content failed; the rest is dropped and this is the reply.
    broken: Option<Reply>,
    size: u64,
}

fn no_server() -> Reply {
    Reply::new(451, "4.4.0 No mailbox server available, try again later")
}

/// Serves one SMTP connection on a transport listener.
pub async fn serve(context: Arc<TransportContext>, gateway: Arc<Gateway>, connection: Admitted) {
    let Admitted {
        tcp,
        client: client_addr,
        slots: _slots,
    } = connection;
    let started = Instant::now();
    let id = format!("{:016x}", rand::random::<u64>());
    let span = tracing::info_span!("session", id = %id);
    async move {
        let refused = match &context.mode {
            TransportMode::Outbound { allowed_sources, .. } => {
                !allowed_sources.iter().any(|c| c.contains(client_addr.ip()))
            }
            TransportMode::Inbound { .. } => false,
        };
        let mut machine = if refused {
            tracing::warn!(session = %id, client = %client_addr, listener = %context.name, "connection refused: not a mailbox server");
            TransportServer::refuse(context.settings.clone(), "Not a mailbox server of this organisation")
        } else {
            TransportServer::new(context.settings.clone())
        };
        let mut client = ClientIo::new(Stream::Plain(tcp));
        let result = run(&context, &gateway, &mut machine, &mut client, &id, client_addr).await;
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

async fn run(
    context: &TransportContext,
    gateway: &Gateway,
    machine: &mut TransportServer,
    client: &mut ClientIo,
    id: &str,
    client_addr: SocketAddr,
) -> &'static str {
    if context.settings.tls == mailfront_protocol::ClientTls::Implicit
        && let Err(end) = client
            .start_tls(context.acceptor.get().as_ref(), context.idle)
            .await
    {
        return end.as_str();
    }
    let mut open: Option<OpenDelivery> = None;
    let mut envelope: Option<Envelope> = None;
    let mut timed_out = false;
    // When the command being read must have arrived whole: set when a reply has gone out (the
    // client's turn begins), not moved by the bytes of a command dribbled in. Content is timed
    // per read instead (see `TransportServer::reading_content`).
    let mut command_deadline = Instant::now() + context.idle;
    loop {
        let action = match machine.next_action() {
            TransportAction::Send(bytes) => {
                client.queue(&bytes);
                command_deadline = Instant::now() + context.idle;
                continue;
            }
            other => other,
        };
        if let Err(end) = client.flush(context.idle).await {
            abort(open.take());
            return end.as_str();
        }
        if !matches!(action, TransportAction::Read) {
            // Lookups, deliveries and TLS handshakes have their own timeouts.
            command_deadline = Instant::now() + context.idle;
        }
        let read_deadline = if machine.reading_content() {
            Instant::now() + context.idle
        } else {
            command_deadline
        };
        match action {
            TransportAction::Send(_) => {}
            TransportAction::Read => match client.read(read_deadline).await {
                Ok(Received::Data(bytes)) => machine.feed(bytes),
                Ok(Received::TimedOut) => {
                    timed_out = true;
                    machine.idle_timeout();
                }
                Err(end) => {
                    machine.client_closed();
                    abort(open.take());
                    return end.as_str();
                }
            },
            TransportAction::StartTls => {
                if let Err(end) = client
                    .start_tls(context.acceptor.get().as_ref(), context.idle)
                    .await
                {
                    return end.as_str();
                }
                machine.tls_established();
            }
            TransportAction::Close => {
                abort(open.take());
                return if timed_out { "timeout" } else { "closed" };
            }
            TransportAction::CheckRecipient(address) => {
                let verdict = match &context.mode {
                    TransportMode::Inbound { accepted_domains } => {
                        resolve(gateway, accepted_domains, &address)
                            .await
                            .map(|_| ())
                    }
                    TransportMode::Outbound { .. } => Ok(()),
                };
                if let Err(reply) = &verdict {
                    tracing::info!(session = %id, recipient = %address, reply = %reply.summary(), "recipient refused");
                }
                machine.recipient_checked(verdict);
            }
            TransportAction::OpenDelivery(env) => {
                let result = open_delivery(context, gateway, &env).await;
                match result {
                    Ok(delivery) => {
                        open = Some(delivery);
                        envelope = Some(env);
                        machine.delivery_opened(Ok(()));
                    }
                    Err(reply) => {
                        tracing::warn!(session = %id, client = %client_addr, from = %env.from, recipients = env.recipients.len(), reply = %reply.summary(), "message refused");
                        machine.delivery_opened(Err(reply));
                    }
                }
            }
            TransportAction::Content(bytes) => {
                if let Some(delivery) = &mut open {
                    write_content(delivery, &bytes, context.delivery).await;
                }
            }
            TransportAction::FinishDelivery => {
                let (reply, server, size) = match open.take() {
                    Some(delivery) => {
                        let server = delivery.server.clone();
                        let size = delivery.size;
                        (finish(delivery, context.delivery).await, server, size)
                    }
                    None => (no_server(), "-".to_owned(), 0),
                };
                let env = envelope.take();
                tracing::info!(
                    session = %id,
                    client = %client_addr,
                    from = %env.as_ref().map_or("", |e| e.from.as_str()),
                    recipients = env.as_ref().map_or(0, |e| e.recipients.len()),
                    backend = %server,
                    size,
                    reply = %reply.summary(),
                    "message {}",
                    if reply.is_positive() { "delivered" } else { "not delivered" }
                );
                gateway
                    .metrics()
                    .messages
                    .get_or_create(&ListenerLabels {
                        listener: context.name.clone(),
                        reason: if reply.is_positive() {
                            "delivered".to_owned()
                        } else {
                            format!("{}xx", reply.code / 100)
                        },
                    })
                    .inc();
                machine.delivery_finished(reply);
            }
            TransportAction::AbortDelivery => {
                abort(open.take());
                envelope = None;
            }
        }
    }
}

/// Dropping the connection before the end-of-data line means the backend delivers nothing.
fn abort(open: Option<OpenDelivery>) {
    if let Some(delivery) = open {
        tracing::debug!(backend = %delivery.server, "delivery aborted");
    }
}

/// A recipient resolved to its mailbox: its primary address and its active server.
struct Resolved {
    address: String,
    active: ServerName,
}

async fn resolve(
    gateway: &Gateway,
    accepted_domains: &[String],
    address: &str,
) -> Result<Resolved, Reply> {
    let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
    if !accepted_domains
        .iter()
        .any(|d| d.eq_ignore_ascii_case(domain))
    {
        return Err(Reply::new(554, "5.7.1 Relaying denied"));
    }
    let lookup = tokio::time::timeout(
        gateway.settings().directory_timeout,
        gateway.directory().lookup(address),
    )
    .await;
    let principal = match lookup {
        Ok(Ok(Some(principal))) => principal,
        Ok(Ok(None)) => return Err(Reply::new(550, "5.1.1 User unknown")),
        Ok(Err(_)) | Err(_) => {
            return Err(Reply::new(
                451,
                "4.3.0 Directory unavailable, try again later",
            ));
        }
    };
    if !principal.allows(Protocol::Smtp) {
        return Err(Reply::new(
            550,
            "5.2.1 Mailbox disabled, not accepting messages",
        ));
    }
    match gateway.locator().locate(&principal.database) {
        Ok(active) => Ok(Resolved {
            address: principal.address,
            active,
        }),
        Err(LocateError::Unavailable | LocateError::UnknownDatabase) => Err(Reply::new(
            451,
            "4.3.0 Mailbox location unavailable, try again later",
        )),
    }
}

async fn open_delivery(
    context: &TransportContext,
    gateway: &Gateway,
    envelope: &Envelope,
) -> Result<OpenDelivery, Reply> {
    let topology = gateway.topology();
    let (targets, recipients): (Vec<(String, Endpoint, DeliveryProtocol)>, Vec<String>) =
        match &context.mode {
            TransportMode::Outbound { relay, .. } => (
                vec![("relay".to_owned(), relay.clone(), DeliveryProtocol::Smtp)],
                envelope.recipients.clone(),
            ),
            TransportMode::Inbound { accepted_domains } => {
                // Resolved again now: the freshest location decides, and aliases become the
                // mailbox's own address (what the mailbox server knows).
                let mut resolved = Vec::with_capacity(envelope.recipients.len());
                for address in &envelope.recipients {
                    match resolve(gateway, accepted_domains, address).await {
                        Ok(r) => resolved.push(r),
                        Err(reply) if reply.is_transient() => return Err(reply),
                        Err(_) => {
                            return Err(Reply::new(
                                451,
                                "4.3.0 Recipient changed, try again later",
                            ));
                        }
                    }
                }
                let mailboxes: Vec<MailboxRecipient<'_>> = resolved
                    .iter()
                    .map(|r| MailboxRecipient { active: &r.active })
                    .collect();
                let health = gateway.health();
                let candidates = delivery_candidates(
                    &topology,
                    &mailboxes,
                    &|s| health.is_healthy(s),
                    rand::random(),
                );
                let targets = candidates
                    .into_iter()
                    .filter_map(|name| {
                        let server = topology.server(&name)?;
                        let endpoint = server.endpoints.delivery.clone()?;
                        Some((
                            name.to_string(),
                            endpoint,
                            server.endpoints.delivery_protocol,
                        ))
                    })
                    .collect();
                let mut addresses: Vec<String> = Vec::new();
                for r in resolved {
                    if !addresses.contains(&r.address) {
                        addresses.push(r.address);
                    }
                }
                (targets, addresses)
            }
        };
    let helo = topology.node.name.clone();
    let delivered_envelope = Envelope {
        from: envelope.from.clone(),
        params: envelope.params.clone(),
        recipients,
    };
    for (name, endpoint, protocol) in targets {
        let server = ServerName::new(&name);
        match try_open(
            gateway,
            &endpoint,
            protocol,
            &helo,
            &delivered_envelope,
            context.delivery,
        )
        .await
        {
            Ok((stream, client)) => {
                gateway.health().mark_up(&server);
                return Ok(OpenDelivery {
                    server: name,
                    stream,
                    client,
                    stuffer: DotStuffer::new(),
                    buf: Vec::new(),
                    broken: None,
                    size: 0,
                });
            }
            Err(OpenFailure::Unreachable(why)) => {
                tracing::warn!(backend = %name, error = %why, "delivery server unreachable; trying the next candidate");
                gateway.health().mark_down(&server);
            }
            Err(OpenFailure::Refused(reply)) => {
                tracing::warn!(backend = %name, reply = %reply.summary(), "delivery server refused the envelope; trying the next candidate");
            }
        }
    }
    Err(no_server())
}

enum OpenFailure {
    Unreachable(String),
    Refused(Reply),
}

async fn try_open(
    gateway: &Gateway,
    endpoint: &Endpoint,
    protocol: DeliveryProtocol,
    helo: &str,
    envelope: &Envelope,
    timeout: Duration,
) -> Result<(Stream, DeliveryClient), OpenFailure> {
    let connect_timeout = gateway.settings().backend.connect;
    let tcp = tokio::time::timeout(
        connect_timeout,
        TcpStream::connect((endpoint.host.as_str(), endpoint.port)),
    )
    .await
    .map_err(|_| OpenFailure::Unreachable(format!("no connection within {connect_timeout:?}")))?
    .map_err(|e| OpenFailure::Unreachable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let mut stream = Stream::Plain(tcp);
    if endpoint.tls == mailfront_model::BackendTls::Implicit {
        tls_connect(gateway, &mut stream, endpoint).await?;
    }
    let mut client = DeliveryClient::new(protocol, endpoint.tls, helo.to_owned(), envelope.clone());
    let mut buf = vec![0u8; 4096];
    let dialogue = async {
        loop {
            match client.next_action() {
                DeliveryAction::Send(bytes) => {
                    stream
                        .write_all(&bytes)
                        .await
                        .map_err(|e| OpenFailure::Unreachable(e.to_string()))?;
                }
                DeliveryAction::Read => {
                    let n = stream
                        .read(&mut buf)
                        .await
                        .map_err(|e| OpenFailure::Unreachable(e.to_string()))?;
                    match buf.get(..n) {
                        Some([]) | None => client.eof(),
                        Some(bytes) => client.feed(bytes),
                    }
                }
                DeliveryAction::StartTls => {
                    tls_connect(gateway, &mut stream, endpoint).await?;
                    client.tls_established();
                }
                DeliveryAction::ReadyForContent => return Ok(()),
                DeliveryAction::Refused(reply) => {
                    let _ = stream.write_all(&client.quit()).await;
                    return Err(OpenFailure::Refused(reply));
                }
                DeliveryAction::Failed(why) => return Err(OpenFailure::Unreachable(why)),
                DeliveryAction::Finished(_) => {
                    return Err(OpenFailure::Unreachable("finished before content".into()));
                }
            }
        }
    };
    tokio::time::timeout(timeout, dialogue)
        .await
        .map_err(|_| OpenFailure::Unreachable(format!("no answer within {timeout:?}")))??;
    Ok((stream, client))
}

async fn tls_connect(
    gateway: &Gateway,
    stream: &mut Stream,
    endpoint: &Endpoint,
) -> Result<(), OpenFailure> {
    let connector = gateway.backend_tls().ok_or_else(|| {
        OpenFailure::Unreachable("TLS needed but no [backend_tls] configured".into())
    })?;
    let name = TlsName::try_from(endpoint.host.clone())
        .map_err(|e| OpenFailure::Unreachable(e.to_string()))?;
    stream
        .connect_tls(connector, name)
        .await
        .map_err(|e| OpenFailure::Unreachable(format!("TLS: {e}")))
}

async fn write_content(delivery: &mut OpenDelivery, content: &[u8], timeout: Duration) {
    if delivery.broken.is_some() {
        return;
    }
    delivery.size += content.len() as u64;
    delivery.buf.clear();
    delivery.stuffer.encode(content, &mut delivery.buf);
    match tokio::time::timeout(timeout, delivery.stream.write_all(&delivery.buf)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(backend = %delivery.server, error = %e, "delivery server failed during content");
            delivery.broken = Some(Reply::new(
                451,
                "4.4.2 Connection to the mailbox server lost, try again later",
            ));
        }
        Err(_) => {
            delivery.broken = Some(Reply::new(
                451,
                "4.4.2 Mailbox server too slow, try again later",
            ));
        }
    }
}

async fn finish(mut delivery: OpenDelivery, timeout: Duration) -> Reply {
    if let Some(reply) = delivery.broken.take() {
        return reply;
    }
    delivery.buf.clear();
    delivery.stuffer.finish(&mut delivery.buf);
    let stream = &mut delivery.stream;
    let client = &mut delivery.client;
    let end = &delivery.buf;
    let outcome = async {
        stream.write_all(end).await.map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        client.finish();
        let mut buf = vec![0u8; 4096];
        loop {
            match client.next_action() {
                DeliveryAction::Read => {
                    let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
                    match buf.get(..n) {
                        Some([]) | None => client.eof(),
                        Some(bytes) => client.feed(bytes),
                    }
                }
                DeliveryAction::Finished(results) => {
                    let _ = stream.write_all(&client.quit()).await;
                    return Ok(verdict(&results));
                }
                DeliveryAction::Failed(why) => return Err(why),
                other => return Err(format!("unexpected step: {other:?}")),
            }
        }
    };
    match tokio::time::timeout(timeout, outcome).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(why)) => {
            tracing::warn!(backend = %delivery.server, error = %why, "delivery failed after the content");
            // The backend may or may not have delivered; the sender retries (a duplicate at
            // worst, never a loss).
            Reply::new(451, "4.4.2 Delivery not confirmed, try again later")
        }
        Err(_) => Reply::new(451, "4.4.2 Delivery not confirmed in time, try again later"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(c("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!c("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(c("10.0.0.0/8").contains(ip("10.200.1.1")));
        assert!(c("0.0.0.0/0").contains(ip("192.0.2.1")));
        assert!(c("127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        assert!(c("2001:db8::/32").contains(ip("2001:db8:1::5")));
        assert!(!c("2001:db8::/32").contains(ip("2001:db9::5")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("host".parse::<Cidr>().is_err());
    }
}
