//! `[directory]`: where users come from.

use std::path::PathBuf;

use serde::Deserialize;

pub use mailfront_directory::ldap::{LdapAttributes, LdapConfig};

/// `[directory]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
pub enum DirectoryConfig {
    /// The embedded file directory.
    File {
        /// The users file.
        path: PathBuf,
    },
    /// An LDAP server (see `mailfront_directory::ldap::LdapConfig` for the keys).
    Ldap(Box<mailfront_directory::ldap::LdapConfig>),
}

impl DirectoryConfig {
    /// Checks the keys of the chosen backend (the file backend has nothing to check before the
    /// file is read).
    pub(super) fn validate(&self) -> Result<(), String> {
        match self {
            DirectoryConfig::File { .. } => Ok(()),
            DirectoryConfig::Ldap(ldap) => ldap.validate(),
        }
    }
}
