//! What a node counts, for Prometheus (`/metrics` on the admin listener).
//!
//! One [`Metrics`] per node, shared by every session, request and listener of the node.
//! Label values are few and bounded (protocols, server names from the configuration, fixed
//! result words), never user names or addresses.
//!
//! Every series a node can know of at start is there from the first scrape, at zero
//! ([`Metrics::declare`]): a dashboard of a fresh node shows zeros rather than "no data", and an
//! `absent()` alert does not fire because nobody has logged in yet.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels: a protocol.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    /// `imap`, `pop3`, `submission`, `smtp`, `http`, `sip`.
    pub protocol: String,
}

/// Labels: a protocol and a backend server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    /// The protocol.
    pub protocol: String,
    /// The backend server.
    pub backend: String,
}

/// Labels: a protocol and an outcome word.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// The protocol.
    pub protocol: String,
    /// The outcome (`ok`, `auth_failed`, `temporary`, …).
    pub result: String,
}

/// Labels: an outcome word alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// The outcome (`ok`, `rejected`).
    pub result: String,
}

/// Labels: a protocol and a direction of bytes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    /// The protocol.
    pub protocol: String,
    /// `client_to_backend` or `backend_to_client`.
    pub direction: String,
}

/// Labels: a listener and a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// The listener's name.
    pub listener: String,
    /// Why.
    pub reason: String,
}

/// Labels: a database.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DatabaseLabel {
    /// The database.
    pub database: String,
}

/// Labels: a mailbox server and one of its endpoints, as the health probes name them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// The mailbox server.
    pub server: String,
    /// The endpoint: `imap`, `pop3`, `submission`, `smtp` (the delivery endpoint, LMTP or
    /// SMTP) or `http`.
    pub protocol: String,
}

/// The outcomes of a login (`mailfront_logins_total{result}`).
pub const LOGIN_RESULTS: [&str; 6] = [
    "ok",
    "referred",
    "auth_failed",
    "authz_refused",
    "disabled",
    "temporary",
];
/// What throttling did to a login (`mailfront_throttled_logins_total{result}`).
pub const THROTTLE_RESULTS: [&str; 2] = ["delayed", "blocked"];
/// Why a connection was refused at accept (`mailfront_refused_connections_total{reason}`).
pub const REFUSAL_REASONS: [&str; 5] = [
    "untrusted_proxy",
    "proxy_header",
    "listener_full",
    "client_limit",
    "node_full",
];
/// What became of a message on a transport listener (`mailfront_transport_messages_total`).
pub const MESSAGE_RESULTS: [&str; 3] = ["delivered", "4xx", "5xx"];
/// HTTP status classes (`mailfront_http_requests_total{result}`).
pub const HTTP_RESULTS: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];
/// Reload outcomes (`mailfront_config_reloads_total{result}`).
pub const RELOAD_RESULTS: [&str; 2] = ["ok", "rejected"];
/// Kinds of database moves (`mailfront_database_moves_total{kind}`).
pub const MOVE_KINDS: [&str; 6] = [
    "failover",
    "switchover",
    "evacuation",
    "rebalance",
    "drain",
    "pin",
];
/// Directions of relayed bytes (`mailfront_relayed_bytes_total{direction}`).
pub const DIRECTIONS: [&str; 2] = ["client_to_backend", "backend_to_client"];

/// The label values a node knows when it starts, for [`Metrics::declare`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Known {
    /// The protocols of its proxied-session listeners (`imap`, `pop3`, `submission`).
    pub session_protocols: Vec<String>,
    /// The protocols whose logins are throttled (the session protocols, and `http`).
    pub login_protocols: Vec<String>,
    /// The mailbox servers of the configuration.
    pub servers: Vec<String>,
    /// Every listener's name.
    pub listeners: Vec<String>,
    /// The names of the SMTP transport listeners (inbound and outbound).
    pub transfer_listeners: Vec<String>,
    /// Whether the node serves HTTPS.
    pub http: bool,
    /// The databases of the configuration.
    pub databases: Vec<String>,
}

/// Registers `metric` under `name` and hands it back (a metric is a shared handle: the clone
/// registered and the one returned count together).
fn add<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    registry.register(name, help, metric.clone());
    metric
}

fn latency() -> Histogram {
    // 100 µs … ~6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// The node's metrics. Cheap to update from any task.
pub struct Metrics {
    registry: Registry,
    /// Live proxied sessions by protocol and backend.
    pub sessions: Family<SessionLabels, Gauge>,
    /// Login attempts by protocol and outcome.
    pub logins: Family<ResultLabels, Counter>,
    /// Directory call latency (password checks), seconds.
    pub directory_latency: Histogram,
    /// Location lookup latency, seconds.
    pub location_latency: Histogram,
    /// Backend connect-and-login latency by protocol, seconds.
    pub backend_login_latency: Family<ProtocolLabel, Histogram, fn() -> Histogram>,
    /// Bytes relayed by protocol and direction.
    pub bytes: Family<BytesLabels, Counter>,
    /// Sessions closed because their database moved, by database.
    pub failovers: Family<DatabaseLabel, Counter>,
    /// Logins delayed or refused by throttling, by protocol and `delayed`/`blocked`.
    pub throttled: Family<ResultLabels, Counter>,
    /// Connections refused before any protocol exchange, by listener and reason.
    pub refused_connections: Family<ListenerLabels, Counter>,
    /// Configuration reloads by outcome (`ok`, `rejected`).
    pub config_reloads: Family<OutcomeLabel, Counter>,
    /// Messages through the front-end transport by listener and outcome.
    pub messages: Family<ListenerLabels, Counter>,
    /// HTTP requests by status class (`2xx`, …).
    pub http_requests: Family<ResultLabels, Counter>,
    /// 1 while the location map is stale (the store is unreachable), 0 otherwise.
    pub location_stale: Gauge,
    /// 1 while a location map is loaded.
    pub location_loaded: Gauge,
    /// 1 while the node is draining.
    pub draining: Gauge,
    /// SIP UDP datagrams dropped for size.
    pub sip_dropped: Counter,
    /// 1 while this node leads the array as its Active Manager.
    pub leader: Gauge,
    /// Databases moved by this node, by kind (`failover`, `switchover`, `evacuation`).
    pub database_moves: Family<KindLabel, Counter>,
    /// 1 while the health probes say a server's endpoint is up, 0 while down (one series per
    /// probed endpoint from the start, so a scrape sees every server).
    pub backend_up: Family<BackendLabels, Gauge>,
    /// How long each health probe took (connect, TLS, dialogue), failed ones included, seconds.
    pub probe_latency: Family<BackendLabels, Histogram, fn() -> Histogram>,
}

/// Labels: a kind of event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The kind.
    pub kind: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `mailfront_` prefix.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("mailfront");
        let backend_login_latency =
            Family::<ProtocolLabel, Histogram, fn() -> Histogram>::new_with_constructor(latency);
        let probe_latency =
            Family::<BackendLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency);
        Self {
            sessions: add(
                &mut r,
                "sessions",
                "Live proxied sessions",
                Family::default(),
            ),
            logins: add(
                &mut r,
                "logins",
                "Login attempts by outcome",
                Family::default(),
            ),
            directory_latency: add(
                &mut r,
                "directory_latency_seconds",
                "Directory password check latency",
                latency(),
            ),
            location_latency: add(
                &mut r,
                "location_latency_seconds",
                "Location lookup latency",
                latency(),
            ),
            backend_login_latency: add(
                &mut r,
                "backend_login_latency_seconds",
                "Backend connect and login latency",
                backend_login_latency,
            ),
            bytes: add(
                &mut r,
                "relayed_bytes",
                "Bytes relayed between clients and backends",
                Family::default(),
            ),
            failovers: add(
                &mut r,
                "failover_sessions",
                "Sessions closed because their database moved",
                Family::default(),
            ),
            throttled: add(
                &mut r,
                "throttled_logins",
                "Logins delayed or blocked by throttling",
                Family::default(),
            ),
            refused_connections: add(
                &mut r,
                "refused_connections",
                "Connections refused before the protocol began",
                Family::default(),
            ),
            config_reloads: add(
                &mut r,
                "config_reloads",
                "Configuration reloads by outcome",
                Family::default(),
            ),
            messages: add(
                &mut r,
                "transport_messages",
                "Messages through the front-end transport by outcome",
                Family::default(),
            ),
            http_requests: add(
                &mut r,
                "http_requests",
                "HTTP requests by status class",
                Family::default(),
            ),
            location_stale: add(
                &mut r,
                "location_stale",
                "1 while the location map is stale",
                Gauge::default(),
            ),
            location_loaded: add(
                &mut r,
                "location_loaded",
                "1 while a location map is loaded",
                Gauge::default(),
            ),
            draining: add(
                &mut r,
                "draining",
                "1 while the node is draining",
                Gauge::default(),
            ),
            sip_dropped: add(
                &mut r,
                "sip_dropped_datagrams",
                "SIP datagrams dropped for size",
                Counter::default(),
            ),
            leader: add(
                &mut r,
                "active_manager_leader",
                "1 while this node leads the array as its Active Manager",
                Gauge::default(),
            ),
            database_moves: add(
                &mut r,
                "database_moves",
                "Databases moved by this node, by kind",
                Family::default(),
            ),
            backend_up: add(
                &mut r,
                "backend_up",
                "1 while health probes say the server's endpoint is up",
                Family::default(),
            ),
            probe_latency: add(
                &mut r,
                "probe_seconds",
                "Health probe duration, failed probes included",
                probe_latency,
            ),
            registry: r,
        }
    }

    /// Creates every series `known` implies, at zero, so that the first scrape shows them all.
    /// (`get_or_create` creates the series; the read guard it returns is not needed.)
    pub fn declare(&self, known: &Known) {
        let pairs = |left: &[String], right: &[&str]| {
            left.iter()
                .flat_map(|l| right.iter().map(move |r| (l.clone(), (*r).to_owned())))
                .collect::<Vec<_>>()
        };
        for (protocol, result) in pairs(&known.session_protocols, &LOGIN_RESULTS) {
            let _ = self
                .logins
                .get_or_create(&ResultLabels { protocol, result });
        }
        for protocol in &known.session_protocols {
            let _ = self.backend_login_latency.get_or_create(&ProtocolLabel {
                protocol: protocol.clone(),
            });
            for backend in &known.servers {
                let labels = SessionLabels {
                    protocol: protocol.clone(),
                    backend: backend.clone(),
                };
                let _ = self.sessions.get_or_create(&labels);
            }
        }
        for (protocol, direction) in pairs(&known.session_protocols, &DIRECTIONS) {
            let _ = self.bytes.get_or_create(&BytesLabels {
                protocol,
                direction,
            });
        }
        for (protocol, result) in pairs(&known.login_protocols, &THROTTLE_RESULTS) {
            let _ = self
                .throttled
                .get_or_create(&ResultLabels { protocol, result });
        }
        for (listener, reason) in pairs(&known.listeners, &REFUSAL_REASONS) {
            let _ = self
                .refused_connections
                .get_or_create(&ListenerLabels { listener, reason });
        }
        for (listener, reason) in pairs(&known.transfer_listeners, &MESSAGE_RESULTS) {
            let _ = self
                .messages
                .get_or_create(&ListenerLabels { listener, reason });
        }
        if known.http {
            for result in HTTP_RESULTS {
                let _ = self.http_requests.get_or_create(&ResultLabels {
                    protocol: "http".to_owned(),
                    result: result.to_owned(),
                });
            }
        }
        for result in RELOAD_RESULTS {
            let _ = self.config_reloads.get_or_create(&OutcomeLabel {
                result: result.to_owned(),
            });
        }
        for kind in MOVE_KINDS {
            let _ = self.database_moves.get_or_create(&KindLabel {
                kind: kind.to_owned(),
            });
        }
        for database in &known.databases {
            let _ = self.failovers.get_or_create(&DatabaseLabel {
                database: database.clone(),
            });
        }
    }

    /// Counts a database move of `kind` written by this node.
    pub fn moved(&self, kind: &str) {
        self.database_moves
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// The text exposition format (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Counts a login attempt.
    pub fn login(&self, protocol: &str, result: &str) {
        self.logins
            .get_or_create(&ResultLabels {
                protocol: protocol.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts relayed bytes.
    pub fn relayed(&self, protocol: &str, client_to_backend: u64, backend_to_client: u64) {
        let labels = |direction: &str| BytesLabels {
            protocol: protocol.to_owned(),
            direction: direction.to_owned(),
        };
        self.bytes
            .get_or_create(&labels("client_to_backend"))
            .inc_by(client_to_backend);
        self.bytes
            .get_or_create(&labels("backend_to_client"))
            .inc_by(backend_to_client);
    }

    /// Counts a connection refused at accept.
    pub fn refused(&self, listener: &str, reason: &str) {
        self.refused_connections
            .get_or_create(&ListenerLabels {
                listener: listener.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// A live session gauge for `protocol` at `backend`; decremented when the guard drops.
    pub fn session(&self, protocol: &str, backend: &str) -> SessionGauge {
        let gauge = self
            .sessions
            .get_or_create(&SessionLabels {
                protocol: protocol.to_owned(),
                backend: backend.to_owned(),
            })
            .clone();
        gauge.inc();
        SessionGauge(gauge)
    }
}

/// Keeps a session counted in [`Metrics::sessions`] while alive.
#[derive(Debug)]
pub struct SessionGauge(Gauge);

impl Drop for SessionGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Seconds as the histograms take them.
pub fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_family() {
        let metrics = Metrics::new();
        metrics.login("imap", "ok");
        metrics.relayed("imap", 10, 20);
        let session = metrics.session("imap", "mbx1");
        metrics.directory_latency.observe(0.002);
        let backend = BackendLabels {
            server: "mbx1".to_owned(),
            protocol: "imap".to_owned(),
        };
        metrics.backend_up.get_or_create(&backend).set(1);
        metrics.probe_latency.get_or_create(&backend).observe(0.01);
        let text = metrics.encode();
        for name in [
            "mailfront_sessions{protocol=\"imap\",backend=\"mbx1\"} 1",
            "mailfront_logins_total{protocol=\"imap\",result=\"ok\"} 1",
            "mailfront_relayed_bytes_total{protocol=\"imap\",direction=\"backend_to_client\"} 20",
            "mailfront_directory_latency_seconds_count 1",
            "mailfront_location_stale 0",
            "mailfront_backend_up{server=\"mbx1\",protocol=\"imap\"} 1",
            "mailfront_probe_seconds_count{server=\"mbx1\",protocol=\"imap\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
        drop(session);
        assert!(
            metrics
                .encode()
                .contains("mailfront_sessions{protocol=\"imap\",backend=\"mbx1\"} 0")
        );
    }

    #[test]
    fn a_fresh_node_shows_every_series_it_knows_of_at_zero() {
        let metrics = Metrics::new();
        let known = Known {
            session_protocols: vec!["imap".to_owned()],
            login_protocols: vec!["imap".to_owned(), "http".to_owned()],
            servers: vec!["mbx1".to_owned()],
            listeners: vec!["imaps".to_owned()],
            transfer_listeners: vec!["mx".to_owned()],
            http: true,
            databases: vec!["DB01".to_owned()],
        };
        metrics.declare(&known);
        let text = metrics.encode();
        for line in [
            "mailfront_sessions{protocol=\"imap\",backend=\"mbx1\"} 0",
            "mailfront_logins_total{protocol=\"imap\",result=\"temporary\"} 0",
            "mailfront_backend_login_latency_seconds_count{protocol=\"imap\"} 0",
            "mailfront_relayed_bytes_total{protocol=\"imap\",direction=\"client_to_backend\"} 0",
            "mailfront_throttled_logins_total{protocol=\"http\",result=\"blocked\"} 0",
            "mailfront_refused_connections_total{listener=\"imaps\",reason=\"node_full\"} 0",
            "mailfront_transport_messages_total{listener=\"mx\",reason=\"5xx\"} 0",
            "mailfront_http_requests_total{protocol=\"http\",result=\"2xx\"} 0",
            "mailfront_config_reloads_total{result=\"rejected\"} 0",
            "mailfront_database_moves_total{kind=\"failover\"} 0",
            "mailfront_failover_sessions_total{database=\"DB01\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        // Nothing was counted for a protocol the node does not serve.
        assert!(!text.contains("protocol=\"pop3\""));
    }
}
