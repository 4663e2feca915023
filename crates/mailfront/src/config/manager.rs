//! `[health]` (probes of the mailbox servers) and `[active_manager]` (automatic failover).

use std::path::PathBuf;
use std::time::Duration;

use mailfront_model::Protocol;
use serde::Deserialize;

/// How endpoints are probed.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProbeModeConfig {
    /// A TCP connection (and the implicit-TLS handshake) is enough.
    Connect,
    /// The service's greeting (`* OK`, `+OK`, `220`; LMTP `LHLO`; HTTP GET of `http_path`).
    #[default]
    Greeting,
    /// A real login (IMAP, POP3, submission) with `login_user`.
    Login,
}

/// `[health]`: every node probes every mailbox server on each of its endpoints. Without this
/// table nothing is probed, and only a delivery failure makes a server skipped for a while.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Time between two probes of one endpoint.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Longest a probe may take (connect, TLS, dialogue); slower is a failure.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failures that take an up endpoint down (HAProxy's `fall`).
    pub fall: u32,
    /// Consecutive successes that bring a down endpoint up (HAProxy's `rise`).
    pub rise: u32,
    /// What a probe does.
    pub probe: ProbeModeConfig,
    /// The path a probe of a server's HTTP service gets (relative to its base URL).
    pub http_path: String,
    /// The account a login probe logs in as (with the server's master user when it has one).
    pub login_user: Option<String>,
    /// The account's password, for servers without a master user.
    pub login_password_file: Option<PathBuf>,
}

impl Default for HealthConfig {
    /// HAProxy's defaults, shorter: every 2 s, 1 s to answer, 3 failures down, 2 successes up.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            fall: 3,
            rise: 2,
            probe: ProbeModeConfig::Greeting,
            http_path: "/".to_owned(),
            login_user: None,
            login_password_file: None,
        }
    }
}

impl HealthConfig {
    /// Checks what the types alone do not.
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.interval < Duration::from_millis(100) {
            return Err("health.interval: must be at least 100ms".to_owned());
        }
        if self.timeout.is_zero() || self.timeout > self.interval {
            return Err(format!(
                "health.timeout: must be more than 0 and at most health.interval ({:?})",
                self.interval
            ));
        }
        if self.fall == 0 || self.rise == 0 {
            return Err("health.fall: must be at least 1 (health.rise too)".to_owned());
        }
        if !self.http_path.starts_with('/') {
            return Err("health.http_path: must start with `/`".to_owned());
        }
        if self.probe == ProbeModeConfig::Login && self.login_user.is_none() {
            return Err("health.login_user: required with probe = \"login\"".to_owned());
        }
        Ok(())
    }
}

/// `[active_manager]`: this array moves a database by itself when its active server is down
/// (needs `[health]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActiveManagerConfig {
    /// Whether automatic failover runs (the operator's commands work either way).
    pub enabled: bool,
    /// The leader's lease: how long an array may go without a leader after its leader died
    /// (whole seconds, at least 2).
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// A database moved automatically is not moved automatically again within this time.
    #[serde(with = "humantime_serde")]
    pub hold_down: Duration,
    /// The endpoints whose failure moves a server's databases away (default: the mail
    /// protocols, `imap`, `pop3`, `submission` and `smtp` — the delivery endpoint). A server
    /// whose HTTP service alone fails keeps its databases unless `http` is listed.
    pub failover_on: Vec<Protocol>,
    /// The etcd election key.
    pub election_key: String,
    /// The etcd prefix of the servers' records (maintenance).
    pub servers_prefix: String,
    /// The etcd prefix of the nodes' presence keys (placement by group).
    pub nodes_prefix: String,
    /// The etcd prefix of the nodes' acknowledgements of group moves.
    pub acks_prefix: String,
}

impl Default for ActiveManagerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            lease_ttl: Duration::from_secs(5),
            hold_down: Duration::from_secs(600),
            failover_on: vec![
                Protocol::Imap,
                Protocol::Pop3,
                Protocol::Submission,
                Protocol::Smtp,
            ],
            election_key: "/mailfront/leader".to_owned(),
            servers_prefix: "/mailfront/servers/".to_owned(),
            nodes_prefix: "/mailfront/nodes/".to_owned(),
            acks_prefix: "/mailfront/acks/".to_owned(),
        }
    }
}

impl ActiveManagerConfig {
    /// Checks what the types alone do not.
    pub(super) fn validate(&self, probed: bool) -> Result<(), String> {
        if self.enabled && !probed {
            return Err(
                "active_manager: automatic failover needs [health] (probes tell it which \
                 servers are down); add [health] or set active_manager.enabled = false"
                    .to_owned(),
            );
        }
        if self.lease_ttl < Duration::from_secs(2) {
            return Err("active_manager.lease_ttl: must be at least 2s".to_owned());
        }
        if self.failover_on.is_empty() {
            return Err(
                "active_manager.failover_on: name at least one endpoint (imap, pop3, submission, \
                 smtp, http), or set active_manager.enabled = false"
                    .to_owned(),
            );
        }
        if self.failover_on.contains(&Protocol::Sip) {
            return Err(
                "active_manager.failover_on: sip is never probed (SIP is redirected, not proxied)"
                    .to_owned(),
            );
        }
        if self.election_key.is_empty() || !self.election_key.starts_with('/') {
            return Err("active_manager.election_key: must start with `/`".to_owned());
        }
        for (key, prefix) in [
            ("servers_prefix", &self.servers_prefix),
            ("nodes_prefix", &self.nodes_prefix),
            ("acks_prefix", &self.acks_prefix),
        ] {
            if !prefix.starts_with('/') || !prefix.ends_with('/') {
                return Err(format!("active_manager.{key}: must start and end with `/`"));
            }
        }
        Ok(())
    }
}
