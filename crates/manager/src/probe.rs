//! The prober: this node's health probes of every mailbox server, on every configured endpoint.
//!
//! In the flow of a session (docs/architecture.md) the prober feeds the *health board*
//! ([`BackendHealth`](mailfront_resolve::health::BackendHealth), consulted by
//! `Resolver::resolve` and by inbound delivery): a login whose active server is known down gets
//! the protocol's temporary error at once instead of a connect timeout, and the transport skips
//! down delivery servers. It also tells the Active Manager of
//! every change ([`Transition`]s on a channel), which decides on failovers from them.
//!
//! What it promises:
//!
//! - one task per server and endpoint (IMAP, POP3, submission, delivery — keyed
//!   [`Protocol::Smtp`], LMTP or SMTP — and HTTP), probing every [`ProbeSettings::interval`],
//!   the first probe after a random part of one interval so that the probes of many servers
//!   do not all fire at once;
//! - each probe bounded by [`ProbeSettings::timeout`] in total — connect, TLS, the whole
//!   dialogue — so a server that accepts connections but greets slowly or never counts as
//!   failing, like one that refuses them;
//! - what a probe checks by [`ProbeMode`]: the connection; the greeting
//!   ([`GreetingProbe`]; LMTP and SMTP also answer `LHLO`/`EHLO`; HTTP answers a `GET` of
//!   [`ProbeSettings::http_path`] with a 2xx or 3xx); or, for IMAP, POP3 and submission, a real
//!   login ([`LoginProbe`]) as [`ProbeSettings::login_user`] — with the server's master user
//!   when it logs in with one, else with [`ProbeSettings::login_password`];
//! - results counted by HAProxy's `fall`/`rise` ([`EndpointHealth`]); every endpoint starts
//!   *up* and is written up on the board and in `mailfront_backend_up` from the start, so the
//!   first scrape shows every server; on each change: the board, the gauge, one log line
//!   (`backend down` / `backend up`) and one [`Transition`];
//! - every probe observed in `mailfront_probe_seconds{server,protocol}`;
//! - the server list followed across reloads: every interval the prober re-reads
//!   `Resolver::topology()`, starts probing new servers and endpoints, and each task re-reads
//!   its own endpoint before each probe (a changed host or port is probed from the next round,
//!   keeping the endpoint's state); a task whose endpoint is gone ends and its gauge series is
//!   removed (the board keeps the last state: it has no way to forget a server, and a server
//!   that is not in the topology is never routed to).
//!
//! Not I/O-free: this module owns the probe tasks. The bytes are judged by the sans-I/O
//! machines of `mailfront_protocol::probe`, connected with `net::connect` and pumped with
//! `net::pump`, like every other backend connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mailfront_metrics::{BackendLabels, Metrics, seconds};
use mailfront_model::{BackendTls, DeliveryProtocol, Protocol, Secret, ServerName};
use mailfront_net::conn::{Conn, ConnEnd, TlsRole};
use mailfront_net::connect::{Dial, connect};
use mailfront_net::pump::{Interrupt, Until, pump};
use mailfront_protocol::BackendAuth;
use mailfront_protocol::probe::{
    Greeting, GreetingProbe, HttpProbe, LoginProbe, Probe, ProbeEvent,
};
use mailfront_resolve::Resolver;
use mailfront_routing::{LoginMethod, Server, Topology};
use rand::Rng;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_rustls::TlsConnector;

use crate::health::{EndpointHealth, Health, Thresholds};

/// The endpoints a server can have probed, in the order they are started and logged.
const PROBED: [Protocol; 5] = [
    Protocol::Imap,
    Protocol::Pop3,
    Protocol::Submission,
    Protocol::Smtp,
    Protocol::Http,
];

/// The shortest interval the prober accepts: a zero interval would spin (and tokio's interval
/// refuses it).
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// What a probe checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProbeMode {
    /// The TCP connection (and the TLS handshake of an implicit-TLS endpoint) only.
    Connect,
    /// The greeting of each protocol (`LHLO`/`EHLO` for delivery, a `GET` for HTTP).
    #[default]
    Greeting,
    /// A real login for IMAP, POP3 and submission (the greeting for the other endpoints).
    Login,
}

/// How the prober probes (the `[health]` settings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSettings {
    /// From one probe of an endpoint to the next (HAProxy's `inter`, 2 s).
    pub interval: Duration,
    /// The whole of one probe: connect, TLS and dialogue (HAProxy's `timeout check`, 1 s).
    pub timeout: Duration,
    /// Consecutive results that change an endpoint's state (`fall 3`, `rise 2`).
    pub thresholds: Thresholds,
    /// What a probe checks.
    pub mode: ProbeMode,
    /// The path the HTTP probe asks for, absolute on the server (HAProxy's
    /// `option httpchk GET /`): the path of the server's base URL is not prefixed.
    pub http_path: String,
    /// The account a login probe logs in as (with the master user's password on servers that
    /// log in with one). Without it, login mode probes the greeting.
    pub login_user: Option<String>,
    /// The probe account's own password, for servers that take the user's password
    /// (pass-through). Without it, login mode probes only the greeting of such servers.
    pub login_password: Option<Secret<String>>,
}

impl Default for ProbeSettings {
    /// HAProxy's defaults: every 2 s, 1 s to answer, `fall 3`, `rise 2`; greeting probes; `/`.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            thresholds: Thresholds::default(),
            mode: ProbeMode::default(),
            http_path: "/".to_owned(),
            login_user: None,
            login_password: None,
        }
    }
}

/// A change of an endpoint's state, for the Active Manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The mailbox server.
    pub server: ServerName,
    /// The endpoint ([`Protocol::Smtp`] for the delivery endpoint, LMTP or SMTP).
    pub protocol: Protocol,
    /// The new state.
    pub health: Health,
    /// Why, for the log: the last failure's reason; when up again, how many probes in a row
    /// succeeded and what the last failure was.
    pub detail: String,
}

/// The running prober. Dropping it (or [`Prober::stop`]) stops every probe task.
#[derive(Debug)]
pub struct Prober {
    supervisor: JoinHandle<()>,
}

impl Drop for Prober {
    fn drop(&mut self) {
        // The supervisor owns the probe tasks in a `JoinSet`, which aborts them when dropped
        // with the aborted supervisor.
        self.supervisor.abort();
    }
}

/// What every probe task shares.
struct Context {
    resolver: Arc<Resolver>,
    connector: Option<TlsConnector>,
    settings: ProbeSettings,
    metrics: Arc<Metrics>,
    node_name: String,
    /// Unbounded on purpose: there is one reader (the Active Manager), transitions are rare
    /// (each needs `fall` or `rise` probes), and one must never be dropped or make a probe
    /// wait — a `broadcast` would drop the oldest on lag, a bounded channel would block the
    /// probes of a node whose manager is busy.
    transitions: mpsc::UnboundedSender<Transition>,
}

/// One probed endpoint.
type Key = (ServerName, Protocol);

impl Prober {
    /// Starts probing every endpoint of every server of `resolver.topology()`, and follows
    /// the topology as it is replaced. Marks the board as probed
    /// ([`BackendHealth::start_probing`]) and every endpoint up. `connector` is the trust for
    /// TLS towards the servers (required by endpoints with TLS: without it their probes fail);
    /// `node_name` is the name LMTP, SMTP and submission probes greet with. Must be called
    /// within a tokio runtime. The receiver gets every [`Transition`]; dropping it is allowed
    /// (changes are still logged, written and counted).
    ///
    /// [`BackendHealth::start_probing`]: mailfront_resolve::health::BackendHealth::start_probing
    pub fn start(
        resolver: Arc<Resolver>,
        connector: Option<TlsConnector>,
        settings: ProbeSettings,
        metrics: Arc<Metrics>,
        node_name: String,
    ) -> (Prober, mpsc::UnboundedReceiver<Transition>) {
        let (transitions, receiver) = mpsc::unbounded_channel();
        let settings = ProbeSettings {
            interval: settings.interval.max(MIN_INTERVAL),
            ..settings
        };
        warn_about_login_mode(&resolver.topology(), &settings);
        let context = Arc::new(Context {
            resolver,
            connector,
            settings,
            metrics,
            node_name,
            transitions,
        });
        context.resolver.health().start_probing();
        let mut tasks = Tasks::default();
        tasks.reconcile(&context);
        let supervisor = tokio::spawn(supervise(context, tasks));
        (Prober { supervisor }, receiver)
    }

    /// Stops every probe task (as dropping the prober does).
    pub fn stop(self) {}
}

/// The running probe tasks, by endpoint.
#[derive(Default)]
struct Tasks {
    set: JoinSet<()>,
    running: HashMap<Key, AbortHandle>,
}

impl Tasks {
    /// Starts a task for every endpoint of the topology that has none running (new servers
    /// and endpoints after a reload, and endpoints that were removed and came back).
    fn reconcile(&mut self, context: &Arc<Context>) {
        while self.set.try_join_next().is_some() {}
        self.running.retain(|_, task| !task.is_finished());
        let topology = context.resolver.topology();
        for server in topology.servers.values() {
            for protocol in PROBED {
                let key = (server.name.clone(), protocol);
                if !server.endpoints.serves(protocol) || self.running.contains_key(&key) {
                    continue;
                }
                context.initial_state(&key);
                let offset =
                    rand::thread_rng().gen_range(Duration::ZERO..context.settings.interval);
                let task = self
                    .set
                    .spawn(watch(Arc::clone(context), key.clone(), offset));
                self.running.insert(key, task);
            }
        }
    }
}

/// Follows the topology: every interval, starts the tasks of endpoints that have none.
async fn supervise(context: Arc<Context>, mut tasks: Tasks) {
    let mut ticks = tokio::time::interval_at(
        Instant::now() + context.settings.interval,
        context.settings.interval,
    );
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        tasks.reconcile(&context);
    }
}

/// Says once, at start, where login mode cannot log in (and so probes the greeting).
fn warn_about_login_mode(topology: &Topology, settings: &ProbeSettings) {
    if settings.mode != ProbeMode::Login {
        return;
    }
    if settings.login_user.is_none() {
        tracing::warn!("health probes: login mode without a probe user; probing greetings");
        return;
    }
    for server in topology.servers.values() {
        if login_auth(server, settings).is_none() {
            tracing::warn!(
                server = %server.name,
                "health probes: the server takes the user's password and no probe password is set; probing its greetings"
            );
        }
    }
}

impl Context {
    fn labels(&self, (server, protocol): &Key) -> BackendLabels {
        BackendLabels {
            server: server.as_str().to_owned(),
            protocol: protocol.as_str().to_owned(),
        }
    }

    /// An endpoint starts up: on the board and in the gauge.
    fn initial_state(&self, key: &Key) {
        self.resolver.health().set_endpoint(&key.0, key.1, true);
        self.metrics
            .backend_up
            .get_or_create(&self.labels(key))
            .set(1);
    }

    /// Records a change of state everywhere it is seen.
    fn changed(&self, key: &Key, health: Health, detail: String) {
        let (server, protocol) = key;
        let up = health == Health::Up;
        self.resolver.health().set_endpoint(server, *protocol, up);
        self.metrics
            .backend_up
            .get_or_create(&self.labels(key))
            .set(i64::from(up));
        let thresholds = self.settings.thresholds;
        // `probes`: how many results in a row made the change (`rise` or `fall`).
        if up {
            let probes = thresholds.rise.max(1);
            tracing::info!(%server, %protocol, probes, %detail, "backend up");
        } else {
            let probes = thresholds.fall.max(1);
            tracing::warn!(%server, %protocol, probes, reason = %detail, "backend down");
        }
        // No reader (the Active Manager is not running): the change is logged and written.
        let _ = self.transitions.send(Transition {
            server: server.clone(),
            protocol: *protocol,
            health,
            detail,
        });
    }
}

/// Probes one endpoint every interval until the topology no longer has it.
async fn watch(context: Arc<Context>, key: Key, offset: Duration) {
    let settings = &context.settings;
    let labels = context.labels(&key);
    let mut health = EndpointHealth::default();
    let mut last_failure = String::new();
    let mut ticks = tokio::time::interval_at(Instant::now() + offset, settings.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let topology = context.resolver.topology();
        let Some(server) = topology
            .server(&key.0)
            .filter(|server| server.endpoints.serves(key.1))
        else {
            tracing::info!(
                server = %key.0,
                protocol = %key.1,
                "backend endpoint no longer configured; its probes stop"
            );
            context.metrics.backend_up.remove(&labels);
            context.metrics.probe_latency.remove(&labels);
            return;
        };
        let started = Instant::now();
        let result = probe(&context, server, key.1).await;
        context
            .metrics
            .probe_latency
            .get_or_create(&labels)
            .observe(seconds(started.elapsed()));
        if let Err(why) = &result {
            tracing::debug!(server = %key.0, protocol = %key.1, reason = %why, "probe failed");
        }
        let ok = result.is_ok();
        // Whether the last probe failed, before `fall` confirms anything: the Active Manager
        // counts such servers as looking down when it asks whether it is the one cut off.
        context.resolver.health().set_failing(&key.0, key.1, !ok);
        if let Err(why) = result {
            last_failure = why;
        }
        if let Some(state) = health.record(ok, settings.thresholds) {
            let detail = match state {
                Health::Down => last_failure.clone(),
                // The way back names what was wrong, for whoever reads only this line.
                Health::Up => format!(
                    "{} probes in a row succeeded; the last failure: {last_failure}",
                    settings.thresholds.rise.max(1)
                ),
            };
            context.changed(&key, state, detail);
        }
    }
}

/// Where a probe connects, and the `Host` of an HTTP probe.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Destination {
    host: String,
    port: u16,
    tls: BackendTls,
    /// `host[:port]` as the URL writes it (HTTP only).
    authority: String,
}

/// Where `server`'s endpoint for `protocol` is.
fn destination(server: &Server, protocol: Protocol) -> Result<Destination, String> {
    if protocol == Protocol::Http {
        return match &server.endpoints.http {
            Some(url) => http_destination(url),
            None => Err("no HTTP endpoint".to_owned()),
        };
    }
    match server.endpoints.for_protocol(protocol) {
        Some(endpoint) => Ok(Destination {
            host: endpoint.host.clone(),
            port: endpoint.port,
            tls: endpoint.tls,
            authority: String::new(),
        }),
        None => Err(format!("no {protocol} endpoint")),
    }
}

/// The host, port and TLS of a server's HTTP base URL (`http://host[:port]/…`,
/// `https://…`, IPv6 literals in brackets).
fn http_destination(url: &str) -> Result<Destination, String> {
    let unusable = || format!("unusable HTTP URL {url:?}");
    let (scheme, rest) = url.split_once("://").ok_or_else(unusable)?;
    let (tls, default_port) = if scheme.eq_ignore_ascii_case("http") {
        (BackendTls::None, 80)
    } else if scheme.eq_ignore_ascii_case("https") {
        (BackendTls::Implicit, 443)
    } else {
        return Err(unusable());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(unusable());
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']').ok_or_else(unusable)?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(port) => port.parse().map_err(|_| unusable())?,
        None => default_port,
    };
    if host.is_empty() {
        return Err(unusable());
    }
    Ok(Destination {
        host: host.to_owned(),
        port,
        tls,
        authority: authority.to_owned(),
    })
}

/// How a login probe logs in at `server`: as the probe user, with the server's master user
/// when it has one, else with the probe account's password. `None` when the settings lack
/// what that takes.
fn login_auth(server: &Server, settings: &ProbeSettings) -> Option<BackendAuth> {
    let user = settings.login_user.clone()?;
    Some(match &server.login {
        LoginMethod::Master { master, mechanism } => BackendAuth::Master {
            user,
            master: master.user.clone(),
            password: master.password.clone(),
            separator: master.separator.clone(),
            mechanism: *mechanism,
        },
        LoginMethod::PassThrough { mechanism } => BackendAuth::PassThrough {
            user,
            password: Secret::new(
                settings
                    .login_password
                    .as_ref()?
                    .expose()
                    .as_bytes()
                    .to_vec(),
            ),
            mechanism: *mechanism,
        },
    })
}

/// One probe of `server`'s endpoint for `protocol`, within the probe timeout in total.
async fn probe(context: &Context, server: &Server, protocol: Protocol) -> Result<(), String> {
    let timeout = context.settings.timeout;
    let deadline = Instant::now() + timeout;
    match tokio::time::timeout_at(deadline, probe_within(context, server, protocol, deadline)).await
    {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// The probe itself: connect, then pump the machine the mode and protocol call for, by
/// `deadline` ([`probe`] bounds the whole).
async fn probe_within(
    context: &Context,
    server: &Server,
    protocol: Protocol,
    deadline: Instant,
) -> Result<(), String> {
    let settings = &context.settings;
    let to = destination(server, protocol)?;
    let connector = context.connector.as_ref();
    // A STARTTLS endpoint needs the trust only in login mode (the greeting probe does not
    // upgrade); there the login machine's STARTTLS step fails with the reason.
    if to.tls == BackendTls::Implicit && connector.is_none() {
        return Err("the endpoint has TLS and no backend CA is configured".to_owned());
    }
    let dial = Dial {
        host: &to.host,
        port: to.port,
        tls: to.tls,
        connector,
    };
    let stream = connect(dial, settings.timeout)
        .await
        .map_err(|error| format!("connect to {}:{}: {error}", to.host, to.port))?;
    if settings.mode == ProbeMode::Connect {
        return Ok(());
    }
    let mut conn = Conn::new(stream);
    let dialogue = Dialogue {
        conn: &mut conn,
        role: TlsRole::Client {
            connector,
            host: &to.host,
        },
        deadline,
        timeout: settings.timeout,
    };
    let login = match settings.mode {
        ProbeMode::Login => login_auth(server, settings),
        ProbeMode::Connect | ProbeMode::Greeting => None,
    };
    let helo = &context.node_name;
    let greeting = |kind| GreetingProbe::new(kind, helo);
    match (protocol, login) {
        (Protocol::Imap, Some(auth)) => dialogue.run(LoginProbe::imap(auth, to.tls)).await,
        (Protocol::Pop3, Some(auth)) => dialogue.run(LoginProbe::pop3(auth, to.tls)).await,
        (Protocol::Submission, Some(auth)) => {
            dialogue
                .run(LoginProbe::submission(auth, to.tls, helo.clone()))
                .await
        }
        (Protocol::Imap, None) => dialogue.run(greeting(Greeting::Imap)).await,
        (Protocol::Pop3, None) => dialogue.run(greeting(Greeting::Pop3)).await,
        (Protocol::Submission, None) => dialogue.run(greeting(Greeting::Submission)).await,
        (Protocol::Smtp, _) => {
            let kind = match server.endpoints.delivery_protocol {
                DeliveryProtocol::Lmtp => Greeting::Lmtp,
                DeliveryProtocol::Smtp => Greeting::Smtp,
            };
            let mut probe = greeting(kind);
            let verdict = dialogue.run_with(&mut probe).await;
            // What the server announces decides what the inbound listeners offer.
            if let Some(offers) = probe.offers() {
                context
                    .resolver
                    .health()
                    .learn_delivery_offers(&server.name, offers);
            }
            verdict
        }
        (Protocol::Http, _) => {
            dialogue
                .run(HttpProbe::new(&to.authority, &settings.http_path))
                .await
        }
        (Protocol::Sip, _) => Err("SIP is not probed".to_owned()),
    }
}

/// A probe's connection, once made.
struct Dialogue<'a> {
    conn: &'a mut Conn,
    role: TlsRole<'a>,
    deadline: Instant,
    timeout: Duration,
}

impl Dialogue<'_> {
    /// Pumps `probe` to its verdict by the deadline.
    async fn run<P: Probe>(self, mut probe: P) -> Result<(), String> {
        self.run_with(&mut probe).await
    }

    /// Pumps `probe` to its verdict by the deadline, leaving it to be asked what it read.
    async fn run_with<P: Probe>(self, probe: &mut P) -> Result<(), String> {
        let mut pace = Until(self.deadline);
        loop {
            match pump(probe, self.conn, self.role, &mut pace).await {
                Ok(ProbeEvent::Healthy) => return Ok(()),
                Ok(ProbeEvent::Unhealthy(why)) => return Err(why),
                Err(Interrupt::Closed | Interrupt::Failed(ConnEnd::Closed)) => probe.eof(),
                Err(Interrupt::TimedOut | Interrupt::Failed(ConnEnd::WriteTimeout)) => {
                    return Err(format!("no answer within {:?}", self.timeout));
                }
                Err(Interrupt::Failed(end)) => return Err(end.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests;
