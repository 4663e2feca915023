//! The HTTPS front door: one request at a time, from authentication to proxy or redirect.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mailfront_location::LocateError;
use mailfront_model::{Principal, Protocol, Secret};
use mailfront_proxy::admission::{CredentialRefusal, Gateway};
use mailfront_proxy::node::NodeState;
use mailfront_routing::{
    Decision, Facts, HttpRequest, LocationFailure, RejectKind, Request as RouteRequest, route,
};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use crate::address_book;
use crate::autodiscover;
use crate::config::{AuthMode, HttpConfig, ServiceConfig};
use crate::cookie::{CookieKeys, Purpose, Session};
use crate::form;
use crate::login;

/// The response body type: generated bodies and streamed backend bodies alike.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// The CSRF cookie of the login form (double-submit: the form carries the same value).
const CSRF_COOKIE: &str = "mailfront_csrf";
/// Largest request body mailfront reads itself (login forms, autodiscover requests).
const MAX_OWN_BODY: usize = 16 * 1024;

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", format!("{body}\n"))
}

fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut response = text(status, &format!("See {location}"));
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn unavailable(why: &str) -> Response<Body> {
    let mut response = text(StatusCode::SERVICE_UNAVAILABLE, why);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
    response
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes every header whose name has an underscore. CGI and WSGI servers turn `X_Remote_User`
/// and `X-Remote-User` into the same variable, so a client could smuggle a second copy of the
/// identity header (or of `X-Forwarded-For`) past a check that looks for the dashed name only.
/// nginx drops such headers by default for the same reason.
fn strip_underscored(headers: &mut HeaderMap) {
    let underscored: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().contains('_'))
        .cloned()
        .collect();
    for name in underscored {
        headers.remove(&name);
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    for name in named
        .iter()
        .map(String::as_str)
        .chain(HOP_BY_HOP.iter().copied())
    {
        if keep_upgrade && (name == "upgrade" || name == "connection") {
            continue;
        }
        headers.remove(name);
    }
}

fn is_upgrade<B>(request: &Request<B>) -> bool {
    request.headers().contains_key(header::UPGRADE)
        && request
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// The client's address, carried in the request's extensions.
#[derive(Clone, Copy, Debug)]
struct ClientAddr(SocketAddr);

/// The client's address of a request (the loopback address if it was never recorded).
fn client_of<B>(request: &Request<B>) -> IpAddr {
    request
        .extensions()
        .get::<ClientAddr>()
        .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip())
}

/// What authentication found.
enum Identity {
    /// Nobody (a service without authentication).
    Anonymous,
    /// A user.
    User(Principal),
}

/// The HTTPS front door of one node.
pub struct HttpFrontDoor {
    config: HttpConfig,
    gateway: Arc<Gateway>,
    keys: ArcSwap<CookieKeys>,
    client: Client<HttpsConnector<HttpConnector>, Body>,
    node_name: String,
    state: Arc<NodeState>,
    identity_header: HeaderName,
}

impl std::fmt::Debug for HttpFrontDoor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFrontDoor")
            .field("node", &self.node_name)
            .finish_non_exhaustive()
    }
}

impl HttpFrontDoor {
    /// Builds the front door. `backend_tls` is the client configuration for `https://` backends
    /// (trusting the backends' CA); without it, only `http://` backends can be reached.
    pub fn new(
        config: HttpConfig,
        gateway: Arc<Gateway>,
        keys: CookieKeys,
        backend_tls: Option<rustls::ClientConfig>,
        node_name: String,
        state: Arc<NodeState>,
    ) -> Result<Self, String> {
        config.validate()?;
        let identity_header = HeaderName::from_bytes(config.identity_header.as_bytes())
            .map_err(|_| "http.identity_header: not a header name".to_owned())?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(gateway.settings().backend.connect));
        let connector = match backend_tls {
            Some(tls) => hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .wrap_connector(http),
            None => {
                // No backend CA: an empty trust store, so an https:// backend fails loudly
                // instead of being trusted blindly.
                let tls = rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(http)
            }
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.max_idle_per_backend)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(Self {
            config,
            gateway,
            keys: ArcSwap::from_pointee(keys),
            client,
            node_name,
            state,
            identity_header,
        })
    }

    /// Replaces the cookie keys (after an operator edited the key file).
    pub fn set_keys(&self, keys: CookieKeys) {
        self.keys.store(Arc::new(keys));
    }

    /// The configuration in force.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    fn service_for(&self, path: &str) -> Option<&ServiceConfig> {
        self.config
            .service
            .iter()
            .filter(|s| path.starts_with(&s.path) || path == s.path.trim_end_matches('/'))
            .max_by_key(|s| s.path.len())
    }

    /// The URL the client used, for the routing rules (`https://host/path`).
    fn requested_url<B>(request: &Request<B>) -> String {
        let host = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                request
                    .headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        format!("https://{host}{}", request.uri().path())
    }

    fn session_cookie(&self, session: &Session) -> String {
        format!(
            "{}={}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Lax",
            self.config.cookie_name,
            self.keys.load().seal(session, Purpose::Session),
            self.config.session_lifetime.as_secs()
        )
    }

    /// Serves one request. Never fails: every problem becomes an HTTP status.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, std::convert::Infallible> {
        let started = Instant::now();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let mut request = request;
        request.extensions_mut().insert(ClientAddr(peer));
        let (response, user, service, backend) = self.route_request(request, peer).await;
        tracing::info!(
            client = %peer,
            method = %method,
            path = %path.chars().take(200).collect::<String>(),
            user = %user.as_deref().unwrap_or("-"),
            service = %service.unwrap_or("-"),
            backend = %backend.as_deref().unwrap_or("-"),
            status = response.status().as_u16(),
            duration_ms = started.elapsed().as_millis() as u64,
            "http request"
        );
        self.gateway
            .metrics()
            .http_requests
            .get_or_create(&mailfront_proxy::metrics::ResultLabels {
                protocol: "http".to_owned(),
                result: format!("{}xx", response.status().as_u16() / 100),
            })
            .inc();
        Ok(response)
    }

    async fn route_request(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> (Response<Body>, Option<String>, Option<&str>, Option<String>) {
        let path = request.uri().path().to_owned();
        let (response, user) = match path.as_str() {
            "/login" => self.login(request).await,
            "/logout" => self.logout(),
            "/auth/token" => self.token(request).await,
            "/.well-known/autoconfig/mail/config-v1.1.xml" | "/mail/config-v1.1.xml" => {
                self.autoconfig(&request)
            }
            "/autodiscover/autodiscover.xml" => self.pox(request).await,
            "/autodiscover/autodiscover.json" => self.autodiscover_json(&request),
            "/autodiscover/mobileconfig" => self.mobileconfig(request).await,
            "/oab/" | "/oab" => self.address_book(request).await,
            _ => return self.route_service(&path, request, peer).await,
        };
        (response, user, None, None)
    }

    async fn route_service<'a>(
        &'a self,
        path: &str,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> (
        Response<Body>,
        Option<String>,
        Option<&'a str>,
        Option<String>,
    ) {
        let path = path.to_owned();
        let Some(service) = self.service_for(&path) else {
            return (text(StatusCode::NOT_FOUND, "Not found"), None, None, None);
        };
        if path == service.path.trim_end_matches('/') {
            return (
                redirect(StatusCode::MOVED_PERMANENTLY, &service.path),
                None,
                Some(&service.name),
                None,
            );
        }
        if path
            .strip_prefix(&service.path)
            .is_some_and(|rest| rest.eq_ignore_ascii_case("healthcheck.htm"))
        {
            return (self.health(), None, Some(&service.name), None);
        }
        let (response, user, backend) = self.serve_service(service, request, peer).await;
        (response, user, Some(&service.name), backend)
    }

    fn health(&self) -> Response<Body> {
        if self.state.is_draining() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{} is in maintenance", self.node_name),
            );
        }
        // Without a location map no login can be routed: not ready (as the admin /health says).
        if self.gateway.locator().snapshot().is_none() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{} has no location map yet", self.node_name),
            );
        }
        text(StatusCode::OK, &self.node_name)
    }

    /// Checks credentials with the directory (through the gateway, so HTTP logins are throttled
    /// like every other protocol), taking the failure delay on refusal.
    async fn check_password(
        &self,
        client: IpAddr,
        user: &str,
        password: Vec<u8>,
    ) -> Result<Principal, Response<Body>> {
        let secret = Secret::new(password);
        match self
            .gateway
            .check_password("http", client, user, &secret, Instant::now())
            .await
        {
            Ok(principal) => Ok(principal),
            Err(CredentialRefusal::Invalid(_)) => {
                let mut response = text(StatusCode::UNAUTHORIZED, "Authentication failed");
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"mailfront\", charset=\"UTF-8\""),
                );
                Err(response)
            }
            Err(CredentialRefusal::Unavailable(why)) => {
                tracing::warn!(reason = %why, "directory unavailable for an HTTP login");
                Err(unavailable(
                    "Directory temporarily unavailable, try again later",
                ))
            }
        }
    }

    async fn principal_of(&self, session: &Session) -> Result<Option<Principal>, Response<Body>> {
        match tokio::time::timeout(
            self.gateway.settings().directory_timeout,
            self.gateway.directory().lookup(&session.user),
        )
        .await
        {
            Ok(Ok(principal)) => Ok(principal),
            _ => Err(unavailable(
                "Directory temporarily unavailable, try again later",
            )),
        }
    }

    /// Who is asking, by the service's modes; `Err` is the response to send instead.
    async fn authenticate(
        &self,
        service: &ServiceConfig,
        request: &Request<Incoming>,
    ) -> Result<Identity, Response<Body>> {
        if service.auth.contains(&AuthMode::None) {
            return Ok(Identity::Anonymous);
        }
        let headers = request.headers();
        let now = SystemTime::now();
        if service.auth.contains(&AuthMode::Forms)
            && let Some(value) = form::cookie(headers, &self.config.cookie_name)
        {
            match self.keys.load().open(&value, Purpose::Session, now) {
                Ok(session) => {
                    if let Some(principal) = self.principal_of(&session).await? {
                        return Ok(Identity::User(principal));
                    }
                }
                Err(error) => tracing::info!(%error, "session cookie refused"),
            }
        }
        if service.auth.contains(&AuthMode::Bearer)
            && let Some(token) = form::bearer_token(headers)
        {
            return match self.keys.load().open(&token, Purpose::Bearer, now) {
                Ok(session) => match self.principal_of(&session).await? {
                    Some(principal) => Ok(Identity::User(principal)),
                    None => Err(self.challenge(service, request)),
                },
                Err(error) => {
                    tracing::info!(%error, "bearer token refused");
                    Err(self.challenge(service, request))
                }
            };
        }
        if service.auth.contains(&AuthMode::Basic)
            && let Some((user, password)) = form::basic_credentials(headers)
        {
            return self
                .check_password(client_of(request), &user, password)
                .await
                .map(Identity::User);
        }
        Err(self.challenge(service, request))
    }

    /// The answer to a request without (valid) credentials.
    fn challenge(&self, service: &ServiceConfig, request: &Request<Incoming>) -> Response<Body> {
        if service.browser_app
            && service.auth.contains(&AuthMode::Forms)
            && request.method() == Method::GET
        {
            let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
            return redirect(
                StatusCode::FOUND,
                &format!("/login?return={}", form::encode_component(target)),
            );
        }
        let mut response = text(StatusCode::UNAUTHORIZED, "Authentication required");
        let challenge = if service.auth.contains(&AuthMode::Basic) {
            "Basic realm=\"mailfront\", charset=\"UTF-8\""
        } else {
            "Bearer realm=\"mailfront\""
        };
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
        response
    }

    /// The mailbox a request acts on, if it names another one (the anchor mailbox).
    async fn anchor(
        &self,
        service: &ServiceConfig,
        request: &Request<Incoming>,
    ) -> Result<Option<Principal>, Response<Body>> {
        let named = request
            .headers()
            .get("x-anchormailbox")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| {
                let parameter = service.anchor_query.as_deref()?;
                form::field(request.uri().query()?, parameter)
            });
        let Some(named) = named else {
            return Ok(None);
        };
        // Exchange clients write `SMTP:alice@…` or `alice@…`.
        let address = named
            .strip_prefix("SMTP:")
            .or_else(|| named.strip_prefix("smtp:"))
            .unwrap_or(&named);
        match tokio::time::timeout(
            self.gateway.settings().directory_timeout,
            self.gateway.directory().lookup(address),
        )
        .await
        {
            Ok(Ok(found)) => Ok(found),
            _ => Err(unavailable(
                "Directory temporarily unavailable, try again later",
            )),
        }
    }

    async fn serve_service(
        &self,
        service: &ServiceConfig,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> (Response<Body>, Option<String>, Option<String>) {
        let identity = match self.authenticate(service, &request).await {
            Ok(identity) => identity,
            Err(response) => return (response, None, None),
        };
        let user = match &identity {
            Identity::User(p) => Some(p.address.clone()),
            Identity::Anonymous => None,
        };
        let topology = self.gateway.topology();
        let decision = match &identity {
            Identity::Anonymous => {
                // No mailbox to follow: any server of this site with the service will do.
                let server = topology
                    .servers
                    .values()
                    .filter(|s| s.endpoints.http.is_some())
                    .min_by_key(|s| (s.site != topology.node.site, s.name.clone()));
                match server {
                    Some(s) => Decision::Proxy {
                        server: s.name.clone(),
                        reason: mailfront_routing::Reason::AuthFailed,
                    },
                    None => return (unavailable("No server offers this service"), user, None),
                }
            }
            Identity::User(principal) => {
                if !principal.allows(Protocol::Http) {
                    return (
                        text(
                            StatusCode::FORBIDDEN,
                            "Web access is not enabled for this account",
                        ),
                        user,
                        None,
                    );
                }
                let anchor = match self.anchor(service, &request).await {
                    Ok(anchor) => anchor,
                    Err(response) => return (response, user, None),
                };
                let target = anchor.as_ref().unwrap_or(principal);
                let active = self.gateway.locator().locate(&target.database);
                let active_ref = active.as_ref().map_err(|e| match e {
                    LocateError::Unavailable => LocationFailure::Unavailable,
                    LocateError::UnknownDatabase => LocationFailure::UnknownDatabase,
                });
                let requested_url = Self::requested_url(&request);
                route(
                    &topology,
                    &RouteRequest {
                        protocol: Protocol::Http,
                        http: Some(HttpRequest {
                            service: &service.name,
                            browser_app: service.browser_app,
                            requested_url: &requested_url,
                            legacy_url: service.legacy_url.as_deref(),
                        }),
                    },
                    Facts::Authenticated {
                        principal: target,
                        active: active_ref,
                    },
                )
            }
        };
        match decision {
            Decision::Redirect { location, reason } => {
                tracing::debug!(%reason, "redirected");
                (redirect(StatusCode::FOUND, &location), user, None)
            }
            Decision::Reject { kind, reason } => {
                tracing::info!(%reason, "refused");
                let response = match kind {
                    RejectKind::AuthFailed => {
                        text(StatusCode::UNAUTHORIZED, "Authentication failed")
                    }
                    RejectKind::ProtocolDisabled => text(
                        StatusCode::FORBIDDEN,
                        "Web access is not enabled for this account",
                    ),
                    RejectKind::Temporary => {
                        unavailable("Service temporarily unavailable, try again later")
                    }
                };
                (response, user, None)
            }
            Decision::Proxy { server, .. } => {
                let Some(base) = topology
                    .server(&server)
                    .and_then(|s| s.endpoints.http.clone())
                else {
                    return (
                        unavailable("Service temporarily unavailable, try again later"),
                        user,
                        Some(server.to_string()),
                    );
                };
                let response = self
                    .forward(service, request, &base, user.as_deref(), peer)
                    .await;
                (response, user, Some(server.to_string()))
            }
        }
    }

    /// Proxies the request to `base` (the server's HTTP base URL), with the identity header.
    async fn forward(
        &self,
        service: &ServiceConfig,
        mut request: Request<Incoming>,
        base: &str,
        user: Option<&str>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let rest = request
            .uri()
            .path()
            .strip_prefix(&service.path)
            .unwrap_or("");
        let backend_path = format!("{}{}", service.backend_path, rest);
        let target = format!(
            "{}{}{}",
            base.trim_end_matches('/'),
            if backend_path.starts_with('/') {
                ""
            } else {
                "/"
            },
            backend_path
        );
        let target = match request.uri().query() {
            Some(query) => format!("{target}?{query}"),
            None => target,
        };
        let Ok(uri) = target.parse::<Uri>() else {
            return text(StatusCode::BAD_REQUEST, "Bad request path");
        };
        let upgrade = is_upgrade(&request);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        let original_host = parts.headers.get(header::HOST).cloned();
        let headers = &mut parts.headers;
        strip_hop_by_hop(headers, upgrade);
        strip_underscored(headers);
        // Identity is ours to say: a client's own copy never reaches the backend, nor do the
        // credentials and cookies mailfront consumed.
        headers.remove(&self.identity_header);
        headers.remove(header::AUTHORIZATION);
        match form::cookie_without(headers, &[&self.config.cookie_name, CSRF_COOKIE]) {
            Some(cookies) => {
                if let Ok(value) = HeaderValue::from_str(&cookies) {
                    headers.insert(header::COOKIE, value);
                }
            }
            None => {
                headers.remove(header::COOKIE);
            }
        }
        if let Some(user) = user
            && let Ok(value) = HeaderValue::from_str(user)
        {
            headers.insert(self.identity_header.clone(), value);
        }
        if let Some(name) = &service.prefix_header
            && let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(service.path.trim_end_matches('/')),
            )
        {
            headers.insert(name, value);
        }
        // A client's own X-Forwarded-For is a claim, not a fact: it is replaced by the address
        // mailfront saw.
        if let Ok(value) = HeaderValue::from_str(&peer.ip().to_string()) {
            headers.insert("x-forwarded-for", value);
        }
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        if let Some(host) = original_host {
            headers.insert("x-forwarded-host", host);
        }
        headers.remove(header::HOST);
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        let outgoing = Request::from_parts(parts, body.boxed());
        let sent =
            tokio::time::timeout(self.config.backend_timeout, self.client.request(outgoing)).await;
        let mut response = match sent {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                tracing::warn!(backend = %base, %error, "backend request failed");
                return unavailable("Mailbox server temporarily unavailable, try again later");
            }
            Err(_) => {
                tracing::warn!(backend = %base, "backend did not answer in time");
                return unavailable("Mailbox server did not answer in time, try again later");
            }
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            let backend_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                if let (Ok(client), Ok(backend)) = (client_upgrade.await, backend_upgrade.await) {
                    let mut client = TokioIo::new(client);
                    let mut backend = TokioIo::new(backend);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
                }
            });
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers, true);
            return Response::from_parts(parts, body.boxed());
        }
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        // Our connection with the client has its own version (a backend may answer HTTP/1.0).
        parts.version = http::Version::default();
        Response::from_parts(parts, body.boxed())
    }

    /// Reads a body mailfront answers itself: bounded in size and in time, UTF-8.
    async fn read_body(
        &self,
        request: Request<Incoming>,
    ) -> Result<(http::request::Parts, String), Response<Body>> {
        let (parts, body) = request.into_parts();
        let collected = tokio::time::timeout(
            self.config.body_timeout,
            Limited::new(body, MAX_OWN_BODY).collect(),
        )
        .await;
        match collected {
            Ok(Ok(collected)) => match String::from_utf8(collected.to_bytes().to_vec()) {
                Ok(text) => Ok((parts, text)),
                Err(_) => Err(text(
                    StatusCode::BAD_REQUEST,
                    "The request body is not UTF-8",
                )),
            },
            Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large",
            )),
            Ok(Err(_)) => Err(text(StatusCode::BAD_REQUEST, "Malformed request body")),
            Err(_) => {
                let mut response = text(StatusCode::REQUEST_TIMEOUT, "Request body too slow");
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                Err(response)
            }
        }
    }

    fn login_page(
        &self,
        status: StatusCode,
        return_to: &str,
        error: Option<&str>,
    ) -> Response<Body> {
        let mut token = [0u8; 24];
        rand::Rng::fill(&mut rand::rngs::OsRng, &mut token[..]);
        let csrf = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, token);
        let mut response = full(
            status,
            "text/html; charset=utf-8",
            login::page(&self.node_name, return_to, &csrf, error),
        );
        if let Ok(value) = HeaderValue::from_str(&format!(
            "{CSRF_COOKIE}={csrf}; Path=/login; HttpOnly; Secure; SameSite=Strict"
        )) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
        headers.insert("content-security-policy", HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"));
        response
    }

    async fn login(&self, request: Request<Incoming>) -> (Response<Body>, Option<String>) {
        let return_to = form::safe_return(
            request
                .uri()
                .query()
                .and_then(|q| form::field(q, "return"))
                .as_deref(),
        );
        match *request.method() {
            Method::GET | Method::HEAD => {
                return (self.login_page(StatusCode::OK, &return_to, None), None);
            }
            Method::POST => {}
            _ => {
                return (
                    text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
                    None,
                );
            }
        }
        let client = client_of(&request);
        let (parts, body) = match self.read_body(request).await {
            Ok(read) => read,
            Err(response) => return (response, None),
        };
        let return_to = form::safe_return(form::field(&body, "return").as_deref());
        // Login CSRF: the form's token must equal the cookie set with the form.
        let cookie = form::cookie(&parts.headers, CSRF_COOKIE).unwrap_or_default();
        let field = form::field(&body, "csrf").unwrap_or_default();
        if cookie.is_empty() || !bool::from(cookie.as_bytes().ct_eq(field.as_bytes())) {
            return (
                self.login_page(
                    StatusCode::FORBIDDEN,
                    &return_to,
                    Some("The form expired. Please sign in again."),
                ),
                None,
            );
        }
        let user = form::field(&body, "user").unwrap_or_default();
        let password = form::field(&body, "password")
            .unwrap_or_default()
            .into_bytes();
        if user.is_empty() || user.chars().any(char::is_control) {
            return (
                self.login_page(
                    StatusCode::UNAUTHORIZED,
                    &return_to,
                    Some("The e-mail address or password is incorrect."),
                ),
                None,
            );
        }
        match self.check_password(client, &user, password).await {
            Ok(principal) if principal.allows(Protocol::Http) => {
                let session = Session::new(
                    &principal.address,
                    SystemTime::now(),
                    self.config.session_lifetime,
                );
                let mut response = redirect(StatusCode::SEE_OTHER, &return_to);
                let headers = response.headers_mut();
                if let Ok(value) = HeaderValue::from_str(&self.session_cookie(&session)) {
                    headers.append(header::SET_COOKIE, value);
                }
                headers.append(header::SET_COOKIE, HeaderValue::from_static("mailfront_csrf=; Path=/login; Max-Age=0; HttpOnly; Secure; SameSite=Strict"));
                (response, Some(principal.address))
            }
            Ok(principal) => (
                self.login_page(
                    StatusCode::FORBIDDEN,
                    &return_to,
                    Some("Web access is not enabled for this account."),
                ),
                Some(principal.address),
            ),
            Err(response) if response.status() == StatusCode::UNAUTHORIZED => (
                self.login_page(
                    StatusCode::UNAUTHORIZED,
                    &return_to,
                    Some("The e-mail address or password is incorrect."),
                ),
                None,
            ),
            Err(response) => (response, None),
        }
    }

    fn logout(&self) -> (Response<Body>, Option<String>) {
        let mut response = redirect(StatusCode::SEE_OTHER, "/login");
        if let Ok(value) = HeaderValue::from_str(&format!(
            "{}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax",
            self.config.cookie_name
        )) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        (response, None)
    }

    /// `POST /auth/token` with Basic credentials: a bearer token for API clients.
    async fn token(&self, request: Request<Incoming>) -> (Response<Body>, Option<String>) {
        if request.method() != Method::POST {
            return (text(StatusCode::METHOD_NOT_ALLOWED, "Use POST"), None);
        }
        let Some((user, password)) = form::basic_credentials(request.headers()) else {
            let mut response = text(StatusCode::UNAUTHORIZED, "Authentication required");
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"mailfront\""),
            );
            return (response, None);
        };
        match self
            .check_password(client_of(&request), &user, password)
            .await
        {
            Ok(principal) => {
                let session = Session::new(
                    &principal.address,
                    SystemTime::now(),
                    self.config.session_lifetime,
                );
                let token = self.keys.load().seal(&session, Purpose::Bearer);
                let body = serde_json::json!({ "token_type": "Bearer", "access_token": token, "expires_in": self.config.session_lifetime.as_secs() });
                (
                    full(StatusCode::OK, "application/json", body.to_string()),
                    Some(principal.address),
                )
            }
            Err(response) => (response, None),
        }
    }

    fn autoconfig(&self, request: &Request<Incoming>) -> (Response<Body>, Option<String>) {
        let Some(config) = &self.config.autodiscover else {
            return (text(StatusCode::NOT_FOUND, "Not found"), None);
        };
        let address = request
            .uri()
            .query()
            .and_then(|q| form::field(q, "emailaddress"));
        let domain = match address.as_deref().and_then(autodiscover::plain_address) {
            Some((_, domain)) => domain.to_owned(),
            // Thunderbird may ask by domain only: the Host names it.
            None => config.domains.first().cloned().unwrap_or_default(),
        };
        if !config.serves(&domain) {
            return (
                text(StatusCode::NOT_FOUND, "Not a domain served here"),
                None,
            );
        }
        (
            full(
                StatusCode::OK,
                "application/xml; charset=utf-8",
                autodiscover::thunderbird(config, &domain),
            ),
            None,
        )
    }

    async fn pox(&self, request: Request<Incoming>) -> (Response<Body>, Option<String>) {
        let Some(config) = self.config.autodiscover.clone() else {
            return (text(StatusCode::NOT_FOUND, "Not found"), None);
        };
        if request.method() != Method::POST {
            return (text(StatusCode::METHOD_NOT_ALLOWED, "Use POST"), None);
        }
        let (_, body) = match self.read_body(request).await {
            Ok(read) => read,
            Err(response) => return (response, None),
        };
        let Some(address) = autodiscover::pox_request_address(&body) else {
            return (
                full(
                    StatusCode::OK,
                    "text/xml; charset=utf-8",
                    autodiscover::outlook_error(600, "Invalid Request"),
                ),
                None,
            );
        };
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
        if !config.serves(domain) {
            return (
                full(
                    StatusCode::OK,
                    "text/xml; charset=utf-8",
                    autodiscover::outlook_error(500, "The e-mail address cannot be found."),
                ),
                None,
            );
        }
        (
            full(
                StatusCode::OK,
                "text/xml; charset=utf-8",
                autodiscover::outlook(&config, &address, None),
            ),
            None,
        )
    }

    fn autodiscover_json(&self, request: &Request<Incoming>) -> (Response<Body>, Option<String>) {
        if self.config.autodiscover.is_none() {
            return (text(StatusCode::NOT_FOUND, "Not found"), None);
        }
        let query = request.uri().query().unwrap_or("");
        let protocol = form::field(query, "Protocol").unwrap_or_default();
        let host = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                request
                    .headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        match autodiscover::json(&protocol, &format!("https://{host}")) {
            Ok(body) => (full(StatusCode::OK, "application/json", body), None),
            Err(body) => (
                full(StatusCode::BAD_REQUEST, "application/json", body),
                None,
            ),
        }
    }

    /// Authenticates a request to one of mailfront's own pages (Basic, or the forms cookie).
    async fn own_page_user(
        &self,
        request: &Request<Incoming>,
    ) -> Result<Principal, Response<Body>> {
        if let Some(value) = form::cookie(request.headers(), &self.config.cookie_name)
            && let Ok(session) = self
                .keys
                .load()
                .open(&value, Purpose::Session, SystemTime::now())
            && let Some(principal) = self.principal_of(&session).await?
        {
            return Ok(principal);
        }
        match form::basic_credentials(request.headers()) {
            Some((user, password)) => {
                self.check_password(client_of(request), &user, password)
                    .await
            }
            None => {
                let mut response = text(StatusCode::UNAUTHORIZED, "Authentication required");
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"mailfront\", charset=\"UTF-8\""),
                );
                Err(response)
            }
        }
    }

    async fn mobileconfig(&self, request: Request<Incoming>) -> (Response<Body>, Option<String>) {
        let Some(config) = self.config.autodiscover.clone() else {
            return (text(StatusCode::NOT_FOUND, "Not found"), None);
        };
        let principal = match self.own_page_user(&request).await {
            Ok(p) => p,
            Err(response) => return (response, None),
        };
        let name = principal
            .display_name
            .clone()
            .unwrap_or_else(|| principal.address.clone());
        match autodiscover::mobileconfig(
            &config,
            &principal.address,
            &name,
            [autodiscover::uuid_v4(), autodiscover::uuid_v4()],
        ) {
            Some(profile) => {
                let mut response =
                    full(StatusCode::OK, "application/x-apple-aspen-config", profile);
                response.headers_mut().insert(
                    header::CONTENT_DISPOSITION,
                    HeaderValue::from_static("attachment; filename=\"mail.mobileconfig\""),
                );
                (response, Some(principal.address))
            }
            None => (
                text(
                    StatusCode::NOT_FOUND,
                    "No incoming or outgoing server is configured",
                ),
                Some(principal.address),
            ),
        }
    }

    async fn address_book(&self, request: Request<Incoming>) -> (Response<Body>, Option<String>) {
        if !self.config.address_book {
            return (text(StatusCode::NOT_FOUND, "Not found"), None);
        }
        let principal = match self.own_page_user(&request).await {
            Ok(p) => p,
            Err(response) => return (response, None),
        };
        let listed = tokio::time::timeout(
            self.gateway.settings().directory_timeout,
            self.gateway.directory().list(&principal.tenant),
        )
        .await;
        match listed {
            Ok(Ok(users)) => {
                // Only the user's own tenant, whatever the backend returned.
                let users: Vec<Principal> = users
                    .into_iter()
                    .filter(|u| u.tenant == principal.tenant)
                    .collect();
                let mut response = full(
                    StatusCode::OK,
                    "text/vcard; charset=utf-8",
                    address_book::vcards(&users),
                );
                response.headers_mut().insert(
                    header::CONTENT_DISPOSITION,
                    HeaderValue::from_static("attachment; filename=\"address-book.vcf\""),
                );
                (response, Some(principal.address))
            }
            _ => (
                unavailable("The address book is temporarily unavailable"),
                Some(principal.address),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn underscored_headers_go() {
        let mut headers = HeaderMap::new();
        headers.insert("x_remote_user", HeaderValue::from_static("intruder"));
        headers.insert("x_forwarded_for", HeaderValue::from_static("10.0.0.1"));
        headers.insert("x-remote-user", HeaderValue::from_static("kept"));
        strip_underscored(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-remote-user"));
    }
}
