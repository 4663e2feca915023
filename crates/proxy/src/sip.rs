//! The SIP listeners: telephony requests are answered here, never proxied (routing rule 1).
//!
//! One SIP listener is a UDP socket and a TCP listener on the same address (or, with
//! `tls = "implicit"`, a TLS listener only: SIPS over TCP, RFC 3261 §26.2). Every request goes
//! through the sans-I/O [`mailfront_protocol::sip`] machinery; an `INVITE` asks the directory
//! who the dialed extension or address is (within `timeouts.directory`), the locator where the
//! user's database is active, and [`route()`] what to do — which, for SIP, is a redirect to the
//! voice-mail endpoint of that server (`sip = "…"` on the `[[server]]`, with `{user}` and
//! `{extension}` filled in by [`contact_uri`]). mailfront keeps no SIP state: the next INVITE
//! after a switchover is redirected to the new server.
//!
//! - UDP: one socket for the listener. A datagram over `max_message_size` is dropped and
//!   counted ([`SipStats::oversized_datagrams`]). Responses go back from the same socket to
//!   the address RFC 3261 §18.2.2 and RFC 3581 name: the datagram's source address, at its
//!   source port if the client asked for `rport`, otherwise at its Via port. Lookups run in
//!   their own tasks, at most `max_in_flight` at once; beyond that a request is answered `503`
//!   at once rather than queued.
//! - TCP and TLS: one task per connection, cut into messages by Content-Length; pipelined
//!   requests are answered in order on the same connection. A connection silent for
//!   `idle_timeout` is closed, and so is one whose framing is lost (an unreadable
//!   Content-Length: `400`; a message over the size limit: `513`).
//!
//! Each request writes one log line `sip request` with the listener, transport, client,
//! Call-ID, From, method, user, status, decision and server — never a body.

use std::hash::RandomState;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::tls::SharedAcceptor;
use mailfront_location::LocateError;
use mailfront_model::{Protocol, ServerName};
use mailfront_protocol::sip::{
    Frame, Ignored, Received, Reply, Request, SipLimits, Step, StreamFramer, Target, Unparseable,
    answer, contact_uri, read_request, render,
};
use mailfront_routing::{
    Decision, Facts, LocationFailure, Reason, RejectKind, Request as RouteRequest, route,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};

use crate::Stream;
use crate::admission::Gateway;
use crate::gate::{Admitted, Entry, Gate};
use crate::listener::accept_loop;

/// The settings of SIP listeners (`[sip]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SipSettings {
    /// Message size, header count and line length bounds.
    pub limits: SipLimits,
    /// Longest silence on a TCP or TLS connection before it is closed (`sip.idle_timeout`).
    pub idle_timeout: Duration,
    /// The `Retry-After` of a `503`, in seconds (`sip.retry_after`).
    pub retry_after: u32,
    /// Most UDP requests waiting for the directory at once (`sip.max_in_flight`).
    pub max_in_flight: usize,
}

impl Default for SipSettings {
    /// The default limits, 120 s, 30 s and 1024.
    fn default() -> Self {
        Self {
            limits: SipLimits::default(),
            idle_timeout: Duration::from_secs(120),
            retry_after: 30,
            max_in_flight: 1024,
        }
    }
}

/// Counters of a SIP listener, for metrics.
#[derive(Debug, Default)]
pub struct SipStats {
    /// Requests answered or absorbed (ACK).
    pub requests: AtomicU64,
    /// UDP datagrams dropped for being larger than `max_message_size`.
    pub oversized_datagrams: AtomicU64,
    /// Messages dropped without an answer: not SIP, responses, broken ACKs.
    pub ignored: AtomicU64,
    /// UDP requests answered `503` because `max_in_flight` lookups were already running.
    pub overloaded: AtomicU64,
}

/// One SIP listener's settings and counters.
pub struct SipContext {
    /// The listener's name (logs).
    pub name: String,
    /// The settings.
    pub settings: SipSettings,
    /// For `tls = "implicit"`: TCP connections are TLS, and there is no UDP.
    pub acceptor: Arc<SharedAcceptor>,
    /// The counters.
    pub stats: Arc<SipStats>,
    /// The key of the stateless To tags (RFC 3261 §8.2.7), made once per listener.
    tag_key: RandomState,
}

impl std::fmt::Debug for SipContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipContext")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .field("tls", &self.acceptor.is_some())
            .finish_non_exhaustive()
    }
}

impl SipContext {
    /// A listener's context with fresh counters.
    pub fn new(name: String, settings: SipSettings, acceptor: Arc<SharedAcceptor>) -> Self {
        Self {
            name,
            settings,
            acceptor,
            stats: Arc::new(SipStats::default()),
            tag_key: RandomState::new(),
        }
    }

    fn transport(&self) -> &'static str {
        if self.acceptor.is_some() {
            "tls"
        } else {
            "tcp"
        }
    }
}

/// Serves SIP on `tcp` and, if given, `udp` until `shutdown` turns true.
pub async fn run(
    tcp: TcpListener,
    udp: Option<UdpSocket>,
    gateway: Arc<Gateway>,
    context: Arc<SipContext>,
    gate: Arc<Gate>,
    shutdown: watch::Receiver<bool>,
) {
    let datagrams = udp.map(|udp| {
        tokio::spawn(run_udp(
            Arc::new(udp),
            Arc::clone(&gateway),
            Arc::clone(&context),
            shutdown.clone(),
        ))
    });
    let name = context.name.clone();
    let connection_shutdown = shutdown.clone();
    accept_loop(tcp, name, shutdown, move |tcp, peer| {
        let (gateway, context, gate, shutdown) = (
            Arc::clone(&gateway),
            Arc::clone(&context),
            Arc::clone(&gate),
            connection_shutdown.clone(),
        );
        tokio::spawn(async move {
            // No room, or a bad PROXY header: close (SIP clients retry elsewhere).
            if let Entry::Admitted(connection) = gate.admit(tcp, peer).await {
                let Admitted {
                    tcp,
                    client,
                    slots: _slots,
                } = connection;
                serve_connection(gateway, context, tcp, client, shutdown).await;
            }
        });
    })
    .await;
    if let Some(datagrams) = datagrams {
        let _ = datagrams.await;
    }
}

/// How one request was answered, for its log line.
struct Outcome {
    reply: Option<Reply>,
    user: String,
    server: Option<ServerName>,
    reason: String,
}

impl Outcome {
    fn reply(reply: Reply, reason: &str) -> Self {
        Outcome {
            reply: Some(reply),
            user: "-".to_owned(),
            server: None,
            reason: reason.to_owned(),
        }
    }
}

fn log_request(
    context: &SipContext,
    transport: &str,
    client: SocketAddr,
    method: &str,
    echo: &mailfront_protocol::sip::Echo,
    outcome: &Outcome,
) {
    context.stats.requests.fetch_add(1, Ordering::Relaxed);
    // Header values are the peer's text: cut short, control characters (terminal escapes)
    // replaced.
    let short = |text: &str| {
        text.chars()
            .take(200)
            .map(|c| if c.is_control() { '?' } else { c })
            .collect::<String>()
    };
    tracing::info!(
        listener = %context.name,
        transport = %transport,
        client = %client,
        call_id = %short(echo.call_id_for_log()),
        from = %short(echo.from_for_log()),
        method = %short(method),
        user = %outcome.user,
        status = outcome.reply.as_ref().map_or(0, Reply::status),
        decision = %outcome.reply.as_ref().map_or("absorbed", Reply::decision),
        server = %outcome.server.as_ref().map_or("-", ServerName::as_str),
        reason = %outcome.reason,
        "sip request"
    );
}

/// What the request needs, short of a lookup.
fn immediate(step: &Step) -> Option<Outcome> {
    match step {
        Step::Absorb => Some(Outcome {
            reply: None,
            user: "-".to_owned(),
            server: None,
            reason: "ACK absorbed".to_owned(),
        }),
        Step::Reply(reply) => {
            let reason = match reply {
                Reply::Options => "keep-alive",
                Reply::MethodNotAllowed => "method not handled",
                Reply::NoTransaction => "no transaction or dialog (stateless)",
                Reply::UnsupportedUriScheme => "unsupported URI scheme",
                Reply::NotFound => "the Request-URI names no user",
                _ => "-",
            };
            Some(Outcome::reply(reply.clone(), reason))
        }
        Step::Lookup(_) => None,
    }
}

/// Directory, locator, `route()`: the reply to an INVITE for `target`.
async fn decide(
    gateway: &Gateway,
    context: &SipContext,
    request: &Request,
    target: &Target,
) -> Outcome {
    let directory = gateway.directory();
    let timeout = gateway.settings().directory_timeout;
    let lookup = async {
        match target {
            Target::Extension(extension) => directory.lookup_extension(extension).await,
            Target::Address(address) => directory.lookup(address).await,
        }
    };
    let found = match tokio::time::timeout(timeout, lookup).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("directory: no answer within {timeout:?}")),
    };
    let topology = gateway.topology();
    let sip = RouteRequest::protocol(Protocol::Sip);
    let principal = match found {
        Ok(found) => found,
        Err(why) => {
            let decision = route(&topology, &sip, Facts::DirectoryUnavailable);
            return Outcome {
                reply: Some(reply_for(context, &decision, request, target, None)),
                user: target.to_string(),
                server: None,
                reason: format!("{}: {why}", decision.reason()),
            };
        }
    };
    let decision = match &principal {
        None => route(&topology, &sip, Facts::AuthFailed),
        Some(principal) => {
            let active = gateway.locator().locate(&principal.database);
            let active = active.as_ref().map_err(|e| match e {
                LocateError::Unavailable => LocationFailure::Unavailable,
                LocateError::UnknownDatabase => LocationFailure::UnknownDatabase,
            });
            route(&topology, &sip, Facts::Authenticated { principal, active })
        }
    };
    let extension = principal.as_ref().and_then(|p| p.sip_extension.as_deref());
    let reply = reply_for(context, &decision, request, target, extension);
    let server = match decision.reason() {
        Reason::Telephony { server, .. } => Some(server.clone()),
        _ => None,
    };
    let reason = match (&principal, decision.reason()) {
        (None, _) => format!(
            "no user with this {}",
            match target {
                Target::Extension(_) => "extension",
                Target::Address(_) => "address",
            }
        ),
        (Some(_), reason) => reason.to_string(),
    };
    Outcome {
        reply: Some(reply),
        user: principal.map_or_else(|| target.to_string(), |p| p.address),
        server,
        reason,
    }
}

/// The SIP reply for a routing decision. Unknown users and users without SIP get the same
/// `404` (mailfront_protocol::sip's table says why).
fn reply_for(
    context: &SipContext,
    decision: &Decision,
    request: &Request,
    target: &Target,
    extension: Option<&str>,
) -> Reply {
    let unavailable = Reply::ServiceUnavailable {
        retry_after: context.settings.retry_after,
    };
    match decision {
        Decision::Redirect { location, .. } => {
            let dialed = match target {
                Target::Extension(extension) => extension.as_str(),
                Target::Address(_) => request.uri.user.as_deref().unwrap_or_default(),
            };
            Reply::Redirect {
                contact: contact_uri(location, dialed, extension),
            }
        }
        Decision::Reject {
            kind: RejectKind::AuthFailed | RejectKind::ProtocolDisabled,
            ..
        } => Reply::NotFound,
        Decision::Reject {
            kind: RejectKind::Temporary,
            ..
        } => unavailable,
        Decision::Proxy { reason, .. } => {
            // route() always redirects SIP; refuse rather than guess.
            tracing::error!(listener = %context.name, %reason, "unexpected proxy decision for SIP");
            unavailable
        }
    }
}

/// Serves the UDP side: one socket, one receive loop, lookups in tasks.
async fn run_udp(
    socket: Arc<UdpSocket>,
    gateway: Arc<Gateway>,
    context: Arc<SipContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limit = context.settings.limits.max_message_size;
    // One byte more than the limit: a datagram that fills it is over the limit (the kernel
    // truncates what does not fit, silently).
    let mut buf = vec![0u8; limit.saturating_add(1).min(65_536)];
    let in_flight = Arc::new(Semaphore::new(context.settings.max_in_flight));
    loop {
        let (n, source) = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(error) => {
                    tracing::debug!(listener = %context.name, %error, "UDP receive failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
                continue;
            }
        };
        if n > limit {
            gateway.metrics().sip_dropped.inc();
            let dropped = context
                .stats
                .oversized_datagrams
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            // Logged at 1, 2, 4, 8, … and every 1000th, so a flood cannot flood the log.
            if dropped.is_power_of_two() || dropped.is_multiple_of(1000) {
                tracing::warn!(
                    listener = %context.name,
                    client = %source,
                    size = n,
                    limit,
                    dropped_total = dropped,
                    "sip datagram dropped: larger than sip.max_message_size"
                );
            }
            continue;
        }
        let datagram = buf.get(..n).unwrap_or_default();
        match read_request(datagram, &context.settings.limits) {
            Received::Ignore(why) => ignored(&context, "udp", source, why),
            Received::Reject {
                method,
                reply,
                echo,
            } => {
                let tag = echo.stateless_tag(&context.tag_key);
                let bytes = render(&reply, &echo, source, &tag);
                send_datagram(&socket, &context, &bytes, echo.udp_destination(source)).await;
                let outcome = Outcome::reply(reply, "malformed request");
                log_request(&context, "udp", source, &method, &echo, &outcome);
            }
            Received::Request(request) => {
                let step = request.step();
                if let Some(outcome) = immediate(&step) {
                    respond_udp(&socket, &context, &request, source, &outcome).await;
                    continue;
                }
                let Step::Lookup(target) = step else {
                    continue;
                };
                let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                    context.stats.overloaded.fetch_add(1, Ordering::Relaxed);
                    let reply = Reply::ServiceUnavailable {
                        retry_after: context.settings.retry_after,
                    };
                    let outcome =
                        Outcome::reply(reply, "overloaded: sip.max_in_flight lookups running");
                    respond_udp(&socket, &context, &request, source, &outcome).await;
                    continue;
                };
                let socket = Arc::clone(&socket);
                let gateway = Arc::clone(&gateway);
                let context = Arc::clone(&context);
                tokio::spawn(async move {
                    let outcome = decide(&gateway, &context, &request, &target).await;
                    respond_udp(&socket, &context, &request, source, &outcome).await;
                    drop(permit);
                });
            }
        }
    }
}

fn ignored(context: &SipContext, transport: &str, source: SocketAddr, why: Ignored) {
    context.stats.ignored.fetch_add(1, Ordering::Relaxed);
    let what = match why {
        Ignored::Unparseable(Unparseable::Empty) => return, // a keep-alive
        Ignored::Unparseable(why) => why.to_string(),
        Ignored::BrokenAck => "malformed ACK (never answered)".to_owned(),
    };
    tracing::debug!(listener = %context.name, transport = %transport, client = %source, what = %what, "sip message ignored");
}

async fn respond_udp(
    socket: &UdpSocket,
    context: &SipContext,
    request: &Request,
    source: SocketAddr,
    outcome: &Outcome,
) {
    if let Some(reply) = &outcome.reply {
        let tag = request.echo.stateless_tag(&context.tag_key);
        let bytes = answer(request, reply, source, &tag);
        send_datagram(
            socket,
            context,
            &bytes,
            request.echo.udp_destination(source),
        )
        .await;
    }
    log_request(
        context,
        "udp",
        source,
        &request.method,
        &request.echo,
        outcome,
    );
}

async fn send_datagram(socket: &UdpSocket, context: &SipContext, bytes: &[u8], to: SocketAddr) {
    if let Err(error) = socket.send_to(bytes, to).await {
        tracing::debug!(listener = %context.name, to = %to, %error, "sip response not sent");
    }
}

/// Why a TCP or TLS connection ended, for the debug log.
#[derive(Debug)]
enum ConnectionEnd {
    Closed,
    Idle,
    Shutdown,
    Error,
    Framing,
    NotSip,
    Tls,
}

/// Serves one TCP or TLS connection.
async fn serve_connection(
    gateway: Arc<Gateway>,
    context: Arc<SipContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let end = connection(&gateway, &context, tcp, peer, shutdown).await;
    tracing::debug!(listener = %context.name, client = %peer, end = ?end, "sip connection ended");
}

async fn connection(
    gateway: &Gateway,
    context: &SipContext,
    tcp: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) -> ConnectionEnd {
    let idle = context.settings.idle_timeout;
    let transport = context.transport();
    let mut stream = Stream::Plain(tcp);
    if let Some(acceptor) = &context.acceptor.get() {
        match tokio::time::timeout(idle, stream.accept_tls(acceptor)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(listener = %context.name, client = %peer, %error, "TLS handshake failed");
                return ConnectionEnd::Tls;
            }
            Err(_) => return ConnectionEnd::Tls,
        }
    }
    let limits = context.settings.limits;
    let mut framer = StreamFramer::new(limits);
    let mut buf = vec![0u8; 8192];
    // Each message must arrive whole within `idle` of the previous one: a read of a few bytes
    // does not push the deadline, so a client dribbling a request cannot hold the connection.
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        loop {
            let frame = match framer.next_frame() {
                Ok(Some(frame)) => {
                    deadline = tokio::time::Instant::now() + idle;
                    frame
                }
                Ok(None) => break,
                Err(error) => {
                    if let Some((reply, echo)) = error.reply(&limits) {
                        let tag = echo.stateless_tag(&context.tag_key);
                        let _ = write(&mut stream, &render(&reply, &echo, peer, &tag), idle).await;
                        let method = "-";
                        log_request(
                            context,
                            transport,
                            peer,
                            method,
                            &echo,
                            &Outcome::reply(reply, &error.to_string()),
                        );
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
                    return ConnectionEnd::Framing;
                }
            };
            let bytes = match frame {
                // RFC 5626 §3.5.1: a double-CRLF ping is answered with a single CRLF.
                Frame::Ping => b"\r\n".to_vec(),
                Frame::Message(message) => match read_request(&message, &limits) {
                    Received::Ignore(Ignored::Unparseable(Unparseable::NotSip)) => {
                        // The stream is not SIP: the framing cannot be trusted.
                        ignored(
                            context,
                            transport,
                            peer,
                            Ignored::Unparseable(Unparseable::NotSip),
                        );
                        return ConnectionEnd::NotSip;
                    }
                    Received::Ignore(why) => {
                        ignored(context, transport, peer, why);
                        continue;
                    }
                    Received::Reject {
                        method,
                        reply,
                        echo,
                    } => {
                        let tag = echo.stateless_tag(&context.tag_key);
                        log_request(
                            context,
                            transport,
                            peer,
                            &method,
                            &echo,
                            &Outcome::reply(reply.clone(), "malformed request"),
                        );
                        render(&reply, &echo, peer, &tag)
                    }
                    Received::Request(request) => {
                        let step = request.step();
                        let outcome = match immediate(&step) {
                            Some(outcome) => outcome,
                            None => match &step {
                                Step::Lookup(target) => {
                                    decide(gateway, context, &request, target).await
                                }
                                _ => continue,
                            },
                        };
                        log_request(
                            context,
                            transport,
                            peer,
                            &request.method,
                            &request.echo,
                            &outcome,
                        );
                        match &outcome.reply {
                            Some(reply) => {
                                let tag = request.echo.stateless_tag(&context.tag_key);
                                answer(&request, reply, peer, &tag)
                            }
                            None => continue,
                        }
                    }
                },
            };
            if write(&mut stream, &bytes, idle).await.is_err() {
                return ConnectionEnd::Error;
            }
        }
        let read = tokio::select! {
            read = tokio::time::timeout_at(deadline, stream.read(&mut buf)) => read,
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return ConnectionEnd::Shutdown;
                }
                continue;
            }
        };
        match read {
            Ok(Ok(0)) => return ConnectionEnd::Closed,
            Ok(Ok(n)) => framer.push(buf.get(..n).unwrap_or_default()),
            Ok(Err(_)) => return ConnectionEnd::Error,
            Err(_) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
                return ConnectionEnd::Idle;
            }
        }
    }
}

async fn write(stream: &mut Stream, bytes: &[u8], timeout: Duration) -> Result<(), ()> {
    let write = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    //! In-process: a SIP listener on 127.0.0.1 with the file directory, a locator and a
    //! topology of two voice-mail servers; requests from real UDP and TCP sockets.

    use std::collections::BTreeMap;

    use mailfront_directory::Directory;
    use mailfront_directory::file::{FileDirectory, parse};
    use mailfront_location::{LocationMap, Locator};
    use mailfront_model::{DatabaseName, SaslMechanism, SiteName, Version};
    use mailfront_routing::{Endpoints, LoginMethod, Node, Server, Site, Topology};

    use super::*;
    use crate::admission::AdmissionSettings;
    use crate::backend::BackendTimeouts;

    const USERS: &str = r#"
[[user]]
address = "alice@example.com"
password = "{PLAIN}x"
mailbox_guid = "g-alice"
database = "DB01"
version = "15.1"
sip_extension = "4001"

[[user]]
address = "dave@example.com"
password = "{PLAIN}x"
mailbox_guid = "g-dave"
database = "DB01"
version = "15.1"
protocols = ["pop3"]
sip_extension = "4004"

[[user]]
address = "carol@example.com"
password = "{PLAIN}x"
mailbox_guid = "g-carol"
database = "DB03"
version = "15.1"
"#;

    fn server(name: &str, sip: Option<&str>) -> Server {
        Server {
            name: ServerName::new(name),
            site: SiteName::new("lab"),
            version: Version::new(15, 1, 0),
            endpoints: Endpoints {
                sip: sip.map(str::to_owned),
                ..Endpoints::default()
            },
            login: LoginMethod::PassThrough {
                mechanism: SaslMechanism::Plain,
            },
            delivery_group: "default".to_owned(),
        }
    }

    fn topology() -> Topology {
        Topology::new(
            Node {
                name: "cas1".to_owned(),
                site: SiteName::new("lab"),
                version: Version::new(15, 1, 0),
            },
            [Site {
                name: SiteName::new("lab"),
                external_urls: BTreeMap::new(),
                costs: BTreeMap::new(),
            }],
            [
                server("mbx1", Some("sip:{extension}@192.0.2.1:5070")),
                server("mbx2", Some("sip:{user}@192.0.2.2:5080;transport=udp")),
                server("nosip", None),
            ],
        )
        .unwrap()
    }

    fn locations(db01: &str) -> LocationMap {
        LocationMap::new([
            (DatabaseName::new("DB01"), ServerName::new(db01)),
            (DatabaseName::new("DB03"), ServerName::new("nosip")),
        ])
    }

    /// An LDAP directory whose server accepts connections and never says a word: every
    /// lookup outlasts the directory timeout.
    fn silent_directory(server: &std::net::TcpListener) -> Arc<dyn Directory> {
        let url = format!("ldap://{}", server.local_addr().unwrap());
        let config = mailfront_directory::ldap::LdapConfig::new(url, "dc=example,dc=com");
        Arc::new(mailfront_directory::ldap::LdapDirectory::new(&config).unwrap())
    }

    struct Lab {
        address: SocketAddr,
        locator: Arc<Locator>,
        context: Arc<SipContext>,
        _shutdown: watch::Sender<bool>,
    }

    async fn start(directory: Arc<dyn Directory>) -> Lab {
        let locator = Arc::new(Locator::new());
        locator.publish(locations("mbx1"));
        let gateway = Arc::new(Gateway::new(
            directory,
            Arc::clone(&locator),
            topology(),
            None,
            AdmissionSettings {
                auth_failure_delay: Duration::ZERO,
                directory_timeout: Duration::from_millis(200),
                backend: BackendTimeouts {
                    connect: Duration::from_secs(1),
                    login: Duration::from_secs(1),
                },
                throttle: Default::default(),
            },
        ));
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = tcp.local_addr().unwrap();
        let udp = UdpSocket::bind(address).await.unwrap();
        let settings = SipSettings {
            limits: SipLimits {
                max_message_size: 2048,
                ..SipLimits::default()
            },
            idle_timeout: Duration::from_secs(5),
            retry_after: 7,
            max_in_flight: 16,
        };
        let context = Arc::new(SipContext::new("sip-test".into(), settings, Arc::default()));
        let (shutdown, receiver) = watch::channel(false);
        let gate = Arc::new(Gate::new(
            "sip-test".into(),
            None,
            64,
            Arc::default(),
            64,
            Arc::default(),
        ));
        tokio::spawn(run(
            tcp,
            Some(udp),
            gateway,
            Arc::clone(&context),
            gate,
            receiver,
        ));
        Lab {
            address,
            locator,
            context,
            _shutdown: shutdown,
        }
    }

    fn file_directory() -> Arc<dyn Directory> {
        Arc::new(FileDirectory::from_users(parse(USERS).unwrap()))
    }

    fn request(method: &str, uri: &str, via: &str, call_id: &str) -> String {
        format!(
            "{method} {uri} SIP/2.0\r\nVia: {via};branch=z9hG4bK-{call_id}\r\n\
             From: <sip:caller@example.net>;tag=f1\r\nTo: <{uri}>\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    }

    struct Phone {
        socket: UdpSocket,
        via: String,
    }

    impl Phone {
        async fn new() -> Phone {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let via = format!("SIP/2.0/UDP {}", socket.local_addr().unwrap());
            Phone { socket, via }
        }

        async fn ask(&self, lab: &Lab, method: &str, uri: &str) -> String {
            let call_id = format!("{:x}", rand::random::<u64>());
            let text = request(method, uri, &self.via, &call_id);
            self.socket
                .send_to(text.as_bytes(), lab.address)
                .await
                .unwrap();
            self.receive().await.expect("no response")
        }

        async fn receive(&self) -> Option<String> {
            let mut buf = vec![0u8; 4096];
            let received =
                tokio::time::timeout(Duration::from_secs(2), self.socket.recv_from(&mut buf)).await;
            let (n, _) = received.ok()?.unwrap();
            Some(String::from_utf8(buf[..n].to_vec()).unwrap())
        }
    }

    fn status(response: &str) -> &str {
        response.lines().next().unwrap()
    }

    fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
        response
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
    }

    #[tokio::test]
    async fn udp_invites_follow_the_active_copy() {
        let lab = start(file_directory()).await;
        let phone = Phone::new().await;
        let by_extension = phone.ask(&lab, "INVITE", "sip:4001@cas.example.com").await;
        assert_eq!(status(&by_extension), "SIP/2.0 302 Moved Temporarily");
        assert_eq!(
            header(&by_extension, "Contact"),
            Some("<sip:4001@192.0.2.1:5070>")
        );
        assert!(header(&by_extension, "To").unwrap().contains(";tag="));
        // By address: `{extension}` is still alice's extension.
        let by_address = phone.ask(&lab, "INVITE", "sip:alice@example.com").await;
        assert_eq!(
            header(&by_address, "Contact"),
            Some("<sip:4001@192.0.2.1:5070>")
        );

        // A switchover: the next INVITE goes to mbx2, whose template uses the dialed user.
        lab.locator.publish(locations("mbx2"));
        let moved = phone.ask(&lab, "INVITE", "sip:alice@example.com").await;
        assert_eq!(
            header(&moved, "Contact"),
            Some("<sip:alice@192.0.2.2:5080;transport=udp>")
        );

        // The ACK for the 3xx is absorbed: nothing comes back.
        let ack = request("ACK", "sip:4001@cas.example.com", &phone.via, "ack-1");
        phone
            .socket
            .send_to(ack.as_bytes(), lab.address)
            .await
            .unwrap();
        let options = phone.ask(&lab, "OPTIONS", "sip:cas.example.com").await;
        assert_eq!(status(&options), "SIP/2.0 200 OK", "the ACK was answered");
    }

    #[tokio::test]
    async fn udp_refusals() {
        let lab = start(file_directory()).await;
        let phone = Phone::new().await;
        let unknown = phone.ask(&lab, "INVITE", "sip:4999@cas.example.com").await;
        assert_eq!(status(&unknown), "SIP/2.0 404 Not Found");
        // dave has an extension but no SIP: the same 404.
        let dave = phone.ask(&lab, "INVITE", "sip:4004@cas.example.com").await;
        assert_eq!(status(&dave), "SIP/2.0 404 Not Found");
        // carol's server has no voice mail: try later.
        let carol = phone.ask(&lab, "INVITE", "sip:carol@example.com").await;
        assert_eq!(status(&carol), "SIP/2.0 503 Service Unavailable");
        assert_eq!(header(&carol, "Retry-After"), Some("7"));
        let register = phone.ask(&lab, "REGISTER", "sip:example.com").await;
        assert_eq!(status(&register), "SIP/2.0 405 Method Not Allowed");
        assert_eq!(header(&register, "Allow"), Some(ALLOW_FOR_TESTS));
        let cancel = phone.ask(&lab, "CANCEL", "sip:4001@cas.example.com").await;
        assert_eq!(
            status(&cancel),
            "SIP/2.0 481 Call/Transaction Does Not Exist"
        );

        // Over the size limit: dropped and counted, no answer.
        let mut big = request("INVITE", "sip:4001@cas", &phone.via, "big");
        big.push_str(&"x".repeat(2100));
        phone
            .socket
            .send_to(big.as_bytes(), lab.address)
            .await
            .unwrap();
        assert_eq!(phone.receive().await, None);
        assert_eq!(
            lab.context
                .stats
                .oversized_datagrams
                .load(Ordering::Relaxed),
            1
        );
    }

    const ALLOW_FOR_TESTS: &str = mailfront_protocol::sip::ALLOW;

    #[tokio::test]
    async fn an_unanswering_directory_is_a_503() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let lab = start(silent_directory(&silent)).await;
        let phone = Phone::new().await;
        let started = tokio::time::Instant::now();
        let response = phone.ask(&lab, "INVITE", "sip:4001@cas.example.com").await;
        assert_eq!(status(&response), "SIP/2.0 503 Service Unavailable");
        assert_eq!(header(&response, "Retry-After"), Some("7"));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn tcp_pipelined_and_split() {
        let lab = start(file_directory()).await;
        let mut tcp = TcpStream::connect(lab.address).await.unwrap();
        let via = format!("SIP/2.0/TCP {}", tcp.local_addr().unwrap());
        let mut both = request("OPTIONS", "sip:cas.example.com", &via, "t1");
        both.push_str(&request("INVITE", "sip:4001@cas.example.com", &via, "t2"));
        // In two pieces cut inside the second request's header fields.
        let (first, second) = both.split_at(both.len() - 40);
        tcp.write_all(first.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        tcp.write_all(second.as_bytes()).await.unwrap();
        let mut received = String::new();
        let mut buf = vec![0u8; 4096];
        while received.matches("Content-Length: 0\r\n\r\n").count() < 2 {
            let n = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed after {received:?}");
            received.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        let responses: Vec<&str> = received.split_inclusive("\r\n\r\n").collect();
        assert_eq!(status(responses[0]), "SIP/2.0 200 OK");
        assert_eq!(header(responses[0], "Call-ID"), Some("t1"));
        assert_eq!(status(responses[1]), "SIP/2.0 302 Moved Temporarily");
        assert_eq!(header(responses[1], "Call-ID"), Some("t2"));

        // A ping is answered with a pong, and the connection stays.
        tcp.write_all(b"\r\n\r\n").await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"\r\n");

        // Over the limit: 513, then the connection closes.
        let mut big = request("INVITE", "sip:4001@cas", &via, "t3");
        big = big.replace("Content-Length: 0", "Content-Length: 5000");
        tcp.write_all(big.as_bytes()).await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        let rest = String::from_utf8(rest).unwrap();
        assert_eq!(status(&rest), "SIP/2.0 513 Message Too Large");
        assert_eq!(header(&rest, "Call-ID"), Some("t3"));
    }
}
