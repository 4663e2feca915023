//! `[location]`: where database locations come from.

use std::path::PathBuf;

use serde::Deserialize;

pub use mailfront_location::etcd::EtcdConfig;

/// `[location]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
pub enum LocationConfig {
    /// The embedded location map.
    File {
        /// The map file.
        path: PathBuf,
    },
    /// etcd, shared by every node (see `mailfront_location::etcd` for the keys and layout).
    Etcd(mailfront_location::etcd::EtcdConfig),
}

impl LocationConfig {
    /// Checks the keys of the chosen backend (the file backend has nothing to check before the
    /// file is read).
    pub(super) fn validate(&self) -> Result<(), String> {
        match self {
            LocationConfig::File { .. } => Ok(()),
            LocationConfig::Etcd(etcd) => etcd.validate(),
        }
    }
}
