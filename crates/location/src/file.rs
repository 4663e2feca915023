//! The embedded location map: a TOML file that an operator edits to switch a database over.
//!
//! ```toml
//! # database = "server hosting its active copy"
//! [active]
//! DB01 = "mbx1"
//! DB02 = "mbx2"
//! ```
//!
//! The file is watched; every valid change is published to the [`Locator`]. An invalid change
//! (bad syntax, or a server the configuration does not define) is logged and ignored: the last
//! good map stays in force, because routing on a half-written file would send users nowhere.
//!
//! The Active Manager keeps its bookkeeping in the same file ([`crate::record`]), in two
//! optional tables that an operator may also edit:
//!
//! ```toml
//! [database.DB01]          # written by failovers and by `mailfront admin move|hold`
//! epoch = 3
//! hold = false
//! moved = { by = "failover", reason = "mbx1 down", at = 1764750000 }
//! # moving = { to = "mbx2", since = 1764750100 }   # a group's move under way
//!
//! [server.mbx1]            # `mailfront admin maintenance mbx1 on`
//! maintenance = true
//! ```
//!
//! When mailfront writes the file ([`write_records`]) it writes it whole, atomically (a new file
//! renamed over the old one), so comments are not kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mailfront_filewatch::{FileWatch, spawn_poller};
use mailfront_model::{DatabaseName, ServerName};
use serde::{Deserialize, Serialize};

use crate::record::{DatabaseRecord, MoveStamp, Moving, Records, ServerRecord, Stored};
use crate::{LocationMap, Locator, Underway};

/// Why a location file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LocationFileError {
    /// The file could not be read.
    #[error("cannot read location map {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file could not be written.
    #[error("cannot write location map {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid location map; the message names the key.
    #[error("invalid location map {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
}

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
struct LocationFile {
    active: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    database: BTreeMap<String, FileDatabase>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    server: BTreeMap<String, ServerRecord>,
}

/// A database's bookkeeping in the file (its active server is under `[active]`).
#[derive(Deserialize, Serialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct FileDatabase {
    #[serde(default, skip_serializing_if = "crate::record::is_zero")]
    epoch: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    hold: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    moved: Option<MoveStamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    moving: Option<Moving>,
}

/// Checks a map against the rest of the configuration (for example that every server it names is
/// defined). Returns a message naming the offending entry.
pub type Validator = dyn Fn(&LocationMap) -> Result<(), String> + Send + Sync;

/// Reads the file's TOML; errors name the offending key.
fn parse_file(text: &str) -> Result<LocationFile, String> {
    let deserializer = toml::Deserializer::new(text);
    let file: LocationFile = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().message().to_owned();
        if path == "." {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })?;
    for (database, server) in &file.active {
        if database.trim().is_empty() {
            return Err("active: a database name is empty".to_owned());
        }
        if server.trim().is_empty() {
            return Err(format!("active.{database}: the server name is empty"));
        }
    }
    if let Some(database) = file.database.keys().find(|d| !file.active.contains_key(*d)) {
        return Err(format!(
            "database.{database}: no such database under [active]"
        ));
    }
    Ok(file)
}

/// Parses the text of a location file. Errors name the offending key.
pub fn parse(text: &str) -> Result<LocationMap, String> {
    let file = parse_file(text)?;
    let moving: Vec<(DatabaseName, Underway)> = file
        .database
        .iter()
        .filter_map(|(database, kept)| {
            let moving = kept.moving.as_ref()?;
            let underway = Underway {
                to: moving.to.clone(),
                epoch: kept.epoch,
            };
            Some((DatabaseName::new(database), underway))
        })
        .collect();
    Ok(LocationMap::new(
        file.active
            .into_iter()
            .map(|(database, server)| (DatabaseName::new(&database), ServerName::new(&server))),
    )
    .with_moving(moving))
}

/// Parses the text of a location file into the Active Manager's records (every revision 0:
/// the file store compares values).
pub fn parse_records(text: &str) -> Result<Records, String> {
    let file = parse_file(text)?;
    let databases = file
        .active
        .iter()
        .map(|(name, server)| {
            let kept = file.database.get(name).cloned().unwrap_or_default();
            let record = DatabaseRecord {
                active: ServerName::new(server),
                copies: Vec::new(),
                epoch: kept.epoch,
                hold: kept.hold,
                moved: kept.moved,
                moving: kept.moving,
            };
            let stored = Stored {
                value: record,
                revision: 0,
            };
            (DatabaseName::new(name), stored)
        })
        .collect();
    let servers = file
        .server
        .into_iter()
        .map(|(name, record)| {
            let stored = Stored {
                value: record,
                revision: 0,
            };
            (ServerName::new(&name), stored)
        })
        .collect();
    Ok(Records {
        databases,
        servers,
        ..Records::default()
    })
}

/// The text of a location file holding `records`.
pub fn render_records(records: &Records) -> String {
    let mut file = LocationFile::default();
    for (name, stored) in &records.databases {
        let record = &stored.value;
        file.active
            .insert(name.to_string(), record.active.to_string());
        let kept = FileDatabase {
            epoch: record.epoch,
            hold: record.hold,
            moved: record.moved.clone(),
            moving: record.moving.clone(),
        };
        if kept.epoch != 0 || kept.hold || kept.moved.is_some() || kept.moving.is_some() {
            file.database.insert(name.to_string(), kept);
        }
    }
    for (name, stored) in &records.servers {
        if stored.value != ServerRecord::default() {
            file.server.insert(name.to_string(), stored.value.clone());
        }
    }
    let header = "# The location map: database = \"server hosting its active copy\".\n\
                  # Written by mailfront (the Active Manager, `mailfront admin`); edits are read too.\n";
    // Serialising maps of strings, numbers and flags cannot fail; an empty map is still valid.
    let body = toml::to_string(&file).unwrap_or_else(|_| "[active]\n".to_owned());
    format!("{header}{body}")
}

/// Reads the Active Manager's records from the file at `path`.
pub fn read_records(path: &Path) -> Result<Records, LocationFileError> {
    let bytes = std::fs::read(path).map_err(|source| LocationFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |message: String| LocationFileError::Invalid {
        path: path.to_owned(),
        message,
    };
    let text =
        std::str::from_utf8(&bytes).map_err(|_| invalid("the file is not UTF-8".to_owned()))?;
    parse_records(text).map_err(invalid)
}

/// Writes `records` to `path` atomically: a new file beside it, renamed over it, so that a
/// reader (every node's poller) sees the old file or the new one, never half of one.
pub fn write_records(path: &Path, records: &Records) -> Result<(), LocationFileError> {
    let failed = |source| LocationFileError::Write {
        path: path.to_owned(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.mailfront-new"));
    std::fs::write(&temporary, render_records(records)).map_err(failed)?;
    std::fs::rename(&temporary, path).map_err(failed)
}

fn parse_bytes(
    path: &Path,
    bytes: &[u8],
    validate: &Validator,
) -> Result<LocationMap, LocationFileError> {
    let invalid = |message: String| LocationFileError::Invalid {
        path: path.to_owned(),
        message,
    };
    let text =
        std::str::from_utf8(bytes).map_err(|_| invalid("the file is not UTF-8".to_owned()))?;
    let map = parse(text).map_err(invalid)?;
    validate(&map).map_err(invalid)?;
    Ok(map)
}

/// Reads and checks a location file once (for `mailfront check` and start-up).
pub fn load(path: &Path, validate: &Validator) -> Result<LocationMap, LocationFileError> {
    let bytes = std::fs::read(path).map_err(|source| LocationFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_bytes(path, &bytes, validate)
}

/// Feeds a [`Locator`] from a location file, following the operator's edits.
pub struct FileSource {
    task: tokio::task::JoinHandle<()>,
    path: PathBuf,
    locator: Arc<Locator>,
    validate: Arc<Validator>,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FileSource {
    /// Loads the file (an error here stops start-up: there is no last good map yet), publishes
    /// it, and starts polling for changes every `interval`.
    pub fn start(
        path: &Path,
        locator: Arc<Locator>,
        validate: Arc<Validator>,
        interval: Duration,
    ) -> Result<Self, LocationFileError> {
        let mut watch = FileWatch::new(path);
        let bytes = watch.read().map_err(|source| LocationFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        let map = parse_bytes(path, &bytes, &*validate)?;
        tracing::info!(path = %path.display(), databases = map.iter().count(), "location map loaded");
        locator.publish(map);
        let (poll_path, poll_locator, poll_validate) =
            (path.to_owned(), Arc::clone(&locator), Arc::clone(&validate));
        let task = spawn_poller(watch, interval, move |bytes| {
            match parse_bytes(&poll_path, &bytes, &*poll_validate) {
                Ok(map) => publish(&poll_locator, map),
                Err(error) => {
                    tracing::error!(%error, "location map change rejected; keeping the last good map");
                }
            }
        });
        Ok(Self {
            task,
            path: path.to_owned(),
            locator,
            validate,
        })
    }

    /// Reads the file now and publishes it if it is valid (after the validator's rules changed,
    /// say, so that a map refused under the old rules is taken without waiting for an edit).
    /// A bad file changes nothing and is returned as the error.
    pub fn reload(&self) -> Result<(), LocationFileError> {
        let map = load(&self.path, &*self.validate)?;
        publish(&self.locator, map);
        Ok(())
    }
}

fn publish(locator: &Locator, map: LocationMap) {
    for moved in locator.publish(map) {
        tracing::info!(
            database = %moved.database,
            from = %moved.from.as_ref().map_or("-", |s| s.as_str()),
            to = %moved.to.as_ref().map_or("-", |s| s.as_str()),
            "active copy moved"
        );
    }
}

impl Drop for FileSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_live_beside_the_map_and_round_trip() {
        let text = "[active]\nDB01 = \"mbx1\"\nDB02 = \"mbx2\"\n\n\
                    [database.DB01]\nepoch = 2\nhold = true\n\
                    moved = { by = \"failover\", reason = \"mbx2 down\", at = 7 }\n\n\
                    [server.mbx2]\nmaintenance = true\n";
        let records = parse_records(text).unwrap();
        let db01 = &records.databases[&DatabaseName::new("DB01")].value;
        assert_eq!(
            (db01.active.as_str(), db01.epoch, db01.hold),
            ("mbx1", 2, true)
        );
        assert_eq!(records.databases[&DatabaseName::new("DB02")].value.epoch, 0);
        assert!(records.in_maintenance(&ServerName::new("mbx2")));
        assert!(!records.in_maintenance(&ServerName::new("mbx1")));
        // The map is what it always was, and the file written back reads the same.
        assert_eq!(parse(text).unwrap().iter().count(), 2);
        let again = render_records(&records);
        assert_eq!(parse_records(&again).unwrap(), records);
        assert_eq!(parse(&again).unwrap(), parse(text).unwrap());
        // Bookkeeping for a database the map does not have is an error naming the key.
        let orphan = "[active]\nDB01 = \"mbx1\"\n[database.DB09]\nepoch = 1\n";
        assert!(parse(orphan).unwrap_err().contains("database.DB09"));
    }

    fn any(_: &LocationMap) -> Result<(), String> {
        Ok(())
    }

    #[test]
    fn parses_the_documented_format() {
        let map = parse("[active]\nDB01 = \"mbx1\"\nDB02 = \"mbx2\"\n").unwrap();
        assert_eq!(map.active(&"DB01".into()), Some(&"mbx1".into()));
        assert_eq!(map.iter().count(), 2);
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            parse("[active]\nDB01 = 3\n").unwrap_err().split(':').next(),
            Some("active.DB01")
        );
        assert!(
            parse("[active]\nDB01 = \"\"\n")
                .unwrap_err()
                .starts_with("active.DB01")
        );
        assert!(parse("[actve]\n").unwrap_err().contains("actve"));
        assert!(parse("not toml").is_err());
    }

    #[tokio::test]
    async fn follows_edits_and_keeps_last_good_map() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locations.toml");
        std::fs::write(&path, "[active]\nDB01 = \"mbx1\"\n").unwrap();
        let locator = Arc::new(Locator::new());
        let rejected = Arc::new(AtomicUsize::new(0));
        let seen_rejections = Arc::clone(&rejected);
        let only_known: Arc<Validator> = Arc::new(move |map: &LocationMap| {
            match map
                .iter()
                .find(|(_, s)| !["mbx1", "mbx2"].contains(&s.as_str()))
            {
                Some((d, s)) => {
                    seen_rejections.fetch_add(1, Ordering::SeqCst);
                    Err(format!("active.{d}: unknown server `{s}`"))
                }
                None => Ok(()),
            }
        });
        let _source = FileSource::start(
            &path,
            Arc::clone(&locator),
            only_known,
            Duration::from_millis(10),
        )
        .unwrap();
        let db01 = DatabaseName::new("DB01");
        assert_eq!(locator.locate(&db01), Ok("mbx1".into()));
        let mut changes = locator.subscribe();
        changes.borrow_and_update();

        std::fs::write(&path, "[active]\nDB01 = \"mbx2\"\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), changes.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(locator.locate(&db01), Ok("mbx2".into()));

        // An edit naming an undefined server is seen (the validator ran on it) and not applied.
        std::fs::write(&path, "[active]\nDB01 = \"mbx9\"\n").unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while rejected.load(Ordering::SeqCst) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the edit was never looked at"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!changes.has_changed().unwrap());
        assert_eq!(locator.locate(&db01), Ok("mbx2".into()));

        // A syntax error is not applied either; the next good edit is.
        std::fs::write(&path, "[active]\nDB01 = ").unwrap();
        std::fs::write(&path, "[active]\nDB01 = \"mbx1\"\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), changes.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(locator.locate(&db01), Ok("mbx1".into()));
    }

    #[test]
    fn load_reports_missing_file() {
        let err = load(Path::new("/nonexistent/locations.toml"), &any).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/locations.toml"));
    }
}
