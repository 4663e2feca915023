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

use mailfront_model::{Protocol, ServerName};
use mailfront_net::gate::{Arrival, Connection, Gate};
use mailfront_net::listen::accept_loop;
use mailfront_net::tls::SharedAcceptor;
use mailfront_protocol::sip::{
    Ignored, Reply, Request, SipLimits, Step, Target, Unparseable, contact_uri,
};
use mailfront_resolve::Mailbox;
use mailfront_routing::{Decision, Reason, RejectKind, Request as RouteRequest};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::NodeServices;

mod stream;
mod udp;

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
    services: Arc<NodeServices>,
    context: Arc<SipContext>,
    gate: Arc<Gate>,
    shutdown: watch::Receiver<bool>,
) {
    let datagrams = udp.map(|udp| {
        tokio::spawn(udp::run_udp(
            Arc::new(udp),
            Arc::clone(&services),
            Arc::clone(&context),
            shutdown.clone(),
        ))
    });
    let name = context.name.clone();
    let connection_shutdown = shutdown.clone();
    accept_loop(tcp, name, shutdown, move |tcp, peer| {
        let (services, context, gate, shutdown) = (
            Arc::clone(&services),
            Arc::clone(&context),
            Arc::clone(&gate),
            connection_shutdown.clone(),
        );
        tokio::spawn(async move {
            // No room, or a bad PROXY header: close (SIP clients retry elsewhere).
            if let Arrival::Admitted(connection) = gate.admit(tcp, peer).await {
                let Connection {
                    tcp,
                    client,
                    slots: _slots,
                } = connection;
                stream::serve_connection(services, context, tcp, client, shutdown).await;
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

/// The resolve step (directory, locator, `route()`): the reply to an INVITE for `target`.
async fn decide(
    services: &NodeServices,
    context: &SipContext,
    request: &Request,
    target: &Target,
) -> Outcome {
    let mailbox = match target {
        Target::Extension(extension) => Mailbox::Extension(extension),
        Target::Address(address) => Mailbox::Address(address),
    };
    let resolved = services
        .resolver
        .resolve(mailbox, &RouteRequest::protocol(Protocol::Sip))
        .await;
    let extension = resolved
        .principal
        .as_ref()
        .and_then(|p| p.sip_extension.as_deref());
    let reply = reply_for(context, &resolved.decision, request, target, extension);
    let server = match resolved.decision.reason() {
        Reason::Telephony { server, .. } => Some(server.clone()),
        _ => None,
    };
    let reason = match (&resolved.directory_error, &resolved.principal) {
        (Some(why), _) => format!("{}: {why}", resolved.decision.reason()),
        (None, None) => format!(
            "no user with this {}",
            match target {
                Target::Extension(_) => "extension",
                Target::Address(_) => "address",
            }
        ),
        (None, Some(_)) => resolved.decision.reason().to_string(),
    };
    Outcome {
        reply: Some(reply),
        user: resolved
            .principal
            .map_or_else(|| target.to_string(), |p| p.address),
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
            kind: RejectKind::AuthFailed | RejectKind::ProtocolDisabled | RejectKind::AuthzidRefused,
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

/// Logs a message dropped without an answer (not SIP, a response, a broken ACK).
pub(super) fn ignored(context: &SipContext, transport: &str, source: SocketAddr, why: Ignored) {
    context.stats.ignored.fetch_add(1, Ordering::Relaxed);
    let what = match why {
        Ignored::Unparseable(Unparseable::Empty) => return, // a keep-alive
        Ignored::Unparseable(why) => why.to_string(),
        Ignored::BrokenAck => "malformed ACK (never answered)".to_owned(),
    };
    tracing::debug!(listener = %context.name, transport = %transport, client = %source, what = %what, "sip message ignored");
}

#[cfg(test)]
mod tests;
