//! `route()`: the decision between proxy, redirect and reject (DESIGN.md, "Routing rules").

use std::fmt;

use mailfront_model::{DatabaseName, Principal, Protocol, ServerName, SiteName, Version};

use crate::Topology;

/// What the client asked for, as far as routing cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The protocol of the session or request.
    pub protocol: Protocol,
    /// For HTTP: which service and which URL. `None` for every other protocol.
    pub http: Option<HttpRequest<'a>>,
}

impl Request<'_> {
    /// A request of a non-HTTP protocol.
    pub fn protocol(protocol: Protocol) -> Request<'static> {
        Request {
            protocol,
            http: None,
        }
    }
}

/// The HTTP side of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpRequest<'a> {
    /// The service (virtual directory) the request is for, e.g. `calendar`.
    pub service: &'a str,
    /// Whether the service is a browser app (webmail-like), the only kind that is redirected.
    pub browser_app: bool,
    /// The URL the client used, `scheme://host[:port]/path`.
    pub requested_url: &'a str,
    /// Where mailboxes older than this node's version are served, if anywhere.
    pub legacy_url: Option<&'a str>,
}

/// Why the locator could not say where a database is active.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocationFailure {
    /// The location store is unreachable and no map was ever loaded.
    Unavailable,
    /// The map has no entry for the database (an operator error: the directory names a database
    /// the location store does not know).
    UnknownDatabase,
}

/// What the directory and the locator said about this request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Facts<'a> {
    /// The directory could not be asked.
    DirectoryUnavailable,
    /// Unknown user or wrong password: deliberately one case, so that no caller can tell them
    /// apart in a reply.
    AuthFailed,
    /// The user is who they say, and this is where their database is active.
    Authenticated {
        /// The user.
        principal: &'a Principal,
        /// The server hosting the active copy of the user's database, or why it is not known.
        active: Result<&'a ServerName, LocationFailure>,
    },
}

/// The kinds of refusal. Each protocol maps them onto its own replies in one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectKind {
    /// Unknown user or bad password.
    AuthFailed,
    /// The user may not use this protocol.
    ProtocolDisabled,
    /// Something that should come back (directory, location store, configuration): try later.
    Temporary,
}

impl RejectKind {
    /// Whether the client should retry later rather than give up.
    pub fn is_temporary(self) -> bool {
        self == RejectKind::Temporary
    }
}

/// Why a decision was made, for logs and `mailfront route`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Rule 1: telephony is always redirected to the server hosting the active copy.
    Telephony {
        /// The user's database.
        database: DatabaseName,
        /// The server hosting its active copy.
        server: ServerName,
    },
    /// Rule 2: a browser app for a mailbox older than this node, with a legacy URL.
    LegacyVersion {
        /// The mailbox's version.
        mailbox: Version,
        /// This node's version.
        node: Version,
    },
    /// Rule 2: a browser app whose mailbox is active in another site that has its own URL.
    OtherSiteUrl {
        /// The site hosting the active copy.
        site: SiteName,
    },
    /// Rule 2: the other site's URL is the one the client used (one namespace for all sites).
    SingleNamespace {
        /// The site hosting the active copy.
        site: SiteName,
    },
    /// Rule 3: proxy to the server hosting the active copy, whatever its site.
    ActiveCopy {
        /// The user's database.
        database: DatabaseName,
        /// The server hosting its active copy.
        server: ServerName,
        /// That server's site.
        site: SiteName,
    },
    /// Rule 4: unknown user or wrong password.
    AuthFailed,
    /// Rule 4: the directory could not be asked.
    DirectoryUnavailable,
    /// Rule 4: the user may not use this protocol.
    ProtocolDisabled(Protocol),
    /// Rule 4: the location store has no map.
    LocationUnavailable(DatabaseName),
    /// Rule 4: the location map does not know the database.
    UnknownDatabase(DatabaseName),
    /// Rule 4: the location map names a server the topology does not define.
    UnknownServer {
        /// The user's database.
        database: DatabaseName,
        /// The server the map names.
        server: ServerName,
    },
    /// Rule 4: the server hosting the active copy does not serve this protocol.
    NoEndpoint {
        /// The server.
        server: ServerName,
        /// The protocol.
        protocol: Protocol,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Telephony { database, server } => write!(
                f,
                "telephony is always redirected: the active copy of {database} is on {server}"
            ),
            Reason::LegacyVersion { mailbox, node } => write!(
                f,
                "mailbox version {mailbox} is older than this node's {node}: redirected to the legacy URL"
            ),
            Reason::OtherSiteUrl { site } => write!(
                f,
                "the active copy is in site {site}, which has its own URL for this browser app"
            ),
            Reason::SingleNamespace { site } => write!(
                f,
                "the active copy is in site {site}, whose URL is the one the client used (single namespace): proxied"
            ),
            Reason::ActiveCopy {
                database,
                server,
                site,
            } => write!(
                f,
                "the active copy of {database} is on {server} (site {site}): proxied"
            ),
            Reason::AuthFailed => f.write_str("unknown user or wrong password"),
            Reason::DirectoryUnavailable => f.write_str("the directory is unavailable"),
            Reason::ProtocolDisabled(protocol) => {
                write!(f, "{protocol} is not enabled for this user")
            }
            Reason::LocationUnavailable(database) => write!(
                f,
                "the location of {database} is unknown: the location store is unavailable"
            ),
            Reason::UnknownDatabase(database) => {
                write!(f, "the location map has no entry for database {database}")
            }
            Reason::UnknownServer { database, server } => write!(
                f,
                "the location map puts {database} on {server}, which the configuration does not define"
            ),
            Reason::NoEndpoint { server, protocol } => {
                write!(f, "server {server} has no {protocol} endpoint")
            }
        }
    }
}

/// The decision for one session or request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Proxy the session to this server, in the client's protocol.
    Proxy {
        /// The server hosting the active copy.
        server: ServerName,
        /// Why.
        reason: Reason,
    },
    /// Send the client elsewhere.
    Redirect {
        /// Where: a URL for HTTP, a SIP URI for telephony.
        location: String,
        /// Why.
        reason: Reason,
    },
    /// Refuse.
    Reject {
        /// How.
        kind: RejectKind,
        /// Why.
        reason: Reason,
    },
}

impl Decision {
    /// The reason, whatever the decision.
    pub fn reason(&self) -> &Reason {
        match self {
            Decision::Proxy { reason, .. }
            | Decision::Redirect { reason, .. }
            | Decision::Reject { reason, .. } => reason,
        }
    }
}

fn reject(kind: RejectKind, reason: Reason) -> Decision {
    Decision::Reject { kind, reason }
}

/// Decides where a session or request goes (DESIGN.md, "Routing rules"):
///
/// 1. SIP is always redirected to the voice-mail endpoint of the server hosting the active copy.
/// 2. HTTP browser apps: a mailbox whose major version is older than this node's, with a legacy
///    URL configured, is redirected there; a mailbox active in another site that has an external
///    URL for the service is redirected to it, unless that URL is the one the client used (then
///    proxied: the single-namespace case).
/// 3. Everything else is proxied to the server hosting the active copy, whatever its site.
/// 4. Unknown user or bad password and disabled protocols are refused; an unavailable directory
///    or location store, or a location that the configuration cannot reach, is a temporary
///    refusal — never a guess.
pub fn route(topology: &Topology, request: &Request<'_>, facts: Facts<'_>) -> Decision {
    let (principal, active) = match facts {
        Facts::DirectoryUnavailable => {
            return reject(RejectKind::Temporary, Reason::DirectoryUnavailable);
        }
        Facts::AuthFailed => return reject(RejectKind::AuthFailed, Reason::AuthFailed),
        Facts::Authenticated { principal, active } => (principal, active),
    };
    let protocol = request.protocol;
    if !principal.allows(protocol) {
        return reject(
            RejectKind::ProtocolDisabled,
            Reason::ProtocolDisabled(protocol),
        );
    }
    let database = &principal.database;

    // Legacy mailboxes are not served by this version at all, wherever they are: decide first.
    if let Some(http) = request.http.filter(|h| h.browser_app)
        && let Some(legacy_url) = http.legacy_url
        && principal.version.major < topology.node.version.major
    {
        return Decision::Redirect {
            location: legacy_url.to_owned(),
            reason: Reason::LegacyVersion {
                mailbox: principal.version,
                node: topology.node.version,
            },
        };
    }

    let server_name = match active {
        Ok(name) => name,
        Err(LocationFailure::Unavailable) => {
            return reject(
                RejectKind::Temporary,
                Reason::LocationUnavailable(database.clone()),
            );
        }
        Err(LocationFailure::UnknownDatabase) => {
            return reject(
                RejectKind::Temporary,
                Reason::UnknownDatabase(database.clone()),
            );
        }
    };
    let Some(server) = topology.server(server_name) else {
        return reject(
            RejectKind::Temporary,
            Reason::UnknownServer {
                database: database.clone(),
                server: server_name.clone(),
            },
        );
    };
    if !server.endpoints.serves(protocol) {
        return reject(
            RejectKind::Temporary,
            Reason::NoEndpoint {
                server: server.name.clone(),
                protocol,
            },
        );
    }

    if protocol == Protocol::Sip {
        return Decision::Redirect {
            location: server.endpoints.sip.clone().unwrap_or_default(),
            reason: Reason::Telephony {
                database: database.clone(),
                server: server.name.clone(),
            },
        };
    }

    if let Some(http) = request.http.filter(|h| h.browser_app)
        && server.site != topology.node.site
        && let Some(url) = topology
            .site(&server.site)
            .and_then(|site| site.external_urls.get(http.service))
    {
        if same_namespace(url, http.requested_url) {
            return Decision::Proxy {
                server: server.name.clone(),
                reason: Reason::SingleNamespace {
                    site: server.site.clone(),
                },
            };
        }
        return Decision::Redirect {
            location: url.clone(),
            reason: Reason::OtherSiteUrl {
                site: server.site.clone(),
            },
        };
    }

    Decision::Proxy {
        server: server.name.clone(),
        reason: Reason::ActiveCopy {
            database: database.clone(),
            server: server.name.clone(),
            site: server.site.clone(),
        },
    }
}

/// A URL cut into the parts that decide whether two URLs are the same namespace.
#[derive(Debug, PartialEq, Eq)]
struct Namespace {
    scheme: String,
    host: String,
    port: Option<u16>,
    path: String,
}

fn namespace(url: &str) -> Option<Namespace> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let (host, port) = match authority.rsplit_once(':') {
        // `[::1]:443` splits at the last colon; a bare IPv6 literal `[::1]` has none after `]`.
        Some((host, port)) if !port.contains(']') => (host, Some(port.parse::<u16>().ok()?)),
        _ => (authority, None),
    };
    let default_port = match scheme.as_str() {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    };
    let port = port.filter(|p| Some(*p) != default_port);
    let mut path = path.to_owned();
    if !path.ends_with('/') {
        path.push('/');
    }
    Some(Namespace {
        scheme,
        host: host.to_ascii_lowercase(),
        port,
        path,
    })
}

/// Whether the client's URL lies within the external URL (same scheme, host and port, and the
/// path at or below the external URL's path). Unparseable URLs never match, so they redirect.
fn same_namespace(external: &str, requested: &str) -> bool {
    match (namespace(external), namespace(requested)) {
        (Some(ext), Some(req)) => {
            ext.scheme == req.scheme
                && ext.host == req.host
                && ext.port == req.port
                && req.path.starts_with(&ext.path)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
