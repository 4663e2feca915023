//! What a node knows of the store: the map as the store's changes and the validator shape it,
//! the revision it reflects, and the entries it rejected (no I/O but the log).

use std::collections::{BTreeMap, BTreeSet};

use mailfront_model::{DatabaseName, ServerName};

use super::value::{clip, database_from_key, parse_value};
use crate::file::Validator;
use crate::{LocationMap, Underway};

/// One change read from the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Change {
    /// The key has this value now.
    Put { key: Vec<u8>, value: Vec<u8> },
    /// The key is gone.
    Delete { key: Vec<u8> },
}

/// The map as the store's changes and the validator shape it (pure; see the module docs).
#[derive(Debug)]
pub(super) struct MapState {
    prefix: String,
    /// Database → the server of its last good value.
    pub(super) active: BTreeMap<DatabaseName, ServerName>,
    /// The moves under way, as the last good values say.
    pub(super) moving: BTreeMap<DatabaseName, Underway>,
    /// The store revision the map reflects (events at or before it are already applied).
    pub(super) revision: i64,
}

/// What applying changes did.
#[derive(Debug, Default)]
pub(super) struct Applied {
    /// Whether the map differs from before.
    pub(super) changed: bool,
    /// Keys whose value was not applied, with why (for `mailfront check` and the log).
    pub(super) rejected: Vec<String>,
}

impl MapState {
    /// An empty map of the keys under `prefix`, at revision 0.
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            active: BTreeMap::new(),
            moving: BTreeMap::new(),
            revision: 0,
        }
    }

    /// The map as a [`LocationMap`].
    pub(super) fn map(&self) -> LocationMap {
        LocationMap::new(
            self.active
                .iter()
                .map(|(database, server)| (database.clone(), server.clone())),
        )
        .with_moving(
            self.moving
                .iter()
                .map(|(database, underway)| (database.clone(), underway.clone())),
        )
    }

    /// Applies changes in order; bad values and rejected ones keep the database's last value.
    pub(super) fn apply(&mut self, changes: Vec<Change>, validate: &Validator) -> Applied {
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
                    applied.changed |= self.moving.remove(&database).is_some();
                    continue;
                }
                Change::Put { value, .. } => value,
            };
            let record = match parse_value(&value) {
                Ok(value) => value,
                Err(error) => {
                    tracing::warn!(key = %shown, %error, kept = %self.kept(&database), "invalid location value ignored; the database keeps its last value");
                    applied.rejected.push(format!("{shown}: {error}"));
                    continue;
                }
            };
            let server = record.active;
            let underway = record.moving.map(|moving| Underway {
                to: moving.to,
                epoch: record.epoch,
            });
            if self.active.get(&database) == Some(&server) {
                // Same server: only a move under way may have started or ended.
                if self.moving.get(&database) != underway.as_ref() {
                    match underway {
                        Some(underway) => self.moving.insert(database, underway),
                        None => self.moving.remove(&database),
                    };
                    applied.changed = true;
                }
                continue;
            }
            let entry = LocationMap::new([(database.clone(), server.clone())]);
            if let Err(error) = validate(&entry) {
                tracing::error!(key = %shown, %error, kept = %self.kept(&database), "location change rejected; the database keeps its last value");
                applied.rejected.push(format!("{shown}: {error}"));
                continue;
            }
            self.active.insert(database.clone(), server);
            match underway {
                Some(underway) => self.moving.insert(database, underway),
                None => self.moving.remove(&database),
            };
            applied.changed = true;
        }
        applied
    }

    /// Replaces the whole map with a listing at `revision` (databases no longer listed leave).
    pub(super) fn replace(
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

    /// The server `database` keeps (`-` for none), for the log.
    fn kept(&self, database: &DatabaseName) -> String {
        self.active
            .get(database)
            .map_or_else(|| "-".to_owned(), ToString::to_string)
    }
}
