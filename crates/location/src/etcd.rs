//! The etcd location source: the database → active server map kept under a prefix in etcd
//! (the "Active Manager" store that every node of a mailfront array shares).
//!
//! # Key layout
//!
//! One key per mailbox database, `<prefix><DATABASE>` (default prefix `/mailfront/databases/`).
//! The value is either a bare server name or a JSON object:
//!
//! ```text
//! /mailfront/databases/DB01  →  mbx1
//! /mailfront/databases/DB02  →  {"active": "mbx2", "copies": ["mbx1", "mbx2"]}
//! ```
//!
//! - `active` (required): the server hosting the active copy, as the configuration names it.
//! - `copies` (optional, informational): the servers holding a copy. When present and not
//!   empty, `active` must be one of them. Other members are ignored, so that a newer writer can
//!   add fields without breaking older readers.
//! - Surrounding whitespace is ignored (`etcdctl put` of a file's content keeps its newline).
//! - The database name is everything after the prefix: non-empty, no `/`, no whitespace or
//!   control characters. Keys under the prefix that break this rule are logged and ignored.
//!
//! An operator switches a database over with one put (or [`put_active`], which keeps `copies`):
//!
//! ```sh
//! ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:2379 put /mailfront/databases/DB01 mbx2
//! ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:2379 get --prefix /mailfront/databases/
//! ```
//!
//! # Bad values and the validator: per database, the last good value stays
//!
//! Every node applies the store's changes one database at a time. A value that does not parse
//! (see above), and a value that the caller's [`Validator`] rejects (for the binary: a server the
//! configuration does not define, or one that holds no copy of the database), is logged and not
//! applied: **that database keeps its last good value** (if it never had one, for example after
//! a restart of mailfront, it is absent from the map), and every other database follows the store
//! as usual. Routing a database's users to its last known server beats refusing them because an
//! operator mistyped one key, and one bad key must not freeze the other databases.
//!
//! The validator is therefore called with a one-entry [`LocationMap`] for each database whose
//! value changed; it must judge entries independently (the binary's does). Deleting a key
//! removes the database from the map (there is nothing to validate).
//!
//! # Following the store
//!
//! [`EtcdSource::start`] never fails because etcd is unreachable: a node must start (and serve
//! users whose databases it can locate once the store answers) even while etcd is down. It loads
//! the whole prefix with one range read, publishes the map, and watches the prefix from the next
//! revision; each watch response (one or more events) is applied and published at once, so the
//! locator's subscribers (the failover logic) see each switchover as soon as etcd reports it.
//!
//! On any watch error, end of stream, cancellation, or compaction (the watch fell behind the
//! store's history), the locator is marked stale ([`Locator::mark_stale`]) and lookups go on
//! answering from the last map; the source then reconnects with a backoff (100 ms doubling to
//! 5 s; at once after a compaction), reads the whole prefix again (which also catches every change
//! missed meanwhile), publishes it if anything changed (either way the locator is fresh again:
//! [`Locator::mark_fresh`]) and watches from the new revision. Keys still rejected are logged
//! again at each such re-read.
//!
//! Until the first successful load the locator has no map and lookups answer
//! [`LocateError::Unavailable`](crate::LocateError::Unavailable) (a temporary error for the
//! client). [`EtcdSource::wait_loaded`] waits for that first load.
//!
//! A hung server (connections open, nothing answered) is noticed by HTTP/2 keep-alive pings:
//! one every `timeout`, but no more often than every 10 s (etcd closes connections that ping
//! more often than every 5 s), each due within `timeout`; so within about 15 s by default. With
//! several endpoints, a member that loses its cluster's leader cancels the watch (the client
//! sets gRPC's "require leader"), so the source moves on.
//! The one range read returns at most 4 MiB (the client's message limit): some 50,000 databases.
//!
//! # Configuration
//!
//! ```toml
//! [location]
//! backend = "etcd"
//! endpoints = ["http://127.0.0.1:2379"]   # required; all http:// or all https://
//! prefix = "/mailfront/databases/"        # default; must end with "/"
//! timeout = "5s"                          # default: each request, connect, keep-alive
//! username = "mailfront"                  # optional etcd authentication, with...
//! password_file = "etcd-password"         # ...the password (first line of the file)
//! ca_file = "etcd-ca.pem"                 # required with https:// endpoints
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, TlsOptions, Txn, TxnOp,
    WatchOptions, WatchResponse,
};
use mailfront_model::{DatabaseName, Secret, ServerName};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::file::Validator;
use crate::{LocationMap, Locator};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/mailfront/databases/";
/// The default timeout of each etcd request (and of connecting, and of a keep-alive ping).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first delay before reconnecting after a failure.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest delay between two reconnection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The shortest interval between two HTTP/2 keep-alive pings. etcd closes connections that ping
/// more often than its `--grpc-keepalive-min-time` (default 5 s) with "too many pings".
const KEEPALIVE_MIN_INTERVAL: Duration = Duration::from_secs(10);

fn default_prefix() -> String {
    DEFAULT_PREFIX.to_owned()
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

/// `[location]` with `backend = "etcd"`: where the etcd cluster is and how to talk to it.
///
/// Relative paths are taken as they are; the binary resolves them against the configuration
/// file's folder before handing the configuration over.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// The cluster's client URLs, for example `["http://127.0.0.1:2379"]`; all `http://` or all
    /// `https://`. Requests are balanced over them.
    pub endpoints: Vec<String>,
    /// The prefix of the per-database keys (default `/mailfront/databases/`); ends with `/`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The longest wait for each etcd request, for connecting, and for a keep-alive ping's
    /// answer (default 5 s).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The etcd user to authenticate as (optional; needs `password_file`).
    #[serde(default)]
    pub username: Option<String>,
    /// A file whose first line is the etcd user's password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The CA certificate (PEM) that signed the etcd servers' certificates; required for
    /// `https://` endpoints.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl EtcdConfig {
    /// A configuration for `endpoints` with every other key at its default.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: default_prefix(),
            timeout: DEFAULT_TIMEOUT,
            username: None,
            password_file: None,
            ca_file: None,
        }
    }

    /// Checks what the types alone do not. The message starts with the key
    /// (`location.endpoints: …`).
    pub fn validate(&self) -> Result<(), String> {
        if self.endpoints.is_empty() {
            return Err("location.endpoints: at least one endpoint is needed".to_owned());
        }
        let mut https = None;
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let key = format!("location.endpoints[{i}]");
            let (secure, authority) = if let Some(rest) = endpoint.strip_prefix("https://") {
                (true, rest)
            } else if let Some(rest) = endpoint.strip_prefix("http://") {
                (false, rest)
            } else {
                return Err(format!(
                    "{key}: `{endpoint}` must start with http:// or https://"
                ));
            };
            if authority.contains('@') {
                // Never echo what may be a password.
                return Err(format!(
                    "{key}: credentials do not belong in the URL; use location.username and location.password_file"
                ));
            }
            let authority = authority.strip_suffix('/').unwrap_or(authority);
            let host_port = authority.rsplit_once(':');
            if authority.contains('/')
                || !host_port.is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
                })
            {
                return Err(format!(
                    "{key}: `{endpoint}` must be a URL with a host and a port, like http://127.0.0.1:2379"
                ));
            }
            match https {
                None => https = Some(secure),
                Some(first) if first != secure => {
                    return Err(
                        "location.endpoints: mix of http:// and https:// endpoints".to_owned()
                    );
                }
                Some(_) => {}
            }
        }
        let https = https.unwrap_or(false);
        if https && self.ca_file.is_none() {
            return Err("location.ca_file: required with https:// endpoints".to_owned());
        }
        if !https && self.ca_file.is_some() {
            return Err("location.ca_file: only used with https:// endpoints".to_owned());
        }
        if self.prefix.is_empty() || !self.prefix.ends_with('/') {
            return Err(format!(
                "location.prefix: `{}` must end with `/` (keys are <prefix><DATABASE>)",
                self.prefix
            ));
        }
        if self.timeout.is_zero() {
            return Err("location.timeout: must be longer than zero".to_owned());
        }
        match (&self.username, &self.password_file) {
            (Some(user), _) if user.trim().is_empty() => {
                Err("location.username: must not be empty".to_owned())
            }
            (Some(_), None) => Err("location.password_file: required with username".to_owned()),
            (None, Some(_)) => Err("location.username: required with password_file".to_owned()),
            _ => Ok(()),
        }
    }
}

/// Why the etcd source, [`load`] or [`put_active`] failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The configuration is invalid; the message names the key.
    #[error("{0}")]
    Config(String),
    /// A file the configuration names could not be read.
    #[error("location.{key}: cannot read {path}: {source}")]
    ReadFile {
        /// The configuration key (`password_file`, `ca_file`).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// etcd refused or failed a request, or could not be reached.
    #[error("etcd {operation} failed: {message}")]
    Store {
        /// What was being done (`connect`, `range read`, `watch`, `put`).
        operation: &'static str,
        /// What etcd or the transport said (never a secret).
        message: String,
    },
    /// etcd did not answer in time.
    #[error("etcd {operation} timed out after {after:?}")]
    Timeout {
        /// What was being done.
        operation: &'static str,
        /// The configured timeout.
        after: Duration,
    },
    /// A name or value given to [`put_active`] is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// [`put_active`] kept losing races with other writers of the same key.
    #[error("the key {key} kept changing while it was being written")]
    Conflict {
        /// The key.
        key: String,
    },
    /// [`EtcdSource::wait_loaded`] gave up before the first load.
    #[error("no location map loaded from etcd within {waited:?}{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    NotLoaded {
        /// How long it waited.
        waited: Duration,
        /// The last error the source met, if any.
        last_error: Option<String>,
    },
    /// There is no tokio runtime to run the source on.
    #[error("the etcd source needs a tokio runtime")]
    NoRuntime,
}

/// One database's value in etcd, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocationValue {
    /// The server hosting the active copy.
    pub active: ServerName,
    /// The servers holding a copy (informational; empty when the value does not say).
    pub copies: Vec<ServerName>,
}

#[derive(Deserialize, Serialize)]
struct JsonValue {
    active: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    copies: Vec<String>,
}

/// At most 64 characters of a name or key from the store, escaped, for messages and logs.
fn clip(text: &str) -> String {
    const SHOWN: usize = 64;
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(SHOWN).collect();
    let more = if chars.next().is_some() { "…" } else { "" };
    format!("{}{more}", head.escape_debug())
}

fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(format!(
            "the {what} `{}` contains whitespace, a control character or `/`",
            clip(name)
        ));
    }
    Ok(())
}

/// Parses a database's value: a bare server name or `{"active": …, "copies": […]}`.
pub fn parse_value(bytes: &[u8]) -> Result<LocationValue, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the value is not UTF-8".to_owned())?;
    let text = text.trim();
    if text.starts_with('{') {
        let json: JsonValue =
            serde_json::from_str(text).map_err(|e| format!("invalid JSON value: {e}"))?;
        check_name("active server name", &json.active)?;
        for copy in &json.copies {
            check_name("copy's server name", copy)?;
        }
        if !json.copies.is_empty() && !json.copies.contains(&json.active) {
            return Err(format!(
                "the active server `{}` is not one of the copies ({})",
                clip(&json.active),
                clip(&json.copies.join(", "))
            ));
        }
        return Ok(LocationValue {
            active: ServerName::new(&json.active),
            copies: json.copies.iter().map(ServerName::new).collect(),
        });
    }
    if text.starts_with('"') || text.starts_with('[') {
        return Err(
            "the value must be a bare server name or a JSON object with \"active\"".to_owned(),
        );
    }
    check_name("server name", text)?;
    Ok(LocationValue {
        active: ServerName::new(text),
        copies: Vec::new(),
    })
}

/// The text of a value: a bare server name without copies, JSON with them.
pub fn encode_value(value: &LocationValue) -> String {
    if value.copies.is_empty() {
        return value.active.to_string();
    }
    let json = JsonValue {
        active: value.active.to_string(),
        copies: value.copies.iter().map(ToString::to_string).collect(),
    };
    // Serialising two strings and a list of strings cannot fail; fall back to the bare name.
    serde_json::to_string(&json).unwrap_or_else(|_| value.active.to_string())
}

/// The database a key names (`<prefix><DATABASE>`).
pub fn database_from_key(prefix: &str, key: &[u8]) -> Result<DatabaseName, String> {
    let rest = key
        .strip_prefix(prefix.as_bytes())
        .ok_or_else(|| format!("the key is not under the prefix {prefix}"))?;
    let name = std::str::from_utf8(rest).map_err(|_| "the key is not UTF-8".to_owned())?;
    check_name("database name", name)?;
    Ok(DatabaseName::new(name))
}

/// One change read from the store.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Change {
    /// The key has this value now.
    Put { key: Vec<u8>, value: Vec<u8> },
    /// The key is gone.
    Delete { key: Vec<u8> },
}

/// The map as the store's changes and the validator shape it (pure; see the module docs).
#[derive(Debug)]
struct MapState {
    prefix: String,
    active: BTreeMap<DatabaseName, ServerName>,
    /// The store revision the map reflects (events at or before it are already applied).
    revision: i64,
}

/// What applying changes did.
#[derive(Debug, Default)]
struct Applied {
    /// Whether the map differs from before.
    changed: bool,
    /// Keys whose value was not applied, with why (for `mailfront check` and the log).
    rejected: Vec<String>,
}

impl MapState {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            active: BTreeMap::new(),
            revision: 0,
        }
    }

    fn map(&self) -> LocationMap {
        LocationMap::new(
            self.active
                .iter()
                .map(|(database, server)| (database.clone(), server.clone())),
        )
    }

    /// Applies changes in order; bad values and rejected ones keep the database's last value.
    fn apply(&mut self, changes: Vec<Change>, validate: &Validator) -> Applied {
        let mut applied = Applied::default();
        for change in changes {
            let key = match &change {
                Change::Put { key, .. } | Change::Delete { key } => key,
            };
            let shown = clip(&String::from_utf8_lossy(key));
            let database = match database_from_key(&self.prefix, key) {
                Ok(database) => database,
                Err(error) => {
                    if matches!(change, Change::Put { .. }) {
                        tracing::warn!(key = %shown, %error, "etcd key ignored: not a database key");
                        applied.rejected.push(format!("{shown}: {error}"));
                    }
                    continue;
                }
            };
            let value = match change {
                Change::Delete { .. } => {
                    applied.changed |= self.active.remove(&database).is_some();
                    continue;
                }
                Change::Put { value, .. } => value,
            };
            let server = match parse_value(&value) {
                Ok(value) => value.active,
                Err(error) => {
                    tracing::warn!(key = %shown, %error, kept = %self.kept(&database), "invalid location value ignored; the database keeps its last value");
                    applied.rejected.push(format!("{shown}: {error}"));
                    continue;
                }
            };
            if self.active.get(&database) == Some(&server) {
                continue;
            }
            let entry = LocationMap::new([(database.clone(), server.clone())]);
            if let Err(error) = validate(&entry) {
                tracing::error!(key = %shown, %error, kept = %self.kept(&database), "location change rejected; the database keeps its last value");
                applied.rejected.push(format!("{shown}: {error}"));
                continue;
            }
            self.active.insert(database, server);
            applied.changed = true;
        }
        applied
    }

    /// Replaces the whole map with a listing at `revision` (databases no longer listed leave).
    fn replace(
        &mut self,
        kvs: Vec<(Vec<u8>, Vec<u8>)>,
        revision: i64,
        validate: &Validator,
    ) -> Applied {
        let listed: BTreeSet<DatabaseName> = kvs
            .iter()
            .filter_map(|(key, _)| database_from_key(&self.prefix, key).ok())
            .collect();
        let gone: Vec<Change> = self
            .active
            .keys()
            .filter(|database| !listed.contains(*database))
            .map(|database| Change::Delete {
                key: format!("{}{database}", self.prefix).into_bytes(),
            })
            .collect();
        let mut changes = gone;
        changes.extend(
            kvs.into_iter()
                .map(|(key, value)| Change::Put { key, value }),
        );
        let applied = self.apply(changes, validate);
        self.revision = revision;
        applied
    }

    fn kept(&self, database: &DatabaseName) -> String {
        self.active
            .get(database)
            .map_or_else(|| "-".to_owned(), ToString::to_string)
    }
}

/// A short description of an etcd-client error: the gRPC code and message, and the innermost
/// cause (for example "Unavailable: tcp connect error (Connection refused (os error 111))").
fn describe(error: &etcd_client::Error) -> String {
    // etcd_client::Error has no `source()`: start from the error it wraps.
    let (head, mut next): (String, Option<&(dyn std::error::Error + 'static)>) = match error {
        etcd_client::Error::GRpcStatus(status) => (
            format!("{:?}: {}", status.code(), status.message()),
            std::error::Error::source(status),
        ),
        etcd_client::Error::TransportError(transport) => {
            (error.to_string(), std::error::Error::source(transport))
        }
        other => (other.to_string(), None),
    };
    let mut innermost: Option<&(dyn std::error::Error + 'static)> = None;
    while let Some(cause) = next {
        innermost = Some(cause);
        next = cause.source();
    }
    match innermost.map(ToString::to_string) {
        Some(cause) if !head.contains(&cause) => format!("{head} ({cause})"),
        _ => head,
    }
}

/// What a connection needs, read once from the configuration (files included).
#[derive(Clone)]
struct Prepared {
    endpoints: Vec<String>,
    prefix: String,
    timeout: Duration,
    options: ConnectOptions,
}

impl Prepared {
    fn new(config: &EtcdConfig) -> Result<Self, EtcdError> {
        config.validate().map_err(EtcdError::Config)?;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.timeout)
            .with_keep_alive(config.timeout.max(KEEPALIVE_MIN_INTERVAL), config.timeout)
            // Pings without a stream count against the client at etcd (gRPC's
            // PermitWithoutStream is off): ping only while a watch or a request is open.
            .with_keep_alive_while_idle(false)
            .with_require_leader(true);
        if let (Some(user), Some(path)) = (&config.username, &config.password_file) {
            let text = std::fs::read_to_string(path).map_err(|source| EtcdError::ReadFile {
                key: "password_file",
                path: path.clone(),
                source,
            })?;
            let password = Secret::new(text.lines().next().unwrap_or_default().to_owned());
            if password.expose().is_empty() {
                return Err(EtcdError::Config(format!(
                    "location.password_file: {} has an empty first line",
                    path.display()
                )));
            }
            options = options
                .with_user(user.clone(), password.expose().clone())
                .with_auto_token_refresh(true);
        }
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|source| EtcdError::ReadFile {
                key: "ca_file",
                path: path.clone(),
                source,
            })?;
            options =
                options.with_tls(TlsOptions::new().ca_certificate(Certificate::from_pem(pem)));
        }
        Ok(Self {
            endpoints: config.endpoints.clone(),
            prefix: config.prefix.clone(),
            timeout: config.timeout,
            options,
        })
    }

    /// Runs one request with the configured timeout.
    async fn call<T>(
        &self,
        operation: &'static str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, EtcdError> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(EtcdError::Store {
                operation,
                message: describe(&error),
            }),
            Err(_) => Err(EtcdError::Timeout {
                operation,
                after: self.timeout,
            }),
        }
    }

    async fn connect(&self) -> Result<Client, EtcdError> {
        self.call(
            "connect",
            Client::connect(&self.endpoints, Some(self.options.clone())),
        )
        .await
    }

    /// Reads the whole prefix: every `(key, value)` and the store revision of the read.
    async fn list(&self, client: &mut Client) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, i64), EtcdError> {
        let response = self
            .call(
                "range read",
                client.get(
                    self.prefix.as_bytes(),
                    Some(GetOptions::new().with_prefix()),
                ),
            )
            .await?;
        let revision = response
            .header()
            .map(|header| header.revision())
            .ok_or_else(|| EtcdError::Store {
                operation: "range read",
                message: "the answer has no header".to_owned(),
            })?;
        let kvs = response
            .kvs()
            .iter()
            .map(|kv| (kv.key().to_vec(), kv.value().to_vec()))
            .collect();
        Ok((kvs, revision))
    }
}

/// What a map loaded once from etcd looks like (for `mailfront check` and `route`).
#[derive(Clone, Debug)]
pub struct EtcdSnapshot {
    /// The map (entries that failed to parse or validate are left out).
    pub map: LocationMap,
    /// The store revision it was read at.
    pub revision: i64,
    /// Each key that was left out, with why (`<key>: <reason>`).
    pub rejected: Vec<String>,
}

/// Reads the map once, without watching, with the same rules as the source.
pub async fn load(config: &EtcdConfig, validate: &Validator) -> Result<EtcdSnapshot, EtcdError> {
    let prepared = Prepared::new(config)?;
    let mut client = prepared.connect().await?;
    let (kvs, revision) = prepared.list(&mut client).await?;
    let mut state = MapState::new(&prepared.prefix);
    let applied = state.replace(kvs, revision, validate);
    Ok(EtcdSnapshot {
        map: state.map(),
        revision,
        rejected: applied.rejected,
    })
}

/// Makes `server` the active server of `database`, as an operator's switchover does.
///
/// A JSON value's `copies` are kept (and `server` must be one of them); otherwise the value
/// written is the bare server name. The write is a compare-and-swap on the key's revision, so a
/// concurrent writer's change is never silently overwritten with stale copies.
pub async fn put_active(
    config: &EtcdConfig,
    database: &str,
    server: &str,
) -> Result<(), EtcdError> {
    check_name("database name", database).map_err(EtcdError::Invalid)?;
    check_name("server name", server).map_err(EtcdError::Invalid)?;
    let prepared = Prepared::new(config)?;
    let key = format!("{}{database}", prepared.prefix);
    let mut client = prepared.connect().await?;
    for _ in 0..5 {
        let current = prepared
            .call("range read", client.get(key.as_bytes(), None))
            .await?;
        let existing = current.kvs().first();
        let copies = existing
            .and_then(|kv| parse_value(kv.value()).ok())
            .map(|value| value.copies)
            .unwrap_or_default();
        if !copies.is_empty() && !copies.iter().any(|copy| copy.as_str() == server) {
            return Err(EtcdError::Invalid(format!(
                "{server} holds no copy of {database} (copies: {})",
                copies
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let value = encode_value(&LocationValue {
            active: ServerName::new(server),
            copies,
        });
        let unchanged = match existing {
            Some(kv) => Compare::mod_revision(key.as_bytes(), CompareOp::Equal, kv.mod_revision()),
            None => Compare::version(key.as_bytes(), CompareOp::Equal, 0),
        };
        let txn = Txn::new()
            .when([unchanged])
            .and_then([TxnOp::put(key.as_bytes(), value, None)]);
        let response = prepared.call("put", client.txn(txn)).await?;
        if response.succeeded() {
            return Ok(());
        }
    }
    Err(EtcdError::Conflict { key })
}

/// How the source is doing (shared between its task and its handle).
#[derive(Clone, Debug, Default)]
struct Status {
    loaded: bool,
    lists: u64,
    last_error: Option<String>,
}

/// Why a watch ended.
enum WatchEnd {
    /// The watch fell behind the store's history (or started before it).
    Compacted(i64),
    /// The server canceled it.
    Canceled(String),
    /// The stream failed or could not be opened.
    Failed(EtcdError),
    /// The stream ended.
    Closed,
}

impl WatchEnd {
    fn describe(&self) -> String {
        match self {
            Self::Compacted(revision) => {
                format!("etcd watch compacted (history now starts at revision {revision})")
            }
            Self::Canceled(reason) if reason.is_empty() => "etcd canceled the watch".to_owned(),
            Self::Canceled(reason) => format!("etcd canceled the watch: {reason}"),
            Self::Failed(error) => error.to_string(),
            Self::Closed => "etcd closed the watch stream".to_owned(),
        }
    }
}

/// Feeds a [`Locator`] from etcd, following every change (see the module docs).
pub struct EtcdSource {
    task: tokio::task::JoinHandle<()>,
    status: watch::Receiver<Status>,
}

impl EtcdSource {
    /// Starts following the prefix in the background. Fails only on a bad configuration (or an
    /// unreadable password or CA file), never because etcd is unreachable: the source keeps
    /// trying, and the locator has no map until the first load (see [`EtcdSource::wait_loaded`]).
    pub fn start(
        config: &EtcdConfig,
        locator: Arc<Locator>,
        validate: Arc<Validator>,
    ) -> Result<Self, EtcdError> {
        Self::spawn(config, locator, validate, None)
    }

    /// [`EtcdSource::start`], but the first watch starts at `revision` instead of just after
    /// the first load (tests use it to provoke a compacted watch).
    #[doc(hidden)]
    pub fn start_watching_from(
        config: &EtcdConfig,
        locator: Arc<Locator>,
        validate: Arc<Validator>,
        revision: i64,
    ) -> Result<Self, EtcdError> {
        Self::spawn(config, locator, validate, Some(revision))
    }

    fn spawn(
        config: &EtcdConfig,
        locator: Arc<Locator>,
        validate: Arc<Validator>,
        first_watch: Option<i64>,
    ) -> Result<Self, EtcdError> {
        let prepared = Prepared::new(config)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| EtcdError::NoRuntime)?;
        let (status_tx, status) = watch::channel(Status::default());
        let runner = Runner {
            state: MapState::new(&prepared.prefix),
            prepared,
            locator,
            validate,
            status: status_tx,
            first_watch,
            outage: None,
        };
        let task = runtime.spawn(runner.run());
        Ok(Self { task, status })
    }

    /// Whether the map was loaded from etcd at least once.
    pub fn is_loaded(&self) -> bool {
        self.status.borrow().loaded
    }

    /// Waits until the map was loaded from etcd at least once, at most `timeout`; the error says
    /// what the source last met (for `mailfront check` and tests).
    pub async fn wait_loaded(&self, timeout: Duration) -> Result<(), EtcdError> {
        let mut status = self.status.clone();
        let loaded = tokio::time::timeout(timeout, status.wait_for(|s| s.loaded)).await;
        match loaded {
            Ok(Ok(_)) => Ok(()),
            _ => Err(EtcdError::NotLoaded {
                waited: timeout,
                last_error: self.status.borrow().last_error.clone(),
            }),
        }
    }

    /// How many times the whole prefix was read (tests watch re-lists with it).
    #[doc(hidden)]
    pub fn lists(&self) -> u64 {
        self.status.borrow().lists
    }
}

impl Drop for EtcdSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The background task behind an [`EtcdSource`].
struct Runner {
    prepared: Prepared,
    state: MapState,
    locator: Arc<Locator>,
    validate: Arc<Validator>,
    status: watch::Sender<Status>,
    first_watch: Option<i64>,
    /// When the store was lost (`None`: not lost, or never reached yet and not yet failed).
    outage: Option<Instant>,
}

impl Runner {
    async fn run(mut self) {
        let mut backoff = BACKOFF_FIRST;
        loop {
            let mut client = match self.load().await {
                Ok(client) => client,
                Err(error) => {
                    self.lost(&error.to_string());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            let from = self
                .first_watch
                .take()
                .unwrap_or(self.state.revision.saturating_add(1));
            let started = Instant::now();
            let end = self.watch(&mut client, from).await;
            if started.elapsed() > BACKOFF_MAX {
                // The watch was healthy for a while: this is a new failure, not the same one.
                backoff = BACKOFF_FIRST;
            }
            if let WatchEnd::Compacted(revision) = end {
                // Nothing is wrong with the connection: catch up at once.
                self.locator.mark_stale(end.describe());
                tracing::warn!(
                    compact_revision = revision,
                    watched_from = from,
                    "etcd watch fell behind a compaction; reading the whole prefix again"
                );
                continue;
            }
            self.lost(&end.describe());
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Connects, reads the whole prefix and publishes it.
    async fn load(&mut self) -> Result<Client, EtcdError> {
        let mut client = self.prepared.connect().await?;
        let (kvs, revision) = self.prepared.list(&mut client).await?;
        let applied = self.state.replace(kvs, revision, &*self.validate);
        let first = !self.status.borrow().loaded;
        self.publish(applied.changed || first, true);
        let databases = self.state.active.len();
        if first {
            tracing::info!(databases, revision, "location map loaded from etcd");
        } else if let Some(since) = self.outage {
            tracing::info!(
                databases,
                revision,
                outage = ?since.elapsed(),
                "etcd reachable again; location map reloaded"
            );
        }
        self.outage = None;
        self.status.send_modify(|status| {
            status.loaded = true;
            status.lists = status.lists.saturating_add(1);
            status.last_error = None;
        });
        Ok(client)
    }

    /// Publishes the map (logging what moved) if it changed, or marks the locator fresh.
    fn publish(&self, changed: bool, fresh: bool) {
        if changed {
            for moved in self.locator.publish(self.state.map()) {
                tracing::info!(
                    database = %moved.database,
                    from = %moved.from.as_ref().map_or("-", |s| s.as_str()),
                    to = %moved.to.as_ref().map_or("-", |s| s.as_str()),
                    revision = self.state.revision,
                    "active copy moved"
                );
            }
        } else if fresh {
            self.locator.mark_fresh();
        }
    }

    /// Records a failure: the locator is stale; the first failure of an outage is a warning.
    fn lost(&mut self, reason: &str) {
        self.locator.mark_stale(reason);
        self.status
            .send_modify(|status| status.last_error = Some(reason.to_owned()));
        if self.outage.is_some() {
            tracing::debug!(error = %reason, "etcd location store still failing");
            return;
        }
        self.outage = Some(Instant::now());
        if self.status.borrow().loaded {
            tracing::warn!(error = %reason, "lost the etcd location store; routing on the last known map until it is back");
        } else {
            tracing::warn!(error = %reason, "cannot read the etcd location store; no location map yet (logins get a temporary error); retrying");
        }
    }

    /// Watches the prefix from `from` until the watch ends; applies and publishes each response.
    async fn watch(&mut self, client: &mut Client, from: i64) -> WatchEnd {
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let prefix = self.prepared.prefix.clone();
        let mut stream = match self
            .prepared
            .call("watch", client.watch(prefix.as_bytes(), Some(options)))
            .await
        {
            Ok(stream) => stream,
            Err(error) => return WatchEnd::Failed(error),
        };
        loop {
            match stream.message().await {
                Ok(Some(response)) => {
                    if let Some(end) = self.on_response(&response) {
                        return end;
                    }
                }
                Ok(None) => return WatchEnd::Closed,
                Err(error) => {
                    return WatchEnd::Failed(EtcdError::Store {
                        operation: "watch",
                        message: describe(&error),
                    });
                }
            }
        }
    }

    fn on_response(&mut self, response: &WatchResponse) -> Option<WatchEnd> {
        if response.compact_revision() > 0 {
            return Some(WatchEnd::Compacted(response.compact_revision()));
        }
        if response.canceled() {
            return Some(WatchEnd::Canceled(response.cancel_reason().to_owned()));
        }
        let mut changes = Vec::new();
        let mut newest = self.state.revision;
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            // Already in the map (the watch started before the listing's revision).
            if kv.mod_revision() <= self.state.revision {
                continue;
            }
            newest = newest.max(kv.mod_revision());
            // A deletion resets a key's version to zero; a put makes it one or more (etcd's
            // mvccpb.KeyValue). `Event::event_type` would panic on a type it does not know.
            if kv.version() == 0 {
                changes.push(Change::Delete {
                    key: kv.key().to_vec(),
                });
            } else {
                changes.push(Change::Put {
                    key: kv.key().to_vec(),
                    value: kv.value().to_vec(),
                });
            }
        }
        if changes.is_empty() {
            return None;
        }
        let applied = self.state.apply(changes, &*self.validate);
        self.state.revision = newest;
        self.publish(applied.changed, false);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(_: &LocationMap) -> Result<(), String> {
        Ok(())
    }

    fn only_mbx(map: &LocationMap) -> Result<(), String> {
        match map.iter().find(|(_, s)| !s.as_str().starts_with("mbx")) {
            Some((d, s)) => Err(format!("active.{d}: unknown server `{s}`")),
            None => Ok(()),
        }
    }

    fn put(key: &str, value: &str) -> Change {
        Change::Put {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
        }
    }

    fn delete(key: &str) -> Change {
        Change::Delete {
            key: key.as_bytes().to_vec(),
        }
    }

    fn active(state: &MapState, database: &str) -> Option<String> {
        state
            .active
            .get(&DatabaseName::new(database))
            .map(ToString::to_string)
    }

    #[test]
    fn parses_bare_names_and_json() {
        let bare = parse_value(b"mbx1").unwrap();
        assert_eq!(bare.active, "mbx1".into());
        assert!(bare.copies.is_empty());
        assert_eq!(parse_value(b"  mbx1\n").unwrap().active, "mbx1".into());

        let json = parse_value(br#"{"active": "mbx2", "copies": ["mbx1", "mbx2"]}"#).unwrap();
        assert_eq!(json.active, "mbx2".into());
        assert_eq!(json.copies, vec!["mbx1".into(), "mbx2".into()]);
        let no_copies = parse_value(br#"{"active":"mbx2"}"#).unwrap();
        assert!(no_copies.copies.is_empty());
        // Unknown members are ignored (a newer writer may add some).
        assert_eq!(
            parse_value(br#"{"active":"mbx2","since":"2024-01-01"}"#)
                .unwrap()
                .active,
            "mbx2".into()
        );
    }

    #[test]
    fn rejects_bad_values_with_a_reason() {
        for (value, says) in [
            (&b""[..], "empty"),
            (b"   \n", "empty"),
            (b"mbx 1", "whitespace"),
            (b"mbx/1", "`/`"),
            (b"\xff\xfe", "UTF-8"),
            (b"{\"active\": ", "invalid JSON"),
            (b"{\"copies\": [\"mbx1\"]}", "active"),
            (b"{\"active\": 3}", "invalid JSON"),
            (b"{\"active\": \"\"}", "empty"),
            (
                b"{\"active\": \"mbx3\", \"copies\": [\"mbx1\", \"mbx2\"]}",
                "not one of the copies",
            ),
            (
                b"{\"active\": \"mbx1\", \"copies\": [\"mbx1\", \"\"]}",
                "empty",
            ),
            (b"\"mbx1\"", "bare server name"),
            (b"[\"mbx1\"]", "bare server name"),
        ] {
            let error = parse_value(value).unwrap_err();
            assert!(error.contains(says), "{value:?}: {error}");
        }
        // A huge value is not copied into the message (nor into the log).
        let huge = format!("mbx {}", "x".repeat(100_000));
        let error = parse_value(huge.as_bytes()).unwrap_err();
        assert!(
            error.len() < 200
                && error.ends_with("…` contains whitespace, a control character or `/`"),
            "{error}"
        );
    }

    #[test]
    fn encodes_what_it_parses() {
        for text in ["mbx1", r#"{"active":"mbx2","copies":["mbx1","mbx2"]}"#] {
            let value = parse_value(text.as_bytes()).unwrap();
            assert_eq!(encode_value(&value), text);
            assert_eq!(parse_value(encode_value(&value).as_bytes()).unwrap(), value);
        }
    }

    #[test]
    fn database_names_come_from_keys() {
        let prefix = DEFAULT_PREFIX;
        assert_eq!(
            database_from_key(prefix, b"/mailfront/databases/DB01"),
            Ok("DB01".into())
        );
        assert!(database_from_key(prefix, b"/mailfront/databases/").is_err());
        assert!(database_from_key(prefix, b"/mailfront/databases/a/b").is_err());
        assert!(database_from_key(prefix, b"/mailfront/databases/a b").is_err());
        assert!(database_from_key(prefix, b"/other/DB01").is_err());
        assert!(database_from_key(prefix, b"/mailfront/databases/\xff").is_err());
    }

    #[test]
    fn changes_apply_per_database_and_bad_ones_keep_the_last_value() {
        let mut state = MapState::new(DEFAULT_PREFIX);
        let applied = state.apply(
            vec![
                put("/mailfront/databases/DB01", "mbx1"),
                put("/mailfront/databases/DB02", r#"{"active":"mbx2"}"#),
                put("/mailfront/databases/DB03", "{broken"),
                put("/mailfront/databases/DB04", "web9"),
                put("/mailfront/databases/x/y", "mbx1"),
            ],
            &only_mbx,
        );
        assert!(applied.changed);
        assert_eq!(applied.rejected.len(), 3, "{:?}", applied.rejected);
        assert_eq!(active(&state, "DB01").as_deref(), Some("mbx1"));
        assert_eq!(active(&state, "DB02").as_deref(), Some("mbx2"));
        assert_eq!(active(&state, "DB03"), None, "never valid: absent");
        assert_eq!(active(&state, "DB04"), None, "never accepted: absent");

        // An invalid value and a rejected one keep the last good value; others still move.
        let applied = state.apply(
            vec![
                put("/mailfront/databases/DB01", "mbx 9"),
                put("/mailfront/databases/DB02", "web1"),
                put("/mailfront/databases/DB03", "mbx3"),
            ],
            &only_mbx,
        );
        assert!(applied.changed);
        assert_eq!(applied.rejected.len(), 2);
        assert_eq!(active(&state, "DB01").as_deref(), Some("mbx1"));
        assert_eq!(active(&state, "DB02").as_deref(), Some("mbx2"));
        assert_eq!(active(&state, "DB03").as_deref(), Some("mbx3"));

        // Rewriting the same server is not a change; a delete is.
        let applied = state.apply(vec![put("/mailfront/databases/DB01", "mbx1")], &any);
        assert!(!applied.changed);
        let applied = state.apply(
            vec![
                delete("/mailfront/databases/DB01"),
                delete("/mailfront/databases/nothing"),
            ],
            &any,
        );
        assert!(applied.changed);
        assert_eq!(active(&state, "DB01"), None);
        let applied = state.apply(vec![delete("/mailfront/databases/DB01")], &any);
        assert!(!applied.changed);
    }

    #[test]
    fn a_listing_replaces_the_map() {
        let mut state = MapState::new(DEFAULT_PREFIX);
        state.apply(
            vec![
                put("/mailfront/databases/DB01", "mbx1"),
                put("/mailfront/databases/DB02", "mbx2"),
            ],
            &any,
        );
        let kvs = vec![
            (b"/mailfront/databases/DB02".to_vec(), b"mbx1".to_vec()),
            (
                b"/mailfront/databases/DB03".to_vec(),
                b"garbage value".to_vec(),
            ),
        ];
        let applied = state.replace(kvs, 42, &any);
        assert!(applied.changed);
        assert_eq!(state.revision, 42);
        assert_eq!(active(&state, "DB01"), None, "no longer listed");
        assert_eq!(active(&state, "DB02").as_deref(), Some("mbx1"));
        assert_eq!(active(&state, "DB03"), None);
        assert_eq!(applied.rejected.len(), 1);
    }

    #[test]
    fn config_defaults_and_validation() {
        #[derive(Deserialize)]
        #[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
        enum Location {
            Etcd(EtcdConfig),
        }
        #[derive(Deserialize)]
        struct Wrapper {
            location: Location,
        }
        let parsed: Wrapper = toml::from_str(
            "[location]\nbackend = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\n",
        )
        .unwrap();
        let Location::Etcd(config) = parsed.location;
        assert_eq!(config, EtcdConfig::new(["http://127.0.0.1:2379"]));
        assert_eq!(config.prefix, "/mailfront/databases/");
        assert_eq!(config.timeout, Duration::from_secs(5));
        assert_eq!(config.validate(), Ok(()));

        let parsed: Wrapper = toml::from_str(
            "[location]\nbackend = \"etcd\"\nendpoints = [\"https://etcd1:2379\"]\ntimeout = \"250ms\"\nprefix = \"/x/\"\nca_file = \"ca.pem\"\nusername = \"u\"\npassword_file = \"p\"\n",
        )
        .unwrap();
        let Location::Etcd(config) = parsed.location;
        assert_eq!(config.timeout, Duration::from_millis(250));
        assert_eq!(config.validate(), Ok(()));

        assert!(
            toml::from_str::<Wrapper>(
                "[location]\nbackend = \"etcd\"\nendpoints = []\nendpoint = \"x\"\n"
            )
            .is_err()
        );

        let invalid = |edit: &dyn Fn(&mut EtcdConfig)| {
            let mut config = EtcdConfig::new(["http://127.0.0.1:2379"]);
            edit(&mut config);
            config.validate().unwrap_err()
        };
        assert!(invalid(&|c| c.endpoints.clear()).starts_with("location.endpoints: "));
        assert!(
            invalid(&|c| c.endpoints = vec!["127.0.0.1:2379".into()])
                .starts_with("location.endpoints[0]: ")
        );
        assert!(
            invalid(&|c| c.endpoints.push("http://127.0.0.1".into()))
                .starts_with("location.endpoints[1]: ")
        );
        assert!(
            invalid(&|c| c.endpoints.push("http://:2379".into()))
                .starts_with("location.endpoints[1]: ")
        );
        let leak = invalid(&|c| c.endpoints = vec!["http://u:pw-secret@127.0.0.1:2379".into()]);
        assert!(leak.starts_with("location.endpoints[0]: ") && !leak.contains("pw-secret"));
        assert!(
            invalid(&|c| c.endpoints.push("https://127.0.0.1:2379".into()))
                .starts_with("location.endpoints: ")
        );
        assert!(
            invalid(&|c| c.endpoints = vec!["https://127.0.0.1:2379".into()])
                .starts_with("location.ca_file: ")
        );
        assert!(invalid(&|c| c.ca_file = Some("ca.pem".into())).starts_with("location.ca_file: "));
        assert!(invalid(&|c| c.prefix = "/mailfront/db".into()).starts_with("location.prefix: "));
        assert!(invalid(&|c| c.timeout = Duration::ZERO).starts_with("location.timeout: "));
        assert!(
            invalid(&|c| c.username = Some("u".into())).starts_with("location.password_file: ")
        );
        assert!(
            invalid(&|c| c.password_file = Some("p".into())).starts_with("location.username: ")
        );
    }

    #[test]
    fn start_fails_only_on_configuration() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let locator = Arc::new(Locator::new());
        let mut config = EtcdConfig::new(["http://127.0.0.1:2379"]);
        config.username = Some("u".into());
        config.password_file = Some("/nonexistent/password".into());
        let error = runtime
            .block_on(async { EtcdSource::start(&config, Arc::clone(&locator), Arc::new(any)) })
            .err()
            .unwrap();
        assert!(error.to_string().starts_with("location.password_file: "));
        assert!(matches!(
            EtcdSource::start(
                &EtcdConfig::new(["http://127.0.0.1:2379"]),
                locator,
                Arc::new(any)
            ),
            Err(EtcdError::NoRuntime)
        ));
    }

    #[test]
    fn describes_connection_errors_with_their_cause() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let error = runtime
            .block_on(load(&EtcdConfig::new(["http://127.0.0.1:1"]), &any))
            .unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("etcd range read failed: Unavailable"),
            "{text}"
        );
        assert!(text.to_lowercase().contains("refused"), "{text}");
    }
}
