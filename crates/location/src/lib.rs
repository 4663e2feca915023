//! Where each mailbox database is active.
//!
//! In the flow of a session (DESIGN.md) this crate is the *locate* step: given the database the
//! directory named, which mailbox server hosts its active copy right now? The answer changes at
//! run time (a switchover or failover), so the [`Locator`] holds the latest [`LocationMap`] in
//! memory, answers from it without I/O, and lets the rest of mailfront [`Locator::subscribe`] to
//! changes (failover closes the sessions bound to the old server).
//!
//! Sources feed the locator: [`file::FileSource`] reads the embedded location map, a TOML file an
//! operator edits; other stores (etcd) publish the same way.

pub mod file;

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use mailfront_model::{DatabaseName, ServerName};
use tokio::sync::watch;

/// A snapshot of the database → active server map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocationMap {
    active: BTreeMap<DatabaseName, ServerName>,
}

impl LocationMap {
    /// Builds a map from `(database, active server)` pairs.
    pub fn new(entries: impl IntoIterator<Item = (DatabaseName, ServerName)>) -> Self {
        Self {
            active: entries.into_iter().collect(),
        }
    }

    /// The server hosting the active copy of `database`, if the map has it.
    pub fn active(&self, database: &DatabaseName) -> Option<&ServerName> {
        self.active.get(database)
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

/// The in-memory answer to "where is this database active?", shared by every session.
///
/// Lookups are lock-free reads of the latest snapshot. Sources call [`Locator::publish`] with
/// each new map; subscribers see the latest map (a `watch` channel, so a slow subscriber skips
/// intermediate maps instead of lagging, and compares against the newest).
#[derive(Debug)]
pub struct Locator {
    current: ArcSwapOption<LocationMap>,
    changes: watch::Sender<Option<Arc<LocationMap>>>,
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

    /// The current map, if one was loaded.
    pub fn snapshot(&self) -> Option<Arc<LocationMap>> {
        self.current.load_full()
    }

    /// Replaces the map; returns what moved (for the log). Subscribers are notified.
    pub fn publish(&self, map: LocationMap) -> Vec<Move> {
        let map = Arc::new(map);
        let previous = self.current.swap(Some(Arc::clone(&map)));
        let moves = previous
            .as_deref()
            .map(|before| before.moves_to(&map))
            .unwrap_or_default();
        self.changes.send_replace(Some(map));
        moves
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
}
