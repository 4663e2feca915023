//! The topology: this node, the sites, and the mailbox servers with their endpoints.

use std::collections::BTreeMap;

use mailfront_model::{
    BackendTls, DeliveryProtocol, Protocol, SaslMechanism, Secret, ServerName, SiteName, Version,
};

/// This mailfront node: where it stands and what version of mailbox it serves natively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The node's name (logs, health pages).
    pub name: String,
    /// The site the node is in (decides cross-site redirects).
    pub site: SiteName,
    /// The mailbox version this node serves natively (decides legacy redirects).
    pub version: Version,
}

/// A site: a datacenter or network location, with the URLs clients use to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    /// The site's name.
    pub name: SiteName,
    /// Per HTTP service name, the URL clients use in this site (the seeds' ExternalURL),
    /// for example `calendar` → `https://eu.mail.example.com/calendar/`.
    pub external_urls: BTreeMap<String, String>,
    /// The cost of reaching other sites from this one (lower is nearer); a site missing from the
    /// map is farther than any listed one. Used to prefer near servers.
    pub costs: BTreeMap<SiteName, u32>,
    /// The IMAP host (`host` or `host:port`) this site's clients use, when the site refers
    /// IMAP logins of its mailboxes there (RFC 2221) instead of having them proxied from
    /// other sites.
    pub imap_referral: Option<String>,
}

/// One protocol endpoint on a mailbox server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP address to connect to.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS towards this endpoint.
    pub tls: BackendTls,
}

/// The endpoints of a mailbox server, one per protocol it serves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// IMAP endpoint.
    pub imap: Option<Endpoint>,
    /// POP3 endpoint.
    pub pop3: Option<Endpoint>,
    /// Message submission endpoint.
    pub submission: Option<Endpoint>,
    /// Mail delivery endpoint (LMTP or SMTP) for the front-end transport.
    pub delivery: Option<Endpoint>,
    /// How the delivery endpoint takes mail.
    pub delivery_protocol: DeliveryProtocol,
    /// Base URL of the server's HTTP services.
    pub http: Option<String>,
    /// SIP URI of the server's voice-mail service (the Contact of a redirect).
    pub sip: Option<String>,
}

impl Endpoints {
    /// The endpoint that a proxied session of `protocol` connects to, if the server has one.
    /// HTTP and SIP are not byte streams to a host and port, so they have none here.
    pub fn for_protocol(&self, protocol: Protocol) -> Option<&Endpoint> {
        match protocol {
            Protocol::Imap => self.imap.as_ref(),
            Protocol::Pop3 => self.pop3.as_ref(),
            Protocol::Submission => self.submission.as_ref(),
            Protocol::Smtp => self.delivery.as_ref(),
            Protocol::Http | Protocol::Sip => None,
        }
    }

    /// Whether the server can take a session or request of `protocol` at all.
    pub fn serves(&self, protocol: Protocol) -> bool {
        match protocol {
            Protocol::Http => self.http.is_some(),
            Protocol::Sip => self.sip.is_some(),
            other => self.for_protocol(other).is_some(),
        }
    }
}

/// A master user on a backend: an account allowed to log in as any user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterUser {
    /// The master account's name.
    pub user: String,
    /// Its password.
    pub password: Secret<String>,
    /// The separator between user and master name for `LOGIN` (Dovecot's
    /// `auth_master_user_separator`, `*` by convention).
    pub separator: String,
}

/// How mailfront logs in to a mailbox server on the user's behalf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginMethod {
    /// With a master user; the user's own password never reaches the backend.
    Master {
        /// The master account.
        master: MasterUser,
        /// The mechanism to use.
        mechanism: SaslMechanism,
    },
    /// With the user's own name and password, as the client gave them.
    PassThrough {
        /// The mechanism to use.
        mechanism: SaslMechanism,
    },
}

/// A mailbox server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// The server's name (as the location map names it).
    pub name: ServerName,
    /// The site the server is in.
    pub site: SiteName,
    /// The mailbox version the server runs.
    pub version: Version,
    /// Where to reach each of its protocols.
    pub endpoints: Endpoints,
    /// How to log in on a user's behalf.
    pub login: LoginMethod,
    /// The delivery group the server belongs to (the seeds' DAG): the servers that can take
    /// delivery for each other's databases.
    pub delivery_group: String,
    /// Its weight in placement by group (`[placement]`): its share of the groups is its weight
    /// over the sum of weights; 0 takes no groups.
    pub weight: u32,
}

/// A topology that refers to something it does not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// The node's site is not among the sites.
    #[error("node.site: unknown site `{0}`")]
    UnknownNodeSite(SiteName),
    /// A server names a site that is not defined.
    #[error("server `{0}`: unknown site `{1}`")]
    UnknownServerSite(ServerName, SiteName),
}

/// Everything [`crate::route()`] needs to know about the deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// This node.
    pub node: Node,
    /// Sites by name.
    pub sites: BTreeMap<SiteName, Site>,
    /// Mailbox servers by name.
    pub servers: BTreeMap<ServerName, Server>,
}

impl Topology {
    /// Builds a topology and checks that every site it refers to is defined.
    pub fn new(
        node: Node,
        sites: impl IntoIterator<Item = Site>,
        servers: impl IntoIterator<Item = Server>,
    ) -> Result<Self, TopologyError> {
        let sites: BTreeMap<_, _> = sites.into_iter().map(|s| (s.name.clone(), s)).collect();
        let servers: BTreeMap<_, _> = servers.into_iter().map(|s| (s.name.clone(), s)).collect();
        if !sites.contains_key(&node.site) {
            return Err(TopologyError::UnknownNodeSite(node.site.clone()));
        }
        if let Some(server) = servers.values().find(|s| !sites.contains_key(&s.site)) {
            return Err(TopologyError::UnknownServerSite(
                server.name.clone(),
                server.site.clone(),
            ));
        }
        Ok(Self {
            node,
            sites,
            servers,
        })
    }

    /// A server by name.
    pub fn server(&self, name: &ServerName) -> Option<&Server> {
        self.servers.get(name)
    }

    /// A site by name.
    pub fn site(&self, name: &SiteName) -> Option<&Site> {
        self.sites.get(name)
    }

    /// The cost of reaching `to` from `from`: 0 within a site, the configured cost otherwise,
    /// and more than any configured cost when none is configured.
    pub fn cost(&self, from: &SiteName, to: &SiteName) -> u64 {
        if from == to {
            return 0;
        }
        self.sites
            .get(from)
            .and_then(|site| site.costs.get(to))
            .map_or(u64::from(u32::MAX) + 1, |cost| u64::from(*cost))
    }
}
