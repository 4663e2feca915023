//! The live proxied sessions, indexed by database and backend server, so that mailfront can
//! follow a database when its active copy moves (docs/architecture.md, "Failover") and so that operators
//! can list and close sessions.
//!
//! A session registers once it is logged in at its backend and unregisters when its
//! [`Registration`] is dropped. When the location map changes, [`Registry::apply_map`] stops
//! every session bound to a server that no longer hosts its database's active copy; the session
//! says goodbye in its protocol and closes, and the client's next login goes to the new server.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use mailfront_location::{LocationMap, Locator};
use mailfront_model::{DatabaseName, Protocol, ServerName};
use tokio::sync::Notify;

/// Why a session was told to stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The database's active copy moved away from the session's server.
    Failover {
        /// Where it is active now (`None`: it left the map).
        to: Option<ServerName>,
    },
    /// An operator closed it.
    Kicked,
    /// The node is shutting down.
    Shutdown,
}

impl StopReason {
    /// A short word for the session log.
    pub fn as_str(&self) -> &'static str {
        match self {
            StopReason::Failover { .. } => "failover",
            StopReason::Kicked => "kicked",
            StopReason::Shutdown => "shutdown",
        }
    }
}

/// What is known about a live session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session id (as in the logs).
    pub id: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// The user.
    pub user: String,
    /// The user's database.
    pub database: DatabaseName,
    /// The backend server it is proxied to.
    pub server: ServerName,
    /// The client's address.
    pub client: SocketAddr,
    /// When it was proxied.
    pub since: SystemTime,
}

/// Filters for listing and closing sessions; `None` matches anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this user (case-insensitive).
    pub user: Option<String>,
    /// Only this backend server.
    pub server: Option<ServerName>,
    /// Only this database.
    pub database: Option<DatabaseName>,
    /// Only this protocol.
    pub protocol: Option<Protocol>,
}

impl Filter {
    fn matches(&self, info: &SessionInfo) -> bool {
        self.user
            .as_ref()
            .is_none_or(|u| u.eq_ignore_ascii_case(&info.user))
            && self.server.as_ref().is_none_or(|s| s == &info.server)
            && self.database.as_ref().is_none_or(|d| d == &info.database)
            && self.protocol.is_none_or(|p| p == info.protocol)
    }
}

#[derive(Debug, Default)]
struct Stop {
    notify: Notify,
    reason: OnceLock<StopReason>,
}

impl Stop {
    fn fire(&self, reason: StopReason) -> bool {
        if self.reason.set(reason).is_ok() {
            // `notify_one` keeps a permit if the session is not waiting yet.
            self.notify.notify_one();
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Entry {
    info: Arc<SessionInfo>,
    stop: Arc<Stop>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<u64, Entry>,
    by_database: HashMap<DatabaseName, HashSet<u64>>,
}

/// The registry of live proxied sessions. One per node.
#[derive(Debug)]
pub struct Registry {
    locator: Arc<Locator>,
    next: AtomicU64,
    inner: Mutex<Inner>,
}

/// A session's place in the registry; dropping it unregisters the session.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Registry>,
    key: u64,
    stop: Arc<Stop>,
}

impl Registration {
    /// Completes when the session is told to stop, with the reason.
    pub async fn stopped(&self) -> StopReason {
        loop {
            if let Some(reason) = self.stop.reason.get() {
                return reason.clone();
            }
            self.stop.notify.notified().await;
        }
    }

    /// The reason, if the session was told to stop.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop.reason.get().cloned()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.unregister(self.key);
    }
}

impl Registry {
    /// An empty registry that checks new sessions against `locator`.
    pub fn new(locator: Arc<Locator>) -> Self {
        Self {
            locator,
            next: AtomicU64::new(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way that
        // matters more than losing the registry, so recover the data.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a session that is logged in at `info.server`. If the database moved away
    /// from that server meanwhile, the registration is stopped at once, so that no session
    /// keeps using the old server after the change was seen.
    pub fn register(self: &Arc<Self>, info: SessionInfo) -> Registration {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let stop = Arc::new(Stop::default());
        let database = info.database.clone();
        let server = info.server.clone();
        {
            let mut inner = self.lock();
            inner
                .by_database
                .entry(database.clone())
                .or_default()
                .insert(key);
            inner.sessions.insert(
                key,
                Entry {
                    info: Arc::new(info),
                    stop: Arc::clone(&stop),
                },
            );
        }
        // After inserting: either this check sees the new map, or the change's apply_map sees
        // this session. (A publish happens before its apply_map runs.)
        match self.locator.locate(&database) {
            Ok(active) if active == server => {}
            Ok(active) => {
                stop.fire(StopReason::Failover { to: Some(active) });
            }
            Err(_) => {
                // No map at all, or the database left it: nothing says the session is wrong.
            }
        }
        Registration {
            registry: Arc::clone(self),
            key,
            stop,
        }
    }

    fn unregister(&self, key: u64) {
        let mut inner = self.lock();
        if let Some(entry) = inner.sessions.remove(&key)
            && let Some(keys) = inner.by_database.get_mut(&entry.info.database)
        {
            keys.remove(&key);
            if keys.is_empty() {
                inner.by_database.remove(&entry.info.database);
            }
        }
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The live sessions matching `filter`.
    pub fn list(&self, filter: &Filter) -> Vec<Arc<SessionInfo>> {
        self.lock()
            .sessions
            .values()
            .filter(|e| filter.matches(&e.info))
            .map(|e| Arc::clone(&e.info))
            .collect()
    }

    /// Stops the sessions matching `filter` for `reason`; returns how many were stopped.
    pub fn stop(&self, filter: &Filter, reason: &StopReason) -> usize {
        self.lock()
            .sessions
            .values()
            .filter(|e| filter.matches(&e.info))
            .filter(|e| e.stop.fire(reason.clone()))
            .count()
    }

    /// Stops every session whose server no longer hosts its database's active copy in `map`
    /// (databases that left the map are not touched: absence is not a move). Returns how many
    /// sessions were stopped, per database.
    pub fn apply_map(&self, map: &LocationMap) -> Vec<(DatabaseName, ServerName, usize)> {
        let inner = self.lock();
        let mut stopped = Vec::new();
        for (database, keys) in &inner.by_database {
            let Some(active) = map.active(database) else {
                continue;
            };
            let mut per_server: HashMap<&ServerName, usize> = HashMap::new();
            for key in keys {
                if let Some(entry) = inner.sessions.get(key)
                    && &entry.info.server != active
                    && entry.stop.fire(StopReason::Failover {
                        to: Some(active.clone()),
                    })
                {
                    *per_server.entry(&entry.info.server).or_default() += 1;
                }
            }
            for (server, count) in per_server {
                stopped.push((database.clone(), server.clone(), count));
            }
        }
        stopped
    }
}

/// Follows the locator and applies every new map to the registry, until the locator is gone.
pub async fn follow_locations(
    registry: Arc<Registry>,
    mut changes: tokio::sync::watch::Receiver<Option<Arc<LocationMap>>>,
) {
    loop {
        let map = changes.borrow_and_update().clone();
        if let Some(map) = map {
            for (database, server, count) in registry.apply_map(&map) {
                tracing::info!(
                    database = %database,
                    from = %server,
                    to = %map.active(&database).map_or("-", |s| s.as_str()),
                    sessions = count,
                    "failover: closing sessions on the previous server"
                );
            }
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> LocationMap {
        LocationMap::new(pairs.iter().map(|(d, s)| ((*d).into(), (*s).into())))
    }

    fn info(id: &str, user: &str, db: &str, server: &str) -> SessionInfo {
        SessionInfo {
            id: id.into(),
            protocol: Protocol::Imap,
            user: user.into(),
            database: db.into(),
            server: server.into(),
            client: "127.0.0.1:1".parse().unwrap(),
            since: SystemTime::now(),
        }
    }

    #[tokio::test]
    async fn a_move_stops_exactly_the_sessions_on_the_old_server() {
        let locator = Arc::new(Locator::new());
        locator.publish(map(&[("DB01", "mbx1"), ("DB02", "mbx2")]));
        let registry = Arc::new(Registry::new(Arc::clone(&locator)));
        let a = registry.register(info("a", "alice", "DB01", "mbx1"));
        let b = registry.register(info("b", "bob", "DB02", "mbx2"));
        let a2 = registry.register(info("a2", "alice", "DB01", "mbx1"));
        assert_eq!(registry.len(), 3);

        let stopped = registry.apply_map(&map(&[("DB01", "mbx2"), ("DB02", "mbx2")]));
        assert_eq!(
            stopped,
            vec![(DatabaseName::new("DB01"), ServerName::new("mbx1"), 2)]
        );
        let expected = StopReason::Failover {
            to: Some("mbx2".into()),
        };
        assert_eq!(
            tokio::time::timeout(std::time::Duration::from_secs(1), a.stopped())
                .await
                .unwrap(),
            expected
        );
        assert_eq!(a2.stop_reason(), Some(expected));
        assert_eq!(b.stop_reason(), None);
        // Applying the same map again stops nothing more.
        assert!(registry.apply_map(&map(&[("DB01", "mbx2")])).is_empty());
        drop(a);
        drop(a2);
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn a_session_registering_after_the_move_is_stopped_at_once() {
        let locator = Arc::new(Locator::new());
        locator.publish(map(&[("DB01", "mbx2")]));
        let registry = Arc::new(Registry::new(Arc::clone(&locator)));
        let late = registry.register(info("late", "alice", "DB01", "mbx1"));
        assert_eq!(
            late.stop_reason(),
            Some(StopReason::Failover {
                to: Some("mbx2".into())
            })
        );
        let fine = registry.register(info("fine", "alice", "DB01", "mbx2"));
        assert_eq!(fine.stop_reason(), None);
    }

    #[test]
    fn list_and_stop_by_filter() {
        let locator = Arc::new(Locator::new());
        let registry = Arc::new(Registry::new(locator));
        let _a = registry.register(info("a", "Alice", "DB01", "mbx1"));
        let _b = registry.register(info("b", "bob", "DB02", "mbx2"));
        let by_user = Filter {
            user: Some("alice".into()),
            ..Filter::default()
        };
        assert_eq!(registry.list(&by_user).len(), 1);
        let by_server = Filter {
            server: Some("mbx2".into()),
            ..Filter::default()
        };
        assert_eq!(registry.list(&by_server)[0].id, "b");
        assert_eq!(registry.list(&Filter::default()).len(), 2);
        assert_eq!(registry.stop(&by_server, &StopReason::Kicked), 1);
        // A session is stopped once.
        assert_eq!(registry.stop(&by_server, &StopReason::Kicked), 0);
    }

    #[tokio::test]
    async fn following_the_locator() {
        let locator = Arc::new(Locator::new());
        locator.publish(map(&[("DB01", "mbx1")]));
        let registry = Arc::new(Registry::new(Arc::clone(&locator)));
        let session = registry.register(info("a", "alice", "DB01", "mbx1"));
        let task = tokio::spawn(follow_locations(Arc::clone(&registry), locator.subscribe()));
        locator.publish(map(&[("DB01", "mbx2")]));
        let reason = tokio::time::timeout(std::time::Duration::from_secs(5), session.stopped())
            .await
            .unwrap();
        assert_eq!(
            reason,
            StopReason::Failover {
                to: Some("mbx2".into())
            }
        );
        task.abort();
    }
}
