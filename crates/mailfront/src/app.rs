//! Wiring: from a validated [`Config`] to a running node.

use std::collections::{BTreeMap, BTreeSet};
use std::net::ToSocketAddrs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use mailfront_directory::Directory;
use mailfront_directory::cache::CachedDirectory;
use mailfront_directory::file::{self as directory_file, FileDirectory};
use mailfront_directory::ldap::LdapDirectory;
use mailfront_http::HttpFrontDoor;
use mailfront_http::cookie::CookieKeys;
use mailfront_location::etcd::{self, EtcdSource};
use mailfront_location::file::{self as location_file, FileSource, Validator};
use mailfront_location::{LocationMap, Locator};
use mailfront_model::{Secret, ServerName, SiteName};
use mailfront_protocol::imap::ImapSettings;
use mailfront_protocol::pop3::Pop3Settings;
use mailfront_protocol::smtp::submission::SubmissionSettings;
use mailfront_protocol::smtp::transport::TransportSettings;
use mailfront_protocol::{ClientTls, Limits};
use mailfront_proxy::admission::{AdmissionSettings, Gateway};
use mailfront_proxy::backend::BackendTimeouts;
use mailfront_proxy::driver::ListenerContext;
use mailfront_proxy::gate::{ClientCounts, Gate};
use mailfront_proxy::node::NodeState;
use mailfront_proxy::registry::{Filter, StopReason};
use mailfront_proxy::sip::SipContext;
use mailfront_proxy::throttle::ThrottleSettings;
use mailfront_proxy::tls::{self, SharedAcceptor, TlsAcceptor, TlsConnector};
use mailfront_proxy::transport::{Cidr, TransportContext, TransportMode};
use mailfront_proxy::workers::Workers;
use mailfront_proxy::{Imap, LineProtocol, Pop3, Submission, listener};
use mailfront_routing::{
    Endpoint, Endpoints, LoginMethod, MasterUser, Node, Server, Site, Topology,
};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::admin::{self, Admin};
use crate::config::{
    Config, DirectoryConfig, EndpointConfig, ListenerConfig, ListenerProtocol, ListenerTls,
    LocationConfig, LoginMethodConfig,
};
use crate::reload::{Reloader, Swappable};

/// Builds the routing topology from the configuration (reads master password files).
pub fn topology(config: &Config) -> Result<Topology, String> {
    let mut sites: BTreeMap<SiteName, Site> = config
        .site
        .iter()
        .map(|s| {
            let site = Site {
                name: SiteName::new(&s.name),
                external_urls: s.external_urls.clone(),
                costs: s
                    .costs
                    .iter()
                    .map(|(name, cost)| (SiteName::new(name), *cost))
                    .collect(),
            };
            (site.name.clone(), site)
        })
        .collect();
    if config.site.is_empty() {
        // Without [[site]] tables, every site named anywhere exists, with no URLs or costs.
        let named = std::iter::once(config.node.site.as_str())
            .chain(config.server.iter().map(|s| s.site.as_str()));
        for name in named {
            let name = SiteName::new(name);
            sites.entry(name.clone()).or_insert_with(|| Site {
                name,
                external_urls: BTreeMap::new(),
                costs: BTreeMap::new(),
            });
        }
    }
    let mut servers = Vec::with_capacity(config.server.len());
    for (i, s) in config.server.iter().enumerate() {
        let endpoint = |e: &Option<EndpointConfig>| {
            e.as_ref().map(|e| Endpoint {
                host: e.host.clone().unwrap_or_else(|| s.host.clone()),
                port: e.port,
                tls: e.tls.into(),
            })
        };
        let login = match s.login.method {
            LoginMethodConfig::Passthrough => LoginMethod::PassThrough {
                mechanism: s.login.mechanism.into(),
            },
            LoginMethodConfig::Master => {
                let password = config
                    .master_password(i)?
                    .ok_or_else(|| format!("server[{i}].login.master_password_file: required"))?;
                LoginMethod::Master {
                    master: MasterUser {
                        user: s.login.master_user.clone().unwrap_or_default(),
                        password,
                        separator: s.login.separator.clone(),
                    },
                    mechanism: s.login.mechanism.into(),
                }
            }
        };
        servers.push(Server {
            name: ServerName::new(&s.name),
            site: SiteName::new(&s.site),
            version: s.version,
            endpoints: Endpoints {
                imap: endpoint(&s.imap),
                pop3: endpoint(&s.pop3),
                submission: endpoint(&s.submission),
                delivery: s.delivery.as_ref().map(|e| Endpoint {
                    host: e.host.clone().unwrap_or_else(|| s.host.clone()),
                    port: e.port,
                    tls: e.tls.into(),
                }),
                delivery_protocol: s
                    .delivery
                    .as_ref()
                    .map(|e| e.protocol.into())
                    .unwrap_or_default(),
                http: s.http.clone(),
                sip: s.sip.clone(),
            },
            login,
            delivery_group: s.delivery_group.clone(),
        });
    }
    let node = Node {
        name: config.node.name.clone(),
        site: SiteName::new(&config.node.site),
        version: config.node.version,
    };
    Topology::new(node, sites.into_values(), servers).map_err(|e| e.to_string())
}

/// What a location map is checked against: every server it names must be defined, and where
/// a database's copies are configured, its active server must be one of them.
#[derive(Debug, Default)]
pub struct LocationRules {
    servers: BTreeSet<String>,
    copies: BTreeMap<String, BTreeSet<String>>,
}

impl LocationRules {
    /// The rules of `config`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            servers: config.server.iter().map(|s| s.name.clone()).collect(),
            copies: config
                .database
                .iter()
                .map(|d| (d.name.clone(), d.copies.iter().cloned().collect()))
                .collect(),
        }
    }

    /// Checks `map`; the error names the offending entry.
    pub fn check(&self, map: &LocationMap) -> Result<(), String> {
        for (database, server) in map.iter() {
            if !self.servers.contains(server.as_str()) {
                return Err(format!("active.{database}: unknown server `{server}`"));
            }
            if let Some(copies) = self.copies.get(database.as_str())
                && !copies.contains(server.as_str())
            {
                return Err(format!(
                    "active.{database}: `{server}` holds no copy of {database} (copies: {})",
                    copies.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// A fixed check of location maps against `config` (for `check` and `route`).
pub fn location_validator(config: &Config) -> Arc<Validator> {
    let rules = LocationRules::from_config(config);
    Arc::new(move |map: &LocationMap| rules.check(map))
}

/// A check of location maps against rules that a configuration reload can replace.
fn live_validator(rules: &Arc<ArcSwap<LocationRules>>) -> Arc<Validator> {
    let rules = Arc::clone(rules);
    Arc::new(move |map: &LocationMap| rules.load().check(map))
}

/// The TLS acceptor for clients, if `[tls]` is configured.
pub fn acceptor(config: &Config) -> Result<Option<TlsAcceptor>, String> {
    config
        .tls
        .as_ref()
        .map(|t| tls::server_acceptor(&t.certificate, &t.key).map_err(|e| format!("tls: {e}")))
        .transpose()
}

/// The TLS acceptor for HTTPS (ALPN h2 and http/1.1), if `[tls]` is configured.
pub fn http_acceptor(config: &Config) -> Result<Option<TlsAcceptor>, String> {
    config
        .tls
        .as_ref()
        .map(|t| tls::http_acceptor(&t.certificate, &t.key).map_err(|e| format!("tls: {e}")))
        .transpose()
}

/// The TLS connector towards backends, if `[backend_tls]` is configured.
pub fn connector(config: &Config) -> Result<Option<TlsConnector>, String> {
    config
        .backend_tls
        .as_ref()
        .map(|t| {
            tls::backend_connector(&t.ca_file).map_err(|e| format!("backend_tls.ca_file: {e}"))
        })
        .transpose()
}

/// Loads the embedded directory file once, without watching (for `check`); `None` for other
/// directory backends.
pub fn load_directory_file(config: &Config) -> Result<Option<directory_file::Users>, String> {
    match &config.directory {
        DirectoryConfig::File { path } => directory_file::load(path)
            .map(Some)
            .map_err(|e| format!("directory.path: {e}")),
        DirectoryConfig::Ldap(_) => Ok(None),
    }
}

/// Connects to an external directory once to see that it answers (for `check`). `Ok(None)`
/// for the embedded file, which has nothing to connect to.
pub async fn probe_directory(config: &Config) -> Result<Option<String>, String> {
    match &config.directory {
        DirectoryConfig::File { .. } => Ok(None),
        DirectoryConfig::Ldap(ldap) => {
            tls::install_crypto_provider();
            let backend = LdapDirectory::new(ldap).map_err(|e| format!("directory: {e}"))?;
            backend
                .probe()
                .await
                .map(|()| Some(format!("LDAP directory at {} answers", ldap.url)))
                .map_err(|e| format!("directory.url: {} does not answer: {e}", ldap.url))
        }
    }
}

/// The directory the configuration describes. With `follow`, the embedded file is watched for
/// edits (a running node); without, it is read once (`route`).
pub fn directory(config: &Config, follow: bool) -> Result<Arc<dyn Directory>, String> {
    Ok(match &config.directory {
        DirectoryConfig::File { path } if follow => Arc::new(
            FileDirectory::start(path, config.reload.interval)
                .map_err(|e| format!("directory.path: {e}"))?,
        ),
        DirectoryConfig::File { path } => Arc::new(FileDirectory::from_users(
            directory_file::load(path).map_err(|e| format!("directory.path: {e}"))?,
        )),
        DirectoryConfig::Ldap(ldap) => {
            tls::install_crypto_provider();
            let backend = LdapDirectory::new(ldap).map_err(|e| format!("directory: {e}"))?;
            Arc::new(CachedDirectory::new(backend, ldap.cache_settings()))
        }
    })
}

/// Loads the location map once, without watching (for `check` and `route`), with warnings
/// about entries left out (etcd values that do not parse or validate).
pub async fn load_locations(config: &Config) -> Result<(LocationMap, Vec<String>), String> {
    match &config.location {
        LocationConfig::File { path } => location_file::load(path, &*location_validator(config))
            .map(|map| (map, Vec::new()))
            .map_err(|e| format!("location.path: {e}")),
        LocationConfig::Etcd(etcd) => etcd::load(etcd, &*location_validator(config))
            .await
            .map(|snapshot| {
                let warnings = snapshot
                    .rejected
                    .into_iter()
                    .map(|r| format!("location: {r}"))
                    .collect();
                (snapshot.map, warnings)
            })
            .map_err(|e| format!("location.endpoints: {e}")),
    }
}

/// What feeds the locator; held (never read) so that it runs while the node runs.
enum LocationSource {
    File { _source: Arc<FileSource> },
    Etcd { _source: EtcdSource },
}

fn limits(config: &Config) -> Limits {
    Limits {
        max_line_length: config.limits.max_line_length,
        max_literal_size: config.limits.max_literal_size,
        max_commands_before_auth: config.limits.max_commands_before_auth,
        max_auth_failures: config.limits.max_auth_failures,
    }
}

fn client_tls(tls: ListenerTls) -> ClientTls {
    match tls {
        ListenerTls::None => ClientTls::None,
        ListenerTls::Starttls => ClientTls::StartTls,
        ListenerTls::Implicit => ClientTls::Implicit,
    }
}

fn listener_name(listener: &ListenerConfig) -> String {
    listener
        .name
        .clone()
        .unwrap_or_else(|| format!("{}@{}", listener.protocol, listener.address))
}

/// What a transport listener does: inbound for the accepted domains, or outbound to the relay.
fn transport_mode(config: &Config, protocol: ListenerProtocol) -> Result<TransportMode, String> {
    if protocol == ListenerProtocol::Smtp {
        return Ok(TransportMode::Inbound {
            accepted_domains: config
                .transport
                .accepted_domains
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
        });
    }
    let outbound = config
        .outbound
        .as_ref()
        .ok_or("an outbound listener needs an [outbound] relay")?;
    let allowed_sources = match &outbound.allowed_sources {
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.parse::<Cidr>()
                    .map_err(|e| format!("outbound.allowed_sources[{i}]: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => {
            // The mailbox servers' own addresses, as their hosts resolve now.
            let mut sources = Vec::new();
            for (i, server) in config.server.iter().enumerate() {
                let addresses = (server.host.as_str(), 0).to_socket_addrs().map_err(|e| {
                    format!("server[{i}].host: cannot resolve `{}`: {e}", server.host)
                })?;
                for address in addresses {
                    let cidr = Cidr {
                        addr: address.ip(),
                        prefix: if address.is_ipv4() { 32 } else { 128 },
                    };
                    if !sources.contains(&cidr) {
                        sources.push(cidr);
                    }
                }
            }
            sources
        }
    };
    Ok(TransportMode::Outbound {
        relay: Endpoint {
            host: outbound.relay.host.clone(),
            port: outbound.relay.port,
            tls: outbound.relay.tls.into(),
        },
        allowed_sources,
    })
}

/// Throttling as configured; its first delay is the failure delay every refusal takes.
pub fn throttle_settings(config: &Config) -> Result<ThrottleSettings, String> {
    let t = &config.throttle;
    let trusted = t
        .trusted_networks
        .iter()
        .enumerate()
        .map(|(i, n)| {
            n.parse::<Cidr>()
                .map_err(|e| format!("throttle.trusted_networks[{i}]: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ThrottleSettings {
        enabled: t.enabled,
        base_delay: config.timeouts.auth_failure_delay,
        max_delay: t.max_delay,
        block_after: t.block_after,
        block_user_after: t.block_user_after,
        block_for: t.block_for,
        forget_after: t.forget_after,
        trusted,
    })
}

/// Starts the accept loop of a line-protocol listener.
fn spawn_line<P: LineProtocol>(
    sockets: Vec<std::net::TcpListener>,
    protocol: P,
    gateway: &Arc<Gateway>,
    context: Arc<ListenerContext>,
    gate: Arc<Gate>,
    workers: &Arc<Workers>,
    shutdown: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let protocol = Arc::new(protocol);
    on_workers(workers, sockets, |socket| {
        listener::run(
            socket,
            Arc::clone(&protocol),
            Arc::clone(gateway),
            Arc::clone(&context),
            Arc::clone(&gate),
            shutdown.clone(),
        )
    })
}

/// Runs one accept loop per socket, socket `i` on session worker `i` (each loop registers its
/// socket with the event loop of the worker it runs on).
fn on_workers<F, Fut>(
    workers: &Workers,
    sockets: Vec<std::net::TcpListener>,
    accept_loop: F,
) -> Vec<tokio::task::JoinHandle<()>>
where
    F: Fn(std::net::TcpListener) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    sockets
        .into_iter()
        .enumerate()
        .filter_map(|(i, socket)| workers.spawn_on(i, accept_loop(socket)))
        .collect()
}

/// Binds `count` listening sockets to `address`, with `SO_REUSEPORT` when there are several
/// (the kernel spreads incoming connections over them); if the port is 0, every socket gets the
/// port the first one was given. Plain std sockets (non-blocking), for any runtime to take.
fn bind_listeners(
    address: std::net::SocketAddr,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut sockets = Vec::with_capacity(count);
    let mut address = address;
    if count > 1 {
        // SO_REUSEPORT would let this group join another process's sockets on the same port (a
        // second node started by mistake would then take a share of the connections): a plain
        // bind first proves that nobody listens there, and resolves port 0.
        let probe = std::net::TcpListener::bind(address)?;
        address = probe.local_addr()?;
    }
    for _ in 0..count.max(1) {
        let socket = if address.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        if count > 1 {
            socket.set_reuseport(true)?;
        }
        socket.bind(address)?;
        let listener = socket.listen(1024)?.into_std()?;
        address = listener.local_addr()?;
        sockets.push(listener);
    }
    Ok(sockets)
}

/// The one socket of an HTTPS or SIP listener, registered with this (the main) runtime.
fn main_runtime_listener(
    sockets: &mut Vec<std::net::TcpListener>,
    i: usize,
) -> Result<TcpListener, String> {
    let socket = sockets
        .pop()
        .ok_or_else(|| format!("listener[{i}]: no socket"))?;
    TcpListener::from_std(socket).map_err(|e| format!("listener[{i}]: {e}"))
}

/// A running node: what must stay alive while it serves.
pub struct RunningNode {
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The session workers; dropped (stopped) last, once the sessions are done.
    _workers: Arc<Workers>,
    background: Vec<tokio::task::JoinHandle<()>>,
    _directory: Arc<dyn Directory>,
    _locations: LocationSource,
    gateway: Arc<Gateway>,
    clients: Arc<ClientCounts>,
    shutdown_grace: Duration,
    /// The node's state (draining), shared with health pages and the admin API.
    pub state: Arc<NodeState>,
    /// The addresses the listeners are bound to, in configuration order.
    pub bound: Vec<std::net::SocketAddr>,
    /// The admin listener's address, if configured.
    pub admin: Option<std::net::SocketAddr>,
    /// Reloads the configuration (SIGHUP, file changes, the admin API).
    pub reloader: Arc<Reloader>,
}

/// The HTTPS front door the configuration describes, if it has an `[http]` section.
pub fn http_front_door(
    config: &Config,
    gateway: &Arc<Gateway>,
    state: &Arc<NodeState>,
) -> Result<Option<Arc<HttpFrontDoor>>, String> {
    let Some(http) = &config.http else {
        return Ok(None);
    };
    let keys = CookieKeys::load(&http.cookie_keys).map_err(|e| format!("http.cookie_keys: {e}"))?;
    let backend_tls = config
        .backend_tls
        .as_ref()
        .map(|t| {
            tls::backend_client_config(&t.ca_file).map_err(|e| format!("backend_tls.ca_file: {e}"))
        })
        .transpose()?;
    HttpFrontDoor::new(
        http.clone(),
        Arc::clone(gateway),
        keys,
        backend_tls,
        config.node.name.clone(),
        Arc::clone(state),
    )
    .map(|front| Some(Arc::new(front)))
}

impl RunningNode {
    /// Starts everything the configuration describes and binds every listener. `path` is
    /// where `config` was read from, to read it again on reload.
    pub async fn start(path: &Path, config: Config) -> Result<RunningNode, String> {
        let config = &config;
        let topology = topology(config)?;
        let rules = Arc::new(ArcSwap::from_pointee(LocationRules::from_config(config)));
        let mail_tls = Arc::new(SharedAcceptor::new(acceptor(config)?));
        let http_tls = Arc::new(SharedAcceptor::new(http_acceptor(config)?));
        let connector = connector(config)?;
        let directory = directory(config, true)?;
        let locator = Arc::new(Locator::new());
        let mut location_file = None;
        let locations = match &config.location {
            LocationConfig::File { path } => {
                let source = Arc::new(
                    FileSource::start(
                        path,
                        Arc::clone(&locator),
                        live_validator(&rules),
                        config.reload.interval,
                    )
                    .map_err(|e| format!("location.path: {e}"))?,
                );
                location_file = Some(Arc::clone(&source));
                LocationSource::File { _source: source }
            }
            LocationConfig::Etcd(etcd) => {
                let source = EtcdSource::start(etcd, Arc::clone(&locator), live_validator(&rules))
                    .map_err(|e| format!("location: {e}"))?;
                // Start serving either way: with no map yet, logins get a temporary error
                // until etcd answers (DESIGN.md), which beats refusing to start.
                if let Err(e) = source.wait_loaded(etcd.timeout).await {
                    tracing::warn!(error = %e, "etcd has not answered yet; logins wait for a location map");
                }
                LocationSource::Etcd { _source: source }
            }
        };
        let t = &config.timeouts;
        let gateway = Arc::new(Gateway::new(
            Arc::clone(&directory) as Arc<dyn Directory>,
            locator,
            topology,
            connector,
            AdmissionSettings {
                auth_failure_delay: t.auth_failure_delay,
                directory_timeout: t.directory,
                backend: BackendTimeouts {
                    connect: t.backend_connect,
                    login: t.backend_login,
                },
                throttle: throttle_settings(config)?,
            },
        ));
        // Failover: every new location map closes the sessions left on a previous server.
        let failover = tokio::spawn(mailfront_proxy::registry::follow_locations(
            Arc::clone(gateway.registry()),
            gateway.locator().subscribe(),
        ));
        let state = Arc::new(NodeState::new());
        let http = http_front_door(config, &gateway, &state)?;
        let mut tasks = Vec::new();
        let (shutdown, shutdown_rx) = watch::channel(false);
        // IMAP, POP3, submission and SMTP sessions run on one single-threaded worker per core
        // (mailfront_proxy::workers explains why); HTTPS, SIP and the admin API stay here.
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let workers =
            Workers::start(cores).map_err(|e| format!("cannot start the session workers: {e}"))?;
        let mut bound = Vec::new();
        // Connections per client address are counted across every listener of the node.
        // At most as many connections as the descriptor limit allows (two each): beyond it
        // accept() fails and clients would wait unanswered; at it they hear "too many
        // connections" in their protocol.
        let capacity = mailfront_proxy::gate::connection_capacity();
        match capacity {
            Some(capacity) => tracing::info!(
                connections = capacity,
                "at most this many connections at once (two descriptors each, from the open files limit)"
            ),
            None => {
                tracing::warn!("cannot read the open files limit: connections are not capped by it")
            }
        }
        let clients = Arc::new(ClientCounts::with_capacity(capacity.unwrap_or(usize::MAX)));
        let proxy_trusted = config
            .proxy_protocol
            .trusted
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.parse::<Cidr>()
                    .map_err(|e| format!("proxy_protocol.trusted[{i}]: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let proxy_timeout = config
            .proxy_protocol
            .timeout
            .unwrap_or(Duration::from_secs(5));
        for (i, listener) in config.listener.iter().enumerate() {
            // The mail protocols get one socket per session worker (SO_REUSEPORT), accepted on
            // that worker; HTTPS and SIP one socket here.
            let per_worker = matches!(
                listener.protocol,
                ListenerProtocol::Imap
                    | ListenerProtocol::Pop3
                    | ListenerProtocol::Submission
                    | ListenerProtocol::Smtp
                    | ListenerProtocol::Outbound
            );
            let count = if per_worker { workers.len() } else { 1 };
            let mut sockets = bind_listeners(listener.address, count).map_err(|e| {
                format!(
                    "listener[{i}].address: cannot listen on {}: {e}",
                    listener.address
                )
            })?;
            let address = sockets
                .first()
                .and_then(|s| s.local_addr().ok())
                .unwrap_or(listener.address);
            bound.push(address);
            let context = Arc::new(ListenerContext {
                name: listener_name(listener),
                tls: client_tls(listener.tls),
                acceptor: Arc::clone(&mail_tls),
                pre_auth_idle: t.pre_auth_idle,
                login: t.login,
                post_auth_idle: t.post_auth_idle,
            });
            let gate = Arc::new(Gate::new(
                listener_name(listener),
                listener
                    .proxy_protocol
                    .then(|| (proxy_trusted.clone(), proxy_timeout)),
                listener
                    .max_connections
                    .unwrap_or(config.limits.max_connections),
                Arc::clone(&clients),
                config.limits.max_connections_per_client,
                Arc::clone(gateway.metrics()),
            ));
            let greeting = format!("{} ready.", config.node.name);
            let tls = client_tls(listener.tls);
            let allow_plaintext_auth = listener.allow_plaintext_auth;
            let task = match listener.protocol {
                ListenerProtocol::Imap => {
                    let settings = ImapSettings {
                        tls,
                        allow_plaintext_auth,
                        limits: limits(config),
                        greeting,
                    };
                    spawn_line(
                        std::mem::take(&mut sockets),
                        Imap::new(settings),
                        &gateway,
                        context,
                        gate,
                        &workers,
                        &shutdown_rx,
                    )
                }
                ListenerProtocol::Pop3 => {
                    let settings = Pop3Settings {
                        tls,
                        allow_plaintext_auth,
                        limits: limits(config),
                        greeting,
                    };
                    spawn_line(
                        std::mem::take(&mut sockets),
                        Pop3::new(settings),
                        &gateway,
                        context,
                        gate,
                        &workers,
                        &shutdown_rx,
                    )
                }
                ListenerProtocol::Submission => {
                    let settings = SubmissionSettings {
                        tls,
                        allow_plaintext_auth,
                        limits: limits(config),
                        hostname: config.node.name.clone(),
                        max_message_size: config.transport.max_message_size,
                    };
                    spawn_line(
                        std::mem::take(&mut sockets),
                        Submission::new(settings),
                        &gateway,
                        context,
                        gate,
                        &workers,
                        &shutdown_rx,
                    )
                }
                ListenerProtocol::Https => {
                    let front = http
                        .clone()
                        .ok_or_else(|| format!("listener[{i}]: an https listener needs [http]"))?;
                    let acceptor = match listener.tls {
                        ListenerTls::Implicit | ListenerTls::Starttls => Arc::clone(&http_tls),
                        ListenerTls::None => Arc::default(),
                    };
                    let socket = main_runtime_listener(&mut sockets, i)?;
                    vec![tokio::spawn(mailfront_http::server::serve(
                        front,
                        socket,
                        listener_name(listener),
                        acceptor,
                        gate,
                        shutdown_rx.clone(),
                    ))]
                }
                ListenerProtocol::Sip => {
                    // UDP on the TCP listener's own address (its port, if 0 was asked for);
                    // with implicit TLS, TCP only.
                    let socket = main_runtime_listener(&mut sockets, i)?;
                    let udp = match listener.tls {
                        ListenerTls::None => Some(UdpSocket::bind(address).await.map_err(|e| {
                            format!("listener[{i}].address: cannot listen on {address} (UDP): {e}")
                        })?),
                        _ => None,
                    };
                    let sip_tls = match listener.tls {
                        ListenerTls::Implicit => Arc::clone(&mail_tls),
                        _ => Arc::default(),
                    };
                    let context = Arc::new(SipContext::new(
                        listener_name(listener),
                        config.sip.settings(),
                        sip_tls,
                    ));
                    vec![tokio::spawn(mailfront_proxy::sip::run(
                        socket,
                        udp,
                        Arc::clone(&gateway),
                        context,
                        gate,
                        shutdown_rx.clone(),
                    ))]
                }
                ListenerProtocol::Smtp | ListenerProtocol::Outbound => {
                    let mode = transport_mode(config, listener.protocol)
                        .map_err(|e| format!("listener[{i}]: {e}"))?;
                    let transport = Arc::new(TransportContext {
                        name: listener_name(listener),
                        settings: TransportSettings {
                            tls,
                            hostname: config.node.name.clone(),
                            max_message_size: config.transport.max_message_size,
                            max_recipients: config.transport.max_recipients,
                            max_line_length: config.limits.max_line_length,
                            chunking: config.transport.chunking,
                        },
                        acceptor: Arc::clone(&mail_tls),
                        mode,
                        idle: t.smtp_idle,
                        delivery: t.delivery,
                    });
                    on_workers(&workers, std::mem::take(&mut sockets), |socket| {
                        listener::run_transport(
                            socket,
                            Arc::clone(&gateway),
                            Arc::clone(&transport),
                            Arc::clone(&gate),
                            shutdown_rx.clone(),
                        )
                    })
                }
            };
            tracing::info!(listener = %listener_name(listener), address = %listener.address, tls = ?listener.tls, "listening");
            tasks.extend(task);
        }
        let reloader = Arc::new(Reloader::new(
            path.to_owned(),
            config.clone(),
            Swappable {
                gateway: Arc::clone(&gateway),
                mail_tls,
                http_tls,
                http,
                rules,
                location_file,
            },
        ));
        let mut background = vec![
            failover,
            tokio::spawn(Arc::clone(&reloader).run(
                config.reload.interval.max(Duration::from_millis(100)),
                shutdown_rx.clone(),
            )),
        ];
        let admin = match &config.admin {
            Some(admin_config) => {
                let token = admin_config
                    .token_file
                    .as_ref()
                    .map(|file| read_token(file))
                    .transpose()?;
                let socket = TcpListener::bind(admin_config.address).await.map_err(|e| {
                    format!(
                        "admin.address: cannot listen on {}: {e}",
                        admin_config.address
                    )
                })?;
                let address = socket.local_addr().unwrap_or(admin_config.address);
                let api = Arc::new(Admin::new(
                    config.node.name.clone(),
                    Arc::clone(&gateway),
                    Arc::clone(&state),
                    Arc::clone(&clients),
                    Arc::clone(&reloader),
                    token,
                ));
                background.push(tokio::spawn(admin::serve(api, socket, shutdown_rx.clone())));
                tracing::info!(%address, token = admin_config.token_file.is_some(), "admin listener");
                Some(address)
            }
            None => None,
        };
        Ok(RunningNode {
            shutdown,
            tasks,
            _workers: workers,
            background,
            state,
            _directory: directory,
            _locations: locations,
            gateway,
            clients,
            shutdown_grace: t.shutdown_grace,
            bound,
            admin,
            reloader,
        })
    }

    /// Shuts down gracefully: stops accepting, lets open connections finish for up to
    /// `timeouts.shutdown_grace`, then closes every proxied session still open (IMAP clients
    /// get `* BYE [UNAVAILABLE]` first; POP3 and submission have no unsolicited reply).
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let deadline = tokio::time::Instant::now() + self.shutdown_grace;
        let open = self.clients.total();
        if open > 0 {
            tracing::info!(
                connections = open,
                sessions = self.gateway.registry().len(),
                grace = ?self.shutdown_grace,
                "stopped accepting; waiting for open connections to finish"
            );
        }
        while self.clients.total() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let closed = self
            .gateway
            .registry()
            .stop(&Filter::default(), &StopReason::Shutdown);
        if closed > 0 {
            tracing::info!(
                sessions = closed,
                "grace period over; closing proxied sessions"
            );
            // Give them a moment to say goodbye and flush.
            let farewell = tokio::time::Instant::now() + Duration::from_secs(2);
            while !self.gateway.registry().is_empty() && tokio::time::Instant::now() < farewell {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        for task in self.background {
            task.abort();
        }
    }
}

/// Reads the admin token file: one line, at least 16 characters.
fn read_token(file: &Path) -> Result<Secret<String>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("admin.token_file: cannot read {}: {e}", file.display()))?;
    let token = text.trim();
    if token.len() < 16 {
        return Err(format!(
            "admin.token_file: {} must hold a token of at least 16 characters",
            file.display()
        ));
    }
    Ok(Secret::new(token.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_group_shares_one_port_and_no_second_group_joins_it() {
        let group = bind_listeners("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let address = group[0].local_addr().unwrap();
        assert_eq!(group.len(), 2);
        assert!(group.iter().all(|s| s.local_addr().unwrap() == address));
        // A second node on the same address must fail, not silently take half the clients.
        let again = bind_listeners(address, 2).unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::AddrInUse);
        assert!(bind_listeners(address, 1).is_err());
        // Connections to the port are accepted (by one of the group).
        let client = std::net::TcpStream::connect(address).unwrap();
        drop(client);
    }
}
