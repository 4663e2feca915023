//! The configuration file: one typed tree, validated at load. Every error names its key.
//!
//! Relative paths in the file are resolved against the file's own directory, so a
//! configuration and its companions (users, location map, certificates) travel together.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mailfront_model::{BackendTls, Protocol, SaslMechanism, Secret, Version};
use serde::Deserialize;

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
}

/// `[node]`: this mailfront.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Name (logs, health pages).
    pub name: String,
    /// Site the node is in.
    pub site: String,
    /// Mailbox version this node serves natively.
    pub version: Version,
}

/// `[[site]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Name.
    pub name: String,
    /// HTTP service name → the URL clients use in this site.
    #[serde(default)]
    pub external_urls: BTreeMap<String, String>,
    /// Other site → cost of reaching it (lower is nearer).
    #[serde(default)]
    pub costs: BTreeMap<String, u32>,
}

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

/// `[transport]`: the front-end transport (inbound SMTP).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    /// Domains whose mail is accepted for the directory's mailboxes; everything else is relaying.
    pub accepted_domains: Vec<String>,
    /// Largest message in bytes (announced as SIZE; submission announces it too).
    pub max_message_size: u64,
    /// Most recipients per message.
    pub max_recipients: usize,
    /// Offer CHUNKING (BDAT).
    pub chunking: bool,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            accepted_domains: Vec::new(),
            max_message_size: 35 * 1024 * 1024,
            max_recipients: 100,
            chunking: true,
        }
    }
}

/// `[outbound]`: mail leaving the organisation through the front door.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// The relay host that takes outbound mail.
    pub relay: RelayConfig,
    /// Addresses or ranges allowed to send (default: the mailbox servers' addresses).
    pub allowed_sources: Option<Vec<String>>,
}

/// `[outbound.relay]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS towards the relay.
    #[serde(default)]
    pub tls: EndpointTls,
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

/// `[directory]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
pub enum DirectoryConfig {
    /// The embedded file directory.
    File {
        /// The users file.
        path: PathBuf,
    },
    /// An LDAP server (see `mailfront_directory::ldap::LdapConfig` for the keys).
    Ldap(Box<mailfront_directory::ldap::LdapConfig>),
}

/// `[location]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
pub enum LocationConfig {
    /// The embedded location map.
    File {
        /// The map file.
        path: PathBuf,
    },
    /// etcd, shared by every node (see `mailfront_location::etcd` for the keys and layout).
    Etcd(mailfront_location::etcd::EtcdConfig),
}

/// `[tls]`: the certificate clients see.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (PEM).
    pub certificate: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// `[backend_tls]`: trust towards backends.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTlsConfig {
    /// CA certificates (PEM) that backend certificates must chain to.
    pub ca_file: PathBuf,
}

/// TLS offered on a listener.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListenerTls {
    /// No TLS.
    None,
    /// STARTTLS offered (the default).
    #[default]
    Starttls,
    /// TLS from the first byte.
    Implicit,
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    /// IMAP clients.
    Imap,
    /// POP3 clients.
    Pop3,
    /// Message submission by authenticated users.
    Submission,
    /// Inbound SMTP (the front-end transport).
    Smtp,
    /// Outbound SMTP from the mailbox servers, relayed to the outbound relay host.
    Outbound,
    /// SIP: UDP and TCP on one address (`tls = "none"`, the default for SIP), or TLS over TCP
    /// (`tls = "implicit"`). Telephony is redirected, never proxied.
    Sip,
    /// HTTPS (the services of `[http]`).
    Https,
}

impl ListenerProtocol {
    /// The protocol whose server endpoints the listener's sessions go to.
    pub fn protocol(self) -> Protocol {
        match self {
            ListenerProtocol::Imap => Protocol::Imap,
            ListenerProtocol::Pop3 => Protocol::Pop3,
            ListenerProtocol::Submission => Protocol::Submission,
            ListenerProtocol::Smtp | ListenerProtocol::Outbound => Protocol::Smtp,
            ListenerProtocol::Sip => Protocol::Sip,
            ListenerProtocol::Https => Protocol::Http,
        }
    }

    /// The name used in configuration and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerProtocol::Imap => "imap",
            ListenerProtocol::Pop3 => "pop3",
            ListenerProtocol::Submission => "submission",
            ListenerProtocol::Smtp => "smtp",
            ListenerProtocol::Outbound => "outbound",
            ListenerProtocol::Sip => "sip",
            ListenerProtocol::Https => "https",
        }
    }
}

impl std::fmt::Display for ListenerProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[[listener]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Name for logs (default: protocol and address).
    pub name: Option<String>,
    /// What the listener serves.
    pub protocol: ListenerProtocol,
    /// Address to listen on.
    pub address: SocketAddr,
    /// TLS offered.
    #[serde(default)]
    pub tls: ListenerTls,
    /// Accept passwords on a connection without TLS (off by default).
    #[serde(default)]
    pub allow_plaintext_auth: bool,
    /// Expect a PROXY protocol (v1 or v2) header from the trusted sources of
    /// `[proxy_protocol]` (a load balancer); connections from anywhere else are refused.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Most concurrent connections on this listener (default `limits.max_connections`).
    pub max_connections: Option<usize>,
}

/// `[throttle]`: login throttling (see `mailfront_proxy::throttle`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    /// Whether throttling applies.
    pub enabled: bool,
    /// The longest a refused login takes (the first takes `timeouts.auth_failure_delay`, each
    /// further one twice as long).
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Failures from one address (IPv6: one /64) before it is blocked.
    pub block_after: u32,
    /// Failures against one user name before it is blocked.
    pub block_user_after: u32,
    /// How long a block lasts.
    #[serde(with = "humantime_serde")]
    pub block_for: Duration,
    /// Failures are forgotten after this long without another.
    #[serde(with = "humantime_serde")]
    pub forget_after: Duration,
    /// Addresses or ranges never throttled.
    pub trusted_networks: Vec<String>,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        let d = mailfront_proxy::throttle::ThrottleSettings::default();
        Self {
            enabled: d.enabled,
            max_delay: d.max_delay,
            block_after: d.block_after,
            block_user_after: d.block_user_after,
            block_for: d.block_for,
            forget_after: d.forget_after,
            trusted_networks: Vec::new(),
        }
    }
}

/// `[proxy_protocol]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyProtocolConfig {
    /// Addresses or ranges (the load balancers) allowed to send PROXY headers.
    pub trusted: Vec<String>,
    /// How long a trusted source has to send its header.
    #[serde(with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// `[admin]`: the admin listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where it listens (loopback by default: `127.0.0.1:9090`).
    #[serde(default = "admin_address")]
    pub address: SocketAddr,
    /// A file holding the bearer token every admin request but `/health` must carry; required
    /// when the address is not a loopback address.
    pub token_file: Option<PathBuf>,
}

fn admin_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

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

/// Log output format.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `key=value` text.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter (`info`, `mailfront=debug`, …); `RUST_LOG` overrides it.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// `[sip]`: SIP listeners (see `mailfront_proxy::sip`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Largest SIP message in bytes (default 65536: any UDP datagram). A larger UDP datagram is
    /// dropped and counted; a larger TCP message is answered `513` and the connection closed.
    pub max_message_size: usize,
    /// Most header fields in one message (default 128).
    pub max_headers: usize,
    /// Longest line of a message in bytes (default 8192).
    pub max_line_length: usize,
    /// Longest silence on a SIP TCP or TLS connection before it is closed (default 120 s).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// `Retry-After` seconds of a `503` (directory or location unavailable; default 30).
    pub retry_after: u32,
    /// Most UDP requests waiting for the directory at once; more are answered `503` (default
    /// 1024).
    pub max_in_flight: usize,
}

impl Default for SipConfig {
    fn default() -> Self {
        let d = mailfront_proxy::sip::SipSettings::default();
        Self {
            max_message_size: d.limits.max_message_size,
            max_headers: d.limits.max_headers,
            max_line_length: d.limits.max_line_length,
            idle_timeout: d.idle_timeout,
            retry_after: d.retry_after,
            max_in_flight: d.max_in_flight,
        }
    }
}

impl SipConfig {
    fn validate(&self) -> Result<(), String> {
        if !(512..=16 * 1024 * 1024).contains(&self.max_message_size) {
            return Err("sip.max_message_size: must be between 512 and 16777216".into());
        }
        if self.max_headers < 8 {
            return Err("sip.max_headers: must be at least 8".into());
        }
        if self.max_line_length < 256 {
            return Err("sip.max_line_length: must be at least 256".into());
        }
        if self.idle_timeout.is_zero() {
            return Err("sip.idle_timeout: must be greater than zero".into());
        }
        if self.retry_after == 0 {
            return Err("sip.retry_after: must be at least 1 (seconds)".into());
        }
        if self.max_in_flight == 0 {
            return Err("sip.max_in_flight: must be at least 1".into());
        }
        Ok(())
    }

    /// The settings of the SIP driver.
    pub fn settings(&self) -> mailfront_proxy::sip::SipSettings {
        mailfront_proxy::sip::SipSettings {
            limits: mailfront_protocol::sip::SipLimits {
                max_message_size: self.max_message_size,
                max_headers: self.max_headers,
                max_line_length: self.max_line_length,
            },
            idle_timeout: self.idle_timeout,
            retry_after: self.retry_after,
            max_in_flight: self.max_in_flight,
        }
    }
}

/// A server's voice-mail URI (`sip = "sip:{extension}@mbx1.example.com:5070"`): a `sip:` or
/// `sips:` URI, where `{user}` and `{extension}` may stand in the user part.
fn validate_sip_uri(uri: &str) -> Result<(), String> {
    let lower = uri.to_ascii_lowercase();
    if !(lower.starts_with("sip:") || lower.starts_with("sips:")) {
        return Err(format!("`{uri}` is not a sip: or sips: URI"));
    }
    if uri
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
    {
        return Err(format!(
            "`{uri}`: no spaces, control characters, <, > or \""
        ));
    }
    let probe = uri.replace("{user}", "4001").replace("{extension}", "4001");
    if probe.contains(['{', '}']) {
        return Err(format!(
            "`{uri}`: unknown placeholder (expected {{user}} or {{extension}})"
        ));
    }
    mailfront_protocol::sip::uri::parse_request_uri(&probe)
        .map(|_| ())
        .map_err(|()| format!("`{uri}` is not a valid SIP URI"))
}

/// The listener kinds mailfront can serve today.
pub const SERVED_PROTOCOLS: &[ListenerProtocol] = &[
    ListenerProtocol::Imap,
    ListenerProtocol::Pop3,
    ListenerProtocol::Submission,
    ListenerProtocol::Smtp,
    ListenerProtocol::Outbound,
    ListenerProtocol::Sip,
    ListenerProtocol::Https,
];

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
        }
        if let Some(backend_tls) = &mut self.backend_tls {
            resolve(&mut backend_tls.ca_file);
        }
        for server in &mut self.server {
            if let Some(file) = &mut server.login.master_password_file {
                resolve(file);
            }
        }
        if let Some(http) = &mut self.http {
            resolve(&mut http.cookie_keys);
        }
        if let Some(file) = self.admin.as_mut().and_then(|a| a.token_file.as_mut()) {
            resolve(file);
        }
    }

    /// Checks everything that the types alone do not. The message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let nonempty = |key: &str, value: &str| {
            if value.trim().is_empty() {
                Err(format!("{key}: must not be empty"))
            } else {
                Ok(())
            }
        };
        nonempty("node.name", &self.node.name)?;
        nonempty("node.site", &self.node.site)?;

        let mut sites = BTreeSet::new();
        for (i, site) in self.site.iter().enumerate() {
            nonempty(&format!("site[{i}].name"), &site.name)?;
            if !sites.insert(site.name.as_str()) {
                return Err(format!(
                    "site[{i}].name: site `{}` is defined twice",
                    site.name
                ));
            }
        }
        let explicit_sites = !self.site.is_empty();
        let check_site = |key: String, site: &str| {
            if explicit_sites && !sites.contains(site) {
                Err(format!(
                    "{key}: unknown site `{site}` (define it in a [[site]] table)"
                ))
            } else {
                Ok(())
            }
        };
        check_site("node.site".into(), &self.node.site)?;
        for (i, site) in self.site.iter().enumerate() {
            for (service, url) in &site.external_urls {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(format!(
                        "site[{i}].external_urls.{service}: `{url}` is not an http(s) URL"
                    ));
                }
            }
            for other in site.costs.keys() {
                check_site(format!("site[{i}].costs.{other}"), other)?;
            }
        }

        if self.server.is_empty() {
            return Err("server: at least one [[server]] is required".into());
        }
        let mut servers = BTreeSet::new();
        for (i, server) in self.server.iter().enumerate() {
            let key = format!("server[{i}]");
            nonempty(&format!("{key}.name"), &server.name)?;
            if !servers.insert(server.name.as_str()) {
                return Err(format!(
                    "{key}.name: server `{}` is defined twice",
                    server.name
                ));
            }
            nonempty(&format!("{key}.site"), &server.site)?;
            check_site(format!("{key}.site"), &server.site)?;
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
                    if tls != EndpointTls::None && self.backend_tls.is_none() {
                        return Err(format!(
                            "{key}.{name}.tls: TLS to a backend needs [backend_tls] ca_file"
                        ));
                    }
                }
            }
            if let Some(sip) = &server.sip {
                validate_sip_uri(sip).map_err(|e| format!("{key}.sip: {e}"))?;
            }
            if endpoints.iter().all(|(_, e)| e.is_none())
                && server.http.is_none()
                && server.sip.is_none()
            {
                return Err(format!(
                    "{key}: no endpoint (imap, pop3, submission, delivery, http or sip)"
                ));
            }
            let login = &server.login;
            if login.method == LoginMethodConfig::Master {
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
            }
        }

        let mut databases = BTreeSet::new();
        for (i, database) in self.database.iter().enumerate() {
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

        if self.listener.is_empty() {
            return Err("listener: at least one [[listener]] is required".into());
        }
        let mut addresses = BTreeSet::new();
        for (i, listener) in self.listener.iter().enumerate() {
            let key = format!("listener[{i}]");
            if !SERVED_PROTOCOLS.contains(&listener.protocol) {
                return Err(format!(
                    "{key}.protocol: `{}` listeners are not supported yet",
                    listener.protocol
                ));
            }
            if !addresses.insert(listener.address) {
                return Err(format!(
                    "{key}.address: {} is used by another listener",
                    listener.address
                ));
            }
            if listener.protocol == ListenerProtocol::Sip && listener.tls == ListenerTls::Starttls {
                return Err(format!(
                    "{key}.tls: SIP has no STARTTLS; use \"none\" (UDP and TCP) or \"implicit\" (TLS over TCP)"
                ));
            }
            if listener.tls != ListenerTls::None && self.tls.is_none() {
                return Err(format!("{key}.tls: needs a certificate in [tls]"));
            }
            let has_endpoint = self.server.iter().any(|s| match listener.protocol {
                ListenerProtocol::Imap => s.imap.is_some(),
                ListenerProtocol::Pop3 => s.pop3.is_some(),
                ListenerProtocol::Submission => s.submission.is_some(),
                ListenerProtocol::Smtp => s.delivery.is_some(),
                ListenerProtocol::Outbound => true,
                ListenerProtocol::Sip => s.sip.is_some(),
                ListenerProtocol::Https => s.http.is_some(),
            });
            if !has_endpoint {
                return Err(format!(
                    "{key}.protocol: no server has a {} endpoint",
                    listener.protocol
                ));
            }
            if listener.protocol == ListenerProtocol::Smtp
                && self.transport.accepted_domains.is_empty()
            {
                return Err(format!(
                    "{key}.protocol: an smtp listener needs transport.accepted_domains (the domains it takes mail for)"
                ));
            }
            if listener.protocol == ListenerProtocol::Https && self.http.is_none() {
                return Err(format!(
                    "{key}.protocol: an https listener needs an [http] section"
                ));
            }
            if listener.protocol == ListenerProtocol::Outbound && self.outbound.is_none() {
                return Err(format!(
                    "{key}.protocol: an outbound listener needs an [outbound] relay"
                ));
            }
        }

        for (i, domain) in self.transport.accepted_domains.iter().enumerate() {
            if domain.trim().is_empty() || domain.contains(['@', ' ']) {
                return Err(format!(
                    "transport.accepted_domains[{i}]: `{domain}` is not a domain"
                ));
            }
        }
        if self.transport.max_message_size == 0 {
            return Err("transport.max_message_size: must be at least 1".into());
        }
        if self.transport.max_recipients == 0 {
            return Err("transport.max_recipients: must be at least 1".into());
        }
        if let Some(outbound) = &self.outbound {
            nonempty("outbound.relay.host", &outbound.relay.host)?;
            if outbound.relay.port == 0 {
                return Err("outbound.relay.port: must not be 0".into());
            }
            if outbound.relay.tls != EndpointTls::None && self.backend_tls.is_none() {
                return Err(
                    "outbound.relay.tls: TLS to the relay needs [backend_tls] ca_file".into(),
                );
            }
            for (i, source) in outbound.allowed_sources.iter().flatten().enumerate() {
                source
                    .parse::<mailfront_proxy::transport::Cidr>()
                    .map_err(|e| format!("outbound.allowed_sources[{i}]: {e}"))?;
            }
        }
        if let DirectoryConfig::Ldap(ldap) = &self.directory {
            ldap.validate()?;
        }
        if let LocationConfig::Etcd(etcd) = &self.location {
            etcd.validate()?;
        }
        self.sip.validate()?;
        if let Some(http) = &self.http {
            http.validate()?;
        }
        for (i, network) in self.throttle.trusted_networks.iter().enumerate() {
            network
                .parse::<mailfront_proxy::transport::Cidr>()
                .map_err(|e| format!("throttle.trusted_networks[{i}]: {e}"))?;
        }
        if self.throttle.block_after == 0 || self.throttle.block_user_after == 0 {
            return Err("throttle.block_after: must be at least 1 (block_user_after too)".into());
        }
        for (i, source) in self.proxy_protocol.trusted.iter().enumerate() {
            source
                .parse::<mailfront_proxy::transport::Cidr>()
                .map_err(|e| format!("proxy_protocol.trusted[{i}]: {e}"))?;
        }
        if let Some((i, _)) = self
            .listener
            .iter()
            .enumerate()
            .find(|(_, l)| l.proxy_protocol)
            && self.proxy_protocol.trusted.is_empty()
        {
            return Err(format!(
                "listener[{i}].proxy_protocol: needs proxy_protocol.trusted (the load balancers' addresses)"
            ));
        }
        if let Some(admin) = &self.admin
            && !admin.address.ip().is_loopback()
            && admin.token_file.is_none()
        {
            return Err(format!(
                "admin.token_file: required when the admin listener is not on loopback ({})",
                admin.address
            ));
        }
        if self.limits.max_connections == 0 || self.limits.max_connections_per_client == 0 {
            return Err(
                "limits.max_connections: must be at least 1 (max_connections_per_client too)"
                    .into(),
            );
        }
        if let Some((i, _)) = self
            .listener
            .iter()
            .enumerate()
            .find(|(_, l)| l.max_connections == Some(0))
        {
            return Err(format!("listener[{i}].max_connections: must be at least 1"));
        }
        let limits = &self.limits;
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
        let t = &self.timeouts;
        for (key, value) in [
            ("timeouts.pre_auth_idle", t.pre_auth_idle),
            ("timeouts.login", t.login),
            ("timeouts.directory", t.directory),
            ("timeouts.backend_connect", t.backend_connect),
            ("timeouts.backend_login", t.backend_login),
            ("timeouts.smtp_idle", t.smtp_idle),
            ("timeouts.delivery", t.delivery),
            ("timeouts.post_auth_idle", t.post_auth_idle),
            ("reload.interval", self.reload.interval),
        ] {
            if value.is_zero() {
                return Err(format!("{key}: must be greater than zero"));
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

impl From<MechanismConfig> for SaslMechanism {
    fn from(mechanism: MechanismConfig) -> Self {
        match mechanism {
            MechanismConfig::Plain => SaslMechanism::Plain,
            MechanismConfig::Login => SaslMechanism::Login,
        }
    }
}

#[cfg(test)]
mod tests;
