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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mailfront_filewatch::{FileWatch, spawn_poller};
use mailfront_model::{DatabaseName, ServerName};
use serde::Deserialize;

use crate::{LocationMap, Locator};

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
    /// The file is not a valid location map; the message names the key.
    #[error("invalid location map {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LocationFile {
    active: BTreeMap<String, String>,
}

/// Checks a map against the rest of the configuration (for example that every server it names is
/// defined). Returns a message naming the offending entry.
pub type Validator = dyn Fn(&LocationMap) -> Result<(), String> + Send + Sync;

/// Parses the text of a location file. Errors name the offending key.
pub fn parse(text: &str) -> Result<LocationMap, String> {
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
    let mut entries = Vec::with_capacity(file.active.len());
    for (database, server) in file.active {
        if database.trim().is_empty() {
            return Err("active: a database name is empty".to_owned());
        }
        if server.trim().is_empty() {
            return Err(format!("active.{database}: the server name is empty"));
        }
        entries.push((DatabaseName::new(&database), ServerName::new(&server)));
    }
    Ok(LocationMap::new(entries))
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
