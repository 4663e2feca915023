//! The configuration file: one typed tree, validated at load. Every error names its key.
//!
//! Relative paths in the file are resolved against the file's own directory, so a
//! configuration and its companions (users, location map, certificates) travel together.
//!
//! [`Config`] is the whole file, and this module reads it ([`Config::load`]), resolves its
//! paths and validates it section by section. Each section's types, defaults and checks live
//! in a module of their own (all re-exported here):
//!
//! - `node`: `[node]` and `[[site]]`;
//! - `servers`: `[[server]]` (endpoints, backend login) and `[[database]]`;
//! - `directory`, `location`: where users and database locations come from;
//! - `tls`: `[tls]` and `[backend_tls]`;
//! - `listeners`: `[[listener]]` and `[proxy_protocol]`;
//! - `transport`: `[transport]` and `[outbound]`;
//! - `sip`: `[sip]`, and the voice-mail URIs of servers;
//! - `limits`: `[limits]`, `[timeouts]` and `[reload]`;
//! - `throttle`, `admin`, `log`: `[throttle]`, `[admin]` and `[log]`;
//! - `manager`: `[health]` (probes) and `[active_manager]` (automatic failover);
//! - `placement`: `[placement]` (users placed by group on shared-storage fleets);
//! - `oauth`: `[oauth]` (access tokens from the OpenID provider).

use std::path::{Path, PathBuf};

use mailfront_model::Secret;
use serde::Deserialize;

mod admin;
mod directory;
mod limits;
mod listeners;
mod location;
mod log;
mod manager;
mod node;
mod oauth;
mod placement;
mod servers;
mod sip;
mod throttle;
mod tls;
mod transport;

pub use admin::AdminConfig;
pub use directory::{DirectoryConfig, LdapAttributes, LdapConfig};
pub use limits::{LimitsConfig, ReloadConfig, TimeoutsConfig};
pub use listeners::{
    ListenerConfig, ListenerProtocol, ListenerTls, ProxyProtocolConfig, SERVED_PROTOCOLS,
};
pub use location::{EtcdConfig, LocationConfig};
pub use log::{LogConfig, LogFormat};
pub use manager::{ActiveManagerConfig, HealthConfig, ProbeModeConfig};
pub use node::{MailRedirect, NodeConfig, SiteConfig};
pub use oauth::{OAuthConfig, SessionMax, UserClaimConfig};
pub use placement::{PlacementConfig, PlacementMode};
pub use servers::{
    DatabaseConfig, DeliveryEndpointConfig, DeliveryProtocolConfig, EndpointConfig, EndpointTls,
    LoginConfig, LoginMethodConfig, MechanismConfig, ServerConfig,
};
pub use sip::SipConfig;
pub use throttle::ThrottleConfig;
pub use tls::{BackendTlsConfig, SniCertificateConfig, TlsConfig, TlsVersion};
pub use transport::{OutboundConfig, RelayConfig, TransportConfig};

/// A configuration that cannot be used. The message starts with the offending key.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// What is wrong, starting with the key (`server[1].imap.port: …`).
    pub message: String,
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node.
    pub node: NodeConfig,
    /// Sites. Optional: when absent, every site named by the node or a server exists implicitly.
    #[serde(default)]
    pub site: Vec<SiteConfig>,
    /// Mailbox servers.
    pub server: Vec<ServerConfig>,
    /// Mailbox databases and the servers holding their copies (optional; checks the location map).
    #[serde(default)]
    pub database: Vec<DatabaseConfig>,
    /// Where users come from.
    pub directory: DirectoryConfig,
    /// Where database locations come from.
    pub location: LocationConfig,
    /// The certificate clients see.
    pub tls: Option<TlsConfig>,
    /// Trust towards backends that use TLS.
    pub backend_tls: Option<BackendTlsConfig>,
    /// Listeners.
    pub listener: Vec<ListenerConfig>,
    /// Pre-login bounds.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The front-end transport.
    #[serde(default)]
    pub transport: TransportConfig,
    /// Outbound mail from the mailbox servers.
    pub outbound: Option<OutboundConfig>,
    /// SIP listeners: limits and timers.
    #[serde(default)]
    pub sip: SipConfig,
    /// The HTTPS front door (services, forms login, autodiscover).
    pub http: Option<mailfront_http::config::HttpConfig>,
    /// Time limits.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// How often watched files are checked for changes.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Login throttling.
    #[serde(default)]
    pub throttle: ThrottleConfig,
    /// Who may send PROXY protocol headers.
    #[serde(default)]
    pub proxy_protocol: ProxyProtocolConfig,
    /// The admin listener (health, metrics, sessions, maintenance).
    pub admin: Option<AdminConfig>,
    /// Health probes of the mailbox servers.
    pub health: Option<HealthConfig>,
    /// Automatic failover (the Active Manager).
    pub active_manager: Option<ActiveManagerConfig>,
    /// Placement by group, for shared-storage fleets.
    pub placement: Option<PlacementConfig>,
    /// OAuth 2.0 access tokens from the organisation's OpenID provider.
    pub oauth: Option<OAuthConfig>,
}

/// Refuses an empty (or blank) `value` for `key`.
fn nonempty(key: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        Err(format!("{key}: must not be empty"))
    } else {
        Ok(())
    }
}

impl Config {
    /// Reads, parses and validates a configuration file. Relative paths inside are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let error = |message: String| ConfigError {
            file: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read: {e}")))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse_str(&text, base).map_err(error)
    }

    /// Parses and validates the text of a configuration, resolving relative paths inside against
    /// `base_dir`: everything [`Config::load`] does but reading the file. Reads no file itself
    /// (the files the configuration names are read when they are used).
    pub fn parse_str(text: &str, base_dir: &Path) -> Result<Config, String> {
        let mut config = Config::parse(text)?;
        config.resolve_paths(base_dir);
        config.validate()?;
        Ok(config)
    }

    /// Parses the text of a configuration (no validation, no path resolution).
    pub fn parse(text: &str) -> Result<Config, String> {
        let deserializer = toml::Deserializer::new(text);
        let mut config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.message().to_owned();
            let location = inner
                .span()
                .map(|span| {
                    let line = text
                        .get(..span.start)
                        .map_or(0, |t| t.lines().count().max(1));
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            if path == "." {
                format!("{message}{location}")
            } else {
                format!("{path}: {message}{location}")
            }
        })?;
        config.default_sip_tls(text);
        Ok(config)
    }

    /// SIP has no STARTTLS, so a SIP listener without a `tls` key gets `none`, not the
    /// STARTTLS default of the mail protocols. (serde cannot tell "absent" from "starttls"
    /// after the fact, so the text is looked at again.)
    fn default_sip_tls(&mut self, text: &str) {
        let Ok(table) = text.parse::<toml::Table>() else {
            return;
        };
        let raw = table
            .get("listener")
            .and_then(toml::Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (listener, raw) in self.listener.iter_mut().zip(raw) {
            if listener.protocol == ListenerProtocol::Sip && raw.get("tls").is_none() {
                listener.tls = ListenerTls::None;
            }
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        match &mut self.directory {
            DirectoryConfig::File { path } => resolve(path),
            DirectoryConfig::Ldap(ldap) => {
                if let Some(file) = &mut ldap.ca_file {
                    resolve(file);
                }
                if let Some(file) = &mut ldap.service_password_file {
                    resolve(file);
                }
            }
        }
        match &mut self.location {
            LocationConfig::File { path } => resolve(path),
            LocationConfig::Etcd(etcd) => {
                if let Some(file) = &mut etcd.password_file {
                    resolve(file);
                }
                if let Some(file) = &mut etcd.ca_file {
                    resolve(file);
                }
            }
        }
        if let Some(tls) = &mut self.tls {
            resolve(&mut tls.certificate);
            resolve(&mut tls.key);
            if let Some(file) = &mut tls.ocsp {
                resolve(file);
            }
            for entry in &mut tls.sni {
                resolve(&mut entry.certificate);
                resolve(&mut entry.key);
                if let Some(file) = &mut entry.ocsp {
                    resolve(file);
                }
            }
            if let Some(file) = &mut tls.ticket_keys {
                resolve(file);
            }
        }
        if let Some(oauth) = &mut self.oauth {
            for file in [&mut oauth.ca_file, &mut oauth.introspection_secret_file]
                .into_iter()
                .flatten()
            {
                resolve(file);
            }
        }
        if let Some(backend_tls) = &mut self.backend_tls {
            resolve(&mut backend_tls.ca_file);
            for file in [&mut backend_tls.certificate, &mut backend_tls.key]
                .into_iter()
                .flatten()
            {
                resolve(file);
            }
        }
        for server in &mut self.server {
            if let Some(file) = &mut server.login.master_password_file {
                resolve(file);
            }
        }
        if let Some(http) = &mut self.http {
            resolve(&mut http.cookie_keys);
        }
        if let Some(admin) = &mut self.admin {
            for file in [&mut admin.token_file, &mut admin.client_ca]
                .into_iter()
                .flatten()
            {
                resolve(file);
            }
        }
        if let Some(file) = self
            .health
            .as_mut()
            .and_then(|h| h.login_password_file.as_mut())
        {
            resolve(file);
        }
    }

    /// Checks everything that the types alone do not. The message names the key.
    ///
    /// Sections are checked in a fixed order, and the first error found is the one reported.
    pub fn validate(&self) -> Result<(), String> {
        let sites = node::validate(self)?;
        let servers = servers::validate(self, &sites)?;
        servers::validate_databases(self, &servers)?;
        listeners::validate(self)?;
        if let Some(backend_tls) = &self.backend_tls {
            backend_tls.validate()?;
        }
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        transport::validate(self)?;
        self.directory.validate()?;
        self.location.validate()?;
        self.sip.validate()?;
        if let Some(http) = &self.http {
            http.validate()?;
        }
        self.throttle.validate()?;
        if let Some(oauth) = &self.oauth {
            oauth.validate()?;
        }
        if let LocationConfig::Etcd(etcd) = &self.location {
            let mut others = vec![("location.prefix", etcd.prefix.as_str())];
            if let Some(manager) = &self.active_manager {
                others.extend([
                    ("active_manager.election_key", manager.election_key.as_str()),
                    (
                        "active_manager.servers_prefix",
                        manager.servers_prefix.as_str(),
                    ),
                    ("active_manager.nodes_prefix", manager.nodes_prefix.as_str()),
                    ("active_manager.acks_prefix", manager.acks_prefix.as_str()),
                ]);
            }
            self.throttle.validate_prefix(&others)?;
        }
        listeners::validate_proxy_protocol(self)?;
        if let Some(admin) = &self.admin {
            admin.validate(self.tls.is_some())?;
        }
        limits::validate(self)?;
        limits::validate_timeouts(self)?;
        if let Some(health) = &self.health {
            health.validate()?;
        }
        if let Some(manager) = &self.active_manager {
            manager.validate(self.health.is_some())?;
        }
        if let Some(placement) = &self.placement {
            let automatic = self.active_manager.as_ref().is_some_and(|m| m.enabled);
            placement.validate(automatic)?;
            for (i, database) in self.database.iter().enumerate() {
                let name = mailfront_model::DatabaseName::new(&database.name);
                if mailfront_model::group::group_number(&name).is_some() {
                    return Err(format!(
                        "database[{i}].name: `{}` is a group's name (g<N>) under [placement]",
                        database.name
                    ));
                }
                if mailfront_model::group::pinned_user(&name).is_some() {
                    return Err(format!(
                        "database[{i}].name: `{}` is a pin's name (pin:<address>) under [placement]",
                        database.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// Warnings about a valid configuration that an operator should know about.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let DirectoryConfig::Ldap(ldap) = &self.directory {
            warnings.extend(ldap.warnings());
        }
        // A SASL response carrying a token is one line: a JWT of a few claims is 1–2 KiB, and
        // base64 adds a third.
        if self.oauth.is_some() && self.limits.max_line_length < 8192 {
            warnings.push(format!(
                "limits.max_line_length: {} bytes may cut OAuth tokens short (8192 or more is safe)",
                self.limits.max_line_length
            ));
        }
        for (i, listener) in self.listener.iter().enumerate() {
            let loopback = listener.address.ip().is_loopback();
            if listener.allow_plaintext_auth && !loopback && listener.tls != ListenerTls::Implicit {
                warnings.push(format!(
                    "listener[{i}].allow_plaintext_auth: passwords may cross the network in clear text on {}",
                    listener.address
                ));
            }
        }
        for (i, server) in self.server.iter().enumerate() {
            if server.login.master_password.is_some() {
                warnings.push(format!(
                    "server[{i}].login.master_password: prefer master_password_file, so the secret is not in the configuration"
                ));
            }
        }
        warnings
    }

    /// Reads the master password of server `index` (inline or from its file).
    pub fn master_password(&self, index: usize) -> Result<Option<Secret<String>>, String> {
        let Some(server) = self.server.get(index) else {
            return Ok(None);
        };
        let login = &server.login;
        if let Some(password) = &login.master_password {
            return Ok(Some(Secret::new(password.clone())));
        }
        match &login.master_password_file {
            Some(file) => {
                let text = std::fs::read_to_string(file).map_err(|e| {
                    format!(
                        "server[{index}].login.master_password_file: cannot read {}: {e}",
                        file.display()
                    )
                })?;
                let password = text.trim_end_matches(['\r', '\n']).to_owned();
                if password.is_empty() {
                    return Err(format!(
                        "server[{index}].login.master_password_file: {} is empty",
                        file.display()
                    ));
                }
                Ok(Some(Secret::new(password)))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests;
