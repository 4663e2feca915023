//! `[[server]]` and `[[database]]`: the mailbox servers, how to reach and log in to them, and
//! the databases whose copies they hold.

use std::collections::BTreeSet;
use std::path::PathBuf;

use mailfront_model::{BackendTls, SaslMechanism, Version};
use serde::Deserialize;

use super::node::KnownSites;
use super::sip::validate_sip_uri;
use super::{Config, nonempty};

/// TLS towards one backend endpoint.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EndpointTls {
    /// Plain TCP.
    #[default]
    None,
    /// STARTTLS before login.
    Starttls,
    /// TLS from the first byte.
    Implicit,
}

impl From<EndpointTls> for BackendTls {
    fn from(tls: EndpointTls) -> Self {
        match tls {
            EndpointTls::None => BackendTls::None,
            EndpointTls::Starttls => BackendTls::StartTls,
            EndpointTls::Implicit => BackendTls::Implicit,
        }
    }
}

/// One protocol endpoint of a server, e.g. `imap = { port = 143 }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// TCP port.
    pub port: u16,
    /// Host, if different from the server's.
    pub host: Option<String>,
    /// TLS towards the endpoint.
    #[serde(default)]
    pub tls: EndpointTls,
}

fn default_group() -> String {
    "default".to_owned()
}

/// The dialect of a delivery endpoint.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryProtocolConfig {
    /// LMTP (the default; Dovecot's `lmtp` service).
    #[default]
    Lmtp,
    /// SMTP.
    Smtp,
}

impl From<DeliveryProtocolConfig> for mailfront_model::DeliveryProtocol {
    fn from(p: DeliveryProtocolConfig) -> Self {
        match p {
            DeliveryProtocolConfig::Lmtp => mailfront_model::DeliveryProtocol::Lmtp,
            DeliveryProtocolConfig::Smtp => mailfront_model::DeliveryProtocol::Smtp,
        }
    }
}

/// A delivery endpoint, e.g. `delivery = { port = 24, protocol = "lmtp" }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryEndpointConfig {
    /// TCP port.
    pub port: u16,
    /// Host, if different from the server's.
    pub host: Option<String>,
    /// TLS towards the endpoint.
    #[serde(default)]
    pub tls: EndpointTls,
    /// `lmtp` (default) or `smtp`.
    #[serde(default)]
    pub protocol: DeliveryProtocolConfig,
}

/// How to log in on a user's behalf.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LoginMethodConfig {
    /// With a master user.
    Master,
    /// With the user's own credentials.
    Passthrough,
}

/// The mechanism of the backend login.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MechanismConfig {
    /// SASL PLAIN (`AUTHENTICATE PLAIN`; authzid carries the user for a master login).
    #[default]
    Plain,
    /// The protocol's plain login command (`LOGIN "user*master" password` for a master login).
    Login,
}

impl From<MechanismConfig> for SaslMechanism {
    fn from(mechanism: MechanismConfig) -> Self {
        match mechanism {
            MechanismConfig::Plain => SaslMechanism::Plain,
            MechanismConfig::Login => SaslMechanism::Login,
        }
    }
}

/// `[server.login]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// `master` or `passthrough`.
    pub method: LoginMethodConfig,
    /// `plain` (default) or `login`.
    #[serde(default)]
    pub mechanism: MechanismConfig,
    /// The master user's name (method `master`).
    pub master_user: Option<String>,
    /// The master user's password, inline (method `master`).
    pub master_password: Option<String>,
    /// A file holding the master user's password (method `master`); preferred over inline.
    pub master_password_file: Option<PathBuf>,
    /// Separator between user and master name for mechanism `login` (default `*`).
    #[serde(default = "default_separator")]
    pub separator: String,
}

fn default_separator() -> String {
    "*".to_owned()
}

/// `[[server]]`: a mailbox server.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Name (as the location map names it).
    pub name: String,
    /// Site.
    pub site: String,
    /// Mailbox version it runs.
    pub version: Version,
    /// Host name or address.
    pub host: String,
    /// IMAP endpoint.
    pub imap: Option<EndpointConfig>,
    /// POP3 endpoint.
    pub pop3: Option<EndpointConfig>,
    /// Submission endpoint.
    pub submission: Option<EndpointConfig>,
    /// Delivery (LMTP/SMTP) endpoint.
    pub delivery: Option<DeliveryEndpointConfig>,
    /// Delivery group (the servers that take delivery for each other's databases); default
    /// `default`.
    #[serde(default = "default_group")]
    pub delivery_group: String,
    /// Base URL of its HTTP services.
    pub http: Option<String>,
    /// SIP URI of its voice-mail service.
    pub sip: Option<String>,
    /// How to log in on a user's behalf.
    pub login: LoginConfig,
    /// Its weight in placement by group (`[placement]`): 0 takes no groups. Default 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// `[[database]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Name.
    pub name: String,
    /// Servers holding a copy (the active one must be among them).
    pub copies: Vec<String>,
}

/// Checks the `[[server]]` tables (at least one); returns the server names.
pub(super) fn validate<'a>(
    config: &'a Config,
    sites: &KnownSites<'_>,
) -> Result<BTreeSet<&'a str>, String> {
    if config.server.is_empty() {
        return Err("server: at least one [[server]] is required".into());
    }
    let mut servers = BTreeSet::new();
    for (i, server) in config.server.iter().enumerate() {
        let key = format!("server[{i}]");
        nonempty(&format!("{key}.name"), &server.name)?;
        if !servers.insert(server.name.as_str()) {
            return Err(format!(
                "{key}.name: server `{}` is defined twice",
                server.name
            ));
        }
        validate_server(config, &key, server, sites)?;
        validate_login(&key, &server.login)?;
    }
    Ok(servers)
}

/// Checks one server (`key` is `server[i]`) but for its name and login.
fn validate_server(
    config: &Config,
    key: &str,
    server: &ServerConfig,
    sites: &KnownSites<'_>,
) -> Result<(), String> {
    nonempty(&format!("{key}.site"), &server.site)?;
    sites.check(&format!("{key}.site"), &server.site)?;
    nonempty(&format!("{key}.host"), &server.host)?;
    let endpoints = [
        ("imap", server.imap.as_ref().map(|e| (e.port, e.tls))),
        ("pop3", server.pop3.as_ref().map(|e| (e.port, e.tls))),
        (
            "submission",
            server.submission.as_ref().map(|e| (e.port, e.tls)),
        ),
        (
            "delivery",
            server.delivery.as_ref().map(|e| (e.port, e.tls)),
        ),
    ];
    for (name, endpoint) in endpoints {
        if let Some((port, tls)) = endpoint {
            if port == 0 {
                return Err(format!("{key}.{name}.port: must not be 0"));
            }
            if tls != EndpointTls::None && config.backend_tls.is_none() {
                return Err(format!(
                    "{key}.{name}.tls: TLS to a backend needs [backend_tls] ca_file"
                ));
            }
        }
    }
    if let Some(sip) = &server.sip {
        validate_sip_uri(sip).map_err(|e| format!("{key}.sip: {e}"))?;
    }
    if endpoints.iter().all(|(_, e)| e.is_none()) && server.http.is_none() && server.sip.is_none() {
        return Err(format!(
            "{key}: no endpoint (imap, pop3, submission, delivery, http or sip)"
        ));
    }
    Ok(())
}

/// Checks a server's `login` (`key` is `server[i]`): a master login needs its user and one
/// source of its password.
fn validate_login(key: &str, login: &LoginConfig) -> Result<(), String> {
    if login.method != LoginMethodConfig::Master {
        return Ok(());
    }
    match &login.master_user {
        Some(user) if !user.trim().is_empty() => {}
        _ => {
            return Err(format!(
                "{key}.login.master_user: required for method = \"master\""
            ));
        }
    }
    match (&login.master_password, &login.master_password_file) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "{key}.login.master_password: give either master_password or master_password_file, not both"
            ));
        }
        (None, None) => {
            return Err(format!(
                "{key}.login.master_password_file: required for method = \"master\" (or master_password)"
            ));
        }
        _ => {}
    }
    if login.separator.is_empty() {
        return Err(format!("{key}.login.separator: must not be empty"));
    }
    Ok(())
}

/// Checks the `[[database]]` tables against the defined `servers`.
pub(super) fn validate_databases(config: &Config, servers: &BTreeSet<&str>) -> Result<(), String> {
    let mut databases = BTreeSet::new();
    for (i, database) in config.database.iter().enumerate() {
        nonempty(&format!("database[{i}].name"), &database.name)?;
        if !databases.insert(database.name.as_str()) {
            return Err(format!(
                "database[{i}].name: database `{}` is defined twice",
                database.name
            ));
        }
        for (j, copy) in database.copies.iter().enumerate() {
            if !servers.contains(copy.as_str()) {
                return Err(format!(
                    "database[{i}].copies[{j}]: unknown server `{copy}`"
                ));
            }
        }
    }
    Ok(())
}
