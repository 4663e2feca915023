//! The running node: from a validated [`Config`] to bound listeners, followed sources and
//! background tasks, and a graceful stop. The parts come from [`crate::build`]; this module
//! starts them, in the named steps of [`RunningNode::start`], and keeps them alive.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use mailfront_directory::Directory;
use mailfront_http::HttpFrontDoor;
use mailfront_location::Locator;
use mailfront_location::etcd::EtcdSource;
use mailfront_location::file::FileSource;
use mailfront_manager::active::ActiveManager;
use mailfront_manager::probe::Prober;
use mailfront_net::gate::{ClientCounts, Gate};
use mailfront_net::node::NodeState;
use mailfront_net::tls::SharedAcceptor;
use mailfront_proxy::registry::{Filter, StopReason};
use mailfront_proxy::workers::Workers;
use mailfront_proxy::{Imap, LineProtocol, NodeServices, Pop3, Submission, listener};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::admin::{self, Admin, AdminParts};
use crate::build::listeners::{self as listeners, listener_name, main_runtime_listener};
use crate::build::{self, LocationRules};
use crate::config::{Config, ListenerConfig, ListenerProtocol, ListenerTls, LocationConfig};
use crate::reload::{Reloader, Swappable};

/// What feeds the locator; held (never read) so that it runs while the node runs.
enum LocationSource {
    File { _source: Arc<FileSource> },
    Etcd { _source: EtcdSource },
}

/// A running node: what must stay alive while it serves.
pub struct RunningNode {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The session workers; dropped (stopped) last, once the sessions are done.
    _workers: Arc<Workers>,
    background: Vec<JoinHandle<()>>,
    _directory: Arc<dyn Directory>,
    _locations: LocationSource,
    /// The health probes (they stop when dropped).
    _prober: Option<Prober>,
    services: Arc<NodeServices>,
    clients: Arc<ClientCounts>,
    shutdown_grace: Duration,
    /// The node's state (draining), shared with health pages and the admin API.
    pub state: Arc<NodeState>,
    /// The addresses the listeners are bound to, in configuration order.
    pub bound: Vec<SocketAddr>,
    /// The admin listener's address, if configured.
    pub admin: Option<SocketAddr>,
    /// Reloads the configuration (SIGHUP, file changes, the admin API).
    pub reloader: Arc<Reloader>,
}

impl RunningNode {
    /// Starts everything the configuration describes and binds every listener. `path` is
    /// where `config` was read from, to read it again on reload.
    pub async fn start(path: &Path, config: Config) -> Result<RunningNode, String> {
        let config = &config;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let core = Core::start(config, &shutdown_rx).await?;
        let workers = start_workers()?;
        let clients = Arc::new(client_counts());
        let (bound, tasks) = Listeners {
            config,
            services: &core.services,
            workers: &workers,
            clients: &clients,
            mail_tls: &core.mail_tls,
            http_tls: &core.http_tls,
            http: core.http.as_ref(),
            shutdown: &shutdown_rx,
        }
        .start_all()
        .await?;
        let swappable = Swappable {
            resolver: Arc::clone(&core.services.resolver),
            locator: Arc::clone(&core.locator),
            metrics: Arc::clone(&core.services.metrics),
            mail_tls: Arc::clone(&core.mail_tls),
            http_tls: Arc::clone(&core.http_tls),
            admin_tls: Arc::clone(&core.admin_tls),
            http: core.http.clone(),
            rules: Arc::clone(&core.rules),
            location_file: core.location_file.clone(),
            manager: Arc::clone(&core.manager),
        };
        let reloader = Arc::new(Reloader::new(path.to_owned(), config.clone(), swappable));
        let mut background = core.background;
        background.push(tokio::spawn(Arc::clone(&reloader).run(
            config.reload.interval.max(Duration::from_millis(100)),
            shutdown_rx.clone(),
        )));
        let parts = AdminParts {
            node: config.node.name.clone(),
            services: Arc::clone(&core.services),
            locator: Arc::clone(&core.locator),
            state: Arc::clone(&core.state),
            clients: Arc::clone(&clients),
            reloader: Arc::clone(&reloader),
            token: None,
            client_certificates: false,
            manager: Some(Arc::clone(&core.manager)),
            protocols: config
                .listener
                .iter()
                .map(|l| l.protocol.protocol())
                .collect(),
        };
        let admin = start_admin(config, parts, &core.admin_tls, &shutdown_rx).await?;
        let admin = admin.map(|(address, task)| {
            background.push(task);
            address
        });
        Ok(RunningNode {
            shutdown,
            tasks,
            _workers: workers,
            background,
            state: core.state,
            _directory: core.directory,
            _locations: core.locations,
            _prober: core._prober,
            services: core.services,
            clients,
            shutdown_grace: config.timeouts.shutdown_grace,
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
                sessions = self.services.registry.len(),
                grace = ?self.shutdown_grace,
                "stopped accepting; waiting for open connections to finish"
            );
        }
        while self.clients.total() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let closed = self
            .services
            .registry
            .stop(&Filter::default(), &StopReason::Shutdown);
        if closed > 0 {
            tracing::info!(
                sessions = closed,
                "grace period over; closing proxied sessions"
            );
            // Give them a moment to say goodbye and flush.
            let farewell = tokio::time::Instant::now() + Duration::from_secs(2);
            while !self.services.registry.is_empty() && tokio::time::Instant::now() < farewell {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        for task in self.background {
            task.abort();
        }
    }
}

/// What a node runs before its listeners: its sources, what its sessions share, and the
/// background tasks that follow the store.
struct Core {
    directory: Arc<dyn Directory>,
    locator: Arc<Locator>,
    locations: LocationSource,
    location_file: Option<Arc<FileSource>>,
    rules: Arc<ArcSwap<LocationRules>>,
    mail_tls: Arc<SharedAcceptor>,
    http_tls: Arc<SharedAcceptor>,
    admin_tls: Arc<SharedAcceptor>,
    services: Arc<NodeServices>,
    state: Arc<NodeState>,
    http: Option<Arc<HttpFrontDoor>>,
    manager: Arc<ActiveManager>,
    /// The health probes (they stop when dropped).
    _prober: Option<Prober>,
    background: Vec<JoinHandle<()>>,
}

impl Core {
    async fn start(config: &Config, shutdown: &watch::Receiver<bool>) -> Result<Core, String> {
        let topology = build::topology(config)?;
        let rules = Arc::new(ArcSwap::from_pointee(LocationRules::from_config(config)));
        let mail_tls = Arc::new(SharedAcceptor::new(build::acceptor(config)?));
        let http_tls = Arc::new(SharedAcceptor::new(build::http_acceptor(config)?));
        let admin_tls = Arc::new(SharedAcceptor::new(build::admin_acceptor(config)?));
        let connector = build::connector(config)?;
        let locator = Arc::new(Locator::new());
        let directory = build::directory(config, true, &locator)?;
        let (locations, location_file) = start_locations(config, &locator, &rules).await?;
        let services = Arc::new(build::node_services(
            config,
            Arc::clone(&directory),
            &locator,
            topology,
            connector,
        ));
        // Failover: every new location map closes the sessions left on a previous server.
        let mut background = vec![tokio::spawn(mailfront_proxy::registry::follow_locations(
            Arc::clone(&services.registry),
            locator.subscribe(),
        ))];
        let state = Arc::new(NodeState::new());
        let http = build::http_front_door(config, &services, &state)?;
        let (manager, election) = build::active_manager(
            config,
            &services.resolver,
            &services.metrics,
            location_file.as_ref(),
        )?;
        background.extend(election);
        let relister = match &locations {
            LocationSource::Etcd { _source } => Some(_source.relister()),
            LocationSource::File { .. } => None,
        };
        background.extend(build::safe_moves(
            config, &services, &locator, &manager, relister,
        )?);
        background.extend(build::shared_blocks(config, &services)?);
        background.extend(build::token_logins(config, &services)?);
        let wake = Arc::new(Notify::new());
        let prober = start_probes(config, &services, &wake, &mut background)?;
        background.push(tokio::spawn(
            Arc::clone(&manager).run(wake, shutdown.clone()),
        ));
        Ok(Core {
            directory,
            locator,
            locations,
            location_file,
            rules,
            mail_tls,
            http_tls,
            admin_tls,
            services,
            state,
            http,
            manager,
            _prober: prober,
            background,
        })
    }
}

/// Starts probing the mailbox servers, if `[health]` is configured: every change of an
/// endpoint's state wakes the Active Manager at once.
fn start_probes(
    config: &Config,
    services: &NodeServices,
    wake: &Arc<Notify>,
    background: &mut Vec<JoinHandle<()>>,
) -> Result<Option<Prober>, String> {
    let Some(settings) = build::probe_settings(config)? else {
        return Ok(None);
    };
    let (prober, mut transitions) = Prober::start(
        Arc::clone(&services.resolver),
        services.backends.tls.clone(),
        settings,
        Arc::clone(&services.metrics),
        config.node.name.clone(),
    );
    let wake = Arc::clone(wake);
    background.push(tokio::spawn(async move {
        while transitions.recv().await.is_some() {
            wake.notify_one();
        }
    }));
    Ok(Some(prober))
}

/// Starts following the location map: the file (polled every `reload.interval`) or etcd. The
/// file source is also returned on its own, for a reload to re-read it.
async fn start_locations(
    config: &Config,
    locator: &Arc<Locator>,
    rules: &Arc<ArcSwap<LocationRules>>,
) -> Result<(LocationSource, Option<Arc<FileSource>>), String> {
    match &config.location {
        LocationConfig::File { path } => {
            let source = Arc::new(
                FileSource::start(
                    path,
                    Arc::clone(locator),
                    build::live_validator(rules),
                    config.reload.interval,
                )
                .map_err(|e| format!("location.path: {e}"))?,
            );
            let held = LocationSource::File {
                _source: Arc::clone(&source),
            };
            Ok((held, Some(source)))
        }
        LocationConfig::Etcd(etcd) => {
            let source = EtcdSource::start(etcd, Arc::clone(locator), build::live_validator(rules))
                .map_err(|e| format!("location: {e}"))?;
            // Start serving either way: with no map yet, logins get a temporary error
            // until etcd answers (docs/architecture.md), which beats refusing to start.
            if let Err(e) = source.wait_loaded(etcd.timeout).await {
                tracing::warn!(error = %e, "etcd has not answered yet; logins wait for a location map");
            }
            Ok((LocationSource::Etcd { _source: source }, None))
        }
    }
}

/// Starts the session workers. IMAP, POP3, submission and SMTP sessions run on one
/// single-threaded worker per core (mailfront_proxy::workers explains why); HTTPS, SIP and the
/// admin API stay on the main runtime.
fn start_workers() -> Result<Arc<Workers>, String> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    Workers::start(cores).map_err(|e| format!("cannot start the session workers: {e}"))
}

/// The count of connections per client address, shared by every listener of the node, capped
/// at as many connections as the descriptor limit allows (two each): beyond it accept() fails
/// and clients would wait unanswered; at it they hear "too many connections" in their protocol.
fn client_counts() -> ClientCounts {
    let capacity = mailfront_net::gate::connection_capacity();
    match capacity {
        Some(capacity) => tracing::info!(
            connections = capacity,
            "at most this many connections at once (two descriptors each, from the open files limit)"
        ),
        None => {
            tracing::warn!("cannot read the open files limit: connections are not capped by it")
        }
    }
    ClientCounts::with_capacity(capacity.unwrap_or(usize::MAX))
}

/// What the listeners of a node share, while they are being started.
struct Listeners<'a> {
    config: &'a Config,
    services: &'a Arc<NodeServices>,
    workers: &'a Arc<Workers>,
    clients: &'a Arc<ClientCounts>,
    /// The acceptor of the mail and SIP listeners.
    mail_tls: &'a Arc<SharedAcceptor>,
    /// The acceptor of the HTTPS listeners.
    http_tls: &'a Arc<SharedAcceptor>,
    http: Option<&'a Arc<HttpFrontDoor>>,
    shutdown: &'a watch::Receiver<bool>,
}

impl Listeners<'_> {
    /// Binds and starts every listener, in configuration order: the addresses they are bound
    /// to, and their accept loops.
    async fn start_all(&self) -> Result<(Vec<SocketAddr>, Vec<JoinHandle<()>>), String> {
        let mut bound = Vec::new();
        let mut tasks = Vec::new();
        for (i, listener) in self.config.listener.iter().enumerate() {
            let (address, started) = self.start(i, listener).await?;
            bound.push(address);
            tasks.extend(started);
        }
        Ok((bound, tasks))
    }

    /// Binds listener `i` and starts its accept loops: the address it is bound to (its port,
    /// if 0 was asked for), and the loops.
    async fn start(
        &self,
        i: usize,
        listener: &ListenerConfig,
    ) -> Result<(SocketAddr, Vec<JoinHandle<()>>), String> {
        // The mail protocols get one socket per session worker (SO_REUSEPORT), accepted on
        // that worker; HTTPS and SIP one socket here.
        let count = if listeners::per_worker(listener.protocol) {
            self.workers.len()
        } else {
            1
        };
        let sockets = listeners::bind_listeners(listener.address, count).map_err(|e| {
            format!(
                "listener[{i}].address: cannot listen on {}: {e}",
                listener.address
            )
        })?;
        let address = sockets
            .first()
            .and_then(|s| s.local_addr().ok())
            .unwrap_or(listener.address);
        let gate = Arc::new(listeners::gate(
            self.config,
            listener,
            self.clients,
            &self.services.metrics,
        ));
        let config = self.config;
        let tasks = match listener.protocol {
            ListenerProtocol::Imap => {
                let imap = Imap::new(listeners::imap_settings(config, listener));
                self.spawn_line(sockets, imap, listener, gate)
            }
            ListenerProtocol::Pop3 => {
                let pop3 = Pop3::new(listeners::pop3_settings(config, listener));
                self.spawn_line(sockets, pop3, listener, gate)
            }
            ListenerProtocol::Submission => {
                let submission = Submission::new(listeners::submission_settings(config, listener));
                self.spawn_line(sockets, submission, listener, gate)
            }
            ListenerProtocol::Https => self.spawn_https(i, listener, sockets, gate)?,
            ListenerProtocol::Sip => self.spawn_sip(i, listener, sockets, address, gate).await?,
            ListenerProtocol::Smtp | ListenerProtocol::Outbound => {
                self.spawn_mail_transfer(i, listener, sockets, gate)?
            }
        };
        tracing::info!(listener = %listener_name(listener), address = %listener.address, tls = ?listener.tls, "listening");
        Ok((address, tasks))
    }

    /// Starts the accept loops of a line-protocol listener (IMAP, POP3, submission), one per
    /// socket on the session workers.
    fn spawn_line<P: LineProtocol>(
        &self,
        sockets: Vec<std::net::TcpListener>,
        protocol: P,
        listener: &ListenerConfig,
        gate: Arc<Gate>,
    ) -> Vec<JoinHandle<()>> {
        let protocol = Arc::new(protocol);
        let context = Arc::new(listeners::listener_context(
            self.config,
            listener,
            self.mail_tls,
        ));
        on_workers(self.workers, sockets, |socket| {
            listener::run(
                socket,
                Arc::clone(&protocol),
                Arc::clone(self.services),
                Arc::clone(&context),
                Arc::clone(&gate),
                self.shutdown.clone(),
            )
        })
    }

    /// Starts an HTTPS listener (listener `i`) on this runtime.
    fn spawn_https(
        &self,
        i: usize,
        listener: &ListenerConfig,
        mut sockets: Vec<std::net::TcpListener>,
        gate: Arc<Gate>,
    ) -> Result<Vec<JoinHandle<()>>, String> {
        let front = self
            .http
            .cloned()
            .ok_or_else(|| format!("listener[{i}]: an https listener needs [http]"))?;
        let acceptor = match listener.tls {
            ListenerTls::Implicit | ListenerTls::Starttls => Arc::clone(self.http_tls),
            ListenerTls::None => Arc::default(),
        };
        let socket = main_runtime_listener(&mut sockets, i)?;
        Ok(vec![tokio::spawn(mailfront_http::server::serve(
            front,
            socket,
            listener_name(listener),
            acceptor,
            gate,
            self.shutdown.clone(),
        ))])
    }

    /// Starts a SIP listener (listener `i`, bound to `address`) on this runtime: TCP, and UDP
    /// on the TCP listener's own address (its port, if 0 was asked for); with implicit TLS,
    /// TCP only.
    async fn spawn_sip(
        &self,
        i: usize,
        listener: &ListenerConfig,
        mut sockets: Vec<std::net::TcpListener>,
        address: SocketAddr,
        gate: Arc<Gate>,
    ) -> Result<Vec<JoinHandle<()>>, String> {
        let socket = main_runtime_listener(&mut sockets, i)?;
        let udp = match listener.tls {
            ListenerTls::None => Some(UdpSocket::bind(address).await.map_err(|e| {
                format!("listener[{i}].address: cannot listen on {address} (UDP): {e}")
            })?),
            _ => None,
        };
        let context = Arc::new(listeners::sip_context(self.config, listener, self.mail_tls));
        Ok(vec![tokio::spawn(mailfront_proxy::sip::run(
            socket,
            udp,
            Arc::clone(self.services),
            context,
            gate,
            self.shutdown.clone(),
        ))])
    }

    /// Starts the accept loops of an `smtp` or `outbound` listener (listener `i`), one per
    /// socket on the session workers.
    fn spawn_mail_transfer(
        &self,
        i: usize,
        listener: &ListenerConfig,
        sockets: Vec<std::net::TcpListener>,
        gate: Arc<Gate>,
    ) -> Result<Vec<JoinHandle<()>>, String> {
        let context = listeners::mail_transfer_context(self.config, listener, self.mail_tls)
            .map_err(|e| format!("listener[{i}]: {e}"))?;
        let context = Arc::new(context);
        Ok(on_workers(self.workers, sockets, |socket| {
            listener::run_mail_transfer(
                socket,
                Arc::clone(self.services),
                Arc::clone(&context),
                Arc::clone(&gate),
                self.shutdown.clone(),
            )
        }))
    }
}

/// Runs one accept loop per socket, socket `i` on session worker `i` (each loop registers its
/// socket with the event loop of the worker it runs on).
fn on_workers<F, Fut>(
    workers: &Workers,
    sockets: Vec<std::net::TcpListener>,
    accept_loop: F,
) -> Vec<JoinHandle<()>>
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

/// Binds the admin listener, if `[admin]` is configured, and serves the admin API on it (with
/// the configured token): its address, and the task serving it.
async fn start_admin(
    config: &Config,
    mut parts: AdminParts,
    tls: &Arc<SharedAcceptor>,
    shutdown: &watch::Receiver<bool>,
) -> Result<Option<(SocketAddr, JoinHandle<()>)>, String> {
    let Some(admin_config) = &config.admin else {
        return Ok(None);
    };
    parts.token = admin_config
        .token_file
        .as_ref()
        .map(|file| build::admin_token(file))
        .transpose()?;
    parts.client_certificates = admin_config.client_ca.is_some();
    let socket = TcpListener::bind(admin_config.address).await.map_err(|e| {
        format!(
            "admin.address: cannot listen on {}: {e}",
            admin_config.address
        )
    })?;
    let address = socket.local_addr().unwrap_or(admin_config.address);
    let api = Arc::new(Admin::new(parts));
    let task = tokio::spawn(admin::serve(api, socket, Arc::clone(tls), shutdown.clone()));
    tracing::info!(
        %address,
        token = admin_config.token_file.is_some(),
        tls = admin_config.tls,
        client_certificates = admin_config.client_ca.is_some(),
        "admin listener"
    );
    Ok(Some((address, task)))
}
