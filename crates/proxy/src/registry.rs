//! The live proxied sessions, indexed by database and backend server, so that mailfront can
//! follow a database when its active copy moves (docs/architecture.md, "Failover") and so that operators
//! can list and close sessions.
//!
//! A session registers before it logs in at its backend (so that a move waits for logins in
//! flight too) and unregisters when its [`Registration`] is dropped, after its backend
//! connection is closed. When the location map changes, [`Registry::apply_map`] stops every
//! session bound to a server that no longer hosts its database's active copy, and every session
//! of a database whose move is under way (safe moves: the node acknowledges the move once
//! [`Registry::live`] says none is left); the session says goodbye in its protocol and closes,
//! and the client's next login goes to the new server. Those closes are spread over
//! `disconnect_spread`, so that a thousand clients do not all reconnect in the same millisecond.
//!
//! A pin (`pin:<address>`, [`mailfront_model::group::pin_of`]) is a database of one user that
//! wins over the user's group: while it moves (pinned, re-pinned, unpinned), every session of
//! that user counts and is stopped, whatever database it was registered under.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use mailfront_location::{LocationMap, Locator};
use mailfront_model::group::{pin_of, pinned_user};
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
    /// The OAuth token the session was opened with was revoked (introspection says inactive).
    TokenRevoked,
    /// The OAuth token the session was opened with expired (`oauth.session_max = "token"`).
    TokenExpired,
}

impl StopReason {
    /// A short word for the session log.
    pub fn as_str(&self) -> &'static str {
        match self {
            StopReason::Failover { .. } => "failover",
            StopReason::Kicked => "kicked",
            StopReason::Shutdown => "shutdown",
            StopReason::TokenRevoked => "token-revoked",
            StopReason::TokenExpired => "token-expired",
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
    /// When the session is to close (a spread close), if not at once.
    not_before: OnceLock<tokio::time::Instant>,
}

impl Stop {
    fn fire(&self, reason: StopReason) -> bool {
        self.fire_after(reason, Duration::ZERO)
    }

    /// Fires with the close `delay` from now (a relay closes then; a login in flight at once).
    fn fire_after(&self, reason: StopReason, delay: Duration) -> bool {
        if self.reason.set(reason).is_ok() {
            if !delay.is_zero() {
                let _ = self.not_before.set(tokio::time::Instant::now() + delay);
            }
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
    /// The OAuth token the session was opened with, re-checked while it lasts.
    token: Option<Arc<WatchedToken>>,
}

/// A session's OAuth token, as the re-checks need it.
#[derive(Debug)]
pub struct WatchedToken {
    /// The access token.
    pub token: mailfront_model::Secret<Vec<u8>>,
    /// When it expires (Unix seconds).
    pub expires: u64,
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
    /// Over how long failover and move closes are spread, in milliseconds.
    spread_ms: AtomicU64,
}

/// A session's place in the registry; dropping it unregisters the session.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Registry>,
    key: u64,
    stop: Arc<Stop>,
}

impl Registration {
    /// Completes when the session is to stop, with the reason (for a spread close, at its turn).
    pub async fn stopped(&self) -> StopReason {
        loop {
            if let Some(reason) = self.stop.reason.get() {
                if let Some(at) = self.stop.not_before.get() {
                    tokio::time::sleep_until(*at).await;
                }
                return reason.clone();
            }
            self.stop.notify.notified().await;
        }
    }

    /// The reason, if the session was told to stop.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop.reason.get().cloned()
    }

    /// Records that the session was opened with an OAuth token, for the re-checks
    /// ([`Registry::with_tokens`]); forgotten with the registration.
    pub fn watch_token(&self, token: WatchedToken) {
        if let Some(entry) = self.registry.lock().sessions.get_mut(&self.key) {
            entry.token = Some(Arc::new(token));
        }
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
            spread_ms: AtomicU64::new(0),
        }
    }

    /// Spreads the closes of a failover or move over `spread` (zero: all at once).
    pub fn set_disconnect_spread(&self, spread: Duration) {
        let ms = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX);
        self.spread_ms.store(ms, Ordering::Relaxed);
    }

    /// A random delay within the spread.
    fn spread_delay(&self) -> Duration {
        match self.spread_ms.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            ms => Duration::from_millis(rand::random::<u64>() % ms),
        }
    }

    /// How many sessions of `database` are registered (logging in or proxied); for a pin, every
    /// session of its user.
    pub fn live(&self, database: &DatabaseName) -> usize {
        let inner = self.lock();
        match pinned_user(database) {
            Some(user) => inner
                .sessions
                .values()
                .filter(|e| of_pin(&e.info, database, user))
                .count(),
            None => inner.by_database.get(database).map_or(0, HashSet::len),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way that
        // matters more than losing the registry, so recover the data.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a session about to log in (or logged in) at `info.server`. If the database
    /// moved away from that server meanwhile, or its move is under way, the registration is
    /// stopped at once, so that no session keeps using the old server after the change was seen.
    pub fn register(self: &Arc<Self>, info: SessionInfo) -> Registration {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let stop = Arc::new(Stop::default());
        let database = info.database.clone();
        let server = info.server.clone();
        let user = info.user.clone();
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
                    token: None,
                },
            );
        }
        // After inserting: either this check sees the new map, or the change's apply_map sees
        // this session. (A publish happens before its apply_map runs.)
        let pin = pin_of(&user);
        if database != pin
            && let Ok(pinned) = self.locator.locate(&pin)
        {
            // The user was pinned after this login looked the user up: it goes by the pin.
            let to = self.locator.moving(&pin).map_or(pinned, |u| u.to);
            stop.fire(StopReason::Failover { to: Some(to) });
        }
        match self.locator.locate(&database) {
            Ok(active) if active == server => {
                if let Some(underway) = self.locator.moving(&database) {
                    stop.fire(StopReason::Failover {
                        to: Some(underway.to),
                    });
                }
            }
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

    /// Stops the sessions for which `stop` says so, for `reason`, at once; returns how many.
    pub fn stop_where(&self, stop: impl Fn(&SessionInfo) -> bool, reason: &StopReason) -> usize {
        self.lock()
            .sessions
            .values()
            .filter(|e| stop(&e.info))
            .filter(|e| e.stop.fire(reason.clone()))
            .count()
    }

    /// The live sessions opened with an OAuth token: each one's key and token.
    pub fn with_tokens(&self) -> Vec<(u64, Arc<WatchedToken>)> {
        self.lock()
            .sessions
            .iter()
            .filter_map(|(key, entry)| Some((*key, Arc::clone(entry.token.as_ref()?))))
            .collect()
    }

    /// Stops the session `key` (from [`Registry::with_tokens`]) for `reason`, if it still lives;
    /// returns its user for the log.
    pub fn stop_session(&self, key: u64, reason: &StopReason) -> Option<String> {
        let inner = self.lock();
        let entry = inner.sessions.get(&key)?;
        entry
            .stop
            .fire(reason.clone())
            .then(|| entry.info.user.clone())
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

    /// Stops every session whose server no longer hosts its database's active copy in `map`,
    /// and every session of a database whose move is under way (databases that left the map
    /// are not touched: absence is not a move), each at a random moment within the disconnect
    /// spread. Returns how many sessions were stopped, per database and server.
    pub fn apply_map(&self, map: &LocationMap) -> Vec<(DatabaseName, ServerName, usize)> {
        let inner = self.lock();
        let mut stopped = Vec::new();
        for (database, keys) in &inner.by_database {
            let Some(active) = map.active(database) else {
                continue;
            };
            let underway = map.moving(database);
            let to = underway.map_or(active, |u| &u.to);
            let moving = keys
                .iter()
                .filter_map(|key| inner.sessions.get(key))
                .filter(|e| &e.info.server != active || underway.is_some());
            self.stop_spread(moving, database, to, &mut stopped);
        }
        // A pin moving (or present): its user's sessions under any other database go too.
        let pins = map
            .iter()
            .filter_map(|(pin, active)| Some((pin, pinned_user(pin)?, active)));
        for (pin, user, active) in pins {
            let to = map.moving(pin).map_or(active, |u| &u.to);
            let elsewhere = inner
                .sessions
                .values()
                .filter(|e| e.info.user.eq_ignore_ascii_case(user) && &e.info.database != pin);
            self.stop_spread(elsewhere, pin, to, &mut stopped);
        }
        stopped
    }

    /// Stops `entries` for a move of `database` to `to`, each at its own moment within the
    /// disconnect spread; adds how many were stopped, per server, to `stopped`.
    fn stop_spread<'a>(
        &self,
        entries: impl Iterator<Item = &'a Entry>,
        database: &DatabaseName,
        to: &ServerName,
        stopped: &mut Vec<(DatabaseName, ServerName, usize)>,
    ) {
        let mut per_server: HashMap<&ServerName, usize> = HashMap::new();
        for entry in entries {
            let reason = StopReason::Failover {
                to: Some(to.clone()),
            };
            if entry.stop.fire_after(reason, self.spread_delay()) {
                *per_server.entry(&entry.info.server).or_default() += 1;
            }
        }
        for (server, count) in per_server {
            stopped.push((database.clone(), server.clone(), count));
        }
    }
}

/// Whether `info` is a session of `pin` (the pin of `user`): under the pin, or of its user.
fn of_pin(info: &SessionInfo, pin: &DatabaseName, user: &str) -> bool {
    &info.database == pin || info.user.eq_ignore_ascii_case(user)
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
                let underway = map.moving(&database);
                let to = underway
                    .map(|u| &u.to)
                    .or(map.active(&database))
                    .map_or("-", |s| s.as_str());
                tracing::info!(
                    database = %database,
                    from = %server,
                    to = %to,
                    sessions = count,
                    "{}",
                    if underway.is_some() {
                        "move under way: closing sessions before the flip"
                    } else {
                        "failover: closing sessions on the previous server"
                    }
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

    fn marked(active: &str, to: &str) -> LocationMap {
        map(&[("g1", active)]).with_moving([(
            DatabaseName::new("g1"),
            mailfront_location::Underway {
                to: to.into(),
                epoch: 1,
            },
        )])
    }

    #[tokio::test(start_paused = true)]
    async fn a_move_under_way_stops_every_session_of_the_group_spread_over_time() {
        let locator = Arc::new(Locator::new());
        locator.publish(map(&[("g1", "sm1"), ("g2", "sm1")]));
        let registry = Arc::new(Registry::new(Arc::clone(&locator)));
        registry.set_disconnect_spread(Duration::from_secs(2));
        let sessions: Vec<_> = (0..20)
            .map(|i| registry.register(info(&format!("s{i}"), "alice", "g1", "sm1")))
            .collect();
        let other = registry.register(info("o", "bob", "g2", "sm1"));
        assert_eq!(registry.live(&DatabaseName::new("g1")), 20);

        // Marked moving: the group's server has not changed yet, but its sessions must go
        // (the leader flips it only once none is left on any node).
        let stopped = registry.apply_map(&marked("sm1", "sm2"));
        assert_eq!(
            stopped,
            vec![(DatabaseName::new("g1"), ServerName::new("sm1"), 20)]
        );
        assert_eq!(other.stop_reason(), None);
        // Each closes at its own moment within the spread, none after it.
        let started = tokio::time::Instant::now();
        let mut at = Vec::new();
        for session in &sessions {
            let reason = tokio::time::timeout(Duration::from_secs(3), session.stopped())
                .await
                .unwrap();
            assert_eq!(
                reason,
                StopReason::Failover {
                    to: Some("sm2".into())
                }
            );
            at.push(session.stop.not_before.get().map_or(started, |t| *t) - started);
        }
        assert!(at.iter().all(|d| *d < Duration::from_secs(2)), "{at:?}");
        let distinct: HashSet<_> = at.iter().collect();
        assert!(distinct.len() > 10, "closes not spread: {at:?}");
        drop(sessions);
        assert_eq!(registry.live(&DatabaseName::new("g1")), 0);
    }

    #[test]
    fn a_login_of_a_group_under_a_move_is_stopped_at_once() {
        let locator = Arc::new(Locator::new());
        locator.publish(marked("sm1", "sm2"));
        let registry = Arc::new(Registry::new(Arc::clone(&locator)));
        let late = registry.register(info("late", "alice", "g1", "sm1"));
        assert_eq!(
            late.stop_reason(),
            Some(StopReason::Failover {
                to: Some("sm2".into())
            })
        );
        // Once flipped, a session on the new server stays.
        locator.publish(map(&[("g1", "sm2")]));
        let fine = registry.register(info("fine", "alice", "g1", "sm2"));
        assert_eq!(fine.stop_reason(), None);
    }

    #[test]
    fn a_pin_under_way_stops_and_counts_its_users_sessions_under_any_database() {
        let locator = Arc::new(Locator::new());
        locator.publish(map(&[("g1", "sm1")]));
        let registry = Arc::new(Registry::new(Arc::clone(&locator)));
        let alice = registry.register(info("a", "Alice@example.com", "g1", "sm1"));
        let bob = registry.register(info("b", "bob@example.com", "g1", "sm1"));
        let pin = DatabaseName::new("pin:alice@example.com");
        assert_eq!(registry.live(&pin), 1, "alice's session counts for her pin");
        let pinned = map(&[("g1", "sm1"), ("pin:alice@example.com", "sm1")]).with_moving([(
            pin.clone(),
            mailfront_location::Underway {
                to: "sm2".into(),
                epoch: 0,
            },
        )]);
        locator.publish(pinned.clone());
        let stopped = registry.apply_map(&pinned);
        assert_eq!(stopped, vec![(pin.clone(), ServerName::new("sm1"), 1)]);
        assert_eq!(
            alice.stop_reason(),
            Some(StopReason::Failover {
                to: Some("sm2".into())
            })
        );
        assert_eq!(bob.stop_reason(), None, "the group's other users stay");
        // A login that looked alice up before the pin (under the group) is stopped at once.
        let late = registry.register(info("late", "alice@example.com", "g1", "sm1"));
        assert!(late.stop_reason().is_some());
        drop((alice, late));
        assert_eq!(registry.live(&pin), 0);
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
