//! The admin listener: health for load balancers, metrics for Prometheus, and the operator's
//! controls (sessions, maintenance, reload). HTTP/1.1, plain text on loopback by default, HTTPS
//! with `admin.tls`. When it listens elsewhere, every request but the health pages must carry
//! `Authorization: Bearer <token>` (`admin.token_file`) or come with a client certificate
//! signed by `admin.client_ca` (mutual TLS), or both when both are configured.
//!
//! | Method | Path | Does |
//! |---|---|---|
//! | GET | `/` | the status page (HTML, reloads itself; with a token, Basic auth with the token as password) |
//! | GET | `/health` | `200 OK`, or `503` while draining or before a location map is loaded |
//! | GET | `/health/<protocol>` | the same for one protocol (`imap`, `pop3`, `submission`, `smtp`, `http`, `sip`), also `503` while the directory fails and `404` without such a listener; a JSON body says why, and which mailbox servers this node sees down (they do not make the node unhealthy) |
//! | GET | `/metrics` | Prometheus text format |
//! | GET | `/status` | the node's state as JSON |
//! | GET | `/sessions?user=&server=&database=&protocol=` | live proxied sessions as JSON |
//! | POST | `/sessions/kick?…` | closes the matching sessions (a filter, or `all=yes`) |
//! | POST | `/drain`, `/undrain` | maintenance on and off |
//! | POST | `/reload` | reloads the configuration; `422` with the error if it is rejected |
//!
//! and the Active Manager's views and commands (`/databases`, `/servers`, …: see [`fleet`]).
//!
//! Routing a request is a pure function of the request and the node ([`Admin::answer`]), so
//! the table of cases can be tested without sockets.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use mailfront_location::Locator;
use mailfront_manager::active::ActiveManager;
use mailfront_model::{Protocol, Secret};
use mailfront_net::gate::ClientCounts;
use mailfront_net::node::NodeState;
use mailfront_net::tls::{self, SharedAcceptor};
use mailfront_proxy::NodeServices;
use mailfront_proxy::registry::{Filter, SessionInfo, StopReason};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::reload::Reloader;

mod fleet;
mod page;

/// What an admin API is made of.
pub struct AdminParts {
    /// The node's name.
    pub node: String,
    /// What the node's sessions share.
    pub services: Arc<NodeServices>,
    /// The locator.
    pub locator: Arc<Locator>,
    /// The node's state (draining).
    pub state: Arc<NodeState>,
    /// Connections per client.
    pub clients: Arc<ClientCounts>,
    /// The reloader.
    pub reloader: Arc<Reloader>,
    /// The bearer token every request but the health pages must carry, if any.
    pub token: Option<Secret<String>>,
    /// Whether every request but the health pages must come with a client certificate (the
    /// listener's TLS acceptor verifies it).
    pub client_certificates: bool,
    /// The Active Manager (views and commands of the fleet).
    pub manager: Option<Arc<ActiveManager>>,
    /// The protocols of the node's bound listeners (per-protocol health pages).
    pub protocols: Vec<Protocol>,
}

/// What the admin API reads and controls.
pub struct Admin {
    node: String,
    services: Arc<NodeServices>,
    locator: Arc<Locator>,
    state: Arc<NodeState>,
    clients: Arc<ClientCounts>,
    reloader: Arc<Reloader>,
    token: Option<Secret<String>>,
    client_certificates: bool,
    started: SystemTime,
    manager: Option<Arc<ActiveManager>>,
    protocols: Vec<Protocol>,
    login_rates: Mutex<page::LoginRates>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// An answer: status, content type, body.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The content type.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
    /// Ask a browser for credentials (`WWW-Authenticate: Basic`), on a refused status page.
    pub challenge: bool,
}

impl Answer {
    fn json(status: StatusCode, value: &Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: format!("{value}\n"),
            challenge: false,
        }
    }

    fn text(status: StatusCode, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            challenge: false,
        }
    }

    fn html(body: String) -> Self {
        Self {
            status: StatusCode::OK,
            content_type: "text/html; charset=utf-8",
            body,
            challenge: false,
        }
    }

    fn error(status: StatusCode, message: impl Into<String>) -> Self {
        Self::json(status, &json!({ "error": message.into() }))
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

fn session_json(info: &SessionInfo, now: SystemTime) -> Value {
    json!({
        "id": info.id,
        "protocol": info.protocol.as_str(),
        "user": info.user,
        "database": info.database.as_str(),
        "server": info.server.as_str(),
        "client": info.client.to_string(),
        "since": unix_seconds(info.since),
        "age_seconds": now.duration_since(info.since).unwrap_or(Duration::ZERO).as_secs(),
    })
}

/// The session filter a query names; `Ok(None)` when it names none.
fn filter(query: &str) -> Result<Option<Filter>, String> {
    let field = |name| mailfront_http::form::field(query, name).filter(|v| !v.is_empty());
    let protocol = field("protocol")
        .map(|p| p.parse::<Protocol>().map_err(|e| e.to_string()))
        .transpose()?;
    let filter = Filter {
        user: field("user"),
        server: field("server").map(|s| s.as_str().into()),
        database: field("database").map(|d| d.as_str().into()),
        protocol,
    };
    Ok((filter != Filter::default()).then_some(filter))
}

impl Admin {
    /// The admin API of a node. `token`, when set, is required on every request but `/health`.
    pub fn new(parts: AdminParts) -> Self {
        Self {
            node: parts.node,
            services: parts.services,
            locator: parts.locator,
            state: parts.state,
            clients: parts.clients,
            reloader: parts.reloader,
            token: parts.token,
            client_certificates: parts.client_certificates,
            started: SystemTime::now(),
            manager: parts.manager,
            protocols: parts.protocols,
            login_rates: Mutex::new(page::LoginRates::new(Instant::now())),
        }
    }

    /// Whether a request may go beyond the health pages: with the client certificate the
    /// configuration asks for, and the token. The refusal says what is missing.
    fn authorized(&self, headers: &HeaderMap, caller: Caller) -> Result<(), Answer> {
        if self.client_certificates && !caller.client_certificate {
            return Err(Answer::error(
                StatusCode::FORBIDDEN,
                "a client certificate signed by admin.client_ca is required",
            ));
        }
        let Some(token) = &self.token else {
            return Ok(());
        };
        // A bearer token, or (for a browser on the status page) Basic with the token as password.
        let given = mailfront_http::form::bearer_token(headers)
            .map(String::into_bytes)
            .or_else(|| mailfront_http::form::basic_credentials(headers).map(|(_, p)| p));
        if given.is_some_and(|given| bool::from(given.as_slice().ct_eq(token.expose().as_bytes())))
        {
            Ok(())
        } else {
            Err(Answer::error(
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required",
            ))
        }
    }

    fn health(&self) -> Answer {
        if self.state.is_draining() {
            return Answer::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("DRAINING {}\n", self.node),
            );
        }
        if self.locator.snapshot().is_none() {
            return Answer::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("NO LOCATION MAP {}\n", self.node),
            );
        }
        Answer::text(StatusCode::OK, format!("OK {}\n", self.node))
    }

    /// The health page of one protocol's listeners, for a load balancer's check per service.
    fn protocol_health(&self, name: &str) -> Answer {
        let Ok(protocol) = name.parse::<Protocol>() else {
            return Answer::error(StatusCode::NOT_FOUND, format!("no protocol `{name}`"));
        };
        if !self.protocols.contains(&protocol) {
            return Answer::error(
                StatusCode::NOT_FOUND,
                format!("no {protocol} listener on this node"),
            );
        }
        let down: Vec<String> = self
            .services
            .resolver
            .health()
            .snapshot()
            .into_iter()
            .filter(|(_, h)| !h.all_up())
            .map(|(name, _)| name.to_string())
            .collect();
        let (status, state, why) = if self.state.is_draining() {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "draining",
                "the node is in maintenance".to_owned(),
            )
        } else if self.locator.snapshot().is_none() {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "no location map is loaded yet".to_owned(),
            )
        } else if let Some(why) = self.services.resolver.directory_failing() {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("the directory fails: {why}"),
            )
        } else {
            (StatusCode::OK, "ok", format!("{protocol} is served"))
        };
        Answer::json(
            status,
            &json!({
                "node": self.node,
                "protocol": protocol.as_str(),
                "status": state,
                "reason": why,
                "servers_down": down,
            }),
        )
    }

    /// Brings the gauges that are states rather than events up to date, then encodes.
    fn metrics(&self) -> Answer {
        let metrics = &self.services.metrics;
        let locator = &self.locator;
        metrics.location_stale.set(i64::from(locator.is_stale()));
        metrics
            .location_loaded
            .set(i64::from(locator.snapshot().is_some()));
        metrics.draining.set(i64::from(self.state.is_draining()));
        Answer {
            status: StatusCode::OK,
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body: metrics.encode(),
            challenge: false,
        }
    }

    fn status(&self) -> Answer {
        let locator = &self.locator;
        let map = locator.snapshot();
        let staleness = locator.staleness();
        let reload = self.reloader.status();
        let now = SystemTime::now();
        Answer::json(
            StatusCode::OK,
            &json!({
                "node": self.node,
                "version": env!("CARGO_PKG_VERSION"),
                "uptime_seconds": now.duration_since(self.started).unwrap_or(Duration::ZERO).as_secs(),
                "draining": self.state.is_draining(),
                "sessions": self.services.registry.len(),
                "connections": self.clients.total(),
                "location": {
                    "loaded": map.is_some(),
                    "databases": map.map_or(0, |m| m.iter().count()),
                    "stale": staleness.is_some(),
                    "stale_reason": staleness.as_ref().map(|s| s.reason.clone()),
                    "stale_since": staleness.as_ref().map(|s| unix_seconds(s.since)),
                    "last_update": locator.last_update().map(unix_seconds),
                },
                "throttle": { "tracked": self.services.resolver.throttle().tracked() },
                "active_manager": {
                    "leader": self.manager.as_ref().is_some_and(|m| m.is_leader()),
                    "probing": self.services.resolver.health().is_probing(),
                    "servers_down": self.services.resolver.health().snapshot().into_iter()
                        .filter(|(_, h)| !h.all_up())
                        .map(|(name, _)| name.to_string())
                        .collect::<Vec<_>>(),
                },
                "config": {
                    "loaded_at": reload.loaded_at.map(unix_seconds),
                    "last_error": reload.last_error,
                    "pending_restart": reload.pending_restart,
                },
            }),
        )
    }

    fn sessions(&self, query: &str) -> Answer {
        let filter = match filter(query) {
            Ok(f) => f.unwrap_or_default(),
            Err(e) => return Answer::error(StatusCode::BAD_REQUEST, e),
        };
        let now = SystemTime::now();
        let mut sessions = self.services.registry.list(&filter);
        sessions.sort_by(|a, b| a.since.cmp(&b.since).then_with(|| a.id.cmp(&b.id)));
        let list: Vec<Value> = sessions.iter().map(|s| session_json(s, now)).collect();
        Answer::json(
            StatusCode::OK,
            &json!({ "count": list.len(), "sessions": list }),
        )
    }

    fn kick(&self, query: &str) -> Answer {
        let filter = match filter(query) {
            Ok(Some(f)) => f,
            Ok(None) if mailfront_http::form::field(query, "all").as_deref() == Some("yes") => {
                Filter::default()
            }
            Ok(None) => {
                return Answer::error(
                    StatusCode::BAD_REQUEST,
                    "name user, server, database or protocol, or all=yes to close every session",
                );
            }
            Err(e) => return Answer::error(StatusCode::BAD_REQUEST, e),
        };
        let kicked = self.services.registry.stop(&filter, &StopReason::Kicked);
        tracing::info!(
            kicked,
            user = ?filter.user,
            server = ?filter.server,
            database = ?filter.database,
            protocol = ?filter.protocol,
            "admin: sessions kicked"
        );
        Answer::json(StatusCode::OK, &json!({ "kicked": kicked }))
    }

    fn drain(&self, draining: bool) -> Answer {
        let was = self.state.set_draining(draining);
        self.services.metrics.draining.set(i64::from(draining));
        if was != draining {
            tracing::warn!(
                draining,
                sessions = self.services.registry.len(),
                "admin: maintenance {}",
                if draining {
                    "on: health pages answer 503, live sessions continue"
                } else {
                    "off: back in service"
                }
            );
        }
        Answer::json(
            StatusCode::OK,
            &json!({ "draining": draining, "sessions": self.services.registry.len() }),
        )
    }

    /// Answers one request (no I/O but a reload's file reads).
    pub fn answer(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        caller: Caller,
    ) -> Answer {
        let reading = method == Method::GET || method == Method::HEAD;
        if path == "/health" && reading {
            return self.health();
        }
        if let Some(protocol) = path.strip_prefix("/health/")
            && reading
        {
            return self.protocol_health(protocol);
        }
        if let Err(mut refused) = self.authorized(headers, caller) {
            refused.challenge = path == "/" && refused.status == StatusCode::UNAUTHORIZED;
            return refused;
        }
        match (method.as_str(), path) {
            ("GET", "/") => self.page(),
            ("GET", "/metrics") => self.metrics(),
            ("GET", "/status") => self.status(),
            ("GET", "/sessions") => self.sessions(query),
            ("POST", "/sessions/kick") => self.kick(query),
            ("POST", "/drain") => self.drain(true),
            ("POST", "/undrain") => self.drain(false),
            ("POST", "/reload") => match self.reloader.reload("admin API") {
                Ok(report) => Answer::json(
                    StatusCode::OK,
                    &json!({ "applied": report.applied, "needs_restart": report.needs_restart }),
                ),
                Err(e) => Answer::error(StatusCode::UNPROCESSABLE_ENTITY, e),
            },
            (
                _,
                "/" | "/health" | "/metrics" | "/status" | "/sessions" | "/sessions/kick"
                | "/drain" | "/undrain" | "/reload",
            ) => Answer::error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            _ => Answer::error(StatusCode::NOT_FOUND, "no such admin resource"),
        }
    }

    /// Answers a request for the fleet (the Active Manager's views and commands).
    async fn fleet(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        caller: Caller,
    ) -> Answer {
        if let Err(refused) = self.authorized(headers, caller) {
            return refused;
        }
        match &self.manager {
            Some(manager) => {
                let registry = &self.services.registry;
                fleet::answer(manager, registry, method, path, query).await
            }
            None => Answer::error(
                StatusCode::NOT_FOUND,
                "this node has no Active Manager (no location store to write)",
            ),
        }
    }

    async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        caller: Caller,
    ) -> Response<Full<Bytes>> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or("").to_owned();
        let headers = request.headers().clone();
        let answer = if fleet::PATHS.contains(&path.as_str()) {
            self.fleet(&method, &path, &query, &headers, caller).await
        } else {
            // A reload reads files: keep it off the async threads.
            let admin = Arc::clone(&self);
            tokio::task::spawn_blocking(move || {
                admin.answer(&method, &path, &query, &headers, caller)
            })
            .await
            .unwrap_or_else(|_| Answer::error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
        };
        let mut response = Response::new(Full::new(Bytes::from(answer.body)));
        *response.status_mut() = answer.status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(answer.content_type),
        );
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if answer.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"mailfront admin\""),
            );
        }
        response
    }
}

/// What the connection tells about who is calling.
#[derive(Clone, Copy, Debug, Default)]
pub struct Caller {
    /// The client presented a certificate the listener's CAs signed.
    pub client_certificate: bool,
}

/// Serves the admin API on `listener` until `shutdown` turns true: HTTPS when `tls` holds an
/// acceptor, else plain HTTP.
pub async fn serve(
    admin: Arc<Admin>,
    listener: TcpListener,
    tls: Arc<SharedAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer): (_, SocketAddr) = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "admin: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let admin = Arc::clone(&admin);
        let acceptor = tls.get();
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                return serve_connection(admin, tcp, peer, Caller::default()).await;
            };
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let caller = Caller {
                        client_certificate: tls::presented_client_certificate(&stream),
                    };
                    serve_connection(admin, stream, peer, caller).await;
                }
                Ok(Err(error)) => {
                    tracing::debug!(client = %peer, %error, "admin: TLS handshake failed");
                }
                Err(_) => tracing::debug!(client = %peer, "admin: no TLS handshake within 10s"),
            }
        });
    }
}

/// Serves the requests of one admin connection.
async fn serve_connection<IO>(admin: Arc<Admin>, io: IO, peer: SocketAddr, caller: Caller)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let admin = Arc::clone(&admin);
        async move { Ok::<_, std::convert::Infallible>(admin.handle(request, caller).await) }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(io), service)
        .await;
    if let Err(error) = result {
        tracing::debug!(client = %peer, %error, "admin connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_from_queries() {
        assert_eq!(filter(""), Ok(None));
        assert_eq!(filter("all=yes"), Ok(None));
        assert_eq!(
            filter("user=&server="),
            Ok(None),
            "empty values filter nothing"
        );
        let f = filter("user=alice%40example.com&protocol=IMAP&server=mbx1")
            .unwrap()
            .unwrap();
        assert_eq!(f.user.as_deref(), Some("alice@example.com"));
        assert_eq!(f.protocol, Some(Protocol::Imap));
        assert_eq!(f.server, Some("mbx1".into()));
        assert!(filter("protocol=gopher").is_err());
    }
}
