//! `[limits]`, `[timeouts]` and `[reload]`: bounds on what a client may send and on how long
//! things may take.

use std::time::Duration;

use serde::Deserialize;

use super::Config;

/// `[limits]`: bounds on pre-login input.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Longest command line in bytes.
    pub max_line_length: usize,
    /// Largest literal or SASL response in bytes.
    pub max_literal_size: u32,
    /// Commands accepted before login.
    pub max_commands_before_auth: u32,
    /// Failed logins before the connection is closed.
    pub max_auth_failures: u32,
    /// Most concurrent connections per listener.
    pub max_connections: usize,
    /// Most concurrent connections from one client address (all listeners together).
    pub max_connections_per_client: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = mailfront_protocol::Limits::default();
        Self {
            max_line_length: d.max_line_length,
            max_literal_size: d.max_literal_size,
            max_commands_before_auth: d.max_commands_before_auth,
            max_auth_failures: d.max_auth_failures,
            max_connections: 20_000,
            max_connections_per_client: 100,
        }
    }
}

/// `[timeouts]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// Longest client silence before login.
    #[serde(with = "humantime_serde")]
    pub pre_auth_idle: Duration,
    /// Longest time from connect to a completed login.
    #[serde(with = "humantime_serde")]
    pub login: Duration,
    /// Time every refused login takes.
    #[serde(with = "humantime_serde")]
    pub auth_failure_delay: Duration,
    /// Longest directory answer.
    #[serde(with = "humantime_serde")]
    pub directory: Duration,
    /// Longest backend TCP connect (and TLS handshake).
    #[serde(with = "humantime_serde")]
    pub backend_connect: Duration,
    /// Longest backend login dialogue.
    #[serde(with = "humantime_serde")]
    pub backend_login: Duration,
    /// Longest SMTP client silence on a transport listener (RFC 5321 §4.5.3.2 suggests 5 min).
    #[serde(with = "humantime_serde")]
    pub smtp_idle: Duration,
    /// Longest wait for a delivery server's reply or write.
    #[serde(with = "humantime_serde")]
    pub delivery: Duration,
    /// Longest silence (both ways) of a proxied session before it is closed; longer than
    /// IMAP IDLE's 29-minute refresh (RFC 2177).
    #[serde(with = "humantime_serde")]
    pub post_auth_idle: Duration,
    /// On shutdown, how long live sessions may go on before they are closed.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            pre_auth_idle: Duration::from_secs(60),
            login: Duration::from_secs(120),
            auth_failure_delay: Duration::from_secs(2),
            directory: Duration::from_secs(5),
            backend_connect: Duration::from_secs(5),
            backend_login: Duration::from_secs(10),
            smtp_idle: Duration::from_secs(300),
            delivery: Duration::from_secs(60),
            post_auth_idle: Duration::from_secs(3600),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// `[reload]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// How often the directory and location files are checked for changes.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(250),
        }
    }
}

/// Checks `[limits]` and the listeners' own `max_connections`.
pub(super) fn validate(config: &Config) -> Result<(), String> {
    let limits = &config.limits;
    if limits.max_connections == 0 || limits.max_connections_per_client == 0 {
        return Err(
            "limits.max_connections: must be at least 1 (max_connections_per_client too)".into(),
        );
    }
    if let Some((i, _)) = config
        .listener
        .iter()
        .enumerate()
        .find(|(_, l)| l.max_connections == Some(0))
    {
        return Err(format!("listener[{i}].max_connections: must be at least 1"));
    }
    if limits.max_line_length < 512 {
        return Err("limits.max_line_length: must be at least 512".into());
    }
    if limits.max_literal_size == 0 {
        return Err("limits.max_literal_size: must be at least 1".into());
    }
    if limits.max_commands_before_auth == 0 {
        return Err("limits.max_commands_before_auth: must be at least 1".into());
    }
    if limits.max_auth_failures == 0 {
        return Err("limits.max_auth_failures: must be at least 1".into());
    }
    Ok(())
}

/// Checks that `[timeouts]` (but the failure delay and the shutdown grace, which may be zero)
/// and `reload.interval` are longer than zero.
pub(super) fn validate_timeouts(config: &Config) -> Result<(), String> {
    let t = &config.timeouts;
    for (key, value) in [
        ("timeouts.pre_auth_idle", t.pre_auth_idle),
        ("timeouts.login", t.login),
        ("timeouts.directory", t.directory),
        ("timeouts.backend_connect", t.backend_connect),
        ("timeouts.backend_login", t.backend_login),
        ("timeouts.smtp_idle", t.smtp_idle),
        ("timeouts.delivery", t.delivery),
        ("timeouts.post_auth_idle", t.post_auth_idle),
        ("reload.interval", config.reload.interval),
    ] {
        if value.is_zero() {
            return Err(format!("{key}: must be greater than zero"));
        }
    }
    Ok(())
}
