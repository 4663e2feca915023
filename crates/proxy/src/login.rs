//! Logging a line-protocol client in: from credentials to a logged-in backend session, or a
//! refusal.
//!
//! This is the middle of a session's flow (docs/architecture.md): the resolver checks the
//! credentials and finds where the user's mailbox is served, then [`backend::open`] connects and
//! logs in there on the user's behalf. It never sees the client's socket; it is given the
//! credentials and answers with a [`LoggedIn`] session or a [`Refusal`], whose kind the
//! protocol's front end turns into its own reply.

use mailfront_metrics::{ProtocolLabel, seconds};
use mailfront_model::{DatabaseName, Principal, Protocol, ServerName, Source};
use mailfront_protocol::{AuthFailure, BackendAuth, ClientInfo, Credentials};
use mailfront_resolve::{Mailbox, Refusal};
use mailfront_routing::{Decision, LoginMethod, RejectKind, Request, Server};
use tokio::time::Instant;

use crate::backend::{self, BackendSession};
use crate::registry::{Registration, SessionInfo, WatchedToken};
use crate::{LineProtocol, NodeServices};

/// A user logged in at the server hosting the active copy of their database.
#[derive(Debug)]
pub struct LoggedIn {
    /// The user.
    pub principal: Principal,
    /// The server hosting the active copy of the user's database.
    pub server: ServerName,
    /// The user's database.
    pub database: DatabaseName,
    /// The backend session, logged in.
    pub backend: BackendSession,
    /// The session's place in the registry, taken before the backend login (a move of the
    /// user's group waits for it to end). Dropped after the backend connection.
    pub registration: Registration,
}

/// What the client of a line protocol is told for a refusal of `kind` (one place for every
/// line protocol; each front end turns the failure into its own reply).
pub fn client_failure(kind: RejectKind) -> AuthFailure {
    match kind {
        RejectKind::AuthFailed => AuthFailure::BadCredentials,
        RejectKind::AuthzidRefused => AuthFailure::AuthzidRefused,
        RejectKind::ProtocolDisabled => AuthFailure::ProtocolDisabled,
        RejectKind::Temporary => AuthFailure::Temporary,
    }
}

/// Checks the credentials, resolves where the user goes, and logs in to their backend. Every
/// refusal that is not temporary takes at least the failure delay from the start of the attempt.
pub async fn log_in<P: LineProtocol>(
    services: &NodeServices,
    protocol: &P,
    credentials: Credentials,
    client: &ClientInfo,
) -> Result<LoggedIn, Refusal> {
    let started = Instant::now();
    let result = try_log_in(services, protocol, credentials, client, started).await;
    if let Err(refusal) = &result
        && refusal.kind != RejectKind::Temporary
    {
        // A wrong password may have taken longer still, when throttled (see authenticate).
        services.resolver.failure_delay(started).await;
    }
    result
}

async fn try_log_in<P: LineProtocol>(
    services: &NodeServices,
    protocol: &P,
    credentials: Credentials,
    client: &ClientInfo,
    started: Instant,
) -> Result<LoggedIn, Refusal> {
    let resolver = &services.resolver;
    let ip = client.client.ip();
    let (login, secret) = (&credentials.authcid, &credentials.password);
    // An OAuth access token names the user (the backend login is the master user's, or with
    // passthrough the token itself, for a backend that checks tokens as passwords); the session
    // keeps it for the re-checks (revocation, expiry).
    let (mut principal, token_expires) = if credentials.is_token() {
        let login = resolver
            .authenticate_token(P::PROTOCOL, ip, login, secret, started)
            .await?;
        (login.principal, Some(login.expires))
    } else {
        let principal = resolver
            .authenticate(P::PROTOCOL, ip, login, secret, started)
            .await?;
        (principal, None)
    };
    let address = principal.address.clone();
    let user = address.as_str();
    if let Some(authzid) = &credentials.authzid
        && !principal.answers_to(authzid)
    {
        return Err(Refusal::new(
            RejectKind::AuthzidRefused,
            Source::Client,
            "authorization identity is another user",
        )
        .for_user(user));
    }
    // A move of the user's group may start at any point of this login: before it registers
    // (the registration is stopped at once) or during the backend login (stopped then). Either
    // way the login starts over: resolving again holds until the move is done, and the next
    // backend login goes to the new server. The client sees one slower login, not a refusal.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let last = attempt >= LOGIN_ATTEMPTS_ACROSS_MOVES;
        // A pin made or removed since the directory answered: register under what serves now.
        if let Some(now) = resolver.regroup(&principal) {
            principal = now;
        }
        let resolved = resolver
            .resolve(Mailbox::User(&principal), &Request::protocol(P::PROTOCOL))
            .await;
        // The user's pin was made or removed while the login was held: start over under it.
        if resolver.regroup(&principal).is_some() {
            if last {
                return Err(Refusal::new(
                    RejectKind::Temporary,
                    Source::Locator,
                    format!("{}'s pin changed while logging in", principal.address),
                )
                .for_user(user));
            }
            continue;
        }
        let server = proxied_to::<P>(&resolved, user)?;
        // Registered before the backend login: a move of the user's group that starts
        // meanwhile stops this registration, and the node does not acknowledge the move until
        // it is gone.
        let registration = services.registry.register(SessionInfo {
            id: client.session_id.clone(),
            protocol: P::PROTOCOL,
            user: principal.address.clone(),
            database: principal.database.clone(),
            server: server.clone(),
            client: client.client,
            since: std::time::SystemTime::now(),
        });
        if registration.stop_reason().is_some() {
            if last {
                return Err(moved_meanwhile(&principal, &server));
            }
            continue;
        }
        let Some(described) = resolved.server() else {
            return Err(Refusal::internal(format!("unknown server {server}")).for_user(user));
        };
        let Some(endpoint) = described.endpoints.for_protocol(P::PROTOCOL) else {
            return Err(Refusal::internal(format!(
                "server {server} has no {} endpoint",
                P::PROTOCOL
            ))
            .for_user(user));
        };
        let auth = backend_auth(described, &principal, &credentials);
        let login = protocol.backend_login(auth, endpoint.tls, client.clone());
        let asked = Instant::now();
        let opened = backend::open(endpoint, &services.backends, login).await;
        services
            .metrics
            .backend_login_latency
            .get_or_create(&ProtocolLabel {
                protocol: P::PROTOCOL.to_string(),
            })
            .observe(seconds(asked.elapsed()));
        match opened {
            Ok(mut backend) if registration.stop_reason().is_some() => {
                // The group started moving (or moved) during the backend login: that session
                // ends before the registration goes (the move waits for it), then start over.
                backend::close_and_drain(&mut backend.stream).await;
                drop(registration);
                if last {
                    return Err(moved_meanwhile(&principal, &server));
                }
            }
            Ok(backend) => {
                if let Some(expires) = token_expires {
                    registration.watch_token(WatchedToken {
                        token: credentials.password.clone(),
                        expires,
                    });
                }
                return Ok(LoggedIn {
                    database: principal.database.clone(),
                    principal,
                    server,
                    backend,
                    registration,
                });
            }
            Err(error) => {
                return Err(Refusal::backend(format!("backend {server}: {error}")).for_user(user));
            }
        }
    }
}

/// How many times one login starts over because its user's group moved meanwhile (each start
/// waits for the move under way, so more than one is rare).
const LOGIN_ATTEMPTS_ACROSS_MOVES: u32 = 3;

/// The refusal of a login whose group moved (or started moving) while it logged in at `server`:
/// temporary, the client's next try goes to the new server.
fn moved_meanwhile(principal: &Principal, server: &ServerName) -> Refusal {
    Refusal::new(
        RejectKind::Temporary,
        Source::Locator,
        format!("{} moved while logging in at {server}", principal.database),
    )
    .for_user(&principal.address)
}

/// The server a resolved login is proxied to, or the refusal (an IMAP login referral included).
fn proxied_to<P: LineProtocol>(
    resolved: &mailfront_resolve::Resolved,
    user: &str,
) -> Result<ServerName, Refusal> {
    match &resolved.decision {
        Decision::Proxy { server, .. } => Ok(server.clone()),
        Decision::Redirect { location, reason } if P::PROTOCOL == Protocol::Imap => {
            Err(Refusal::referral(location.clone(), reason.to_string()).for_user(user))
        }
        Decision::Redirect { reason, .. } => {
            // Only IMAP has redirects (login referrals); refuse rather than guess.
            Err(
                Refusal::internal(format!("unexpected redirect for {}: {reason}", P::PROTOCOL))
                    .for_user(user),
            )
        }
        Decision::Reject { .. } => {
            let refusal = resolved.refusal().map(|r| r.for_user(user));
            Err(refusal.unwrap_or_else(|| Refusal::internal("refused").for_user(user)))
        }
    }
}

/// How to log in at `server` as `principal`: with the server's master user, or with the
/// client's own password.
fn backend_auth(server: &Server, principal: &Principal, credentials: &Credentials) -> BackendAuth {
    match &server.login {
        LoginMethod::Master { master, mechanism } => BackendAuth::Master {
            user: principal.address.clone(),
            master: master.user.clone(),
            password: master.password.clone(),
            separator: master.separator.clone(),
            mechanism: *mechanism,
        },
        LoginMethod::PassThrough { mechanism } => BackendAuth::PassThrough {
            user: principal.address.clone(),
            password: credentials.password.clone(),
            mechanism: *mechanism,
        },
    }
}
