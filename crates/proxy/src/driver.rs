//! The one session driver for every line protocol (house rule 1).
//!
//! It owns the client's socket and carries out what the protocol's sans-I/O front end asks:
//! send, read (within the idle and login time limits), start TLS, authenticate (through the
//! [`Gateway`]), and finally relay. It also writes the session log.

use std::sync::Arc;
use std::time::Duration;

use crate::tls::SharedAcceptor;
use mailfront_protocol::{Action, AuthFailure, AuthResult, ClientInfo, ClientTls, FrontEnd};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tracing::Instrument;

use crate::admission::{Admitted as AdmittedSession, Gateway};
use crate::client::{ClientEnd, ClientIo, Received};
use crate::gate::Admitted;
use crate::metrics::DatabaseLabel;
use crate::registry::{Registration, SessionInfo, StopReason};

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
use crate::{LineProtocol, Stream};

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
    Proxy(Box<LoggedIn>),
    Closed {
        result: &'static str,
        user: Option<String>,
    },
}

/// Serves one client connection from accept to close.
pub async fn serve<P: LineProtocol>(
    protocol: Arc<P>,
    gateway: Arc<Gateway>,
    listener: Arc<ListenerContext>,
    connection: Admitted,
) {
    let Admitted {
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
            &gateway,
            &listener,
            Stream::Plain(tcp),
            &info,
            started,
        ))
        .await;
        let PreAuth::Proxy(logged_in) = pre_auth else {
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
            &gateway,
            &listener,
            *logged_in,
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
struct LoggedIn {
    client: Stream,
    admitted: Box<AdmittedSession>,
    pending: Vec<u8>,
    registration: Registration,
}

/// Relays a logged-in session to its backend until either side ends it, then logs it.
async fn proxied<P: LineProtocol>(
    protocol: &P,
    gateway: &Gateway,
    listener: &ListenerContext,
    logged_in: LoggedIn,
    id: &str,
    client_addr: std::net::SocketAddr,
    started: Instant,
) {
    let LoggedIn {
        mut client,
        admitted,
        pending,
        registration,
    } = logged_in;
    let AdmittedSession {
        principal,
        server,
        database,
        backend,
    } = *admitted;
    // Only the address is needed from here on (the session log); the rest of the user's
    // record, and the backend's capability list (already in the client's login reply),
    // would otherwise live as long as the session.
    let user = principal.address.clone();
    drop(principal);
    drop(backend.capabilities);
    let metrics = gateway.metrics();
    let _live = metrics.session(P::PROTOCOL.as_str(), server.as_str());
    let mut backend_stream = backend.stream;
    let mut relay = Relay::new();
    let mut extra_in = 0u64;
    let mut extra_out = 0u64;
    let prelude = async {
        if !backend.leftover.is_empty() {
            client.write_all(&backend.leftover).await?;
            extra_out = backend.leftover.len() as u64;
        }
        if !pending.is_empty() {
            backend_stream.write_all(&pending).await?;
            extra_in = pending.len() as u64;
        }
        Ok::<_, std::io::Error>(())
    };
    let prelude = prelude.await;
    // Whatever was read ahead is written; its buffers need not live as long as the session.
    drop(pending);
    drop(backend.leftover);
    let result = match prelude {
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
                _ => end.as_str(),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), client.shutdown()).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), backend_stream.shutdown()).await;
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

async fn pre_auth<P: LineProtocol>(
    protocol: &P,
    gateway: &Gateway,
    listener: &ListenerContext,
    client: Stream,
    info: &ClientInfo,
    started: Instant,
) -> PreAuth {
    let login_deadline = started + listener.login;
    let mut user: Option<String> = None;
    let closed = |end: ClientEnd, user: Option<String>| PreAuth::Closed {
        result: end.as_str(),
        user,
    };
    let mut client = ClientIo::new(client);

    if listener.tls == ClientTls::Implicit
        && let Err(end) = client
            .start_tls(listener.acceptor.get().as_ref(), listener.pre_auth_idle)
            .await
    {
        return closed(end, user);
    }

    let mut front = protocol.front_end(client.stream.is_tls());
    let mut admitted: Option<Box<AdmittedSession>> = None;
    let mut registration: Option<Registration> = None;
    let mut timed_out = false;
    loop {
        let action = match front.next_action() {
            Action::Send(bytes) => {
                client.queue(&bytes);
                continue;
            }
            other => other,
        };
        if let Err(end) = client.flush(listener.pre_auth_idle).await {
            return closed(end, user);
        }
        match action {
            Action::Send(_) => {}
            Action::Read => {
                let idle_deadline = Instant::now() + listener.pre_auth_idle;
                match client.read(idle_deadline.min(login_deadline)).await {
                    Ok(Received::Data(bytes)) => front.feed(bytes),
                    Ok(Received::TimedOut) => {
                        timed_out = true;
                        if login_deadline < idle_deadline {
                            front.login_timeout();
                        } else {
                            front.idle_timeout();
                        }
                    }
                    Err(end) => return closed(end, user),
                }
            }
            Action::StartTls => {
                if let Err(end) = client
                    .start_tls(listener.acceptor.get().as_ref(), listener.pre_auth_idle)
                    .await
                {
                    return closed(end, user);
                }
                front.tls_established();
            }
            Action::Authenticate(credentials) => {
                let login = credentials.authcid.clone();
                let mechanism = credentials.mechanism;
                match gateway.admit(protocol, credentials, info).await {
                    Ok(session) => {
                        gateway.metrics().login(P::PROTOCOL.as_str(), "ok");
                        registration = Some(gateway.registry().register(SessionInfo {
                            id: info.session_id.clone(),
                            protocol: P::PROTOCOL,
                            user: session.principal.address.clone(),
                            database: session.database.clone(),
                            server: session.server.clone(),
                            client: info.client,
                            since: std::time::SystemTime::now(),
                        }));
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
                        user = Some(session.principal.address.clone());
                        let capabilities = session.backend.capabilities.clone();
                        admitted = Some(Box::new(session));
                        front.auth_result(AuthResult::Proxied { capabilities });
                    }
                    Err(refused) => {
                        tracing::info!(
                            session = %info.session_id,
                            client = %info.client,
                            protocol = %P::PROTOCOL,
                            login = %login,
                            mechanism,
                            user = %refused.user.as_deref().unwrap_or("-"),
                            failure = ?refused.failure,
                            reason = %refused.reason,
                            "login refused"
                        );
                        if refused.user.is_some() {
                            user = refused.user;
                        }
                        gateway
                            .metrics()
                            .login(P::PROTOCOL.as_str(), failure_word(refused.failure));
                        front.auth_result(AuthResult::Failed(refused.failure));
                    }
                }
            }
            Action::Proxy { pending } => {
                return match (admitted.take(), registration.take()) {
                    (Some(admitted), Some(registration)) => PreAuth::Proxy(Box::new(LoggedIn {
                        client: client.into_stream(),
                        admitted,
                        pending,
                        registration,
                    })),
                    _ => PreAuth::Closed {
                        result: "internal-error",
                        user,
                    },
                };
            }
            Action::Close => {
                client.close().await;
                return PreAuth::Closed {
                    result: if timed_out {
                        "timeout"
                    } else {
                        "closed-by-server"
                    },
                    user,
                };
            }
        }
    }
}
