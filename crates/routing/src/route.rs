//! `route()`: the decision between proxy, redirect and reject (docs/architecture.md, "The routing rules").

use std::fmt;

use mailfront_model::{DatabaseName, Principal, Protocol, ServerName, SiteName, Source, Version};

use crate::{Server, Topology};

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
    /// Nobody: an HTTP service that needs no authentication. There is no mailbox to follow, so
    /// any server of the service will do (this site's first).
    Anonymous,
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
    /// The credentials are right, but they ask to act as another user (a SASL authorization
    /// identity that is not one of the user's own names).
    AuthzidRefused,
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
    /// An IMAP login whose mailbox is active in another site that refers its IMAP clients to
    /// its own host (RFC 2221 login referrals).
    ImapReferral {
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
    /// An anonymous request for an HTTP service: any server offering it, this site's first.
    Anonymous {
        /// The server chosen.
        server: ServerName,
    },
    /// Rule 4: unknown user or wrong password.
    AuthFailed,
    /// Rule 4: the request names a mailbox to act on (an anchor) that nobody has; the text is
    /// the anchor as given, cut to printable ASCII.
    UnknownAnchor(String),
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
    /// No server at all offers the protocol (an anonymous request with nowhere to go).
    NoServer(Protocol),
    /// The server hosting the active copy is known down for this protocol (its health probes
    /// fail): refused at once rather than after a connect timeout.
    ServerDown {
        /// The server.
        server: ServerName,
        /// The protocol.
        protocol: Protocol,
    },
    /// A group's move was under way for longer than the hold allows (`placement.move_timeout`):
    /// the login waited and is refused for now; it goes to the new server once the move is done.
    MoveUnderway {
        /// The group (or database) being moved.
        database: DatabaseName,
        /// Where it goes.
        to: ServerName,
    },
    /// This node is not present in the array's store (its lease lapsed, or it has not caught up
    /// since it came back), so it may not know of a move: it serves no group until it is.
    NotPresent(DatabaseName),
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
            Reason::ImapReferral { site } => write!(
                f,
                "the mailbox is active in site {site}, which refers IMAP clients to its own host"
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
            Reason::Anonymous { server } => write!(
                f,
                "no mailbox to follow (anonymous request): {server} offers the service"
            ),
            Reason::AuthFailed => f.write_str("unknown user or wrong password"),
            Reason::UnknownAnchor(anchor) => {
                write!(f, "the anchor mailbox `{anchor}` names nobody")
            }
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
            Reason::NoServer(protocol) => write!(f, "no server offers {protocol}"),
            Reason::ServerDown { server, protocol } => write!(
                f,
                "the active copy is on {server}, whose {protocol} service is down (health probes)"
            ),
            Reason::MoveUnderway { database, to } => write!(
                f,
                "{database} is moving to {to} and the move was not done within placement.move_timeout"
            ),
            Reason::NotPresent(database) => write!(
                f,
                "{database} is placed by group and this node is not present in the array's store (etcd lease lapsed or not caught up)"
            ),
        }
    }
}

impl Reason {
    /// Where a refusal for this reason comes from (`None` for the reasons of a proxy or redirect
    /// decision): the client, the directory, the locator, or mailfront's own configuration.
    pub fn source(&self) -> Option<Source> {
        match self {
            Reason::AuthFailed | Reason::ProtocolDisabled(_) | Reason::UnknownAnchor(_) => {
                Some(Source::Client)
            }
            Reason::DirectoryUnavailable => Some(Source::Directory),
            Reason::ServerDown { .. } => Some(Source::Backend),
            Reason::LocationUnavailable(_)
            | Reason::UnknownDatabase(_)
            | Reason::MoveUnderway { .. }
            | Reason::NotPresent(_) => Some(Source::Locator),
            Reason::UnknownServer { .. } | Reason::NoEndpoint { .. } | Reason::NoServer(_) => {
                Some(Source::Internal)
            }
            Reason::Telephony { .. }
            | Reason::LegacyVersion { .. }
            | Reason::OtherSiteUrl { .. }
            | Reason::ImapReferral { .. }
            | Reason::SingleNamespace { .. }
            | Reason::ActiveCopy { .. }
            | Reason::Anonymous { .. } => None,
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

/// Decides where a session or request goes (docs/architecture.md, "The routing rules"):
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
///
/// Inbound mail (SMTP) is not bound to the active server's own delivery endpoint: the message
/// goes to a server of its delivery group ([`crate::delivery`]), so only the location is
/// decided here. An anonymous HTTP request follows no mailbox: any server with an HTTP
/// service, this node's site first, then by name.
pub fn route(topology: &Topology, request: &Request<'_>, facts: Facts<'_>) -> Decision {
    let (principal, active) = match facts {
        Facts::DirectoryUnavailable => {
            return reject(RejectKind::Temporary, Reason::DirectoryUnavailable);
        }
        Facts::AuthFailed => return reject(RejectKind::AuthFailed, Reason::AuthFailed),
        Facts::Anonymous => return anonymous(topology, request.protocol),
        Facts::Authenticated { principal, active } => (principal, active),
    };
    let protocol = request.protocol;
    if !principal.allows(protocol) {
        return reject(
            RejectKind::ProtocolDisabled,
            Reason::ProtocolDisabled(protocol),
        );
    }
    // Legacy mailboxes are not served by this version at all, wherever they are: decide first.
    if let Some(redirect) = legacy_redirect(topology, request, principal) {
        return redirect;
    }
    let database = &principal.database;
    let server = match active_server(topology, protocol, database, active) {
        Ok(server) => server,
        Err(refusal) => return refusal,
    };
    if protocol == Protocol::Sip {
        return Decision::Redirect {
            location: server.endpoints.sip.clone().unwrap_or_default(),
            reason: Reason::Telephony {
                database: database.clone(),
                server: server.name.clone(),
            },
        };
    }
    if let Some(decision) = other_site(topology, request, server) {
        return decision;
    }
    if let Some(decision) = imap_referral(topology, request, server, principal) {
        return decision;
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

/// Rule 2, legacy part: a browser app for a mailbox older than this node, with a legacy URL.
fn legacy_redirect(
    topology: &Topology,
    request: &Request<'_>,
    principal: &Principal,
) -> Option<Decision> {
    let http = request.http.filter(|h| h.browser_app)?;
    let legacy_url = http.legacy_url?;
    (principal.version.major < topology.node.version.major).then(|| Decision::Redirect {
        location: legacy_url.to_owned(),
        reason: Reason::LegacyVersion {
            mailbox: principal.version,
            node: topology.node.version,
        },
    })
}

/// The server hosting the active copy, if the location is known, the configuration defines the
/// server and it serves `protocol` (inbound mail excepted: it goes to the server's delivery
/// group); otherwise the temporary refusal that says which of these failed.
fn active_server<'t>(
    topology: &'t Topology,
    protocol: Protocol,
    database: &DatabaseName,
    active: Result<&ServerName, LocationFailure>,
) -> Result<&'t Server, Decision> {
    let temporary = |reason| reject(RejectKind::Temporary, reason);
    let server_name = match active {
        Ok(name) => name,
        Err(LocationFailure::Unavailable) => {
            return Err(temporary(Reason::LocationUnavailable(database.clone())));
        }
        Err(LocationFailure::UnknownDatabase) => {
            return Err(temporary(Reason::UnknownDatabase(database.clone())));
        }
    };
    let Some(server) = topology.server(server_name) else {
        return Err(temporary(Reason::UnknownServer {
            database: database.clone(),
            server: server_name.clone(),
        }));
    };
    if protocol != Protocol::Smtp && !server.endpoints.serves(protocol) {
        return Err(temporary(Reason::NoEndpoint {
            server: server.name.clone(),
            protocol,
        }));
    }
    Ok(server)
}

/// Rule 2, site part: a browser app whose mailbox is active in another site with its own URL
/// for the service is redirected there, unless that URL is the one the client used.
fn other_site(topology: &Topology, request: &Request<'_>, server: &Server) -> Option<Decision> {
    let http = request.http.filter(|h| h.browser_app)?;
    if server.site == topology.node.site {
        return None;
    }
    let url = topology
        .site(&server.site)?
        .external_urls
        .get(http.service)?;
    if same_namespace(url, http.requested_url) {
        return Some(Decision::Proxy {
            server: server.name.clone(),
            reason: Reason::SingleNamespace {
                site: server.site.clone(),
            },
        });
    }
    Some(Decision::Redirect {
        location: url.clone(),
        reason: Reason::OtherSiteUrl {
            site: server.site.clone(),
        },
    })
}

/// An IMAP login whose mailbox is active in another site that refers IMAP clients to its own
/// host: the RFC 2221 referral there (`imap://<user>;AUTH=*@<host>/`, RFC 5092).
fn imap_referral(
    topology: &Topology,
    request: &Request<'_>,
    server: &Server,
    principal: &Principal,
) -> Option<Decision> {
    if request.protocol != Protocol::Imap || server.site == topology.node.site {
        return None;
    }
    let host = topology.site(&server.site)?.imap_referral.as_ref()?;
    Some(Decision::Redirect {
        location: format!("imap://{};AUTH=*@{host}/", url_user(&principal.address)),
        reason: Reason::ImapReferral {
            site: server.site.clone(),
        },
    })
}

/// A user name as an IMAP URL's `enc-user` (RFC 5092): everything but unreserved characters
/// and a few safe sub-delimiters percent-encoded (the `@` of an address among them).
fn url_user(user: &str) -> String {
    let mut out = String::with_capacity(user.len() + 8);
    for byte in user.bytes() {
        if byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'+' | b'!' | b'$')
        {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Any server that serves `protocol`, this node's site first, then by name.
fn anonymous(topology: &Topology, protocol: Protocol) -> Decision {
    let chosen = topology
        .servers
        .values()
        .filter(|s| s.endpoints.serves(protocol))
        .min_by_key(|s| (s.site != topology.node.site, &s.name));
    match chosen {
        Some(server) => Decision::Proxy {
            server: server.name.clone(),
            reason: Reason::Anonymous {
                server: server.name.clone(),
            },
        },
        None => reject(RejectKind::Temporary, Reason::NoServer(protocol)),
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
