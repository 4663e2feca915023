//! The HTTPS front door of one node: what it holds, and one request's way from dispatch to the
//! log line. Authentication is in `auth`, routing a service request in `service`, forwarding it
//! in `forward`, and mailfront's own pages in `pages`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::HeaderName;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mailfront_metrics::{Metrics, ResultLabels};
use mailfront_net::node::NodeState;
use mailfront_resolve::Resolver;
use tokio::time::Instant;

use crate::auth::ClientAddr;
use crate::config::HttpConfig;
use crate::cookie::CookieKeys;
use crate::reply::Body;

/// What handling a request produced: the response, and what its log line says about it.
pub(crate) struct Handled<'a> {
    /// The response.
    pub response: Response<Body>,
    /// The user the request was made as, if known.
    pub user: Option<String>,
    /// The service (configured path prefix) the request was for, if any.
    pub service: Option<&'a str>,
    /// The mailbox server it went to, if it was proxied.
    pub backend: Option<String>,
}

impl<'a> Handled<'a> {
    /// A response to a request that named no service and reached no backend.
    pub fn page(response: Response<Body>, user: Option<String>) -> Self {
        Self {
            response,
            user,
            service: None,
            backend: None,
        }
    }
}

/// The HTTPS front door of one node.
pub struct HttpFrontDoor {
    pub(crate) config: HttpConfig,
    pub(crate) resolver: Arc<Resolver>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) keys: ArcSwap<CookieKeys>,
    pub(crate) client: Client<HttpsConnector<HttpConnector>, Body>,
    pub(crate) node_name: String,
    pub(crate) state: Arc<NodeState>,
    pub(crate) identity_header: HeaderName,
}

impl std::fmt::Debug for HttpFrontDoor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFrontDoor")
            .field("node", &self.node_name)
            .finish_non_exhaustive()
    }
}

/// What the front door is built from, besides its configuration.
pub struct FrontDoorParts {
    /// Authentication and the resolve step, shared with every front door of the node.
    pub resolver: Arc<Resolver>,
    /// The node's counters.
    pub metrics: Arc<Metrics>,
    /// The cookie keys.
    pub keys: CookieKeys,
    /// The client configuration for `https://` backends (trusting the backends' CA); without
    /// it, only `http://` backends can be reached.
    pub backend_tls: Option<rustls::ClientConfig>,
    /// How long connecting to a backend may take.
    pub connect_timeout: Duration,
    /// The node's name (login page, health pages).
    pub node_name: String,
    /// The node's state (draining).
    pub state: Arc<NodeState>,
}

impl HttpFrontDoor {
    /// Builds the front door; the error names the configuration key at fault.
    pub fn new(config: HttpConfig, parts: FrontDoorParts) -> Result<Self, String> {
        config.validate()?;
        let identity_header = HeaderName::from_bytes(config.identity_header.as_bytes())
            .map_err(|_| "http.identity_header: not a header name".to_owned())?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(parts.connect_timeout));
        let tls = parts.backend_tls.unwrap_or_else(|| {
            // No backend CA: an empty trust store, so an https:// backend fails loudly
            // instead of being trusted blindly.
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        });
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.max_idle_per_backend)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(Self {
            config,
            resolver: parts.resolver,
            metrics: parts.metrics,
            keys: ArcSwap::from_pointee(parts.keys),
            client,
            node_name: parts.node_name,
            state: parts.state,
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
        let handled = self.dispatch(request, peer).await;
        let response = handled.response;
        tracing::info!(
            client = %peer,
            method = %method,
            path = %path.chars().take(200).collect::<String>(),
            user = %handled.user.as_deref().unwrap_or("-"),
            service = %handled.service.unwrap_or("-"),
            backend = %handled.backend.as_deref().unwrap_or("-"),
            status = response.status().as_u16(),
            duration_ms = started.elapsed().as_millis() as u64,
            "http request"
        );
        self.metrics
            .http_requests
            .get_or_create(&ResultLabels {
                protocol: "http".to_owned(),
                result: format!("{}xx", response.status().as_u16() / 100),
            })
            .inc();
        Ok(response)
    }

    /// mailfront's own pages by path; everything else is a service request.
    async fn dispatch(&self, request: Request<Incoming>, peer: SocketAddr) -> Handled<'_> {
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
        Handled::page(response, user)
    }
}
