//! What a node counts, for Prometheus (`/metrics` on the admin listener).
//!
//! One [`Metrics`] per node, shared by every driver through the [`crate::admission::Gateway`].
//! Label values are few and bounded (protocols, server names from the configuration, fixed
//! result words), never user names or addresses.

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
        let mut registry = Registry::with_prefix("mailfront");
        let sessions = Family::<SessionLabels, Gauge>::default();
        registry.register("sessions", "Live proxied sessions", sessions.clone());
        let logins = Family::<ResultLabels, Counter>::default();
        registry.register("logins", "Login attempts by outcome", logins.clone());
        let directory_latency = latency();
        registry.register(
            "directory_latency_seconds",
            "Directory password check latency",
            directory_latency.clone(),
        );
        let location_latency = latency();
        registry.register(
            "location_latency_seconds",
            "Location lookup latency",
            location_latency.clone(),
        );
        let backend_login_latency =
            Family::<ProtocolLabel, Histogram, fn() -> Histogram>::new_with_constructor(latency);
        registry.register(
            "backend_login_latency_seconds",
            "Backend connect and login latency",
            backend_login_latency.clone(),
        );
        let bytes = Family::<BytesLabels, Counter>::default();
        registry.register(
            "relayed_bytes",
            "Bytes relayed between clients and backends",
            bytes.clone(),
        );
        let failovers = Family::<DatabaseLabel, Counter>::default();
        registry.register(
            "failover_sessions",
            "Sessions closed because their database moved",
            failovers.clone(),
        );
        let throttled = Family::<ResultLabels, Counter>::default();
        registry.register(
            "throttled_logins",
            "Logins delayed or blocked by throttling",
            throttled.clone(),
        );
        let refused_connections = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "refused_connections",
            "Connections refused before the protocol began",
            refused_connections.clone(),
        );
        let config_reloads = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads by outcome",
            config_reloads.clone(),
        );
        let messages = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "transport_messages",
            "Messages through the front-end transport by outcome",
            messages.clone(),
        );
        let http_requests = Family::<ResultLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by status class",
            http_requests.clone(),
        );
        let location_stale = Gauge::default();
        registry.register(
            "location_stale",
            "1 while the location map is stale",
            location_stale.clone(),
        );
        let location_loaded = Gauge::default();
        registry.register(
            "location_loaded",
            "1 while a location map is loaded",
            location_loaded.clone(),
        );
        let draining = Gauge::default();
        registry.register("draining", "1 while the node is draining", draining.clone());
        let sip_dropped = Counter::default();
        registry.register(
            "sip_dropped_datagrams",
            "SIP datagrams dropped for size",
            sip_dropped.clone(),
        );
        Self {
            registry,
            sessions,
            logins,
            directory_latency,
            location_latency,
            backend_login_latency,
            bytes,
            failovers,
            throttled,
            refused_connections,
            config_reloads,
            messages,
            http_requests,
            location_stale,
            location_loaded,
            draining,
            sip_dropped,
        }
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
        let text = metrics.encode();
        for name in [
            "mailfront_sessions{protocol=\"imap\",backend=\"mbx1\"} 1",
            "mailfront_logins_total{protocol=\"imap\",result=\"ok\"} 1",
            "mailfront_relayed_bytes_total{protocol=\"imap\",direction=\"backend_to_client\"} 20",
            "mailfront_directory_latency_seconds_count 1",
            "mailfront_location_stale 0",
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
}
