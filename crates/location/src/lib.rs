//! Where each mailbox database is active.
//!
//! In the flow of a session (docs/architecture.md) this crate is the *locate* step: given the database the
//! directory named, which mailbox server hosts its active copy right now? The answer changes at
//! run time (a switchover or failover), so the [`Locator`] holds the latest [`LocationMap`] in
//! memory, answers from it without I/O, and lets the rest of mailfront [`Locator::subscribe`] to
//! changes (failover closes the sessions bound to the old server).
//!
//! Sources feed the locator: [`file::FileSource`] reads the embedded location map, a TOML file an
//! operator edits; [`etcd::EtcdSource`] follows a prefix of keys in etcd (the store a mailfront
//! array shares). Both publish the same way.
//!
//! A source that loses its store keeps the last map in force and marks the locator *stale*
//! ([`Locator::mark_stale`]): routing on the last known map beats refusing every login, and a
//! health check or metric can still say that the map may be out of date. Only a locator that
//! never had a map answers [`LocateError::Unavailable`].

pub mod etcd;
pub mod file;
pub mod record;
#[cfg(feature = "testing")]
pub mod testing;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use mailfront_model::{DatabaseName, ServerName};
use tokio::sync::watch;

/// A snapshot of the database → active server map, with the moves under way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocationMap {
    active: BTreeMap<DatabaseName, ServerName>,
    moving: BTreeMap<DatabaseName, Underway>,
}

/// A database whose move the leader has started (placement by group): its sessions close, its
/// new logins wait, and this node acknowledges `epoch` once none of its sessions is left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Underway {
    /// Where it goes.
    pub to: ServerName,
    /// The record's epoch while the move is under way (the flip increments it).
    pub epoch: u64,
}

impl LocationMap {
    /// Builds a map from `(database, active server)` pairs.
    pub fn new(entries: impl IntoIterator<Item = (DatabaseName, ServerName)>) -> Self {
        Self {
            active: entries.into_iter().collect(),
            moving: BTreeMap::new(),
        }
    }

    /// The same map with these moves under way.
    pub fn with_moving(
        mut self,
        moving: impl IntoIterator<Item = (DatabaseName, Underway)>,
    ) -> Self {
        self.moving = moving.into_iter().collect();
        self
    }

    /// The server hosting the active copy of `database`, if the map has it.
    pub fn active(&self, database: &DatabaseName) -> Option<&ServerName> {
        self.active.get(database)
    }

    /// The move of `database` under way, if there is one.
    pub fn moving(&self, database: &DatabaseName) -> Option<&Underway> {
        self.moving.get(database)
    }

    /// Every move under way, by database name.
    pub fn moves_underway(&self) -> impl Iterator<Item = (&DatabaseName, &Underway)> {
        self.moving.iter()
    }

    /// Every `(database, active server)` pair, by database name.
    pub fn iter(&self) -> impl Iterator<Item = (&DatabaseName, &ServerName)> {
        self.active.iter()
    }

    /// The databases whose active server differs between `self` (before) and `after`.
    pub fn moves_to(&self, after: &LocationMap) -> Vec<Move> {
        let mut moves = Vec::new();
        for (database, to) in &after.active {
            let from = self.active.get(database);
            if from != Some(to) {
                moves.push(Move {
                    database: database.clone(),
                    from: from.cloned(),
                    to: Some(to.clone()),
                });
            }
        }
        for (database, from) in &self.active {
            if !after.active.contains_key(database) {
                moves.push(Move {
                    database: database.clone(),
                    from: Some(from.clone()),
                    to: None,
                });
            }
        }
        moves
    }
}

/// One database whose active copy moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// The database.
    pub database: DatabaseName,
    /// Where it was active (`None`: it was not in the map).
    pub from: Option<ServerName>,
    /// Where it is active now (`None`: it left the map).
    pub to: Option<ServerName>,
}

/// Why a database could not be located.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LocateError {
    /// No map was ever loaded (the store has been unreachable since start).
    #[error("no location map has been loaded")]
    Unavailable,
    /// The map has no entry for the database.
    #[error("the location map has no entry for this database")]
    UnknownDatabase,
}

/// Why the locator's map may be out of date, and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Staleness {
    /// What the source said (for example "etcd unreachable: connection refused"). Never a secret.
    pub reason: String,
    /// When the map became stale (the first [`Locator::mark_stale`] since it was last fresh).
    pub since: SystemTime,
}

/// The in-memory answer to "where is this database active?", shared by every session.
///
/// Lookups are lock-free reads of the latest snapshot. Sources call [`Locator::publish`] with
/// each new map; subscribers see the latest map (a `watch` channel, so a slow subscriber skips
/// intermediate maps instead of lagging, and compares against the newest).
///
/// The locator is *fresh* or *stale*: a source marks it stale when it loses its store
/// ([`Locator::mark_stale`]) and fresh again when it has caught up ([`Locator::publish`] and
/// [`Locator::mark_fresh`]). Lookups answer from the last map either way.
#[derive(Debug)]
pub struct Locator {
    current: ArcSwapOption<LocationMap>,
    changes: watch::Sender<Option<Arc<LocationMap>>>,
    stale: ArcSwapOption<Staleness>,
    last_update: ArcSwapOption<SystemTime>,
}

impl Default for Locator {
    fn default() -> Self {
        Self::new()
    }
}

impl Locator {
    /// A locator with no map yet: every lookup is [`LocateError::Unavailable`].
    pub fn new() -> Self {
        let (changes, _) = watch::channel(None);
        Self {
            current: ArcSwapOption::empty(),
            changes,
            stale: ArcSwapOption::empty(),
            last_update: ArcSwapOption::empty(),
        }
    }

    /// The server hosting the active copy of `database`.
    pub fn locate(&self, database: &DatabaseName) -> Result<ServerName, LocateError> {
        let guard = self.current.load();
        let map = guard.as_ref().ok_or(LocateError::Unavailable)?;
        map.active(database)
            .cloned()
            .ok_or(LocateError::UnknownDatabase)
    }

    /// The move of `database` under way, if the current map has one.
    pub fn moving(&self, database: &DatabaseName) -> Option<Underway> {
        self.current.load().as_ref()?.moving(database).cloned()
    }

    /// The current map, if one was loaded.
    pub fn snapshot(&self) -> Option<Arc<LocationMap>> {
        self.current.load_full()
    }

    /// Replaces the map; returns what moved (for the log). Subscribers are notified. The locator
    /// is fresh afterwards, and [`Locator::last_update`] is now.
    pub fn publish(&self, map: LocationMap) -> Vec<Move> {
        let map = Arc::new(map);
        let previous = self.current.swap(Some(Arc::clone(&map)));
        let moves = previous
            .as_deref()
            .map(|before| before.moves_to(&map))
            .unwrap_or_default();
        self.last_update.store(Some(Arc::new(SystemTime::now())));
        self.stale.store(None);
        self.changes.send_replace(Some(map));
        moves
    }

    /// Says that the map may be out of date (the source lost its store); lookups go on answering
    /// from it. A repeated call keeps the first call's [`Staleness::since`] and takes the newest
    /// reason. `reason` must not contain secrets: it may be logged or shown.
    pub fn mark_stale(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.stale.rcu(|current| {
            let since = current
                .as_ref()
                .map_or_else(SystemTime::now, |stale| stale.since);
            Some(Arc::new(Staleness {
                reason: reason.clone(),
                since,
            }))
        });
    }

    /// Says that the map is current again without publishing a new one (the source checked
    /// that nothing changed).
    pub fn mark_fresh(&self) {
        self.stale.store(None);
    }

    /// Whether the map may be out of date (see [`Locator::mark_stale`]).
    pub fn is_stale(&self) -> bool {
        self.stale.load().is_some()
    }

    /// Why and since when the map may be out of date; `None` while it is fresh.
    pub fn staleness(&self) -> Option<Staleness> {
        self.stale.load_full().map(|stale| (*stale).clone())
    }

    /// When a map was last published (`None`: never).
    pub fn last_update(&self) -> Option<SystemTime> {
        self.last_update.load_full().map(|time| *time)
    }

    /// A receiver that sees every new map (the latest one, if several came quickly).
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<LocationMap>>> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> LocationMap {
        LocationMap::new(pairs.iter().map(|(d, s)| ((*d).into(), (*s).into())))
    }

    #[test]
    fn locate_before_and_after_publish() {
        let locator = Locator::new();
        let db01 = DatabaseName::new("DB01");
        assert_eq!(locator.locate(&db01), Err(LocateError::Unavailable));
        assert!(locator.publish(map(&[("DB01", "mbx1")])).is_empty());
        assert_eq!(locator.locate(&db01), Ok("mbx1".into()));
        assert_eq!(
            locator.locate(&"DB99".into()),
            Err(LocateError::UnknownDatabase)
        );
    }

    #[test]
    fn publish_reports_moves_and_notifies() {
        let locator = Locator::new();
        let mut rx = locator.subscribe();
        locator.publish(map(&[("DB01", "mbx1"), ("DB02", "mbx2"), ("DB03", "mbx1")]));
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        let moves = locator.publish(map(&[("DB01", "mbx2"), ("DB02", "mbx2"), ("DB04", "mbx1")]));
        assert_eq!(
            moves,
            vec![
                Move {
                    database: "DB01".into(),
                    from: Some("mbx1".into()),
                    to: Some("mbx2".into())
                },
                Move {
                    database: "DB04".into(),
                    from: None,
                    to: Some("mbx1".into())
                },
                Move {
                    database: "DB03".into(),
                    from: Some("mbx1".into()),
                    to: None
                },
            ]
        );
        assert!(rx.has_changed().unwrap());
        let seen = rx.borrow_and_update().clone().unwrap();
        assert_eq!(seen.active(&"DB01".into()), Some(&"mbx2".into()));
    }

    #[test]
    fn staleness_is_kept_until_fresh_and_publish_makes_fresh() {
        let locator = Locator::new();
        assert!(!locator.is_stale());
        assert_eq!(locator.last_update(), None);

        locator.mark_stale("store unreachable");
        assert!(locator.is_stale());
        let first = locator.staleness().unwrap();
        assert_eq!(first.reason, "store unreachable");
        locator.mark_stale("still unreachable");
        let second = locator.staleness().unwrap();
        assert_eq!(second.reason, "still unreachable");
        assert_eq!(second.since, first.since, "a repeated mark keeps the start");
        assert_eq!(
            locator.locate(&"DB01".into()),
            Err(LocateError::Unavailable)
        );

        let before = SystemTime::now();
        locator.publish(map(&[("DB01", "mbx1")]));
        assert!(!locator.is_stale());
        assert!(locator.last_update().unwrap() >= before);

        // Stale again: lookups still answer from the last map.
        locator.mark_stale("lost it");
        assert!(locator.is_stale());
        assert_eq!(locator.locate(&"DB01".into()), Ok("mbx1".into()));
        locator.mark_fresh();
        assert!(!locator.is_stale());
        assert_eq!(locator.staleness(), None);
    }
}
