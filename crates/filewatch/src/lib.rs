//! Notices when an operator changes a file that mailfront reads: the embedded directory, the
//! embedded location map, the configuration.
//!
//! An operator's edit is a change of meaning (a switchover, a new user), so it must be picked up
//! without a restart. We poll: a `stat` every interval is cheap, works with every editor (in-place
//! writes, write-and-rename, symlink flips as in Kubernetes config maps) and on every filesystem,
//! where inotify misses renames of the watched path and does not work over NFS. When the metadata
//! changes we read the file and only report it if the bytes differ, so a `touch` is not a reload.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What we compare between polls: cheap to get, changes on every kind of edit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: u64,
    #[cfg(unix)]
    ctime_ns: i128,
}

fn fingerprint(path: &Path) -> io::Result<Fingerprint> {
    // `metadata` follows symlinks, so a flipped link is seen as a change of the target.
    let meta = std::fs::metadata(path)?;
    #[cfg(unix)]
    let (inode, ctime_ns) = {
        use std::os::unix::fs::MetadataExt;
        (
            meta.ino(),
            i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        )
    };
    Ok(Fingerprint {
        modified: meta.modified().ok(),
        len: meta.len(),
        #[cfg(unix)]
        inode,
        #[cfg(unix)]
        ctime_ns,
    })
}

fn content_hash(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// Tracks one file and tells whether its content changed since the last look.
#[derive(Debug)]
pub struct FileWatch {
    path: PathBuf,
    last_fingerprint: Option<Fingerprint>,
    last_hash: Option<u64>,
}

impl FileWatch {
    /// Starts watching `path`. The first call to [`FileWatch::poll`] reports the current content.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            last_fingerprint: None,
            last_hash: None,
        }
    }

    /// The watched path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file and remembers it as seen, whatever its state. Use it for the initial load.
    pub fn read(&mut self) -> io::Result<Vec<u8>> {
        let fingerprint = fingerprint(&self.path)?;
        let bytes = std::fs::read(&self.path)?;
        self.last_fingerprint = Some(fingerprint);
        self.last_hash = Some(content_hash(&bytes));
        Ok(bytes)
    }

    /// Returns the new content if the file changed since the last `read` or `poll`, `None` if it
    /// did not. An error (file missing, unreadable) leaves the remembered state alone, so the
    /// change is reported again once the file is readable.
    pub fn poll(&mut self) -> io::Result<Option<Vec<u8>>> {
        let fingerprint = fingerprint(&self.path)?;
        if self.last_fingerprint == Some(fingerprint) {
            return Ok(None);
        }
        let bytes = std::fs::read(&self.path)?;
        let hash = content_hash(&bytes);
        self.last_fingerprint = Some(fingerprint);
        if self.last_hash == Some(hash) {
            return Ok(None);
        }
        self.last_hash = Some(hash);
        Ok(Some(bytes))
    }

    /// Forgets what was seen, so the next [`FileWatch::poll`] reports the content again even if
    /// it did not change (used after a load that failed validation and must be retried when the
    /// operator fixes it: the failed content is remembered, so an unchanged file is not retried).
    pub fn forget(&mut self) {
        self.last_fingerprint = None;
        self.last_hash = None;
    }
}

/// Polls `watch` every `interval` and hands each new content to `on_change`, until the returned
/// task is aborted. `on_change` decides what a bad content means (usually: log it, keep the old).
pub fn spawn_poller<F>(
    mut watch: FileWatch,
    interval: Duration,
    mut on_change: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut(Vec<u8>) + Send + 'static,
{
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported_error = false;
        loop {
            ticker.tick().await;
            match watch.poll() {
                Ok(Some(bytes)) => {
                    reported_error = false;
                    on_change(bytes);
                }
                Ok(None) => reported_error = false,
                Err(error) => {
                    // Say it once, not every tick: a file being replaced is briefly missing.
                    if !reported_error {
                        tracing::warn!(path = %watch.path().display(), %error, "cannot read watched file; keeping what was loaded");
                        reported_error = true;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_changes_not_touches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map.toml");
        std::fs::write(&path, "a = 1\n").unwrap();
        let mut watch = FileWatch::new(&path);
        assert_eq!(watch.read().unwrap(), b"a = 1\n");
        assert_eq!(watch.poll().unwrap(), None);

        // Same bytes, new metadata: not a change.
        std::fs::write(&path, "a = 1\n").unwrap();
        assert_eq!(watch.poll().unwrap(), None);

        // In-place edit of the same length.
        std::fs::write(&path, "a = 2\n").unwrap();
        assert_eq!(watch.poll().unwrap().as_deref(), Some(&b"a = 2\n"[..]));

        // Write-and-rename, as editors and `scripts/demo switchover` do.
        let tmp = dir.path().join("map.toml.tmp");
        std::fs::write(&tmp, "a = 3\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(watch.poll().unwrap().as_deref(), Some(&b"a = 3\n"[..]));
        assert_eq!(watch.poll().unwrap(), None);
    }

    #[test]
    fn missing_file_is_an_error_then_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let mut watch = FileWatch::new(&path);
        assert!(watch.poll().is_err());
        std::fs::write(&path, "x").unwrap();
        assert_eq!(watch.poll().unwrap().as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn forget_reports_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "x").unwrap();
        let mut watch = FileWatch::new(&path);
        watch.read().unwrap();
        watch.forget();
        assert_eq!(watch.poll().unwrap().as_deref(), Some(&b"x"[..]));
    }
}
