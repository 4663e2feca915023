//! The one session driver for every line protocol (house rule 1 of docs/architecture.md).
//!
//! It owns the client's socket and carries out what the protocol's sans-I/O front end asks:
//! send, read (within the idle and login time limits), start TLS, log in (through
//! [`login::log_in`]), and finally relay. It also writes the session log.

use std::sync::Arc;
use std::time::Duration;

use mailfront_metrics::DatabaseLabel;
use mailfront_net::conn::{Conn, TlsRole};
use mailfront_net::gate::Connection;
use mailfront_net::pump::{Interrupt, Pace, pump};
use mailfront_net::tls::SharedAcceptor;
use mailfront_protocol::{
    AuthFailure, AuthResult, ClientInfo, ClientTls, Credentials, FrontEnd, FrontEvent,
};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tracing::Instrument;

use crate::login::{self, LoggedIn};
use crate::registry::StopReason;

/// A login outcome as the metrics name it.
fn failure_word(failure: AuthFailure) -> &'static str {
    match failure {
        AuthFailure::BadCredentials => "auth_failed",
        AuthFailure::AuthzidRefused => "authz_refused",
        AuthFailure::ProtocolDisabled => "disabled",
        AuthFailure::Temporary => "temporary",
    }
}
use crate::relay::{Relay, RelayEnd};
use crate::{LineProtocol, NodeServices};
use mailfront_net::Stream;

/// Per-listener settings of the driver.
#[derive(Clone)]
pub struct ListenerContext {
    /// The listener's name (logs).
    pub name: String,
    /// TLS offered on this listener.
    pub tls: ClientTls,
    /// The TLS acceptor, required for `StartTls` and `Implicit`.
    pub acceptor: Arc<SharedAcceptor>,
    /// Longest silence from the client before login (`timeouts.pre_auth_idle`).
    pub pre_auth_idle: Duration,
    /// Longest time from connect to a completed login (`timeouts.login`).
    pub login: Duration,
    /// Longest silence of a proxied session, both ways (`timeouts.post_auth_idle`).
    pub post_auth_idle: Duration,
}

impl std::fmt::Debug for ListenerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerContext")
            .field("name", &self.name)
            .field("tls", &self.tls)
            .field("pre_auth_idle", &self.pre_auth_idle)
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}

/// A new random session id (16 hex digits): unique enough to find one session in the logs.
fn session_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// How the pre-login phase ended.
enum PreAuth {
    Proxy(Box<ReadyToRelay>),
    Closed {
        result: &'static str,
        user: Option<String>,
    },
}

/// Serves one client connection from accept to close.
pub async fn serve<P: LineProtocol>(
    protocol: Arc<P>,
    services: Arc<NodeServices>,
    listener: Arc<ListenerContext>,
    connection: Connection,
) {
    let Connection {
        tcp,
        client: client_addr,
        slots: _slots,
    } = connection;
    let started = Instant::now();
    let id = session_id();
    let local = tcp.local_addr().unwrap_or(client_addr);
    let span =
        tracing::info_span!("session", id = %id, protocol = %P::PROTOCOL, client = %client_addr);
    let info = ClientInfo {
        client: client_addr,
        local,
        session_id: id.clone(),
    };
    async move {
        // Boxed: a task's future is as large as its largest state, and the login states (the
        // protocol machine, the directory lookup, the backend dialogue) are several KiB. Boxed,
        // they are freed once the session is logged in, and an idle proxied session keeps only
        // what the relay needs.
        let pre_auth = Box::pin(pre_auth(
            &*protocol,
            &services,
            &listener,
            Stream::Plain(tcp),
            &info,
            started,
        ))
        .await;
        let PreAuth::Proxy(ready) = pre_auth else {
            if let PreAuth::Closed { result, user } = pre_auth {
                tracing::info!(
                    session = %id,
                    client = %client_addr,
                    protocol = %P::PROTOCOL,
                    user = %user.as_deref().unwrap_or("-"),
                    duration_ms = started.elapsed().as_millis() as u64,
                    result = %result,
                    "session ended before login"
                );
            }
            return;
        };
        // The logged-in part is its own future: laid out on its own, it holds only what relaying
        // needs (the compiler keeps a slot for every local of a future that lives across an
        // await, and the login phase's locals made the whole session's task 2.1 KiB).
        proxied(
            &*protocol,
            &services,
            &listener,
            *ready,
            &id,
            client_addr,
            started,
        )
        .await;
    }
    .instrument(span)
    .await;
}

/// What a session that logged in takes to the relay.
struct ReadyToRelay {
    client: Stream,
    logged_in: Box<LoggedIn>,
    pending: Vec<u8>,
}

/// Relays a logged-in session to its backend until either side ends it, then logs it.
async fn proxied<P: LineProtocol>(
    protocol: &P,
    services: &NodeServices,
    listener: &ListenerContext,
    ready: ReadyToRelay,
    id: &str,
    client_addr: std::net::SocketAddr,
    started: Instant,
) {
    let ReadyToRelay {
        mut client,
        logged_in,
        pending,
    } = ready;
    // The registration is declared before the backend stream, so it is dropped after it: the
    // session leaves the registry only once its backend connection is closed.
    let LoggedIn {
        principal,
        server,
        database,
        backend,
        registration,
    } = *logged_in;
    // Only the address is needed from here on (the session log); the rest of the user's
    // record, and the backend's capability list (already in the client's login reply),
    // would otherwise live as long as the session.
    let user = principal.address.clone();
    drop(principal);
    drop(backend.capabilities);
    let metrics = &services.metrics;
    let _live = metrics.session(P::PROTOCOL.as_str(), server.as_str());
    let mut backend_stream = backend.stream;
    let mut relay = Relay::new();
    if services.resolver.fences(&database) {
        let resolver = Arc::clone(&services.resolver);
        let (database, server) = (database.clone(), server.clone());
        relay = relay.fenced(Arc::new(move || resolver.may_serve(&database, &server)));
    }
    let prelude = write_read_ahead(&mut client, &mut backend_stream, backend.leftover, pending);
    let (extra_in, extra_out, written) = prelude.await;
    let mut fenced = false;
    let result = match written {
        Err(_) => "io-error",
        Ok(()) => {
            let end = relay
                .run_with_idle(
                    &mut client,
                    &mut backend_stream,
                    async {
                        registration.stopped().await;
                    },
                    Some(listener.post_auth_idle),
                )
                .await;
            match &end {
                RelayEnd::ClientError(e) | RelayEnd::BackendError(e) => {
                    tracing::debug!(error = %e, "relay ended with an error");
                    end.as_str()
                }
                RelayEnd::Stopped => {
                    let reason = registration.stop_reason();
                    stopped(protocol, metrics, &relay, &mut client, reason, &database).await
                }
                RelayEnd::Fenced => {
                    fenced = true;
                    tracing::warn!(session = %id, user = %user, database = %database, backend = %server, "client's bytes not forwarded: this node may no longer serve the database there (its presence lapsed, or the map moved it)");
                    let reason = Some(StopReason::Failover { to: None });
                    stopped(protocol, metrics, &relay, &mut client, reason, &database).await;
                    end.as_str()
                }
                _ => end.as_str(),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), client.shutdown()).await;
    if fenced
        || matches!(
            registration.stop_reason(),
            Some(StopReason::Failover { .. })
        )
    {
        // A move waits until this session has left the registry: leave it only once the
        // mailbox server has closed its side too.
        crate::backend::close_and_drain(&mut backend_stream).await;
    } else {
        let _ = tokio::time::timeout(Duration::from_secs(1), backend_stream.shutdown()).await;
    }
    metrics.relayed(
        P::PROTOCOL.as_str(),
        relay.client_to_backend() + extra_in,
        relay.backend_to_client() + extra_out,
    );
    tracing::info!(
        session = %id,
        client = %client_addr,
        protocol = %P::PROTOCOL,
        user = %user,
        database = %database,
        backend = %server,
        bytes_in = relay.client_to_backend() + extra_in,
        bytes_out = relay.backend_to_client() + extra_out,
        duration_ms = started.elapsed().as_millis() as u64,
        result = %result,
        "session ended"
    );
}

/// Writes what was read ahead during login: the backend's bytes after its login reply to the
/// client, the client's bytes after its login command to the backend. Returns how many bytes
/// went each way (client to backend, backend to client), and whether writing worked. The
/// buffers are dropped here: they need not live as long as the session.
async fn write_read_ahead(
    client: &mut Stream,
    backend: &mut Stream,
    leftover: Vec<u8>,
    pending: Vec<u8>,
) -> (u64, u64, std::io::Result<()>) {
    let mut extra_in = 0u64;
    let mut extra_out = 0u64;
    let written = async {
        if !leftover.is_empty() {
            client.write_all(&leftover).await?;
            extra_out = leftover.len() as u64;
        }
        if !pending.is_empty() {
            backend.write_all(&pending).await?;
            extra_in = pending.len() as u64;
        }
        Ok(())
    }
    .await;
    (extra_in, extra_out, written)
}

/// A session told to stop (failover, an operator, shutdown): the protocol's goodbye, if it has
/// one, and the failover counted. Returns the session log's result word.
async fn stopped<P: LineProtocol>(
    protocol: &P,
    metrics: &mailfront_metrics::Metrics,
    relay: &Relay,
    client: &mut Stream,
    reason: Option<StopReason>,
    database: &mailfront_model::DatabaseName,
) -> &'static str {
    if let Some(notice) = reason.as_ref().and_then(|r| protocol.stop_notice(r)) {
        // Never split a response line the client is in the middle of.
        let lead: &[u8] = if relay.client_at_line_start() {
            b""
        } else {
            b"\r\n"
        };
        let goodbye = async {
            client.write_all(lead).await?;
            client.write_all(notice).await?;
            client.flush().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), goodbye).await;
    }
    if let Some(StopReason::Failover { .. }) = &reason {
        metrics
            .failovers
            .get_or_create(&DatabaseLabel {
                database: database.to_string(),
            })
            .inc();
    }
    reason.map_or("stopped", |r| r.as_str())
}

/// The pace of the pre-login phase: each read within `pre_auth_idle`, the whole login within
/// `timeouts.login`.
struct PreAuthPace {
    idle: Duration,
    login_deadline: Instant,
}

impl<M> Pace<M> for PreAuthPace {
    fn read_deadline(&mut self, _: &M) -> Instant {
        (Instant::now() + self.idle).min(self.login_deadline)
    }

    fn write_timeout(&self) -> Duration {
        self.idle
    }
}

/// The login phase: the front end's dialogue, pumped until it hands the client to the relay or
/// closes.
async fn pre_auth<P: LineProtocol>(
    protocol: &P,
    services: &NodeServices,
    listener: &ListenerContext,
    client: Stream,
    info: &ClientInfo,
    started: Instant,
) -> PreAuth {
    let mut pace = PreAuthPace {
        idle: listener.pre_auth_idle,
        login_deadline: started + listener.login,
    };
    let mut session = LoginPhase::default();
    let mut client = Conn::new(client);
    let acceptor = listener.acceptor.get();
    if listener.tls == ClientTls::Implicit
        && let Err(end) = client
            .accept_tls(acceptor.as_ref(), listener.pre_auth_idle)
            .await
    {
        return session.closed(end.as_str());
    }
    let mut front = protocol.front_end(client.stream.is_tls());
    let role = TlsRole::Server(acceptor.as_ref());
    loop {
        match pump(&mut front, &mut client, role, &mut pace).await {
            Ok(FrontEvent::Authenticate(credentials)) => {
                let result = session.log_in(protocol, services, credentials, info).await;
                front.auth_result(result);
            }
            Ok(FrontEvent::Proxy { pending }) => return session.proxy(client, pending),
            Ok(FrontEvent::Close) => {
                client.close().await;
                let result = if session.timed_out {
                    "timeout"
                } else {
                    "closed-by-server"
                };
                return session.closed(result);
            }
            Err(Interrupt::TimedOut) => {
                session.timed_out = true;
                if Instant::now() >= pace.login_deadline {
                    front.login_timeout();
                } else {
                    front.idle_timeout();
                }
            }
            Err(interrupt) => {
                let result = interrupt.into_end().map_or("client-error", |e| e.as_str());
                return session.closed(result);
            }
        }
    }
}

/// What the login phase has learned so far.
#[derive(Default)]
struct LoginPhase {
    user: Option<String>,
    logged_in: Option<Box<LoggedIn>>,
    timed_out: bool,
}

impl LoginPhase {
    fn closed(self, result: &'static str) -> PreAuth {
        PreAuth::Closed {
            result,
            user: self.user,
        }
    }

    /// The login succeeded and its reply went out: hand the client to the relay.
    fn proxy(mut self, client: Conn, pending: Vec<u8>) -> PreAuth {
        match self.logged_in.take() {
            Some(logged_in) => PreAuth::Proxy(Box::new(ReadyToRelay {
                client: client.into_stream(),
                logged_in,
                pending,
            })),
            None => self.closed("internal-error"),
        }
    }

    /// Logs in (authenticate, resolve, backend login), registers and logs the session, and
    /// says how it went in the front end's terms.
    async fn log_in<P: LineProtocol>(
        &mut self,
        protocol: &P,
        services: &NodeServices,
        credentials: Credentials,
        info: &ClientInfo,
    ) -> AuthResult {
        let login = credentials.authcid.clone();
        let mechanism = credentials.mechanism;
        match login::log_in(services, protocol, credentials, info).await {
            Ok(session) => {
                services.metrics.login(P::PROTOCOL.as_str(), "ok");
                // Logged before the client hears OK, so the log never lags the client.
                tracing::info!(
                    session = %info.session_id,
                    client = %info.client,
                    protocol = %P::PROTOCOL,
                    user = %session.principal.address,
                    database = %session.database,
                    backend = %session.server,
                    "session proxied"
                );
                self.user = Some(session.principal.address.clone());
                let capabilities = session.backend.capabilities.clone();
                self.logged_in = Some(Box::new(session));
                AuthResult::Proxied { capabilities }
            }
            Err(refused) if refused.referral.is_some() => {
                let url = refused.referral.unwrap_or_default();
                tracing::info!(
                    session = %info.session_id,
                    client = %info.client,
                    protocol = %P::PROTOCOL,
                    user = %refused.user.as_deref().unwrap_or("-"),
                    referral = %url,
                    reason = %refused.detail,
                    "login referred"
                );
                self.user = refused.user;
                services.metrics.login(P::PROTOCOL.as_str(), "referred");
                AuthResult::Referred { url }
            }
            Err(refused) => {
                let failure = login::client_failure(refused.kind);
                tracing::info!(
                    session = %info.session_id,
                    client = %info.client,
                    protocol = %P::PROTOCOL,
                    login = %login,
                    mechanism,
                    user = %refused.user.as_deref().unwrap_or("-"),
                    failure = ?failure,
                    source = %refused.source,
                    reason = %refused.detail,
                    "login refused"
                );
                if refused.user.is_some() {
                    self.user = refused.user;
                }
                services
                    .metrics
                    .login(P::PROTOCOL.as_str(), failure_word(failure));
                AuthResult::Failed(failure)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_login_outcome_is_a_declared_metric_word() {
        // A word missing from the declared list would appear only after its first login.
        for failure in [
            AuthFailure::BadCredentials,
            AuthFailure::AuthzidRefused,
            AuthFailure::ProtocolDisabled,
            AuthFailure::Temporary,
        ] {
            assert!(mailfront_metrics::LOGIN_RESULTS.contains(&failure_word(failure)));
        }
    }
}
