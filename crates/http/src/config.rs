//! The `[http]` section of mailfront's configuration.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// How a service authenticates requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// `Authorization: Basic` (RFC 7617), checked against the directory.
    Basic,
    /// The forms-login cookie.
    Forms,
    /// `Authorization: Bearer <token>` with a token from `POST /auth/token`.
    Bearer,
    /// No authentication (health pages, public services).
    None,
}

/// `[[http.service]]`: a virtual directory proxied to the mailbox servers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The service's name (routing rules and external URLs refer to it).
    pub name: String,
    /// The path prefix clients use, e.g. `/calendar/` (must start and end with `/`).
    pub path: String,
    /// What the prefix becomes on the backend: the server's HTTP base URL plus this path
    /// (default `/`).
    #[serde(default = "root")]
    pub backend_path: String,
    /// Accepted authentication, in order of preference (default `["basic"]`).
    #[serde(default = "basic")]
    pub auth: Vec<AuthMode>,
    /// A browser app (webmail-like): redirected across sites and to the legacy URL per the
    /// routing rules; sent to the login page when not logged in.
    #[serde(default)]
    pub browser_app: bool,
    /// Where mailboxes older than this node's version are served, for browser apps.
    pub legacy_url: Option<String>,
    /// A query parameter naming the mailbox a request acts on (an anchor, like an availability
    /// query about another user), e.g. `mailbox`.
    pub anchor_query: Option<String>,
    /// Whether the first path segment after `path` names the mailbox a request acts on, as in
    /// DAV paths (`/dav/<address>/calendar/`): a segment with an `@` is the anchor, so a
    /// request for another user's collection goes to that user's server.
    #[serde(default)]
    pub anchor_path: bool,
    /// A header that tells the backend the prefix it is mounted under (Radicale reads
    /// `X-Script-Name`), so its links point back through mailfront.
    pub prefix_header: Option<String>,
}

fn root() -> String {
    "/".to_owned()
}

fn basic() -> Vec<AuthMode> {
    vec![AuthMode::Basic]
}

/// How a mail protocol is reached from outside, for autodiscover.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientEndpoint {
    /// Host name clients connect to.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `ssl` (implicit TLS), `starttls` or `plain`.
    #[serde(default = "ssl")]
    pub socket: SocketType,
}

fn ssl() -> SocketType {
    SocketType::Ssl
}

/// Transport security of a client endpoint.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SocketType {
    /// TLS from the first byte.
    Ssl,
    /// STARTTLS.
    Starttls,
    /// None (not recommended).
    Plain,
}

/// `[http.autodiscover]`: what mail clients are told.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutodiscoverConfig {
    /// The mail domains served (an address outside them gets no configuration).
    pub domains: Vec<String>,
    /// The provider's display name.
    #[serde(default = "provider")]
    pub display_name: String,
    /// IMAP.
    pub imap: Option<ClientEndpoint>,
    /// POP3.
    pub pop3: Option<ClientEndpoint>,
    /// Submission (SMTP AUTH).
    pub smtp: Option<ClientEndpoint>,
}

fn provider() -> String {
    "Mail".to_owned()
}

/// `[http]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The key file shared by every node (see [`crate::cookie::CookieKeys`]).
    pub cookie_keys: PathBuf,
    /// The session cookie's name.
    #[serde(default = "cookie_name")]
    pub cookie_name: String,
    /// How long a forms login (and a bearer token) lasts.
    #[serde(default = "lifetime", with = "humantime_serde")]
    pub session_lifetime: Duration,
    /// The header that tells a backend who the user is (the backend must trust only
    /// mailfront; a client's own copy is always removed).
    #[serde(default = "identity_header")]
    pub identity_header: String,
    /// Idle keep-alive connections kept per backend server.
    #[serde(default = "pool")]
    pub max_idle_per_backend: usize,
    /// Longest wait for a backend's response headers.
    #[serde(default = "backend_timeout", with = "humantime_serde")]
    pub backend_timeout: Duration,
    /// Longest TLS handshake of a client.
    #[serde(default = "handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Longest wait for a client's complete request headers (also how long an idle
    /// keep-alive connection stays open).
    #[serde(default = "header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Longest wait for the body of a request mailfront reads itself (the login form, token
    /// requests); a stalled body is answered 408 and the connection closed.
    #[serde(default = "header_timeout", with = "humantime_serde")]
    pub body_timeout: Duration,
    /// The services.
    #[serde(default)]
    pub service: Vec<ServiceConfig>,
    /// Autodiscover, if offered.
    pub autodiscover: Option<AutodiscoverConfig>,
    /// Offer the offline address book at `/oab/` (authenticated, the user's tenant only).
    #[serde(default = "yes")]
    pub address_book: bool,
}

fn cookie_name() -> String {
    "mailfront_session".to_owned()
}
fn lifetime() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn identity_header() -> String {
    "X-Remote-User".to_owned()
}
fn pool() -> usize {
    16
}
fn backend_timeout() -> Duration {
    Duration::from_secs(60)
}
fn handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
fn header_timeout() -> Duration {
    Duration::from_secs(30)
}
fn yes() -> bool {
    true
}

/// Paths mailfront itself answers; services cannot take them.
pub const RESERVED_PATHS: &[&str] = &[
    "/login",
    "/logout",
    "/auth/",
    "/autodiscover/",
    "/.well-known/",
    "/mail/",
    "/oab/",
];

impl HttpConfig {
    /// Checks what the types do not; messages start with the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.cookie_name.is_empty()
            || !self
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!(
                "http.cookie_name: `{}` is not a cookie name",
                self.cookie_name
            ));
        }
        if http::HeaderName::from_bytes(self.identity_header.as_bytes()).is_err() {
            return Err(format!(
                "http.identity_header: `{}` is not a header name",
                self.identity_header
            ));
        }
        if self.session_lifetime.is_zero() {
            return Err("http.session_lifetime: must be greater than zero".into());
        }
        for (i, service) in self.service.iter().enumerate() {
            let key = format!("http.service[{i}]");
            if service.name.is_empty() {
                return Err(format!("{key}.name: must not be empty"));
            }
            if !(service.path.starts_with('/') && service.path.ends_with('/'))
                || service.path == "/"
            {
                return Err(format!(
                    "{key}.path: `{}` must start and end with `/` (like `/calendar/`)",
                    service.path
                ));
            }
            if RESERVED_PATHS
                .iter()
                .any(|r| service.path.starts_with(r) || r.starts_with(&service.path))
            {
                return Err(format!(
                    "{key}.path: `{}` overlaps a path mailfront answers itself",
                    service.path
                ));
            }
            if !service.backend_path.starts_with('/') {
                return Err(format!("{key}.backend_path: must start with `/`"));
            }
            if service.auth.is_empty() {
                return Err(format!(
                    "{key}.auth: list at least one mode (basic, forms, bearer, none)"
                ));
            }
            if service.auth.contains(&AuthMode::None) && service.auth.len() > 1 {
                return Err(format!(
                    "{key}.auth: `none` cannot be combined with other modes"
                ));
            }
            if let Some(header) = &service.prefix_header
                && http::HeaderName::from_bytes(header.as_bytes()).is_err()
            {
                return Err(format!(
                    "{key}.prefix_header: `{header}` is not a header name"
                ));
            }
            if self
                .service
                .iter()
                .take(i)
                .any(|s| s.path == service.path || s.name == service.name)
            {
                return Err(format!("{key}: name or path used by another service"));
            }
        }
        Ok(())
    }
}
