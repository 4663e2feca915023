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
//!
//! # Where is what
//!
//! The keys and their checks are in `config`; the value format in `value`; what a node knows of
//! the store (the map, its revision, the rejected keys) in `state`; requests to etcd in
//! `client`; the task that follows the store in `runner`. This module holds the public API:
//! [`EtcdSource`], [`load`] and [`put_active`].

mod client;
mod config;
pub mod records;
mod runner;
mod state;
mod value;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use mailfront_model::ServerName;
use tokio::sync::watch;

pub use config::EtcdConfig;
pub use value::{LocationValue, database_from_key, encode_value, parse_value};

/// A connection to the cluster a `[location]` names, for the array's other records (login
/// blocks): the same endpoints, user, TLS and per-request timeout as the location store.
#[derive(Clone)]
pub struct EtcdConnection(Prepared);

impl EtcdConnection {
    /// Checks `config` and reads the files it names; connects nothing yet.
    pub fn new(config: &EtcdConfig) -> Result<Self, EtcdError> {
        Prepared::new(config).map(Self)
    }

    /// Connects to the cluster (within the timeout).
    pub async fn connect(&self) -> Result<etcd_client::Client, EtcdError> {
        self.0.connect().await
    }

    /// Runs one request within the timeout; `operation` names it in the error.
    pub async fn call<T>(
        &self,
        operation: &'static str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, EtcdError> {
        self.0.call(operation, request).await
    }

    /// The prefix of the location store's own keys (others must not overlap it).
    pub fn location_prefix(&self) -> &str {
        &self.0.prefix
    }
}

use crate::file::Validator;
use crate::{LocationMap, Locator};
use client::Prepared;
use runner::{Runner, Status};
use state::MapState;
use value::check_name;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/mailfront/databases/";
/// The default timeout of each etcd request (and of connecting, and of a keep-alive ping).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

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
        let record = existing.and_then(|kv| parse_value(kv.value()).ok());
        let copies = record
            .as_ref()
            .map(|value| value.copies.clone())
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
        // Like an operator's `etcdctl put` of the server, but keeping what the value says
        // besides (copies, and the Active Manager's bookkeeping, untouched).
        let kept = record.unwrap_or_else(|| LocationValue::active_on(ServerName::new(server)));
        let value = encode_value(&LocationValue {
            active: ServerName::new(server),
            copies,
            ..kept
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

/// Feeds a [`Locator`] from etcd, following every change (see the module docs).
pub struct EtcdSource {
    task: tokio::task::JoinHandle<()>,
    status: watch::Receiver<Status>,
    relist: Arc<tokio::sync::Notify>,
}

/// Asks an [`EtcdSource`] to read the whole prefix again, and waits for it: after it answers,
/// the locator's map is at least as new as the store was when it was asked (a node that just
/// said it is present uses it so that it routes by no map older than its presence).
#[derive(Clone)]
pub struct Relister {
    status: watch::Receiver<Status>,
    relist: Arc<tokio::sync::Notify>,
}

impl Relister {
    /// Asks for a re-read and waits up to `timeout` for one at store revision `revision` or
    /// later to complete; `false` if none did.
    pub async fn relist(&self, revision: i64, timeout: Duration) -> bool {
        let mut status = self.status.clone();
        self.relist.notify_one();
        tokio::time::timeout(timeout, status.wait_for(|s| s.listed_at >= revision))
            .await
            .is_ok_and(|seen| seen.is_ok())
    }
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
        let relist = Arc::new(tokio::sync::Notify::new());
        let runner = Runner::new(
            prepared,
            locator,
            validate,
            status_tx,
            first_watch,
            Arc::clone(&relist),
        );
        let task = runtime.spawn(runner.run());
        Ok(Self {
            task,
            status,
            relist,
        })
    }

    /// A handle that asks this source for a fresh read of the whole prefix.
    pub fn relister(&self) -> Relister {
        Relister {
            status: self.status.clone(),
            relist: Arc::clone(&self.relist),
        }
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

#[cfg(test)]
mod tests;
