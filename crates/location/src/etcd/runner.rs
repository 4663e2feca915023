//! The task behind an [`EtcdSource`](super::EtcdSource): load the prefix, watch it, and on any
//! failure mark the locator stale, back off, reconnect and load again (see the module docs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, WatchOptions, WatchResponse};
use tokio::sync::watch;

use super::EtcdError;
use super::client::{Prepared, describe};
use super::state::{Change, MapState};
use crate::Locator;
use crate::file::Validator;

/// The first delay before reconnecting after a failure.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest delay between two reconnection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How the source is doing (shared between its task and its handle).
#[derive(Clone, Debug, Default)]
pub(super) struct Status {
    /// Whether the map was loaded at least once.
    pub(super) loaded: bool,
    /// How many times the whole prefix was read.
    pub(super) lists: u64,
    /// The store revision of the last read of the whole prefix.
    pub(super) listed_at: i64,
    /// The last failure, cleared by the next load.
    pub(super) last_error: Option<String>,
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
    /// A re-read of the whole prefix was asked for ([`super::Relister`]).
    Relist,
}

impl WatchEnd {
    /// What ended the watch, for the log and the locator.
    fn describe(&self) -> String {
        match self {
            Self::Compacted(revision) => {
                format!("etcd watch compacted (history now starts at revision {revision})")
            }
            Self::Canceled(reason) if reason.is_empty() => "etcd canceled the watch".to_owned(),
            Self::Canceled(reason) => format!("etcd canceled the watch: {reason}"),
            Self::Failed(error) => error.to_string(),
            Self::Closed => "etcd closed the watch stream".to_owned(),
            Self::Relist => "a re-read was asked for".to_owned(),
        }
    }
}

/// The background task behind an [`EtcdSource`](super::EtcdSource).
pub(super) struct Runner {
    prepared: Prepared,
    state: MapState,
    locator: Arc<Locator>,
    validate: Arc<Validator>,
    status: watch::Sender<Status>,
    first_watch: Option<i64>,
    /// Asks for a re-read of the whole prefix.
    relist: Arc<tokio::sync::Notify>,
    /// When the store was lost (`None`: not lost, or never reached yet and not yet failed).
    outage: Option<Instant>,
}

impl Runner {
    /// A runner that feeds `locator` from the store `prepared` connects to, reports to
    /// `status`, and starts its first watch at `first_watch` (default: after the first load).
    pub(super) fn new(
        prepared: Prepared,
        locator: Arc<Locator>,
        validate: Arc<Validator>,
        status: watch::Sender<Status>,
        first_watch: Option<i64>,
        relist: Arc<tokio::sync::Notify>,
    ) -> Self {
        Self {
            relist,
            state: MapState::new(&prepared.prefix),
            prepared,
            locator,
            validate,
            status,
            first_watch,
            outage: None,
        }
    }

    /// Follows the store until the task is aborted.
    pub(super) async fn run(mut self) {
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
            if matches!(end, WatchEnd::Relist) {
                continue;
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
            status.listed_at = revision;
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
            let message = tokio::select! {
                message = stream.message() => message,
                () = self.relist.notified() => return WatchEnd::Relist,
            };
            match message {
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

    /// Applies one watch response; `Some` when it ends the watch.
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
