//! Where the Active Manager reads and writes its records: etcd (an array's shared store) or the
//! embedded location file (one node). Both compare before they write, so an operator's
//! concurrent change is never silently overwritten: the loser of a race hears
//! [`WriteError::Conflict`].

use std::path::PathBuf;

use mailfront_location::etcd::records::{EtcdRecords, Fence, WriteError as EtcdWriteError};
use mailfront_location::file::{FileSource, LocationFileError, read_records, write_records};
use mailfront_location::record::{DatabaseRecord, Records, ServerRecord, Stored};
use mailfront_model::{DatabaseName, ServerName};

/// Why a write was not made.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The record changed since it was read: another writer was first.
    #[error("the record changed since it was read: another writer was first")]
    Conflict,
    /// This node is no longer the leader (an automatic move only).
    #[error("this node is no longer the leader")]
    Fenced,
    /// The store could not be asked.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

/// The store of one node.
#[derive(Debug)]
pub enum Store {
    /// etcd, shared by every node of the array.
    Etcd(std::sync::Arc<EtcdRecords>),
    /// The embedded location file (one node: it is its own leader).
    File {
        /// The location file.
        path: PathBuf,
        /// The source that feeds this node's locator from the file: told after every write, so
        /// that this node routes by a move at once rather than at its next poll.
        source: Option<std::sync::Arc<FileSource>>,
        /// One write at a time from this node (read, compare, write back).
        lock: tokio::sync::Mutex<()>,
    },
}

impl Store {
    /// The store in the location file at `path`, feeding `source` (if this node routes by it).
    pub fn file(path: PathBuf, source: Option<std::sync::Arc<FileSource>>) -> Self {
        Store::File {
            path,
            source,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Every record, read at once.
    pub async fn read(&self) -> Result<Records, String> {
        match self {
            Store::Etcd(etcd) => etcd.read().await.map_err(|e| e.to_string()),
            Store::File { path, .. } => read_records(path).map_err(|e| e.to_string()),
        }
    }

    /// Writes `database`'s record if it is still `expected` (for etcd: its revision), and, for a
    /// leader's write, only while `fence` holds.
    pub async fn write_database(
        &self,
        database: &DatabaseName,
        expected: &Stored<DatabaseRecord>,
        record: &DatabaseRecord,
        fence: Option<&Fence>,
    ) -> Result<(), WriteError> {
        match self {
            Store::Etcd(etcd) => etcd
                .write_database(database, expected.revision, record, fence)
                .await
                .map_err(from_etcd),
            Store::File { path, lock, source } => {
                let _one = lock.lock().await;
                let mut records = read_records(path).map_err(unavailable)?;
                let Some(current) = records.databases.get_mut(database) else {
                    return Err(WriteError::Conflict);
                };
                if current.value != expected.value {
                    return Err(WriteError::Conflict);
                }
                current.value = record.clone();
                write_records(path, &records).map_err(unavailable)?;
                reread(source.as_deref());
                Ok(())
            }
        }
    }

    /// Creates `database`'s record (a group placed for the first time) if it has none yet; for
    /// a leader's write, only while `fence` holds.
    pub async fn create_database(
        &self,
        database: &DatabaseName,
        record: &DatabaseRecord,
        fence: Option<&Fence>,
    ) -> Result<(), WriteError> {
        match self {
            // Revision 0: the key must not exist.
            Store::Etcd(etcd) => etcd
                .write_database(database, 0, record, fence)
                .await
                .map_err(from_etcd),
            Store::File { path, lock, source } => {
                let _one = lock.lock().await;
                let mut records = read_records(path).map_err(unavailable)?;
                if records.databases.contains_key(database) {
                    return Err(WriteError::Conflict);
                }
                let stored = Stored {
                    value: record.clone(),
                    revision: 0,
                };
                records.databases.insert(database.clone(), stored);
                write_records(path, &records).map_err(unavailable)?;
                reread(source.as_deref());
                Ok(())
            }
        }
    }

    /// Deletes `database`'s record (a pin removed) if it is still `expected`, with the nodes'
    /// acknowledgements of its moves; for a leader's write, only while `fence` holds.
    pub async fn delete_database(
        &self,
        database: &DatabaseName,
        expected: &Stored<DatabaseRecord>,
        fence: Option<&Fence>,
    ) -> Result<(), WriteError> {
        match self {
            Store::Etcd(etcd) => etcd
                .delete_database(database, expected.revision, fence)
                .await
                .map_err(from_etcd),
            Store::File { path, lock, source } => {
                let _one = lock.lock().await;
                let mut records = read_records(path).map_err(unavailable)?;
                match records.databases.get(database) {
                    Some(current) if current.value == expected.value => {}
                    _ => return Err(WriteError::Conflict),
                }
                records.databases.remove(database);
                write_records(path, &records).map_err(unavailable)?;
                reread(source.as_deref());
                Ok(())
            }
        }
    }

    /// Writes `server`'s record if it is still `expected` (`None`: it had none).
    pub async fn write_server(
        &self,
        server: &ServerName,
        expected: Option<&Stored<ServerRecord>>,
        record: &ServerRecord,
    ) -> Result<(), WriteError> {
        match self {
            Store::Etcd(etcd) => etcd
                .write_server(server, expected.map_or(0, |e| e.revision), record)
                .await
                .map_err(from_etcd),
            Store::File { path, lock, .. } => {
                let _one = lock.lock().await;
                let mut records = read_records(path).map_err(unavailable)?;
                let current = records.servers.get(server).map(|s| &s.value);
                if current != expected.map(|e| &e.value) {
                    return Err(WriteError::Conflict);
                }
                let stored = Stored {
                    value: record.clone(),
                    revision: 0,
                };
                records.servers.insert(server.clone(), stored);
                write_records(path, &records).map_err(unavailable)
            }
        }
    }
}

/// Publishes the file just written to this node's locator. The write is done either way; a file
/// the source refuses now would be refused by its next poll too, and the poller logs that.
fn reread(source: Option<&FileSource>) {
    if let Some(source) = source
        && let Err(error) = source.reload()
    {
        tracing::warn!(%error, "the location file just written does not load");
    }
}

fn unavailable(error: LocationFileError) -> WriteError {
    WriteError::Unavailable(error.to_string())
}

fn from_etcd(error: EtcdWriteError) -> WriteError {
    match error {
        EtcdWriteError::Conflict => WriteError::Conflict,
        EtcdWriteError::Fenced => WriteError::Fenced,
        EtcdWriteError::Store(e) => WriteError::Unavailable(e.to_string()),
    }
}
